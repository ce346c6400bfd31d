//! The archive contract against PostgreSQL, and what only a server can
//! get wrong: a restart between two batches, an unreachable server, a
//! database that does not exist, tables that are not ours.
//!
//! The tests start their own server (`archive::testing::PgServer`): one
//! shared by the tests that do not stop it, with a database per test and
//! a schema per store in it, and its own for the restart test. Without the PostgreSQL binaries they fail,
//! naming scripts/install-test-deps.sh.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use archive::contract::{self, Harness};
use archive::testing::PgServer;
use archive::{Archive, ArchiveError, PgArchive};

/// How long a refused connection may take to be reported: the connect
/// timeout is 5 s and a refused port answers at once.
const REFUSAL_WAIT_MAX: Duration = Duration::from_secs(6);

/// The server the tests share, started by the first that needs it and
/// stopped when the last one holding it ends.
fn shared() -> Arc<PgServer> {
    static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(PgServer::new().unwrap_or_else(|e| panic!("test server: {e}")));
    *slot = Arc::downgrade(&server);
    server
}

/// A test's database on the shared server, each store in its own schema
/// (named after the store) of it.
struct Schemas {
    /// The server.
    server: Arc<PgServer>,
    /// The test's database, named after the test.
    database: &'static str,
}

impl Schemas {
    fn new(test: &'static str) -> Self {
        let server = shared();
        server
            .create_database(test)
            .unwrap_or_else(|e| panic!("create database: {e}"));
        Schemas {
            server,
            database: test,
        }
    }
    fn connect(url: &str) -> Box<dyn Archive> {
        Box::new(PgArchive::connect(url).unwrap_or_else(|e| panic!("connect: {e}")))
    }
}

impl Harness for Schemas {
    fn create(&self, name: &str) -> Box<dyn Archive> {
        let url = self
            .server
            .create_schema(self.database, name)
            .unwrap_or_else(|e| panic!("create schema: {e}"));
        Self::connect(&url)
    }
    fn reopen(&self, name: &str) -> Box<dyn Archive> {
        Self::connect(&self.server.schema_url(self.database, name))
    }
}

#[test]
fn round_trip() {
    contract::round_trip(&Schemas::new("round_trip"));
}

#[test]
fn versions() {
    contract::versions(&Schemas::new("versions"));
}

#[test]
fn replay_is_idempotent() {
    contract::replay_is_idempotent(&Schemas::new("replay"));
}

#[test]
fn watermark() {
    contract::watermark(&Schemas::new("watermark"));
}

#[test]
fn open_holds() {
    contract::open_holds(&Schemas::new("open_holds"));
}

#[test]
fn delete_by_cutoff() {
    contract::delete_by_cutoff(&Schemas::new("delete_by_cutoff"));
}

#[test]
fn list_pages() {
    contract::list_pages(&Schemas::new("list_pages"));
}

#[test]
fn list_filters() {
    contract::list_filters(&Schemas::new("list_filters"));
}

#[test]
fn survives_reopen() {
    contract::survives_reopen(&Schemas::new("survives_reopen"));
}

#[test]
fn refuses_bad_input() {
    contract::refuses_bad_input(&Schemas::new("refuses_bad_input"));
}

/// Records `seqs`, payment id = seq, for merchant 1.
fn records(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|s| (s, contract::record(&contract::payment(s, 1, s, s))))
        .collect()
}

fn apply(a: &mut PgArchive, recs: &[(u64, Vec<u8>)]) -> Result<u64, ArchiveError> {
    let batch: Vec<(u64, &[u8])> = recs.iter().map(|(s, r)| (*s, &r[..])).collect();
    a.apply(&batch)
}

