//! Configuration: the embedded default, a TOML file, environment variables
//! and flags, in rising precedence. Every key is in `docs/configuration.md`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The configuration the switch runs with when given no file.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Most merchants a configuration may hold.
pub(crate) const MERCHANTS_MAX: usize = 10_000;
/// Most terminals a merchant may hold.
pub(crate) const TERMINALS_PER_MERCHANT_MAX: usize = 100_000;

/// Why a configuration was refused: names the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax or type errors, with line and key as `toml` reports them.
    #[error("configuration {source_name}: {message}")]
    Parse {
        /// File name or `embedded default`.
        source_name: String,
        /// The parser's message (names line, column and key).
        message: String,
    },
    /// A value out of range or inconsistent.
    #[error("configuration key `{key}`: {problem}")]
    Invalid {
        /// The key, dotted (`merchants[0].over_capture_pct`).
        key: String,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// The file could not be read.
    #[error("configuration file {path}: {error}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses to listen on.
    pub listeners: Listeners,
    /// ISO 8583 wire settings.
    #[serde(default)]
    pub iso: IsoSettings,
    /// Limits on connections, queues and maps.
    #[serde(default)]
    pub limits: Limits,
    /// Journal settings.
    #[serde(default)]
    pub journal: JournalSettings,
    /// Risk policy settings.
    #[serde(default)]
    pub risk: RiskSettings,
    /// The archive store: every payment after it leaves memory.
    #[serde(default)]
    pub archive: ArchiveSettings,
    /// Card-token key.
    #[serde(default)]
    pub security: Security,
    /// Merchants and their terminals.
    #[serde(default)]
    pub merchants: Vec<Merchant>,
    /// Issuer hosts (`../shared/upstream.md`).
    #[serde(default)]
    pub upstreams: Vec<crate::routing_config::UpstreamSettings>,
    /// Routing rules by PAN, first match wins.
    #[serde(default)]
    pub routes: Vec<crate::routing_config::RouteSettings>,
    /// Where a PAN matching no route goes.
    #[serde(default)]
    pub routing: crate::routing_config::RoutingSettings,
    /// Stand-in when an issuer cannot answer.
    #[serde(default)]
    pub stand_in: crate::routing_config::StandInSettings,
    /// The store-and-forward queue of advices and reversals.
    #[serde(default)]
    pub saf: crate::routing_config::SafSettings,
    /// What `/metrics` shows beyond the defaults.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// Webhook deliveries (`docs/webhooks.md`).
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// Cluster mode (`docs/cluster.md`): parsed and checked only; the
    /// switch refuses to start with it until cluster mode is served.
    #[serde(default)]
    pub cluster: Option<ClusterSettings>,
}

/// `[cluster]`: a node of a cluster on etcd and PostgreSQL (issue 22).
/// Only the keys the first slice needs; the design's others are unknown
/// keys, refused as such.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The node's name in etcd, metrics and `cluster status`: `[a-z0-9-]{1,32}`.
    pub node_id: String,
    /// etcd client URLs, `http://host:port`, 1..=7.
    pub etcd_endpoints: Vec<String>,
    /// Key prefix in etcd, so one etcd can hold several clusters.
    #[serde(default = "ClusterSettings::default_prefix")]
    pub etcd_prefix: String,
    /// Payment shards: a power of two, 16..=4,096.
    #[serde(default = "ClusterSettings::default_shards")]
    pub shard_count: u32,
    /// Velocity shards: a power of two, 16..=4,096.
    #[serde(default = "ClusterSettings::default_shards")]
    pub velocity_shard_count: u32,
    /// Where the node listens for node links, `host:port`.
    pub link_addr: String,
    /// What the other nodes connect to for its links, `host:port`, when
    /// not `link_addr` (a NAT, a proxy, a `0.0.0.0` bind): written in its
    /// node key in etcd. With link TLS its certificate names this host.
    #[serde(default)]
    pub link_advertise_addr: Option<String>,
    /// The node's etcd lease, in s: 2..=60.
    #[serde(default = "ClusterSettings::default_lease_ttl_s")]
    pub lease_ttl_s: u64,
    /// How long a payment record stays in `cluster_records` once the
    /// archive's tables hold it, in s: 0..=86,400. A takeover loads what
    /// is left into memory; the rest is read from the archive when asked.
    #[serde(default = "ClusterSettings::default_records_retention_s")]
    pub records_retention_s: u64,
    /// How often the node writes a velocity checkpoint of each shard it
    /// serves whose cards were counted since the last one, in s: 1..=3,600.
    /// A takeover then replays the checkpoint and the attempts after it,
    /// and the attempts before it are deleted.
    #[serde(default = "ClusterSettings::default_velocity_checkpoint_s")]
    pub velocity_checkpoint_s: u64,
    /// The node's certificate chain for its node links (PEM, its own
    /// first), presented both when it serves a link and when it opens one;
    /// with `link_tls_key_file` and `link_tls_ca_file`, all three or none
    /// (plaintext: `link_addr` on a private network only).
    #[serde(default)]
    pub link_tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `link_tls_cert_file`.
    #[serde(default)]
    pub link_tls_key_file: Option<PathBuf>,
    /// The cluster's CA (PEM): a link's other end must present a
    /// certificate it signed, both ways (mutual TLS), and the serving
    /// node's must name the host of its `link_addr` as etcd holds it.
    #[serde(default)]
    pub link_tls_ca_file: Option<PathBuf>,
    /// The CA (PEM) that signed the etcd members' certificates: set, the
    /// node speaks TLS to etcd and every `etcd_endpoints` URL must be
    /// `https://`; unset, `http://` (etcd on a private network only).
    #[serde(default)]
    pub etcd_ca_file: Option<PathBuf>,
    /// The node's client certificate for etcd (PEM, its own first), when
    /// etcd requires one (`--client-cert-auth`); with `etcd_key_file`,
    /// both or neither, and only with `etcd_ca_file`.
    #[serde(default)]
    pub etcd_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `etcd_cert_file`.
    #[serde(default)]
    pub etcd_key_file: Option<PathBuf>,
}

