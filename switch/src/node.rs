//! The shell around the engine: the engine with the clock that times its
//! commands, the journal its records go to, and the risk policy file it
//! is reloaded from. Every edge holds an `Arc<Node>` and speaks to the
//! engine through [`Node::apply`] and [`Node::query`] only.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use codecs::card::TokenKey;
use engine::{Command, Engine, Fetched, ListFilter, Payment, Query, QueryReply, Reply, Wait};

use crate::archive_stage::ArchiveStage;
use crate::clock::Clock;
use crate::config::Config;
use crate::journal_stage::JournalStage;

/// Most archived open pre-authorizations whose hold ended that one timer
/// pass ends per merchant.
const OPEN_HOLDS_PER_PASS: usize = 1_000;

/// Most archive lookups one request makes: its answer, then its original
/// (read again when the first copy may be stale).
const LOOKUPS_PER_REQUEST_MAX: usize = 3;

/// How long a snapshot waits for changes in progress before it is skipped.
const SNAPSHOT_FLIP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The engine and what it needs from the outside world.
pub(crate) struct Node {
    /// The deterministic core.
    pub(crate) engine: Engine,
    /// The switch's clock, read once per command, here.
    pub(crate) clock: Clock,
    /// Where records go (the engine holds a handle to the same journal).
    pub(crate) journal: JournalStage,
    /// Where payments live after memory; `None` before start-up opens it
    /// (and in tests of the pipeline alone).
    pub(crate) archive: Option<ArchiveStage>,
    /// Whether connections hold off reading (set by the timers).
    pub(crate) pressure: crate::net::Pressure,
    /// The links to issuer hosts; unset without `[[upstreams]]` (every
    /// forward then ends as never sent).
    pub(crate) forwarder: std::sync::OnceLock<std::sync::Arc<crate::upstream::Forwarder>>,
    /// Merchants and terminals at run time: `directory.json` as last
    /// applied (`None` in tests of the pipeline alone).
    directory: std::sync::Mutex<Option<crate::directory::Watch>>,
    /// The risk policy file, if not the embedded default.
    policy_file: Option<PathBuf>,
    /// Turns block-listed PANs into tokens when a policy is compiled.
    token_key: TokenKey,
    /// Set while a cluster node drains (SIGTERM, or `switch cluster
    /// drain`; mirrored by its loader): `/readyz` answers 503 so load
    /// balancers move its clients to other nodes.
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// Cluster mode: set while the node's etcd lease has run out locally
    /// (etcd unreachable, or the lease expired): it serves no shard.
    pub(crate) lease_lost: std::sync::atomic::AtomicBool,
    /// Cluster mode: etcd did not answer the node's last lease renewal
    /// (what it tells another node asking before a failsafe).
    pub(crate) etcd_unreachable: std::sync::atomic::AtomicBool,
    /// Cluster mode: why some shards' owners cannot be reached from here
    /// (`Router::unreachable_owners`), asked at each `/readyz`.
    #[allow(clippy::type_complexity)]
    pub(crate) peers: std::sync::OnceLock<Box<dyn Fn() -> Option<String> + Send + Sync>>,
}

/// Compiles the risk policy in `path` with `token_key`.
fn compile_policy(path: &Path, token_key: &TokenKey) -> anyhow::Result<risk::Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading risk policy {}", path.display()))?;
    risk::Policy::compile(&text, &engine::tokenizer(token_key))
        .with_context(|| format!("risk policy {}", path.display()))
}

/// The engine's settings from the configuration.
/// (Validation has checked every F42 is 15 bytes and every F41 8.)
fn settings(config: &Config) -> engine::Settings {
    let merchants = config
        .merchants
        .iter()
        .map(|m| engine::Merchant {
            id: m.id.as_bytes().try_into().unwrap_or([b' '; 15]),
            terminals: m
                .terminals
                .iter()
                .filter_map(|t| t.as_bytes().try_into().ok())
                .collect(),
            enabled: m.enabled,
            currencies: m.currencies.clone(),
            over_capture_pct: m.over_capture_pct,
            refunds_allowed: m.refunds_allowed,
            moto_allowed: m.moto_allowed,
            hold_period_ms: m.hold_period_h * 3_600_000,
            auto_capture_ms: m.auto_capture_h.map(|h| h * 3_600_000),
        })
        .collect();
    engine::Settings {
        merchants,
        payments_max: config.limits.payments_max,
        idempotency_entries_max: config.limits.idempotency_entries_max,
        idempotency_window_ms: config.limits.idempotency_window_s * 1000,
        routing: crate::routing_config::routing(&config.upstreams, &config.routes, &config.routing),
        stand_in: crate::routing_config::stand_in(&config.stand_in),
        forwards_max: engine::upstream::FORWARDS_MAX_DEFAULT,
        saf_max: config.saf.entries_max,
    }
}

