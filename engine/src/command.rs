//! What the engine is asked and what it answers: the one mutating door
//! ([`Command`] → [`Reply`]) and the one read door ([`Query`] →
//! [`QueryReply`]). Every edge (ISO 8583, internal frames, the timers)
//! speaks to the engine in these types only.
//!
//! A request that must wait for something outside the engine says so in
//! [`Reply::wait`]: the journal's durable sequence, or a lookup in the
//! archive ([`Wait::Archive`]). What the archive returned comes back as
//! [`Command::Resume`] (or in the `fetched` field of the back office's
//! commands), and its [`Reply`] answers the request: no new door. An
//! issuer's answer will come back the same way.

use codecs::card::Pan;
use codecs::iso8583::datetime::Expiry;
use codecs::iso8583::f48::Eci;
use codecs::iso8583::f90::OriginalData;

use crate::code::Code;
use crate::idempotency::{Answer, MessageKey};
use crate::lifecycle::{Extras, LineRefund, Operation, Payment, Status};
use crate::state::{OriginalKey, Target};

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
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
    pub fn operation(self) -> Operation {
        match self {
            Op::PreAuth => Operation::PreAuth,
            Op::Sale => Operation::Sale,
            Op::Refund => Operation::Refund,
            Op::Capture => Operation::Capture,
            Op::Reversal => Operation::Reversal,
        }
    }

    /// Whether it starts a payment (and so is an authorization attempt).
    pub fn authorizes(self) -> bool {
        matches!(self, Op::PreAuth | Op::Sale)
    }
}

/// How the card was presented (F25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// 00: normal presentment.
    CardPresent,
    /// 08: mail or telephone order.
    MoTo,
    /// 59: e-commerce.
    Ecommerce,
    /// Anything else.
    Other,
}

impl Channel {
    /// F25's value for it (99 for anything else).
    pub fn code(self) -> u8 {
        match self {
            Channel::CardPresent => 0,
            Channel::MoTo => 8,
            Channel::Ecommerce => 59,
            Channel::Other => 99,
        }
    }
}

/// How a follow-up message names its original.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginalRef {
    /// F90: original MTI, STAN and F7.
    Message(OriginalData),
    /// The original's F37 and F38.
    Rrn([u8; 12], [u8; 6]),
    /// A payment id (internal frames), within the request's merchant.
    Payment(u64),
}

/// A validated request, borrowing card data from the frame buffer.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// What is asked.
    pub op: Op,
    /// Idempotency key, when the message has one.
    pub key: Option<MessageKey>,
    /// Whether the MTI marks a repeat.
    pub repeat: bool,
    /// Checksum of the content, to tell duplicates from conflicts.
    pub content_crc: u32,
    /// F42.
    pub merchant_id: &'a [u8],
    /// F41.
    pub terminal_id: [u8; 8],
    /// The card, for authorizations.
    pub pan: Option<Pan<'a>>,
    /// Card expiry, for authorizations.
    pub expiry: Option<Expiry>,
    /// F4, minor units.
    pub amount_minor: u64,
    /// F49.
    pub currency: u16,
    /// The original, for captures, refunds and reversals; for a
    /// pre-authorization, the one it raises (an incremental authorization).
    pub original: Option<OriginalRef>,
    /// F95's replacement amount, for partial reversals.
    pub replacement_minor: Option<u64>,
    /// F25.
    pub channel: Channel,
    /// F48.42.
    pub eci: Option<Eci>,
    /// F37 of the request, if it has one.
    pub rrn: Option<[u8; 12]>,
    /// MO/TO details to keep with a new payment (internal frames); on a
    /// capture, the cart it captures (replacing the payment's).
    pub extras: Option<&'a Extras>,
    /// A capture that keeps the rest of the hold open for further
    /// captures (F48.22 = 1, or the Capture frame's not-final flag);
    /// false for every other message.
    pub keep_open: bool,
}

