//! `switch saf list` and `switch saf retry`: the store-and-forward queue
//! for operators. Both speak to the running switch on its HTTP address;
//! `list` reads the data directory instead when no switch answers there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context as _;
use engine::record;
use engine::upstream::{self, UpstreamRecord};

use crate::config::Config;

/// Longest wait for the running switch's answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (the switch lists at most 1,000 entries).
const ANSWER_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// One HTTP/1.1 request to `addr`; `Ok(None)` when nothing listens there.
fn request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<Option<(String, String)>> {
    let mut stream = match TcpStream::connect_timeout(&addr, HTTP_TIMEOUT) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
    };
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut text = String::new();
    stream
        .take(ANSWER_BYTES_MAX)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok(Some((status, body.to_owned())))
}

/// Lists the SAF entries, from the running switch or the data directory.
///
/// # Errors
/// When the switch answers with an error, or the data directory cannot be read.
pub(crate) fn list(config: &Config, mut out: impl Write) -> anyhow::Result<()> {
    let addr = config.listeners.http_addr;
    if let Some((status, body)) = request(addr, "GET", "/saf")? {
        anyhow::ensure!(status.contains(" 200 "), "{addr} answered {status}: {body}");
        out.write_all(body.as_bytes())?;
        return Ok(out.flush()?);
    }
    eprintln!("no switch answers on {addr}: reading the data directory");
    for e in from_data_dir(&config.listeners.data_dir)? {
        writeln!(out, "{}", crate::saf::entry_json(&e))?;
    }
    Ok(out.flush()?)
}

/// Asks the running switch to send every entry now.
///
/// # Errors
/// When no switch answers, or it has no upstream.
pub(crate) fn retry(config: &Config) -> anyhow::Result<()> {
    let addr = config.listeners.http_addr;
    let (status, body) = request(addr, "POST", "/saf/retry")?
        .with_context(|| format!("no switch answers on {addr}"))?;
    anyhow::ensure!(status.contains(" 202 "), "{addr} answered {status}: {body}");
    eprint!("{body}");
    Ok(())
}

/// The SAF as the data directory's newest snapshot and the journal after
/// it leave it (the switch stopped: the same entries it starts with).
fn from_data_dir(data_dir: &std::path::Path) -> anyhow::Result<Vec<upstream::SafEntry>> {
    let inner = data_dir.join("journal");
    let dir = if inner.is_dir() {
        inner
    } else {
        data_dir.to_path_buf()
    };
    let mut saf = std::collections::BTreeMap::new();
    journal::read_state(&journal::OsStorage, &dir, |item| {
        match item {
            journal::Replay::Snapshot { bytes, .. } => {
                for e in record::decode_snapshot(bytes)?.saf {
                    saf.insert(e.id, e);
                }
            }
            journal::Replay::Record(r) if r.record_type == upstream::RECORD_UPSTREAM => {
                match upstream::decode(r.payload)? {
                    UpstreamRecord::SafQueued(e) => {
                        saf.insert(e.id, e);
                    }
                    UpstreamRecord::SafDone(id) => {
                        saf.remove(&id);
                    }
                    UpstreamRecord::Forward(_) | UpstreamRecord::ForwardDone(_) => {}
                }
            }
            journal::Replay::Record(_) => {}
        }
        Ok(())
    })
    .with_context(|| format!("reading {}", dir.display()))?;
    Ok(saf.into_values().collect())
}
