//! A merchant's own settings over internal frames (frame types `0x0E`
//! `GetMerchant` and `0x0F` `SetMerchant`, tags `0x57`-`0x5F`): what the
//! acquirer set with `switch merchants set`, read and changed by the
//! merchant's back office. The server scopes every request to the
//! merchants the API key acts for and refuses enabling or disabling.

use super::error::Error;
use super::field::{
    self, check_currency, check_str, fixed, u16_value, u8_value, unexpected, BodyWriter, Charset,
    Field, Fields, StrSpec,
};
use super::frame_type::FrameType;
use super::tag;
use super::terminal::MERCHANT_ID;

/// Most currencies a merchant accepts: the directory's limit (`switch
/// merchants set --currencies`), and the slots of a merchant composite.
pub const CURRENCIES_MAX: usize = 32;
/// Largest over-capture percentage.
pub const OVER_CAPTURE_PCT_MAX: u8 = 100;
/// Longest hold, hours (31 days): the configuration's limit.
pub const HOLD_HOURS_MAX: u16 = 744;

/// A merchant's name: UTF-8 without control characters, 1..=64 bytes.
const MERCHANT_NAME: StrSpec = field::spec(tag::MERCHANT_NAME, 1, 64, Charset::Text);
/// F42 inside a merchant composite.
const SETTINGS_MERCHANT_ID: StrSpec = field::spec(tag::MERCHANT, 15, 15, Charset::Printable);
/// The name inside a merchant composite (empty when there is none).
const SETTINGS_NAME: StrSpec = field::spec(tag::MERCHANT, 0, 64, Charset::Text);

/// Bytes of a merchant composite before the name: MID 15, enabled,
/// over-capture %, hold hours `u16`, auto-capture hours `u16`, refunds,
/// MO/TO, then [`CURRENCIES_MAX`] `u16` slots.
pub(crate) const MERCHANT_FIXED_BYTES: usize = 15 + 1 + 1 + 2 + 2 + 1 + 1 + 2 * CURRENCIES_MAX;

/// The currencies a merchant accepts: 1..=[`CURRENCIES_MAX`] ISO 4217
/// numeric codes, none twice, in the order given. Fixed size, so a decoded
/// frame allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Currencies {
    /// The codes, `len` of them used.
    codes: [u16; CURRENCIES_MAX],
    /// How many are used.
    len: u8,
}

impl Currencies {
    /// Checks and holds `codes`.
    ///
    /// # Errors
    /// None or more than [`CURRENCIES_MAX`] (`FieldLength`), a code
    /// outside 1..=999 (`OutOfRange`), one twice (`Inconsistent`); all
    /// named by the `currencies` tag.
    pub fn new(codes: &[u16]) -> Result<Currencies, Error> {
        const T: u8 = tag::CURRENCIES;
        if codes.is_empty() || codes.len() > CURRENCIES_MAX {
            return Err(field::length_error(T, codes.len().saturating_mul(2)));
        }
        let mut c = Currencies {
            codes: [0; CURRENCIES_MAX],
            len: 0,
        };
        for (slot, &code) in c.codes.iter_mut().zip(codes) {
            *slot = check_currency(T, code)?;
        }
        for (i, code) in codes.iter().enumerate() {
            if codes.iter().skip(i + 1).any(|c| c == code) {
                return Err(Error::Inconsistent { tag: T });
            }
        }
        // At most CURRENCIES_MAX, checked above.
        c.len = u8::try_from(codes.len()).map_err(|_| field::length_error(T, codes.len()))?;
        Ok(c)
    }

    /// The codes, in order.
    pub fn as_slice(&self) -> &[u16] {
        self.codes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// From the wire: `u16` codes end to end.
    fn decode(value: &[u8]) -> Result<Currencies, Error> {
        let n = value.len() / 2;
        if value.len() % 2 != 0 || n == 0 || n > CURRENCIES_MAX {
            return Err(field::length_error(tag::CURRENCIES, value.len()));
        }
        let mut codes = [0u16; CURRENCIES_MAX];
        for (slot, pair) in codes.iter_mut().zip(value.chunks_exact(2)) {
            let pair: [u8; 2] = fixed(tag::CURRENCIES, pair)?;
            *slot = u16::from_be_bytes(pair);
        }
        Currencies::new(codes.get(..n).unwrap_or_default())
    }

    fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        let checked = Currencies::new(self.as_slice())?;
        let dst = w.begin(tag::CURRENCIES, checked.as_slice().len() * 2)?;
        for code in checked.as_slice() {
            dst.extend_from_slice(&code.to_be_bytes());
        }
        Ok(())
    }
}