impl ClusterSettings {
    /// An etcd client of `etcd_endpoints`, over TLS when `etcd_ca_file`
    /// is set, every call bounded by `timeout`.
    ///
    /// # Errors
    /// A file that cannot be read or holds no PEM, naming its key; the
    /// endpoints (checked at load).
    pub(crate) fn etcd_client(
        &self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<cluster::etcd::Etcd> {
        etcd_client(
            &self.etcd_endpoints,
            EtcdFiles {
                ca: self.etcd_ca_file.as_deref(),
                cert: self.etcd_cert_file.as_deref(),
                key: self.etcd_key_file.as_deref(),
                names: [
                    "cluster.etcd_ca_file",
                    "cluster.etcd_cert_file",
                    "cluster.etcd_key_file",
                ],
            },
            timeout,
        )
        .context("cluster.etcd_endpoints")
    }

    fn default_prefix() -> String {
        "/switch/default".into()
    }
    fn default_shards() -> u32 {
        256
    }
    fn default_lease_ttl_s() -> u64 {
        3
    }
    fn default_records_retention_s() -> u64 {
        60
    }
    fn default_velocity_checkpoint_s() -> u64 {
        60
    }

    /// Checks every key; names the first bad one.
    fn validate(&self) -> Result<(), ConfigError> {
        cluster::member::check_node_id(&self.node_id).map_err(|p| invalid("cluster.node_id", p))?;
        cluster::etcd::check_endpoints(&self.etcd_endpoints, self.etcd_ca_file.is_some())
            .map_err(|e| invalid("cluster.etcd_endpoints", e.to_string()))?;
        match (&self.etcd_cert_file, &self.etcd_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "cluster.etcd_key_file",
                    "missing: etcd_cert_file needs its key".to_owned(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "cluster.etcd_cert_file",
                    "missing: etcd_key_file needs its certificate".to_owned(),
                ))
            }
            (Some(_), Some(_)) if self.etcd_ca_file.is_none() => {
                return Err(invalid(
                    "cluster.etcd_ca_file",
                    "missing: a client certificate for etcd is for TLS, which needs the CA"
                        .to_owned(),
                ))
            }
            _ => {}
        }
        let p = &self.etcd_prefix;
        if !p.starts_with('/') || p.ends_with('/') || p.len() < 2 {
            return Err(invalid(
                "cluster.etcd_prefix",
                format!("`{p}`: expected /name, no trailing /"),
            ));
        }
        for (key, n) in [
            ("cluster.shard_count", self.shard_count),
            ("cluster.velocity_shard_count", self.velocity_shard_count),
        ] {
            let range = cluster::ownership::SHARD_COUNT_MIN..=cluster::ownership::SHARD_COUNT_MAX;
            if !n.is_power_of_two() || !range.contains(&n) {
                return Err(invalid(
                    key,
                    format!("{n}: expected a power of two, 16..=4096"),
                ));
            }
        }
        host_port("cluster.link_addr", &self.link_addr)?;
        if let Some(addr) = &self.link_advertise_addr {
            host_port("cluster.link_advertise_addr", addr)?;
        }
        let ttl = cluster::member::LEASE_TTL_S_MIN..=cluster::member::LEASE_TTL_S_MAX;
        if !i64::try_from(self.lease_ttl_s).is_ok_and(|t| ttl.contains(&t)) {
            return Err(invalid(
                "cluster.lease_ttl_s",
                format!("{}: expected 2..=60", self.lease_ttl_s),
            ));
        }
        if self.records_retention_s > 86_400 {
            return Err(invalid(
                "cluster.records_retention_s",
                format!("{}: expected 0..=86400", self.records_retention_s),
            ));
        }
        if !(1..=3_600).contains(&self.velocity_checkpoint_s) {
            return Err(invalid(
                "cluster.velocity_checkpoint_s",
                format!("{}: expected 1..=3600", self.velocity_checkpoint_s),
            ));
        }
        let tls = [
            ("cluster.link_tls_cert_file", &self.link_tls_cert_file),
            ("cluster.link_tls_key_file", &self.link_tls_key_file),
            ("cluster.link_tls_ca_file", &self.link_tls_ca_file),
        ];
        let set = tls.iter().filter(|(_, f)| f.is_some()).count();
        if set != 0 && set != tls.len() {
            let (missing, _) = tls.iter().find(|(_, f)| f.is_none()).unwrap_or(&tls[0]);
            return Err(invalid(
                *missing,
                "missing: node links' TLS is mutual, so it needs all three of \
                 link_tls_cert_file, link_tls_key_file and link_tls_ca_file, or none"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// Checks that `addr` is `host:port` with a host and a port above 0,
/// naming `key` otherwise.
fn host_port(key: &str, addr: &str) -> Result<(), ConfigError> {
    let port = addr
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    if matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
        Ok(())
    } else {
        Err(invalid(key, format!("`{addr}`: expected host:port")))
    }
}

/// The PEM files of TLS to etcd, and the names an error gives them
/// (configuration keys, or command-line options).
pub(crate) struct EtcdFiles<'a> {
    /// The members' CA: TLS when set.
    pub(crate) ca: Option<&'a Path>,
    /// A client certificate, with `key`.
    pub(crate) cert: Option<&'a Path>,
    /// Its key.
    pub(crate) key: Option<&'a Path>,
    /// Names of the CA, certificate and key, for errors.
    pub(crate) names: [&'a str; 3],
}

/// An etcd client of `endpoints`, over TLS with `files.ca`, every call
/// bounded by `timeout`.
///
/// # Errors
/// A file that cannot be read or holds no PEM (naming it), endpoints that
/// are not `https://` with TLS or `http://` without.
pub(crate) fn etcd_client(
    endpoints: &[String],
    files: EtcdFiles<'_>,
    timeout: std::time::Duration,
) -> anyhow::Result<cluster::etcd::Etcd> {
    let [ca_name, cert_name, key_name] = files.names;
    let read = |name: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("{name} {}", path.display()))
    };
    let tls = match files.ca {
        None => None,
        Some(ca) => {
            let ca = read(ca_name, ca)?;
            let identity = match (files.cert, files.key) {
                (Some(cert), Some(key)) => Some((read(cert_name, cert)?, read(key_name, key)?)),
                _ => None,
            };
            let pair = identity.as_ref().map(|(c, k)| (&c[..], &k[..]));
            let tls = cluster::etcd::EtcdTls::from_pem(&ca, pair)
                .with_context(|| format!("{ca_name}, {cert_name}, {key_name}"))?;
            Some(tls)
        }
    };
    Ok(cluster::etcd::Etcd::with_tls(
        endpoints,
        timeout,
        tls.as_ref(),
    )?)
}

/// `[webhooks]`: how events are posted to the merchants' endpoints (the
/// endpoints themselves are in `<data_dir>/webhooks.json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// When not empty, the only networks (`10.0.0.0/8`) an endpoint's
    /// address may be in; others are refused and logged.
    pub allow_networks: Vec<String>,
    /// How long an attempt may take, connection to answer, ms.
    pub timeout_ms: u64,
    /// How long delivered and failed events are kept (for `switch
    /// webhooks list --events`), days.
    pub keep_days: u64,
    /// Most events pending delivery, all merchants: when reached, the
    /// dispatcher stops queueing (the journal keeps the changes, nothing is
    /// dropped) until deliveries make room.
    pub backlog_max: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_networks: Vec::new(),
            timeout_ms: 10_000,
            keep_days: 7,
            backlog_max: 1_000_000,
        }
    }
}

