//! Internal frames in cluster mode (`docs/cluster.md`, Internal frames).
//!
//! The entry node logs the key in and checks its scope on every request,
//! as on one node. A request that needs payment state goes to the node
//! serving the shard of its merchant: a MO/TO to its terminal's merchant's
//! shard; a request by payment id to each shard of the key's merchants in
//! turn until one knows the payment (a merchant's own key: one shard); a
//! list to every one, the pages merged by payment id. A shard served here
//! is applied here; another goes over the owner's node link with its
//! shard and the key's merchants of that shard ([`link_body`]), and the
//! owner applies it with its unchanged frame handling and answers once the
//! change is committed. What needs no payment state is answered at the
//! entry node: mandates, merchants and terminals (the cluster's directory
//! in PostgreSQL, changed there for every node), webhook endpoints and
//! events (the cluster's, in PostgreSQL). A scam mark or unmark by hand
//! changes its card's place on the watch list at the node counting the
//! card, and a payment list by webhook delivery status is each shard's
//! node's ([`apply_here`]).
//!
//! A read whose owner did not answer is asked again, as a linked ISO 8583
//! request is, up to `LINKED_WAIT_MAX`; a change is not: a frame has no
//! key to find it by, so when its outcome is unknown the client's
//! connection is closed (reason `owner_lost`), as a single node's death
//! does, and the client looks the payment up before it tries again.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use codecs::internal::{
    FrameBytes, InternalCodec, PaymentRow, Repeated, Request, Response, ResultCode,
};
use engine::{Code, Op, Query, QueryReply};
use tokio_util::codec::Decoder;

use super::{
    encode, frame_type_label, record_decision, run, Answer, FrameShared, LIST_ROWS_DEFAULT,
};
use crate::cluster_commit::Admitted;
use crate::cluster_link::{Kind, LinkOutcome, Router, LINKED_WAIT_MAX, OWNER_WAIT};
use crate::node::Node;
use crate::ratelog::warn_limited;

/// Shards a read (get payment, list) asks at once: a key acting for
/// merchants on many shards (a provider's) waits for the slowest of each
/// group, not for the sum of them all, and one request holds at most this
/// many link calls.
const READ_SHARDS_AT_ONCE: usize = 16;
/// How long a request waits between two looks for its shard's owner.
const ROUTE_AGAIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Where a logged-in key's request goes in cluster mode.
pub(super) enum Route {
    /// Answered at the entry node: no payment state.
    Entry,
    /// Answered at once, with no node asked.
    Now(Box<Answer>),
    /// Asked of the nodes serving these shards, in order.
    Shards(Asked),
}

/// A request to ask of the shards' nodes.
pub(super) struct Asked {
    /// Distinct, ascending.
    pub(super) shards: Vec<u32>,
    /// It changes a payment: never sent twice.
    pub(super) changes: bool,
    /// A list: every shard is asked and the pages merged, at most this
    /// many rows.
    pub(super) list: Option<usize>,
}

/// Where `request` goes, for a key acting for merchants `scope`.
pub(super) fn route(node: &Node, router: &Router, request: &Request<'_>, scope: &[u32]) -> Route {
    let shards = |changes, list| {
        let mut shards: Vec<u32> = scope
            .iter()
            .filter_map(|&m| router.shard_of_merchant(m))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        if shards.is_empty() {
            // No merchant: nothing to find, nothing to list.
            return Route::Now(Box::new(match list {
                Some(_) => Answer::refusal(Code::APPROVED, "ok".into()),
                None => Answer::refusal(Code::UNABLE_TO_LOCATE, "no such payment".into()),
            }));
        }
        Route::Shards(Asked {
            shards,
            changes,
            list,
        })
    };
    match request {
        Request::Authenticate(_)
        | Request::ListMandates
        | Request::GetMerchant(_)
        | Request::ListTerminals(_)
        // The directory is the cluster's, in PostgreSQL: changed once,
        // for every node (`directory::pg`).
        | Request::AddTerminal(_)
        | Request::SetTerminal(_)
        | Request::RemoveTerminal(_)
        | Request::SetMerchant(_)
        // So are the webhook endpoints (`webhooks::endpoints`).
        | Request::GetWebhookEndpoint(_)
        | Request::SetWebhookEndpoint(_)
        | Request::RemoveWebhookEndpoint(_)
        // And the events' queue (`webhooks::pg`).
        | Request::ListWebhookEvents(_)
        | Request::ResendWebhookEvent { .. } => Route::Entry,
        Request::AuthorizeMoto(m) | Request::PreauthorizeMoto(m) => {
            let terminal = super::terminal_bytes(m.terminal_id);
            match super::terminal_merchant(node, scope, terminal)
                .and_then(|merchant| router.shard_of_merchant(merchant.index))
            {
                Some(shard) => Route::Shards(Asked {
                    shards: vec![shard],
                    changes: true,
                    list: None,
                }),
                // The frame's own answer, from the configuration.
                None => Route::Now(Box::new(Answer::refusal(
                    Code::NOT_PERMITTED_TERMINAL,
                    "terminal unknown or not permitted for this key".into(),
                ))),
            }
        }
        Request::ListPayments(l) => {
            shards(false, Some(l.limit.map_or(LIST_ROWS_DEFAULT, usize::from)))
        }
        Request::GetPayment { .. } => shards(false, None),
        Request::Capture { .. }
        | Request::Refund(_)
        | Request::Cancel { .. }
        | Request::MarkScam { .. }
        | Request::UnmarkScam { .. } => shards(true, None),
    }
}

