//! The transaction context risk judges: typed, `Copy`, allocation-free.

use std::fmt;

/// A card's token: the keyed HMAC-SHA-256 of its PAN, computed by the switch.
///
/// Risk never sees a clear PAN on the evaluation path; block lists, velocity
/// and the watch list are all keyed by this token. `Debug` shows only the
/// first four bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CardToken(pub [u8; 32]);

impl fmt::Debug for CardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, ..] = self.0;
        write!(f, "CardToken({a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}

/// The card's BIN as the first eight digits of its PAN, as a number
/// (`40000000` for 4000 0000 0000 0002). Always eight digits, so BIN ranges of
/// any prefix length compare as plain integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bin(pub u32);

impl Bin {
    /// Digits in a [`Bin`].
    pub const DIGITS: usize = 8;

    /// The BIN of a PAN given as ASCII digits; `None` if it is shorter than
    /// eight digits or has a non-digit in them. Called by the switch between
    /// decode and tokenization, the only place the clear PAN exists.
    pub fn from_pan(pan: &[u8]) -> Option<Bin> {
        let digits = pan.get(..Self::DIGITS)?;
        let mut bin = 0u32;
        for &digit in digits {
            if !digit.is_ascii_digit() {
                return None;
            }
            bin = bin * 10 + u32::from(digit - b'0');
        }
        Some(Bin(bin))
    }
}

/// How the card was presented, from F25 (and F22 when F25 says nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// F25 00: normal presentment at a terminal.
    CardPresent,
    /// F25 08: mail or telephone order; outside SCA, with its own limits.
    MoTo,
    /// F25 59: e-commerce; subject to SCA by ECI.
    Ecommerce,
    /// Anything else; only the channel-independent rules apply.
    Unknown,
}

impl Channel {
    /// Number of channels, for per-channel tables.
    pub(crate) const COUNT: usize = 4;

    /// The channel from F25 (POS condition code) and, if F25 is absent or
    /// unknown, F22 (POS entry mode: `81x` e-commerce, `01x` manual → unknown,
    /// `02x`/`05x`/`07x`/`90x`/`91x` card present).
    pub fn from_fields(f22: Option<&[u8]>, f25: Option<&[u8]>) -> Channel {
        match f25 {
            Some(b"00") => return Channel::CardPresent,
            Some(b"08") => return Channel::MoTo,
            Some(b"59") => return Channel::Ecommerce,
            _ => {}
        }
        match f22.and_then(|f22| f22.get(..2)) {
            Some(b"81") => Channel::Ecommerce,
            Some(b"02" | b"05" | b"07" | b"90" | b"91") => Channel::CardPresent,
            _ => Channel::Unknown,
        }
    }

    /// Index into per-channel tables.
    pub(crate) fn index(self) -> usize {
        match self {
            Channel::CardPresent => 0,
            Channel::MoTo => 1,
            Channel::Ecommerce => 2,
            Channel::Unknown => 3,
        }
    }
}

/// What kind of message is judged. Only authorizations pass through the rules
/// and count for velocity; the others refer to an authorization risk already
/// judged and are approved as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// 0100 pre-authorization or 0200 sale (F3 00xxxx).
    Authorization,
    /// 0220 completion.
    Capture,
    /// 0200 with F3 20xxxx.
    Refund,
    /// 0400 / 0420.
    Reversal,
    /// Anything else (network management, advices).
    Other,
}

/// What the ECI (F48 subelement 42) says about cardholder authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EciClass {
    /// 05 (Visa) or 02 (Mastercard): 3-D Secure authenticated.
    FullyAuthenticated,
    /// 06 (Visa) or 01 (Mastercard): authentication attempted.
    Attempted,
    /// 07, any other value, or no ECI at all.
    NotAuthenticated,
}

impl EciClass {
    /// Classifies an ECI; a missing or unknown ECI counts as not authenticated.
    pub fn of(eci: Option<u8>) -> EciClass {
        match eci {
            Some(5 | 2) => EciClass::FullyAuthenticated,
            Some(6 | 1) => EciClass::Attempted,
            _ => EciClass::NotAuthenticated,
        }
    }
}

/// One transaction as risk sees it. Built by the switch after decode and
/// tokenization; borrowed ids keep it allocation-free.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Which message this is; only authorizations are judged.
    pub kind: MessageKind,
    /// F4 in the currency's minor units.
    pub amount_minor: u64,
    /// F49, ISO 4217 numeric (978 EUR, 840 USD, 752 SEK).
    pub currency: u16,
    /// The keyed token of the PAN.
    pub card_token: CardToken,
    /// First eight PAN digits, for BIN block lists.
    pub bin: Bin,
    /// F42, the merchant id (15 characters by the contract).
    pub merchant_id: &'a str,
    /// F41, the terminal id (8 characters by the contract).
    pub terminal_id: &'a str,
    /// From F25 / F22.
    pub channel: Channel,
    /// F48 subelement 42 as a number, if present.
    pub eci: Option<u8>,
}