/// A change asked of the engine, through [`crate::Engine::apply`].
#[derive(Clone, Copy, Debug)]
pub enum Command<'a> {
    /// A payment message: pre-authorization, sale, capture, refund by
    /// amount, reversal or cancel (ISO 8583, or MO/TO and back office).
    Message(Request<'a>),
    /// A message refused before processing (a format error): answered
    /// with `code` and its F37, or a fresh one.
    Refuse {
        /// The response code.
        code: Code,
        /// The request's F37, when it has one.
        rrn: Option<[u8; 12]>,
    },
    /// A payment message again, with what the archive returned for the
    /// [`Wait::Archive`] its last reply asked for (and for earlier ones).
    Resume {
        /// The message, as first applied.
        request: Request<'a>,
        /// What the archive had.
        fetched: &'a Fetched,
    },
    /// A refund of cart lines of a payment of `merchant`.
    RefundLines {
        /// The merchant the caller acts for.
        merchant: u32,
        /// The payment.
        payment: u64,
        /// The lines and quantities to refund.
        lines: &'a [LineRefund<'a>],
        /// What the archive had, when the last reply asked.
        fetched: Option<&'a Fetched>,
    },
    /// Marks a payment of `merchant` as scam by hand; its card goes on the
    /// risk watch list.
    MarkScam {
        /// The merchant the caller acts for.
        merchant: u32,
        /// The payment.
        payment: u64,
        /// The rule name recorded with the flag.
        reason: &'a str,
        /// Who marks it: the internal-frame client id, or the operator.
        by: &'a str,
        /// Why, as they said, kept with the payment.
        note: Option<&'a str>,
        /// What the archive had, when the last reply asked.
        fetched: Option<&'a Fetched>,
    },
    /// Takes the scam flag off a payment of `merchant` by hand, with who
    /// and why; its card leaves the risk watch list unless another flagged
    /// payment of the card still holds it. 12 when it is not flagged.
    UnmarkScam {
        /// The merchant the caller acts for.
        merchant: u32,
        /// The payment.
        payment: u64,
        /// Who takes the flag off.
        by: &'a str,
        /// Why.
        reason: &'a str,
        /// What the archive had, when the last reply asked.
        fetched: Option<&'a Fetched>,
    },
    /// The timers: ends the holds due by now (expiry or auto-capture) and
    /// lets remembered answers go when their window has passed or memory
    /// is full, once the archive holds them.
    Tick {
        /// The archive's watermark: every journal record up to it is in
        /// the archive.
        archived_seq: u64,
    },
    /// Ends the holds of open pre-authorizations the archive holds (memory
    /// let them go) whose hold has ended: read by the shell from the
    /// archive, brought back and expired or captured as the timers would.
    EndHolds {
        /// The payments, as the archive has them.
        payments: &'a [Payment],
    },
    /// Lets payments go from memory: final ones whose last change was
    /// before `cutoff_ms`; while memory is nearly full, any final one and
    /// the oldest open pre-authorizations (their holds are then ended from
    /// the archive: [`Command::EndHolds`]); each once the archive holds its
    /// last change. Bounded per call; run it off the request path.
    Retire {
        /// Last-change time before which final payments go.
        cutoff_ms: u64,
        /// The archive's watermark.
        archived_seq: u64,
    },
    /// How a forwarded authorization ([`Wait::Upstream`]) ended: the
    /// issuer's answer, a timeout or never sent. Makes the payment with
    /// the issuer's decision (or 91, or a stand-in approval), queues the
    /// reversal of a timed-out request and the advice of a stand-in in the
    /// SAF, and answers the terminal's message.
    Upstream {
        /// The pending forward.
        forward: u64,
        /// What happened.
        outcome: crate::upstream::Outcome,
    },
    /// A SAF entry is done: the issuer answered it, it expired, or an
    /// operator dropped it.
    SafDone {
        /// The entry.
        id: u64,
    },
    /// After recovery: every forward still pending was in flight at a
    /// crash (its issuer answer was never journaled) and gets a reversal
    /// in the SAF; `count` says how many.
    ReverseOrphans,
    /// Counts a card's authorization attempt here, for the node deciding
    /// the payment ([`Wait::Velocity`], cluster mode): the reply carries
    /// the verdict and waits for the attempt's record ([`Wait::Counted`]).
    Velocity(VelocityAsk),
    /// Puts a card on the watch list here (`on`), or lets one holder of
    /// its place go, for the node where a payment of it was marked or
    /// unmarked as scam by hand (cluster mode: this node counts the card);
    /// the change is recorded ([`crate::velocity::RECORD_WATCH`]) and the
    /// reply waits for it.
    Watch {
        /// The card's token.
        token: [u8; 32],
        /// On the list, or one holder less.
        on: bool,
    },
}

