//! The engine: its tables, the one mutating door ([`Engine::apply`]) and
//! the one read door ([`Engine::query`]). Each command's stages are in
//! their own module (`authorize`, `follow_up`, `backoffice`, `timers`);
//! every change of an existing payment goes through
//! [`crate::commit::commit_update`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use arc_swap::ArcSwap;
use codecs::card::TokenKey;

use crate::code::Code;
use crate::command::{
    Command, Fetch, Fetched, Fill, MerchantRef, Query, QueryReply, Reply, Stats, Wait,
};
use crate::commit::{Epochs, Journal, NoJournal};
use crate::directory::{Directory, DirectoryError};
use crate::holds::Holds;
use crate::idempotency::{Answer, Idempotency, Seen};
use crate::merchant::Settings;
use crate::risk::RiskStage;
use crate::state::State;

/// The deterministic core, shared by every connection: no I/O, no clock;
/// every change through [`Engine::apply`], every read through
/// [`Engine::query`].
pub struct Engine {
    /// Merchants and terminals, replaced whole at run time
    /// ([`Engine::replace_directory`]); read once per message.
    directory: ArcSwap<Directory>,
    /// Payments.
    pub(crate) state: State,
    /// Answers for repeats.
    pub(crate) idempotency: Idempotency,
    /// Risk rules.
    pub(crate) risk: RiskStage,
    /// Where records go.
    pub(crate) journal: Box<dyn Journal>,
    /// Key for card tokens.
    pub(crate) token_key: TokenKey,
    /// Next F37 the switch assigns; in cluster mode, the next number of
    /// the life's block, F37 and F38 alike ([`Engine::use_number_block`]).
    rrn_counter: AtomicU64,
    /// Cluster mode's number block (0: single-node mode, where F37 and F38
    /// come from their clock-seeded counters).
    number_block: u64,
    /// Next F38 the switch assigns.
    auth_counter: AtomicU64,
    /// Guards changes so snapshots see every journaled one.
    pub(crate) epochs: Epochs,
    /// Holds by due time; one timer pass at a time.
    pub(crate) timers: Mutex<Holds>,
    /// `limits.idempotency_window_s`, ms.
    pub(crate) idempotency_window_ms: u64,
    /// Where PANs go.
    pub(crate) routing: crate::upstream::Routing,
    /// Stand-in rules.
    pub(crate) stand_in: crate::upstream::StandIn,
    /// Forwards waiting for an issuer, and the SAF.
    pub(crate) upstream: crate::upstream::UpstreamState,
    /// Cards are counted by another node (cluster mode): an authorization
    /// asks ([`Wait::Velocity`]) before it is decided. False on one node.
    pub(crate) card_counted_elsewhere: bool,
}

/// Cluster mode's number blocks, at most: a block is 7 digits of F37.
/// (`cluster_id_block` values fit below it: payment ids already stop at
/// 2^23 blocks.)
pub const NUMBER_BLOCKS_MAX: u64 = 10_000_000;
/// Numbers one node life hands out in cluster mode before its F37 + F38
/// pairs repeat (5 digits of F37 above the 6 of F38): over 23 days at
/// 50,000 a second. Reaching it is logged and counted
/// (`switch_numbers_wrapped_total`); a restart takes a fresh block.
pub const NUMBERS_PER_BLOCK: u64 = 100_000_000_000;

/// Fixed-width decimal digits of `v` (lowest `N` digits).
pub(crate) fn digits<const N: usize>(mut v: u64) -> [u8; N] {
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out
}

