//! The HTTP side: routes, the session extractor, cookies, CSRF checks and
//! security headers. Handlers check with [`crate::forms`], call the switch
//! through [`crate::link`] and render with [`crate::pages`].

use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{AppendHeaders, Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use clock::Clock;

use crate::config::Config;
use crate::forms::{self, ActionInput, CsrfInput, FilterInput, PaymentInput, SignInInput};
use crate::link::{reply_reason, Link, LinkError};
use crate::lockout::LOCKOUT_S;
use crate::money::{parse_amount_minor, Currency};
use crate::pages::{self, Choices, Chrome, PaymentForm, TerminalPage};
use crate::password::{Passwords, Verdict};
use crate::payment::RowsPage;
use crate::role::{Action, Role};
use crate::server::{client_address, Peer};
use crate::session::{random_token, tokens_equal, Flash, SessionView, Sessions};
use crate::store::{Record, Store};

/// Largest request body: the payment form is well under 2 KiB.
pub(crate) const FORM_BYTES_MAX: usize = 16 * 1024;
/// The session cookie.
const SESSION_COOKIE: &str = "vterm_session";
/// The sign-in form's CSRF cookie (double submit: no session exists yet).
const SIGN_IN_COOKIE: &str = "vterm_signin";
/// Cookies the terminal reads from one request, at most.
const COOKIES_MAX: usize = 32;
/// The style sheet, compiled in.
const STYLE_CSS: &str = include_str!("../static/vterm.css");
/// Scripts, frames and other origins are refused: the pages need none.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct App {
    /// Choices for the form, cookie settings.
    pub(crate) config: Config,
    /// Signed-in sessions.
    pub(crate) sessions: Sessions,
    /// Password checks and sign-in lockouts.
    pub(crate) passwords: Passwords,
    /// Operators: roles, hashes, second factors, blocks.
    pub(crate) store: Store,
    /// The connection to the switch.
    pub(crate) link: Link,
    /// Session expiry time.
    pub(crate) clock: Clock,
}

/// The router with every page.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { see_other("/terminal") }))
        .route("/login", get(sign_in_page).post(sign_in))
        .route("/logout", post(sign_out))
        .route("/terminal", get(terminal))
        .route("/payments", post(new_payment))
        .route("/payments/{id}", get(payment))
        .route("/payments/{id}/capture", post(capture))
        .route("/payments/{id}/refund", post(refund))
        .route("/payments/{id}/cancel", post(cancel))
        .route("/payments/{id}/scam", post(mark_scam))
        .route("/payments/{id}/unscam", post(unmark_scam))
        .route("/static/vterm.css", get(style))
        .merge(crate::account::routes())
        .merge(crate::admin::routes())
        .merge(crate::terminals::routes())
        .merge(crate::webhooks::routes())
        .fallback(|| async {
            page(
                StatusCode::NOT_FOUND,
                pages::message("Not found", "There is no such page."),
            )
        })
        .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Pages may show payment data: browsers and proxies keep no copy.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn page(status: StatusCode, html: String) -> Response {
    (status, Html(html)).into_response()
}

pub(crate) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_string())]).into_response()
}

pub(crate) fn forbidden() -> Response {
    page(
        StatusCode::FORBIDDEN,
        pages::message("Forbidden", "This form was not sent from the terminal's own page, or it has expired. Reload the page and try again."),
    )
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .take(COOKIES_MAX)
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, the whole site, and
/// Secure when the terminal is served over HTTPS. Without `max_age_s` it
/// lasts until the browser closes; `Some(0)` deletes it.
fn set_cookie(config: &Config, name: &str, value: &str, max_age_s: Option<u64>) -> String {
    let secure = if config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let max_age = max_age_s
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{max_age}")
}

/// A request's live session whose operator may use the terminal: known,
/// not blocked, at the epoch it signed in at, second factor given, and an
/// admin enrolled in TOTP. Without one, pages redirect to sign-in (or to
/// the second factor's page).
pub(crate) struct Signed {
    /// The cookie's session id.
    pub(crate) id: String,
    /// Operator and CSRF token.
    pub(crate) view: SessionView,
    /// The operator's role now (read from the store on each request).
    pub(crate) role: Role,
}

/// A request's live session whatever its second factor: for the pages
/// that give it (TOTP at sign-in, enrolment) and for sign-out.
pub(crate) struct Signing {
    /// The session.
    pub(crate) signed: Signed,
    /// The operator as the store has it now.
    pub(crate) record: Record,
}

impl Signed {
    pub(crate) fn chrome(&self) -> Chrome<'_> {
        Chrome {
            operator: &self.view.operator,
            csrf: &self.view.csrf,
            role: self.role,
        }
    }

    /// Whether a form's token is this session's.
    pub(crate) fn csrf_ok(&self, submitted: &str) -> bool {
        tokens_equal(submitted, &self.view.csrf)
    }

    /// `None` when the role may do `action`, else the 403 page that says
    /// so.
    pub(crate) fn refused(&self, action: Action) -> Option<Response> {
        if self.role.may(action) {
            return None;
        }
        tracing::warn!(operator = ?self.view.operator, role = self.role.name(), ?action, "refused by role");
        Some(page(
            StatusCode::FORBIDDEN,
            pages::message("Not allowed", &action.refused(self.role)),
        ))
    }
}