impl Node {
    /// The engine for a validated `config`, with its risk policy (from
    /// `risk.policy_file` or the embedded default) and no journal yet.
    ///
    /// # Errors
    /// When the policy file cannot be read or is invalid (the message
    /// names the file, line and key).
    pub(crate) fn new(config: &Config, clock: Clock, token_key: TokenKey) -> anyhow::Result<Node> {
        let policy_file = config.risk.policy_file.clone();
        let policy = match &policy_file {
            None => risk::Policy::embedded(&engine::tokenizer(&token_key)),
            Some(path) => compile_policy(path, &token_key)?,
        };
        let engine = Engine::new(settings(config), token_key.clone(), policy, clock.now_ms());
        Ok(Node {
            engine,
            clock,
            journal: JournalStage::Off,
            archive: None,
            pressure: crate::net::Pressure::default(),
            forwarder: std::sync::OnceLock::new(),
            directory: std::sync::Mutex::new(None),
            policy_file,
            token_key,
            draining: std::sync::atomic::AtomicBool::new(false),
            lease_lost: std::sync::atomic::AtomicBool::new(false),
            etcd_unreachable: std::sync::atomic::AtomicBool::new(false),
            peers: std::sync::OnceLock::new(),
        })
    }

    /// Serves the merchants and terminals of `<data_dir>/directory.json`
    /// over the configuration's, and watches the file from now on.
    ///
    /// # Errors
    /// When the file cannot be read or does not resolve (the message names
    /// the file and the entry).
    pub(crate) fn open_directory(&self, config: &Config) -> anyhow::Result<()> {
        let data_dir = &config.listeners.data_dir;
        let (watch, directory) = crate::directory::Watch::open(data_dir, &config.merchants)
            .with_context(|| format!("the directory in {}", data_dir.display()))?;
        self.engine
            .replace_directory(directory)
            .context("the directory file")?;
        *self
            .directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(watch);
        Ok(())
    }

    /// Cluster mode: serves the merchants and terminals of the cluster's
    /// directory in PostgreSQL (`directory::pg`) over the configuration's,
    /// and watches it from now on.
    ///
    /// # Errors
    /// When it cannot be read or does not resolve.
    pub(crate) fn open_cluster_directory(&self, config: &Config) -> anyhow::Result<()> {
        let (watch, directory) =
            crate::directory::Watch::open_cluster(&config.archive.url, &config.merchants)
                .context("the cluster's directory in archive.url")?;
        self.engine
            .replace_directory(directory)
            .context("the cluster's directory")?;
        *self
            .directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(watch);
        Ok(())
    }

    /// Applies `directory.json` when it changed (the watcher's poll, and
    /// at once after a change made over internal frames). A file that does
    /// not resolve leaves the last good directory in force: logged within
    /// a budget and counted (`switch_directory_errors_total`).
    pub(crate) fn reload_directory(&self) {
        let mut guard = self
            .directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(watch) = guard.as_mut() else {
            return;
        };
        match watch.poll(|d| self.engine.replace_directory(d)) {
            Ok(false) => {}
            Ok(true) => {
                metrics::counter!("switch_directory_reloads_total", "result" => "ok").increment(1);
            }
            Err(e) => {
                metrics::counter!("switch_directory_reloads_total", "result" => "error")
                    .increment(1);
                metrics::counter!("switch_directory_errors_total").increment(1);
                crate::ratelog::warn_limited!(
                    "directory_reload",
                    error = %e,
                    "directory file refused; the last good directory stays in force"
                );
            }
        }
    }

    /// Sends later records to `journal` (after recovery).
    pub(crate) fn set_journal(&mut self, journal: JournalStage) {
        self.engine.set_journal(Box::new(journal.clone()));
        self.journal = journal;
    }

    /// Applies `command` now. Commands that may name payments memory let
    /// go go through [`Node::apply_resolving`] instead.
    pub(crate) fn apply(&self, command: Command<'_>) -> Reply {
        self.engine.apply(command, self.clock.now_ms())
    }

    /// Applies payment message `request`, answering the engine's archive
    /// lookups ([`Wait::Archive`]).
    pub(crate) fn apply_message(&self, request: engine::Request<'_>) -> Reply {
        self.resolving(|fetched| self.apply(Command::Resume { request, fetched }))
    }

