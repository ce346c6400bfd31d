//! Why an archive operation failed.

/// An archive operation that did not happen. Every variant names the store
/// (the file, or later the server) so an operator knows where to look.
///
/// A failed [`crate::Archive::apply`] changed nothing: the batch is one
/// transaction, and the caller keeps the records in memory and retries.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The store could not be opened, read or written.
    #[error("archive {location}: {source}")]
    Io {
        /// The file or server.
        location: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The server could not be reached, refused the login or the
    /// database, or the connection broke (a restart). A write that failed
    /// so may or may not have committed: applying it again is harmless
    /// (upserts are versioned). The next call connects again.
    #[error("archive {location}: connection: {reason}")]
    Connect {
        /// The server's URL, without its password.
        location: String,
        /// What the driver or the server said.
        reason: String,
    },
    /// The store is not an archive of this version, or is damaged.
    #[error("archive {location} is not a usable archive: {reason}")]
    Corrupt {
        /// The file or server.
        location: String,
        /// What was found instead of what was expected.
        reason: String,
    },
    /// The disk (or the server's quota) is full: nothing was written, and
    /// writes must stop until room is made.
    #[error("archive {location}: no space left")]
    Full {
        /// The file or server.
        location: String,
    },
    /// The store refused an operation for another reason (busy beyond the
    /// wait, read-only, a constraint).
    #[error("archive {location}: {reason}")]
    Store {
        /// The file or server.
        location: String,
        /// What the store said.
        reason: String,
    },
    /// A journal record of the batch could not be read; the batch was not
    /// applied.
    #[error("archive {location}: journal record seq {seq}: {source}")]
    Record {
        /// The file or server.
        location: String,
        /// The record's journal sequence.
        seq: u64,
        /// Why it could not be read.
        source: engine::record::DecodeError,
    },
    /// A caller passed more than a named limit allows.
    #[error("archive {location}: {what} is {got}, more than the limit of {max}")]
    Limit {
        /// The file or server.
        location: String,
        /// Which limit.
        what: &'static str,
        /// What was asked.
        got: u64,
        /// The limit.
        max: u64,
    },
}
