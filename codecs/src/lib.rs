//! Wire codecs for the switch: ISO 8583 messages and the internal binary frames.
//!
//! Layout:
//! - [`iso8583`]: the field dictionary as data ([`iso8583::Profile`]), bitmaps,
//!   zero-copy decode ([`iso8583::Message`]) and encode into a reusable buffer
//!   ([`iso8583::MessageWriter`]), and subfields (F48, F55, F90, dates, amounts).
//! - [`framing`]: length-prefixed framing as a tokio-util `Decoder`/`Encoder`.
//! - [`internal`]: the internal binary frames (virtual terminal, back office).
//! - [`card`]: Luhn, masking and keyed tokens for card numbers.
//!
//! Nothing here does I/O or reads a clock; every length from the wire is
//! checked before it is used, and no input panics.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)
)]

pub mod card;
pub mod framing;
pub mod internal;
pub mod iso8583;
