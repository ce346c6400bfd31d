//! Terminals at run time over internal frames (frame types `0x0A`-`0x0D`,
//! tags `0x50`-`0x56`): list a merchant's terminals, add one, change its
//! state and settings, remove one. The server scopes every request to the
//! merchants the API key acts for.

use super::error::Error;
use super::field::{
    self, check_str, fixed, required, u16_value, u64_value, u8_value, unexpected, BodyWriter,
    Charset, Field, Fields, StrSpec,
};
use super::frame_type::FrameType;
use super::repeated::RepeatedItem;
use super::tag;
use super::TERMINAL_ROWS_MAX;

/// A merchant id (ISO 8583 F42): 15 printable ASCII characters.
pub(crate) const MERCHANT_ID: StrSpec = field::spec(tag::MERCHANT_ID, 15, 15, Charset::Printable);
/// A terminal's name: UTF-8 without control characters, 1..=64 bytes.
pub(crate) const TERMINAL_NAME: StrSpec = field::spec(tag::TERMINAL_NAME, 1, 64, Charset::Text);
/// The name inside a terminal row (empty when there is none).
const ROW_NAME: StrSpec = field::spec(tag::TERMINAL_ROW, 0, 64, Charset::Text);

/// A terminal's state on the wire: `0` enabled, `1` disabled, `2` removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminalState {
    /// Transacts.
    Enabled,
    /// Its authorizations, sales, refunds and captures get 58; reversals
    /// are processed.
    Disabled,
    /// As disabled; no longer the merchant's.
    Removed,
}

impl TerminalState {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            TerminalState::Enabled => 0,
            TerminalState::Disabled => 1,
            TerminalState::Removed => 2,
        }
    }

    fn from_code(tag: u8, code: u8) -> Result<TerminalState, Error> {
        Ok(match code {
            0 => TerminalState::Enabled,
            1 => TerminalState::Disabled,
            2 => TerminalState::Removed,
            _ => return Err(Error::OutOfRange { tag }),
        })
    }
}

/// A terminal's own setting: on wire `0` off, `1` on, `2` its merchant's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Refused on this terminal.
    Off,
    /// Allowed on this terminal.
    On,
    /// As its merchant.
    Inherit,
}

impl Setting {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Setting::Off => 0,
            Setting::On => 1,
            Setting::Inherit => 2,
        }
    }

    fn from_code(tag: u8, code: u8) -> Result<Setting, Error> {
        Ok(match code {
            0 => Setting::Off,
            1 => Setting::On,
            2 => Setting::Inherit,
            _ => return Err(Error::OutOfRange { tag }),
        })
    }

    /// As an override: `None` inherits.
    pub fn allowed(self) -> Option<bool> {
        match self {
            Setting::Off => Some(false),
            Setting::On => Some(true),
            Setting::Inherit => None,
        }
    }

    /// From an override.
    pub fn of(allowed: Option<bool>) -> Setting {
        match allowed {
            Some(false) => Setting::Off,
            Some(true) => Setting::On,
            None => Setting::Inherit,
        }
    }
}

/// One terminal in a response: `terminal_id [u8; 8], merchant_id
/// [u8; 15], state u8, refunds u8, moto u8, cancel u8` (27 bytes), then
/// its name (UTF-8, 0..=64 bytes; empty: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerminalRow<'a> {
    /// F41, 8 printable characters.
    pub terminal_id: &'a str,
    /// Its merchant's F42, 15 printable characters.
    pub merchant_id: &'a str,
    /// Whether it transacts.
    pub state: TerminalState,
    /// Refunds.
    pub refunds: Setting,
    /// MO/TO.
    pub moto: Setting,
    /// Cancels over internal frames.
    pub cancel: Setting,
    /// For people; empty: none.
    pub name: &'a str,
}

/// Bytes before the name.
pub(crate) const TERMINAL_ROW_FIXED_BYTES: usize = 27;

/// F41 inside a row: exactly 8 printable characters.
const ROW_TERMINAL_ID: StrSpec = field::spec(tag::TERMINAL_ROW, 8, 8, Charset::Printable);
/// F42 inside a row.
const ROW_MERCHANT_ID: StrSpec = field::spec(tag::TERMINAL_ROW, 15, 15, Charset::Printable);

