//! Errors: a refused policy, a full watch list, and a velocity checkpoint
//! that does not decode.

/// Why a policy was refused. Every variant names the line, and the key where
/// there is one, so the operator can fix the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The source is larger than [`POLICY_BYTES_MAX`](crate::POLICY_BYTES_MAX).
    #[error("policy is {bytes} bytes, more than the {max} allowed")]
    TooLarge {
        /// Size of the source.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid TOML, or a key of the wrong type or unknown.
    #[error("policy line {line}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// What the TOML parser expected (names the key for unknown keys).
        message: String,
    },
    /// Valid TOML, but a value outside what the policy allows.
    #[error("policy line {line}, key `{key}`: {expected}")]
    Invalid {
        /// 1-based line of the offending value.
        line: usize,
        /// Dotted path of the key, e.g. `merchants.DEMO00000000001.sca.threshold_minor.978`.
        key: String,
        /// What was expected.
        expected: String,
    },
}

/// The watch list already holds its maximum number of cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("watch list is full ({max} cards)")]
pub struct WatchListFull {
    /// The limit that was hit.
    pub max: usize,
}

/// Bytes that are not a velocity checkpoint this version reads (see
/// `RiskState::import_cards`): what was wrong, at which entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("velocity checkpoint: {what} (entry {entry})")]
pub struct CheckpointError {
    /// What did not decode.
    pub what: &'static str,
    /// The entry's place (0 for the header).
    pub entry: usize,
}
