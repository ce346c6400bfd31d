//! The switch: the shell around the deterministic `engine` crate. ISO 8583
//! and internal-frame listeners feed one pipeline, decode → validate →
//! risk → lifecycle → journal → encode; everything that touches a socket,
//! a file or the clock is here, everything that decides is in `engine`.
//!
//! Layout (one module per concept, all private but `cli`):
//! - `config`: embedded default, TOML file, environment, flags.
//! - `net`: listeners (connection limits per listener and per address),
//!   the one connection loop for both wires, deadlines, the outbox, and
//!   the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
//! - `wire`: the ISO 8583 and internal-frame translators, frame ⇄
//!   `engine::Command`/`Reply`.
//! - `node`: the engine with its clock (read once per command), journal
//!   and risk policy file.
//! - `journal_stage`: `engine::Journal` over the `journal` crate.
//! - `archive_stage`, `drainer`: the archive store (SQLite in the data
//!   directory, or PostgreSQL), fed from the journal by the drainer's
//!   thread, read when memory has let a payment or answer go.
//! - `keys`: API keys and mandates (file, store, admin, log-in lockout).
//! - `metrics`, `ratelog`: Prometheus handles; warnings within a budget.
//! - `upstream`: links to issuer hosts (connect, sign-on, echo, answers
//!   matched by F11).
//! - `cli`: the command line: the switch and its operator tools.
//! - `datadir`: the data directory's lock (one switch at a time) and modes.
//! - `directory`: merchants and terminals at run time (`directory.json`
//!   over the configuration, the audit log, the watcher).
//! - `webhooks`: events of payment changes posted to merchants' endpoints,
//!   queued from the journal (`retain`: the journal keeps what the archive
//!   or the webhook queue has not taken yet).