impl<'a> TerminalRow<'a> {
    pub(crate) fn decode_value(value: &'a [u8]) -> Result<TerminalRow<'a>, Error> {
        const T: u8 = tag::TERMINAL_ROW;
        if value.len() < TERMINAL_ROW_FIXED_BYTES {
            return Err(field::length_error(T, value.len()));
        }
        let (fixed_part, name) = value.split_at(TERMINAL_ROW_FIXED_BYTES);
        let (tid, rest) = fixed_part.split_at(8);
        let (mid, flags) = rest.split_at(15);
        let [state, refunds, moto, cancel]: [u8; 4] = fixed(T, flags)?;
        Ok(TerminalRow {
            terminal_id: check_str(ROW_TERMINAL_ID, tid)?,
            merchant_id: check_str(ROW_MERCHANT_ID, mid)?,
            state: TerminalState::from_code(T, state)?,
            refunds: Setting::from_code(T, refunds)?,
            moto: Setting::from_code(T, moto)?,
            cancel: Setting::from_code(T, cancel)?,
            name: check_str(ROW_NAME, name)?,
        })
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        check_str(ROW_TERMINAL_ID, self.terminal_id.as_bytes())?;
        check_str(ROW_MERCHANT_ID, self.merchant_id.as_bytes())?;
        check_str(ROW_NAME, self.name.as_bytes())?;
        let length = TERMINAL_ROW_FIXED_BYTES.saturating_add(self.name.len());
        let dst = w.begin(tag::TERMINAL_ROW, length)?;
        dst.extend_from_slice(self.terminal_id.as_bytes());
        dst.extend_from_slice(self.merchant_id.as_bytes());
        dst.extend_from_slice(&[
            self.state.code(),
            self.refunds.code(),
            self.moto.code(),
            self.cancel.code(),
        ]);
        dst.extend_from_slice(self.name.as_bytes());
        Ok(())
    }
}

impl<'a> RepeatedItem<'a> for TerminalRow<'a> {
    const TAG: u8 = tag::TERMINAL_ROW;

    fn decode(value: &'a [u8]) -> Result<TerminalRow<'a>, Error> {
        TerminalRow::decode_value(value)
    }
}

/// `ListTerminals` fields, all optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListTerminals<'a> {
    /// Only this merchant's (one the key acts for).
    pub merchant_id: Option<&'a str>,
    /// Where to resume: a previous response's `next_cursor`.
    pub cursor: Option<u64>,
    /// Page size, 1..=`TERMINAL_ROWS_MAX`; absent: the server's default.
    pub limit: Option<u16>,
}

/// `AddTerminal`, `SetTerminal` and `RemoveTerminal` fields. Only
/// `terminal_id` is required; `merchant_id` names the merchant a terminal
/// is added to (absent: the key's only merchant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminalChange<'a> {
    /// F41, 8 printable characters.
    pub terminal_id: &'a str,
    /// F42 (`AddTerminal`).
    pub merchant_id: Option<&'a str>,
    /// New name.
    pub name: Option<&'a str>,
    /// New state (`SetTerminal`: enabled or disabled).
    pub state: Option<TerminalState>,
    /// Refunds.
    pub refunds: Option<Setting>,
    /// MO/TO.
    pub moto: Option<Setting>,
    /// Cancels over internal frames.
    pub cancel: Option<Setting>,
}

/// F41 in a terminal request: exactly 8 printable characters.
const CHANGE_TERMINAL_ID: StrSpec = field::spec(tag::TERMINAL_ID, 8, 8, Charset::Printable);

