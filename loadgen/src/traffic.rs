//! The deterministic core of one connection: no I/O, no clock (times come
//! in as parameters). It picks the next message from the mix or the
//! follow-ups due, encodes it into the caller's buffer, remembers what the
//! answer must be, and matches answers by STAN + F41.
//!
//! Keys: STAN = 1 + (seq × connections + connection + offset) mod 999,999
//! (offset: `--stan-offset`, 0 by default; the card index follows the
//! same number) and the
//! terminal rotates with seq, so (F41, F11) is unique over all connections
//! until a connection wraps its STAN space; F7 is the wall-clock second,
//! so the switch's duplicate key (MTI class, F41, F11, F7) is unique over a
//! run. Repeats reuse their original's key on purpose.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use anyhow::Context;
use bytes::BytesMut;
use codecs::framing::{FrameCodec, FrameConfig};
use codecs::iso8583::f90::OriginalData;
use codecs::iso8583::{Message, MessageWriter, Mti, Profile};
use hdrhistogram::Histogram;

use crate::card::{pan, CARD_INDEX_LIMIT};
use crate::clock::F7Cache;
use crate::config::{Mix, RunConfig, Target};
use crate::stats::Tally;

/// STANs cycle through 1..=STAN_SPACE.
const STAN_SPACE: u64 = 999_999;
/// Offset of F4 in a malformed request's frame: length header (2), MTI (4),
/// primary bitmap (8), F2 (2 + 16), F3 (6).
const MALFORMED_F4_OFFSET: usize = 2 + 4 + 8 + 2 + crate::card::PAN_DIGITS + 6;
/// Most request shapes kept as templates (the flows make 7).
const TEMPLATES_MAX: usize = 16;
/// F14: an expiry date safely in the future.
const EXPIRY: &[u8; 4] = b"3012";
/// F22: chip, PIN.
const ENTRY_MODE: &[u8; 3] = b"051";
/// F25: normal presentment (card present).
const CONDITION: &[u8; 2] = b"00";
/// F38 the peer answers with; any 6 characters would do.
pub(crate) const PEER_APPROVAL: &str = "A00001";

/// A flow that starts a new transaction, in [`Mix::weights`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Auth,
    PreauthCapture,
    Sale,
    Refund,
    Reversal,
    Repeat,
    Malformed,
}

impl Flow {
    /// In [`Mix::weights`] order.
    const ALL: [Flow; 7] = [
        Flow::Auth,
        Flow::PreauthCapture,
        Flow::Sale,
        Flow::Refund,
        Flow::Reversal,
        Flow::Repeat,
        Flow::Malformed,
    ];
}

/// What to send once a request is answered as expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Nothing,
    Capture,
    Refund,
    Reverse,
    Repeat,
}

/// A request's identity and content, enough to reference or repeat it.
#[derive(Clone, Copy, Debug)]
struct Original {
    /// Request MTI.
    mti: Mti,
    /// F11.
    stan: u32,
    /// F7.
    f7: [u8; 10],
    /// Card index (see [`crate::card::pan`]).
    card: u64,
    /// F4, minor units.
    amount_minor: u64,
    /// Index into the terminals.
    terminal: u8,
}

/// A request in flight and what its answer must be.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Latency origin: actual send (closed loop) or scheduled send (open loop), ns since start.
    sent_ns: u64,
    /// The request.
    request: Original,
    /// Answer MTI.
    expect_mti: Mti,
    /// Answer F39; `None` when the target answers without one (echo).
    expect_code: Option<[u8; 2]>,
    /// A second acceptable F39 (65 when cards are reused on purpose).
    alt_code: Option<[u8; 2]>,
    /// Answer F38, for repeats.
    expect_f38: Option<[u8; 6]>,
    /// Follow-up once answered as expected.
    next: Next,
}

/// A follow-up due: its kind, the original, and the original's answer.
#[derive(Clone, Copy, Debug)]
struct FollowUp {
    /// Capture, refund, reversal or repeat.
    kind: Next,
    /// The answered original.
    original: Original,
    /// The original's F39.
    code: Option<[u8; 2]>,
    /// The original's F38.
    f38: Option<[u8; 6]>,
}

/// A request chosen, before encoding.
struct Planned {
    /// What its answer must be (holds its identity).
    pending: Pending,
    /// F3.
    processing: &'static [u8; 6],
    /// F90 when it references an original.
    f90: Option<[u8; 42]>,
    /// Corrupt F4 after encoding.
    malformed: bool,
}

