//! The data directory: one switch at a time (a second one, or `--repair`,
//! is refused and names the holder, while read-only tools keep working),
//! owner-only file modes, a shutdown that reports a journal it could not
//! close, and a repeat after restart that tells the truth about a record
//! whose durability was unknown when the disk failed.

mod common;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use switch::{Clock, Config, Overrides};

/// A switch process, killed if a test ends (or fails) with it running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The switch binary on fresh loopback ports; the ISO address and process.
fn spawn(dir: &Path, extra: &[&str]) -> (std::net::SocketAddr, Proc) {
    let (mut command, iso) = switch_command(dir);
    let child = command
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("switch starts");
    (iso, Proc(child))
}

/// Starts the switch on `dir` and connects to it. A port picked by
/// `free_port` can be taken by another socket before the switch binds it;
/// the switch then exits and is started again, at most
/// `START_ATTEMPTS_MAX` times.
async fn start(dir: &Path) -> (Proc, Client) {
    for _ in 0..START_ATTEMPTS_MAX {
        let (addr, mut p) = spawn(dir, &[]);
        match connect(addr, &mut p).await {
            Ok(c) => return (p, c),
            Err(stderr) if stderr.contains("binding the") => continue,
            Err(stderr) => panic!("switch exited before listening: {stderr}"),
        }
    }
    panic!("switch did not start in {START_ATTEMPTS_MAX} attempts");
}

/// Starts of one switch before a test gives up.
const START_ATTEMPTS_MAX: usize = 5;

