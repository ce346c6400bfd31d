//! The fixed 16-byte header, the cheap `check` ("is a whole frame here?")
//! and [`Frame`], a delimited frame borrowing its body from the input.

use std::fmt;

use super::error::Error;
use super::frame_type::FrameType;
use super::FRAME_BODY_BYTES_MAX;

/// The first two bytes of every frame: ASCII `SW`.
pub const FRAME_MAGIC: [u8; 2] = *b"SW";
/// The version this codec reads and writes.
pub const FRAME_VERSION: u8 = 1;
/// Header length: magic 2, version 1, type 1, request id 8, body length 4.
pub const FRAME_HEADER_BYTES: usize = 16;

/// Offset of the body length in the header, patched after the body is
/// written.
const BODY_LENGTH_OFFSET: usize = 12;

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Raw type code: checked when the body is parsed, so a well-delimited
    /// frame of an unknown type can still be answered by request id.
    pub(crate) frame_type: u8,
    /// Chosen by the client; echoed in the response so pipelined responses
    /// can come back in any order.
    pub(crate) request_id: u64,
    /// Body length, already checked against [`FRAME_BODY_BYTES_MAX`].
    pub(crate) body_bytes: usize,
}

impl Header {
    /// Header plus body. Cannot overflow: the body is at most
    /// [`FRAME_BODY_BYTES_MAX`].
    pub(crate) fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES.saturating_add(self.body_bytes)
    }
}

/// Reads the header at the start of `buf`: `Ok(None)` until 16 bytes are
/// there. Bad magic and version are refused as soon as their bytes arrive,
/// so junk is rejected without waiting for a whole header.
pub(crate) fn read_header(buf: &[u8]) -> Result<Option<Header>, Error> {
    if let [m0, m1, rest @ ..] = buf {
        if [*m0, *m1] != FRAME_MAGIC {
            return Err(Error::BadMagic {
                found: u16::from_be_bytes([*m0, *m1]),
            });
        }
        if let [version, ..] = rest {
            if *version != FRAME_VERSION {
                return Err(Error::UnsupportedVersion { found: *version });
            }
        }
    }
    let Some(head) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let Ok::<[u8; FRAME_HEADER_BYTES], _>(head) = head.try_into() else {
        return Ok(None);
    };
    let [_, _, _, frame_type, r0, r1, r2, r3, r4, r5, r6, r7, l0, l1, l2, l3] = head;
    let length = u32::from_be_bytes([l0, l1, l2, l3]);
    let body_bytes = usize::try_from(length)
        .ok()
        .filter(|n| *n <= FRAME_BODY_BYTES_MAX)
        .ok_or(Error::BodyTooLong { length })?;
    let request_id = u64::from_be_bytes([r0, r1, r2, r3, r4, r5, r6, r7]);
    Ok(Some(Header {
        frame_type,
        request_id,
        body_bytes,
    }))
}

/// Is a whole frame at the start of `buf`? Returns its length (header and
/// body) when it is, `Ok(None)` when more bytes are needed. Looks at the
/// header only and allocates nothing.
///
/// # Errors
/// [`Error::BadMagic`], [`Error::UnsupportedVersion`] or
/// [`Error::BodyTooLong`]: the stream cannot be trusted any more (see
/// [`Error::closes_connection`]).
pub fn check(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(header) = read_header(buf)? else {
        return Ok(None);
    };
    let frame_bytes = header.frame_bytes();
    Ok((buf.len() >= frame_bytes).then_some(frame_bytes))
}

