//! Webhooks: the admins' page (the merchant's endpoint, its secret
//! masked; setting its URL, which shows the new signing secret this once;
//! removing it; the merchant's recent events with their delivery status),
//! and the events of one payment on its page. A Resend button queues an
//! event again, for operators and admins. Everything goes to the switch
//! over internal frames (GetWebhookEndpoint, SetWebhookEndpoint,
//! RemoveWebhookEndpoint, ListWebhookEvents, ResendWebhookEvent); the new
//! secret is only ever in the one response page, never in a log, a
//! session or a redirect.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use switch_client::{WebhookEndpoint, WebhookEvent, WebhookStatus};

use crate::calendar::format_utc;
use crate::html::esc;
use crate::pages::{csrf_field, layout, Chrome};
use crate::role::Action;
use crate::session::Flash;
use crate::web::{forbidden, page, see_other, App, Signed};

/// Most events shown on the page (one page of the switch's list); older
/// ones are a link away (`?cursor=`).
const EVENTS_SHOWN_MAX: u16 = 50;

const _: () = assert!(EVENTS_SHOWN_MAX as usize <= switch_client::WEBHOOK_EVENTS_MAX);

/// The forms of this module.
#[derive(Deserialize)]
pub(crate) struct WebhookInput {
    /// The session's token.
    #[serde(default)]
    csrf: String,
    /// The new endpoint URL.
    #[serde(default)]
    url: String,
    /// Where to go back to after a resend (`/webhooks` or a payment's page).
    #[serde(default)]
    back: String,
}

/// The page's query: which events (`status`: pending, delivered or
/// failed; `cursor`: from where, as the switch's previous page gave it).
#[derive(Deserialize, Default)]
pub(crate) struct EventsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
}

/// Which events a page shows.
#[derive(Default)]
struct Shown {
    status: Option<WebhookStatus>,
    cursor: Option<u64>,
}

impl EventsQuery {
    fn parse(&self) -> Result<Shown, String> {
        let status = match self.status.trim() {
            "" => None,
            label => Some(
                WebhookStatus::from_label(label)
                    .ok_or("the status filter is pending, delivered or failed")?,
            ),
        };
        let cursor = match self.cursor.trim() {
            "" => None,
            c => Some(c.parse::<u64>().map_err(|_| "the cursor is a number")?),
        };
        Ok(Shown { status, cursor })
    }
}

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/webhooks", get(list))
        .route("/webhooks/endpoint", post(set))
        .route("/webhooks/endpoint/remove", post(remove))
        .route("/webhooks/events/{id}/resend", post(resend))
}

async fn list(
    State(app): State<Arc<App>>,
    signed: Signed,
    Query(query): Query<EventsQuery>,
) -> Response {
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    let flash = app.sessions.take_flash(&signed.id);
    let (notice, mut error) = match flash {
        Some(Flash::Notice(t)) => (Some(t), None),
        Some(Flash::Error(t)) => (None, Some(t)),
        _ => (None, None),
    };
    let shown = query.parse().unwrap_or_else(|e| {
        error = Some(format!("Events: {e}."));
        Shown::default()
    });
    let body = section(&app, signed.chrome(), &shown, None, notice, error).await;
    page(StatusCode::OK, body)
}

/// The page: what the switch says now, and `secret` when it was just set.
async fn section(
    app: &App,
    chrome: Chrome<'_>,
    shown: &Shown,
    secret: Option<&str>,
    notice: Option<String>,
    error: Option<String>,
) -> String {
    let endpoint = app
        .link
        .webhook_endpoint()
        .await
        .map_err(|e| format!("The webhook endpoint could not be read: {e}"));
    let events = app
        .link
        .webhook_events(shown.status, shown.cursor, EVENTS_SHOWN_MAX)
        .await
        .map_err(|e| format!("The webhook events could not be read: {e}"));
    webhooks_page(chrome, &endpoint, shown, &events, secret, notice, error)
}

