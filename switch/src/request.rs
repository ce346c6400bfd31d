//! The wire-agnostic request every decoder produces and the engine consumes.

use codecs::card::Pan;
use codecs::iso8583::datetime::Expiry;
use codecs::iso8583::f48::Eci;
use codecs::iso8583::f90::OriginalData;

use crate::code::Code;
use crate::idempotency::MessageKey;
use crate::lifecycle::Operation;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Pre-authorization (0100): places a hold.
    PreAuth,
    /// Sale (0200, F3 00): authorized and captured.
    Sale,
    /// Refund (0200, F3 20) of a captured payment.
    Refund,
    /// Capture (0220) of a pre-authorization.
    Capture,
    /// Reversal (0400, 0420) of a pre-authorization, sale or refund.
    Reversal,
}

impl Op {
    /// The history entry this operation makes.
    pub(crate) fn operation(self) -> Operation {
        match self {
            Op::PreAuth => Operation::PreAuth,
            Op::Sale => Operation::Sale,
            Op::Refund => Operation::Refund,
            Op::Capture => Operation::Capture,
            Op::Reversal => Operation::Reversal,
        }
    }

    /// Whether it starts a payment (and so is an authorization attempt).
    pub(crate) fn authorizes(self) -> bool {
        matches!(self, Op::PreAuth | Op::Sale)
    }
}

/// How the card was presented (F25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    /// 00: normal presentment.
    CardPresent,
    /// 08: mail or telephone order.
    MoTo,
    /// 59: e-commerce.
    Ecommerce,
    /// Anything else.
    Other,
}

/// How a follow-up message names its original.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OriginalRef {
    /// F90: original MTI, STAN and F7.
    Message(OriginalData),
    /// The original's F37 and F38.
    Rrn([u8; 12], [u8; 6]),
    /// A payment id (internal frames), within the request's merchant.
    Payment(u64),
}

/// A validated request, borrowing card data from the frame buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    /// What is asked.
    pub(crate) op: Op,
    /// Idempotency key, when the message has one.
    pub(crate) key: Option<MessageKey>,
    /// Whether the MTI marks a repeat.
    pub(crate) repeat: bool,
    /// Checksum of the content, to tell duplicates from conflicts.
    pub(crate) content_crc: u32,
    /// F42.
    pub(crate) merchant_id: &'a [u8],
    /// F41.
    pub(crate) terminal_id: [u8; 8],
    /// The card, for authorizations.
    pub(crate) pan: Option<Pan<'a>>,
    /// Card expiry, for authorizations.
    pub(crate) expiry: Option<Expiry>,
    /// F4, minor units.
    pub(crate) amount_minor: u64,
    /// F49.
    pub(crate) currency: u16,
    /// The original, for captures, refunds and reversals.
    pub(crate) original: Option<OriginalRef>,
    /// F95's replacement amount, for partial reversals.
    pub(crate) replacement_minor: Option<u64>,
    /// F25.
    pub(crate) channel: Channel,
    /// F48.42.
    pub(crate) eci: Option<Eci>,
    /// F37 of the request, if it has one.
    pub(crate) rrn: Option<[u8; 12]>,
    /// MO/TO details to keep with a new payment (internal frames).
    pub(crate) extras: Option<&'a crate::lifecycle::Extras>,
}

/// What the engine answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// F39.
    pub(crate) code: Code,
    /// F37.
    pub(crate) rrn: [u8; 12],
    /// F38 on approval.
    pub(crate) auth_code: Option<[u8; 6]>,
    /// Journal sequence the answer waits for (0: none).
    pub(crate) seq: u64,
}
