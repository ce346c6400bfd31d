//! Cluster mode's journal: PostgreSQL (`docs/cluster.md`, PostgreSQL is
//! the journal). Every record the engine makes for a shard this node
//! serves is committed to table `cluster_records` (the engine's own record
//! bytes, as the file journal holds them, so a takeover replays them with
//! `Engine::replay_record`) in one transaction per batch that first calls
//! `switch_fence(shard, epoch, node)` for each shard of the batch; the
//! connections' answers wait for the committed sequence, published as the
//! file journal's writer publishes its fsynced one. While one transaction
//! runs, the next batch gathers: group commit.
//!
//! Rules of this slice, simpler than the design's and kept safe:
//! - A record of a shard the node does not serve (not owned, or owned and
//!   not yet loaded) is refused: the change is rolled back and answered 91.
//! - A fenced batch (a later owner's epoch is stored), or a PostgreSQL
//!   error that is not a lost connection, **stops the committer for
//!   good**: nothing past the last commit is published, so no answer held
//!   for the batch leaves, and the node shuts down (a supervisor restarts
//!   it; it then loads its shards from PostgreSQL). The design's per-shard
//!   "lost" state is not built.
//! - A lost connection (PostgreSQL restarted, the network) is not a
//!   fence: the writer reconnects with a backoff from
//!   [`RECONNECT_WAIT_MIN`] to [`RECONNECT_WAIT_MAX`], asks whether the
//!   batch in flight committed (its last record, by node, shard, epoch and
//!   sequence), and commits it again only if not; meanwhile a new change is
//!   refused at once (91, `switch_cluster_commit_rejected_total{reason=
//!   "reconnecting"}`) and the batch's answers wait, unpublished.
//! - **Hand-over** (a join's rebalancing, a drain): the node's member
//!   closes the shard ([`ShardHandover`]): requests of it are no longer
//!   admitted here (entry nodes and this node route them to the owner etcd
//!   names, waiting while there is none); once every admitted one has
//!   appended its records ([`Admitted`] counts them) and they are
//!   committed, the shard is closed, and only then does its key go. The
//!   next owner's load sees every change acknowledged here, and no batch
//!   of this node is fenced by the move.
//! - Before serving a shard it acquired, the node fences it (so an older
//!   owner's later batch fails), replays the shard's records from
//!   PostgreSQL over memory, in commit order, and takes a fresh block of
//!   payment ids (`cluster_id_block`) above every id it loaded.
//! - A counted card attempt (`engine::velocity::RECORD_VELOCITY`) belongs
//!   to the card's shard (`cluster::assign::shard_of_card`), so the replay
//!   of that shard rebuilds the card's counts (docs/cluster.md, Velocity
//!   across nodes); so does a velocity checkpoint of the shard's cards
//!   (`RECORD_VELOCITY_CHECKPOINT`, after its begin mark), and a load sets
//!   the latest one and replays the attempts after its mark. A card's
//!   watch-list change (`RECORD_WATCH`, a scam mark by hand) belongs to the
//!   card's shard too, and every one is replayed.
//! - Each node life takes one value of the same sequence at start, its
//!   number block, from which its engine makes every F37 + F38 it assigns
//!   (`Engine::use_number_block`): no other node or life has it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use engine::Code;
use journal::{DurablePublisher, DurableWatch};
use tokio_util::sync::CancellationToken;

use crate::ratelog::warn_limited;

/// Records queued for the committer, at most; past it a change is answered
/// 96 at once (`switch_cluster_commit_rejected_total{reason="full"}`).
pub(crate) const COMMIT_QUEUE_RECORDS_MAX: usize = 4_096;
/// Records in one transaction, at most.
pub(crate) const COMMIT_BATCH_RECORDS_MAX: usize = 1_024;
/// Records of one shard loaded at a takeover, at most; past it the shard
/// is not served (logged). A shard keeps its payment rows for
/// `cluster.records_retention_s` once archived and its card attempts from
/// its latest velocity checkpoint on, so only an archive or a checkpoint
/// stalled for hours reaches it.
pub(crate) const LOAD_RECORDS_MAX: i64 = 4_000_000;
/// Payment ids per id block: each node life, and each load, takes a block
/// from PostgreSQL's `cluster_id_block` sequence, so ids never collide
/// between nodes (2^40 ids a block; blocks fit an `INT8` to 2^23).
pub(crate) const ID_BLOCK_BITS: u32 = 40;
/// How long the writer waits for a record before checking for a stop.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// The first wait before reconnecting to PostgreSQL after a lost
/// connection; doubled at each failed attempt up to [`RECONNECT_WAIT_MAX`].
pub(crate) const RECONNECT_WAIT_MIN: Duration = Duration::from_millis(50);
/// The longest wait between two reconnection attempts: a restarted
/// PostgreSQL is used again at most this long after it accepts connections.
pub(crate) const RECONNECT_WAIT_MAX: Duration = Duration::from_secs(1);

const _: () = assert!(COMMIT_BATCH_RECORDS_MAX <= COMMIT_QUEUE_RECORDS_MAX);

/// A shard's rows to load: its latest velocity checkpoint first (record
/// type 4), then in commit order every payment row and the counted card
/// attempts (3) after that checkpoint's begin mark (5): the attempts before
/// the mark are in the checkpoint, those after it perhaps not, so they are
/// replayed over it (engine::velocity's note). Without a checkpoint, every
/// attempt. At most `$2` rows.
const LOAD_ROWS: &str = "
WITH c AS (SELECT COALESCE(max(n), 0) AS n FROM cluster_records
           WHERE shard = $1 AND record_type = 4),
     b AS (SELECT COALESCE(max(m.n), 0) AS n FROM cluster_records m, c
           WHERE m.shard = $1 AND m.record_type = 5 AND m.n < c.n)
