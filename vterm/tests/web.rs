//! The terminal over HTTP without a browser: sign-in, CSRF, session
//! expiry, limits, headers, and card masking with a real switch.

mod common;

use std::net::SocketAddr;

use common::agent::Agent;
use common::{config_text, csrf_in, TestSwitch, TestTerminal, MASKED_PAN, OPERATOR, PAN, PASSWORD};
use vterm::Clock;

/// 2026-11-23T11:49:10Z.
const START_MS: u64 = 1_795_434_550_000;

#[tokio::test]
async fn a_wrong_password_or_unknown_operator_is_refused() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    let mut a = Agent::new(t.addr);
    for (name, password) in [(OPERATOR, "wrong"), ("mallory", PASSWORD), (OPERATOR, "")] {
        let r = a.sign_in_as(name, password).await;
        assert_eq!(r.status, 401, "{name}");
        assert!(r.body.contains("Wrong operator name or password."));
        assert!(r.cookie("vterm_session").is_none(), "no session on failure");
    }
    assert_eq!(a.get("/terminal").await.header("location"), Some("/login"));
    t.stop().await;
}

#[tokio::test]
async fn repeated_failures_lock_the_operator_out() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    let mut a = Agent::new(t.addr);
    for _ in 0..5 {
        assert_eq!(a.sign_in_as(OPERATOR, "wrong").await.status, 401);
    }
    let r = a.sign_in_as(OPERATOR, PASSWORD).await;
    assert_eq!(r.status, 429);
    assert!(r.body.contains("Too many failed sign-ins"));
    t.clock.advance_s(301);
    assert_eq!(a.sign_in_as(OPERATOR, PASSWORD).await.status, 303);
    t.stop().await;
}

#[tokio::test]
async fn an_operator_locked_out_from_one_address_signs_in_from_another() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    let mut attacker = Agent::from(t.addr, "127.0.0.1");
    for _ in 0..5 {
        assert_eq!(attacker.sign_in_as(OPERATOR, "wrong").await.status, 401);
    }
    assert_eq!(attacker.sign_in_as(OPERATOR, PASSWORD).await.status, 429);

    let mut operator = Agent::from(t.addr, "127.0.0.2");
    let r = operator.sign_in_as(OPERATOR, PASSWORD).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/terminal"));
    t.stop().await;
}

