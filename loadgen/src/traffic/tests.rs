use std::net::SocketAddr;

use bytes::BytesMut;
use codecs::framing::{FrameCodec, FrameConfig};
use codecs::iso8583::{Message, MessageWriter, Profile};
use tokio_util::codec::Decoder;

use super::*;
use crate::config::{Mix, RunConfig, Target};
use crate::stats::new_histogram;

fn traffic(target: Target, mix: Mix) -> Traffic {
    let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let mut cfg = RunConfig::new(addr, target);
    cfg.mix = mix;
    cfg.connections = 2;
    cfg.validate().expect("valid");
    let shape = Arc::new(Shape::new(&cfg, 1_767_184_496_000_000_000).expect("shape"));
    Traffic::new(shape, 1, 16)
}

/// Frames in `wire`, as owned bodies.
fn frames(wire: &mut BytesMut) -> Vec<Vec<u8>> {
    let mut codec = FrameCodec::new(FrameConfig::default());
    let mut out = Vec::new();
    while let Some(f) = codec.decode(wire).expect("framing") {
        out.push(f.body.to_vec());
    }
    out
}

/// What the switch would answer: response MTI, F11, F38, F39, F41.
fn answer(request: &[u8], code: &[u8; 2]) -> Vec<u8> {
    let (m, err) = Message::decode_lenient(&Profile::ASCII, request).expect("mti and bitmap");
    if code != b"30" {
        assert!(err.is_none(), "{err:?}");
    }
    let mut buf = BytesMut::new();
    let mut w = MessageWriter::new(
        &mut buf,
        &Profile::ASCII,
        m.mti().response().expect("request"),
    );
    w.field(11, m.raw(11).expect("F11"))
        .and_then(|w| w.field(38, b"AB1234"))
        .and_then(|w| w.field(39, code))
        .and_then(|w| w.field(41, m.raw(41).expect("F41")))
        .expect("fields");
    w.finish().expect("finish");
    buf.to_vec()
}

#[test]
fn requests_are_valid_and_keys_unique() {
    let mut t = traffic(Target::Switch, Mix::SWITCH_DEFAULT);
    let mut wire = BytesMut::new();
    for i in 0..200 {
        t.write_next(&mut wire, i, i).expect("encode");
        let keys = t.pending.len();
        assert_eq!(keys, i as usize + 1, "keys stay unique");
    }
    let bodies = frames(&mut wire);
    assert_eq!(bodies.len(), 200);
    let mut malformed = 0;
    for b in &bodies {
        match Message::decode(&Profile::ASCII, b) {
            Ok(m) => {
                let pan = m.raw(2).expect("F2");
                assert!(codecs::card::luhn_valid(pan));
                assert_eq!(m.raw(42), Some(&b"DEMO00000000001"[..]));
                assert_eq!(m.raw(7), Some(&b"1231123456"[..]));
                // Connection 1 of 2: odd STANs.
                assert_eq!(m.number(11).expect("F11") % 2, 0);
            }
            Err(e) => {
                assert_eq!(e.field, 4, "only F4 is ever bad");
                malformed += 1;
            }
        }
    }
    assert!(malformed > 0, "2% of 200 flows are malformed");
}

#[test]
fn follow_ups_reference_their_original_and_mismatches_count() {
    let mix = Mix::parse("preauth-capture=1").expect("mix");
    let mut t = traffic(Target::Switch, mix);
    let mut hist = new_histogram();
    let mut wire = BytesMut::new();
    t.write_next(&mut wire, 0, 0).expect("encode");
    let auth = frames(&mut wire).remove(0);
    t.on_response(&answer(&auth, b"00"), 5_000, &mut hist);
    assert_eq!(hist.len(), 1);
    assert_eq!(t.in_flight(), 0);
    t.write_next(&mut wire, 10, 10).expect("encode");
    let capture = frames(&mut wire).remove(0);
    let m = Message::decode(&Profile::ASCII, &capture).expect("capture");
    let a = Message::decode(&Profile::ASCII, &auth).expect("auth");
    assert_eq!(m.mti().as_str(), "0220");
    let f90 = m.raw(90).expect("F90");
    assert_eq!(&f90[..4], b"0100");
    assert_eq!(&f90[4..10], a.raw(11).expect("F11"));
    assert_eq!(&f90[10..20], a.raw(7).expect("F7"));
    // A capture declined is a mismatch; so is an answer to nothing.
    t.on_response(&answer(&capture, b"05"), 20, &mut hist);
    assert_eq!(t.tally.mismatch_total(), 1);
    t.on_response(&answer(&capture, b"00"), 20, &mut hist);
    assert_eq!(t.tally.mismatch_total(), 2);
    assert_eq!(t.tally.matched, 2);
}