mod archive_stage;
#[doc(hidden)]
pub mod bench_api;
mod blocking;
mod business;
pub mod cli;
mod clock;
mod cluster_commit;
mod cluster_drain;
mod cluster_link;
mod cluster_node;
mod cluster_serve;
mod config;
mod datadir;
mod directory;
mod drainer;
mod forwarding;
mod journal_stage;
mod keys;
mod metrics;
mod net;
mod node;
mod ratelog;
mod retain;
mod routing_config;
mod saf;
mod upstream;
mod webhooks;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use codecs::card::TokenKey;
use codecs::framing::{FrameConfig, LengthHeader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::Clock;
pub use config::{Config, ConfigError, Overrides, EMBEDDED_DEFAULT};
pub use keys::{KeyAdmin, KeyInfo, KeysError, Mandate, NewKey, Owner, Scope};
pub use routing_config::{
    RouteSettings, RoutingSettings, SafSettings, StandInSettings, UpstreamSettings,
};

/// How often the sweeper runs.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Beyond the drain deadline, how long shutdown waits for the tasks that
/// are not connections (a snapshot being written) before closing the
/// journal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running switch.
pub struct Running {
    /// Bound ISO 8583 address.
    pub iso_addr: SocketAddr,
    /// Bound internal-frame address.
    pub frame_addr: SocketAddr,
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Cancelled to shut down.
    cancel: CancellationToken,
    /// Every task, to wait for on shutdown.
    tracker: TaskTracker,
    /// The pipeline, to close its journal last.
    engine: Arc<node::Node>,
    /// The archive drainer, stopped before the journal closes.
    drainer: std::sync::Mutex<Option<drainer::Drainer>>,
    /// The webhook dispatcher, stopped before the journal closes.
    dispatcher: std::sync::Mutex<Option<webhooks::Dispatcher>>,
    /// Cluster mode's membership in etcd, left (lease revoked, so its
    /// shards move at once) once connections have drained and the last
    /// batch is committed; `None` on a single node.
    member: std::sync::Mutex<Option<Arc<cluster::member::Member>>>,
    /// `limits.drain_timeout_ms`: how long shutdown waits for connections.
    drain: Duration,
    /// Cancelled once connections have finished at shutdown: cluster
    /// mode's routes and node links, which draining connections still use.
    after_connections: CancellationToken,
    /// The data directory's lock: held until the journal is closed (the
    /// last field, so dropped last).
    _dir_lock: datadir::DirLock,
}

impl Running {
    /// Stops accepting, answers what is in flight, and returns when every
    /// connection has finished, or at the drain deadline, whatever the
    /// clients do (each connection also ends at it; the grace covers a
    /// snapshot or sweep in progress); then flushes and closes the journal.
    ///
    /// # Errors
    /// When the journal could not be flushed and closed (it failed on a
    /// write or fsync, now or earlier): what it acknowledged stays durable,
    /// but answers held for later records were never sent.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.tracker.close();
        let grace = self.drain + SHUTDOWN_GRACE;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tracker.len(),
                "shutdown: tasks still running at the drain deadline; closing the journal"
            );
        }
        self.after_connections.cancel();
        let engine = self.engine.clone();
        let drainer = self
            .drainer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let dispatcher = self
            .dispatcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let closed = tokio::task::spawn_blocking(move || {
            if let Some(mut d) = drainer {
                d.stop();
            }
            if let Some(mut d) = dispatcher {
                d.stop();
            }
            engine.journal.shutdown()
        })
        .await;
        // Cluster mode: the lease goes after the last commit, so no batch
        // of this node is fenced by a takeover its own leaving started.
        let member = self
            .member
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(member) = member.and_then(|m| Arc::try_unwrap(m).ok()) {
            if let Err(e) = member.leave().await {
                tracing::warn!(error = %e, "cluster: leaving etcd failed; the lease expires by itself");
            }
        }
        closed
            .context("closing the journal")?
            .context("closing the journal")
    }

    /// Cluster mode: hands every shard over to the other nodes before a
    /// stop (what SIGTERM does first), for at most
    /// `cluster_node::DRAIN_TIMEOUT`; the node keeps serving meanwhile,
    /// as an entry node. Nothing on a single node.
    pub async fn drain(&self) {
        let member = self
            .member
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(member) = member {
            // `/readyz` answers 503 from the loader's next look (100 ms).
            cluster_node::drain(&member).await;
        }
    }

    /// A token that shuts the switch down when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits until shutdown completes (after the token is cancelled).
    ///
    /// # Errors
    /// As [`Running::shutdown`].
    pub async fn wait(self) -> anyhow::Result<()> {
        self.cancel.cancelled().await;
        self.shutdown().await
    }
}

/// The card-token key: from the configuration, else `<data_dir>/token.key`
/// (made with 32 random bytes at first start, mode 0600).
fn token_key(config: &Config) -> anyhow::Result<TokenKey> {
    if let Some(hex_key) = &config.security.token_key_hex {
        let bytes = hex::decode(hex_key).context("security.token_key_hex")?;
        return Ok(TokenKey::new(&bytes));
    }
    let dir = &config.listeners.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join("token.key");
    if !path.exists() {
        let mut key = [0u8; 32];
        keys::random(&mut key)?;
        keys::write_atomic(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    }
    let key = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        key.len() == 32,
        "{} must hold 32 bytes, found {}",
        path.display(),
        key.len()
    );
    Ok(TokenKey::new(&key))
}

/// Binds the listeners and starts every task. The switch runs until the
/// returned [`Running`] is shut down.
///
/// # Errors
/// When another process holds the data directory (the message names it and
/// the holder's pid), a listener cannot bind or the data directory is
/// unusable; the message names the address or file.
pub async fn start(config: Config, clock: Clock) -> anyhow::Result<Running> {
    start_on(config, clock, Arc::new(journal::OsStorage)).await
}

