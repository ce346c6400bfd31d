//! What a wire format gives the connection loop: how a frame is delimited
//! and answered. Everything else (reading, batching, holding answers for
//! the journal, deadlines, shutdown) is the loop's, the same for both.

use std::net::IpAddr;

use bytes::BytesMut;

use crate::net::End;

/// A deferred answer for a connection: its framed bytes and the journal
/// sequence it waits for (0: none). Each connection holds at most
/// `limits.inflight_per_connection_max` requests unanswered, deferred
/// ones included, so its channel holds at most that many.
pub(crate) type Later = tokio::sync::mpsc::UnboundedSender<(Vec<u8>, u64)>;

/// The sequence of a deferred "answer" that ends the connection instead
/// (with no bytes): a request whose outcome nobody can tell, as when the
/// node holding it died (an internal frame written to a shard's owner that
/// did not answer, cluster mode). Closed with reason `owner_lost`.
pub(crate) const LATER_END: u64 = u64::MAX;

/// What answering one frame produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answered {
    /// Journal sequence the answer waits for (0: none).
    pub(crate) seq: u64,
    /// Close the connection after this answer (or, with nothing written,
    /// instead of one).
    pub(crate) end: Option<End>,
    /// Nothing written now: the answer comes later through the
    /// connection's [`Later`] (an issuer has it).
    pub(crate) deferred: bool,
}

/// One wire format on one connection.
pub(crate) trait Wire: Send + 'static {
    /// A delimited frame.
    type Frame;

    /// The listener's label for logs and metrics (`iso`, `frame`).
    const NAME: &'static str;

    /// The next whole frame taken from `input`; `Ok(None)` while it is
    /// incomplete.
    ///
    /// # Errors
    /// The end to close with when the input cannot be delimited.
    fn next_frame(
        &mut self,
        input: &mut BytesMut,
        peer: IpAddr,
    ) -> Result<Option<Self::Frame>, End>;

    /// Answers `frame` at the end of `out` (nothing written: no answer).
    fn answer(&mut self, frame: Self::Frame, peer: IpAddr, out: &mut BytesMut) -> Answered;

    /// Gives the wire the channel its deferred answers go back through.
    fn set_later(&mut self, _later: Later) {}

    /// Whether the log-in deadline no longer applies.
    fn logged_in(&self) -> bool {
        true
    }

    /// Whether whole frames already read are still answered after `end`.
    fn answers_rest(&self, end: End) -> bool;
}
