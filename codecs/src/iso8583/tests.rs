use bytes::BytesMut;

use super::*;

fn sample(profile: &'static Profile) -> BytesMut {
    let mut buf = BytesMut::new();
    let mut w = MessageWriter::new(&mut buf, profile, Mti::parse("0100").expect("mti"));
    w.field(2, b"4111111111111111")
        .and_then(|w| w.field(3, b"000000"))
        .and_then(|w| w.number(4, 3000))
        .and_then(|w| w.field(7, b"1123114959"))
        .and_then(|w| w.number(11, 42))
        .and_then(|w| w.field(14, b"2812"))
        .and_then(|w| w.field(25, b"59"))
        .and_then(|w| w.field(41, b"DEMO0001"))
        .and_then(|w| w.field(42, b"DEMO00000000001"))
        .and_then(|w| w.field(48, b"420207"))
        .and_then(|w| w.field(49, b"978"))
        .and_then(|w| w.field(52, &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]))
        .and_then(|w| w.field(55, &[0x9f, 0x02, 0x01, 0x00]))
        .expect("valid fields");
    w.finish().expect("fits");
    buf
}

#[test]
fn round_trip_in_both_profiles() {
    for profile in Profile::ALL {
        let buf = sample(profile);
        let m = Message::decode(profile, &buf).expect("decodes");
        assert_eq!(m.mti().as_str(), "0100");
        assert_eq!(m.text(2), Some("4111111111111111"));
        assert_eq!(m.number(4), Some(3000));
        assert_eq!(m.number(11), Some(42));
        assert_eq!(m.text(48), Some("420207"));
        let mut scratch = [0u8; 255];
        let f52 = m.binary(52).expect("present");
        assert_eq!(
            f52.bytes(&mut scratch),
            Some(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3][..])
        );
        assert_eq!(m.binary(55).map(|b| b.len()), Some(4));
        assert!(!m.bitmap().has(1), "no secondary bitmap needed");
        assert_eq!(m.fields().count(), 13);
    }
    let hex = sample(&Profile::ASCII_HEX);
    // Fields 2 3 4 7 | 11 14 | - | 25 | - | 41 42 48 | 49 52 55 | -.
    assert_eq!(&hex[4..20], b"7224008000C19200");
}

#[test]
fn secondary_bitmap_when_needed() {
    for profile in Profile::ALL {
        let mut buf = BytesMut::new();
        let mut w = MessageWriter::new(&mut buf, profile, Mti::parse("0800").expect("mti"));
        w.field(7, b"1123114959")
            .and_then(|w| w.number(11, 1))
            .and_then(|w| w.field(70, b"301"))
            .expect("valid");
        w.finish().expect("fits");
        let m = Message::decode(profile, &buf).expect("decodes");
        assert!(m.bitmap().has(1));
        assert_eq!(m.text(70), Some("301"));
        assert_eq!(
            m.fields().map(|(n, _)| n).collect::<Vec<_>>(),
            vec![7, 11, 70]
        );
    }
}

#[test]
fn known_bytes_decode() {
    // 0800 with F7, F11 in the ascii profile, written by hand.
    let mut wire = b"0800".to_vec();
    wire.extend_from_slice(&[0x02, 0x20, 0, 0, 0, 0, 0, 0]);
    wire.extend_from_slice(b"1123114959000001");
    let m = Message::decode(&Profile::ASCII, &wire).expect("decodes");
    assert_eq!(m.text(7), Some("1123114959"));
    assert_eq!(m.number(11), Some(1));
}

