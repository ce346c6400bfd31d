//! An operator's own pages: the TOTP code at sign-in, TOTP enrolment, and
//! the change of one's own password (under the password policy).

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use crate::lockout::LOCKOUT_S;
use crate::operator_pages::{self, Enrolment};
use crate::password::{hash_password, Verdict};
use crate::role::Role;
use crate::server::{client_address, Peer};
use crate::session::Flash;
use crate::store::Change;
use crate::totp;
use crate::web::{forbidden, page, see_other, App, Signed, Signing};

/// The issuer apps show beside the operator's name.
const TOTP_ISSUER: &str = "Virtual terminal";

/// A form with a TOTP code.
#[derive(Deserialize)]
pub(crate) struct CodeInput {
    /// The session's token.
    #[serde(default)]
    csrf: String,
    /// Six digits.
    #[serde(default)]
    code: String,
}

/// The password change form; no `Debug`, it holds passwords.
#[derive(Deserialize)]
pub(crate) struct PasswordInput {
    /// The session's token.
    #[serde(default)]
    csrf: String,
    /// The password now.
    #[serde(default)]
    current: String,
    /// The new one.
    #[serde(default)]
    new: String,
    /// The new one again.
    #[serde(default)]
    repeat: String,
}

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/login/totp", get(totp_page).post(totp_sign_in))
        .route("/account", get(account_page))
        .route("/account/password", axum::routing::post(change_password))
        .route("/account/totp", get(enrol_page).post(enrol))
}

/// Applies a store change off the async threads.
pub(crate) async fn change_store(
    app: &Arc<App>,
    actor: String,
    change: Change,
) -> Result<(), String> {
    let app = Arc::clone(app);
    let now_s = app.clock.now_s();
    tokio::task::spawn_blocking(move || app.store.change(&actor, change, now_s))
        .await
        .map_err(|e| format!("the change failed: {e}"))?
        .map_err(|e| e.to_string())
}

/// Hashes a password off the async threads.
pub(crate) async fn hash(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn totp_page(State(_app): State<Arc<App>>, s: Signing) -> Response {
    if !s.record.has_totp() || s.signed.view.second_factor {
        return see_other("/terminal");
    }
    page(
        StatusCode::OK,
        operator_pages::totp_sign_in(&s.signed.view.csrf, None),
    )
}

async fn totp_sign_in(
    State(app): State<Arc<App>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    s: Signing,
    Form(input): Form<CodeInput>,
) -> Response {
    if !s.signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    let Some(secret) = s.record.totp_secret.as_deref() else {
        return see_other("/terminal");
    };
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let peer = client_address(peer, forwarded, &app.config.trusted_proxies);
    let name = &s.record.name;
    let now_s = app.clock.now_s();
    let csrf = &s.signed.view.csrf;
    if app.passwords.locked(name, peer, now_s) {
        let text = format!(
            "Too many failed sign-ins from here: try again in {} minutes.",
            LOCKOUT_S / 60
        );
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            operator_pages::totp_sign_in(csrf, Some(&text)),
        );
    }
    if !app.store.use_totp(name, secret, &input.code, now_s) {
        app.passwords.fail(name, peer, now_s);
        tracing::warn!(operator = ?name, %peer, "second factor refused");
        return page(
            StatusCode::UNAUTHORIZED,
            operator_pages::totp_sign_in(csrf, Some("Wrong or already used code.")),
        );
    }
    app.sessions.confirm(&s.signed.id, s.record.epoch);
    tracing::info!(operator = ?name, "second factor given");
    see_other("/terminal")
}

async fn account_page(State(app): State<Arc<App>>, signed: Signed) -> Response {
    let flash = app.sessions.take_flash(&signed.id);
    let has_totp = app
        .store
        .current()
        .get(&signed.view.operator)
        .is_some_and(|r| r.has_totp());
    let (notice, error) = match &flash {
        Some(Flash::Notice(t)) => (Some(t.as_str()), None),
        Some(Flash::Error(t)) => (None, Some(t.as_str())),
        _ => (None, None),
    };
    page(
        StatusCode::OK,
        operator_pages::account(signed.chrome(), has_totp, notice, error),
    )
}

