//! The internal-frame edge: connections of the MO/TO virtual terminal and
//! merchants' back offices (`docs/internal-frames.md`,
//! `docs/internal-api.md`).
//!
//! A connection logs in first (Authenticate, checked by [`KeyStore`]);
//! anything else first is answered `58` and the connection closed. Then
//! requests are pipelined: each is checked against the merchants the key
//! may act for *now* (the key file is re-checked on every request, so a
//! revocation takes effect at once), mapped to the engine, and answered
//! with one Response carrying its request id. Answers whose change must be
//! durable are held until the journal's durable sequence reaches them, as
//! on the ISO 8583 listener. A payment of a merchant the key may not act
//! for is answered `25`, exactly like a missing one.
//!
//! A frame whose header is broken closes the connection (log line and
//! `switch_codec_errors_total{kind="internal_framing"}`); a well-delimited
//! frame whose body is malformed is answered `30`
//! (`kind="internal_parse"`). The CVV2 is checked for format and dropped:
//! it is never stored, journaled or logged.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::BytesMut;
use codecs::internal::{
    Currencies, FrameBytes, HistoryEntry, InternalCodec, ListPayments, MandateRow,
    MerchantSettings, MotoRequest, PaymentRow, Repeated, Request, Response, ResultCode, Setting,
    TerminalRow, TerminalState, WebhookEventRow, WebhookSecret,
};
use tokio_util::codec::Decoder;

use engine::{
    CartItem, Channel, Code, Command, Extras, LineRefund, ListFilter, MerchantRef, Op, OriginalRef,
    Payment, Query, QueryReply, Request as EngineRequest, Status,
};

use crate::keys::{KeyStore, Refusal};
use crate::net::{Answered, End, Wire};
use crate::node::Node;
use crate::ratelog::warn_limited;

pub(crate) mod cluster;

/// Page size of a list request without `limit`.
const LIST_ROWS_DEFAULT: usize = 20;

// The default page fits the largest page the format carries.
const _: () = assert!(LIST_ROWS_DEFAULT <= codecs::internal::LIST_ROWS_MAX);
// A merchant reference (64) or description (255 bytes on the wire) is
// kept whole with the payment.
const _: () = assert!(255 <= engine::TEXT_BYTES_MAX);
// A request's cart fits what a payment keeps.
const _: () = assert!(codecs::internal::CART_LINES_MAX <= engine::CART_LINES_MAX);

/// What every internal-frame connection shares.
pub(crate) struct FrameShared {
    /// The pipeline.
    pub(crate) node: Arc<Node>,
    /// API keys and mandates.
    pub(crate) keys: Arc<KeyStore>,
    /// Terminals at run time (`ListTerminals`, `AddTerminal`, ...).
    pub(crate) directory: Arc<crate::directory::Admin>,
    /// Webhook events and endpoints (`ListWebhookEvents`, ...).
    pub(crate) webhooks: Arc<super::webhook_frames::WebhookAccess>,
    /// Cluster mode: routes requests to the nodes serving their shards
    /// ([`cluster`]).
    pub(crate) router: Option<Arc<crate::cluster_link::Router>>,
}

/// The internal-frame wire on one connection: its log-in and scope.
pub(crate) struct FrameWire {
    /// Shared pipeline and keys.
    shared: Arc<FrameShared>,
    /// Frame delimiting.
    codec: InternalCodec,
    /// The logged-in client id; `None` until Authenticate succeeds.
    client_id: Option<String>,
    /// MIDs the key may act for, refreshed on every request (reused).
    mids: Vec<String>,
    /// Their merchant indexes (reused).
    scope: Vec<u32>,
    /// Where answers an issuer decides come back to the connection.
    later: Option<crate::net::Later>,
    /// The last frame answered was deferred to an issuer.
    deferred: bool,
}

impl Wire for FrameWire {
    type Frame = FrameBytes;

    const NAME: &'static str = "frame";

    fn next_frame(
        &mut self,
        input: &mut BytesMut,
        peer: IpAddr,
    ) -> Result<Option<FrameBytes>, End> {
        self.codec.decode(input).map_err(|e| {
            warn_limited!("internal_framing", %peer, error = %e, "internal frame: broken header");
            metrics::counter!("switch_codec_errors_total", "kind" => "internal_framing")
                .increment(1);
            End::Protocol("internal_framing_error")
        })
    }

    fn answer(&mut self, frame: FrameBytes, peer: IpAddr, out: &mut BytesMut) -> Answered {
        self.deferred = false;
        let (seq, end) = self.answer_frame(&frame, peer, out);
        Answered {
            seq,
            end,
            deferred: self.deferred && self.later.is_some(),
        }
    }

    fn set_later(&mut self, later: crate::net::Later) {
        self.later = Some(later);
    }

    fn logged_in(&self) -> bool {
        self.client_id.is_some()
    }

    fn answers_rest(&self, end: End) -> bool {
        matches!(end, End::PeerClosed | End::Shutdown | End::Idle)
    }
}

impl FrameWire {
    /// A connection's wire state, before log-in.
    pub(crate) fn new(shared: Arc<FrameShared>) -> Self {
        FrameWire {
            shared,
            codec: InternalCodec::new(),
            client_id: None,
            mids: Vec::new(),
            scope: Vec::new(),
            later: None,
            deferred: false,
        }
    }

