//! The admins' terminal page: the merchant's terminals as the switch has
//! them, adding one, enabling, disabling and removing one, and its own
//! settings over the merchant's (refunds, MO/TO, cancels, a name); then the
//! merchant's settings (currencies, over-capture, hold, auto-capture,
//! refunds, MO/TO). Every change goes to the switch over internal frames
//! (AddTerminal, SetTerminal, RemoveTerminal, SetMerchant), which applies
//! it before it answers and audits it under this terminal's key; the
//! operator's name is logged here. Enabling or disabling the merchant is
//! its acquirer's, not offered.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use switch_client::{
    Merchant, MerchantSettings, Setting, Terminal, TerminalSettings, TerminalState,
};

use crate::html::esc;
use crate::link::LinkError;
use crate::pages::{csrf_field, layout, Chrome};
use crate::role::Action;
use crate::session::Flash;
use crate::web::{forbidden, page, see_other, App, Signed};

/// Most terminals shown on the page (one page of the switch's list).
const TERMINALS_SHOWN_MAX: u16 = 100;

/// The forms of this page.
#[derive(Deserialize)]
pub(crate) struct TerminalInput {
    /// The session's token.
    #[serde(default)]
    csrf: String,
    /// F41, for an addition.
    #[serde(default)]
    terminal_id: String,
    /// A name, for an addition or a settings change (empty: none).
    #[serde(default)]
    name: String,
    /// `inherit`, `on` or `off`.
    #[serde(default)]
    refunds: String,
    /// As `refunds`.
    #[serde(default)]
    moto: String,
    /// As `refunds`.
    #[serde(default)]
    cancel: String,
}

/// The merchant settings form.
#[derive(Deserialize)]
pub(crate) struct MerchantInput {
    /// The session's token.
    #[serde(default)]
    csrf: String,
    /// ISO 4217 numeric codes, comma-separated.
    #[serde(default)]
    currencies: String,
    /// 0..=100.
    #[serde(default)]
    over_capture_pct: String,
    /// 1..=744.
    #[serde(default)]
    hold_hours: String,
    /// Hours, or empty / `off`.
    #[serde(default)]
    auto_capture_hours: String,
    /// `on` or `off`.
    #[serde(default)]
    refunds: String,
    /// As `refunds`.
    #[serde(default)]
    moto: String,
}

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/terminals", get(list).post(add))
        .route("/terminals/merchant", post(merchant_settings))
        .route("/terminals/{tid}/{verb}", post(act))
}

async fn list(State(app): State<Arc<App>>, signed: Signed) -> Response {
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    let flash = app.sessions.take_flash(&signed.id);
    let (terminals, error) = match app.link.terminals(TERMINALS_SHOWN_MAX).await {
        Ok(t) => (t, None),
        Err(e) => (
            Vec::new(),
            Some(format!("The terminals could not be read: {e}")),
        ),
    };
    let (notice, error) = match flash {
        Some(Flash::Notice(t)) => (Some(t), error),
        Some(Flash::Error(t)) => (None, Some(t)),
        _ => (None, error),
    };
    let merchant = app
        .link
        .merchant()
        .await
        .map_err(|e| format!("The merchant's settings could not be read: {e}"));
    let chrome = signed.chrome();
    let section = merchant_html(chrome.csrf, &merchant);
    page(
        StatusCode::OK,
        terminals_page(
            chrome,
            &terminals,
            &section,
            notice.as_deref(),
            error.as_deref(),
        ),
    )
}