/// [`start`] with the journal on `storage`: for tests that inject disk
/// faults. Not part of the switch's API.
#[doc(hidden)]
pub async fn start_on(
    config: Config,
    clock: Clock,
    storage: Arc<dyn journal::Storage>,
) -> anyhow::Result<Running> {
    // Cluster mode starts apart (`cluster_node`); a single node is below,
    // unchanged.
    if let Some(cluster) = &config.cluster {
        return cluster_node::start(&config, clock, cluster).await;
    }
    // Before anything reads or writes the journal, snapshots or token key.
    let dir_lock = datadir::lock(&config.listeners.data_dir)?;
    // The listeners' TLS files, before the journal is recovered.
    let tls = net::tls::Acceptors::load(&config)?;
    datadir::tighten_modes(&config.listeners.data_dir)?;
    let prometheus = metrics::install();
    let token_key = token_key(&config)?;
    let mut node = node::Node::new(&config, clock.clone(), token_key)?;
    // Before recovery: holds are requeued with their merchants' periods.
    node.open_directory(&config)?;
    // The archive before the journal: a wrong `archive.url` fails at once.
    let data_dir = &config.listeners.data_dir;
    let mut store = archive_stage::open_store(&config.archive, data_dir)?;
    let reader = archive_stage::open_store(&config.archive, data_dir)?;
    // Segments the archive still needs survive recovery's clean-up.
    let floor = archive_stage::off_runtime(|| store.get().watermark())
        .context("reading the archive's watermark")?;
    // And the segments the webhook queue still needs.
    let (webhook_queue, webhook_watermark) =
        archive_stage::off_runtime(|| webhooks::open_queue(data_dir))?;
    let journal = Arc::new(open_journal(
        &config,
        &node.engine,
        storage,
        floor,
        retain::RetainFloor::at_open(floor, webhook_watermark),
    )?);
    let retain = Arc::new(retain::RetainFloor::new(
        journal.clone(),
        floor,
        webhook_watermark,
    ));
    // Recovery saw only what memory still held; payments it let go may
    // have the highest ids, and a new payment must not take one of them.
    let id_max = archive_stage::off_runtime(|| store.get().payment_id_max())
        .context("reading the archive's highest payment id")?;
    node.engine.reserve_ids_through(id_max);
    if id_max > 0 {
        node.engine
            .assume_answers_archived_through(node.clock.now_ms());
    }
    node.set_journal(journal_stage::JournalStage::On(journal.clone()));
    node.engine.requeue_holds();
    let watched = node.engine.rewatch_flagged();
    if watched > 0 {
        tracing::info!(
            watched,
            "cards of payments marked as scam back on the watch list"
        );
    }
    // Forwards in flight at a crash: their issuer answers were never
    // journaled, so the issuer may hold them; each gets a reversal.
    let orphans = node.apply(engine::Command::ReverseOrphans).count;
    if orphans > 0 {
        tracing::warn!(
            orphans,
            "forwards in flight at the last stop get reversals through the SAF"
        );
    }
    let progress = Arc::new(archive_stage::Progress::default());
    let retention_ms = config.archive.retention_days * 86_400_000;
    let engine_ref = &node.engine;
    let drainer_journal = journal.clone();
    let drainer_floor = retain.clone();
    let drainer_clock = clock.clone();
    let drainer = archive_stage::off_runtime(|| {
        drainer::Drainer::start(
            drainer_journal,
            store,
            progress.clone(),
            |store| seed_archive(engine_ref, store),
            drainer_clock,
            retention_ms,
            drainer_floor,
        )
    })?;
    node.archive = Some(archive_stage::ArchiveStage::new(
        reader,
        progress,
        config.archive.lag_records_max,
    ));
    // Memory within its limits before the first request: recovery brought
    // back every payment changed since the last snapshot, more than
    // `limits.payments_max` after a while without one (a crash loop); the
    // archived ones leave now, not at the first timer pass, which would
    // race the first requests (answered 96, with /readyz still 200).
    retire(&node, config.limits.payment_retention_s * 1000);
    update_pressure(&node, &mut PressureWarnings::default());
    let engine = Arc::new(node);

    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {what} listener to {addr}"))
    };
    let iso_listener = bind(config.listeners.iso_addr, "ISO 8583").await?;
    let frame_listener = bind(config.listeners.frame_addr, "internal-frame").await?;
    let http_listener = bind(config.listeners.http_addr, "HTTP").await?;
    let running = Running {
        iso_addr: iso_listener.local_addr()?,
        frame_addr: frame_listener.local_addr()?,
        http_addr: http_listener.local_addr()?,
        cancel: CancellationToken::new(),
        tracker: TaskTracker::new(),
        engine: engine.clone(),
        drainer: std::sync::Mutex::new(Some(drainer)),
        dispatcher: std::sync::Mutex::new(None),
        member: std::sync::Mutex::new(None),
        drain: Duration::from_millis(config.limits.drain_timeout_ms),
        after_connections: CancellationToken::new(),
        _dir_lock: dir_lock,
    };
    let (cancel, tracker) = (running.cancel.clone(), running.tracker.clone());
    let dispatcher = webhooks::start(
        webhooks::Start {
            allow_networks: &config.webhooks.allow_networks,
            timeout_ms: config.webhooks.timeout_ms,
            keep_days: config.webhooks.keep_days,
            backlog_max: config.webhooks.backlog_max,
            data_dir,
            journal,
            queue: webhook_queue,
            watermark: webhook_watermark,
            floor: retain,
            clock,
            mid_of: webhook_mid_of(engine.clone()),
            merchant_labels_max: config.metrics.labels_max(),
        },
        &cancel,
        &tracker,
    )?;
    *running
        .dispatcher
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(dispatcher);
    if let Some(fw) = upstream::Forwarder::start(
        &config,
        engine.clock.clone(),
        cancel.clone(),
        tracker.clone(),
    )? {
        let _ = engine.forwarder.set(fw.clone());
        tracker.spawn(saf::run(
            engine.clone(),
            fw,
            saf::Retry::of(&config),
            cancel.clone(),
        ));
    }

    spawn_wire_listeners(
        &config,
        &engine,
        [iso_listener, frame_listener],
        tls,
        &running,
        None,
    )?;
    let metrics_handle = prometheus.clone();
    let http_state = spawn_http(&config, &engine, http_listener, prometheus, &running);
    tracker.spawn(metrics_upkeep(metrics_handle, cancel.clone()));
    tracker.spawn(directory_reloader(engine.clone(), cancel.clone()));
    if engine.policy_file().is_some() {
        tracker.spawn(policy_reloader(engine.clone(), cancel.clone()));
    }
    tracker.spawn(snapshot_loop(
        engine.clone(),
        Duration::from_secs(config.journal.snapshot_interval_s),
        cancel.clone(),
    ));
    tracker.spawn(sweep_loop(engine, config.limits.clone(), cancel.clone()));
    http_state.ready.store(true, Ordering::Release);
    tracing::info!(iso = %running.iso_addr, frame = %running.frame_addr, http = %running.http_addr, "switch ready");
    Ok(running)
}

