//! The deadlines no client can stretch, a write that gives up, and why a
//! connection ended.
//!
//! A connection's deadlines (`docs/configuration.md`, `[limits]`):
//! - **frame**: once a frame's first byte has arrived, the whole frame
//!   must follow within `frame_read_timeout_ms` (a byte a second does not
//!   hold a slot);
//! - **log-in** (internal frames): logged in within `login_timeout_ms` of
//!   being accepted, whatever is sent meanwhile;
//! - **idle**: `idle_timeout_s` after the later of the last complete
//!   request and the last completed write, unless answers wait for the
//!   journal;
//! - **write**: answers that cannot be written within `write_timeout_ms`
//!   close the connection (a peer that never reads);
//! - **drain**: after the connection ends (shutdown included), at most
//!   `drain_timeout_ms` to answer what was read.
//!
//! One timer per connection serves the first three. It is never re-armed
//! on a read (that took the runtime's timer lock once per read batch);
//! instead it fires at the earliest known deadline, and at least every
//! quarter of the frame timeout, so a frame that starts between two
//! firings is closed at most a quarter late.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::net::outbox::Outbox;
use crate::net::stream::Stream;
use crate::ratelog::warn_limited;

/// The deadlines of one listener's connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// `limits.idle_timeout_s`.
    pub(crate) idle: Duration,
    /// `limits.frame_read_timeout_ms`.
    pub(crate) frame_read: Duration,
    /// `limits.write_timeout_ms`.
    pub(crate) write: Duration,
    /// `limits.drain_timeout_ms`.
    pub(crate) drain: Duration,
    /// `limits.login_timeout_ms`, on a listener that asks for a log-in.
    pub(crate) login: Option<Duration>,
}

impl ConnLimits {
    /// The limits of `[limits]`; `login` on the internal-frame listener.
    pub(crate) fn new(limits: &Limits, login: bool) -> Self {
        ConnLimits {
            idle: Duration::from_secs(limits.idle_timeout_s),
            frame_read: Duration::from_millis(limits.frame_read_timeout_ms),
            write: Duration::from_millis(limits.write_timeout_ms),
            drain: Duration::from_millis(limits.drain_timeout_ms),
            login: login.then(|| Duration::from_millis(limits.login_timeout_ms)),
        }
    }
}

/// Why a connection ended; the label is `switch_connections_closed_total`'s
/// `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer closed it.
    PeerClosed,
    /// Shutdown.
    Shutdown,
    /// No complete request and no completed write for the idle timeout.
    Idle,
    /// A frame begun and not finished within the frame deadline.
    FrameTimeout,
    /// Not logged in within the log-in deadline.
    LoginTimeout,
    /// Answers not written within the write deadline.
    WriteTimeout,
    /// A frame that cannot be answered (framing or header error).
    Protocol(&'static str),
    /// Not logged in, log-in refused, or the key revoked: answered, closed.
    Refused,
    /// Socket error.
    Io,
    /// The journal stopped (failed, or closed) with answers held for it.
    Journal,
}

impl End {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            End::PeerClosed => "peer_closed",
            End::Shutdown => "shutdown",
            End::Idle => "idle_timeout",
            End::FrameTimeout => "frame_timeout",
            End::LoginTimeout => "login_timeout",
            End::WriteTimeout => "write_timeout",
            End::Protocol(reason) => reason,
            End::Refused => "internal_auth_refused",
            End::Io => "io_error",
            End::Journal => "journal_stopped",
        }
    }

    /// Whether answers may still be written: not to a peer that stopped
    /// reading, nor to a broken socket.
    pub(crate) fn can_write(self) -> bool {
        !matches!(self, End::WriteTimeout | End::Io)
    }

    /// Counts the end (before the socket closes, so a peer that sees the
    /// close and then scrapes `/metrics` finds it) and logs it: ordinary
    /// ends at debug, the others as warnings within a budget per cause.
    pub(crate) fn record(self, listener: &'static str, peer: Option<IpAddr>) {
        let reason = self.label();
        metrics::counter!("switch_connections_closed_total", "reason" => reason).increment(1);
        let limit = match self {
            End::FrameTimeout => Some("frame_read_timeout_ms"),
            End::LoginTimeout => Some("login_timeout_ms"),
            End::WriteTimeout => Some("write_timeout_ms"),
            _ => None,
        };
        if let Some(limit) = limit {
            metrics::counter!("switch_limit_reached_total", "limit" => limit).increment(1);
        }
        match self {
            End::PeerClosed | End::Shutdown => {
                tracing::debug!(listener, ?peer, reason, "connection closed")
            }
            End::Idle => {
                warn_limited!("idle_timeout", listener, ?peer, reason, "connection closed")
            }
            End::FrameTimeout | End::LoginTimeout | End::WriteTimeout => {
                warn_limited!("deadline", listener, ?peer, reason, "connection closed")
            }
            End::Protocol(_) | End::Refused => {
                warn_limited!("protocol", listener, ?peer, reason, "connection closed")
            }
            End::Io | End::Journal => {
                warn_limited!("io", listener, ?peer, reason, "connection closed")
            }
        }
    }
}

/// A connection's drain did not finish within `limits.drain_timeout_ms`:
/// it is closed with what was not written.
pub(crate) fn drain_timed_out(listener: &'static str, peer: Option<IpAddr>) {
    metrics::counter!("switch_limit_reached_total", "limit" => "drain_timeout_ms").increment(1);
    warn_limited!(
        "drain",
        listener,
        ?peer,
        "connection closed at the drain deadline"
    );
}

