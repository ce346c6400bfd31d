//! The ISO 8583 edge of the pipeline: decode a frame into a [`Command`],
//! and encode the engine's [`Reply`] as the response. Nothing else knows
//! ISO 8583.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::upstream::ForwardRef;
use engine::velocity::VelocityAsk;

use bytes::BytesMut;
use codecs::card::Pan;
use codecs::framing::{Frame, FrameCodec, FrameConfig, Tpdu, WriteError};
use codecs::iso8583::datetime::{Expiry, TransmissionTime};
use codecs::iso8583::f90::OriginalData;
use codecs::iso8583::{f48, DecodeErrorKind, EncodeError, Message, MessageWriter, Mti, Profile};

use engine::{Channel, Code, Command, MessageKey, Op, OriginalRef, Reply, Request, Wait};
use tokio_util::codec::Decoder;

use crate::business::Decision;
use crate::metrics::{Metrics, Stage};
use crate::net::{Answered, End, Wire};
use crate::node::Node;
use crate::ratelog::warn_limited;

/// What every ISO 8583 connection shares.
pub(crate) struct IsoShared {
    /// The pipeline.
    pub(crate) node: Arc<Node>,
    /// Metric handles.
    pub(crate) metrics: Arc<Metrics>,
    /// Wire profile.
    pub(crate) profile: &'static Profile,
    /// Framing settings.
    pub(crate) framing: FrameConfig,
    /// Cluster mode: where requests of shards this node does not serve go
    /// (`cluster_link`); `None` on a single node.
    pub(crate) router: Option<Arc<crate::cluster_link::Router>>,
}

/// The ISO 8583 wire on one connection.
pub(crate) struct IsoWire {
    /// Shared pipeline and settings.
    shared: Arc<IsoShared>,
    /// Length-prefix framing.
    codec: FrameCodec,
    /// Where answers an issuer decides come back to the connection.
    later: Option<crate::net::Later>,
}

impl IsoWire {
    /// A connection's wire state.
    pub(crate) fn new(shared: Arc<IsoShared>) -> Self {
        let codec = FrameCodec::new(shared.framing);
        IsoWire {
            shared,
            codec,
            later: None,
        }
    }
}

impl Wire for IsoWire {
    type Frame = Frame;

    const NAME: &'static str = "iso";

    fn next_frame(&mut self, input: &mut BytesMut, peer: IpAddr) -> Result<Option<Frame>, End> {
        self.codec.decode(input).map_err(|e| {
            warn_limited!("framing", %peer, error = %e, "framing error");
            metrics::counter!("switch_codec_errors_total", "kind" => "framing").increment(1);
            End::Protocol("framing_error")
        })
    }

    fn answer(&mut self, frame: Frame, _peer: IpAddr, out: &mut BytesMut) -> Answered {
        let sh = &self.shared;
        // Cluster mode: a request of a shard served here is admitted (the
        // guard held until its records are appended, so a hand-over waits
        // for it); one of another shard goes to its owner.
        let mut admitted = None;
        if let (Some(router), Some(later), None) = (&sh.router, &self.later, frame.tpdu) {
            match router.admit(sh.profile, &frame.body) {
                Ok(a) => admitted = a,
                Err(shard) => {
                    spawn_linked(sh.clone(), router.clone(), shard, frame.body, later.clone());
                    return Answered {
                        seq: 0,
                        end: None,
                        deferred: true,
                    };
                }
            }
        }
        let handled = handle(
            &sh.node,
            &sh.metrics,
            sh.profile,
            &self.codec,
            frame.tpdu,
            &frame.body,
            out,
        );
        // Held until here (its records appended), or by a deferred
        // request until it is decided.
        match handled {
            Ok(Handled::Now(seq)) => Answered {
                seq,
                end: None,
                deferred: false,
            },
            Ok(Handled::Later(reply)) => {
                let deferred = Deferred {
                    body: frame.body,
                    tpdu: frame.tpdu,
                    profile: sh.profile,
                    framing: sh.framing,
                    _admitted: admitted,
                };
                match &self.later {
                    Some(later) => {
                        spawn_deferred(
                            sh.node.clone(),
                            sh.metrics.clone(),
                            sh.router.clone(),
                            deferred,
                            reply,
                            later.clone(),
                        );
                        Answered {
                            seq: 0,
                            end: None,
                            deferred: true,
                        }
                    }
                    None => Answered {
                        seq: 0,
                        end: Some(End::Protocol("no_later_channel")),
                        deferred: false,
                    },
                }
            }
            Err(u) => {
                // Nothing is answered; whatever a failed encode left goes.
                out.clear();
                Answered {
                    seq: 0,
                    end: Some(End::Protocol(u.label())),
                    deferred: false,
                }
            }
        }
    }

