//! Cluster mode's start (`docs/cluster.md`, Status): a node with `[cluster]`
//! and a PostgreSQL `archive.url` joins the cluster in etcd
//! (`cluster::member`), is given its shards by rendezvous hashing, and
//! listens on the same wires as a single node.
//!
//! What this slice does **not** have yet is the request path: PostgreSQL
//! as the journal of owned shards (the fenced committer), node links and
//! takeover loads. Until they exist a cluster node must not acknowledge a
//! change, since nothing would survive its death or be seen by the node
//! that takes its shards over. Its journal stage is therefore
//! [`JournalStage::Refuse`]: every change the engine makes is rolled back
//! and answered 91 (issuer or switch inoperative: the terminal may try
//! again later), while what changes nothing (network management,
//! format errors, unknown terminals) is answered as on a single node. No
//! file journal, snapshot, drainer, webhook dispatcher or issuer link is
//! started, so the data directory holds only its lock, the token key and
//! API keys.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ClusterSettings;
use crate::journal_stage::JournalStage;
use crate::{archive_stage, datadir, metrics, net, node, Clock, Config, Running};

/// How often the node's owned shards are read for the gauge and the log.
const OWNED_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Starts a cluster node: `config.cluster` is `settings`.
///
/// # Errors
/// No PostgreSQL `archive.url` (the message says why it is needed), a
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
    let dir_lock = datadir::lock(&config.listeners.data_dir)?;
    let tls = net::tls::Acceptors::load(config)?;
    datadir::tighten_modes(&config.listeners.data_dir)?;
    let prometheus = metrics::install();
    let token_key = crate::token_key(config)?;
    let mut node = node::Node::new(config, clock, token_key)?;
    node.open_directory(config)?;
    // The database now: a wrong URL fails at start, not at the first
    // request. Its store is the archive reader lookups use.
    let reader = archive_stage::open_store(&config.archive, &config.listeners.data_dir)?;
    let url = config.archive.url.clone();
    archive_stage::off_runtime(move || -> anyhow::Result<()> {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        cluster::fence::install(&mut client)?;
        Ok(())
    })
    .with_context(|| {
        format!(
            "installing the fence in archive.url `{}`",
            config.archive.redacted_url()
        )
    })?;
    drop(reader);
    node.set_journal(JournalStage::Refuse);
    let engine = Arc::new(node);

    let bind = |addr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {what} listener to {addr}"))
    };
    let iso_listener = bind(config.listeners.iso_addr, "ISO 8583").await?;
    let frame_listener = bind(config.listeners.frame_addr, "internal-frame").await?;
    let http_listener = bind(config.listeners.http_addr, "HTTP").await?;
    let member = join(settings, &iso_listener, &frame_listener, &http_listener).await?;
    let running = Running {
        iso_addr: iso_listener.local_addr()?,
        frame_addr: frame_listener.local_addr()?,
        http_addr: http_listener.local_addr()?,
        cancel: CancellationToken::new(),
        tracker: TaskTracker::new(),
        engine: engine.clone(),
        drainer: std::sync::Mutex::new(None),
        dispatcher: std::sync::Mutex::new(None),
        member: std::sync::Mutex::new(None),
        drain: Duration::from_millis(config.limits.drain_timeout_ms),
        _dir_lock: dir_lock,
    };
    crate::spawn_wire_listeners(
        config,
        &engine,
        [iso_listener, frame_listener],
        tls,
        &running,
    )?;
    let http_state =
        crate::spawn_http(config, &engine, http_listener, prometheus.clone(), &running);
    let (cancel, tracker) = (running.cancel.clone(), running.tracker.clone());
    tracker.spawn(crate::metrics_upkeep(prometheus, cancel.clone()));
    let member = Arc::new(member);
    tracker.spawn(watch_owned(member.clone(), cancel));
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
        "cluster node ready (changes answered 91 until the request path is built)"
    );
    Ok(running)
}

/// Registers the node in etcd with its bound addresses.
async fn join(
    settings: &ClusterSettings,
    iso: &TcpListener,
    frame: &TcpListener,
    http: &TcpListener,
) -> anyhow::Result<cluster::member::Member> {
    let etcd = cluster::etcd::Etcd::new(
        &settings.etcd_endpoints,
        Duration::from_millis(cluster::etcd::CALL_TIMEOUT_MS_DEFAULT),
    )
    .context("cluster.etcd_endpoints")?;
    let mut m = cluster::member::Settings::new("default", &settings.node_id, &settings.link_addr);
    m.prefix.clone_from(&settings.etcd_prefix);
    m.node.iso_addr = Some(iso.local_addr()?.to_string());
    m.node.frames_addr = Some(frame.local_addr()?.to_string());
    m.node.http_addr = Some(http.local_addr()?.to_string());
    m.shard_count = settings.shard_count;
    m.lease_ttl_s = i64::try_from(settings.lease_ttl_s).context("cluster.lease_ttl_s")?;
    cluster::member::Member::join(etcd, m)
        .await
        .with_context(|| format!("joining the cluster in etcd {:?}", settings.etcd_endpoints))
}

/// Publishes how many shards the node owns (`switch_cluster_owned_shards`)
/// and logs each change of that count.
async fn watch_owned(member: Arc<cluster::member::Member>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(OWNED_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let owned = member.owned().len();
        ::metrics::gauge!("switch_cluster_owned_shards").set(owned as f64);
        if last != Some(owned) {
            tracing::info!(
                owned,
                lease_valid = member.lease_valid(),
                "cluster: shards owned"
            );
            last = Some(owned);
        }
    }
}
