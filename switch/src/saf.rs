//! The SAF sender: delivers the engine's store-and-forward entries
//! (reversals of timed-out requests, advices of captures, reversals and
//! stand-in approvals) to their issuers, as 0420/0220/0120 and then as
//! repeats (0421/0221/0121) with backoff until answered (any F39), and
//! ends each with [`Command::SafDone`]. Entries live in the engine
//! (journaled, in every snapshot), so they survive restarts; retry timing
//! is memory only (after a restart every entry is due at once). An entry
//! not answered within `saf.expire_s` is dropped, logged and counted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use codecs::iso8583::{EncodeError, Message, MessageWriter, Mti};
use engine::upstream::{SafEntry, SafKind};
use engine::{Command, Query, QueryReply};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::node::Node;
use crate::ratelog::warn_limited;
use crate::upstream::{Forwarder, UpstreamWire};

/// How often the queue is looked at.
const SAF_TICK: Duration = Duration::from_millis(100);
/// Most entries looked at per tick (oldest first).
const SAF_SCAN_MAX: usize = 10_000;
/// Most entries being sent at once, over every upstream.
const SAF_SENDS_MAX: usize = 256;

/// Retry settings, from `[saf]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    first: Duration,
    max: Duration,
    expire_ms: u64,
}

impl Retry {
    pub(crate) fn of(config: &Config) -> Retry {
        Retry {
            first: Duration::from_millis(config.saf.retry_interval_ms),
            max: Duration::from_millis(config.saf.retry_interval_max_ms),
            expire_ms: config.saf.expire_s * 1000,
        }
    }

    /// The wait after `attempts` failed sendings: doubling from the first,
    /// capped.
    fn backoff(&self, attempts: u32) -> Duration {
        let doubled = self
            .first
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        doubled.min(self.max)
    }
}

/// One entry's sending state, memory only.
#[derive(Clone, Copy, Debug)]
struct Tries {
    attempts: u32,
    next: Instant,
    sending: bool,
}

/// Runs until `cancel`.
pub(crate) async fn run(
    node: Arc<Node>,
    fw: Arc<Forwarder>,
    retry: Retry,
    cancel: CancellationToken,
) {
    let mut tries: HashMap<u64, Tries> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, bool)>();
    let mut sending = 0usize;
    let mut tick = tokio::time::interval(SAF_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = fw.saf_retry.notified() => {
                let now = Instant::now();
                for t in tries.values_mut() {
                    t.next = now;
                }
                tick.reset_immediately();
            }
            Some((id, ok)) = done_rx.recv() => {
                sending = sending.saturating_sub(1);
                if ok {
                    tries.remove(&id);
                } else if let Some(t) = tries.get_mut(&id) {
                    t.sending = false;
                    t.next = Instant::now() + retry.backoff(t.attempts);
                }
            }
            _ = tick.tick() => {
                let QueryReply::Saf(entries) = node.query(Query::Saf { upstream: None, limit: SAF_SCAN_MAX }) else {
                    continue;
                };
                gauges(&node, &fw);
                let now = Instant::now();
                let now_ms = node.clock.now_ms();
                tries.retain(|id, _| entries.iter().any(|e| e.id == *id));
                // One entry at a time per original message, oldest first:
                // an issuer sees a payment's advices in the order of its
                // changes (a partial capture's before the final one's).
                let mut held = HashSet::new();
                for e in &entries {
                    if now_ms.saturating_sub(e.created_ms) > retry.expire_ms {
                        if node.apply(Command::SafDone { id: e.id }).count == 1 {
                            ::metrics::counter!("switch_saf_expired_total", "upstream" => e.upstream.clone(), "kind" => e.kind.label()).increment(1);
                            warn_limited!("saf_expired", upstream = %e.upstream, kind = e.kind.label(), id = e.id, "SAF entry expired unanswered; dropped");
                        }
                        continue;
                    }
                    let original = (e.upstream.as_str(), e.original_mti, e.original_stan, e.original_transmission, e.terminal);
                    if !held.insert(original) {
                        continue;
                    }
                    let t = tries.entry(e.id).or_insert(Tries { attempts: 0, next: now, sending: false });
                    if t.sending || t.next > now || sending >= SAF_SENDS_MAX {
                        continue;
                    }
                    let Some(u) = fw.upstreams.index(&e.upstream) else {
                        warn_limited!("saf_unknown_upstream", upstream = %e.upstream, "SAF entry for an upstream no longer configured; kept");
                        continue;
                    };
                    let Some(wire) = fw.wires.get(u) else { continue };
                    if fw.upstreams.connected(u) == 0 {
                        // Nothing to send on: not an attempt.
                        continue;
                    }
                    let mut body = BytesMut::with_capacity(256);
                    if advice(e, t.attempts > 0, wire, &mut body).is_err() {
                        continue;
                    }
                    t.attempts += 1;
                    t.sending = true;
                    sending += 1;
                    let (node, fw, done) = (node.clone(), fw.clone(), done_tx.clone());
                    let e = e.clone();
                    tokio::spawn(async move {
                        let ok = send(&node, &fw, u, &e, body).await;
                        let _ = done.send((e.id, ok));
                    });
                }
            }
        }
    }
}

