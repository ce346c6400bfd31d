//! `switch iso decode` and `switch iso encode`: one hex message per line
//! to one JSON object per line, and back. A bad line gets
//! `{"error": "..."}` and the next line is read.

use std::io::{BufRead, Write};

use bytes::BytesMut;
use codecs::card::MaskedPan;
use codecs::iso8583::{FieldType, Message, MessageWriter, Mti, Profile};
use serde_json::{json, Map, Value};

/// Longest input line read (a 65,535-byte message as hex, plus slack).
const LINE_BYTES_MAX: usize = 2 * 65_535 + 64;

/// Fields masked unless `--unmasked`: card number, expiry, tracks, PIN, EMV.
const CARD_FIELDS: [u8; 7] = [2, 14, 35, 36, 45, 52, 55];

fn read_line_bounded<R: BufRead>(
    input: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut limited = std::io::Read::take(&mut *input, LINE_BYTES_MAX as u64 + 1);
    let n = limited.read_until(b'\n', line)?;
    if n == 0 {
        return Ok(None);
    }
    let too_long = line.len() > LINE_BYTES_MAX && line.last() != Some(&b'\n');
    if too_long {
        // Skip the rest of the over-long line.
        let mut sink = Vec::new();
        input.read_until(b'\n', &mut sink)?;
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(!too_long))
}

fn field_json(msg: &Message<'_>, n: u8, unmasked: bool) -> Value {
    let raw = msg.raw(n).unwrap_or_default();
    let is_binary = msg.profile().field(n).is_some_and(|s| s.ty == FieldType::B);
    if !unmasked && CARD_FIELDS.contains(&n) {
        return match n {
            2 => Value::String(MaskedPan::new(raw).to_string()),
            _ => Value::String("*".repeat(4)),
        };
    }
    if is_binary {
        let mut scratch = [0u8; 1024];
        let bytes = msg
            .binary(n)
            .and_then(|b| b.bytes(&mut scratch).map(hex::encode_upper))
            .unwrap_or_default();
        Value::String(bytes)
    } else {
        Value::String(String::from_utf8_lossy(raw).into_owned())
    }
}

/// Decodes hex lines from `input` into JSON lines on `output`.
///
/// # Errors
/// Only I/O errors; bad lines are reported in the output.
pub(crate) fn decode_lines(
    profile: &'static Profile,
    unmasked: bool,
    mut input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    while let Some(ok) = read_line_bounded(&mut input, &mut line)? {
        let out = if !ok {
            json!({"error": format!("line longer than {LINE_BYTES_MAX} characters")})
        } else {
            match hex::decode(line.trim_ascii()) {
                Err(e) => json!({"error": format!("not hex: {e}")}),
                Ok(bytes) => match Message::decode(profile, &bytes) {
                    Err(e) => json!({"error": e.to_string()}),
                    Ok(msg) => {
                        let mut fields = Map::new();
                        for (n, _) in msg.fields() {
                            fields.insert(n.to_string(), field_json(&msg, n, unmasked));
                        }
                        json!({"mti": msg.mti().as_str(), "fields": fields})
                    }
                },
            }
        };
        writeln!(output, "{out}")?;
    }
    Ok(())
}

fn encode_one(profile: &'static Profile, value: &Value, buf: &mut BytesMut) -> Result<(), String> {
    let mti = value
        .get("mti")
        .and_then(Value::as_str)
        .ok_or("missing \"mti\"")?;
    let mti = Mti::parse(mti).ok_or_else(|| format!("mti `{mti}` is not 4 digits"))?;
    let fields = value
        .get("fields")
        .and_then(Value::as_object)
        .ok_or("missing \"fields\" object")?;
    let mut numbered = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        let n: u8 = k
            .parse()
            .map_err(|_| format!("field key `{k}` is not a number"))?;
        let text = v
            .as_str()
            .ok_or_else(|| format!("field {n}: value must be a string"))?;
        numbered.push((n, text));
    }
    numbered.sort_by_key(|(n, _)| *n);
    let mut w = MessageWriter::new(buf, profile, mti);
    for (n, text) in numbered {
        let binary = profile.field(n).is_some_and(|s| s.ty == FieldType::B);
        let value = if binary {
            hex::decode(text).map_err(|e| format!("field {n}: not hex: {e}"))?
        } else {
            text.as_bytes().to_vec()
        };
        w.field(n, &value).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    Ok(())
}

/// Encodes JSON lines from `input` into hex lines on `output`.
///
/// # Errors
/// Only I/O errors; bad lines are reported in the output.
pub(crate) fn encode_lines(
    profile: &'static Profile,
    mut input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    let mut buf = BytesMut::with_capacity(1024);
    while let Some(ok) = read_line_bounded(&mut input, &mut line)? {
        buf.clear();
        let result = if ok {
            serde_json::from_slice::<Value>(&line)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| encode_one(profile, &v, &mut buf))
        } else {
            Err(format!("line longer than {LINE_BYTES_MAX} characters"))
        };
        match result {
            Ok(()) => writeln!(output, "{}", hex::encode_upper(&buf))?,
            Err(e) => writeln!(output, "{}", json!({"error": e}))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_encode(input: &str) -> String {
        let mut out = Vec::new();
        encode_lines(&Profile::ASCII, input.as_bytes(), &mut out).expect("io");
        String::from_utf8(out).expect("utf8")
    }

    fn run_decode(input: &str, unmasked: bool) -> String {
        let mut out = Vec::new();
        decode_lines(&Profile::ASCII, unmasked, input.as_bytes(), &mut out).expect("io");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn round_trip_masks_card_data() {
        let json_in = r#"{"mti":"0100","fields":{"2":"4111111111111111","4":"000000001000","11":"000001","52":"0102030405060708"}}"#;
        let hex_line = run_encode(json_in);
        assert!(!hex_line.contains("error"), "{hex_line}");
        let masked = run_decode(&hex_line, false);
        let v: Value = serde_json::from_str(masked.trim()).expect("json");
        assert_eq!(v["mti"], "0100");
        assert_eq!(v["fields"]["2"], "411111******1111");
        assert_eq!(v["fields"]["52"], "****");
        assert_eq!(v["fields"]["4"], "000000001000");
        let clear = run_decode(&hex_line, true);
        let v: Value = serde_json::from_str(clear.trim()).expect("json");
        assert_eq!(v["fields"]["2"], "4111111111111111");
        assert_eq!(v["fields"]["52"], "0102030405060708");
    }

    #[test]
    fn bad_lines_get_errors_and_processing_goes_on() {
        let out = run_decode("zz\n30313030\n\n", false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("not hex"));
        assert!(lines[1].contains("field 0"), "{}", lines[1]);
        let out = run_encode(
            "{\"mti\":\"01\"}\n{\"mti\":\"0100\",\"fields\":{\"4\":\"12\"}}\nnot json\n",
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("not 4 digits"));
        assert!(lines[1].contains("field 4"));
        assert!(lines[2].contains("not JSON"));
    }
}
