//! Node links (`docs/cluster.md`, The request path), the simplest form: an
//! ISO 8583 request whose merchant's shard this node does not serve is
//! sent, as the terminal's frame body, to the shard's owner over one
//! pipelined TCP connection per owner; the owner runs its unchanged
//! pipeline, waits for the PostgreSQL commit, and sends back the framed
//! answer, which joins the terminal's connection through its `Later`
//! channel. A request not sent (no owner, over [`LINK_INFLIGHT_MAX`]) is
//! routed again up to [`OWNER_WAIT`]; one written whose answer did not come
//! within [`LINK_TIMEOUT`] (or whose connection broke) is sent again to the
//! owner etcd names, keyed, so the owner's idempotency answers it once, up
//! to [`LINKED_WAIT_MAX`]; past these bounds the entry node answers 91,
//! without its engine (whose memory of a shard it does not serve may be
//! stale).
//!
//! Frame on the link, both ways: `u32` length (big endian) of what follows,
//! `u64` request id, then the ISO 8583 body (request) or, back, the time
//! the owner held it (`u32` µs) and the framed answer (response); at most
//! [`LINK_FRAME_BYTES_MAX`], checked before allocation. The entry node
//! records the round trip less the owner's time as forwarding's cost
//! (`switch_cluster_forward_added_seconds`). A request id with
//! [`VELOCITY_ASK_BIT`] set is a card velocity ask instead (docs/cluster.md, Velocity across nodes): the
//! body is an `engine::velocity::VelocityAsk`'s bytes, and the answer is
//! [`VELOCITY_COUNTED`] and the card's verdict (4 bytes) once the attempt's
//! record is committed, [`VELOCITY_REFUSED`] when it could not be
//! recorded, or empty when the node does not serve the card's shard. A linked request is always applied locally by its receiver,
//! never sent on, so a stale route cannot loop. A request id with
//! [`FRAME_BIT`] set carries an internal frame (`wire::frames::cluster`);
//! one with [`WATCH_BIT`] a card's watch-list change for the node counting
//! the card (a payment marked or unmarked as scam by hand).
//! Listeners with TPDUs are not routed (served locally only). The link
//! carries card data: with `cluster.link_tls_*` ([`LinkTls`]) it is mutual
//! TLS, each end presenting a certificate the cluster's CA signed;
//! without, `link_addr` must be on a private network (loopback in the
//! harness).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codecs::iso8583::{Message, Profile};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::cluster_commit::{Admitted, Committer};
use crate::ratelog::warn_limited;

