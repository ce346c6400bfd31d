//! A connection's answers on their way out: ready ones, and ones held until
//! the journal's durable sequence reaches their record. Shared by the ISO
//! 8583 and internal-frame handlers.
//!
//! Answers leave in the order they were queued: nothing overtakes a held
//! answer. Holding is bounded by the handler, which stops reading at its
//! in-flight limit ([`Outbox::held`]).

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};
use journal::{AppendError, DurableWatch};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::net::stream::Stream;

/// Initial size of the ready buffer; it grows to what one read produces.
const READY_BUFFER_BYTES: usize = 16 * 1024;

/// Ready and held answers of one connection.
pub(crate) struct Outbox {
    /// Answers ready to write.
    ready: BytesMut,
    /// Answers waiting for the journal, in order.
    held: BytesMut,
    /// (sequence, length) of each answer in `held`.
    held_index: VecDeque<(u64, usize)>,
    /// The journal's durable sequence; `None` when nothing waits.
    durable: Option<DurableWatch>,
    /// `switch_requests_in_flight`, registered once per connection rather
    /// than looked up for every held answer.
    in_flight: metrics::Gauge,
}

impl Outbox {
    /// An empty outbox; `held_capacity` is the handler's in-flight limit.
    pub(crate) fn new(durable: Option<DurableWatch>, held_capacity: usize) -> Self {
        Outbox {
            ready: BytesMut::with_capacity(READY_BUFFER_BYTES),
            held: BytesMut::new(),
            held_index: VecDeque::with_capacity(held_capacity.min(1024)),
            durable,
            in_flight: metrics::gauge!("switch_requests_in_flight"),
        }
    }

    fn durable_now(&self) -> u64 {
        self.durable
            .as_ref()
            .map_or(u64::MAX, DurableWatch::durable_seq)
    }

    /// Queues one answer that may leave once `seq` is durable (0: at once).
    pub(crate) fn push(&mut self, answer: &[u8], seq: u64) {
        if self.held_index.is_empty() && (seq == 0 || seq <= self.durable_now()) {
            self.ready.extend_from_slice(answer);
        } else {
            self.held.extend_from_slice(answer);
            self.held_index.push_back((seq, answer.len()));
            self.in_flight.increment(1.0);
        }
    }

    /// Answers held for the journal.
    pub(crate) fn held(&self) -> usize {
        self.held_index.len()
    }

    /// Moves held answers whose records are durable to the ready buffer, in order.
    pub(crate) fn release_durable(&mut self) {
        let durable = self.durable_now();
        let mut released = 0usize;
        while let Some(&(seq, len)) = self.held_index.front() {
            if seq > durable {
                break;
            }
            self.ready
                .extend_from_slice(self.held.get(..len).unwrap_or_default());
            self.held.advance(len);
            self.held_index.pop_front();
            released += 1;
        }
        if released > 0 {
            self.in_flight.decrement(released as f64);
        }
    }

