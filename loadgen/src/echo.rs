//! The echo server: same framing as the switch, but every byte read is
//! written straight back without parsing. Frames come back whole and in
//! order, so it answers each frame as soon as it is read; it is the limit
//! of what this machine's loopback and a tokio server allow.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes read (and written back) at a time per connection.
const ECHO_BUF_BYTES: usize = 64 * 1024;

/// Binds `addr` (port 0 picks one) and serves on a thread of its own with
/// `threads` runtime workers; returns the bound address. The server runs
/// until the process exits.
///
/// # Errors
/// When the runtime cannot be built or the address cannot be bound.
pub fn spawn_echo(addr: SocketAddr, threads: usize) -> anyhow::Result<SocketAddr> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, crate::config::THREADS_MAX))
        .enable_io()
        .thread_name("echo")
        .build()
        .context("building the echo runtime")?;
    let listener = rt
        .block_on(TcpListener::bind(addr))
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("local address")?;
    std::thread::Builder::new()
        .name("echo-accept".into())
        .spawn(move || rt.block_on(accept_loop(listener)))
        .context("spawning the echo thread")?;
    Ok(local)
}

async fn accept_loop(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(echo(stream));
    }
}

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; ECHO_BUF_BYTES];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(chunk) = buf.get(..n) else { return };
        if stream.write_all(chunk).await.is_err() {
            return;
        }
    }
}
