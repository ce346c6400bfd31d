//! Length-prefixed framing for ISO 8583 over TCP, as a tokio-util codec.
//!
//! The length header is parsed once (`Head`, then `Data(n)`, as in
//! tokio-util's `length_delimited`), the limit is checked before any body
//! is buffered, and frames come out zero-copy with `split_to(n).freeze()`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default largest frame (length header not counted).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 8_192;
/// Largest frame a listener may be configured for.
pub const FRAME_BYTES_LIMIT: usize = 65_535;
/// Length of a TPDU.
pub const TPDU_BYTES: usize = 5;

const _: () = assert!(FRAME_BYTES_MAX_DEFAULT <= FRAME_BYTES_LIMIT);
const _: () = assert!(FRAME_BYTES_LIMIT <= crate::iso8583::MESSAGE_BYTES_MAX);

/// How the frame length is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthHeader {
    /// 2-byte unsigned big-endian (the default).
    Binary2,
    /// 4 ASCII decimal digits.
    Ascii4,
}

impl LengthHeader {
    /// Bytes of the header.
    pub const fn bytes(self) -> usize {
        match self {
            LengthHeader::Binary2 => 2,
            LengthHeader::Ascii4 => 4,
        }
    }
}

/// A listener's framing settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameConfig {
    /// Length header format.
    pub header: LengthHeader,
    /// Whether a 5-byte TPDU follows the length header. The length counts
    /// the TPDU and the message.
    pub tpdu: bool,
    /// Largest frame accepted, length header not counted; at most
    /// [`FRAME_BYTES_LIMIT`].
    pub frame_bytes_max: usize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig {
            header: LengthHeader::Binary2,
            tpdu: false,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
        }
    }
}

/// Why framing failed; the connection should be closed.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// A length header above the limit; nothing of the body was buffered.
    #[error("frame of {len} bytes over the limit of {max}")]
    TooLong {
        /// Length announced.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// An ASCII length header that is not 4 digits.
    #[error("length header is not 4 ASCII digits")]
    BadHeader,
    /// A frame too short to hold its TPDU.
    #[error("frame of {0} bytes cannot hold a 5-byte TPDU")]
    NoTpdu(usize),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One frame: the optional TPDU and the message bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The TPDU, when the listener uses one.
    pub tpdu: Option<Tpdu>,
    /// The message (MTI onwards).
    pub body: Bytes,
}

/// A 5-byte TPDU: id, destination address, source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tpdu(pub [u8; TPDU_BYTES]);

impl Tpdu {
    /// The TPDU of the answer: destination and source swapped.
    pub fn response(self) -> Tpdu {
        let [id, d1, d2, s1, s2] = self.0;
        Tpdu([id, s1, s2, d1, d2])
    }
}

/// Decoder state: waiting for a header, or for `n` body bytes.
#[derive(Clone, Copy, Debug)]
enum State {
    Head,
    Data(usize),
}

/// The tokio-util codec for one connection.
#[derive(Debug)]
pub struct FrameCodec {
    /// Settings of the listener.
    config: FrameConfig,
    /// Parsed header, so it is read only once.
    state: State,
}

impl FrameCodec {
    /// A codec for `config`; the limit is clamped to [`FRAME_BYTES_LIMIT`].
    pub fn new(mut config: FrameConfig) -> Self {
        config.frame_bytes_max = config.frame_bytes_max.min(FRAME_BYTES_LIMIT);
        FrameCodec {
            config,
            state: State::Head,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> FrameConfig {
        self.config
    }

    fn decode_head(&self, src: &mut BytesMut) -> Result<Option<usize>, FramingError> {
        let hlen = self.config.header.bytes();
        let Some(head) = src.get(..hlen) else {
            return Ok(None);
        };
        let len = match self.config.header {
            LengthHeader::Binary2 => match *head {
                [hi, lo] => usize::from(u16::from_be_bytes([hi, lo])),
                _ => return Ok(None),
            },
            LengthHeader::Ascii4 => head.iter().try_fold(0usize, |v, &b| {
                b.is_ascii_digit()
                    .then(|| v * 10 + usize::from(b - b'0'))
                    .ok_or(FramingError::BadHeader)
            })?,
        };
        if len > self.config.frame_bytes_max {
            return Err(FramingError::TooLong {
                len,
                max: self.config.frame_bytes_max,
            });
        }
        if self.config.tpdu && len < TPDU_BYTES {
            return Err(FramingError::NoTpdu(len));
        }
        src.advance(hlen);
        Ok(Some(len))
    }

    /// Writes one frame into `dst`: reserves the header, writes the TPDU
    /// (if any), lets `body` write the message, then fills in the length.
    ///
    /// # Errors
    /// [`FramingError::TooLong`] (and `dst` is left as it was) when the
    /// frame exceeds the limit; `body`'s own error, likewise.
    #[allow(
        clippy::indexing_slicing,
        reason = "start + hlen was written by this function"
    )]
    pub fn write_frame<E>(
        &self,
        dst: &mut BytesMut,
        tpdu: Option<Tpdu>,
        body: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        let start = dst.len();
        let hlen = self.config.header.bytes();
        dst.put_bytes(0, hlen);
        if let (true, Some(t)) = (self.config.tpdu, tpdu) {
            dst.put_slice(&t.0);
        } else if self.config.tpdu {
            dst.put_bytes(0, TPDU_BYTES);
        }
        if let Err(e) = body(dst) {
            dst.truncate(start);
            return Err(WriteError::Body(e));
        }
        let len = dst.len() - start - hlen;
        if len > self.config.frame_bytes_max {
            dst.truncate(start);
            return Err(WriteError::TooLong {
                len,
                max: self.config.frame_bytes_max,
            });
        }
        let header = &mut dst[start..start + hlen];
        match self.config.header {
            LengthHeader::Binary2 => header.copy_from_slice(&(len as u16).to_be_bytes()),
            LengthHeader::Ascii4 => {
                let mut v = len;
                for b in header.iter_mut().rev() {
                    *b = b'0' + (v % 10) as u8;
                    v /= 10;
                }
            }
        }
        Ok(())
    }
}

