//! The forwarding stage: what the shell does for a terminal's message the
//! engine routed to an issuer ([`Wait::Upstream`]) or that repeats one
//! still with its issuer ([`Wait::Joined`]). One task per such message:
//! wait for the forward's record to be durable, send the request over a
//! link ([`Upstreams::exchange`]), resume the engine with how it ended
//! ([`Command::Upstream`]) and hand the terminal's answer back to its
//! connection ([`Later`]), which writes it once its records are durable.
//!
//! The upstream request is the terminal's message with the switch's F11
//! (unique among the link's requests in flight), a fresh F7 and the
//! upstream's F32; its answer's F39 and F38 reach the terminal, with the
//! terminal's own F11 and F7 (`../shared/upstream.md`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use bytes::{Bytes, BytesMut};
use codecs::framing::{FrameCodec, FrameConfig, Tpdu};
use codecs::iso8583::{EncodeError, Message, MessageWriter, Mti, Profile};
use engine::upstream::{ForwardRef, Outcome};
use engine::{Code, Command, Reply, Wait};
use tokio::sync::mpsc;

use crate::node::Node;
use crate::upstream::{ExchangeError, LinkConfig, Upstreams};

/// A deferred answer for a connection: its framed bytes and the journal
/// sequence it waits for (0: none). Each connection holds at most
/// `limits.inflight_per_connection_max` requests unanswered, deferred
/// ones included, so its channel holds at most that many.
pub(crate) type Later = mpsc::UnboundedSender<(Vec<u8>, u64)>;

/// How often a repeat joined to a forward looks whether it ended.
const JOIN_POLL: Duration = Duration::from_millis(5);
/// Longest wait of a repeat for the forward it joined, past the
/// upstream's timeout (the forward's own task ends it by then).
const JOIN_SLACK: Duration = Duration::from_secs(1);
/// Largest decoded binary field copied into an upstream request.
const BINARY_FIELD_BYTES_MAX: usize = 1024;

/// What one upstream needs besides its links.
pub(crate) struct UpstreamWire {
    /// Encoding of its messages.
    pub(crate) profile: &'static Profile,
    /// F32 (empty: none).
    pub(crate) acquirer_id: String,
    /// Answer deadline.
    pub(crate) timeout: Duration,
}

/// The links and what encoding for each needs.
pub(crate) struct Forwarder {
    /// Every upstream's links.
    pub(crate) upstreams: Arc<Upstreams>,
    /// Per upstream, by index.
    pub(crate) wires: Vec<UpstreamWire>,
    /// An operator asked every SAF entry to be sent again now
    /// (`switch saf retry`, `POST /saf/retry`).
    pub(crate) saf_retry: tokio::sync::Notify,
}

impl Forwarder {
    /// Starts the links of every `[[upstreams]]` entry.
    pub(crate) fn start(
        config: &crate::config::Config,
        clock: crate::clock::Clock,
        cancel: tokio_util::sync::CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) -> anyhow::Result<Option<Arc<Forwarder>>> {
        if config.upstreams.is_empty() {
            return Ok(None);
        }
        let mut links = Vec::new();
        let mut wires = Vec::new();
        for u in &config.upstreams {
            let profile = Profile::by_name(&u.profile).unwrap_or(&Profile::ASCII);
            let framing = FrameConfig {
                header: if u.length_header == "ascii4" {
                    codecs::framing::LengthHeader::Ascii4
                } else {
                    codecs::framing::LengthHeader::Binary2
                },
                ..FrameConfig::default()
            };
            let timeout = Duration::from_millis(u.timeout_ms);
            let tls = match &u.tls_ca_file {
                None => None,
                Some(ca) => {
                    let key = |k: &str| format!("upstreams `{}`.{k}", u.name);
                    let connector = crate::net::tls::client_connector(
                        Some(ca),
                        u.tls_cert_file.as_deref(),
                        u.tls_key_file.as_deref(),
                    )
                    .with_context(|| key("tls_ca_file / tls_cert_file / tls_key_file"))?;
                    let host = u.addr.rsplit_once(':').map_or(u.addr.as_str(), |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                        .with_context(|| key("addr"))?;
                    Some((connector, name))
                }
            };
            links.push(LinkConfig {
                name: u.name.clone(),
                addr: u.addr.clone(),
                profile,
                framing,
                connections: u.connections,
                inflight_per_link_max: u.inflight_per_link_max,
                timeout,
                echo_interval: (u.echo_interval_s > 0)
                    .then(|| Duration::from_secs(u.echo_interval_s)),
                sign_on: u.sign_on,
                acquirer_id: u.acquirer_id.clone(),
                clock: clock.clone(),
                tls,
            });
            wires.push(UpstreamWire {
                profile,
                acquirer_id: u.acquirer_id.clone(),
                timeout,
            });
        }
        Ok(Some(Arc::new(Forwarder {
            upstreams: Upstreams::start(links, cancel, tracker),
            wires,
            saf_retry: tokio::sync::Notify::new(),
        })))
    }
}

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
}

