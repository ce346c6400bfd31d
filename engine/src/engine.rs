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
    /// Next F37 the switch assigns.
    rrn_counter: AtomicU64,
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
        digits::<12>(self.rrn_counter.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn assign_auth_code(&self) -> [u8; 6] {
        digits::<6>(self.auth_counter.fetch_add(1, Ordering::Relaxed))
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
