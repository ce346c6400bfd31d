//! Routing to issuer hosts (`../shared/upstream.md`): where a PAN goes,
//! the authorizations waiting for an issuer (pending forwards), and the
//! store-and-forward queue (SAF) of advices and reversals. The engine
//! decides and records; the shell sends, matches and times out, and comes
//! back through the one door ([`crate::Command::Upstream`],
//! [`crate::Command::SafDone`]).
//!
//! Both tables are journaled (records of type [`RECORD_UPSTREAM`]) and in
//! every snapshot, so they survive a crash: a forward still pending after
//! recovery is one whose issuer answer was never journaled, and gets a
//! reversal ([`crate::Engine::reverse_orphans`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use codecs::card::{CardToken, MaskedPan};

use crate::bytes::{DecodeError, In, Out};
use crate::code::Code;
use crate::idempotency::MessageKey;
use crate::lifecycle::Extras;

/// Record type of a change of the upstream tables.
pub const RECORD_UPSTREAM: u8 = 2;
/// Format version of an upstream record.
const VERSION: u8 = 1;
/// Most pending forwards (authorizations waiting for an issuer) by
/// default: beyond it a routed authorization is answered 91 at once.
pub const FORWARDS_MAX_DEFAULT: usize = 65_536;
/// Fill of the SAF (% of its limit) from which no new authorization is
/// forwarded (91): the rest is kept for the advices of captures and
/// reversals of payments already forwarded.
pub const SAF_FORWARD_STOP_PCT: usize = 90;

/// Where a PAN goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The switch decides itself.
    Local,
    /// The issuer host at this index of `[[upstreams]]`.
    Upstream(u16),
    /// Declined with 91 (no route).
    Decline,
}

/// One routing rule: PANs whose first `digits` digits, read as a number,
/// are within `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRule {
    /// Digits compared.
    pub digits: u8,
    /// Lowest prefix.
    pub lo: u64,
    /// Highest prefix.
    pub hi: u64,
    /// Where a match goes.
    pub route: Route,
}

/// The routing table: first matching rule wins, else `default`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// Rules, in order.
    pub rules: Vec<RouteRule>,
    /// Where a PAN matching no rule goes.
    pub default: Route,
    /// Upstream names by index (records name their host, so reordering
    /// `[[upstreams]]` does not send advices to another one).
    pub upstreams: Vec<String>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            rules: Vec::new(),
            default: Route::Local,
            upstreams: Vec::new(),
        }
    }
}

impl Routing {
    /// Where `pan` (its digits) goes.
    pub fn route(&self, pan: &[u8]) -> Route {
        for r in &self.rules {
            let Some(head) = pan.get(..usize::from(r.digits)) else {
                continue;
            };
            let n = head
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d.wrapping_sub(b'0') % 10));
            if (r.lo..=r.hi).contains(&n) {
                return r.route;
            }
        }
        self.default
    }

    /// The index of upstream `name`.
    pub fn index_of(&self, name: &str) -> Option<u16> {
        self.upstreams
            .iter()
            .position(|n| n == name)
            .and_then(|i| u16::try_from(i).ok())
    }
}

/// Decisions taken locally when the issuer cannot answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandIn {
    /// Whether stand-in is on.
    pub enabled: bool,
    /// Highest amount approved per currency; a currency not listed is
    /// never stood in for.
    pub amount_max_minor: Vec<(u16, u64)>,
}

impl StandIn {
    /// Whether `amount` in `currency` may be approved locally.
    pub fn allows(&self, currency: u16, amount_minor: u64) -> bool {
        self.enabled
            && self
                .amount_max_minor
                .iter()
                .any(|&(c, max)| c == currency && amount_minor <= max)
    }
}

pub use crate::lifecycle::Forwarded;

/// What the shell needs to send a forward: the reply's
/// [`crate::Wait::Upstream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardRef {
    /// The pending forward's id, for [`crate::Command::Upstream`].
    pub id: u64,
    /// Index of the upstream.
    pub upstream: u16,
    /// The switch's F11 on the upstream request.
    pub stan: u32,
    /// F7 of the upstream request (MMDDhhmmss as a number).
    pub transmission: u64,
    /// For a refund: the forwarded authorization it refunds (MTI, the
    /// switch's F11 and F7 as the issuer saw them), its F90 upstream.
    pub original: Option<(u16, u32, u64)>,
}