/// A browser behind the proxy at 127.0.0.1, which says it is `client`.
fn behind_proxy(addr: SocketAddr, client: &str) -> Agent {
    Agent {
        forwarded_for: Some(client.to_string()),
        ..Agent::from(addr, "127.0.0.1")
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_browser_is_counted_by_its_own_address() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let switch_addr = dead.local_addr().expect("addr");
    drop(dead);
    let text = config_text(switch_addr, "DM-0000-0001", &"ab".repeat(32)).replace(
        "sessions_max = 10",
        "sessions_max = 10\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    let mut t = TestTerminal::start(&text, Clock::manual(START_MS)).await;
    let mut attacker = behind_proxy(t.addr, "203.0.113.9");
    for i in 0..20 {
        let name = format!("guess{}", i / 4);
        assert_eq!(attacker.sign_in_as(&name, "wrong").await.status, 401);
    }
    assert_eq!(attacker.sign_in_as(OPERATOR, PASSWORD).await.status, 429);
    // Another browser through the same proxy is not locked out.
    let mut operator = behind_proxy(t.addr, "203.0.113.10");
    assert_eq!(operator.sign_in_as(OPERATOR, PASSWORD).await.status, 303);
    t.stop().await;
}

#[tokio::test]
async fn an_untrusted_peer_cannot_escape_a_lockout_with_x_forwarded_for() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    for i in 0..5 {
        let mut forger = behind_proxy(t.addr, &format!("203.0.113.{i}"));
        assert_eq!(forger.sign_in_as(OPERATOR, "wrong").await.status, 401);
    }
    let mut forger = behind_proxy(t.addr, "198.51.100.1");
    assert_eq!(forger.sign_in_as(OPERATOR, PASSWORD).await.status, 429);
    t.stop().await;
}

#[tokio::test]
async fn an_address_trying_many_names_is_locked_out_alone() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    let mut attacker = Agent::from(t.addr, "127.0.0.1");
    // Four tries a name, under the pair's limit: 20 across names.
    for i in 0..20 {
        let name = format!("guess{}", i / 4);
        assert_eq!(attacker.sign_in_as(&name, "wrong").await.status, 401);
    }
    let r = attacker.sign_in_as(OPERATOR, PASSWORD).await;
    assert_eq!(r.status, 429);
    assert!(r.body.contains("Too many failed sign-ins"));

    let mut operator = Agent::from(t.addr, "127.0.0.2");
    assert_eq!(operator.sign_in_as(OPERATOR, PASSWORD).await.status, 303);
    t.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_strict() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    let mut a = Agent::new(t.addr);
    let r = a.sign_in_as(OPERATOR, PASSWORD).await;
    let session = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("vterm_session="))
        .expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Secure"), "not configured for HTTPS");
    let page = a.get("/terminal").await;
    assert!(page.body.contains(r#"<b id="operator">alice</b>"#));
    for (header, value) in [
        ("content-security-policy", "default-src 'none'"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert!(
            page.header(header).is_some_and(|v| v.contains(value)),
            "{header}"
        );
    }
    let csrf = csrf_in(&page.body);
    let r = a.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    assert_eq!(
        a.get("/terminal").await.header("location"),
        Some("/login"),
        "signed out"
    );
    t.stop().await;
}

#[tokio::test]
async fn posts_without_the_right_csrf_token_are_forbidden() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    let mut a = Agent::new(t.addr);
    // Sign-in: the form's token must match the sign-in cookie.
    a.get("/login").await;
    let base = [("name", OPERATOR), ("password", PASSWORD)];
    assert_eq!(a.post("/login", &base).await.status, 403, "no token");
    assert_eq!(
        a.post("/login", &[base[0], base[1], ("csrf", "00ff")])
            .await
            .status,
        403,
        "wrong token"
    );
    let mut stranger = Agent::new(t.addr);
    let page = a.get("/login").await;
    let token = csrf_in(&page.body);
    let r = stranger
        .post("/login", &[base[0], base[1], ("csrf", &token)])
        .await;
    assert_eq!(r.status, 403, "a token without its cookie");

    let csrf = a.sign_in().await;
    let wrong = "0".repeat(csrf.len());
    let payment = [
        ("kind", "sale"),
        ("pan", PAN),
        ("expiry", "12/30"),
        ("amount", "1.00"),
        ("currency", "978"),
        ("reference", "X"),
        ("terminal_id", "DEMO0001"),
    ];
    for path in [
        "/payments",
        "/payments/1/capture",
        "/payments/1/refund",
        "/payments/1/cancel",
        "/logout",
    ] {
        let r = a.post(path, &payment).await;
        assert_eq!(r.status, 403, "{path} without a token");
        assert!(!r.body.contains(PAN));
        let mut with_wrong = payment.to_vec();
        with_wrong.push(("csrf", &wrong));
        assert_eq!(
            a.post(path, &with_wrong).await.status,
            403,
            "{path} with a wrong token"
        );
    }
    assert_eq!(a.get("/terminal").await.status, 200, "still signed in");
    t.stop().await;
}

#[tokio::test]
async fn sessions_expire_when_idle() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    let mut a = Agent::new(t.addr);
    a.sign_in().await;
    t.clock.advance_s(599);
    assert_eq!(
        a.get("/terminal").await.status,
        200,
        "used within session_idle_s"
    );
    t.clock.advance_s(599);
    assert_eq!(a.get("/terminal").await.status, 200);
    t.clock.advance_s(600);
    let r = a.get("/terminal").await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/login")),
        "idle for session_idle_s"
    );
    assert!(
        r.set_cookies()
            .iter()
            .any(|c| c.starts_with("vterm_session=;")),
        "the cookie is cleared"
    );
    t.stop().await;
}

#[tokio::test]
async fn sessions_end_at_their_lifetime_even_when_used() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    let mut a = Agent::new(t.addr);
    a.sign_in().await;
    for _ in 0..6 {
        t.clock.advance_s(590);
        assert_eq!(a.get("/terminal").await.status, 200);
    }
    t.clock.advance_s(70);
    assert_eq!(
        a.get("/terminal").await.header("location"),
        Some("/login"),
        "session_lifetime_s"
    );
    t.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let mut t = TestTerminal::without_switch(Clock::manual(START_MS)).await;
    let mut a = Agent::new(t.addr);
    let csrf = a.sign_in().await;
    let big = "x".repeat(20 * 1024);
    let r = a
        .post("/payments", &[("csrf", &csrf), ("description", &big)])
        .await;
    assert_eq!(r.status, 413);
    t.stop().await;
}