#[test]
fn errors_name_the_field() {
    let p = &Profile::ASCII;
    let base = sample(p);
    // F4 is the 4th field; corrupt a digit of the amount.
    let mut bad = base.to_vec();
    let at = 4 + 8 + 2 + 16 + 6;
    bad[at] = b'x';
    let e = Message::decode(p, &bad).expect_err("bad content");
    assert_eq!(
        (e.field, e.kind),
        (4, DecodeErrorKind::BadContent(FieldType::N))
    );
    assert_eq!(
        e.to_string(),
        format!("field 4: content is not of type n (at byte {at})")
    );
    // PAN length prefix over 19.
    let mut bad = base.to_vec();
    bad[12] = b'2';
    bad[13] = b'0';
    assert_eq!(
        Message::decode(p, &bad)
            .map_err(|e| (e.field, e.kind))
            .err(),
        Some((2, DecodeErrorKind::LengthOverMax { len: 20, max: 19 }))
    );
    // Truncated and trailing.
    assert_eq!(
        Message::decode(p, &base[..base.len() - 1])
            .map_err(|e| e.field)
            .err(),
        Some(55)
    );
    let mut long = base.to_vec();
    long.push(b'0');
    assert_eq!(
        Message::decode(p, &long).map_err(|e| e.kind).err(),
        Some(DecodeErrorKind::TrailingBytes(1))
    );
    assert_eq!(
        Message::decode(p, b"01x0").map_err(|e| e.kind).err(),
        Some(DecodeErrorKind::BadMti)
    );
    assert!(matches!(
        Message::decode(p, b"0100").map_err(|e| e.kind),
        Err(DecodeErrorKind::Truncated { needed: 8 })
    ));
    let mut hexbad = sample(&Profile::ASCII_HEX).to_vec();
    hexbad[5] = b'G';
    assert_eq!(
        Message::decode(&Profile::ASCII_HEX, &hexbad)
            .map_err(|e| e.kind)
            .err(),
        Some(DecodeErrorKind::BadBitmap)
    );
}

#[test]
fn writer_refuses_bad_values_and_stays_usable() {
    let mut buf = BytesMut::new();
    let mut w = MessageWriter::new(&mut buf, &Profile::ASCII, Mti::parse("0110").expect("mti"));
    assert_eq!(
        w.field(4, b"12").err().map(|e| e.kind),
        Some(EncodeErrorKind::WrongLength {
            expected: 12,
            actual: 2
        })
    );
    assert_eq!(
        w.number(11, 1_000_000).err().map(|e| e.kind),
        Some(EncodeErrorKind::NumberTooLarge)
    );
    assert_eq!(
        w.field(2, &[b'1'; 20]).err().map(|e| e.kind),
        Some(EncodeErrorKind::TooLong {
            max: 19,
            actual: 20
        })
    );
    assert_eq!(
        w.field(3, b"00000a").err().map(|e| e.kind),
        Some(EncodeErrorKind::BadContent(FieldType::N))
    );
    assert_eq!(
        w.field(1, b"").err().map(|e| e.kind),
        Some(EncodeErrorKind::OutOfOrder)
    );
    assert_eq!(
        w.field(129, b"").err().map(|e| e.kind),
        Some(EncodeErrorKind::NotAField)
    );
    w.field(39, b"00").expect("valid");
    assert_eq!(
        w.field(39, b"00").err().map(|e| e.kind),
        Some(EncodeErrorKind::OutOfOrder)
    );
    w.finish().expect("fits");
    let m = Message::decode(&Profile::ASCII, &buf).expect("decodes");
    assert_eq!(m.fields().map(|(n, _)| n).collect::<Vec<_>>(), vec![39]);
}

