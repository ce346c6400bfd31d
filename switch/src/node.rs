//! The shell around the engine: the engine with the clock that times its
//! commands, the journal its records go to, and the risk policy file it
//! is reloaded from. Every edge holds an `Arc<Node>` and speaks to the
//! engine through [`Node::apply`] and [`Node::query`] only.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use codecs::card::TokenKey;
use engine::{Command, Engine, Query, QueryReply, Reply};

use crate::clock::Clock;
use crate::config::Config;
use crate::journal_stage::JournalStage;

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
    /// The risk policy file, if not the embedded default.
    policy_file: Option<PathBuf>,
    /// Turns block-listed PANs into tokens when a policy is compiled.
    token_key: TokenKey,
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
            policy_file,
            token_key,
        })
    }

    /// Sends later records to `journal` (after recovery).
    pub(crate) fn set_journal(&mut self, journal: JournalStage) {
        self.engine.set_journal(Box::new(journal.clone()));
        self.journal = journal;
    }

    /// Applies `command` now.
    pub(crate) fn apply(&self, command: Command<'_>) -> Reply {
        self.engine.apply(command, self.clock.now_ms())
    }

    /// Reads from the engine.
    pub(crate) fn query(&self, query: Query<'_>) -> QueryReply {
        self.engine.query(query)
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

    /// Why the switch should not be sent traffic now: a failed journal, or
    /// a full table.
    pub(crate) fn unready(&self) -> Option<String> {
        self.journal.failure().or_else(|| self.saturation())
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
