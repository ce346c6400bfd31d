//! What can go wrong talking to the switch.

/// Errors of [`crate::Client`]. A declined or refused request is not an
/// error: it is a [`crate::Reply`] with its result code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("internal frames i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A field is outside what the format allows (the request was not sent).
    #[error("request refused before sending: {0}")]
    Encode(#[from] codecs::internal::Error),
    /// An input the client checks itself (the request was not sent).
    #[error("invalid {field}: expected {expected}")]
    InvalidInput {
        /// The field, e.g. `expiry_yymm`.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// The switch answered the log-in with a refusal.
    #[error("authentication refused with result code {result_code}: {message}")]
    Authentication {
        /// The result code, e.g. `58`.
        result_code: String,
        /// The switch's message.
        message: String,
    },
    /// The connection was closed before the answer came.
    #[error("connection closed by the switch")]
    Closed,
    /// No answer within the client's timeout.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}
