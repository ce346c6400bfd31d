//! Errors: [`EtcdError`] for the etcd client, [`FenceError`] for the
//! PostgreSQL fence, [`MemberError`] for a node joining its cluster.

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The endpoint list is empty, too long, or holds a URL that is not
    /// `http://host:port` (`https://` with TLS).
    #[error("etcd endpoints: {0}")]
    Endpoints(String),
    /// The TLS configuration (CA, client certificate or key) was refused.
    #[error("etcd TLS: {0}")]
    Tls(String),
    /// No endpoint answered (connection refused, timeout, 5xx); the last
    /// endpoint tried and what happened there.
    #[error("etcd {op}: no endpoint answered (last {endpoint}: {reason})")]
    Unreachable {
        /// The gateway path, e.g. `/v3/kv/txn`.
        op: &'static str,
        /// The last endpoint tried.
        endpoint: String,
        /// What happened there.
        reason: String,
    },
    /// etcd refused the request (its gRPC code and message).
    #[error("etcd {op} at {endpoint}: code {code}: {message}")]
    Refused {
        /// The gateway path.
        op: &'static str,
        /// The endpoint that answered.
        endpoint: String,
        /// The gRPC status code.
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// The lease named does not exist (it expired or was revoked).
    #[error("etcd lease {0} not found (expired or revoked)")]
    LeaseNotFound(i64),
    /// An answer that is not what the gateway documents.
    #[error("etcd {op}: unexpected answer: {reason}")]
    Decode {
        /// The gateway path.
        op: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A prefix holds more keys than the caller's limit.
    #[error("etcd prefix {prefix:?} holds more than {limit} keys")]
    TooMany {
        /// The prefix read.
        prefix: String,
        /// The caller's limit.
        limit: usize,
    },
}

/// Why a write batch's fence refused it, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// A later owner took the shard over: the stored epoch is larger than
    /// the writer's. The transaction is aborted and must roll back.
    #[error("shard {shard} fenced: epoch {stored} is stored, the writer has {writer}")]
    Fenced {
        /// The shard.
        shard: u32,
        /// The epoch in `shard_owner`.
        stored: i64,
        /// The writer's epoch.
        writer: i64,
    },
    /// An epoch or shard out of range (programmer error at the caller).
    #[error("fence argument: {0}")]
    Argument(String),
    /// PostgreSQL failed otherwise.
    #[error("fence: {0}")]
    Postgres(#[from] postgres::Error),
}

/// Why a node could not join or serve its cluster.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// A setting out of its range; names the setting.
    #[error("cluster setting {name}: {reason}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// What was expected.
        reason: String,
    },
    /// etcd failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}