    /// Answers one frame into `out`; returns the sequence to wait for and
    /// whether to close the connection afterwards.
    fn answer_frame(
        &mut self,
        frame: &FrameBytes,
        peer: IpAddr,
        out: &mut BytesMut,
    ) -> (u64, Option<End>) {
        let request_id = frame.request_id();
        let view = frame.frame();
        let request = match Request::parse(&view) {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!("switch_codec_errors_total", "kind" => "internal_parse")
                    .increment(1);
                let message = e.to_string();
                let answer = Answer::refusal(Code::FORMAT_ERROR, Cow::Owned(message));
                encode(request_id, &answer, out);
                // Before log-in, nothing but a good Authenticate is answered.
                return (0, self.client_id.is_none().then_some(End::Refused));
            }
        };
        let type_label = view
            .frame_type()
            .map_or("unknown", |t| frame_type_label(t.code()));
        let (answer, end) = match (&self.client_id, request) {
            (None, Request::Authenticate(a)) => self.log_in(a.client_id, a.secret.expose(), peer),
            (None, _) => (
                Answer::refusal(Code::NOT_PERMITTED_TERMINAL, "authenticate first".into()),
                Some(End::Refused),
            ),
            (Some(_), Request::Authenticate(_)) => (
                Answer::refusal(Code::INVALID_TRANSACTION, "already authenticated".into()),
                None,
            ),
            (Some(_), request) => match self.shared.router.clone() {
                None => self.act(&request, peer),
                Some(router) => match self.act_cluster(&router, frame, &request, peer) {
                    Acted::Answer(answer, end) => (*answer, end),
                    Acted::Framed(answer, seq) => {
                        out.extend_from_slice(&answer);
                        return (seq, None);
                    }
                    Acted::Later => {
                        self.deferred = true;
                        return (0, None);
                    }
                },
            },
        };
        if let Some(d) = answer.deferred {
            self.defer(frame, d);
            return (0, None);
        }
        metrics::counter!("switch_frame_requests_total", "type" => type_label, "code" => answer.code.as_str())
            .increment(1);
        if self.client_id.is_some() {
            record_decision(&self.shared.node, &request, &answer);
        }
        encode(request_id, &answer, out);
        (answer.seq, end)
    }

    /// Finishes a MO/TO the engine routed to an issuer on a task of its
    /// own; its answer comes back through the connection's channel.
    fn defer(&mut self, frame: &FrameBytes, d: Deferral) {
        self.deferred = true;
        let Some(later) = self.later.clone() else {
            // No way back to the connection (never so once it runs): the
            // forward ends unsent rather than waiting for ever.
            self.shared.node.apply(Command::Upstream {
                forward: d.forward.id,
                outcome: engine::upstream::Outcome::NotSent,
            });
            return;
        };
        let node = self.shared.node.clone();
        let frame = frame.clone();
        tokio::spawn(async move {
            let request_id = frame.request_id();
            let view = frame.frame();
            let (sale, m) = match Request::parse(&view) {
                Ok(Request::AuthorizeMoto(m)) => (true, m),
                Ok(Request::PreauthorizeMoto(m)) => (false, m),
                _ => {
                    let _ = later.send((Vec::new(), 0));
                    return;
                }
            };
            let terminal = terminal_bytes(m.terminal_id);
            let expiry = m.expiry;
            let yymm = [
                b'0' + expiry.year() / 10 % 10,
                b'0' + expiry.year() % 10,
                b'0' + expiry.month() / 10 % 10,
                b'0' + expiry.month() % 10,
            ];
            let reply = crate::forwarding::forward_built(
                &node,
                d.forward,
                d.record_seq,
                Some(terminal),
                |wire, buf| {
                    crate::forwarding::moto_request(
                        sale,
                        m.pan.expose().as_bytes(),
                        yymm,
                        m.amount_minor,
                        m.currency,
                        terminal,
                        d.merchant.id,
                        d.forward,
                        wire,
                        buf,
                    )
                    .map_err(|_| ())
                },
            )
            .await;
            let answer = moto_answer(&node, d.merchant.index, &reply);
            let label = if sale {
                "authorize_moto"
            } else {
                "preauthorize_moto"
            };
            metrics::counter!("switch_frame_requests_total", "type" => label, "code" => answer.code.as_str())
                .increment(1);
            if let Ok(request) = Request::parse(&view) {
                record_decision(&node, &request, &answer);
            }
            let mut out = BytesMut::new();
            encode(request_id, &answer, &mut out);
            let _ = later.send((out.to_vec(), answer.seq));
        });
    }

    fn log_in(&mut self, client_id: &str, secret: &[u8], peer: IpAddr) -> (Answer, Option<End>) {
        let now_ms = self.shared.node.clock.now_ms();
        match self
            .shared
            .keys
            .authenticate(client_id, secret, peer, now_ms)
        {
            Ok(()) => {
                tracing::debug!(client_id, peer = %peer, "internal-frame log-in");
                self.client_id = Some(client_id.to_owned());
                (
                    Answer::refusal(Code::APPROVED, "authenticated".into()),
                    None,
                )
            }
            Err(refusal) => {
                let message = match refusal {
                    Refusal::LockedOut => "too many failed log-ins: retry later",
                    _ => "authentication failed",
                };
                (
                    Answer::refusal(Code::NOT_PERMITTED_TERMINAL, message.into()),
                    Some(End::Refused),
                )
            }
        }
    }

    /// Refreshes the key's scope for `request`: the merchants it may act
    /// for in the mandate scope the request needs. The refusal (and the
    /// connection's end) when the key is no longer in force.
    fn refresh_scope(
        &mut self,
        request: &Request<'_>,
        peer: IpAddr,
    ) -> Result<(), Box<(Answer, Option<End>)>> {
        let client_id = self.client_id.as_deref().unwrap_or_default();
        let needs = mandate_scope(request);
        if !self
            .shared
            .keys
            .merchants_for(client_id, needs, &mut self.mids)
        {
            warn_limited!("revoked_in_session", client_id, peer = %peer, "internal-frame key no longer in force");
            metrics::counter!("switch_auth_failures_total", "reason" => "revoked_in_session")
                .increment(1);
            let answer = Answer::refusal(Code::NOT_PERMITTED_TERMINAL, "key revoked".into());
            return Err(Box::new((answer, Some(End::Refused))));
        }
        let node = &self.shared.node;
        self.scope.clear();
        self.scope.extend(self.mids.iter().filter_map(|mid| {
            match node.query(Query::Merchant(mid.as_bytes())) {
                QueryReply::Merchant(m) => m.map(|m| m.index),
                _ => None,
            }
        }));
        Ok(())
    }

    /// A request of a logged-in key in cluster mode ([`cluster`]):
    /// answered here from what needs no payment state, refused when it
    /// would change this node's files only, or applied by the node serving
    /// its shard: here at once when that is this node and one shard is
    /// asked, else on a task whose answer comes through the connection's
    /// channel.
    fn act_cluster(
        &mut self,
        router: &Arc<crate::cluster_link::Router>,
        frame: &FrameBytes,
        request: &Request<'_>,
        peer: IpAddr,
    ) -> Acted {
        if matches!(request, Request::ListMandates) {
            let (answer, end) = self.act(request, peer);
            return Acted::Answer(Box::new(answer), end);
        }
        if let Err(refused) = self.refresh_scope(request, peer) {
            let (answer, end) = *refused;
            return Acted::Answer(Box::new(answer), end);
        }
        let node = &self.shared.node;
        let asked = match cluster::route(node, router, request, &self.scope) {
            cluster::Route::Entry => {
                let (answer, end) = self.act(request, peer);
                return Acted::Answer(Box::new(answer), end);
            }
            cluster::Route::Now(answer) => return Acted::Answer(answer, None),
            cluster::Route::Shards(asked) => asked,
        };
        let Some(later) = self.later.clone() else {
            let answer = Answer::refusal(Code::SYSTEM_MALFUNCTION, "system malfunction".into());
            return Acted::Answer(Box::new(answer), Some(End::Protocol("no_later_channel")));
        };
        let client_id = self.client_id.as_deref().unwrap_or_default();
        if let ([shard], None) = (&asked.shards[..], asked.list) {
            match cluster::apply_here(&self.shared, router, *shard, client_id, &self.mids, frame) {
                cluster::Applied::Now(answer, seq) => return Acted::Framed(answer, seq),
                // Its admission held until the card's node answers.
                cluster::Applied::Finishing(finishing) => {
                    let (node, router) = (node.clone(), router.clone());
                    tokio::spawn(async move {
                        let _ = later.send(cluster::finish(&node, &router, finishing).await);
                    });
                    return Acted::Later;
                }
                cluster::Applied::NotServed => {}
            }
        }
        let held = cluster::Held {
            shared: self.shared.clone(),
            router: router.clone(),
            client_id: client_id.to_owned(),
            mids: self.mids.clone(),
            frame: frame.clone(),
        };
        tokio::spawn(async move {
            let answered = match asked.list {
                Some(limit) => Ok((held.merged(&asked.shards, limit).await, 0)),
                None => held.first_known(&asked).await,
            };
            // A change whose outcome nobody can tell ends the connection.
            let _ = later.send(answered.unwrap_or((Vec::new(), crate::net::LATER_END)));
        });
        Acted::Later
    }

    /// A request of a logged-in key: refresh its scope (the merchants it
    /// may act for in the mandate scope the request needs), then run it.
    fn act(&mut self, request: &Request<'_>, peer: IpAddr) -> (Answer, Option<End>) {
        let client_id = self.client_id.as_deref().unwrap_or_default();
        if matches!(request, Request::ListMandates) {
            if let Some(mandates) = self.shared.keys.mandates_of(client_id) {
                let mut answer = Answer::refusal(Code::APPROVED, "approved".into());
                answer.mandates = mandates;
                answer.mandates.truncate(codecs::internal::MANDATE_ROWS_MAX);
                return (answer, None);
            }
        }
        if let Err(refused) = self.refresh_scope(request, peer) {
            return *refused;
        }
        let node = &self.shared.node;
        let client_id = self.client_id.as_deref().unwrap_or_default();
        let answer = match request {
            Request::ListTerminals(_)
            | Request::AddTerminal(_)
            | Request::SetTerminal(_)
            | Request::RemoveTerminal(_) => {
                let directory = &self.shared.directory;
                let t =
                    super::terminal_frames::answer(directory, node, client_id, &self.mids, request);
                Answer {
                    terminals: t.terminals,
                    next_cursor: t.next_cursor,
                    ..Answer::refusal(t.code, t.message.into())
                }
            }
            Request::GetMerchant(m) | Request::SetMerchant(m) => {
                let set = matches!(request, Request::SetMerchant(_));
                let directory = &self.shared.directory;
                let a =
                    super::merchant_frames::answer(directory, node, client_id, &self.mids, m, set);
                Answer {
                    merchant: a.merchant,
                    ..Answer::refusal(a.code, a.message.into())
                }
            }
            Request::ListWebhookEvents(_)
            | Request::ResendWebhookEvent { .. }
            | Request::GetWebhookEndpoint(_)
            | Request::SetWebhookEndpoint(_)
            | Request::RemoveWebhookEndpoint(_) => {
                let w = self.shared.webhooks.answer(&self.mids, request);
                Answer {
                    webhook_events: w.events,
                    webhook_endpoint: w.endpoint,
                    webhook_secret: w.secret,
                    next_cursor: w.next_cursor,
                    ..Answer::refusal(w.code, w.message.into())
                }
            }
            Request::ListPayments(l) if l.webhook_status.is_some() => {
                list_by_webhook_status(node, &self.shared.webhooks, &self.scope, &self.mids, l)
            }
            Request::GetPayment { .. } => {
                let mut answer = run(node, &self.scope, client_id, request);
                if let Some(p) = answer.payment.as_ref().filter(|_| answer.history) {
                    answer.webhook_events = self.shared.webhooks.payment_events(p.id);
                }
                answer
            }
            _ => run(node, &self.scope, client_id, request),
        };
        (answer, None)
    }
}

