//! The back office's changes (internal frames): refunds by cart line and
//! marking a payment as scam by hand. Both go through the same commit as
//! every other change.

use crate::code::Code;
use crate::command::{Fetched, Reply, Wait};
use crate::commit::ChangeParts;
use crate::engine::Engine;
use crate::lifecycle::LineRefund;

impl Engine {
    /// Refunds cart lines of payment `id` of merchant `m` (see
    /// [`crate::lifecycle::Payment::refund_lines`]): 58 when the merchant
    /// may not refund; 25 when there is no such payment for `m`; the
    /// lifecycle's 12 and 13; 96 when the journal fails.
    pub(crate) fn refund_lines(
        &self,
        m: u32,
        id: u64,
        lines: &[LineRefund<'_>],
        fetched: Option<&Fetched>,
        now_ms: u64,
    ) -> Reply {
        let none = [b'0'; 12];
        let Some(merchant) = self.merchants.get(m as usize) else {
            return Reply::of(Code::INVALID_MERCHANT, none);
        };
        if !merchant.enabled {
            return Reply::of(Code::INVALID_MERCHANT, none);
        }
        if !merchant.refunds_allowed {
            return Reply::of(Code::NOT_PERMITTED_TERMINAL, none);
        }
        if let Err(not_here) = self.ensure_payment(id, fetched) {
            return not_here.reply(none);
        }
        let committed = self.commit_existing(
            m,
            id,
            |p| p.refund_lines(lines, now_ms),
            |_, _| ChangeParts::default(),
        );
        match committed {
            Err(Code::UNABLE_TO_LOCATE) => self
                .let_go_meanwhile(id, Code::UNABLE_TO_LOCATE)
                .reply(none),
            Err(code) => Reply {
                payment_id: Some(id),
                ..Reply::of(code, none)
            },
            Ok((_, recorded)) => Reply {
                auth_code: Some(self.assign_auth_code()),
                payment_id: Some(id),
                wait: Wait::of_seq(recorded.wait),
                record_seq: recorded.seq,
                ..Reply::of(Code::APPROVED, none)
            },
        }
    }

    /// Marks payment `id` of merchant `m` as scam by hand; its card goes on
    /// the risk watch list. 25 when there is no such payment for `m`; 96
    /// when the journal fails.
    pub(crate) fn mark_scam(
        &self,
        m: u32,
        id: u64,
        reason: &str,
        fetched: Option<&Fetched>,
        now_ms: u64,
    ) -> Reply {
        let none = [b'0'; 12];
        if let Err(not_here) = self.ensure_payment(id, fetched) {
            return not_here.reply(none);
        }
        let flag = |p: &mut crate::lifecycle::Payment| {
            p.flag(reason, now_ms);
            Ok(p.card_token)
        };
        match self.commit_existing(m, id, flag, |_, _| ChangeParts::default()) {
            Err(code) => self.let_go_meanwhile(id, code).reply(none),
            Ok((token, recorded)) => {
                self.risk.watch(&token);
                metrics::counter!("switch_flagged_payments_total").increment(1);
                Reply {
                    payment_id: Some(id),
                    wait: Wait::of_seq(recorded.wait),
                    record_seq: recorded.seq,
                    ..Reply::of(Code::APPROVED, none)
                }
            }
        }
    }
}