    fn set_later(&mut self, later: crate::net::Later) {
        self.later = Some(later);
    }

    fn answers_rest(&self, end: End) -> bool {
        // Not after a broken frame, a broken socket or a peer that does
        // not read.
        !matches!(end, End::Protocol(_) | End::Io | End::WriteTimeout)
    }
}

/// Why a frame could not be answered; the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unanswerable {
    /// MTI or bitmap unreadable.
    Undecodable,
    /// A response or advice response sent to the switch.
    NotARequest,
    /// No F11 or F41 to match an answer by.
    NoKeyFields,
    /// The response did not fit the frame limit.
    ResponseTooLong,
}

impl Unanswerable {
    /// Label for logs and metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Unanswerable::Undecodable => "undecodable",
            Unanswerable::NotARequest => "not_a_request",
            Unanswerable::NoKeyFields => "no_key_fields",
            Unanswerable::ResponseTooLong => "response_too_long",
        }
    }
}

/// Label of a decode error kind, for `switch_codec_errors_total{kind}`.
pub(crate) fn decode_error_label(kind: DecodeErrorKind) -> &'static str {
    match kind {
        DecodeErrorKind::MessageTooLong => "message_too_long",
        DecodeErrorKind::Truncated { .. } => "truncated",
        DecodeErrorKind::BadMti => "bad_mti",
        DecodeErrorKind::BadBitmap => "bad_bitmap",
        DecodeErrorKind::BadLengthPrefix { .. } => "bad_length_prefix",
        DecodeErrorKind::LengthOverMax { .. } => "length_over_max",
        DecodeErrorKind::BadContent(_) => "bad_content",
        DecodeErrorKind::TrailingBytes(_) => "trailing_bytes",
    }
}

/// What handling a frame did.
#[derive(Debug)]
pub(crate) enum Handled {
    /// A response was written; the journal sequence it waits for (0: none).
    Now(u64),
    /// Nothing written: an issuer decides it (the forwarding stage answers).
    Later(Reply),
}