fn frame_type_label(code: u8) -> &'static str {
    match code {
        0x01 => "authenticate",
        0x02 => "authorize_moto",
        0x03 => "preauthorize_moto",
        0x04 => "capture",
        0x05 => "refund",
        0x06 => "cancel",
        0x07 => "get_payment",
        0x08 => "list_payments",
        0x09 => "mark_scam",
        0x0A => "list_terminals",
        0x0B => "add_terminal",
        0x0C => "set_terminal",
        0x0D => "remove_terminal",
        0x0E => "get_merchant",
        0x0F => "set_merchant",
        0x10 => "unmark_scam",
        0x11 => "list_webhook_events",
        0x12 => "resend_webhook_event",
        0x13 => "get_webhook_endpoint",
        0x15 => "set_webhook_endpoint",
        0x16 => "remove_webhook_endpoint",
        0x14 => "list_mandates",
        _ => "other",
    }
}

/// Counts a payment request's answer in the business metrics
/// (`crate::business`): its operation, the amount it concerned and the
/// currency, from the request or the payment as it now stands.
fn record_decision(node: &Node, request: &Request<'_>, answer: &Answer) {
    let p = answer.payment.as_ref();
    let (op, amount_minor, currency) = match request {
        Request::AuthorizeMoto(m) => (Op::Sale, m.amount_minor, m.currency),
        Request::PreauthorizeMoto(m) => (Op::PreAuth, m.amount_minor, m.currency),
        Request::Capture { amount_minor, .. } => (
            Op::Capture,
            amount_minor.or(p.map(|p| p.captured_minor)).unwrap_or(0),
            p.map_or(0, |p| p.currency),
        ),
        Request::Refund(r) => {
            let lines = r.lines.iter().filter_map(|l| l.total_minor()).sum::<u64>();
            (
                Op::Refund,
                if r.amount_minor > 0 {
                    r.amount_minor
                } else {
                    lines
                },
                p.map_or(0, |p| p.currency),
            )
        }
        Request::Cancel { .. } => (
            Op::Reversal,
            p.map_or(0, |p| p.captured_minor.max(p.authorized_minor)),
            p.map_or(0, |p| p.currency),
        ),
        _ => return,
    };
    let mid = p.and_then(|p| match node.query(Query::MerchantAt(p.merchant)) {
        QueryReply::Merchant(m) => m.map(|m| m.id),
        _ => None,
    });
    crate::business::record(&crate::business::Decision {
        channel: crate::business::Channel::Frames,
        op,
        code: answer.code,
        amount_minor,
        currency,
        merchant: mid.as_ref().map(|m| &m[..]),
    });
}

