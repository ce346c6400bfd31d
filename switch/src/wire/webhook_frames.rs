//! Webhooks over internal frames (`ListWebhookEvents`,
//! `ResendWebhookEvent`, `GetWebhookEndpoint`, `SetWebhookEndpoint`,
//! `RemoveWebhookEndpoint`), a payment's events in `GetPayment`, and the
//! `ListPayments` filter by delivery status: the same queue and endpoint
//! file as `switch webhooks`, scoped to the merchants the API key acts
//! for. An event of a merchant the key may not act for is answered `25`,
//! exactly like a missing one.
//!
//! Reads and changes run on the connection's task (SQLite, and the
//! endpoint file written and fsynced): back-office requests are rare, and
//! a change must be durable before the answer says "done". The running
//! deliveries see a resent event at their next look at the queue and a
//! changed endpoint within a second, as with the commands.

use std::path::Path;
use std::sync::Mutex;

use codecs::internal::{ListWebhookEvents, Request, WebhookEndpointChange, WebhookStatus};
use engine::Code;

use crate::clock::Clock;
use crate::webhooks::{ClusterEvents, EndpointAdmin, EventRows, Queue, Row};

/// Page size of an event list without `limit`.
const WEBHOOK_EVENTS_DEFAULT: usize = 20;
/// Most payment ids a `ListPayments` filtered by delivery status reads
/// from the queue per request (the largest first, below the cursor). A
/// page may hold fewer rows than asked when the other filters drop some;
/// it then carries a cursor to go on from.
pub(crate) const WEBHOOK_FILTER_IDS_MAX: usize = 1_000;

const _: () = assert!(WEBHOOK_EVENTS_DEFAULT <= codecs::internal::WEBHOOK_EVENTS_MAX);

/// The queue and endpoint file of the running switch, for frames.
pub(crate) struct WebhookAccess {
    /// `<data_dir>/webhooks.sqlite`, opened at first use; in cluster mode
    /// PostgreSQL's events instead.
    queue: Mutex<Option<Box<dyn EventRows>>>,
    /// The data directory.
    data_dir: std::path::PathBuf,
    /// `<data_dir>/webhooks.json`.
    endpoints: EndpointAdmin,
    /// The switch's clock (resend times, endpoint creation).
    clock: Clock,
}

/// A merchant's endpoint as a response carries it: URL, masked secret,
/// created (Unix seconds).
pub(crate) struct EndpointView {
    pub(crate) url: String,
    pub(crate) secret_masked: String,
    pub(crate) created_unix_s: u64,
}

/// What a webhook request is answered.
pub(crate) struct WebhookAnswer {
    /// Result code.
    pub(crate) code: Code,
    /// For people.
    pub(crate) message: String,
    /// Events with their delivery status.
    pub(crate) events: Vec<Row>,
    /// Cursor of the next page (an event's journal sequence).
    pub(crate) next_cursor: Option<u64>,
    /// The merchant's endpoint.
    pub(crate) endpoint: Option<EndpointView>,
    /// Its new signing secret (set only). Never logged.
    pub(crate) secret: Option<String>,
}

impl WebhookAnswer {
    fn refusal(code: Code, message: impl Into<String>) -> WebhookAnswer {
        WebhookAnswer {
            code,
            message: message.into(),
            events: Vec::new(),
            next_cursor: None,
            endpoint: None,
            secret: None,
        }
    }

    fn ok() -> WebhookAnswer {
        WebhookAnswer::refusal(Code::APPROVED, "ok")
    }
}

/// The wire code of a queue status.
pub(crate) fn status_of(label: &str) -> WebhookStatus {
    WebhookStatus::from_label(label).unwrap_or(WebhookStatus::Pending)
}

/// A queue or file error: 96, logged within a budget.
fn failed(what: &'static str, e: &anyhow::Error) -> WebhookAnswer {
    crate::ratelog::warn_limited!(
        "webhook_frame",
        what,
        error = format!("{e:#}"),
        "webhook request over internal frames failed"
    );
    WebhookAnswer::refusal(Code::SYSTEM_MALFUNCTION, "webhook queue unavailable")
}