/// Redirects to sign-in, clearing the session cookie.
fn to_sign_in(app: &App) -> Response {
    let clear = set_cookie(&app.config, SESSION_COOKIE, "", Some(0));
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, "/login".to_string()), (SET_COOKIE, clear)],
    )
        .into_response()
}

impl FromRequestParts<Arc<App>> for Signing {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Signing, Response> {
        let id = cookie(&parts.headers, SESSION_COOKIE).unwrap_or_default();
        let Some(view) = app.sessions.touch(id, app.clock.now_s()) else {
            return Err(to_sign_in(app));
        };
        let snapshot = app.store.current();
        let record = match snapshot.get(&view.operator) {
            Some(r) if !r.blocked && r.epoch == view.epoch => r.clone(),
            _ => {
                // Blocked, removed, reset or given another role since.
                app.sessions.close(id);
                tracing::info!(operator = ?view.operator, "session revoked");
                return Err(to_sign_in(app));
            }
        };
        Ok(Signing {
            signed: Signed {
                id: id.to_string(),
                role: record.role,
                view,
            },
            record,
        })
    }
}

impl FromRequestParts<Arc<App>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Signed, Response> {
        let Signing { signed, record } = Signing::from_request_parts(parts, app).await?;
        if record.has_totp() && !signed.view.second_factor {
            return Err(see_other("/login/totp"));
        }
        if record.role == Role::Admin && !record.has_totp() {
            return Err(see_other("/account/totp"));
        }
        Ok(signed)
    }
}

async fn style() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_CSS).into_response()
}

/// The sign-in page with a fresh sign-in token in its form and cookie.
fn sign_in_response(app: &App, status: StatusCode, error: Option<&str>) -> Response {
    let token = random_token();
    let cookie = set_cookie(&app.config, SIGN_IN_COOKIE, &token, None);
    (
        status,
        [(SET_COOKIE, cookie)],
        Html(pages::sign_in(&token, error)),
    )
        .into_response()
}

async fn sign_in_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let signed_in = cookie(&headers, SESSION_COOKIE)
        .is_some_and(|id| app.sessions.touch(id, app.clock.now_s()).is_some());
    if signed_in {
        return see_other("/terminal");
    }
    sign_in_response(&app, StatusCode::OK, None)
}

async fn sign_in(
    State(app): State<Arc<App>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(input): Form<SignInInput>,
) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !tokens_equal(&input.csrf, expected) {
        return forbidden();
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let peer = client_address(peer, forwarded, &app.config.trusted_proxies);
    let now_s = app.clock.now_s();
    let snapshot = app.store.current();
    let record = snapshot.get(&input.name);
    match app
        .passwords
        .verify(
            &input.name,
            &input.password,
            record.map(|r| r.password_hash.as_str()),
            peer,
            now_s,
        )
        .await
    {
        Verdict::Refused => {
            tracing::warn!(operator = ?input.name, %peer, "sign-in refused");
            sign_in_response(
                &app,
                StatusCode::UNAUTHORIZED,
                Some("Wrong operator name or password."),
            )
        }
        Verdict::LockedOut => {
            tracing::warn!(operator = ?input.name, %peer, "sign-in locked out");
            let text = format!(
                "Too many failed sign-ins from here: try again in {} minutes.",
                LOCKOUT_S / 60
            );
            sign_in_response(&app, StatusCode::TOO_MANY_REQUESTS, Some(&text))
        }
        Verdict::Accepted => signed_in(&app, record, now_s),
    }
}