/// `[metrics]`: per-merchant labels on the business metrics
/// (`docs/configuration.md`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Label decisions and amounts by merchant too.
    pub merchant_labels: bool,
    /// Most merchants with a label of their own; later ones count as
    /// `other`. At most 1,000.
    pub merchant_labels_max: usize,
}

impl MetricsSettings {
    /// `merchant_labels_max` when `merchant_labels` is on.
    pub(crate) fn labels_max(&self) -> Option<usize> {
        self.merchant_labels.then_some(self.merchant_labels_max)
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            merchant_labels: false,
            merchant_labels_max: crate::business::MERCHANT_LABELS_MAX_DEFAULT,
        }
    }
}

/// Listener addresses and the data directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// ISO 8583 listener.
    pub iso_addr: SocketAddr,
    /// Internal-frame listener.
    pub frame_addr: SocketAddr,
    /// HTTP: /metrics, /healthz, /readyz.
    pub http_addr: SocketAddr,
    /// Where the journal, snapshots, keys and the token key live.
    pub data_dir: PathBuf,
    /// The internal-frame listener's TLS certificate chain (PEM, its own
    /// certificate first); with `frame_tls_key_file`, or neither
    /// (plaintext).
    #[serde(default)]
    pub frame_tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `frame_tls_cert_file`.
    #[serde(default)]
    pub frame_tls_key_file: Option<PathBuf>,
    /// When set, internal-frame clients must present a certificate signed
    /// by this CA (PEM).
    #[serde(default)]
    pub frame_tls_ca_file: Option<PathBuf>,
}