/// How a frame applied at the node serving its shard ended its
/// synchronous part.
pub(crate) enum Applied {
    /// Answered: the framed response and the record it waits for.
    Now(Vec<u8>, u64),
    /// Waiting for another node: finish with [`finish`].
    Finishing(Finishing),
    /// The shard is not served here (not owned, loading, handed over):
    /// nothing applied.
    NotServed,
}

/// A frame of a shard served here that waits for the node counting its
/// card (cluster mode, `docs/cluster.md`): finished on a task with
/// [`finish`].
pub(crate) struct Finishing {
    /// The request.
    frame: FrameBytes,
    /// The key's merchants of the shard.
    scope: Vec<u32>,
    /// What it waits for.
    then: Then,
    /// Held until it is decided, so a hand-over waits for it (none once
    /// the frame is applied and only its card's watch change is left).
    _admitted: Option<Admitted>,
}

/// What a [`Finishing`] frame waits for.
enum Then {
    /// A MO/TO: its card's verdict. Sale or pre-authorization, the card's
    /// token and whether a rule before velocity declined it.
    Moto(Op, ([u8; 32], bool)),
    /// A scam mark by hand of a payment not flagged yet: its card goes on
    /// the watch list at the node counting the card first, then the mark
    /// is applied here (the key's client id). A failure between leaves
    /// the card watched without the mark: it scores more, never less.
    WatchThenMark(String, [u8; 32]),
    /// A scam unmark applied here (its framed answer and record): once the
    /// record is committed, the node counting the card lets one holder of
    /// its place go. A failure leaves the card watched.
    UnwatchAfter(Vec<u8>, u64, [u8; 32]),
}

