//! Operators over HTTP without a browser: roles checked by the server
//! (a viewer's refused actions never reach the switch), operator
//! management for admins only, TOTP required for admins, sessions revoked
//! by a block, a role change or a reset, the password policy, and the
//! `vterm operators` command changing a running terminal's store file.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::agent::Agent;
use common::{
    cheap_hash, config_text, csrf_in, temp_dir, TestSwitch, TestTerminal, OPERATOR, PAN, PASSWORD,
};
use vterm::Clock;

/// 2026-11-23T11:49:10Z.
const START_MS: u64 = 1_795_434_550_000;
/// An admin.
const ADMIN: &str = "ada";
/// A viewer.
const VIEWER: &str = "vera";
/// Another operator.
const BOB: &str = "bob";
/// Their passwords: each its own.
const ADMIN_PASSWORD: &str = "Ada's long admin passphrase";
const VIEWER_PASSWORD: &str = "vera only looks at payments";
const BOB_PASSWORD: &str = "bob takes the telephone orders";

/// The test configuration with ada (admin), vera (viewer) and bob
/// (operator) beside alice (operator), the store in `operators_file`
/// when given.
fn team_config(base: &str, operators_file: Option<&Path>) -> String {
    let mut text = base.to_string();
    if let Some(path) = operators_file {
        text = text.replace(
            "sessions_max = 10",
            &format!(
                "sessions_max = 10\noperators_file = {:?}",
                path.display().to_string()
            ),
        );
    }
    for (name, password, role) in [
        (ADMIN, ADMIN_PASSWORD, "admin"),
        (VIEWER, VIEWER_PASSWORD, "viewer"),
        (BOB, BOB_PASSWORD, "operator"),
    ] {
        text.push_str(&format!(
            "\n[[operators]]\nname = \"{name}\"\npassword_hash = \"{}\"\nrole = \"{role}\"\n",
            cheap_hash(password)
        ));
    }
    text
}

async fn team(clock: Clock) -> TestTerminal {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = dead.local_addr().expect("addr");
    drop(dead);
    let base = config_text(addr, "DM-0000-0001", &"ab".repeat(32));
    TestTerminal::start(&team_config(&base, None), clock).await
}

/// Signs `name` in with `password`, no second factor; returns the CSRF
/// token of the terminal page.
async fn sign_in(a: &mut Agent, name: &str, password: &str) -> String {
    let r = a.sign_in_as(name, password).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/terminal")),
        "{}",
        r.body
    );
    let page = a.get("/terminal").await;
    assert_eq!(page.status, 200);
    csrf_in(&page.body)
}

/// The secret an enrolment page shows.
fn secret_in(page: &str) -> String {
    let at = page.find(r#"data-secret=""#).expect("a secret") + r#"data-secret=""#.len();
    page[at..].split('"').next().expect("secret").to_string()
}

/// Signs the admin in: on first use enrols TOTP (returning the secret);
/// later gives the code of `secret`. Moves the clock one step first, so
/// each code is fresh. Returns the session's CSRF token and the secret.
async fn admin_in(a: &mut Agent, clock: &Clock, secret: Option<&str>) -> (String, String) {
    clock.advance_s(30);
    let r = a.sign_in_as(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let secret = match secret {
        None => {
            assert_eq!(r.header("location"), Some("/account/totp"));
            let page = a.get("/account/totp").await;
            let secret = secret_in(&page.body);
            let code = common::totp::code(&secret, clock.now_s());
            let r = a
                .post(
                    "/account/totp",
                    &[("csrf", &csrf_in(&page.body)), ("code", &code)],
                )
                .await;
            assert_eq!(
                (r.status, r.header("location")),
                (303, Some("/terminal")),
                "{}",
                r.body
            );
            secret
        }
        Some(secret) => {
            assert_eq!(r.header("location"), Some("/login/totp"));
            let page = a.get("/login/totp").await;
            let code = common::totp::code(secret, clock.now_s());
            let r = a
                .post(
                    "/login/totp",
                    &[("csrf", &csrf_in(&page.body)), ("code", &code)],
                )
                .await;
            assert_eq!(
                (r.status, r.header("location")),
                (303, Some("/terminal")),
                "{}",
                r.body
            );
            secret.to_string()
        }
    };
    let page = a.get("/terminal").await;
    assert_eq!(page.status, 200);
    (csrf_in(&page.body), secret)
}

fn payment_form<'a>(csrf: &'a str, reference: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("kind", "preauth"),
        ("pan", PAN),
        ("expiry", "12/30"),
        ("amount", "25.00"),
        ("currency", "978"),
        ("reference", reference),
        ("terminal_id", "DEMO0001"),
    ]
}