/// A merchant's settings in a response (tag `0x5F`, one per response):
/// see [`MERCHANT_FIXED_BYTES`] for the layout, then the name (UTF-8,
/// 0..=64 bytes; empty: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MerchantSettings<'a> {
    /// F42, 15 printable characters.
    pub merchant_id: &'a str,
    /// Whether it transacts (its acquirer's choice).
    pub enabled: bool,
    /// Accepted currencies.
    pub currencies: Currencies,
    /// How far a capture may exceed the hold, percent, 0..=100.
    pub over_capture_pct: u8,
    /// How long a hold stays open, hours, 1..=744.
    pub hold_hours: u16,
    /// Holds captured after this many hours; `None`: never.
    pub auto_capture_hours: Option<u16>,
    /// Refunds allowed.
    pub refunds: bool,
    /// MO/TO allowed.
    pub moto: bool,
    /// For people; empty: none.
    pub name: &'a str,
}

/// A hold period: 1..=[`HOLD_HOURS_MAX`].
fn check_hold(tag: u8, hours: u16) -> Result<u16, Error> {
    if hours == 0 || hours > HOLD_HOURS_MAX {
        return Err(Error::OutOfRange { tag });
    }
    Ok(hours)
}

/// An over-capture percentage: 0..=[`OVER_CAPTURE_PCT_MAX`].
fn check_pct(tag: u8, pct: u8) -> Result<u8, Error> {
    if pct > OVER_CAPTURE_PCT_MAX {
        return Err(Error::OutOfRange { tag });
    }
    Ok(pct)
}

/// Auto-capture on the wire: `0` off, else hours 1..=[`HOLD_HOURS_MAX`].
fn auto_capture(tag: u8, hours: u16) -> Result<Option<u16>, Error> {
    match hours {
        0 => Ok(None),
        h => check_hold(tag, h).map(Some),
    }
}

impl<'a> MerchantSettings<'a> {
    pub(crate) fn decode_value(value: &'a [u8]) -> Result<MerchantSettings<'a>, Error> {
        const T: u8 = tag::MERCHANT;
        if value.len() < MERCHANT_FIXED_BYTES {
            return Err(field::length_error(T, value.len()));
        }
        let (fixed_part, name) = value.split_at(MERCHANT_FIXED_BYTES);
        let (mid, rest) = fixed_part.split_at(15);
        let (flags, slots) = rest.split_at(8);
        let [enabled, pct, h0, h1, a0, a1, refunds, moto]: [u8; 8] = fixed(T, flags)?;
        let (used, empty) = slots.split_at(
            2 * slots
                .chunks_exact(2)
                .take_while(|pair| pair != &[0, 0])
                .count(),
        );
        if empty.iter().any(|&b| b != 0) {
            // A code after an empty slot.
            return Err(Error::Inconsistent { tag: T });
        }
        let currencies = Currencies::decode(used).map_err(|_| Error::OutOfRange { tag: T })?;
        Ok(MerchantSettings {
            merchant_id: check_str(SETTINGS_MERCHANT_ID, mid)?,
            enabled: field::flag_value(T, enabled)?,
            currencies,
            over_capture_pct: check_pct(T, pct)?,
            hold_hours: check_hold(T, u16::from_be_bytes([h0, h1]))?,
            auto_capture_hours: auto_capture(T, u16::from_be_bytes([a0, a1]))?,
            refunds: field::flag_value(T, refunds)?,
            moto: field::flag_value(T, moto)?,
            name: check_str(SETTINGS_NAME, name)?,
        })
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        const T: u8 = tag::MERCHANT;
        check_str(SETTINGS_MERCHANT_ID, self.merchant_id.as_bytes())?;
        check_str(SETTINGS_NAME, self.name.as_bytes())?;
        let currencies = Currencies::new(self.currencies.as_slice())?;
        check_pct(T, self.over_capture_pct)?;
        check_hold(T, self.hold_hours)?;
        let auto = self.auto_capture_hours.unwrap_or(0);
        auto_capture(T, auto)?;
        let length = MERCHANT_FIXED_BYTES.saturating_add(self.name.len());
        let dst = w.begin(T, length)?;
        dst.extend_from_slice(self.merchant_id.as_bytes());
        dst.extend_from_slice(&[u8::from(self.enabled), self.over_capture_pct]);
        dst.extend_from_slice(&self.hold_hours.to_be_bytes());
        dst.extend_from_slice(&auto.to_be_bytes());
        dst.extend_from_slice(&[u8::from(self.refunds), u8::from(self.moto)]);
        for i in 0..CURRENCIES_MAX {
            let code = currencies.as_slice().get(i).copied().unwrap_or(0);
            dst.extend_from_slice(&code.to_be_bytes());
        }
        dst.extend_from_slice(self.name.as_bytes());
        Ok(())
    }
}

/// `GetMerchant` and `SetMerchant` fields, all optional; `None` leaves a
/// setting as it is. `merchant_id` names the merchant (absent: the key's
/// only one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MerchantChange<'a> {
    /// F42: which of the key's merchants.
    pub merchant_id: Option<&'a str>,
    /// Enabled or disabled (`SetMerchant`; a server refuses it with `58`:
    /// the acquirer decides).
    pub enabled: Option<bool>,
    /// Accepted currencies, replacing the list.
    pub currencies: Option<Currencies>,
    /// Over-capture percentage, 0..=100.
    pub over_capture_pct: Option<u8>,
    /// Hold period, hours, 1..=744.
    pub hold_hours: Option<u16>,
    /// Auto-capture: `Some(None)` off, `Some(Some(h))` after `h` hours.
    pub auto_capture_hours: Option<Option<u16>>,
    /// Refunds allowed.
    pub refunds: Option<bool>,
    /// MO/TO allowed.
    pub moto: Option<bool>,
    /// New name.
    pub name: Option<&'a str>,
}

