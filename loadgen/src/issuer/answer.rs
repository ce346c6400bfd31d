//! The issuer's decisions, with no I/O and no clock: whether a request is
//! answered, after how long, with which response; and the answer's bytes.
//!
//! Approvals are decided by a counter, not a hash: the n-th authorization
//! or sale the issuer receives (0100/0101/0200/0201, counted from 0 over
//! every link, in the order the links hand them in) is approved when
//! `floor((n + 1) * pct / 100) > floor(n * pct / 100)`. Every 100
//! consecutive authorizations therefore hold exactly `pct` approvals, so a
//! test can assert an exact count. Declines take the configured codes in
//! turn (the k-th decline gets `codes[k % len]`).

use bytes::BytesMut;
use codecs::framing::{FrameCodec, WriteError};
use codecs::iso8583::{EncodeError, Message, MessageWriter, Mti};

use super::{IssuerConfig, Latency};

/// Longest delay any latency setting yields: ten minutes.
pub(crate) const LATENCY_MS_MAX: u64 = 600_000;
/// The decline code when the configured list is empty.
const DECLINE_CODE_DEFAULT: [u8; 2] = *b"05";
/// F39 of an approval, and of every advice and network answer.
const APPROVED: [u8; 2] = *b"00";
/// Fields echoed from the request, in ascending order (F70 for 0800 only).
const ECHOED_FIELDS: [u8; 4] = [7, 11, 32, 37];

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Answer with `response` after `delay_ms`.
    Answer {
        /// How long to hold the answer back.
        delay_ms: u64,
        /// What the answer says.
        response: Response,
    },
    /// Never answer (a silent amount, or an 0800 while echoes are off).
    Silent,
}

/// What an answer says beyond the fields echoed from its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Response {
    /// Response MTI (request + 10, repeat digit cleared).
    pub(crate) mti: Mti,
    /// F39.
    pub(crate) code: [u8; 2],
    /// F38 of an approved authorization.
    pub(crate) approval: Option<[u8; 6]>,
    /// Whether F70 is echoed (network management).
    pub(crate) echo_f70: bool,
}

/// The request facts a decision needs (read from the decoded message).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts {
    /// Request MTI.
    pub(crate) mti: Mti,
    /// F4, when present and numeric.
    pub(crate) amount_minor: Option<u64>,
}

/// The issuer-wide decision state: counters and the latency generator.
#[derive(Debug)]
pub(crate) struct Decider {
    /// Authorizations decided so far (the approval counter's n).
    authorizations: u64,
    /// Declines so far (index into the decline codes).
    declines: u64,
    /// Approvals so far (F38 is made from it).
    approvals: u64,
    /// Latency samples.
    rng: XorShift,
}

impl Decider {
    /// A decider whose latency samples follow from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Decider {
            authorizations: 0,
            declines: 0,
            approvals: 0,
            rng: XorShift::new(seed),
        }
    }

    /// Decides what `facts` get under `config`; `None` for a response or
    /// an MTI that is not a request (the caller does not answer those).
    pub(crate) fn plan(&mut self, config: &IssuerConfig, facts: Facts) -> Option<Plan> {
        let response_mti = facts.mti.response()?;
        let class = facts.mti.without_repeat();
        let silent = facts
            .amount_minor
            .is_some_and(|a| config.silent_amounts.contains(&a));
        if silent || (class.as_bytes() == b"0800" && !config.answer_echo) {
            return Some(Plan::Silent);
        }
        let (code, approval) = if matches!(class.as_bytes(), b"0100" | b"0200") {
            self.decide(config)
        } else {
            (APPROVED, None)
        };
        let late = config.late.as_ref().and_then(|(amounts, ms)| {
            facts
                .amount_minor
                .is_some_and(|a| amounts.contains(&a))
                .then_some(*ms)
        });
        let delay_ms = late.unwrap_or_else(|| self.sample(config.latency));
        Some(Plan::Answer {
            delay_ms: delay_ms.min(LATENCY_MS_MAX),
            response: Response {
                mti: response_mti,
                code,
                approval,
                echo_f70: class.as_bytes() == b"0800",
            },
        })
    }

    /// Approve or decline the next authorization (see the module doc).
    fn decide(&mut self, config: &IssuerConfig) -> ([u8; 2], Option<[u8; 6]>) {
        let n = u128::from(self.authorizations);
        let pct = u128::from(config.approve_pct.min(100));
        self.authorizations += 1;
        if (n + 1) * pct / 100 > n * pct / 100 {
            self.approvals += 1;
            return (APPROVED, Some(approval_code(self.approvals)));
        }
        let codes = &config.decline_codes;
        let code = match codes.len() {
            0 => DECLINE_CODE_DEFAULT,
            len => codes
                .get((self.declines % len as u64) as usize)
                .and_then(|c| <[u8; 2]>::try_from(c.as_bytes()).ok())
                .unwrap_or(DECLINE_CODE_DEFAULT),
        };
        self.declines += 1;
        (code, None)
    }

    /// One latency sample, in ms.
    fn sample(&mut self, latency: Latency) -> u64 {
        match latency {
            Latency::Fixed(ms) => ms,
            Latency::Uniform { min_ms, max_ms } => {
                let (lo, hi) = (min_ms.min(max_ms), min_ms.max(max_ms));
                let span = (hi - lo).saturating_add(1);
                lo + self.rng.next() % span
            }
            Latency::Exponential { mean_ms } => {
                // u in (0, 1]: -ln(u) is finite and >= 0.
                let u = ((self.rng.next() >> 11) + 1) as f64 / (1u64 << 53) as f64;
                let ms = -(mean_ms as f64) * u.ln();
                if ms.is_finite() {
                    (ms.round() as u64).min(LATENCY_MS_MAX)
                } else {
                    LATENCY_MS_MAX
                }
            }
        }
    }
}