#[test]
fn writer_appends_to_what_is_in_the_buffer() {
    // What was in the buffer stays; an unfinished writer leaves the MTI,
    // the bitmap room and the fields written, nothing of a refused one; a
    // finished one leaves the message only, however large.
    for profile in Profile::ALL {
        let half = 8 * Profile::binary_unit(profile.bitmap);
        let mut buf = BytesMut::from(&b"keep"[..]);
        let mut w = MessageWriter::new(&mut buf, profile, Mti::parse("0100").expect("mti"));
        w.field(2, b"4111111111111111").expect("valid");
        assert!(w.field(3, b"x").is_err());
        let mut expected = b"keep0100".to_vec();
        expected.extend(std::iter::repeat_n(0u8, 2 * half));
        expected.extend_from_slice(b"164111111111111111");
        assert_eq!(&buf[..], &expected[..]);

        buf.clear();
        buf.extend_from_slice(b"keep");
        let mut w = MessageWriter::new(&mut buf, profile, Mti::parse("0100").expect("mti"));
        for n in [46, 47, 48, 56, 57, 58, 59] {
            w.field(n, &[b'7'; 90]).expect("valid");
        }
        let len = w.finish().expect("fits");
        assert_eq!(buf.len(), 4 + len);
        assert_eq!(&buf[..4], b"keep");
        let m = Message::decode(profile, &buf[4..]).expect("decodes");
        assert_eq!(m.fields().count(), 7);
        assert!(m.fields().all(|(_, v)| v == [b'7'; 90]));
    }
}

#[test]
fn write_plans_follow_the_dictionary() {
    // Every field number (and the numbers around them), every length up
    // to 1,000, from the precomputed table and worked out on the spot.
    for profile in Profile::ALL {
        let table = plan::precomputed_write(profile);
        assert!(table.is_some());
        for n in 0..=130u8 {
            for len in 0..=1000usize {
                let expected = profile.field(n).is_some_and(|spec| match spec.len {
                    LenKind::Fixed => len == usize::from(spec.max_len),
                    _ => len <= usize::from(spec.max_len),
                });
                for t in [table, None] {
                    let got = plan::WritePlan::of(t, profile, n).is_some_and(|p| p.len_ok(len));
                    assert_eq!(got, expected, "field {n}, {len} bytes");
                }
            }
            if let (Some(p), Some(spec)) =
                (plan::WritePlan::of(table, profile, n), profile.field(n))
            {
                assert_eq!(p.ty, spec.ty);
                assert_eq!(usize::from(p.prefix_digits), spec.len.prefix_digits());
                assert_eq!(
                    p.hex,
                    spec.ty == FieldType::B && profile.binary == BinaryEncoding::Hex
                );
            }
        }
    }
}

#[test]
fn mti_helpers() {
    let m = Mti::parse("0101").expect("mti");
    assert!(m.is_repeat() && m.is_request());
    assert_eq!(m.without_repeat().as_str(), "0100");
    assert_eq!(m.response().map(|r| r.to_string()), Some("0110".into()));
    assert_eq!(
        Mti::parse("0421")
            .and_then(|m| m.response())
            .map(|r| r.to_string()),
        Some("0430".into())
    );
    assert_eq!(Mti::parse("0110").and_then(|m| m.response()), None);
    assert_eq!(Mti::parse("010"), None);
    assert_eq!(Mti::parse("0200").map(|m| m.number()), Some(200));
}

#[test]
fn debug_does_not_show_content() {
    let buf = sample(&Profile::ASCII);
    let m = Message::decode(&Profile::ASCII, &buf).expect("decodes");
    let dbg = format!("{m:?}");
    assert!(!dbg.contains("4111"), "{dbg}");
}

#[test]
fn lenient_decode_skips_bad_content_and_keeps_the_rest() {
    let p = &Profile::ASCII;
    let mut bad = sample(p).to_vec();
    let at = 4 + 8 + 2 + 16 + 6;
    bad[at] = b'x';
    let (m, err) = Message::decode_lenient(p, &bad).expect("mti and bitmap readable");
    assert_eq!(
        err.map(|e| (e.field, e.kind)),
        Some((4, DecodeErrorKind::BadContent(FieldType::N)))
    );
    assert!(!m.has(4));
    assert_eq!(m.number(11), Some(42));
    assert_eq!(m.text(41), Some("DEMO0001"));
    // A length error stops decoding: fields after it are gone.
    let mut bad = sample(p).to_vec();
    bad[12] = b'9';
    let (m, err) = Message::decode_lenient(p, &bad).expect("mti and bitmap readable");
    assert_eq!(err.map(|e| e.field), Some(2));
    assert!(!m.has(11));
    assert!(Message::decode_lenient(p, b"01").is_err());
}