SELECT r.n, r.record_type, r.payload FROM cluster_records r, c, b
 WHERE r.shard = $1
   AND (r.record_type NOT IN (3, 4, 5) OR (r.record_type = 3 AND r.n > b.n) OR r.n = c.n)
 ORDER BY r.n = c.n DESC, r.n LIMIT $2";

/// The table of records and the id sequence, idempotent.
const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS cluster_records (
    n           BIGSERIAL PRIMARY KEY,
    shard       INT4 NOT NULL,
    epoch       INT8 NOT NULL,
    node        TEXT NOT NULL,
    seq         INT8 NOT NULL,
    record_type INT2 NOT NULL,
    payload     BYTEA NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS cluster_records_shard ON cluster_records (shard, n);
CREATE INDEX IF NOT EXISTS cluster_records_velocity_marks ON cluster_records (shard, n)
    WHERE record_type IN (4, 5);
CREATE INDEX IF NOT EXISTS cluster_records_velocity ON cluster_records (shard, n)
    WHERE record_type IN (3, 4, 5);
CREATE SEQUENCE IF NOT EXISTS cluster_id_block;
CREATE TABLE IF NOT EXISTS cluster_drained (
    shard INT4 PRIMARY KEY,
    n     INT8 NOT NULL
);
";

/// One record on its way to PostgreSQL.
struct Item {
    /// The node's sequence, published once committed.
    seq: u64,
    /// Its payment shard.
    shard: u32,
    /// The epoch the node served the shard at when the record was made.
    epoch: i64,
    /// The engine's record type.
    record_type: u8,
    /// The engine's record bytes.
    payload: Vec<u8>,
}

/// Where a shard this node owns stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardState {
    /// Loaded and served: requests admitted, records appended.
    Open,
    /// Being handed over: no request admitted, the admitted ones' records
    /// still appended and committed.
    Closing,
    /// Handed over: nothing admitted or appended, and not loaded again at
    /// this epoch; the entry goes once the shard is no longer owned.
    Closed,
}

impl ShardState {
    /// As `GET /cluster` names it.
    fn name(self) -> &'static str {
        match self {
            ShardState::Open => "open",
            ShardState::Closing => "closing",
            ShardState::Closed => "closed",
        }
    }
}

/// A shard of the committer's map.
#[derive(Debug, Clone, Copy)]
struct Served {
    /// The ownership's epoch (the fence's).
    epoch: i64,
    /// Open, closing or closed.
    state: ShardState,
    /// Requests admitted and not finished (their records appended or not
    /// made): a closing shard is closed only at 0.
    admitted: u32,
    /// Card attempts of the shard's cards recorded since its last velocity
    /// checkpoint was taken: none, no checkpoint is due.
    attempts: u64,
}

/// A request admitted for a shard served here, counted until dropped
/// (after its records are appended; a request deferred for its card's
/// verdict carries it until it is decided), so a hand-over waits for it.
pub(crate) struct Admitted {
    /// Whose count.
    committer: Arc<Committer>,
    /// The request's shard.
    shard: u32,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(s) = self.committer.shards().get_mut(&self.shard) {
            s.admitted = s.admitted.saturating_sub(1);
        }
    }
}

/// The PostgreSQL committer: `engine::Journal` for cluster mode.
pub(crate) struct Committer {
    /// This node's id, written with every fence.
    node_id: String,
    /// `cluster.shard_count`.
    shard_count: u32,
    /// The shard of each configured merchant, by the engine's index.
    merchant_shards: Vec<u32>,
    /// The shards owned and loaded, with their epochs and hand-over state.
    shards: Mutex<BTreeMap<u32, Served>>,
    /// The next sequence, held while a record is queued so sequences
    /// reach the writer in order.
    next_seq: Mutex<u64>,
    /// To the writer.
    tx: SyncSender<Item>,
    /// The committed sequence, for the connections.
    publisher: Arc<DurablePublisher>,
    /// Set once the writer stopped on an error or a fence.
    failed: Arc<AtomicBool>,
    /// Set while the writer has lost its connection: new changes are
    /// refused instead of queued behind a batch of unknown outcome.
    reconnecting: Arc<AtomicBool>,
    /// Set by shutdown.
    stop: Arc<AtomicBool>,
    /// The last sequence handed out.
    last_seq: AtomicU64,
    /// The last sequence committed (published).
    committed_seq: Arc<AtomicU64>,
    /// Shards loaded before in this node life: memory may hold stale
    /// copies of their payments.
    loaded_before: Mutex<std::collections::BTreeSet<u32>>,
    /// This node life's number block, for F37 + F38.
    number_block: u64,
    /// The writer thread.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Set when the shards owned changed: the loader looks at once.
    owned_changed: (Mutex<bool>, std::sync::Condvar),
}

