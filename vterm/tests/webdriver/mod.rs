//! A minimal W3C WebDriver client for chromedriver and headless Chromium:
//! JSON over HTTP/1.1 on a std `TcpStream`, one request per connection.
//! Blocking on purpose: tests call it from the test thread while the
//! servers run on the runtime's workers, and `Drop` can shut down.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// W3C's key for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Bound on starting chromedriver and on every wait for the page.
pub const WAIT: Duration = Duration::from_secs(30);
/// Bound on one WebDriver command (a navigation included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response read (screenshots).
const RESPONSE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Where Debian's packages put the browser and its driver; overridable
/// with `VTERM_CHROMIUM` and `VTERM_CHROMEDRIVER`.
pub fn binaries() -> (PathBuf, PathBuf) {
    let from_env = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    (
        from_env("VTERM_CHROMIUM", "/usr/bin/chromium"),
        from_env("VTERM_CHROMEDRIVER", "/usr/bin/chromedriver"),
    )
}

/// chromedriver with one browser session; both end on drop.
pub struct Browser {
    /// The chromedriver process.
    driver: Child,
    /// Its address.
    addr: SocketAddr,
    /// The WebDriver session id.
    session: String,
    /// The browser profile, removed at the end.
    profile: PathBuf,
}

/// An element reference.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium.
    ///
    /// # Panics
    /// When either is missing (with the command that installs them), or
    /// does not start within [`WAIT`].
    pub fn start(profile: PathBuf) -> Browser {
        let (chromium, chromedriver) = binaries();
        for (path, what) in [(&chromium, "chromium"), (&chromedriver, "chromedriver")] {
            assert!(
                path.exists(),
                "{what} not found at {}: install it with `apt-get install -y chromium chromium-driver` (or run .ci/install-browser.sh)",
                path.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        browser.wait_ready();
        browser.new_session(&chromium);
        browser
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((200, v)) = call(self.addr, "GET", "/status", None) {
                if v["value"]["ready"] == json!(true) {
                    return;
                }
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn new_session(&mut self, chromium: &Path) {
        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--window-size=1280,1100".to_string(),
            format!("--user-data-dir={}", self.profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let v = self.expect_ok("POST", "/session", Some(capabilities));
        self.session = v["sessionId"].as_str().expect("sessionId").to_string();
    }

    fn expect_ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match call(self.addr, method, path, body) {
            Ok((200, v)) => v["value"].clone(),
            Ok((status, v)) => panic!("WebDriver {method} {path}: {status} {}", v["value"]),
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    fn session_cmd(&self, method: &str, tail: &str, body: Option<Value>) -> Value {
        self.expect_ok(method, &format!("/session/{}{tail}", self.session), body)
    }

    /// Loads a page.
    pub fn goto(&self, url: &str) {
        self.session_cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current address.
    pub fn url(&self) -> String {
        self.session_cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching `css`, if any, now.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        let path = format!("/session/{}/element", self.session);
        match call(
            self.addr,
            "POST",
            &path,
            Some(json!({"using": "css selector", "value": css})),
        ) {
            Ok((200, v)) => v["value"][ELEMENT_KEY]
                .as_str()
                .map(|id| Element(id.to_string())),
            _ => None,
        }
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it.
    pub fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element `{css}` within {WAIT:?} at {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the element matching `css` has exactly `text`. The
    /// element is looked up again each time: a page being replaced makes
    /// old references stale.
    pub fn wait_text(&self, css: &str, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.try_find(css).and_then(|e| self.try_text(&e));
            if now.as_deref() == Some(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` shows {now:?}, not {text:?}, within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An element's text, `None` when it is gone (stale).
    fn try_text(&self, e: &Element) -> Option<String> {
        let path = format!("/session/{}/element/{}/text", self.session, e.0);
        match call(self.addr, "GET", &path, None) {
            Ok((200, v)) => v["value"].as_str().map(str::to_string),
            _ => None,
        }
    }

    /// Clicks a button that submits a form, and waits until the browser
    /// has left the page (the button's reference goes stale), so what is
    /// looked up next is on the new page.
    pub fn click_to_navigate(&self, e: &Element) {
        self.click(e);
        let deadline = Instant::now() + WAIT;
        while self.try_text(e).is_some() {
            assert!(
                Instant::now() < deadline,
                "still on {} {WAIT:?} after the click",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types into an element.
    pub fn type_into(&self, e: &Element, text: &str) {
        self.session_cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    /// Clears a field.
    pub fn clear(&self, e: &Element) {
        self.session_cmd("POST", &format!("/element/{}/clear", e.0), Some(json!({})));
    }

    /// Clicks an element.
    pub fn click(&self, e: &Element) {
        self.session_cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})));
    }

    /// An element's rendered text.
    pub fn text(&self, e: &Element) -> String {
        self.session_cmd("GET", &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// An element's DOM property (`value` of a field).
    pub fn property(&self, e: &Element, name: &str) -> String {
        self.session_cmd("GET", &format!("/element/{}/property/{name}", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's HTML as the browser has it.
    pub fn source(&self) -> String {
        self.session_cmd("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.session_cmd("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = call(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One WebDriver command: (HTTP status, JSON body).
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let (status, payload) = read_response(&mut stream)?;
    let value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    Ok((status, value))
}

/// Reads one response: chromedriver may keep the connection open, so the
/// body is read by `Content-Length` (or to the last chunk), not to EOF.
fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (split, status, chunked, length) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the headers ended"));
        }
        raw.extend_from_slice(&chunk[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let chunked = head.contains("transfer-encoding: chunked");
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (split, status, chunked, length);
        }
        if raw.len() > RESPONSE_BYTES_MAX {
            return Err(std::io::Error::other("headers too long"));
        }
    };
    let body_start = split + 4;
    loop {
        let have = raw.len() - body_start;
        let done = match length {
            Some(length) => have >= length,
            None => chunked && raw.ends_with(b"0\r\n\r\n"),
        };
        if done || raw.len() > RESPONSE_BYTES_MAX {
            break;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    let mut payload = raw.split_off(body_start);
    if let Some(length) = length {
        payload.truncate(length);
    }
    if chunked {
        payload = dechunk(&payload);
    }
    Ok((status, payload))
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        rest = &rest[line_end + 2..];
        if size == 0 || size > rest.len() {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:#x}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().fold(0u32, |acc, c| (acc << 6) | value(*c))
            << (6 * (4 - chunk.len() as u32));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