/// Handles one frame: writes exactly one response frame at the end of
/// `out` and returns the journal sequence it must wait for (0: none), or
/// writes nothing when the engine deferred it to an issuer.
///
/// # Errors
/// [`Unanswerable`] when no response can be matched; nothing is written.
pub(crate) fn handle(
    node: &Node,
    metrics: &Metrics,
    profile: &'static Profile,
    codec: &FrameCodec,
    tpdu: Option<Tpdu>,
    body: &[u8],
    out: &mut BytesMut,
) -> Result<Handled, Unanswerable> {
    let started = std::time::Instant::now();
    let (msg, error) = Message::decode_lenient(profile, body).map_err(|e| {
        metrics.codec_error(decode_error_label(e.kind));
        Unanswerable::Undecodable
    })?;
    let response_mti = msg.mti().response().ok_or(Unanswerable::NotARequest)?;
    let timed = metrics.sample_stages();
    let decoded = if timed {
        metrics.stage(Stage::Decode, started)
    } else {
        started
    };
    let mut decision = None;
    let outcome = match error {
        Some(e) => {
            metrics.codec_error(decode_error_label(e.kind));
            tracing::debug!(mti = %msg.mti(), error = %e, "answering 30");
            if !answerable(&msg) {
                return Err(Unanswerable::NoKeyFields);
            }
            node.apply(Command::Refuse {
                code: Code::FORMAT_ERROR,
                rrn: rrn_of(&msg),
            })
        }
        None => match to_request(&msg) {
            Ok(Some(req)) => {
                decision = Some(decision_of(&req));
                let reply = node.apply_message(req);
                if matches!(
                    reply.wait,
                    Wait::Upstream(_) | Wait::Joined(_) | Wait::Velocity { .. }
                ) {
                    return Ok(Handled::Later(reply));
                }
                reply
            }
            Ok(None) => network_management(&msg),
            Err(code) => {
                if !answerable(&msg) {
                    return Err(Unanswerable::NoKeyFields);
                }
                node.apply(Command::Refuse {
                    code,
                    rrn: rrn_of(&msg),
                })
            }
        },
    };
    let processed = if timed {
        metrics.stage(Stage::Engine, decoded)
    } else {
        decoded
    };
    let written = codec.write_frame(out, tpdu.map(Tpdu::response), |buf| {
        encode_response(&msg, response_mti, &outcome, buf)
    });
    match written {
        Ok(()) => {}
        Err(WriteError::Body(_) | WriteError::TooLong { .. }) => {
            return Err(Unanswerable::ResponseTooLong)
        }
    }
    if timed {
        metrics.stage(Stage::Encode, processed);
    }
    metrics.answered(msg.mti(), outcome.code, started);
    if let Some(d) = decision.filter(|_| !outcome.again) {
        crate::business::record(&Decision {
            code: outcome.code,
            ..d
        });
    }
    Ok(Handled::Now(outcome.wait.journal_seq()))
}

/// A payment request as the business metrics count it (the code is the
/// answer's, filled in later): a reversal counts what it releases.
fn decision_of<'a>(req: &Request<'a>) -> Decision<'a> {
    let amount_minor = match (req.op, req.replacement_minor) {
        (Op::Reversal, Some(left)) => req.amount_minor.saturating_sub(left),
        _ => req.amount_minor,
    };
    Decision {
        channel: crate::business::Channel::Iso,
        op: req.op,
        code: Code::APPROVED,
        amount_minor,
        currency: req.currency,
        merchant: Some(req.merchant_id),
    }
}

/// Whether a client could match an answer: F11, and F41 except for
/// network management.
fn answerable(msg: &Message<'_>) -> bool {
    msg.has(11) && (msg.has(41) || msg.mti().as_bytes()[1] == b'8')
}

fn rrn_of(msg: &Message<'_>) -> Option<[u8; 12]> {
    msg.raw(37).and_then(|r| r.try_into().ok())
}

/// An 0800 is answered here: the engine has nothing to do with it.
fn network_management(msg: &Message<'_>) -> Reply {
    let code = match msg.raw(70) {
        Some(b"001" | b"002" | b"301") => Code::APPROVED,
        Some(_) => Code::INVALID_TRANSACTION,
        None => Code::FORMAT_ERROR,
    };
    Reply {
        code,
        rrn: [b'0'; 12],
        auth_code: None,
        payment_id: None,
        wait: Wait::Nothing,
        record_seq: 0,
        count: 0,
        again: false,
    }
}

/// Fields every financial request needs.
const REQUIRED_FINANCIAL: [u8; 4] = [7, 11, 41, 42];

