//! Test harness: a real switch on loopback ports with a merchant key in a
//! fresh data directory, the terminal in-process on port 0, and a small
//! HTTP/1.1 client (for the terminal's pages and for WebDriver).
#![allow(dead_code, unreachable_pub)]

pub mod agent;
pub mod http;
pub mod totp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};

/// Bound on every wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// The operator every test signs in as.
pub const OPERATOR: &str = "alice";
/// Her password.
pub const PASSWORD: &str = "correct horse battery staple";
/// The demo merchant of the switch's embedded configuration.
pub const MERCHANT: &str = "DEMO00000000001";
/// A Luhn-valid test card.
pub const PAN: &str = "4111111111111111";
/// Its mask.
pub const MASKED_PAN: &str = "411111******1111";

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir.
pub fn temp_dir(what: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vterm-test-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// An Argon2id hash with small parameters, so debug-build tests stay
/// fast; the terminal verifies with whatever parameters the hash names.
pub fn cheap_hash(password: &str) -> String {
    let params = Params::new(1024, 1, 1, None).expect("params");
    let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").expect("salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

fn local() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().expect("addr"))
}

/// A running switch and the merchant key the terminal logs in with.
pub struct TestSwitch {
    pub running: Option<switch::Running>,
    pub frame: SocketAddr,
    pub client_id: String,
    pub secret: String,
    pub dir: PathBuf,
}

impl TestSwitch {
    pub async fn start() -> TestSwitch {
        let dir = temp_dir("switch");
        let key = switch::KeyAdmin::new(&dir)
            .create_key(switch::Owner::Merchant(MERCHANT.to_string()), "vterm test")
            .expect("create key");
        let overrides = switch::Overrides {
            iso_addr: local(),
            frame_addr: local(),
            http_addr: local(),
            data_dir: Some(dir.clone()),
            ..switch::Overrides::default()
        };
        let config = switch::Config::load(None, overrides).expect("switch config");
        let running = switch::start(config, switch::Clock::System)
            .await
            .expect("switch start");
        TestSwitch {
            frame: running.frame_addr,
            running: Some(running),
            client_id: key.client_id,
            secret: key.secret,
            dir,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            tokio::time::timeout(TIMEOUT, r.shutdown())
                .await
                .expect("switch shutdown in time")
                .expect("journal closed cleanly");
        }
    }
}

/// The terminal's configuration text for a switch (or a dead address).
pub fn config_text(switch_addr: SocketAddr, client_id: &str, secret: &str) -> String {
    format!(
        r#"
listen_addr = "127.0.0.1:0"
switch_addr = "{switch_addr}"
client_id = "{client_id}"
secret = "{secret}"
terminals = ["DEMO0001", "DEMO0002"]
currencies = [978, 840]
session_idle_s = 600
session_lifetime_s = 3600
sessions_max = 10

[[operators]]
name = "{OPERATOR}"
password_hash = "{}"
role = "operator"
"#,
        cheap_hash(PASSWORD)
    )
}

/// A running terminal.
pub struct TestTerminal {
    pub running: Option<vterm::Running>,
    pub addr: SocketAddr,
    pub clock: vterm::Clock,
}

impl TestTerminal {
    pub async fn start(config_text: &str, clock: vterm::Clock) -> TestTerminal {
        let config = vterm::Config::parse(config_text).expect("terminal config");
        let running = vterm::start(config, clock.clone())
            .await
            .expect("terminal start");
        TestTerminal {
            addr: running.addr,
            running: Some(running),
            clock,
        }
    }

    /// A terminal whose switch address answers nothing: enough for pages
    /// that do not reach the switch.
    pub async fn without_switch(clock: vterm::Clock) -> TestTerminal {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = dead.local_addr().expect("addr");
        drop(dead);
        let text = config_text(addr, "DM-0000-0001", &"ab".repeat(32));
        TestTerminal::start(&text, clock).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            tokio::time::timeout(TIMEOUT, r.shutdown())
                .await
                .expect("terminal shutdown in time")
                .expect("terminal server");
        }
    }
}

/// The value of `name="csrf" value="…"` in a page.
pub fn csrf_in(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a csrf field in the page")
        + r#"name="csrf" value=""#.len();
    page[at..].split('"').next().expect("token").to_string()
}