impl WebhookAccess {
    /// The queue and endpoints of the switch whose data directory is
    /// `data_dir`.
    pub(crate) fn new(data_dir: &Path, clock: Clock) -> WebhookAccess {
        WebhookAccess {
            queue: Mutex::new(None),
            data_dir: data_dir.to_owned(),
            endpoints: EndpointAdmin::new(data_dir),
            clock,
        }
    }

    /// Cluster mode: the endpoints and the events are the cluster's, in
    /// PostgreSQL at `url`.
    pub(crate) fn cluster(mut self, endpoints: EndpointAdmin, url: &str) -> WebhookAccess {
        self.endpoints = endpoints;
        self.queue = Mutex::new(Some(Box::new(ClusterEvents::new(url))));
        self
    }

    /// Runs `f` on the queue, opening it first if need be (off the async
    /// runtime: PostgreSQL's client blocks).
    fn with_queue<R: Send>(
        &self,
        f: impl FnOnce(&mut dyn EventRows) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.is_none() {
            *q = Some(Box::new(Queue::open(&self.data_dir)?));
        }
        match q.as_mut() {
            Some(queue) => crate::blocking::off_runtime(|| f(&mut **queue)),
            None => anyhow::bail!("webhook queue not open"),
        }
    }

    /// Up to `WEBHOOK_EVENTS_MAX` events of payment `id` (already checked
    /// to be the key's), in the order of its changes; none on error
    /// (logged): the payment's details are answered all the same.
    pub(crate) fn payment_events(&self, id: u64) -> Vec<Row> {
        self.with_queue(|q| q.payment_rows(id, codecs::internal::WEBHOOK_EVENTS_MAX))
            .unwrap_or_else(|e| {
                crate::ratelog::warn_limited!(
                    "webhook_frame",
                    error = format!("{e:#}"),
                    "a payment's webhook events could not be read"
                );
                Vec::new()
            })
    }

    /// Ids of the key's merchants' payments with an event in `status`,
    /// below `cursor`, largest first, at most [`WEBHOOK_FILTER_IDS_MAX`].
    pub(crate) fn payment_ids(
        &self,
        mids: &[String],
        status: WebhookStatus,
        cursor: Option<u64>,
    ) -> anyhow::Result<Vec<u64>> {
        self.with_queue(|q| q.payment_ids(mids, status.label(), cursor, WEBHOOK_FILTER_IDS_MAX))
    }

    /// Answers one webhook request of a key acting for `mids`.
    pub(crate) fn answer(&self, mids: &[String], request: &Request<'_>) -> WebhookAnswer {
        match request {
            Request::ListWebhookEvents(l) => self.list(mids, l),
            Request::ResendWebhookEvent { event_id } => self.resend(mids, event_id),
            Request::GetWebhookEndpoint(c) => self.get(mids, c),
            Request::SetWebhookEndpoint(c) => self.set(mids, c),
            Request::RemoveWebhookEndpoint(c) => self.remove(mids, c),
            _ => WebhookAnswer::refusal(Code::INVALID_TRANSACTION, "not a webhook request"),
        }
    }

    fn list(&self, mids: &[String], l: &ListWebhookEvents<'_>) -> WebhookAnswer {
        let mine: Vec<String> = match l.merchant_id {
            Some(mid) if mids.iter().any(|m| m == mid) => vec![mid.to_owned()],
            Some(_) => {
                return WebhookAnswer::refusal(
                    Code::NOT_PERMITTED_TERMINAL,
                    "merchant not permitted for this key",
                )
            }
            None => mids.to_vec(),
        };
        let limit = l.limit.map_or(WEBHOOK_EVENTS_DEFAULT, usize::from);
        let status = l.status.map(WebhookStatus::label);
        // One more than the page: whether there is a next one.
        let page =
            self.with_queue(|q| q.merchant_rows(&mine, l.payment_id, status, l.cursor, limit + 1));
        let mut rows = match page {
            Ok(rows) => rows,
            Err(e) => return failed("list", &e),
        };
        let more = rows.len() > limit;
        rows.truncate(limit);
        WebhookAnswer {
            next_cursor: rows.last().filter(|_| more).map(|(seq, _)| *seq),
            events: rows.into_iter().map(|(_, r)| r).collect(),
            ..WebhookAnswer::ok()
        }
    }

