//! A throwaway etcd server for tests: one member (or a few) in a temporary
//! directory, client and peer URLs on free loopback ports, killed and
//! removed on drop. It needs the `etcd` binary (Debian's `etcd-server`, which
//! `scripts/install-test-deps.sh` installs); without it it fails saying
//! so, so a test never passes by skipping.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming the `etcd` binary, instead of [`ETCD_PATHS`].
const ETCD_BIN_ENV: &str = "ETCD_BIN";
/// Where the binary is looked for.
const ETCD_PATHS: [&str; 2] = ["/usr/bin/etcd", "/usr/local/bin/etcd"];
/// How long the server may take to answer `/health`: about a second here
/// (one member elects itself); a loaded CI machine gets plenty more.
const START_WAIT: Duration = Duration::from_secs(30);
/// Ports tried: another process may take a free port between the probe
/// and etcd's bind.
const PORT_TRIES_MAX: usize = 3;
/// Most members of a test cluster.
const MEMBERS_MAX: usize = 5;
/// What to run when the binary is missing.
const INSTALL_HINT: &str = "run scripts/install-test-deps.sh (installs Debian's etcd-server)";

/// Servers started by this process, for unique directory names.
static SERVERS: AtomicU32 = AtomicU32::new(0);

/// The files of an etcd member serving its clients over TLS: its
/// certificate and key (PEM), and the CA whose certificates it requires
/// of clients (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The member's certificate (for 127.0.0.1).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA clients' certificates must chain to.
    pub ca: PathBuf,
}

/// A running etcd: one member, or a cluster of a few.
#[derive(Debug)]
pub struct EtcdServer {
    /// The members' processes; `None` once killed.
    children: Vec<Option<Child>>,
    /// The members' client URLs, `http://127.0.0.1:<port>`.
    urls: Vec<String>,
    /// The temporary directory: member i's data in `data<i>/`, its log in
    /// `etcd<i>.log`.
    dir: PathBuf,
}

impl EtcdServer {
    /// Starts a one-member etcd and waits until it answers `/health`.
    ///
    /// # Errors
    /// The binary missing (naming the install script), the directory, or
    /// a server that did not start (with its log's tail).
    pub fn new() -> Result<Self, String> {
        Self::with_members(1)
    }

    /// Starts an etcd cluster of `members` (1 to 5) and waits until every
    /// member answers `/health`.
    ///
    /// # Errors
    /// As [`EtcdServer::new`]; a count out of range.
    pub fn with_members(members: usize) -> Result<Self, String> {
        Self::start_with(members, None)
    }

    /// Starts a one-member etcd serving clients over TLS only
    /// (`https://127.0.0.1:<port>`), requiring a client certificate the
    /// CA signed; its health is read on a plain metrics URL.
    ///
    /// # Errors
    /// As [`EtcdServer::new`].
    pub fn with_tls(tls: &ServerTls) -> Result<Self, String> {
        Self::start_with(1, Some(tls))
    }