/// ISO 8583 wire settings of the listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IsoSettings {
    /// `ascii` or `ascii-hex`.
    pub profile: String,
    /// `binary2` (2-byte big-endian) or `ascii4` (4 ASCII digits).
    pub length_header: String,
    /// Whether a 5-byte TPDU follows the length header.
    pub tpdu: bool,
    /// Largest message in bytes, at most 65,535.
    pub frame_bytes_max: usize,
    /// The listener's TLS certificate chain (PEM, its own certificate
    /// first); with `tls_key_file`, or neither (plaintext).
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA
    /// (PEM).
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for IsoSettings {
    fn default() -> Self {
        IsoSettings {
            profile: "ascii".into(),
            length_header: "binary2".into(),
            tpdu: false,
            frame_bytes_max: codecs::framing::FRAME_BYTES_MAX_DEFAULT,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
        }
    }
}

/// Named limits; each has a metric or log line for when it is hit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections per listener; more are refused.
    pub connections_max: usize,
    /// Open connections per listener from one IP address; more are
    /// refused, so one address cannot take every slot. Above
    /// `connections_max` it has no effect.
    pub connections_per_address_max: usize,
    /// Requests read but not yet answered per connection; reading stops
    /// at the limit.
    pub inflight_per_connection_max: usize,
    /// A connection with no complete request and no completed write for
    /// this long is closed.
    pub idle_timeout_s: u64,
    /// Once a frame's first byte has arrived, the rest must follow within
    /// this long, or the connection is closed.
    pub frame_read_timeout_ms: u64,
    /// An internal-frame connection must log in within this long of being
    /// accepted, whatever it sends meanwhile.
    pub login_timeout_ms: u64,
    /// Answers that cannot be written within this long (the peer does not
    /// read) close the connection.
    pub write_timeout_ms: u64,
    /// On shutdown, how long connections get to finish what they read;
    /// then they are closed, whatever the peers do.
    pub drain_timeout_ms: u64,
    /// Open connections to the HTTP listener; at the limit the one waiting
    /// longest for its request is closed to make room.
    pub http_connections_max: usize,
    /// An HTTP request head must arrive within this long.
    pub http_header_timeout_ms: u64,
    /// A kept-alive HTTP connection waits this long for its next request.
    pub http_keepalive_timeout_ms: u64,
    /// Requests answered on one HTTP connection before it is closed.
    pub http_requests_per_connection_max: u64,
    /// How long an answered message's key is remembered for repeats (in
    /// memory, then in the archive).
    pub idempotency_window_s: u64,
    /// Most answers remembered in memory; older ones are in the archive.
    /// Beyond it (the archive behind) new messages get 96.
    pub idempotency_entries_max: usize,
    /// Most payments held in memory; above 75% of it final payments leave
    /// for the archive however recent; beyond it (open pre-authorizations,
    /// or the archive behind) new payments get 96.
    pub payments_max: usize,
    /// How long a payment in a final state stays in memory after its last
    /// change before it lives only in the archive.
    pub payment_retention_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: 1024,
            connections_per_address_max: 128,
            inflight_per_connection_max: 256,
            idle_timeout_s: 300,
            frame_read_timeout_ms: 5_000,
            login_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            drain_timeout_ms: 5_000,
            http_connections_max: 64,
            http_header_timeout_ms: 2_000,
            http_keepalive_timeout_ms: 5_000,
            http_requests_per_connection_max: 100,
            idempotency_window_s: 3600,
            idempotency_entries_max: 2_000_000,
            payments_max: 2_000_000,
            payment_retention_s: 300,
        }
    }
}

/// The archive store (docs/archive.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSettings {
    /// Empty: SQLite in `<data_dir>/archive.sqlite` (embedded, nothing to
    /// install); `postgres://user:password@host:port/database`: PostgreSQL.
    pub url: String,
    /// Payments are kept this many days after they were created.
    pub retention_days: u64,
    /// Journal records the archive may be behind before the switch says it
    /// is not ready (and memory, which waits for the archive, fills).
    pub lag_records_max: u64,
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        ArchiveSettings {
            url: String::new(),
            retention_days: 400,
            lag_records_max: 1_000_000,
        }
    }
}