#[tokio::test]
async fn the_card_is_masked_on_every_page_after_submission() {
    let mut switch = TestSwitch::start().await;
    let text = common::config_text(switch.frame, &switch.client_id, &switch.secret);
    let mut t = TestTerminal::start(&text, Clock::System).await;
    let mut a = Agent::new(t.addr);
    let csrf = a.sign_in().await;

    // Refused by the form check: the page shows errors, never the card.
    let typo = "4111111111111112";
    let r = a
        .post(
            "/payments",
            &[
                ("csrf", &csrf),
                ("kind", "preauth"),
                ("pan", typo),
                ("expiry", "12/30"),
                ("cvv2", "987"),
                ("amount", "12.34"),
                ("currency", "978"),
                ("reference", "ORD-TYPO"),
                ("terminal_id", "DEMO0001"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("check digit"), "{}", r.body);
    assert!(
        r.body.contains("ORD-TYPO") && r.body.contains("12.34"),
        "non-card fields are kept"
    );
    assert!(!r.body.contains(typo) && !shows_value(&r.body, "987") && !r.body.contains("12/30"));

    // Taken: the result shows the masked card only.
    let r = a
        .post(
            "/payments",
            &[
                ("csrf", &csrf),
                ("kind", "preauth"),
                ("pan", "4111 1111 1111 1111"),
                ("expiry", "12/30"),
                ("cvv2", "987"),
                ("cardholder_name", "Ada Lovelace"),
                ("amount", "25.00"),
                ("currency", "978"),
                ("reference", "ORD-1"),
                ("terminal_id", "DEMO0001"),
            ],
        )
        .await;
    assert_eq!((r.status, r.header("location")), (303, Some("/terminal")));
    let page = a.get("/terminal").await;
    assert!(
        page.body.contains(r#"id="result-verdict">Approved"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(MASKED_PAN));
    for secret in [PAN, "4111 1111 1111 1111", "Ada Lovelace"] {
        assert!(!page.body.contains(secret), "{secret} on the result page");
    }
    assert!(!shows_value(&page.body, "987"), "CVV2 on the result page");
    let id = page
        .body
        .split(r#"id="result-payment-id"><a href="/payments/"#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("payment id")
        .to_string();
    let detail = a.get(&format!("/payments/{id}")).await;
    assert_eq!(detail.status, 200);
    assert!(detail.body.contains(MASKED_PAN) && !detail.body.contains(PAN));
    assert!(detail.body.contains("Uncaptured"));

    // Capture, refund part: the table follows.
    let r = a
        .post(
            &format!("/payments/{id}/capture"),
            &[("csrf", &csrf), ("back", "/terminal")],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = a.get("/terminal").await;
    assert!(
        page.body
            .contains(&format!("Capture of payment {id} done. Status: Succeeded.")),
        "{}",
        page.body
    );
    let r = a
        .post(
            &format!("/payments/{id}/refund"),
            &[
                ("csrf", &csrf),
                ("amount", "5.00"),
                ("back", &format!("/payments/{id}")),
            ],
        )
        .await;
    assert_eq!(
        r.header("location"),
        Some(format!("/payments/{id}").as_str())
    );
    let detail = a.get(&format!("/payments/{id}")).await;
    assert!(
        detail.body.contains("Partially refunded"),
        "{}",
        detail.body
    );
    assert!(detail.body.contains("5.00 EUR"));
    assert!(!detail.body.contains(PAN));
    t.stop().await;
    switch.stop().await;
}

/// Whether `body` shows `value` as a form value or a text node: how a short
/// secret such as a CVV2 would leak into a page. (A bare substring test
/// would also match random CSRF tokens and generated numbers.)
fn shows_value(body: &str, value: &str) -> bool {
    body.contains(&format!("value=\"{value}\"")) || body.contains(&format!(">{value}<"))
}

/// The text of the detail page's `<dd id="{id}">`.
fn dd(body: &str, id: &str) -> String {
    body.split(&format!(r#"<dd id="{id}">"#))
        .nth(1)
        .and_then(|s| s.split("</dd>").next())
        .unwrap_or_else(|| panic!("no {id} in {body}"))
        .to_string()
}

/// The payment id the result panel links to.
fn result_id(body: &str) -> String {
    body.split(r#"id="result-payment-id"><a href="/payments/"#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no payment id in {body}"))
        .to_string()
}

#[tokio::test]
async fn the_detail_shows_how_a_payment_was_authorized_and_the_scam_mark_is_a_workflow() {
    let mut switch = TestSwitch::start().await;
    let text = common::config_text(switch.frame, &switch.client_id, &switch.secret);
    let mut t = TestTerminal::start(&text, Clock::System).await;
    let mut a = Agent::new(t.addr);
    let csrf = a.sign_in().await;
    let pay = |pan: &'static str, reference: &'static str| {
        [
            ("kind", "sale"),
            ("pan", pan),
            ("expiry", "12/30"),
            ("amount", "25.00"),
            ("currency", "978"),
            ("reference", reference),
            ("terminal_id", "DEMO0001"),
        ]
    };
    let mut sale: Vec<(&str, &str)> = vec![("csrf", &csrf)];
    sale.extend(pay("4111 1111 1111 1111", "ORD-BO"));
    assert_eq!(a.post("/payments", &sale).await.status, 303);
    let id = result_id(&a.get("/terminal").await.body);

    // The detail: the approval code (it was empty), and how it was authorized.
    let detail = a.get(&format!("/payments/{id}")).await;
    let auth_code = dd(&detail.body, "detail-auth-code");
    assert!(
        auth_code.len() == 6 && auth_code.bytes().all(|b| b.is_ascii_alphanumeric()),
        "approval code {auth_code:?}"
    );
    assert_eq!(dd(&detail.body, "detail-response-code"), "00");
    assert_eq!(
        dd(&detail.body, "detail-channel"),
        "Mail or telephone order (08)"
    );
    assert_eq!(dd(&detail.body, "detail-stand-in"), "no issuer");
    assert_eq!(dd(&detail.body, "detail-eci"), "");
    let rrn = dd(&detail.body, "detail-rrn");
    assert_eq!(rrn.len(), 12);

    // A refused refund is in the history, with its code.
    let r = a
        .post(
            &format!("/payments/{id}/refund"),
            &[("csrf", &csrf), ("amount", "99.00"), ("back", "/terminal")],
        )
        .await;
    assert_eq!(r.status, 303);
    let detail = a.get(&format!("/payments/{id}")).await;
    assert!(
        detail
            .body
            .contains("<td>Refund refused</td><td class=\"num\">99.00 EUR</td><td>13</td>"),
        "{}",
        detail.body
    );
    assert_eq!(dd(&detail.body, "detail-status"), "Succeeded");

    // Mark as scam with a reason: who and why are shown; the table filters.
    let scam = format!("/payments/{id}/scam");
    let back = format!("/payments/{id}");
    let r = a
        .post(
            &scam,
            &[("csrf", &csrf), ("reason", "chargeback"), ("back", &back)],
        )
        .await;
    assert_eq!(r.header("location"), Some(back.as_str()));
    let detail = a.get(&back).await;
    assert_eq!(dd(&detail.body, "detail-scam"), "flagged");
    assert_eq!(dd(&detail.body, "detail-flagged-by"), switch.client_id);
    assert_eq!(dd(&detail.body, "detail-flag-note"), "alice: chargeback");
    assert!(detail.body.contains("Take the scam mark off"));
    let row = format!(r#"data-payment-id="{id}""#);
    assert!(a.get("/terminal?scam=yes").await.body.contains(&row));
    assert!(!a.get("/terminal?scam=no").await.body.contains(&row));

    // Taking it off needs a reason.
    let unscam = format!("/payments/{id}/unscam");
    a.post(&unscam, &[("csrf", &csrf), ("back", &back)]).await;
    let detail = a.get(&back).await;
    assert!(detail.body.contains("say why the scam mark comes off"));
    assert_eq!(dd(&detail.body, "detail-scam"), "flagged");
    a.post(
        &unscam,
        &[("csrf", &csrf), ("reason", "verified"), ("back", &back)],
    )
    .await;
    let detail = a.get(&back).await;
    assert_eq!(dd(&detail.body, "detail-scam"), "not flagged");
    assert_eq!(dd(&detail.body, "detail-unflag-reason"), "alice: verified");
    assert!(detail.body.contains("Scam mark taken off"));
    assert!(!a.get("/terminal?scam=yes").await.body.contains(&row));

    // A declined payment is named, and the other filters find each.
    let mut declined: Vec<(&str, &str)> = vec![("csrf", &csrf)];
    declined.extend(pay("4000 0000 0000 0002", "ORD-NO"));
    a.post("/payments", &declined).await;
    let declined_id = result_id(&a.get("/terminal").await.body);
    let declined_row = format!(r#"data-payment-id="{declined_id}""#);
    let shows = |body: &str| (body.contains(&row), body.contains(&declined_row));
    assert_eq!(
        shows(&a.get("/terminal?last4=1111").await.body),
        (true, false)
    );
    assert_eq!(
        shows(&a.get("/terminal?last4=0002").await.body),
        (false, true)
    );
    let by_rrn = a.get(&format!("/terminal?rrn={rrn}")).await.body;
    assert_eq!(shows(&by_rrn), (true, false));
    let by_code = a
        .get(&format!("/terminal?auth_code={auth_code}"))
        .await
        .body;
    assert_eq!(shows(&by_code), (true, false));
    let several = a.get("/terminal?statuses=declined%2Csucceeded").await.body;
    assert_eq!(shows(&several), (true, true));
    assert_eq!(
        shows(&a.get("/terminal?statuses=declined").await.body),
        (false, true)
    );
    let declined_detail = a.get(&format!("/payments/{declined_id}")).await;
    assert_eq!(dd(&declined_detail.body, "detail-response-code"), "59");
    assert_eq!(dd(&declined_detail.body, "detail-requested"), "25.00 EUR");
    let bad = a.get("/terminal?scam=maybe").await;
    assert!(bad.body.contains(r#"id="filter-error""#), "{}", bad.body);
    t.stop().await;
    switch.stop().await;
}

#[tokio::test]
async fn partial_captures_keep_the_hold_open_until_a_final_one() {
    let mut switch = TestSwitch::start().await;
    let text = common::config_text(switch.frame, &switch.client_id, &switch.secret);
    let mut t = TestTerminal::start(&text, Clock::System).await;
    let mut a = Agent::new(t.addr);
    let csrf = a.sign_in().await;
    let r = a
        .post(
            "/payments",
            &[
                ("csrf", &csrf),
                ("kind", "preauth"),
                ("pan", "4111 1111 1111 1111"),
                ("expiry", "12/30"),
                ("amount", "25.00"),
                ("currency", "978"),
                ("reference", "ORD-SPLIT"),
                ("terminal_id", "DEMO0001"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let id = result_id(&a.get("/terminal").await.body);
    let back = format!("/payments/{id}");
    let detail = a.get(&back).await;
    assert!(
        detail.body.contains(r#"name="keep_open""#),
        "the capture form offers it: {}",
        detail.body
    );
    assert_eq!(dd(&detail.body, "detail-captured"), "0.00 EUR");
    let capture = |amount: &'static str, keep_open: bool| {
        let mut pairs = vec![("amount", amount), ("back", "/terminal")];
        if keep_open {
            pairs.push(("keep_open", "1"));
        }
        pairs
    };
    let path = format!("/payments/{id}/capture");

    // Two partial captures: still Uncaptured, captured so far and held.
    for (amount, captured, held) in [("10.00", "10.00", "15.00"), ("5.00", "15.00", "10.00")] {
        let mut pairs = capture(amount, true);
        pairs.push(("csrf", &csrf));
        assert_eq!(a.post(&path, &pairs).await.status, 303);
        let page = a.get("/terminal").await;
        assert!(
            page.body.contains(&format!(
                "Capture of payment {id} done. Status: Uncaptured."
            )),
            "{}",
            page.body
        );
        let detail = a.get(&back).await;
        assert_eq!(dd(&detail.body, "detail-status"), "Uncaptured");
        assert!(detail.body.contains("<dt>Captured so far</dt>"));
        assert_eq!(
            dd(&detail.body, "detail-captured"),
            format!("{captured} EUR")
        );
        assert_eq!(dd(&detail.body, "detail-held"), format!("{held} EUR"));
    }

    // Keeping the rest open needs an amount: refused, nothing captured.
    let mut pairs = capture("", true);
    pairs.push(("csrf", &csrf));
    a.post(&path, &pairs).await;
    let page = a.get("/terminal").await;
    assert!(
        page.body.contains("type the amount to capture now"),
        "{}",
        page.body
    );
    assert_eq!(dd(&a.get(&back).await.body, "detail-captured"), "15.00 EUR");

    // A final capture: Succeeded, the rest released.
    let mut pairs = capture("4.00", false);
    pairs.push(("csrf", &csrf));
    assert_eq!(a.post(&path, &pairs).await.status, 303);
    let detail = a.get(&back).await;
    assert_eq!(dd(&detail.body, "detail-status"), "Succeeded");
    assert_eq!(dd(&detail.body, "detail-captured"), "19.00 EUR");
    assert!(
        !detail.body.contains("detail-held"),
        "nothing held any more"
    );
    assert!(
        !detail.body.contains(r#"name="keep_open""#),
        "no capture form"
    );
    let captures = detail.body.matches("<td>Captured</td>").count();
    assert_eq!(captures, 3, "{}", detail.body);
    t.stop().await;
    switch.stop().await;
}
