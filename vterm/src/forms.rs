//! What the browser sends, checked: form and query fields (all text, so a
//! missing or odd field is an error message on the page, not a rejection)
//! into typed requests. Messages never repeat card data.

use codecs::internal::tag;
use serde::Deserialize;
use switch_client::PaymentStatus;

use crate::calendar::{end_of_day_s, parse_date_s};
use crate::card::{parse_expiry_yymm, CardNumber, Cvv2};
use crate::config::Config;
use crate::link::NewPayment;
use crate::money::{parse_amount_minor, Currency};
use crate::pages::{FilterForm, PaymentForm};
use crate::payment::{Filters, Kind};

/// Longest merchant reference (internal frames).
const REFERENCE_BYTES_MAX: usize = 64;
/// Longest description or reason (internal frames).
const DESCRIPTION_BYTES_MAX: usize = 255;
/// Longest cardholder name (internal frames).
const CARDHOLDER_NAME_BYTES_MAX: usize = 64;
/// Longest terminal id (ISO 8583 F41).
const TERMINAL_ID_BYTES_MAX: usize = 8;
/// Longest "come back here" path an action form carries.
const BACK_BYTES_MAX: usize = 512;

/// The sign-in form.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct SignInInput {
    /// Operator name.
    pub(crate) name: String,
    /// Password in clear: verified, never stored or logged.
    pub(crate) password: String,
    /// Must equal the sign-in cookie's token.
    pub(crate) csrf: String,
}

/// A form that carries nothing but its CSRF token (sign-out, cancel).
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(crate) struct CsrfInput {
    /// The session's token.
    pub(crate) csrf: String,
}

/// The new-payment form. No `Debug`: it holds the card in clear.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PaymentInput {
    /// The session's token.
    pub(crate) csrf: String,
    /// `preauth` or `sale`.
    pub(crate) kind: String,
    /// Card number in clear.
    pub(crate) pan: String,
    /// `MM/YY`.
    pub(crate) expiry: String,
    /// Security code in clear, or empty.
    pub(crate) cvv2: String,
    /// Or empty.
    pub(crate) cardholder_name: String,
    /// Decimal amount.
    pub(crate) amount: String,
    /// ISO 4217 numeric as text.
    pub(crate) currency: String,
    /// Merchant reference.
    pub(crate) reference: String,
    /// Or empty.
    pub(crate) description: String,
    /// One of the configured terminals.
    pub(crate) terminal_id: String,
}

/// Capture, refund or cancel of one payment.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(crate) struct ActionInput {
    /// The session's token.
    pub(crate) csrf: String,
    /// Decimal amount; empty for "all" (capture).
    pub(crate) amount: String,
    /// Capture: non-empty (the checkbox ticked) to keep the rest of the
    /// hold open, a partial capture.
    pub(crate) keep_open: String,
    /// Refund reason, or empty.
    pub(crate) reason: String,
    /// Where to go afterwards (checked by [`safe_back`]).
    pub(crate) back: String,
}

/// The table's filters, as the query string carries them.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(crate) struct FilterInput {
    /// Status code, or empty.
    pub(crate) status: String,
    /// `YYYY-MM-DD`, or empty.
    pub(crate) from: String,
    /// `YYYY-MM-DD`, or empty.
    pub(crate) to: String,
    /// Decimal, or empty.
    pub(crate) amount_min: String,
    /// Decimal, or empty.
    pub(crate) amount_max: String,
    /// Merchant reference, or empty.
    pub(crate) reference: String,
    /// Terminal id, or empty.
    pub(crate) terminal: String,
    /// Paging cursor, or empty.
    pub(crate) cursor: String,
    /// `yes`, `no`, or empty.
    pub(crate) scam: String,
    /// F37, or empty.
    pub(crate) rrn: String,
    /// Approval code, or empty.
    pub(crate) auth_code: String,
    /// The card's last 4 digits, or empty.
    pub(crate) last4: String,
    /// Status labels, comma-separated (`succeeded,declined`), or empty.
    pub(crate) statuses: String,
    /// A webhook delivery status (`pending`, `delivered`, `failed`), or
    /// empty.
    pub(crate) webhook: String,
}