/// Finishes a message the engine deferred (`reply.wait` is
/// [`Wait::Upstream`] or [`Wait::Joined`]) on a task of its own, and sends
/// the terminal's answer to `later`.
pub(crate) fn spawn(
    node: Arc<Node>,
    metrics: Arc<crate::metrics::Metrics>,
    deferred: Deferred,
    reply: Reply,
    later: Later,
) {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let reply = complete(&node, &deferred, reply).await;
        let answer = encode_answer(&deferred, &reply);
        if answer.is_some() {
            if let Ok(msg) = Message::decode(deferred.profile, &deferred.body) {
                metrics.answered(msg.mti(), reply.code, started);
            }
        }
        // Always one send per deferred request (empty when no answer can
        // be written), so the connection's count of them stays true. The
        // connection may have gone meanwhile: then nobody waits.
        let _ = later.send((answer.unwrap_or_default(), reply.wait.journal_seq()));
    });
}

/// The terminal's framed answer; `None` when it cannot be written (the
/// connection's own answer path refuses such frames the same way).
fn encode_answer(d: &Deferred, reply: &Reply) -> Option<Vec<u8>> {
    let msg = Message::decode(d.profile, &d.body).ok()?;
    let response_mti = msg.mti().response()?;
    let mut out = BytesMut::with_capacity(256);
    let codec = FrameCodec::new(d.framing);
    codec
        .write_frame(&mut out, d.tpdu.map(Tpdu::response), |buf| {
            crate::wire::iso::encode_response(&msg, response_mti, reply, buf)
        })
        .ok()?;
    Some(out.to_vec())
}