/// The mandate scope a request needs (bits of
/// [`codecs::internal::scope`]): a provider's key acts, for this request,
/// only for the merchants whose mandates include it. A merchant's own key
/// has every scope.
fn mandate_scope(request: &Request<'_>) -> u8 {
    use codecs::internal::scope;
    match request {
        Request::Refund(_) => scope::REFUNDS,
        Request::GetPayment { .. }
        | Request::ListPayments(_)
        | Request::ListMandates
        | Request::ListTerminals(_)
        | Request::GetMerchant(_)
        | Request::ListWebhookEvents(_)
        | Request::GetWebhookEndpoint(_) => scope::REPORTING,
        Request::Authenticate(_)
        | Request::AuthorizeMoto(_)
        | Request::PreauthorizeMoto(_)
        | Request::Capture { .. }
        | Request::Cancel { .. }
        | Request::MarkScam { .. }
        | Request::UnmarkScam { .. }
        | Request::AddTerminal(_)
        | Request::SetTerminal(_)
        | Request::RemoveTerminal(_)
        | Request::SetMerchant(_)
        | Request::ResendWebhookEvent { .. }
        | Request::SetWebhookEndpoint(_)
        | Request::RemoveWebhookEndpoint(_) => scope::PAYMENTS,
    }
}

/// What to answer, owned until encoded.
struct Answer {
    /// Result code.
    code: Code,
    /// For people.
    message: Option<Cow<'static, str>>,
    /// The payment concerned, as it stands after the request.
    payment: Option<Payment>,
    /// Authorization code on approval.
    auth_code: Option<[u8; 6]>,
    /// Whether to send the payment's history (get payment).
    history: bool,
    /// A list page.
    rows: Vec<Payment>,
    /// Mandates a provider holds: MID, scopes, granted (ListMandates).
    mandates: Vec<(String, u8, u64)>,
    /// Cursor of the next page.
    next_cursor: Option<u64>,
    /// Journal sequence to wait for.
    seq: u64,
    /// A status without the payment (a declined MO/TO).
    status: Option<Status>,
    /// A payment id without the payment (a declined MO/TO).
    payment_id: Option<u64>,
    /// A MO/TO the engine routed to an issuer: answered later (the
    /// forward, the engine's reply, the merchant's index and F42).
    deferred: Option<Deferral>,
    /// Terminals: a list page, or the one changed.
    terminals: Vec<crate::directory::TerminalView>,
    /// A merchant's settings (get or set merchant).
    merchant: Option<crate::directory::MerchantView>,
    /// A MO/TO whose card another node counts (cluster mode): the token
    /// and whether a rule before velocity declined it, for
    /// [`moto_counted`].
    velocity: Option<([u8; 32], bool)>,
    /// Webhook events with their delivery status (a list page, the one
    /// resent, or a payment's).
    webhook_events: Vec<crate::webhooks::Row>,
    /// A merchant's webhook endpoint, secret masked.
    webhook_endpoint: Option<super::webhook_frames::EndpointView>,
    /// Its new signing secret (set endpoint only): sent once, never logged.
    webhook_secret: Option<String>,
}

/// What a request of a logged-in key came to in cluster mode.
enum Acted {
    /// An answer to encode, and whether to close the connection after it.
    Answer(Box<Answer>, Option<End>),
    /// Applied here: the framed answer and the record it waits for.
    Framed(Vec<u8>, u64),
    /// On a task: the answer comes through the connection's channel.
    Later,
}

/// A MO/TO payment waiting for its issuer.
#[derive(Clone, Copy, Debug)]
struct Deferral {
    forward: engine::upstream::ForwardRef,
    record_seq: u64,
    merchant: MerchantRef,
}

impl Answer {
    fn refusal(code: Code, message: Cow<'static, str>) -> Answer {
        Answer {
            code,
            message: Some(message),
            payment: None,
            auth_code: None,
            history: false,
            rows: Vec::new(),
            mandates: Vec::new(),
            next_cursor: None,
            seq: 0,
            status: None,
            payment_id: None,
            deferred: None,
            velocity: None,
            terminals: Vec::new(),
            merchant: None,
            webhook_events: Vec::new(),
            webhook_endpoint: None,
            webhook_secret: None,
        }
    }

    /// The engine's code, with the payment as it now stands.
    fn of(code: Code, payment: Option<Payment>, auth_code: Option<[u8; 6]>, seq: u64) -> Answer {
        Answer {
            payment,
            auth_code: auth_code.filter(|_| code.approved()),
            seq,
            ..Answer::refusal(code, code_message(code).into())
        }
    }
}

/// Runs one request for key `client_id`, which may act for the merchants
/// in `scope`.
fn run(node: &Node, scope: &[u32], client_id: &str, request: &Request<'_>) -> Answer {
    match request {
        Request::AuthorizeMoto(m) => moto(node, scope, m, Op::Sale),
        Request::PreauthorizeMoto(m) => moto(node, scope, m, Op::PreAuth),
        Request::Capture {
            payment_id,
            amount_minor,
            cart,
            not_final,
        } => with_payment(node, scope, *payment_id, |p| {
            let amount = match amount_minor {
                Some(amount) => *amount,
                // "What is left of the hold" only means something on a
                // hold; a cancelled one has none left (and 13 would hide
                // the 12).
                None if p.status != Status::Uncaptured => {
                    return Answer::of(Code::INVALID_TRANSACTION, Some(p.clone()), None, 0)
                }
                None => p.authorized_minor.saturating_sub(p.captured_minor),
            };
            // Capture by an edited cart: its lines go with the capture.
            let edited = (!cart.is_empty()).then(|| Extras {
                cart: cart_items(cart),
                ..Extras::default()
            });
            let capture = Capture {
                cart: edited.as_ref(),
                keep_open: *not_final,
            };
            follow_up_with(node, p, Op::Capture, amount, capture)
        }),
        Request::Refund(r) => with_payment(node, scope, r.payment_id, |p| {
            if r.lines.is_empty() {
                follow_up(node, p, Op::Refund, r.amount_minor)
            } else {
                refund_lines(node, p, &r.lines)
            }
        }),
        Request::Cancel { payment_id } => with_payment(node, scope, *payment_id, |p| {
            follow_up(node, p, Op::Reversal, 0)
        }),
        Request::GetPayment { payment_id } => with_payment(node, scope, *payment_id, |p| {
            // The F38 the authorization was approved with (none for a
            // declined one).
            let auth_code = p
                .result_code()
                .filter(|c| c.approved())
                .map(|_| p.auth_code);
            let mut a = Answer::of(Code::APPROVED, Some(p.clone()), auth_code, 0);
            a.history = true;
            a
        }),
        Request::MarkScam { payment_id, reason } => {
            with_payment(node, scope, *payment_id, |p| {
                // The flag records the rule "manual"; who and why are kept
                // beside it.
                scam_flag(node, p, |fetched| {
                    node.apply(Command::MarkScam {
                        merchant: p.merchant,
                        payment: p.id,
                        reason: "manual",
                        by: client_id,
                        note: *reason,
                        fetched: Some(fetched),
                    })
                })
            })
        }
        Request::UnmarkScam { payment_id, reason } => with_payment(node, scope, *payment_id, |p| {
            scam_flag(node, p, |fetched| {
                node.apply(Command::UnmarkScam {
                    merchant: p.merchant,
                    payment: p.id,
                    by: client_id,
                    reason,
                    fetched: Some(fetched),
                })
            })
        }),
        Request::ListPayments(l) => list(node, scope, l),
        Request::Authenticate(_) => {
            Answer::refusal(Code::INVALID_TRANSACTION, "already authenticated".into())
        }
        // Answered in `act`, which knows the key.
        Request::ListMandates => Answer::refusal(Code::INVALID_TRANSACTION, "no mandates".into()),
        // Answered by `FrameWire::act`, which knows the key.
        Request::ListTerminals(_)
        | Request::AddTerminal(_)
        | Request::SetTerminal(_)
        | Request::RemoveTerminal(_)
        | Request::GetMerchant(_)
        | Request::SetMerchant(_)
        | Request::ListWebhookEvents(_)
        | Request::ResendWebhookEvent { .. }
        | Request::GetWebhookEndpoint(_)
        | Request::SetWebhookEndpoint(_)
        | Request::RemoveWebhookEndpoint(_) => {
            Answer::refusal(Code::INVALID_TRANSACTION, "not here".into())
        }
    }
}

