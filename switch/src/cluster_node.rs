//! Cluster mode's start (`docs/cluster.md`, Status): a node with `[cluster]`
//! and a PostgreSQL `archive.url` joins the cluster in etcd
//! (`cluster::member`), is given its shards by rendezvous hashing, and
//! listens on the same wires as a single node.
//!
//! Every change is committed to PostgreSQL before its answer leaves
//! (`cluster_commit`, the fenced committer); a shard is served only once
//! it is owned and loaded from PostgreSQL, and a shard the node stops
//! owning stops being served at once. A shard handed over to another node
//! is first closed, so what it admitted is committed before its key goes
//! (`cluster_commit::ShardHandover`); SIGTERM drains the node ([`drain`]).
//! A request for a shard this node does not serve goes to its owner over
//! a node link (`cluster_link`). The timers end holds and retire payments
//! ([`sweep`]) once the cluster drainer (`cluster_drain`) has them in the
//! archive's tables, which lookups read. Webhooks are queued in
//! PostgreSQL and delivered by the node serving their shard
//! (`webhooks::start_cluster`); their endpoints, and the terminals and
//! merchant settings changed at run time, are the cluster's, in
//! PostgreSQL. No file journal, snapshot or issuer link is started, so the
//! data directory holds only its lock, the token key and API keys.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster_commit::Committer;
use crate::cluster_link::Router;
use crate::config::ClusterSettings;
use crate::journal_stage::JournalStage;
use crate::{archive_stage, datadir, metrics, net, node, Clock, Config, Running};

/// How often the node's owned shards are read for the gauge and the log.
const OWNED_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often the failsafe is decided again ([`failsafe`]).
const FAILSAFE_POLL: Duration = Duration::from_millis(200);
/// How long a failsafe ask waits for another node's answer.
const FAILSAFE_ASK_WAIT: Duration = Duration::from_millis(500);
/// How much longer than its lease an owner etcd names may be without a
/// link from here before `/readyz` says so: after a crash, etcd stops
/// naming the dead owner within the lease (and revokes within about
/// 0.5 s more), so only a partition lasts past this.
const PARTITION_MARGIN: Duration = Duration::from_secs(2);
/// Longest drain (SIGTERM in cluster mode): the node hands its shards over
/// (`cluster::member::Member::drain`) for at most this long, then stops
/// anyway; shards still owned then move when its lease is revoked, by
/// takeover (`switch_cluster_drains_total{outcome="timeout"}`). A drain
/// takes about a poll (500 ms) per `RELEASE_PER_POLL_DEFAULT` (4) shards,
/// plus a commit each.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After a drain, how long the node still answers node links before it
/// stops: every entry node reads the new owners from etcd meanwhile
/// (routes are read every 200 ms), so none writes to it as it closes.
pub(crate) const DRAIN_LINGER: Duration = Duration::from_millis(600);

const _: () = assert!(DRAIN_LINGER.as_millis() >= 2 * 200);