/// Changes the merchant's settings: every field of the form is sent.
async fn merchant_settings(
    State(app): State<Arc<App>>,
    signed: Signed,
    Form(input): Form<MerchantInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    let result = match merchant_patch(&input) {
        Ok(settings) => app.link.set_merchant(&settings).await,
        Err(e) => Err(LinkError::Refused(e.to_string())),
    };
    let flash = match result {
        Ok(reply) if reply.approved() => Flash::Notice("Merchant settings: saved.".to_string()),
        Ok(reply) => Flash::Error(format!(
            "Merchant settings refused ({}): {}",
            reply.code(),
            reply.message.as_deref().unwrap_or("no reason given")
        )),
        Err(e) => Flash::Error(format!("Merchant settings failed: {e}")),
    };
    tracing::info!(operator = ?signed.view.operator, action = "merchant settings", "merchant change");
    app.sessions.set_flash(&signed.id, flash);
    see_other("/terminals")
}

/// The form as settings to change; the first field that does not parse.
fn merchant_patch(input: &MerchantInput) -> Result<MerchantSettings, &'static str> {
    let max = switch_client::CURRENCIES_MAX;
    let currencies: Vec<u16> = input
        .currencies
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .take(max + 1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| "currencies: ISO 4217 numeric codes separated by commas (978,840)")?;
    if currencies.is_empty() || currencies.len() > max {
        return Err("currencies: 1 to 32 ISO 4217 numeric codes");
    }
    let on_off = |t: &str, what| match t {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(what),
    };
    let auto = match input.auto_capture_hours.trim() {
        "" | "off" => None,
        h => Some(
            h.parse()
                .map_err(|_| "auto-capture: hours, or empty for off")?,
        ),
    };
    Ok(MerchantSettings {
        currencies: Some(currencies),
        over_capture_pct: Some(
            input
                .over_capture_pct
                .trim()
                .parse()
                .map_err(|_| "over-capture: a percentage, 0 to 100")?,
        ),
        hold_hours: Some(
            input
                .hold_hours
                .trim()
                .parse()
                .map_err(|_| "hold: hours, 1 to 744")?,
        ),
        auto_capture_hours: Some(auto),
        refunds: Some(on_off(&input.refunds, "refunds: on or off")?),
        moto: Some(on_off(&input.moto, "MO/TO: on or off")?),
        ..MerchantSettings::default()
    })
}

/// The merchant settings section: its settings and the form to change
/// them, or why they could not be read.
fn merchant_html(csrf: &str, merchant: &Result<Merchant, String>) -> String {
    let m = match merchant {
        Ok(m) => m,
        Err(e) => {
            return format!(
                r#"<h2>Merchant settings</h2><p class="error" id="merchant-error">{}</p>"#,
                esc(e)
            )
        }
    };
    let currencies = m
        .currencies
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let auto = m
        .auto_capture_hours
        .map(|h| h.to_string())
        .unwrap_or_default();
    let on_off = |name: &str, on: bool| {
        let (on_sel, off_sel) = if on {
            (" selected", "")
        } else {
            ("", " selected")
        };
        format!(
            r#"<select name="{name}" id="merchant-{name}"><option value="on"{on_sel}>on</option><option value="off"{off_sel}>off</option></select>"#
        )
    };
    let state = if m.enabled { "enabled" } else { "disabled" };
    format!(
        r#"<h2>Merchant settings</h2>
<p id="merchant-summary" data-merchant="{mid}" data-enabled="{state}" data-currencies="{currencies}" data-over-capture="{over}" data-hold="{hold}" data-auto-capture="{auto_shown}" data-refunds="{refunds}" data-moto="{moto}">Merchant {mid} ({name}), {state}. A disabled merchant's requests are refused (03); enabling and disabling is the acquirer's. A new hold period or auto-capture applies to holds placed after the change.</p>
<form method="post" action="/terminals/merchant" autocomplete="off" id="merchant-settings">{csrf_field}
<label>Currencies <input name="currencies" id="merchant-currencies" value="{currencies}" maxlength="160" required></label>
<label>Over-capture % <input name="over_capture_pct" id="merchant-over-capture" value="{over}" inputmode="numeric" maxlength="3" required></label>
<label>Hold (hours) <input name="hold_hours" id="merchant-hold" value="{hold}" inputmode="numeric" maxlength="3" required></label>
<label>Auto-capture (hours, empty: off) <input name="auto_capture_hours" id="merchant-auto-capture" value="{auto}" inputmode="numeric" maxlength="3"></label>
<label>Refunds {refunds_select}</label>
<label>MO/TO {moto_select}</label>
<button type="submit" id="merchant-settings-submit">Save</button></form>"#,
        mid = esc(&m.merchant_id),
        name = esc(&m.name),
        over = m.over_capture_pct,
        hold = m.hold_hours,
        auto_shown = if auto.is_empty() { "off" } else { &auto },
        refunds = if m.refunds { "on" } else { "off" },
        moto = if m.moto { "on" } else { "off" },
        csrf_field = csrf_field(csrf),
        refunds_select = on_off("refunds", m.refunds),
        moto_select = on_off("moto", m.moto),
    )
}