fn printable(text: &str) -> bool {
    text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

fn plain_text(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

/// Checks the new-payment form. On refusal, the form to show again (its
/// non-card fields) with every reason.
///
/// # Errors
/// The form with its `errors` set.
pub(crate) fn check_payment(
    input: &PaymentInput,
    config: &Config,
) -> Result<NewPayment, Box<PaymentForm>> {
    let mut errors = Vec::new();
    let kind = match input.kind.as_str() {
        "sale" => Kind::Sale,
        "preauth" | "" => Kind::Preauthorization,
        _ => {
            errors.push("choose a pre-authorization or a sale".to_string());
            Kind::Preauthorization
        }
    };
    let (pan, expiry_yymm, cvv2) = check_card(input, &mut errors);
    let cardholder_name = optional_text(
        &input.cardholder_name,
        CARDHOLDER_NAME_BYTES_MAX,
        "cardholder name",
        &mut errors,
    );
    let currency = input
        .currency
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|c| config.currencies.contains(c))
        .and_then(Currency::by_numeric);
    if currency.is_none() {
        errors.push("choose one of the offered currencies".to_string());
    }
    let amount_minor = currency.and_then(|c| {
        parse_amount_minor(&input.amount, c)
            .map_err(|e| errors.push(e.to_string()))
            .ok()
    });
    let reference = input.reference.trim();
    if reference.is_empty() || reference.len() > REFERENCE_BYTES_MAX || !printable(reference) {
        errors.push(format!(
            "the merchant reference must have 1 to {REFERENCE_BYTES_MAX} ASCII characters"
        ));
    }
    let description = optional_text(
        &input.description,
        DESCRIPTION_BYTES_MAX,
        "description",
        &mut errors,
    );
    if !config.terminals.contains(&input.terminal_id) {
        errors.push("choose one of the offered terminals".to_string());
    }
    match (pan, expiry_yymm, currency, amount_minor) {
        (Some(pan), Some(expiry_yymm), Some(currency), Some(amount_minor)) if errors.is_empty() => {
            Ok(NewPayment {
                kind,
                pan,
                expiry_yymm,
                cvv2,
                cardholder_name,
                reference: reference.to_string(),
                description,
                currency: currency.numeric,
                amount_minor,
                terminal_id: input.terminal_id.clone(),
            })
        }
        _ => Err(refused(input, kind, currency, errors)),
    }
}

/// The card fields: number, expiry (`YYMM`), security code if typed.
fn check_card(
    input: &PaymentInput,
    errors: &mut Vec<String>,
) -> (Option<CardNumber>, Option<String>, Option<Cvv2>) {
    let pan = CardNumber::parse(&input.pan)
        .map_err(|e| errors.push(e.to_string()))
        .ok();
    let expiry_yymm = parse_expiry_yymm(&input.expiry)
        .map_err(|e| errors.push(e.to_string()))
        .ok();
    let cvv2 = match input.cvv2.trim() {
        "" => None,
        text => Cvv2::parse(text)
            .map_err(|e| errors.push(e.to_string()))
            .ok(),
    };
    (pan, expiry_yymm, cvv2)
}

/// The form to show again: its non-card fields, cut to their limits.
fn refused(
    input: &PaymentInput,
    kind: Kind,
    currency: Option<Currency>,
    errors: Vec<String>,
) -> Box<PaymentForm> {
    let cut = |text: &str, chars_max: usize| text.chars().take(chars_max).collect::<String>();
    Box::new(PaymentForm {
        sale: kind == Kind::Sale,
        amount: cut(&input.amount, AMOUNT_ECHO_CHARS_MAX),
        currency: currency.map_or(0, |c| c.numeric),
        reference: cut(&input.reference, REFERENCE_BYTES_MAX),
        description: cut(&input.description, DESCRIPTION_BYTES_MAX),
        terminal_id: cut(&input.terminal_id, TERMINAL_ID_BYTES_MAX),
        errors,
    })
}

/// The longest amount text shown again.
const AMOUNT_ECHO_CHARS_MAX: usize = 13;

fn optional_text(
    text: &str,
    bytes_max: usize,
    name: &str,
    errors: &mut Vec<String>,
) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.len() > bytes_max || !plain_text(text) {
        errors.push(format!(
            "the {name} must have at most {bytes_max} bytes, without control characters"
        ));
        return None;
    }
    Some(text.to_string())
}