/// One request to encode.
struct Request<'a> {
    /// Identity and content.
    id: Original,
    /// F3.
    processing: &'static [u8; 6],
    /// F90 when it references an original.
    f90: Option<[u8; 42]>,
    /// Corrupt F4 after encoding (the answer must be 30).
    malformed: bool,
    /// F41.
    terminal: &'a [u8; 8],
}

/// Settings shared by every connection of a run.
#[derive(Debug)]
pub(crate) struct Shape {
    /// What answers.
    target: Target,
    /// Cumulative weights in [`Flow::ALL`] order.
    mix_cumulative: [u64; 7],
    /// Card pool size, if cards are reused.
    cards: Option<u64>,
    /// First card index of this run (so runs in a row use fresh cards).
    card_base: u64,
    /// F42.
    merchant: [u8; 15],
    /// F41 values.
    terminals: Vec<[u8; 8]>,
    /// F49.
    currency: [u8; 3],
    /// Override of every expected F39.
    expect_code: Option<[u8; 2]>,
    /// Connections in the run (STAN stride).
    connections: u64,
    /// Added to every key number (`RunConfig::stan_offset`).
    stan_offset: u64,
    /// Wall clock at the run's start, ns since the epoch (F7).
    unix_base_ns: u64,
}

impl Shape {
    /// From a checked config and the run's start on the wall clock.
    pub(crate) fn new(cfg: &RunConfig, unix_base_ns: u64) -> anyhow::Result<Self> {
        let mut mix_cumulative = [0u64; 7];
        let mut acc = 0u64;
        for (slot, w) in mix_cumulative.iter_mut().zip(Mix::weights(&cfg.mix)) {
            acc += u64::from(w);
            *slot = acc;
        }
        let fixed = |s: &str, what: &str| -> anyhow::Result<Vec<u8>> {
            anyhow::ensure!(s.is_ascii(), "{what} {s:?}: not ASCII");
            Ok(s.as_bytes().to_vec())
        };
        let merchant: [u8; 15] = fixed(&cfg.merchant, "merchant")?
            .try_into()
            .ok()
            .context("merchant: expected 15 characters")?;
        let terminals = cfg
            .terminals
            .iter()
            .map(|t| {
                fixed(t, "terminal")?
                    .try_into()
                    .ok()
                    .context("terminal: expected 8 characters")
            })
            .collect::<anyhow::Result<Vec<[u8; 8]>>>()?;
        let c = cfg.currency;
        let currency = [c / 100, (c / 10) % 10, c % 10].map(|d| b'0' + d as u8);
        // A new block of card indexes every second of start time, wide
        // enough for 10 million flows per run.
        let card_base = (unix_base_ns / 1_000_000_000 % 1_000_000) * 10_000_000;
        Ok(Shape {
            target: cfg.target,
            mix_cumulative,
            cards: cfg.cards,
            card_base,
            merchant,
            terminals,
            currency,
            expect_code: cfg.expect_code,
            connections: cfg.connections as u64,
            stan_offset: cfg.stan_offset,
            unix_base_ns,
        })
    }
}

/// Hashes pending keys (STAN × 256 + terminal) with a 128-bit multiply fold.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }
    fn write_u64(&mut self, v: u64) {
        let m = u128::from(v ^ self.0) * 0x9E37_79B9_7F4A_7C15_u128;
        self.0 = (m >> 64) as u64 ^ m as u64;
    }
}

/// The shape of a request: MTI, F3, whether F90 is present.
type TemplateKey = (Mti, [u8; 6], bool);

/// One connection's traffic state.
pub(crate) struct Traffic {
    /// Run settings.
    shape: Arc<Shape>,
    /// This connection's index.
    conn: u64,
    /// New requests made so far (drives STAN, terminal and card).
    seq: u64,
    /// xorshift64* state: flow choice and amounts.
    rng: u64,
    /// F7 of the current second.
    f7: F7Cache,
    /// Requests in flight by key.
    pending: HashMap<u64, Pending, BuildHasherDefault<KeyHasher>>,
    /// Follow-ups whose original was answered, sent before new flows.
    followups: VecDeque<FollowUp>,
    /// Writes the length header.
    codec: FrameCodec,
    /// One encoded frame per request shape (MTI, F3, F90 present), patched
    /// for later requests of that shape.
    templates: Vec<(TemplateKey, Vec<u8>)>,
    /// Counts for the summary.
    pub(crate) tally: Tally,
}

