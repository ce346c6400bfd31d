//! `switch journal verify|dump` and `switch export` on a real data
//! directory written by a real switch, through the binary.

mod common;

use std::process::Command;

use common::*;

fn switch(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_dump_and_export_read_the_journal_masked() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let pan = card(31);
    let auth = preauth(&pan, 4_250);
    assert_eq!(c.call(&auth).await.code(), "00");
    assert_eq!(c.call(&capture(&auth, 4_250)).await.code(), "00");
    assert_eq!(c.call(&refund(&auth, 1_000)).await.code(), "00");
    assert_eq!(
        c.call(
            &sale(&card(32), 999)
                .set(41, "DEMO0101")
                .set(42, "DEMO00000000002")
        )
        .await
        .code(),
        "00"
    );
    sw.stop().await;
    let dir = sw.dir.to_str().expect("utf8").to_string();

    let (ok, out, _) = switch(&["journal", "verify", &dir]);
    assert!(ok, "{out}");
    assert!(out.trim_end().ends_with("clean"), "{out}");

    let (ok, out, err) = switch(&["journal", "dump", &dir]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[2]["payment"]["status"], "partially_refunded");
    assert_eq!(
        lines[2]["payment"]["masked_pan"],
        format!("{}******{}", &pan[..6], &pan[12..])
    );
    assert!(!out.contains(&pan), "dump shows the clear PAN");

    // The test switch runs on a manual clock at 2026-11-23.
    let (ok, csv, err) = switch(&[
        "--data-dir",
        &dir,
        "export",
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-23",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("payment_id,merchant_id"));
    assert!(
        rows[1].contains("DEMO00000000001")
            && rows[1].contains("partially_refunded")
            && rows[1].contains("42.50"),
        "{}",
        rows[1]
    );
    assert!(!csv.contains(&pan));
    let (ok, xml, _) = switch(&[
        "--data-dir",
        &dir,
        "export",
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-23",
        "--format",
        "xml",
        "--merchant",
        "DEMO00000000002",
    ]);
    assert!(ok);
    assert!(
        xml.contains("count=\"1\"") && xml.contains("merchant_id=\"DEMO00000000002\""),
        "{xml}"
    );
    let (ok, none, _) = switch(&[
        "--data-dir",
        &dir,
        "export",
        "--from",
        "2026-11-24",
        "--to",
        "2026-11-30",
    ]);
    assert!(ok);
    assert_eq!(none.lines().count(), 1, "header only");
    let (ok, _, err) = switch(&[
        "--data-dir",
        &dir,
        "export",
        "--from",
        "2026-13-01",
        "--to",
        "2026-11-30",
    ]);
    assert!(!ok && err.contains("out of range"), "{err}");

    // A flipped byte in the middle of the journal is found.
    let seg = std::fs::read_dir(sw.dir.join("journal"))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg, &bytes).expect("write");
    let (ok, out, _) = switch(&["journal", "verify", &dir]);
    assert!(!ok && out.contains("DAMAGED"), "{out}");
}