/// How a forwarded request ended, as the shell saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The issuer answered with F39 `code` (and F38 on approval).
    Answered {
        /// The issuer's F39.
        code: Code,
        /// The issuer's F38.
        auth_code: Option<[u8; 6]>,
    },
    /// Sent, no answer within the deadline (or the link closed after
    /// sending): the issuer may hold it, so it is reversed.
    TimedOut,
    /// Never sent (no link, or no room on any): nothing to reverse.
    NotSent,
}

/// What a SAF entry sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SafKind {
    /// 0420 of a forwarded request that timed out (or was in flight at a
    /// crash), F48.21 = 4021.
    TimeoutReversal,
    /// 0420 of a terminal's reversal of an issuer-authorized payment.
    Reversal,
    /// 0220 of a capture of an issuer-authorized pre-authorization.
    Capture,
    /// 0120 of an approval the switch gave in the issuer's stead.
    StandIn,
    /// 0220 of a partial capture of an issuer-authorized pre-authorization
    /// (F48.22 = 1: the issuer keeps the rest held).
    PartialCapture,
}

impl SafKind {
    fn code(self) -> u8 {
        match self {
            SafKind::TimeoutReversal => 0,
            SafKind::Reversal => 1,
            SafKind::Capture => 2,
            SafKind::StandIn => 3,
            SafKind::PartialCapture => 4,
        }
    }

    fn of(code: u8) -> Option<SafKind> {
        Some(match code {
            0 => SafKind::TimeoutReversal,
            1 => SafKind::Reversal,
            2 => SafKind::Capture,
            3 => SafKind::StandIn,
            4 => SafKind::PartialCapture,
            _ => return None,
        })
    }

    /// MTI of its first sending (the repeats add 1).
    pub fn mti(self) -> u16 {
        match self {
            SafKind::TimeoutReversal | SafKind::Reversal => 420,
            SafKind::Capture | SafKind::PartialCapture => 220,
            SafKind::StandIn => 120,
        }
    }

    /// Label for metrics and listings.
    pub fn label(self) -> &'static str {
        match self {
            SafKind::TimeoutReversal => "timeout_reversal",
            SafKind::Reversal => "reversal",
            SafKind::Capture => "capture",
            SafKind::StandIn => "stand_in",
            SafKind::PartialCapture => "partial_capture",
        }
    }
}

/// An advice or reversal to deliver, until the issuer answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafEntry {
    /// Its id (ascending: oldest first).
    pub id: u64,
    /// What it sends.
    pub kind: SafKind,
    /// The upstream's name.
    pub upstream: String,
    /// Its own F11 (the repeats keep it).
    pub stan: u32,
    /// Its own F7 (MMDDhhmmss as a number).
    pub transmission: u64,
    /// When it was queued, ms.
    pub created_ms: u64,
    /// F90: the forwarded request's MTI, F11 and F7.
    pub original_mti: u16,
    /// F90's F11.
    pub original_stan: u32,
    /// F90's F7.
    pub original_transmission: u64,
    /// The pending forward it ends (timeout reversals; 0: none).
    pub forward: u64,
    /// F3's first two digits: 00 purchase, 20 refund.
    pub processing: u8,
    /// F4.
    pub amount_minor: u64,
    /// F95's replacement amount (a partial reversal).
    pub replacement_minor: Option<u64>,
    /// F49.
    pub currency: u16,
    /// F41.
    pub terminal: [u8; 8],
    /// F42.
    pub merchant_id: [u8; 15],
    /// F37 of the payment.
    pub rrn: [u8; 12],
    /// F38 (stand-in and captures).
    pub auth_code: [u8; 6],
    /// F39 given (stand-in).
    pub code: Code,
}

/// What a forward asks of the issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ForwardOp {
    /// Pre-authorization (0100).
    PreAuth,
    /// Sale (0200, F3 00).
    Sale,
    /// Refund (0200, F3 20).
    Refund,
}

/// What making the payment of a forward needs, in memory only (a forward
/// replayed after a crash is reversed, never completed).
#[derive(Clone, Debug)]
pub(crate) struct Making {
    pub(crate) op: ForwardOp,
    pub(crate) terminal: [u8; 8],
    pub(crate) card: (CardToken, MaskedPan),
    pub(crate) content_crc: u32,
    pub(crate) flag: Option<&'static str>,
    pub(crate) extras: Option<Box<Extras>>,
    /// A refund's payment (the issuer decides whether it is refunded).
    pub(crate) refund_of: Option<u64>,
}

