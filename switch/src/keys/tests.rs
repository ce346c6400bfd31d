//! The parts together: keys and mandates made by the admin side, checked
//! by the store as the server would, with lockout.

use std::net::IpAddr;
use std::path::PathBuf;

use super::admin::is_client_id;
use super::file::KEYS_FILE;
use super::lockout::{ADDRESS_FAILURES_MAX, LOCKOUT_MS, PAIR_FAILURES_MAX};
use super::{KeyAdmin, KeyStore, Mandate, NewKey, Owner, Refusal, Scope};
use codecs::internal::scope::{ALL, REFUNDS, REPORTING};

fn dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("switch-keys-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// Another address than [`PEER`].
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const WRONG: &[u8] = b"wrong-secret-0000";

/// A store with one merchant key.
fn store_with_key() -> (KeyStore, NewKey) {
    let d = dir();
    let key = KeyAdmin::new(&d)
        .create_key(Owner::Merchant("DEMO00000000001".into()), "x")
        .expect("create");
    (KeyStore::open(&d), key)
}

#[test]
fn keys_authenticate_until_revoked() {
    let d = dir();
    let admin = KeyAdmin::new(&d);
    let store = KeyStore::open(&d);
    let key = admin
        .create_key(Owner::Merchant("DEMO00000000001".into()), "till")
        .expect("create");
    assert!(is_client_id(&key.client_id) && key.client_id.starts_with("MK-"));
    assert_eq!(key.secret.len(), 64);
    let text = std::fs::read_to_string(d.join(KEYS_FILE)).expect("file");
    assert!(!text.contains(&key.secret), "only the hash is stored");
    let listed = admin.keys().expect("list");
    assert_eq!(listed[0].secret_hint.chars().count(), 7);
    assert!(!format!("{listed:?}{key:?}").contains(&key.secret));

    let ok = store.authenticate(&key.client_id, key.secret.as_bytes(), PEER, 0);
    assert_eq!(ok, Ok(()));
    let mut mids = Vec::new();
    assert!(store.merchants_for(&key.client_id, ALL, &mut mids));
    assert_eq!(mids, ["DEMO00000000001"]);
    let bad = store.authenticate(&key.client_id, b"0123456789abcdef", PEER, 0);
    assert_eq!(bad, Err(Refusal::BadSecret));

    admin.revoke_key(&key.client_id).expect("revoke");
    assert!(
        !store.merchants_for(&key.client_id, ALL, &mut mids),
        "at once"
    );
    let again = store.authenticate(&key.client_id, key.secret.as_bytes(), PEER, 0);
    assert_eq!(again, Err(Refusal::Revoked));
    assert!(admin.revoke_key(&key.client_id).is_err());
}

#[test]
fn mandates_scope_provider_keys() {
    let d = dir();
    let admin = KeyAdmin::new(&d);
    let store = KeyStore::open(&d);
    let known = |mid: &str| mid.starts_with("DEMO");
    let all = Scope::all();
    // No provider key yet: refused, with what to do.
    let err = admin
        .grant_mandate("DEMO00000000002", "SP-0000-0001", &all, &known)
        .expect_err("unregistered provider");
    assert!(err
        .to_string()
        .contains("switch keys create --provider SP-0000-0001"));
    let key = admin
        .create_key(Owner::Provider("SP-0000-0001".into()), "books")
        .expect("create");
    let mut mids = Vec::new();
    assert!(store.merchants_for(&key.client_id, ALL, &mut mids));
    assert!(mids.is_empty());
    let err = admin
        .grant_mandate("NOPE00000000009", "SP-0000-0001", &all, &known)
        .expect_err("unconfigured merchant");
    assert!(err.to_string().contains("not configured"));
    assert_eq!(
        admin
            .grant_mandate(
                "DEMO00000000002",
                "SP-0000-0001",
                &[Scope::Reporting],
                &known
            )
            .ok(),
        Some(true)
    );
    store.merchants_for(&key.client_id, REPORTING, &mut mids);
    assert_eq!(mids, ["DEMO00000000002"]);
    store.merchants_for(&key.client_id, REFUNDS, &mut mids);
    assert!(mids.is_empty(), "reporting only: no refunds");
    // Granting again changes the scopes of the mandate in force.
    assert_eq!(
        admin
            .grant_mandate("DEMO00000000002", "SP-0000-0001", &all, &known)
            .ok(),
        Some(true)
    );
    assert_eq!(
        admin
            .grant_mandate("DEMO00000000002", "SP-0000-0001", &all, &known)
            .ok(),
        Some(false)
    );
    store.merchants_for(&key.client_id, REFUNDS, &mut mids);
    assert_eq!(mids, ["DEMO00000000002"]);
    assert_eq!(admin.mandates().expect("list").len(), 1);
    let held = store.mandates_of(&key.client_id).expect("in force");
    assert_eq!(held.len(), 1);
    assert_eq!((held[0].0.as_str(), held[0].1), ("DEMO00000000002", ALL));
    admin
        .revoke_mandate("DEMO00000000002", "SP-0000-0001")
        .expect("revoke");
    store.merchants_for(&key.client_id, ALL, &mut mids);
    assert!(mids.is_empty());
    assert!(admin
        .grant_mandate("short", "SP-0000-0001", &all, &known)
        .is_err());
    assert!(admin
        .grant_mandate("DEMO00000000002", "sp-1", &all, &known)
        .is_err());
}

#[test]
fn mandates_written_before_scopes_allow_everything() {
    let m: Mandate = serde_json::from_str(
        r#"{"merchant":"DEMO00000000002","provider":"SP-0000-0001","granted_unix_s":1,"revoked_unix_s":null}"#,
    )
    .expect("old form");
    assert_eq!(m.scopes, Scope::all());
    assert!(Scope::parse_list("payments,payments").is_err());
    assert!(Scope::parse_list("").is_err());
    assert!(Scope::parse_list("admin").is_err());
    assert_eq!(
        Scope::parse_list("reporting, refunds").expect("two"),
        [Scope::Reporting, Scope::Refunds]
    );
}

#[test]
fn failures_lock_out_for_a_minute() {
    let d = dir();
    let admin = KeyAdmin::new(&d);
    let store = KeyStore::open(&d);
    let key = admin
        .create_key(Owner::Merchant("DEMO00000000001".into()), "x")
        .expect("create");
    for _ in 0..PAIR_FAILURES_MAX {
        let r = store.authenticate(&key.client_id, b"wrong-secret-0000", PEER, 1_000);
        assert_eq!(r, Err(Refusal::BadSecret));
    }
    let right = key.secret.as_bytes();
    assert_eq!(
        store.authenticate(&key.client_id, right, PEER, 2_000),
        Err(Refusal::LockedOut)
    );
    assert_eq!(
        store.authenticate(&key.client_id, right, PEER, 1_000 + LOCKOUT_MS),
        Ok(())
    );
}

#[test]
fn unreadable_file_refuses_everything() {
    let d = dir();
    let admin = KeyAdmin::new(&d);
    let key = admin
        .create_key(Owner::Merchant("DEMO00000000001".into()), "x")
        .expect("create");
    let store = KeyStore::open(&d);
    std::fs::write(d.join(KEYS_FILE), b"{ not json").expect("write");
    let r = store.authenticate(&key.client_id, key.secret.as_bytes(), PEER, 0);
    assert_eq!(r, Err(Refusal::StoreUnavailable));
}

#[test]
fn a_pair_locked_out_from_one_address_leaves_another_working() {
    let (store, key) = store_with_key();
    let (id, right) = (key.client_id.as_str(), key.secret.as_bytes());
    for _ in 0..PAIR_FAILURES_MAX {
        assert_eq!(
            store.authenticate(id, WRONG, PEER, 1_000),
            Err(Refusal::BadSecret)
        );
    }
    let locked = store.authenticate(id, right, PEER, 2_000);
    assert_eq!(locked, Err(Refusal::LockedOut), "the failing pair");
    assert_eq!(store.authenticate(id, right, OTHER, 2_000), Ok(()));
    // Refusals while locked out do not count: the lockout is not renewed.
    assert_eq!(
        store.authenticate(id, right, PEER, 1_000 + LOCKOUT_MS),
        Ok(())
    );
}

#[test]
fn unknown_ids_from_one_address_lock_no_known_id() {
    let (store, key) = store_with_key();
    let (id, right) = (key.client_id.as_str(), key.secret.as_bytes());
    for _ in 0..PAIR_FAILURES_MAX {
        let r = store.authenticate("MK-9999-9999", WRONG, PEER, 1_000);
        assert_eq!(r, Err(Refusal::UnknownClient));
    }
    let unknown = store.authenticate("MK-9999-9999", WRONG, PEER, 1_000);
    assert_eq!(unknown, Err(Refusal::LockedOut), "like a known id's pair");
    assert_eq!(store.authenticate(id, right, OTHER, 2_000), Ok(()));
    assert_eq!(store.authenticate(id, right, PEER, 2_000), Ok(()));
}

#[test]
fn many_failures_across_ids_lock_the_address() {
    let (store, key) = store_with_key();
    let (id, right) = (key.client_id.as_str(), key.secret.as_bytes());
    // Under every pair's limit, but many ids: the address adds them up.
    for i in 0..ADDRESS_FAILURES_MAX - 1 {
        let unknown = format!("MK-9999-{:04}", i / (PAIR_FAILURES_MAX - 1));
        let r = store.authenticate(&unknown, WRONG, PEER, 1_000);
        assert_eq!(r, Err(Refusal::UnknownClient), "failure {i}");
    }
    assert_eq!(store.authenticate(id, right, PEER, 1_000), Ok(()));
    let last = store.authenticate(id, WRONG, PEER, 1_000);
    assert_eq!(last, Err(Refusal::BadSecret));
    let fresh = store.authenticate("MK-1234-5678", WRONG, PEER, 1_001);
    assert_eq!(fresh, Err(Refusal::LockedOut), "every id from there");
    let known = store.authenticate(id, right, PEER, 1_001);
    assert_eq!(known, Err(Refusal::LockedOut));
    assert_eq!(store.authenticate(id, right, OTHER, 1_001), Ok(()));
    let after = store.authenticate(id, right, PEER, 1_000 + LOCKOUT_MS);
    assert_eq!(after, Ok(()));
}