/// After the right password: blocked, or a session (second factor due
/// when the operator has one) and the next page.
fn signed_in(app: &App, record: Option<&Record>, now_s: u64) -> Response {
    let Some(record) = record else {
        return sign_in_response(
            app,
            StatusCode::UNAUTHORIZED,
            Some("Wrong operator name or password."),
        );
    };
    if record.blocked {
        tracing::warn!(operator = ?record.name, "sign-in of a blocked operator");
        return sign_in_response(
            app,
            StatusCode::FORBIDDEN,
            Some("This operator is blocked: ask an admin."),
        );
    }
    let next = if record.has_totp() {
        "/login/totp"
    } else if record.role == Role::Admin {
        "/account/totp"
    } else {
        "/terminal"
    };
    match app
        .sessions
        .open(&record.name, record.epoch, !record.has_totp(), now_s)
    {
        Ok(id) => {
            tracing::info!(operator = ?record.name, "signed in");
            let session = set_cookie(&app.config, SESSION_COOKIE, &id, None);
            let clear = set_cookie(&app.config, SIGN_IN_COOKIE, "", Some(0));
            (
                StatusCode::SEE_OTHER,
                [(LOCATION, next.to_string())],
                AppendHeaders([(SET_COOKIE, session), (SET_COOKIE, clear)]),
            )
                .into_response()
        }
        Err(full) => sign_in_response(
            app,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&full.to_string()),
        ),
    }
}

async fn sign_out(
    State(app): State<Arc<App>>,
    Signing { signed, .. }: Signing,
    Form(input): Form<CsrfInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    app.sessions.close(&signed.id);
    tracing::info!(operator = ?signed.view.operator, "signed out");
    let clear = set_cookie(&app.config, SESSION_COOKIE, "", Some(0));
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, "/login".to_string()), (SET_COOKIE, clear)],
    )
        .into_response()
}

fn choices(config: &Config) -> Choices<'_> {
    Choices {
        terminals: &config.terminals,
        currencies: &config.currencies,
    }
}

/// The terminal page, with a payment form (fresh, or one refused).
async fn render_terminal(
    app: &App,
    signed: &Signed,
    filters_in: &FilterInput,
    form: &PaymentForm,
    status: StatusCode,
) -> Response {
    let flash = app.sessions.take_flash(&signed.id);
    let filters = forms::check_filters(filters_in, &app.config);
    let table = match &filters {
        Ok(f) => app.link.list(f).await.map_err(|e| e.to_string()),
        Err(_) => Ok(RowsPage::default()),
    };
    let html = pages::terminal(&TerminalPage {
        chrome: signed.chrome(),
        choices: choices(&app.config),
        flash: flash.as_ref(),
        form,
        filters: &forms::filter_form(filters_in),
        filter_error: filters.as_ref().err().map(String::as_str),
        table: &table,
    });
    page(status, html)
}

async fn terminal(
    State(app): State<Arc<App>>,
    signed: Signed,
    Query(filters): Query<FilterInput>,
) -> Response {
    render_terminal(
        &app,
        &signed,
        &filters,
        &PaymentForm::default(),
        StatusCode::OK,
    )
    .await
}