/// Sends one entry; true once the issuer answered it and it ended.
async fn send(node: &Node, fw: &Forwarder, u: usize, e: &SafEntry, body: BytesMut) -> bool {
    let answer = fw
        .upstreams
        .exchange(u, e.stan, Some(e.terminal), body.freeze())
        .await;
    match answer {
        Ok(a) => {
            let profile = fw
                .wires
                .get(u)
                .map_or(&codecs::iso8583::Profile::ASCII, |w| w.profile);
            if Message::decode(profile, &a).is_err() {
                return false;
            }
            let label = match e.kind {
                SafKind::TimeoutReversal | SafKind::Reversal => "reversal",
                SafKind::Capture | SafKind::PartialCapture | SafKind::StandIn => "advice",
            };
            ::metrics::counter!("switch_saf_acknowledged_total", "upstream" => e.upstream.clone(), "kind" => label)
                .increment(1);
            node.apply(Command::SafDone { id: e.id });
            true
        }
        Err(_) => {
            ::metrics::counter!("switch_saf_retries_total", "upstream" => e.upstream.clone())
                .increment(1);
            false
        }
    }
}

/// Depth and oldest entry's age per upstream.
fn gauges(node: &Node, fw: &Forwarder) {
    let QueryReply::SafDepths(depths) = node.query(Query::SafDepths) else {
        return;
    };
    let now_ms = node.clock.now_ms();
    for name in fw.upstreams.names() {
        let (n, oldest) = depths
            .iter()
            .find(|d| d.0 == name)
            .map_or((0, now_ms), |d| (d.1, d.2));
        ::metrics::gauge!("switch_saf_depth", "upstream" => name.to_owned()).set(n as f64);
        ::metrics::gauge!("switch_saf_oldest_age_seconds", "upstream" => name.to_owned())
            .set(now_ms.saturating_sub(oldest) as f64 / 1000.0);
    }
}

/// F48 subelement 21 (message reason) `4021`: timeout.
const REASON_TIMEOUT: &[u8] = b"21044021";
/// F48 of a partial capture's advice: subelement 22 = 1, the rest of the
/// hold stays open (as the terminal's 0220 said).
const PARTIAL_CAPTURE: &[u8] = b"22011";