impl Engine {
    /// An engine with no payments, evaluating risk with `policy`, and no
    /// journal until [`Engine::set_journal`]. `now_ms` seeds the F37 and
    /// F38 counters, so numbers differ across restarts (F37s unless more
    /// than 10,000 were handed out per millisecond of the previous life).
    pub fn new(settings: Settings, token_key: TokenKey, policy: risk::Policy, now_ms: u64) -> Self {
        // The shell validated the configuration (F42s and F41s unique,
        // within the limits); should it not have, the engine serves no
        // merchant rather than a wrong one, and says so.
        let directory = Directory::new(settings.merchants, &[]).unwrap_or_else(|e| {
            tracing::error!(error = %e, "merchants refused; serving none");
            Directory::default()
        });
        Engine {
            directory: ArcSwap::from_pointee(directory),
            state: State::new(settings.payments_max),
            idempotency: Idempotency::new(settings.idempotency_entries_max, now_ms),
            risk: RiskStage::new(policy),
            journal: Box::new(NoJournal),
            // Seeded by the millisecond, 10,000 numbers apart: a switch
            // restarted within the same second (kill -9, then start) used
            // to hand out the F37s of its previous life again, so two
            // payments shared an F37 and F38 (found by the crash rounds of
            // tests/crash_archive.rs). It repeats after 27.7 hours.
            rrn_counter: AtomicU64::new((now_ms % 100_000_000) * 10_000),
            auth_counter: AtomicU64::new(now_ms % 1_000_000),
            number_block: 0,
            token_key,
            epochs: Epochs::default(),
            timers: Mutex::new(Holds::default()),
            idempotency_window_ms: settings.idempotency_window_ms,
            upstream: crate::upstream::UpstreamState::new(
                settings.forwards_max,
                settings.saf_max,
                now_ms,
            ),
            routing: settings.routing,
            stand_in: settings.stand_in,
            card_counted_elsewhere: false,
        }
    }

    /// Cluster mode: every authorization's card is counted by the node
    /// that counts it ([`Wait::Velocity`]), never here on the way.
    pub fn count_cards_elsewhere(&mut self) {
        self.card_counted_elsewhere = true;
    }

    /// Cluster mode: F37 and F38 from now on come from `block`, a number
    /// no other node life was given (PostgreSQL's `cluster_id_block`
    /// sequence), so no two nodes, and no two lives of one, hand out the
    /// same F37 + F38, whatever their clocks: number n of the life is F37
    /// = `block` (7 digits) then n / 10^6 (5 digits), F38 = n mod 10^6.
    /// A terminal's own F37 is kept, as in single-node mode.
    ///
    /// # Panics
    /// When `block` is 0 or not below [`NUMBER_BLOCKS_MAX`] (the caller
    /// checks).
    pub fn use_number_block(&mut self, block: u64) {
        assert!(
            (1..NUMBER_BLOCKS_MAX).contains(&block),
            "number block {block} out of range"
        );
        self.number_block = block;
        self.rrn_counter = AtomicU64::new(0);
    }

    /// Sends every later change's record to `journal` (after recovery).
    pub fn set_journal(&mut self, journal: Box<dyn Journal>) {
        self.journal = journal;
    }

    /// Swaps in a new risk policy; velocity counters and the watch list stay.
    pub fn replace_policy(&self, policy: risk::Policy) {
        self.risk.replace(policy);
    }

    /// Swaps in a new directory of merchants and terminals: messages
    /// decided from now on see it, those being decided finish with the
    /// old one. Every merchant keeps its index (they are stored in
    /// payments). Holds already placed keep the end they were given.
    ///
    /// # Errors
    /// When `directory` does not keep every merchant at its index
    /// ([`Directory::follows`]); the old directory stays.
    pub fn replace_directory(&self, directory: Directory) -> Result<(), DirectoryError> {
        directory.follows(&self.directory.load())?;
        self.directory.store(std::sync::Arc::new(directory));
        Ok(())
    }

    /// The directory as it stands (one cheap load, no lock).
    pub(crate) fn dir(&self) -> arc_swap::Guard<std::sync::Arc<Directory>> {
        self.directory.load()
    }