    /// Whether answers are ready to write.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Writes what the socket takes now, without waiting; `true` when
    /// nothing ready is left, in the outbox or held back by the stream
    /// (TLS).
    ///
    /// # Errors
    /// The socket's, except that it would block.
    pub(crate) fn try_flush(&mut self, stream: &mut Stream) -> std::io::Result<bool> {
        while !self.ready.is_empty() {
            match stream.try_write(&self.ready) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        stream.try_flush()
    }

    /// Writes every ready answer, usually with one write, and flushes the
    /// stream (TLS holds bytes back; TCP does not). Cancel-safe:
    /// dropped while waiting, what was not written stays ready, so a
    /// caller may give up on a peer that does not read and the stream
    /// stays whole.
    ///
    /// # Errors
    /// The socket's.
    pub(crate) async fn flush(
        &mut self,
        stream: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        while !self.ready.is_empty() {
            let n = stream.write(&self.ready).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.consume(n);
        }
        stream.flush().await
    }

    /// `n` ready bytes were written.
    fn consume(&mut self, n: usize) {
        if n >= self.ready.len() {
            // Keeps the allocation at its start for the next answers.
            self.ready.clear();
        } else {
            self.ready.advance(n);
        }
    }

    /// Waits for the durable sequence to move; never returns without a journal.
    ///
    /// # Errors
    /// When the journal has stopped (failed or closed): held answers whose
    /// records are not durable will never leave.
    pub(crate) async fn wait_durable(&mut self) -> Result<(), AppendError> {
        match self.durable.as_mut() {
            Some(d) => d.changed().await,
            None => std::future::pending().await,
        }
    }

    /// At the end of a connection: releases and writes everything as it
    /// becomes durable. The caller bounds it with a timeout.
    pub(crate) async fn drain(&mut self, stream: &mut (impl AsyncWrite + Unpin)) {
        loop {
            self.release_durable();
            if self.flush(stream).await.is_err() || self.held_index.is_empty() {
                return;
            }
            if self.wait_durable().await.is_err() {
                return;
            }
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // Answers never sent are no longer in flight.
        if !self.held_index.is_empty() {
            self.in_flight.decrement(self.held_index.len() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use journal::{Config, Journal, OsStorage};

    use super::*;

    /// A real journal in a fresh directory (removed by the caller).
    fn journal(name: &str) -> (Journal, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("switch-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (j, _) =
            Journal::open(Config::new(&dir), Arc::new(OsStorage), |_| Ok(())).expect("open");
        (j, dir)
    }

    #[tokio::test]
    async fn held_answers_leave_in_order_once_durable() {
        let (j, dir) = journal("order");
        let mut o = Outbox::new(Some(j.durable_watch()), 8);
        o.push(b"a", 0);
        o.push(b"b", 2);
        o.push(b"c", 0); // must not overtake b
        o.push(b"d", 1);
        let mut out = Vec::new();
        o.flush(&mut out).await.expect("write");
        assert_eq!(out, b"a");
        assert_eq!(o.held(), 3);
        let first = j.append(1, b"one").await.expect("append");
        assert_eq!(first, 1);
        j.wait_durable(first).await.expect("durable");
        o.release_durable();
        o.flush(&mut out).await.expect("write");
        assert_eq!(out, b"a", "b (seq 2) still holds c and d back");
        let second = j.append(1, b"two").await.expect("append");
        assert_eq!(second, 2);
        o.drain(&mut out).await;
        assert_eq!(out, b"abcd");
        assert_eq!(o.held(), 0);
        j.shutdown().expect("shutdown");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_stopped_journal_ends_the_wait() {
        let (j, dir) = journal("stopped");
        let mut o = Outbox::new(Some(j.durable_watch()), 8);
        o.push(b"never durable", 5);
        j.shutdown().expect("shutdown");
        assert_eq!(o.wait_durable().await, Err(AppendError::Closed));
        let mut out = Vec::new();
        o.drain(&mut out).await;
        assert!(out.is_empty(), "record 5 was never written");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_flush_given_up_on_leaves_the_rest_whole() {
        use tokio::io::AsyncReadExt;
        // A peer whose window holds 4 bytes and who reads nothing yet.
        let (mut ours, mut theirs) = tokio::io::duplex(4);
        let mut o = Outbox::new(None, 8);
        o.push(b"abcdefghij", 0);
        let r = tokio::time::timeout(std::time::Duration::from_millis(20), o.flush(&mut ours));
        assert!(r.await.is_err(), "the write waits for the peer");
        assert!(o.has_ready(), "what was not written is kept");
        let mut got = vec![0u8; 4];
        theirs.read_exact(&mut got).await.expect("read");
        let reader = tokio::spawn(async move {
            let mut rest = vec![0u8; 6];
            theirs.read_exact(&mut rest).await.expect("read");
            rest
        });
        o.flush(&mut ours).await.expect("write");
        got.extend(reader.await.expect("join"));
        assert_eq!(got, b"abcdefghij", "no byte lost or sent twice");
    }

    #[tokio::test]
    async fn without_a_journal_nothing_waits() {
        let mut o = Outbox::new(None, 8);
        o.push(b"x", 0);
        o.push(b"y", 0);
        let mut out = Vec::new();
        o.drain(&mut out).await;
        assert_eq!(out, b"xy");
    }
}