/// Starts the HTTP listener: `/metrics` from `prometheus`, `/readyz` from
/// the journal's health; ready is set by the caller once all is started.
fn spawn_http(
    config: &Config,
    node: &Arc<node::Node>,
    listener: TcpListener,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    running: &Running,
) -> Arc<net::http::HttpState> {
    let http_state = Arc::new(net::http::HttpState {
        prometheus,
        ready: false.into(),
        refresh: Box::new({
            let node = node.clone();
            move || refresh_gauges(&node)
        }),
        unhealthy: Box::new({
            let node = node.clone();
            move || node.unready()
        }),
        saf_list: Box::new({
            let node = node.clone();
            move || saf::list_lines(&node)
        }),
        saf_retry: Box::new({
            let node = node.clone();
            move || {
                node.forwarder.get().is_some_and(|f| {
                    f.saf_retry.notify_one();
                    true
                })
            }
        }),
        cluster: std::sync::OnceLock::new(),
    });
    running.tracker.spawn(net::http::serve(
        listener,
        http_state.clone(),
        net::http::HttpLimits::new(&config.limits),
        running.cancel.clone(),
        running.tracker.clone(),
    ));
    http_state
}

/// Starts the ISO 8583 and internal-frame listeners: the same connection
/// loop over each wire, each listener with its own `limits.connections_max`
/// and `connections_per_address_max`.
fn spawn_wire_listeners(
    config: &Config,
    engine: &Arc<node::Node>,
    [iso_listener, frame_listener]: [TcpListener; 2],
    tls: net::tls::Acceptors,
    running: &Running,
    router: Option<Arc<cluster_link::Router>>,
) -> anyhow::Result<(Arc<wire::iso::IsoShared>, Arc<wire::frames::FrameShared>)> {
    let profile = codecs::iso8583::Profile::by_name(&config.iso.profile).context("iso.profile")?;
    let header = if config.iso.length_header == "ascii4" {
        LengthHeader::Ascii4
    } else {
        LengthHeader::Binary2
    };
    business::install(config.metrics.labels_max());
    let iso = Arc::new(wire::iso::IsoShared {
        node: engine.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        profile,
        framing: FrameConfig {
            header,
            tpdu: config.iso.tpdu,
            frame_bytes_max: config.iso.frame_bytes_max,
        },
        router: router.clone(),
    });
    let iso_shared = iso.clone();
    // Internal frames: API-key log-in, then MO/TO and back-office requests.
    let frames = Arc::new(wire::frames::FrameShared {
        node: engine.clone(),
        keys: Arc::new(keys::KeyStore::open(&config.listeners.data_dir)),
        directory: Arc::new(match &config.cluster {
            Some(_) => directory::Admin::cluster(&config.archive.url, &config.merchants),
            None => directory::Admin::new(&config.listeners.data_dir, &config.merchants),
        }),
        webhooks: Arc::new({
            let access = wire::webhook_frames::WebhookAccess::new(
                &config.listeners.data_dir,
                engine.clock.clone(),
            );
            match &config.cluster {
                Some(_) => access.cluster(
                    webhooks::EndpointAdmin::cluster(cluster_node::cluster_endpoints(config)?),
                    &config.archive.url,
                ),
                None => access,
            }
        }),
        router,
    });
    let frame_shared = frames.clone();
    let l = &config.limits;
    let listener = |listener, name, tls| net::Listener {
        listener,
        limit: Arc::new(Semaphore::new(l.connections_max)),
        per_address: net::AddressLimit::new(l.connections_per_address_max),
        name,
        tls,
        handshake_timeout: Duration::from_millis(l.frame_read_timeout_ms),
    };
    let (cancel, tracker) = (&running.cancel, &running.tracker);
    let (inflight_max, durable) = (
        l.inflight_per_connection_max,
        engine.journal.durable_watch(),
    );
    let limits = net::ConnLimits::new(l, false);
    let iso_durable = durable.clone();
    let pressure = engine.pressure.clone();
    let iso_pressure = pressure.clone();
    tracker.spawn(listener(iso_listener, "iso", tls.iso).run(
        cancel.clone(),
        tracker.clone(),
        move |stream, cancel| {
            let wire = wire::iso::IsoWire::new(iso.clone());
            let pressure = iso_pressure.clone();
            net::Connection::new(
                wire,
                stream,
                limits,
                inflight_max,
                iso_durable.clone(),
                pressure,
            )
            .run(cancel)
        },
    ));
    let limits = net::ConnLimits::new(l, true);
    tracker.spawn(listener(frame_listener, "frame", tls.frame).run(
        cancel.clone(),
        tracker.clone(),
        move |stream, cancel| {
            let wire = wire::frames::FrameWire::new(frames.clone());
            let pressure = pressure.clone();
            net::Connection::new(
                wire,
                stream,
                limits,
                inflight_max,
                durable.clone(),
                pressure,
            )
            .run(cancel)
        },
    ));
    Ok((iso_shared, frame_shared))
}

