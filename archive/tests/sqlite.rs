//! The archive contract against SQLite, and what only a file can get
//! wrong: a file that is not SQLite, or not ours, or not ours to read.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use archive::contract::{self, Harness};
use archive::{Archive, ArchiveError, SqliteArchive, FILE_NAME};

/// Each store in its own directory under one temporary directory.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Files(tempfile::tempdir().expect("tempdir"))
    }
    fn dir(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

impl Harness for Files {
    fn create(&self, name: &str) -> Box<dyn Archive> {
        std::fs::create_dir(self.dir(name)).expect("new store directory");
        self.reopen(name)
    }
    fn reopen(&self, name: &str) -> Box<dyn Archive> {
        Box::new(SqliteArchive::open(&self.dir(name)).expect("open"))
    }
}

#[test]
fn round_trip() {
    contract::round_trip(&Files::new());
}

#[test]
fn versions() {
    contract::versions(&Files::new());
}

#[test]
fn replay_is_idempotent() {
    contract::replay_is_idempotent(&Files::new());
}

#[test]
fn watermark() {
    contract::watermark(&Files::new());
}

#[test]
fn open_holds() {
    contract::open_holds(&Files::new());
}

#[test]
fn delete_by_cutoff() {
    contract::delete_by_cutoff(&Files::new());
}

#[test]
fn list_pages() {
    contract::list_pages(&Files::new());
}

#[test]
fn list_filters() {
    contract::list_filters(&Files::new());
}

#[test]
fn survives_reopen() {
    contract::survives_reopen(&Files::new());
}

#[test]
fn refuses_bad_input() {
    contract::refuses_bad_input(&Files::new());
}

#[test]
fn file_is_private() {
    let files = Files::new();
    let mut a = files.create("mode");
    let p = contract::record(&contract::payment(1, 1, 1, 1));
    a.apply(&[(1, &p[..])]).expect("apply");
    // While open, SQLite's WAL files sit beside it, with its mode.
    for name in [FILE_NAME.to_owned(), format!("{FILE_NAME}-wal")] {
        let meta = std::fs::metadata(files.dir("mode").join(&name)).expect("file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
}

fn open_error(contents: &[u8]) -> (String, ArchiveError) {
    let files = Files::new();
    let dir = files.dir("bad");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::write(dir.join(FILE_NAME), contents).expect("write");
    let err = SqliteArchive::open(&dir).expect_err("refused");
    (dir.join(FILE_NAME).display().to_string(), err)
}

#[test]
fn a_file_that_is_not_sqlite_is_an_error_naming_it() {
    let (path, err) = open_error(&[0x5a; 8192]);
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(&path), "{err}");
}

#[test]
fn an_sqlite_file_of_another_program_is_an_error_naming_it() {
    let files = Files::new();
    let dir = files.dir("other");
    std::fs::create_dir(&dir).expect("dir");
    let other = rusqlite::Connection::open(dir.join(FILE_NAME)).expect("other");
    other
        .execute_batch("CREATE TABLE notes (x);")
        .expect("table");
    drop(other);
    let err = SqliteArchive::open(&dir).expect_err("refused");
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("not a switch archive"), "{err}");
    assert!(err.to_string().contains(FILE_NAME), "{err}");
}

#[test]
fn a_damaged_archive_is_an_error_not_a_panic() {
    let files = Files::new();
    drop(files.create("damaged"));
    let path = files.dir("damaged").join(FILE_NAME);
    let mut bytes = std::fs::read(&path).expect("read");
    // Keep the 100-byte header, overwrite the schema page.
    for b in bytes.iter_mut().skip(100).take(3_900) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).expect("write");
    let err = SqliteArchive::open(&files.dir("damaged")).expect_err("refused");
    assert!(err.to_string().contains(FILE_NAME), "{err}");
}

#[test]
fn a_missing_directory_is_an_io_error_naming_the_file() {
    let files = Files::new();
    let err = SqliteArchive::open(&files.dir("absent")).expect_err("refused");
    assert!(matches!(err, ArchiveError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("absent"), "{err}");
}
