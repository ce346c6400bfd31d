//! The payment lifecycle as a deterministic core: pure transitions on a
//! [`Payment`], no I/O, no clock of its own (`now_ms` is a parameter).

use codecs::card::{CardToken, MaskedPan};
use codecs::internal::EventKind;

use crate::code::Code;

/// Most activity entries kept per payment; older ones are dropped first
/// (the journal keeps them all).
pub const HISTORY_MAX: usize = 32;
/// Most refused follow-up operations (a capture, refund or cancel answered
/// 12 or 13) kept in a payment's history: the oldest refused entry makes
/// room for a newer one, and a real operation evicts refused entries before
/// real ones, so a flood of refusals never pushes the payment's own
/// operations out.
pub const HISTORY_REFUSED_MAX: usize = 8;
// Refusals can never fill the history on their own.
const _: () = assert!(HISTORY_REFUSED_MAX < HISTORY_MAX);
/// Most refunds per payment.
pub const REFUNDS_PER_PAYMENT_MAX: usize = 64;
/// Most captures of one pre-authorization, partial ones and the final one
/// (a hotel folio or a split shipment needs a handful; the bound keeps
/// the history and the issuer's advices of one payment bounded).
pub const CAPTURES_PER_PAYMENT_MAX: u16 = 32;
/// Most incremental authorizations of one pre-authorization, each kept
/// with its message key so that it can be reversed on its own.
pub const INCREMENTS_PER_PAYMENT_MAX: usize = 16;

/// Where a payment is in its life: the one status type, shared with the
/// internal frames' wire (`codecs::internal::PaymentStatus`, whose codes and
/// labels it has) and the virtual terminal.
pub use codecs::internal::PaymentStatus as Status;

/// A status's code in journal records: its position in [`Status::ALL`]
/// (the wire code less one; records written before the types were merged
/// read the same).
pub fn status_record_code(s: Status) -> u8 {
    s.code() - 1
}

/// The status of a record's code.
pub fn status_of_record_code(v: u8) -> Option<Status> {
    Status::ALL.get(usize::from(v)).copied()
}

/// Whether the payment has been captured (refunds allowed).
const fn is_captured(s: Status) -> bool {
    matches!(
        s,
        Status::Succeeded | Status::PartiallyRefunded | Status::Refunded
    )
}

/// Whether moving from `from` to `to` is an allowed transition.
#[cfg(test)]
pub(crate) fn may_become(from: Status, to: Status) -> bool {
    use Status::*;
    from == to
        || matches!(
            (from, to),
            (Uncaptured, Succeeded | Cancelled | Expired)
                | (Succeeded, PartiallyRefunded | Refunded | Reversed)
                | (PartiallyRefunded, Refunded | Succeeded | Reversed)
                | (Refunded, PartiallyRefunded | Succeeded)
        )
}

/// How the payment started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 0100: hold, then capture.
    PreAuth,
    /// 0200: authorized and captured at once.
    Sale,
}

/// What happened to a payment, for its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Pre-authorization.
    PreAuth,
    /// Sale.
    Sale,
    /// Capture.
    Capture,
    /// Refund.
    Refund,
    /// Reversal of the payment.
    Reversal,
    /// Reversal of one refund.
    RefundReversal,
    /// Hold expired.
    Expiry,
    /// Captured automatically.
    AutoCapture,
    /// Marked as scam.
    Flag,
    /// The scam flag taken off by hand.
    Unflag,
    /// Incremental authorization: the hold raised by its amount.
    Increment,
}

impl Operation {
    /// Label for records and exports.
    pub const fn label(self) -> &'static str {
        match self {
            Operation::PreAuth => "preauth",
            Operation::Sale => "sale",
            Operation::Capture => "capture",
            Operation::Refund => "refund",
            Operation::Reversal => "reversal",
            Operation::RefundReversal => "refund_reversal",
            Operation::Expiry => "expiry",
            Operation::AutoCapture => "auto_capture",
            Operation::Flag => "flag",
            Operation::Unflag => "unflag",
            Operation::Increment => "increment",
        }
    }
}

/// One entry of a payment's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    /// What was done.
    pub op: Operation,
    /// Amount involved, minor units.
    pub amount_minor: u64,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Response code given.
    pub code: Code,
}

/// One refund of a payment, so it can be reversed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refund {
    /// Amount refunded.
    pub amount_minor: u64,
    /// Whether it has been reversed.
    pub reversed: bool,
}

/// A payment and everything needed to decide on its next operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Switch-assigned id.
    pub id: u64,
    /// Index of the merchant in the configuration.
    pub merchant: u32,
    /// F41 of the terminal that started it.
    pub terminal: [u8; 8],
    /// Pre-authorization or sale.
    pub kind: Kind,
    /// Current status.
    pub status: Status,
    /// ISO 4217 numeric currency.
    pub currency: u16,
    /// Amount authorized (held), minor units.
    pub authorized_minor: u64,
    /// Amount captured, minor units.
    pub captured_minor: u64,
    /// Refunds, in order; their sum (less reversed ones) is refunded.
    pub refunds: Vec<Refund>,
    /// Keyed token of the card.
    pub card_token: CardToken,
    /// Masked card number for display.
    pub masked_pan: MaskedPan,
    /// When it was authorized.
    pub created_ms: u64,
    /// F38 given at approval.
    pub auth_code: [u8; 6],
    /// F37 of the authorization.
    pub rrn: [u8; 12],
    /// Whether it is flagged as scam.
    pub scam: bool,
    /// Why it was flagged (rule names), comma-separated; bounded.
    pub flag_reasons: String,
    /// Last [`HISTORY_MAX`] operations.
    pub history: Vec<Activity>,
    /// What internal-frame (MO/TO) payments carry besides; boxed so ISO
    /// 8583 payments pay one pointer for it.
    pub extras: Option<Box<Extras>>,
    /// Sequence of the journal record of its last change, in memory only
    /// (not in the record; 0 when none, or read back from the archive): it
    /// leaves memory only once the archive's watermark reaches it.
    pub journal_seq: u64,
    /// For a payment an issuer decided (or the switch in its stead): how
    /// it was forwarded, for the advices of its captures and reversals.
    pub upstream: Option<Box<Forwarded>>,
    /// Fields added since record version 3, each written as a tagged
    /// extension (see [`More`]).
    pub more: More,
}