/// Opens the journal in `<data_dir>/journal` and replays it into `engine`.
/// Records up to `archived` (the archive's watermark) are replayed as
/// archived; segments with records above `retain_floor` (the lower of the
/// archive's and the webhook queue's watermarks) are kept, whatever a
/// snapshot covers.
fn open_journal(
    config: &Config,
    engine: &engine::Engine,
    storage: Arc<dyn journal::Storage>,
    archived: u64,
    retain_floor: u64,
) -> anyhow::Result<journal::Journal> {
    // Records the archive holds are not put back in memory (the archive
    // answers for them): recovery stays fast and within payments_max.
    let mut skipped = 0u64;
    let replay = |item: journal::Replay<'_>| -> Result<(), journal::BoxError> {
        match item {
            journal::Replay::Snapshot { seq, bytes } => engine.replay_snapshot(seq, bytes)?,
            journal::Replay::Record(r) if r.seq <= archived => {
                skipped += 1;
                engine.replay_archived_record(r.seq, r.record_type, r.payload)?;
            }
            journal::Replay::Record(r) => engine.replay_record(r.seq, r.record_type, r.payload)?,
        }
        Ok(())
    };
    let dir = config.listeners.data_dir.join("journal");
    let mut jc = journal::Config::new(&dir);
    jc.ack = if config.journal.ack == "immediate" {
        journal::AckMode::Immediate
    } else {
        journal::AckMode::Durable
    };
    jc.flush_interval = Duration::from_millis(config.journal.flush_interval_ms);
    jc.queue_wait = Duration::from_millis(config.journal.enqueue_timeout_ms);
    jc.repair = config.journal.repair;
    jc.retain_floor = Some(retain_floor);
    let (journal, report) = journal::Journal::open(jc, storage, replay)
        .with_context(|| format!("recovering the journal in {} (see `switch journal verify`; `--repair` keeps the valid prefix)", dir.display()))?;
    if let Some(d) = &report.truncated {
        tracing::warn!(file = %d.file.display(), offset = d.offset, "journal: torn tail truncated");
    }
    for d in &report.dropped {
        tracing::warn!(file = %d.file.display(), offset = d.offset, "journal --repair: dropped damaged data");
    }
    ::metrics::gauge!("switch_journal_replay_seconds").set(report.elapsed.as_secs_f64());
    tracing::info!(
        snapshot_seq = ?report.snapshot_seq,
        records = report.records_replayed,
        archived_not_loaded = skipped,
        payments = stats(engine).payments,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "journal recovered"
    );
    Ok(journal)
}

