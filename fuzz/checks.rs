//! The bodies of the fuzz targets, shared with `codecs/tests/fuzz_corpus.rs`
//! (which runs every checked-in corpus file through them on stable Rust) and
//! the property tests. Included by `#[path]`, so it is plain functions over
//! `&[u8]` that panic when an invariant breaks.
//!
//! Each function takes the fuzzer's bytes as they come; any structure (which
//! framing configuration, where to cut chunks) is read from the first bytes.

#![allow(dead_code, reason = "each includer uses some of these checks")]

use bytes::{BufMut, BytesMut};
use codecs::card::Pan;
use codecs::framing::{Frame, FrameCodec, FrameConfig, LengthHeader};
use codecs::iso8583::amount::Amount;
use codecs::iso8583::datetime::{Expiry, LocalDate, LocalTime, TransmissionTime};
use codecs::iso8583::f90::OriginalData;
use codecs::iso8583::{f48, f55, FieldType, LenKind, Message, MessageWriter, Profile};
use tokio_util::codec::{Decoder, Encoder};

/// Largest binary field in bytes (F55 is 255; LLL fields at most 999).
const BINARY_BYTES_MAX: usize = 999;

/// Decodes `data` strictly and leniently with `profile`: neither panics,
/// they agree, and every accessor of what was decoded is consistent with
/// the dictionary.
pub(crate) fn iso_decode(profile: &'static Profile, data: &[u8]) {
    let strict = Message::decode(profile, data);
    let lenient = Message::decode_lenient(profile, data);
    match (&strict, &lenient) {
        (Ok(m), Ok((l, None))) => {
            assert!(same_fields(m, l), "strict and lenient differ");
            exercise(m);
        }
        (Err(e), Ok((l, Some(first)))) => {
            assert_eq!(e, first, "lenient's first error is strict's error");
            exercise(l);
        }
        (Err(e), Err(le)) => assert_eq!(e, le, "both fail on the MTI or bitmap"),
        (s, l) => panic!(
            "strict {:?} but lenient {:?}",
            s.as_ref().err(),
            l.as_ref().err()
        ),
    }
}

/// Decodes `data`; when it is a valid message, writes every field again
/// with [`MessageWriter`] and decodes that: the same MTI and fields, no
/// longer than the input, and writing it once more gives the same bytes.
pub(crate) fn iso_round_trip(profile: &'static Profile, data: &[u8]) {
    let Ok(first) = Message::decode(profile, data) else {
        return;
    };
    let mut wire = BytesMut::new();
    let len = reencode(&first, &mut wire);
    assert_eq!(len, wire.len());
    assert!(
        len <= data.len(),
        "re-encoding grew from {} to {len}",
        data.len()
    );
    let second = match Message::decode(profile, &wire) {
        Ok(m) => m,
        Err(e) => panic!("re-encoded message does not decode: {e}"),
    };
    assert_eq!(first.mti(), second.mti());
    assert!(
        same_fields(&first, &second),
        "fields changed in the round trip"
    );
    let mut again = BytesMut::new();
    reencode(&second, &mut again);
    assert_eq!(wire, again, "the re-encoded form is not stable");
}

/// Writes every field of `m` with a [`MessageWriter`] into `buf`; returns
/// the message length.
pub(crate) fn reencode(m: &Message<'_>, buf: &mut BytesMut) -> usize {
    let mut w = MessageWriter::new(buf, m.profile(), m.mti());
    let mut scratch = [0u8; BINARY_BYTES_MAX];
    for (n, raw) in m.fields() {
        let value = match m.binary(n) {
            Some(b) => match b.bytes(&mut scratch) {
                Some(v) => v,
                None => panic!("field {n}: binary content does not decode"),
            },
            None => raw,
        };
        if let Err(e) = w.field(n, value) {
            panic!("a decoded field is refused by the writer: {e}");
        }
    }
    match w.finish() {
        Ok(len) => len,
        Err(e) => panic!("a decoded message cannot be written: {e}"),
    }
}

/// Whether `a` and `b` have the same fields with the same logical values
/// (binary fields compared as bytes, so hex case does not matter).
pub(crate) fn same_fields(a: &Message<'_>, b: &Message<'_>) -> bool {
    let (mut sa, mut sb) = ([0u8; BINARY_BYTES_MAX], [0u8; BINARY_BYTES_MAX]);
    a.bitmap().fields().eq(b.bitmap().fields())
        && a.fields().all(|(n, raw)| match (a.binary(n), b.binary(n)) {
            (Some(x), Some(y)) => x.bytes(&mut sa) == y.bytes(&mut sb),
            _ => Some(raw) == b.raw(n),
        })
}

