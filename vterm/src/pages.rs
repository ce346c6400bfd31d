//! The pages, server-rendered: pure functions from view models to HTML.
//! Every value is escaped with [`esc`]; no page holds a clear card number
//! or security code, and the payment form never echoes card fields.

use std::fmt::Write;

use switch_client::PaymentStatus;

use crate::calendar::format_utc;
use crate::html::{esc, url_param};
use crate::money::{format_amount, format_amount_plain, Currency};
use crate::payment::{
    cancellable, capturable, channel_text, refundable, status_text, Detail, Outcome, Row, RowsPage,
};
use crate::role::{Action, Role};
use crate::session::Flash;

/// What every signed-in page needs: who, and the token for its forms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chrome<'a> {
    /// The signed-in operator.
    pub(crate) operator: &'a str,
    /// The session's CSRF token.
    pub(crate) csrf: &'a str,
    /// The operator's role: what the page offers.
    pub(crate) role: Role,
}

impl Chrome<'_> {
    /// The token for the payment action forms, empty when the role may
    /// not use them (the forms are then not shown).
    fn action_csrf(&self) -> &str {
        if self.role.may(Action::Pay) {
            self.csrf
        } else {
            ""
        }
    }
}

/// The choices the configuration offers in the payment form.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Choices<'a> {
    /// Terminal ids; the first is the default.
    pub(crate) terminals: &'a [String],
    /// ISO 4217 numeric codes; the first is the default.
    pub(crate) currencies: &'a [u16],
}

/// The payment form's non-card fields, to show it again after an error.
/// There is deliberately no field for the card number, expiry, security
/// code or cardholder name: they are typed again.
#[derive(Clone, Debug, Default)]
pub(crate) struct PaymentForm {
    /// Pre-authorization (default) or sale.
    pub(crate) sale: bool,
    /// As typed.
    pub(crate) amount: String,
    /// ISO 4217 numeric, 0 for the default.
    pub(crate) currency: u16,
    /// As typed.
    pub(crate) reference: String,
    /// As typed.
    pub(crate) description: String,
    /// As chosen.
    pub(crate) terminal_id: String,
    /// Why the last submission was refused.
    pub(crate) errors: Vec<String>,
}

/// The filter form's fields as typed, to show them again.
#[derive(Clone, Debug, Default)]
pub(crate) struct FilterForm {
    /// Status code as text, or empty.
    pub(crate) status: String,
    /// `YYYY-MM-DD` or empty.
    pub(crate) from: String,
    /// `YYYY-MM-DD` or empty.
    pub(crate) to: String,
    /// Decimal amount or empty.
    pub(crate) amount_min: String,
    /// Decimal amount or empty.
    pub(crate) amount_max: String,
    /// Merchant reference or empty.
    pub(crate) reference: String,
    /// Terminal id or empty.
    pub(crate) terminal: String,
    /// `yes`, `no` or empty.
    pub(crate) scam: String,
    /// F37 or empty.
    pub(crate) rrn: String,
    /// Approval code or empty.
    pub(crate) auth_code: String,
    /// The card's last 4 or empty.
    pub(crate) last4: String,
    /// Status labels, comma-separated, or empty.
    pub(crate) statuses: String,
    /// Webhook delivery status or empty.
    pub(crate) webhook: String,
}