/// Checks the filters; amounts are in the default currency's units.
///
/// # Errors
/// What is wrong, for the page.
pub(crate) fn check_filters(input: &FilterInput, config: &Config) -> Result<Filters, String> {
    let mut filters = Filters::default();
    if !input.status.is_empty() {
        let code = input.status.parse::<u8>().ok();
        let status = code.and_then(|c| PaymentStatus::from_code(tag::STATUS, c).ok());
        filters.status = Some(status.ok_or("unknown status")?);
    }
    let date = |text: &str| -> Result<Option<u64>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        parse_date_s(text)
            .map(Some)
            .ok_or_else(|| "dates must be YYYY-MM-DD".to_string())
    };
    filters.created_from_s = date(&input.from)?;
    filters.created_to_s = date(&input.to)?.map(end_of_day_s);
    if let (Some(from), Some(to)) = (filters.created_from_s, filters.created_to_s) {
        if from > to {
            return Err("the \"from\" date is after the \"to\" date".to_string());
        }
    }
    let currency = config
        .currencies
        .first()
        .copied()
        .and_then(Currency::by_numeric)
        .ok_or("no currency configured")?;
    let amount = |text: &str| -> Result<Option<u64>, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        parse_amount_minor(text, currency)
            .map(Some)
            .map_err(|e| format!("amount filter: {e}"))
    };
    filters.amount_min_minor = amount(&input.amount_min)?;
    filters.amount_max_minor = amount(&input.amount_max)?;
    if let (Some(min), Some(max)) = (filters.amount_min_minor, filters.amount_max_minor) {
        if min > max {
            return Err("the minimum amount is above the maximum".to_string());
        }
    }
    let reference = input.reference.trim();
    if !reference.is_empty() {
        if reference.len() > REFERENCE_BYTES_MAX || !printable(reference) {
            return Err(format!(
                "the reference filter must have at most {REFERENCE_BYTES_MAX} ASCII characters"
            ));
        }
        filters.reference = Some(reference.to_string());
    }
    if !input.terminal.is_empty() {
        if !config.terminals.contains(&input.terminal) {
            return Err("unknown terminal".to_string());
        }
        filters.terminal_id = Some(input.terminal.clone());
    }
    check_back_office_filters(input, &mut filters)?;
    if !input.cursor.is_empty() {
        filters.cursor = Some(
            input
                .cursor
                .parse()
                .map_err(|_| "bad page cursor".to_string())?,
        );
    }
    Ok(filters)
}

/// The back office's filters: scam, F37, approval code, last 4, several
/// statuses.
fn check_back_office_filters(input: &FilterInput, filters: &mut Filters) -> Result<(), String> {
    filters.scam = match input.scam.as_str() {
        "" => None,
        "yes" => Some(true),
        "no" => Some(false),
        _ => return Err("the scam filter is yes, no or any".to_string()),
    };
    let fixed = |text: &str, len: usize, ok: fn(char) -> bool, what: &str| {
        let text = text.trim();
        if text.is_empty() {
            Ok(None)
        } else if text.len() == len && text.chars().all(ok) {
            Ok(Some(text.to_string()))
        } else {
            Err(format!(
                "the {what} filter must be {len} {}",
                what_chars(ok)
            ))
        }
    };
    fn what_chars(ok: fn(char) -> bool) -> &'static str {
        if ok('A') {
            "letters or digits"
        } else {
            "digits"
        }
    }
    filters.rrn = fixed(&input.rrn, 12, |c| c.is_ascii_alphanumeric(), "RRN")?;
    filters.auth_code = fixed(
        &input.auth_code,
        6,
        |c| c.is_ascii_alphanumeric(),
        "approval code",
    )?;
    filters.last4 = fixed(&input.last4, 4, |c| c.is_ascii_digit(), "card's last 4")?;
    filters.webhook = match input.webhook.trim() {
        "" => None,
        label => Some(
            switch_client::WebhookStatus::from_label(label)
                .ok_or("the webhook filter is pending, delivered or failed".to_string())?,
        ),
    };
    for label in input
        .statuses
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let status = PaymentStatus::ALL
            .into_iter()
            .find(|s| s.label() == label)
            .ok_or_else(|| {
                format!(
                    "unknown status \"{}\" in the statuses filter",
                    label.chars().take(32).collect::<String>()
                )
            })?;
        if !filters.statuses.contains(&status) {
            filters.statuses.push(status);
        }
    }
    Ok(())
}