/// Calls every accessor and subfield parser on `m` and checks the answers
/// against the dictionary.
fn exercise(m: &Message<'_>) {
    let profile = m.profile();
    let buf = m.as_bytes().as_ptr_range();
    let _ = (
        m.mti().number(),
        m.mti().response(),
        m.mti().without_repeat(),
    );
    let mut scratch = [0u8; BINARY_BYTES_MAX];
    assert!(
        m.fields().map(|(n, _)| n).eq(m.bitmap().fields()),
        "the walk and the bitmap name different fields"
    );
    for (n, raw) in m.fields() {
        let Some(spec) = profile.field(n) else {
            panic!("field {n} decoded but not in the dictionary");
        };
        assert_eq!(m.raw(n), Some(raw), "field {n}: by number and by walk");
        let r = raw.as_ptr_range();
        assert!(
            buf.start <= r.start && r.end <= buf.end,
            "field {n} is not a slice of the input"
        );
        let unit = match (spec.ty, profile.binary) {
            (FieldType::B, codecs::iso8583::BinaryEncoding::Hex) => 2,
            _ => 1,
        };
        let max = usize::from(spec.max_len) * unit;
        match spec.len {
            LenKind::Fixed => assert_eq!(raw.len(), max, "field {n}: fixed length"),
            _ => assert!(raw.len() <= max, "field {n}: over its maximum"),
        }
        if spec.ty == FieldType::B {
            let b = m.binary(n).expect("binary field present");
            assert_eq!(b.bytes(&mut scratch).map(<[u8]>::len), Some(b.len()));
            assert!(m.text(n).is_none());
        } else {
            assert_eq!(m.text(n).map(str::as_bytes), Some(raw), "field {n}: text");
        }
        if spec.ty == FieldType::N && raw.len() <= 19 {
            assert!(m.number(n).is_some(), "field {n}: digits but no number");
        }
    }
    subfields(m);
}

/// The subfield parsers on whatever the message carries: none may panic.
fn subfields(m: &Message<'_>) {
    if let Some(f48) = m.raw(48) {
        let _ = f48::eci(f48).map(|e| e.map(|e| e.class()));
        assert!(f48::subelements(f48).count() <= f48::SUBELEMENTS_MAX + 1);
    }
    let mut scratch = [0u8; BINARY_BYTES_MAX];
    if let Some(f55) = m.binary(55).and_then(|b| b.bytes(&mut scratch)) {
        assert!(f55::tlvs(f55).count() <= f55::TLV_ITEMS_MAX + 1);
    }
    if let Some(o) = m.raw(90).and_then(OriginalData::parse) {
        assert_eq!(o.to_field().get(..20), m.raw(90).and_then(|r| r.get(..20)));
    }
    let _ = m.raw(7).and_then(TransmissionTime::parse);
    let _ = m.raw(12).and_then(LocalTime::parse);
    let _ = m.raw(13).and_then(LocalDate::parse);
    let _ = m
        .raw(14)
        .and_then(Expiry::parse)
        .map(|e| e.is_expired_at(26, 1));
    if let (Some(f4), Some(f49)) = (m.raw(4), m.raw(49)) {
        let _ = Amount::from_fields(f4, f49).map(|a| a.to_string());
    }
    if let Some(pan) = m.raw(2).and_then(Pan::new) {
        let _ = (pan.luhn_ok(), pan.bin(), pan.masked().to_string());
    }
}

/// What a framing run produced: the frames, then the error that ended it.
type FramingOutcome = (Vec<Frame>, Option<String>);

/// The framing settings and chunk sizes encoded in the first bytes of
/// `data`, and the stream that follows.
///
/// Byte 0: bit 0 ASCII length header, bit 1 TPDU, bits 2–3 the limit
/// (8192, 100, 65535, 5). Byte 1: low nibble, how many chunk-size bytes
/// follow (each 0 means 1). Without chunk sizes, chunks are 1 byte.
fn framing_input(data: &[u8]) -> Option<(FrameConfig, &[u8], &[u8])> {
    let (&cfg, rest) = data.split_first()?;
    let (&count, rest) = rest.split_first()?;
    let count = usize::from(count & 0x0f).min(rest.len());
    let (sizes, stream) = rest.split_at(count);
    let config = FrameConfig {
        header: if cfg & 1 == 0 {
            LengthHeader::Binary2
        } else {
            LengthHeader::Ascii4
        },
        tpdu: cfg & 2 != 0,
        frame_bytes_max: [8_192, 100, 65_535, 5][usize::from((cfg >> 2) & 3)],
    };
    Some((config, sizes, stream))
}