/// Marks payment `p` as scam or takes the mark off (`command`): the
/// payment as it then stands, on approval.
fn scam_flag(
    node: &Node,
    p: &Payment,
    apply: impl Fn(&engine::Fetched) -> engine::Reply,
) -> Answer {
    let reply = node.resolving(apply);
    let payment = reply
        .code
        .approved()
        .then(|| payment(node, p.merchant, p.id))
        .flatten();
    let mut answer = Answer::of(reply.code, payment, None, reply.wait.journal_seq());
    answer.payment_id = reply.payment_id;
    answer
}

/// Payment `id` as it now stands, if it belongs to merchant `m` (from
/// memory, else the archive; `None` when the archive cannot be read).
fn payment(node: &Node, m: u32, id: u64) -> Option<Payment> {
    node.payment(&[m], id).ok().flatten()
}

/// Runs `f` on payment `id` if the key may act for its merchant (from
/// memory, else the archive); else 25, exactly as for a payment that does
/// not exist; 96 when the archive cannot be read.
fn with_payment(node: &Node, scope: &[u32], id: u64, f: impl FnOnce(&Payment) -> Answer) -> Answer {
    match node.payment(scope, id) {
        Ok(Some(p)) => f(&p),
        Ok(None) => Answer::refusal(Code::UNABLE_TO_LOCATE, "no such payment".into()),
        Err(e) => archive_unavailable("get", &e),
    }
}

/// The answer when the archive cannot be read for operation `op` (`get`,
/// `list`): 96, counted and logged within a budget.
fn archive_unavailable(op: &'static str, e: &anyhow::Error) -> Answer {
    ::metrics::counter!("switch_archive_errors_total", "op" => op).increment(1);
    crate::ratelog::warn_limited!(
        "archive_read",
        op,
        error = format!("{e:#}"),
        "archive read failed; answering 96"
    );
    Answer::refusal(Code::SYSTEM_MALFUNCTION, "archive unavailable".into())
}

/// F41 as stored: the id, space-padded to 8.
fn terminal_bytes(id: &str) -> [u8; 8] {
    let mut out = [b' '; 8];
    for (slot, b) in out.iter_mut().zip(id.bytes()) {
        *slot = b;
    }
    out
}

/// The merchant of `terminal`, if the key may act for it.
fn terminal_merchant(node: &Node, scope: &[u32], terminal: [u8; 8]) -> Option<MerchantRef> {
    match node.query(Query::TerminalMerchant(terminal)) {
        QueryReply::Merchant(Some(m)) if scope.contains(&m.index) => Some(m),
        _ => None,
    }
}

/// The order details kept with a MO/TO payment.
fn extras(m: &MotoRequest<'_>) -> Extras {
    Extras {
        merchant_reference: m.merchant_reference.to_owned(),
        description: m.description.unwrap_or_default().to_owned(),
        cart: cart_items(&m.cart),
    }
}

/// Wire cart lines as the engine keeps them (nothing refunded yet).
fn cart_items(lines: &Repeated<'_, codecs::internal::CartLine<'_>>) -> Vec<CartItem> {
    lines
        .iter()
        .map(|l| CartItem {
            item: l.item.to_owned(),
            quantity: l.quantity,
            unit_price_minor: l.unit_price_minor,
            refunded_quantity: 0,
        })
        .collect()
}

/// What a capture frame adds to the capture: an edited cart, and whether
/// the hold stays open (not final).
#[derive(Clone, Copy, Default)]
struct Capture<'a> {
    /// The cart as captured, replacing the payment's.
    cart: Option<&'a Extras>,
    /// A partial capture: the rest of the hold stays open.
    keep_open: bool,
}

/// A MO/TO request past the frame's checks: what the engine request needs.
struct MotoChecked<'a> {
    /// The terminal's merchant, in the key's scope.
    merchant: MerchantRef,
    /// The card number.
    pan: codecs::card::Pan<'a>,
    /// F41 as stored.
    terminal: [u8; 8],
}

/// The frame's checks of MO/TO request `m` for a key acting for `scope`:
/// its CVV2's form (then dropped with the frame), its terminal, its card
/// number; the refusal otherwise.
fn moto_check<'a>(
    node: &Node,
    scope: &[u32],
    m: &MotoRequest<'a>,
) -> Result<MotoChecked<'a>, Box<Answer>> {
    if let Some(cvv2) = m.cvv2 {
        let digits = cvv2.expose();
        if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Box::new(Answer::refusal(
                Code::FORMAT_ERROR,
                "cvv2: 3 or 4 digits".into(),
            )));
        }
    }
    let terminal = terminal_bytes(m.terminal_id);
    let Some(merchant) = terminal_merchant(node, scope, terminal) else {
        return Err(Box::new(Answer::refusal(
            Code::NOT_PERMITTED_TERMINAL,
            "terminal unknown or not permitted for this key".into(),
        )));
    };
    let Some(pan) = codecs::card::Pan::new(m.pan.expose().as_bytes()) else {
        return Err(Box::new(Answer::refusal(
            Code::FORMAT_ERROR,
            "pan: 12 to 19 digits".into(),
        )));
    };
    Ok(MotoChecked {
        merchant,
        pan,
        terminal,
    })
}