    /// As [`Node::apply_message`], for an edge that cannot wait for an
    /// issuer (internal frames, for now): a routed authorization ends as
    /// never sent (stand-in, or 91), a repeat of one still upstream is 91.
    pub(crate) fn apply_message_here(&self, request: engine::Request<'_>) -> Reply {
        let reply = self.apply_message(request);
        self.settle_here(reply)
    }

    /// `reply` for an edge that cannot wait for an issuer: a routed
    /// authorization ends as never sent (stand-in, or 91), a repeat of one
    /// still upstream is 91.
    pub(crate) fn settle_here(&self, reply: Reply) -> Reply {
        match reply.wait {
            Wait::Upstream(f) => self.apply(Command::Upstream {
                forward: f.id,
                outcome: engine::upstream::Outcome::NotSent,
            }),
            Wait::Joined(_) => Reply {
                wait: Wait::Nothing,
                ..reply
            },
            _ => reply,
        }
    }

    /// As [`Node::apply_message_here`], except that a routed authorization
    /// is left waiting for its issuer ([`Wait::Upstream`]) when links are
    /// configured: the edge sends it (internal frames' MO/TO).
    pub(crate) fn apply_message_here_or_forward(&self, request: engine::Request<'_>) -> Reply {
        if self.forwarder.get().is_none() {
            return self.apply_message_here(request);
        }
        let reply = self.apply_message(request);
        match reply.wait {
            Wait::Joined(_) => Reply {
                wait: Wait::Nothing,
                ..reply
            },
            _ => reply,
        }
    }

    /// Runs `apply` (which applies one command with what the archive
    /// returned so far), again each time the engine asks for a lookup, at
    /// most [`LOOKUPS_PER_REQUEST_MAX`] times. When the archive cannot be
    /// read the engine's reply stands: 96, with a warning and a metric.
    pub(crate) fn resolving(&self, apply: impl Fn(&Fetched) -> Reply) -> Reply {
        self.resolving_from(Fetched::default(), apply)
    }

    /// Applies payment message `request` again with the card's verdict
    /// from the node counting it (after [`Wait::Velocity`]), answering the
    /// engine's archive lookups.
    pub(crate) fn apply_message_counted(
        &self,
        request: engine::Request<'_>,
        card: risk::CardVerdict,
    ) -> Reply {
        let fetched = Fetched {
            velocity: Some(card),
            ..Fetched::default()
        };
        self.resolving_from(fetched, |fetched| {
            self.apply(Command::Resume { request, fetched })
        })
    }

    /// [`Node::resolving`], starting from what `fetched` holds.
    fn resolving_from(&self, mut fetched: Fetched, apply: impl Fn(&Fetched) -> Reply) -> Reply {
        let mut reply = apply(&fetched);
        for _ in 0..LOOKUPS_PER_REQUEST_MAX {
            let Wait::Archive(fetch) = reply.wait else {
                return reply;
            };
            let Some(archive) = &self.archive else {
                break;
            };
            if let Err(e) = archive.lookup(fetch, &mut fetched) {
                ::metrics::counter!("switch_archive_errors_total", "op" => "lookup").increment(1);
                crate::ratelog::warn_limited!(
                    "archive_lookup",
                    error = %e,
                    "archive lookup failed; answering 96"
                );
                break;
            }
            reply = apply(&fetched);
        }
        Reply {
            wait: Wait::Nothing,
            ..reply
        }
    }

    /// The archive's watermark: every journal record up to it is in the
    /// archive (all of them without an archive: nothing waits for it).
    pub(crate) fn archived_seq(&self) -> u64 {
        self.archive
            .as_ref()
            .map_or(u64::MAX, |a| a.progress.watermark())
    }

    /// Ends the holds that have ended of open pre-authorizations memory let
    /// go (they are in the archive only): per merchant, the oldest first,
    /// at most [`OPEN_HOLDS_PER_PASS`], of the merchants (by index) for
    /// which `here` is true (cluster mode: those of the shards served).
    /// Returns how many ended. Blocking.
    pub(crate) fn end_archived_holds(&self, here: impl Fn(u32) -> bool) -> usize {
        let Some(archive) = &self.archive else {
            return 0;
        };
        let now_ms = self.clock.now_ms();
        let mut ended = 0;
        let QueryReply::Directory(directory) = self.query(Query::Directory) else {
            return 0;
        };
        // Per merchant, how long after creation a hold ends (auto-capture,
        // else the hold period).
        let periods_ms = directory
            .merchants()
            .iter()
            .map(|m| m.auto_capture_ms.unwrap_or(m.hold_period_ms));
        for (index, period_ms) in periods_ms.enumerate() {
            if !here(index as u32) {
                continue;
            }
            let created_before_ms = now_ms.saturating_sub(period_ms) + 1;
            match archive.open_holds(index as u32, created_before_ms, OPEN_HOLDS_PER_PASS) {
                Ok(payments) if payments.is_empty() => {}
                Ok(payments) => {
                    ended += self
                        .apply(Command::EndHolds {
                            payments: &payments,
                        })
                        .count;
                }
                Err(e) => {
                    ::metrics::counter!("switch_archive_errors_total", "op" => "open_holds")
                        .increment(1);
                    crate::ratelog::warn_limited!(
                        "archive_open_holds",
                        error = %e,
                        "archive: reading ended holds failed; retrying"
                    );
                    break;
                }
            }
        }
        ended
    }