/// Applies `frame` of key `client_id` (acting for `mids`, the merchants of
/// `shard` among them count) if this node serves `shard`, with the frame
/// handling of one node restricted to that shard's merchants: the
/// engine's memory of a shard not served may be stale. A scam mark or
/// unmark by hand changes its card's place on the watch list at the node
/// counting the card ([`Then`]).
pub(super) fn apply_here(
    shared: &FrameShared,
    router: &Router,
    shard: u32,
    client_id: &str,
    mids: &[String],
    frame: &FrameBytes,
) -> Applied {
    let node = &shared.node;
    let Some(admitted) = router.admit_shard(shard) else {
        return Applied::NotServed;
    };
    // The key's merchants of this shard: indexes, and MIDs.
    let (scope, shard_mids): (Vec<u32>, Vec<String>) = mids
        .iter()
        .filter_map(|mid| match node.query(Query::Merchant(mid.as_bytes())) {
            QueryReply::Merchant(Some(m)) => Some((m.index, mid.clone())),
            _ => None,
        })
        .filter(|&(m, _)| router.shard_of_merchant(m) == Some(shard))
        .unzip();
    let view = frame.frame();
    let request = match Request::parse(&view) {
        Ok(r) => r,
        Err(e) => {
            let answer = Answer::refusal(Code::FORMAT_ERROR, e.to_string().into());
            return Applied::Now(encoded(frame.request_id(), &answer), 0);
        }
    };
    let finishing = |scope, then, admitted| {
        Applied::Finishing(Finishing {
            frame: frame.clone(),
            scope,
            then,
            _admitted: admitted,
        })
    };
    if let Request::MarkScam { payment_id, .. } = request {
        // Not flagged yet: this mark puts its card on the watch list (the
        // engine's `newly`). Not found, or flagged: applied at once.
        if let Ok(Some(p)) = node.payment(&scope, payment_id) {
            if !p.scam {
                let then = Then::WatchThenMark(client_id.to_owned(), p.card_token.0);
                return finishing(scope, then, Some(admitted));
            }
        }
    }
    let mut answer = match &request {
        // Its payments with an event in that delivery status: the ids from
        // the cluster's queue for this shard's merchants, the payments
        // from this node, which serves them.
        Request::ListPayments(l) if l.webhook_status.is_some() => {
            super::list_by_webhook_status(node, &shared.webhooks, &scope, &shard_mids, l)
        }
        _ => run(node, &scope, client_id, &request),
    };
    if let Some(p) = answer.payment.as_ref().filter(|_| answer.history) {
        // Payment details: its webhook events, from the cluster's queue.
        answer.webhook_events = shared.webhooks.payment_events(p.id);
    }
    if let Some(wait) = answer.velocity {
        let op = match request {
            Request::AuthorizeMoto(_) => Op::Sale,
            _ => Op::PreAuth,
        };
        return finishing(scope, Then::Moto(op, wait), Some(admitted));
    }
    drop(admitted);
    let framed = answered(node, frame, &request, &answer);
    if let (Request::UnmarkScam { .. }, Code::APPROVED, Some(p)) =
        (&request, answer.code, &answer.payment)
    {
        let then = Then::UnwatchAfter(framed, answer.seq, p.card_token.0);
        return finishing(scope, then, None);
    }
    Applied::Now(framed, answer.seq)
}

/// Finishes a [`Finishing`] frame: the framed response and the record it
/// waits for.
pub(crate) async fn finish(node: &Node, router: &Router, f: Finishing) -> (Vec<u8>, u64) {
    let view = f.frame.frame();
    let request = Request::parse(&view);
    let answer = match (f.then, request) {
        (
            Then::Moto(op, wait),
            Ok(ref request @ (Request::AuthorizeMoto(m) | Request::PreauthorizeMoto(m))),
        ) => {
            let answer = super::moto_counted(node, router, &f.scope, &m, op, wait).await;
            return (answered(node, &f.frame, request, &answer), answer.seq);
        }
        (Then::WatchThenMark(client_id, token), Ok(ref request @ Request::MarkScam { .. })) => {
            let answer = if router.watch_card(node, token, true).await {
                run(node, &f.scope, &client_id, request)
            } else {
                warn_limited!(
                    "watch_change",
                    "cluster: a scam mark is refused: its card's watch-list change was not recorded"
                );
                Answer::refusal(
                    Code::UNAVAILABLE,
                    "the card's watch list could not be changed; try again".into(),
                )
            };
            return (answered(node, &f.frame, request, &answer), answer.seq);
        }
        (Then::UnwatchAfter(framed, seq, token), _) => {
            if router.committed_by(seq, WATCH_COMMIT_WAIT).await
                && !router.watch_card(node, token, false).await
            {
                warn_limited!(
                    "watch_change",
                    "cluster: a scam unmark is committed, but its card's watch-list change was not recorded: the card stays watched"
                );
            }
            return (framed, seq);
        }
        // Parsed as this request before: never.
        _ => Answer::refusal(Code::SYSTEM_MALFUNCTION, "system malfunction".into()),
    };
    (encoded(f.frame.request_id(), &answer), 0)
}

/// How long an unmark's watch change waits for the unmark's commit.
const WATCH_COMMIT_WAIT: std::time::Duration = crate::cluster_link::LINK_TIMEOUT;

/// Counts `answer` to `request` (the frame metrics, the business metrics)
/// and frames it.
fn answered(node: &Node, frame: &FrameBytes, request: &Request<'_>, answer: &Answer) -> Vec<u8> {
    let type_label = frame
        .frame()
        .frame_type()
        .map_or("unknown", |t| frame_type_label(t.code()));
    metrics::counter!("switch_frame_requests_total", "type" => type_label, "code" => answer.code.as_str())
        .increment(1);
    record_decision(node, request, answer);
    encoded(frame.request_id(), answer)
}

