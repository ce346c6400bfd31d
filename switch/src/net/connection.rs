//! The one connection loop, for both wires.
//!
//! It reads as much as the socket has, answers every whole frame (the
//! pipeline never awaits), and writes every answer produced from that read
//! with one write (TCP_NODELAY is on, so batching is what keeps the packet
//! count down). Answers that wait for the journal are held, in order; at
//! the in-flight limit it stops reading.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::net::deadline::{self, ConnLimits, Deadlines, End};
use crate::net::outbox::Outbox;
use crate::net::pressure::{Pressure, PRESSURE_RECHECK};
use crate::net::stream::Stream;
use crate::net::wire::{Wire, LATER_END};

/// Read buffer size per connection at start; it grows to one frame at most.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Answer buffer at start; it grows to the largest answer.
const SCRATCH_BYTES: usize = 1024;

/// One connection speaking wire `W`.
pub(crate) struct Connection<W: Wire> {
    /// The wire format and its per-connection state (log-in, codec).
    wire: W,
    /// The socket, plain or TLS.
    stream: Stream,
    /// The peer's address, for logs and the log-in limiter.
    peer: IpAddr,
    /// Bytes read, not yet framed.
    input: BytesMut,
    /// Answers ready or held for the journal; at most `inflight_max` held.
    outbox: Outbox,
    /// One answer being written, reused.
    scratch: BytesMut,
    /// `limits.inflight_per_connection_max`.
    inflight_max: usize,
    /// Frame, log-in, idle and write deadlines.
    deadlines: Deadlines,
    /// While on, no new request is read.
    pressure: Pressure,
    /// Answers an issuer decides come back here (the sender is the wire's).
    later: tokio::sync::mpsc::UnboundedReceiver<(Vec<u8>, u64)>,
    /// Requests deferred to an issuer and not answered yet; they count
    /// toward `inflight_max` with the held answers.
    deferred: usize,
}

impl<W: Wire> Connection<W> {
    /// A connection over `stream`.
    pub(crate) fn new(
        wire: W,
        stream: Stream,
        limits: ConnLimits,
        inflight_max: usize,
        durable: Option<journal::DurableWatch>,
        pressure: Pressure,
    ) -> Self {
        let mut wire = wire;
        let (later_tx, later) = tokio::sync::mpsc::unbounded_channel();
        wire.set_later(later_tx);
        let peer = stream
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        Connection {
            wire,
            stream,
            peer,
            input: BytesMut::with_capacity(READ_BUFFER_BYTES),
            outbox: Outbox::new(durable, inflight_max),
            scratch: BytesMut::with_capacity(SCRATCH_BYTES),
            inflight_max,
            deadlines: Deadlines::new(limits, Instant::now()),
            pressure,
            later,
            deferred: 0,
        }
    }

