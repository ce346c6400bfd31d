//! Network management messages of a link: the 0800s it sends (sign-on,
//! sign-off, echo) and the 0810 it answers an issuer's 0800 with.

use bytes::{BufMut, BytesMut};
use codecs::framing::{FrameCodec, WriteError};
use codecs::iso8583::{EncodeError, Message, MessageWriter, Mti, Profile};

use crate::clock::UtcDateTime;

/// F70 network management codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NetworkCode {
    /// 001: sign-on, sent on connect.
    SignOn,
    /// 002: sign-off, sent before a planned close.
    SignOff,
    /// 301: echo, sent on an idle link.
    Echo,
}

impl NetworkCode {
    /// F70's three digits.
    pub(super) fn f70(self) -> &'static [u8; 3] {
        match self {
            NetworkCode::SignOn => b"001",
            NetworkCode::SignOff => b"002",
            NetworkCode::Echo => b"301",
        }
    }

    /// For logs and metric labels.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            NetworkCode::SignOn => "sign_on",
            NetworkCode::SignOff => "sign_off",
            NetworkCode::Echo => "echo",
        }
    }
}

/// F7 (MMDDhhmmss, UTC) of `now_ms`.
pub(super) fn f7(now_ms: u64) -> [u8; 10] {
    let t = UtcDateTime::from_ms(now_ms);
    let mut out = [b'0'; 10];
    for (pair, v) in out
        .chunks_exact_mut(2)
        .zip([t.month, t.day, t.hour, t.minute, t.second])
    {
        if let [hi, lo] = pair {
            *hi = b'0' + v / 10;
            *lo = b'0' + v % 10;
        }
    }
    out
}

/// Why a network message could not be written: a programming or
/// configuration error (an `acquirer_id` that is not 1 to 11 digits).
pub(super) type BuildError = WriteError<EncodeError>;

/// Appends one framed 0800 with F7, F11 `stan`, F32 (when `acquirer_id`
/// is not empty) and F70 `code` to `out`.
pub(super) fn write_0800(
    out: &mut BytesMut,
    codec: &FrameCodec,
    profile: &'static Profile,
    now_ms: u64,
    stan: u32,
    acquirer_id: &str,
    code: NetworkCode,
) -> Result<(), BuildError> {
    let mti = Mti::parse("0800").unwrap_or_else(|| unreachable!("a literal MTI"));
    codec.write_frame(out, None, |d| {
        let mut w = MessageWriter::new(d, profile, mti);
        w.field(7, &f7(now_ms))?;
        w.number(11, u64::from(stan))?;
        if !acquirer_id.is_empty() {
            w.field(32, acquirer_id.as_bytes())?;
        }
        w.field(70, code.f70())?;
        w.finish().map(|_| ())
    })
}

/// Appends one framed 0810 answering the issuer's `request` (an 0800):
/// its F7, F11 and F70 echoed, F39 00.
pub(super) fn write_0810(
    out: &mut BytesMut,
    codec: &FrameCodec,
    request: &Message<'_>,
) -> Result<(), BuildError> {
    let mti = Mti::parse("0810").unwrap_or_else(|| unreachable!("a literal MTI"));
    codec.write_frame(out, None, |d| {
        let mut w = MessageWriter::new(d, request.profile(), mti);
        for n in [7, 11] {
            if let Some(v) = request.raw(n) {
                w.field(n, v)?;
            }
        }
        w.field(39, b"00")?;
        if let Some(v) = request.raw(70) {
            w.field(70, v)?;
        }
        w.finish().map(|_| ())
    })
}

/// Appends one request `body` (already encoded) to `out`, framed.
pub(super) fn write_request(
    out: &mut BytesMut,
    codec: &FrameCodec,
    body: &[u8],
) -> Result<(), WriteError<std::convert::Infallible>> {
    codec.write_frame(out, None, |d| {
        d.put_slice(body);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use codecs::framing::{FrameCodec, FrameConfig};
    use tokio_util::codec::Decoder;

    use super::*;

    #[test]
    fn an_0800_round_trips_and_is_answered_in_kind() {
        let codec = FrameCodec::new(FrameConfig::default());
        let mut out = BytesMut::new();
        // 2026-11-23T11:49:10Z
        write_0800(
            &mut out,
            &codec,
            &Profile::ASCII,
            1_795_434_550_000,
            42,
            "123456",
            NetworkCode::Echo,
        )
        .expect("encodes");
        let frame = FrameCodec::new(FrameConfig::default())
            .decode(&mut out)
            .expect("frames")
            .expect("whole");
        let m = Message::decode(&Profile::ASCII, &frame.body).expect("decodes");
        assert_eq!(m.mti().as_str(), "0800");
        assert_eq!(m.text(7), Some("1123114910"));
        assert_eq!(m.number(11), Some(42));
        assert_eq!(m.text(32), Some("123456"));
        assert_eq!(m.text(70), Some("301"));
        let mut answer = BytesMut::new();
        write_0810(&mut answer, &codec, &m).expect("encodes");
        let frame = FrameCodec::new(FrameConfig::default())
            .decode(&mut answer)
            .expect("frames")
            .expect("whole");
        let a = Message::decode(&Profile::ASCII, &frame.body).expect("decodes");
        assert_eq!(a.mti().as_str(), "0810");
        assert_eq!(
            (a.text(7), a.number(11), a.text(39), a.text(70)),
            (Some("1123114910"), Some(42), Some("00"), Some("301"))
        );
    }
}