impl Committer {
    /// Connects to `url`, lays out the table, starts the writer. `cancel`
    /// is cancelled when the writer stops on a fence or an error.
    ///
    /// # Errors
    /// PostgreSQL's.
    pub(crate) fn start(
        url: &str,
        node_id: &str,
        shard_count: u32,
        merchant_ids: &[String],
        cancel: CancellationToken,
    ) -> anyhow::Result<Committer> {
        let unreplicated = Arc::new(AtomicBool::new(false));
        let mut client =
            connect_noting(url, Some(COMMIT_SESSION_NAME), Some(unreplicated.clone()))?;
        client
            .batch_execute(SCHEMA)
            .context("laying out cluster_records")?;
        let block: i64 = client
            .query_one("SELECT nextval('cluster_id_block')", &[])
            .context("taking a number block")?
            .get(0);
        // The block is this life's alone only if the standby has it too.
        anyhow::ensure!(
            !unreplicated.swap(false, Ordering::AcqRel),
            "taking a number block: its commit was not confirmed by the synchronous standby"
        );
        let number_block = u64::try_from(block)
            .ok()
            .filter(|b| (1..engine::NUMBER_BLOCKS_MAX).contains(b))
            .with_context(|| {
                format!(
                    "cluster_id_block is at {block}: F37 holds blocks below {}",
                    engine::NUMBER_BLOCKS_MAX
                )
            })?;
        let (tx, rx) = sync_channel(COMMIT_QUEUE_RECORDS_MAX);
        let (publisher, _) = DurablePublisher::new();
        let publisher = Arc::new(publisher);
        let failed = Arc::new(AtomicBool::new(false));
        let reconnecting = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let committed_seq = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            committed_seq: committed_seq.clone(),
            client,
            url: url.to_owned(),
            unreplicated,
            reconnecting: reconnecting.clone(),
            rx,
            node_id: node_id.to_owned(),
            publisher: publisher.clone(),
            failed: failed.clone(),
            stop: stop.clone(),
            cancel,
        };
        let handle = std::thread::Builder::new()
            .name("cluster-commit".into())
            .spawn(move || writer.run())
            .context("starting the committer thread")?;
        Ok(Committer {
            node_id: node_id.to_owned(),
            shard_count,
            merchant_shards: merchant_ids
                .iter()
                .map(|id| cluster::assign::shard_of_merchant(id.as_bytes(), shard_count))
                .collect(),
            shards: Mutex::new(BTreeMap::new()),
            owned_changed: (Mutex::new(false), std::sync::Condvar::new()),
            next_seq: Mutex::new(1),
            tx,
            publisher,
            failed,
            reconnecting,
            stop,
            last_seq: AtomicU64::new(0),
            committed_seq,
            loaded_before: Mutex::new(std::collections::BTreeSet::new()),
            number_block,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The committed sequence, for the connections' outboxes.
    pub(crate) fn durable_watch(&self) -> DurableWatch {
        self.publisher.watch()
    }

    /// Whether this node's record `seq` is committed within `wait` (0:
    /// nothing to wait for); false when it is not, or the committer ends.
    pub(crate) async fn committed_within(&self, seq: u64, wait: std::time::Duration) -> bool {
        let mut durable = self.durable_watch();
        let committed = tokio::time::timeout(wait, async {
            while durable.durable_seq() < seq {
                if durable.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        committed == Ok(true)
    }

    /// This node life's number block (`Engine::use_number_block`).
    pub(crate) fn number_block(&self) -> u64 {
        self.number_block
    }

    /// The last sequence handed out.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Relaxed)
    }

    /// The last sequence committed to PostgreSQL.
    pub(crate) fn committed_seq(&self) -> u64 {
        self.committed_seq.load(Ordering::Acquire)
    }

    /// The shards whose records this node writes: served, or being handed
    /// over (the archive drainer's).
    pub(crate) fn writing_shards(&self) -> Vec<u32> {
        self.shards()
            .iter()
            .filter(|(_, v)| v.state != ShardState::Closed)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Whether the writer stopped on a fence or an error.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn shards(&self) -> MutexGuard<'_, BTreeMap<u32, Served>> {
        self.shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shards served here now (loaded, requests admitted).
    pub(crate) fn serving_shards(&self) -> Vec<u32> {
        self.shards()
            .iter()
            .filter(|(_, v)| v.state == ShardState::Open)
            .map(|(s, _)| *s)
            .collect()
    }

    /// The shard of configured merchant `index`.
    pub(crate) fn shard_of_merchant(&self, index: u32) -> Option<u32> {
        self.merchant_shards.get(index as usize).copied()
    }

    /// Whether the shard of configured merchant `index` (the engine's) is
    /// served here.
    pub(crate) fn serves_merchant(&self, index: u32) -> bool {
        self.merchant_shards
            .get(index as usize)
            .is_some_and(|&s| self.serves(s))
    }

    /// Whether requests of `shard` are admitted here (loaded, not being
    /// handed over).
    pub(crate) fn serves(&self, shard: u32) -> bool {
        self.shards()
            .get(&shard)
            .is_some_and(|s| s.state == ShardState::Open)
    }

    /// Whether a card of `shard` is counted here: the shard is served, or
    /// being handed over and not yet closed ([`Committer::admit_count`]).
    pub(crate) fn counts_cards_of(&self, shard: u32) -> bool {
        self.shards()
            .get(&shard)
            .is_some_and(|s| s.state != ShardState::Closed)
    }

    /// Admits a request of `shard` if it is served here: counted until
    /// the guard drops, after the request's records are appended.
    pub(crate) fn admit(self: &Arc<Self>, shard: u32) -> Option<Admitted> {
        self.admit_in(shard, &[ShardState::Open])
    }

    /// Admits a card's count in `shard` while it is served or being handed
    /// over (closing, not yet closed): a request admitted in a closing
    /// shard may be waiting for this very count (its card in the same
    /// shard, or in another shard closing with it), and the shard's key
    /// goes only once that request is decided. Refused, the count waited
    /// for the next owner, who comes only after the key goes: each waited
    /// 1.5 s and was answered 91 (seen in the drain test). The close waits
    /// for what is admitted here as for any request.
    pub(crate) fn admit_count(self: &Arc<Self>, shard: u32) -> Option<Admitted> {
        self.admit_in(shard, &[ShardState::Open, ShardState::Closing])
    }

    /// Admits work of `shard` in one of the states `open_in`.
    fn admit_in(self: &Arc<Self>, shard: u32, open_in: &[ShardState]) -> Option<Admitted> {
        let mut shards = self.shards();
        let s = shards.get_mut(&shard)?;
        if !open_in.contains(&s.state) {
            return None;
        }
        s.admitted += 1;
        Some(Admitted {
            committer: Arc::clone(self),
            shard,
        })
    }

    /// The node's view of its shards and commits for `GET /cluster`:
    /// each shard of `owned` (etcd's, by the member) and of the
    /// committer's map, with its epoch, state (`open`, `closing`,
    /// `closed`, `loading` when owned and not yet served, `releasing` when
    /// served and no longer owned) and admitted requests; the commit
    /// sequences, the queue between them, and whether the writer is
    /// reconnecting or failed.
    pub(crate) fn view(&self, owned: &BTreeMap<u32, i64>) -> serde_json::Value {
        let served = self.shards().clone();
        let mut shards = Vec::with_capacity(owned.len().max(served.len()));
        let all: std::collections::BTreeSet<u32> =
            owned.keys().chain(served.keys()).copied().collect();
        for shard in all {
            let here = served.get(&shard);
            let (epoch, state) = match (owned.get(&shard), here) {
                (Some(&e), Some(s)) if s.epoch == e => (e, s.state.name()),
                (Some(&e), _) => (e, "loading"),
                (None, Some(s)) => (s.epoch, "releasing"),
                (None, None) => continue,
            };
            shards.push(serde_json::json!({
                "shard": shard,
                "epoch": epoch,
                "state": state,
                "admitted": here.map_or(0, |s| s.admitted),
            }));
        }
        let (last, committed) = (self.last_seq(), self.committed_seq());
        serde_json::json!({
            "shards": shards,
            "commit": {
                "last_seq": last,
                "committed_seq": committed,
                "queue": last.saturating_sub(committed),
                "reconnecting": self.reconnecting.load(Ordering::Acquire),
                "failed": self.failed(),
            },
        })
    }

    /// Shards served or being handed over (the served-shards gauge).
    pub(crate) fn served_count(&self) -> usize {
        self.shards()
            .values()
            .filter(|s| s.state != ShardState::Closed)
            .count()
    }

    /// Waits until the shards owned changed ([`ShardHandover`]'s
    /// `owned_changed`) or `bound` passed, whichever first.
    pub(crate) fn wait_owned_changed(&self, bound: Duration) {
        let (flag, changed) = &self.owned_changed;
        let guard = flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut guard, _) = changed
            .wait_timeout_while(guard, bound, |set| !*set)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = false;
    }

    /// Forgets every shard not in `owned` at its epoch (lost, released, or
    /// owned anew at another epoch); the ones that were still served.
    pub(crate) fn drop_unowned(&self, owned: &BTreeMap<u32, i64>) -> Vec<u32> {
        let mut shards = self.shards();
        let gone: Vec<u32> = shards
            .iter()
            .filter(|(s, v)| owned.get(s) != Some(&v.epoch))
            .map(|(s, _)| *s)
            .collect();
        let mut served = Vec::new();
        for s in gone {
            if shards
                .remove(&s)
                .is_some_and(|v| v.state != ShardState::Closed)
            {
                served.push(s);
            }
        }
        served
    }

    /// Whether owned `shard` still needs its load (not served, not being
    /// or already handed over).
    pub(crate) fn needs_load(&self, shard: u32) -> bool {
        !self.shards().contains_key(&shard)
    }

    /// Stops the writer after what is queued.
    ///
    /// # Errors
    /// When the writer had stopped on a fence or an error.
    pub(crate) fn shutdown(&self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        if self.failed() {
            anyhow::bail!("the cluster committer stopped on a fence or a PostgreSQL error");
        }
        Ok(())
    }

    /// The shard of a payment record, from its merchant; of a counted
    /// card attempt or a watch-list change, the card's
    /// ([`cluster::assign::shard_of_card`]); of a
    /// velocity checkpoint or its begin mark, the one it names.
    fn shard_of(&self, record_type: u8, payload: &[u8]) -> Option<u32> {
        if record_type == engine::velocity::RECORD_VELOCITY {
            let (ask, _, _) = engine::velocity::decode_record(payload)?;
            return Some(cluster::assign::shard_of_card(&ask.token, self.shard_count));
        }
        if record_type == engine::velocity::RECORD_WATCH {
            let (token, _) = engine::velocity::decode_watch(payload)?;
            return Some(cluster::assign::shard_of_card(&token, self.shard_count));
        }
        if record_type == engine::velocity::RECORD_VELOCITY_CHECKPOINT
            || record_type == engine::velocity::RECORD_VELOCITY_CHECKPOINT_BEGIN
        {
            return engine::velocity::checkpoint_shard(payload).filter(|s| *s < self.shard_count);
        }
        if record_type != engine::record::RECORD_PAYMENT {
            return None;
        }
        let rec = engine::record::decode(payload).ok()?;
        self.merchant_shards
            .get(rec.payment.merchant as usize)
            .copied()
    }

    /// Queues one record; its sequence.
    fn append_record(&self, record_type: u8, payload: &[u8]) -> Result<u64, Code> {
        let refuse = |reason: &'static str, code| {
            metrics::counter!("switch_cluster_commit_rejected_total", "reason" => reason)
                .increment(1);
            Err(code)
        };
        if self.failed() {
            return refuse("failed", Code::UNAVAILABLE);
        }
        if self.reconnecting.load(Ordering::Acquire) {
            return refuse("reconnecting", Code::UNAVAILABLE);
        }
        let Some(shard) = self.shard_of(record_type, payload) else {
            return refuse("no_shard", Code::UNAVAILABLE);
        };
        debug_assert!(shard < self.shard_count);
        // A closing shard still takes the records of requests admitted
        // before it closed.
        let mut shards = self.shards();
        let Some(served) = shards
            .get_mut(&shard)
            .filter(|s| s.state != ShardState::Closed)
        else {
            return refuse("not_served", Code::UNAVAILABLE);
        };
        let epoch = served.epoch;
        if record_type == engine::velocity::RECORD_VELOCITY {
            served.attempts += 1;
        }
        drop(shards);
        let mut next = self
            .next_seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = *next;
        let item = Item {
            seq,
            shard,
            epoch,
            record_type,
            payload: payload.to_vec(),
        };
        match self.tx.try_send(item) {
            Ok(()) => {
                *next += 1;
                self.last_seq.store(seq, Ordering::Relaxed);
                Ok(seq)
            }
            Err(TrySendError::Full(_)) => refuse("full", Code::SYSTEM_MALFUNCTION),
            Err(TrySendError::Disconnected(_)) => refuse("failed", Code::UNAVAILABLE),
        }
    }

    /// The open shards whose cards were counted since their last velocity
    /// checkpoint, with those attempts, each's count set back to 0: their
    /// checkpoints are due (`cluster_node`, every
    /// `cluster.velocity_checkpoint_s`).
    pub(crate) fn checkpoints_due(&self) -> Vec<(u32, u64)> {
        let mut shards = self.shards();
        let due = shards
            .iter_mut()
            .filter(|(_, s)| s.state == ShardState::Open && s.attempts > 0);
        due.map(|(shard, s)| (*shard, std::mem::take(&mut s.attempts)))
            .collect()
    }

    /// A checkpoint of `shard` was refused: its `attempts` are due again.
    pub(crate) fn checkpoint_again(&self, shard: u32, attempts: u64) {
        if let Some(s) = self.shards().get_mut(&shard) {
            s.attempts += attempts;
        }
    }

    /// Payment shards.
    pub(crate) fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// Takes shard `shard` at `epoch` and loads it into `engine`: fences it
    /// (an older owner's later batch then fails), has `archive_loaded`
    /// write the loaded records above the shard's drained mark into the
    /// archive (`cluster_drain::drain_loaded`: the client, the shard, its
    /// mark, the rows as `(n, record_type, payload)`), replays its records
    /// in commit order, takes a fresh id block above every id loaded, then
    /// serves it. Runs off the request path, on the caller's thread.
    ///
    /// # Errors
    /// Fenced (a later owner exists), PostgreSQL's, the archive's, a record
    /// that does not replay, or more than [`LOAD_RECORDS_MAX`] records.
    pub(crate) fn acquire(
        &self,
        (client, unreplicated): (&mut postgres::Client, &AtomicBool),
        engine: &engine::Engine,
        (shard, epoch): (u32, i64),
        now_ms: u64,
        archive_loaded: impl FnOnce(
            &mut postgres::Client,
            i32,
            i64,
            &[(i64, i16, &[u8])],
        ) -> anyhow::Result<usize>,
    ) -> anyhow::Result<usize> {
        let started = std::time::Instant::now();
        let shard_sql = i32::try_from(shard)?;
        unreplicated.store(false, Ordering::Release);
        let mut tx = client.transaction()?;
        cluster::fence::check(&mut tx, shard, epoch, &self.node_id)?;
        // One statement, one snapshot: the latest velocity checkpoint and
        // every row after it, whatever the drainer deletes meanwhile.
        let rows = tx.query(LOAD_ROWS, &[&shard_sql, &(LOAD_RECORDS_MAX + 1)])?;
        anyhow::ensure!(
            rows.len() as i64 <= LOAD_RECORDS_MAX,
            "shard {shard}: more than {LOAD_RECORDS_MAX} records to load"
        );
        let drained: i64 = tx
            .query_one(
                "SELECT COALESCE((SELECT n FROM cluster_drained WHERE shard = $1), 0)",
                &[&shard_sql],
            )?
            .get(0);
        let block: i64 = tx
            .query_one("SELECT nextval('cluster_id_block')", &[])?
            .get(0);
        tx.commit()?;
        // The fence at this epoch and the id block hold only if the
        // standby has them: a failover could otherwise give the block to
        // another node. Not served; the loader loads it again.
        anyhow::ensure!(
            !unreplicated.swap(false, Ordering::AcqRel),
            "shard {shard}: the load's commit was not confirmed by the synchronous standby"
        );
        // Every payment loaded is in the archive before it is served, so
        // memory may let it go (`cluster_drain`).
        let loaded: Vec<(i64, i16, &[u8])> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let archived = archive_loaded(client, shard_sql, drained, &loaded)?;
        if archived > 0 {
            tracing::info!(
                shard,
                records = archived,
                "cluster: loaded records not yet archived written into the archive"
            );
        }
        // Served here before: another node may have changed its payments
        // since, and the rows of those changes may be gone (archived, past
        // `cluster.records_retention_s`), so memory's copies go first; the
        // archive answers for what the load does not bring back.
        let before = self
            .loaded_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&shard);
        if before {
            let forgotten =
                engine.forget_payments_of(|m| self.merchant_shards.get(m as usize) == Some(&shard));
            tracing::debug!(
                shard,
                forgotten,
                "cluster: stale payments of a shard served before let go"
            );
        }
        // The shard's cards are counted from its rows only: what memory
        // kept from an earlier time here would add to them.
        let count = self.shard_count;
        engine.reset_velocity_of(&|token| cluster::assign::shard_of_card(token, count) == shard);
        let mut payments = std::collections::HashSet::new();
        for row in &rows {
            let record_type: i16 = row.get(1);
            let payload: &[u8] = row.get(2);
            let record_type = u8::try_from(record_type)?;
            // Sequence 0: loaded from PostgreSQL, so already durable.
            engine
                .replay_record(0, record_type, payload)
                .with_context(|| format!("replaying a record of shard {shard}"))?;
            if record_type == engine::record::RECORD_PAYMENT {
                payments.insert(engine::record::payment_id(payload)?);
            }
        }
        // The shard's open pre-authorizations to the timers: their holds
        // end here now (queued at their due time, or at once if past it).
        engine.requeue_holds_of(payments);
        // Answers of rows no longer kept are in the archive: a repeat of a
        // message sent before now that memory does not know asks it.
        engine.assume_answers_archived_through(now_ms);
        self.loaded_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(shard);
        let block = u64::try_from(block)?;
        engine.reserve_ids_through(block << ID_BLOCK_BITS);
        self.shards().insert(
            shard,
            Served {
                epoch,
                state: ShardState::Open,
                admitted: 0,
                attempts: 0,
            },
        );
        metrics::histogram!("switch_cluster_load_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("switch_cluster_loads_total").increment(1);
        metrics::counter!("switch_cluster_loaded_records_total").increment(rows.len() as u64);
        Ok(rows.len())
    }
}

/// The committer's side of hand-overs, for the node's member.
pub(crate) struct ShardHandover(pub(crate) Arc<Committer>);

impl std::fmt::Debug for ShardHandover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardHandover")
            .field("node", &self.0.node_id)
            .finish()
    }
}

impl cluster::member::Handover for ShardHandover {
    fn close(&self, shard: u32, epoch: i64) {
        let mut shards = self.0.shards();
        if let Some(s) = shards.get_mut(&shard) {
            if s.epoch == epoch && s.state == ShardState::Open {
                s.state = ShardState::Closing;
                metrics::counter!("switch_cluster_handovers_total", "step" => "closing")
                    .increment(1);
            }
        }
    }