/// What the engine needs from the archive to go on with a request: memory
/// no longer holds it, or may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// The answer given to this message, if any.
    Answer(MessageKey),
    /// What an original message (F90) refers to, and its payment.
    Original(OriginalKey),
    /// The payment of `merchant` approved with F37 and F38.
    Rrn {
        /// Merchant index.
        merchant: u32,
        /// F37.
        rrn: [u8; 12],
        /// F38.
        auth_code: [u8; 6],
    },
    /// Payment `id` (an index entry or a back-office request names it).
    Payment(u64),
}

/// What the archive returned, accumulated over the lookups one request
/// asked for. `None`: not asked; `Some(None)`: asked, and it had nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The answer given to the message.
    pub answer: Option<Option<Answer>>,
    /// The original's target and payment (for [`Fetch::Original`],
    /// [`Fetch::Rrn`] and [`Fetch::Payment`]).
    pub original: Option<Option<(Target, Payment)>>,
    /// The archive's watermark read before the lookup: the copy read holds
    /// every change up to it. A payment memory let go after a newer change
    /// (above it) is read again, so a stale copy is never brought back.
    pub archived_seq: u64,
    /// The card's velocity as the node counting it found it, for a
    /// [`Wait::Velocity`].
    pub velocity: Option<risk::CardVerdict>,
}

/// What an answer waits for before it may leave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Nothing: answer at once.
    #[default]
    Nothing,
    /// The journal's durable sequence reaching this record.
    Journal(u64),
    /// A lookup in the archive: nothing was decided; apply the request
    /// again with what it returned ([`Command::Resume`]). An edge that
    /// cannot ask answers with the reply's code (96).
    Archive(Fetch),
    /// Send to an issuer once the journal's durable sequence reaches the
    /// reply's `record_seq` (the forward is journaled before it leaves, so
    /// a crash cannot orphan it), then [`Command::Upstream`] with how it
    /// ended. An edge that cannot forward answers [`Command::Upstream`]
    /// with [`crate::upstream::Outcome::NotSent`].
    Upstream(crate::upstream::ForwardRef),
    /// A repeat of a message whose forward is still waiting for its
    /// issuer: wait for that forward to end, then apply the message again
    /// (it is then answered like any repeat). Never a second forward.
    Joined(u64),
    /// The card is counted by another node (cluster mode): nothing was
    /// decided; ask it ([`Command::Velocity`] there, with
    /// [`VelocityAsk::new`]) and apply the request again
    /// with its verdict in [`Fetched::velocity`] ([`Command::Resume`]). An
    /// edge that cannot ask answers with the reply's code (91).
    Velocity {
        /// The card's keyed token.
        token: [u8; 32],
        /// A rule before velocity declined the attempt.
        declined_before: bool,
    },
    /// The reply to [`Command::Velocity`]: the card was counted, and its
    /// verdict holds once the journal's durable sequence reaches `seq`
    /// (the attempt's record).
    Counted {
        /// The attempt's record.
        seq: u64,
        /// What the card's counts found.
        card: risk::CardVerdict,
    },
}

impl Wait {
    /// The journal sequence to wait for (0: none).
    pub fn journal_seq(self) -> u64 {
        match self {
            Wait::Nothing
            | Wait::Archive(_)
            | Wait::Upstream(_)
            | Wait::Joined(_)
            | Wait::Velocity { .. } => 0,
            Wait::Journal(seq) | Wait::Counted { seq, .. } => seq,
        }
    }

    pub(crate) fn of_seq(seq: u64) -> Wait {
        if seq == 0 {
            Wait::Nothing
        } else {
            Wait::Journal(seq)
        }
    }
}

/// What the engine answers a [`Command`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// F39.
    pub code: Code,
    /// F37.
    pub rrn: [u8; 12],
    /// F38 on approval.
    pub auth_code: Option<[u8; 6]>,
    /// The payment made or changed, when there is one (a declined
    /// authorization has one too).
    pub payment_id: Option<u64>,
    /// What the answer waits for.
    pub wait: Wait,
    /// Sequence of the journal record the change made (0: none).
    pub record_seq: u64,
    /// Holds ended by a [`Command::Tick`], payments let go by a
    /// [`Command::Retire`]; 0 otherwise.
    pub count: usize,
    /// The answer given before to this message (a repeat, or a duplicate
    /// of the same content): nothing was decided now.
    pub again: bool,
}