/// Every data element 2..=128 with a valid value: fixed fields full,
/// variable ones `n % 9` long, so lengths differ from field to field.
fn every_field() -> Vec<(u8, Vec<u8>)> {
    (2u8..=128)
        .map(|n| {
            let spec = DICTIONARY_1987[usize::from(n)];
            let len = match spec.len {
                LenKind::Fixed => usize::from(spec.max_len),
                _ => usize::from(n % 9).min(usize::from(spec.max_len)),
            };
            let mut v = vec![
                match spec.ty {
                    FieldType::N | FieldType::XN | FieldType::Z => b'0' + n % 10,
                    FieldType::An => b'A' + n % 26,
                    FieldType::Ans => b'!' + n % 90,
                    FieldType::B => n,
                };
                len
            ];
            if let (FieldType::XN, Some(sign)) = (spec.ty, v.first_mut()) {
                *sign = b'C';
            }
            (n, v)
        })
        .collect()
}

/// Field `n`'s content as `m` gives it: raw bytes for binary fields.
fn logical(m: &Message<'_>, n: u8, raw: &[u8]) -> Vec<u8> {
    let mut scratch = [0u8; 999];
    match m.binary(n) {
        Some(b) => b.bytes(&mut scratch).expect("hex").to_vec(),
        None => raw.to_vec(),
    }
}

#[test]
fn fields_past_the_kept_offsets_are_found() {
    for profile in Profile::ALL {
        let fields = every_field();
        let mut buf = BytesMut::new();
        let mut w = MessageWriter::new(&mut buf, profile, Mti::parse("0100").expect("mti"));
        for (n, v) in &fields {
            w.field(*n, v).expect("a valid value");
        }
        w.finish().expect("fits");
        let m = Message::decode(profile, &buf).expect("decodes");
        // Each field by number, in an order that is not the wire's, and
        // all of them by one walk.
        for (n, v) in fields.iter().rev() {
            let raw = m.raw(*n).expect("present");
            assert_eq!(&logical(&m, *n, raw), v, "field {n}");
        }
        let walked: Vec<(u8, Vec<u8>)> = m.fields().map(|(n, r)| (n, logical(&m, n, r))).collect();
        assert_eq!(walked, fields);

        // A bad field at each side of the last kept offset, and far past
        // it: the lenient decode drops that field only.
        for bad in [31usize, 32, 33, 40, 126] {
            let (n, _) = fields[bad];
            let Some(spec) = profile.field(n) else {
                panic!("field {n}");
            };
            let raw = m.raw(n).expect("present");
            if raw.is_empty() || (spec.ty == FieldType::B && profile.binary == BinaryEncoding::Raw)
            {
                continue;
            }
            let at = raw.as_ptr() as usize - buf.as_ptr() as usize;
            let mut wire = buf.to_vec();
            wire[at] = 0x01;
            let (l, err) = Message::decode_lenient(profile, &wire).expect("header readable");
            assert_eq!(err.map(|e| e.field), Some(n), "rank {bad}");
            assert!(!l.has(n) && l.raw(n).is_none(), "rank {bad}");
            let expected: Vec<_> = fields.iter().filter(|(f, _)| *f != n).cloned().collect();
            let walked: Vec<_> = l.fields().map(|(f, r)| (f, logical(&l, f, r))).collect();
            assert_eq!(walked, expected, "rank {bad}");
            for (f, v) in &expected {
                let raw = l.raw(*f).expect("present");
                assert_eq!(&logical(&l, *f, raw), v, "rank {bad}, field {f}");
            }
        }
    }
}