impl<'a> MerchantChange<'a> {
    /// Whether it changes any setting (`enabled` included).
    pub fn changes_anything(&self) -> bool {
        let MerchantChange {
            merchant_id: _,
            enabled,
            currencies,
            over_capture_pct,
            hold_hours,
            auto_capture_hours,
            refunds,
            moto,
            name,
        } = self;
        enabled.is_some()
            || currencies.is_some()
            || over_capture_pct.is_some()
            || hold_hours.is_some()
            || auto_capture_hours.is_some()
            || refunds.is_some()
            || moto.is_some()
            || name.is_some()
    }

    /// Parses the body of `frame_type` (`GetMerchant`: `merchant_id`
    /// only; `SetMerchant`: every field).
    pub(crate) fn parse(
        frame_type: FrameType,
        body: &'a [u8],
    ) -> Result<MerchantChange<'a>, Error> {
        let mut c = MerchantChange::default();
        let mut fields = Fields::new(body);
        let flag = |tag, value| field::flag_value(tag, u8_value(tag, value)?);
        while let Some(Field { tag, value }) = fields.next_field()? {
            match (frame_type, tag) {
                (_, tag::MERCHANT_ID) => c.merchant_id = Some(check_str(MERCHANT_ID, value)?),
                (FrameType::GetMerchant, tag) => unexpected(frame_type, tag)?,
                (_, tag::MERCHANT_ENABLED) => c.enabled = Some(flag(tag, value)?),
                (_, tag::CURRENCIES) => c.currencies = Some(Currencies::decode(value)?),
                (_, tag::OVER_CAPTURE_PCT) => {
                    c.over_capture_pct = Some(check_pct(tag, u8_value(tag, value)?)?);
                }
                (_, tag::HOLD_HOURS) => {
                    c.hold_hours = Some(check_hold(tag, u16_value(tag, value)?)?)
                }
                (_, tag::AUTO_CAPTURE_HOURS) => {
                    c.auto_capture_hours = Some(auto_capture(tag, u16_value(tag, value)?)?);
                }
                (_, tag::MERCHANT_REFUNDS) => c.refunds = Some(flag(tag, value)?),
                (_, tag::MERCHANT_MOTO) => c.moto = Some(flag(tag, value)?),
                (_, tag::MERCHANT_NAME) => c.name = Some(check_str(MERCHANT_NAME, value)?),
                (_, tag) => unexpected(frame_type, tag)?,
            }
        }
        Ok(c)
    }

    pub(crate) fn encode(
        &self,
        frame_type: FrameType,
        w: &mut BodyWriter<'_>,
    ) -> Result<(), Error> {
        w.opt_str(MERCHANT_ID, self.merchant_id)?;
        if frame_type == FrameType::GetMerchant {
            if self.changes_anything() {
                // A read carries no settings.
                return Err(Error::UnexpectedField {
                    frame_type,
                    tag: tag::MERCHANT_ENABLED,
                });
            }
            return Ok(());
        }
        if let Some(on) = self.enabled {
            w.u8(tag::MERCHANT_ENABLED, u8::from(on))?;
        }
        if let Some(c) = &self.currencies {
            c.encode(w)?;
        }
        if let Some(pct) = self.over_capture_pct {
            w.u8(
                tag::OVER_CAPTURE_PCT,
                check_pct(tag::OVER_CAPTURE_PCT, pct)?,
            )?;
        }
        if let Some(h) = self.hold_hours {
            w.u16(tag::HOLD_HOURS, check_hold(tag::HOLD_HOURS, h)?)?;
        }
        if let Some(auto) = self.auto_capture_hours {
            let h = auto.unwrap_or(0);
            auto_capture(tag::AUTO_CAPTURE_HOURS, h)?;
            w.u16(tag::AUTO_CAPTURE_HOURS, h)?;
        }
        if let Some(on) = self.refunds {
            w.u8(tag::MERCHANT_REFUNDS, u8::from(on))?;
        }
        if let Some(on) = self.moto {
            w.u8(tag::MERCHANT_MOTO, u8::from(on))?;
        }
        w.opt_str(MERCHANT_NAME, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MerchantSettings<'static> {
        MerchantSettings {
            merchant_id: "DEMO00000000001",
            enabled: true,
            currencies: Currencies::new(&[978, 840]).expect("currencies"),
            over_capture_pct: 20,
            hold_hours: 168,
            auto_capture_hours: Some(24),
            refunds: true,
            moto: false,
            name: "Demo",
        }
    }

    #[test]
    fn a_merchant_composite_round_trips_and_bad_ones_are_errors() {
        let s = settings();
        let mut response = super::super::Response::new(super::super::ResultCode::APPROVED);
        response.merchant = Some(s);
        let mut buf = bytes::BytesMut::new();
        response.encode(7, &mut buf).expect("encodes");
        let (frame, _) = super::super::Frame::parse(&buf)
            .expect("whole")
            .expect("a frame");
        let parsed = super::super::Response::parse(&frame).expect("parses");
        assert_eq!(parsed.merchant, Some(s));
        // The value as laid out in docs/internal-frames.md.
        let mut value = Vec::new();
        value.extend_from_slice(b"DEMO00000000001");
        value.extend_from_slice(&[1, 20, 0, 168, 0, 24, 1, 0]);
        value.extend_from_slice(&978u16.to_be_bytes());
        value.extend_from_slice(&840u16.to_be_bytes());
        value.extend_from_slice(&[0; 2 * (CURRENCIES_MAX - 2)]);
        value.extend_from_slice(b"Demo");
        assert_eq!(MerchantSettings::decode_value(&value), Ok(s));
        let t = tag::MERCHANT;
        for (at, byte, why) in [
            (15, 2, "enabled"),
            (16, 101, "over 100 %"),
            (17, 0x03, "hold over 744"),
            (21, 2, "refunds"),
            (23, 0, "no currency"),
        ] {
            let mut bad = value.clone();
            bad[at] = byte;
            if at == 23 {
                bad[24] = 0;
            }
            assert!(MerchantSettings::decode_value(&bad).is_err(), "{why}");
        }
        let mut gap = value.clone();
        gap[29..31].copy_from_slice(&826u16.to_be_bytes()); // after an empty slot
        assert_eq!(
            MerchantSettings::decode_value(&gap),
            Err(Error::Inconsistent { tag: t })
        );
        assert!(
            MerchantSettings::decode_value(&value[..80]).is_err(),
            "short"
        );
    }

    #[test]
    fn currencies_are_checked() {
        assert!(Currencies::new(&[]).is_err());
        assert!(Currencies::new(&[0]).is_err());
        assert!(Currencies::new(&[1000]).is_err());
        assert_eq!(
            Currencies::new(&[978, 978]),
            Err(Error::Inconsistent {
                tag: tag::CURRENCIES
            })
        );
        let many: Vec<u16> = (1..=33).collect();
        assert!(Currencies::new(&many).is_err());
        assert_eq!(
            Currencies::new(&many[..32]).expect("32").as_slice(),
            &many[..32]
        );
        assert_eq!(
            Currencies::decode(&[3, 0xd2]).expect("one").as_slice(),
            &[978]
        );
        assert!(Currencies::decode(&[3]).is_err(), "odd length");
    }
}