/// `answer` framed for `request_id`.
pub(super) fn encoded(request_id: u64, answer: &Answer) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(request_id, answer, &mut out);
    out.to_vec()
}

/// The node-link body of `frame` for `shard`: the shard (`u32`), the key's
/// client id (`u8` length, bytes: for the scam flag's "by"), its merchants
/// of that shard (`u16` count, each `u8` length and bytes), then the frame
/// as the client sent it. `None` when a name is too long for its length
/// (the key store's ids and MIDs never are).
pub(super) fn link_body(
    shard: u32,
    client_id: &str,
    mids: &[String],
    frame: &[u8],
) -> Option<Bytes> {
    let mut out = Vec::with_capacity(8 + client_id.len() + 16 * mids.len() + frame.len());
    out.extend_from_slice(&shard.to_be_bytes());
    out.push(u8::try_from(client_id.len()).ok()?);
    out.extend_from_slice(client_id.as_bytes());
    out.extend_from_slice(&u16::try_from(mids.len()).ok()?.to_be_bytes());
    for mid in mids {
        out.push(u8::try_from(mid.len()).ok()?);
        out.extend_from_slice(mid.as_bytes());
    }
    out.extend_from_slice(frame);
    Some(out.into())
}

/// A link body read back: shard, client id, merchants, the frame.
pub(crate) struct Linked {
    shard: u32,
    client_id: String,
    mids: Vec<String>,
    frame: FrameBytes,
}

impl Linked {
    /// Reads a link body ([`link_body`]); `None` when it is not one (with
    /// exactly one whole frame at its end).
    pub(crate) fn parse(body: &[u8]) -> Option<Linked> {
        let (shard, rest) = body.split_first_chunk::<4>()?;
        let (client_id, rest) = text(rest)?;
        let client_id = client_id.to_owned();
        let (count, mut rest) = rest.split_first_chunk::<2>()?;
        let mut mids = Vec::with_capacity(usize::from(u16::from_be_bytes(*count)).min(64));
        for _ in 0..u16::from_be_bytes(*count) {
            let (mid, after) = text(rest)?;
            mids.push(mid.to_owned());
            rest = after;
        }
        let mut input = BytesMut::from(rest);
        let frame = InternalCodec::new().decode(&mut input).ok().flatten()?;
        input.is_empty().then_some(Linked {
            shard: u32::from_be_bytes(*shard),
            client_id,
            mids,
            frame,
        })
    }
}

/// A `u8`-length text at the start of `input`, and what follows it.
fn text(input: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = input.split_first()?;
    let (text, rest) = rest.split_at_checked(usize::from(len))?;
    Some((std::str::from_utf8(text).ok()?, rest))
}

/// The serving side of a linked frame: applied here if this node serves
/// its shard (its answer once committed: the caller waits), else
/// [`Applied::NotServed`] and the entry node routes it again. A body that
/// is not a link frame's is refused the same way, with a rate-limited
/// warning (a peer of another version).
pub(crate) fn apply_linked(shared: &FrameShared, router: &Router, body: &[u8]) -> Applied {
    let Some(linked) = Linked::parse(body) else {
        warn_limited!(
            "cluster_frame_link",
            len = body.len(),
            "node link: an internal frame that does not decode; not applied"
        );
        return Applied::NotServed;
    };
    apply_here(
        shared,
        router,
        linked.shard,
        &linked.client_id,
        &linked.mids,
        &linked.frame,
    )
}

/// The key's request on one connection, as the entry node holds it.
pub(super) struct Held {
    pub(super) shared: Arc<FrameShared>,
    pub(super) router: Arc<Router>,
    pub(super) client_id: String,
    /// The merchants the key may act for (MIDs), for this request.
    pub(super) mids: Vec<String>,
    pub(super) frame: FrameBytes,
}

/// Why the entry node has no answer for a change.
pub(super) struct OwnerLost;

