//! Interoperability with an independent implementation, pyiso8583
//! (`default` spec = `Profile::ASCII`, `default_ascii` = `Profile::ASCII_HEX`):
//! - our dictionary's lengths equal pyiso8583's, field by field;
//! - messages pyiso8583 encodes decode here to the same fields, and
//!   messages we encode decode there to the same fields;
//! - both sides write the very same bytes for the same fields.
//!
//! Needs `python3` with pyiso8583 (`pip install pyiso8583`; CI's `.ci/run`
//! installs it). Without them the tests fail rather than skip.

use std::io::Write;
use std::process::{Command, Stdio};

use bytes::BytesMut;
use codecs::iso8583::{FieldType, LenKind, Message, MessageWriter, Mti, Profile, DICTIONARY_1987};

/// Messages per profile generated for the round trips.
const RANDOM_MESSAGES: usize = 300;

/// The helper script beside this file.
fn script() -> String {
    format!("{}/tests/pyiso/interop.py", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the helper with `commands` (one per line); returns its answers.
fn pyiso(commands: &[String]) -> Vec<String> {
    let mut child = Command::new("python3")
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3 and `pip install pyiso8583`")
        });
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = commands.join("\n") + "\n";
    // Write from a thread: the answers may fill the pipe before we finish.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python3 runs");
    writer
        .join()
        .expect("writer thread")
        .expect("write to python3");
    let text = String::from_utf8(out.stdout).expect("UTF-8 answers");
    assert!(
        out.status.success(),
        "the pyiso8583 helper failed ({}): {text}; `pip install pyiso8583`",
        out.status
    );
    text.lines().map(str::to_owned).collect()
}

/// The pyiso8583 spec matching `profile`.
fn spec_name(profile: &Profile) -> &'static str {
    if profile == &Profile::ASCII {
        "default"
    } else {
        "default_ascii"
    }
}

/// A message's logical fields: MTI, then (number, bytes) in ascending order.
type Fields = (Mti, Vec<(u8, Vec<u8>)>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from python"))
        .collect()
}

/// `t=<hex>;2=<hex>;...`, the helper's field list.
fn fields_text((mti, fields): &Fields) -> String {
    let mut s = format!("t={}", hex(mti.as_bytes()));
    for (n, v) in fields {
        s.push_str(&format!(";{n}={}", hex(v)));
    }
    s
}

fn parse_fields_text(s: &str) -> Fields {
    let mut mti = None;
    let mut fields = Vec::new();
    for item in s.split(';') {
        let (k, v) = item.split_once('=').expect("k=v");
        if k == "t" {
            mti = Mti::from_bytes(&unhex(v));
        } else {
            fields.push((k.parse().expect("field number"), unhex(v)));
        }
    }
    (mti.expect("an MTI"), fields)
}

fn encode(profile: &'static Profile, (mti, fields): &Fields) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut w = MessageWriter::new(&mut buf, profile, *mti);
    for (n, v) in fields {
        w.field(*n, v).expect("a valid value");
    }
    w.finish().expect("fits");
    buf.to_vec()
}

fn decode(profile: &'static Profile, wire: &[u8]) -> Fields {
    let m = Message::decode(profile, wire).unwrap_or_else(|e| panic!("{e}"));
    let mut scratch = [0u8; 999];
    let fields = m
        .fields()
        .map(|(n, raw)| match m.binary(n) {
            Some(b) => (n, b.bytes(&mut scratch).expect("hex").to_vec()),
            None => (n, raw.to_vec()),
        })
        .collect();
    (m.mti(), fields)
}

/// A small deterministic generator (xorshift64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick(&mut self, alphabet: &[u8]) -> u8 {
        alphabet[self.below(alphabet.len())]
    }
}

/// A valid value for field `n`, of a random allowed length and content.
fn random_value(rng: &mut Rng, n: u8) -> Vec<u8> {
    let spec = DICTIONARY_1987[usize::from(n)];
    let max = usize::from(spec.max_len);
    let len = match spec.len {
        LenKind::Fixed => max,
        _ => rng.below(max + 1),
    };
    let digits = b"0123456789";
    let an = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ";
    let ans: Vec<u8> = (0x20..=0x7e).collect();
    match spec.ty {
        FieldType::B => (0..len).map(|_| rng.next() as u8).collect(),
        FieldType::N => (0..len).map(|_| rng.pick(digits)).collect(),
        FieldType::An => (0..len).map(|_| rng.pick(an)).collect(),
        FieldType::Ans => (0..len).map(|_| rng.pick(&ans)).collect(),
        FieldType::Z => (0..len).map(|_| rng.pick(b"0123456789=D")).collect(),
        FieldType::XN => std::iter::once(rng.pick(b"CD"))
            .chain((1..len).map(|_| rng.pick(digits)))
            .collect(),
    }
}