impl<'a> ListTerminals<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<ListTerminals<'a>, Error> {
        let mut l = ListTerminals::default();
        let mut fields = Fields::new(body);
        while let Some(Field { tag, value }) = fields.next_field()? {
            match tag {
                tag::MERCHANT_ID => l.merchant_id = Some(check_str(MERCHANT_ID, value)?),
                tag::CURSOR => l.cursor = Some(u64_value(tag, value)?),
                tag::LIMIT => l.limit = Some(u16_value(tag, value)?),
                tag => unexpected(FrameType::ListTerminals, tag)?,
            }
        }
        l.check()?;
        Ok(l)
    }

    fn check(&self) -> Result<(), Error> {
        match self.limit {
            Some(limit) if limit == 0 || usize::from(limit) > TERMINAL_ROWS_MAX => {
                Err(Error::OutOfRange { tag: tag::LIMIT })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        self.check()?;
        w.opt_str(MERCHANT_ID, self.merchant_id)?;
        w.opt_u64(tag::CURSOR, self.cursor)?;
        if let Some(limit) = self.limit {
            w.u16(tag::LIMIT, limit)?;
        }
        Ok(())
    }
}

impl<'a> TerminalChange<'a> {
    /// Parses the body of `frame_type` (add, set or remove): each allows
    /// its own fields.
    pub(crate) fn parse(
        frame_type: FrameType,
        body: &'a [u8],
    ) -> Result<TerminalChange<'a>, Error> {
        let mut c = TerminalChange::default();
        let mut terminal_id = None;
        let mut fields = Fields::new(body);
        let setting = |tag, value| Setting::from_code(tag, u8_value(tag, value)?);
        while let Some(Field { tag, value }) = fields.next_field()? {
            match (frame_type, tag) {
                (_, tag::TERMINAL_ID) => terminal_id = Some(check_str(CHANGE_TERMINAL_ID, value)?),
                (FrameType::AddTerminal, tag::MERCHANT_ID) => {
                    c.merchant_id = Some(check_str(MERCHANT_ID, value)?);
                }
                (FrameType::AddTerminal | FrameType::SetTerminal, tag::TERMINAL_NAME) => {
                    c.name = Some(check_str(TERMINAL_NAME, value)?);
                }
                (FrameType::SetTerminal, tag::TERMINAL_STATE) => {
                    let state = TerminalState::from_code(tag, u8_value(tag, value)?)?;
                    if state == TerminalState::Removed {
                        // Removing has its own frame type.
                        return Err(Error::OutOfRange { tag });
                    }
                    c.state = Some(state);
                }
                (FrameType::SetTerminal, tag::REFUNDS) => c.refunds = Some(setting(tag, value)?),
                (FrameType::SetTerminal, tag::MOTO) => c.moto = Some(setting(tag, value)?),
                (FrameType::SetTerminal, tag::CANCEL) => c.cancel = Some(setting(tag, value)?),
                (_, tag) => unexpected(frame_type, tag)?,
            }
        }
        c.terminal_id = required(tag::TERMINAL_ID, terminal_id)?;
        Ok(c)
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        w.str(CHANGE_TERMINAL_ID, self.terminal_id)?;
        w.opt_str(MERCHANT_ID, self.merchant_id)?;
        w.opt_str(TERMINAL_NAME, self.name)?;
        if let Some(state) = self.state {
            w.u8(tag::TERMINAL_STATE, state.code())?;
        }
        for (tag, setting) in [
            (tag::REFUNDS, self.refunds),
            (tag::MOTO, self.moto),
            (tag::CANCEL, self.cancel),
        ] {
            if let Some(s) = setting {
                w.u8(tag, s.code())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_row_round_trips_and_bad_ones_are_errors() {
        let row = TerminalRow {
            terminal_id: "DEMO0001",
            merchant_id: "DEMO00000000001",
            state: TerminalState::Disabled,
            refunds: Setting::Off,
            moto: Setting::Inherit,
            cancel: Setting::On,
            name: "till 1",
        };
        let rows = [row];
        let mut response = super::super::Response::new(super::super::ResultCode::APPROVED);
        response.terminals = super::super::Repeated::from_slice(&rows);
        let mut buf = bytes::BytesMut::new();
        response.encode(7, &mut buf).expect("encodes");
        let (frame, _) = super::super::Frame::parse(&buf)
            .expect("whole")
            .expect("a frame");
        let parsed = super::super::Response::parse(&frame).expect("parses");
        assert_eq!(parsed.terminals.iter().collect::<Vec<_>>(), [row]);
        let mut value = Vec::new();
        value.extend_from_slice(b"DEMO0001DEMO00000000001");
        value.extend_from_slice(&[1, 0, 2, 1]);
        value.extend_from_slice(b"till 1");
        let value = &value[..];
        assert_eq!(TerminalRow::decode_value(value), Ok(row));
        let mut bad = value.to_vec();
        bad[23] = 3; // state
        assert_eq!(
            TerminalRow::decode_value(&bad),
            Err(Error::OutOfRange {
                tag: tag::TERMINAL_ROW
            })
        );
        assert!(TerminalRow::decode_value(&value[..20]).is_err(), "short");
    }
}
