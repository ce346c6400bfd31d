//! The admins' terminal page: the merchant's terminals as the switch has
//! them, adding one, enabling, disabling and removing one, and its own
//! settings over the merchant's (refunds, MO/TO, cancels, a name). Every
//! change goes to the switch over internal frames (AddTerminal,
//! SetTerminal, RemoveTerminal), which applies it before it answers and
//! audits it under this terminal's key; the operator's name is logged here.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use switch_client::{Setting, Terminal, TerminalSettings, TerminalState};

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

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/terminals", get(list).post(add))
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
    page(
        StatusCode::OK,
        terminals_page(
            signed.chrome(),
            &terminals,
            notice.as_deref(),
            error.as_deref(),
        ),
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
<button type="submit" id="add-terminal-submit">Add</button></form></section>"#,
        csrf_field(chrome.csrf)
    );
    layout("Terminals", Some(chrome), &body)
}
