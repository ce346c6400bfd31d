//! [`InternalCodec`]: the tokio-util `Decoder`/`Encoder` for a connection.
//! The decoder refuses an over-limit body on the header alone, before it
//! reserves or buffers anything, and hands frames out zero-copy.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::Error;
use super::header::{read_header, Frame, Header};
use super::request::Request;
use super::response::Response;

/// Delimits internal frames on a byte stream and writes typed frames.
/// Stateless: the 16-byte header is re-read on each call until the body is
/// complete, which costs less than keeping it.
#[derive(Clone, Copy, Debug, Default)]
pub struct InternalCodec;

impl InternalCodec {
    /// A codec for one connection.
    pub fn new() -> InternalCodec {
        InternalCodec
    }
}

/// Why a connection's stream failed: the bytes, or the socket.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The stream cannot be trusted any more (see
    /// [`Error::closes_connection`]); the server closes the connection.
    #[error("internal frame: {0}")]
    Frame(#[from] Error),
    /// Reading or writing the socket failed.
    #[error("internal frame i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One whole frame, owned by reference count: the header is checked, the
/// body not yet parsed. Borrow it with [`FrameBytes::frame`] and parse that.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameBytes {
    /// Read once by the decoder.
    header: Header,
    /// Header and body, split off the read buffer without copying.
    bytes: Bytes,
}

impl FrameBytes {
    /// The client's request id, to echo in the response even when the body
    /// does not parse.
    pub fn request_id(&self) -> u64 {
        self.header.request_id
    }

    /// The frame, borrowing from `self`.
    pub fn frame(&self) -> Frame<'_> {
        Frame::from_parts(self.header, &self.bytes)
    }

    /// The frame's bytes, header included (to journal them, say).
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// Never prints the body: it may hold a clear PAN.
impl std::fmt::Debug for FrameBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.frame(), f)
    }
}

impl Decoder for InternalCodec {
    type Item = FrameBytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<FrameBytes>, CodecError> {
        // The limit is checked here, on the header alone, before `reserve`.
        let Some(header) = read_header(src)? else {
            return Ok(None);
        };
        let frame_bytes = header.frame_bytes();
        if src.len() < frame_bytes {
            src.reserve(frame_bytes.saturating_sub(src.len()));
            return Ok(None);
        }
        let bytes = src.split_to(frame_bytes).freeze();
        Ok(Some(FrameBytes { header, bytes }))
    }
}

impl Encoder<(u64, Response<'_>)> for InternalCodec {
    type Error = CodecError;

    /// Writes a response for request id `.0`.
    fn encode(
        &mut self,
        (request_id, response): (u64, Response<'_>),
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        response.encode(request_id, dst)?;
        Ok(())
    }
}

impl Encoder<(u64, Request<'_>)> for InternalCodec {
    type Error = CodecError;

    /// Writes a request with request id `.0`.
    fn encode(
        &mut self,
        (request_id, request): (u64, Request<'_>),
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        request.encode(request_id, dst)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_zero_copy_one_at_a_time() {
        let mut src = BytesMut::new();
        let mut codec = InternalCodec::new();
        codec
            .encode((1, Request::Cancel { payment_id: 9 }), &mut src)
            .unwrap();
        codec
            .encode((2, Request::GetPayment { payment_id: 9 }), &mut src)
            .unwrap();
        let base = src.as_ptr();
        let first = codec.decode(&mut src).unwrap().unwrap();
        assert_eq!(first.as_bytes().as_ptr(), base, "split off, not copied");
        assert_eq!(first.request_id(), 1);
        let second = codec.decode(&mut src).unwrap().unwrap();
        assert_eq!(second.request_id(), 2);
        assert_eq!(
            Request::parse(&second.frame()),
            Ok(Request::GetPayment { payment_id: 9 })
        );
        assert!(codec.decode(&mut src).unwrap().is_none());
    }

    #[test]
    fn junk_is_a_frame_error() {
        let mut src = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        let err = InternalCodec::new().decode(&mut src).unwrap_err();
        assert!(matches!(err, CodecError::Frame(e) if e.closes_connection()));
    }
}