async fn set(
    State(app): State<Arc<App>>,
    signed: Signed,
    Form(input): Form<WebhookInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    let url = input.url.trim();
    let result = app.link.set_webhook_endpoint(url).await;
    tracing::info!(operator = ?signed.view.operator, action = "set webhook endpoint", "webhook change");
    let (secret, notice, error) = match &result {
        Ok(reply) if reply.approved() => match &reply.webhook_secret {
            Some(s) => (
                Some(s.expose().to_owned()),
                Some("Webhook endpoint: set.".to_string()),
                None,
            ),
            None => (None, None, Some("The switch sent no secret.".to_string())),
        },
        Ok(reply) => (
            None,
            None,
            Some(format!(
                "Webhook endpoint refused ({}): {}",
                reply.code(),
                reply.message.as_deref().unwrap_or("no reason given")
            )),
        ),
        Err(e) => (None, None, Some(format!("Webhook endpoint failed: {e}"))),
    };
    // Rendered here, not redirected: the secret is in this page only.
    let body = section(
        &app,
        signed.chrome(),
        &Shown::default(),
        secret.as_deref(),
        notice,
        error,
    )
    .await;
    page(StatusCode::OK, body)
}

async fn remove(
    State(app): State<Arc<App>>,
    signed: Signed,
    Form(input): Form<WebhookInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Manage) {
        return refused;
    }
    let flash = match app.link.remove_webhook_endpoint().await {
        Ok(reply) if reply.approved() => Flash::Notice("Webhook endpoint: removed.".to_string()),
        Ok(reply) => Flash::Error(format!(
            "Removing the webhook endpoint refused ({}): {}",
            reply.code(),
            reply.message.as_deref().unwrap_or("no reason given")
        )),
        Err(e) => Flash::Error(format!("Removing the webhook endpoint failed: {e}")),
    };
    tracing::info!(operator = ?signed.view.operator, action = "remove webhook endpoint", "webhook change");
    app.sessions.set_flash(&signed.id, flash);
    see_other("/webhooks")
}

async fn resend(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<String>,
    Form(input): Form<WebhookInput>,
) -> Response {
    if !signed.csrf_ok(&input.csrf) {
        return forbidden();
    }
    if let Some(refused) = signed.refused(Action::Pay) {
        return refused;
    }
    let flash = match app.link.resend_webhook_event(&id).await {
        Ok(reply) if reply.approved() => Flash::Notice(format!("Event {id}: queued again.")),
        Ok(reply) => Flash::Error(format!(
            "Resending event {id} refused ({}): {}",
            reply.code(),
            reply.message.as_deref().unwrap_or("no reason given")
        )),
        Err(e) => Flash::Error(format!("Resending event {id} failed: {e}")),
    };
    tracing::info!(operator = ?signed.view.operator, action = "resend webhook event", event = %id, "webhook change");
    app.sessions.set_flash(&signed.id, flash);
    // Only back to this site's own pages.
    let back = input.back.as_str();
    let safe = back == "/webhooks"
        || back
            .strip_prefix("/payments/")
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    see_other(if safe { back } else { "/webhooks" })
}

fn status_name(s: WebhookStatus) -> &'static str {
    s.label()
}

