//! End to end in a real headless Chromium driven through chromedriver: an
//! operator signs in, takes a pre-authorization, sees it approved with the
//! card masked, captures it, refunds part of it and filters the table;
//! then an admin enrols the TOTP second factor from the secret the page
//! shows and signs in again with a code (the test computes the codes with
//! its own RFC 6238 and the real clock, as a phone would).
//! The switch is real, on loopback, with a merchant key in its data dir.
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/install-browser.sh`);
//! without them the test fails and says how to install them.

mod common;
mod webdriver;

use std::path::PathBuf;

use common::{cheap_hash, temp_dir, TestSwitch, TestTerminal, MASKED_PAN, OPERATOR, PAN, PASSWORD};
use webdriver::Browser;

/// Where screenshots go: the target directory, for a person to look at.
fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join(name)
}

/// An admin.
const ADMIN: &str = "ada";
/// Her password.
const ADMIN_PASSWORD: &str = "Ada's long admin passphrase";

/// Unix time now, as the phone and the terminal read it.
fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn sign_in(b: &Browser, terminal: &TestTerminal, name: &str, password: &str) {
    b.goto(&terminal.url("/login"));
    b.type_into(&b.find("#name"), name);
    b.type_into(&b.find("#password"), password);
    b.click_to_navigate(&b.find("#sign-in"));
}

/// The admin is sent to enrolment, turns TOTP on with the code of the
/// secret shown, reaches the operators page, signs out, and signs in again
/// with a code.
fn admin_enrols_and_signs_in_with_a_code(b: &Browser, terminal: &TestTerminal) {
    sign_in(b, terminal, ADMIN, ADMIN_PASSWORD);
    b.find("#totp-required");
    b.goto(&terminal.url("/terminal"));
    let secret = b.text(&b.find("#totp-secret"));
    assert!(b.text(&b.find("#totp-uri")).starts_with("otpauth://totp/"));
    b.screenshot(&screenshot_path("vterm-e2e-totp.png"));
    b.type_into(&b.find("#totp-code"), &common::totp::code(&secret, now_s()));
    b.click_to_navigate(&b.find("#confirm-totp"));
    b.wait_text(
        "#notice",
        "The second factor is on: sign-in now asks for a code.",
    );
    assert_eq!(b.text(&b.find("#operator")), ADMIN);
    b.click_to_navigate(&b.find("#nav-operators"));
    let table = b.text(&b.find("#operators"));
    assert!(
        table.contains(OPERATOR) && table.contains("admin"),
        "{table}"
    );
    b.screenshot(&screenshot_path("vterm-e2e-operators.png"));
    b.click_to_navigate(&b.find("#sign-out"));

    // Again: the password, then a code. The code of the next step is
    // within the one-step tolerance and not the one used at enrolment,
    // so the test need not wait for the clock.
    sign_in(b, terminal, ADMIN, ADMIN_PASSWORD);
    let field = b.find("#totp-code");
    b.type_into(&field, &common::totp::code(&secret, now_s() + 30));
    b.click_to_navigate(&b.find("#verify-code"));
    b.find("#payment-form");
    assert_eq!(b.text(&b.find("#operator")), ADMIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_takes_captures_and_refunds_a_payment_in_chromium() {
    let mut switch = TestSwitch::start().await;
    let mut text = common::config_text(switch.frame, &switch.client_id, &switch.secret);
    text.push_str(&format!(
        "\n[[operators]]\nname = \"{ADMIN}\"\npassword_hash = \"{}\"\nrole = \"admin\"\n",
        cheap_hash(ADMIN_PASSWORD)
    ));
    let mut terminal = TestTerminal::start(&text, vterm::Clock::System).await;
    // The browser calls block this thread; the servers run on the workers.
    let b = Browser::start(temp_dir("chromium"));

    // Sign in.
    b.goto(&terminal.url("/login"));
    b.type_into(&b.find("#name"), OPERATOR);
    b.type_into(&b.find("#password"), PASSWORD);
    b.click_to_navigate(&b.find("#sign-in"));
    b.find("#payment-form");
    assert_eq!(b.text(&b.find("#operator")), OPERATOR);

    // Take a pre-authorization.
    b.click(&b.find("#kind-preauth"));
    b.type_into(&b.find("#pan"), "4111 1111 1111 1111");
    b.type_into(&b.find("#expiry"), "12/30");
    b.type_into(&b.find("#cvv2"), "737");
    b.type_into(&b.find("#cardholder-name"), "Ada Lovelace");
    b.type_into(&b.find("#amount"), "42.50");
    b.type_into(&b.find("#reference"), "ORD-E2E-1");
    b.type_into(&b.find("#description"), "Two teapots, by telephone");
    b.click_to_navigate(&b.find("#submit-payment"));
    b.wait_text("#result-verdict", "Approved");
    assert_eq!(b.text(&b.find("#result-card")), MASKED_PAN);
    assert_eq!(b.text(&b.find("#result-amount")), "42.50 EUR");
    assert_eq!(b.text(&b.find("#result-status")), "Uncaptured");
    let auth_code = b.text(&b.find("#result-auth-code"));
    assert_eq!(auth_code.len(), 6, "{auth_code}");
    let id = b.text(&b.find("#result-payment-id"));
    assert!(id.parse::<u64>().is_ok(), "{id}");

    // The card is masked: nowhere in the page, and the form is empty again.
    let source = b.source();
    for secret in [PAN, "4111 1111 1111 1111", "Ada Lovelace"] {
        assert!(
            !source.contains(secret),
            "{secret} in the page after submission"
        );
    }
    // The CVV2 as a value or a text node: a bare substring test would
    // also match the random CSRF token now and then.
    for shown in [r#"value="737""#, ">737<"] {
        assert!(!source.contains(shown), "CVV2 in the page after submission");
    }
    assert_eq!(b.property(&b.find("#pan"), "value"), "");
    assert_eq!(b.property(&b.find("#cvv2"), "value"), "");
    b.screenshot(&screenshot_path("vterm-e2e-result.png"));

    // The table shows it; capture it all.
    let row = format!(r#"tr[data-payment-id="{id}"]"#);
    b.wait_text(&format!("{row} td.status"), "Uncaptured");
    b.click_to_navigate(&b.find(&format!("{row} form.capture button")));
    b.wait_text(
        "#notice",
        &format!("Capture of payment {id} done. Status: Succeeded."),
    );
    b.wait_text(&format!("{row} td.status"), "Succeeded");

    // Refund part of it.
    let amount = b.find(&format!("{row} form.refund input.amount"));
    b.type_into(&amount, "10.00");
    b.click_to_navigate(&b.find(&format!("{row} form.refund button")));
    b.wait_text(
        "#notice",
        &format!("Refund of payment {id} done. Status: Partially refunded."),
    );
    b.wait_text(&format!("{row} td.status"), "Partially refunded");
    let cells = b.text(&b.find(&row));
    assert!(
        cells.contains("42.50 EUR") && cells.contains("10.00 EUR") && cells.contains("ORD-E2E-1"),
        "{cells}"
    );

    b.screenshot(&screenshot_path("vterm-e2e.png"));

    // Filters: by reference it is there, by another status it is not.
    b.type_into(&b.find("#filter-reference"), "ORD-E2E-1");
    b.click_to_navigate(&b.find("#apply-filters"));
    b.wait_text(&format!("{row} td.status"), "Partially refunded");
    b.goto(&terminal.url("/terminal?status=5"));
    b.find("#no-payments");

    // The payment's page has its history; still no card number.
    b.goto(&terminal.url(&format!("/payments/{id}")));
    b.wait_text("#detail-status", "Partially refunded");
    assert_eq!(b.text(&b.find("#detail-card")), MASKED_PAN);
    let history = b.text(&b.find("#history"));
    assert!(
        history.contains("Pre-authorized")
            && history.contains("Captured")
            && history.contains("Refunded"),
        "{history}"
    );
    assert!(!b.source().contains(PAN));

    // Sign out: back to the sign-in page, and the terminal is closed.
    b.click_to_navigate(&b.find("#sign-out"));
    b.find("#sign-in");
    b.goto(&terminal.url("/terminal"));
    b.find("#sign-in");

    admin_enrols_and_signs_in_with_a_code(&b, &terminal);

    drop(b);
    terminal.stop().await;
    switch.stop().await;
}
