//! The peer: a server built on iso8583_rs (its thread-per-connection
//! `ISOServer`, a spec equivalent to the switch's `ascii` profile, and an
//! approve-all processor), to put a known library beside the switch.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use iso8583_rs::iso8583::iso_spec::{new_msg, spec, IsoMsg};
use iso8583_rs::iso8583::mli::MLIType;
use iso8583_rs::iso8583::server::{ISOServer, MsgProcessor};
use iso8583_rs::iso8583::IsoError;

use crate::traffic::PEER_APPROVAL;

/// The spec, written to a file for iso8583_rs (it reads `SPEC_FILE`).
const SPEC_YAML: &str = include_str!("peer_spec.yaml");
/// Fields copied from the request when present, as the switch does.
const ECHOED_FIELDS: [u32; 9] = [3, 4, 7, 11, 12, 13, 41, 42, 49];
/// How long to wait for the server thread to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers every request with its response MTI, the echoed fields, F38 and
/// F39 00.
struct ApproveAll;

impl MsgProcessor for ApproveAll {
    fn process(
        &self,
        server: &ISOServer,
        msg: &mut Vec<u8>,
    ) -> Result<(Vec<u8>, IsoMsg), IsoError> {
        let request = server
            .spec
            .parse(msg)
            .map_err(|e| IsoError { msg: e.msg })?;
        let mti = request.get_field_value(&"message_type".to_string())?;
        let response_mti = response_mti(&mti).ok_or_else(|| IsoError {
            msg: format!("not a request MTI: {mti}"),
        })?;
        let segment = server.spec.get_message_from_header(&response_mti)?;
        let mut response = new_msg(server.spec, segment);
        response.set("message_type", &response_mti)?;
        let present: Vec<u32> = ECHOED_FIELDS
            .into_iter()
            .filter(|&f| request.bmp.is_on(f))
            .collect();
        response.echo_from(&request, &present)?;
        response.set_on(38, PEER_APPROVAL)?;
        response.set_on(39, "00")?;
        let bytes = response.assemble()?;
        Ok((bytes, response))
    }
}

/// `0100`/`0101` → `0110`; `None` for a response or a malformed MTI.
fn response_mti(mti: &str) -> Option<String> {
    let b = mti.as_bytes();
    if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) || (b[2] - b'0') % 2 != 0 {
        return None;
    }
    Some(format!("{}{}0", &mti[..2], char::from(b[2] + 1)))
}

/// Starts the peer on `addr` (port 0: a free port is picked first, since
/// iso8583_rs binds inside its own thread) and waits until it accepts.
/// It runs until the process exits. Call once per process: the library
/// reads its spec once, from the file named by `SPEC_FILE`, which this sets.
///
/// # Errors
/// When the spec cannot be written, the address is unusable, or the
/// server does not accept connections in time.
pub fn start_peer(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let addr = if addr.port() == 0 {
        let probe = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        probe.local_addr().context("probe address")?
    } else {
        addr
    };
    let path = std::env::temp_dir().join(format!("loadgen-peer-spec-{}.yaml", std::process::id()));
    std::fs::write(&path, SPEC_YAML).with_context(|| format!("writing {}", path.display()))?;
    std::env::set_var("SPEC_FILE", &path);
    let server = ISOServer::new(
        addr.to_string(),
        spec("LoadgenPeer"),
        MLIType::MLI2E,
        Box::new(ApproveAll),
    )
    .map_err(|e| anyhow::anyhow!("iso8583_rs server on {addr}: {}", e.msg))?;
    // The handle is dropped: the server thread runs until the process exits.
    drop(server.start());
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("iso8583_rs peer did not accept on {addr} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_mtis() {
        assert_eq!(response_mti("0100").as_deref(), Some("0110"));
        assert_eq!(response_mti("0401").as_deref(), Some("0410"));
        assert_eq!(response_mti("0110"), None);
        assert_eq!(response_mti("01x0"), None);
    }
}