#[test]
fn word_checks_agree_with_the_byte_table() {
    // Every length up to 20 (short, whole-word and overlapping tails),
    // every position of one odd byte, every byte value there, and bytes
    // before the field that would fail (they must not be looked at).
    for len in 0..=20usize {
        for at in 0..len {
            for odd in 0..=255u8 {
                let mut buf = vec![0xffu8; 12];
                let start = buf.len();
                buf.extend(std::iter::repeat_n(b'7', len));
                buf[start + at] = odd;
                buf.push(0xff);
                let end = start + len;
                let content = &buf[start..end];
                assert_eq!(
                    digits_ok(&buf, start, end),
                    all_in(content, CLASS_N),
                    "n, len {len} at {at} byte {odd:#x}"
                );
                assert_eq!(
                    printable_ok(&buf, start, end),
                    all_in(content, CLASS_ANS),
                    "ans, len {len} at {at} byte {odd:#x}"
                );
            }
        }
        let mut buf = vec![0xffu8; 12];
        buf.extend(std::iter::repeat_n(b' ', len));
        assert!(printable_ok(&buf, 12, 12 + len));
        assert_eq!(digits_ok(&buf, 12, 12 + len), len == 0);
    }
}

#[test]
fn length_prefixes_read_two_and_three_digits() {
    for v in 0..1000u16 {
        let three = format!("{v:03}");
        assert_eq!(message::ascii_number(three.as_bytes()), Some(v));
        if v < 100 {
            let two = format!("{v:02}");
            assert_eq!(message::ascii_number(two.as_bytes()), Some(v));
        }
    }
    for bad in [&b"1a"[..], b"/0", b":0", b"0 1", b"1234", b"9\xff"] {
        assert_eq!(message::ascii_number(bad), None, "{bad:?}");
    }
}

#[test]
fn other_dictionaries_plan_at_decode_time_and_agree() {
    for profile in Profile::ALL {
        let built = plan::FieldPlan::table(profile.fields, profile.binary);
        assert_eq!(plan::precomputed(profile), Some(&built));
        // Same dictionary at another address: no precomputed plans.
        let fields: &'static [FieldSpec; 129] = Box::leak(Box::new(DICTIONARY_1987));
        let other: &'static Profile = Box::leak(Box::new(Profile {
            name: "other",
            fields,
            bitmap: profile.bitmap,
            binary: profile.binary,
            text: profile.text,
        }));
        assert!(plan::precomputed(other).is_none());
        let buf = sample(profile);
        let ours = Message::decode(profile, &buf).expect("decodes");
        let theirs = Message::decode(other, &buf).expect("decodes");
        assert_eq!(
            ours.fields().collect::<Vec<_>>(),
            theirs.fields().collect::<Vec<_>>()
        );
    }
}

proptest::proptest! {
    /// The encoder's word-at-a-time content checks agree with the byte
    /// table for every type they cover, at every length around a word.
    #[test]
    fn word_content_checks_match_the_byte_table(
        value in proptest::collection::vec(
            proptest::prop_oneof![b'0'..=b'9', 0x20u8..=0x7e, proptest::num::u8::ANY],
            0..40,
        )
    ) {
        proptest::prop_assert_eq!(content_ok(FieldType::N, &value), all_in(&value, CLASS_N));
        proptest::prop_assert_eq!(content_ok(FieldType::Ans, &value), all_in(&value, CLASS_ANS));
    }
}

proptest::proptest! {
    /// A short value loaded with overlapping loads is its bytes, first
    /// byte lowest, zeros past its end, at every length under a word.
    #[test]
    fn short_word_is_the_bytes_in_order(value in proptest::collection::vec(proptest::num::u8::ANY, 0..8)) {
        let expected = value
            .iter()
            .rev()
            .fold(0u64, |w, &b| (w << 8) | u64::from(b));
        proptest::prop_assert_eq!(short_word(&value), expected);
    }
}
