//! Codec benchmarks: decode and encode of a typical 0100 (16 fields, F48
//! and F55), a 0200 and an 0800, ours beside iso8583_rs 0.1.10 in the same
//! group so the ratio comes from one run; and an internal frame.
//!
//! The messages are `benches/data/*.bin`, written by pyiso8583 (see
//! `benches/pyiso8583_bench.py`, which times pyiso8583 on the same bytes).
//! iso8583_rs reads its dictionary from `benches/specs/iso8583_1987.yaml`,
//! the same lengths as our `Profile::ASCII`.
//!
//! `cargo bench -p benches --bench codec -- --warm-up-time 1 --measurement-time 5`

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::hint::black_box;

use bytes::BytesMut;
use codecs::internal::{Frame, Request};
use codecs::iso8583::{Message, MessageWriter, Mti, Profile};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use iso8583_rs::iso8583::iso_spec::{self, Spec};

/// The ISO 8583 messages: name and wire bytes (profile `ascii`).
const MESSAGES: [(&str, &[u8]); 3] = [
    ("0100", include_bytes!("../data/0100.bin")),
    ("0200", include_bytes!("../data/0200.bin")),
    ("0800", include_bytes!("../data/0800.bin")),
];

/// An AuthorizeMoto internal frame (the example of `docs/internal-frames.md`).
const INTERNAL_MOTO: &[u8] = include_bytes!("../data/internal_authorize_moto.bin");

/// One message's logical fields, ready for either encoder.
struct Fields {
    /// The message type.
    mti: Mti,
    /// Field number and value: text, or raw bytes for binary fields.
    values: Vec<(u8, Vec<u8>)>,
    /// The same values as iso8583_rs takes them (binary as hex text).
    texts: Vec<(u32, String)>,
}

fn fields_of(wire: &[u8]) -> Fields {
    let m = Message::decode(&Profile::ASCII, wire).expect("bench data decodes");
    let mut scratch = [0u8; 999];
    let mut values = Vec::new();
    let mut texts = Vec::new();
    for (n, raw) in m.fields() {
        match m.binary(n) {
            Some(b) => {
                let bytes = b.bytes(&mut scratch).expect("binary").to_vec();
                texts.push((u32::from(n), hex_upper(&bytes)));
                values.push((n, bytes));
            }
            None => {
                texts.push((u32::from(n), String::from_utf8(raw.to_vec()).expect("text")));
                values.push((n, raw.to_vec()));
            }
        }
    }
    Fields {
        mti: m.mti(),
        values,
        texts,
    }
}

/// Upper-case hex, as iso8583_rs takes binary values.
fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn encode_ours(buf: &mut BytesMut, f: &Fields) -> usize {
    buf.clear();
    let mut w = MessageWriter::new(buf, &Profile::ASCII, f.mti);
    for (n, v) in &f.values {
        w.field(*n, v).expect("valid field");
    }
    w.finish().expect("fits")
}

/// iso8583_rs loads its one spec from `SPEC_FILE` on first use.
fn iso8583_rs_spec() -> &'static Spec {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/iso8583_1987.yaml");
    std::env::set_var("SPEC_FILE", path);
    iso_spec::spec("iso8583-1987")
}

fn encode_iso8583_rs(spec: &'static Spec, f: &Fields) -> Vec<u8> {
    let seg = spec
        .get_message_from_header(f.mti.as_str())
        .expect("segment");
    let mut msg = iso_spec::new_msg(spec, seg);
    msg.set("message_type", f.mti.as_str()).expect("mti");
    for (n, v) in &f.texts {
        msg.set_on(*n, v).expect("field");
    }
    msg.assemble().expect("assembles")
}

fn iso8583(c: &mut Criterion) {
    let spec = iso8583_rs_spec();
    let mut group = c.benchmark_group("codec");
    for (name, wire) in MESSAGES {
        let fields = fields_of(wire);
        // Both encoders must write exactly the bytes pyiso8583 wrote.
        let mut buf = BytesMut::with_capacity(1024);
        encode_ours(&mut buf, &fields);
        assert_eq!(&buf[..], wire, "{name}: our encoding differs");
        assert_eq!(
            encode_iso8583_rs(spec, &fields),
            wire,
            "{name}: iso8583_rs differs"
        );
        let mut owned = wire.to_vec();
        let theirs = spec.parse(&mut owned).expect("iso8583_rs decodes");
        assert_eq!(
            theirs.bmp_child_value(11).ok(),
            fields
                .texts
                .iter()
                .find(|(n, _)| *n == 11)
                .map(|(_, v)| v.clone())
        );

        group.bench_with_input(BenchmarkId::new("decode/switch", name), wire, |b, w| {
            // The whole message is returned (criterion black-boxes it), so
            // nothing the decoder writes can be optimized away.
            b.iter(|| Message::decode(&Profile::ASCII, black_box(w)))
        });
        group.bench_with_input(BenchmarkId::new("decode/iso8583_rs", name), wire, |b, w| {
            let mut owned = w.to_vec();
            b.iter(|| {
                spec.parse(black_box(&mut owned))
                    .map(|m| m.fd_map.len())
                    .ok()
            })
        });
        group.bench_with_input(BenchmarkId::new("encode/switch", name), &fields, |b, f| {
            b.iter(|| encode_ours(&mut buf, black_box(f)))
        });
        group.bench_with_input(
            BenchmarkId::new("encode/iso8583_rs", name),
            &fields,
            |b, f| b.iter(|| encode_iso8583_rs(spec, black_box(f))),
        );
    }

    // Internal frames: delimit and parse a request; write it again.
    let (frame, _) = Frame::parse(INTERNAL_MOTO).expect("valid").expect("whole");
    let request = Request::parse(&frame).expect("a request");
    let id = frame.request_id();
    let mut buf = BytesMut::with_capacity(1024);
    request.encode(id, &mut buf).expect("encodes");
    assert_eq!(
        &buf[..],
        INTERNAL_MOTO,
        "internal frame re-encodes the same"
    );
    group.bench_function(BenchmarkId::new("decode/switch", "internal"), |b| {
        b.iter(|| {
            let (frame, _) = Frame::parse(black_box(INTERNAL_MOTO)).ok()??;
            Request::parse(&frame).ok().map(|r| r.frame_type())
        })
    });
    group.bench_function(BenchmarkId::new("encode/switch", "internal"), |b| {
        b.iter(|| {
            buf.clear();
            black_box(&request).encode(id, &mut buf).map(|()| buf.len())
        })
    });
    group.finish();
}

criterion_group!(benches, iso8583);
criterion_main!(benches);