/// An authorization waiting for its issuer.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Id (from the same counter as SAF entries).
    pub id: u64,
    /// Upstream name.
    pub upstream: String,
    /// The switch's F11 upstream.
    pub stan: u32,
    /// F7 upstream.
    pub transmission: u64,
    /// MTI upstream (100 or 200).
    pub mti: u16,
    /// F3's first two digits upstream: 00 purchase, 20 refund.
    pub processing: u8,
    /// The terminal's message key, for repeats and for knowing after a
    /// crash whether its answer was journaled.
    pub key: Option<MessageKey>,
    /// When it was forwarded.
    pub created_ms: u64,
    /// Merchant index.
    pub merchant: u32,
    /// F42.
    pub merchant_id: [u8; 15],
    /// F41.
    pub terminal: [u8; 8],
    /// F4.
    pub amount_minor: u64,
    /// F49.
    pub currency: u16,
    /// F37 given to the terminal.
    pub rrn: [u8; 12],
    pub(crate) making: Option<Box<Making>>,
}

/// A change of the upstream tables, as journaled.
#[derive(Clone, Debug)]
pub enum UpstreamRecord {
    /// A forward was made (before it is sent).
    Forward(Pending),
    /// A forward ended without a payment record naming it (recovery).
    ForwardDone(u64),
    /// An entry was queued.
    SafQueued(SafEntry),
    /// An entry was answered (or expired, or dropped by an operator).
    SafDone(u64),
}

/// The pending forwards and the SAF, with their counters.
pub(crate) struct UpstreamState {
    forwards: Mutex<Forwards>,
    saf: Mutex<BTreeMap<u64, SafEntry>>,
    /// Next forward or SAF id.
    next_id: AtomicU64,
    pub(crate) forwards_max: usize,
    pub(crate) saf_max: usize,
}

#[derive(Default)]
struct Forwards {
    by_id: HashMap<u64, Pending>,
    by_key: HashMap<MessageKey, u64>,
}

impl UpstreamState {
    /// Empty tables for `upstreams` hosts; F11s and ids seeded by `now_ms`
    /// so a restart does not reuse the last life's.
    pub(crate) fn new(forwards_max: usize, saf_max: usize, now_ms: u64) -> Self {
        UpstreamState {
            forwards: Mutex::new(Forwards::default()),
            saf: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(now_ms.saturating_mul(1_000).max(1)),
            forwards_max,
            saf_max,
        }
    }

    /// A fresh id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh F11 for any upstream: 1..=999,999, from the id counter,
    /// which is seeded with the millisecond times 1,000. Within a life it
    /// cycles (unique among the requests in flight while fewer than
    /// 999,999 are); across a quick restart it does not restart where the
    /// last life began: a seed per second did, and a switch killed and
    /// started within the second sent the same F11 and F7 as its last
    /// life (found by tests/crash_upstream.rs), which an issuer takes for
    /// a duplicate and a reversal cannot tell apart.
    pub(crate) fn next_stan(&self) -> u32 {
        (self.next_id() % 999_999) as u32 + 1
    }

