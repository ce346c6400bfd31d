//! One connection: the reader decodes each request, logs and counts it,
//! asks the decider, and queues the answer at once (latency 0: gathered
//! and handed over once per read) or through the issuer's delay thread
//! (`delay`); the writer writes whatever is queued in batches. Each answer holds a pending slot from decision to write, so a
//! link never has more than [`PENDING_ANSWERS_PER_LINK_MAX`] answers in
//! flight: at the cap the reader stops reading.
//!
//! Closing: the link's token (a child of the issuer's) is cancelled by
//! `disconnect_all`, shutdown, the peer closing, or a bad frame; delayed
//! answers then drop. `disconnect_after` instead queues a `Close` behind
//! the answers already queued, so those are written first.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codecs::framing::FrameCodec;
use codecs::iso8583::{Message, MessageWriter, Mti};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::answer::{encode_answer, Facts, Plan};
use super::counts::Stats;
use super::delay::Delayed;
use super::{Received, Shared, PENDING_ANSWERS_PER_LINK_MAX};
use crate::clock::{format_f7, unix_ns_now};

/// Bytes read at a time per link.
const READ_BUF_BYTES: usize = 16 * 1024;
/// A writer batch stops growing past this many bytes; so does the
/// reader's batch of answers due at once.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Answers due at once that the reader gathers before handing them to
/// the writer (it hands them over sooner when it has read everything).
const ANSWERS_BATCH_MAX: u64 = 256;
/// The issuer's own echoes queued per link beyond the answers; more are
/// not sent (counted as not sent: `send_echo` returns fewer links).
const ECHOES_QUEUED_MAX: usize = 16;
/// F11 of the issuer's echoes cycles through 1..=this.
const STAN_SPACE: u64 = 999_999;

const _: () = assert!(ANSWERS_BATCH_MAX as usize <= PENDING_ANSWERS_PER_LINK_MAX);

/// A link as the handle sees it.
#[derive(Debug)]
pub(crate) struct LinkEntry {
    /// Closes the link.
    pub(crate) cancel: CancellationToken,
    /// Queues the issuer's own requests.
    tx: mpsc::Sender<Outgoing>,
}

/// What the writer is given.
pub(super) enum Outgoing {
    /// Answer frames (one, or a batch due at once), holding their
    /// pending slot until written.
    Answer(Bytes, PendingSlot),
    /// A request of the issuer's own (echo).
    Request(Bytes),
    /// Write what came before, then close the link.
    Close,
}

/// Answers between decision and write: a permit of the link's cap and a
/// count in the issuer-wide `pending_answers` gauge for each. Dropped
/// unwritten, they count as `answers_dropped`.
pub(super) struct PendingSlot {
    /// The link's cap, one permit per answer.
    _permit: OwnedSemaphorePermit,
    /// How many answers.
    answers: u64,
    /// Counters.
    shared: Arc<Shared>,
    /// Set once the bytes left.
    written: bool,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let s = &self.shared.stats;
        s.pending_answers
            .fetch_sub(self.answers, std::sync::atomic::Ordering::Relaxed);
        Stats::add(
            if self.written {
                &s.answers_sent
            } else {
                &s.answers_dropped
            },
            self.answers,
        );
    }
}

/// How the reader ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Close at once.
    Now,
    /// A `Close` is queued: let the writer finish.
    AfterQueued,
}

/// Registers and serves one accepted connection; `permit` is its slot in
/// the connection cap, freed when the link ends.
pub(crate) fn spawn(
    stream: TcpStream,
    id: u64,
    shared: &Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let cancel = shared.root.child_token();
    let (tx, rx) = mpsc::channel(PENDING_ANSWERS_PER_LINK_MAX + ECHOES_QUEUED_MAX);
    shared.links().insert(
        id,
        LinkEntry {
            cancel: cancel.clone(),
            tx: tx.clone(),
        },
    );
    Stats::bump(&shared.stats.connections_current);
    let shared = shared.clone();
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        let (rd, wr) = stream.into_split();
        let writer = shared
            .tasks
            .spawn(writer(wr, rx, cancel.clone(), shared.clone()));
        let link = Link {
            id,
            shared: shared.clone(),
            tx,
            cancel: cancel.clone(),
            pending: Arc::new(Semaphore::new(PENDING_ANSWERS_PER_LINK_MAX)),
            requests: 0,
            due: BytesMut::with_capacity(WRITE_BATCH_BYTES),
            due_answers: 0,
        };
        if link.read(rd).await == End::Now {
            cancel.cancel();
        }
        // The writer ends on the token or after its `Close`.
        let _ = writer.await;
        cancel.cancel();
        shared.delayer.link_closed();
        shared.links().remove(&id);
        Stats::drop_one(&shared.stats.connections_current);
        drop(permit);
    });
}

