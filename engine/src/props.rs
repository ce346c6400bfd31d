//! Property tests of the lifecycle through the engine's door: random
//! sequences of operations, with repeats, against the contract's
//! invariants.

#[cfg(test)]
mod tests {
    //! Property tests of the lifecycle through the engine: random sequences
    //! of operations, with repeats, against the contract's invariants.

    use std::collections::HashMap;

    use codecs::card::Pan;
    use codecs::iso8583::datetime::Expiry;
    use codecs::iso8583::f90::OriginalData;
    use codecs::iso8583::Mti;
    use proptest::prelude::*;

    use crate::code::Code;
    use crate::command::{Channel, Op, OriginalRef, Reply, Request};
    use crate::engine::Engine;
    use crate::idempotency::MessageKey;
    use crate::lifecycle::{Payment, Status};

    const PAN: &[u8] = b"4111111111111111";

    /// 2026-11-23T11:49:10Z.
    const NOW_MS: u64 = 1_795_434_550_000;

    fn engine() -> Engine {
        crate::testing::engine(NOW_MS)
    }

    #[derive(Clone, Debug)]
    enum Step {
        PreAuth(u64),
        Sale(u64),
        Capture(usize, u64),
        Refund(usize, u64),
        Reversal(usize, Option<u64>),
        Repeat(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u64..5_000).prop_map(Step::PreAuth),
            (1u64..5_000).prop_map(Step::Sale),
            (0usize..64, 1u64..7_000).prop_map(|(i, a)| Step::Capture(i, a)),
            (0usize..64, 1u64..5_000).prop_map(|(i, a)| Step::Refund(i, a)),
            (0usize..64, proptest::option::of(0u64..5_000)).prop_map(|(i, a)| Step::Reversal(i, a)),
            (0usize..64).prop_map(Step::Repeat),
        ]
    }

    /// A sent message: its request's parts, kept to refer to or repeat it.
    #[derive(Clone, Copy, Debug)]
    struct Sent {
        op: Op,
        stan: u32,
        amount: u64,
        original: Option<OriginalRef>,
        replacement: Option<u64>,
        outcome: Reply,
    }

    fn mti_of(op: Op) -> &'static str {
        match op {
            Op::PreAuth => "0100",
            Op::Sale | Op::Refund => "0200",
            Op::Capture => "0220",
            Op::Reversal => "0400",
        }
    }

    fn request(s: &Sent, repeat: bool) -> Request<'static> {
        let mti = Mti::parse(mti_of(s.op)).expect("mti");
        Request {
            op: s.op,
            key: Some(MessageKey {
                mti: mti.number(),
                terminal: *b"DEMO0001",
                stan: s.stan,
                transmission: 1_123_114_959,
            }),
            repeat,
            content_crc: s.stan ^ (s.amount as u32),
            merchant_id: b"DEMO00000000001",
            terminal_id: *b"DEMO0001",
            pan: Pan::new(PAN),
            expiry: Expiry::parse(b"2812"),
            amount_minor: s.amount,
            currency: 978,
            original: s.original,
            replacement_minor: s.replacement,
            channel: Channel::CardPresent,
            eci: None,
            rrn: None,
            extras: None,
            keep_open: false,
        }
    }

    fn reference(sent: &[Sent], i: usize) -> Option<OriginalRef> {
        let s = sent.get(i % sent.len().max(1))?;
        Some(OriginalRef::Message(OriginalData {
            mti: Mti::parse(mti_of(s.op)).expect("mti"),
            stan: s.stan,
            transmission: *b"1123114959",
        }))
    }

    fn snapshot(e: &Engine) -> HashMap<u64, Payment> {
        let mut all = HashMap::new();
        e.state.for_each(|p| {
            all.insert(p.id, p.clone());
        });
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn invariants_hold_for_any_sequence(steps in proptest::collection::vec(step(), 1..60)) {
            let e = engine();
            let mut sent: Vec<Sent> = Vec::new();
            let mut authorized_at_start: HashMap<u64, u64> = HashMap::new();
            for (n, st) in steps.iter().enumerate() {
                let before = snapshot(&e);
                let stan = n as u32 + 1;
                let new = |op, amount, original, replacement| Sent {
                    op, stan, amount, original, replacement,
                    outcome: Reply::of(Code::APPROVED, [b'0'; 12]),
                };
                let (mut s, repeat) = match st {
                    Step::PreAuth(a) => (new(Op::PreAuth, *a, None, None), false),
                    Step::Sale(a) => (new(Op::Sale, *a, None, None), false),
                    Step::Capture(i, a) => (new(Op::Capture, *a, reference(&sent, *i), None), false),
                    Step::Refund(i, a) => (new(Op::Refund, *a, reference(&sent, *i), None), false),
                    Step::Reversal(i, r) => (new(Op::Reversal, 1, reference(&sent, *i), *r), false),
                    Step::Repeat(i) => match sent.get(i % sent.len().max(1)) {
                        Some(s) => (*s, true),
                        None => continue,
                    },
                };
                if matches!(s.op, Op::Capture | Op::Refund | Op::Reversal) && s.original.is_none() {
                    continue;
                }
                let out = crate::testing::apply_message(&e, request(&s, repeat), NOW_MS);
                let after = snapshot(&e);
                if repeat {
                    // A repeat names no payment: it is answered from memory,
                    // and says so (`again`: nothing decided now).
                    let same = Reply { payment_id: None, again: true, ..s.outcome };
                    prop_assert_eq!(out, same, "a repeat gets the very same answer");
                    prop_assert_eq!(&before, &after, "a repeat changes nothing");
                    continue;
                }
                s.outcome = out;
                sent.push(s);
                for (id, p) in &after {
                    authorized_at_start.entry(*id).or_insert(p.authorized_minor);
                    let authorized = authorized_at_start[id];
                    // Computed here, not with the code under test: 20% for merchant 1.
                    let limit = authorized + authorized * 20 / 100;
                    prop_assert!(p.captured_minor <= limit,
                        "captured {} over the limit of {}", p.captured_minor, authorized);
                    prop_assert!(p.refunded_minor() <= p.captured_minor,
                        "refunded {} over captured {}", p.refunded_minor(), p.captured_minor);
                    if let Some(old) = before.get(id) {
                        prop_assert!(crate::lifecycle::may_become(old.status, p.status), "{:?} -> {:?}", old.status, p.status);
                    }
                }
            }
        }
    }

    /// What the chain of one pre-authorization should hold, from the
    /// answers given (computed here, not by the code under test).
    #[derive(Clone, Copy, Debug, Default)]
    struct Chain {
        /// The original's amount plus every approved increment's.
        authorized: u64,
        /// Every approved capture's amount.
        captured: u64,
        /// Whether a final capture was approved.
        closed: bool,
    }

    #[derive(Clone, Debug)]
    enum Ext {
        PreAuth(u64),
        /// Increment of the chain `usize` names, with another card.
        Increment(usize, u64, bool),
        /// Capture of a chain; partial when `bool`.
        Capture(usize, u64, bool),
        Repeat(usize),
    }

    fn ext() -> impl Strategy<Value = Ext> {
        prop_oneof![
            (1u64..5_000).prop_map(Ext::PreAuth),
            (0usize..8, 1u64..3_000, proptest::bool::weighted(0.1))
                .prop_map(|(i, a, o)| Ext::Increment(i, a, o)),
            (0usize..8, 1u64..4_000, any::<bool>()).prop_map(|(i, a, k)| Ext::Capture(i, a, k)),
            (0usize..64).prop_map(Ext::Repeat),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn increments_and_partial_captures_keep_one_payment_per_chain(
            steps in proptest::collection::vec(ext(), 1..60)
        ) {
            let e = engine();
            // Chains by payment id, in creation order; the 0100 each started with.
            let mut chains: Vec<(u64, u32, Chain)> = Vec::new();
            let mut sent: Vec<(Request<'static>, Reply)> = Vec::new();
            for (n, st) in steps.iter().enumerate() {
                let stan = n as u32 + 1;
                // 13 s apart: at most five attempts of the card within the
                // velocity rule's 60 s.
                let now = NOW_MS + 13_000 * n as u64;
                let sale = |op, amount, original| Sent {
                    op, stan, amount, original, replacement: None,
                    outcome: Reply::of(Code::APPROVED, [b'0'; 12]),
                };
                let of = |i: usize| chains.get(i % chains.len().max(1)).map(|c| (c.0, c.1));
                let (req, chain) = match st {
                    Ext::PreAuth(a) => (request(&sale(Op::PreAuth, *a, None), false), None),
                    Ext::Increment(i, a, other_card) => {
                        let Some((id, first)) = of(*i) else { continue };
                        let mut r = request(&sale(Op::PreAuth, *a, f90_of("0100", first)), false);
                        if *other_card {
                            r.pan = Pan::new(b"5555555555554444");
                        }
                        (r, Some(id))
                    }
                    Ext::Capture(i, a, keep_open) => {
                        let Some((id, first)) = of(*i) else { continue };
                        let mut r = request(&sale(Op::Capture, *a, f90_of("0100", first)), false);
                        r.keep_open = *keep_open;
                        (r, Some(id))
                    }
                    Ext::Repeat(i) => {
                        let Some((r, answer)) = sent.get(i % sent.len().max(1)).copied() else {
                            continue;
                        };
                        let before = snapshot(&e);
                        let out = crate::testing::apply_message(&e, Request { repeat: true, ..r }, now);
                        prop_assert_eq!((out.code, out.rrn, out.auth_code),
                            (answer.code, answer.rrn, answer.auth_code), "a repeat gets the same answer");
                        prop_assert_eq!(&before, &snapshot(&e), "a repeat changes nothing");
                        continue;
                    }
                };
                let payments_before = e.state.len();
                let out = crate::testing::apply_message(&e, req, now);
                sent.push((req, out));
                match (st, chain) {
                    (Ext::PreAuth(a), _) if out.code.approved() => {
                        let model = Chain { authorized: *a, ..Chain::default() };
                        chains.push((out.payment_id.expect("id"), stan, model));
                    }
                    (Ext::Increment(_, a, other_card), Some(id)) => {
                        prop_assert_eq!(e.state.len(), payments_before, "an increment makes no payment");
                        let c = &mut chains.iter_mut().find(|c| c.0 == id).expect("chain").2;
                        if *other_card || c.closed {
                            prop_assert_eq!(out.code, Code::INVALID_TRANSACTION);
                        }
                        if out.code.approved() {
                            prop_assert_eq!(out.payment_id, Some(id));
                            c.authorized += a;
                        }
                    }
                    (Ext::Capture(_, a, keep_open), Some(id)) => {
                        let c = &mut chains.iter_mut().find(|c| c.0 == id).expect("chain").2;
                        let limit = c.authorized + c.authorized * 20 / 100;
                        let expected = if c.closed {
                            Code::INVALID_TRANSACTION
                        } else if c.captured + a > limit {
                            Code::INVALID_AMOUNT
                        } else {
                            Code::APPROVED
                        };
                        prop_assert_eq!(out.code, expected);
                        if out.code.approved() {
                            c.captured += a;
                            c.closed = !keep_open;
                        }
                    }
                    _ => {}
                }
                for (id, _, c) in &chains {
                    let p = e.state.get(*id).expect("in memory");
                    prop_assert_eq!(p.authorized_minor, c.authorized, "original + increments");
                    prop_assert_eq!(p.captured_minor, c.captured, "sum of captures");
                    prop_assert!(p.captured_minor <= c.authorized + c.authorized * 20 / 100);
                    let status = if c.closed { Status::Succeeded } else { Status::Uncaptured };
                    prop_assert_eq!(p.status, status);
                }
            }
        }
    }

    /// F90 naming message (`mti`, `stan`) sent at the tests' F7.
    fn f90_of(mti: &str, stan: u32) -> Option<OriginalRef> {
        Some(OriginalRef::Message(OriginalData {
            mti: Mti::parse(mti).expect("mti"),
            stan,
            transmission: *b"1123114959",
        }))
    }
}