impl ArchiveSettings {
    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        archive::redact_url(&self.url)
    }
}

/// Journal settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSettings {
    /// `durable` (answer after fsync) or `immediate` (answer at once).
    pub ack: String,
    /// In `immediate` mode, the longest time between fsyncs (1..=5 ms).
    pub flush_interval_ms: u64,
    /// How long a request waits for room in a full journal queue before 96.
    pub enqueue_timeout_ms: u64,
    /// Seconds between snapshots.
    pub snapshot_interval_s: u64,
    /// Start from the valid prefix of a corrupt journal (`--repair`); never
    /// from the file.
    #[serde(skip)]
    pub repair: bool,
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            ack: "durable".into(),
            flush_interval_ms: 2,
            enqueue_timeout_ms: 50,
            snapshot_interval_s: 300,
            repair: false,
        }
    }
}

/// Risk policy settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskSettings {
    /// A risk policy TOML file (`docs/risk.md`); the embedded default when
    /// absent. Reloaded on SIGHUP and when the file changes.
    pub policy_file: Option<PathBuf>,
}

/// Card-token key.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// 64 hex characters; when absent, a random key is made at first start
    /// and kept in `<data_dir>/token.key`.
    pub token_key_hex: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Security { token_key_hex: *** }")
    }
}

/// One merchant.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Merchant {
    /// F42, 15 characters.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Whether the merchant may transact.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// F41 of its terminals, 8 characters each.
    pub terminals: Vec<String>,
    /// ISO 4217 numeric currencies accepted.
    pub currencies: Vec<u16>,
    /// A capture may exceed the authorized amount by this percentage.
    #[serde(default)]
    pub over_capture_pct: u32,
    /// Whether refunds are allowed.
    #[serde(default)]
    pub refunds_allowed: bool,
    /// Whether mail/telephone orders (F25 = 08) are allowed.
    #[serde(default)]
    pub moto_allowed: bool,
    /// Uncaptured pre-authorizations expire after this many hours.
    #[serde(default = "week_h")]
    pub hold_period_h: u64,
    /// When set, pre-authorizations are captured in full after this many
    /// hours (before the hold period ends).
    #[serde(default)]
    pub auto_capture_h: Option<u64>,
}

fn yes() -> bool {
    true
}

fn week_h() -> u64 {
    168
}

/// Values that override the file: from environment variables and flags.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--iso-addr` / `SWITCH_ISO_ADDR`.
    pub iso_addr: Option<SocketAddr>,
    /// `--frame-addr` / `SWITCH_FRAME_ADDR`.
    pub frame_addr: Option<SocketAddr>,
    /// `--http-addr` / `SWITCH_HTTP_ADDR`.
    pub http_addr: Option<SocketAddr>,
    /// `--data-dir` / `SWITCH_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--journal-ack` / `SWITCH_JOURNAL_ACK`.
    pub journal_ack: Option<String>,
    /// `--repair`: keep the valid prefix of a corrupt journal.
    pub repair: bool,
}

impl Overrides {
    /// Reads the `SWITCH_*` environment variables.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the variable when a value does not parse.
    pub fn from_env() -> Result<Overrides, ConfigError> {
        let addr = |name: &str| -> Result<Option<SocketAddr>, ConfigError> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|e| invalid(name, format!("`{v}` is not an address: {e}"))),
                Err(_) => Ok(None),
            }
        };
        Ok(Overrides {
            iso_addr: addr("SWITCH_ISO_ADDR")?,
            frame_addr: addr("SWITCH_FRAME_ADDR")?,
            http_addr: addr("SWITCH_HTTP_ADDR")?,
            data_dir: std::env::var_os("SWITCH_DATA_DIR").map(PathBuf::from),
            journal_ack: std::env::var("SWITCH_JOURNAL_ACK").ok(),
            repair: false,
        })
    }

    /// `other`'s values where set, else these.
    pub fn then(self, other: Overrides) -> Overrides {
        Overrides {
            iso_addr: other.iso_addr.or(self.iso_addr),
            frame_addr: other.frame_addr.or(self.frame_addr),
            http_addr: other.http_addr.or(self.http_addr),
            data_dir: other.data_dir.or(self.data_dir),
            journal_ack: other.journal_ack.or(self.journal_ack),
            repair: other.repair || self.repair,
        }
    }
}