/// The request a decoded message asks for; `Ok(None)` for network
/// management (0800), answered without the engine.
///
/// # Errors
/// 30 for a missing or malformed field, 12 for a message type or
/// processing code the switch does not handle.
pub(crate) fn to_request<'a>(msg: &Message<'a>) -> Result<Option<Request<'a>>, Code> {
    let mti = msg.mti();
    let base = mti.without_repeat();
    let Some(op) = op_of(msg)? else {
        return Ok(None);
    };
    if REQUIRED_FINANCIAL.iter().any(|&n| !msg.has(n)) {
        return Err(Code::FORMAT_ERROR);
    }
    let f7 = msg.raw(7).unwrap_or_default();
    TransmissionTime::parse(f7).ok_or(Code::FORMAT_ERROR)?;
    let terminal_id: [u8; 8] = msg
        .raw(41)
        .and_then(|t| t.try_into().ok())
        .ok_or(Code::FORMAT_ERROR)?;
    let stan = msg.number(11).ok_or(Code::FORMAT_ERROR)? as u32;
    let key = MessageKey {
        mti: base.number(),
        terminal: terminal_id,
        stan,
        transmission: msg.number(7).unwrap_or(0),
    };
    let needs_amount = op != Op::Reversal;
    if needs_amount && !(msg.has(4) && msg.has(49)) {
        return Err(Code::FORMAT_ERROR);
    }
    let (pan, expiry) = if op.authorizes() {
        card(msg)?
    } else {
        (None, None)
    };
    let original = match op {
        Op::Sale => None,
        // An 0100 with F90 is an incremental authorization of it.
        Op::PreAuth if !msg.has(90) => None,
        _ => Some(original(msg, op)?),
    };
    let (replacement_minor, eci, channel) = extras_of(msg)?;
    let keep_open = keep_open(msg, op)?;
    Ok(Some(Request {
        op,
        key: Some(key),
        repeat: mti.is_repeat(),
        content_crc: crc32c::crc32c(msg.as_bytes().get(4..).unwrap_or_default()),
        merchant_id: msg.raw(42).unwrap_or_default(),
        terminal_id,
        pan,
        expiry,
        amount_minor: msg.number(4).unwrap_or(0),
        currency: msg.number(49).unwrap_or(0) as u16,
        original,
        replacement_minor,
        channel,
        eci,
        rrn: msg.raw(37).and_then(|r| r.try_into().ok()),
        extras: None,
        keep_open,
    }))
}

/// What a message asks for; `Ok(None)` for a well-formed 0800.
///
/// # Errors
/// 30 for a missing processing code or a malformed 0800, 12 for a
/// message type or processing code the switch does not handle.
fn op_of(msg: &Message<'_>) -> Result<Option<Op>, Code> {
    Ok(Some(
        match (
            msg.mti().without_repeat().as_bytes(),
            msg.raw(3).and_then(|p| p.get(..2)),
        ) {
            (b"0800", _) => {
                if msg.has(7)
                    && msg.has(11)
                    && TransmissionTime::parse(msg.raw(7).unwrap_or_default()).is_some()
                {
                    return Ok(None);
                }
                return Err(Code::FORMAT_ERROR);
            }
            (b"0100", Some(b"00")) => Op::PreAuth,
            (b"0200", Some(b"00")) => Op::Sale,
            (b"0200", Some(b"20")) => Op::Refund,
            (b"0100" | b"0200", None) => return Err(Code::FORMAT_ERROR),
            (b"0100" | b"0200", Some(_)) => return Err(Code::INVALID_TRANSACTION),
            (b"0220", _) => Op::Capture,
            (b"0400" | b"0420", _) => Op::Reversal,
            _ => return Err(Code::INVALID_TRANSACTION),
        },
    ))
}

/// F95's replacement amount, F48.42's ECI and F25's channel.
///
/// # Errors
/// 30 for a malformed F95 or F48.
fn extras_of(msg: &Message<'_>) -> Result<(Option<u64>, Option<f48::Eci>, Channel), Code> {
    let replacement_minor = match msg.raw(95) {
        Some(f95) => Some(
            f95.get(..12)
                .and_then(|a| codecs::iso8583::amount::parse_digits(a, 12))
                .ok_or(Code::FORMAT_ERROR)?,
        ),
        None => None,
    };
    let eci = match msg.raw(48) {
        Some(f) => f48::eci(f).map_err(|_| Code::FORMAT_ERROR)?,
        None => None,
    };
    let channel = match msg.raw(25) {
        Some(b"00") | None => Channel::CardPresent,
        Some(b"08") => Channel::MoTo,
        Some(b"59") => Channel::Ecommerce,
        Some(_) => Channel::Other,
    };
    Ok((replacement_minor, eci, channel))
}

