//! The accept loop: a connection permit first, then `accept`, then a link
//! task. It has its own token so that it can stop (closing the listening
//! socket, so connects are refused) while the links go on.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::counts::Stats;
use super::{link, next_link_id, Shared};

/// Pause after a failed `accept` (out of descriptors), so the loop does
/// not spin.
const ACCEPT_RETRY_MS: u64 = 10;

/// A running accept loop.
#[derive(Debug)]
pub(crate) struct Listening {
    /// Stops this loop only.
    stop: CancellationToken,
    /// Ends when the listening socket is closed.
    task: JoinHandle<()>,
}

impl Listening {
    /// Stops the loop and waits until its socket is closed.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        // A join error is a panic in the loop: the socket is closed either way.
        let _ = self.task.await;
    }
}

/// Starts accepting on `listener`.
pub(crate) fn spawn(listener: TcpListener, shared: &Arc<Shared>) -> Listening {
    let stop = shared.root.child_token();
    let task = shared
        .tasks
        .spawn(accept_loop(listener, shared.clone(), stop.clone()));
    Listening { stop, task }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            p = shared.connection_limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        Stats::bump(&shared.stats.connects);
        let id = next_link_id(&shared);
        link::spawn(stream, id, &shared, permit);
    }
}
