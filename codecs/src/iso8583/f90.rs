//! F90, original data elements: original MTI, STAN, F7 and 22 more digits.

use super::amount::parse_digits;
use super::Mti;

/// The parts of F90 that locate an original message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OriginalData {
    /// Original MTI.
    pub mti: Mti,
    /// Original STAN (F11).
    pub stan: u32,
    /// Original transmission date and time (F7), as its 10 digits.
    pub transmission: [u8; 10],
}

impl OriginalData {
    /// Parses F90 content (42 digits; the trailing 22, acquirer and
    /// forwarder IDs in the standard, zeros in this profile, are checked to
    /// be digits and otherwise ignored).
    pub fn parse(f90: &[u8]) -> Option<Self> {
        if f90.len() != 42 || !f90.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mti = Mti::from_bytes(f90.get(0..4)?)?;
        let stan = u32::try_from(parse_digits(f90.get(4..10)?, 6)?).ok()?;
        let transmission = f90.get(10..20)?.try_into().ok()?;
        Some(OriginalData {
            mti,
            stan,
            transmission,
        })
    }

    /// The 42-digit F90 content for these parts (trailing zeros).
    pub fn to_field(&self) -> [u8; 42] {
        let mut out = [b'0'; 42];
        out[..4].copy_from_slice(self.mti.as_bytes());
        let mut s = self.stan;
        for slot in out[4..10].iter_mut().rev() {
            *slot = b'0' + (s % 10) as u8;
            s /= 10;
        }
        out[10..20].copy_from_slice(&self.transmission);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let raw = b"010000012311231149590000000000000000000000";
        let o = OriginalData::parse(raw).expect("valid");
        assert_eq!(o.mti.as_str(), "0100");
        assert_eq!(o.stan, 123);
        assert_eq!(&o.transmission, b"1123114959");
        assert_eq!(&o.to_field(), raw);
        assert_eq!(OriginalData::parse(&raw[..41]), None);
        let mut bad = *raw;
        bad[5] = b'x';
        assert_eq!(OriginalData::parse(&bad), None);
    }
}
