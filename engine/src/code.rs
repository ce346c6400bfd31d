//! Response codes (F39) of the contract.

/// A two-character response code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub [u8; 2]);

impl Code {
    /// 00 approved.
    pub const APPROVED: Code = Code(*b"00");
    /// 03 invalid merchant.
    pub const INVALID_MERCHANT: Code = Code(*b"03");
    /// 05 do not honor.
    pub const DO_NOT_HONOR: Code = Code(*b"05");
    /// 12 invalid transaction.
    pub const INVALID_TRANSACTION: Code = Code(*b"12");
    /// 13 invalid amount.
    pub const INVALID_AMOUNT: Code = Code(*b"13");
    /// 14 invalid card number (Luhn).
    pub const INVALID_CARD: Code = Code(*b"14");
    /// 25 unable to locate original.
    pub const UNABLE_TO_LOCATE: Code = Code(*b"25");
    /// 30 format error.
    pub const FORMAT_ERROR: Code = Code(*b"30");
    /// 54 expired card.
    pub const EXPIRED_CARD: Code = Code(*b"54");
    /// 57 not permitted to cardholder.
    pub const NOT_PERMITTED_CARDHOLDER: Code = Code(*b"57");
    /// 58 not permitted to terminal or merchant.
    pub const NOT_PERMITTED_TERMINAL: Code = Code(*b"58");
    /// 59 suspected fraud.
    pub const SUSPECTED_FRAUD: Code = Code(*b"59");
    /// 61 exceeds amount limit.
    pub const EXCEEDS_AMOUNT: Code = Code(*b"61");
    /// 65 exceeds frequency limit.
    pub const EXCEEDS_FREQUENCY: Code = Code(*b"65");
    /// 1A additional customer authentication required.
    pub const SCA_REQUIRED: Code = Code(*b"1A");
    /// 91 issuer or switch unavailable.
    pub const UNAVAILABLE: Code = Code(*b"91");
    /// 94 duplicate transmission.
    pub const DUPLICATE: Code = Code(*b"94");
    /// 96 system malfunction.
    pub const SYSTEM_MALFUNCTION: Code = Code(*b"96");

    /// Every code the switch gives, for metrics.
    pub const ALL: [Code; 18] = [
        Code::APPROVED,
        Code::INVALID_MERCHANT,
        Code::DO_NOT_HONOR,
        Code::INVALID_TRANSACTION,
        Code::INVALID_AMOUNT,
        Code::INVALID_CARD,
        Code::UNABLE_TO_LOCATE,
        Code::FORMAT_ERROR,
        Code::EXPIRED_CARD,
        Code::NOT_PERMITTED_CARDHOLDER,
        Code::NOT_PERMITTED_TERMINAL,
        Code::SUSPECTED_FRAUD,
        Code::EXCEEDS_AMOUNT,
        Code::EXCEEDS_FREQUENCY,
        Code::SCA_REQUIRED,
        Code::UNAVAILABLE,
        Code::DUPLICATE,
        Code::SYSTEM_MALFUNCTION,
    ];

    /// As text.
    pub fn as_str(&self) -> &'static str {
        match Code::ALL.iter().position(|c| c == self) {
            Some(i) => CODE_TEXT.get(i).copied().unwrap_or("??"),
            None => "??",
        }
    }

    /// Whether the code approves.
    pub fn approved(&self) -> bool {
        *self == Code::APPROVED
    }
}

const CODE_TEXT: [&str; 18] = [
    "00", "03", "05", "12", "13", "14", "25", "30", "54", "57", "58", "59", "61", "65", "1A", "91",
    "94", "96",
];

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Code({})", String::from_utf8_lossy(&self.0))
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_matches_bytes() {
        for c in Code::ALL {
            assert_eq!(c.as_str().as_bytes(), &c.0);
        }
        assert_eq!(Code(*b"XX").as_str(), "??");
    }
}