/// The reader side of a link.
struct Link {
    /// Link id (for the log).
    id: u64,
    /// Issuer state.
    shared: Arc<Shared>,
    /// To the writer.
    tx: mpsc::Sender<Outgoing>,
    /// The link's token.
    cancel: CancellationToken,
    /// [`PENDING_ANSWERS_PER_LINK_MAX`] permits.
    pending: Arc<Semaphore>,
    /// Requests read so far (for `disconnect_after`).
    requests: u64,
    /// Answers due at once (latency 0), encoded one after another and
    /// handed to the writer together: one queue send and one allocation
    /// per batch instead of per answer.
    due: BytesMut,
    /// How many answers `due` holds.
    due_answers: u64,
}

impl Link {
    /// Reads and handles frames until the link ends; answers decided and
    /// not handed over then are handed over (or counted as dropped).
    async fn read(mut self, rd: OwnedReadHalf) -> End {
        let end = self.read_frames(rd).await;
        if self.flush_due().await.is_some() {
            return End::Now;
        }
        end
    }

    /// Reads and handles frames until the link ends.
    async fn read_frames(&mut self, mut rd: OwnedReadHalf) -> End {
        let mut codec = FrameCodec::new(self.shared.framing);
        let mut buf = BytesMut::with_capacity(READ_BUF_BYTES);
        loop {
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        if let Some(end) = self.on_frame(&frame.body).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        Stats::bump(&self.shared.stats.bad_messages);
                        return End::Now;
                    }
                }
            }
            // Everything read is decided: what is due leaves now.
            if let Some(end) = self.flush_due().await {
                return end;
            }
            if buf.capacity() - buf.len() < READ_BUF_BYTES / 2 {
                buf.reserve(READ_BUF_BYTES);
            }
            let read = tokio::select! {
                () = self.cancel.cancelled() => return End::Now,
                r = rd.read_buf(&mut buf) => r,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return End::Now;
            }
        }
    }

    /// Handles one message; `Some` when the link must end.
    async fn on_frame(&mut self, body: &[u8]) -> Option<End> {
        let stats = &self.shared.stats;
        let Ok(msg) = Message::decode(self.shared.profile, body) else {
            Stats::bump(&stats.bad_messages);
            return Some(End::Now);
        };
        let mti = msg.mti();
        if self.shared.keep_received {
            self.shared.log(Received {
                link: self.id,
                mti,
                fields: msg
                    .fields()
                    .map(|(n, v)| (u16::from(n), v.to_vec()))
                    .collect(),
            });
        }
        if !mti.is_request() {
            Stats::bump(if mti.as_bytes() == b"0810" {
                &stats.echo_answers
            } else {
                &stats.responses_other
            });
            return None;
        }
        Stats::bump(stats.request_counter(mti, msg.raw(70)));
        self.requests += 1;
        let facts = Facts {
            mti,
            amount_minor: msg.number(4),
        };
        let (plan, disconnect_after) = {
            let mut b = self.shared.behaviour();
            let disconnect_after = b.config.disconnect_after;
            if disconnect_after.is_some_and(|n| self.requests >= n) {
                (None, true)
            } else {
                let b = &mut *b;
                (b.decider.plan(&b.config, facts), false)
            }
        };
        if disconnect_after {
            Stats::bump(&stats.disconnects_after_limit);
            // Answers already due leave before the close.
            if let Some(end) = self.flush_due().await {
                return Some(end);
            }
            return Some(match self.tx.send(Outgoing::Close).await {
                Ok(()) => End::AfterQueued,
                Err(_) => End::Now,
            });
        }
        match plan {
            Some(Plan::Answer {
                delay_ms: 0,
                response,
            }) => {
                count_decision(stats, mti, &response.code);
                let codec = FrameCodec::new(self.shared.framing);
                if encode_answer(&msg, &response, &codec, &mut self.due).is_err() {
                    Stats::bump(&stats.bad_messages);
                    return Some(End::Now);
                }
                self.due_answers += 1;
                if self.due_answers >= ANSWERS_BATCH_MAX || self.due.len() >= WRITE_BATCH_BYTES {
                    return self.flush_due().await;
                }
                None
            }
            Some(Plan::Answer { delay_ms, response }) => {
                count_decision(stats, mti, &response.code);
                let mut out = BytesMut::new();
                let codec = FrameCodec::new(self.shared.framing);
                if encode_answer(&msg, &response, &codec, &mut out).is_err() {
                    Stats::bump(&stats.bad_messages);
                    return Some(End::Now);
                }
                self.queue(out.freeze(), delay_ms).await
            }
            Some(Plan::Silent) => {
                Stats::bump(&stats.silent);
                None
            }
            None => None,
        }
    }

    /// Hands the answers due at once to the writer, once their pending
    /// slots are free; when the link ends first they count as dropped.
    async fn flush_due(&mut self) -> Option<End> {
        let answers = std::mem::take(&mut self.due_answers);
        if answers == 0 {
            return None;
        }
        let frames = self.due.split().freeze();
        let permits = u32::try_from(answers).unwrap_or(u32::MAX);
        let permit = tokio::select! {
            () = self.cancel.cancelled() => None,
            p = self.pending.clone().acquire_many_owned(permits) => p.ok(),
        };
        let Some(permit) = permit else {
            Stats::add(&self.shared.stats.answers_dropped, answers);
            return Some(End::Now);
        };
        Stats::add(&self.shared.stats.pending_answers, answers);
        let slot = PendingSlot {
            _permit: permit,
            answers,
            shared: self.shared.clone(),
            written: false,
        };
        if self.due.capacity() < WRITE_BATCH_BYTES / 2 {
            self.due.reserve(WRITE_BATCH_BYTES);
        }
        match self.tx.send(Outgoing::Answer(frames, slot)).await {
            Ok(()) => None,
            Err(_) => Some(End::Now),
        }
    }

    /// Queues an answer after `delay_ms` (above 0), once a pending slot is
    /// free.
    async fn queue(&self, frame: Bytes, delay_ms: u64) -> Option<End> {
        let permit = tokio::select! {
            () = self.cancel.cancelled() => return Some(End::Now),
            p = self.pending.clone().acquire_owned() => p.ok()?,
        };
        Stats::bump(&self.shared.stats.pending_answers);
        let slot = PendingSlot {
            _permit: permit,
            answers: 1,
            shared: self.shared.clone(),
            written: false,
        };
        self.shared.delayer.push(Delayed {
            due: std::time::Instant::now() + Duration::from_millis(delay_ms),
            tx: self.tx.clone(),
            cancel: self.cancel.clone(),
            frame,
            slot,
        });
        None
    }
}

