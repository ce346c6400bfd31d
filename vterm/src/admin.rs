//! The admins' pages: the operator list, adding operators, blocking and
//! unblocking them, resetting their passwords (and second factor), and
//! changing their roles. Every change goes through the operator store,
//! which audits it as `web:<admin>`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::account::{change_store, hash};
use crate::operator_pages;
use crate::role::{Action, Role};
use crate::session::Flash;
use crate::store::Change;
use crate::web::{forbidden, page, see_other, App, Signed};

/// The add form; no `Debug`, it holds a password.
#[derive(Deserialize)]
pub(crate) struct AddInput {
    /// The session's token.
    #[serde(default)]
    csrf: String,
    /// The new operator's name.
    #[serde(default)]
    name: String,
    /// `viewer`, `operator` or `admin`.
    #[serde(default)]
    role: String,
    /// The first password.
    #[serde(default)]
    password: String,
}

/// The forms acting on one operator.
#[derive(Deserialize)]
pub(crate) struct OperatorInput {
    /// The session's token.
    #[serde(default)]
    csrf: String,
    /// For a role change.
    #[serde(default)]
    role: String,
    /// For a reset.
    #[serde(default)]
    password: String,
    /// For a reset: `on` clears the second factor.
    #[serde(default)]
    clear_totp: String,
}

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/operators", get(list).post(add))
        .route("/operators/{name}/{verb}", post(act))
}

fn render(app: &App, signed: &Signed, status: StatusCode, error: Option<&str>) -> Response {
    let flash = app.sessions.take_flash(&signed.id);
    let notice = match &flash {
        Some(Flash::Notice(t)) => Some(t.as_str()),
        _ => None,
    };
    let snapshot = app.store.current();
    let all = snapshot.sorted();
    page(
        status,
        operator_pages::operators(signed.chrome(), &all, notice, error),
    )
}

async fn list(State(app): State<Arc<App>>, signed: Signed) -> Response {
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    render(&app, &signed, StatusCode::OK, None)
}

fn refused(app: &App, signed: &Signed, text: &str) -> Response {
    render(app, signed, StatusCode::UNPROCESSABLE_ENTITY, Some(text))
}

fn done(app: &App, signed: &Signed, text: String) -> Response {
    app.sessions.set_flash(&signed.id, Flash::Notice(text));
    see_other("/operators")
}

async fn add(State(app): State<Arc<App>>, signed: Signed, Form(input): Form<AddInput>) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    let Some(role) = Role::parse(&input.role) else {
        return refused(&app, &signed, "Choose a role: viewer, operator or admin.");
    };
    if let Err(text) = app.config.policy().check(&input.name, &input.password) {
        return refused(&app, &signed, &text);
    }
    let name = input.name.clone();
    let actor = format!("web:{}", signed.view.operator);
    let result = match hash(input.password).await {
        Ok(h) => change_store(&app, actor, Change::Add(name.clone(), role, h)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => done(
            &app,
            &signed,
            format!("Operator {name} added as {}.", role.name()),
        ),
        Err(text) => refused(&app, &signed, &text),
    }
}

async fn act(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path((name, verb)): Path<(String, String)>,
    Form(input): Form<OperatorInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    let me = signed.view.operator == name;
    if me {
        return refused(
            &app,
            &signed,
            "You cannot change your own operator here: your password is on My account, and another admin changes the rest.",
        );
    }
    let (change, text) = match verb.as_str() {
        "block" => (
            Change::Block(name.clone(), true),
            format!("Operator {name} blocked."),
        ),
        "unblock" => (
            Change::Block(name.clone(), false),
            format!("Operator {name} unblocked."),
        ),
        "role" => {
            let Some(role) = Role::parse(&input.role) else {
                return refused(&app, &signed, "Choose a role: viewer, operator or admin.");
            };
            let text = format!("Operator {name} is now {}.", role.name());
            (Change::SetRole(name.clone(), role), text)
        }
        "reset" => {
            if let Err(text) = app.config.policy().check(&name, &input.password) {
                return refused(&app, &signed, &text);
            }
            let clear_totp = input.clear_totp == "on";
            let hashed = match hash(input.password).await {
                Ok(h) => h,
                Err(e) => return refused(&app, &signed, &e),
            };
            let text = if clear_totp {
                format!("Password of {name} reset, second factor cleared.")
            } else {
                format!("Password of {name} reset.")
            };
            (Change::Reset(name.clone(), hashed, clear_totp), text)
        }
        _ => {
            return page(
                StatusCode::NOT_FOUND,
                crate::pages::message("Not found", "There is no such page."),
            )
        }
    };
    match change_store(&app, format!("web:{}", signed.view.operator), change).await {
        Ok(()) => done(&app, &signed, text),
        Err(text) => refused(&app, &signed, &text),
    }
}
