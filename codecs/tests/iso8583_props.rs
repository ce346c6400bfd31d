//! Property tests: arbitrary valid messages round-trip through
//! `MessageWriter` and `Message::decode` in both profiles; arbitrary and
//! mutated bytes never make the decoder panic; the framing decoder gives the
//! same frames whether the stream comes whole or in arbitrary chunks.

#[path = "../../fuzz/checks.rs"]
mod checks;

use bytes::{Bytes, BytesMut};
use codecs::framing::{Frame, FrameCodec, FrameConfig, LengthHeader, Tpdu};
use codecs::iso8583::{FieldType, LenKind, Message, MessageWriter, Mti, Profile, DICTIONARY_1987};
use proptest::prelude::*;
use proptest::sample::select;
use tokio_util::codec::{Decoder, Encoder};

/// Most fields in a generated message: enough to need both bitmaps, few
/// enough that LLL fields at their maximum stay far below 65,535 bytes.
const FIELDS_MAX: usize = 24;

/// The characters a text field of type `ty` may hold.
fn alphabet(ty: FieldType) -> Vec<u8> {
    let digits = b'0'..=b'9';
    match ty {
        FieldType::N => digits.collect(),
        FieldType::An => digits
            .chain(b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain([b' '])
            .collect(),
        FieldType::Ans => (0x20..=0x7e).collect(),
        FieldType::Z => digits.chain([b'=', b'D']).collect(),
        FieldType::XN | FieldType::B => Vec::new(),
    }
}

/// A valid value for field `n`: its length and content follow the
/// dictionary, a variable field at most `var_max` long.
fn value(n: u8, var_max: usize) -> BoxedStrategy<Vec<u8>> {
    let spec = DICTIONARY_1987[usize::from(n)];
    let max = usize::from(spec.max_len);
    let len = match spec.len {
        LenKind::Fixed => max..=max,
        LenKind::LlVar | LenKind::LllVar => 0..=max.min(var_max),
    };
    match spec.ty {
        FieldType::B => prop::collection::vec(any::<u8>(), len).boxed(),
        FieldType::XN => (
            select(vec![b'C', b'D']),
            prop::collection::vec(b'0'..=b'9', max - 1),
        )
            .prop_map(|(sign, mut digits)| {
                digits.insert(0, sign);
                digits
            })
            .boxed(),
        ty => prop::collection::vec(select(alphabet(ty)), len).boxed(),
    }
}

/// An MTI and up to [`FIELDS_MAX`] fields in ascending order.
fn message() -> impl Strategy<Value = (Mti, Vec<(u8, Vec<u8>)>)> {
    message_of(0..=FIELDS_MAX, usize::MAX)
}

/// An MTI and `count` fields in ascending order, variable ones at most
/// `var_max` long.
fn message_of(
    count: std::ops::RangeInclusive<usize>,
    var_max: usize,
) -> impl Strategy<Value = (Mti, Vec<(u8, Vec<u8>)>)> {
    let mti = "[0-9]{4}".prop_map(|s| Mti::parse(&s).expect("4 digits"));
    let fields = prop::collection::btree_set(2u8..=128, count).prop_flat_map(move |set| {
        set.into_iter()
            .map(|n| value(n, var_max).prop_map(move |v| (n, v)))
            .collect::<Vec<_>>()
    });
    (mti, fields)
}

fn encode(profile: &'static Profile, mti: Mti, fields: &[(u8, Vec<u8>)]) -> BytesMut {
    let mut buf = BytesMut::new();
    let mut w = MessageWriter::new(&mut buf, profile, mti);
    for (n, v) in fields {
        w.field(*n, v).expect("a valid value");
    }
    w.finish().expect("fits");
    buf
}

fn profiles() -> impl Strategy<Value = &'static Profile> {
    select(Profile::ALL.to_vec())
}