/// Largest link frame (length field included in no count): 64 KiB.
pub(crate) const LINK_FRAME_BYTES_MAX: usize = 64 * 1024;
/// Requests awaiting an answer on one link, at most; past it the entry
/// node answers itself (`switch_cluster_forwarded_total{outcome="full"}`).
pub(crate) const LINK_INFLIGHT_MAX: usize = 1_024;
/// How long the entry node waits for the owner's answer to one sending.
pub(crate) const LINK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a payment's owner waits for its card's verdict, in all (for
/// the card's shard to be served, the ask's answer, the attempt's
/// commit); then it answers 91. Under [`LINK_TIMEOUT`], so that an entry
/// node waiting for a linked authorization rarely answers 91 for one its
/// owner then decides (the known gap of linked requests).
pub(crate) const VELOCITY_ASK_WAIT: Duration = Duration::from_millis(1_500);
const _: () = assert!(VELOCITY_ASK_WAIT.as_millis() < LINK_TIMEOUT.as_millis());
/// Set in the request id of a card velocity ask (ids count up from 1, and
/// never reach it).
pub(crate) const VELOCITY_ASK_BIT: u64 = 1 << 63;
/// Set in the request id of an internal frame (cluster mode): the body is
/// the frame with its shard and the entry node's key scope
/// (`wire::frames::cluster`'s link body), the answer the framed response
/// once its change is committed, or empty when the node does not serve
/// the shard.
pub(crate) const FRAME_BIT: u64 = 1 << 62;
/// Set in the request id of a failsafe ask (empty body): the answer is
/// one byte, [`ETCD_UNREACHABLE`] when etcd does not answer the asked
/// node either, 0 when it does (`cluster_node::failsafe`).
pub(crate) const STATUS_BIT: u64 = 1 << 61;
/// Set in the request id of a watch-list change for a card this node
/// counts (`engine::velocity::encode_watch`'s bytes: token, on): the
/// answer is [`WATCH_RECORDED`] once the change is committed,
/// [`WATCH_REFUSED`] when it could not be recorded, or empty when the node
/// does not count the card's shard.
pub(crate) const WATCH_BIT: u64 = 1 << 60;
/// A watch change's answer: recorded and committed.
pub(crate) const WATCH_RECORDED: u8 = 0;
/// A watch change's answer: not recorded (nothing changed).
pub(crate) const WATCH_REFUSED: u8 = 1;
/// How long a card's watch change is tried, in all (its shard served, the
/// counting node's answer, the commit): as a velocity ask.
pub(crate) const WATCH_WAIT: Duration = VELOCITY_ASK_WAIT;
/// A failsafe ask's answer: etcd does not answer this node.
pub(crate) const ETCD_UNREACHABLE: u8 = 1;
/// First byte of a velocity answer: counted and committed, the card's
/// verdict follows.
pub(crate) const VELOCITY_COUNTED: u8 = 0;
/// First (only) byte of a velocity answer: not counted, answer 91.
pub(crate) const VELOCITY_REFUSED: u8 = 1;
/// How long, from its arrival, the entry node seeks the answer to a request
/// it wrote to an owner without learning the outcome (not answered within
/// [`LINK_TIMEOUT`], or the connection broke): it is sent again to the
/// owner etcd names, the same node or a new one that replayed the old
/// one's committed records, whose idempotency answers a committed request
/// as a repeat and decides an uncommitted one once
/// (`switch_cluster_forwarded_total{outcome="resent"}`). Covers a takeover
/// with the default 3 s lease (failover p99 target 5 s) and one more
/// [`LINK_TIMEOUT`]; past it, 91. At most `LINKED_WAIT_MAX / LINK_TIMEOUT`
/// = 5 sendings a request, each within the link's [`LINK_INFLIGHT_MAX`].
pub(crate) const LINKED_WAIT_MAX: Duration = Duration::from_secs(10);
/// Frames written to a link in one write, at most: the writer takes every
/// frame queued when it wakes (up to this) and sends them in one syscall.
pub(crate) const LINK_WRITE_BATCH_MAX: usize = 64;
/// Read buffer of a link, each way: frames that arrived together are
/// read in one syscall.
pub(crate) const LINK_READ_BUFFER_BYTES: usize = 16 * 1024;
/// How often the routes (owners and their link addresses) are read from
/// etcd, and at once (after [`ROUTES_GATHER`]) when the member's watch
/// saw a key change (`cluster::member::Member::changes`).
const ROUTES_POLL: Duration = Duration::from_millis(200);
/// How long a read woken by the watch waits first: changes come a few at
/// once (a release, then the next owner's acquisition), read together. It
/// bounds the reads the watch causes to one per this and a read's time.
const ROUTES_GATHER: Duration = Duration::from_millis(5);
/// How long a request waits for its shard to have an owner (or to be
/// loaded here) before this node answers it (91 for a change).
pub(crate) const OWNER_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting request looks again.
const OWNER_POLL: Duration = Duration::from_millis(20);
/// Pause before reconnecting a broken link.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// Node keys read per poll, at most.
const NODES_READ_MAX: usize = cluster::ownership::NODES_MAX;
/// How long a link's TCP connect, and its TLS handshake, may take,
/// either side.
pub(crate) const LINK_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a link's connection must stay up before the link counts as
/// up again (`Router::unreachable_owners`).
const LINK_PROVEN: Duration = Duration::from_millis(500);

/// A link's connection as its two halves, plaintext or TLS.
pub(crate) type LinkHalves = (
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
);

/// Mutual TLS on node links (`cluster.link_tls_cert_file`, `…_key_file`,
/// `…_ca_file`): a node serves its link only to a node presenting a
/// certificate the CA signed, and opens one only to a node whose
/// certificate the CA signed for the host of its `link_addr`. Otherwise
/// anyone who reaches `link_addr` could send requests past the terminals'
/// listeners, and read card data.
pub(crate) struct LinkTls {
    /// The serving side.
    acceptor: tokio_rustls::TlsAcceptor,
    /// The opening side.
    connector: tokio_rustls::TlsConnector,
}

impl LinkTls {
    /// Reads the three files; `None` when none is set (plaintext).
    ///
    /// # Errors
    /// A file missing, unreadable or without its PEM, or a key that does
    /// not match the certificate, naming the configuration key and file.
    pub(crate) fn load(
        settings: &crate::config::ClusterSettings,
    ) -> anyhow::Result<Option<Arc<LinkTls>>> {
        let (Some(cert), Some(key), Some(ca)) = (
            settings.link_tls_cert_file.as_deref(),
            settings.link_tls_key_file.as_deref(),
            settings.link_tls_ca_file.as_deref(),
        ) else {
            return Ok(None);
        };
        let file = |name, path| crate::net::tls::PemFile { name, path };
        let config = crate::net::tls::server_config(
            file("cluster.link_tls_cert_file", cert),
            file("cluster.link_tls_key_file", key),
            Some(file("cluster.link_tls_ca_file", ca)),
        )?;
        let connector = crate::net::tls::client_connector(Some(ca), Some(cert), Some(key))?;
        Ok(Some(Arc::new(LinkTls {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            connector,
        })))
    }

    /// The serving side of a handshake on `tcp`, within
    /// [`LINK_HANDSHAKE_TIMEOUT`]; `None` (counted, logged at a bounded
    /// rate) when the peer is not a node of the cluster.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Option<LinkHalves> {
        let peer = tcp.peer_addr().ok();
        handshake("accept", peer, self.acceptor.accept(tcp)).await
    }

    /// The opening side of a handshake to `addr` (`host:port`, the host
    /// checked against the certificate); `None` (counted, logged) when
    /// it fails.
    async fn connect(&self, addr: &str, tcp: TcpStream) -> Option<LinkHalves> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(name) = rustls::pki_types::ServerName::try_from(host.to_owned()) else {
            warn_limited!(
                "cluster_link_tls",
                addr,
                "node link: a link_addr host that is not a server name; not connecting"
            );
            return None;
        };
        let peer = tcp.peer_addr().ok();
        handshake("connect", peer, self.connector.connect(name, tcp)).await
    }
}