/// The engine request of checked MO/TO `m`.
fn moto_request<'a>(
    m: &MotoRequest<'_>,
    op: Op,
    c: &'a MotoChecked<'a>,
    extras: &'a Extras,
) -> EngineRequest<'a> {
    EngineRequest {
        pan: Some(c.pan),
        expiry: Some(codecs::iso8583::datetime::Expiry {
            year: m.expiry.year(),
            month: m.expiry.month(),
        }),
        extras: Some(extras),
        keep_open: false,
        ..base_request(
            op,
            &c.merchant.id,
            c.terminal,
            m.amount_minor,
            m.currency,
            None,
        )
    }
}

/// MO/TO sale or pre-authorization through the same door as ISO 8583. In
/// cluster mode a card counted by another node leaves the answer waiting
/// for its verdict ([`Answer::velocity`], finished by [`moto_counted`]).
fn moto(node: &Node, scope: &[u32], m: &MotoRequest<'_>, op: Op) -> Answer {
    let c = match moto_check(node, scope, m) {
        Ok(c) => c,
        Err(refusal) => return *refusal,
    };
    let extras = extras(m);
    let reply = node.apply_message_here_or_forward(moto_request(m, op, &c, &extras));
    match reply.wait {
        engine::Wait::Upstream(forward) => Answer {
            deferred: Some(Deferral {
                forward,
                record_seq: reply.record_seq,
                merchant: c.merchant,
            }),
            ..Answer::refusal(Code::UNAVAILABLE, "with the issuer".into())
        },
        engine::Wait::Velocity {
            token,
            declined_before,
        } => Answer {
            velocity: Some((token, declined_before)),
            ..Answer::refusal(Code::UNAVAILABLE, "card velocity not counted".into())
        },
        _ => moto_answer(node, c.merchant.index, &reply),
    }
}

/// Finishes MO/TO `m` whose card another node counts (cluster mode): asks
/// that node for the card's verdict (`token`, `declined_before` from the
/// engine's first reply) and applies the request again with it. Not
/// counted in time: 91, and nothing is decided (never approved without
/// its count). Issuers are not asked: a routed authorization stands in or
/// is 91, as [`Node::settle_here`] says.
async fn moto_counted(
    node: &Node,
    router: &crate::cluster_link::Router,
    scope: &[u32],
    m: &MotoRequest<'_>,
    op: Op,
    (token, declined_before): ([u8; 32], bool),
) -> Answer {
    let c = match moto_check(node, scope, m) {
        Ok(c) => c,
        Err(refusal) => return *refusal,
    };
    let extras = extras(m);
    let request = moto_request(m, op, &c, &extras);
    let verdict = match engine::velocity::VelocityAsk::new(&request, token, declined_before) {
        Some(ask) => router.ask_velocity(node, &ask).await,
        None => None,
    };
    let reply = match verdict {
        Some(card) => node.settle_here(node.apply_message_counted(request, card)),
        None => return Answer::refusal(Code::UNAVAILABLE, "card velocity not counted".into()),
    };
    if matches!(reply.wait, engine::Wait::Velocity { .. }) {
        return Answer::refusal(Code::UNAVAILABLE, "card velocity not counted".into());
    }
    moto_answer(node, c.merchant.index, &reply)
}

/// The answer to a MO/TO payment the engine decided (itself or with an
/// issuer).
fn moto_answer(node: &Node, merchant: u32, reply: &engine::Reply) -> Answer {
    if !reply.code.approved() {
        // A declined MO/TO is answered with its status and id (it is made
        // and journaled: the back office can look it up), not the payment.
        let mut answer = Answer::of(reply.code, None, None, reply.wait.journal_seq());
        answer.status = Some(Status::Declined);
        answer.payment_id = reply.payment_id;
        return answer;
    }
    let payment = reply.payment_id.and_then(|id| payment(node, merchant, id));
    Answer::of(
        reply.code,
        payment,
        reply.auth_code,
        reply.wait.journal_seq(),
    )
}

/// An engine request with no card, key or extras.
fn base_request<'a>(
    op: Op,
    mid: &'a [u8; 15],
    terminal: [u8; 8],
    amount_minor: u64,
    currency: u16,
    original: Option<OriginalRef>,
) -> EngineRequest<'a> {
    EngineRequest {
        op,
        key: None,
        repeat: false,
        content_crc: 0,
        merchant_id: mid,
        terminal_id: terminal,
        pan: None,
        expiry: None,
        amount_minor,
        currency,
        original,
        replacement_minor: None,
        channel: Channel::MoTo,
        eci: None,
        rrn: None,
        extras: None,
        keep_open: false,
    }
}

/// The F42 of payment `p`'s merchant.
fn merchant_id(node: &Node, p: &Payment) -> Option<[u8; 15]> {
    match node.query(Query::MerchantAt(p.merchant)) {
        QueryReply::Merchant(m) => m.map(|m| m.id),
        _ => None,
    }
}

/// Capture, refund by amount, or cancel (reversal) of payment `p`.
fn follow_up(node: &Node, p: &Payment, op: Op, amount_minor: u64) -> Answer {
    follow_up_with(node, p, op, amount_minor, Capture::default())
}

/// [`follow_up`], with what a capture frame adds.
fn follow_up_with(
    node: &Node,
    p: &Payment,
    op: Op,
    amount_minor: u64,
    capture: Capture<'_>,
) -> Answer {
    let Some(mid) = merchant_id(node, p) else {
        return Answer::refusal(
            Code::INVALID_MERCHANT,
            code_message(Code::INVALID_MERCHANT).into(),
        );
    };
    let request = EngineRequest {
        extras: capture.cart,
        keep_open: capture.keep_open,
        ..base_request(
            op,
            &mid,
            p.terminal,
            amount_minor,
            p.currency,
            Some(OriginalRef::Payment(p.id)),
        )
    };
    let reply = node.apply_message_here(request);
    Answer::of(
        reply.code,
        payment(node, p.merchant, p.id),
        reply.auth_code,
        reply.wait.journal_seq(),
    )
}

/// Refund of cart lines of payment `p`.
fn refund_lines(
    node: &Node,
    p: &Payment,
    lines: &Repeated<'_, codecs::internal::CartLine<'_>>,
) -> Answer {
    let lines: Vec<LineRefund<'_>> = lines
        .iter()
        .map(|l| LineRefund {
            item: l.item,
            quantity: l.quantity,
            unit_price_minor: l.unit_price_minor,
        })
        .collect();
    let reply = node.resolving(|fetched| {
        node.apply(Command::RefundLines {
            merchant: p.merchant,
            payment: p.id,
            lines: &lines,
            fetched: Some(fetched),
        })
    });
    Answer::of(
        reply.code,
        payment(node, p.merchant, p.id),
        reply.auth_code,
        reply.wait.journal_seq(),
    )
}