/// Up to 20 fields, any of 2..=128 but 65 (pyiso8583 reads field 65 as the
/// tertiary bitmap flag; our dictionary has it as plain `b 8`).
fn random_message(rng: &mut Rng) -> Fields {
    let mti: Vec<u8> = (0..4).map(|_| rng.pick(b"0123456789")).collect();
    let mut numbers: Vec<u8> = (0..rng.below(21))
        .map(|_| 2 + rng.below(127) as u8)
        .filter(|&n| n != 65)
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let fields = numbers
        .into_iter()
        .map(|n| (n, random_value(rng, n)))
        .collect();
    (Mti::from_bytes(&mti).expect("4 digits"), fields)
}

/// The typical messages of the benchmarks, as pyiso8583 wrote them.
fn bench_messages() -> Vec<Vec<u8>> {
    ["0100", "0200", "0800"]
        .iter()
        .map(|name| {
            let path = format!("{}/../benches/data/{name}.bin", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .collect()
}

#[test]
fn dictionary_lengths_equal_pyiso8583_specs() {
    let answers = pyiso(&["spec".to_owned()]);
    assert_eq!(
        answers.last().map(String::as_str),
        Some("end"),
        "{answers:?}"
    );
    let mut checked = 0;
    for line in &answers[..answers.len() - 1] {
        let parts: Vec<&str> = line.split(' ').collect();
        let [_, spec, n, len_type, max_len, data_enc] = parts[..] else {
            panic!("unexpected line {line:?}");
        };
        let n: usize = n.parse().expect("field number");
        let ours = DICTIONARY_1987[n];
        let kind = match len_type {
            "0" => LenKind::Fixed,
            "2" => LenKind::LlVar,
            "3" => LenKind::LllVar,
            other => panic!("field {n}: len_type {other}"),
        };
        assert_eq!(ours.len, kind, "{spec} field {n}: length kind");
        let is_binary = ours.ty == FieldType::B;
        // default_ascii writes binary fields as hex: twice the characters.
        let expected = match (spec, is_binary) {
            ("default_ascii", true) => 2 * ours.max_len,
            _ => ours.max_len,
        };
        assert_eq!(max_len, expected.to_string(), "{spec} field {n}: max_len");
        if spec == "default" {
            assert_eq!(data_enc == "b", is_binary, "field {n}: binary or text");
        }
        checked += 1;
    }
    assert_eq!(checked, 2 * 128);
}

#[test]
fn messages_decode_the_same_on_both_sides() {
    let mut rng = Rng(0x5eed_1987_8583);
    for profile in Profile::ALL {
        let spec = spec_name(profile);
        let mut messages: Vec<Fields> = bench_messages()
            .iter()
            .map(|wire| decode(&Profile::ASCII, wire))
            .collect();
        messages.extend((0..RANDOM_MESSAGES).map(|_| random_message(&mut rng)));

        // Ours → pyiso8583, and pyiso8583 → ours, in one python run.
        let ours: Vec<Vec<u8>> = messages.iter().map(|m| encode(profile, m)).collect();
        let mut commands: Vec<String> = ours
            .iter()
            .map(|wire| format!("decode {spec} {}", hex(wire)))
            .collect();
        commands.extend(
            messages
                .iter()
                .map(|m| format!("encode {spec} {}", fields_text(m))),
        );
        let answers = pyiso(&commands);
        assert_eq!(answers.len(), 2 * messages.len(), "{answers:?}");
        let (decoded, encoded) = answers.split_at(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let theirs = decoded[i]
                .strip_prefix("ok ")
                .unwrap_or_else(|| panic!("{spec}: pyiso8583 cannot decode ours: {}", decoded[i]));
            assert_eq!(
                &parse_fields_text(theirs),
                m,
                "{spec}: pyiso8583 decodes ours differently"
            );
            let wire = encoded[i]
                .strip_prefix("ok ")
                .map(unhex)
                .unwrap_or_else(|| panic!("{spec}: pyiso8583 cannot encode: {}", encoded[i]));
            assert_eq!(
                &decode(profile, &wire),
                m,
                "{spec}: we decode pyiso8583's differently"
            );
            assert_eq!(
                wire, ours[i],
                "{spec}: the two encoders write different bytes"
            );
        }
    }
}

#[test]
fn pyiso8583_bench_data_is_what_we_write() {
    // benches/data was written by pyiso8583; our encoder writes the same.
    for wire in bench_messages() {
        assert_eq!(
            encode(&Profile::ASCII, &decode(&Profile::ASCII, &wire)),
            wire
        );
    }
}