/// A payment's fields added since record version 3. Each is written as one
/// tagged extension (tag, length, bytes) after the version-2 fields, so a
/// field can be added without a new record version: a reader skips the
/// tags it does not know. Tags: see `record::put_more`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct More {
    /// The ECI (F48.42) the payment was authorized with, as its 2-digit
    /// number (tag 1).
    pub eci: Option<u8>,
    /// How the card was presented at authorization: F25's value (00, 08,
    /// 59; 99 for anything else) (tag 2).
    pub channel: Option<u8>,
    /// The amount asked for at authorization, minor units: what a declined
    /// payment was declined for (tag 3).
    pub requested_minor: Option<u64>,
    /// Who marked the payment as scam by hand and who took the mark off,
    /// and why (tags 4 to 8); boxed, as few payments have any.
    pub flag_notes: Option<Box<FlagNotes>>,
    /// How many captures a pre-authorization has had, partial ones
    /// included, against [`CAPTURES_PER_PAYMENT_MAX`] (tag 10).
    pub captures: Option<u16>,
    /// When the hold period last started, ms since the epoch, when not at
    /// creation: an incremental authorization restarts it (tag 11).
    pub hold_from_ms: Option<u64>,
    /// The incremental authorizations approved, in order, at most
    /// [`INCREMENTS_PER_PAYMENT_MAX`] (tag 12).
    pub increments: Vec<Increment>,
}

/// One incremental authorization of a pre-authorization: the message that
/// made it (so a reversal naming that message takes back its amount, not
/// the whole hold) and what it added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Increment {
    /// F11 of the 0100 that raised the hold.
    pub stan: u32,
    /// F7 of that 0100, as a number (MMDDhhmmss).
    pub transmission: u64,
    /// What it added to the authorized amount, minor units.
    pub amount_minor: u64,
    /// Whether it has been reversed.
    pub reversed: bool,
}

/// Who marked a payment as scam by hand, who took the mark off, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagNotes {
    /// Who marked it: the internal-frame client id, or the operator (tag 4).
    pub flagged_by: Option<String>,
    /// Why, as they gave it (tag 5); the rule recorded is in
    /// `Payment::flag_reasons`.
    pub flag_note: Option<String>,
    /// Why the flag was taken off, the last time it was (tag 6).
    pub unflag_reason: Option<String>,
    /// Who took it off (tag 7).
    pub unflagged_by: Option<String>,
    /// When, ms since the epoch (tag 8).
    pub unflagged_ms: Option<u64>,
}

/// `s` cut to at most [`TEXT_BYTES_MAX`] bytes, at a character boundary.
pub fn bounded_text(s: &str) -> String {
    let mut end = s.len().min(TEXT_BYTES_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What the shell sends for a forwarded authorization, and what a payment
/// an issuer decided remembers of it (F90 of its advices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The pending forward's id.
    pub forward: u64,
    /// The upstream's name.
    pub upstream: String,
    /// The switch's F11 on the upstream request.
    pub stan: u32,
    /// F7 of the upstream request (MMDDhhmmss as a number).
    pub transmission: u64,
    /// MTI of the upstream request (100 or 200).
    pub mti: u16,
    /// Whether the switch approved in the issuer's stead (stand-in).
    pub stood_in: bool,
}

/// Most cart lines kept per payment.
pub const CART_LINES_MAX: usize = 50;
/// Longest merchant reference or description kept, in bytes.
pub const TEXT_BYTES_MAX: usize = 256;

/// Merchant-facing details of a payment taken over internal frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    /// The merchant's order reference.
    pub merchant_reference: String,
    /// What was sold.
    pub description: String,
    /// Itemization, at most [`CART_LINES_MAX`] lines.
    pub cart: Vec<CartItem>,
}

/// One cart line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CartItem {
    /// Item name or SKU.
    pub item: String,
    /// Quantity bought.
    pub quantity: u32,
    /// Price of one, minor units.
    pub unit_price_minor: u64,
    /// Quantity refunded so far.
    pub refunded_quantity: u32,
}

/// The highest capture for `authorized_minor` with `over_capture_pct`:
/// authorized × (1 + pct/100), rounded down to the minor unit.
pub fn capture_limit_minor(authorized_minor: u64, over_capture_pct: u32) -> u64 {
    let extra = u128::from(authorized_minor) * u128::from(over_capture_pct) / 100;
    authorized_minor.saturating_add(u64::try_from(extra).unwrap_or(u64::MAX))
}