async fn add(
    State(app): State<Arc<App>>,
    signed: Signed,
    Form(input): Form<TerminalInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    let tid = input.terminal_id.trim().to_string();
    let result = if tid.len() == 8 && tid.bytes().all(|b| b.is_ascii_graphic()) {
        let name = Some(input.name.trim()).filter(|n| !n.is_empty());
        app.link.add_terminal(&tid, name).await
    } else {
        Err(LinkError::Refused(
            "a terminal id is 8 letters or digits (F41)".to_string(),
        ))
    };
    done(&app, &signed, "Adding", &tid, result)
}

async fn act(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path((tid, verb)): Path<(String, String)>,
    Form(input): Form<TerminalInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    let (what, result) = match verb.as_str() {
        "enable" | "disable" => (
            if verb == "enable" {
                "Enabling"
            } else {
                "Disabling"
            },
            app.link
                .set_terminal(
                    &tid,
                    &TerminalSettings {
                        enabled: Some(verb == "enable"),
                        ..TerminalSettings::default()
                    },
                )
                .await,
        ),
        "remove" => ("Removing", app.link.remove_terminal(&tid).await),
        "settings" => {
            let settings = match (
                setting(&input.refunds),
                setting(&input.moto),
                setting(&input.cancel),
            ) {
                (Some(refunds), Some(moto), Some(cancel)) => Ok(TerminalSettings {
                    name: Some(input.name.trim().to_string()).filter(|n| !n.is_empty()),
                    refunds: Some(refunds),
                    moto: Some(moto),
                    cancel: Some(cancel),
                    ..TerminalSettings::default()
                }),
                _ => Err(LinkError::Refused(
                    "each setting is inherit, on or off".to_string(),
                )),
            };
            let result = match settings {
                Ok(s) => app.link.set_terminal(&tid, &s).await,
                Err(e) => Err(e),
            };
            ("Changing the settings of", result)
        }
        _ => return forbidden(),
    };
    done(&app, &signed, what, &tid, result)
}

/// A setting as the form names it.
fn setting(text: &str) -> Option<Setting> {
    match text {
        "inherit" => Some(Setting::Inherit),
        "on" => Some(Setting::On),
        "off" => Some(Setting::Off),
        _ => None,
    }
}

fn setting_name(s: Setting) -> &'static str {
    match s {
        Setting::Inherit => "inherit",
        Setting::On => "on",
        Setting::Off => "off",
    }
}

fn state_name(s: TerminalState) -> &'static str {
    match s {
        TerminalState::Enabled => "enabled",
        TerminalState::Disabled => "disabled",
        TerminalState::Removed => "removed",
    }
}

