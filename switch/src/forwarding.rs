//! The forwarding stage, for any edge: once a forward's record is durable
//! (so a crash cannot orphan it), send the message an edge builds over a
//! link ([`crate::upstream::Upstreams::exchange`]) and resume the engine
//! with how it ended ([`Command::Upstream`]). The ISO 8583 edge
//! (`wire/iso.rs`) forwards the terminal's message with the switch's F11
//! (unique among the link's requests in flight), a fresh F7 and the
//! upstream's F32 ([`upstream_request`]); internal frames build a MO/TO
//! request from scratch ([`moto_request`]). The issuer's F39 and F38 come
//! back in the engine's reply (`../shared/upstream.md`).

use bytes::BytesMut;
use codecs::iso8583::{EncodeError, Message, MessageWriter, Mti, Profile};
use engine::upstream::{ForwardRef, Outcome};
use engine::{Code, Command, Reply};

use crate::node::Node;
use crate::upstream::{ExchangeError, Forwarder, UpstreamWire};

/// Largest decoded binary field copied into an upstream request.
const BINARY_FIELD_BYTES_MAX: usize = 1024;

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