/// F38 of the n-th approval: six digits.
fn approval_code(n: u64) -> [u8; 6] {
    let mut out = [b'0'; 6];
    let mut v = n % 1_000_000;
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out
}

/// Writes the answer to `request` as one frame at the end of `out`: the
/// echoed fields (F7, F11, F32, F37, F41 when present; F70 for network
/// management), F38 on approval, F39.
///
/// # Errors
/// When a field cannot be encoded or the frame is over the limit; `out`
/// is then left as it was.
pub(crate) fn encode_answer(
    request: &Message<'_>,
    response: &Response,
    codec: &FrameCodec,
    out: &mut BytesMut,
) -> Result<(), WriteError<EncodeError>> {
    codec.write_frame(out, None, |buf| {
        let mut w = MessageWriter::new(buf, request.profile(), response.mti);
        for n in ECHOED_FIELDS {
            if let Some(v) = request.raw(n) {
                w.field(n, v)?;
            }
        }
        if let Some(a) = &response.approval {
            w.field(38, a)?;
        }
        w.field(39, &response.code)?;
        if let Some(v) = request.raw(41) {
            w.field(41, v)?;
        }
        if let (true, Some(v)) = (response.echo_f70, request.raw(70)) {
            w.field(70, v)?;
        }
        w.finish().map(|_| ())
    })
}

/// Xorshift64*: a tiny, seeded generator for latency samples (no
/// dependency; quality is ample for spreading delays).
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point.
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mti(s: &str) -> Mti {
        Mti::parse(s).expect("literal")
    }

    fn facts(m: &str, amount: Option<u64>) -> Facts {
        Facts {
            mti: mti(m),
            amount_minor: amount,
        }
    }

    fn answer(p: Option<Plan>) -> (u64, Response) {
        match p {
            Some(Plan::Answer { delay_ms, response }) => (delay_ms, response),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn every_hundred_authorizations_hold_exactly_pct_approvals() {
        for pct in [0u8, 1, 30, 73, 99, 100] {
            let config = IssuerConfig {
                approve_pct: pct,
                decline_codes: vec!["05".into(), "51".into()],
                ..IssuerConfig::default()
            };
            let mut d = Decider::new(7);
            let mut approved = 0;
            let mut codes = Vec::new();
            for i in 0..300 {
                let m = if i % 2 == 0 { "0100" } else { "0200" };
                let (_, r) = answer(d.plan(&config, facts(m, Some(100))));
                if r.code == APPROVED {
                    approved += 1;
                    assert_eq!(r.approval.map(|a| a.len()), Some(6));
                } else {
                    assert_eq!(r.approval, None);
                    codes.push(r.code);
                }
            }
            assert_eq!(approved, 3 * u32::from(pct), "pct {pct}");
            for (k, c) in codes.iter().enumerate() {
                assert_eq!(c, if k % 2 == 0 { b"05" } else { b"51" }, "pct {pct}");
            }
        }
    }

    #[test]
    fn advices_and_echoes_are_answered_00_and_do_not_count_as_authorizations() {
        let config = IssuerConfig {
            approve_pct: 0,
            ..IssuerConfig::default()
        };
        let mut d = Decider::new(1);
        for (req, resp) in [
            ("0120", "0130"),
            ("0121", "0130"),
            ("0220", "0230"),
            ("0221", "0230"),
            ("0420", "0430"),
            ("0421", "0430"),
            ("0800", "0810"),
        ] {
            let (_, r) = answer(d.plan(&config, facts(req, Some(5))));
            assert_eq!((r.mti, r.code), (mti(resp), APPROVED), "{req}");
            assert_eq!(r.echo_f70, req == "0800");
        }
        assert_eq!(d.authorizations, 0);
        assert_eq!(d.plan(&config, facts("0110", None)), None);
    }

    #[test]
    fn silent_late_and_echo_off() {
        let mut config = IssuerConfig {
            silent_amounts: vec![1313],
            late: Some((vec![1414], 3000)),
            latency: Latency::Fixed(2),
            ..IssuerConfig::default()
        };
        let mut d = Decider::new(1);
        assert_eq!(
            d.plan(&config, facts("0100", Some(1313))),
            Some(Plan::Silent)
        );
        assert_eq!(
            d.plan(&config, facts("0421", Some(1313))),
            Some(Plan::Silent)
        );
        assert_eq!(answer(d.plan(&config, facts("0100", Some(1414)))).0, 3000);
        assert_eq!(answer(d.plan(&config, facts("0100", Some(1415)))).0, 2);
        assert_eq!(answer(d.plan(&config, facts("0800", None))).0, 2);
        config.answer_echo = false;
        assert_eq!(d.plan(&config, facts("0800", None)), Some(Plan::Silent));
    }

    #[test]
    fn latency_samples_stay_in_range_and_follow_the_seed() {
        let mut a = Decider::new(42);
        let mut b = Decider::new(42);
        let uniform = Latency::Uniform {
            min_ms: 3,
            max_ms: 7,
        };
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = a.sample(uniform);
            assert_eq!(v, b.sample(uniform));
            assert!((3..=7).contains(&v), "{v}");
            seen[(v - 3) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
        let exp = Latency::Exponential { mean_ms: 20 };
        let n = 20_000u64;
        let sum: u64 = (0..n).map(|_| a.sample(exp)).sum();
        let mean = sum / n;
        assert!((17..=23).contains(&mean), "mean {mean}");
    }

    #[test]
    fn approval_codes_are_six_digits() {
        assert_eq!(&approval_code(1), b"000001");
        assert_eq!(&approval_code(1_234_567), b"234567");
    }
}
