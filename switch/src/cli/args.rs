//! The command line: the switch itself, and its operator tools.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Card-payment authorization switch.
#[derive(Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    /// ISO 8583 listener address (default 127.0.0.1:8583).
    #[arg(long)]
    pub(crate) iso_addr: Option<SocketAddr>,
    /// Internal-frame listener address (default 127.0.0.1:8584).
    #[arg(long)]
    pub(crate) frame_addr: Option<SocketAddr>,
    /// HTTP address for /metrics, /healthz, /readyz (default 127.0.0.1:9583).
    #[arg(long)]
    pub(crate) http_addr: Option<SocketAddr>,
    /// Data directory (default ./data).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Configuration file (TOML); the embedded default when absent.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Journal acknowledgement: durable or immediate.
    #[arg(long)]
    pub(crate) journal_ack: Option<String>,
    /// Start from the valid prefix of a corrupt journal, reporting what is dropped.
    #[arg(long)]
    pub(crate) repair: bool,
    /// Operator tools; without one, the switch runs.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// ISO 8583 operator tools.
    Iso {
        #[command(subcommand)]
        action: IsoAction,
    },
    /// Prints the embedded default configuration.
    DefaultConfig,
    /// API keys of the internal-frame listener.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Webhook endpoints of merchants, and their events' delivery status.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// Service-provider mandates: which merchants a provider's keys act for.
    Mandates {
        #[command(subcommand)]
        action: MandatesAction,
    },
    /// Terminals at run time: added, disabled, enabled, removed, their
    /// settings (a running switch applies a change within 2 s).
    Terminals {
        #[command(subcommand)]
        action: TerminalsAction,
    },
    /// Merchants at run time: added, disabled, enabled, their settings.
    Merchants {
        #[command(subcommand)]
        action: MerchantsAction,
    },
    /// The store-and-forward queue of advices and reversals to issuers.
    Saf {
        #[command(subcommand)]
        action: SafAction,
    },
    /// Journal operator tools (read-only; safe beside a running switch).
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// The archive store (`[archive]`).
    Archive {
        #[command(subcommand)]
        action: ArchiveAction,
    },
    /// Cluster mode (`docs/cluster.md`): what etcd holds.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Payments of a period with masked cards, for reconciliation.
    Export {
        /// First day, YYYY-MM-DD (UTC), inclusive.
        #[arg(long)]
        from: String,
        /// Last day, YYYY-MM-DD (UTC), inclusive.
        #[arg(long)]
        to: String,
        /// csv or xml.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Only this merchant (MID).
        #[arg(long)]
        merchant: Option<String>,
        /// Data directory (as the switch's `--data-dir`; before or after
        /// `export`).
        #[arg(long = "data-dir")]
        export_data_dir: Option<PathBuf>,
        /// Configuration file (as the switch's `--config`; before or
        /// after `export`).
        #[arg(long = "config")]
        export_config: Option<PathBuf>,
        /// The list's filters.
        #[command(flatten)]
        filters: ExportFilters,
    },
}

/// `switch export`'s filters: the internal-frame list's, by the same
/// names; all optional, combined with "and".
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct ExportFilters {
    /// Only flagged (`yes`) or unflagged (`no`) payments.
    #[arg(long)]
    pub(crate) scam: Option<String>,
    /// Only this F37 of the authorization (12 characters).
    #[arg(long)]
    pub(crate) rrn: Option<String>,
    /// Only this F38 of the authorization (6 letters or digits).
    #[arg(long)]
    pub(crate) auth_code: Option<String>,
    /// Only cards ending with these 4 digits.
    #[arg(long)]
    pub(crate) last4: Option<String>,
    /// Only this channel (F25: 0, 8, 59 or 99).
    #[arg(long)]
    pub(crate) channel: Option<u8>,
    /// Only this ECI (0 to 99).
    #[arg(long)]
    pub(crate) eci: Option<u8>,
    /// Only payments whose authorization was answered with this code.
    #[arg(long)]
    pub(crate) code: Option<String>,
    /// Only these statuses, comma-separated (`succeeded,declined`).
    #[arg(long)]
    pub(crate) status: Option<String>,
}

