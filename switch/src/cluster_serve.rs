//! The serving side of node links (cluster mode): a request an entry node
//! sent here is applied by this node's ISO handling and answered once its
//! record is committed. Apart from `cluster_link` (the routing and sending
//! side) so that the ISO wire, which routes, and this, which handles,
//! depend on each other through neither.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster_commit::Committer;
use crate::cluster_link::{
    encode_frame, read_frame, LinkHalves, LinkTls, Router, ETCD_UNREACHABLE, FRAME_BIT,
    LINK_INFLIGHT_MAX, LINK_READ_BUFFER_BYTES, LINK_TIMEOUT, LINK_WRITE_BATCH_MAX, STATUS_BIT,
    VELOCITY_ASK_BIT, VELOCITY_COUNTED, VELOCITY_REFUSED, WATCH_BIT, WATCH_RECORDED, WATCH_REFUSED,
};
use crate::ratelog::warn_limited;
use crate::wire::frames::cluster::{self as cluster_frames, Applied};
use crate::wire::frames::FrameShared;
use crate::wire::iso::{self, answer_deferred, handle_admitted, IsoShared};

/// Incoming links served at once, at most: each other node opens one
/// (two for a moment while it reconnects), so twice the most nodes. Past
/// it a connection is closed at once
/// (`switch_limit_reached_total{limit="link_connections_max"}`, a
/// rate-limited warning), so connections that never finish their
/// handshake, or never send, cannot pile up.
pub(crate) const LINK_CONNECTIONS_MAX: usize = 2 * cluster::ownership::NODES_MAX;

/// Serves node links on `listener`: each request of a shard served here is
/// applied here (never sent on) and its answer written once its record is
/// committed; one of a shard not served here gets an empty answer (nothing
/// applied), which its entry node routes again. ISO 8583 requests go to
/// `shared`'s handling, internal frames (`FRAME_BIT`) to `frames`'. With
/// `tls`, a connection is served only once its TLS handshake proves a
/// node of the cluster.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<LinkTls>>,
    (shared, frames): (Arc<IsoShared>, Arc<FrameShared>),
    router: Arc<Router>,
    committer: Arc<Committer>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(LINK_CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("switch_limit_reached_total", "limit" => "link_connections_max")
                .increment(1);
            warn_limited!(
                "link_connections_max",
                %peer,
                max = LINK_CONNECTIONS_MAX,
                "node link: too many incoming links; connection closed"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = serve_conn(
            stream,
            tls.clone(),
            shared.clone(),
            frames.clone(),
            router.clone(),
            committer.clone(),
            cancel.clone(),
        );
        tracker.spawn(async move {
            conn.await;
            drop(slot);
        });
    }
}

/// `stream` as a link's halves: after a TLS handshake when `tls` is set
/// (`None` when it fails), plaintext otherwise.
async fn halves(stream: TcpStream, tls: Option<&LinkTls>) -> Option<LinkHalves> {
    match tls {
        Some(tls) => tls.accept(stream).await,
        None => {
            let (r, w) = stream.into_split();
            Some((Box::new(r), Box::new(w)))
        }
    }
}