impl Config {
    /// The embedded default.
    ///
    /// # Errors
    /// Never in a released build (a test checks it); typed for symmetry.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, "embedded default")
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError`] naming the line, key and problem.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `path`, or the embedded default when `None`, then applies
    /// `overrides` and validates the result.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, key and problem.
    pub fn load(
        path: Option<&std::path::Path>,
        overrides: Overrides,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            None => Config::embedded()?,
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|error| ConfigError::Read {
                    path: p.display().to_string(),
                    error,
                })?;
                Config::parse(&text, &p.display().to_string())?
            }
        };
        if let Some(a) = overrides.iso_addr {
            config.listeners.iso_addr = a;
        }
        if let Some(a) = overrides.frame_addr {
            config.listeners.frame_addr = a;
        }
        if let Some(a) = overrides.http_addr {
            config.listeners.http_addr = a;
        }
        if let Some(d) = overrides.data_dir {
            config.listeners.data_dir = d;
        }
        if let Some(a) = overrides.journal_ack {
            config.journal.ack = a;
        }
        config.journal.repair = overrides.repair;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and consistency; names the first bad key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_wire()?;
        self.validate_tls()?;
        self.validate_ranges()?;
        if !matches!(self.journal.ack.as_str(), "durable" | "immediate") {
            return Err(invalid(
                "journal.ack",
                format!("`{}`: expected `durable` or `immediate`", self.journal.ack),
            ));
        }
        let url = &self.archive.url;
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "archive.url",
                format!(
                    "`{}`: expected empty (SQLite in the data directory) or `postgres://…`",
                    self.archive.redacted_url()
                ),
            ));
        }
        if let Some(hex) = &self.security.token_key_hex {
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "security.token_key_hex",
                    "expected 64 hex characters",
                ));
            }
        }
        self.validate_merchants()?;
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        crate::webhooks::Networks::parse(&self.webhooks.allow_networks)
            .map_err(|e| invalid("webhooks.allow_networks", e))?;
        crate::routing_config::validate(
            &self.upstreams,
            &self.routes,
            &self.routing,
            &self.stand_in,
            &self.saf,
        )
        .map_err(|r| invalid(r.key, r.problem))
    }

    /// Every numeric key within its range: a table, checked in order.
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (key, value, lo, hi) in [
            (
                "metrics.merchant_labels_max",
                self.metrics.merchant_labels_max as u64,
                1,
                1_000,
            ),
            ("webhooks.timeout_ms", self.webhooks.timeout_ms, 100, 60_000),
            ("webhooks.keep_days", self.webhooks.keep_days, 1, 365),
            (
                "webhooks.backlog_max",
                self.webhooks.backlog_max,
                100,
                100_000_000,
            ),
            (
                "limits.connections_max",
                l.connections_max as u64,
                1,
                100_000,
            ),
            (
                "limits.inflight_per_connection_max",
                l.inflight_per_connection_max as u64,
                1,
                65_536,
            ),
            (
                "limits.connections_per_address_max",
                l.connections_per_address_max as u64,
                1,
                100_000,
            ),
            ("limits.idle_timeout_s", l.idle_timeout_s, 1, 86_400),
            (
                "limits.frame_read_timeout_ms",
                l.frame_read_timeout_ms,
                10,
                600_000,
            ),
            ("limits.login_timeout_ms", l.login_timeout_ms, 10, 600_000),
            ("limits.write_timeout_ms", l.write_timeout_ms, 10, 600_000),
            ("limits.drain_timeout_ms", l.drain_timeout_ms, 10, 600_000),
            (
                "limits.http_connections_max",
                l.http_connections_max as u64,
                1,
                10_000,
            ),
            (
                "limits.http_header_timeout_ms",
                l.http_header_timeout_ms,
                10,
                600_000,
            ),
            (
                "limits.http_keepalive_timeout_ms",
                l.http_keepalive_timeout_ms,
                10,
                600_000,
            ),
            (
                "limits.http_requests_per_connection_max",
                l.http_requests_per_connection_max,
                1,
                1_000_000,
            ),
            (
                "limits.idempotency_window_s",
                l.idempotency_window_s,
                1,
                7 * 86_400,
            ),
            (
                "limits.idempotency_entries_max",
                l.idempotency_entries_max as u64,
                1,
                100_000_000,
            ),
            ("limits.payments_max", l.payments_max as u64, 1, 100_000_000),
            (
                "limits.payment_retention_s",
                l.payment_retention_s,
                1,
                400 * 86_400,
            ),
            (
                "archive.retention_days",
                self.archive.retention_days,
                1,
                3_650,
            ),
            (
                "archive.lag_records_max",
                self.archive.lag_records_max,
                1_000,
                1_000_000_000,
            ),
            (
                "journal.flush_interval_ms",
                self.journal.flush_interval_ms,
                1,
                5,
            ),
            (
                "journal.enqueue_timeout_ms",
                self.journal.enqueue_timeout_ms,
                1,
                10_000,
            ),
            (
                "journal.snapshot_interval_s",
                self.journal.snapshot_interval_s,
                1,
                86_400,
            ),
        ] {
            if !(lo..=hi).contains(&value) {
                return Err(invalid(key, format!("{value} is outside {lo}..={hi}")));
            }
        }
        Ok(())
    }

    fn validate_wire(&self) -> Result<(), ConfigError> {
        if codecs::iso8583::Profile::by_name(&self.iso.profile).is_none() {
            return Err(invalid(
                "iso.profile",
                format!("`{}`: expected `ascii` or `ascii-hex`", self.iso.profile),
            ));
        }
        if !matches!(self.iso.length_header.as_str(), "binary2" | "ascii4") {
            return Err(invalid(
                "iso.length_header",
                format!(
                    "`{}`: expected `binary2` or `ascii4`",
                    self.iso.length_header
                ),
            ));
        }
        let max = self.iso.frame_bytes_max;
        let limit = if self.iso.length_header == "ascii4" {
            9_999
        } else {
            codecs::framing::FRAME_BYTES_LIMIT
        };
        if !(64..=limit).contains(&max) {
            return Err(invalid(
                "iso.frame_bytes_max",
                format!("{max} is outside 64..={limit}"),
            ));
        }
        Ok(())
    }

    /// Each listener's TLS keys: certificate and key both or neither, a
    /// CA only with them. The files are read at start (`net::tls`).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let (iso, l) = (&self.iso, &self.listeners);
        for (prefix, cert, key, ca) in [
            (
                "iso.",
                &iso.tls_cert_file,
                &iso.tls_key_file,
                &iso.tls_ca_file,
            ),
            (
                "listeners.frame_",
                &l.frame_tls_cert_file,
                &l.frame_tls_key_file,
                &l.frame_tls_ca_file,
            ),
        ] {
            if cert.is_some() != key.is_some() {
                let (set, unset) = if cert.is_some() {
                    ("cert", "key")
                } else {
                    ("key", "cert")
                };
                return Err(invalid(
                    format!("{prefix}tls_{unset}_file"),
                    format!("missing: {prefix}tls_{set}_file is set (both or neither)"),
                ));
            }
            if ca.is_some() && cert.is_none() {
                return Err(invalid(
                    format!("{prefix}tls_ca_file"),
                    format!("needs {prefix}tls_cert_file and {prefix}tls_key_file"),
                ));
            }
        }
        Ok(())
    }

    fn validate_merchants(&self) -> Result<(), ConfigError> {
        if self.merchants.len() > MERCHANTS_MAX {
            return Err(invalid(
                "merchants",
                format!("more than {MERCHANTS_MAX} merchants"),
            ));
        }
        let mut mids = HashSet::new();
        let mut tids = HashSet::new();
        for (i, m) in self.merchants.iter().enumerate() {
            let key = |k: &str| format!("merchants[{i}].{k}");
            if m.id.len() != 15 || !m.id.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                return Err(invalid(
                    key("id"),
                    format!("`{}`: expected 15 printable characters (F42)", m.id),
                ));
            }
            if !mids.insert(m.id.as_str()) {
                return Err(invalid(key("id"), format!("`{}` appears twice", m.id)));
            }
            if m.terminals.len() > TERMINALS_PER_MERCHANT_MAX {
                return Err(invalid(
                    key("terminals"),
                    format!("more than {TERMINALS_PER_MERCHANT_MAX}"),
                ));
            }
            for t in &m.terminals {
                if t.len() != 8 || !t.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                    return Err(invalid(
                        key("terminals"),
                        format!("`{t}`: expected 8 printable characters (F41)"),
                    ));
                }
                if !tids.insert(t.as_str()) {
                    return Err(invalid(
                        key("terminals"),
                        format!("`{t}` belongs to two merchants"),
                    ));
                }
            }
            if m.currencies.is_empty() || m.currencies.iter().any(|&c| c == 0 || c > 999) {
                return Err(invalid(
                    key("currencies"),
                    "expected ISO 4217 numeric codes, 1..=999",
                ));
            }
            if m.over_capture_pct > 100 {
                return Err(invalid(
                    key("over_capture_pct"),
                    format!("{} is over 100", m.over_capture_pct),
                ));
            }
            if !(1..=31 * 24).contains(&m.hold_period_h) {
                return Err(invalid(
                    key("hold_period_h"),
                    format!("{} is outside 1..=744", m.hold_period_h),
                ));
            }
            if let Some(h) = m.auto_capture_h {
                if h == 0 || h >= m.hold_period_h {
                    return Err(invalid(
                        key("auto_capture_h"),
                        "must be at least 1 and below hold_period_h",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_matches_the_contract() {
        let c = Config::embedded().expect("valid");
        assert_eq!(c.listeners.iso_addr.to_string(), "127.0.0.1:8583");
        assert_eq!(c.listeners.frame_addr.to_string(), "127.0.0.1:8584");
        assert_eq!(c.listeners.http_addr.to_string(), "127.0.0.1:9583");
        assert_eq!(c.listeners.data_dir, PathBuf::from("./data"));
        let m1 = &c.merchants[0];
        assert_eq!(m1.id, "DEMO00000000001");
        assert_eq!(m1.terminals.len(), 10);
        assert_eq!(m1.terminals[9], "DEMO0010");
        assert_eq!(m1.currencies, vec![978, 840, 752]);
        assert_eq!(
            (m1.over_capture_pct, m1.refunds_allowed, m1.moto_allowed),
            (20, true, true)
        );
        assert_eq!((m1.hold_period_h, m1.auto_capture_h), (168, None));
        let m2 = &c.merchants[1];
        assert_eq!(
            (m2.id.as_str(), m2.terminals.as_slice()),
            ("DEMO00000000002", &["DEMO0101".to_string()][..])
        );
        assert_eq!(
            (
                m2.over_capture_pct,
                m2.refunds_allowed,
                m2.currencies.as_slice()
            ),
            (0, false, &[978u16][..])
        );
    }

    #[test]
    fn errors_name_the_key() {
        let base = EMBEDDED_DEFAULT;
        let bad = base.replace("over_capture_pct = 20", "over_capture_pct = 200");
        let e = Config::parse(&bad, "t").expect_err("invalid").to_string();
        assert!(
            e.contains("merchants[0].over_capture_pct") && e.contains("200"),
            "{e}"
        );
        let bad = base.replace("[limits]", "[limits]\nconections_max = 3");
        let e = Config::parse(&bad, "t").expect_err("invalid").to_string();
        assert!(e.contains("conections_max") && e.contains("line"), "{e}");
        let bad = base.replace("\"DEMO0101\"", "\"DEMO0001\"");
        let e = Config::parse(&bad, "t").expect_err("invalid").to_string();
        assert!(e.contains("belongs to two merchants"), "{e}");
        let bad = base.replace("ack = \"durable\"", "ack = \"later\"");
        let e = Config::parse(&bad, "t").expect_err("invalid").to_string();
        assert!(e.contains("journal.ack"), "{e}");
    }

    #[test]
    fn cluster_keys_are_parsed_and_checked() {
        let section = "\n[cluster]\nnode_id = \"n1\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nlink_addr = \"127.0.0.1:7601\"\n";
        let c = Config::parse(&format!("{EMBEDDED_DEFAULT}{section}"), "t").expect("valid");
        let k = c.cluster.expect("cluster");
        assert_eq!(
            (k.node_id.as_str(), k.etcd_prefix.as_str()),
            ("n1", "/switch/default")
        );
        assert_eq!(
            (
                k.shard_count,
                k.velocity_shard_count,
                k.lease_ttl_s,
                k.records_retention_s,
                k.velocity_checkpoint_s
            ),
            (256, 256, 3, 60, 60)
        );
        assert!(Config::embedded().expect("valid").cluster.is_none());
        for (from, to, key) in [
            ("node_id = \"n1\"", "node_id = \"N 1\"", "cluster.node_id"),
            (
                "http://127.0.0.1:2379",
                "127.0.0.1:2379",
                "cluster.etcd_endpoints",
            ),
            (
                "link_addr = \"127.0.0.1:7601\"",
                "link_addr = \"7601\"",
                "cluster.link_addr",
            ),
            (
                "node_id",
                "shard_count = 100\nnode_id",
                "cluster.shard_count",
            ),
            (
                "node_id",
                "velocity_shard_count = 8192\nnode_id",
                "cluster.velocity_shard_count",
            ),
            ("node_id", "lease_ttl_s = 1\nnode_id", "cluster.lease_ttl_s"),
            (
                "node_id",
                "records_retention_s = 86401\nnode_id",
                "cluster.records_retention_s",
            ),
            (
                "node_id",
                "velocity_checkpoint_s = 0\nnode_id",
                "cluster.velocity_checkpoint_s",
            ),
            (
                "node_id",
                "link_tls_cert_file = \"n1.pem\"\nlink_tls_key_file = \"n1.key\"\nnode_id",
                "cluster.link_tls_ca_file",
            ),
            (
                "node_id",
                "etcd_prefix = \"/x/\"\nnode_id",
                "cluster.etcd_prefix",
            ),
            ("node_id", "weight = 2\nnode_id", "weight"),
        ] {
            let bad = format!("{EMBEDDED_DEFAULT}{}", section.replacen(from, to, 1));
            let e = Config::parse(&bad, "t").expect_err(key).to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn overrides_take_precedence() {
        let env = Overrides {
            data_dir: Some("/env".into()),
            journal_ack: Some("immediate".into()),
            ..Default::default()
        };
        let flags = Overrides {
            data_dir: Some("/flag".into()),
            ..Default::default()
        };
        let c = Config::load(None, env.then(flags)).expect("valid");
        assert_eq!(c.listeners.data_dir, PathBuf::from("/flag"));
        assert_eq!(c.journal.ack, "immediate");
    }
}
