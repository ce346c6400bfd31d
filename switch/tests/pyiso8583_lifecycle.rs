//! The lifecycle extensions (incremental authorization, partial captures)
//! driven by an independent ISO 8583 implementation (pyiso8583) in both
//! profiles, over real loopback TCP, so F90 on an 0100 and F48 subelement
//! 22 are encoded by someone else's code. Needs `pip install pyiso8583`
//! (scripts/install-test-deps.sh); fails without it.

mod common;

use common::*;

async fn scenario(profile: &'static str, spec: &'static str) {
    let mut sw = TestSwitch::start_with(|c| c.iso.profile = profile.into()).await;
    let addr = sw.iso;
    let lines = tokio::task::spawn_blocking(move || pyiso_lines("lifecycle.py", addr, spec))
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
        ("preauth", "0110", "00"),
        ("increment", "0110", "00"),
        ("partial", "0230", "00"),
        ("over", "0230", "13"),
        ("final", "0230", "00"),
        ("after_final", "0230", "12"),
        ("increment_after_final", "0110", "12"),
    ];
    for (name, mti, code) in expect {
        let l = by_name(name);
        assert_eq!(
            (l["mti"].as_str(), l["39"].as_str()),
            (Some(mti), Some(code)),
            "{name}: {l}"
        );
    }
    let original = by_name("preauth")["38"].clone();
    assert_eq!(original.as_str().map(str::len), Some(6));
    assert_eq!(by_name("increment")["38"], original, "the original's F38");
    assert_eq!(by_name("increment")["4"].as_str(), Some("000000005000"));
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiso8583_increment_and_partial_captures_in_the_ascii_profile() {
    scenario("ascii", "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiso8583_increment_and_partial_captures_in_the_ascii_hex_profile() {
    scenario("ascii-hex", "default_ascii").await;
}
