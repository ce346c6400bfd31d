//! Policy loading: errors name the line and key; the embedded default and
//! every example in docs/risk.md compile.

mod common;

use common::tokenize;
use risk::{Policy, PolicyError};

fn error(source: &str) -> PolicyError {
    Policy::compile(source, &tokenize).expect_err("policy should be refused")
}

fn invalid(source: &str) -> (usize, String) {
    match error(source) {
        PolicyError::Invalid { line, key, .. } => (line, key),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn syntax(source: &str) -> (usize, String) {
    match error(source) {
        PolicyError::Syntax { line, message } => (line, message),
        other => panic!("expected Syntax, got {other:?}"),
    }
}

#[test]
fn embedded_default_compiles() {
    let policy = Policy::embedded(&tokenize);
    // Debug never shows a PAN: the policy holds only tokens.
    assert!(!format!("{policy:?}").contains("4000000000000002"));
}

#[test]
fn syntax_errors_name_the_line() {
    assert_eq!(syntax("version = 1\n[defaults\n").0, 2);
    let (line, message) = syntax("version = 1\n[defaults]\nflag_scor_min = 5\n");
    assert_eq!(line, 3);
    assert!(message.contains("flag_scor_min"), "{message}");
    let (line, message) = syntax("version = 1\n\n[defaults.sca]\nthreshold_minor = { 978 = -1 }\n");
    assert_eq!(line, 4);
    assert!(message.contains("-1"), "{message}");
    assert_eq!(syntax("version = 1\n[defaults.velocity.truck]\n").0, 2);
}

#[test]
fn invalid_values_name_line_and_key() {
    let cases = [
        ("version = 2\n", 1, "version"),
        ("version = 1\n[defaults.velocity.card]\ncount_max_60s = 16\n", 3, "defaults.velocity.card.count_max_60s"),
        ("version = 1\n[defaults.velocity.card]\ncount_max_60s = 0\n", 3, "defaults.velocity.card.count_max_60s"),
        ("version = 1\n[defaults.velocity.card]\ncount_max_1h = \"lots\"\n", 3, "defaults.velocity.card.count_max_1h"),
        ("version = 1\n[defaults.sca]\nthreshold_minor = { EUR = 3000 }\n", 3, "defaults.sca.threshold_minor.EUR"),
        ("version = 1\n[defaults.sca]\nthreshold_minor = { 978 = 1000000000000 }\n", 3, "defaults.sca.threshold_minor.978"),
        ("version = 1\n[defaults]\nwatch_list_score = 10001\n", 3, "defaults.watch_list_score"),
        (
            "version = 1\n[merchants.DEMO00000000001.velocity.terminal]\namount_max_minor_60s = { 978 = 1 }\n",
            3,
            "merchants.DEMO00000000001.velocity.terminal.amount_max_minor_60s",
        ),
        ("version = 1\n[merchants.DEMO000000000011]\nwatch_list_score = 1\n", 2, "merchants.DEMO000000000011"),
        ("version = 1\n[merchants.M.terminals.DEMO00011]\n", 2, "merchants.M.terminals.DEMO00011"),
        ("version = 1\n[defaults.terminals.T1]\n", 2, "defaults.terminals"),
        ("version = 1\n[blocklist]\nbins = [\"4000\",\n  \"4x\"]\n", 4, "blocklist.bins"),
        ("version = 1\n[blocklist]\ntokens = [\"abc\"]\n", 3, "blocklist.tokens"),
        (
            "version = 1\n[blocklist]\nterminals = [{ merchant = \"\", terminal = \"T\" }]\n",
            3,
            "blocklist.terminals",
        ),
    ];
    for (source, line, key) in cases {
        assert_eq!(invalid(source), (line, key.to_owned()), "{source}");
    }
}

#[test]
fn a_bad_pan_is_refused_without_echoing_it() {
    let source = "version = 1\n[blocklist]\npans = [\"4000000000000003\"]\n";
    let error = error(source);
    let text = error.to_string();
    assert!(
        text.starts_with("policy line 3, key `blocklist.pans`"),
        "{text}"
    );
    assert!(!text.contains("4000000000000003"), "{text}");
}

#[test]
fn a_merchant_can_lift_a_default_with_off() {
    let source = "version = 1\n[defaults.velocity.card]\ncount_max_60s = 5\namount_max_minor_60s = { 978 = 1 }\n\
                  [merchants.M.velocity.card]\ncount_max_60s = \"off\"\n";
    // Lifting the count while the default 60 s amount limit stays is refused.
    assert_eq!(
        invalid(source),
        (
            6,
            "merchants.M.velocity.card.amount_max_minor_60s".to_owned()
        )
    );
    let source = format!("{source}amount_max_minor_60s = {{}}\n");
    Policy::compile(&source, &tokenize).unwrap();
}

#[test]
fn too_large_is_refused_before_parsing() {
    let source = "#".repeat(risk::POLICY_BYTES_MAX + 1);
    assert!(matches!(error(&source), PolicyError::TooLarge { .. }));
}

#[test]
fn docs_examples_compile() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/risk.md")).unwrap();
    let mut examples = 0;
    let mut rest = docs.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        Policy::compile(&body[..end], &tokenize)
            .unwrap_or_else(|e| panic!("docs example {examples}: {e}"));
        examples += 1;
        rest = &body[end + 3..];
    }
    assert!(examples >= 2, "docs/risk.md should hold TOML examples");
}
