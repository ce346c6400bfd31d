//! A throwaway etcd server for tests: one member in a temporary directory,
//! client and peer URLs on free loopback ports, killed and removed on
//! drop. It needs the `etcd` binary (Debian's `etcd-server`, which
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
/// What to run when the binary is missing.
const INSTALL_HINT: &str = "run scripts/install-test-deps.sh (installs Debian's etcd-server)";

/// Servers started by this process, for unique directory names.
static SERVERS: AtomicU32 = AtomicU32::new(0);

/// A running etcd.
#[derive(Debug)]
pub struct EtcdServer {
    /// The process.
    child: Child,
    /// The temporary directory: data in `data/`, the log in `etcd.log`.
    dir: PathBuf,
    /// The client URL, `http://127.0.0.1:<port>`.
    url: String,
}

impl EtcdServer {
    /// Starts a one-member etcd and waits until it answers `/health`.
    ///
    /// # Errors
    /// The binary missing (naming the install script), the directory, or
    /// a server that did not start (with its log's tail).
    pub fn new() -> Result<Self, String> {
        let bin = binary()?;
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cluster-etcd-{}-{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut last = String::new();
        for _ in 0..PORT_TRIES_MAX {
            match start(&bin, &dir) {
                Ok(server) => return Ok(server),
                Err(e) => last = e,
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(last)
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id, for tests that stop and continue it (an etcd
    /// outage without losing its data).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
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

/// One try at starting etcd in `dir`.
fn start(bin: &Path, dir: &Path) -> Result<EtcdServer, String> {
    let (client, peer) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data = dir.join("data");
    let _ = fs::remove_dir_all(&data);
    let log_path = dir.join("etcd.log");
    let log = fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("--name=test")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=test={peer_url}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{}: {e}: {INSTALL_HINT}", bin.display()))?;
    let mut server = EtcdServer {
        child,
        dir: dir.to_path_buf(),
        url,
    };
    let until = Instant::now() + START_WAIT;
    while Instant::now() < until {
        if let Ok(Some(status)) = server.child.try_wait() {
            let tail = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            // Keep the directory for the next try: disarm the drop.
            server.dir = PathBuf::new();
            return Err(format!("etcd exited ({status}): {tail}"));
        }
        if healthy(client) {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.dir = PathBuf::new();
    Err(format!("etcd did not answer /health within {START_WAIT:?}"))
}

/// Whether etcd on `port` says it is healthy (a leader, a working store).
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}