/// One incoming link.
async fn serve_conn(
    stream: TcpStream,
    tls: Option<Arc<LinkTls>>,
    shared: Arc<IsoShared>,
    frames: Arc<FrameShared>,
    router: Arc<Router>,
    committer: Arc<Committer>,
    cancel: CancellationToken,
) {
    let accepted = tokio::select! {
        () = cancel.cancelled() => return,
        h = halves(stream, tls.as_deref()) => h,
    };
    let Some((reader, mut writer)) = accepted else {
        return;
    };
    let mut reader = tokio::io::BufReader::with_capacity(LINK_READ_BUFFER_BYTES, reader);
    let (tx, mut rx) = mpsc::channel::<(u64, Vec<u8>)>(LINK_INFLIGHT_MAX);
    let write = tokio::spawn(async move {
        let mut out = BytesMut::with_capacity(LINK_READ_BUFFER_BYTES);
        while let Some(first) = rx.recv().await {
            // Every answer ready now, in one write. One too large for a
            // frame is not written: its entry node times out, sends it
            // again, and answers 91 at its bound.
            out.clear();
            let mut next = Some(first);
            let mut taken = 0;
            while let Some((id, answer)) = next.take() {
                taken += 1;
                if encode_frame(&mut out, id, &answer).is_err() {
                    let len = answer.len();
                    warn_limited!(
                        "cluster_link",
                        len,
                        "node link: an answer too large for a frame; not sent"
                    );
                }
                if taken < LINK_WRITE_BATCH_MAX {
                    next = rx.try_recv().ok();
                }
            }
            // A TLS writer may keep records it encrypted but could not
            // write yet: flushed now, not at the next write.
            let written = tokio::io::AsyncWriteExt::write_all(&mut writer, &out).await;
            if written.is_err() || tokio::io::AsyncWriteExt::flush(&mut writer).await.is_err() {
                return;
            }
        }
    });
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => break,
            f = read_frame(&mut reader) => f,
        };
        let Some((id, body)) = frame else { break };
        let read_at = std::time::Instant::now();
        if id & VELOCITY_ASK_BIT != 0 {
            let (shared, router, tx) = (shared.clone(), router.clone(), tx.clone());
            tokio::spawn(async move {
                let answer = count_asked(&shared, &router, &body).await;
                let _ = tx.send((id, answer)).await;
            });
            continue;
        }
        if id & WATCH_BIT != 0 {
            let (shared, router, tx) = (shared.clone(), router.clone(), tx.clone());
            tokio::spawn(async move {
                let answer = watch_asked(&shared, &router, &body).await;
                let _ = tx.send((id, answer)).await;
            });
            continue;
        }
        if id & STATUS_BIT != 0 {
            // A failsafe ask: does etcd answer this node?
            let unreachable = shared
                .node
                .etcd_unreachable
                .load(std::sync::atomic::Ordering::Acquire);
            let answer = vec![if unreachable { ETCD_UNREACHABLE } else { 0 }];
            if tx.send((id, answer)).await.is_err() {
                break;
            }
            continue;
        }
        if id & FRAME_BIT != 0 {
            serve_frame(&frames, &router, &committer, id, &body, &tx);
            continue;
        }
        let Ok(admitted) = router.admit(shared.profile, &body) else {
            // Not served here (being loaded, handed over, or lost):
            // nothing applied, an empty answer, and the entry node routes
            // it again. The engine's memory of a shard not served may be
            // stale.
            if tx.send((id, Vec::new())).await.is_err() {
                break;
            }
            continue;
        };
        let (out, seq) = match handle_admitted(&shared, bytes::Bytes::from(body), admitted) {
            iso::Applied::Now(out, seq) => (out, seq),
            // A card counted by another node: finished on a task of its
            // own (its shard's admission held until it is decided),
            // answered once committed.
            iso::Applied::Later(deferred, reply) => {
                let (shared, router, committer, tx) = (
                    shared.clone(),
                    router.clone(),
                    committer.clone(),
                    tx.clone(),
                );
                tokio::spawn(async move {
                    let (answer, seq) = answer_deferred(
                        &shared.node,
                        &shared.metrics,
                        Some(&router),
                        &deferred,
                        reply,
                    )
                    .await;
                    drop(deferred);
                    if answer.is_empty() || !committed(&committer, seq).await {
                        return;
                    }
                    let _ = tx.send((id, timed(read_at, answer))).await;
                });
                continue;
            }
            // Nothing to answer for an unanswerable frame: the entry node
            // times out and answers.
            iso::Applied::Unanswerable => continue,
        };
        let (committer, tx) = (committer.clone(), tx.clone());
        tokio::spawn(async move {
            // Not committed (fenced, failed, or late): no answer leaves.
            if committed(&committer, seq).await {
                let _ = tx.send((id, timed(read_at, out))).await;
            }
        });
    }
    drop(tx);
    let _ = write.await;
}