/// Why [`FrameCodec::write_frame`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The body writer failed.
    #[error("body: {0}")]
    Body(E),
    /// The frame is over the limit.
    #[error("frame of {len} bytes over the limit of {max}")]
    TooLong {
        /// Length of the frame.
        len: usize,
        /// Limit in force.
        max: usize,
    },
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        let len = match self.state {
            State::Head => match self.decode_head(src)? {
                Some(len) => {
                    self.state = State::Data(len);
                    // Room for this frame only: the limit was checked above.
                    src.reserve(len.saturating_sub(src.len()));
                    len
                }
                None => return Ok(None),
            },
            State::Data(len) => len,
        };
        if src.len() < len {
            return Ok(None);
        }
        self.state = State::Head;
        let mut body = src.split_to(len);
        let tpdu = if self.config.tpdu {
            let t = body.split_to(TPDU_BYTES);
            Some(Tpdu(
                t[..].try_into().map_err(|_| FramingError::NoTpdu(len))?,
            ))
        } else {
            None
        };
        Ok(Some(Frame {
            tpdu,
            body: body.freeze(),
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FramingError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), FramingError> {
        self.write_frame(dst, item.tpdu, |d| {
            d.put_slice(&item.body);
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| match e {
            WriteError::TooLong { len, max } => FramingError::TooLong { len, max },
            WriteError::Body(never) => match never {},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(header: LengthHeader, tpdu: bool) -> FrameCodec {
        FrameCodec::new(FrameConfig {
            header,
            tpdu,
            frame_bytes_max: 100,
        })
    }

    #[test]
    fn binary_header_frames_round_trip_in_chunks() {
        let mut c = codec(LengthHeader::Binary2, false);
        let mut wire = BytesMut::new();
        c.encode(
            Frame {
                tpdu: None,
                body: Bytes::from_static(b"0800abc"),
            },
            &mut wire,
        )
        .expect("fits");
        assert_eq!(&wire[..], b"\x00\x070800abc");
        let mut src = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            src.put_u8(*b);
            let out = c.decode(&mut src).expect("valid");
            assert_eq!(out.is_some(), i == wire.len() - 1);
            if let Some(f) = out {
                assert_eq!(&f.body[..], b"0800abc");
            }
        }
    }

    #[test]
    fn ascii_header_with_tpdu() {
        let mut c = codec(LengthHeader::Ascii4, true);
        let mut src = BytesMut::from(&b"0009612341000ABCD"[..]);
        let f = c.decode(&mut src).expect("valid").expect("whole");
        assert_eq!(f.tpdu, Some(Tpdu(*b"61234")));
        assert_eq!(&f.body[..], b"1000");
        assert_eq!(f.tpdu.map(Tpdu::response), Some(Tpdu(*b"63412")));
        assert_eq!(&src[..], b"ABCD");
        let mut out = BytesMut::new();
        c.encode(f, &mut out).expect("fits");
        assert_eq!(&out[..], b"0009612341000");
    }

    #[test]
    fn over_limit_is_refused_before_buffering() {
        let mut c = codec(LengthHeader::Binary2, false);
        let mut src = BytesMut::from(&[0xff, 0xff][..]);
        assert!(matches!(
            c.decode(&mut src),
            Err(FramingError::TooLong {
                len: 65535,
                max: 100
            })
        ));
        assert!(src.capacity() < 1000);
        let mut c = codec(LengthHeader::Ascii4, false);
        assert!(matches!(
            c.decode(&mut BytesMut::from(&b"12x4"[..])),
            Err(FramingError::BadHeader)
        ));
        let mut c = codec(LengthHeader::Binary2, true);
        assert!(matches!(
            c.decode(&mut BytesMut::from(&[0, 3, 1, 2, 3][..])),
            Err(FramingError::NoTpdu(3))
        ));
    }

    #[test]
    fn write_frame_refuses_oversize_and_leaves_buffer() {
        let c = codec(LengthHeader::Binary2, false);
        let mut dst = BytesMut::from(&b"keep"[..]);
        let r = c.write_frame(&mut dst, None, |d| {
            d.put_bytes(b'x', 101);
            Ok::<(), ()>(())
        });
        assert!(matches!(r, Err(WriteError::TooLong { len: 101, max: 100 })));
        assert_eq!(&dst[..], b"keep");
    }
}
