//! The switch answered by an independent ISO 8583 implementation
//! (pyiso8583) in both profiles, over real loopback TCP. Needs
//! `pip install pyiso8583` (scripts/install-test-deps.sh); fails without it.

mod common;

use common::*;

async fn scenario(profile: &'static str, spec: &'static str) {
    let mut sw = TestSwitch::start_with(|c| c.iso.profile = profile.into()).await;
    let addr = sw.iso;
    let lines = tokio::task::spawn_blocking(move || pyiso_lines("client.py", addr, spec))
        .await
        .expect("join");
    let by_name = |n: &str| {
        lines
            .iter()
            .find(|l| l["name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {lines:?}"))
            .clone()
    };
    let expect = [
        ("echo", "0810", "00"),
        ("preauth", "0110", "00"),
        ("overcapture", "0230", "13"),
        ("capture", "0230", "00"),
        ("sale", "0210", "00"),
        ("refund", "0210", "00"),
        ("luhn", "0110", "14"),
        ("unknown_original", "0410", "25"),
    ];
    for (name, mti, code) in expect {
        let l = by_name(name);
        assert_eq!(
            (l["mti"].as_str(), l["39"].as_str()),
            (Some(mti), Some(code)),
            "{name}: {l}"
        );
    }
    let auth = by_name("preauth");
    assert_eq!(auth["38"].as_str().map(str::len), Some(6));
    assert_eq!(auth["37"].as_str().map(str::len), Some(12));
    let fields: Vec<&str> = auth["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for card_field in ["2", "14", "35", "52", "55"] {
        assert!(
            !fields.contains(&card_field),
            "response carries F{card_field}: {fields:?}"
        );
    }
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiso8583_default_spec_against_ascii_profile() {
    scenario("ascii", "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiso8583_default_ascii_spec_against_ascii_hex_profile() {
    scenario("ascii-hex", "default_ascii").await;
}