async fn new_payment(
    State(app): State<Arc<App>>,
    signed: Signed,
    Form(input): Form<PaymentInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Pay) {
        return refused;
    }
    let checked = forms::check_payment(&input, &app.config);
    drop(input);
    let payment = match checked {
        Ok(p) => p,
        Err(form) => {
            return render_terminal(
                &app,
                &signed,
                &FilterInput::default(),
                &form,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    };
    let flash = match app.link.pay(&payment).await {
        Ok(outcome) => {
            tracing::info!(
                operator = ?signed.view.operator,
                kind = ?payment.kind,
                payment_id = ?outcome.payment_id,
                result_code = %outcome.result_code,
                "payment"
            );
            Flash::Payment(Box::new(outcome))
        }
        Err(e) => Flash::Error(format!("The payment was not taken: {e}")),
    };
    app.sessions.set_flash(&signed.id, flash);
    see_other("/terminal")
}

async fn payment(State(app): State<Arc<App>>, signed: Signed, Path(id): Path<u64>) -> Response {
    let flash = app.sessions.take_flash(&signed.id);
    match app.link.payment(id).await {
        Ok(Some(detail)) => page(
            StatusCode::OK,
            pages::detail(signed.chrome(), flash.as_ref(), &detail),
        ),
        Ok(None) => page(
            StatusCode::NOT_FOUND,
            pages::message("Not found", "This merchant has no such payment."),
        ),
        Err(e) => page(
            StatusCode::BAD_GATEWAY,
            pages::message("Switch unavailable", &e.to_string()),
        ),
    }
}

/// The amount typed for an action on payment `id`, in that payment's
/// currency; `None` when left empty.
async fn action_amount(app: &App, id: u64, text: &str) -> Result<Option<u64>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let detail = app
        .link
        .payment(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no such payment")?;
    let currency = Currency::by_numeric(detail.row.currency)
        .ok_or("the payment's currency is not one the terminal knows")?;
    parse_amount_minor(text, currency)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Leaves the action's result for the next page.
fn flash_action(
    app: &App,
    signed: &Signed,
    what: &str,
    id: u64,
    result: Result<switch_client::Reply, LinkError>,
) {
    let flash = match result {
        Ok(reply) if reply.approved() => {
            let status = reply.status.map_or("", crate::payment::status_text);
            Flash::Notice(format!("{what} of payment {id} done. Status: {status}."))
        }
        Ok(reply) => Flash::Error(format!(
            "{what} of payment {id} refused: {}",
            reply_reason(&reply)
        )),
        Err(e) => Flash::Error(format!("{what} of payment {id} failed: {e}")),
    };
    tracing::info!(operator = ?signed.view.operator, action = what, payment_id = id, "action");
    app.sessions.set_flash(&signed.id, flash);
}

async fn capture(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<u64>,
    Form(input): Form<ActionInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Pay) {
        return refused;
    }
    let keep_open = !input.keep_open.is_empty();
    let result = match action_amount(&app, id, &input.amount).await {
        // Keeping the rest open after capturing all of it means nothing.
        Ok(None) if keep_open => Err(LinkError::Refused(
            "type the amount to capture now; the rest stays held".to_string(),
        )),
        Ok(amount) => app.link.capture(id, amount, keep_open).await,
        Err(e) => Err(LinkError::Refused(e)),
    };
    flash_action(&app, &signed, "Capture", id, result);
    see_other(&forms::safe_back(&input.back))
}

async fn refund(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<u64>,
    Form(input): Form<ActionInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Pay) {
        return refused;
    }
    let result = match (
        action_amount(&app, id, &input.amount).await,
        forms::reason(&input),
    ) {
        (Ok(Some(amount)), Ok(reason)) => app.link.refund(id, amount, reason.as_deref()).await,
        (Ok(None), _) => Err(LinkError::Refused("type the amount to refund".to_string())),
        (Err(e), _) | (_, Err(e)) => Err(LinkError::Refused(e)),
    };
    flash_action(&app, &signed, "Refund", id, result);
    see_other(&forms::safe_back(&input.back))
}

async fn cancel(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<u64>,
    Form(input): Form<ActionInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Pay) {
        return refused;
    }
    let result = app.link.cancel(id).await;
    flash_action(&app, &signed, "Cancellation", id, result);
    see_other(&forms::safe_back(&input.back))
}

/// The reason as the switch keeps it: the operator's name first, since
/// the switch knows only this terminal's key.
fn operator_reason(signed: &Signed, reason: Option<&str>) -> String {
    let operator = signed.chrome().operator;
    let mut text = match reason {
        Some(r) => format!("{operator}: {r}"),
        None => operator.to_string(),
    };
    // The switch keeps 255 bytes of it.
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

async fn mark_scam(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<u64>,
    Form(input): Form<ActionInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Pay) {
        return refused;
    }
    let result = match forms::reason(&input) {
        Ok(reason) => {
            let note = operator_reason(&signed, reason.as_deref());
            app.link.mark_scam(id, Some(&note)).await
        }
        Err(e) => Err(LinkError::Refused(e)),
    };
    flash_action(&app, &signed, "Scam mark", id, result);
    see_other(&forms::safe_back(&input.back))
}

async fn unmark_scam(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<u64>,
    Form(input): Form<ActionInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Pay) {
        return refused;
    }
    let result = match forms::reason(&input) {
        Ok(Some(reason)) => {
            let reason = operator_reason(&signed, Some(&reason));
            app.link.unmark_scam(id, &reason).await
        }
        Ok(None) => Err(LinkError::Refused(
            "say why the scam mark comes off".to_string(),
        )),
        Err(e) => Err(LinkError::Refused(e)),
    };
    flash_action(&app, &signed, "Scam unmark", id, result);
    see_other(&forms::safe_back(&input.back))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; vterm_session=abc"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "vterm"), None);
    }
}