/// A checked fixed-length text filter as its bytes.
fn fixed<const N: usize>(s: Option<&str>) -> Option<[u8; N]> {
    s.and_then(|s| s.as_bytes().try_into().ok())
}

/// An event row as the wire carries it.
fn event_row(r: &crate::webhooks::Row) -> WebhookEventRow<'_> {
    let secs = |ms: u64| ms / 1000;
    let pending = r.status == "pending";
    WebhookEventRow {
        payment_id: r.payment_id,
        merchant_id: &r.merchant,
        status: super::webhook_frames::status_of(&r.status),
        attempts: r.attempts,
        last_status_code: r.last_status_code,
        last_attempt_unix_s: r.last_attempt_at_ms.map(secs),
        next_attempt_unix_s: Some(secs(r.next_attempt_at_ms)).filter(|_| pending),
        id: &r.id,
        kind: &r.kind,
    }
}

/// One page of the key's merchants' payments with a webhook event in the
/// status asked, newest first: the queue gives the candidates (at most
/// `WEBHOOK_FILTER_IDS_MAX` below the cursor), each is read and checked
/// against the other filters. A page cut short by that bound carries a
/// cursor to go on from.
fn list_by_webhook_status(
    node: &Node,
    webhooks: &super::webhook_frames::WebhookAccess,
    scope: &[u32],
    mids: &[String],
    l: &ListPayments<'_>,
) -> Answer {
    let Some(status) = l.webhook_status else {
        return list(node, scope, l);
    };
    let ids = match webhooks.payment_ids(mids, status, l.cursor) {
        Ok(ids) => ids,
        Err(e) => {
            warn_limited!(
                "webhook_frame",
                error = format!("{e:#}"),
                "webhook queue read failed; answering 96"
            );
            return Answer::refusal(Code::SYSTEM_MALFUNCTION, "webhook queue unavailable".into());
        }
    };
    let statuses: Vec<Status> = l.statuses().collect();
    let filter = list_filter(l, &statuses);
    let limit = l.limit.map_or(LIST_ROWS_DEFAULT, usize::from);
    let mut rows = Vec::new();
    let mut last = None;
    for &id in &ids {
        if rows.len() == limit {
            break;
        }
        last = Some(id);
        match node.payment(scope, id) {
            Ok(Some(p)) if filter.matches(&p) => rows.push(p),
            Ok(_) => {}
            Err(e) => return archive_unavailable("list", &e),
        }
    }
    let examined_all = last == ids.last().copied();
    let bound_hit = ids.len() >= super::webhook_frames::WEBHOOK_FILTER_IDS_MAX;
    let next_cursor = if !examined_all || bound_hit {
        last
    } else {
        None
    };
    Answer {
        rows,
        next_cursor,
        ..Answer::refusal(Code::APPROVED, "ok".into())
    }
}

/// The engine's filter for a list request.
fn list_filter<'a>(l: &ListPayments<'a>, statuses: &'a [Status]) -> ListFilter<'a> {
    ListFilter {
        statuses,
        scam: l.scam,
        rrn: fixed(l.rrn),
        auth_code: fixed(l.auth_code),
        last4: fixed(l.last4),
        channel: l.channel,
        eci: l.eci,
        code: l.result_code.map(|c| Code(c.bytes())),
        status: l.status,
        from_ms: l.created_from_unix_s.map(|s| s.saturating_mul(1000)),
        // "At or before" that second: before the next one.
        to_ms: l
            .created_to_unix_s
            .map(|s| s.saturating_add(1).saturating_mul(1000)),
        amount_min_minor: l.amount_min_minor,
        amount_max_minor: l.amount_max_minor,
        merchant_reference: l.merchant_reference,
        terminal: l.terminal_id.map(terminal_bytes),
    }
}

/// One page of the key's merchants' payments, newest first.
fn list(node: &Node, scope: &[u32], l: &ListPayments<'_>) -> Answer {
    let statuses: Vec<Status> = l.statuses().collect();
    let filter = list_filter(l, &statuses);
    let limit = l.limit.map_or(LIST_ROWS_DEFAULT, usize::from);
    let (rows, more) = match node.list(scope, filter, l.cursor, limit) {
        Ok(page) => page,
        Err(e) => return archive_unavailable("list", &e),
    };
    let next_cursor = rows.last().filter(|_| more).map(|p| p.id);
    Answer {
        rows,
        next_cursor,
        ..Answer::refusal(Code::APPROVED, "ok".into())
    }
}

fn code_message(code: Code) -> &'static str {
    match code.0 {
        [b'0', b'0'] => "approved",
        [b'0', b'3'] => "invalid merchant",
        [b'0', b'5'] => "do not honor",
        [b'1', b'2'] => "invalid transaction for the payment's state",
        [b'1', b'3'] => "invalid amount",
        [b'1', b'4'] => "invalid card number",
        [b'2', b'5'] => "no such payment",
        [b'3', b'0'] => "format error",
        [b'5', b'4'] => "expired card",
        [b'5', b'7'] => "not permitted to cardholder",
        [b'5', b'8'] => "not permitted to terminal or merchant",
        [b'5', b'9'] => "suspected fraud",
        [b'6', b'1'] => "exceeds amount limit",
        [b'6', b'5'] => "exceeds frequency limit",
        [b'1', b'A'] => "additional customer authentication required",
        [b'9', b'1'] => "switch unavailable",
        [b'9', b'6'] => "system malfunction",
        _ => "declined",
    }
}

/// History entries of `p`, oldest first.
fn history(p: &Payment) -> Vec<HistoryEntry> {
    p.events()
        .map(|(a, kind)| HistoryEntry {
            at_unix_s: a.at_ms / 1000,
            kind,
            amount_minor: a.amount_minor,
            result_code: ResultCode::new(a.code.0).unwrap_or(ResultCode::FORMAT_ERROR),
        })
        .collect()
}