/// Writes a snapshot every `interval` on a blocking thread.
async fn snapshot_loop(engine: Arc<node::Node>, interval: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let e = engine.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = e.snapshot(&mut buf);
            (r, buf)
        })
        .await;
        match result {
            Ok((r, b)) => {
                buf = b;
                match r {
                    Ok(seq) => tracing::info!(?seq, bytes = buf.len(), "snapshot written"),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "snapshot failed"),
                }
            }
            Err(_) => return,
        }
    }
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The Prometheus recorder keeps histogram samples until upkeep folds them
/// into buckets; without this task its memory would grow with traffic.
async fn metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// How often the policy file is checked for changes.
const POLICY_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Reloads the risk policy on SIGHUP and when its file changes (size or
/// modification time), without stopping traffic.
async fn policy_reloader(engine: Arc<node::Node>, cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let stamp = |e: &node::Node| {
        let meta = e.policy_file().and_then(|p| std::fs::metadata(p).ok());
        meta.map(|m| (m.len(), m.modified().ok()))
    };
    let mut seen = stamp(&engine);
    let mut tick = tokio::time::interval(POLICY_POLL_INTERVAL);
    loop {
        let hup_fired = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = hup_fired => {
                tracing::info!("SIGHUP: reloading the risk policy");
                engine.reload_policy();
                seen = stamp(&engine);
            }
            _ = tick.tick() => {
                let now = stamp(&engine);
                if now != seen {
                    seen = now;
                    engine.reload_policy();
                }
            }
        }
    }
}

