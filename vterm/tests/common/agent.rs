//! A browser stand-in over HTTP: keeps cookies between requests, signs
//! in through the sign-in form.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::http::{form, request_from, Response};
use super::{csrf_in, OPERATOR, PASSWORD};

/// A browser stand-in: keeps cookies between requests.
pub struct Agent {
    pub addr: SocketAddr,
    /// The browser's own address; any when `None`.
    pub source: Option<IpAddr>,
    /// `X-Forwarded-For` to send (as a proxy in front would add it).
    pub forwarded_for: Option<String>,
    pub cookies: BTreeMap<String, String>,
}

impl Agent {
    pub fn new(addr: SocketAddr) -> Agent {
        Agent {
            addr,
            source: None,
            forwarded_for: None,
            cookies: BTreeMap::new(),
        }
    }

    /// A browser on another machine: it connects from `source`.
    pub fn from(addr: SocketAddr, source: &str) -> Agent {
        Agent {
            source: Some(source.parse().expect("source address")),
            ..Agent::new(addr)
        }
    }

    pub fn keep(&mut self, r: &Response) {
        for c in r.set_cookies() {
            let first = c.split(';').next().unwrap_or_default();
            let (k, v) = first.split_once('=').expect("name=value");
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
    }

    pub async fn send(&mut self, method: &str, path: &str, body: &str) -> Response {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if !cookie.is_empty() {
            headers.push(("Cookie", &cookie));
        }
        if let Some(xff) = &self.forwarded_for {
            headers.push(("X-Forwarded-For", xff));
        }
        let r = request_from(
            self.source,
            self.addr,
            method,
            path,
            &headers,
            body.as_bytes(),
        )
        .await;
        self.keep(&r);
        r
    }

    pub async fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, "").await
    }

    pub async fn post(&mut self, path: &str, pairs: &[(&str, &str)]) -> Response {
        self.send("POST", path, &form(pairs)).await
    }

    pub async fn sign_in_as(&mut self, name: &str, password: &str) -> Response {
        let page = self.get("/login").await;
        assert_eq!(page.status, 200);
        let csrf = csrf_in(&page.body);
        self.post(
            "/login",
            &[("name", name), ("password", password), ("csrf", &csrf)],
        )
        .await
    }

    /// Signs in and returns the session's CSRF token.
    pub async fn sign_in(&mut self) -> String {
        let r = self.sign_in_as(OPERATOR, PASSWORD).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location"), Some("/terminal"));
        let page = self.get("/terminal").await;
        assert_eq!(page.status, 200);
        csrf_in(&page.body)
    }
}
