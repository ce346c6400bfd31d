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

/// The CSV's rows as maps of column name to cell (no cell here holds a
/// comma or quote).
fn csv_rows(csv: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split(',').map(str::to_string))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_shows_codes_eci_channel_declines_and_the_flag_and_filters_as_the_list() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    // E-commerce, authenticated (ECI 05); then a refund too large (13).
    let ecom = sale(&card(61), 2_500).set(25, "59").set(48, "420205");
    assert_eq!(c.call(&ecom).await.code(), "00");
    assert_eq!(c.call(&refund(&ecom, 9_999)).await.code(), "13");
    // Card present, declined by the block list: what it asked for.
    let blocked = sale("4000000000000002", 777);
    assert_eq!(c.call(&blocked).await.code(), "59");
    // MO/TO over internal frames, marked as scam by its key.
    let key = switch::KeyAdmin::new(&sw.dir)
        .create_key(switch::Owner::Merchant("DEMO00000000001".into()), "t")
        .expect("key");
    let fc = switch_client::Client::connect(sw.frame, &key.client_id, &key.secret)
        .await
        .expect("log-in");
    let moto = switch_client::MotoPayment {
        pan: card(62),
        expiry_yymm: "2812".into(),
        merchant_reference: "EXP-1".into(),
        currency: 978,
        amount_minor: 1_000,
        terminal_id: "DEMO0001".into(),
        ..Default::default()
    };
    let r = fc.authorize_moto(&moto).await.expect("moto");
    let moto_id = r.payment_id.expect("id");
    let r = fc
        .mark_scam(moto_id, Some("chargeback"))
        .await
        .expect("mark");
    assert_eq!(r.code(), "00");
    drop(fc);
    sw.stop().await;
    let dir = sw.dir.to_str().expect("utf8").to_string();
    let export = |extra: &[&str]| {
        let mut args = vec![
            "export",
            "--data-dir",
            &dir,
            "--from",
            "2026-11-23",
            "--to",
            "2026-11-23",
        ];
        args.extend_from_slice(extra);
        switch(&args)
    };

    // Flags after the subcommand.
    let (ok, csv, err) = export(&["--format", "csv"]);
    assert!(ok, "{err}");
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), 3, "{csv}");
    let by_status = |s: &str| rows.iter().find(|r| r["status"] == s).expect(s).clone();
    let declined = by_status("declined");
    assert_eq!(declined["response_code"], "59");
    assert_eq!(declined["authorized"], "0.00");
    assert_eq!(declined["requested"], "7.77", "what the decline was for");
    assert_eq!(declined["auth_code"], "", "no approval code");
    assert_eq!(declined["channel"], "00");
    let ecom_row = rows
        .iter()
        .find(|r| r["eci"] == "05")
        .expect("the e-commerce row");
    assert_eq!(
        (
            ecom_row["channel"].as_str(),
            ecom_row["response_code"].as_str()
        ),
        ("59", "00")
    );
    assert_eq!(ecom_row["refused_operations"], "refund:13:9999");
    let flagged = rows
        .iter()
        .find(|r| r["payment_id"] == moto_id.to_string())
        .expect("the MO/TO row");
    assert_eq!(flagged["scam"], "true");
    // The block list flagged the declined one too, by rule, not by hand.
    assert_eq!(declined["scam"], "true");
    assert_eq!(declined["flag_reasons"], "blocklist_card");
    assert_eq!(declined["flagged_by"], "");
    assert_eq!(flagged["flagged_by"], key.client_id);
    assert_eq!(flagged["flag_note"], "chargeback");
    assert_eq!(flagged["channel"], "08");
    assert!(!csv.contains("4000000000000002") && !csv.contains(&card(61)));

    // The list's filters, by the same names.
    let ids = |extra: &[&str]| {
        let (ok, csv, err) = export(extra);
        assert!(ok, "{extra:?}: {err}");
        let mut ids: Vec<String> = csv_rows(&csv)
            .into_iter()
            .map(|r| r["payment_id"].clone())
            .collect();
        ids.sort();
        ids
    };
    let mut both = vec![declined["payment_id"].clone(), moto_id.to_string()];
    both.sort();
    assert_eq!(ids(&["--scam", "yes"]), both);
    assert_eq!(ids(&["--scam", "no"]), [ecom_row["payment_id"].clone()]);
    assert_eq!(ids(&["--code", "59"]), [declined["payment_id"].clone()]);
    assert_eq!(ids(&["--eci", "5"]), [ecom_row["payment_id"].clone()]);
    assert_eq!(ids(&["--channel", "8"]), [moto_id.to_string()]);
    assert_eq!(ids(&["--last4", "0002"]), [declined["payment_id"].clone()]);
    let rrn = ecom_row["rrn"].clone();
    assert_eq!(ids(&["--rrn", &rrn]), [ecom_row["payment_id"].clone()]);
    assert_eq!(ids(&["--status", "declined,succeeded"]).len(), 3);
    assert_eq!(ids(&["--status", "succeeded", "--scam", "no"]).len(), 1);
    let (ok, xml, _) = export(&["--format", "xml", "--scam", "yes"]);
    assert!(
        ok && xml.contains("count=\"2\"") && xml.contains("flag_note=\"chargeback\""),
        "{xml}"
    );

    // Bad filters are refused by name; one data directory.
    for (bad, says) in [
        (&["--scam", "maybe"][..], "--scam"),
        (&["--channel", "7"][..], "--channel"),
        (&["--status", "paid"][..], "--status"),
        (&["--last4", "12a4"][..], "--last4"),
    ] {
        let (ok, _, err) = export(bad);
        assert!(!ok && err.contains(says), "{bad:?}: {err}");
    }
    let (ok, _, err) = switch(&[
        "--data-dir",
        "/elsewhere",
        "export",
        "--data-dir",
        &dir,
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-23",
    ]);
    assert!(!ok && err.contains("--data-dir given twice"), "{err}");
}