impl Payment {
    /// The history as the internal frames' events, oldest first: a
    /// reversal before any capture releases a hold (cancelled), after one
    /// it reverses the payment.
    pub fn events(&self) -> impl Iterator<Item = (&Activity, EventKind)> + '_ {
        let mut captured = false;
        self.history.iter().map(move |a| {
            let kind = match a.op {
                Operation::Capture | Operation::AutoCapture if !a.code.approved() => {
                    EventKind::CaptureRefused
                }
                Operation::Refund if !a.code.approved() => EventKind::RefundRefused,
                Operation::Reversal | Operation::RefundReversal if !a.code.approved() => {
                    EventKind::CancelRefused
                }
                _ if !a.code.approved() => EventKind::Declined,
                Operation::Sale => EventKind::Authorized,
                // An increment raises the hold: a pre-authorization of
                // its amount, on the wire's events.
                Operation::PreAuth | Operation::Increment => EventKind::Preauthorized,
                Operation::Capture | Operation::AutoCapture => {
                    captured = true;
                    EventKind::Captured
                }
                Operation::Refund => EventKind::Refunded,
                Operation::Reversal if self.kind == Kind::PreAuth && !captured => {
                    EventKind::Cancelled
                }
                Operation::Reversal | Operation::RefundReversal => EventKind::Reversed,
                Operation::Expiry => EventKind::Expired,
                Operation::Flag => EventKind::MarkedScam,
                Operation::Unflag => EventKind::UnmarkedScam,
            };
            (a, kind)
        })
    }

    /// The response code the authorization was answered with: its history
    /// entry's (the first); when the history no longer has it (more than
    /// [`HISTORY_MAX`] operations since), approved unless declined.
    pub fn result_code(&self) -> Option<Code> {
        match self.history.first() {
            Some(a) if matches!(a.op, Operation::PreAuth | Operation::Sale) => Some(a.code),
            _ if self.status == Status::Declined => None,
            _ => Some(Code::APPROVED),
        }
    }

    /// Sum of refunds not reversed.
    pub fn refunded_minor(&self) -> u64 {
        self.refunds
            .iter()
            .filter(|r| !r.reversed)
            .map(|r| r.amount_minor)
            .sum()
    }

    /// Adds to the history, dropping at the limit the oldest refused entry
    /// if there is one, else the oldest entry.
    pub fn record(&mut self, op: Operation, amount_minor: u64, at_ms: u64, code: Code) {
        if self.history.len() >= HISTORY_MAX {
            let oldest_refused = self.history.iter().position(|a| !a.code.approved());
            self.history.remove(oldest_refused.unwrap_or(0));
        }
        self.history.push(Activity {
            op,
            amount_minor,
            at_ms,
            code,
        });
    }

    /// Adds a refused follow-up operation (a capture, refund or cancel
    /// answered `code`) to the history, changing nothing else. At most
    /// [`HISTORY_REFUSED_MAX`] refused entries are kept (the oldest goes);
    /// when the history is full of the payment's own operations the
    /// refusal is not kept. Returns whether it was added.
    pub fn record_refused(
        &mut self,
        op: Operation,
        amount_minor: u64,
        at_ms: u64,
        code: Code,
    ) -> bool {
        debug_assert!(!code.approved());
        let refused = self.history.iter().filter(|a| !a.code.approved()).count();
        if refused >= HISTORY_REFUSED_MAX {
            if let Some(i) = self.history.iter().position(|a| !a.code.approved()) {
                self.history.remove(i);
            }
        } else if self.history.len() >= HISTORY_MAX {
            return false;
        }
        self.record(op, amount_minor, at_ms, code);
        true
    }

    fn refund_status(&self) -> Status {
        match self.refunded_minor() {
            0 => Status::Succeeded,
            r if r >= self.captured_minor => Status::Refunded,
            _ => Status::PartiallyRefunded,
        }
    }

    /// When the hold period of a pre-authorization started: at creation,
    /// or at its last incremental authorization.
    pub fn hold_from_ms(&self) -> u64 {
        self.more.hold_from_ms.unwrap_or(self.created_ms)
    }

    /// Captures a pre-authorization: `amount_minor` more, and the hold
    /// closes unless `keep_open` (a partial capture, F48.22 = 1: the rest
    /// stays held for further captures). A final capture releases what is
    /// left. Every capture counts against the over-capture limit of the
    /// authorized amount, summed.
    ///
    /// # Errors
    /// 12 unless an open pre-authorization in the same currency, or at
    /// [`CAPTURES_PER_PAYMENT_MAX`]; 13 for zero, or when the sum of
    /// captures would pass the over-capture limit.
    pub fn capture(
        &mut self,
        amount_minor: u64,
        currency: u16,
        over_capture_pct: u32,
        keep_open: bool,
        now_ms: u64,
    ) -> Result<(), Code> {
        if self.kind != Kind::PreAuth
            || self.status != Status::Uncaptured
            || currency != self.currency
        {
            return Err(Code::INVALID_TRANSACTION);
        }
        let captures = self.more.captures.unwrap_or(0);
        if captures >= CAPTURES_PER_PAYMENT_MAX {
            return Err(Code::INVALID_TRANSACTION);
        }
        let limit_minor = capture_limit_minor(self.authorized_minor, over_capture_pct);
        match self.captured_minor.checked_add(amount_minor) {
            Some(sum) if amount_minor > 0 && sum <= limit_minor => self.captured_minor = sum,
            _ => return Err(Code::INVALID_AMOUNT),
        }
        self.more.captures = Some(captures + 1);
        if !keep_open {
            self.status = Status::Succeeded;
        }
        self.record(Operation::Capture, amount_minor, now_ms, Code::APPROVED);
        Ok(())
    }

    /// Keeps the cart lines a capture came with ("capture by an edited
    /// cart"): the first capture's lines replace the payment's cart (what
    /// was ordered gives way to what was captured); a later partial
    /// capture's are added to them, so the cart stays what was captured
    /// and refunds by line follow it.
    ///
    /// # Errors
    /// 12 when the cart would pass [`CART_LINES_MAX`] lines.
    pub fn capture_cart(&mut self, lines: &[CartItem], first: bool) -> Result<(), Code> {
        let extras = self.extras.get_or_insert_with(Default::default);
        let kept = if first { 0 } else { extras.cart.len() };
        if kept + lines.len() > CART_LINES_MAX {
            return Err(Code::INVALID_TRANSACTION);
        }
        if first {
            extras.cart.clear();
        }
        extras.cart.extend(lines.iter().map(|l| CartItem {
            refunded_quantity: 0,
            ..l.clone()
        }));
        Ok(())
    }

    /// Raises an open pre-authorization's hold by `amount_minor` (an
    /// incremental authorization, made by the 0100 with F11 `stan` and F7
    /// `transmission`); its hold period starts again at `now_ms`.
    ///
    /// # Errors
    /// 12 unless an open pre-authorization in the same currency, or at
    /// [`INCREMENTS_PER_PAYMENT_MAX`]; 13 for zero or an amount that
    /// overflows.
    pub fn increment(
        &mut self,
        amount_minor: u64,
        currency: u16,
        (stan, transmission): (u32, u64),
        now_ms: u64,
    ) -> Result<(), Code> {
        if self.kind != Kind::PreAuth
            || self.status != Status::Uncaptured
            || currency != self.currency
            || self.more.increments.len() >= INCREMENTS_PER_PAYMENT_MAX
        {
            return Err(Code::INVALID_TRANSACTION);
        }
        let authorized = self
            .authorized_minor
            .checked_add(amount_minor)
            .filter(|_| amount_minor > 0)
            .ok_or(Code::INVALID_AMOUNT)?;
        self.authorized_minor = authorized;
        self.more.hold_from_ms = Some(now_ms);
        self.more.increments.push(Increment {
            stan,
            transmission,
            amount_minor,
            reversed: false,
        });
        self.record(Operation::Increment, amount_minor, now_ms, Code::APPROVED);
        Ok(())
    }

    /// The increment a message (F11 `stan`, F7 `transmission`) made, if
    /// that message was an incremental authorization of this payment.
    pub fn increment_of(&self, stan: u32, transmission: u64) -> Option<usize> {
        self.more
            .increments
            .iter()
            .position(|i| i.stan == stan && i.transmission == transmission)
    }

    /// Reverses increment `index`, fully or down to `replacement_minor`
    /// (F95): the hold goes down by what it takes back; the rest of the
    /// hold and the captures made stay.
    ///
    /// # Errors
    /// 12 when the hold is no longer open or the increment was reversed;
    /// 13 when the replacement is not below the increment, or when what
    /// was captured already would pass the lower over-capture limit.
    pub fn reverse_increment(
        &mut self,
        index: usize,
        replacement_minor: Option<u64>,
        over_capture_pct: u32,
        now_ms: u64,
    ) -> Result<(), Code> {
        let open = self.status == Status::Uncaptured;
        let Some(inc) = self.more.increments.get_mut(index).filter(|_| open) else {
            return Err(Code::INVALID_TRANSACTION);
        };
        if inc.reversed {
            return Err(Code::INVALID_TRANSACTION);
        }
        let keep = replacement_minor.unwrap_or(0);
        let Some(release) = inc.amount_minor.checked_sub(keep).filter(|&r| r > 0) else {
            return Err(Code::INVALID_AMOUNT);
        };
        let authorized = self.authorized_minor.saturating_sub(release);
        if self.captured_minor > capture_limit_minor(authorized, over_capture_pct) {
            return Err(Code::INVALID_AMOUNT);
        }
        inc.amount_minor = keep;
        inc.reversed = keep == 0;
        self.authorized_minor = authorized;
        self.record(Operation::Reversal, release, now_ms, Code::APPROVED);
        Ok(())
    }

    /// Refunds part or all of a captured payment; returns the refund's index.
    ///
    /// # Errors
    /// 12 when not captured or another currency; 13 for zero, for more than
    /// is left to refund, or when already refunded in full; 96 at the
    /// refund-count limit.
    pub fn refund(&mut self, amount_minor: u64, currency: u16, now_ms: u64) -> Result<u8, Code> {
        if !is_captured(self.status) || currency != self.currency {
            return Err(Code::INVALID_TRANSACTION);
        }
        let refunded = self.refunded_minor();
        if amount_minor == 0 || refunded.saturating_add(amount_minor) > self.captured_minor {
            return Err(Code::INVALID_AMOUNT);
        }
        if self.refunds.len() >= REFUNDS_PER_PAYMENT_MAX {
            return Err(Code::SYSTEM_MALFUNCTION);
        }
        self.refunds.push(Refund {
            amount_minor,
            reversed: false,
        });
        self.status = self.refund_status();
        self.record(Operation::Refund, amount_minor, now_ms, Code::APPROVED);
        Ok((self.refunds.len() - 1) as u8)
    }

    /// Reverses the payment, fully or down to `replacement_minor` (F95).
    ///
    /// # Errors
    /// 12 when the status forbids it (already cancelled, reversed, expired,
    /// declined, or refunds outstanding); 13 when the replacement amount is
    /// not below the current amount or below what was refunded.
    pub fn reverse(&mut self, replacement_minor: Option<u64>, now_ms: u64) -> Result<(), Code> {
        match self.status {
            Status::Uncaptured if self.captured_minor > 0 => {
                self.reverse_partly_captured(replacement_minor, now_ms)
            }
            Status::Uncaptured => {
                let keep = replacement_minor.unwrap_or(0);
                if keep >= self.authorized_minor {
                    return Err(Code::INVALID_AMOUNT);
                }
                self.record(
                    Operation::Reversal,
                    self.authorized_minor - keep,
                    now_ms,
                    Code::APPROVED,
                );
                self.authorized_minor = keep;
                if keep == 0 {
                    self.status = Status::Cancelled;
                }
                Ok(())
            }
            Status::Succeeded | Status::PartiallyRefunded => {
                let keep = replacement_minor.unwrap_or(0);
                if keep >= self.captured_minor {
                    return Err(Code::INVALID_AMOUNT);
                }
                if keep == 0 && self.refunded_minor() > 0 {
                    return Err(Code::INVALID_TRANSACTION);
                }
                if keep < self.refunded_minor() {
                    return Err(Code::INVALID_AMOUNT);
                }
                self.record(
                    Operation::Reversal,
                    self.captured_minor - keep,
                    now_ms,
                    Code::APPROVED,
                );
                self.captured_minor = keep;
                self.status = if keep == 0 {
                    Status::Reversed
                } else {
                    self.refund_status()
                };
                Ok(())
            }
            _ => Err(Code::INVALID_TRANSACTION),
        }
    }

    /// Reverses an open pre-authorization that has partial captures: in
    /// full, the rest of the hold is released and the captures stand (the
    /// payment is then captured, Succeeded); down to `replacement_minor`
    /// (F95, the amount left authorized), the hold is lowered and stays
    /// open.
    ///
    /// # Errors
    /// 13 when the replacement is not below the authorized amount or below
    /// what was captured already.
    fn reverse_partly_captured(
        &mut self,
        replacement_minor: Option<u64>,
        now_ms: u64,
    ) -> Result<(), Code> {
        let rest = self.authorized_minor.saturating_sub(self.captured_minor);
        match replacement_minor {
            None | Some(0) => {
                self.record(Operation::Reversal, rest, now_ms, Code::APPROVED);
                self.status = Status::Succeeded;
                Ok(())
            }
            Some(keep) if keep >= self.captured_minor && keep < self.authorized_minor => {
                let released = self.authorized_minor - keep;
                self.record(Operation::Reversal, released, now_ms, Code::APPROVED);
                self.authorized_minor = keep;
                Ok(())
            }
            Some(_) => Err(Code::INVALID_AMOUNT),
        }
    }

    /// Reverses one refund.
    ///
    /// # Errors
    /// 12 when it was already reversed, or the payment has been reversed.
    pub fn reverse_refund(&mut self, index: u8, now_ms: u64) -> Result<(), Code> {
        if !is_captured(self.status) {
            return Err(Code::INVALID_TRANSACTION);
        }
        let refund = self
            .refunds
            .get_mut(usize::from(index))
            .ok_or(Code::UNABLE_TO_LOCATE)?;
        if refund.reversed {
            return Err(Code::INVALID_TRANSACTION);
        }
        refund.reversed = true;
        let amount = refund.amount_minor;
        self.status = self.refund_status();
        self.record(Operation::RefundReversal, amount, now_ms, Code::APPROVED);
        Ok(())
    }

    /// Ends an uncaptured hold: expired, or captured in full when
    /// `auto_capture`. A hold with partial captures keeps them: expired,
    /// the rest is released and the payment is captured (Succeeded) for
    /// what was captured; auto-captured, the rest is captured too. Returns
    /// whether anything changed.
    pub fn end_hold(&mut self, auto_capture: bool, now_ms: u64) -> bool {
        if self.status != Status::Uncaptured {
            return false;
        }
        let rest = self.authorized_minor.saturating_sub(self.captured_minor);
        if auto_capture {
            self.captured_minor += rest;
            self.status = Status::Succeeded;
            self.record(Operation::AutoCapture, rest, now_ms, Code::APPROVED);
        } else {
            self.status = if self.captured_minor > 0 {
                Status::Succeeded
            } else {
                Status::Expired
            };
            self.record(Operation::Expiry, rest, now_ms, Code::APPROVED);
        }
        true
    }

    /// Marks the payment as scam with a reason (rule name).
    pub fn flag(&mut self, reason: &str, now_ms: u64) {
        self.scam = true;
        if self.flag_reasons.len() + reason.len() < 256
            && !self.flag_reasons.split(',').any(|r| r == reason)
        {
            if !self.flag_reasons.is_empty() {
                self.flag_reasons.push(',');
            }
            self.flag_reasons.push_str(reason);
        }
        self.record(Operation::Flag, 0, now_ms, Code::APPROVED);
    }

    /// Marks the payment as scam by hand: as [`Payment::flag`], and who did
    /// it and why they said. Returns whether it was not flagged before.
    pub fn flag_by(&mut self, rule: &str, by: &str, note: Option<&str>, now_ms: u64) -> bool {
        let was = self.scam;
        self.flag(rule, now_ms);
        let notes = self.more.flag_notes.get_or_insert_with(Box::default);
        notes.flagged_by = Some(bounded_text(by));
        notes.flag_note = note.map(bounded_text);
        !was
    }

    /// Takes the scam flag off by hand, with who and why. The rules that
    /// flagged it stay in `flag_reasons` for the record.
    ///
    /// # Errors
    /// 12 when the payment is not flagged.
    pub fn unflag(&mut self, by: &str, reason: &str, now_ms: u64) -> Result<(), Code> {
        if !self.scam {
            return Err(Code::INVALID_TRANSACTION);
        }
        self.scam = false;
        let notes = self.more.flag_notes.get_or_insert_with(Box::default);
        notes.unflagged_by = Some(bounded_text(by));
        notes.unflag_reason = Some(bounded_text(reason));
        notes.unflagged_ms = Some(now_ms);
        self.record(Operation::Unflag, 0, now_ms, Code::APPROVED);
        Ok(())
    }
}