    /// The one mutating door: applies `command` at `now_ms`. Every change
    /// that is recorded runs inside the epoch guard that snapshots rely on
    /// (a timer pass takes it per hold it ends, so a snapshot never waits
    /// for a whole pass; retiring forgets, it records nothing).
    pub fn apply(&self, command: Command<'_>, now_ms: u64) -> Reply {
        let _epoch = match command {
            Command::Tick { .. } | Command::Retire { .. } | Command::EndHolds { .. } => None,
            _ => Some(self.epochs.enter()),
        };
        match command {
            Command::Message(req) => self.message(&req, None, now_ms),
            Command::Resume { request, fetched } => self.message(&request, Some(fetched), now_ms),
            Command::Refuse { code, rrn } => {
                Reply::of(code, rrn.unwrap_or_else(|| self.assign_rrn()))
            }
            Command::RefundLines {
                merchant,
                payment,
                lines,
                fetched,
            } => self.refund_lines(merchant, payment, lines, fetched, now_ms),
            Command::MarkScam {
                merchant,
                payment,
                reason,
                by,
                note,
                fetched,
            } => {
                let who = crate::backoffice::Who { by, note };
                self.mark_scam(merchant, payment, reason, who, fetched, now_ms)
            }
            Command::UnmarkScam {
                merchant,
                payment,
                by,
                reason,
                fetched,
            } => self.unmark_scam(merchant, payment, by, reason, fetched, now_ms),
            Command::Tick { archived_seq } => self.tick(now_ms, archived_seq),
            Command::EndHolds { payments } => self.end_archived_holds(payments, now_ms),
            Command::Retire {
                cutoff_ms,
                archived_seq,
            } => self.retire(cutoff_ms, archived_seq),
            Command::Upstream { forward, outcome } => self.upstream_ended(forward, outcome, now_ms),
            Command::SafDone { id } => self.saf_done(id),
            Command::ReverseOrphans => self.reverse_orphans(now_ms),
            Command::Velocity(ask) => self.count_velocity(&ask, now_ms),
            Command::Watch { token, on } => self.watch_card(token, on),
        }
    }

    /// The one read door.
    pub fn query(&self, query: Query<'_>) -> QueryReply {
        match query {
            Query::Merchant(id) => QueryReply::Merchant(
                self.merchant_ref(
                    id.try_into()
                        .ok()
                        .and_then(|mid: [u8; 15]| self.dir().merchant_index(&mid)),
                ),
            ),
            Query::MerchantAt(index) => QueryReply::Merchant(self.merchant_ref(Some(index))),
            Query::TerminalMerchant(tid) => QueryReply::Merchant(
                self.merchant_ref(self.dir().terminal(&tid).map(|t| t.merchant)),
            ),
            Query::Directory => QueryReply::Directory(self.directory.load_full()),
            Query::Payment { scope, id } => {
                QueryReply::Payment(self.state.get(id).filter(|p| scope.contains(&p.merchant)))
            }
            Query::List {
                scope,
                filter,
                before_id,
                limit,
            } => {
                let (rows, more) = self.list_page(scope, &filter, before_id, limit);
                QueryReply::Page { rows, more }
            }
            Query::Fill => QueryReply::Fill(Fill {
                payments: self.state.len(),
                payments_max: self.state.len_max(),
                idempotency_entries: self.idempotency.len(),
                idempotency_entries_max: self.idempotency.len_max(),
                forwards: self.upstream.forwards_len(),
                forwards_max: self.upstream.forwards_max,
                saf: self.upstream.saf_len(),
                saf_max: self.upstream.saf_max,
            }),
            Query::Saf { upstream, limit } => {
                QueryReply::Saf(self.upstream.saf_list(upstream, limit))
            }
            Query::SafDepths => QueryReply::SafDepths(self.upstream.saf_depths()),
            Query::Stats => QueryReply::Stats(Stats {
                payments_by_status: self.state.count_by_status(),
                payments: self.state.len(),
                idempotency_entries: self.idempotency.len(),
                velocity_keys: self.risk.velocity_keys(),
            }),
        }
    }

    fn merchant_ref(&self, index: Option<u32>) -> Option<MerchantRef> {
        let index = index?;
        let m = self.dir().merchant(index)?.id;
        Some(MerchantRef { index, id: m })
    }

    /// A payment message: its answer again when it is a repeat (from
    /// memory, or from the archive when memory may have let it go), else
    /// decided and remembered. `fetched`: what the archive returned for
    /// this message's earlier [`Wait::Archive`] replies.
    fn message(
        &self,
        req: &crate::command::Request<'_>,
        fetched: Option<&Fetched>,
        now_ms: u64,
    ) -> Reply {
        let Some(key) = req.key else {
            return self.decide(req, fetched, now_ms);
        };
        let once = self
            .idempotency
            .answer_once(&key, req.repeat, req.content_crc, || {
                self.answer_new(req, key, fetched, now_ms)
            });
        match once {
            Ok(Ok(reply)) => reply,
            Ok(Err(seen)) | Err(seen) => self.answer_seen(req, seen),
        }
    }

