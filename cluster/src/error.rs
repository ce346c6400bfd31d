//! Errors: [`EtcdError`] for the etcd client.

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The endpoint list is empty, too long, or holds a URL that is not
    /// `http://host:port`.
    #[error("etcd endpoints: {0}")]
    Endpoints(String),
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