/// The advice or reversal message of `e` (a repeat when `repeat`).
pub(crate) fn advice(
    e: &SafEntry,
    repeat: bool,
    wire: &UpstreamWire,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let number = e.kind.mti() + u16::from(repeat);
    let mti = Mti::parse(&format!("{number:04}"))
        .unwrap_or_else(|| Mti::parse("0420").unwrap_or_else(|| unreachable!("a valid MTI")));
    let mut w = MessageWriter::new(buf, wire.profile, mti);
    w.field(
        3,
        if e.processing == 20 {
            b"200000"
        } else {
            b"000000"
        },
    )?;
    w.number(4, e.amount_minor)?;
    w.number(7, e.transmission)?;
    w.number(11, u64::from(e.stan))?;
    if !wire.acquirer_id.is_empty() {
        w.field(32, wire.acquirer_id.as_bytes())?;
    }
    w.field(37, &e.rrn)?;
    let with_auth = matches!(
        e.kind,
        SafKind::Capture | SafKind::PartialCapture | SafKind::StandIn
    );
    if with_auth && e.auth_code != [b' '; 6] {
        w.field(38, &e.auth_code)?;
    }
    if e.kind == SafKind::StandIn {
        w.field(39, &e.code.0)?;
    }
    w.field(41, &e.terminal)?;
    w.field(42, &e.merchant_id)?;
    if e.kind == SafKind::TimeoutReversal {
        w.field(48, REASON_TIMEOUT)?;
    }
    if e.kind == SafKind::PartialCapture {
        w.field(48, PARTIAL_CAPTURE)?;
    }
    w.number(49, u64::from(e.currency))?;
    let original = codecs::iso8583::f90::OriginalData {
        mti: Mti::parse(&format!("{:04}", e.original_mti))
            .unwrap_or_else(|| Mti::parse("0100").unwrap_or_else(|| unreachable!("a valid MTI"))),
        stan: e.original_stan,
        transmission: digits10(e.original_transmission),
    };
    w.field(90, &original.to_field())?;
    if let Some(r) = e.replacement_minor {
        // F95: the replacement amount, then zeros (as terminals send it).
        w.field(95, format!("{r:012}{:030}", 0).as_bytes())?;
    }
    w.finish()?;
    Ok(())
}

/// `v` as 10 digits.
fn digits10(mut v: u64) -> [u8; 10] {
    let mut out = [b'0'; 10];
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out
}

/// An entry as operators see it (`GET /saf`, `switch saf list`): no card
/// data is in an entry.
pub(crate) fn entry_json(e: &SafEntry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "kind": e.kind.label(),
        "mti": format!("{:04}", e.kind.mti()),
        "upstream": e.upstream,
        "stan": format!("{:06}", e.stan),
        "created_ms": e.created_ms,
        "original": format!("{:04}{:06}{:010}", e.original_mti, e.original_stan, e.original_transmission),
        "amount_minor": e.amount_minor,
        "currency": e.currency,
        "terminal": String::from_utf8_lossy(&e.terminal),
        "merchant": String::from_utf8_lossy(&e.merchant_id),
        "rrn": String::from_utf8_lossy(&e.rrn),
    })
}

/// Most entries `GET /saf` lists (oldest first).
pub(crate) const SAF_LIST_MAX: usize = 1_000;

/// The SAF as JSON lines, oldest first, at most [`SAF_LIST_MAX`].
pub(crate) fn list_lines(node: &Node) -> String {
    let QueryReply::Saf(entries) = node.query(Query::Saf {
        upstream: None,
        limit: SAF_LIST_MAX,
    }) else {
        return String::new();
    };
    let mut out = String::new();
    for e in &entries {
        out.push_str(&entry_json(e).to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_to_the_cap() {
        let r = Retry {
            first: Duration::from_millis(1_000),
            max: Duration::from_millis(60_000),
            expire_ms: 1,
        };
        assert_eq!(r.backoff(1), Duration::from_millis(1_000));
        assert_eq!(r.backoff(2), Duration::from_millis(2_000));
        assert_eq!(r.backoff(4), Duration::from_millis(8_000));
        assert_eq!(r.backoff(40), Duration::from_millis(60_000));
    }
}