    /// Reads from the engine.
    pub(crate) fn query(&self, query: Query<'_>) -> QueryReply {
        self.engine.query(query)
    }

    /// Payment `id` if it belongs to one of `scope`'s merchants: from
    /// memory, else from the archive.
    ///
    /// # Errors
    /// When memory does not hold it and the archive cannot be read.
    pub(crate) fn payment(&self, scope: &[u32], id: u64) -> anyhow::Result<Option<Payment>> {
        if let QueryReply::Payment(Some(p)) = self.query(Query::Payment { scope, id }) {
            return Ok(Some(p));
        }
        match &self.archive {
            Some(archive) => Ok(archive.payment(scope, id)?),
            None => Ok(None),
        }
    }

    /// One page of `scope`'s payments matching `filter`, newest first,
    /// ids below `before_id`: memory's and the archive's merged (memory's
    /// copy wins: it is never older). Whether more follow.
    ///
    /// # Errors
    /// When the archive cannot be read.
    pub(crate) fn list(
        &self,
        scope: &[u32],
        filter: ListFilter<'_>,
        before_id: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<(Vec<Payment>, bool)> {
        let query = Query::List {
            scope,
            filter,
            before_id,
            limit,
        };
        let QueryReply::Page { rows, more } = self.query(query) else {
            anyhow::bail!("the engine answered a list with something else");
        };
        let Some(archive) = &self.archive else {
            return Ok((rows, more));
        };
        let mut archived = archive.list(scope, &filter, before_id, limit)?;
        // Memory has the newest image of a payment it holds: an older
        // image in the archive may match where the payment no longer does
        // (flag taken off, captured since), so it is not listed from there.
        archived.payments.retain(|p| {
            !matches!(
                self.query(Query::Payment { scope, id: p.id }),
                QueryReply::Payment(Some(_))
            )
        });
        Ok(merge_pages(
            rows,
            more,
            archived.payments,
            archived.more,
            limit,
        ))
    }

    /// Why new messages get 96 now, when a bounded table is full
    /// (`limits.payments_max`, `limits.idempotency_entries_max`).
    pub(crate) fn saturation(&self) -> Option<String> {
        let QueryReply::Fill(fill) = self.engine.query(Query::Fill) else {
            return None;
        };
        let (limit, n, max) = fill.saturated()?;
        Some(format!(
            "saturated: limits.{limit} reached ({n} of {max}); new messages are answered 96"
        ))
    }

    /// Why the switch should not be sent traffic now: a failed journal, a
    /// failing or lagging archive, a full table, or backpressure.
    pub(crate) fn unready(&self) -> Option<String> {
        // Every reason, not only the first: an SRE looking at a failing
        // archive also wants to know the switch has stopped reading.
        let reasons: Vec<String> = [
            self.journal.failure(),
            self.archive
                .as_ref()
                .and_then(|a| a.unready(self.journal.last_seq())),
            self.saturation(),
            self.saf_full(),
            self.pressure.is_on().then(|| {
                "backpressure: the archive is behind (or memory nearly full waiting for it); new requests wait".to_owned()
            }),
            self.draining
                .load(std::sync::atomic::Ordering::Acquire)
                .then(|| "draining: handing every shard to the other nodes before stopping".to_owned()),
            self.lease_lost
                .load(std::sync::atomic::Ordering::Acquire)
                .then(|| "cluster: no etcd lease (etcd unreachable, or the lease expired): serving no shard until the node joins again".to_owned()),
            self.peers.get().and_then(|unreachable| unreachable()),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!reasons.is_empty()).then(|| reasons.join("\n"))
    }

    /// Whether the SAF is at the point where no new authorization is
    /// forwarded (`saf.entries_max`, less the share kept for advices).
    fn saf_full(&self) -> Option<String> {
        let engine::QueryReply::Fill(f) = self.query(engine::Query::Fill) else {
            return None;
        };
        (f.saf * 100 >= f.saf_max * engine::upstream::SAF_FORWARD_STOP_PCT).then(|| {
            format!(
                "saf: {} of saf.entries_max {} queued; routed authorizations get 91 until the issuers take them",
                f.saf, f.saf_max
            )
        })
    }

    /// The policy file, if any (watched for changes).
    pub(crate) fn policy_file(&self) -> Option<&Path> {
        self.policy_file.as_deref()
    }

    /// Recompiles the policy file and swaps it in; on error the old policy
    /// stays, the error is logged and counted.
    pub(crate) fn reload_policy(&self) -> bool {
        let Some(path) = &self.policy_file else {
            return false;
        };
        match compile_policy(path, &self.token_key) {
            Ok(policy) => {
                self.engine.replace_policy(policy);
                metrics::counter!("switch_risk_policy_reloads_total", "result" => "ok")
                    .increment(1);
                tracing::info!(file = %path.display(), "risk policy reloaded");
                true
            }
            Err(e) => {
                metrics::counter!("switch_risk_policy_reloads_total", "result" => "error")
                    .increment(1);
                tracing::error!(
                    error = format!("{e:#}"),
                    "risk policy reload failed; keeping the old policy"
                );
                false
            }
        }
    }

    /// Writes a snapshot (blocking: run it on a blocking thread): every
    /// change up to the journal's last sequence is in it (see the engine's
    /// `commit` on epochs).
    ///
    /// # Errors
    /// When changes are still in progress after a while, or the journal
    /// refuses it; the journal stays usable.
    pub(crate) fn snapshot(&self, buf: &mut Vec<u8>) -> anyhow::Result<Option<u64>> {
        let JournalStage::On(journal) = &self.journal else {
            return Ok(None);
        };
        let seq = journal.last_seq();
        let old = self.engine.flip_epoch();
        let deadline = std::time::Instant::now() + SNAPSHOT_FLIP_WAIT;
        while !self.engine.epoch_drained(old) {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("changes still in progress after 5 s; snapshot skipped");
            }
            std::thread::yield_now();
        }
        journal.wait_durable_blocking(seq)?;
        self.engine.encode_snapshot(buf);
        journal.snapshot(seq, buf)?;
        Ok(Some(seq))
    }
}