/// An ISO 8583 answer as the link carries it: the time this node held
/// the request (read to answer, µs, `u32` big endian, saturating) before
/// the framed answer, so the entry node can tell what forwarding added
/// (`switch_cluster_forward_added_seconds`).
fn timed(read_at: std::time::Instant, mut answer: Vec<u8>) -> Vec<u8> {
    let held = u32::try_from(read_at.elapsed().as_micros()).unwrap_or(u32::MAX);
    // In place: no second buffer for the answer.
    answer.splice(0..0, held.to_be_bytes());
    answer
}

/// Serves a linked internal frame: applied here if this node serves its
/// shard, synchronously in the link's order (a MO/TO's card asked on a
/// task), and answered once committed; an empty answer (nothing applied)
/// otherwise, which its entry node routes again.
fn serve_frame(
    frames: &Arc<FrameShared>,
    router: &Arc<Router>,
    committer: &Arc<Committer>,
    id: u64,
    body: &[u8],
    tx: &mpsc::Sender<(u64, Vec<u8>)>,
) {
    let (frames, router, committer, tx) = (
        frames.clone(),
        router.clone(),
        committer.clone(),
        tx.clone(),
    );
    match cluster_frames::apply_linked(&frames, &router, body) {
        Applied::NotServed => {
            tokio::spawn(async move {
                let _ = tx.send((id, Vec::new())).await;
            });
        }
        Applied::Now(answer, seq) => {
            tokio::spawn(async move {
                if committed(&committer, seq).await {
                    let _ = tx.send((id, answer)).await;
                }
            });
        }
        Applied::Finishing(finishing) => {
            tokio::spawn(async move {
                let (answer, seq) = cluster_frames::finish(&frames.node, &router, finishing).await;
                if committed(&committer, seq).await {
                    let _ = tx.send((id, answer)).await;
                }
            });
        }
    }
}

/// Whether record `seq` commits within [`LINK_TIMEOUT`] (0: nothing to wait for).
async fn committed(committer: &Committer, seq: u64) -> bool {
    committer.committed_within(seq, LINK_TIMEOUT).await
}

/// The answer to a card velocity ask (see `cluster_link`'s frame): counted
/// here when this node serves the card's shard, once the attempt's record
/// is committed; empty (not served: the asking node routes it again) or
/// refused otherwise. An ask that does not decode is refused.
async fn count_asked(shared: &IsoShared, router: &Router, body: &[u8]) -> Vec<u8> {
    let Some(ask) = engine::velocity::VelocityAsk::from_bytes(body) else {
        crate::ratelog::warn_limited!(
            "velocity_ask",
            len = body.len(),
            "node link: a velocity ask that does not decode; refused"
        );
        return vec![VELOCITY_REFUSED];
    };
    let deadline = tokio::time::Instant::now() + LINK_TIMEOUT;
    match router.count_here(&shared.node, &ask, deadline).await {
        // Not served here: nothing counted, and the asker asks again.
        Err(crate::cluster_link::NotServed) => Vec::new(),
        Ok(Some(verdict)) => {
            let mut answer = vec![VELOCITY_COUNTED];
            answer.extend_from_slice(&verdict.to_bytes());
            answer
        }
        Ok(None) => vec![VELOCITY_REFUSED],
    }
}

/// The answer to a card's watch change (see `cluster_link`'s frame):
/// applied here when this node counts the card's shard, once its record is
/// committed; empty (not counted here: the asking node asks again) or
/// refused otherwise. One that does not decode is refused.
async fn watch_asked(shared: &IsoShared, router: &Router, body: &[u8]) -> Vec<u8> {
    let Some((token, on)) = engine::velocity::decode_watch(body) else {
        crate::ratelog::warn_limited!(
            "watch_change",
            len = body.len(),
            "node link: a watch change that does not decode; refused"
        );
        return vec![WATCH_REFUSED];
    };
    let deadline = tokio::time::Instant::now() + LINK_TIMEOUT;
    match router.watch_here(&shared.node, token, on, deadline).await {
        Err(crate::cluster_link::NotServed) => Vec::new(),
        Ok(true) => vec![WATCH_RECORDED],
        Ok(false) => vec![WATCH_REFUSED],
    }
}
