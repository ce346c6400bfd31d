//! Frame type codes: one per request, and one generic response.

use std::fmt;

use super::error::Error;

/// What a frame is. Requests go from client to server; every request gets
/// exactly one [`FrameType::Response`] with the same request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// `0x01`: log the connection in with a client id and secret.
    Authenticate = 0x01,
    /// `0x02`: one-step MO/TO sale (authorized and captured at once).
    AuthorizeMoto = 0x02,
    /// `0x03`: two-step MO/TO pre-authorization (places a hold).
    PreauthorizeMoto = 0x03,
    /// `0x04`: capture a pre-authorization.
    Capture = 0x04,
    /// `0x05`: refund a captured payment, by amount or by cart lines.
    Refund = 0x05,
    /// `0x06`: cancel (void) a payment.
    Cancel = 0x06,
    /// `0x07`: read one payment with its activity history.
    GetPayment = 0x07,
    /// `0x08`: list payments by filters, one page at a time.
    ListPayments = 0x08,
    /// `0x09`: flag a payment as a scam.
    MarkScam = 0x09,
    /// `0x0A`: list the terminals of the key's merchants.
    ListTerminals = 0x0A,
    /// `0x0B`: add a terminal to one of the key's merchants.
    AddTerminal = 0x0B,
    /// `0x0C`: change a terminal's state (enabled, disabled) or settings.
    SetTerminal = 0x0C,
    /// `0x0D`: remove a terminal (its reversals are still processed).
    RemoveTerminal = 0x0D,
    /// `0x0E`: read the settings of one of the key's merchants.
    GetMerchant = 0x0E,
    /// `0x0F`: change the settings of one of the key's merchants.
    SetMerchant = 0x0F,
    /// `0x10`: take the scam flag off a payment, with a reason.
    UnmarkScam = 0x10,
    /// `0x11`: list the webhook events of the key's merchants.
    ListWebhookEvents = 0x11,
    /// `0x12`: queue a webhook event again.
    ResendWebhookEvent = 0x12,
    /// `0x13`: read a merchant's webhook endpoint (secret masked).
    GetWebhookEndpoint = 0x13,
    /// `0x14`: list the mandates the key's provider holds.
    ListMandates = 0x14,
    /// `0x15`: set a merchant's webhook endpoint (answers its new secret
    /// once).
    SetWebhookEndpoint = 0x15,
    /// `0x16`: remove a merchant's webhook endpoint.
    RemoveWebhookEndpoint = 0x16,
    /// `0x80`: the answer to any request, success or error: a result code,
    /// a message and result fields.
    Response = 0x80,
}

impl FrameType {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The frame type for a code.
    ///
    /// # Errors
    /// [`Error::UnknownFrameType`] for a code this version does not define.
    pub fn from_code(code: u8) -> Result<FrameType, Error> {
        Ok(match code {
            0x01 => FrameType::Authenticate,
            0x02 => FrameType::AuthorizeMoto,
            0x03 => FrameType::PreauthorizeMoto,
            0x04 => FrameType::Capture,
            0x05 => FrameType::Refund,
            0x06 => FrameType::Cancel,
            0x07 => FrameType::GetPayment,
            0x08 => FrameType::ListPayments,
            0x09 => FrameType::MarkScam,
            0x0A => FrameType::ListTerminals,
            0x0B => FrameType::AddTerminal,
            0x0C => FrameType::SetTerminal,
            0x0D => FrameType::RemoveTerminal,
            0x0E => FrameType::GetMerchant,
            0x0F => FrameType::SetMerchant,
            0x10 => FrameType::UnmarkScam,
            0x11 => FrameType::ListWebhookEvents,
            0x12 => FrameType::ResendWebhookEvent,
            0x13 => FrameType::GetWebhookEndpoint,
            0x14 => FrameType::ListMandates,
            0x15 => FrameType::SetWebhookEndpoint,
            0x16 => FrameType::RemoveWebhookEndpoint,
            0x80 => FrameType::Response,
            found => return Err(Error::UnknownFrameType { found }),
        })
    }

    fn name(self) -> &'static str {
        match self {
            FrameType::Authenticate => "Authenticate",
            FrameType::AuthorizeMoto => "AuthorizeMoto",
            FrameType::PreauthorizeMoto => "PreauthorizeMoto",
            FrameType::Capture => "Capture",
            FrameType::Refund => "Refund",
            FrameType::Cancel => "Cancel",
            FrameType::GetPayment => "GetPayment",
            FrameType::ListPayments => "ListPayments",
            FrameType::MarkScam => "MarkScam",
            FrameType::ListTerminals => "ListTerminals",
            FrameType::AddTerminal => "AddTerminal",
            FrameType::SetTerminal => "SetTerminal",
            FrameType::RemoveTerminal => "RemoveTerminal",
            FrameType::GetMerchant => "GetMerchant",
            FrameType::SetMerchant => "SetMerchant",
            FrameType::UnmarkScam => "UnmarkScam",
            FrameType::ListMandates => "ListMandates",
            FrameType::ListWebhookEvents => "ListWebhookEvents",
            FrameType::ResendWebhookEvent => "ResendWebhookEvent",
            FrameType::GetWebhookEndpoint => "GetWebhookEndpoint",
            FrameType::SetWebhookEndpoint => "SetWebhookEndpoint",
            FrameType::RemoveWebhookEndpoint => "RemoveWebhookEndpoint",
            FrameType::Response => "Response",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=u8::MAX {
            if let Ok(t) = FrameType::from_code(code) {
                assert_eq!(t.code(), code);
            } else {
                assert_eq!(
                    FrameType::from_code(code),
                    Err(Error::UnknownFrameType { found: code })
                );
            }
        }
    }
}