    /// A message memory has no answer for: its answer from the archive (as
    /// [`Seen`], to be stored), or a lookup in the archive first, or
    /// decided; with the answer to remember.
    fn answer_new(
        &self,
        req: &crate::command::Request<'_>,
        key: crate::idempotency::MessageKey,
        fetched: Option<&Fetched>,
        now_ms: u64,
    ) -> (Result<Reply, Seen>, Option<Answer>) {
        match fetched.and_then(|f| f.answer) {
            None if self.idempotency.may_be_archived(&key, now_ms) => {
                metrics::counter!("switch_archive_lookups_total", "what" => "answer").increment(1);
                return (Ok(Reply::fetch(Fetch::Answer(key), self.rrn_of(req))), None);
            }
            Some(Some(a)) if now_ms.saturating_sub(a.at_ms) < self.idempotency_window_ms => {
                return (
                    Err(crate::idempotency::judge(a, req.repeat, req.content_crc)),
                    Some(a),
                );
            }
            _ => {}
        }
        if let Some(forward) = self.upstream.pending_for(&key) {
            // Still with its issuer: wait for that answer, never a second
            // forward.
            return (
                Ok(Reply {
                    wait: Wait::Joined(forward),
                    ..Reply::of(Code::UNAVAILABLE, self.rrn_of(req))
                }),
                None,
            );
        }
        if let Err(code) = self.idempotency.room() {
            return (Ok(self.refusal(req, code)), None);
        }
        let out = self.decide(req, fetched, now_ms);
        if matches!(
            out.wait,
            Wait::Archive(_) | Wait::Upstream(_) | Wait::Velocity { .. }
        ) {
            return (Ok(out), None);
        }
        // Cluster mode: a 91 whose change the committer refused (its shard
        // no longer served here, PostgreSQL reconnecting) decided nothing
        // and is not remembered: the shard's owner decides the message, and
        // this node's memory of it would win over the owner's answer once
        // the shard is loaded here again.
        if self.card_counted_elsewhere && out.code == Code::UNAVAILABLE && out.record_seq == 0 {
            return (Ok(out), None);
        }
        let answer = Answer {
            code: out.code,
            rrn: out.rrn,
            auth_code: out.auth_code,
            content_crc: req.content_crc,
            seq: out.record_seq,
            at_ms: now_ms,
        };
        (Ok(out), Some(answer))
    }

    /// The reply to a message memory (or the archive) has answered before:
    /// the same answer, waiting for the same record; 94 for other content
    /// under the same key.
    fn answer_seen(&self, req: &crate::command::Request<'_>, seen: Seen) -> Reply {
        match seen {
            Seen::Again(a) => {
                metrics::counter!("switch_repeats_total").increment(1);
                let wait = if self.journal.answers_wait() {
                    a.seq
                } else {
                    0
                };
                Reply {
                    auth_code: a.auth_code,
                    wait: Wait::of_seq(wait),
                    again: true,
                    ..Reply::of(a.code, a.rrn)
                }
            }
            Seen::Conflict => self.refusal(req, Code::DUPLICATE),
        }
    }

    /// A refusal of `req` with `code`: its F37 or a fresh one.
    pub(crate) fn refusal(&self, req: &crate::command::Request<'_>, code: Code) -> Reply {
        Reply::of(code, self.rrn_of(req))
    }

    /// The request's F37, or a fresh one.
    pub(crate) fn rrn_of(&self, req: &crate::command::Request<'_>) -> [u8; 12] {
        req.rrn.unwrap_or_else(|| self.assign_rrn())
    }

    fn assign_rrn(&self) -> [u8; 12] {
        let n = self.rrn_counter.fetch_add(1, Ordering::Relaxed);
        if self.number_block == 0 {
            return digits::<12>(n);
        }
        self.block_rrn(self.checked_number(n))
    }