/// One delimited frame: its header, and its body borrowed from the input.
/// The body is not parsed yet: see `Request::parse` and `Response::parse`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The decoded header.
    header: Header,
    /// Exactly `header.body_bytes` bytes.
    body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Delimits the frame at the start of `buf`: `Ok(None)` when incomplete,
    /// else the frame and the number of bytes it spans in `buf`.
    ///
    /// # Errors
    /// As [`check`].
    pub fn parse(buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, Error> {
        let Some(header) = read_header(buf)? else {
            return Ok(None);
        };
        let frame_bytes = header.frame_bytes();
        let Some(body) = buf.get(FRAME_HEADER_BYTES..frame_bytes) else {
            return Ok(None);
        };
        Ok(Some((Frame { header, body }, frame_bytes)))
    }

    /// Builds a frame from a header already read and the bytes it spans
    /// (the decoder split off exactly `header.frame_bytes()`; were `frame`
    /// shorter, the body would be empty rather than a panic).
    pub(crate) fn from_parts(header: Header, frame: &'a [u8]) -> Frame<'a> {
        let body = frame
            .get(FRAME_HEADER_BYTES..header.frame_bytes())
            .unwrap_or(&[]);
        Frame { header, body }
    }

    /// The client's request id, to echo in the response.
    pub fn request_id(&self) -> u64 {
        self.header.request_id
    }

    /// The frame's type.
    ///
    /// # Errors
    /// [`Error::UnknownFrameType`] for a code this version does not define.
    pub fn frame_type(&self) -> Result<FrameType, Error> {
        FrameType::from_code(self.header.frame_type)
    }

    /// The raw body: typed fields, tag `u8`, length `u16`, value.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// Never prints the body: it may hold a clear PAN.
impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("frame_type", &self.header.frame_type)
            .field("request_id", &self.header.request_id)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Writes a header with a zero body length, patched by [`finish_frame`].
pub(crate) fn start_frame(dst: &mut bytes::BytesMut, frame_type: FrameType, request_id: u64) {
    use bytes::BufMut;
    dst.put_slice(&FRAME_MAGIC);
    dst.put_u8(FRAME_VERSION);
    dst.put_u8(frame_type.code());
    dst.put_u64(request_id);
    dst.put_u32(0);
}

/// Patches the body length of the frame that starts at `start`.
///
/// # Errors
/// [`Error::BodyTooLong`] when the body is over the limit.
pub(crate) fn finish_frame(dst: &mut bytes::BytesMut, start: usize) -> Result<(), Error> {
    let body_start = start.saturating_add(FRAME_HEADER_BYTES);
    let body_bytes = dst.len().saturating_sub(body_start);
    let length = u32::try_from(body_bytes).unwrap_or(u32::MAX);
    if body_bytes > FRAME_BODY_BYTES_MAX {
        return Err(Error::BodyTooLong { length });
    }
    let at = start.saturating_add(BODY_LENGTH_OFFSET);
    let slot = dst
        .get_mut(at..body_start)
        .ok_or(Error::BodyTooLong { length })?;
    slot.copy_from_slice(&length.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(body_len: u32) -> Vec<u8> {
        let mut v = b"SW\x01\x07".to_vec();
        v.extend_from_slice(&42u64.to_be_bytes());
        v.extend_from_slice(&body_len.to_be_bytes());
        v
    }

    #[test]
    fn incomplete_is_none_and_junk_is_refused_early() {
        assert_eq!(check(b""), Ok(None));
        assert_eq!(check(b"S"), Ok(None));
        assert_eq!(check(b"GE"), Err(Error::BadMagic { found: 0x4745 }));
        assert_eq!(
            check(b"SW\x02"),
            Err(Error::UnsupportedVersion { found: 2 })
        );
        let mut v = header(3);
        assert_eq!(check(&v), Ok(None));
        v.extend_from_slice(b"abc");
        assert_eq!(check(&v), Ok(Some(19)));
        v.push(0);
        assert_eq!(check(&v), Ok(Some(19)));
    }

    #[test]
    fn over_limit_is_refused_on_the_header_alone() {
        let v = header(u32::MAX);
        assert_eq!(check(&v), Err(Error::BodyTooLong { length: u32::MAX }));
        let limit = u32::try_from(FRAME_BODY_BYTES_MAX).unwrap();
        assert_eq!(check(&header(limit)), Ok(None));
        assert!(check(&header(limit + 1)).is_err());
    }

    #[test]
    fn frame_borrows_its_body() {
        let mut v = header(2);
        v.extend_from_slice(b"xyz");
        let (frame, n) = Frame::parse(&v).unwrap().unwrap();
        assert_eq!(n, 18);
        assert_eq!(frame.body(), b"xy");
        assert_eq!(frame.request_id(), 42);
        assert_eq!(frame.frame_type(), Ok(FrameType::GetPayment));
        assert!(!format!("{frame:?}").contains("xy"));
    }
}