#[test]
fn a_restart_between_two_batches_loses_nothing() {
    let mut server = PgServer::new().unwrap_or_else(|e| panic!("test server: {e}"));
    let url = server.create_database("restart").expect("database");
    let mut a = PgArchive::connect(&url).expect("connect");
    assert_eq!(apply(&mut a, &records(1..=100)).expect("first batch"), 100);

    server.stop().expect("stop");
    let started = Instant::now();
    let down = apply(&mut a, &records(101..=200)).expect_err("server down");
    assert!(matches!(down, ArchiveError::Connect { .. }), "{down:?}");
    assert!(
        started.elapsed() < REFUSAL_WAIT_MAX,
        "{:?}",
        started.elapsed()
    );
    let lookup = a.payment(1).expect_err("server down");
    assert!(matches!(lookup, ArchiveError::Connect { .. }), "{lookup:?}");

    server.start().expect("start");
    // The broken connection is replaced within the call: no error.
    assert_eq!(
        apply(&mut a, &records(101..=200)).expect("after restart"),
        200
    );
    for id in [1, 100, 101, 200] {
        let p = a.payment(id).expect("payment").expect("kept");
        assert_eq!(p, contract::payment(id, 1, id, id));
    }
    let page = a
        .list(&[1], &Default::default(), None, 1_000)
        .expect("list");
    assert_eq!(page.payments.len(), 200);

    // A restart while connected and idle: the next call reconnects.
    server.stop().expect("stop");
    server.start().expect("start");
    assert_eq!(a.watermark().expect("watermark after restart"), 200);
    drop(a);
    let a = PgArchive::connect(&url).expect("reconnect");
    assert_eq!(a.watermark().expect("watermark"), 200);
}

/// Asserts `err` is a connection error naming `shown` and not `secret`.
fn assert_connect_error(err: &ArchiveError, shown: &str, secret: &str) {
    let text = err.to_string();
    assert!(matches!(err, ArchiveError::Connect { .. }), "{err:?}");
    assert!(text.contains(shown), "{text}");
    assert!(!text.contains(secret), "{text}");
    assert!(!format!("{err:?}").contains(secret), "{err:?}");
}

#[test]
fn an_unreachable_server_is_a_connect_error_naming_the_url_without_its_password() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("postgresql://switch:hunter2secret@127.0.0.1:{port}/archive");
    let started = Instant::now();
    let err = PgArchive::connect(&url).expect_err("nobody listens");
    assert!(
        started.elapsed() < REFUSAL_WAIT_MAX,
        "{:?}",
        started.elapsed()
    );
    let shown = format!("postgresql://switch:***@127.0.0.1:{port}/archive");
    assert_connect_error(&err, &shown, "hunter2secret");
}

#[test]
fn a_missing_database_is_a_connect_error_naming_it() {
    let server = shared();
    let url = format!(
        "postgresql://postgres:hunter2secret@127.0.0.1:{}/no_such_database",
        server.port()
    );
    let started = Instant::now();
    let err = PgArchive::connect(&url).expect_err("no database");
    assert!(
        started.elapsed() < REFUSAL_WAIT_MAX,
        "{:?}",
        started.elapsed()
    );
    assert_connect_error(&err, "no_such_database", "hunter2secret");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn a_url_that_does_not_parse_is_a_connect_error_without_its_password() {
    let err = PgArchive::connect("postgresql://switch:hunter2secret@127.0.0.1:port/archive")
        .expect_err("bad port");
    assert_connect_error(
        &err,
        "postgresql://switch:***@127.0.0.1:port",
        "hunter2secret",
    );
}

#[test]
fn another_schema_version_is_refused_naming_it() {
    let server = shared();
    let url = server.create_database("other_version").expect("database");
    drop(PgArchive::connect(&url).expect("create"));
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("client");
    client
        .batch_execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
        .expect("update");
    let err = PgArchive::connect(&url).expect_err("refused");
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("schema version 2"), "{err}");
    assert!(err.to_string().contains("other_version"), "{err}");
}

#[test]
fn tables_of_another_program_are_refused() {
    let server = shared();
    for (db, sql) in [
        ("other_payments", "CREATE TABLE payments (x int)"),
        ("other_meta", "CREATE TABLE meta (k text, v text)"),
    ] {
        let url = server.create_database(db).expect("database");
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("client");
        client.batch_execute(sql).expect("table");
        let err = PgArchive::connect(&url).expect_err("refused");
        assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("not a switch archive"), "{err}");
    }
}