/// Starts a cluster node: `config.cluster` is `settings`.
///
/// # Errors
/// No PostgreSQL `archive.url` or no `security.token_key_hex` (the
/// messages say why they are needed), a
/// database or etcd that cannot be reached, a data directory another
/// process holds, or a listener that cannot bind.
pub(crate) async fn start(
    config: &Config,
    clock: Clock,
    settings: &ClusterSettings,
) -> anyhow::Result<Running> {
    if !config.archive.url.starts_with("postgres") {
        anyhow::bail!(
            "configuration [cluster]: cluster mode needs archive.url = \"postgres://…\": \
             PostgreSQL is the record of every shard's changes (docs/cluster.md), and a \
             SQLite archive in one node's data directory is not shared"
        );
    }
    if config.security.token_key_hex.is_none() {
        anyhow::bail!(
            "configuration [cluster]: cluster mode needs security.token_key_hex, the same on \
             every node: a card's velocity is counted by the node that serves its token's \
             shard, so every node must make the same token of a card (docs/cluster.md)"
        );
    }
    let dir_lock = datadir::lock(&config.listeners.data_dir)?;
    let tls = net::tls::Acceptors::load(config)?;
    let link_tls = crate::cluster_link::LinkTls::load(settings)?;
    datadir::tighten_modes(&config.listeners.data_dir)?;
    let prometheus = metrics::install();
    let token_key = crate::token_key(config)?;
    let mut node = node::Node::new(config, clock, token_key)?;
    node.open_cluster_directory(config)?;
    // The database now: a wrong URL fails at start, not at the first
    // request. Its store is the archive reader lookups use.
    let reader = archive_stage::open_store(&config.archive, &config.listeners.data_dir)?;
    let url = config.archive.url.clone();
    archive_stage::off_runtime(move || -> anyhow::Result<()> {
        let mut client = archive::pg_session(&url)?.connect()?;
        cluster::fence::install(&mut client)?;
        Ok(())
    })
    .with_context(|| {
        format!(
            "installing the fence in archive.url `{}`",
            config.archive.redacted_url()
        )
    })?;
    // Cancelled by the committer when a batch is fenced or fails: the node
    // then stops (nothing more is acknowledged).
    let cancel = CancellationToken::new();
    let merchant_ids: Vec<String> = config.merchants.iter().map(|m| m.id.clone()).collect();
    let url = config.archive.url.clone();
    let (node_id, shard_count, committer_cancel) = (
        settings.node_id.clone(),
        settings.shard_count,
        cancel.clone(),
    );
    let committer = Arc::new(archive_stage::off_runtime(move || {
        Committer::start(&url, &node_id, shard_count, &merchant_ids, committer_cancel)
    })?);
    // The webhook tables and, for a shard new to them, a mark at the
    // records' end: before this node writes anything.
    let url = config.archive.url.clone();
    archive_stage::off_runtime(move || -> anyhow::Result<()> {
        let mut client = crate::cluster_commit::connect(&url)?;
        crate::webhooks::install_cluster_tables(&mut client, shard_count)
    })?;
    node.set_journal(JournalStage::Cluster(committer.clone()));
    // Each card is counted by the node serving its shard (docs/cluster.md,
    // Velocity across nodes): asked, never counted here on the way.
    node.engine.count_cards_elsewhere();
    // F37 + F38 from this life's block: unique across nodes and lives.
    node.engine.use_number_block(committer.number_block());
    // Payment ids from the blocks each load reserves only: never moved
    // into another node's block by a payment loaded or read back.
    node.engine.take_ids_from_blocks();
    // The archive's tables, written from cluster_records (`cluster_drain`):
    // payments and answers leave memory once there, and lookups read them
    // back.
    let progress = Arc::new(archive_stage::Progress::default());
    let drainer = {
        let (url, committer, progress) = (
            config.archive.url.clone(),
            committer.clone(),
            progress.clone(),
        );
        let retention_s = settings.records_retention_s;
        let archive_retention = (
            node.clock.clone(),
            config.archive.retention_days * 86_400_000,
        );
        archive_stage::off_runtime(move || {
            crate::cluster_drain::ClusterDrainer::start(
                &url,
                committer,
                progress,
                retention_s,
                archive_retention,
            )
        })?
    };
    node.archive = Some(archive_stage::ArchiveStage::new(
        reader,
        progress,
        config.archive.lag_records_max,
    ));
    let engine = Arc::new(node);

    let bind = |addr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {what} listener to {addr}"))
    };
    let iso_listener = bind(config.listeners.iso_addr, "ISO 8583").await?;
    let frame_listener = bind(config.listeners.frame_addr, "internal-frame").await?;
    let http_listener = bind(config.listeners.http_addr, "HTTP").await?;
    let link_listener = TcpListener::bind(&settings.link_addr)
        .await
        .with_context(|| format!("binding cluster.link_addr {}", settings.link_addr))?;
    let handover = Arc::new(crate::cluster_commit::ShardHandover(committer.clone()));
    let member = join(
        settings,
        &iso_listener,
        &frame_listener,
        &http_listener,
        handover,
    )
    .await?;
    let running = Running {
        iso_addr: iso_listener.local_addr()?,
        frame_addr: frame_listener.local_addr()?,
        http_addr: http_listener.local_addr()?,
        cancel,
        tracker: TaskTracker::new(),
        engine: engine.clone(),
        drainer: std::sync::Mutex::new(None),
        dispatcher: std::sync::Mutex::new(None),
        member: std::sync::Mutex::new(None),
        drain: Duration::from_millis(config.limits.drain_timeout_ms),
        after_connections: CancellationToken::new(),
        _dir_lock: dir_lock,
    };
    let router = Arc::new(Router::new(
        &settings.node_id,
        settings.shard_count,
        committer.clone(),
        link_tls.clone(),
    ));
    // Owners alive in etcd and unreachable from here: `/readyz` 503 once
    // the link has been down past a lease and a margin (a crashed owner's
    // shards have moved by then).
    let unreachable_after = Duration::from_secs(settings.lease_ttl_s) + PARTITION_MARGIN;
    let peers = router.clone();
    let _ = engine.peers.set(Box::new(move || {
        peers.unreachable_owners(unreachable_after)
    }));
    let (iso_shared, frame_shared) = crate::spawn_wire_listeners(
        config,
        &engine,
        [iso_listener, frame_listener],
        tls,
        &running,
        Some(router.clone()),
    )?;
    let http_state =
        crate::spawn_http(config, &engine, http_listener, prometheus.clone(), &running);
    let (cancel, tracker) = (running.cancel.clone(), running.tracker.clone());
    tracker.spawn(crate::metrics_upkeep(prometheus, cancel.clone()));
    tracker.spawn(crate::directory_reloader(engine.clone(), cancel.clone()));
    tracker.spawn(sweep(
        engine.clone(),
        committer.clone(),
        config.limits.payment_retention_s * 1000,
        cancel.clone(),
    ));
    tracker.spawn(checkpoints(
        engine.clone(),
        committer.clone(),
        Duration::from_secs(settings.velocity_checkpoint_s),
        cancel.clone(),
    ));
    let shards_of = |f: fn(&Committer) -> Vec<u32>| -> Arc<dyn Fn() -> Vec<i32> + Send + Sync> {
        let committer = committer.clone();
        Arc::new(move || {
            f(&committer)
                .into_iter()
                .filter_map(|s| i32::try_from(s).ok())
                .collect()
        })
    };
    let dispatcher = crate::webhooks::start_cluster(
        crate::webhooks::ClusterStart {
            allow_networks: &config.webhooks.allow_networks,
            limits: (
                config.webhooks.timeout_ms,
                config.webhooks.keep_days,
                config.webhooks.backlog_max,
            ),
            endpoints: cluster_endpoints(config)?,
            url: &config.archive.url,
            writing: shards_of(Committer::writing_shards),
            serving: shards_of(Committer::serving_shards),
            clock: engine.clock.clone(),
            mid_of: crate::webhook_mid_of(engine.clone()),
            merchant_labels_max: config.metrics.labels_max(),
        },
        &cancel,
        &tracker,
    )?;
    *running
        .dispatcher
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(dispatcher);
    // The drainer stops with the node.
    tracker.spawn({
        let cancel = cancel.clone();
        async move {
            cancel.cancelled().await;
            let mut drainer = drainer;
            let _ = tokio::task::spawn_blocking(move || drainer.stop()).await;
        }
    });
    tracker.spawn(crate::cluster_serve::serve(
        link_listener,
        link_tls,
        (iso_shared, frame_shared),
        router.clone(),
        committer.clone(),
        cancel.clone(),
        tracker.clone(),
    ));
    let etcd = settings.etcd_client(Duration::from_millis(
        cluster::etcd::CALL_TIMEOUT_MS_DEFAULT,
    ))?;
    // Not tracked: draining connections still route (see `Router::refresh`).
    tokio::spawn(router.clone().refresh(
        etcd,
        settings.etcd_prefix.clone(),
        member.changes(),
        (running.after_connections.clone(), unreachable_after),
    ));
    let member = Arc::new(member);
    let _ = http_state.cluster.set(Box::new({
        let (member, committer) = (member.clone(), committer.clone());
        move || view(&member, &committer)
    }));
    tracker.spawn(failsafe(member.clone(), router.clone(), cancel.clone()));
    let loader = Loader {
        member: member.clone(),
        committer,
        node: engine.clone(),
        url: config.archive.url.clone(),
    };
    tracker.spawn_blocking(move || loader.run(&cancel));
    *running
        .member
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(member);
    http_state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(
        node = %settings.node_id,
        iso = %running.iso_addr,
        frame = %running.frame_addr,
        http = %running.http_addr,
        "cluster node ready"
    );
    Ok(running)
}