fn key(stan: u32, terminal: u8) -> u64 {
    (u64::from(stan) << 8) | u64::from(terminal)
}

fn mti(s: &str) -> Mti {
    // Literals below are four digits.
    Mti::parse(s).unwrap_or_else(|| unreachable!("MTI literal {s}"))
}

impl Traffic {
    /// State for connection `conn`, room for `inflight_max` requests.
    pub(crate) fn new(shape: Arc<Shape>, conn: usize, inflight_max: usize) -> Self {
        let mut pending = HashMap::default();
        pending.reserve(inflight_max * 2);
        Traffic {
            shape,
            conn: conn as u64,
            seq: 0,
            rng: 0x2545_F491_4F6C_DD1D ^ (conn as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            f7: F7Cache::new(),
            pending,
            followups: VecDeque::with_capacity(inflight_max),
            codec: FrameCodec::new(FrameConfig::default()),
            templates: Vec::with_capacity(TEMPLATES_MAX),
            tally: Tally::default(),
        }
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Encodes the next request (a follow-up if one is due, else a new flow)
    /// at the end of `buf`. `now_ns` sets F7; `sent_ns` is the latency origin.
    ///
    /// # Errors
    /// Only if the request cannot be encoded (a bug: the fields are ours).
    pub(crate) fn write_next(
        &mut self,
        buf: &mut BytesMut,
        now_ns: u64,
        sent_ns: u64,
    ) -> anyhow::Result<()> {
        let f7 = self.f7.at(self.shape.unix_base_ns + now_ns);
        let planned = match self.followups.pop_front() {
            Some(f) => self.follow_up(f, f7, sent_ns),
            None => self.new_flow(f7, sent_ns),
        };
        let shape = Arc::clone(&self.shape);
        let terminal = shape
            .terminals
            .get(usize::from(planned.pending.request.terminal))
            .context("terminal index")?;
        let request = Request {
            id: planned.pending.request,
            processing: planned.processing,
            f90: planned.f90,
            malformed: planned.malformed,
            terminal,
        };
        self.encode(buf, &request)?;
        self.tally.sent += 1;
        let p = planned.pending;
        if self
            .pending
            .insert(key(p.request.stan, p.request.terminal), p)
            .is_some()
        {
            self.tally.mismatch_key_collision();
        }
        Ok(())
    }

    /// A new key: STAN and terminal.
    fn next_key(&mut self) -> (u32, u8, u64) {
        let raw = self.seq * self.shape.connections + self.conn + self.shape.stan_offset;
        let stan = 1 + (raw % STAN_SPACE) as u32;
        let terminal = (self.seq % self.shape.terminals.len() as u64) as u8;
        self.seq += 1;
        (stan, terminal, raw)
    }

    /// The answer's MTI and F39 for a request of `request_mti` that the
    /// switch should answer with `code` (`None`: whatever the original got).
    fn expectation(&self, request_mti: Mti, code: Option<[u8; 2]>) -> (Mti, Option<[u8; 2]>) {
        let response = request_mti.response().unwrap_or(request_mti);
        let (m, c) = match self.shape.target {
            Target::Echo => (request_mti, None),
            Target::Peer => (response, Some(*b"00")),
            Target::Switch => (response, code),
        };
        (m, self.shape.expect_code.or(c))
    }

    fn new_flow(&mut self, f7: [u8; 10], sent_ns: u64) -> Planned {
        let total = self.shape.mix_cumulative[6].max(1);
        let pick = self.random() % total;
        let idx = self.shape.mix_cumulative.iter().position(|&c| pick < c);
        let flow = Flow::ALL[idx.unwrap_or(0)];
        let (stan, terminal, raw) = self.next_key();
        let card = match self.shape.cards {
            Some(pool) => self.shape.card_base + raw % pool,
            None => self.shape.card_base + raw,
        } % CARD_INDEX_LIMIT;
        let amount_minor = 100 + self.random() % 2_400;
        let (req_mti, next, code) = match flow {
            Flow::Auth => ("0100", Next::Nothing, *b"00"),
            Flow::PreauthCapture => ("0100", Next::Capture, *b"00"),
            Flow::Sale => ("0200", Next::Nothing, *b"00"),
            Flow::Refund => ("0200", Next::Refund, *b"00"),
            Flow::Reversal => ("0200", Next::Reverse, *b"00"),
            Flow::Repeat => ("0100", Next::Repeat, *b"00"),
            Flow::Malformed => ("0100", Next::Nothing, *b"30"),
        };
        let request = Original {
            mti: mti(req_mti),
            stan,
            f7,
            card,
            amount_minor,
            terminal,
        };
        let (expect_mti, expect_code) = self.expectation(request.mti, Some(code));
        let velocity_possible = self.shape.cards.is_some() && flow != Flow::Malformed;
        let pending = Pending {
            sent_ns,
            request,
            expect_mti,
            expect_code,
            alt_code: (velocity_possible && self.shape.target == Target::Switch).then_some(*b"65"),
            expect_f38: None,
            next,
        };
        Planned {
            pending,
            processing: b"000000",
            f90: None,
            malformed: flow == Flow::Malformed,
        }
    }

    fn follow_up(&mut self, f: FollowUp, f7: [u8; 10], sent_ns: u64) -> Planned {
        let o = f.original;
        let f90 = OriginalData {
            mti: o.mti,
            stan: o.stan,
            transmission: o.f7,
        }
        .to_field();
        let (req_mti, processing, amount_minor) = match f.kind {
            Next::Capture => ("0220", b"000000", o.amount_minor),
            Next::Refund => ("0200", b"200000", (o.amount_minor / 2).max(1)),
            Next::Reverse => ("0400", b"000000", o.amount_minor),
            // A repeat carries its original's content and key unchanged.
            Next::Repeat | Next::Nothing => {
                let request = Original {
                    mti: repeat_of(o.mti),
                    ..o
                };
                let (expect_mti, expect_code) = self.expectation(request.mti, f.code);
                let pending = Pending {
                    sent_ns,
                    request,
                    expect_mti,
                    expect_code,
                    alt_code: None,
                    expect_f38: f.f38,
                    next: Next::Nothing,
                };
                return Planned {
                    pending,
                    processing: b"000000",
                    f90: None,
                    malformed: false,
                };
            }
        };
        let (stan, terminal, _) = self.next_key();
        let request = Original {
            mti: mti(req_mti),
            stan,
            f7,
            card: o.card,
            amount_minor,
            terminal,
        };
        let (expect_mti, expect_code) = self.expectation(request.mti, Some(*b"00"));
        let pending = Pending {
            sent_ns,
            request,
            expect_mti,
            expect_code,
            alt_code: None,
            expect_f38: None,
            next: Next::Nothing,
        };
        Planned {
            pending,
            processing,
            f90: Some(f90),
            malformed: false,
        }
    }

    /// Encodes `r`: the first request of each shape through the codec's
    /// writer (validated), later ones by copying that template and
    /// patching the fields that vary, at offsets fixed by the layout (all
    /// fields fixed-length, the PAN always 16 digits).
    fn encode(&mut self, buf: &mut BytesMut, r: &Request<'_>) -> anyhow::Result<()> {
        if r.malformed {
            return self.encode_with_writer(buf, r);
        }
        let key = (r.id.mti, *r.processing, r.f90.is_some());
        let Some(slot) = self.templates.iter().position(|(k, _)| *k == key) else {
            let start = buf.len();
            self.encode_with_writer(buf, r)?;
            let frame = buf.get(start..).context("frame just written")?.to_vec();
            if self.templates.len() < TEMPLATES_MAX {
                self.templates.push((key, frame));
            }
            return Ok(());
        };
        let start = buf.len();
        let template = &self.templates[slot].1;
        buf.extend_from_slice(template);
        let frame = buf.get_mut(start..).context("frame just copied")?;
        patch_frame(frame, r)
    }

    fn encode_with_writer(&self, buf: &mut BytesMut, r: &Request<'_>) -> anyhow::Result<()> {
        let start = buf.len();
        let pan = pan(r.id.card);
        let shape = &self.shape;
        self.codec
            .write_frame(buf, None, |b| {
                let mut w = MessageWriter::new(b, &Profile::ASCII, r.id.mti);
                w.field(2, &pan)?
                    .field(3, r.processing)?
                    .number(4, r.id.amount_minor)?
                    .field(7, &r.id.f7)?
                    .number(11, u64::from(r.id.stan))?
                    .field(14, EXPIRY)?
                    .field(22, ENTRY_MODE)?
                    .field(25, CONDITION)?
                    .field(41, r.terminal)?
                    .field(42, &shape.merchant)?
                    .field(49, &shape.currency)?;
                if let Some(f90) = &r.f90 {
                    w.field(90, f90)?;
                }
                w.finish().map(|_| ())
            })
            .map_err(|e| anyhow::anyhow!("encoding {}: {e:?}", r.id.mti))?;
        if r.malformed {
            // The last digit of F4 becomes a letter: framed, decodable up to
            // F4 with its length known, so the switch can answer 30.
            let at = start + MALFORMED_F4_OFFSET + 11;
            let byte = buf
                .get_mut(at)
                .context("malformed offset inside the frame")?;
            debug_assert!(byte.is_ascii_digit());
            *byte = b'X';
        }
        Ok(())
    }

    /// Checks one answer received at `now_ns` and records its latency.
    pub(crate) fn on_response(&mut self, body: &[u8], now_ns: u64, hist: &mut Histogram<u32>) {
        let msg = match Message::decode(&Profile::ASCII, body) {
            Ok(m) => m,
            Err(e) => return self.tally.mismatch_undecodable(&e),
        };
        let stan = msg.number(11).and_then(|s| u32::try_from(s).ok());
        let f41 = msg.raw(41);
        let terminal = f41.and_then(|t| self.shape.terminals.iter().position(|x| &x[..] == t));
        let found = match (stan, terminal) {
            (Some(s), Some(t)) => self.pending.remove(&key(s, t as u8)),
            _ => None,
        };
        let Some(p) = found else {
            return self.tally.mismatch_unmatched(msg.mti(), stan, f41);
        };
        hist.saturating_record(now_ns.saturating_sub(p.sent_ns).max(1));
        let code = msg.raw(39).and_then(|c| <[u8; 2]>::try_from(c).ok());
        self.tally.answered(p.request.mti, code);
        if msg.mti() != p.expect_mti {
            return self
                .tally
                .mismatch_mti(p.request.mti, p.expect_mti, msg.mti());
        }
        if let Some(want) = p.expect_code {
            if code != Some(want) && (p.alt_code.is_none() || code != p.alt_code) {
                return self.tally.mismatch_code(p.request.mti, want, code);
            }
        }
        let f38 = msg.raw(38).and_then(|c| <[u8; 6]>::try_from(c).ok());
        if p.expect_f38.is_some() && f38 != p.expect_f38 {
            return self.tally.mismatch_f38(p.request.mti);
        }
        let approved = p.expect_code.is_none() || code == Some(*b"00");
        if p.next == Next::Repeat || (p.next != Next::Nothing && approved) {
            self.followups.push_back(FollowUp {
                kind: p.next,
                original: p.request,
                code,
                f38,
            });
        }
    }

    /// Counts every request still in flight as lost (end of run).
    pub(crate) fn finish(&mut self) {
        self.tally.lost += self.pending.len() as u64;
        self.pending.clear();
    }
}

/// Writes the varying fields of `r` into `frame`, a copy of a template of
/// the same shape (see [`Traffic::encode`]).
fn patch_frame(frame: &mut [u8], r: &Request<'_>) -> anyhow::Result<()> {
    // Length header, MTI, bitmaps (secondary only with F90), F2's LL.
    let bitmaps = if r.f90.is_some() { 16 } else { 8 };
    let f2 = 2 + 4 + bitmaps + 2;
    let put = |frame: &mut [u8], at: usize, bytes: &[u8]| -> anyhow::Result<()> {
        frame
            .get_mut(at..at + bytes.len())
            .context("template shorter than its layout")?
            .copy_from_slice(bytes);
        Ok(())
    };
    put(frame, f2, &pan(r.id.card))?;
    // F3 (6) is part of the template's shape.
    put(frame, f2 + 22, &digits::<12>(r.id.amount_minor))?;
    put(frame, f2 + 34, &r.id.f7)?;
    put(frame, f2 + 44, &digits::<6>(u64::from(r.id.stan)))?;
    // F14, F22, F25 (4 + 3 + 2) are constant.
    put(frame, f2 + 59, r.terminal)?;
    // F42, F49 (15 + 3) are constant.
    if let Some(f90) = &r.f90 {
        put(frame, f2 + 85, f90)?;
    }
    Ok(())
}

/// `v` as `N` zero-padded ASCII digits (truncated to the low `N` digits).
fn digits<const N: usize>(mut v: u64) -> [u8; N] {
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out
}

/// `0100` → `0101`: the repeat of a request.
fn repeat_of(m: Mti) -> Mti {
    let mut b = *m.as_bytes();
    b[3] = b'1';
    Mti::from_bytes(&b).unwrap_or(m)
}

#[cfg(test)]
mod tests;