#[tokio::test]
async fn a_viewer_sees_payments_but_its_actions_are_refused_before_the_switch() {
    let mut switch = TestSwitch::start().await;
    let base = config_text(switch.frame, &switch.client_id, &switch.secret);
    let mut t = TestTerminal::start(&team_config(&base, None), Clock::System).await;

    // An operator takes a pre-authorization.
    let mut alice = Agent::new(t.addr);
    let csrf = alice.sign_in().await;
    let r = alice
        .post("/payments", &payment_form(&csrf, "ORD-ALICE"))
        .await;
    assert_eq!(r.status, 303);
    let page = alice.get("/terminal").await;
    assert!(page.body.contains(r#"id="payment-form""#));
    let id = page
        .body
        .split(r#"id="result-payment-id"><a href="/payments/"#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("payment id")
        .to_string();
    let before = alice.get(&format!("/payments/{id}")).await.body;
    assert!(before.contains("Uncaptured") && before.contains("/capture"));

    // The viewer sees it, without any form to act.
    let mut vera = Agent::new(t.addr);
    let csrf = sign_in(&mut vera, VIEWER, VIEWER_PASSWORD).await;
    let page = vera.get("/terminal").await;
    assert!(page.body.contains("ORD-ALICE"), "the table");
    assert!(page.body.contains(r#"<span id="role">(viewer)</span>"#));
    for hidden in [
        r#"id="payment-form""#,
        "/capture",
        "/refund",
        "/cancel",
        "nav-operators",
    ] {
        assert!(!page.body.contains(hidden), "{hidden} shown to a viewer");
    }
    let detail = vera.get(&format!("/payments/{id}")).await;
    assert_eq!(detail.status, 200);
    assert!(detail.body.contains("Uncaptured") && !detail.body.contains("/capture"));
    assert!(
        !detail.body.contains("scam-form"),
        "no scam form for a viewer"
    );

    // Posting anyway is refused with the reason.
    let r = vera
        .post("/payments", &payment_form(&csrf, "ORD-VERA"))
        .await;
    assert_eq!(r.status, 403);
    assert!(
        r.body
            .contains("Your role (viewer) may not take, capture, refund or cancel payments"),
        "{}",
        r.body
    );
    for action in ["capture", "refund", "cancel", "scam", "unscam"] {
        let r = vera
            .post(
                &format!("/payments/{id}/{action}"),
                &[
                    ("csrf", &csrf),
                    ("amount", "1.00"),
                    ("reason", "viewer"),
                    ("back", "/terminal"),
                ],
            )
            .await;
        assert_eq!(r.status, 403, "{action}");
    }

    // The switch saw none of it: the payment is as it was, and no
    // payment with the viewer's reference exists.
    let after = alice.get(&format!("/payments/{id}")).await.body;
    let history = |page: &str| {
        page.split(r#"id="history""#)
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(history(&after), history(&before));
    assert!(after.contains("Uncaptured"));
    let search = alice.get("/terminal?reference=ORD-VERA").await;
    assert!(
        search.body.contains(r#"id="no-payments""#),
        "{}",
        search.body
    );

    // The operator can.
    let csrf = csrf_in(&alice.get("/terminal").await.body);
    let r = alice
        .post(
            &format!("/payments/{id}/capture"),
            &[("csrf", &csrf), ("back", "/terminal")],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = alice.get("/terminal").await;
    assert!(
        page.body.contains(&format!("Capture of payment {id} done")),
        "{}",
        page.body
    );
    t.stop().await;
    switch.stop().await;
}

#[tokio::test]
async fn only_an_admin_reaches_operator_management() {
    let clock = Clock::manual(START_MS);
    let mut t = team(clock.clone()).await;
    for (name, password) in [(VIEWER, VIEWER_PASSWORD), (OPERATOR, PASSWORD)] {
        let mut a = Agent::new(t.addr);
        let csrf = sign_in(&mut a, name, password).await;
        assert!(!a.get("/terminal").await.body.contains("/operators"));
        let r = a.get("/operators").await;
        assert_eq!(r.status, 403, "{name}");
        assert!(r.body.contains("may not manage operators"), "{}", r.body);
        let add = [
            ("csrf", csrf.as_str()),
            ("name", "mallory"),
            ("role", "admin"),
            ("password", "Mallory wants in 2026!"),
        ];
        assert_eq!(a.post("/operators", &add).await.status, 403);
        let block = [("csrf", csrf.as_str())];
        assert_eq!(
            a.post(&format!("/operators/{BOB}/block"), &block)
                .await
                .status,
            403
        );
    }
    let mut ada = Agent::new(t.addr);
    let (csrf, _) = admin_in(&mut ada, &clock, None).await;
    let page = ada.get("/operators").await;
    assert_eq!(page.status, 200);
    for name in [ADMIN, VIEWER, BOB, OPERATOR] {
        assert!(
            page.body.contains(&format!(r#"data-operator="{name}""#)),
            "{name}"
        );
    }
    let add = [
        ("csrf", csrf.as_str()),
        ("name", "carol"),
        ("role", "viewer"),
        ("password", "A reader's own passphrase"),
    ];
    let r = ada.post("/operators", &add).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/operators")));
    let page = ada.get("/operators").await;
    assert!(page.body.contains("Operator carol added as viewer."));
    let mut carol = Agent::new(t.addr);
    sign_in(&mut carol, "carol", "A reader's own passphrase").await;
    t.stop().await;
}

#[tokio::test]
async fn an_admin_enrols_totp_before_anything_else_and_then_signs_in_with_a_code() {
    let clock = Clock::manual(START_MS);
    let mut t = team(clock.clone()).await;
    let mut ada = Agent::new(t.addr);
    let r = ada.sign_in_as(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(r.header("location"), Some("/account/totp"));
    for path in ["/terminal", "/operators", "/payments/1", "/account"] {
        let r = ada.get(path).await;
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some("/account/totp")),
            "{path}"
        );
    }
    let page = ada.get("/account/totp").await;
    assert!(page.body.contains(r#"id="totp-required""#));
    let secret = secret_in(&page.body);
    assert_eq!(
        secret,
        secret_in(&ada.get("/account/totp").await.body),
        "kept on reload"
    );
    assert!(page.body.contains(&format!(
        "otpauth://totp/Virtual%20terminal:{ADMIN}?secret={secret}"
    )));
    let csrf = csrf_in(&page.body);
    let wrong = common::totp::code(&secret, clock.now_s() + 300);
    let r = ada
        .post("/account/totp", &[("csrf", &csrf), ("code", &wrong)])
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Wrong code"));
    assert_eq!(
        ada.get("/terminal").await.header("location"),
        Some("/account/totp")
    );
    let code = common::totp::code(&secret, clock.now_s());
    let r = ada
        .post("/account/totp", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!((r.status, r.header("location")), (303, Some("/terminal")));
    let page = ada.get("/terminal").await;
    assert!(
        page.body.contains("The second factor is on"),
        "{}",
        page.body
    );
    assert_eq!(ada.get("/operators").await.status, 200);
    assert!(ada.post("/logout", &[("csrf", &csrf)]).await.status == 303);

    // Sign-in now asks for a code; nothing else is reachable before.
    let r = ada.sign_in_as(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(r.header("location"), Some("/login/totp"));
    assert_eq!(
        ada.get("/terminal").await.header("location"),
        Some("/login/totp")
    );
    let page = ada.get("/login/totp").await;
    let csrf = csrf_in(&page.body);
    let r = ada
        .post("/login/totp", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(r.status, 401, "the code used at enrolment works once");
    assert!(r.body.contains("Wrong or already used code."));
    let r = ada
        .post("/login/totp", &[("csrf", &csrf), ("code", "12345")])
        .await;
    assert_eq!(r.status, 401);
    // One step later (within the tolerance) the next code works.
    clock.advance_s(30);
    let next = common::totp::code(&secret, clock.now_s());
    let r = ada
        .post("/login/totp", &[("csrf", &csrf), ("code", &next)])
        .await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/terminal")),
        "{}",
        r.body
    );
    assert_eq!(ada.get("/operators").await.status, 200);
    t.stop().await;
}

#[tokio::test]
async fn wrong_codes_count_towards_the_lockout() {
    let clock = Clock::manual(START_MS);
    let mut t = team(clock.clone()).await;
    let mut ada = Agent::new(t.addr);
    let (csrf, secret) = admin_in(&mut ada, &clock, None).await;
    ada.post("/logout", &[("csrf", &csrf)]).await;
    ada.sign_in_as(ADMIN, ADMIN_PASSWORD).await;
    let csrf = csrf_in(&ada.get("/login/totp").await.body);
    for _ in 0..5 {
        let r = ada
            .post("/login/totp", &[("csrf", &csrf), ("code", "000000")])
            .await;
        assert_eq!(r.status, 401);
    }
    clock.advance_s(30);
    let code = common::totp::code(&secret, clock.now_s());
    let r = ada
        .post("/login/totp", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(r.status, 429, "locked out even with the right code");
    t.stop().await;
}

#[tokio::test]
async fn a_block_a_role_change_and_a_reset_end_live_sessions() {
    let clock = Clock::manual(START_MS);
    let mut t = team(clock.clone()).await;
    let mut ada = Agent::new(t.addr);
    let (csrf, _) = admin_in(&mut ada, &clock, None).await;
    let mut bob = Agent::new(t.addr);
    sign_in(&mut bob, BOB, BOB_PASSWORD).await;

    // Block: bob's next request is signed out, and he cannot sign in.
    let r = ada
        .post(&format!("/operators/{BOB}/block"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    let r = bob.get("/terminal").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    let r = bob.sign_in_as(BOB, BOB_PASSWORD).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("This operator is blocked"));
    assert!(ada
        .get("/operators")
        .await
        .body
        .contains("Operator bob blocked."));
    ada.post(&format!("/operators/{BOB}/unblock"), &[("csrf", &csrf)])
        .await;
    sign_in(&mut bob, BOB, BOB_PASSWORD).await;

    // Role change: signed out, then signed in as a viewer.
    let r = ada
        .post(
            &format!("/operators/{BOB}/role"),
            &[("csrf", &csrf), ("role", "viewer")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        bob.get("/terminal").await.header("location"),
        Some("/login")
    );
    sign_in(&mut bob, BOB, BOB_PASSWORD).await;
    let page = bob.get("/terminal").await;
    assert!(!page.body.contains(r#"id="payment-form""#), "a viewer now");

    // Reset: signed out; the old password no longer works, the new does.
    let new_password = "A brand new passphrase";
    let r = ada
        .post(
            &format!("/operators/{BOB}/reset"),
            &[("csrf", &csrf), ("password", new_password)],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        bob.get("/terminal").await.header("location"),
        Some("/login")
    );
    assert_eq!(bob.sign_in_as(BOB, BOB_PASSWORD).await.status, 401);
    sign_in(&mut bob, BOB, new_password).await;

    // The admin cannot lock itself out.
    let r = ada
        .post(&format!("/operators/{ADMIN}/block"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(ada.get("/operators").await.status, 200);
    t.stop().await;
}

#[tokio::test]
async fn passwords_are_checked_against_the_policy() {
    let clock = Clock::manual(START_MS);
    let mut t = team(clock.clone()).await;
    let mut ada = Agent::new(t.addr);
    let (csrf, _) = admin_in(&mut ada, &clock, None).await;
    for (password, why) in [
        ("Short1!", "at least 12 characters"),
        ("alllowercaseletters", "at least 2 kinds"),
        ("Password1234", "most common"),
        ("dave is my name really", "contain the operator"),
    ] {
        let r = ada
            .post(
                "/operators",
                &[
                    ("csrf", &csrf),
                    ("name", "dave"),
                    ("role", "operator"),
                    ("password", password),
                ],
            )
            .await;
        assert_eq!(r.status, 422, "{password}");
        assert!(r.body.contains(why), "{password}: {}", r.body);
    }
    assert!(!ada
        .get("/operators")
        .await
        .body
        .contains(r#"data-operator="dave""#));
    let r = ada
        .post(
            &format!("/operators/{BOB}/reset"),
            &[("csrf", &csrf), ("password", "qwerty123456")],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("most common"));

    // One's own password.
    let mut alice = Agent::new(t.addr);
    let csrf = alice.sign_in().await;
    let change = |current: &'static str, new: &'static str, repeat: &'static str| {
        vec![("current", current), ("new", new), ("repeat", repeat)]
    };
    for (form, why) in [
        (
            change("wrong", "A good new passphrase", "A good new passphrase"),
            "current password is wrong",
        ),
        (
            change(PASSWORD, "A good new passphrase", "Another one"),
            "differ",
        ),
        (change(PASSWORD, "short", "short"), "too short"),
    ] {
        let mut pairs: Vec<(&str, &str)> = form.clone();
        pairs.push(("csrf", &csrf));
        let r = alice.post("/account/password", &pairs).await;
        assert_eq!(r.status, 422, "{why}");
        assert!(r.body.contains(why), "{why}: {}", r.body);
    }
    let mut other = Agent::new(t.addr);
    other.sign_in().await;
    let mut pairs: Vec<(&str, &str)> =
        change(PASSWORD, "A good new passphrase", "A good new passphrase");
    pairs.push(("csrf", &csrf));
    let r = alice.post("/account/password", &pairs).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/account")));
    assert!(alice
        .get("/account")
        .await
        .body
        .contains("Your password was changed."));
    assert_eq!(
        other.get("/terminal").await.header("location"),
        Some("/login"),
        "other sessions end"
    );
    assert_eq!(alice.get("/terminal").await.status, 200, "this one goes on");
    assert_eq!(other.sign_in_as(OPERATOR, PASSWORD).await.status, 401);
    sign_in(&mut other, OPERATOR, "A good new passphrase").await;
    t.stop().await;
}

/// Runs the `vterm` binary with `args`, `stdin` as its input.
fn vterm_cli(config: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vterm"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vterm binary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("vterm exits")
}

#[tokio::test]
async fn the_command_line_changes_a_running_terminal() {
    let dir = temp_dir("operators-cli");
    let store = dir.join("operators.json");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = dead.local_addr().expect("addr");
    drop(dead);
    let text = team_config(
        &config_text(addr, "DM-0000-0001", &"ab".repeat(32)),
        Some(&store),
    );
    let config = dir.join("vterm.toml");
    std::fs::write(&config, &text).expect("config");
    let mut t = TestTerminal::start(&text, Clock::manual(START_MS)).await;
    let mode = std::fs::metadata(&store)
        .expect("store written at start")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut bob = Agent::new(t.addr);
    sign_in(&mut bob, BOB, BOB_PASSWORD).await;
    let out = vterm_cli(&config, &["operators", "block", BOB], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = bob.get("/terminal").await;
    assert_eq!(
        r.header("location"),
        Some("/login"),
        "the terminal read the file again"
    );
    assert_eq!(bob.sign_in_as(BOB, BOB_PASSWORD).await.status, 403);

    // Add, with the password on standard input, under the policy.
    let out = vterm_cli(
        &config,
        &["operators", "add", "carol", "--role", "viewer"],
        "short\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short"));
    let out = vterm_cli(
        &config,
        &["operators", "add", "carol", "--role", "viewer"],
        "She reads the payments\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut carol = Agent::new(t.addr);
    sign_in(&mut carol, "carol", "She reads the payments").await;
    assert!(!carol
        .get("/terminal")
        .await
        .body
        .contains(r#"id="payment-form""#));
    let out = vterm_cli(&config, &["operators", "role", "carol", "operator"], "");
    assert!(out.status.success());
    assert_eq!(
        carol.get("/terminal").await.header("location"),
        Some("/login")
    );
    let out = vterm_cli(
        &config,
        &["operators", "reset", "carol"],
        "Her second passphrase\n",
    );
    assert!(out.status.success());
    sign_in(&mut carol, "carol", "Her second passphrase").await;
    assert!(
        carol
            .get("/terminal")
            .await
            .body
            .contains(r#"id="payment-form""#),
        "an operator now"
    );
    let out = vterm_cli(&config, &["operators", "role", "carol", "root"], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected viewer, operator or admin"));

    let out = vterm_cli(&config, &["operators", "list"], "");
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    for line in ["bob ", "carol "] {
        assert!(list.lines().any(|l| l.starts_with(line)), "{list}");
    }
    assert!(
        list.lines()
            .any(|l| l.starts_with("bob") && l.contains("blocked")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("carol") && l.contains("operator")),
        "{list}"
    );

    // Every change is in the audit log, in order, without secrets.
    let audit = std::fs::read_to_string(dir.join("operators.audit.log")).expect("audit log");
    let actions: Vec<&str> = audit
        .lines()
        .filter(|l| !l.contains(r#""action":"seed""#))
        .map(|l| {
            l.split(r#""action":""#)
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("")
        })
        .collect();
    assert_eq!(actions, ["block", "add", "role", "reset"], "{audit}");
    assert!(audit.contains(r#""actor":"cli:"#));
    assert!(!audit.contains("argon2") && !audit.contains("passphrase"));
    t.stop().await;
}

/// An admin manages the merchant's terminals on a real switch: adds one,
/// disables one (a payment on it is then refused with 58), enables it
/// again and changes its settings; an operator reaches none of it.
#[tokio::test]
async fn an_admin_manages_terminals_and_a_disabled_one_takes_no_payment() {
    let mut switch = TestSwitch::start().await;
    let base = config_text(switch.frame, &switch.client_id, &switch.secret);
    let clock = Clock::manual(START_MS);
    let mut t = TestTerminal::start(&team_config(&base, None), clock.clone()).await;

    let mut bob = Agent::new(t.addr);
    let bob_csrf = sign_in(&mut bob, BOB, BOB_PASSWORD).await;
    assert!(!bob.get("/terminal").await.body.contains("nav-terminals"));
    assert_eq!(bob.get("/terminals").await.status, 403);
    let add = |csrf: &str| {
        [
            ("csrf", csrf.to_string()),
            ("terminal_id", "VTNEW001".to_string()),
            ("name", "front desk".to_string()),
        ]
    };
    let bob_add = add(&bob_csrf);
    let bob_add = bob_add.each_ref().map(|(k, v)| (*k, v.as_str()));
    assert_eq!(bob.post("/terminals", &bob_add).await.status, 403);
    assert_eq!(
        bob.post("/terminals/DEMO0001/disable", &[("csrf", &bob_csrf)])
            .await
            .status,
        403
    );

    let mut ada = Agent::new(t.addr);
    let (csrf, _) = admin_in(&mut ada, &clock, None).await;
    let page = ada.get("/terminals").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(r#"data-terminal="DEMO0001" data-state="enabled""#),
        "{}",
        page.body
    );
    let ada_add = add(&csrf);
    let ada_add = ada_add.each_ref().map(|(k, v)| (*k, v.as_str()));
    let r = ada.post("/terminals", &ada_add).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/terminals")));
    let page = ada.get("/terminals").await;
    assert!(
        page.body.contains("Adding terminal VTNEW001: done."),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains(r#"data-terminal="VTNEW001" data-state="enabled""#));
    assert!(page.body.contains("front desk"));
    // The same id again: the switch's refusal is shown.
    ada.post("/terminals", &ada_add).await;
    assert!(ada.get("/terminals").await.body.contains("refused"));

    // Disabled: the operator's payment on it is refused with 58.
    let r = ada
        .post("/terminals/DEMO0001/disable", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert!(ada
        .get("/terminals")
        .await
        .body
        .contains(r#"data-terminal="DEMO0001" data-state="disabled""#));
    let r = bob
        .post("/payments", &payment_form(&bob_csrf, "ORD-DISABLED"))
        .await;
    assert_eq!(r.status, 303);
    let result = bob.get("/terminal").await.body;
    assert!(result.contains("(code 58)"), "{result}");

    // Enabled again, with refunds off on it: payments go through.
    ada.post("/terminals/DEMO0001/enable", &[("csrf", &csrf)])
        .await;
    let r = ada
        .post(
            "/terminals/DEMO0001/settings",
            &[
                ("csrf", csrf.as_str()),
                ("name", "till 1"),
                ("refunds", "off"),
                ("moto", "inherit"),
                ("cancel", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = ada.get("/terminals").await.body;
    assert!(
        page.contains(r#"data-terminal="DEMO0001" data-state="enabled""#)
            && page.contains("till 1"),
        "{page}"
    );
    let r = bob
        .post("/payments", &payment_form(&bob_csrf, "ORD-ENABLED"))
        .await;
    assert_eq!(r.status, 303);
    let result = bob.get("/terminal").await.body;
    assert!(result.contains(r#"id="result-auth-code""#), "{result}");
    let held = result
        .split(r#"id="result-payment-id"><a href="/payments/"#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("payment id")
        .to_string();

    // The merchant's settings: shown to the admin as the switch has them;
    // an operator may not change them.
    let summary = |page: &str| {
        page.split(r#"<p id="merchant-summary" "#)
            .nth(1)
            .and_then(|s| s.split('>').next())
            .unwrap_or_else(|| panic!("no merchant summary in {page}"))
            .to_string()
    };
    let page = ada.get("/terminals").await.body;
    assert_eq!(
        summary(&page),
        r#"data-merchant="DEMO00000000001" data-enabled="enabled" data-currencies="978,840,752" data-over-capture="20" data-hold="168" data-auto-capture="off" data-refunds="on" data-moto="on""#
    );
    let settings = |csrf: &str, over: &str| {
        [
            ("csrf", csrf.to_string()),
            ("currencies", "978, 840".to_string()),
            ("over_capture_pct", over.to_string()),
            ("hold_hours", "72".to_string()),
            ("auto_capture_hours", "24".to_string()),
            ("refunds", "off".to_string()),
            ("moto", "on".to_string()),
        ]
    };
    let bob_set = settings(&bob_csrf, "0");
    let bob_set = bob_set.each_ref().map(|(k, v)| (*k, v.as_str()));
    assert_eq!(bob.post("/terminals/merchant", &bob_set).await.status, 403);
    // Out of range: refused, nothing changes.
    let bad = settings(&csrf, "150");
    let bad = bad.each_ref().map(|(k, v)| (*k, v.as_str()));
    let r = ada.post("/terminals/merchant", &bad).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/terminals")));
    let page = ada.get("/terminals").await.body;
    assert!(page.contains("Merchant settings failed"), "{page}");
    assert!(summary(&page).contains(r#"data-over-capture="20""#));

    // Over-capture 0 %: bob's capture above the hold, which 20 % allowed,
    // is now refused 13; the hold itself can be captured.
    let zero = settings(&csrf, "0");
    let zero = zero.each_ref().map(|(k, v)| (*k, v.as_str()));
    let r = ada.post("/terminals/merchant", &zero).await;
    assert_eq!(r.status, 303);
    let page = ada.get("/terminals").await.body;
    assert!(page.contains("Merchant settings: saved."), "{page}");
    assert_eq!(
        summary(&page),
        r#"data-merchant="DEMO00000000001" data-enabled="enabled" data-currencies="978,840" data-over-capture="0" data-hold="72" data-auto-capture="24" data-refunds="off" data-moto="on""#
    );
    let capture = format!("/payments/{held}/capture");
    let r = bob
        .post(
            &capture,
            &[
                ("csrf", &bob_csrf),
                ("amount", "26.00"),
                ("back", "/terminal"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let result = bob.get("/terminal").await.body;
    assert!(result.contains("(code 13)"), "{result}");
    bob.post(
        &capture,
        &[
            ("csrf", &bob_csrf),
            ("amount", "25.00"),
            ("back", "/terminal"),
        ],
    )
    .await;
    let result = bob.get("/terminal").await.body;
    assert!(
        result.contains(&format!(
            "Capture of payment {held} done. Status: Succeeded."
        )),
        "{result}"
    );
    t.stop().await;
    switch.stop().await;
}

/// A webhook receiver on a std `TcpListener`: records each POST's body,
/// answers with the status in `status` and closes the connection.
struct Hook {
    addr: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Hook {
    fn start() -> Hook {
        use std::io::{BufRead, BufReader, Read};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let hook = Hook {
            addr: listener.local_addr().expect("addr"),
            bodies: Default::default(),
            status: std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200)),
        };
        let (bodies, status) = (hook.bodies.clone(), hook.status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length.min(1 << 20)];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                bodies
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let code = status.load(Ordering::SeqCst);
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        hook
    }
}

/// The webhooks page: only admins; the endpoint set with its secret shown
/// once, masked after; a payment's events with their delivery status on
/// its page, resent by an operator (not a viewer) once the receiver is
/// back; the endpoint removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sets_the_webhook_endpoint_and_an_operator_resends_an_event() {
    use std::sync::atomic::Ordering;
    let hook = Hook::start();
    let mut switch = TestSwitch::start().await;
    let base = config_text(switch.frame, &switch.client_id, &switch.secret);
    let clock = Clock::manual(START_MS);
    let mut t = TestTerminal::start(&team_config(&base, None), clock.clone()).await;

    let mut bob = Agent::new(t.addr);
    let bob_csrf = sign_in(&mut bob, BOB, BOB_PASSWORD).await;
    assert!(!bob.get("/terminal").await.body.contains("nav-webhooks"));
    assert_eq!(bob.get("/webhooks").await.status, 403);
    let url = format!("http://{}/hook", hook.addr);
    let set = |csrf: &str, url: &str| [("csrf", csrf.to_string()), ("url", url.to_string())];
    let pairs = set(&bob_csrf, &url);
    let pairs = pairs.each_ref().map(|(k, v)| (*k, v.as_str()));
    assert_eq!(bob.post("/webhooks/endpoint", &pairs).await.status, 403);

    let mut ada = Agent::new(t.addr);
    let (csrf, _) = admin_in(&mut ada, &clock, None).await;
    let page = ada.get("/webhooks").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"data-url="""#), "{}", page.body);
    // Not http(s): refused, no secret.
    let pairs = set(&csrf, "ftp://127.0.0.1/");
    let pairs = pairs.each_ref().map(|(k, v)| (*k, v.as_str()));
    let r = ada.post("/webhooks/endpoint", &pairs).await;
    assert!(r.body.contains("refused (30)"), "{}", r.body);
    assert!(!r.body.contains("new-secret"));
    let pairs = set(&csrf, &url);
    let pairs = pairs.each_ref().map(|(k, v)| (*k, v.as_str()));
    let r = ada.post("/webhooks/endpoint", &pairs).await;
    assert_eq!(r.status, 200);
    let secret = r
        .body
        .split(r#"<code id="new-secret">"#)
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the new secret")
        .to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() >= 49,
        "{secret}"
    );
    assert!(r.body.contains("shown this once"));
    let page = ada.get("/webhooks").await.body;
    assert!(!page.contains(&secret), "shown once only");
    assert!(
        page.contains(&format!(r#"data-url="{url}""#))
            && page.contains(&secret[secret.len() - 4..]),
        "{page}"
    );

    // The receiver fails: the operator's payment shows a pending event.
    hook.status.store(500, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await; // the switch re-reads the file
    let r = bob
        .post("/payments", &payment_form(&bob_csrf, "ORD-HOOK"))
        .await;
    assert_eq!(r.status, 303);
    let result = bob.get("/terminal").await.body;
    let id = result
        .split(r#"id="result-payment-id"><a href="/payments/"#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("payment id")
        .to_string();
    let detail = format!("/payments/{id}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = loop {
        let page = bob.get(&detail).await.body;
        if page.contains("<td>500</td>") {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(page.contains(r#"id="payment-webhooks""#), "{page}");
    assert!(page.contains("payment.authorized") && page.contains(r#"data-status="pending""#));
    let event = page
        .split(r#"data-event=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("an event")
        .to_string();
    assert!(page.contains(&format!(r#"id="resend-{event}""#)));
    assert!(hook.bodies.lock().unwrap()[0].contains(&event));
    // The table filters by delivery status.
    let table = |page: String| {
        page.split(r#"id="payments""#)
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert!(table(bob.get("/terminal?webhook=pending").await.body).contains("ORD-HOOK"));
    assert!(!table(bob.get("/terminal?webhook=delivered").await.body).contains("ORD-HOOK"));

    // A viewer sees the status, no Resend button, and may not resend.
    let mut vera = Agent::new(t.addr);
    let vera_csrf = sign_in(&mut vera, VIEWER, VIEWER_PASSWORD).await;
    let seen = vera.get(&detail).await.body;
    assert!(seen.contains(&event) && !seen.contains("resend-"), "{seen}");
    let resend = format!("/webhooks/events/{event}/resend");
    let r = vera
        .post(&resend, &[("csrf", &vera_csrf), ("back", &detail)])
        .await;
    assert_eq!(r.status, 403);

    // The receiver is back; the operator resends: delivered.
    hook.status.store(200, Ordering::SeqCst);
    let r = bob
        .post(&resend, &[("csrf", &bob_csrf), ("back", &detail)])
        .await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some(detail.as_str()))
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = bob.get(&detail).await.body;
        if page.contains(r#"data-status="delivered""#) {
            assert!(page.contains("<td>200</td>"), "{page}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(table(bob.get("/terminal?webhook=delivered").await.body).contains("ORD-HOOK"));
    let bad = bob.get("/terminal?webhook=sent").await.body;
    assert!(
        bad.contains("the webhook filter is pending, delivered or failed"),
        "{bad}"
    );
    // An unknown event: the switch's 25 is shown.
    let r = bob
        .post(
            "/webhooks/events/evt_0000000000009999/resend",
            &[("csrf", &bob_csrf), ("back", "/webhooks")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(bob.get(&detail).await.body.contains("refused (25)"));

    // The admin's page lists it, and filters by status.
    let page = ada.get("/webhooks").await.body;
    assert!(
        page.contains(&format!(r#"data-event="{event}" data-status="delivered""#)),
        "{page}"
    );
    assert!(ada
        .get("/webhooks?status=delivered")
        .await
        .body
        .contains(&event));
    let pending = ada.get("/webhooks?status=pending").await.body;
    assert!(
        pending.contains(r#"id="webhook-events""#) && !pending.contains(&event),
        "{pending}"
    );
    let bad = ada.get("/webhooks?status=sent").await.body;
    assert!(
        bad.contains("the status filter is pending, delivered or failed"),
        "{bad}"
    );
    let bad = ada.get("/webhooks?cursor=older").await.body;
    assert!(bad.contains("the cursor is a number"), "{bad}");

    // More events than a page (50): the rest are a link away, none twice.
    for i in 0..55 {
        let r = bob
            .post(
                "/payments",
                &payment_form(&bob_csrf, &format!("ORD-PAGE-{i}")),
            )
            .await;
        assert_eq!(r.status, 303);
    }
    let events_of = |page: &str| -> Vec<String> {
        page.split(r#"data-event=""#)
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .map(str::to_string)
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        let page = ada.get("/webhooks").await.body;
        if page.contains(r#"id="events-older""#) {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let newest = events_of(&first);
    assert_eq!(newest.len(), 50);
    let older_href = first
        .split(r#"<a href=""#)
        .filter_map(|s| {
            s.split_once(r#"" id="events-older""#)
                .map(|(h, _)| h.replace("&amp;", "&"))
        })
        .next()
        .expect("the older link");
    let second = ada.get(&older_href).await.body;
    let older = events_of(&second);
    assert!(second.contains(r#"id="events-newest""#), "{second}");
    assert!(
        !older.is_empty() && older.iter().all(|e| !newest.contains(e)),
        "{older:?}"
    );
    assert!(
        older.contains(&event),
        "the first event is on the older page"
    );
    let mut sorted = newest.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(sorted, newest, "newest first");

    // Then the endpoint is removed.
    let r = ada
        .post("/webhooks/endpoint/remove", &[("csrf", &csrf)])
        .await;
    assert_eq!((r.status, r.header("location")), (303, Some("/webhooks")));
    let page = ada.get("/webhooks").await.body;
    assert!(
        page.contains("Webhook endpoint: removed.") && page.contains(r#"data-url="""#),
        "{page}"
    );
    t.stop().await;
    switch.stop().await;
}