/// Cluster mode's timers: every [`crate::SWEEP_INTERVAL`], one
/// [`engine::Command::Tick`], which ends the holds due (expiry or
/// auto-capture) of the shards this node serves, and one retirement
/// ([`crate::retire`]: payments final for `limits.payment_retention_s`
/// and in the archive leave memory); every
/// [`crate::ARCHIVED_HOLDS_EVERY_PASSES`]th, the ended holds of archived
/// pre-authorizations of the merchants of the shards served. A hold's end
/// is a change like any other: committed to PostgreSQL under its shard's
/// fence, or refused (the shard is served elsewhere, PostgreSQL
/// reconnecting), and then the payment stays as it was and the hold is
/// tried again after [`engine::HOLD_RETRY_MS`]
/// (`switch_hold_ends_refused_total`). The node that takes a shard over
/// queues its open holds when it loads it (`Committer::acquire`). The
/// watermark is the cluster drainer's (`cluster_drain`).
async fn sweep(
    node: Arc<node::Node>,
    committer: Arc<Committer>,
    retention_ms: u64,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(crate::SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warned = None;
    for pass in 0u64.. {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (n, c) = (node.clone(), committer.clone());
        let timers = tokio::task::spawn_blocking(move || {
            let r = n.apply(engine::Command::Tick {
                archived_seq: n.archived_seq(),
            });
            if r.count > 0 {
                ::metrics::counter!("switch_holds_ended_total").increment(r.count as u64);
            }
            crate::retire(&n, retention_ms);
            if pass % crate::ARCHIVED_HOLDS_EVERY_PASSES == 0 {
                let ended = n.end_archived_holds(|m| c.serves_merchant(m));
                if ended > 0 {
                    ::metrics::counter!("switch_archived_holds_ended_total")
                        .increment(ended as u64);
                }
            }
        });
        if let Err(e) = timers.await {
            tracing::error!(error = %e, "a timer pass failed");
        }
        crate::warn_saturation(&node, &mut last_warned);
    }
}

/// Velocity checkpoints (`docs/cluster.md`, Velocity checkpoints): every
/// `cluster.velocity_checkpoint_s`, each shard served whose cards were
/// counted since its last checkpoint gets a new one
/// ([`engine::Engine::checkpoint_velocity`], record type 4, committed under
/// the shard's fence like its attempts). A takeover then replays the
/// latest checkpoint and the attempts after it, and the drainer deletes
/// the attempts before it. The due shards' checkpoints are spread over
/// the interval. A checkpoint the committer refuses (the shard handed
/// over meanwhile, PostgreSQL reconnecting) is tried again at the next
/// tick.
async fn checkpoints(
    node: Arc<node::Node>,
    committer: Arc<Committer>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Spread over the interval: one shard's checkpoint, then a pause,
        // so the node's counts and its commits never wait for all of them
        // at once.
        let due = committer.checkpoints_due();
        let pause = every / u32::try_from(due.len() + 1).unwrap_or(u32::MAX);
        for (shard, attempts) in due {
            let (n, c) = (node.clone(), committer.clone());
            let one = tokio::task::spawn_blocking(move || checkpoint_one(&n, &c, shard, attempts));
            if let Err(e) = one.await {
                tracing::error!(error = %e, "a velocity checkpoint failed");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Records one velocity checkpoint of `shard` (blocking: it scans the
/// card table), counting it; refused, its `attempts` are due again.
fn checkpoint_one(node: &node::Node, committer: &Committer, shard: u32, attempts: u64) {
    let count = committer.shard_count();
    let of_shard = |t: &[u8; 32]| cluster::assign::shard_of_card(t, count) == shard;
    let started = std::time::Instant::now();
    match node
        .engine
        .checkpoint_velocity(shard, node.clock.now_ms(), &of_shard)
    {
        Ok(done) => {
            ::metrics::counter!("switch_cluster_velocity_checkpoints_total", "outcome" => "recorded")
                .increment(1);
            ::metrics::histogram!("switch_cluster_velocity_checkpoint_bytes")
                .record(done.bytes as f64);
            ::metrics::histogram!("switch_cluster_velocity_checkpoint_seconds")
                .record(started.elapsed().as_secs_f64());
            tracing::debug!(
                shard,
                keys = done.keys,
                bytes = done.bytes,
                "cluster: velocity checkpoint recorded"
            );
        }
        Err(code) => {
            ::metrics::counter!("switch_cluster_velocity_checkpoints_total", "outcome" => "refused")
                .increment(1);
            committer.checkpoint_again(shard, attempts);
            tracing::debug!(shard, code = %code, "cluster: velocity checkpoint refused; tried again later");
        }
    }
}

/// The node's own view, `GET /cluster` (`docs/cluster.md`, `switch
/// cluster status`): its id, state, lease, and what the committer says of
/// its shards and commits (`Committer::view`), one JSON object.
fn view(member: &cluster::member::Member, committer: &Committer) -> String {
    let mut v = committer.view(&member.owned());
    v["node_id"] = member.node_id().into();
    v["state"] = if member.draining() {
        cluster::member::STATE_DRAINING
    } else {
        cluster::member::STATE_ACTIVE
    }
    .into();
    v["lease"] = member.lease().into();
    v["lease_valid"] = member.lease_valid().into();
    v["failsafe"] = member.failsafe().into();
    v.to_string()
}

/// Registers the node in etcd with its bound addresses.
async fn join(
    settings: &ClusterSettings,
    iso: &TcpListener,
    frame: &TcpListener,
    http: &TcpListener,
    handover: Arc<crate::cluster_commit::ShardHandover>,
) -> anyhow::Result<cluster::member::Member> {
    let etcd = settings.etcd_client(Duration::from_millis(
        cluster::etcd::CALL_TIMEOUT_MS_DEFAULT,
    ))?;
    let advertised = settings
        .link_advertise_addr
        .as_deref()
        .unwrap_or(&settings.link_addr);
    let mut m = cluster::member::Settings::new("default", &settings.node_id, advertised);
    m.prefix.clone_from(&settings.etcd_prefix);
    m.node.iso_addr = Some(iso.local_addr()?.to_string());
    m.node.frames_addr = Some(frame.local_addr()?.to_string());
    m.node.http_addr = Some(http.local_addr()?.to_string());
    m.shard_count = settings.shard_count;
    m.lease_ttl_s = i64::try_from(settings.lease_ttl_s).context("cluster.lease_ttl_s")?;
    cluster::member::Member::join_with(etcd, m, Some(handover))
        .await
        .with_context(|| format!("joining the cluster in etcd {:?}", settings.etcd_endpoints))
}

/// Keeps the committer's served shards equal to what the node owns: a
/// shard no longer owned (or owned at another epoch) stops being served
/// at once; a newly owned one is fenced, loaded, then served.
struct Loader {
    /// Ownership from etcd.
    member: Arc<cluster::member::Member>,
    /// Whose served set this keeps.
    committer: Arc<Committer>,
    /// The engine shards are loaded into.
    node: Arc<node::Node>,
    /// archive.url.
    url: String,
}

impl Loader {
    /// Until `cancel`: compare every [`OWNED_POLL_INTERVAL`], load what is new.
    fn run(self, cancel: &CancellationToken) {
        let mut client = None;
        // Shards whose last load failed: tried after the others, so one
        // that keeps failing (its fence row held: each try waits
        // `cluster_drain::LOAD_LOCK_WAIT_MS`) does not delay them. At most
        // the shards owned.
        let mut failed = std::collections::BTreeSet::new();
        while !cancel.is_cancelled() {
            let owned = self.member.owned();
            failed.retain(|s| owned.contains_key(s));
            let mut order: Vec<(u32, i64)> = owned.iter().map(|(&s, &e)| (s, e)).collect();
            order.sort_by_key(|(s, _)| (failed.contains(s), *s));
            // Draining (SIGTERM, or `switch cluster drain`): `/readyz` 503.
            self.node
                .draining
                .store(self.member.draining(), std::sync::atomic::Ordering::Release);
            // Cut from etcd (or past its lease): `/readyz` 503 until it
            // joins again; not in failsafe, serving its shards.
            self.node.lease_lost.store(
                !self.member.lease_valid() && !self.member.failsafe(),
                std::sync::atomic::Ordering::Release,
            );
            self.node.etcd_unreachable.store(
                self.member.etcd_unreachable(),
                std::sync::atomic::Ordering::Release,
            );
            let dropped = self.committer.drop_unowned(&owned);
            if !dropped.is_empty() {
                tracing::info!(shards = ?dropped, "cluster: shards no longer served");
            }
            for (shard, epoch) in order {
                if cancel.is_cancelled() || !self.committer.needs_load(shard) {
                    continue;
                }
                if client.is_none() {
                    client = crate::cluster_drain::loader_sessions(&self.url)
                        .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "cluster: the loader cannot reach PostgreSQL"))
                        .ok();
                }
                let Some((c, a, unreplicated)) = client.as_mut() else {
                    break;
                };
                let now_ms = self.node.clock.now_ms();
                match self.committer.acquire(
                    (c, unreplicated),
                    &self.node.engine,
                    (shard, epoch),
                    now_ms,
                    |c, s, drained, rows| {
                        crate::cluster_drain::drain_loaded(c, a, s, drained, rows)
                    },
                ) {
                    Ok(records) => {
                        failed.remove(&shard);
                        tracing::info!(shard, epoch, records, "cluster: shard loaded and served");
                    }
                    Err(e) => {
                        failed.insert(shard);
                        tracing::warn!(shard, epoch, error = %e, "cluster: shard not loaded, not served");
                        client = None;
                    }
                }
            }
            ::metrics::gauge!("switch_cluster_owned_shards").set(owned.len() as f64);
            ::metrics::gauge!("switch_cluster_served_shards")
                .set(self.committer.served_count() as f64);
            self.committer.wait_owned_changed(OWNED_POLL_INTERVAL);
        }
    }
}

/// Keeps the member's failsafe (`cluster::member::Member::set_failsafe`)
/// until `cancel`: every [`FAILSAFE_POLL`], while etcd does not answer
/// this node, it asks every other node over its link whether etcd
/// answers it ([`FAILSAFE_ASK_WAIT`] each); the failsafe holds while
/// every one says no (an etcd outage: nobody can acquire a shard, and the
/// fence keeps writes safe, so owners keep serving past their deadlines)
/// and ends as soon as one says yes or does not answer (this node is the
/// one cut off: the others will take its shards, so it stops first). Logged
/// when it changes, `switch_cluster_failsafe` 1 while it holds.
async fn failsafe(
    member: Arc<cluster::member::Member>,
    router: Arc<Router>,
    cancel: CancellationToken,
) {
    let mut on = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(FAILSAFE_POLL) => {}
        }
        let now =
            member.etcd_unreachable() && router.everyone_cut_from_etcd(FAILSAFE_ASK_WAIT).await;
        member.set_failsafe(now);
        if now != on {
            on = now;
            if on {
                tracing::warn!(
                    "cluster: etcd answers no node: failsafe, every owner keeps serving its shards (the PostgreSQL fence keeps writes safe); no join, drain or takeover until it answers"
                );
            } else {
                tracing::info!("cluster: failsafe ended");
            }
            ::metrics::gauge!("switch_cluster_failsafe").set(if on { 1.0 } else { 0.0 });
        }
    }
}

/// Hands every shard of the node over before it stops (`docs/cluster.md`,
/// Rebalancing, joins, drains): at most [`DRAIN_TIMEOUT`], then
/// [`DRAIN_LINGER`] as an entry node once done. Logged, timed
/// (`switch_cluster_drain_seconds`) and counted by outcome
/// (`switch_cluster_drains_total{outcome}`: `done`, `alone`, `timeout`,
/// `error`).
pub(crate) async fn drain(member: &cluster::member::Member) {
    use cluster::member::Drained;
    let started = std::time::Instant::now();
    tracing::info!(
        owned = member.owned().len(),
        bound_ms = DRAIN_TIMEOUT.as_millis() as u64,
        "cluster: draining: handing every shard over before stopping"
    );
    ::metrics::gauge!("switch_cluster_draining").set(1.0);
    let drained = member.drain(DRAIN_TIMEOUT).await;
    let elapsed = started.elapsed();
    ::metrics::histogram!("switch_cluster_drain_seconds").record(elapsed.as_secs_f64());
    let outcome = match drained {
        Ok(Drained::Done) => "done",
        Ok(Drained::Alone) => "alone",
        Ok(Drained::TimedOut(_)) => "timeout",
        Err(_) => "error",
    };
    ::metrics::counter!("switch_cluster_drains_total", "outcome" => outcome).increment(1);
    match drained {
        Ok(Drained::Done) => {
            tracing::info!(
                elapsed_ms = elapsed.as_millis() as u64,
                "cluster: drained: every shard handed over"
            );
            tokio::time::sleep(DRAIN_LINGER).await;
        }
        Ok(Drained::Alone) => tracing::info!(
            "cluster: drain: no other active node to take the shards; stopping with them"
        ),
        Ok(Drained::TimedOut(left)) => tracing::warn!(
            left,
            bound_ms = DRAIN_TIMEOUT.as_millis() as u64,
            "cluster: drain not finished in time; the rest move by takeover"
        ),
        Err(e) => tracing::warn!(error = %e, "cluster: drain failed; the shards move by takeover"),
    }
}

/// The cluster's webhook endpoints: PostgreSQL's row, sealed under a key
/// of `security.token_key_hex` (required in cluster mode).
pub(crate) fn cluster_endpoints(
    config: &Config,
) -> anyhow::Result<crate::webhooks::ClusterEndpoints> {
    let hex = config
        .security
        .token_key_hex
        .as_deref()
        .context("cluster mode needs security.token_key_hex")?;
    Ok(crate::webhooks::ClusterEndpoints {
        url: config.archive.url.clone(),
        key: crate::webhooks::cluster_key(hex)?,
    })
}