/// Whether a capture is partial (F48.22 = `1`): the rest of the hold stays
/// open for further captures.
///
/// # Errors
/// 30 for a malformed F48 or subelement 22; 12 for F48.22 = `1` on a
/// message other than a capture (only a 0220 can leave a hold open).
fn keep_open(msg: &Message<'_>, op: Op) -> Result<bool, Code> {
    let Some(f) = msg.raw(48) else {
        return Ok(false);
    };
    match f48::partial_capture(f) {
        Ok(true) if op != Op::Capture => Err(Code::INVALID_TRANSACTION),
        Ok(partial) => Ok(partial),
        Err(_) => Err(Code::FORMAT_ERROR),
    }
}

/// PAN and expiry from F2 and F14, or from track 2 (F35).
fn card<'a>(msg: &Message<'a>) -> Result<(Option<Pan<'a>>, Option<Expiry>), Code> {
    let track2 = msg.raw(35).map(|t| {
        let sep = t
            .iter()
            .position(|&c| c == b'=' || c == b'D')
            .unwrap_or(t.len());
        (t.get(..sep).unwrap_or_default(), t.get(sep + 1..sep + 5))
    });
    let pan_digits = msg
        .raw(2)
        .or(track2.map(|t| t.0))
        .ok_or(Code::FORMAT_ERROR)?;
    let pan = Pan::new(pan_digits).ok_or(Code::FORMAT_ERROR)?;
    let expiry_digits = msg
        .raw(14)
        .or(track2.and_then(|t| t.1))
        .ok_or(Code::FORMAT_ERROR)?;
    let expiry = Expiry::parse(expiry_digits).ok_or(Code::FORMAT_ERROR)?;
    Ok((Some(pan), Some(expiry)))
}

/// The original of a capture, refund or reversal: F90, or for a capture
/// the original's F37 and F38.
fn original(msg: &Message<'_>, op: Op) -> Result<OriginalRef, Code> {
    if let Some(f90) = msg.raw(90) {
        return OriginalData::parse(f90)
            .map(OriginalRef::Message)
            .ok_or(Code::FORMAT_ERROR);
    }
    match (op, msg.raw(37), msg.raw(38)) {
        (Op::Capture, Some(rrn), Some(auth)) => Ok(OriginalRef::Rrn(
            rrn.try_into().map_err(|_| Code::FORMAT_ERROR)?,
            auth.try_into().map_err(|_| Code::FORMAT_ERROR)?,
        )),
        _ => Err(Code::FORMAT_ERROR),
    }
}

/// Fields echoed from the request, in ascending order (F37–F39 are the
/// switch's own and go between F13 and F41).
const ECHOED_LOW: [u8; 6] = [3, 4, 7, 11, 12, 13];
const ECHOED_HIGH: [u8; 3] = [41, 42, 49];

/// Writes the response: echoed fields, F37, F38 on approval, F39; no card data.
pub(crate) fn encode_response(
    msg: &Message<'_>,
    mti: Mti,
    outcome: &Reply,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mut w = MessageWriter::new(buf, msg.profile(), mti);
    let network = mti.as_bytes()[1] == b'8';
    for n in ECHOED_LOW {
        if let Some(v) = msg.raw(n) {
            w.field(n, v)?;
        }
    }
    if !network {
        w.field(37, &outcome.rrn)?;
        if let (true, Some(auth)) = (outcome.code.approved(), outcome.auth_code) {
            w.field(38, &auth)?;
        }
    }
    w.field(39, &outcome.code.0)?;
    for n in ECHOED_HIGH {
        if let Some(v) = msg.raw(n) {
            w.field(n, v)?;
        }
    }
    if let (true, Some(v)) = (network, msg.raw(70)) {
        w.field(70, v)?;
    }
    w.finish()?;
    Ok(())
}

// A message the engine routed to an issuer (`Wait::Upstream`), or a
// repeat of one still there (`Wait::Joined`), is finished on a task of
// its own; its answer goes back to the connection through its `Later`.