/// `--etcd-ca`, `--etcd-cert`, `--etcd-key`: TLS to etcd.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct EtcdTlsArgs {
    /// The CA (PEM) of the etcd members' certificates: TLS, `https://`
    /// URLs (as `cluster.etcd_ca_file`).
    #[arg(long = "etcd-ca", value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd, when it requires one (as
    /// `cluster.etcd_cert_file`).
    #[arg(long = "etcd-cert", value_name = "FILE", requires_all = ["ca", "key"])]
    pub(crate) cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long = "etcd-key", value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum ClusterAction {
    /// The nodes, the shards each owns and their epochs, as etcd holds
    /// them (reads etcd only).
    Status {
        /// etcd client URL (`http://host:port`, `https://` with
        /// `--etcd-ca`); several comma-separated or repeated.
        #[arg(long = "etcd", required = true, value_delimiter = ',')]
        etcd: Vec<String>,
        /// TLS to etcd, as the nodes' `cluster.etcd_*_file` keys.
        #[command(flatten)]
        etcd_tls: EtcdTlsArgs,
        /// The cluster's name: keys under `/switch/NAME`.
        #[arg(long, default_value = "default", conflicts_with = "prefix")]
        cluster: String,
        /// The key prefix itself, for an `etcd_prefix` not of the form
        /// `/switch/NAME`.
        #[arg(long)]
        prefix: Option<String>,
        /// A line per shard too: its owner and epoch.
        #[arg(long)]
        shards: bool,
        /// PostgreSQL too (the nodes' `archive.url`): the server it
        /// reaches and its role, its standbys and their replay lag, and
        /// the shards whose fence epoch differs from etcd's.
        #[arg(long = "pg", value_name = "URL")]
        pg: Option<String>,
        /// The same as one JSON object (nodes with their figures, and
        /// every shard's owner and epoch), for scripts.
        #[arg(long, conflicts_with = "shards")]
        json: bool,
    },
    /// Asks node NODE to hand every shard over to the other nodes and
    /// acquire none (it keeps running, as an entry node, `/readyz` 503),
    /// until `--undo` (writes or deletes etcd key `PREFIX/drain/NODE`).
    Drain {
        /// The node's id (`cluster.node_id`).
        node: String,
        /// etcd client URL (`http://host:port`, `https://` with
        /// `--etcd-ca`); several comma-separated or repeated.
        #[arg(long = "etcd", required = true, value_delimiter = ',')]
        etcd: Vec<String>,
        /// TLS to etcd, as the nodes' `cluster.etcd_*_file` keys.
        #[command(flatten)]
        etcd_tls: EtcdTlsArgs,
        /// The cluster's name: keys under `/switch/NAME`.
        #[arg(long, default_value = "default", conflicts_with = "prefix")]
        cluster: String,
        /// The key prefix itself, for an `etcd_prefix` not of the form
        /// `/switch/NAME`.
        #[arg(long)]
        prefix: Option<String>,
        /// Returns once the node owns no shard (at most 60 s, else an
        /// error).
        #[arg(long, conflicts_with = "undo")]
        wait: bool,
        /// Ends the drain: the node is active again and gets its shards
        /// back by hand-over.
        #[arg(long)]
        undo: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ArchiveAction {
    /// Writes every payment the data directory's journal and snapshot
    /// hold into the archive again (idempotent; run with the switch
    /// stopped). Takes `--data-dir` and `--config` before `archive`.
    Rebuild,
}

#[derive(Subcommand)]
pub(crate) enum SafAction {
    /// Lists the entries, oldest first, one JSON object per line: from the
    /// running switch (`GET /saf` on its HTTP address), or, when none
    /// answers there, from the data directory's journal and snapshot.
    List,
    /// Asks the running switch to send every entry again now, whatever
    /// its backoff (`POST /saf/retry`).
    Retry,
}

#[derive(Subcommand)]
pub(crate) enum JournalAction {
    /// Checks every segment and snapshot; exits 1 when damaged.
    Verify {
        /// Data directory (or its journal directory).
        dir: PathBuf,
    },
    /// Every record as a JSON line, card data masked.
    Dump {
        /// Data directory (or its journal directory).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeysAction {
    /// Creates a key; prints its client id and secret (shown this once).
    Create {
        /// Data directory of the switch (as the server's `--data-dir`).
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The merchant's MID (15 characters); or `--provider`.
        #[arg(
            long,
            required_unless_present = "provider",
            conflicts_with = "provider"
        )]
        merchant: Option<String>,
        /// A service provider's id (`XX-0000-0000`).
        #[arg(long)]
        provider: Option<String>,
        /// Who or what uses the key.
        #[arg(long)]
        name: String,
    },
    /// Lists keys, secrets masked.
    List {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Revokes a key at once and for good.
    Revoke {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The key's client id.
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum WebhooksAction {
    /// Registers (or replaces) the endpoint of a merchant the switch serves
    /// (`--config` before `webhooks`); prints its new signing secret, shown
    /// this once, alone on the last line.
    Set {
        /// Data directory of the switch (as the server's `--data-dir`).
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The merchant's MID.
        #[arg(long)]
        merchant: String,
        /// Where events are posted: an http or https URL.
        #[arg(long)]
        url: String,
    },
    /// Lists endpoints, secrets masked; with `--events`, the events and
    /// their delivery status instead (a cluster node's `--config`: the
    /// cluster's, from PostgreSQL).
    List {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// List events (newest first): status, attempts, last answer.
        #[arg(long)]
        events: bool,
        /// Only this merchant's events.
        #[arg(long)]
        merchant: Option<String>,
        /// Only this payment's events, in the order of its changes.
        #[arg(long)]
        payment: Option<u64>,
        /// Most events listed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Removes a merchant's endpoint (its queued events wait for a new one).
    Remove {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The merchant's MID.
        #[arg(long)]
        merchant: String,
    },
    /// Queues an event again (delivered or failed ones too), due now (a
    /// cluster node's `--config`: in PostgreSQL, for the node serving it).
    Resend {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The event's id (`evt_…`).
        #[arg(long)]
        event: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum MandatesAction {
    /// Grants a provider a mandate for a merchant the switch serves (in
    /// the configuration of `--config`, or added at runtime); the
    /// provider must hold a key. Granting again changes the scopes.
    Grant {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The merchant's MID.
        #[arg(long)]
        merchant: String,
        /// The provider id.
        #[arg(long)]
        provider: String,
        /// What it allows: comma-separated payments, refunds, reporting.
        #[arg(long, default_value = "payments,refunds,reporting")]
        scopes: String,
    },
    /// Revokes a mandate; the provider's next request is refused.
    Revoke {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The merchant's MID.
        #[arg(long)]
        merchant: String,
        /// The provider id.
        #[arg(long)]
        provider: String,
    },
    /// Lists mandates, revoked ones included.
    List {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Only the mandates this provider holds.
        #[arg(long)]
        provider: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum IsoAction {
    /// Hex message per line on stdin → JSON per line on stdout.
    Decode {
        /// ascii or ascii-hex.
        #[arg(long, default_value = "ascii")]
        profile: String,
        /// Show card data in clear.
        #[arg(long)]
        unmasked: bool,
    },
    /// JSON per line on stdin → hex message per line on stdout.
    Encode {
        /// ascii or ascii-hex.
        #[arg(long, default_value = "ascii")]
        profile: String,
    },
}

/// What every directory command takes after its name (`--data-dir` may
/// also come before the command, as for the switch).
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct DirectoryArgs {
    /// Data directory of the switch (as the server's `--data-dir`).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Who makes the change, for the audit log (default: $USER).
    #[arg(long)]
    pub(crate) by: Option<String>,
}

/// A terminal setting: on, off, or the merchant's.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tri {
    /// Allowed on this terminal.
    On,
    /// Refused on this terminal (58).
    Off,
    /// As its merchant.
    Inherit,
}

impl Tri {
    /// The override it sets.
    pub(crate) fn setting(self) -> Option<bool> {
        match self {
            Tri::On => Some(true),
            Tri::Off => Some(false),
            Tri::Inherit => None,
        }
    }
}

/// A merchant setting: on or off.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnOff {
    /// Allowed.
    On,
    /// Refused (58).
    Off,
}

impl OnOff {
    /// As a flag.
    pub(crate) fn on(self) -> bool {
        self == OnOff::On
    }
}

#[derive(Subcommand)]
pub(crate) enum TerminalsAction {
    /// Adds a terminal (F41, 8 characters) to a merchant, enabled.
    Add {
        /// F41.
        tid: String,
        /// Its merchant's MID (F42).
        #[arg(long)]
        merchant: String,
        /// For people.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        common: DirectoryArgs,
    },
    /// Lets a disabled (or removed) terminal transact again.
    Enable {
        /// F41.
        tid: String,
        #[command(flatten)]
        common: DirectoryArgs,
    },
    /// Refuses the terminal's authorizations, sales, refunds and captures
    /// with 58; its reversals are still processed.
    Disable {
        /// F41.
        tid: String,
        #[command(flatten)]
        common: DirectoryArgs,
    },
    /// As disable, and marked removed (its reversals still find their
    /// merchant; `enable` or `add` bring it back).
    Remove {
        /// F41.
        tid: String,
        #[command(flatten)]
        common: DirectoryArgs,
    },
    /// Lists terminals with their state and settings.
    List {
        /// Only this merchant's (MID).
        #[arg(long)]
        merchant: Option<String>,
        #[command(flatten)]
        common: DirectoryArgs,
    },
    /// Changes a terminal's name and settings (over its merchant's).
    Set {
        /// F41.
        tid: String,
        /// For people.
        #[arg(long)]
        name: Option<String>,
        /// Refunds on this terminal.
        #[arg(long, value_enum)]
        refunds: Option<Tri>,
        /// MO/TO on this terminal.
        #[arg(long, value_enum)]
        moto: Option<Tri>,
        /// Cancels over internal frames on this terminal.
        #[arg(long, value_enum)]
        cancel: Option<Tri>,
        #[command(flatten)]
        common: DirectoryArgs,
    },
}

/// A merchant's settings on the command line.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct MerchantSettings {
    /// For people.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Accepted currencies, ISO 4217 numeric, comma-separated (978,840).
    #[arg(long, value_delimiter = ',')]
    pub(crate) currencies: Option<Vec<u16>>,
    /// A capture may exceed the authorized amount by this percentage.
    #[arg(long)]
    pub(crate) over_capture_pct: Option<u32>,
    /// Hold period of a pre-authorization, hours (1..=744).
    #[arg(long)]
    pub(crate) hold_hours: Option<u64>,
    /// Auto-capture after this many hours, or `off`.
    #[arg(long)]
    pub(crate) auto_capture_hours: Option<String>,
    /// Refunds.
    #[arg(long, value_enum)]
    pub(crate) refunds: Option<OnOff>,
    /// MO/TO.
    #[arg(long, value_enum)]
    pub(crate) moto: Option<OnOff>,
}

#[derive(Subcommand)]
pub(crate) enum MerchantsAction {
    /// Lists merchants with their index and settings.
    List {
        #[command(flatten)]
        common: DirectoryArgs,
    },
    /// Adds a merchant (F42, 15 characters) at the next index.
    Add {
        /// F42.
        mid: String,
        #[command(flatten)]
        settings: MerchantSettings,
        #[command(flatten)]
        common: DirectoryArgs,
    },
    /// Lets a disabled merchant transact again.
    Enable {
        /// F42.
        mid: String,
        #[command(flatten)]
        common: DirectoryArgs,
    },
    /// Refuses everything of the merchant with 03 (a merchant is disabled,
    /// never removed: its index is in its payments).
    Disable {
        /// F42.
        mid: String,
        #[command(flatten)]
        common: DirectoryArgs,
    },
    /// Changes a merchant's settings.
    Set {
        /// F42.
        mid: String,
        #[command(flatten)]
        settings: MerchantSettings,
        #[command(flatten)]
        common: DirectoryArgs,
    },
}