    fn start_with(members: usize, tls: Option<&ServerTls>) -> Result<Self, String> {
        if !(1..=MEMBERS_MAX).contains(&members) {
            return Err(format!("{members} members: expected 1 to {MEMBERS_MAX}"));
        }
        let bin = binary()?;
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cluster-etcd-{}-{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut last = String::new();
        for _ in 0..PORT_TRIES_MAX {
            let mut server = EtcdServer {
                children: Vec::new(),
                urls: Vec::new(),
                dir: dir.clone(),
            };
            match server.start(&bin, members, tls) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last = e;
                    // Kill what started; keep the directory for the next try.
                    server.kill_all();
                    server.dir = PathBuf::new();
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(last)
    }

    /// The first member's client URL.
    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    /// Every member's client URL.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The first member's process id, for tests that stop and continue it
    /// (an etcd outage without losing its data).
    pub fn pid(&self) -> u32 {
        self.children[0].as_ref().map_or(0, Child::id)
    }

    /// Kills member `i` (SIGKILL), as a lost host.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.children.get_mut(i).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The index of the member that is the leader, as the live members
    /// say; `None` when none says.
    pub fn leader(&self) -> Option<usize> {
        let said: Vec<Option<(String, String)>> = self
            .urls
            .iter()
            .zip(&self.children)
            .map(|(url, child)| child.as_ref().and(member_status(url)))
            .collect();
        let leader = said
            .iter()
            .flatten()
            .map(|(_, leader)| leader.clone())
            .next()?;
        said.iter()
            .position(|s| s.as_ref().is_some_and(|(id, _)| *id == leader))
    }

    /// Starts `members` members and waits for each one's health.
    fn start(&mut self, bin: &Path, members: usize, tls: Option<&ServerTls>) -> Result<(), String> {
        let mut ports = Vec::with_capacity(members);
        for _ in 0..members {
            ports.push((free_port()?, free_port()?));
        }
        // Health over TLS would need the client's certificate: a plain
        // metrics URL answers it instead.
        let mut health = Vec::with_capacity(members);
        for &(client, _) in &ports {
            health.push(if tls.is_some() { free_port()? } else { client });
        }
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        for (i, &(client, peer)) in ports.iter().enumerate() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data = self.dir.join(format!("data{i}"));
            let _ = fs::remove_dir_all(&data);
            let log_path = self.dir.join(format!("etcd{i}.log"));
            let log =
                fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
            let err = log.try_clone().map_err(|e| e.to_string())?;
            let mut command = Command::new(bin);
            if let Some(tls) = tls {
                command
                    .arg(format!("--cert-file={}", tls.cert.display()))
                    .arg(format!("--key-file={}", tls.key.display()))
                    .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                    .arg("--client-cert-auth")
                    .arg(format!(
                        "--listen-metrics-urls=http://127.0.0.1:{}",
                        health[i]
                    ));
            }
            let child = command
                .arg(format!("--name=m{i}"))
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls={url}"))
                .arg(format!("--advertise-client-urls={url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={initial}"))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("{}: {e}: {INSTALL_HINT}", bin.display()))?;
            self.children.push(Some(child));
            self.urls.push(url);
        }
        let until = Instant::now() + START_WAIT;
        for (i, &port) in health.iter().enumerate() {
            loop {
                if let Some(Ok(Some(status))) = self.children[i].as_mut().map(Child::try_wait) {
                    let log = fs::read_to_string(self.dir.join(format!("etcd{i}.log")))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(format!(
                        "etcd member {i} exited ({status}): {}",
                        tail.join(" | ")
                    ));
                }
                if healthy(port) {
                    break;
                }
                if Instant::now() >= until {
                    return Err(format!(
                        "etcd member {i} did not answer /health within {START_WAIT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Kills every member still running.
    fn kill_all(&mut self) {
        for i in 0..self.children.len() {
            self.kill_member(i);
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill_all();
        if !self.dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `etcd` binary.
fn binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(ETCD_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    ETCD_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "etcd not found ({}, or ${ETCD_BIN_ENV}): {INSTALL_HINT}",
                ETCD_PATHS.join(", ")
            )
        })
}

/// A free loopback port (free when probed).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("probe a port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// One HTTP/1.0 exchange with a member on loopback: the answer's body.
fn exchange(port: u16, request: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(request).ok()?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// Whether etcd on `port` says it is healthy (a leader, a working store).
fn healthy(port: u16) -> bool {
    exchange(port, b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_some_and(|body| body.contains("\"health\":\"true\""))
}

/// A member's own id and the leader's id, from `/v3/maintenance/status`.
fn member_status(url: &str) -> Option<(String, String)> {
    let port = url.rsplit_once(':')?.1.parse().ok()?;
    let request = b"POST /v3/maintenance/status HTTP/1.0\r\nHost: 127.0.0.1\r\n\
        Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let body: serde_json::Value = serde_json::from_str(&exchange(port, request)?).ok()?;
    let id = body.get("header")?.get("member_id")?.as_str()?.to_owned();
    let leader = body.get("leader")?.as_str()?.to_owned();
    Some((id, leader))
}