/// The final reply of a deferred message.
async fn complete(node: &Node, d: &Deferred, mut reply: Reply) -> Reply {
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
                reply = match crate::wire::iso::to_request(&msg) {
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
    let terminal = Message::decode(d.profile, &d.body)
        .ok()
        .and_then(|m| m.raw(41).and_then(|t| t.try_into().ok()));
    forward_built(node, f, reply.record_seq, terminal, |wire, buf| {
        let msg = Message::decode(d.profile, &d.body).map_err(|_| ())?;
        upstream_request(&msg, f, wire, buf).map_err(|_| ())
    })
    .await
}

/// Sends forward `f` (its record `record_seq`) once that record is
/// durable, as the message `build` writes for its upstream, and resumes
/// the engine with how it ended. For any edge: the ISO 8583 listener's
/// messages, the internal frames' MO/TO requests.
pub(crate) async fn forward_built(
    node: &Node,
    f: ForwardRef,
    record_seq: u64,
    terminal: Option<[u8; 8]>,
    build: impl FnOnce(&UpstreamWire, &mut BytesMut) -> Result<(), ()>,
) -> Reply {
    let outcome = match node.forwarder.get() {
        None => Outcome::NotSent,
        Some(fw) => {
            if durable(node, record_seq).await {
                exchange(fw, f, terminal, build).await
            } else {
                Outcome::NotSent
            }
        }
    };
    node.apply(Command::Upstream {
        forward: f.id,
        outcome,
    })
}

/// Waits until the journal's durable sequence reaches `seq`; false when
/// the journal failed (nothing may leave then).
async fn durable(node: &Node, seq: u64) -> bool {
    let Some(mut watch) = node.journal.durable_watch() else {
        return true;
    };
    while watch.durable_seq() < seq {
        if watch.changed().await.is_err() {
            return false;
        }
    }
    true
}

/// One exchange with the issuer, as an [`Outcome`].
async fn exchange(
    fw: &Forwarder,
    f: ForwardRef,
    terminal: Option<[u8; 8]>,
    build: impl FnOnce(&UpstreamWire, &mut BytesMut) -> Result<(), ()>,
) -> Outcome {
    let Some(wire) = fw.wires.get(usize::from(f.upstream)) else {
        return Outcome::NotSent;
    };
    let mut buf = BytesMut::with_capacity(512);
    if build(wire, &mut buf).is_err() {
        return Outcome::NotSent;
    }
    match fw
        .upstreams
        .exchange(usize::from(f.upstream), f.stan, terminal, buf.freeze())
        .await
    {
        Ok(answer) => issuer_decision(wire.profile, &answer),
        Err(ExchangeError::TimedOut | ExchangeError::LinkLost) => Outcome::TimedOut,
        Err(_) => Outcome::NotSent,
    }
}

/// The issuer's F39 and F38; an answer without a readable F39 is taken
/// as no answer (the issuer may still hold the request: it is reversed).
fn issuer_decision(profile: &'static Profile, answer: &[u8]) -> Outcome {
    let Ok(msg) = Message::decode(profile, answer) else {
        return Outcome::TimedOut;
    };
    let Some(code) = msg.raw(39).and_then(|c| <[u8; 2]>::try_from(c).ok()) else {
        return Outcome::TimedOut;
    };
    Outcome::Answered {
        code: Code(code),
        auth_code: msg.raw(38).and_then(|a| a.try_into().ok()),
    }
}

/// The upstream request: the terminal's message (first sending: a repeat
/// MTI becomes its original), F7 and F11 the forward's, F32 the
/// upstream's; binary fields re-encoded for the upstream's profile.
pub(crate) fn upstream_request(
    msg: &Message<'_>,
    f: ForwardRef,
    wire: &UpstreamWire,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mti: Mti = msg.mti().without_repeat();
    let mut w = MessageWriter::new(buf, wire.profile, mti);
    let mut scratch = [0u8; BINARY_FIELD_BYTES_MAX];
    let mut f32_written = wire.acquirer_id.is_empty();
    // A refund names the authorization as the issuer saw it.
    let f90 = f.original.map(|(mti, stan, transmission)| {
        let mut out = [b'0'; 42];
        let head = format!("{mti:04}{stan:06}{transmission:010}");
        out[..20].copy_from_slice(head.as_bytes());
        out
    });
    let mut f90_written = f90.is_none();
    for (n, raw) in msg.fields() {
        if n > 32 && !f32_written {
            w.field(32, wire.acquirer_id.as_bytes())?;
            f32_written = true;
        }
        if n >= 90 && !f90_written {
            if let Some(v) = &f90 {
                w.field(90, v)?;
            }
            f90_written = true;
            if n == 90 {
                continue;
            }
        }
        match n {
            7 => {
                w.number(7, f.transmission)?;
            }
            11 => {
                w.number(11, u64::from(f.stan))?;
            }
            32 => {}
            _ => {
                let value = match msg.binary(n) {
                    Some(b) => b.bytes(&mut scratch).unwrap_or(raw),
                    None => raw,
                };
                w.field(n, value)?;
            }
        }
    }
    if !f32_written {
        w.field(32, wire.acquirer_id.as_bytes())?;
    }
    if let (false, Some(v)) = (f90_written, &f90) {
        w.field(90, v)?;
    }
    w.finish()?;
    Ok(())
}

/// The upstream request of a MO/TO payment taken over internal frames:
/// built from scratch (F2 and F14 from the request, F22 012 keyed, F25 08
/// mail or telephone order; no CVV2, which the switch never keeps).
#[allow(clippy::too_many_arguments, reason = "the fields of one message")]
pub(crate) fn moto_request(
    sale: bool,
    pan: &[u8],
    expiry_yymm: [u8; 4],
    amount_minor: u64,
    currency: u16,
    terminal: [u8; 8],
    merchant: [u8; 15],
    f: ForwardRef,
    wire: &UpstreamWire,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mti = Mti::parse(if sale { "0200" } else { "0100" })
        .unwrap_or_else(|| unreachable!("a valid MTI"));
    let mut w = MessageWriter::new(buf, wire.profile, mti);
    w.field(2, pan)?;
    w.field(3, b"000000")?;
    w.number(4, amount_minor)?;
    w.number(7, f.transmission)?;
    w.number(11, u64::from(f.stan))?;
    w.field(14, &expiry_yymm)?;
    w.field(22, b"012")?;
    w.field(25, b"08")?;
    if !wire.acquirer_id.is_empty() {
        w.field(32, wire.acquirer_id.as_bytes())?;
    }
    w.field(41, &terminal)?;
    w.field(42, &merchant)?;
    w.number(49, u64::from(currency))?;
    w.finish()?;
    Ok(())
}
