//! The pages of operators themselves: the second factor at sign-in, TOTP
//! enrolment, one's own account (password change), and the admins'
//! operator list. Pure functions to HTML; every value escaped.

use std::fmt::Write;

use crate::html::esc;
use crate::pages::{csrf_field, layout, Chrome};
use crate::role::Role;
use crate::store::Record;

fn error_html(error: Option<&str>) -> String {
    error
        .map(|e| format!(r#"<p class="error" id="error">{}</p>"#, esc(e)))
        .unwrap_or_default()
}

fn notice_html(notice: Option<&str>) -> String {
    notice
        .map(|e| format!(r#"<p class="notice" id="notice">{}</p>"#, esc(e)))
        .unwrap_or_default()
}

/// The second step of sign-in: the TOTP code.
pub(crate) fn totp_sign_in(csrf: &str, error: Option<&str>) -> String {
    let body = format!(
        r#"<section class="card narrow"><h1>Second factor</h1>{}
<p>Type the 6-digit code your authenticator app shows for the virtual terminal.</p>
<form method="post" action="/login/totp" autocomplete="off">{}
<label>Code <input name="code" id="totp-code" required maxlength="6" inputmode="numeric" autocomplete="one-time-code" autofocus></label>
<button type="submit" id="verify-code">Verify</button></form>
<form method="post" action="/logout" class="inline">{}<button type="submit" id="sign-out">Sign out</button></form></section>"#,
        error_html(error),
        csrf_field(csrf),
        csrf_field(csrf)
    );
    layout("Second factor", None, &body)
}

/// What the enrolment page shows.
#[derive(Debug)]
pub(crate) struct Enrolment<'a> {
    /// The secret, base32.
    pub(crate) secret_b32: &'a str,
    /// The `otpauth://` URI.
    pub(crate) uri: &'a str,
    /// Whether the operator must enrol before anything else (admins).
    pub(crate) required: bool,
}

/// TOTP enrolment: the secret and its URI, and the code that confirms it.
pub(crate) fn enrol(chrome: Chrome<'_>, e: &Enrolment<'_>, error: Option<&str>) -> String {
    let why = if e.required {
        r#"<p id="totp-required">Admins need a second factor: set it up now to go on.</p>"#
    } else {
        ""
    };
    let secret_grouped: Vec<String> = e
        .secret_b32
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    // An admin held here gets no links to pages that would send it back,
    // only a way out.
    let sign_out = if e.required {
        format!(
            r#"<form method="post" action="/logout" class="inline">{}<button type="submit" id="sign-out">Sign out</button></form>"#,
            csrf_field(chrome.csrf)
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<section class="card narrow"><h1>Set up the second factor</h1>{why}{}
<p>Add an entry to your authenticator app (TOTP, SHA-1, 6 digits, 30 seconds) with this secret:</p>
<p><code id="totp-secret" data-secret="{}">{}</code></p>
<p>or this address: <code id="totp-uri">{}</code></p>
<p>Then type the code it shows to turn the second factor on.</p>
<form method="post" action="/account/totp" autocomplete="off">{}
<label>Code <input name="code" id="totp-code" required maxlength="6" inputmode="numeric" autocomplete="one-time-code"></label>
<button type="submit" id="confirm-totp">Turn on</button></form>{sign_out}</section>"#,
        error_html(error),
        esc(e.secret_b32),
        esc(&secret_grouped.join(" ")),
        esc(e.uri),
        csrf_field(chrome.csrf)
    );
    let chrome = (!e.required).then_some(chrome);
    layout("Second factor", chrome, &body)
}

/// One's own account: the second factor's state and the password form.
pub(crate) fn account(
    chrome: Chrome<'_>,
    has_totp: bool,
    notice: Option<&str>,
    error: Option<&str>,
) -> String {
    let totp = if has_totp {
        r#"<p id="totp-state">The second factor (TOTP) is on. To move it to another device, ask an admin to reset it.</p>"#.to_string()
    } else {
        r#"<p id="totp-state">The second factor (TOTP) is off. <a href="/account/totp" id="enrol-totp">Set it up</a>.</p>"#.to_string()
    };
    let body = format!(
        r#"<section class="card narrow"><h1>My account</h1>{}{}{totp}
<h2>Change my password</h2>
<form method="post" action="/account/password" autocomplete="off">{}
<label>Current password <input name="current" id="current-password" type="password" required maxlength="256"></label>
<label>New password <input name="new" id="new-password" type="password" required maxlength="256"></label>
<label>New password again <input name="repeat" id="repeat-password" type="password" required maxlength="256"></label>
<button type="submit" id="change-password">Change</button></form></section>"#,
        notice_html(notice),
        error_html(error),
        csrf_field(chrome.csrf)
    );
    layout("My account", Some(chrome), &body)
}

fn role_options(chosen: Role) -> String {
    Role::ALL
        .iter()
        .map(|r| {
            let selected = if *r == chosen { " selected" } else { "" };
            format!(r#"<option value="{0}"{selected}>{0}</option>"#, r.name())
        })
        .collect()
}

fn operator_row(csrf: &str, me: &str, r: &Record) -> String {
    let name = esc(&r.name);
    let path = format!("/operators/{}", crate::html::url_param(&r.name));
    let hidden = csrf_field(csrf);
    let state = if r.blocked { "blocked" } else { "active" };
    let totp = if r.has_totp() { "on" } else { "off" };
    let mut actions = String::new();
    if r.name == me {
        actions.push_str(r#"<a href="/account">My account</a>"#);
    } else {
        let (verb, label) = if r.blocked {
            ("unblock", "Unblock")
        } else {
            ("block", "Block")
        };
        let _ = write!(
            actions,
            r#"<form method="post" action="{path}/{verb}" class="inline {verb}">{hidden}<button type="submit">{label}</button></form>"#
        );
        let _ = write!(
            actions,
            r#"<form method="post" action="{path}/role" class="inline role">{hidden}<select name="role">{}</select><button type="submit">Set role</button></form>"#,
            role_options(r.role)
        );
        let _ = write!(
            actions,
            r#"<form method="post" action="{path}/reset" class="inline reset" autocomplete="off">{hidden}<input name="password" type="password" maxlength="256" required placeholder="new password"><label><input type="checkbox" name="clear_totp" value="on"> clear TOTP</label><button type="submit">Reset password</button></form>"#
        );
    }
    format!(
        r#"<tr data-operator="{name}"><td>{name}</td><td class="role">{}</td><td class="state">{state}</td><td class="totp">{totp}</td><td class="actions">{actions}</td></tr>"#,
        r.role.name()
    )
}

/// The admins' page: every operator with its actions, and the add form.
pub(crate) fn operators(
    chrome: Chrome<'_>,
    all: &[&Record],
    notice: Option<&str>,
    error: Option<&str>,
) -> String {
    let rows: String = all
        .iter()
        .map(|r| operator_row(chrome.csrf, chrome.operator, r))
        .collect();
    let body = format!(
        r#"<section class="card"><h1>Operators</h1>{}{}
<table id="operators"><thead><tr><th>Name</th><th>Role</th><th>State</th><th>TOTP</th><th>Actions</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Add an operator</h2>
<form method="post" action="/operators" autocomplete="off" id="add-operator">{}
<label>Name <input name="name" id="new-name" required maxlength="64"></label>
<label>Role <select name="role" id="new-role">{}</select></label>
<label>Password <input name="password" id="new-operator-password" type="password" required maxlength="256"></label>
<button type="submit" id="add">Add</button></form></section>"#,
        notice_html(notice),
        error_html(error),
        csrf_field(chrome.csrf),
        role_options(Role::Operator)
    );
    layout("Operators", Some(chrome), &body)
}