/// A link's TLS handshake on `side`, within [`LINK_HANDSHAKE_TIMEOUT`]:
/// the stream's halves, or `None` (counted, logged) when it fails.
async fn handshake<S>(
    side: &'static str,
    peer: Option<std::net::SocketAddr>,
    handshake: impl std::future::Future<Output = std::io::Result<S>>,
) -> Option<LinkHalves>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    match tokio::time::timeout(LINK_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => {
            let (r, w) = tokio::io::split(tls);
            Some((Box::new(r), Box::new(w)))
        }
        failed => {
            handshake_failed(side, peer, &failed.map(|r| r.map(|_| ())));
            None
        }
    }
}

/// Counts and logs (at a bounded rate) a link's failed TLS handshake.
fn handshake_failed(
    side: &'static str,
    peer: Option<std::net::SocketAddr>,
    failed: &Result<std::io::Result<()>, tokio::time::error::Elapsed>,
) {
    metrics::counter!("switch_cluster_link_tls_failures_total", "side" => side).increment(1);
    let error = match failed {
        Ok(Err(e)) => e.to_string(),
        _ => "timed out".to_owned(),
    };
    warn_limited!(
        "cluster_link_tls",
        side,
        peer = ?peer,
        error,
        "node link: TLS handshake failed; connection closed"
    );
}

/// `tcp` as a link's halves: through `tls` when set, plaintext otherwise.
async fn open(addr: &str, tcp: TcpStream, tls: Option<&LinkTls>) -> Option<LinkHalves> {
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(tls) => tls.connect(addr, tcp).await,
        None => {
            let (r, w) = tcp.into_split();
            Some((Box::new(r), Box::new(w)))
        }
    }
}

/// A card's shard is not served by this node (not owned, loading, or
/// closed for a hand-over): nothing counted.
#[derive(Debug)]
pub(crate) struct NotServed;

/// Where each shard's requests go.
pub(crate) struct Router {
    /// This node's id: never a link to itself.
    node_id: String,
    /// `cluster.shard_count`.
    shard_count: u32,
    /// Which shards this node serves.
    committer: Arc<Committer>,
    /// The owner's node id by shard, from etcd.
    owners: Mutex<HashMap<u32, String>>,
    /// Links by node id.
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Mutual TLS on the links this node opens, if configured.
    tls: Option<Arc<LinkTls>>,
    /// The other nodes etcd held at its last answered read: the cluster
    /// as it was when etcd went away, asked before a failsafe.
    known: Mutex<Vec<String>>,
}

impl Router {
    /// A router with no routes yet.
    pub(crate) fn new(
        node_id: &str,
        shard_count: u32,
        committer: Arc<Committer>,
        tls: Option<Arc<LinkTls>>,
    ) -> Router {
        Router {
            node_id: node_id.to_owned(),
            shard_count,
            committer,
            owners: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            tls,
            known: Mutex::new(Vec::new()),
        }
    }

    /// Where a request with ISO 8583 `body` goes: `Ok` (here) when it has
    /// no F42 (`None`), or when this node serves its shard (admitted: hold
    /// the guard until the request's records are appended, so a hand-over
    /// waits for it); otherwise `Err(shard)`, to be resolved by
    /// [`Router::link_of`].
    pub(crate) fn admit(
        &self,
        profile: &'static Profile,
        body: &[u8],
    ) -> Result<Option<Admitted>, u32> {
        let Some(shard) = Message::decode(profile, body).ok().and_then(|msg| {
            let f42 = msg.text(42)?.as_bytes();
            Some(cluster::assign::shard_of_merchant(f42, self.shard_count))
        }) else {
            return Ok(None);
        };
        self.admit_shard(shard).map(Some).ok_or(shard)
    }

    /// The shard of configured merchant `index`.
    pub(crate) fn shard_of_merchant(&self, index: u32) -> Option<u32> {
        self.committer.shard_of_merchant(index)
    }

    /// Whether this node serves `shard` now.
    pub(crate) fn serves(&self, shard: u32) -> bool {
        self.committer.serves(shard)
    }

    /// Admits a request of `shard` if this node serves it (owned, loaded,
    /// not being handed over).
    pub(crate) fn admit_shard(&self, shard: u32) -> Option<Admitted> {
        self.committer.admit(shard)
    }

    /// Where a request of `shard` (not served here at [`Router::route`])
    /// goes, waiting until `deadline` for a shard without an owner
    /// (a crashed node's, not yet taken over) or one this node is loading:
    /// the owner's link, or `None` to answer here (the shard is here for
    /// `kind`, [`Kind::here`], or the deadline passed).
    pub(crate) async fn link_of(
        &self,
        shard: u32,
        deadline: tokio::time::Instant,
        kind: Kind,
    ) -> Option<Arc<Link>> {
        loop {
            if kind.here(&self.committer, shard) {
                return None;
            }
            // Before the owner: a dead owner etcd still names has a link
            // that never sends, and the wait for it is bounded too.
            if tokio::time::Instant::now() >= deadline {
                kind.count("no_owner");
                return None;
            }
            let owner = lock(&self.owners).get(&shard).cloned();
            if let Some(owner) = owner.filter(|o| *o != self.node_id) {
                if let Some(link) = lock(&self.links).get(&owner).cloned() {
                    return Some(link);
                }
            }
            tokio::time::sleep(OWNER_POLL).await;
        }
    }