async fn change_password(
    State(app): State<Arc<App>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    signed: Signed,
    Form(input): Form<PasswordInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    let name = signed.view.operator.clone();
    let now_s = app.clock.now_s();
    let snapshot = app.store.current();
    let record = snapshot.get(&name);
    let has_totp = record.is_some_and(|r| r.has_totp());
    let refuse = |text: &str| {
        page(
            StatusCode::UNPROCESSABLE_ENTITY,
            operator_pages::account(signed.chrome(), has_totp, None, Some(text)),
        )
    };
    let known = record.map(|r| r.password_hash.as_str());
    match app
        .passwords
        .verify(&name, &input.current, known, peer, now_s)
        .await
    {
        Verdict::Accepted => {}
        Verdict::Refused => return refuse("The current password is wrong."),
        Verdict::LockedOut => return refuse("Too many failed tries from here: try again later."),
    }
    if input.new != input.repeat {
        return refuse("The two new passwords differ.");
    }
    if let Err(text) = app.config.policy().check(&name, &input.new) {
        return refuse(&text);
    }
    let result = match hash(input.new).await {
        Ok(h) => {
            change_store(
                &app,
                format!("web:{name}"),
                Change::OwnPassword(name.clone(), h),
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let Err(text) = result {
        return refuse(&text);
    }
    // Other sessions of this operator end; this one goes on.
    let epoch = app.store.current().get(&name).map_or(0, |r| r.epoch);
    app.sessions.confirm(&signed.id, epoch);
    app.sessions.set_flash(
        &signed.id,
        Flash::Notice("Your password was changed.".into()),
    );
    see_other("/account")
}

async fn enrol_page(State(app): State<Arc<App>>, s: Signing) -> Response {
    if s.record.has_totp() {
        return see_other("/account");
    }
    let secret = match &s.signed.view.enrolling {
        Some(secret) => secret.clone(),
        None => {
            let secret = totp::new_secret_b32();
            app.sessions.set_enrolling(&s.signed.id, secret.clone());
            secret
        }
    };
    render_enrol(&s, &secret, StatusCode::OK, None)
}

fn render_enrol(s: &Signing, secret: &str, status: StatusCode, error: Option<&str>) -> Response {
    let uri = totp::otpauth_uri(TOTP_ISSUER, &s.record.name, secret);
    let enrolment = Enrolment {
        secret_b32: secret,
        uri: &uri,
        required: s.record.role == Role::Admin,
    };
    page(
        status,
        operator_pages::enrol(s.signed.chrome(), &enrolment, error),
    )
}

async fn enrol(State(app): State<Arc<App>>, s: Signing, Form(input): Form<CodeInput>) -> Response {
    if !s.signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if s.record.has_totp() {
        return see_other("/account");
    }
    let Some(secret) = s.signed.view.enrolling.clone() else {
        return see_other("/account/totp");
    };
    let name = s.record.name.clone();
    if !app
        .store
        .use_totp(&name, &secret, &input.code, app.clock.now_s())
    {
        let error =
            "Wrong code: check the app's clock and the secret, and type the code it shows now.";
        return render_enrol(&s, &secret, StatusCode::UNPROCESSABLE_ENTITY, Some(error));
    }
    let change = Change::EnableTotp(name.clone(), secret.clone());
    if let Err(text) = change_store(&app, format!("web:{name}"), change).await {
        return render_enrol(&s, &secret, StatusCode::INTERNAL_SERVER_ERROR, Some(&text));
    }
    app.sessions.confirm(&s.signed.id, s.record.epoch);
    app.sessions.set_flash(
        &s.signed.id,
        Flash::Notice("The second factor is on: sign-in now asks for a code.".into()),
    );
    see_other("/terminal")
}