impl Held {
    /// The key's MIDs of `shard`.
    fn mids_of(&self, shard: u32) -> Vec<String> {
        let node = &self.shared.node;
        self.mids
            .iter()
            .filter(|mid| match node.query(Query::Merchant(mid.as_bytes())) {
                QueryReply::Merchant(Some(m)) => {
                    self.router.shard_of_merchant(m.index) == Some(shard)
                }
                _ => false,
            })
            .cloned()
            .collect()
    }

    /// The answer of the node serving `shard` (here, or its owner over the
    /// link), with the record it waits for (0 from a link: the owner
    /// answered after its commit). No owner within `OWNER_WAIT`, or a read
    /// not answered within `LINKED_WAIT_MAX`: 91, nothing applied by this
    /// node. A change written whose outcome is unknown: [`OwnerLost`].
    pub(super) async fn ask(&self, shard: u32, changes: bool) -> Result<(Vec<u8>, u64), OwnerLost> {
        let started = tokio::time::Instant::now();
        let mut deadline = started + OWNER_WAIT;
        let written_deadline = started + LINKED_WAIT_MAX;
        let mids = self.mids_of(shard);
        let node = &self.shared.node;
        let body = link_body(shard, &self.client_id, &mids, self.frame.as_bytes());
        loop {
            match apply_here(
                &self.shared,
                &self.router,
                shard,
                &self.client_id,
                &mids,
                &self.frame,
            ) {
                Applied::Now(answer, seq) => return Ok((answer, seq)),
                Applied::Finishing(f) => return Ok(finish(node, &self.router, f).await),
                Applied::NotServed => {}
            }
            let now = tokio::time::Instant::now();
            let link = match &body {
                Some(_) => self.router.link_of(shard, deadline, Kind::Frame).await,
                None => None,
            };
            let (Some(link), Some(body)) = (link, &body) else {
                if self.router.serves(shard) && now < deadline {
                    // Came here meanwhile: applied here at the next turn.
                    tokio::time::sleep(ROUTE_AGAIN).await;
                    continue;
                }
                return Ok((self.unavailable(), 0));
            };
            let left = written_deadline.saturating_duration_since(tokio::time::Instant::now());
            match link.call_frame(body.clone(), left).await {
                LinkOutcome::Answered(answer) => return Ok((answer, 0)),
                LinkOutcome::NotSent => tokio::time::sleep(ROUTE_AGAIN).await,
                LinkOutcome::Unknown if changes => {
                    Kind::Frame.count("owner_lost");
                    return Err(OwnerLost);
                }
                LinkOutcome::Unknown => {
                    // A read: asked again of the owner etcd names.
                    deadline = written_deadline;
                    if tokio::time::Instant::now() >= deadline {
                        return Ok((self.unavailable(), 0));
                    }
                    tokio::time::sleep(ROUTE_AGAIN).await;
                }
            }
        }
    }

    /// A read of every one of `shards`, [`READ_SHARDS_AT_ONCE`] at a
    /// time, the answers in the shards' order.
    async fn ask_all(&self, shards: &[u32]) -> Vec<Result<(Vec<u8>, u64), OwnerLost>> {
        use futures_util::StreamExt;
        // The calls made first (not by a closure inside the stream, whose
        // borrow of `self` the task's `Send` bound cannot name).
        let calls: Vec<_> = shards.iter().map(|&shard| self.ask(shard, false)).collect();
        futures_util::stream::iter(calls)
            .buffered(READ_SHARDS_AT_ONCE)
            .collect()
            .await
    }

    /// 91: no node served the request's shard in time.
    fn unavailable(&self) -> Vec<u8> {
        let answer = Answer::refusal(Code::UNAVAILABLE, "no node serves the payment".into());
        encoded(self.frame.request_id(), &answer)
    }

    /// The answer to a request of several shards: the first that knows
    /// the payment (not 25); if none does, a 91 or 96 met on the way (the
    /// payment may be on a shard that did not answer), else 25.
    /// A read asks the shards [`READ_SHARDS_AT_ONCE`] at a time, a change
    /// one after the other (it is applied where the payment is, and
    /// nowhere else is asked once it was).
    pub(super) async fn first_known(&self, asked: &Asked) -> Result<(Vec<u8>, u64), OwnerLost> {
        let answers: Vec<Result<(Vec<u8>, u64), OwnerLost>> = if asked.changes {
            Vec::new()
        } else {
            self.ask_all(&asked.shards).await
        };
        let mut read = answers.into_iter();
        let mut unsure = None;
        let mut missing = None;
        for &shard in &asked.shards {
            let (answer, seq) = match read.next() {
                Some(answered) => answered?,
                None => self.ask(shard, asked.changes).await?,
            };
            match result_code(&answer).map(ResultCode::bytes) {
                Some(code) if code == Code::UNABLE_TO_LOCATE.0 => missing = Some((answer, seq)),
                Some(code) if code == Code::UNAVAILABLE.0 || code == Code::SYSTEM_MALFUNCTION.0 => {
                    unsure.get_or_insert((answer, seq));
                }
                _ => return Ok((answer, seq)),
            }
        }
        Ok(unsure
            .or(missing)
            .unwrap_or_else(|| (self.unavailable(), 0)))
    }