/// A client once the switch listens; its stderr if it exited first.
async fn connect(addr: std::net::SocketAddr, p: &mut Proc) -> Result<Client, String> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(Client::connect(addr).await);
        }
        if !matches!(p.0.try_wait(), Ok(None)) {
            let mut stderr = String::new();
            if let Some(mut pipe) = p.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            return Err(stderr);
        }
        assert!(std::time::Instant::now() < deadline, "switch did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded; killed after) for a process to exit; its status and
/// stderr.
async fn finish(mut p: Proc) -> Output {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while matches!(p.0.try_wait(), Ok(None)) {
        assert!(std::time::Instant::now() < deadline, "did not exit in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stderr = Vec::new();
    if let Some(mut pipe) = p.0.stderr.take() {
        std::io::Read::read_to_end(&mut pipe, &mut stderr).expect("stderr");
    }
    let status = p.0.wait().expect("status");
    Output {
        status,
        stdout: Vec::new(),
        stderr,
    }
}

fn sigterm(p: &Proc) {
    let status = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// An operator tool run to completion.
fn tool(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(args)
        .arg(dir)
        .output()
        .expect("tool runs")
}

/// Asserts a refused start: non-zero, naming the directory and the pid.
fn assert_refused(out: &Output, dir: &Path, holder: u32) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second start exited 0: {stderr}");
    assert!(stderr.contains(&format!("pid {holder}")), "{stderr}");
    assert!(stderr.contains(&dir.display().to_string()), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_switch_is_refused_and_the_first_keeps_its_approvals() {
    let dir = data_dir();
    let (first, mut c) = start(&dir).await;
    let sales: Vec<Req> = (0..50).map(|i| sale(&card(100 + i), 1_000 + i)).collect();
    let mut approvals = Vec::new();
    for s in &sales {
        let r = c.call(s).await;
        assert_eq!(r.code(), "00");
        approvals.push(r.text(38));
    }

    let (_, second) = spawn(&dir, &[]);
    assert_refused(&finish(second).await, &dir, first.0.id());
    // The first one never noticed.
    assert_eq!(c.call(&sale(&card(999), 5)).await.code(), "00");
    sigterm(&first);
    let out = finish(first).await;
    assert!(out.status.success(), "{out:?}");

    let (third, mut c) = start(&dir).await;
    for (s, auth_code) in sales.iter().zip(&approvals) {
        let r = c.call(&s.clone().mti("0201")).await;
        assert_eq!((r.code(), &r.text(38)), ("00".into(), auth_code));
    }
    sigterm(&third);
    assert!(finish(third).await.status.success());
    let verify = tool(&["journal", "verify"], &dir);
    assert!(verify.status.success(), "{verify:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_is_refused_while_a_switch_runs_and_read_only_tools_work() {
    let dir = data_dir();
    let (running, mut c) = start(&dir).await;
    assert_eq!(c.call(&sale(&card(7), 700)).await.code(), "00");
    let before = files(&dir);

    let (_, repair) = spawn(&dir, &["--repair"]);
    assert_refused(&finish(repair).await, &dir, running.0.id());
    let verify = tool(&["journal", "verify"], &dir);
    assert!(verify.status.success(), "{verify:?}");
    let dump = tool(&["journal", "dump"], &dir);
    assert!(dump.status.success(), "{dump:?}");
    assert_eq!(String::from_utf8_lossy(&dump.stdout).lines().count(), 1);
    let export = Command::new(env!("CARGO_BIN_EXE_switch"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["export", "--from", "2000-01-01", "--to", "2100-01-01"])
        .output()
        .expect("export runs");
    assert!(export.status.success(), "{export:?}");
    let keys = Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(["keys", "list", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("keys runs");
    assert!(keys.status.success(), "{keys:?}");
    // None of them wrote: same files, same sizes, same times.
    assert_eq!(files(&dir), before);

    assert_eq!(c.call(&sale(&card(8), 800)).await.code(), "00");
    sigterm(&running);
    assert!(finish(running).await.status.success());
}

/// Every file under `dir` with its length and modification time.
/// Every file under `dir` with its size and time, but the archive's: the
/// running switch's drainer writes it whenever it likes (and SQLite
/// checkpoints its WAL into the file on its own schedule).
fn files(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            let meta = std::fs::metadata(&path).expect("meta");
            let archive = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(archive::FILE_NAME));
            if meta.is_dir() {
                pending.push(path);
            } else if !archive {
                out.push((path, meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    out.sort();
    out
}

fn config(dir: &Path) -> Config {
    let overrides = Overrides {
        iso_addr: local(),
        frame_addr: local(),
        http_addr: local(),
        data_dir: Some(dir.to_path_buf()),
        journal_ack: None,
        repair: false,
    };
    Config::load(None, overrides).expect("config")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_are_owner_only_after_start_and_after_a_snapshot() {
    let dir = data_dir();
    // As an operator might leave them: readable by all.
    std::fs::write(dir.join("token.key"), [7u8; 32]).expect("key");
    std::fs::set_permissions(
        dir.join("token.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    switch::KeyAdmin::new(&dir)
        .create_key(switch::Owner::Merchant("DEMO00000000001".into()), "test")
        .expect("key");

    let mut config = config(&dir);
    config.journal.snapshot_interval_s = 1;
    let running = switch::start(config.clone(), Clock::manual(START_MS))
        .await
        .expect("start");
    // A second start in this process is refused too (the lock is per open file).
    let again = switch::start(config, Clock::manual(START_MS)).await;
    let message = format!("{:#}", again.err().expect("refused"));
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );

    let mut c = Client::connect(running.iso_addr).await;
    assert_eq!(c.call(&sale(&card(3), 300)).await.code(), "00");
    let journal = dir.join("journal");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !files(&journal)
        .iter()
        .any(|f| f.0.extension().is_some_and(|e| e == "snap"))
    {
        assert!(std::time::Instant::now() < deadline, "no snapshot written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await.expect("clean shutdown");

    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&journal), 0o700);
    let all = files(&dir);
    for name in ["switch.lock", "token.key", "keys.json"] {
        assert!(all.iter().any(|f| f.0 == dir.join(name)), "{name} missing");
    }
    for (file, _, _) in all {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

/// The real file system, whose fsyncs fail while `fail_syncs` is set
/// (writes still reach the files): a disk that fails under the journal
/// with its records' durability unknown.
#[derive(Clone, Default)]
struct FailingSyncs {
    /// Set to make every segment fsync fail.
    fail_syncs: Arc<AtomicBool>,
}

struct FailingFile {
    inner: Box<dyn journal::StorageFile>,
    fail_syncs: Arc<AtomicBool>,
}

impl journal::StorageFile for FailingFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.inner.sync()
    }
}

impl FailingSyncs {
    fn wrap(&self, inner: Box<dyn journal::StorageFile>) -> Box<dyn journal::StorageFile> {
        Box::new(FailingFile {
            inner,
            fail_syncs: self.fail_syncs.clone(),
        })
    }
}

impl journal::Storage for FailingSyncs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        journal::OsStorage.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        journal::OsStorage.list(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        journal::OsStorage.read(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn journal::StorageFile>> {
        Ok(self.wrap(journal::OsStorage.create(path)?))
    }
    fn create_segment(&self, path: &Path) -> io::Result<Box<dyn journal::StorageFile>> {
        Ok(self.wrap(journal::OsStorage.create_segment(path)?))
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        journal::OsStorage.truncate(path, len)
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        journal::OsStorage.sync_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        journal::OsStorage.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        journal::OsStorage.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        journal::OsStorage.sync_dir(dir)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn journal::StorageReader>> {
        journal::OsStorage.open_read(path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_fails_the_shutdown_and_a_repeat_after_restart_tells_the_truth() {
    let dir = data_dir();
    let disk = FailingSyncs::default();
    let running = switch::start_on(
        config(&dir),
        Clock::manual(START_MS),
        Arc::new(disk.clone()),
    )
    .await
    .expect("start");
    let mut c = Client::connect(running.iso_addr).await;
    assert_eq!(c.call(&sale(&card(1), 100)).await.code(), "00");

    // The disk fails under the next record: written, its fsync refused.
    disk.fail_syncs.store(true, Ordering::SeqCst);
    let unknown = sale(&card(2), 200);
    c.send_raw(&unknown.encode()).await;
    assert!(
        c.recv_or_close().await.is_none(),
        "no answer while its record's durability is unknown"
    );
    let stopped = tokio::time::timeout(TIMEOUT, running.shutdown())
        .await
        .expect("shutdown in time");
    let message = format!(
        "{:#}",
        stopped.expect_err("the journal could not be closed")
    );
    assert!(message.contains("journal"), "{message}");

    // After restart the record was recovered: a repeat, and the very same
    // message again, get its answer, and no second payment is made.
    let mut restarted = TestSwitch::start_in(dir.clone(), |_| {}).await;
    let mut c = restarted.client().await;
    let repeat = c.call(&unknown.clone().mti("0201")).await;
    assert_eq!(repeat.code(), "00");
    let again = c.call(&unknown).await;
    assert_eq!(
        (again.code(), again.text(38)),
        ("00".into(), repeat.text(38))
    );
    restarted.stop().await;
    let dump = tool(&["journal", "dump"], &dir);
    assert!(dump.status.success(), "{dump:?}");
    let stan: u32 = String::from_utf8_lossy(&unknown.fields[&11])
        .parse()
        .expect("stan");
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .filter(|r: &serde_json::Value| r["answer"]["stan"] == stan)
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["answer"]["auth_code"], repeat.text(38));
}