    pub(crate) fn assign_auth_code(&self) -> [u8; 6] {
        if self.number_block == 0 {
            return digits::<6>(self.auth_counter.fetch_add(1, Ordering::Relaxed));
        }
        let n = self.rrn_counter.fetch_add(1, Ordering::Relaxed);
        digits::<6>(self.checked_number(n))
    }

    /// F38 (on approval, else spaces) and F37 (the request's, or one the
    /// switch assigns) of a new payment. In cluster mode both come from
    /// one number of the life's block, so the pair is unique.
    pub(crate) fn assign_numbers(
        &self,
        approved: bool,
        req: &crate::command::Request<'_>,
    ) -> ([u8; 6], [u8; 12]) {
        if self.number_block == 0 {
            // Single-node mode, as before: F38, then F37.
            let auth_code = if approved {
                self.assign_auth_code()
            } else {
                [b' '; 6]
            };
            return (auth_code, self.rrn_of(req));
        }
        let n = self.checked_number(self.rrn_counter.fetch_add(1, Ordering::Relaxed));
        let auth_code = if approved { digits::<6>(n) } else { [b' '; 6] };
        (auth_code, req.rrn.unwrap_or_else(|| self.block_rrn(n)))
    }

    /// F37 of number `n` of the life's block.
    fn block_rrn(&self, n: u64) -> [u8; 12] {
        digits::<12>(self.number_block * 100_000 + (n / 1_000_000) % 100_000)
    }

    /// Number `raw` within the block's period, saying so when it starts
    /// again.
    fn checked_number(&self, raw: u64) -> u64 {
        let n = raw % NUMBERS_PER_BLOCK;
        if n == 0 && raw != 0 {
            metrics::counter!("switch_numbers_wrapped_total").increment(1);
            tracing::warn!(
                block = self.number_block,
                "cluster mode: this node life's F37 + F38 numbers start again; restart the node for a fresh block"
            );
        }
        n
    }

    /// One page of payments of any merchant in `merchants` matching
    /// `filter`, newest (highest id) first, with ids below `before_id`;
    /// and whether more follow. Walks every payment, keeping only ids, then
    /// copies the page: for back-office use, not the authorization path.
    fn list_page(
        &self,
        merchants: &[u32],
        filter: &crate::command::ListFilter<'_>,
        before_id: Option<u64>,
        limit: usize,
    ) -> (Vec<crate::lifecycle::Payment>, bool) {
        let before = before_id.unwrap_or(u64::MAX);
        let mut ids = Vec::new();
        self.state.for_each(|p| {
            if p.id < before && merchants.contains(&p.merchant) && filter.matches(p) {
                ids.push(p.id);
            }
        });
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let more = ids.len() > limit;
        let page = ids
            .iter()
            .take(limit)
            .filter_map(|&id| self.state.get(id))
            .collect();
        (page, more)
    }

    /// [`Command::Retire`]: the state lets payments go; the holds of open
    /// pre-authorizations that went leave the timers with them.
    fn retire(&self, cutoff_ms: u64, archived_seq: u64) -> Reply {
        let mut open = Vec::new();
        let count = self.state.retire(cutoff_ms, archived_seq, &mut open);
        if !open.is_empty() {
            let dir = self.dir();
            self.with_timers(|t| {
                for p in &open {
                    // A hold placed before its merchant's hold period
                    // changed is not found here; its timer finds no
                    // payment in memory and does nothing.
                    let due = dir
                        .merchant(p.merchant)
                        .map_or(p.hold_from_ms, |m| m.hold_end(p.hold_from_ms).0);
                    t.due.remove(&(due, p.payment));
                }
            });
        }
        Reply {
            count,
            ..Reply::of(Code::APPROVED, [b'0'; 12])
        }
    }

    /// Runs `f` on the timers, one pass at a time.
    pub(crate) fn with_timers<R>(&self, f: impl FnOnce(&mut Holds) -> R) -> R {
        let mut timers = self.timers.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut timers)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use codecs::card::Pan;
    use codecs::iso8583::datetime::Expiry;
    use proptest::prelude::*;