#[test]
fn repeats_carry_the_same_key_and_expect_the_same_answer() {
    let mut t = traffic(Target::Switch, Mix::parse("repeat=1").expect("mix"));
    let mut hist = new_histogram();
    let mut wire = BytesMut::new();
    t.write_next(&mut wire, 0, 0).expect("encode");
    let original = frames(&mut wire).remove(0);
    t.on_response(&answer(&original, b"00"), 1, &mut hist);
    t.write_next(&mut wire, 2_000_000_000, 2_000_000_000)
        .expect("encode");
    let repeat = frames(&mut wire).remove(0);
    assert_eq!(&repeat[..4], b"0101");
    assert_eq!(
        &repeat[4..],
        &original[4..],
        "same content, same F7 and F11"
    );
    t.on_response(&answer(&repeat, b"00"), 3, &mut hist);
    assert_eq!(t.tally.mismatch_total(), 0);
}

#[test]
fn echo_answers_match_and_a_wrong_expectation_counts() {
    let mut t = traffic(Target::Echo, Mix::AUTH_ONLY);
    let mut hist = new_histogram();
    let mut wire = BytesMut::new();
    for i in 0..10 {
        t.write_next(&mut wire, i, i).expect("encode");
    }
    for b in frames(&mut wire) {
        t.on_response(&b, 100, &mut hist);
    }
    assert_eq!((t.tally.matched, t.tally.mismatch_total()), (10, 0));
    let mut t = traffic(Target::Peer, Mix::AUTH_ONLY);
    t.write_next(&mut wire, 0, 0).expect("encode");
    let b = frames(&mut wire).remove(0);
    t.on_response(&b, 100, &mut hist);
    assert_eq!(
        t.tally.mismatch_total(),
        1,
        "an echoed 0100 is not the peer's 0110"
    );
    t.write_next(&mut wire, 0, 0).expect("encode");
    t.finish();
    assert_eq!(t.tally.mismatch_total(), 2, "unanswered requests are lost");
}

#[test]
fn templated_requests_equal_writer_encoded_ones() {
    let mix =
        Mix::parse("auth=1,preauth-capture=1,sale=1,refund=1,reversal=1,repeat=1").expect("mix");
    let mut t = traffic(Target::Peer, mix);
    let mut hist = new_histogram();
    for round in 0..50u64 {
        let mut wire = BytesMut::new();
        let now = round * 700_000_000;
        t.write_next(&mut wire, now, now).expect("encode");
        let body = frames(&mut wire.clone()).remove(0);
        // Re-encode the same request through the writer and compare.
        let p = t.pending.values().next().copied().expect("one in flight");
        let m = Message::decode(&Profile::ASCII, &body).expect("valid request");
        let processing: [u8; 6] = m.raw(3).expect("F3").try_into().expect("6");
        let f90 = m.raw(90).map(|f| <[u8; 42]>::try_from(f).expect("42"));
        let terminal = t.shape.terminals[usize::from(p.request.terminal)];
        let r = Request {
            id: p.request,
            processing: Box::leak(Box::new(processing)),
            f90,
            malformed: false,
            terminal: &terminal,
        };
        let mut again = BytesMut::new();
        t.encode_with_writer(&mut again, &r).expect("writer");
        assert_eq!(&again[..], &wire[..], "round {round}");
        let mut answer_buf = BytesMut::new();
        let mut w = MessageWriter::new(&mut answer_buf, &Profile::ASCII, p.expect_mti);
        w.field(11, m.raw(11).expect("F11"))
            .and_then(|w| w.field(38, crate::traffic::PEER_APPROVAL.as_bytes()))
            .and_then(|w| w.field(39, b"00"))
            .and_then(|w| w.field(41, &terminal))
            .expect("fields");
        w.finish().expect("finish");
        t.on_response(&answer_buf, now + 1, &mut hist);
    }
    assert_eq!(t.tally.mismatch_total(), 0);
    assert!(t.templates.len() >= 5, "{}", t.templates.len());
}

#[test]
fn a_stan_offset_moves_every_new_key_and_card() {
    let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let mut cfg = RunConfig::new(addr, Target::Switch);
    cfg.mix = Mix::AUTH_ONLY;
    cfg.connections = 2;
    let run = |cfg: &RunConfig| {
        cfg.validate().expect("valid");
        let shape = Arc::new(Shape::new(cfg, 1_767_184_496_000_000_000).expect("shape"));
        let mut t = Traffic::new(shape, 1, 16);
        let mut wire = BytesMut::new();
        for i in 0..3 {
            t.write_next(&mut wire, i, i).expect("encode");
        }
        frames(&mut wire)
            .iter()
            .map(|b| {
                let m = Message::decode(&Profile::ASCII, b).expect("valid");
                (m.number(11).expect("F11"), m.raw(2).expect("F2").to_vec())
            })
            .collect::<Vec<_>>()
    };
    let plain = run(&cfg);
    // Connection 1 of 2: STAN 1 + (seq × 2 + 1).
    assert_eq!(plain.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 4, 6]);
    cfg.stan_offset = 333_333;
    let moved = run(&cfg);
    assert_eq!(
        moved.iter().map(|p| p.0).collect::<Vec<_>>(),
        [333_335, 333_337, 333_339]
    );
    for (p, m) in plain.iter().zip(&moved) {
        assert_ne!(p.1, m.1, "the card moves with the key");
    }
    cfg.stan_offset = 999_999;
    assert!(cfg.validate().is_err(), "an offset past the STAN space");
}