impl Reply {
    /// An answer with nothing to wait for and no payment.
    pub(crate) fn of(code: Code, rrn: [u8; 12]) -> Reply {
        Reply {
            code,
            rrn,
            auth_code: None,
            payment_id: None,
            wait: Wait::Nothing,
            record_seq: 0,
            count: 0,
            again: false,
        }
    }

    /// A request that waits for `fetch` from the archive: nothing decided,
    /// 96 if the edge cannot ask.
    pub(crate) fn fetch(fetch: Fetch, rrn: [u8; 12]) -> Reply {
        Reply {
            wait: Wait::Archive(fetch),
            ..Reply::of(Code::SYSTEM_MALFUNCTION, rrn)
        }
    }
}

/// Filters of a payment listing; all optional.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListFilter<'a> {
    /// Only this status.
    pub status: Option<Status>,
    /// Created at or after, ms.
    pub from_ms: Option<u64>,
    /// Created before, ms.
    pub to_ms: Option<u64>,
    /// Authorized amount at least.
    pub amount_min_minor: Option<u64>,
    /// Authorized amount at most.
    pub amount_max_minor: Option<u64>,
    /// Exactly this merchant reference.
    pub merchant_reference: Option<&'a str>,
    /// Only this terminal.
    pub terminal: Option<[u8; 8]>,
    /// Only payments in one of these statuses (empty: any); with `status`,
    /// both hold.
    pub statuses: &'a [Status],
    /// Only flagged (`true`) or unflagged (`false`) payments.
    pub scam: Option<bool>,
    /// Only this F37 of the authorization.
    pub rrn: Option<[u8; 12]>,
    /// Only this F38 of the authorization.
    pub auth_code: Option<[u8; 6]>,
    /// Only cards ending with these four digits.
    pub last4: Option<[u8; 4]>,
    /// Only this channel (F25's value: 0, 8, 59, 99).
    pub channel: Option<u8>,
    /// Only this ECI (its 2-digit number).
    pub eci: Option<u8>,
    /// Only payments whose authorization was answered with this code.
    pub code: Option<Code>,
}

impl ListFilter<'_> {
    /// Whether it filters on something an archive keeps no column for
    /// (scam, card's last 4, channel, ECI, response code): such filters are
    /// checked on each payment's image ([`ListFilter::matches`]).
    pub fn needs_image(&self) -> bool {
        self.scam.is_some()
            || self.last4.is_some()
            || self.channel.is_some()
            || self.eci.is_some()
            || self.code.is_some()
    }

    /// Whether payment `p` passes every filter.
    pub fn matches(&self, p: &Payment) -> bool {
        self.matches_columns(p)
            && self.scam.is_none_or(|s| s == p.scam)
            && self
                .last4
                .is_none_or(|l| p.masked_pan.as_str().as_bytes().ends_with(&l))
            && self.channel.is_none_or(|c| p.more.channel == Some(c))
            && self.eci.is_none_or(|e| p.more.eci == Some(e))
            && self.code.is_none_or(|c| p.result_code() == Some(c))
    }

    fn matches_columns(&self, p: &Payment) -> bool {
        let amount = p.authorized_minor.max(p.captured_minor);
        (self.statuses.is_empty() || self.statuses.contains(&p.status))
            && self.rrn.is_none_or(|r| r == p.rrn)
            && self.auth_code.is_none_or(|a| a == p.auth_code)
            && self.status.is_none_or(|s| s == p.status)
            && self.from_ms.is_none_or(|t| p.created_ms >= t)
            && self.to_ms.is_none_or(|t| p.created_ms < t)
            && self.amount_min_minor.is_none_or(|a| amount >= a)
            && self.amount_max_minor.is_none_or(|a| amount <= a)
            && self.terminal.is_none_or(|t| t == p.terminal)
            && self
                .merchant_reference
                .is_none_or(|r| p.extras.as_ref().is_some_and(|e| e.merchant_reference == r))
    }
}