    use super::{digits, Engine, NUMBERS_PER_BLOCK, NUMBER_BLOCKS_MAX};
    use crate::command::{Channel, Op, Request};
    use crate::idempotency::MessageKey;
    use std::sync::atomic::Ordering;

    /// 2026-11-23T11:49:10Z.
    const NOW_MS: u64 = 1_795_434_550_000;

    /// A sale of STAN `stan` on the demo merchant, F37 absent.
    fn sale(stan: u32) -> Request<'static> {
        Request {
            op: Op::Sale,
            key: Some(MessageKey {
                mti: 200,
                terminal: *b"DEMO0001",
                stan,
                transmission: 1_123_114_959,
            }),
            repeat: false,
            content_crc: stan,
            merchant_id: b"DEMO00000000001",
            terminal_id: *b"DEMO0001",
            pan: Pan::new(b"4111111111111111"),
            expiry: Expiry::parse(b"2812"),
            amount_minor: 1_000,
            currency: 978,
            original: None,
            replacement_minor: None,
            channel: Channel::CardPresent,
            eci: None,
            rrn: None,
            extras: None,
            keep_open: false,
        }
    }

    /// The F37 + F38 of `count` approved sales (each a minute apart, so
    /// velocity never declines).
    fn approvals(e: &Engine, first_stan: u32, count: u32) -> Vec<([u8; 12], [u8; 6])> {
        (0..count)
            .map(|i| {
                let now = NOW_MS + u64::from(i) * 61_000;
                let out = crate::testing::apply_message(e, sale(first_stan + i), now);
                assert!(out.code.approved(), "{:?}", out.code);
                (out.rrn, out.auth_code.expect("F38"))
            })
            .collect()
    }

    /// Single-node mode is unchanged: F38 from the start millisecond mod
    /// 10^6, F37 from it mod 10^8 times 10^4. So two engines started in one
    /// millisecond (two nodes, or a node restarted while its clock stepped
    /// back) hand out the same F37 + F38: what cluster mode must not do.
    #[test]
    fn single_node_numbers_come_from_the_clock_as_before() {
        let (a, b) = (
            crate::testing::engine(NOW_MS),
            crate::testing::engine(NOW_MS),
        );
        let first = approvals(&a, 1, 3);
        assert_eq!(
            first[0],
            (
                digits::<12>((NOW_MS % 100_000_000) * 10_000),
                digits::<6>(NOW_MS % 1_000_000)
            )
        );
        assert_eq!(first, approvals(&b, 1, 3));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Cluster mode: node lives with distinct number blocks (as
        /// PostgreSQL's sequence gives them), all started in one
        /// millisecond and from any point of the block's period (so past
        /// F38's 10^6 and the wrap), never hand out one F37 + F38 twice;
        /// each F37 starts with its life's block.
        #[test]
        fn cluster_pairs_never_repeat_across_lives(
            blocks in proptest::collection::hash_set(1..NUMBER_BLOCKS_MAX, 2..4),
            start in prop_oneof![
                Just(0_u64),
                Just(999_990_u64),
                Just(NUMBERS_PER_BLOCK - 10),
                0..NUMBERS_PER_BLOCK,
            ],
            count in 1_u32..40,
        ) {
            let mut seen = HashSet::new();
            for block in blocks {
                let mut e = crate::testing::engine(NOW_MS);
                e.use_number_block(block);
                e.rrn_counter.store(start, Ordering::Relaxed);
                for (rrn, auth) in approvals(&e, 1, count) {
                    prop_assert_eq!(&rrn[..7], &digits::<7>(block)[..]);
                    prop_assert!(seen.insert((rrn, auth)), "{:?} {:?} twice", rrn, auth);
                }
            }
        }
    }

    /// Within one life the pair is the life's number: consecutive numbers
    /// differ in F38, and F37 moves on every 10^6 numbers.
    #[test]
    fn one_life_counts_through_f38_then_f37() {
        let mut e = crate::testing::engine(NOW_MS);
        e.use_number_block(42);
        e.rrn_counter.store(1_999_999, Ordering::Relaxed);
        let got = approvals(&e, 1, 2);
        assert_eq!(got[0], (*b"000004200001", *b"999999"));
        assert_eq!(got[1], (*b"000004200002", *b"000000"));
    }
}