/// Encodes `answer` for `request_id` into `out`; a response the encoder
/// refuses (a bug) becomes 96.
fn encode(request_id: u64, answer: &Answer, out: &mut BytesMut) {
    let history = answer
        .payment
        .as_ref()
        .filter(|_| answer.history)
        .map(history);
    let rows: Vec<PaymentRow<'_>> = answer.rows.iter().map(row).collect();
    let mut r = Response::new(ResultCode::new(answer.code.0).unwrap_or(ResultCode::FORMAT_ERROR));
    r.message = answer.message.as_deref();
    r.status = answer.status;
    r.payment_id = answer.payment_id;
    if let Some(p) = &answer.payment {
        fill_payment(&mut r, p);
    }
    let auth = answer
        .auth_code
        .as_ref()
        .and_then(|a| std::str::from_utf8(a).ok());
    r.auth_code = auth.filter(|a| a.bytes().all(|b| b.is_ascii_alphanumeric()));
    if let Some(h) = &history {
        r.history = Repeated::from_slice(h);
    }
    r.rows = Repeated::from_slice(&rows);
    let mandates: Vec<MandateRow<'_>> = answer
        .mandates
        .iter()
        .map(|(mid, scopes, granted)| MandateRow {
            merchant_id: mid,
            granted_unix_s: *granted,
            scopes: *scopes,
        })
        .collect();
    r.mandates = Repeated::from_slice(&mandates);
    let terminals: Vec<TerminalRow<'_>> = answer.terminals.iter().map(terminal_row).collect();
    r.terminals = Repeated::from_slice(&terminals);
    r.next_cursor = answer.next_cursor;
    r.merchant = answer.merchant.as_ref().and_then(merchant_settings);
    let events: Vec<WebhookEventRow<'_>> = answer.webhook_events.iter().map(event_row).collect();
    r.webhook_events = Repeated::from_slice(&events);
    r.webhook_endpoint =
        answer
            .webhook_endpoint
            .as_ref()
            .map(|e| codecs::internal::WebhookEndpoint {
                created_unix_s: e.created_unix_s,
                secret_masked: &e.secret_masked,
                url: &e.url,
            });
    r.webhook_secret = answer
        .webhook_secret
        .as_deref()
        .and_then(|s| WebhookSecret::new(s).ok());
    if let Err(e) = r.encode(request_id, out) {
        tracing::error!(error = %e, "internal frame: response refused by the encoder");
        let mut fallback =
            Response::new(ResultCode::new(*b"96").unwrap_or(ResultCode::FORMAT_ERROR));
        fallback.message = Some("system malfunction");
        let _ = fallback.encode(request_id, out);
    }
}

/// The single-valued fields of a payment.
fn fill_payment<'a>(r: &mut Response<'a>, p: &'a Payment) {
    r.payment_id = Some(p.id);
    r.status = Some(p.status);
    r.currency = Some(p.currency);
    r.amount_authorized_minor = Some(p.authorized_minor);
    r.amount_captured_minor = Some(p.captured_minor);
    r.amount_refunded_minor = Some(p.refunded_minor());
    r.masked_pan = Some(p.masked_pan.as_str()).filter(|m| m.contains('*'));
    r.scam = Some(p.scam);
    r.merchant_reference = p
        .extras
        .as_ref()
        .map(|e| e.merchant_reference.as_str())
        .filter(|s| !s.is_empty());
    r.terminal_id = std::str::from_utf8(&p.terminal)
        .ok()
        .map(str::trim_end)
        .filter(|t| !t.is_empty());
    r.created_unix_s = Some(p.created_ms / 1000);
    r.details = details(p);
}

/// `s`, if not empty, cut to the 255 bytes a frame's text carries.
fn text_255(s: &str) -> Option<&str> {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(&s[..end]).filter(|t| !t.is_empty())
}

/// The back office's details of `p`: how it was authorized, its flag's
/// workflow.
fn details(p: &Payment) -> codecs::internal::Details<'_> {
    let notes = p.more.flag_notes.as_deref();
    let note = |f: fn(&engine::FlagNotes) -> &Option<String>| {
        notes.and_then(|n| f(n).as_deref()).and_then(text_255)
    };
    codecs::internal::Details {
        eci: p.more.eci.filter(|e| *e <= 99),
        rrn: std::str::from_utf8(&p.rrn)
            .ok()
            .filter(|r| r.bytes().all(|b| (b' '..=b'~').contains(&b))),
        channel: p.more.channel.filter(|c| matches!(c, 0 | 8 | 59 | 99)),
        stood_in: p.upstream.as_ref().map(|u| u.stood_in),
        auth_result_code: p.result_code().and_then(|c| ResultCode::new(c.0).ok()),
        amount_requested_minor: p.more.requested_minor,
        flag_reasons: text_255(&p.flag_reasons),
        flagged_by: note(|n| &n.flagged_by),
        flag_note: note(|n| &n.flag_note),
        unflagged_by: note(|n| &n.unflagged_by),
        unflag_reason: note(|n| &n.unflag_reason),
        unflagged_unix_s: notes.and_then(|n| n.unflagged_ms).map(|ms| ms / 1000),
    }
}

/// A merchant's settings for a response: the first `CURRENCIES_MAX`
/// currencies (a configured merchant may list more; one changed at run
/// time may not). A value the frame cannot carry (the configuration and
/// the directory check them) makes the encoder refuse it: answered 96.
fn merchant_settings(m: &crate::directory::MerchantView) -> Option<MerchantSettings<'_>> {
    let n = m.currencies.len().min(codecs::internal::CURRENCIES_MAX);
    let currencies = Currencies::new(&m.currencies[..n]).ok()?;
    Some(MerchantSettings {
        merchant_id: &m.id,
        enabled: m.enabled,
        currencies,
        over_capture_pct: u8::try_from(m.over_capture_pct).unwrap_or(u8::MAX),
        hold_hours: u16::try_from(m.hold_period_h).unwrap_or(u16::MAX),
        auto_capture_hours: m
            .auto_capture_h
            .map(|h| u16::try_from(h).unwrap_or(u16::MAX)),
        refunds: m.refunds_allowed,
        moto: m.moto_allowed,
        name: &m.name,
    })
}

fn terminal_row(t: &crate::directory::TerminalView) -> TerminalRow<'_> {
    use crate::directory::State;
    TerminalRow {
        terminal_id: &t.id,
        merchant_id: &t.merchant,
        state: match t.state {
            State::Enabled => TerminalState::Enabled,
            State::Disabled => TerminalState::Disabled,
            State::Removed => TerminalState::Removed,
        },
        refunds: Setting::of(t.refunds),
        moto: Setting::of(t.moto),
        cancel: Setting::of(t.cancel),
        name: &t.name,
    }
}

fn row(p: &Payment) -> PaymentRow<'_> {
    PaymentRow {
        payment_id: p.id,
        created_unix_s: p.created_ms / 1000,
        status: p.status,
        scam: p.scam,
        currency: p.currency,
        amount_authorized_minor: p.authorized_minor,
        amount_captured_minor: p.captured_minor,
        amount_refunded_minor: p.refunded_minor(),
        merchant_reference: p
            .extras
            .as_ref()
            .map(|e| e.merchant_reference.as_str())
            .filter(|s| !s.is_empty()),
    }
}