    /// A list of several shards: every shard's page (the same cursor and
    /// limit), merged by payment id, newest first, cut to `limit`; a page
    /// that is not approved is the answer.
    pub(super) async fn merged(&self, shards: &[u32], limit: usize) -> Vec<u8> {
        let mut pages = Vec::with_capacity(shards.len());
        for answered in self.ask_all(shards).await {
            match answered {
                Ok((page, _)) => pages.push(page),
                // Reads are never lost.
                Err(OwnerLost) => return self.unavailable(),
            }
        }
        merge(self.frame.request_id(), &pages, limit).unwrap_or_else(|| {
            let answer = Answer::refusal(Code::SYSTEM_MALFUNCTION, "system malfunction".into());
            encoded(self.frame.request_id(), &answer)
        })
    }
}

/// The result code of framed response `answer`.
fn result_code(answer: &[u8]) -> Option<ResultCode> {
    let mut input = BytesMut::from(answer);
    let frame = InternalCodec::new().decode(&mut input).ok().flatten()?;
    Response::parse(&frame.frame()).ok().map(|r| r.result_code)
}

/// Pages of one list request from several shards as one page of at most
/// `limit` rows for `request_id`, by payment id, highest first: the first
/// page not approved as it is; `None` when a page does not decode.
/// Each page holds the shard's first rows below the cursor, so the merge
/// holds the first rows of them all; a next cursor is given when a shard
/// has more or rows were cut.
pub(super) fn merge(request_id: u64, pages: &[Vec<u8>], limit: usize) -> Option<Vec<u8>> {
    let mut frames = Vec::with_capacity(pages.len());
    for page in pages {
        let mut input = BytesMut::from(&page[..]);
        frames.push(InternalCodec::new().decode(&mut input).ok().flatten()?);
    }
    let views: Vec<_> = frames.iter().map(FrameBytes::frame).collect();
    let mut responses = Vec::with_capacity(views.len());
    for (view, page) in views.iter().zip(pages) {
        let response = Response::parse(view).ok()?;
        if response.result_code != ResultCode::APPROVED {
            return Some(page.clone());
        }
        responses.push(response);
    }
    let mut rows: Vec<PaymentRow<'_>> = responses.iter().flat_map(|r| r.rows.iter()).collect();
    rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.payment_id));
    let more = rows.len() > limit || responses.iter().any(|r| r.next_cursor.is_some());
    rows.truncate(limit);
    let mut merged = Response::new(ResultCode::APPROVED);
    merged.message = Some("ok");
    merged.rows = Repeated::from_slice(&rows);
    merged.next_cursor = rows.last().filter(|_| more).map(|r| r.payment_id);
    let mut out = BytesMut::new();
    merged.encode(request_id, &mut out).ok()?;
    Some(out.to_vec())
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use codecs::internal::{PaymentRow, PaymentStatus, Repeated, Request, Response, ResultCode};
    use tokio_util::codec::Decoder;

    use super::{link_body, merge, result_code, Linked};

    fn get_frame(request_id: u64, payment_id: u64) -> Vec<u8> {
        let mut out = BytesMut::new();
        Request::GetPayment { payment_id }
            .encode(request_id, &mut out)
            .expect("encodes");
        out.to_vec()
    }

    fn row(payment_id: u64) -> PaymentRow<'static> {
        PaymentRow {
            payment_id,
            created_unix_s: 1,
            status: PaymentStatus::Succeeded,
            scam: false,
            currency: 978,
            amount_authorized_minor: 100,
            amount_captured_minor: 100,
            amount_refunded_minor: 0,
            merchant_reference: None,
        }
    }

    fn page(code: [u8; 2], ids: &[u64], next: Option<u64>) -> Vec<u8> {
        let rows: Vec<PaymentRow<'_>> = ids.iter().map(|&id| row(id)).collect();
        let mut r = Response::new(ResultCode::new(code).expect("code"));
        r.rows = Repeated::from_slice(&rows);
        r.next_cursor = next;
        let mut out = BytesMut::new();
        r.encode(7, &mut out).expect("encodes");
        out.to_vec()
    }

    fn ids_and_cursor(page: &[u8]) -> (Vec<u64>, Option<u64>) {
        let mut input = BytesMut::from(page);
        let frame = codecs::internal::InternalCodec::new()
            .decode(&mut input)
            .expect("decodes")
            .expect("a frame");
        let r = Response::parse(&frame.frame()).expect("a response");
        (r.rows.iter().map(|r| r.payment_id).collect(), r.next_cursor)
    }

    #[test]
    fn link_bodies_round_trip_and_anything_else_is_refused() {
        let frame = get_frame(9, 1 << 41);
        let mids = ["DEMO00000000001".to_owned(), "DEMO00000000002".to_owned()];
        let body = link_body(12, "ck_test", &mids, &frame).expect("fits");
        let linked = Linked::parse(&body).expect("parses");
        assert_eq!(
            (linked.shard, linked.client_id.as_str(), &linked.mids[..]),
            (12, "ck_test", &mids[..])
        );
        assert_eq!(linked.frame.as_bytes().as_ref(), &frame[..]);
        assert_eq!(linked.frame.request_id(), 9);
        // Cut anywhere, or with bytes after the frame: not a link body.
        for cut in 0..body.len() {
            assert!(Linked::parse(&body[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(Linked::parse(&longer).is_none());
        // A name too long for its length byte is not sent.
        assert!(link_body(1, &"c".repeat(256), &mids, &frame).is_none());
    }

    proptest::proptest! {
        /// Any bytes: parsed or refused, never a panic; any body written
        /// reads back as written.
        #[test]
        fn link_bodies_never_panic_and_round_trip(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            shard in 0_u32..4096,
            client in "[a-z_0-9]{0,40}",
            mids in proptest::collection::vec("[A-Z0-9]{15}", 0..5),
            id in proptest::num::u64::ANY,
        ) {
            let _ = Linked::parse(&noise);
            let frame = get_frame(7, (id & ((1 << 53) - 1)).max(1));
            let body = link_body(shard, &client, &mids, &frame).expect("fits");
            let linked = Linked::parse(&body).expect("parses");
            proptest::prop_assert_eq!(linked.shard, shard);
            proptest::prop_assert_eq!(&linked.client_id, &client);
            proptest::prop_assert_eq!(&linked.mids, &mids);
            proptest::prop_assert_eq!(linked.frame.as_bytes().as_ref(), &frame[..]);
        }
    }

    #[test]
    fn pages_of_several_shards_merge_by_id_with_a_cursor_while_any_has_more() {
        // Shard pages of limit 2: the first has more, the second not.
        let a = page(*b"00", &[90, 40], Some(40));
        let b = page(*b"00", &[70], None);
        let merged = merge(7, &[a.clone(), b.clone()], 2).expect("merges");
        assert_eq!(ids_and_cursor(&merged), (vec![90, 70], Some(70)));
        assert_eq!(result_code(&merged), ResultCode::new(*b"00").ok());
        // All of them fit and none has more: no cursor.
        let c = page(*b"00", &[90, 40], None);
        let merged = merge(7, &[c, b.clone()], 3).expect("merges");
        assert_eq!(ids_and_cursor(&merged), (vec![90, 70, 40], None));
        // Cut by the limit: a cursor even when no shard has more.
        let merged =
            merge(7, &[page(*b"00", &[5], None), page(*b"00", &[6], None)], 1).expect("merges");
        assert_eq!(ids_and_cursor(&merged), (vec![6], Some(6)));
        // A page not approved is the answer; one that does not decode: none.
        let refused = page(*b"96", &[], None);
        assert_eq!(merge(7, &[a.clone(), refused.clone()], 2), Some(refused));
        assert_eq!(merge(7, &[a, vec![1, 2, 3]], 2), None);
    }
}