/// Flashes what the switch said and goes back to the list.
fn done(
    app: &App,
    signed: &Signed,
    what: &str,
    tid: &str,
    result: Result<switch_client::Reply, LinkError>,
) -> Response {
    let flash = match result {
        Ok(reply) if reply.approved() => Flash::Notice(format!("{what} terminal {tid}: done.")),
        Ok(reply) => Flash::Error(format!(
            "{what} terminal {tid} refused ({}): {}",
            reply.code(),
            reply.message.as_deref().unwrap_or("no reason given")
        )),
        Err(e) => Flash::Error(format!("{what} terminal {tid} failed: {e}")),
    };
    tracing::info!(operator = ?signed.view.operator, action = what, terminal = tid, "terminal change");
    app.sessions.set_flash(&signed.id, flash);
    see_other("/terminals")
}

fn options(current: Setting) -> String {
    [Setting::Inherit, Setting::On, Setting::Off]
        .iter()
        .map(|s| {
            let selected = if *s == current { " selected" } else { "" };
            format!(
                r#"<option value="{0}"{selected}>{0}</option>"#,
                setting_name(*s)
            )
        })
        .collect()
}

fn terminal_row(csrf: &str, t: &Terminal) -> String {
    let tid = esc(&t.terminal_id);
    let action = |verb: &str, label: &str| {
        format!(
            r#"<form method="post" action="/terminals/{tid}/{verb}" class="inline">{}<button type="submit" id="{verb}-{tid}">{label}</button></form>"#,
            csrf_field(csrf)
        )
    };
    let mut actions = String::new();
    match t.state {
        TerminalState::Enabled => {
            actions.push_str(&action("disable", "Disable"));
            actions.push_str(&action("remove", "Remove"));
        }
        TerminalState::Disabled => {
            actions.push_str(&action("enable", "Enable"));
            actions.push_str(&action("remove", "Remove"));
        }
        TerminalState::Removed => {}
    }
    if t.state != TerminalState::Removed {
        let _ = write!(
            actions,
            r#"<form method="post" action="/terminals/{tid}/settings" class="inline" id="settings-{tid}">{}<input name="name" value="{}" maxlength="64" placeholder="name"> refunds <select name="refunds">{}</select> MO/TO <select name="moto">{}</select> cancels <select name="cancel">{}</select><button type="submit">Save</button></form>"#,
            csrf_field(csrf),
            esc(&t.name),
            options(t.refunds),
            options(t.moto),
            options(t.cancel)
        );
    }
    format!(
        r#"<tr data-terminal="{tid}" data-state="{state}"><td>{tid}</td><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{actions}</td></tr>"#,
        esc(&t.name),
        setting_name(t.refunds),
        setting_name(t.moto),
        setting_name(t.cancel),
        state = state_name(t.state),
    )
}

/// The page.
fn terminals_page(
    chrome: Chrome<'_>,
    terminals: &[Terminal],
    merchant: &str,
    notice: Option<&str>,
    error: Option<&str>,
) -> String {
    let rows: String = terminals
        .iter()
        .map(|t| terminal_row(chrome.csrf, t))
        .collect();
    let notice = notice
        .map(|n| format!(r#"<p class="notice" id="notice">{}</p>"#, esc(n)))
        .unwrap_or_default();
    let error = error
        .map(|e| format!(r#"<p class="error" id="error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<section class="card"><h1>Terminals</h1>{notice}{error}
<p>A disabled or removed terminal's authorizations, sales, refunds and captures are refused (58); its reversals still go through. A setting of <em>inherit</em> follows the merchant's.</p>
<table id="terminals"><thead><tr><th>Terminal</th><th>Name</th><th>State</th><th>Refunds</th><th>MO/TO</th><th>Cancels</th><th>Actions</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Add a terminal</h2>
<form method="post" action="/terminals" autocomplete="off" id="add-terminal">{}
<label>Terminal id (F41) <input name="terminal_id" id="new-terminal" required minlength="8" maxlength="8"></label>
<label>Name <input name="name" id="new-terminal-name" maxlength="64"></label>
<button type="submit" id="add-terminal-submit">Add</button></form>
{merchant}</section>"#,
        csrf_field(chrome.csrf)
    );
    layout("Terminals", Some(chrome), &body)
}