    fn closed(&self, shard: u32, epoch: i64) -> bool {
        let c = &self.0;
        let mut shards = c.shards();
        let Some(s) = shards.get_mut(&shard).filter(|s| s.epoch == epoch) else {
            // Not served at that epoch: nothing of it left to commit.
            return true;
        };
        match s.state {
            ShardState::Closed => true,
            ShardState::Open => false,
            ShardState::Closing if s.admitted > 0 => false,
            ShardState::Closing => {
                // Every admitted request appended (under this lock, none
                // can start): its records are at or below the last seq.
                if c.publisher.watch().durable_seq() < c.last_seq() {
                    return false;
                }
                s.state = ShardState::Closed;
                metrics::counter!("switch_cluster_handovers_total", "step" => "closed")
                    .increment(1);
                tracing::info!(
                    shard,
                    epoch,
                    "cluster: shard handed over: every admitted change committed, no longer served"
                );
                true
            }
        }
    }

    fn owned_changed(&self) {
        let (flag, changed) = &self.0.owned_changed;
        *flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        changed.notify_all();
    }

    fn reopen(&self, shard: u32, epoch: i64) {
        let mut shards = self.0.shards();
        if let Some(s) = shards.get_mut(&shard) {
            if s.epoch == epoch && s.state != ShardState::Open {
                s.state = ShardState::Open;
                metrics::counter!("switch_cluster_handovers_total", "step" => "reopened")
                    .increment(1);
            }
        }
    }
}

impl engine::Journal for Committer {
    fn append(&self, record_type: u8, payload: &[u8]) -> Result<u64, Code> {
        self.append_record(record_type, payload)
    }
}

/// The committer's `application_name` in `pg_stat_activity`.
const COMMIT_SESSION_NAME: &str = "switch-cluster-commit";
/// The loader's (shard takeovers: fence, load, id block).
pub(crate) const LOAD_SESSION_NAME: &str = "switch-cluster-load";

/// Connects to PostgreSQL with the archive's session rule: every commit
/// waits for the WAL flush (and a synchronous standby's), and the
/// archive's bounds on every wait and its TLS (`archive::pg_session`).
pub(crate) fn connect(url: &str) -> anyhow::Result<postgres::Client> {
    connect_noting(url, None, None)
}

/// As [`connect`], named `name` in `pg_stat_activity`, with the mark
/// [`connect_noting`] raises when a commit was not confirmed by the
/// synchronous standby (for the loader: `Committer::acquire`).
pub(crate) fn connect_watched(
    url: &str,
    name: &'static str,
) -> anyhow::Result<(postgres::Client, Arc<AtomicBool>)> {
    let unreplicated = Arc::new(AtomicBool::new(false));
    let client = connect_noting(url, Some(name), Some(unreplicated.clone()))?;
    Ok((client, unreplicated))
}

/// As [`connect`], named `name`, raising `unreplicated` when PostgreSQL
/// warns that a commit's wait for the synchronous standby was cancelled
/// ("canceling wait for synchronous replication", SQLSTATE 01000 for a
/// cancelled query, 57P01 for a terminated session). That commit holds
/// on this server and maybe not on the standby, which a failover would
/// promote.
fn connect_noting(
    url: &str,
    name: Option<&'static str>,
    unreplicated: Option<Arc<AtomicBool>>,
) -> anyhow::Result<postgres::Client> {
    let mut session = archive::pg_session(url)?;
    let config = &mut session.config;
    if let Some(name) = name {
        config.application_name(name);
    }
    config.notice_callback(move |notice| {
        let code = notice.code();
        let warning = notice.parsed_severity() == Some(postgres::error::Severity::Warning);
        if let Some(flag) = &unreplicated {
            if warning && notice.message().contains("synchronous replication") {
                flag.store(true, Ordering::Release);
            }
        }
        if warning {
            warn_limited!(
                "pg_warning",
                code = code.code(),
                message = notice.message(),
                "cluster: PostgreSQL warning"
            );
        } else {
            tracing::debug!(
                severity = notice.severity(),
                code = code.code(),
                message = notice.message(),
                "cluster: PostgreSQL notice"
            );
        }
    });
    let mut client = session
        .connect()
        .context("connecting to PostgreSQL (archive.url)")?;
    // A node frozen mid-transaction (paused, its VM stopped) would hold
    // its shards' fence rows, and every takeover would wait on them: the
    // server ends such a transaction after this, and the node, woken,
    // finds its session gone.
    client.batch_execute(&format!(
        "SET synchronous_commit = on; SET idle_in_transaction_session_timeout = {}",
        archive::PG_IDLE_IN_TRANSACTION_MS
    ))?;
    Ok(client)
}

/// Counts a committed batch's records by shard
/// (`switch_cluster_shard_records_total{shard}`): one increment per shard
/// run of the batch, so a hot shard shows.
fn count_by_shard(batch: &[Item]) {
    let mut by_shard: BTreeMap<u32, u64> = BTreeMap::new();
    for i in batch {
        *by_shard.entry(i.shard).or_default() += 1;
    }
    for (shard, n) in by_shard {
        metrics::counter!("switch_cluster_shard_records_total", "shard" => shard.to_string())
            .increment(n);
    }
}

/// The writer thread's state.
struct Writer {
    /// Its own session.
    client: postgres::Client,
    /// archive.url, to reconnect.
    url: String,
    /// Raised by the session's notices when a commit's wait for the
    /// synchronous standby was cancelled ([`connect_noting`]).
    unreplicated: Arc<AtomicBool>,
    /// Set while the session is lost (shared with the appenders).
    reconnecting: Arc<AtomicBool>,
    /// From the appenders.
    rx: Receiver<Item>,
    /// Written with each fence.
    node_id: String,
    /// Where committed sequences go.
    publisher: Arc<DurablePublisher>,
    /// The last committed sequence, for the archive drainer.
    committed_seq: Arc<AtomicU64>,
    /// Set on a fence or an error.
    failed: Arc<AtomicBool>,
    /// Set by shutdown.
    stop: Arc<AtomicBool>,
    /// Cancelled on a fence or an error: the node shuts down.
    cancel: CancellationToken,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(COMMIT_BATCH_RECORDS_MAX);
        loop {
            match self.rx.recv_timeout(IDLE_WAIT) {
                Ok(item) => batch.push(item),
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < COMMIT_BATCH_RECORDS_MAX {
                match self.rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let last = batch.last().map_or(0, |i| i.seq);
            let started = std::time::Instant::now();
            match self.commit_through_reconnects(&batch) {
                Ok(()) => {
                    metrics::histogram!("switch_cluster_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("switch_cluster_commit_batch_records")
                        .record(batch.len() as f64);
                    metrics::counter!("switch_cluster_commits_total").increment(1);
                    metrics::counter!("switch_cluster_committed_records_total")
                        .increment(batch.len() as u64);
                    count_by_shard(&batch);
                    self.committed_seq.store(last, Ordering::Release);
                    self.publisher.publish(last);
                }
                Err(e) => {
                    let reason = if let cluster::FenceError::Fenced { shard, .. } = e {
                        metrics::counter!("switch_cluster_fenced_batches_total", "shard" => shard.to_string())
                            .increment(1);
                        "fenced"
                    } else {
                        "error"
                    };
                    metrics::counter!("switch_cluster_commit_failures_total", "reason" => reason)
                        .increment(1);
                    tracing::error!(error = %e, records = batch.len(), "cluster: a batch was not committed; nothing more is acknowledged and the node stops");
                    self.failed.store(true, Ordering::Release);
                    self.publisher.fail();
                    self.cancel.cancel();
                    return;
                }
            }
            batch.clear();
        }
    }

    /// Commits `batch` once: through lost connections (reconnecting with
    /// a backoff, asking whether it committed before committing it again)
    /// until it commits, is fenced, meets another error, or the committer
    /// is stopped while PostgreSQL is unreachable.
    ///
    /// A commit whose wait for the synchronous standby was cancelled
    /// (`unreplicated`) is not acknowledged either: the standby may lack
    /// it. It is asked about again like a lost one, in a transaction whose
    /// own commit waits for the standby past it.
    fn commit_through_reconnects(&mut self, batch: &[Item]) -> Result<(), cluster::FenceError> {
        let mut outcome = self.commit(batch).map(|()| self.replicated());
        loop {
            match outcome {
                Ok(true) => {
                    self.reconnecting.store(false, Ordering::Release);
                    return Ok(());
                }
                Ok(false) => {
                    metrics::counter!("switch_cluster_commit_failures_total", "reason" => "unreplicated")
                        .increment(1);
                    warn_limited!(
                        "cluster_unreplicated",
                        records = batch.len(),
                        "cluster: a commit's wait for the synchronous standby was cancelled; its answers wait until the standby has it"
                    );
                    self.pause(RECONNECT_WAIT_MIN)?;
                }
                Err(cluster::FenceError::Postgres(ref e)) if self.lost(e) => {
                    self.reconnecting.store(true, Ordering::Release);
                    metrics::counter!("switch_cluster_commit_failures_total", "reason" => "connection")
                        .increment(1);
                    tracing::warn!(error = ?e, records = batch.len(), "cluster: PostgreSQL connection lost; reconnecting, the batch's answers wait");
                    if let Err(e) = self.reconnect() {
                        self.reconnecting.store(false, Ordering::Release);
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.reconnecting.store(false, Ordering::Release);
                    return Err(e);
                }
            }
            outcome = match self.committed(batch) {
                Ok(true) => Ok(self.replicated()),
                Ok(false) => self.commit(batch).map(|()| self.replicated()),
                Err(e) => Err(e),
            };
        }
    }

    /// Whether the commits since the last call waited for the synchronous
    /// standby to the end (none had that wait cancelled); clears the mark.
    fn replicated(&self) -> bool {
        !self.unreplicated.swap(false, Ordering::AcqRel)
    }

    /// Sleeps `wait`, unless the committer is stopped.
    fn pause(&self, wait: Duration) -> Result<(), cluster::FenceError> {
        if self.stop.load(Ordering::Acquire) {
            return Err(cluster::FenceError::Argument(
                "stopped while PostgreSQL was unreachable".into(),
            ));
        }
        std::thread::sleep(wait);
        Ok(())
    }

    /// Whether `e` is a lost session (closed, an I/O error, a connection
    /// exception or the server shutting down), not a refusal.
    fn lost(&self, e: &postgres::Error) -> bool {
        use postgres::error::SqlState;
        if self.client.is_closed() {
            return true;
        }
        match e.code() {
            None => e.as_db_error().is_none(),
            Some(code) => {
                code.code().starts_with("08")
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW
            }
        }
    }

    /// Connects again, waiting [`RECONNECT_WAIT_MIN`] doubling to
    /// [`RECONNECT_WAIT_MAX`] between attempts, until connected or stopped.
    fn reconnect(&mut self) -> Result<(), cluster::FenceError> {
        let mut wait = RECONNECT_WAIT_MIN;
        loop {
            self.pause(wait)?;
            wait = (wait * 2).min(RECONNECT_WAIT_MAX);
            metrics::counter!("switch_cluster_reconnects_total").increment(1);
            match connect_noting(
                &self.url,
                Some(COMMIT_SESSION_NAME),
                Some(self.unreplicated.clone()),
            ) {
                Ok(client) => {
                    self.client = client;
                    tracing::info!("cluster: reconnected to PostgreSQL");
                    return Ok(());
                }
                Err(e) => tracing::debug!(error = %e, "cluster: PostgreSQL not reachable yet"),
            }
        }
    }

    /// Whether `batch` was committed before its connection was lost: the
    /// transaction is all or nothing, so its last record tells. Asked in a
    /// transaction that first passes the fence of that record's shard,
    /// which always writes a row: so its commit waits for the synchronous
    /// standby to flush past every earlier commit, and the batch found
    /// committed here is on the standby too, unless that wait is cancelled
    /// as well ([`Writer::replicated`]). (A transaction that only reads
    /// writes no WAL before its commit record and does not wait.) Fenced
    /// when the shard was taken over meanwhile: the node stops, with
    /// nothing published.
    fn committed(&mut self, batch: &[Item]) -> Result<bool, cluster::FenceError> {
        let Some(last) = batch.last() else {
            return Ok(true);
        };
        let mut tx = self.client.transaction()?;
        cluster::fence::check(&mut tx, last.shard, last.epoch, &self.node_id)?;
        let found: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM cluster_records
                 WHERE shard = $1 AND epoch = $2 AND node = $3 AND seq = $4)",
                &[
                    &i32::try_from(last.shard).unwrap_or(i32::MAX),
                    &last.epoch,
                    &self.node_id,
                    &i64::try_from(last.seq).unwrap_or(i64::MAX),
                ],
            )?
            .get(0);
        tx.commit()?;
        Ok(found)
    }

    /// One transaction: the fences of the batch's shards in order, then
    /// its records.
    fn commit(&mut self, batch: &[Item]) -> Result<(), cluster::FenceError> {
        let mut fences: Vec<(u32, i64)> = batch.iter().map(|i| (i.shard, i.epoch)).collect();
        fences.sort_unstable();
        fences.dedup();
        let mut tx = self.client.transaction()?;
        for &(shard, epoch) in &fences {
            cluster::fence::check(&mut tx, shard, epoch, &self.node_id)?;
        }
        let mut shards = Vec::with_capacity(batch.len());
        let mut epochs = Vec::with_capacity(batch.len());
        let mut seqs = Vec::with_capacity(batch.len());
        let mut types = Vec::with_capacity(batch.len());
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(batch.len());
        for i in batch {
            shards.push(i32::try_from(i.shard).unwrap_or(i32::MAX));
            epochs.push(i.epoch);
            seqs.push(i64::try_from(i.seq).unwrap_or(i64::MAX));
            types.push(i16::from(i.record_type));
            payloads.push(&i.payload);
        }
        tx.execute(
            "INSERT INTO cluster_records (shard, epoch, node, seq, record_type, payload)
             SELECT s, e, $6, q, t, p FROM UNNEST($1::int4[], $2::int8[], $3::int8[], $4::int2[], $5::bytea[])
                 AS b(s, e, q, t, p)",
            &[&shards, &epochs, &seqs, &types, &payloads, &self.node_id],
        )?;
        tx.commit()?;
        Ok(())
    }
}