    /// Serves until the peer leaves, shutdown, a deadline, a bad frame or
    /// a refusal; then answers what it may within the drain deadline.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let end = self.serve(&cancel).await;
        end.record(W::NAME, Some(self.peer));
        let more = self.wire.answers_rest(end);
        let drain = self.deadlines.limits().drain;
        if tokio::time::timeout(drain, self.drain(more, end.can_write()))
            .await
            .is_err()
        {
            deadline::drain_timed_out(W::NAME, Some(self.peer));
        }
    }

    async fn serve(&mut self, cancel: &CancellationToken) -> End {
        let Err(end) = self.serve_until_end(cancel).await;
        end
    }

    async fn serve_until_end(&mut self, cancel: &CancellationToken) -> Result<Infallible, End> {
        // One timer for the connection's life, re-armed only when it fires
        // (`deadline`'s module comment says why).
        let logged_in = self.wire.logged_in();
        let first = self.deadlines.check(Instant::now(), true, false, logged_in);
        let timer = tokio::time::sleep_until(first.unwrap_or_else(|_| Instant::now()));
        tokio::pin!(timer);
        loop {
            let processed = self.process_input();
            self.outbox.release_durable();
            deadline::write_ready(
                &mut self.outbox,
                &mut self.stream,
                &mut self.deadlines,
                cancel,
            )
            .await?;
            processed?;
            let pressed = self.pressure.is_on();
            let can_read = self.unanswered() < self.inflight_max && !pressed;
            // Held off by backpressure is waiting, not idle.
            let waiting = self.unanswered() > 0 || pressed;
            tokio::select! {
                () = cancel.cancelled() => return Err(End::Shutdown),
                read = self.stream.read_buf(&mut self.input), if can_read => match read {
                    Ok(0) => return Err(End::PeerClosed),
                    Ok(_) => {}
                    Err(_) => return Err(End::Io),
                },
                changed = self.outbox.wait_durable(), if waiting => {
                    if changed.is_err() {
                        return Err(End::Journal);
                    }
                }
                () = tokio::time::sleep(PRESSURE_RECHECK), if pressed => {}
                Some((answer, seq)) = self.later.recv(), if self.deferred > 0 => {
                    self.deferred -= 1;
                    if seq == LATER_END {
                        return Err(End::Protocol("owner_lost"));
                    }
                    self.outbox.push(&answer, seq);
                    // Issuer-decided answers come from one task each, often
                    // woken together: let those already runnable send theirs
                    // before this writes.
                    if self.deferred > 0 {
                        tokio::task::yield_now().await;
                    }
                    self.take_later_ready()?;
                }
                () = &mut timer => {
                    let logged_in = self.wire.logged_in();
                    let next = self.deadlines.check(Instant::now(), can_read, waiting, logged_in)?;
                    timer.as_mut().reset(next);
                }
            }
        }
    }

    /// Takes every issuer-decided answer already queued, so that they
    /// leave in one write rather than one write (and one wake-up of the
    /// terminal) each; at most `deferred` of them, so the loop is bounded.
    /// A [`LATER_END`] among them ends the connection.
    fn take_later_ready(&mut self) -> Result<(), End> {
        while self.deferred > 0 {
            let Ok((answer, seq)) = self.later.try_recv() else {
                return Ok(());
            };
            self.deferred -= 1;
            if seq == LATER_END {
                return Err(End::Protocol("owner_lost"));
            }
            self.outbox.push(&answer, seq);
        }
        Ok(())
    }

    /// Requests read and not answered: held for the journal, or with an
    /// issuer.
    fn unanswered(&self) -> usize {
        self.outbox.held() + self.deferred
    }

    /// Answers every whole frame in `input`, while under the in-flight
    /// limit.
    fn process_input(&mut self) -> Result<(), End> {
        let mut requests = 0;
        while self.unanswered() < self.inflight_max {
            let Some(frame) = self.wire.next_frame(&mut self.input, self.peer)? else {
                break;
            };
            requests += 1;
            let answered = self.wire.answer(frame, self.peer, &mut self.scratch);
            if answered.deferred {
                self.deferred += 1;
            }
            if !self.scratch.is_empty() {
                self.outbox.push(&self.scratch, answered.seq);
                self.scratch.clear();
            }
            if let Some(end) = answered.end {
                return Err(end);
            }
        }
        let partial = !self.input.is_empty();
        if requests > 0 || partial {
            self.deadlines
                .after_input(requests, partial, Instant::now());
        }
        Ok(())
    }

    /// At the end: answer whole frames already read (when the input is
    /// still trusted), wait for the journal, write everything (when the
    /// peer still reads).
    async fn drain(&mut self, process_rest: bool, write: bool) {
        if process_rest {
            let _ = self.process_input();
        }
        // Answers still with an issuer come within its timeout (the
        // caller bounds the whole drain).
        while self.deferred > 0 {
            let Some((answer, seq)) = self.later.recv().await else {
                break;
            };
            self.deferred -= 1;
            if seq != LATER_END {
                self.outbox.push(&answer, seq);
            }
        }
        if write {
            self.outbox.drain(&mut self.stream).await;
        }
        let _ = self.stream.shutdown().await;
    }
}