/// Decodes `wire` and checks it holds `mti` and `fields`, read by walking
/// the message and by field number.
fn assert_decodes_to(
    profile: &'static Profile,
    wire: &[u8],
    mti: Mti,
    fields: &[(u8, Vec<u8>)],
) -> Result<(), TestCaseError> {
    let m = Message::decode(profile, wire).expect("decodes");
    prop_assert_eq!(m.mti(), mti);
    prop_assert_eq!(m.bitmap().has(1), fields.iter().any(|(n, _)| *n > 64));
    let mut scratch = [0u8; 999];
    let mut logical = |n: u8, raw: &[u8]| match m.binary(n) {
        Some(b) => b.bytes(&mut scratch).expect("hex").to_vec(),
        None => raw.to_vec(),
    };
    let decoded: Vec<(u8, Vec<u8>)> = m.fields().map(|(n, raw)| (n, logical(n, raw))).collect();
    prop_assert_eq!(&decoded, fields);
    for (n, v) in fields.iter().rev() {
        let raw = m.raw(*n).expect("present");
        prop_assert_eq!(&logical(*n, raw), v, "field {}", n);
    }
    Ok(())
}

proptest! {
    #[test]
    fn valid_messages_round_trip((mti, fields) in message(), profile in profiles()) {
        let wire = encode(profile, mti, &fields);
        assert_decodes_to(profile, &wire, mti, &fields)?;
        // Encoding is deterministic and the decoder's checks all hold.
        prop_assert_eq!(encode(profile, mti, &fields), wire.clone());
        checks::iso_decode(profile, &wire);
        checks::iso_round_trip(profile, &wire);
    }

    /// Messages with more fields than a `Message` keeps offsets for, up to
    /// all 127: the later ones are found by walking on.
    #[test]
    fn messages_with_many_fields_round_trip(
        (mti, fields) in message_of(30..=127, 12),
        profile in profiles(),
    ) {
        let wire = encode(profile, mti, &fields);
        assert_decodes_to(profile, &wire, mti, &fields)?;
        checks::iso_decode(profile, &wire);
        checks::iso_round_trip(profile, &wire);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        for profile in Profile::ALL {
            checks::iso_decode(profile, &data);
            checks::iso_round_trip(profile, &data);
        }
        checks::framing_chunks(&data);
    }

    #[test]
    fn mutated_messages_never_panic(
        (mti, fields) in message(),
        profile in profiles(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = encode(profile, mti, &fields).to_vec();
        for (at, byte) in edits {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        checks::iso_decode(profile, &wire);
        checks::iso_round_trip(profile, &wire);
        let end = cut.index(wire.len() + 1);
        checks::iso_decode(profile, &wire[..end]);
    }

    #[test]
    fn framing_gives_the_same_frames_in_any_chunks(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 5..300), 0..8),
        ascii in any::<bool>(),
        tpdu in any::<bool>(),
        chunks in prop::collection::vec(1usize..64, 1..16),
    ) {
        let config = FrameConfig {
            header: if ascii { LengthHeader::Ascii4 } else { LengthHeader::Binary2 },
            tpdu,
            frame_bytes_max: 310,
        };
        let frames: Vec<Frame> = bodies
            .into_iter()
            .map(|b| Frame {
                tpdu: tpdu.then_some(Tpdu([0x60, 0, 1, 0, 0])),
                body: Bytes::from(b),
            })
            .collect();
        let mut wire = BytesMut::new();
        let mut codec = FrameCodec::new(config);
        for f in &frames {
            codec.encode(f.clone(), &mut wire).expect("under the limit");
        }
        let mut codec = FrameCodec::new(config);
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = &wire[..];
        for size in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            src.extend_from_slice(chunk);
            rest = tail;
            while let Some(f) = codec.decode(&mut src).expect("valid stream") {
                out.push(f);
            }
        }
        prop_assert_eq!(&out, &frames);
        prop_assert!(src.is_empty());
        // The shared fuzz check agrees, with the same chunk sizes.
        let mut input = vec![u8::from(ascii) | (u8::from(tpdu) << 1), 15];
        input.extend(chunks.iter().cycle().take(15).map(|&c| c as u8));
        input.extend_from_slice(&wire);
        checks::framing_chunks(&input);
    }
}