/// A read asked of the engine, through [`crate::Engine::query`].
#[derive(Clone, Copy, Debug)]
pub enum Query<'a> {
    /// The merchant with F42 `id`.
    Merchant(&'a [u8]),
    /// The merchant owning terminal F41 `id`.
    TerminalMerchant([u8; 8]),
    /// The merchant at index `index` (a payment's).
    MerchantAt(u32),
    /// Payment `id`, if it belongs to one of `scope`'s merchants.
    Payment {
        /// Merchants the caller may see.
        scope: &'a [u32],
        /// The payment.
        id: u64,
    },
    /// One page of `scope`'s payments matching `filter`, newest first,
    /// with ids below `before_id`.
    List {
        /// Merchants the caller may see.
        scope: &'a [u32],
        /// What to keep.
        filter: ListFilter<'a>,
        /// The cursor: only ids below it.
        before_id: Option<u64>,
        /// Page size.
        limit: usize,
    },
    /// Counts for the gauges.
    Stats,
    /// How full the bounded tables are: cheap (a few atomic loads), for
    /// readiness and saturation warnings.
    Fill,
    /// Up to `limit` SAF entries, oldest first; of one upstream if given.
    Saf {
        /// Only this upstream's.
        upstream: Option<&'a str>,
        /// Most entries.
        limit: usize,
    },
    /// Per upstream: SAF entries, and when the oldest was queued.
    SafDepths,
    /// The merchants and terminals as they stand.
    Directory,
}

/// A merchant as an edge needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MerchantRef {
    /// Its index, for scopes and commands.
    pub index: u32,
    /// F42.
    pub id: [u8; 15],
}

/// Counts for the gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payments in memory by status, in [`Status::ALL`] order.
    pub payments_by_status: [u64; 8],
    /// Payments in memory.
    pub payments: usize,
    /// Remembered answers.
    pub idempotency_entries: usize,
    /// Tracked velocity keys.
    pub velocity_keys: usize,
}

/// How full the tables are whose limit turns new messages into 96.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fill {
    /// Payments in memory.
    pub payments: usize,
    /// `limits.payments_max`.
    pub payments_max: usize,
    /// Remembered answers.
    pub idempotency_entries: usize,
    /// `limits.idempotency_entries_max`.
    pub idempotency_entries_max: usize,
    /// Forwards waiting for an issuer.
    pub forwards: usize,
    /// Their limit.
    pub forwards_max: usize,
    /// SAF entries.
    pub saf: usize,
    /// `saf.entries_max`.
    pub saf_max: usize,
}

impl Fill {
    /// The limit reached, if any, with the count and the limit: while it
    /// is, new payments (or new financial messages) are answered 96.
    pub fn saturated(&self) -> Option<(&'static str, usize, usize)> {
        if self.idempotency_entries >= self.idempotency_entries_max {
            let (n, max) = (self.idempotency_entries, self.idempotency_entries_max);
            Some(("idempotency_entries_max", n, max))
        } else if self.payments >= self.payments_max {
            Some(("payments_max", self.payments, self.payments_max))
        } else {
            None
        }
    }
}

/// What the engine answers a [`Query`].
#[derive(Clone, Debug)]
pub enum QueryReply {
    /// A merchant, if known.
    Merchant(Option<MerchantRef>),
    /// A payment as it stands, if visible.
    Payment(Option<Payment>),
    /// A page and whether more follow.
    Page {
        /// The rows, newest first.
        rows: Vec<Payment>,
        /// Whether more follow.
        more: bool,
    },
    /// Counts.
    Stats(Stats),
    /// Fill of the bounded tables.
    Fill(Fill),
    /// SAF entries.
    Saf(Vec<crate::upstream::SafEntry>),
    /// (upstream, entries, oldest entry's queue time in ms), by upstream.
    SafDepths(Vec<(String, usize, u64)>),
    /// The directory in force.
    Directory(std::sync::Arc<crate::directory::Directory>),
}

/// What the counting node needs to count one authorization attempt of a
/// card: the card's token (never the PAN), what the policy's limits are
/// chosen by, the amount, and whether a rule before velocity declined
/// (amounts then do not count, as on one node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VelocityAsk {
    /// The card's keyed token.
    pub token: [u8; 32],
    /// F42: the merchant's limits apply.
    pub merchant_id: [u8; 15],
    /// F41: the terminal's limits apply.
    pub terminal_id: [u8; 8],
    /// F4.
    pub amount_minor: u64,
    /// F49.
    pub currency: u16,
    /// F25.
    pub channel: Channel,
    /// A block list, amount limit or SCA rule declined the attempt.
    pub declined_before: bool,
}