    fn resend(&self, mids: &[String], id: &str) -> WebhookAnswer {
        let now_ms = self.clock.now_ms();
        let done = self.with_queue(|q| {
            match q.event_row(id)? {
                Some(r) if mids.contains(&r.merchant) => {}
                _ => return Ok(None),
            }
            q.resend(id, now_ms)?;
            q.event_row(id)
        });
        match done {
            Ok(Some(row)) => {
                tracing::info!(event = id, merchant = %row.merchant, "webhook event queued again over internal frames");
                WebhookAnswer {
                    events: vec![row],
                    ..WebhookAnswer::ok()
                }
            }
            Ok(None) => WebhookAnswer::refusal(Code::UNABLE_TO_LOCATE, "no such event"),
            Err(e) => failed("resend", &e),
        }
    }

    /// The merchant a request names, or the key's only one.
    fn merchant<'m>(
        mids: &'m [String],
        c: &WebhookEndpointChange<'m>,
    ) -> Result<&'m str, (Code, &'static str)> {
        match (c.merchant_id, mids) {
            (Some(mid), _) if mids.iter().any(|m| m == mid) => Ok(mid),
            (Some(_), _) => Err((
                Code::NOT_PERMITTED_TERMINAL,
                "merchant not permitted for this key",
            )),
            (None, [only]) => Ok(only.as_str()),
            (None, _) => Err((
                Code::FORMAT_ERROR,
                "merchant_id: required for a key acting for several merchants",
            )),
        }
    }

    fn endpoint_of(&self, mid: &str) -> anyhow::Result<Option<EndpointView>> {
        Ok(self
            .endpoints
            .list()?
            .into_iter()
            .find(|e| e.merchant == mid)
            .map(|e| EndpointView {
                secret_masked: e.secret_masked(),
                url: e.url,
                created_unix_s: e.created_unix_s,
            }))
    }

    fn get(&self, mids: &[String], c: &WebhookEndpointChange<'_>) -> WebhookAnswer {
        let mid = match Self::merchant(mids, c) {
            Ok(mid) => mid,
            Err((code, why)) => return WebhookAnswer::refusal(code, why),
        };
        match self.endpoint_of(mid) {
            Ok(Some(endpoint)) => WebhookAnswer {
                endpoint: Some(endpoint),
                ..WebhookAnswer::ok()
            },
            Ok(None) => WebhookAnswer::refusal(Code::APPROVED, "no webhook endpoint"),
            Err(e) => failed("get_endpoint", &e),
        }
    }

    fn set(&self, mids: &[String], c: &WebhookEndpointChange<'_>) -> WebhookAnswer {
        let mid = match Self::merchant(mids, c) {
            Ok(mid) => mid,
            Err((code, why)) => return WebhookAnswer::refusal(code, why),
        };
        let url = c.url.unwrap_or_default();
        if let Err(e) = crate::webhooks::check_url(url) {
            let mut message = e.to_string().replace("--url: ", "url: ");
            let mut end = message.len().min(255);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            return WebhookAnswer::refusal(Code::FORMAT_ERROR, message);
        }
        let secret = match self.endpoints.set(mid, url, self.clock.now_s()) {
            Ok(secret) => secret,
            Err(e) => return failed("set_endpoint", &e),
        };
        tracing::info!(merchant = mid, "webhook endpoint set over internal frames");
        match self.endpoint_of(mid) {
            Ok(endpoint) => WebhookAnswer {
                endpoint,
                secret: Some(secret),
                ..WebhookAnswer::ok()
            },
            Err(e) => failed("set_endpoint", &e),
        }
    }

    fn remove(&self, mids: &[String], c: &WebhookEndpointChange<'_>) -> WebhookAnswer {
        let mid = match Self::merchant(mids, c) {
            Ok(mid) => mid,
            Err((code, why)) => return WebhookAnswer::refusal(code, why),
        };
        match self.endpoint_of(mid) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return WebhookAnswer::refusal(Code::UNABLE_TO_LOCATE, "no webhook endpoint")
            }
            Err(e) => return failed("remove_endpoint", &e),
        }
        match self.endpoints.remove(mid) {
            Ok(()) => {
                tracing::info!(
                    merchant = mid,
                    "webhook endpoint removed over internal frames"
                );
                WebhookAnswer::ok()
            }
            Err(e) => failed("remove_endpoint", &e),
        }
    }
}
