//! The serving side of node links (cluster mode): a request an entry node
//! sent here is applied by this node's ISO handling and answered once its
//! record is committed. Apart from `cluster_link` (the routing and sending
//! side) so that the ISO wire, which routes, and this, which handles,
//! depend on each other through neither.

use std::sync::Arc;

use bytes::BytesMut;
use codecs::framing::FrameCodec;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster_commit::Committer;
use crate::cluster_link::{read_frame, write_frame, Router, LINK_INFLIGHT_MAX, LINK_TIMEOUT};
use crate::wire::iso::{handle, Handled, IsoShared};

/// Serves node links on `listener`: each request of a shard served here is
/// applied here (never sent on) and its answer written once its record is
/// committed; one of a shard not served here gets an empty answer (nothing
/// applied), which its entry node routes again.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<IsoShared>,
    router: Arc<Router>,
    committer: Arc<Committer>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve_conn(
            stream,
            shared.clone(),
            router.clone(),
            committer.clone(),
            cancel.clone(),
        ));
    }
}

/// One incoming link.
async fn serve_conn(
    stream: TcpStream,
    shared: Arc<IsoShared>,
    router: Arc<Router>,
    committer: Arc<Committer>,
    cancel: CancellationToken,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<(u64, Vec<u8>)>(LINK_INFLIGHT_MAX);
    let write = tokio::spawn(async move {
        while let Some((id, answer)) = rx.recv().await {
            if write_frame(&mut writer, id, &answer).await.is_err() {
                return;
            }
        }
    });
    let codec = FrameCodec::new(shared.framing);
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => break,
            f = read_frame(&mut reader) => f,
        };
        let Some((id, body)) = frame else { break };
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
        let mut out = BytesMut::with_capacity(256);
        let handled = handle(
            &shared.node,
            &shared.metrics,
            shared.profile,
            &codec,
            None,
            &body,
            &mut out,
        );
        // Its records are appended: a hand-over may close the shard now.
        drop(admitted);
        let seq = match handled {
            Ok(Handled::Now(seq)) => seq,
            // No issuer links in cluster mode, and nothing to answer for
            // an unanswerable frame: the entry node times out and answers.
            Ok(Handled::Later(_)) | Err(_) => continue,
        };
        let mut durable = committer.durable_watch();
        let tx = tx.clone();
        tokio::spawn(async move {
            let committed = tokio::time::timeout(LINK_TIMEOUT, async {
                while durable.durable_seq() < seq {
                    if durable.changed().await.is_err() {
                        return false;
                    }
                }
                true
            })
            .await;
            // Not committed (fenced, failed, or late): no answer leaves.
            if committed == Ok(true) {
                let _ = tx.send((id, out.to_vec())).await;
            }
        });
    }
    drop(tx);
    let _ = write.await;
}