/// Two pages, each newest first, merged into one of at most `limit`: a
/// payment in both is taken from `memory`. More follow when either page
/// had more, or rows were left over.
fn merge_pages(
    memory: Vec<Payment>,
    memory_more: bool,
    archived: Vec<Payment>,
    archived_more: bool,
    limit: usize,
) -> (Vec<Payment>, bool) {
    let mut out = Vec::with_capacity(limit.min(memory.len() + archived.len()));
    let (mut m, mut a) = (
        memory.into_iter().peekable(),
        archived.into_iter().peekable(),
    );
    let mut left_over = false;
    loop {
        let next = match (m.peek(), a.peek()) {
            (None, None) => break,
            (Some(x), Some(y)) if x.id == y.id => {
                a.next();
                m.next()
            }
            (Some(x), Some(y)) if x.id > y.id => m.next(),
            (Some(_), None) => m.next(),
            _ => a.next(),
        };
        let Some(p) = next else { break };
        if out.len() == limit {
            left_over = true;
            break;
        }
        out.push(p);
    }
    (out, left_over || memory_more || archived_more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ps: &[Payment]) -> Vec<u64> {
        ps.iter().map(|p| p.id).collect()
    }

    /// Payments with these ids (only ids matter to the merge).
    fn page(ids: &[u64]) -> Vec<Payment> {
        ids.iter()
            .map(|&id| archive::contract::payment(id, 0, 0, 100))
            .collect()
    }

    #[test]
    fn pages_merge_newest_first_without_duplicates() {
        let (rows, more) = merge_pages(page(&[9, 7, 4]), false, page(&[8, 7, 5, 1]), false, 10);
        assert_eq!(ids(&rows), [9, 8, 7, 5, 4, 1]);
        assert!(!more);
        let (rows, more) = merge_pages(page(&[9, 7]), false, page(&[8, 5]), false, 3);
        assert_eq!(ids(&rows), [9, 8, 7]);
        assert!(more, "a row was left over");
        let (rows, more) = merge_pages(page(&[9]), false, page(&[]), true, 3);
        assert_eq!(ids(&rows), [9]);
        assert!(more, "the archive had more");
    }
}