/// Counts an authorization's approval or decline.
fn count_decision(stats: &Stats, mti: Mti, code: &[u8; 2]) {
    if matches!(mti.without_repeat().as_bytes(), b"0100" | b"0200") {
        Stats::bump(if code == b"00" {
            &stats.approvals
        } else {
            &stats.declines
        });
    }
}

/// Writes what is queued, a batch at a time, until the token is cancelled,
/// the queue closes, a write fails, or a `Close` comes; then cancels the
/// link's token.
async fn writer(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    cancel: CancellationToken,
    shared: Arc<Shared>,
) {
    let mut out = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    let mut slots: Vec<PendingSlot> = Vec::new();
    'link: loop {
        let first = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            m = rx.recv() => m,
        };
        let mut next = first;
        let mut close = false;
        while let Some(item) = next.take() {
            match item {
                Outgoing::Answer(frame, slot) => {
                    out.extend_from_slice(&frame);
                    slots.push(slot);
                }
                Outgoing::Request(frame) => out.extend_from_slice(&frame),
                Outgoing::Close => {
                    close = true;
                    break;
                }
            }
            if out.len() < WRITE_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if out.is_empty() && !close {
            // The queue closed (every sender gone).
            break;
        }
        // Counted before the bytes leave (see `answers_started`).
        let answers = slots.iter().map(|s| s.answers).sum();
        Stats::add(&shared.stats.answers_started, answers);
        let written = tokio::select! {
            () = cancel.cancelled() => break 'link,
            r = wr.write_all(&out) => r.is_ok(),
        };
        out.clear();
        if !written {
            break;
        }
        // Dropped as written: counted as sent.
        slots.iter_mut().for_each(|s| s.written = true);
        slots.clear();
        if close {
            let _ = wr.shutdown().await;
            break;
        }
    }
    // Unwritten slots drop here and count as dropped.
    slots.clear();
    cancel.cancel();
}

/// Queues an 0800/301 on every open link; returns on how many.
pub(crate) fn send_echo(shared: &Arc<Shared>) -> usize {
    let f7 = format_f7(unix_ns_now() / 1_000_000_000);
    let links = shared.links();
    let mut sent = 0;
    for entry in links.values() {
        let stan = next_stan(&shared.echo_stan);
        let mut out = BytesMut::new();
        let codec = FrameCodec::new(shared.framing);
        let written = codec.write_frame(&mut out, None, |buf| {
            let mti = Mti::parse("0800").unwrap_or_else(|| unreachable!("MTI literal"));
            let mut w = MessageWriter::new(buf, shared.profile, mti);
            w.field(7, &f7)?.number(11, stan)?.field(70, b"301")?;
            w.finish().map(|_| ())
        });
        if written.is_ok() && entry.tx.try_send(Outgoing::Request(out.freeze())).is_ok() {
            Stats::bump(&shared.stats.echoes_sent);
            sent += 1;
        }
    }
    sent
}

/// The next STAN of the issuer's own requests, 1..=[`STAN_SPACE`].
fn next_stan(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % STAN_SPACE + 1
}