impl FilterForm {
    /// The query string that repeats these filters (for paging and for
    /// coming back after an action).
    pub(crate) fn query(&self) -> String {
        let pairs = [
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
            ("amount_min", &self.amount_min),
            ("amount_max", &self.amount_max),
            ("reference", &self.reference),
            ("terminal", &self.terminal),
            ("scam", &self.scam),
            ("rrn", &self.rrn),
            ("auth_code", &self.auth_code),
            ("last4", &self.last4),
            ("statuses", &self.statuses),
            ("webhook", &self.webhook),
        ];
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", url_param(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// The links in the header, as the role allows.
fn nav_html(role: Role) -> String {
    let operators = if role.may(Action::Manage) {
        r#" <a href="/operators" id="nav-operators">Operators</a> <a href="/terminals" id="nav-terminals">Terminals</a> <a href="/webhooks" id="nav-webhooks">Webhooks</a>"#
    } else {
        ""
    };
    format!(
        r#"<nav><a href="/terminal" id="nav-terminal">Payments</a>{operators} <a href="/account" id="nav-account">My account</a></nav>"#
    )
}

/// The page frame: head, header with the operator and sign-out, body.
pub(crate) fn layout(title: &str, chrome: Option<Chrome<'_>>, body: &str) -> String {
    let header = match chrome {
        Some(c) => format!(
            r#"<header><span class="brand">Virtual terminal</span>{}<span class="who">Signed in as <b id="operator">{}</b> <span id="role">({})</span></span><form method="post" action="/logout" class="inline">{}<button type="submit" id="sign-out">Sign out</button></form></header>"#,
            nav_html(c.role),
            esc(c.operator),
            c.role.name(),
            csrf_field(c.csrf)
        ),
        None => r#"<header><span class="brand">Virtual terminal</span></header>"#.to_string(),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · Virtual terminal</title><link rel="stylesheet" href="/static/vterm.css"></head>
<body>{header}<main>{body}</main></body></html>
"#,
        esc(title)
    )
}

pub(crate) fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

/// The sign-in page.
pub(crate) fn sign_in(csrf: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!(r#"<p class="error" id="sign-in-error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<section class="card narrow"><h1>Sign in</h1>{error}
<form method="post" action="/login" autocomplete="off">{}
<label>Operator <input name="name" id="name" required maxlength="64" autofocus></label>
<label>Password <input name="password" id="password" type="password" required maxlength="256"></label>
<button type="submit" id="sign-in">Sign in</button></form></section>"#,
        csrf_field(csrf)
    );
    layout("Sign in", None, &body)
}

/// A short page for errors (403, 404, 413...).
pub(crate) fn message(title: &str, text: &str) -> String {
    let body = format!(
        r#"<section class="card narrow"><h1>{}</h1><p>{}</p><p><a href="/terminal">Back to the terminal</a></p></section>"#,
        esc(title),
        esc(text)
    );
    layout(title, None, &body)
}

fn flash_html(flash: Option<&Flash>) -> String {
    match flash {
        None => String::new(),
        Some(Flash::Notice(text)) => format!(r#"<p class="notice" id="notice">{}</p>"#, esc(text)),
        Some(Flash::Error(text)) => format!(r#"<p class="error" id="error">{}</p>"#, esc(text)),
        Some(Flash::Payment(outcome)) => outcome_html(outcome),
    }
}

fn outcome_html(o: &Outcome) -> String {
    let (class, verdict) = if o.approved {
        ("approved", "Approved")
    } else {
        ("declined", "Declined")
    };
    let mut out = format!(
        r#"<section class="card result {class}" id="result"><h2 id="result-verdict">{verdict}</h2><dl>
<dt>Type</dt><dd>{}</dd><dt>Amount</dt><dd id="result-amount">{}</dd><dt>Card</dt><dd id="result-card">{}</dd><dt>Reference</dt><dd>{}</dd>"#,
        o.kind.label(),
        esc(&format_amount(o.amount_minor, o.currency)),
        esc(&o.masked_pan),
        esc(&o.reference)
    );
    if !o.approved {
        let reason = o.message.as_deref().unwrap_or("declined");
        let _ = write!(
            out,
            r#"<dt>Reason</dt><dd id="result-reason">{} (code {})</dd>"#,
            esc(reason),
            esc(&o.result_code)
        );
    }
    if let Some(code) = &o.auth_code {
        let _ = write!(
            out,
            r#"<dt>Authorization code</dt><dd id="result-auth-code">{}</dd>"#,
            esc(code)
        );
    }
    if let Some(id) = o.payment_id {
        let _ = write!(
            out,
            r#"<dt>Payment id</dt><dd id="result-payment-id"><a href="/payments/{id}">{id}</a></dd>"#
        );
    }
    if let Some(status) = o.status {
        let _ = write!(
            out,
            r#"<dt>Status</dt><dd id="result-status">{}</dd>"#,
            status_text(status)
        );
    }
    out.push_str("</dl></section>");
    out
}

fn options<T: PartialEq>(items: impl Iterator<Item = (T, String, String)>, chosen: &T) -> String {
    items
        .map(|(value, key, label)| {
            let selected = if &value == chosen { " selected" } else { "" };
            format!(
                r#"<option value="{}"{selected}>{}</option>"#,
                esc(&key),
                esc(&label)
            )
        })
        .collect()
}

fn payment_form_html(csrf: &str, choices: Choices<'_>, form: &PaymentForm) -> String {
    let errors: String = form
        .errors
        .iter()
        .map(|e| format!("<li>{}</li>", esc(e)))
        .collect();
    let errors = if errors.is_empty() {
        String::new()
    } else {
        format!(r#"<ul class="error" id="form-errors">{errors}</ul>"#)
    };
    let currency = if form.currency == 0 {
        choices.currencies.first().copied().unwrap_or(0)
    } else {
        form.currency
    };
    let currencies = options(
        choices.currencies.iter().map(|c| {
            let alpha = Currency::by_numeric(*c).map_or("?", |c| c.alpha);
            (*c, c.to_string(), alpha.to_string())
        }),
        &currency,
    );
    let terminal = if form.terminal_id.is_empty() {
        choices.terminals.first().cloned().unwrap_or_default()
    } else {
        form.terminal_id.clone()
    };
    let terminals = options(
        choices
            .terminals
            .iter()
            .map(|t| (t.clone(), t.clone(), t.clone())),
        &terminal,
    );
    let (preauth, sale) = if form.sale {
        ("", " checked")
    } else {
        (" checked", "")
    };
    format!(
        r#"<section class="card"><h2>New MO/TO payment</h2>{errors}
<form method="post" action="/payments" autocomplete="off" id="payment-form">{}
<fieldset class="kind"><label><input type="radio" name="kind" value="preauth" id="kind-preauth"{preauth}> Pre-authorization</label>
<label><input type="radio" name="kind" value="sale" id="kind-sale"{sale}> Sale</label></fieldset>
<div class="grid">
<label>Card number <input name="pan" id="pan" inputmode="numeric" autocomplete="off" required maxlength="40"></label>
<label>Expiry (MM/YY) <input name="expiry" id="expiry" autocomplete="off" required maxlength="7" placeholder="MM/YY"></label>
<label>Security code <input name="cvv2" id="cvv2" type="password" inputmode="numeric" autocomplete="off" maxlength="4"></label>
<label>Cardholder name <input name="cardholder_name" id="cardholder-name" autocomplete="off" maxlength="64"></label>
<label>Amount <input name="amount" id="amount" required maxlength="13" inputmode="decimal" value="{}"></label>
<label>Currency <select name="currency" id="currency">{currencies}</select></label>
<label>Merchant reference <input name="reference" id="reference" required maxlength="64" value="{}"></label>
<label>Terminal <select name="terminal_id" id="terminal-id">{terminals}</select></label>
<label class="wide">Description <input name="description" id="description" maxlength="255" value="{}"></label>
</div><button type="submit" id="submit-payment">Submit payment</button></form></section>"#,
        csrf_field(csrf),
        esc(&form.amount),
        esc(&form.reference),
        esc(&form.description)
    )
}

fn filter_form_html(choices: Choices<'_>, f: &FilterForm, error: Option<&str>) -> String {
    let statuses = options(
        std::iter::once((String::new(), String::new(), "any".to_string())).chain(
            PaymentStatus::ALL.iter().map(|&s| {
                (
                    s.code().to_string(),
                    s.code().to_string(),
                    status_text(s).to_string(),
                )
            }),
        ),
        &f.status,
    );
    let terminals = options(
        std::iter::once((String::new(), String::new(), "any".to_string())).chain(
            choices
                .terminals
                .iter()
                .map(|t| (t.clone(), t.clone(), t.clone())),
        ),
        &f.terminal,
    );
    let error = error
        .map(|e| format!(r#"<p class="error" id="filter-error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    format!(
        r#"<form method="get" action="/terminal" class="filters" id="filters">{error}
<label>Status <select name="status" id="filter-status">{statuses}</select></label>
<label>From <input type="date" name="from" id="filter-from" value="{}"></label>
<label>To <input type="date" name="to" id="filter-to" value="{}"></label>
<label>Amount from <input name="amount_min" id="filter-amount-min" maxlength="13" inputmode="decimal" value="{}"></label>
<label>to <input name="amount_max" id="filter-amount-max" maxlength="13" inputmode="decimal" value="{}"></label>
<label>Reference <input name="reference" id="filter-reference" maxlength="64" value="{}"></label>
<label>Terminal <select name="terminal" id="filter-terminal">{terminals}</select></label>
{}<button type="submit" id="apply-filters">Filter</button> <a href="/terminal">Clear</a></form>"#,
        esc(&f.from),
        esc(&f.to),
        esc(&f.amount_min),
        esc(&f.amount_max),
        esc(&f.reference),
        back_office_filters_html(f)
    )
}

/// The back office's filters: scam, RRN, approval code, last 4, several
/// statuses (their labels, comma-separated).
fn back_office_filters_html(f: &FilterForm) -> String {
    let scam = options(
        [("", "any"), ("yes", "flagged"), ("no", "not flagged")]
            .into_iter()
            .map(|(v, t)| (v.to_string(), v.to_string(), t.to_string())),
        &f.scam,
    );
    let labels: Vec<&str> = PaymentStatus::ALL.iter().map(|s| s.label()).collect();
    let webhook = options(
        [
            ("", "any"),
            ("pending", "pending"),
            ("delivered", "delivered"),
            ("failed", "failed"),
        ]
        .into_iter()
        .map(|(v, t)| (v.to_string(), v.to_string(), t.to_string())),
        &f.webhook,
    );
    format!(
        r#"<label>Scam <select name="scam" id="filter-scam">{scam}</select></label>
<label>RRN <input name="rrn" id="filter-rrn" maxlength="12" value="{}"></label>
<label>Approval code <input name="auth_code" id="filter-auth-code" maxlength="6" value="{}"></label>
<label>Card last 4 <input name="last4" id="filter-last4" maxlength="4" inputmode="numeric" value="{}"></label>
<label>Statuses <input name="statuses" id="filter-statuses" maxlength="200" placeholder="{}" title="Any of these, comma-separated" value="{}"></label>
<label>Webhook <select name="webhook" id="filter-webhook" title="Payments with an event in this delivery status">{webhook}</select></label>
"#,
        esc(&f.rrn),
        esc(&f.auth_code),
        esc(&f.last4),
        esc(&labels.join(",")),
        esc(&f.statuses)
    )
}

/// The forms acting on one payment, as its status allows.
fn actions_html(csrf: &str, row: &Row, back: &str) -> String {
    let Some(status) = row.status.filter(|_| !csrf.is_empty()) else {
        return String::new();
    };
    let id = row.payment_id;
    let hidden = format!(
        r#"{}<input type="hidden" name="back" value="{}">"#,
        csrf_field(csrf),
        esc(back)
    );
    let mut out = String::new();
    if capturable(status) {
        let held = row.authorized_minor.saturating_sub(row.captured_minor);
        let _ = write!(
            out,
            r#"<form method="post" action="/payments/{id}/capture" class="inline capture">{hidden}<input name="amount" class="amount" maxlength="13" inputmode="decimal" placeholder="{}" title="Amount to capture; empty: what is still held"><label class="keep-open"><input type="checkbox" name="keep_open" value="1"> keep the rest of the hold open</label><button type="submit">Capture</button></form>"#,
            esc(&format_amount_plain(held, row.currency))
        );
    }
    if refundable(status) {
        let left = row.captured_minor.saturating_sub(row.refunded_minor);
        let _ = write!(
            out,
            r#"<form method="post" action="/payments/{id}/refund" class="inline refund">{hidden}<input name="amount" class="amount" maxlength="13" inputmode="decimal" required placeholder="{}" title="Amount to refund"><button type="submit">Refund</button></form>"#,
            esc(&format_amount_plain(left, row.currency))
        );
    }
    if cancellable(status) {
        let _ = write!(
            out,
            r#"<form method="post" action="/payments/{id}/cancel" class="inline cancel">{hidden}<button type="submit">Cancel</button></form>"#
        );
    }
    out
}

fn row_html(csrf: &str, row: &Row, back: &str) -> String {
    let status = row.status.map_or("Unknown", status_text);
    let scam = if row.scam {
        r#" <span class="scam">scam</span>"#
    } else {
        ""
    };
    format!(
        r#"<tr data-payment-id="{id}"><td><a href="/payments/{id}">{id}</a></td><td>{}</td><td class="status">{status}{scam}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td><td class="actions">{}</td></tr>"#,
        format_utc(row.created_s),
        esc(&format_amount(row.authorized_minor, row.currency)),
        esc(&format_amount(row.captured_minor, row.currency)),
        esc(&format_amount(row.refunded_minor, row.currency)),
        esc(&row.reference),
        actions_html(csrf, row, back),
        id = row.payment_id
    )
}

fn table_html(csrf: &str, filters: &FilterForm, table: &Result<RowsPage, String>) -> String {
    let page = match table {
        Ok(page) => page,
        Err(e) => return format!(r#"<p class="error" id="table-error">{}</p>"#, esc(e)),
    };
    if page.rows.is_empty() {
        return r#"<p id="no-payments">No payments match.</p>"#.to_string();
    }
    let query = filters.query();
    let back = if query.is_empty() {
        "/terminal".to_string()
    } else {
        format!("/terminal?{query}")
    };
    let rows: String = page.rows.iter().map(|r| row_html(csrf, r, &back)).collect();
    let more = match page.next_cursor {
        Some(cursor) => {
            let sep = if query.is_empty() { "" } else { "&" };
            format!(
                r#"<p><a id="older" href="/terminal?{}{sep}cursor={cursor}">Older payments →</a></p>"#,
                esc(&query)
            )
        }
        None => String::new(),
    };
    format!(
        r#"<table id="payments"><thead><tr><th>Payment</th><th>Created (UTC)</th><th>Status</th><th>Authorized</th><th>Captured</th><th>Refunded</th><th>Reference</th><th>Actions</th></tr></thead><tbody>{rows}</tbody></table>{more}"#
    )
}

/// Everything the terminal page shows.
#[derive(Debug)]
pub(crate) struct TerminalPage<'a> {
    /// Operator and CSRF token.
    pub(crate) chrome: Chrome<'a>,
    /// Form choices.
    pub(crate) choices: Choices<'a>,
    /// The last action's result, once.
    pub(crate) flash: Option<&'a Flash>,
    /// The payment form's non-card fields.
    pub(crate) form: &'a PaymentForm,
    /// The filters as typed.
    pub(crate) filters: &'a FilterForm,
    /// Why the filters were refused, if they were.
    pub(crate) filter_error: Option<&'a str>,
    /// The table, or why it could not be had.
    pub(crate) table: &'a Result<RowsPage, String>,
}

/// The terminal: the last result, the payment form, the filters and the
/// payments table.
pub(crate) fn terminal(p: &TerminalPage<'_>) -> String {
    let form = if p.chrome.role.may(Action::Pay) {
        payment_form_html(p.chrome.csrf, p.choices, p.form)
    } else {
        String::new()
    };
    let body = format!(
        r#"{}{form}<section class="card"><h2>Payments</h2>{}{}</section>"#,
        flash_html(p.flash),
        filter_form_html(p.choices, p.filters, p.filter_error),
        table_html(p.chrome.action_csrf(), p.filters, p.table)
    );
    layout("Terminal", Some(p.chrome), &body)
}

/// One payment with its history and actions.
pub(crate) fn detail(chrome: Chrome<'_>, flash: Option<&Flash>, d: &Detail) -> String {
    let row = &d.row;
    let back = format!("/payments/{}", row.payment_id);
    let field = |name: &str, id: &str, value: &str| {
        format!(r#"<dt>{name}</dt><dd id="{id}">{}</dd>"#, esc(value))
    };
    let mut facts = String::new();
    facts.push_str(&field(
        "Status",
        "detail-status",
        row.status.map_or("Unknown", status_text),
    ));
    facts.push_str(&field(
        "Created (UTC)",
        "detail-created",
        &format_utc(row.created_s),
    ));
    facts.push_str(&field(
        "Card",
        "detail-card",
        d.masked_pan.as_deref().unwrap_or(""),
    ));
    facts.push_str(&field(
        "Authorized",
        "detail-authorized",
        &format_amount(row.authorized_minor, row.currency),
    ));
    // Partly captured, the hold still open: what is captured so far and
    // what is still held.
    let partly = row.status == Some(PaymentStatus::Uncaptured) && row.captured_minor > 0;
    facts.push_str(&field(
        if partly {
            "Captured so far"
        } else {
            "Captured"
        },
        "detail-captured",
        &format_amount(row.captured_minor, row.currency),
    ));
    if partly {
        facts.push_str(&field(
            "Still held",
            "detail-held",
            &format_amount(
                row.authorized_minor.saturating_sub(row.captured_minor),
                row.currency,
            ),
        ));
    }
    facts.push_str(&field(
        "Refunded",
        "detail-refunded",
        &format_amount(row.refunded_minor, row.currency),
    ));
    facts.push_str(&field("Reference", "detail-reference", &row.reference));
    facts.push_str(&field(
        "Terminal",
        "detail-terminal",
        d.terminal_id.as_deref().unwrap_or(""),
    ));
    facts.push_str(&field(
        "Authorization code",
        "detail-auth-code",
        d.auth_code.as_deref().unwrap_or(""),
    ));
    facts.push_str(&details_html(d, &field));
    let history: String = d
        .history
        .iter()
        .map(|a| {
            format!(
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                format_utc(a.at_s),
                a.what,
                esc(&format_amount(a.amount_minor, row.currency)),
                esc(&a.result_code)
            )
        })
        .collect();
    let body = format!(
        r#"{}<section class="card"><h2>Payment {}</h2><p><a href="/terminal">← All payments</a></p><dl>{facts}</dl><div class="actions">{}</div>{}
<h3>History</h3><table id="history"><thead><tr><th>When (UTC)</th><th>What</th><th>Amount</th><th>Result</th></tr></thead><tbody>{history}</tbody></table>{}</section>"#,
        flash_html(flash),
        row.payment_id,
        actions_html(chrome.action_csrf(), row, &back),
        scam_form_html(chrome.action_csrf(), row),
        crate::webhooks::payment_events_html(chrome.action_csrf(), &d.webhooks, &back)
    );
    layout(&format!("Payment {}", row.payment_id), Some(chrome), &body)
}

/// The detail's back-office facts: how the payment was authorized, and
/// its scam flag's workflow.
fn details_html(d: &Detail, field: &dyn Fn(&str, &str, &str) -> String) -> String {
    let x = &d.details;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut out = String::new();
    out.push_str(&field(
        "Response code",
        "detail-response-code",
        &x.auth_result_code
            .map(|c| c.to_string())
            .unwrap_or_default(),
    ));
    out.push_str(&field(
        "Amount asked",
        "detail-requested",
        &x.amount_requested_minor
            .map(|a| format_amount(a, d.row.currency))
            .unwrap_or_default(),
    ));
    out.push_str(&field("RRN", "detail-rrn", &text(&x.rrn)));
    out.push_str(&field(
        "ECI",
        "detail-eci",
        &x.eci.map(|e| format!("{e:02}")).unwrap_or_default(),
    ));
    out.push_str(&field(
        "Channel",
        "detail-channel",
        x.channel.map_or("", channel_text),
    ));
    let stood_in = match x.stood_in {
        Some(true) => "yes: the switch approved in the issuer's stead",
        Some(false) => "no: the issuer decided",
        None => "no issuer",
    };
    out.push_str(&field("Stand-in", "detail-stand-in", stood_in));
    out.push_str(&field(
        "Scam",
        "detail-scam",
        if d.row.scam { "flagged" } else { "not flagged" },
    ));
    out.push_str(&field(
        "Flagged by rules",
        "detail-flag-reasons",
        &text(&x.flag_reasons),
    ));
    out.push_str(&field(
        "Marked by",
        "detail-flagged-by",
        &text(&x.flagged_by),
    ));
    out.push_str(&field(
        "Why marked",
        "detail-flag-note",
        &text(&x.flag_note),
    ));
    out.push_str(&field(
        "Unmarked by",
        "detail-unflagged-by",
        &text(&x.unflagged_by),
    ));
    out.push_str(&field(
        "Why unmarked",
        "detail-unflag-reason",
        &text(&x.unflag_reason),
    ));
    out.push_str(&field(
        "Unmarked at (UTC)",
        "detail-unflagged-at",
        &x.unflagged_unix_s.map(format_utc).unwrap_or_default(),
    ));
    out
}

/// Mark as scam, or take the mark off, with a reason (required to take it
/// off).
fn scam_form_html(csrf: &str, row: &Row) -> String {
    // No token: the role may not change payments, so no form.
    if csrf.is_empty() {
        return String::new();
    }
    let id = row.payment_id;
    let (action, button, required) = if row.scam {
        ("unscam", "Take the scam mark off", " required")
    } else {
        ("scam", "Mark as scam", "")
    };
    format!(
        r#"<form method="post" action="/payments/{id}/{action}" class="inline scam-action" id="scam-form">{}<input type="hidden" name="back" value="/payments/{id}"><input name="reason" id="scam-reason" maxlength="200" placeholder="Reason"{required}><button type="submit" id="scam-submit">{button}</button></form>"#,
        csrf_field(csrf)
    )
}
