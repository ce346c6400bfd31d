//! Operator passwords: Argon2id hashes (from the operator store), verified
//! off the async threads, a bounded number at a time, with lockouts after
//! repeated failures by (name, address) and by address ([`crate::lockout`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::lockout::Lockouts;

/// Argon2 verifications running at once: each takes tens of milliseconds
/// and 19 MiB, so a flood of sign-ins queues instead of exhausting the
/// machine.
const VERIFICATIONS_MAX: usize = 2;
/// Longest password accepted: Argon2 takes any length, the form does not.
pub(crate) const PASSWORD_BYTES_MAX: usize = 256;

/// Hashes a password for the configuration (Argon2id, default parameters,
/// random salt).
///
/// # Errors
/// When the password is empty or longer than 256 bytes, or hashing fails.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !password.is_empty() && password.len() <= PASSWORD_BYTES_MAX,
        "the password must have 1..={PASSWORD_BYTES_MAX} bytes"
    );
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(hash.to_string())
}

/// Verified for unknown names when no configured operator gives a hash
/// to use instead: the default parameters, of a random password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$LttgnMmh6vxscDSYmjv2pg$Sv0WS/Vml2AxJYFpVhJxrLyfT7WJDYyEDGfTuCh+gOs";

/// Checks operators' passwords.
#[derive(Debug)]
pub(crate) struct Passwords {
    /// Verified for unknown names, so an unknown name takes as long as a
    /// wrong password and names cannot be probed by timing.
    dummy_hash: String,
    /// Bounds concurrent verifications (`VERIFICATIONS_MAX`).
    permits: Arc<Semaphore>,
    /// Recent failures, by (name, address) and by address.
    lockouts: Mutex<Lockouts>,
}

/// The result of a sign-in attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Name and password match.
    Accepted,
    /// Unknown name or wrong password: the page does not say which.
    Refused,
    /// Too many recent failures for this name from this address, or from
    /// this address.
    LockedOut,
}

impl Passwords {
    /// With the hash verified for unknown names: a configured operator's,
    /// so that it costs what a known name costs.
    pub(crate) fn new(dummy_hash: Option<&str>) -> Passwords {
        Passwords {
            dummy_hash: dummy_hash.unwrap_or(DUMMY_HASH).to_string(),
            permits: Arc::new(Semaphore::new(VERIFICATIONS_MAX)),
            lockouts: Mutex::default(),
        }
    }

    fn lockouts(&self) -> std::sync::MutexGuard<'_, Lockouts> {
        self.lockouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a failure that is not a password's (a wrong TOTP code).
    pub(crate) fn fail(&self, name: &str, peer: IpAddr, now_s: u64) {
        self.lockouts().fail(name, peer, now_s);
    }

    /// Whether `name` from `peer` is locked out now.
    pub(crate) fn locked(&self, name: &str, peer: IpAddr, now_s: u64) -> bool {
        self.lockouts().locked(name, peer, now_s)
    }

    /// Checks `password` against `known` (the operator's hash, `None` for
    /// an unknown name), signing in as `name` from `peer`.
    pub(crate) async fn verify(
        &self,
        name: &str,
        password: &str,
        known: Option<&str>,
        peer: IpAddr,
        now_s: u64,
    ) -> Verdict {
        if self.lockouts().locked(name, peer, now_s) {
            return Verdict::LockedOut;
        }
        let hash = known.unwrap_or(&self.dummy_hash).to_string();
        let password = password.to_string();
        let Ok(_permit) = self.permits.acquire().await else {
            return Verdict::Refused;
        };
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if matches && known.is_some() {
            self.lockouts().succeed(name, peer);
            Verdict::Accepted
        } else {
            self.lockouts().fail(name, peer, now_s);
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockout::{ADDRESS_FAILURES_MAX, LOCKOUT_S, PAIR_FAILURES_MAX};

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const THERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    /// Alice's hash, and the checker.
    struct Fixture(String, Passwords);

    impl Fixture {
        async fn verify(&self, name: &str, password: &str, peer: IpAddr, now_s: u64) -> Verdict {
            let known = (name == "alice").then_some(self.0.as_str());
            self.1.verify(name, password, known, peer, now_s).await
        }
    }

    fn passwords() -> Fixture {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        let checker = Passwords::new(Some(&hash));
        Fixture(hash, checker)
    }

    #[tokio::test]
    async fn right_and_wrong_passwords() {
        let p = passwords();
        assert_eq!(
            p.verify("alice", "correct horse", HERE, 0).await,
            Verdict::Accepted
        );
        assert_eq!(p.verify("alice", "wrong", HERE, 0).await, Verdict::Refused);
        assert_eq!(
            p.verify("bob", "correct horse", HERE, 0).await,
            Verdict::Refused
        );
        assert_eq!(p.verify("", "", HERE, 0).await, Verdict::Refused);
    }

    #[tokio::test]
    async fn repeated_failures_lock_the_name_out_from_there_for_a_while() {
        let p = passwords();
        for _ in 0..PAIR_FAILURES_MAX {
            assert_eq!(p.verify("alice", "wrong", HERE, 10).await, Verdict::Refused);
        }
        assert_eq!(
            p.verify("alice", "correct horse", HERE, 11).await,
            Verdict::LockedOut
        );
        assert_eq!(
            p.verify("alice", "correct horse", THERE, 11).await,
            Verdict::Accepted,
            "the same name from another address"
        );
        assert_eq!(
            p.verify("alice", "correct horse", HERE, 10 + LOCKOUT_S)
                .await,
            Verdict::Accepted
        );
        assert!(hash_password("").is_err());
    }

    #[tokio::test]
    async fn unknown_names_count_for_the_address_not_for_alice_elsewhere() {
        let p = passwords();
        for i in 0..ADDRESS_FAILURES_MAX {
            let name = format!("guess{}", i / (PAIR_FAILURES_MAX - 1));
            assert_eq!(p.verify(&name, "x", HERE, 10).await, Verdict::Refused);
        }
        let here = p.verify("alice", "correct horse", HERE, 11).await;
        assert_eq!(here, Verdict::LockedOut, "the address tried many names");
        let there = p.verify("alice", "correct horse", THERE, 11).await;
        assert_eq!(there, Verdict::Accepted);
    }
}
