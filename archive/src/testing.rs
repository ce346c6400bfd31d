//! A throwaway PostgreSQL server for tests: its own cluster in a
//! temporary directory, on a free loopback port, with `fsync` on, stopped
//! and removed on drop. It needs the server binaries (Debian's
//! `postgresql` package, which `scripts/install-test-deps.sh` installs);
//! without them it fails saying so, so a test never passes by skipping.
//!
//! PostgreSQL refuses to run as root: as root the cluster belongs to the
//! `postgres` user the Debian package creates (or `nobody`), and every
//! server command runs through `runuser`.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Where Debian installs each server version's binaries (`<dir>/<version>/bin`).
const PG_LIB_DIR: &str = "/usr/lib/postgresql";
/// Environment variable naming a directory with `initdb`, `pg_ctl` and
/// `postgres`, instead of the newest under [`PG_LIB_DIR`].
const PG_BIN_ENV: &str = "PG_BIN";
/// The binaries a server needs.
const BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// Users that may own the cluster when the tests run as root, in order of
/// preference: the Debian package's, then one every system has.
const USERS: [&str; 2] = ["postgres", "nobody"];
/// How long the server may take to accept connections, in s (`pg_ctl -t`):
/// a few hundred ms here; a loaded CI machine gets plenty more.
const START_WAIT_S: u32 = 30;
/// How long a fast stop may take, in s.
const STOP_WAIT_S: u32 = 30;
/// Ports tried at first start: another process may take the free port
/// found between the probe and the server's bind.
const PORT_TRIES_MAX: usize = 3;
/// Longest database or schema name PostgreSQL keeps (NAMEDATALEN - 1).
const NAME_BYTES_MAX: usize = 63;
/// The superuser `initdb` creates.
const SUPERUSER: &str = "postgres";
/// What to run when the binaries are missing.
const INSTALL_HINT: &str = "run scripts/install-test-deps.sh (installs Debian's postgresql)";

/// Servers started by this process, for unique directory names.
static SERVERS: AtomicU32 = AtomicU32::new(0);

/// Why the test server could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No PostgreSQL server binaries.
    #[error("PostgreSQL server binaries not found ({looked}): {INSTALL_HINT}")]
    Missing {
        /// Where they were looked for.
        looked: String,
    },
    /// A command failed or could not start.
    #[error("{command}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and output, or why it did not start.
        reason: String,
    },
    /// A file or directory could not be made or read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A database or schema name this helper does not make (it is put
    /// in SQL).
    #[error("name {0:?}: expected 1 to 63 of [a-z0-9_]")]
    Name(String),
    /// The server refused a statement.
    #[error("server on port {port}: {reason}")]
    Sql {
        /// The server's port.
        port: u16,
        /// What it said.
        reason: String,
    },
}

/// A running (or stopped) throwaway server.
#[derive(Debug)]
pub struct PgServer {
    /// The directory with `initdb`, `pg_ctl` and `postgres`.
    bin: PathBuf,
    /// The temporary directory: the socket lives here, the cluster in
    /// `data/`, the server's log in `server.log`. Removed on drop.
    dir: PathBuf,
    /// The user that owns the cluster when we are root; `None` when we
    /// run the server as ourselves.
    user: Option<&'static str>,
    /// The loopback port it listens on, kept across restarts so URLs stay
    /// valid.
    port: u16,
    /// Whether it is running (so drop knows to stop it).
    running: bool,
}

impl PgServer {
    /// Makes a cluster in a new temporary directory and starts it.
    ///
    /// # Errors
    /// [`ServerError::Missing`] without the binaries; the failing command
    /// or path otherwise.
    pub fn new() -> Result<Self, ServerError> {
        let mut server = PgServer::unstarted(binaries()?, run_as()?)?;
        server.initdb()?;
        server.first_start()?;
        Ok(server)
    }