/// How often a repeat joined to a forward looks whether it ended.
const JOIN_POLL: Duration = Duration::from_millis(5);
/// Longest wait of a repeat for the forward it joined, past the
/// upstream's timeout (the forward's own task ends it by then).
const JOIN_SLACK: Duration = Duration::from_secs(1);

/// What answering a deferred message needs from its ISO connection.
pub(crate) struct Deferred {
    /// The terminal's message, as read.
    pub(crate) body: Bytes,
    /// Its TPDU, if the listener has them.
    pub(crate) tpdu: Option<Tpdu>,
    /// The listener's profile.
    pub(crate) profile: &'static Profile,
    /// The listener's framing.
    pub(crate) framing: FrameConfig,
    /// Cluster mode: its shard's admission, held until it is decided (its
    /// records appended), so a hand-over waits for a request whose card
    /// is being asked (at most `VELOCITY_ASK_WAIT`, under the hand-over's
    /// wait). `None` on one node.
    pub(crate) _admitted: Option<crate::cluster_commit::Admitted>,
}

/// Finishes a message the engine deferred (`reply.wait` is
/// [`Wait::Upstream`], [`Wait::Joined`] or [`Wait::Velocity`]) on a task
/// of its own, and sends the terminal's answer to `later`.
pub(crate) fn spawn_deferred(
    node: Arc<Node>,
    metrics: Arc<crate::metrics::Metrics>,
    router: Option<Arc<crate::cluster_link::Router>>,
    deferred: Deferred,
    reply: Reply,
    later: crate::net::Later,
) {
    tokio::spawn(async move {
        let (answer, seq) =
            answer_deferred(&node, &metrics, router.as_deref(), &deferred, reply).await;
        // Decided: its shard's admission (cluster mode) ends here.
        drop(deferred);
        // Always one send per deferred request (empty when no answer can
        // be written), so the connection's count of them stays true. The
        // connection may have gone meanwhile: then nobody waits.
        let _ = later.send((answer, seq));
    });
}

/// A deferred message's framed answer (empty when none can be written)
/// and the journal sequence it waits for, counted in the metrics.
pub(crate) async fn answer_deferred(
    node: &Node,
    metrics: &crate::metrics::Metrics,
    router: Option<&crate::cluster_link::Router>,
    deferred: &Deferred,
    reply: Reply,
) -> (Vec<u8>, u64) {
    let started = std::time::Instant::now();
    let reply = complete(node, router, deferred, reply).await;
    let answer = encode_answer(deferred, &reply);
    if let Some((_, mti)) = &answer {
        metrics.answered(*mti, reply.code, started);
    }
    if let Ok((msg, None)) = Message::decode_lenient(deferred.profile, &deferred.body) {
        if let Some(req) = to_request(&msg).ok().flatten().filter(|_| !reply.again) {
            crate::business::record(&Decision {
                code: reply.code,
                ..decision_of(&req)
            });
        }
    }
    let answer = answer.map(|(a, _)| a).unwrap_or_default();
    (answer, reply.wait.journal_seq())
}