/// Applies `directory.json` when it changes (checked every
/// [`directory::POLL_INTERVAL`], on the blocking pool: a read and a parse).
pub(crate) async fn directory_reloader(node: Arc<node::Node>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(directory::POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let n = node.clone();
        if tokio::task::spawn_blocking(move || n.reload_directory())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The engine's counts.
fn stats(engine: &engine::Engine) -> engine::Stats {
    match engine.query(engine::Query::Stats) {
        engine::QueryReply::Stats(s) => s,
        _ => engine::Stats::default(),
    }
}

fn refresh_gauges(node: &node::Node) {
    let stats = stats(&node.engine);
    ::metrics::gauge!("switch_risk_velocity_keys").set(stats.velocity_keys as f64);
    let counts = stats.payments_by_status;
    for (status, count) in engine::lifecycle::Status::ALL.iter().zip(counts) {
        ::metrics::gauge!("switch_payments", "status" => status.label()).set(count as f64);
    }
    ::metrics::gauge!("switch_idempotency_entries").set(stats.idempotency_entries as f64);
    if let engine::QueryReply::Fill(fill) = node.query(engine::Query::Fill) {
        ::metrics::gauge!("switch_limit", "limit" => "payments_max").set(fill.payments_max as f64);
        ::metrics::gauge!("switch_limit", "limit" => "idempotency_entries_max")
            .set(fill.idempotency_entries_max as f64);
        ::metrics::gauge!("switch_memory_bound_bytes").set(memory_bound_bytes(&fill) as f64);
    }
}

/// Memory the switch process stays within whatever the traffic, from the
/// sizing formula in docs/configuration.md ("Two tiers"): a base, plus
/// bytes per payment and per remembered answer at their limits, plus
/// SQLite's page caches.
fn memory_bound_bytes(fill: &engine::Fill) -> u64 {
    /// The process without payments: runtime, maps' initial room, buffers.
    const BASE_BYTES: u64 = 150 << 20;
    /// A payment in memory with its history, map slot and index entries.
    const PAYMENT_BYTES: u64 = 550;
    /// A remembered answer with its key and map slot.
    const ANSWER_BYTES: u64 = 90;
    /// Two SQLite connections' page caches, at most.
    const ARCHIVE_CACHE_BYTES: u64 = 2 * (128 << 20);
    BASE_BYTES
        + fill.payments_max as u64 * PAYMENT_BYTES
        + fill.idempotency_entries_max as u64 * ANSWER_BYTES
        + ARCHIVE_CACHE_BYTES
}

/// How often a saturated table is logged while it stays full.
const SATURATION_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Turns backpressure on or off from the fuller of the two bounded tables,
/// with a line in the log and the `switch_backpressure` gauge.
fn update_pressure(node: &node::Node, warned: &mut PressureWarnings) {
    let engine::QueryReply::Fill(fill) = node.query(engine::Query::Fill) else {
        return;
    };
    let payments = fill.payments * 100 / fill.payments_max.max(1);
    let answers = fill.idempotency_entries * 100 / fill.idempotency_entries_max.max(1);
    let (n, max) = if payments >= answers {
        (fill.payments, fill.payments_max)
    } else {
        (fill.idempotency_entries, fill.idempotency_entries_max)
    };
    let lag = node.journal.last_seq().saturating_sub(node.archived_seq());
    match node.pressure.update(n, max, lag) {
        Some(true) => {
            ::metrics::counter!("switch_backpressure_total").increment(1);
            warned.since_last += 1;
            let now = tokio::time::Instant::now();
            if warned
                .last
                .is_none_or(|t| now >= t + SATURATION_WARNING_INTERVAL)
            {
                tracing::warn!(
                    payments = fill.payments,
                    answers = fill.idempotency_entries,
                    archived_seq = node.archived_seq(),
                    lag,
                    times_since_last_warning = warned.since_last,
                    "backpressure on: the archive is behind (or memory nearly full waiting for it); connections stop reading"
                );
                warned.last = Some(now);
                warned.since_last = 0;
            }
        }
        Some(false) => tracing::debug!("backpressure off: connections read again"),
        None => {}
    }
    ::metrics::gauge!("switch_backpressure").set(if node.pressure.is_on() { 1.0 } else { 0.0 });
}

/// Backpressure warnings within a budget: at most one a minute (with how
/// many times it came on since the last one); `switch_backpressure_total`
/// counts every time.
#[derive(Default)]
struct PressureWarnings {
    /// When the last warning was logged.
    last: Option<tokio::time::Instant>,
    /// Times backpressure came on since then.
    since_last: u64,
}

/// One [`engine::Command::Retire`] pass at the switch's clock with the
/// archive's watermark: payments final for `retention_ms`, or any archived
/// final ones while memory is above 75% of `limits.payments_max`, leave
/// memory.
pub(crate) fn retire(node: &node::Node, retention_ms: u64) {
    let archived_seq = node.archived_seq();
    let cutoff_ms = node.clock.now_ms().saturating_sub(retention_ms);
    let r = node.apply(engine::Command::Retire {
        cutoff_ms,
        archived_seq,
    });
    if r.count > 0 {
        ::metrics::counter!("switch_payments_retired_total").increment(r.count as u64);
    }
}

/// Logs a full table at most once per [`SATURATION_WARNING_INTERVAL`]
/// (and when it clears), so a switch answering 96 to everything says so in
/// its log, not only in `switch_limit_reached_total`.
pub(crate) fn warn_saturation(node: &node::Node, last_warned: &mut Option<tokio::time::Instant>) {
    match node.saturation() {
        Some(why) => {
            let now = tokio::time::Instant::now();
            if last_warned.is_none_or(|t| now >= t + SATURATION_WARNING_INTERVAL) {
                tracing::warn!("{why}");
                *last_warned = Some(now);
            }
        }
        None => {
            if last_warned.take().is_some() {
                tracing::info!("no longer saturated: new messages are processed again");
            }
        }
    }
}

/// Ended holds in the archive are looked for every this many timer passes
/// (1 s).
pub(crate) const ARCHIVED_HOLDS_EVERY_PASSES: u64 = 10;

/// Writes every payment in memory (and its index entries) to `store`, in
/// batches (see [`drainer::Drainer::start`]).
fn seed_archive(engine: &engine::Engine, store: &mut dyn archive::Archive) -> anyhow::Result<()> {
    let mut batches = archive::Batches::new(store);
    engine.export_records(|seq, payload| batches.push(seq, payload));
    let written = batches.finish()?;
    tracing::info!(records = written, "archive: payments in memory written");
    Ok(())
}

/// The timers: every [`SWEEP_INTERVAL`], one [`engine::Command::Tick`]
/// and one [`engine::Command::Retire`] (a pass stops at the first payment
/// too recent or not yet archived, so it costs little when nothing is due,
/// and at peak rate memory stays below the backpressure threshold), at the
/// switch's clock with the archive's watermark; every
/// [`ARCHIVED_HOLDS_EVERY_PASSES`]th, the ended holds of archived
/// pre-authorizations. On the blocking pool, so no runtime worker (and
/// none of the connections it serves) stalls for a pass.
async fn sweep_loop(node: Arc<node::Node>, limits: config::Limits, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention_ms = limits.payment_retention_s * 1000;
    let mut last_warned = None;
    let mut pressure_warned = PressureWarnings::default();
    for pass in 0u64.. {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let n = node.clone();
        let timers = tokio::task::spawn_blocking(move || {
            let ended = n.apply(engine::Command::Tick {
                archived_seq: n.archived_seq(),
            });
            if ended.count > 0 {
                ::metrics::counter!("switch_holds_ended_total").increment(ended.count as u64);
            }
            retire(&n, retention_ms);
            if pass % ARCHIVED_HOLDS_EVERY_PASSES == 0 {
                let ended = n.end_archived_holds(|_| true);
                if ended > 0 {
                    ::metrics::counter!("switch_archived_holds_ended_total")
                        .increment(ended as u64);
                }
            }
        });
        if let Err(e) = timers.await {
            tracing::error!(error = %e, "a timer pass failed");
        }
        update_pressure(&node, &mut pressure_warned);
        warn_saturation(&node, &mut last_warned);
    }
}

/// The MID of a merchant index by `node`'s directory as it stands (the
/// configuration's merchants and those added at run time), for the webhook
/// dispatcher.
pub(crate) fn webhook_mid_of(node: Arc<node::Node>) -> webhooks::MidOf {
    Box::new(move |i| match node.query(engine::Query::MerchantAt(i)) {
        engine::QueryReply::Merchant(Some(m)) => Some(String::from_utf8_lossy(&m.id).into_owned()),
        _ => None,
    })
}