/// Decodes frames until the codec wants more input or fails.
fn drain(codec: &mut FrameCodec, src: &mut BytesMut, out: &mut FramingOutcome) -> bool {
    loop {
        match codec.decode(src) {
            Ok(Some(frame)) => out.0.push(frame),
            Ok(None) => return true,
            Err(e) => {
                out.1 = Some(e.to_string());
                return false;
            }
        }
    }
}

/// Feeds a byte stream to [`FrameCodec`] whole and in chunks: the same
/// frames and the same error come out, and writing the frames again gives
/// back the start of the stream.
pub(crate) fn framing_chunks(data: &[u8]) {
    let Some((config, sizes, stream)) = framing_input(data) else {
        return;
    };
    let mut whole = (Vec::new(), None);
    let mut codec = FrameCodec::new(config);
    drain(&mut codec, &mut BytesMut::from(stream), &mut whole);

    let mut chunked = (Vec::new(), None);
    let mut codec = FrameCodec::new(config);
    let mut src = BytesMut::new();
    let mut rest = stream;
    let mut sizes_cycle = sizes.iter().cycle();
    while !rest.is_empty() {
        let size = sizes_cycle.next().map_or(1, |&s| usize::from(s).max(1));
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        src.put_slice(chunk);
        rest = tail;
        if !drain(&mut codec, &mut src, &mut chunked) {
            break;
        }
    }
    assert_eq!(whole, chunked, "chunking changed the frames");

    let mut wire = BytesMut::new();
    let mut codec = FrameCodec::new(config);
    for frame in whole.0 {
        assert!(frame.body.len() <= config.frame_bytes_max);
        assert_eq!(frame.tpdu.is_some(), config.tpdu);
        if let Err(e) = codec.encode(frame, &mut wire) {
            panic!("a decoded frame cannot be written again: {e}");
        }
    }
    assert!(
        stream.starts_with(&wire),
        "frames written again differ from the input"
    );
}

/// [`iso_round_trip`] with the profile picked by the first byte (even:
/// `ascii`, odd: `ascii-hex`), so one target and corpus cover both.
pub(crate) fn iso_round_trip_selected(data: &[u8]) {
    if let Some((&selector, message)) = data.split_first() {
        iso_round_trip(Profile::ALL[usize::from(selector & 1)], message);
    }
}

/// Internal frames: delimits a frame, parses it as a request and as a
/// response; whatever parses is written again, parses to the same value and
/// writes to the same bytes. `check` agrees with `Frame::parse`.
pub(crate) fn internal_decode(data: &[u8]) {
    use codecs::internal::{check, Frame, Request, Response};
    let delimited = Frame::parse(data);
    match (&delimited, check(data)) {
        (Ok(Some((_, n))), Ok(Some(m))) => assert_eq!(*n, m, "check and parse differ"),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        (p, c) => panic!("Frame::parse {p:?} but check {c:?}"),
    }
    let Ok(Some((frame, n))) = delimited else {
        return;
    };
    assert!(n <= data.len());
    let _ = (frame.frame_type(), format!("{frame:?}"));
    let id = frame.request_id();
    if let Ok(request) = Request::parse(&frame) {
        let _ = format!("{request:?}");
        let mut wire = BytesMut::new();
        if let Err(e) = request.encode(id, &mut wire) {
            panic!("a parsed request cannot be written: {e}");
        }
        let again = internal_reparse(&wire, id);
        assert_eq!(Request::parse(&again), Ok(request), "request changed");
        let mut twice = BytesMut::new();
        let _ = request.encode(id, &mut twice);
        assert_eq!(wire, twice);
    }
    if let Ok(response) = Response::parse(&frame) {
        let _ = format!("{response:?}");
        let mut wire = BytesMut::new();
        if let Err(e) = response.encode(id, &mut wire) {
            panic!("a parsed response cannot be written: {e}");
        }
        let again = internal_reparse(&wire, id);
        assert_eq!(Response::parse(&again), Ok(response), "response changed");
    }
}

/// The one whole frame `wire` holds, with request id `id`.
fn internal_reparse(wire: &[u8], id: u64) -> codecs::internal::Frame<'_> {
    match codecs::internal::Frame::parse(wire) {
        Ok(Some((frame, n))) if n == wire.len() && frame.request_id() == id => frame,
        other => panic!("a written frame does not parse back whole: {other:?}"),
    }
}
