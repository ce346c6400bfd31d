//! The back office's changes (internal frames): refunds by cart line, and
//! marking a payment as scam by hand and taking the mark off. All go
//! through the same commit as every other change.
//!
//! The watch list holds a card once per flagged payment of it: marking a
//! payment that was not flagged adds one holder, unmarking it lets go of
//! one, and the card leaves the list with its last flagged payment (so
//! unmarking one of two flagged payments of a card leaves the card
//! watched). The list lives in memory; after a restart it is rebuilt from
//! the flagged payments memory holds (`Engine::rewatch_flagged`).

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
        {
            let dir = self.dir();
            let Some(merchant) = dir.merchant(m) else {
                return Reply::of(Code::INVALID_MERCHANT, none);
            };
            if !merchant.enabled {
                return Reply::of(Code::INVALID_MERCHANT, none);
            }
            if !merchant.refunds_allowed {
                return Reply::of(Code::NOT_PERMITTED_TERMINAL, none);
            }
        }
        if let Err(not_here) = self.ensure_payment(id, fetched) {
            return not_here.reply(none);
        }
        let committed = self.commit_existing(
            m,
            id,
            |p| {
                self.terminal_refunds(p)?;
                p.refund_lines(lines, now_ms)
            },
            |_, _| ChangeParts::default(),
        );
        match committed {
            Err(Code::UNABLE_TO_LOCATE) => self
                .let_go_meanwhile(id, Code::UNABLE_TO_LOCATE)
                .reply(none),
            Err(code) => {
                self.record_refused_lines(m, id, lines, code, now_ms);
                Reply {
                    payment_id: Some(id),
                    ..Reply::of(code, none)
                }
            }
            Ok((_, recorded)) => Reply {
                auth_code: Some(self.assign_auth_code()),
                payment_id: Some(id),
                wait: Wait::of_seq(recorded.wait),
                record_seq: recorded.seq,
                ..Reply::of(Code::APPROVED, none)
            },
        }
    }

    /// A refund by cart lines the lifecycle refused (12, 13) written into
    /// the payment's history as a refused refund of the lines' total, as
    /// `follow_up`'s refusals are (bounded, the answer unchanged).
    fn record_refused_lines(
        &self,
        m: u32,
        id: u64,
        lines: &[LineRefund<'_>],
        code: Code,
        now_ms: u64,
    ) {
        if code != Code::INVALID_TRANSACTION && code != Code::INVALID_AMOUNT {
            return;
        }
        let total_minor = lines.iter().fold(0u64, |t, l| {
            t.saturating_add(u64::from(l.quantity).saturating_mul(l.unit_price_minor))
        });
        let refused = |p: &mut crate::lifecycle::Payment| {
            let op = crate::lifecycle::Operation::Refund;
            if p.record_refused(op, total_minor, now_ms, code) {
                Ok(())
            } else {
                Err(code)
            }
        };
        let _ = self.commit_existing(m, id, refused, |_, _| ChangeParts::default());
    }

    /// 58 unless payment `p`'s terminal transacts and may refund (its
    /// setting, else its merchant's).
    fn terminal_refunds(&self, p: &crate::lifecycle::Payment) -> Result<(), Code> {
        let dir = self.dir();
        let allowed = dir
            .terminal(&p.terminal)
            .filter(|t| t.merchant == p.merchant && t.transacts())
            .zip(dir.merchant(p.merchant))
            .is_some_and(|(t, m)| t.refunds.unwrap_or(m.refunds_allowed));
        if allowed {
            Ok(())
        } else {
            Err(Code::NOT_PERMITTED_TERMINAL)
        }
    }

    /// Marks payment `id` of merchant `m` as scam by hand; its card goes on
    /// the risk watch list (once per payment). 25 when there is no such
    /// payment for `m`; 96 when the journal fails.
    pub(crate) fn mark_scam(
        &self,
        m: u32,
        id: u64,
        reason: &str,
        who: Who<'_>,
        fetched: Option<&Fetched>,
        now_ms: u64,
    ) -> Reply {
        let none = [b'0'; 12];
        if let Err(not_here) = self.ensure_payment(id, fetched) {
            return not_here.reply(none);
        }
        let flag = |p: &mut crate::lifecycle::Payment| {
            let newly = p.flag_by(reason, who.by, who.note, now_ms);
            Ok((p.card_token, newly))
        };
        match self.commit_existing(m, id, flag, |_, _| ChangeParts::default()) {
            Err(code) => self.let_go_meanwhile(id, code).reply(none),
            Ok(((token, newly), recorded)) => {
                // Cluster mode: the card's counting node watches it (the
                // shell asked it before this mark).
                if newly && !self.card_counted_elsewhere {
                    self.risk.watch(&token);
                }
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

/// Who marks a payment as scam by hand, and what they said.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Who<'a> {
    /// The internal-frame client id, or the operator.
    pub(crate) by: &'a str,
    /// Their reason, kept with the payment.
    pub(crate) note: Option<&'a str>,
}

impl Engine {
    /// Takes the scam flag off payment `id` of merchant `m` by hand: who
    /// and why are kept with the payment, the history gets an `unflag`
    /// entry, and the card lets go of its place on the watch list (it
    /// leaves when no other flagged payment holds it). 25 when there is no
    /// such payment for `m`; 12 when it is not flagged; 96 when the
    /// journal fails.
    pub(crate) fn unmark_scam(
        &self,
        m: u32,
        id: u64,
        by: &str,
        reason: &str,
        fetched: Option<&Fetched>,
        now_ms: u64,
    ) -> Reply {
        let none = [b'0'; 12];
        if let Err(not_here) = self.ensure_payment(id, fetched) {
            return not_here.reply(none);
        }
        let unflag =
            |p: &mut crate::lifecycle::Payment| p.unflag(by, reason, now_ms).map(|()| p.card_token);
        match self.commit_existing(m, id, unflag, |_, _| ChangeParts::default()) {
            Err(Code::INVALID_TRANSACTION) => Reply {
                payment_id: Some(id),
                ..Reply::of(Code::INVALID_TRANSACTION, none)
            },
            Err(code) => self.let_go_meanwhile(id, code).reply(none),
            Ok((token, recorded)) => {
                // Cluster mode: the shell asks the card's counting node
                // once this change is committed.
                if !self.card_counted_elsewhere {
                    self.risk.unwatch(&token);
                }
                metrics::counter!("switch_unflagged_payments_total").increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::tests::payment;
    use crate::lifecycle::{Kind, Operation};

    #[test]
    fn unmarking_lets_go_of_the_watch_list_once_per_flagged_payment() {
        let e = crate::testing::engine(1_795_434_550_000);
        let mut first = payment(Kind::Sale, 100);
        let mut second = first.clone();
        second.id = 2;
        first.card_token.0[0] = 7;
        second.card_token.0[0] = 7;
        let token = first.card_token;
        e.state.insert(first, None, None, |_| ()).expect("room");
        e.state.insert(second, None, None, |_| ()).expect("room");
        let who = Who {
            by: "AB-0000-0001",
            note: Some("chargeback"),
        };
        for id in [1, 2, 1] {
            assert_eq!(
                e.mark_scam(0, id, "manual", who, None, 5).code,
                Code::APPROVED
            );
        }
        assert!(e.risk.watched(&token));
        let unmark = |id| {
            e.unmark_scam(0, id, "AB-0000-0002", "verified", None, 6)
                .code
        };
        assert_eq!(unmark(1), Code::APPROVED);
        assert!(e.risk.watched(&token), "payment 2 is still flagged");
        assert_eq!(unmark(1), Code::INVALID_TRANSACTION, "not flagged any more");
        assert_eq!(unmark(2), Code::APPROVED);
        assert!(!e.risk.watched(&token), "no flagged payment holds the card");
        let missing = e.unmark_scam(0, 3, "AB-0000-0002", "verified", None, 6);
        assert_eq!(
            missing.wait,
            Wait::Archive(crate::command::Fetch::Payment(3)),
            "not in memory: the archive is asked"
        );
        let p = e.state.with_payment(1, |p| p.clone()).expect("in memory");
        assert!(!p.scam);
        let notes = p.more.flag_notes.as_deref().expect("notes");
        assert_eq!(notes.flagged_by.as_deref(), Some("AB-0000-0001"));
        assert_eq!(notes.unflag_reason.as_deref(), Some("verified"));
        assert_eq!(p.history.last().map(|a| a.op), Some(Operation::Unflag));
    }

    #[test]
    fn in_cluster_mode_the_cards_counting_node_watches_from_its_records() {
        let mut e = crate::testing::engine(1_795_434_550_000);
        e.count_cards_elsewhere();
        let mut p = payment(Kind::Sale, 100);
        p.card_token.0[0] = 5;
        let token = p.card_token;
        e.state.insert(p, None, None, |_| ()).expect("room");
        let who = Who {
            by: "AB-0000-0001",
            note: None,
        };
        assert_eq!(
            e.mark_scam(0, 1, "manual", who, None, 5).code,
            Code::APPROVED
        );
        assert!(
            !e.risk.watched(&token),
            "the payment's node does not watch: the card's node does"
        );
        // The card's node: two marks (two payments), one unmark.
        let card = crate::testing::engine(1_795_434_550_000);
        let watch = |on| card.apply(crate::Command::Watch { token: token.0, on }, 6);
        for on in [true, true, false] {
            assert_eq!(watch(on).code, Code::APPROVED);
        }
        assert!(card.risk.watched(&token), "one holder is left");
        // Its next counting node, after counting elsewhere before: the
        // shard's cards forgotten, then the records replayed.
        let next = crate::testing::engine(1_795_434_560_000);
        for _ in 0..3 {
            next.replay_watch(&token.0, true);
        }
        assert_eq!(next.reset_velocity_of(&|t| t[0] == 5), 0, "no counts");
        assert!(
            !next.risk.watched(&token),
            "forgotten, whatever its holders"
        );
        for on in [true, true, false] {
            let payload = crate::velocity::encode_watch(&token.0, on);
            next.replay_record(1, crate::velocity::RECORD_WATCH, &payload)
                .expect("replayed");
        }
        assert!(next.risk.watched(&token));
        next.replay_watch(&token.0, false);
        assert!(!next.risk.watched(&token), "exactly one holder was left");
    }

    #[test]
    fn a_restart_watches_the_cards_of_payments_marked_by_hand_again() {
        let e = crate::testing::engine(1_795_434_550_000);
        let mut marked = payment(Kind::Sale, 100);
        marked.card_token.0[0] = 9;
        let token = marked.card_token;
        let mut by_rule = payment(Kind::Sale, 100);
        by_rule.id = 2;
        by_rule.card_token.0[0] = 8;
        e.state.insert(marked, None, None, |_| ()).expect("room");
        e.state.insert(by_rule, None, None, |_| ()).expect("room");
        let who = Who {
            by: "AB-0000-0001",
            note: None,
        };
        assert_eq!(
            e.mark_scam(0, 1, "manual", who, None, 5).code,
            Code::APPROVED
        );
        e.state.with_payment(2, |p| p.flag("velocity", 5));
        // A new life: the payments come back, the watch list does not.
        let again = crate::testing::engine(1_795_434_560_000);
        e.state.for_each(|p| {
            again
                .state
                .insert(p.clone(), None, None, |_| ())
                .expect("room");
        });
        assert!(!again.risk.watched(&token));
        assert_eq!(again.rewatch_flagged(), 1, "only the one marked by hand");
        assert!(again.risk.watched(&token));
        let mut other = token;
        other.0[0] = 8;
        assert!(!again.risk.watched(&other), "a rule's flag watches nothing");
        let unmark = again.unmark_scam(0, 1, "AB-0000-0002", "verified", None, 6);
        assert_eq!(unmark.code, Code::APPROVED);
        assert!(!again.risk.watched(&token), "the hold it rebuilt is let go");
    }
}