/// The events as a table, with a Resend button each when `csrf` is given
/// (the role may act), going back to `back`.
fn events_table(csrf: &str, events: &[WebhookEvent], back: &str, id: &str) -> String {
    let rows: String = events
        .iter()
        .map(|e| {
            let eid = esc(&e.id);
            let button = if csrf.is_empty() {
                String::new()
            } else {
                format!(
                    r#"<form method="post" action="/webhooks/events/{eid}/resend" class="inline">{}<input type="hidden" name="back" value="{}"><button type="submit" id="resend-{eid}">Resend</button></form>"#,
                    csrf_field(csrf),
                    esc(back)
                )
            };
            format!(
                r#"<tr data-event="{eid}" data-status="{status}"><td>{eid}</td><td>{kind}</td><td><a href="/payments/{pid}">{pid}</a></td><td>{status}</td><td class="num">{attempts}</td><td>{code}</td><td>{last}</td><td>{button}</td></tr>"#,
                kind = esc(&e.kind),
                pid = e.payment_id,
                status = status_name(e.status),
                attempts = e.attempts,
                code = e.last_status_code.map(|c| c.to_string()).unwrap_or_default(),
                last = e.last_attempt_unix_s.map(format_utc).unwrap_or_default(),
            )
        })
        .collect();
    format!(
        r#"<table id="{id}"><thead><tr><th>Event</th><th>Type</th><th>Payment</th><th>Status</th><th>Attempts</th><th>Last HTTP status</th><th>Last attempt (UTC)</th><th></th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

/// A payment's events on its page (nothing when it has none).
pub(crate) fn payment_events_html(csrf: &str, events: &[WebhookEvent], back: &str) -> String {
    if events.is_empty() {
        return String::new();
    }
    format!(
        "<h3>Webhooks</h3>{}",
        events_table(csrf, events, back, "payment-webhooks")
    )
}

fn endpoint_html(csrf: &str, endpoint: &Result<Option<WebhookEndpoint>, String>) -> String {
    let current = match endpoint {
        Ok(Some(e)) => format!(
            r#"<p id="webhook-endpoint" data-url="{url}" data-secret="{masked}">Events are posted to <code>{url}</code>, signed with the secret <code>{masked}</code> (set {created} UTC).</p>
<form method="post" action="/webhooks/endpoint/remove" class="inline" id="remove-endpoint">{}<button type="submit" id="remove-endpoint-submit">Remove the endpoint</button></form>"#,
            csrf_field(csrf),
            url = esc(&e.url),
            masked = esc(&e.secret_masked),
            created = format_utc(e.created_unix_s),
        ),
        Ok(None) => {
            r#"<p id="webhook-endpoint" data-url="">No endpoint: no events are posted.</p>"#
                .to_string()
        }
        Err(e) => format!(r#"<p class="error" id="endpoint-error">{}</p>"#, esc(e)),
    };
    format!(
        r#"{current}
<form method="post" action="/webhooks/endpoint" autocomplete="off" id="set-endpoint">{}
<label>Endpoint URL (http or https) <input name="url" id="endpoint-url" type="url" maxlength="2048" required></label>
<button type="submit" id="set-endpoint-submit">Set (a new secret replaces the old one)</button></form>"#,
        csrf_field(csrf)
    )
}

/// The page.
fn webhooks_page(
    chrome: Chrome<'_>,
    endpoint: &Result<Option<WebhookEndpoint>, String>,
    shown: &Shown,
    events: &Result<(Vec<WebhookEvent>, Option<u64>), String>,
    secret: Option<&str>,
    notice: Option<String>,
    error: Option<String>,
) -> String {
    let notice = notice
        .map(|n| format!(r#"<p class="notice" id="notice">{}</p>"#, esc(&n)))
        .unwrap_or_default();
    let error = error
        .map(|e| format!(r#"<p class="error" id="error">{}</p>"#, esc(&e)))
        .unwrap_or_default();
    let secret = secret
        .map(|s| {
            format!(
                r#"<div class="warning" id="new-secret-box"><p><strong>Copy this signing secret now: it is shown this once.</strong> Your receiver checks each event's <code>Switch-Signature</code> with it.</p><p><code id="new-secret">{}</code></p></div>"#,
                esc(s)
            )
        })
        .unwrap_or_default();
    let status_q = shown.status.map(|s| s.label()).unwrap_or_default();
    let filters: String = [
        ("", "All"),
        ("pending", "Pending"),
        ("delivered", "Delivered"),
        ("failed", "Failed"),
    ]
    .into_iter()
    .map(|(label, name)| {
        if label == status_q {
            format!(r#"<strong id="events-filter-current">{name}</strong>"#)
        } else {
            let href = if label.is_empty() {
                "/webhooks".to_string()
            } else {
                format!("/webhooks?status={label}")
            };
            format!(r#"<a href="{href}" id="events-filter-{name}">{name}</a>"#)
        }
    })
    .collect::<Vec<_>>()
    .join(" · ");
    let events = match events {
        Ok((events, next)) => {
            let older = next
                .map(|c| {
                    let status = if status_q.is_empty() { String::new() } else { format!("status={status_q}&amp;") };
                    format!(r#"<p><a href="/webhooks?{status}cursor={c}" id="events-older">Older events</a></p>"#)
                })
                .unwrap_or_default();
            let newest = if shown.cursor.is_some() {
                let href = if status_q.is_empty() {
                    "/webhooks".to_string()
                } else {
                    format!("/webhooks?status={status_q}")
                };
                format!(r#"<p><a href="{href}" id="events-newest">Newest events</a></p>"#)
            } else {
                String::new()
            };
            format!(
                "{newest}{}{older}",
                events_table(chrome.csrf, events, "/webhooks", "webhook-events")
            )
        }
        Err(e) => format!(r#"<p class="error" id="events-error">{}</p>"#, esc(e)),
    };
    let body = format!(
        r#"<section class="card"><h1>Webhooks</h1>{notice}{error}{secret}
<p>The switch posts what happens to the merchant's payments to its endpoint, signed, and retries for 3 days.</p>
{}
<h2>Events</h2><p class="filters">{filters}</p>{events}</section>"#,
        endpoint_html(chrome.csrf, endpoint)
    );
    layout("Webhooks", Some(chrome), &body)
}