/// One cart line to refund, as a refund request names it: the item and
/// unit price of a line sold with the payment, and how many to refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRefund<'a> {
    /// Item name or SKU, as sold.
    pub item: &'a str,
    /// How many to refund.
    pub quantity: u32,
    /// Price of one, as sold, minor units.
    pub unit_price_minor: u64,
}

impl Payment {
    /// Refunds cart lines: the amount is the sum of quantity × unit price,
    /// and each line must match a sold line (item and unit price) with that
    /// much quantity not yet refunded. Returns the refund's index.
    ///
    /// # Errors
    /// 12 when the payment has no cart or a line matches none of it; 13
    /// when a line asks more than is left to refund on it; then as
    /// [`Payment::refund`].
    pub fn refund_lines(&mut self, lines: &[LineRefund<'_>], now_ms: u64) -> Result<u8, Code> {
        let cart = self.extras.as_ref().map_or(&[][..], |e| e.cart.as_slice());
        if cart.is_empty() || lines.is_empty() || lines.len() > CART_LINES_MAX {
            return Err(Code::INVALID_TRANSACTION);
        }
        // Quantity asked per cart line, so repeats of one line add up.
        let mut asked = [0u32; CART_LINES_MAX];
        let mut total_minor: u64 = 0;
        for line in lines {
            let i = cart
                .iter()
                .position(|c| c.item == line.item && c.unit_price_minor == line.unit_price_minor)
                .ok_or(Code::INVALID_TRANSACTION)?;
            let (Some(slot), Some(sold)) = (asked.get_mut(i), cart.get(i)) else {
                return Err(Code::INVALID_TRANSACTION);
            };
            *slot = slot
                .checked_add(line.quantity)
                .ok_or(Code::INVALID_AMOUNT)?;
            if u64::from(sold.refunded_quantity) + u64::from(*slot) > u64::from(sold.quantity) {
                return Err(Code::INVALID_AMOUNT);
            }
            total_minor = u64::from(line.quantity)
                .checked_mul(line.unit_price_minor)
                .and_then(|t| total_minor.checked_add(t))
                .ok_or(Code::INVALID_AMOUNT)?;
        }
        let index = self.refund(total_minor, self.currency, now_ms)?;
        if let Some(extras) = self.extras.as_mut() {
            for (sold, n) in extras.cart.iter_mut().zip(asked) {
                sold.refunded_quantity += n;
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn payment(kind: Kind, amount: u64) -> Payment {
        Payment {
            id: 1,
            merchant: 0,
            terminal: *b"DEMO0001",
            kind,
            status: if kind == Kind::PreAuth {
                Status::Uncaptured
            } else {
                Status::Succeeded
            },
            currency: 978,
            authorized_minor: amount,
            captured_minor: if kind == Kind::Sale { amount } else { 0 },
            refunds: Vec::new(),
            card_token: CardToken([0; 32]),
            masked_pan: MaskedPan::new(b"4111111111111111"),
            created_ms: 0,
            auth_code: *b"000001",
            rrn: *b"000000000001",
            scam: false,
            flag_reasons: String::new(),
            history: Vec::new(),
            extras: None,
            journal_seq: 0,
            upstream: None,
            more: Default::default(),
        }
    }

    #[test]
    fn over_capture_limit_rounds_down() {
        assert_eq!(capture_limit_minor(1000, 20), 1200);
        assert_eq!(capture_limit_minor(999, 20), 1198); // 1198.8 rounds down
        assert_eq!(capture_limit_minor(1000, 0), 1000);
        assert_eq!(capture_limit_minor(u64::MAX, 100), u64::MAX);
    }

    #[test]
    fn capture_rules() {
        let mut p = payment(Kind::PreAuth, 1000);
        assert_eq!(
            p.capture(1201, 978, 20, false, 1),
            Err(Code::INVALID_AMOUNT)
        );
        assert_eq!(p.capture(0, 978, 20, false, 1), Err(Code::INVALID_AMOUNT));
        assert_eq!(
            p.capture(1000, 840, 20, false, 1),
            Err(Code::INVALID_TRANSACTION)
        );
        assert_eq!(p.capture(1200, 978, 20, false, 1), Ok(()));
        assert_eq!((p.status, p.captured_minor), (Status::Succeeded, 1200));
        assert_eq!(
            p.capture(1, 978, 20, false, 2),
            Err(Code::INVALID_TRANSACTION),
            "one capture only"
        );
        let mut s = payment(Kind::Sale, 1000);
        assert_eq!(
            s.capture(500, 978, 20, false, 1),
            Err(Code::INVALID_TRANSACTION)
        );
    }

    #[test]
    fn refund_rules() {
        let mut p = payment(Kind::PreAuth, 1000);
        assert_eq!(
            p.refund(100, 978, 1),
            Err(Code::INVALID_TRANSACTION),
            "not captured"
        );
        p.capture(800, 978, 20, false, 1).expect("capture");
        assert_eq!(p.refund(801, 978, 2), Err(Code::INVALID_AMOUNT));
        assert_eq!(p.refund(300, 978, 2), Ok(0));
        assert_eq!(p.status, Status::PartiallyRefunded);
        assert_eq!(p.refund(501, 978, 3), Err(Code::INVALID_AMOUNT));
        assert_eq!(p.refund(500, 978, 3), Ok(1));
        assert_eq!(p.status, Status::Refunded);
        assert_eq!(
            p.refund(1, 978, 4),
            Err(Code::INVALID_AMOUNT),
            "already refunded in full"
        );
        assert_eq!(p.reverse_refund(1, 5), Ok(()));
        assert_eq!(
            (p.status, p.refunded_minor()),
            (Status::PartiallyRefunded, 300)
        );
        assert_eq!(p.reverse_refund(1, 5), Err(Code::INVALID_TRANSACTION));
    }

    #[test]
    fn reversal_rules() {
        let mut p = payment(Kind::PreAuth, 1000);
        assert_eq!(p.reverse(Some(1000), 1), Err(Code::INVALID_AMOUNT));
        assert_eq!(p.reverse(Some(400), 1), Ok(()));
        assert_eq!((p.status, p.authorized_minor), (Status::Uncaptured, 400));
        assert_eq!(p.reverse(None, 2), Ok(()));
        assert_eq!(p.status, Status::Cancelled);
        assert_eq!(p.reverse(None, 3), Err(Code::INVALID_TRANSACTION));
        assert_eq!(
            p.capture(100, 978, 20, false, 3),
            Err(Code::INVALID_TRANSACTION)
        );

        let mut s = payment(Kind::Sale, 1000);
        s.refund(100, 978, 1).expect("refund");
        assert_eq!(
            s.reverse(None, 2),
            Err(Code::INVALID_TRANSACTION),
            "refunds outstanding"
        );
        assert_eq!(
            s.reverse(Some(50), 2),
            Err(Code::INVALID_AMOUNT),
            "below refunded"
        );
        assert_eq!(s.reverse(Some(600), 2), Ok(()));
        assert_eq!(
            (s.status, s.captured_minor),
            (Status::PartiallyRefunded, 600)
        );
    }

    #[test]
    fn holds_expire_or_auto_capture() {
        let mut p = payment(Kind::PreAuth, 1000);
        assert!(p.end_hold(false, 9));
        assert_eq!(p.status, Status::Expired);
        assert!(!p.end_hold(false, 10));
        let mut q = payment(Kind::PreAuth, 1000);
        assert!(q.end_hold(true, 9));
        assert_eq!((q.status, q.captured_minor), (Status::Succeeded, 1000));
    }

    #[test]
    fn history_is_bounded_and_flags_deduplicate() {
        let mut p = payment(Kind::Sale, 10);
        for i in 0..(HISTORY_MAX as u64 + 5) {
            p.flag("blocklist", i);
        }
        assert_eq!(p.history.len(), HISTORY_MAX);
        assert_eq!(p.history[0].at_ms, 5);
        assert_eq!(p.flag_reasons, "blocklist");
        p.flag("velocity", 99);
        assert_eq!(p.flag_reasons, "blocklist,velocity");
    }

    #[test]
    fn refused_entries_are_bounded_and_never_evict_real_ones() {
        let mut p = payment(Kind::PreAuth, 1000);
        p.record(Operation::PreAuth, 1000, 0, Code::APPROVED);
        for i in 0..(HISTORY_REFUSED_MAX as u64 + 5) {
            assert!(p.record_refused(Operation::Capture, 5000, 1 + i, Code::INVALID_AMOUNT));
        }
        let refused = |p: &Payment| p.history.iter().filter(|a| !a.code.approved()).count();
        assert_eq!(refused(&p), HISTORY_REFUSED_MAX);
        assert_eq!(p.history[0].op, Operation::PreAuth, "the real one stays");
        assert_eq!(p.history[1].at_ms, 6, "the oldest refusals went");
        assert_eq!(p.status, Status::Uncaptured, "nothing else changed");
        // Real operations evict refused entries first.
        for i in 0..HISTORY_MAX as u64 {
            p.flag("manual", 100 + i);
        }
        assert_eq!(refused(&p), 0);
        assert_eq!(p.history.len(), HISTORY_MAX);
        // A history full of real operations keeps them.
        assert!(!p.record_refused(Operation::Refund, 1, 200, Code::INVALID_TRANSACTION));
        assert_eq!(refused(&p), 0);
        let kinds: Vec<EventKind> = {
            let mut q = payment(Kind::Sale, 10);
            q.record_refused(Operation::Refund, 11, 1, Code::INVALID_AMOUNT);
            q.record_refused(Operation::Capture, 11, 1, Code::INVALID_TRANSACTION);
            q.events().map(|(_, k)| k).collect()
        };
        assert_eq!(kinds, [EventKind::RefundRefused, EventKind::CaptureRefused]);
    }

    #[test]
    fn unflag_needs_a_flag_and_keeps_who_and_why() {
        let mut p = payment(Kind::Sale, 10);
        assert_eq!(p.unflag("op", "no", 1), Err(Code::INVALID_TRANSACTION));
        assert!(p.flag_by("manual", "AB-0000-0001", Some("chargeback"), 2));
        assert!(
            !p.flag_by("manual", "AB-0000-0001", None, 3),
            "already flagged"
        );
        assert_eq!(p.unflag("AB-0000-0002", "customer verified", 4), Ok(()));
        assert!(!p.scam);
        let notes = p.more.flag_notes.as_deref().expect("notes");
        assert_eq!(notes.flagged_by.as_deref(), Some("AB-0000-0001"));
        assert_eq!(notes.unflagged_by.as_deref(), Some("AB-0000-0002"));
        assert_eq!(notes.unflag_reason.as_deref(), Some("customer verified"));
        assert_eq!(notes.unflagged_ms, Some(4));
        assert_eq!(p.history.last().map(|a| a.op), Some(Operation::Unflag));
        assert_eq!(bounded_text(&"é".repeat(200)).len(), 256);
    }

    #[test]
    fn refund_by_cart_lines() {
        let mut p = payment(Kind::Sale, 3000);
        let line = |item, quantity, unit_price_minor| LineRefund {
            item,
            quantity,
            unit_price_minor,
        };
        assert_eq!(
            p.refund_lines(&[line("tea", 1, 500)], 1),
            Err(Code::INVALID_TRANSACTION),
            "no cart"
        );
        let item = |item: &str, quantity, unit_price_minor| CartItem {
            item: item.into(),
            quantity,
            unit_price_minor,
            refunded_quantity: 0,
        };
        p.extras = Some(Box::new(Extras {
            cart: vec![item("tea", 2, 500), item("pot", 1, 2000)],
            ..Extras::default()
        }));
        assert_eq!(
            p.refund_lines(&[line("tea", 1, 400)], 1),
            Err(Code::INVALID_TRANSACTION),
            "price must match"
        );
        assert_eq!(
            p.refund_lines(&[line("tea", 2, 500), line("tea", 1, 500)], 1),
            Err(Code::INVALID_AMOUNT),
            "repeats add up"
        );
        assert_eq!(p.refund_lines(&[line("tea", 1, 500)], 2), Ok(0));
        assert_eq!(
            (p.refunded_minor(), p.status),
            (500, Status::PartiallyRefunded)
        );
        assert_eq!(
            p.refund_lines(&[line("tea", 2, 500)], 3),
            Err(Code::INVALID_AMOUNT)
        );
        assert_eq!(
            p.refund_lines(&[line("tea", 1, 500), line("pot", 1, 2000)], 3),
            Ok(1)
        );
        assert_eq!(p.status, Status::Refunded);
        assert_eq!(
            p.extras.as_ref().map(|e| e.cart[0].refunded_quantity),
            Some(2)
        );
    }
}

#[cfg(test)]
mod extension_tests {
    //! The lifecycle extensions of issue 20: partial captures and
    //! incremental authorizations.

    use super::tests::payment;
    use super::*;

    #[test]
    fn partial_captures_add_up_to_the_over_capture_limit() {
        let mut p = payment(Kind::PreAuth, 1000);
        assert_eq!(p.capture(400, 978, 20, true, 1), Ok(()));
        assert_eq!((p.status, p.captured_minor), (Status::Uncaptured, 400));
        assert_eq!(p.capture(500, 978, 20, true, 2), Ok(()));
        // 900 captured, the limit is 1200: 301 more is 13, and changes nothing.
        assert_eq!(p.capture(301, 978, 20, false, 3), Err(Code::INVALID_AMOUNT));
        assert_eq!((p.status, p.captured_minor), (Status::Uncaptured, 900));
        assert_eq!(
            p.capture(1, 840, 20, true, 3),
            Err(Code::INVALID_TRANSACTION)
        );
        assert_eq!(p.capture(300, 978, 20, false, 4), Ok(()));
        assert_eq!((p.status, p.captured_minor), (Status::Succeeded, 1200));
        assert_eq!(p.more.captures, Some(3));
        // Final: nothing more.
        assert_eq!(
            p.capture(1, 978, 20, true, 5),
            Err(Code::INVALID_TRANSACTION)
        );
        let captures: Vec<u64> = p
            .history
            .iter()
            .filter(|a| a.op == Operation::Capture)
            .map(|a| a.amount_minor)
            .collect();
        assert_eq!(captures, [400, 500, 300]);
    }

    #[test]
    fn a_final_capture_below_the_rest_releases_it_and_refunds_follow() {
        let mut p = payment(Kind::PreAuth, 1000);
        p.capture(300, 978, 20, true, 1).expect("partial");
        assert_eq!(
            p.refund(100, 978, 2),
            Err(Code::INVALID_TRANSACTION),
            "no refund while the hold is open"
        );
        p.capture(200, 978, 20, false, 2).expect("final");
        assert_eq!((p.status, p.captured_minor), (Status::Succeeded, 500));
        assert_eq!(p.refund(501, 978, 3), Err(Code::INVALID_AMOUNT));
        assert_eq!(p.refund(500, 978, 3), Ok(0));
    }

    #[test]
    fn captures_are_bounded_in_number() {
        let mut p = payment(Kind::PreAuth, 1_000_000);
        for n in 0..CAPTURES_PER_PAYMENT_MAX {
            assert_eq!(p.capture(1, 978, 0, true, u64::from(n)), Ok(()));
        }
        assert_eq!(
            p.capture(1, 978, 0, false, 99),
            Err(Code::INVALID_TRANSACTION)
        );
        assert_eq!(p.captured_minor, u64::from(CAPTURES_PER_PAYMENT_MAX));
        assert_eq!(p.history.len(), HISTORY_MAX);
    }

    #[test]
    fn reversal_of_a_partly_captured_hold_releases_the_rest_only() {
        let mut p = payment(Kind::PreAuth, 1000);
        p.capture(300, 978, 20, true, 1).expect("partial");
        assert_eq!(
            p.reverse(Some(200), 2),
            Err(Code::INVALID_AMOUNT),
            "below captured"
        );
        assert_eq!(p.reverse(Some(1000), 2), Err(Code::INVALID_AMOUNT));
        assert_eq!(p.reverse(Some(600), 2), Ok(()));
        assert_eq!((p.status, p.authorized_minor), (Status::Uncaptured, 600));
        assert_eq!(p.reverse(None, 3), Ok(()));
        assert_eq!((p.status, p.captured_minor), (Status::Succeeded, 300));
        assert_eq!(p.history.last().map(|a| a.amount_minor), Some(300));
    }

    #[test]
    fn a_partly_captured_hold_ending_keeps_its_captures() {
        let mut p = payment(Kind::PreAuth, 1000);
        p.capture(300, 978, 20, true, 1).expect("partial");
        assert!(p.end_hold(false, 9));
        assert_eq!((p.status, p.captured_minor), (Status::Succeeded, 300));
        assert_eq!(
            p.history.last().map(|a| (a.op, a.amount_minor)),
            Some((Operation::Expiry, 700))
        );
        let mut q = payment(Kind::PreAuth, 1000);
        q.capture(300, 978, 20, true, 1).expect("partial");
        assert!(q.end_hold(true, 9));
        assert_eq!((q.status, q.captured_minor), (Status::Succeeded, 1000));
        assert_eq!(
            q.history.last().map(|a| (a.op, a.amount_minor)),
            Some((Operation::AutoCapture, 700))
        );
    }

    #[test]
    fn increments_raise_the_hold_and_restart_it() {
        let mut p = payment(Kind::PreAuth, 1000);
        assert_eq!(p.hold_from_ms(), 0);
        assert_eq!(p.increment(500, 978, (2, 22), 50), Ok(()));
        assert_eq!(p.authorized_minor, 1500);
        assert_eq!(p.hold_from_ms(), 50);
        assert_eq!(
            p.increment(1, 840, (3, 33), 60),
            Err(Code::INVALID_TRANSACTION)
        );
        assert_eq!(p.increment(0, 978, (3, 33), 60), Err(Code::INVALID_AMOUNT));
        assert_eq!(
            p.increment(u64::MAX, 978, (3, 33), 60),
            Err(Code::INVALID_AMOUNT)
        );
        // Partial captures keep the hold open, and raisable.
        p.capture(1500, 978, 20, true, 70).expect("partial");
        assert_eq!(p.increment(100, 978, (4, 44), 80), Ok(()));
        assert_eq!(
            p.capture(320, 978, 20, false, 90),
            Ok(()),
            "1600 x 1.2 = 1920"
        );
        assert_eq!(
            p.increment(100, 978, (5, 55), 99),
            Err(Code::INVALID_TRANSACTION),
            "captured: no longer open"
        );
        let mut s = payment(Kind::Sale, 1000);
        assert_eq!(
            s.increment(100, 978, (2, 22), 1),
            Err(Code::INVALID_TRANSACTION)
        );
        let mut q = payment(Kind::PreAuth, 1);
        for n in 0..INCREMENTS_PER_PAYMENT_MAX as u32 {
            q.increment(1, 978, (n, 0), 1).expect("room");
        }
        assert_eq!(
            q.increment(1, 978, (99, 0), 1),
            Err(Code::INVALID_TRANSACTION)
        );
    }

    #[test]
    fn an_increment_reversed_takes_back_its_amount_only() {
        let mut p = payment(Kind::PreAuth, 1000);
        p.increment(500, 978, (2, 22), 50).expect("increment");
        assert_eq!(p.increment_of(2, 22), Some(0));
        assert_eq!(p.increment_of(2, 23), None);
        p.capture(1100, 978, 20, true, 60).expect("partial");
        // 1000 x 1.2 = 1200 >= 1100: the increment may go.
        assert_eq!(
            p.reverse_increment(0, Some(500), 20, 70),
            Err(Code::INVALID_AMOUNT)
        );
        assert_eq!(p.reverse_increment(0, Some(200), 20, 70), Ok(()));
        assert_eq!(p.authorized_minor, 1200);
        assert_eq!(p.reverse_increment(0, None, 20, 71), Ok(()));
        assert_eq!((p.status, p.authorized_minor), (Status::Uncaptured, 1000));
        assert_eq!(
            p.reverse_increment(0, None, 20, 72),
            Err(Code::INVALID_TRANSACTION),
            "already reversed"
        );
        let mut q = payment(Kind::PreAuth, 1000);
        q.increment(500, 978, (2, 22), 50).expect("increment");
        q.capture(1300, 978, 20, true, 60).expect("partial");
        assert_eq!(
            q.reverse_increment(0, None, 20, 70),
            Err(Code::INVALID_AMOUNT),
            "1300 captured is over 1000's limit"
        );
    }
}