/// The filters as typed, to fill the filter form again.
pub(crate) fn filter_form(input: &FilterInput) -> FilterForm {
    let keep = |s: &str| s.chars().take(REFERENCE_BYTES_MAX).collect::<String>();
    FilterForm {
        status: keep(&input.status),
        from: keep(&input.from),
        to: keep(&input.to),
        amount_min: keep(&input.amount_min),
        amount_max: keep(&input.amount_max),
        reference: keep(&input.reference),
        terminal: keep(&input.terminal),
        scam: keep(&input.scam),
        rrn: keep(&input.rrn),
        auth_code: keep(&input.auth_code),
        last4: keep(&input.last4),
        statuses: keep(&input.statuses),
        webhook: keep(&input.webhook),
    }
}

/// Where to go after an action: one of the terminal's own pages, else the
/// terminal (an action form cannot send the browser elsewhere).
pub(crate) fn safe_back(back: &str) -> String {
    let own = back.starts_with("/terminal") || back.starts_with("/payments/");
    if own
        && back.len() <= BACK_BYTES_MAX
        && printable(back)
        && !back.contains("//")
        && !back.contains('\\')
    {
        back.to_string()
    } else {
        "/terminal".to_string()
    }
}

/// The reason an operator gave, if any.
pub(crate) fn reason(input: &ActionInput) -> Result<Option<String>, String> {
    let mut errors = Vec::new();
    let reason = optional_text(&input.reason, DESCRIPTION_BYTES_MAX, "reason", &mut errors);
    errors.pop().map_or(Ok(reason), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            r#"
listen_addr = "127.0.0.1:0"
switch_addr = "127.0.0.1:8584"
client_id = "DM-0001-0001"
secret = "0123456789abcdef0123456789abcdef"
terminals = ["DEMO0001", "DEMO0002"]
currencies = [978, 392]
[[operators]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0jRGZcxBpeaDh9W0Oc0OnOpLzNyEDvxyr7GfZTTsPFE"
"#,
        )
        .expect("config")
    }

    fn payment() -> PaymentInput {
        PaymentInput {
            kind: "preauth".into(),
            pan: "4111 1111 1111 1111".into(),
            expiry: "12/29".into(),
            cvv2: "123".into(),
            amount: "25.00".into(),
            currency: "978".into(),
            reference: "ORD-1".into(),
            terminal_id: "DEMO0001".into(),
            ..PaymentInput::default()
        }
    }

    #[test]
    fn a_good_payment_is_typed() {
        let p = check_payment(&payment(), &config()).expect("valid");
        assert_eq!(p.kind, Kind::Preauthorization);
        assert_eq!(p.pan.masked(), "411111******1111");
        assert_eq!(p.expiry_yymm, "2912");
        assert_eq!((p.amount_minor, p.currency), (2500, 978));
        assert_eq!(p.cardholder_name, None);
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("4111111111111111") && !debug.contains("\"123\""),
            "{debug}"
        );
    }

    #[test]
    fn a_refused_payment_keeps_no_card_data() {
        let mut input = payment();
        input.pan = "4111 1111 1111 1112".into();
        input.amount = "1.001".into();
        input.terminal_id = "OTHER".into();
        input.cardholder_name = "J. Smith".into();
        let form = check_payment(&input, &config()).expect_err("refused");
        assert_eq!(form.errors.len(), 3, "{:?}", form.errors);
        assert_eq!(form.reference, "ORD-1");
        let shown = format!("{form:?}");
        assert!(
            !shown.contains("4111") && !shown.contains("12/29") && !shown.contains("Smith"),
            "{shown}"
        );
    }

    #[test]
    fn back_office_filters_are_checked() {
        let input = FilterInput {
            scam: "yes".into(),
            rrn: "633412000001".into(),
            auth_code: "A1B2C3".into(),
            last4: " 4242 ".into(),
            statuses: "succeeded, declined,succeeded".into(),
            ..FilterInput::default()
        };
        let f = check_filters(&input, &config()).expect("valid");
        assert_eq!(f.scam, Some(true));
        assert_eq!(f.rrn.as_deref(), Some("633412000001"));
        assert_eq!(f.auth_code.as_deref(), Some("A1B2C3"));
        assert_eq!(f.last4.as_deref(), Some("4242"));
        assert_eq!(
            f.statuses,
            [PaymentStatus::Succeeded, PaymentStatus::Declined],
            "each once"
        );
        for (bad, says) in [
            (
                FilterInput {
                    scam: "maybe".into(),
                    ..FilterInput::default()
                },
                "scam",
            ),
            (
                FilterInput {
                    rrn: "12345".into(),
                    ..FilterInput::default()
                },
                "RRN",
            ),
            (
                FilterInput {
                    auth_code: "A1B2C!".into(),
                    ..FilterInput::default()
                },
                "approval code",
            ),
            (
                FilterInput {
                    last4: "42a2".into(),
                    ..FilterInput::default()
                },
                "last 4",
            ),
            (
                FilterInput {
                    statuses: "paid".into(),
                    ..FilterInput::default()
                },
                "paid",
            ),
        ] {
            let e = check_filters(&bad, &config()).expect_err("refused");
            assert!(e.contains(says), "{e}");
        }
        let form = filter_form(&input);
        assert!(form.query().contains("scam=yes") && form.query().contains("last4="));
    }

    #[test]
    fn filters_are_checked() {
        let input = FilterInput {
            status: "2".into(),
            from: "2026-11-01".into(),
            to: "2026-11-30".into(),
            amount_min: "10".into(),
            amount_max: "20.50".into(),
            reference: "ORD-1".into(),
            terminal: "DEMO0002".into(),
            cursor: "77".into(),
            ..FilterInput::default()
        };
        let f = check_filters(&input, &config()).expect("valid");
        assert_eq!(f.status, Some(PaymentStatus::Succeeded));
        assert_eq!(f.created_from_s, Some(1_793_491_200));
        assert_eq!(f.created_to_s, Some(1_796_083_199));
        assert_eq!(
            (f.amount_min_minor, f.amount_max_minor),
            (Some(1000), Some(2050))
        );
        assert_eq!(f.cursor, Some(77));
        assert_eq!(
            check_filters(&FilterInput::default(), &config()),
            Ok(Filters::default())
        );
        for bad in [
            FilterInput {
                status: "9".into(),
                ..FilterInput::default()
            },
            FilterInput {
                from: "2026-12-01".into(),
                to: "2026-11-01".into(),
                ..FilterInput::default()
            },
            FilterInput {
                amount_min: "5".into(),
                amount_max: "1".into(),
                ..FilterInput::default()
            },
            FilterInput {
                terminal: "NOPE".into(),
                ..FilterInput::default()
            },
            FilterInput {
                cursor: "x".into(),
                ..FilterInput::default()
            },
        ] {
            assert!(check_filters(&bad, &config()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn actions_only_go_back_to_the_terminal() {
        assert_eq!(safe_back("/terminal?status=1"), "/terminal?status=1");
        assert_eq!(safe_back("/payments/12"), "/payments/12");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/terminal//x",
            "/payments/1\r\nSet-Cookie: x",
            "",
            "/login",
        ] {
            assert_eq!(safe_back(bad), "/terminal", "{bad:?}");
        }
    }
}