/// Sends a request of a shard this node does not serve over its owner's
/// node link (waiting a bounded time for an owner); the owner's committed
/// answer goes to `later`, exactly once. A request written whose outcome
/// is unknown (no answer in time, the connection broke) is sent again to
/// the owner etcd names: the owner's idempotency answers a committed one
/// as a repeat (same F37, F38, F39) and decides an uncommitted one once,
/// and a takeover replayed the old owner's committed records. No owner, or
/// no answer within the bounds: 91, decided by no engine state, unless the
/// shard came to this node meanwhile.
fn spawn_linked(
    shared: Arc<IsoShared>,
    router: Arc<crate::cluster_link::Router>,
    shard: u32,
    body: Bytes,
    later: crate::net::Later,
) {
    use crate::cluster_link::{LinkOutcome, LINKED_WAIT_MAX, OWNER_WAIT};
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        // Until the deadline: a request not sent (the owner's link down,
        // a dead owner etcd still names) is routed again; once written
        // with no outcome known, the longer bound holds.
        let mut deadline = started + OWNER_WAIT;
        let written_deadline = started + LINKED_WAIT_MAX;
        while let Some(link) = router
            .link_of(shard, deadline, crate::cluster_link::Kind::Request)
            .await
        {
            let left = written_deadline.saturating_duration_since(tokio::time::Instant::now());
            match link.call(body.clone(), left).await {
                LinkOutcome::Answered(answer) => {
                    metrics::histogram!("switch_cluster_forwarded_seconds", "outcome" => "answered")
                        .record(started.elapsed().as_secs_f64());
                    let _ = later.send((answer, 0));
                    return;
                }
                LinkOutcome::NotSent => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                LinkOutcome::Unknown => {
                    // Perhaps applied, perhaps committed: only the owner
                    // can tell, so ask it again (never answer 91 here
                    // while the bound lasts: a repeat would get the
                    // owner's answer). A late answer to the earlier
                    // sending finds no caller and is dropped.
                    deadline = written_deadline;
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    metrics::counter!("switch_cluster_forwarded_total", "outcome" => "resent")
                        .increment(1);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let Some(admitted) = router.admit_shard(shard) else {
            // Not through the engine: its memory of a shard it does not
            // serve may be stale, and an answer remembered there would win
            // over the owner's once the shard is loaded here again.
            metrics::counter!("switch_cluster_forwarded_total", "outcome" => "refused")
                .increment(1);
            metrics::histogram!("switch_cluster_forwarded_seconds", "outcome" => "refused")
                .record(started.elapsed().as_secs_f64());
            let _ = later.send((unavailable_frame(&shared, &body), 0));
            return;
        };
        let answered = match handle_admitted(&shared, body, Some(admitted)) {
            Applied::Now(answer, seq) => (answer, seq),
            Applied::Later(deferred, reply) => {
                let node = &shared.node;
                answer_deferred(node, &shared.metrics, Some(&router), &deferred, reply).await
            }
            Applied::Unanswerable => (Vec::new(), 0),
        };
        let _ = later.send(answered);
    });
}

/// How a request of a shard served here ended its synchronous part
/// ([`handle_admitted`]).
pub(crate) enum Applied {
    /// Answered: the framed answer and the record sequence it waits for.
    Now(Vec<u8>, u64),
    /// Waiting for its card's verdict: finish it with [`answer_deferred`].
    /// The shard's admission rides in the [`Deferred`] until it is decided.
    Later(Deferred, Reply),
    /// Nothing can be answered (an unanswerable frame).
    Unanswerable,
}

/// Applies `body` (no TPDU), a request of a shard this node serves,
/// holding `admitted` until its records are appended or, when deferred,
/// until it is decided: the node-link server's and the entry node's path
/// for a request of a shard served here.
pub(crate) fn handle_admitted(
    shared: &IsoShared,
    body: Bytes,
    admitted: Option<crate::cluster_commit::Admitted>,
) -> Applied {
    let mut out = BytesMut::with_capacity(256);
    let codec = FrameCodec::new(shared.framing);
    match handle(
        &shared.node,
        &shared.metrics,
        shared.profile,
        &codec,
        None,
        &body,
        &mut out,
    ) {
        Ok(Handled::Now(seq)) => Applied::Now(out.to_vec(), seq),
        Ok(Handled::Later(reply)) => Applied::Later(
            Deferred {
                body,
                tpdu: None,
                profile: shared.profile,
                framing: shared.framing,
                _admitted: admitted,
            },
            reply,
        ),
        Err(_) => Applied::Unanswerable,
    }
}

/// A framed 91 for `body` that no engine state decided (a request of a
/// shard no node serves now); empty when no answer can be written.
fn unavailable_frame(shared: &IsoShared, body: &[u8]) -> Vec<u8> {
    let Ok(msg) = Message::decode(shared.profile, body) else {
        return Vec::new();
    };
    let Some(response_mti) = msg.mti().response() else {
        return Vec::new();
    };
    let reply = shared.node.apply(Command::Refuse {
        code: Code::UNAVAILABLE,
        rrn: rrn_of(&msg),
    });
    let mut out = BytesMut::with_capacity(256);
    let codec = FrameCodec::new(shared.framing);
    match codec.write_frame(&mut out, None, |buf| {
        encode_response(&msg, response_mti, &reply, buf)
    }) {
        Ok(_) => out.into(),
        Err(_) => Vec::new(),
    }
}

/// The terminal's framed answer, and the request's MTI; `None` when it
/// cannot be written (the connection's own answer path refuses such
/// frames the same way).
fn encode_answer(d: &Deferred, reply: &Reply) -> Option<(Vec<u8>, Mti)> {
    let msg = Message::decode(d.profile, &d.body).ok()?;
    let response_mti = msg.mti().response()?;
    let mut out = BytesMut::with_capacity(256);
    let codec = FrameCodec::new(d.framing);
    codec
        .write_frame(&mut out, d.tpdu.map(Tpdu::response), |buf| {
            encode_response(&msg, response_mti, reply, buf)
        })
        .ok()?;
    // The buffer becomes the vector (no copy).
    Some((out.into(), msg.mti()))
}

/// The final reply of a deferred message. A card is asked for at most
/// once per message (a second [`Wait::Velocity`] is answered 91).
async fn complete(
    node: &Node,
    router: Option<&crate::cluster_link::Router>,
    d: &Deferred,
    mut reply: Reply,
) -> Reply {
    let mut asked = false;
    let join_deadline = tokio::time::Instant::now()
        + node
            .forwarder
            .get()
            .and_then(|f| f.wires.iter().map(|w| w.timeout).max())
            .unwrap_or_default()
        + JOIN_SLACK;
    loop {
        match reply.wait {
            Wait::Upstream(f) => return forward(node, d, f, reply).await,
            Wait::Velocity {
                token,
                declined_before,
            } => {
                let Ok(msg) = Message::decode(d.profile, &d.body) else {
                    return Reply {
                        wait: Wait::Nothing,
                        ..reply
                    };
                };
                let req = to_request(&msg).ok().flatten();
                let ask = req.and_then(|r| VelocityAsk::new(&r, token, declined_before));
                let verdict = match (router.filter(|_| !asked), ask) {
                    (Some(router), Some(ask)) => router.ask_velocity(node, &ask).await,
                    _ => None,
                };
                asked = true;
                reply = match (verdict, req) {
                    (Some(card), Some(req)) => node.apply_message_counted(req, card),
                    // Not counted, or not in time: never approved without
                    // its count, and nothing is remembered.
                    _ => Reply {
                        wait: Wait::Nothing,
                        ..reply
                    },
                };
            }
            Wait::Joined(_) => {
                if tokio::time::Instant::now() >= join_deadline {
                    return Reply {
                        wait: Wait::Nothing,
                        ..reply
                    };
                }
                tokio::time::sleep(JOIN_POLL).await;
                let Ok(msg) = Message::decode(d.profile, &d.body) else {
                    return Reply {
                        wait: Wait::Nothing,
                        ..reply
                    };
                };
                reply = match to_request(&msg) {
                    Ok(Some(req)) => node.apply_message(req),
                    _ => Reply {
                        wait: Wait::Nothing,
                        ..reply
                    },
                };
            }
            _ => return reply,
        }
    }
}

/// Sends forward `f` once its record is durable, and resumes the engine
/// with how it ended.
async fn forward(node: &Node, d: &Deferred, f: ForwardRef, reply: Reply) -> Reply {
    let msg = Message::decode(d.profile, &d.body).ok();
    let terminal = msg
        .as_ref()
        .and_then(|m| m.raw(41).and_then(|t| t.try_into().ok()));
    crate::forwarding::forward_built(node, f, reply.record_seq, terminal, |wire, buf| {
        let msg = msg.as_ref().ok_or(())?;
        crate::forwarding::upstream_request(msg, f, wire, buf).map_err(|_| ())
    })
    .await
}