    /// A new server streaming from this one (a base backup, then its WAL),
    /// which this one then waits for at every commit: its
    /// `synchronous_standby_names` becomes `'*'`. So a commit acknowledged
    /// here is flushed there, and after [`PgServer::kill9`] of this one
    /// and [`PgServer::promote`] of the standby, the standby holds it.
    ///
    /// # Errors
    /// When the backup, the start or the reconfiguration fails, or the
    /// standby is not streaming within [`START_WAIT_S`].
    pub fn standby(&self) -> Result<PgServer, ServerError> {
        let mut standby = PgServer::unstarted(self.bin.clone(), self.user)?;
        // -R writes standby.signal and primary_conninfo; -X stream copies
        // the WAL written meanwhile; -c fast checkpoints at once instead
        // of spreading the checkpoint over minutes.
        let (data, port) = (standby.data(), self.port.to_string());
        let mut cmd = standby.command("pg_basebackup");
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER])
            .args(["-D", &data, "-R", "-X", "stream", "-c", "fast", "--no-sync"]);
        run(&mut cmd)?;
        standby.first_start()?;
        self.execute(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        )?;
        self.execute("postgres", "SELECT pg_reload_conf()")?;
        let waited = std::time::Instant::now();
        while self.count_streaming()? == 0 {
            if waited.elapsed() > Duration::from_secs(u64::from(START_WAIT_S)) {
                return Err(ServerError::Sql {
                    port: self.port,
                    reason: "the standby is not streaming".to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(standby)
    }

    /// How many synchronous standbys stream from this server now.
    fn count_streaming(&self) -> Result<i64, ServerError> {
        let sql = "SELECT count(*) FROM pg_stat_replication \
                   WHERE state = 'streaming' AND sync_state = 'sync'";
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| self.sql_error(&e, sql))?;
        let row = client
            .query_one(sql, &[])
            .map_err(|e| self.sql_error(&e, sql))?;
        Ok(row.get(0))
    }

    /// Promotes a standby to a primary (`pg_ctl promote`, waiting until
    /// it accepts writes), as Patroni would after its primary's loss.
    ///
    /// # Errors
    /// When `pg_ctl promote` fails.
    pub fn promote(&self) -> Result<(), ServerError> {
        let (t, data) = (START_WAIT_S.to_string(), self.data());
        let mut cmd = self.command("pg_ctl");
        cmd.args(["promote", "-D", &data, "-w", "-t", &t]);
        run(&mut cmd).map(|_| ())
    }

    /// Kills the server as a machine's loss would: SIGKILL to the
    /// postmaster and every process it started, at once, with nothing
    /// flushed or said to a client. It is not started again.
    ///
    /// # Errors
    /// When its pid file cannot be read.
    pub fn kill9(&mut self) -> Result<(), ServerError> {
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .ok_or_else(|| ServerError::Io {
                path: pid_file.display().to_string(),
                source: std::io::Error::other("no pid"),
            })?;
        // Stop the postmaster first so it starts nothing more, then its
        // children, then kill it.
        let _ = Command::new("kill").args(["-STOP", &pid]).status();
        let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        self.running = false;
        Ok(())
    }

    /// A server with a new, empty temporary directory (owned by `user`
    /// when there is one), on no port yet, not started.
    fn unstarted(bin: PathBuf, user: Option<&'static str>) -> Result<PgServer, ServerError> {
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("archive-pg-{}-{n}", std::process::id()));
        let io = |source| ServerError::Io {
            path: dir.display().to_string(),
            source,
        };
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io)?;
        }
        fs::create_dir(&dir).map_err(io)?;
        if let Some(user) = user {
            let dir = dir.display().to_string();
            run(Command::new("chown").args([&format!("{user}:"), &dir]))?;
        }
        Ok(PgServer {
            bin,
            dir,
            user,
            port: 0,
            running: false,
        })
    }

    /// The URL of database `name` as the superuser (trust: no password).
    pub fn url(&self, name: &str) -> String {
        format!("postgresql://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its URL.
    ///
    /// # Errors
    /// [`ServerError::Name`] for a name outside `[a-z0-9_]{1,63}`;
    /// [`ServerError::Sql`] when the server refuses.
    pub fn create_database(&self, name: &str) -> Result<String, ServerError> {
        plain_name(name)?;
        self.execute("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(name))
    }

    /// Creates schema `name` in `database` and returns a URL whose
    /// sessions work in it (`search_path`): a store of its own, much
    /// quicker to make than a database (which copies its template and
    /// fsyncs it).
    ///
    /// # Errors
    /// As [`PgServer::create_database`].
    pub fn create_schema(&self, database: &str, name: &str) -> Result<String, ServerError> {
        plain_name(name)?;
        self.execute(database, &format!("CREATE SCHEMA {name}"))?;
        Ok(self.schema_url(database, name))
    }

    /// The URL of schema `name` in `database`, as
    /// [`PgServer::create_schema`] returns it.
    pub fn schema_url(&self, database: &str, name: &str) -> String {
        format!("{}?options=-c%20search_path%3D{name}", self.url(database))
    }

    /// Serves TLS from now on (`ssl = on`, reloaded): `cert_pem` and
    /// `key_pem` become the cluster's `server.crt` and `server.key`, the
    /// key readable by the server's user only, as PostgreSQL demands.
    /// Plain connections are still accepted.
    ///
    /// # Errors
    /// A file that cannot be written, or the server refusing the change.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), ServerError> {
        use std::os::unix::fs::PermissionsExt;
        let data = PathBuf::from(self.data());
        for (name, text, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ] {
            let path = data.join(name);
            let io = |source| ServerError::Io {
                path: path.display().to_string(),
                source,
            };
            fs::write(&path, text).map_err(io)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io)?;
            if let Some(user) = self.user {
                let file = path.display().to_string();
                run(Command::new("chown").args([&format!("{user}:"), &file]))?;
            }
        }
        self.execute("postgres", "ALTER SYSTEM SET ssl = on")?;
        self.execute("postgres", "SELECT pg_reload_conf()")
    }

    /// Runs `sql` in `database` as the superuser.
    ///
    /// # Errors
    /// [`ServerError::Sql`] when the server refuses or is unreachable.
    pub fn execute(&self, database: &str, sql: &str) -> Result<(), ServerError> {
        let mut client = postgres::Client::connect(&self.url(database), postgres::NoTls)
            .map_err(|e| self.sql_error(&e, sql))?;
        client
            .batch_execute(sql)
            .map_err(|e| self.sql_error(&e, sql))
    }

    /// `e`, met running `sql`, as this server's error.
    fn sql_error(&self, e: &postgres::Error, sql: &str) -> ServerError {
        ServerError::Sql {
            port: self.port,
            reason: format!("{e}: {sql}"),
        }
    }

    /// Stops the server (fast: open connections are closed).
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub fn stop(&mut self) -> Result<(), ServerError> {
        if !self.running {
            return Ok(());
        }
        let t = STOP_WAIT_S.to_string();
        let data = self.data();
        let mut cmd = self.command("pg_ctl");
        cmd.args(["stop", "-D", &data, "-m", "fast", "-w", "-t", &t]);
        run(&mut cmd)?;
        self.running = false;
        Ok(())
    }

    /// Starts the stopped server again on the same port and data.
    ///
    /// # Errors
    /// When `pg_ctl start` fails or the server does not accept
    /// connections within [`START_WAIT_S`].
    pub fn start(&mut self) -> Result<(), ServerError> {
        if self.running {
            return Ok(());
        }
        let options = format!(
            "-k {dir} -p {port} -c listen_addresses=127.0.0.1 -c fsync=on",
            dir = self.dir.display(),
            port = self.port
        );
        let (t, data, log) = (START_WAIT_S.to_string(), self.data(), self.log());
        let mut cmd = self.command("pg_ctl");
        cmd.args([
            "start", "-D", &data, "-l", &log, "-w", "-t", &t, "-o", &options,
        ]);
        run(&mut cmd).map_err(|e| self.with_log(e))?;
        self.running = true;
        Ok(())
    }

    /// Starts on a free port, trying another when the port was taken.
    fn first_start(&mut self) -> Result<(), ServerError> {
        let mut last = None;
        for _ in 0..PORT_TRIES_MAX {
            self.port = free_port().map_err(|source| ServerError::Io {
                path: "127.0.0.1:0".to_owned(),
                source,
            })?;
            match self.start() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ServerError::Missing {
            looked: "no port tried".to_owned(),
        }))
    }

    /// A new cluster: trust authentication (loopback, throwaway), UTF-8,
    /// no fsync while initdb writes it (the server itself runs with
    /// fsync on).
    fn initdb(&self) -> Result<(), ServerError> {
        let data = self.data();
        let mut cmd = self.command("initdb");
        cmd.args(["-D", &data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"]);
        run(&mut cmd).map(|_| ())
    }

    /// `bin/name`, run as the cluster's user when there is one.
    fn command(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        match self.user {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    /// The cluster's directory.
    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// The server's log file.
    fn log(&self) -> String {
        self.dir.join("server.log").display().to_string()
    }

    /// `e` with the end of the server's log, which says why it did not start.
    fn with_log(&self, e: ServerError) -> ServerError {
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        match e {
            ServerError::Command { command, reason } => ServerError::Command {
                command,
                reason: format!("{reason}\nserver log:\n{}", tail.join("\n")),
            },
            other => other,
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            // The last resort: the postmaster's pid is the first line of
            // its pid file; SIGQUIT stops it and its children at once.
            eprintln!("test server: {e}; sending SIGQUIT");
            let pid_file = self.dir.join("data").join("postmaster.pid");
            if let Some(pid) = fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.lines().next().map(str::to_owned))
            {
                let _ = Command::new("kill").args(["-QUIT", &pid]).status();
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The directory with the server binaries: [`PG_BIN_ENV`], or the newest
/// version under [`PG_LIB_DIR`] that has them all.
fn binaries() -> Result<PathBuf, ServerError> {
    let complete = |dir: &Path| BINARIES.iter().all(|b| dir.join(b).is_file());
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        let dir = PathBuf::from(dir);
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(ServerError::Missing {
                looked: format!("{PG_BIN_ENV}={}", dir.display()),
            })
        };
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(PG_LIB_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| ServerError::Missing {
            looked: format!("{PG_LIB_DIR}/*/bin, or set {PG_BIN_ENV}"),
        })
}

/// The user to run the server as: none unless we are root (the owner of
/// `/proc/self` is our effective user).
fn run_as() -> Result<Option<&'static str>, ServerError> {
    let uid = fs::metadata("/proc/self")
        .map_err(|source| ServerError::Io {
            path: "/proc/self".to_owned(),
            source,
        })?
        .uid();
    if uid != 0 {
        return Ok(None);
    }
    for user in USERS {
        let known = Command::new("id")
            .args(["-u", user])
            .output()
            .is_ok_and(|o| o.status.success());
        if known {
            return Ok(Some(user));
        }
    }
    Err(ServerError::Command {
        command: format!("id -u {}", USERS.join(" / id -u ")),
        reason: "running as root and no unprivileged user to run PostgreSQL as".to_owned(),
    })
}

/// Checks that `name` is one this helper puts in SQL unquoted.
fn plain_name(name: &str) -> Result<(), ServerError> {
    let fits = !name.is_empty() && name.len() <= NAME_BYTES_MAX;
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if fits && plain {
        Ok(())
    } else {
        Err(ServerError::Name(name.to_owned()))
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `cmd` to completion; a failure names the command and its output.
fn run(cmd: &mut Command) -> Result<Output, ServerError> {
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| ServerError::Command {
        command: line.clone(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(out);
    }
    Err(ServerError::Command {
        command: line,
        reason: format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}