    fn forwards(&self) -> std::sync::MutexGuard<'_, Forwards> {
        self.forwards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn saf(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SafEntry>> {
        self.saf.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pending forward of message `key`, if one is waiting.
    pub(crate) fn pending_for(&self, key: &MessageKey) -> Option<u64> {
        self.forwards().by_key.get(key).copied()
    }

    /// Whether another forward fits; else the limit in the way (the label
    /// of `switch_limit_reached_total`).
    pub(crate) fn forward_room(&self) -> Result<(), &'static str> {
        if self.forwards().by_id.len() >= self.forwards_max {
            return Err("forwards_max");
        }
        if self.saf_len() * 100 >= self.saf_max * SAF_FORWARD_STOP_PCT {
            return Err("saf_forward_stop");
        }
        Ok(())
    }

    /// Whether another SAF entry fits.
    pub(crate) fn saf_room(&self) -> bool {
        self.saf_len() < self.saf_max
    }

    pub(crate) fn saf_len(&self) -> usize {
        self.saf().len()
    }

    pub(crate) fn forwards_len(&self) -> usize {
        self.forwards().by_id.len()
    }

    pub(crate) fn add_forward(&self, p: Pending) {
        let mut f = self.forwards();
        if let Some(k) = p.key {
            f.by_key.insert(k, p.id);
        }
        self.bump(p.id);
        f.by_id.insert(p.id, p);
    }

    /// Starts ending forward `id`: a copy of it and what making its
    /// payment needs, taken so that it ends once only (`None`: unknown,
    /// replayed after a crash, or ending already). It stays pending (for
    /// repeats to join) until [`UpstreamState::take_forward`].
    pub(crate) fn begin_end(&self, id: u64) -> Option<(Pending, Box<Making>)> {
        let mut f = self.forwards();
        let p = f.by_id.get_mut(&id)?;
        let making = p.making.take()?;
        let mut copy = p.clone();
        copy.making = None;
        Some((copy, making))
    }

    /// Puts back what [`UpstreamState::begin_end`] took (the end failed).
    pub(crate) fn restore_making(&self, id: u64, making: Box<Making>) {
        if let Some(p) = self.forwards().by_id.get_mut(&id) {
            p.making = Some(making);
        }
    }

    pub(crate) fn take_forward(&self, id: u64) -> Option<Pending> {
        let mut f = self.forwards();
        let p = f.by_id.remove(&id)?;
        if let Some(k) = p.key {
            if f.by_key.get(&k) == Some(&id) {
                f.by_key.remove(&k);
            }
        }
        Some(p)
    }

    /// Every pending forward, as copies.
    pub(crate) fn forwards_list(&self) -> Vec<Pending> {
        let mut v: Vec<Pending> = self.forwards().by_id.values().cloned().collect();
        v.sort_by_key(|p| p.id);
        v
    }

    pub(crate) fn add_saf(&self, e: SafEntry) {
        self.bump(e.id);
        self.saf().insert(e.id, e);
    }

    pub(crate) fn remove_saf(&self, id: u64) -> Option<SafEntry> {
        self.saf().remove(&id)
    }

    /// Up to `limit` entries, oldest first; of `upstream` only, if given.
    pub(crate) fn saf_list(&self, upstream: Option<&str>, limit: usize) -> Vec<SafEntry> {
        self.saf()
            .values()
            .filter(|e| upstream.is_none_or(|u| e.upstream == u))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Per upstream: entries and the oldest's queue time; one walk, no
    /// copies of entries.
    pub(crate) fn saf_depths(&self) -> Vec<(String, usize, u64)> {
        let mut out: Vec<(String, usize, u64)> = Vec::new();
        for e in self.saf().values() {
            match out.iter_mut().find(|d| d.0 == e.upstream) {
                Some(d) => {
                    d.1 += 1;
                    d.2 = d.2.min(e.created_ms);
                }
                None => out.push((e.upstream.clone(), 1, e.created_ms)),
            }
        }
        out
    }

    /// Whether an entry ends forward `id`.
    pub(crate) fn saf_has_forward(&self, id: u64) -> bool {
        self.saf().values().any(|e| e.forward == id)
    }

    /// Keeps later ids above a replayed one.
    fn bump(&self, id: u64) {
        self.next_id.fetch_max(id + 1, Ordering::Relaxed);
    }
}

/// F7 (MMDDhhmmss, UTC) of `now_ms`, as a number.
pub fn transmission_of(now_ms: u64) -> u64 {
    let secs = now_ms / 1000;
    let (_, month, day) = codecs::iso8583::datetime::civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    ((month * 100 + day) * 100 + s / 3600) * 10_000 + (s % 3600 / 60) * 100 + s % 60
}

fn put_pending(o: &mut Out<'_>, p: &Pending) {
    o.u64(p.id);
    o.text(&p.upstream);
    o.u32(p.stan);
    o.u64(p.transmission);
    o.u16(p.mti);
    o.u8(p.processing);
    match &p.key {
        None => o.u8(0),
        Some(k) => {
            o.u8(1);
            o.u16(k.mti);
            o.bytes(&k.terminal);
            o.u32(k.stan);
            o.u64(k.transmission);
        }
    }
    o.u64(p.created_ms);
    o.u32(p.merchant);
    o.bytes(&p.merchant_id);
    o.bytes(&p.terminal);
    o.u64(p.amount_minor);
    o.u16(p.currency);
    o.bytes(&p.rrn);
}

fn get_pending(i: &mut In<'_>) -> Result<Pending, DecodeError> {
    let id = i.u64()?;
    let upstream = i.text()?;
    let stan = i.u32()?;
    let transmission = i.u64()?;
    let mti = i.u16()?;
    let processing = i.u8()?;
    let key = if i.flag()? {
        Some(MessageKey {
            mti: i.u16()?,
            terminal: i.arr()?,
            stan: i.u32()?,
            transmission: i.u64()?,
        })
    } else {
        None
    };
    Ok(Pending {
        id,
        upstream,
        stan,
        transmission,
        mti,
        processing,
        key,
        created_ms: i.u64()?,
        merchant: i.u32()?,
        merchant_id: i.arr()?,
        terminal: i.arr()?,
        amount_minor: i.u64()?,
        currency: i.u16()?,
        rrn: i.arr()?,
        making: None,
    })
}

fn put_saf(o: &mut Out<'_>, e: &SafEntry) {
    o.u64(e.id);
    o.u8(e.kind.code());
    o.text(&e.upstream);
    o.u32(e.stan);
    o.u64(e.transmission);
    o.u64(e.created_ms);
    o.u16(e.original_mti);
    o.u32(e.original_stan);
    o.u64(e.original_transmission);
    o.u64(e.forward);
    o.u8(e.processing);
    o.u64(e.amount_minor);
    match e.replacement_minor {
        None => o.u8(0),
        Some(r) => {
            o.u8(1);
            o.u64(r);
        }
    }
    o.u16(e.currency);
    o.bytes(&e.terminal);
    o.bytes(&e.merchant_id);
    o.bytes(&e.rrn);
    o.bytes(&e.auth_code);
    o.bytes(&e.code.0);
}

fn get_saf(i: &mut In<'_>) -> Result<SafEntry, DecodeError> {
    Ok(SafEntry {
        id: i.u64()?,
        kind: SafKind::of(i.u8()?).ok_or(DecodeError("unknown SAF kind"))?,
        upstream: i.text()?,
        stan: i.u32()?,
        transmission: i.u64()?,
        created_ms: i.u64()?,
        original_mti: i.u16()?,
        original_stan: i.u32()?,
        original_transmission: i.u64()?,
        forward: i.u64()?,
        processing: i.u8()?,
        amount_minor: i.u64()?,
        replacement_minor: if i.flag()? { Some(i.u64()?) } else { None },
        currency: i.u16()?,
        terminal: i.arr()?,
        merchant_id: i.arr()?,
        rrn: i.arr()?,
        auth_code: i.arr()?,
        code: Code(i.arr()?),
    })
}

/// Encodes an upstream record into `buf` (cleared first).
pub fn encode(rec: &UpstreamRecord, buf: &mut Vec<u8>) {
    buf.clear();
    let mut o = Out(buf);
    o.u8(VERSION);
    match rec {
        UpstreamRecord::Forward(p) => {
            o.u8(0);
            put_pending(&mut o, p);
        }
        UpstreamRecord::ForwardDone(id) => {
            o.u8(1);
            o.u64(*id);
        }
        UpstreamRecord::SafQueued(e) => {
            o.u8(2);
            put_saf(&mut o, e);
        }
        UpstreamRecord::SafDone(id) => {
            o.u8(3);
            o.u64(*id);
        }
    }
}

/// Decodes an upstream record.
///
/// # Errors
/// [`DecodeError`] on an unknown version or kind, truncation or trailing bytes.
pub fn decode(payload: &[u8]) -> Result<UpstreamRecord, DecodeError> {
    let mut i = In(payload);
    if i.u8()? != VERSION {
        return Err(DecodeError("unknown upstream record version"));
    }
    let rec = match i.u8()? {
        0 => UpstreamRecord::Forward(get_pending(&mut i)?),
        1 => UpstreamRecord::ForwardDone(i.u64()?),
        2 => UpstreamRecord::SafQueued(get_saf(&mut i)?),
        3 => UpstreamRecord::SafDone(i.u64()?),
        _ => return Err(DecodeError("unknown upstream record kind")),
    };
    if !i.done() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(rec)
}

/// Appends the snapshot section of the upstream tables.
pub(crate) fn put_snapshot(o: &mut Out<'_>, forwards: &[Pending], saf: &[SafEntry]) {
    o.u64(forwards.len() as u64);
    for p in forwards {
        put_pending(o, p);
    }
    o.u64(saf.len() as u64);
    for e in saf {
        put_saf(o, e);
    }
}

/// Reads the snapshot section of the upstream tables.
pub(crate) fn get_snapshot(i: &mut In<'_>) -> Result<(Vec<Pending>, Vec<SafEntry>), DecodeError> {
    let n = i.u64()?;
    if n as usize > i.0.len() {
        return Err(DecodeError("count past the end"));
    }
    let mut forwards = Vec::with_capacity(n as usize);
    for _ in 0..n {
        forwards.push(get_pending(i)?);
    }
    let n = i.u64()?;
    if n as usize > i.0.len() {
        return Err(DecodeError("count past the end"));
    }
    let mut saf = Vec::with_capacity(n as usize);
    for _ in 0..n {
        saf.push(get_saf(i)?);
    }
    Ok((forwards, saf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins_then_the_default() {
        let r = Routing {
            rules: vec![
                RouteRule {
                    digits: 6,
                    lo: 510_000,
                    hi: 559_999,
                    route: Route::Upstream(1),
                },
                RouteRule {
                    digits: 1,
                    lo: 4,
                    hi: 4,
                    route: Route::Upstream(0),
                },
            ],
            default: Route::Decline,
            upstreams: vec!["visa".into(), "mc".into()],
        };
        assert_eq!(r.route(b"4111111111111111"), Route::Upstream(0));
        assert_eq!(r.route(b"5200000000000007"), Route::Upstream(1));
        assert_eq!(r.route(b"5600000000000000"), Route::Decline);
        assert_eq!(r.route(b"3"), Route::Decline, "shorter than a rule");
        assert_eq!(r.index_of("mc"), Some(1));
    }

    #[test]
    fn stand_in_only_within_its_currency_limit() {
        let s = StandIn {
            enabled: true,
            amount_max_minor: vec![(978, 5_000)],
        };
        assert!(s.allows(978, 5_000));
        assert!(!s.allows(978, 5_001));
        assert!(!s.allows(840, 1));
        assert!(!StandIn::default().allows(978, 1));
    }

    #[test]
    fn transmission_is_mmddhhmmss_utc() {
        // 2026-12-06 13:55:33 UTC.
        assert_eq!(transmission_of(1_796_565_333_000), 1_206_135_533);
    }

    fn entry() -> SafEntry {
        SafEntry {
            id: 7,
            kind: SafKind::TimeoutReversal,
            upstream: "visa-sim".into(),
            stan: 12,
            transmission: 1_206_135_533,
            created_ms: 99,
            original_mti: 100,
            original_stan: 11,
            original_transmission: 1_206_135_530,
            forward: 6,
            processing: 0,
            amount_minor: 1_000,
            replacement_minor: Some(250),
            currency: 978,
            terminal: *b"TERM0001",
            merchant_id: *b"MERCHANT0000001",
            rrn: *b"000000000001",
            auth_code: *b"      ",
            code: Code::UNAVAILABLE,
        }
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_errors() {
        let mut buf = Vec::new();
        encode(&UpstreamRecord::SafQueued(entry()), &mut buf);
        match decode(&buf).expect("decodes") {
            UpstreamRecord::SafQueued(e) => assert_eq!(e, entry()),
            other => panic!("{other:?}"),
        }
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err(), "truncated at {n}");
        }
        let p = Pending {
            id: 6,
            upstream: "visa-sim".into(),
            stan: 11,
            transmission: 1_206_135_530,
            mti: 100,
            processing: 0,
            key: Some(MessageKey {
                mti: 100,
                terminal: *b"TERM0001",
                stan: 5,
                transmission: 1_206_135_529,
            }),
            created_ms: 1,
            merchant: 0,
            merchant_id: *b"MERCHANT0000001",
            terminal: *b"TERM0001",
            amount_minor: 1_000,
            currency: 978,
            rrn: *b"000000000001",
            making: None,
        };
        encode(&UpstreamRecord::Forward(p.clone()), &mut buf);
        match decode(&buf).expect("decodes") {
            UpstreamRecord::Forward(q) => {
                assert_eq!((q.id, q.key, q.stan, q.rrn), (p.id, p.key, p.stan, p.rrn));
            }
            other => panic!("{other:?}"),
        }
        buf.push(0);
        assert!(decode(&buf).is_err(), "trailing byte");
    }
}