    /// The card's verdict for `ask`, from the node serving the card's
    /// shard ([`cluster::assign::shard_of_card`]), after that node
    /// committed the attempt's record: here with no hop when this node
    /// serves it, else over the owner's link. `None` (answer 91, the
    /// attempt not approved without its count) when the verdict is not
    /// here within [`VELOCITY_ASK_WAIT`] (no node serves the shard, the
    /// owner does not answer, the record does not commit), or the owner
    /// could not record the attempt.
    pub(crate) async fn ask_velocity(
        &self,
        node: &crate::node::Node,
        ask: &engine::velocity::VelocityAsk,
    ) -> Option<risk::CardVerdict> {
        let shard = cluster::assign::shard_of_card(&ask.token, self.shard_count);
        let started = tokio::time::Instant::now();
        let deadline = started + VELOCITY_ASK_WAIT;
        let body = Bytes::copy_from_slice(&ask.to_bytes());
        let verdict = loop {
            let Some(link) = self.link_of(shard, deadline, Kind::VelocityAsk).await else {
                if !self.committer.counts_cards_of(shard) {
                    break None;
                }
                match self.count_here(node, ask, deadline).await {
                    Ok(verdict) => {
                        Kind::VelocityAsk.count("here");
                        break verdict;
                    }
                    // Closed for a hand-over since: asked again.
                    Err(NotServed) => {
                        tokio::time::sleep(OWNER_POLL).await;
                        continue;
                    }
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match link.ask(body.clone(), left).await {
                LinkOutcome::Answered(answer) => break verdict_of(&answer),
                LinkOutcome::NotSent => tokio::time::sleep(OWNER_POLL).await,
                LinkOutcome::Unknown => break None,
            }
        };
        metrics::histogram!("switch_cluster_velocity_ask_seconds")
            .record(started.elapsed().as_secs_f64());
        verdict
    }

    /// Counts `ask` in this node's engine (it serves the card's shard) and
    /// waits, up to `deadline`, for the attempt's record to commit: the
    /// verdict, or `None` when it did not commit in time. `NotServed`
    /// (nothing counted) when the card's shard is not served here (any
    /// more: closed for a hand-over), to be asked of its owner.
    pub(crate) async fn count_here(
        &self,
        node: &crate::node::Node,
        ask: &engine::velocity::VelocityAsk,
        deadline: tokio::time::Instant,
    ) -> Result<Option<risk::CardVerdict>, NotServed> {
        // Admitted like a request of the card's shard, until the attempt's
        // record is appended: a hand-over of the shard waits for it (a
        // record appended after the shard closed would be refused, or
        // fenced once the next owner took it).
        let shard = cluster::assign::shard_of_card(&ask.token, self.shard_count);
        let admitted = self.committer.admit_count(shard).ok_or(NotServed)?;
        let reply = node.apply(engine::Command::Velocity(*ask));
        drop(admitted);
        let engine::Wait::Counted { seq, card: verdict } = reply.wait else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let committed = self.committer.committed_within(seq, left).await;
        Ok(committed.then_some(verdict))
    }

    /// Puts card `token` on the watch list (`on`) or lets one holder go,
    /// at the node counting the card ([`cluster::assign::shard_of_card`]),
    /// here with no hop when that is this node: true once the change is
    /// committed there; false when it is not within [`WATCH_WAIT`] (no node
    /// counts the shard, the node does not answer or could not record
    /// it; an outcome unknown may still have been recorded).
    pub(crate) async fn watch_card(
        &self,
        node: &crate::node::Node,
        token: [u8; 32],
        on: bool,
    ) -> bool {
        let shard = cluster::assign::shard_of_card(&token, self.shard_count);
        let deadline = tokio::time::Instant::now() + WATCH_WAIT;
        let body = Bytes::copy_from_slice(&engine::velocity::encode_watch(&token, on));
        loop {
            let Some(link) = self.link_of(shard, deadline, Kind::Watch).await else {
                if !self.committer.counts_cards_of(shard) {
                    return false;
                }
                match self.watch_here(node, token, on, deadline).await {
                    Ok(done) => {
                        Kind::Watch.count("here");
                        return done;
                    }
                    Err(NotServed) => {
                        tokio::time::sleep(OWNER_POLL).await;
                        continue;
                    }
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match link.watch(body.clone(), left).await {
                LinkOutcome::Answered(answer) => return answer == [WATCH_RECORDED],
                LinkOutcome::NotSent => tokio::time::sleep(OWNER_POLL).await,
                LinkOutcome::Unknown => return false,
            }
        }
    }

    /// Applies a card's watch change in this node's engine (it counts the
    /// card's shard) and waits, up to `deadline`, for its record to
    /// commit: whether it did. `NotServed` (nothing changed) when the
    /// card's shard is not counted here (any more).
    pub(crate) async fn watch_here(
        &self,
        node: &crate::node::Node,
        token: [u8; 32],
        on: bool,
        deadline: tokio::time::Instant,
    ) -> Result<bool, NotServed> {
        let shard = cluster::assign::shard_of_card(&token, self.shard_count);
        let admitted = self.committer.admit_count(shard).ok_or(NotServed)?;
        let reply = node.apply(engine::Command::Watch { token, on });
        drop(admitted);
        if !reply.code.approved() {
            return Ok(false);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        Ok(self
            .committer
            .committed_within(reply.record_seq, left)
            .await)
    }

    /// Whether this node's record `seq` commits within `wait`.
    pub(crate) async fn committed_by(&self, seq: u64, wait: Duration) -> bool {
        self.committer.committed_within(seq, wait).await
    }

    /// The owners etcd names that this node has had no link to for
    /// longer than `after` (a partition between nodes: both alive, the
    /// link down), with how many shards each owns here; `None` when
    /// there are none. A crashed owner is not one for long: etcd stops
    /// naming it once its lease runs out, so `after` is the lease TTL and
    /// a margin (`cluster_node`).
    pub(crate) fn unreachable_owners(&self, after: Duration) -> Option<String> {
        let owners = lock(&self.owners).clone();
        let links = lock(&self.links);
        let mut far = std::collections::BTreeMap::<&str, usize>::new();
        for owner in owners.values().filter(|o| **o != self.node_id) {
            if links.get(owner).is_some_and(|l| l.down_for() > after) {
                *far.entry(owner.as_str()).or_default() += 1;
            }
        }
        metrics::gauge!("switch_cluster_unreachable_owners").set(far.len() as f64);
        if far.is_empty() {
            return None;
        }
        let list: Vec<String> = far
            .iter()
            .map(|(node, shards)| format!("{node} ({shards} shards)"))
            .collect();
        Some(format!(
            "cluster: no node link to {} for over {} s while etcd names them owners: \
             requests for their shards are answered 91 here",
            list.join(", "),
            after.as_secs()
        ))
    }

    /// Reads owners and node records from etcd every [`ROUTES_POLL`],
    /// starting a link to each new node, until `cancel`. Routes and links
    /// outlive the node's own cancellation: its connections, draining,
    /// still send requests to owners and await their answers (cut at
    /// once, those would be answered 91), so the node cancels `cancel`
    /// only once its connections have finished; neither is tracked. Each
    /// turn also sets the gauge of owners out of reach for longer than
    /// `unreachable_after` ([`Router::unreachable_owners`]).
    pub(crate) async fn refresh(
        self: Arc<Self>,
        etcd: cluster::etcd::Etcd,
        prefix: String,
        mut changes: tokio::sync::watch::Receiver<u64>,
        (cancel, unreachable_after): (CancellationToken, Duration),
    ) {
        let mut watched = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(ROUTES_POLL) => {}
                changed = changes.changed(), if watched => {
                    // The member stopped: the timed reads go on.
                    watched = changed.is_ok();
                    tokio::time::sleep(ROUTES_GATHER).await;
                }
            }
            // The gauge of owners out of reach, whether or not anyone
            // asks `/readyz`.
            let _ = self.unreachable_owners(unreachable_after);
            let view = cluster::member::read_view(&etcd, &prefix, self.shard_count).await;
            let nodes = etcd
                .get_prefix(&format!("{prefix}/nodes/"), NODES_READ_MAX)
                .await;
            let (Ok(view), Ok(nodes)) = (view, nodes) else {
                continue;
            };
            *lock(&self.owners) = view
                .owners
                .iter()
                .map(|(s, o)| (*s, o.record.node_id.clone()))
                .collect();
            let mut known = Vec::with_capacity(nodes.len());
            for kv in nodes {
                let Ok(rec) = serde_json::from_slice::<cluster::member::NodeRecord>(&kv.value)
                else {
                    continue;
                };
                if rec.node_id == self.node_id {
                    continue;
                }
                known.push(rec.node_id.clone());
                let mut links = lock(&self.links);
                let stale = links
                    .get(&rec.node_id)
                    .is_some_and(|l| l.addr != rec.link_addr);
                if stale || !links.contains_key(&rec.node_id) {
                    let link = Link::start(rec.link_addr.clone(), self.tls.clone(), &cancel);
                    links.insert(rec.node_id, link);
                }
            }
            *lock(&self.known) = known;
        }
    }

    /// Whether every other node etcd held at its last answered read says
    /// etcd does not answer it either (asked over the links, all at once,
    /// each within `timeout`): an etcd outage, not this node cut from it.
    /// True with no other node. A node that does not answer counts as one
    /// etcd answers: no failsafe without every node's word.
    pub(crate) async fn everyone_cut_from_etcd(&self, timeout: Duration) -> bool {
        let known = lock(&self.known).clone();
        let links: Vec<Option<Arc<Link>>> = {
            let links = lock(&self.links);
            known.iter().map(|n| links.get(n).cloned()).collect()
        };
        let asks: Vec<_> = links
            .iter()
            .map(|link| async move {
                match link {
                    Some(link) => link.etcd_unreachable(timeout).await,
                    None => None,
                }
            })
            .collect();
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .all(|said| said == Some(true))
    }
}

/// The verdict in a velocity answer; `None` when refused or unreadable.
fn verdict_of(answer: &[u8]) -> Option<risk::CardVerdict> {
    match answer {
        [VELOCITY_COUNTED, a, b, c, d] => risk::CardVerdict::from_bytes([*a, *b, *c, *d]),
        _ => None,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a linked request ended.
#[derive(Debug)]
pub(crate) enum LinkOutcome {
    /// The owner's framed answer.
    Answered(Vec<u8>),
    /// Never written to the owner (no connection, a full link, or queued
    /// for a connection that broke): safe to send again elsewhere.
    NotSent,
    /// Written and not answered in time, or the connection broke after:
    /// the owner may have applied it (safe to send again, keyed, to the
    /// owner etcd names).
    Unknown,
}

/// What a link request is.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// A terminal's ISO 8583 request.
    Request,
    /// A card velocity ask.
    VelocityAsk,
    /// An internal frame.
    Frame,
    /// A failsafe ask: does etcd answer you?
    Status,
    /// A card's watch-list change.
    Watch,
}

impl Kind {
    /// Whether this node takes it itself: a request while it serves the
    /// shard; a card's count also while the shard is being handed over
    /// (`Committer::admit_count`).
    fn here(self, committer: &Committer, shard: u32) -> bool {
        match self {
            Kind::Request | Kind::Frame | Kind::Status => committer.serves(shard),
            Kind::VelocityAsk | Kind::Watch => committer.counts_cards_of(shard),
        }
    }

    /// Counts one call's `outcome`: `switch_cluster_forwarded_total` for
    /// requests, `switch_cluster_velocity_asks_total` for asks,
    /// `switch_cluster_frames_forwarded_total` for internal frames,
    /// `switch_cluster_failsafe_asks_total` for failsafe asks.
    pub(crate) fn count(self, outcome: &'static str) {
        match self {
            Kind::Request => {
                metrics::counter!("switch_cluster_forwarded_total", "outcome" => outcome)
                    .increment(1);
            }
            Kind::VelocityAsk => {
                metrics::counter!("switch_cluster_velocity_asks_total", "outcome" => outcome)
                    .increment(1);
            }
            Kind::Frame => {
                metrics::counter!("switch_cluster_frames_forwarded_total", "outcome" => outcome)
                    .increment(1);
            }
            Kind::Status => {
                metrics::counter!("switch_cluster_failsafe_asks_total", "outcome" => outcome)
                    .increment(1);
            }
            Kind::Watch => {
                metrics::counter!("switch_cluster_watch_changes_total", "outcome" => outcome)
                    .increment(1);
            }
        }
    }
}

/// Why a waiter got no answer.
#[derive(Debug)]
enum Lost {
    /// Queued for a connection that broke before it was written.
    NotSent,
    /// Its connection broke: it may have been written.
    Broken,
}

/// A caller awaiting its answer, or word of why none comes.
type Waiter = oneshot::Sender<Result<Vec<u8>, Lost>>;

/// One pipelined connection to another node.
pub(crate) struct Link {
    /// Its `link_addr`.
    addr: String,
    /// Requests to write, with the connection generation they were queued
    /// for: one queued for an older connection is never written.
    tx: mpsc::Sender<(u64, u64, Bytes)>,
    /// Callers awaiting answers, by request id (at most [`LINK_INFLIGHT_MAX`]).
    pending: Arc<Mutex<HashMap<u64, Waiter>>>,
    /// The current connection's generation; 0 while not connected.
    generation: Arc<AtomicU64>,
    /// Since when it has had no connection (`None` while connected).
    down_since: Arc<Mutex<Option<std::time::Instant>>>,
    /// The next request id.
    next_id: AtomicU64,
}

impl Link {
    /// Starts the link's task, connecting (and reconnecting) to `addr`,
    /// through `tls` when set.
    fn start(addr: String, tls: Option<Arc<LinkTls>>, cancel: &CancellationToken) -> Arc<Link> {
        let (tx, rx) = mpsc::channel(LINK_INFLIGHT_MAX);
        let link = Arc::new(Link {
            addr,
            tx,
            pending: Arc::new(Mutex::new(HashMap::new())),
            generation: Arc::new(AtomicU64::new(0)),
            down_since: Arc::new(Mutex::new(Some(std::time::Instant::now()))),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(run_link(
            link.addr.clone(),
            tls,
            rx,
            link.pending.clone(),
            (link.generation.clone(), link.down_since.clone()),
            cancel.clone(),
        ));
        link
    }

    /// How long it has had no connection (zero while connected).
    fn down_for(&self) -> Duration {
        lock(&self.down_since).map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// Sends `body` to the owner and waits up to `timeout` (at most
    /// [`LINK_TIMEOUT`]).
    pub(crate) async fn call(&self, body: Bytes, timeout: Duration) -> LinkOutcome {
        self.call_kind(body, Kind::Request, timeout).await
    }

    /// Sends a card velocity ask's bytes to the card's counting node and
    /// waits up to `timeout` (at most [`LINK_TIMEOUT`]).
    pub(crate) async fn ask(&self, body: Bytes, timeout: Duration) -> LinkOutcome {
        self.call_kind(body, Kind::VelocityAsk, timeout).await
    }

    /// Asks the node whether etcd answers it, waiting up to `timeout`:
    /// `Some(true)` when it does not, `Some(false)` when it does, `None`
    /// without an answer.
    pub(crate) async fn etcd_unreachable(&self, timeout: Duration) -> Option<bool> {
        match self.call_kind(Bytes::new(), Kind::Status, timeout).await {
            LinkOutcome::Answered(answer) => Some(answer == [ETCD_UNREACHABLE]),
            _ => None,
        }
    }

    /// Sends a card's watch change to the node counting the card and
    /// waits up to `timeout` (at most [`LINK_TIMEOUT`]).
    pub(crate) async fn watch(&self, body: Bytes, timeout: Duration) -> LinkOutcome {
        self.call_kind(body, Kind::Watch, timeout).await
    }

    /// Sends an internal frame's link body to the shard's owner and waits
    /// up to `timeout` (at most [`LINK_TIMEOUT`]).
    pub(crate) async fn call_frame(&self, body: Bytes, timeout: Duration) -> LinkOutcome {
        self.call_kind(body, Kind::Frame, timeout).await
    }

    async fn call_kind(&self, body: Bytes, kind: Kind, timeout: Duration) -> LinkOutcome {
        let outcome = |o: &'static str| kind.count(o);
        let generation = self.generation.load(Ordering::Acquire);
        if generation == 0 {
            outcome("not_connected");
            return LinkOutcome::NotSent;
        }
        let id = match kind {
            Kind::Request => self.next_id.fetch_add(1, Ordering::Relaxed),
            Kind::VelocityAsk => self.next_id.fetch_add(1, Ordering::Relaxed) | VELOCITY_ASK_BIT,
            Kind::Frame => self.next_id.fetch_add(1, Ordering::Relaxed) | FRAME_BIT,
            Kind::Status => self.next_id.fetch_add(1, Ordering::Relaxed) | STATUS_BIT,
            Kind::Watch => self.next_id.fetch_add(1, Ordering::Relaxed) | WATCH_BIT,
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= LINK_INFLIGHT_MAX {
                outcome("full");
                return LinkOutcome::NotSent;
            }
            pending.insert(id, tx);
        }
        let sent_at = std::time::Instant::now();
        if self.tx.try_send((id, generation, body)).is_err() {
            lock(&self.pending).remove(&id);
            outcome("full");
            return LinkOutcome::NotSent;
        }
        match tokio::time::timeout(timeout.min(LINK_TIMEOUT), rx).await {
            Ok(Ok(Ok(answer))) if answer.is_empty() => {
                // The node does not serve the shard (yet, or any more):
                // it applied nothing.
                outcome("not_served");
                LinkOutcome::NotSent
            }
            Ok(Ok(Ok(mut answer))) if matches!(kind, Kind::Request) => {
                // The owner's time first (`cluster_serve::timed`): what
                // the round trip took beyond it is forwarding's cost.
                let Some(held) = answer.first_chunk::<4>().copied() else {
                    outcome("malformed");
                    return LinkOutcome::Unknown;
                };
                let held = Duration::from_micros(u64::from(u32::from_be_bytes(held)));
                metrics::histogram!("switch_cluster_forward_added_seconds")
                    .record(sent_at.elapsed().saturating_sub(held).as_secs_f64());
                outcome("answered");
                // In place: no second buffer for the answer.
                answer.drain(..4);
                LinkOutcome::Answered(answer)
            }
            Ok(Ok(Ok(answer))) => {
                outcome("answered");
                LinkOutcome::Answered(answer)
            }
            Ok(Ok(Err(Lost::NotSent))) => {
                outcome("not_sent");
                LinkOutcome::NotSent
            }
            Ok(Ok(Err(Lost::Broken))) => {
                outcome("broken");
                LinkOutcome::Unknown
            }
            _ => {
                lock(&self.pending).remove(&id);
                outcome("timeout");
                LinkOutcome::Unknown
            }
        }
    }
}

/// The link's task: connect, write queued requests of the current
/// connection, read answers.
async fn run_link(
    addr: String,
    tls: Option<Arc<LinkTls>>,
    mut rx: mpsc::Receiver<(u64, u64, Bytes)>,
    pending: Arc<Mutex<HashMap<u64, Waiter>>>,
    (generation, down_since): (Arc<AtomicU64>, Arc<Mutex<Option<std::time::Instant>>>),
    cancel: CancellationToken,
) {
    let mut current = 0_u64;
    let mut out = BytesMut::with_capacity(LINK_READ_BUFFER_BYTES);
    while !cancel.is_cancelled() {
        // Bounded: a peer behind a partition drops the SYNs, and the
        // kernel's retries would keep the link down for minutes after it
        // heals.
        let connected = tokio::time::timeout(LINK_HANDSHAKE_TIMEOUT, TcpStream::connect(&addr));
        let halves = match connected.await {
            Ok(Ok(tcp)) => open(&addr, tcp, tls.as_deref()).await,
            _ => None,
        };
        let Some((reader, mut writer)) = halves else {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(RECONNECT_PAUSE) => continue,
            }
        };
        current += 1;
        generation.store(current, Ordering::Release);
        // Up once it has stayed up a while: a peer (or a proxy in front of
        // it) that accepts and closes at once is still unreachable.
        let proven = tokio::time::sleep(LINK_PROVEN);
        tokio::pin!(proven);
        let mut is_proven = false;
        let mut reader = BufReader::with_capacity(LINK_READ_BUFFER_BYTES, reader);
        let read_pending = pending.clone();
        let mut read = tokio::spawn(async move {
            while let Some((id, answer)) = read_frame(&mut reader).await {
                if let Some(tx) = lock(&read_pending).remove(&id) {
                    let _ = tx.send(Ok(answer));
                }
            }
        });
        loop {
            tokio::select! {
                () = cancel.cancelled() => { read.abort(); return; }
                () = &mut proven, if !is_proven => {
                    is_proven = true;
                    *lock(&down_since) = None;
                }
                _ = &mut read => break,
                item = rx.recv() => {
                    let Some(first) = item else { read.abort(); return; };
                    // Every frame queued now, in one write.
                    out.clear();
                    let mut next = Some(first);
                    let mut taken = 0;
                    while let Some((id, queued_for, body)) = next.take() {
                        taken += 1;
                        // Queued for a connection that broke (never sent),
                        // or too large for a frame: not sent.
                        let sent = queued_for == current
                            && encode_frame(&mut out, id, &body)
                                .inspect_err(|_| {
                                    let len = body.len();
                                    warn_limited!(
                                        "cluster_link",
                                        len,
                                        "node link: a request too large for a frame; not sent"
                                    );
                                })
                                .is_ok();
                        if !sent {
                            if let Some(tx) = lock(&pending).remove(&id) {
                                let _ = tx.send(Err(Lost::NotSent));
                            }
                        }
                        if taken < LINK_WRITE_BATCH_MAX {
                            next = rx.try_recv().ok();
                        }
                    }
                    // A TLS writer may keep records it encrypted but could
                    // not write yet: flushed now, not at the next write.
                    if !out.is_empty()
                        && (writer.write_all(&out).await.is_err() || writer.flush().await.is_err())
                    {
                        read.abort();
                        break;
                    }
                }
            }
        }
        generation.store(0, Ordering::Release);
        lock(&down_since).get_or_insert_with(std::time::Instant::now);
        // Every caller still waiting learns now that its connection broke
        // (written or perhaps not: the ones still queued are dropped as
        // they come out), and sends again without waiting out its timeout.
        for (_, tx) in lock(&pending).drain() {
            let _ = tx.send(Err(Lost::Broken));
        }
    }
}

/// Reads one link frame; `None` at the end of the stream or on a bad one.
pub(crate) async fn read_frame(reader: &mut (impl AsyncReadExt + Unpin)) -> Option<(u64, Vec<u8>)> {
    let len = reader.read_u32().await.ok()? as usize;
    if !(8..=LINK_FRAME_BYTES_MAX).contains(&len) {
        warn_limited!(
            "cluster_link",
            len,
            "node link: a frame of a bad length; closing"
        );
        return None;
    }
    let id = reader.read_u64().await.ok()?;
    let mut body = vec![0; len - 8];
    reader.read_exact(&mut body).await.ok()?;
    Some((id, body))
}

/// Appends one link frame to `out`; an error (and nothing appended) when
/// it would be over [`LINK_FRAME_BYTES_MAX`].
pub(crate) fn encode_frame(out: &mut BytesMut, id: u64, body: &[u8]) -> std::io::Result<()> {
    let len = body
        .len()
        .checked_add(8)
        .filter(|l| *l <= LINK_FRAME_BYTES_MAX);
    let Some(len) = len else {
        return Err(std::io::Error::other("link frame too large"));
    };
    out.reserve(4 + len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Writes one link frame.
#[cfg(test)]
pub(crate) async fn write_frame(
    writer: &mut (impl AsyncWriteExt + Unpin),
    id: u64,
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    encode_frame(&mut out, id, body)?;
    writer.write_all(&out).await
}

#[cfg(test)]
mod tests {
    use super::{encode_frame, read_frame, write_frame, LINK_FRAME_BYTES_MAX};
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_end_the_link() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, 7, b"body").await.expect("write");
        assert_eq!(read_frame(&mut b).await, Some((7, b"body".to_vec())));
        // Too short to hold an id, then past the limit: read as the end,
        // before anything is allocated for the body.
        for len in [
            4_u32,
            u32::try_from(LINK_FRAME_BYTES_MAX + 1).expect("fits"),
        ] {
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_all(&len.to_be_bytes()).await.expect("write");
            assert_eq!(read_frame(&mut b).await, None, "{len}");
        }
        // A body past the limit is refused on the writing side.
        let big = vec![0; LINK_FRAME_BYTES_MAX];
        assert!(write_frame(&mut a, 8, &big).await.is_err());
        // Frames batched into one write (one too large appends nothing)
        // are read back one by one through the link's buffered reader.
        let mut out = bytes::BytesMut::new();
        encode_frame(&mut out, 1, b"one").expect("fits");
        assert!(encode_frame(&mut out, 2, &big).is_err());
        encode_frame(&mut out, 3, b"three").expect("fits");
        let (mut a, b) = tokio::io::duplex(1 << 20);
        a.write_all(&out).await.expect("write");
        drop(a);
        let mut b = tokio::io::BufReader::with_capacity(super::LINK_READ_BUFFER_BYTES, b);
        assert_eq!(read_frame(&mut b).await, Some((1, b"one".to_vec())));
        assert_eq!(read_frame(&mut b).await, Some((3, b"three".to_vec())));
        assert_eq!(read_frame(&mut b).await, None);
        // A stream that ends inside a frame is its end too.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&20_u32.to_be_bytes()).await.expect("write");
        drop(a);
        assert_eq!(read_frame(&mut b).await, None);
    }
}