/// When a connection's deadlines fall; see the module comment.
pub(crate) struct Deadlines {
    /// The listener's limits.
    limits: ConnLimits,
    /// When the connection was accepted (log-in deadline).
    accepted: Instant,
    /// The later of the last complete request and the last completed write.
    last_activity: Instant,
    /// When the first byte of an unfinished frame was seen.
    frame_started: Option<Instant>,
}

impl Deadlines {
    /// The listener's limits.
    pub(crate) fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// Deadlines of a connection accepted `now`.
    pub(crate) fn new(limits: ConnLimits, now: Instant) -> Self {
        Deadlines {
            limits,
            accepted: now,
            last_activity: now,
            frame_started: None,
        }
    }

    /// After framing: `requests` whole frames were taken from the input and
    /// `partial` says whether bytes of an unfinished frame remain.
    pub(crate) fn after_input(&mut self, requests: usize, partial: bool, now: Instant) {
        if requests > 0 {
            self.last_activity = now;
        }
        self.frame_started = match (partial, self.frame_started) {
            (false, _) => None,
            // A new frame began within the read just framed.
            (true, Some(_)) if requests > 0 => Some(now),
            (true, started) => Some(started.unwrap_or(now)),
        };
    }

    /// A write completed.
    pub(crate) fn after_write(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// The deadline passed at `now`, if any; else when to look again.
    /// `reading`: the handler reads (below its in-flight limit), so an
    /// unfinished frame is the peer's to finish. `waiting`: answers wait
    /// for the journal, which is not the peer's idleness. `logged_in`:
    /// the log-in deadline no longer applies.
    pub(crate) fn check(
        &self,
        now: Instant,
        reading: bool,
        waiting: bool,
        logged_in: bool,
    ) -> Result<Instant, End> {
        let l = &self.limits;
        let login = l.login.filter(|_| !logged_in).map(|t| self.accepted + t);
        let frame = self
            .frame_started
            .filter(|_| reading)
            .map(|t| t + l.frame_read);
        let idle = (!waiting).then(|| self.last_activity + l.idle);
        for (due, end) in [
            (login, End::LoginTimeout),
            (frame, End::FrameTimeout),
            (idle, End::Idle),
        ] {
            if due.is_some_and(|due| now >= due) {
                return Err(end);
            }
        }
        let poll = now + l.frame_read / 4;
        Ok([login, frame, idle]
            .into_iter()
            .flatten()
            .fold(poll, Instant::min))
    }
}

/// Writes what `outbox` has ready: first without waiting (the common case,
/// no timer), then within the write deadline, unless shutdown comes first.
/// Cancel-safe: what is not written stays in the outbox.
///
/// # Errors
/// [`End::WriteTimeout`], [`End::Shutdown`] or [`End::Io`].
pub(crate) async fn write_ready(
    outbox: &mut Outbox,
    stream: &mut Stream,
    deadlines: &mut Deadlines,
    cancel: &CancellationToken,
) -> Result<(), End> {
    if !outbox.has_ready() {
        return Ok(());
    }
    let done = outbox.try_flush(stream).map_err(|_| End::Io)?;
    if !done {
        let limit = deadlines.limits.write;
        tokio::select! {
            r = outbox.flush(stream) => r.map_err(|_| End::Io)?,
            () = tokio::time::sleep(limit) => return Err(End::WriteTimeout),
            () = cancel.cancelled() => return Err(End::Shutdown),
        }
    }
    deadlines.after_write(Instant::now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            idle: Duration::from_secs(300),
            frame_read: Duration::from_millis(400),
            write: Duration::from_millis(400),
            drain: Duration::from_millis(400),
            login: Some(Duration::from_secs(10)),
        }
    }

    #[test]
    fn a_trickled_frame_ends_at_its_deadline_not_later() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::new(limits(), t0);
        // A length header, then a byte at a time: the frame's clock keeps
        // its first byte's time.
        for t in [10, 100, 200, 300] {
            d.after_input(0, true, ms(t));
        }
        assert!(d.check(ms(409), true, false, true).is_ok());
        assert_eq!(d.check(ms(410), true, false, true), Err(End::FrameTimeout));
        // Not the peer's fault while the handler does not read.
        assert!(d.check(ms(410), false, false, true).is_ok());
        // A finished frame clears it; a new one starts its own clock.
        d.after_input(1, true, ms(405));
        assert!(d.check(ms(800), true, false, true).is_ok());
        assert_eq!(d.check(ms(805), true, false, true), Err(End::FrameTimeout));
        d.after_input(1, false, ms(806));
        assert!(d.check(ms(5_000), true, false, true).is_ok());
    }

    #[test]
    fn the_log_in_deadline_is_absolute() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(limits(), t0);
        for s in 1..10 {
            d.after_input(1, false, t0 + Duration::from_secs(s));
            d.after_write(t0 + Duration::from_secs(s));
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(d.check(at, true, false, false), Err(End::LoginTimeout));
        assert!(d.check(at, true, false, true).is_ok(), "logged in");
    }

    #[test]
    fn idle_counts_from_requests_and_writes_but_not_while_the_journal_holds() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut d = Deadlines::new(limits(), t0);
        d.after_input(1, false, s(100));
        d.after_write(s(200));
        assert!(d.check(s(499), true, false, true).is_ok());
        assert_eq!(d.check(s(500), true, false, true), Err(End::Idle));
        assert!(d.check(s(500), true, true, true).is_ok(), "journal wait");
    }

    #[test]
    fn the_timer_looks_again_within_a_quarter_of_the_frame_timeout() {
        let t0 = Instant::now();
        let d = Deadlines::new(limits(), t0);
        let next = d.check(t0, true, false, true).expect("no deadline yet");
        assert_eq!(next, t0 + Duration::from_millis(100));
    }
}
