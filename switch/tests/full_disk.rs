//! A full disk under the embedded archive (SQLite) and the journal, for
//! real: the data directory is a small tmpfs. Approvals stop: an answer
//! held for a record that could not be made durable is never sent (its
//! connection is closed, since 00 cannot be promised and 96 may be
//! untrue), and every later request is answered 96; `/readyz` says not
//! ready, nothing panics or hangs. Once room is made and the switch
//! restarted, every sale acknowledged 00 is there (its repeat gets the
//! very same answer).
//!
//! Mounting needs root (`CAP_SYS_ADMIN`), as the tests here and in CI run.
//! Where mounting is refused the test fails, unless
//! `SWITCH_SKIP_MOUNT_TESTS=1` says this machine cannot mount.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The tmpfs: small, so a few thousand sales fill it.
const TMPFS_SIZE: &str = "16m";
/// Bytes written up front and deleted to make room after the disk filled.
const FILLER_BYTES: usize = 4 << 20;
/// Most sales sent before the disk must have filled.
const SALES_MAX: u64 = 200_000;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={TMPFS_SIZE},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_approvals_and_loses_no_acknowledged_sale() {
    let dir = data_dir();
    let _tmpfs = match Tmpfs::mount(&dir) {
        Ok(m) => m,
        Err(e) if std::env::var("SWITCH_SKIP_MOUNT_TESTS").as_deref() == Ok("1") => {
            eprintln!("skipped (SWITCH_SKIP_MOUNT_TESTS=1): cannot mount a tmpfs: {e}");
            return;
        }
        Err(e) => panic!("mounting a tmpfs on {} failed ({e}); run as root, or set SWITCH_SKIP_MOUNT_TESTS=1 on a machine that cannot", dir.display()),
    };
    let filler = dir.join("filler");
    std::fs::write(&filler, vec![0u8; FILLER_BYTES]).expect("filler");

    let mut t = TestSwitch::start_in(dir.clone(), |c| c.limits.payment_retention_s = 1).await;
    let mut client = t.client().await;
    let mut acked = Vec::new();
    let mut failed = false;
    for i in 0..SALES_MAX {
        let s = sale(&card(10_000 + i), 1_000 + i % 1_000);
        client.send_raw(&s.encode()).await;
        let r = tokio::time::timeout(Duration::from_secs(10), client.recv())
            .await
            .expect("an answer or a close, not a hang");
        match r.as_ref().map(|r| r.code()).as_deref() {
            Some("00") => acked.push((s, r.expect("answer"))),
            Some("96") | None => {
                failed = true;
                break;
            }
            Some(other) => panic!("sale {i} answered {other}"),
        }
        if i % 500 == 0 {
            // Memory lets payments go to the archive, which grows too.
            t.clock.advance_s(5);
        }
    }
    assert!(failed, "the disk never filled after {} sales", acked.len());
    assert!(
        acked.len() > 100,
        "only {} sales before the disk filled",
        acked.len()
    );
    // Every later request is refused, on a new connection too.
    let mut later = t.client().await;
    for i in 0..5 {
        let r = later.call(&sale(&card(900_000 + i), 500)).await;
        assert_eq!(r.code(), "96", "a sale on a full disk");
    }
    let (line, body) = t.http_get("/readyz").await;
    assert!(line.contains("503"), "{line}: {body}");

    // The journal failed: shutdown reports it, and does not hang.
    if let Some(r) = t.running.take() {
        let closed = tokio::time::timeout(Duration::from_secs(30), r.shutdown())
            .await
            .expect("shutdown in time");
        assert!(closed.is_err(), "a failed journal is reported at shutdown");
    }

    // Room again, a new life: every acknowledged sale is there.
    std::fs::remove_file(&filler).expect("remove filler");
    let mut t = TestSwitch::start_in(dir.clone(), |c| c.limits.payment_retention_s = 1).await;
    let mut client = t.client().await;
    for (s, r) in &acked {
        let again = client.call(&s.clone().mti("0201")).await;
        assert_eq!(
            (again.code(), again.text(37), again.text(38)),
            (r.code(), r.text(37), r.text(38)),
            "the repeat of an acknowledged sale after the disk filled"
        );
    }
    t.stop().await;
}
