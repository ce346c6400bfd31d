//! A small etcd v3 client: what cluster mode needs and nothing more.
//!
//! It speaks to etcd's JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`,
//! `/v3/kv/deleterange`, `/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/lease/timetolive`, `/v3/lease/revoke`, and the streaming
//! `/v3/watch`; keys and values base64, 64-bit integers as strings),
//! over the `reqwest` client the switch already builds, so no `protoc` or
//! gRPC stack is needed. The gateway is part of every etcd server since 3.3
//! and answers on the client URL.
//!
//! Every call has a timeout ([`Etcd::new`]'s `timeout`). Endpoints are
//! tried in turn, starting with the last one that answered: a connection
//! failure, a timeout or a 5xx moves on to the next; an answer from etcd
//! (even a refusal) ends the call. A write whose answer was lost may have
//! been applied: the callers' operations are written so that doing one
//! twice is harmless (a create-if-absent finds its own key, a delete finds
//! none).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE64;
use serde_json::{json, Value};

use crate::error::EtcdError;

/// Most endpoints a client takes (an etcd cluster has 1, 3, 5 or 7 members).
pub const ENDPOINTS_MAX: usize = 7;
/// Largest answer body read, in bytes: a range over 4,096 owner keys of
/// ~200 bytes each in base64 JSON is about 1 MiB.
pub const RESPONSE_BYTES_MAX: usize = 4 << 20;
/// The call timeout cluster mode uses, in ms: a third of the default lease
/// TTL, so a keep-alive that times out leaves time for the next one.
pub const CALL_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// etcd's gRPC code for "not found" (a lease that expired or was revoked).
const CODE_NOT_FOUND: i64 = 5;

/// A lease id, as etcd numbers them.
pub type LeaseId = i64;

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision at which the key was created: the epoch of an owner key.
    pub create_revision: i64,
    /// The revision of its last change.
    pub mod_revision: i64,
    /// The lease it is attached to; 0 for none.
    pub lease: LeaseId,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// The TTL etcd granted, in s (etcd may raise a short one to its minimum).
    pub ttl_s: i64,
}

/// What a create-if-absent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The key was absent and is now ours; its create revision.
    Created {
        /// The revision of the put: the key's create revision, the epoch.
        revision: i64,
    },
    /// The key exists: as it is.
    Exists(Kv),
}

/// TLS to etcd (`https://` endpoints): the CA that signed the members'
/// certificates and, when etcd requires client certificates
/// (`--client-cert-auth`), this client's certificate and key.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// Trust anchors: the CA's certificates.
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The client's chain (its own first) and key.
    identity: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        Arc<rustls::pki_types::PrivateKeyDer<'static>>,
    )>,
}

impl EtcdTls {
    /// From PEM text: the CA's certificates, and the client's chain and
    /// key when etcd asks for one.
    ///
    /// # Errors
    /// [`EtcdError::Tls`] for PEM with no certificate, or no key.
    pub fn from_pem(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Self, EtcdError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = |pem: &[u8], what: &str| {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| EtcdError::Tls(format!("{what}: {e}")))?;
            if certs.is_empty() {
                return Err(EtcdError::Tls(format!("{what}: no certificate in the PEM")));
            }
            Ok(certs)
        };
        let roots = certs(ca, "CA")?;
        let identity = match identity {
            None => None,
            Some((cert, key)) => {
                let chain = certs(cert, "client certificate")?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| EtcdError::Tls(format!("client key: {e}")))?;
                Some((chain, Arc::new(key)))
            }
        };
        Ok(EtcdTls { roots, identity })
    }

    /// The rustls configuration: the CA's roots, the client's identity.
    fn client_config(&self) -> Result<rustls::ClientConfig, EtcdError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in &self.roots {
            roots
                .add(cert.clone())
                .map_err(|e| EtcdError::Tls(format!("CA: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| EtcdError::Tls(e.to_string()))?
        .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| EtcdError::Tls(format!("client certificate and key: {e}"))),
        }
    }
}

/// An etcd client over its JSON gateway.
#[derive(Debug)]
pub struct Etcd {
    /// The HTTP client, with the call timeout.
    http: reqwest::Client,
    /// Endpoint base URLs without a trailing slash (`http://host:port`).
    endpoints: Vec<String>,
    /// The endpoint that answered last: calls start there.
    preferred: AtomicUsize,
    /// The call timeout.
    timeout: Duration,
}

impl Etcd {
    /// A client for `endpoints` (`http://host:port`, at most
    /// [`ENDPOINTS_MAX`]), every call bounded by `timeout`.
    ///
    /// # Errors
    /// [`EtcdError::Endpoints`] for an empty or long list or a URL that is
    /// not `http://` (`https://` takes [`Etcd::with_tls`]).
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, EtcdError> {
        Self::with_tls(endpoints, timeout, None)
    }

    /// As [`Etcd::new`], over TLS when `tls` is given: then every endpoint
    /// must be `https://host:port`, and without it `http://`, so that a
    /// configuration never believes itself encrypted when it is not.
    ///
    /// # Errors
    /// As [`Etcd::new`]; [`EtcdError::Tls`] for a CA or identity rustls
    /// refuses.
    pub fn with_tls(
        endpoints: &[String],
        timeout: Duration,
        tls: Option<&EtcdTls>,
    ) -> Result<Self, EtcdError> {
        check_endpoints(endpoints, tls.is_some())?;
        let list = endpoints
            .iter()
            .map(|e| e.trim_end_matches('/').to_owned())
            .collect();
        let http = match tls {
            None => http_client(timeout)?,
            Some(tls) => client_with(tls.client_config()?, timeout)?,
        };
        Ok(Etcd {
            http,
            endpoints: list,
            preferred: AtomicUsize::new(0),
            timeout,
        })
    }

    /// Grants a lease of `ttl_s` seconds.
    ///
    /// # Errors
    /// As every call: unreachable, refused, or an unexpected answer.
    pub async fn lease_grant(&self, ttl_s: i64) -> Result<Lease, EtcdError> {
        const OP: &str = "/v3/lease/grant";
        let v = self.call(OP, json!({ "TTL": ttl_s })).await?;
        Ok(Lease {
            id: int(&v, "ID", OP)?,
            ttl_s: int(&v, "TTL", OP)?,
        })
    }

    /// Renews lease `id` once; its TTL in s as etcd now counts it.
    ///
    /// # Errors
    /// [`EtcdError::LeaseNotFound`] when it expired or was revoked; as
    /// every call otherwise.
    pub async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64, EtcdError> {
        const OP: &str = "/v3/lease/keepalive";
        let v = self.call(OP, json!({ "ID": id.to_string() })).await?;
        // A streaming call: the gateway wraps each message in "result".
        let result = v.get("result").unwrap_or(&v);
        let ttl = opt_int(result, "TTL", OP)?.unwrap_or(0);
        if ttl <= 0 {
            return Err(EtcdError::LeaseNotFound(id));
        }
        Ok(ttl)
    }

    /// The seconds lease `id` has left as etcd counts them, `None` when it
    /// is gone.
    ///
    /// # Errors
    /// As every call.
    pub async fn lease_time_to_live(&self, id: LeaseId) -> Result<Option<i64>, EtcdError> {
        const OP: &str = "/v3/lease/timetolive";
        let v = self.call(OP, json!({ "ID": id.to_string() })).await?;
        // An expired or unknown lease answers TTL -1.
        Ok(opt_int(&v, "TTL", OP)?.filter(|&ttl| ttl >= 0))
    }

    /// Revokes lease `id`: its keys are deleted at once.
    ///
    /// # Errors
    /// [`EtcdError::LeaseNotFound`] when it was gone already; as every
    /// call otherwise.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({ "ID": id.to_string() }))
            .await
            .map_err(|e| lease_error(e, id))?;
        Ok(())
    }

    /// Puts `value` at `key`, attached to `lease` if given; the revision.
    ///
    /// # Errors
    /// [`EtcdError::LeaseNotFound`] for a lease that is gone; as every
    /// call otherwise.
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<i64, EtcdError> {
        const OP: &str = "/v3/kv/put";
        let v = self
            .call(OP, put_body(key, value, lease))
            .await
            .map_err(|e| lease_error(e, lease.unwrap_or(0)))?;
        revision(&v, OP)
    }

    /// The key `key`, if it exists.
    ///
    /// # Errors
    /// As every call.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        const OP: &str = "/v3/kv/range";
        let v = self.call(OP, json!({ "key": b64(key.as_bytes()) })).await?;
        Ok(kvs(&v, OP)?.into_iter().next())
    }

    /// Every key starting with `prefix`, in key order, at most `limit`.
    ///
    /// # Errors
    /// [`EtcdError::TooMany`] when there are more than `limit`; as every
    /// call otherwise.
    pub async fn get_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<Kv>, EtcdError> {
        const OP: &str = "/v3/kv/range";
        let body = json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            // One more than asked, to tell "exactly limit" from "more".
            "limit": (limit.saturating_add(1)).to_string(),
        });
        let v = self.call(OP, body).await?;
        let list = kvs(&v, OP)?;
        if list.len() > limit {
            return Err(EtcdError::TooMany {
                prefix: prefix.to_owned(),
                limit,
            });
        }
        Ok(list)
    }

    /// Deletes `key`; whether it existed.
    ///
    /// # Errors
    /// As every call.
    pub async fn delete(&self, key: &str) -> Result<bool, EtcdError> {
        const OP: &str = "/v3/kv/deleterange";
        let v = self.call(OP, json!({ "key": b64(key.as_bytes()) })).await?;
        Ok(opt_int(&v, "deleted", OP)?.unwrap_or(0) > 0)
    }

    /// Puts `value` at `key` under `lease` only if the key does not exist
    /// (`Txn(If(CreateRevision(key) == 0), Then(Put), Else(Range))`): its
    /// create revision if it was made, the key as it is otherwise.
    ///
    /// # Errors
    /// [`EtcdError::LeaseNotFound`] for a lease that is gone; as every
    /// call otherwise.
    pub async fn create_if_absent(
        &self,
        key: &str,
        value: &[u8],
        lease: LeaseId,
    ) -> Result<Created, EtcdError> {
        const OP: &str = "/v3/kv/txn";
        let k = b64(key.as_bytes());
        let body = json!({
            "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
            "success": [{ "request_put": put_body(key, value, Some(lease)) }],
            "failure": [{ "request_range": { "key": k } }],
        });
        let v = self
            .call(OP, body)
            .await
            .map_err(|e| lease_error(e, lease))?;
        if v.get("succeeded").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(Created::Created {
                revision: revision(&v, OP)?,
            });
        }
        let range = v
            .get("responses")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("response_range"))
            .ok_or_else(|| decode(OP, "failed txn without its range"))?;
        match kvs(range, OP)?.into_iter().next() {
            Some(kv) => Ok(Created::Exists(kv)),
            // Deleted between the compare and the range: it is absent, and
            // the next try takes it.
            None => Err(decode(OP, "key vanished during the transaction")),
        }
    }

    /// Deletes `key` only if its create revision is `create_revision` (an
    /// owner letting its own ownership go, not a later one); whether it did.
    ///
    /// # Errors
    /// As every call.
    pub async fn delete_if_created_at(
        &self,
        key: &str,
        create_revision: i64,
    ) -> Result<bool, EtcdError> {
        const OP: &str = "/v3/kv/txn";
        let k = b64(key.as_bytes());
        let body = json!({
            "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL",
                          "create_revision": create_revision.to_string() }],
            "success": [{ "request_delete_range": { "key": k } }],
        });
        let v = self.call(OP, body).await?;
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Watches every key starting with `prefix` from now on, through the
    /// gateway's streaming `POST /v3/watch`, for at most `span` (then the
    /// stream ends and the caller watches again). Endpoints are tried in
    /// turn as for every call; the call timeout bounds the opening only.
    ///
    /// # Errors
    /// As every call.
    pub async fn watch_prefix(&self, prefix: &str, span: Duration) -> Result<Watch, EtcdError> {
        const OP: &str = "/v3/watch";
        let body = json!({ "create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
        }})
        .to_string();
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let url = format!("{}{OP}", self.endpoints[at]);
            let sent = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .timeout(span)
                .send();
            // The client's timeout is replaced by `span` for this call:
            // the opening keeps the usual bound.
            match tokio::time::timeout(self.timeout, sent).await {
                Ok(Ok(response)) if response.status().is_success() => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(Watch {
                        response,
                        buffer: Vec::new(),
                    });
                }
                Ok(Ok(response)) => last = format!("HTTP {}", response.status()),
                Ok(Err(e)) => last = transport(e),
                Err(_) => last = format!("timed out after {:?}", self.timeout),
            }
        }
        Err(EtcdError::Unreachable {
            op: OP,
            endpoint: self.endpoints[(first + n - 1) % n].clone(),
            reason: last,
        })
    }

    /// Posts `body` to `op` on each endpoint in turn until one answers.
    async fn call(&self, op: &'static str, body: Value) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let endpoint = &self.endpoints[at];
            match self.post(endpoint, op, &body).await {
                Ok(Answer::Ok(v)) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Answer::Refused { code, message }) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Err(EtcdError::Refused {
                        op,
                        endpoint: endpoint.clone(),
                        code,
                        message,
                    });
                }
                Err(reason) => last = reason,
            }
        }
        Err(EtcdError::Unreachable {
            op,
            endpoint: self.endpoints[(first + n - 1) % n].clone(),
            reason: last,
        })
    }

    /// One POST: the answer, etcd's refusal, or why the endpoint did not
    /// answer (next one, please).
    async fn post(&self, endpoint: &str, op: &'static str, body: &Value) -> Result<Answer, String> {
        let url = format!("{endpoint}{op}");
        let mut response = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_server_error() && status != reqwest::StatusCode::NOT_IMPLEMENTED {
            return Err(format!("HTTP {status}"));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len().saturating_add(chunk.len()) > RESPONSE_BYTES_MAX {
                return Err(format!(
                    "answer over RESPONSE_BYTES_MAX ({RESPONSE_BYTES_MAX} bytes)"
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        // A streaming call may hold several messages a line; the first is ours.
        let first = bytes
            .split(|&b| b == b'\n')
            .find(|l| !l.is_empty())
            .unwrap_or(&[]);
        let v: Value =
            serde_json::from_slice(first).map_err(|e| format!("HTTP {status}, not JSON: {e}"))?;
        if let Some(code) = v.get("code").and_then(Value::as_i64) {
            if v.get("error").is_some() || !status.is_success() {
                let message = v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                return Ok(Answer::Refused { code, message });
            }
        }
        if !status.is_success() {
            return Ok(Answer::Refused {
                code: -1,
                message: format!("HTTP {status}"),
            });
        }
        Ok(Answer::Ok(v))
    }
}

/// A plain-HTTP client, every call bounded by `timeout`: etcd's, and the
/// nodes' `GET /cluster` for `switch cluster status`.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, EtcdError> {
    // reqwest's rustls names no crypto provider (the workspace picks
    // aws-lc-rs); a library does not install a process-wide default, so
    // the client gets its own configuration. Plain HTTP: no roots,
    // nothing to trust.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| EtcdError::Endpoints(format!("TLS: {e}")))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    client_with(tls, timeout)
}

/// A client over `tls`, every call bounded by `timeout`.
fn client_with(tls: rustls::ClientConfig, timeout: Duration) -> Result<reqwest::Client, EtcdError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        // The addresses are the operator's; a proxy from the environment
        // would see every lease and key.
        .no_proxy()
        .build()
        .map_err(|e| EtcdError::Endpoints(format!("HTTP client: {e}")))
}

/// One change a [`Watch`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was put (created or changed).
    Put(Vec<u8>),
    /// The key was deleted (by hand, or with its lease).
    Delete(Vec<u8>),
}

/// An open watch ([`Etcd::watch_prefix`]).
#[derive(Debug)]
pub struct Watch {
    /// The streaming answer.
    response: reqwest::Response,
    /// Bytes of a message not whole yet, at most [`RESPONSE_BYTES_MAX`].
    buffer: Vec<u8>,
}

impl Watch {
    /// The next message's events: empty for the watch's creation;
    /// `Ok(None)` once the stream ended (its span passed, etcd cancelled
    /// the watch, or closed the connection): watch again.
    ///
    /// # Errors
    /// A broken connection, a message over [`RESPONSE_BYTES_MAX`] or one
    /// that does not parse.
    pub async fn next(&mut self) -> Result<Option<Vec<WatchEvent>>, EtcdError> {
        const OP: &str = "/v3/watch";
        loop {
            let mut messages =
                serde_json::Deserializer::from_slice(&self.buffer).into_iter::<Value>();
            match messages.next() {
                Some(Ok(message)) => {
                    let used = messages.byte_offset();
                    self.buffer.drain(..used);
                    return watch_events(&message);
                }
                Some(Err(e)) if !e.is_eof() => return Err(decode(OP, &e.to_string())),
                // Nothing whole yet: read on.
                Some(Err(_)) | None => {}
            }
            let chunk = match self.response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(None),
                Err(e) if e.is_timeout() => return Ok(None),
                Err(e) => return Err(decode(OP, &transport(e))),
            };
            if self.buffer.len().saturating_add(chunk.len()) > RESPONSE_BYTES_MAX {
                return Err(decode(
                    OP,
                    &format!("a message over RESPONSE_BYTES_MAX ({RESPONSE_BYTES_MAX} bytes)"),
                ));
            }
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

/// The events of one watch message; `None` when it ends the watch
/// (cancelled, compacted, or an error from the gateway).
fn watch_events(message: &Value) -> Result<Option<Vec<WatchEvent>>, EtcdError> {
    const OP: &str = "/v3/watch";
    let Some(result) = message.get("result") else {
        return Ok(None);
    };
    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let Some(events) = result.get("events").and_then(Value::as_array) else {
        return Ok(Some(Vec::new()));
    };
    events
        .iter()
        .map(|e| {
            let key = e
                .get("kv")
                .and_then(|kv| kv.get("key"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let key = BASE64
                .decode(key.as_bytes())
                .map_err(|err| decode(OP, &format!("key: not base64: {err}")))?;
            // PUT is the protobuf default, so the gateway leaves it out.
            Ok(match e.get("type").and_then(Value::as_str) {
                Some("DELETE") => WatchEvent::Delete(key),
                _ => WatchEvent::Put(key),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// What one endpoint answered.
enum Answer {
    /// The call's answer.
    Ok(Value),
    /// etcd refused it.
    Refused {
        /// gRPC code.
        code: i64,
        /// etcd's message.
        message: String,
    },
}

/// A transport error with its causes (reqwest's own message names only
/// the URL), "timed out" first when it did.
fn transport(e: reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        format!("timed out: {e}")
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Checks a list of endpoint URLs: 1 to [`ENDPOINTS_MAX`], each
/// `https://host:port` when `tls`, `http://host:port` otherwise.
///
/// # Errors
/// [`EtcdError::Endpoints`], naming the first bad URL.
pub fn check_endpoints(endpoints: &[String], tls: bool) -> Result<(), EtcdError> {
    if endpoints.is_empty() || endpoints.len() > ENDPOINTS_MAX {
        return Err(EtcdError::Endpoints(format!(
            "expected 1 to {ENDPOINTS_MAX} URLs, got {}",
            endpoints.len()
        )));
    }
    let want = if tls { "https://" } else { "http://" };
    for url in endpoints {
        let trimmed = url.trim_end_matches('/');
        let Some(rest) = trimmed.strip_prefix(want) else {
            let why = match (tls, trimmed.starts_with("https://")) {
                (false, true) => "https:// needs the etcd CA (TLS) configured",
                (true, false) => "TLS is configured: expected https://host:port",
                _ => "expected http://host:port",
            };
            return Err(EtcdError::Endpoints(format!("{url:?}: {why}")));
        };
        if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
            return Err(EtcdError::Endpoints(format!(
                "{url:?}: expected {want}host:port"
            )));
        }
    }
    Ok(())
}

/// A refusal naming a missing lease as [`EtcdError::LeaseNotFound`].
fn lease_error(e: EtcdError, lease: LeaseId) -> EtcdError {
    match e {
        EtcdError::Refused {
            code, ref message, ..
        } if code == CODE_NOT_FOUND && message.contains("lease not found") => {
            EtcdError::LeaseNotFound(lease)
        }
        other => other,
    }
}

/// A put request's body.
fn put_body(key: &str, value: &[u8], lease: Option<LeaseId>) -> Value {
    let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
    if let Some(lease) = lease {
        body["lease"] = Value::String(lease.to_string());
    }
    body
}

/// The end of the range of keys starting with `prefix`: the prefix with
/// its last byte below 0xff incremented (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

/// Base64 as the gateway wants it.
fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The keys of a range answer.
fn kvs(v: &Value, op: &'static str) -> Result<Vec<Kv>, EtcdError> {
    let Some(list) = v.get("kvs").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter().map(|kv| one_kv(kv, op)).collect()
}

/// One key of a range answer.
fn one_kv(kv: &Value, op: &'static str) -> Result<Kv, EtcdError> {
    let bytes = |field: &str| -> Result<Vec<u8>, EtcdError> {
        let s = kv.get(field).and_then(Value::as_str).unwrap_or_default();
        BASE64
            .decode(s.as_bytes())
            .map_err(|e| decode(op, &format!("{field}: not base64: {e}")))
    };
    Ok(Kv {
        key: bytes("key")?,
        value: bytes("value")?,
        create_revision: opt_int(kv, "create_revision", op)?.unwrap_or(0),
        mod_revision: opt_int(kv, "mod_revision", op)?.unwrap_or(0),
        lease: opt_int(kv, "lease", op)?.unwrap_or(0),
    })
}

/// The header's revision.
fn revision(v: &Value, op: &'static str) -> Result<i64, EtcdError> {
    let header = v.get("header").ok_or_else(|| decode(op, "no header"))?;
    int(header, "revision", op)
}

/// A required 64-bit integer (the gateway writes them as strings).
fn int(v: &Value, field: &str, op: &'static str) -> Result<i64, EtcdError> {
    opt_int(v, field, op)?.ok_or_else(|| decode(op, &format!("no {field}")))
}

/// An optional 64-bit integer: absent is the protobuf default.
fn opt_int(v: &Value, field: &str, op: &'static str) -> Result<Option<i64>, EtcdError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|e| decode(op, &format!("{field} {s:?}: {e}"))),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| decode(op, &format!("{field} {n}: not an i64"))),
        Some(other) => Err(decode(op, &format!("{field}: {other}"))),
    }
}

/// A decode error.
fn decode(op: &'static str, reason: &str) -> EtcdError {
    EtcdError::Decode {
        op,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/switch/a/"), b"/switch/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn endpoints_are_checked() {
        let one = |url: &str, tls| check_endpoints(&[url.to_owned()], tls);
        assert!(one("http://127.0.0.1:2379/", false).is_ok());
        assert!(one("https://127.0.0.1:2379", true).is_ok());
        let e = one("https://a:1", false).unwrap_err().to_string();
        assert!(e.contains("needs the etcd CA"), "{e}");
        let e = one("http://a:1", true).unwrap_err().to_string();
        assert!(e.contains("TLS is configured"), "{e}");
        assert!(one("http://a", false).is_err());
        assert!(one("https://a", true).is_err());
        assert!(one("http://a:1/v3", false).is_err());
        assert!(one("ftp://a:1", false).is_err());
        assert!(Etcd::new(&[], Duration::from_secs(1)).is_err());
        let c = Etcd::new(
            &["http://127.0.0.1:2379/".to_owned()],
            Duration::from_secs(1),
        );
        assert_eq!(c.expect("a client").endpoints, ["http://127.0.0.1:2379"]);
    }

    #[test]
    fn tls_needs_pem_with_a_certificate_and_a_key() {
        let e = EtcdTls::from_pem(b"no pem here", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CA: no certificate"), "{e}");
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).expect("ca");
        let ca_pem = ca.cert.pem();
        assert!(EtcdTls::from_pem(ca_pem.as_bytes(), None).is_ok());
        let e = EtcdTls::from_pem(ca_pem.as_bytes(), Some((ca_pem.as_bytes(), b"nothing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("client key"), "{e}");
        let key = ca.signing_key.serialize_pem();
        let tls = EtcdTls::from_pem(ca_pem.as_bytes(), Some((ca_pem.as_bytes(), key.as_bytes())))
            .expect("an identity");
        assert!(tls.client_config().is_ok());
    }

    #[test]
    fn watch_messages_that_are_not_events_end_the_watch_or_fail() {
        let key = b64(b"/w/a");
        // Creation: no event.
        assert_eq!(
            watch_events(&json!({ "result": { "created": true } })).unwrap(),
            Some(Vec::new())
        );
        assert_eq!(
            watch_events(&json!({ "result": { "events": [
                { "kv": { "key": key } },
                { "type": "DELETE", "kv": { "key": key } },
            ] } }))
            .unwrap(),
            Some(vec![
                WatchEvent::Put(b"/w/a".to_vec()),
                WatchEvent::Delete(b"/w/a".to_vec())
            ])
        );
        // Cancelled (compacted), or the gateway's error: watch again.
        let cancelled = json!({ "result": { "canceled": true } });
        assert_eq!(watch_events(&cancelled).unwrap(), None);
        let error = json!({ "error": { "grpc_code": 14, "message": "unavailable" } });
        assert_eq!(watch_events(&error).unwrap(), None);
        // A key that is not base64: an error, the watch is opened again.
        let garbage = json!({ "result": { "events": [ { "kv": { "key": "%%" } } ] } });
        assert!(watch_events(&garbage).is_err());
        // Anything else, never a panic.
        for v in [
            json!(null),
            json!([1, 2]),
            json!({ "result": 7 }),
            json!({ "result": { "events": "x" } }),
        ] {
            let _ = watch_events(&v);
        }
    }

    #[test]
    fn integers_come_as_strings_or_numbers() {
        let v = json!({ "a": "12", "b": 7, "c": "x" });
        assert_eq!(opt_int(&v, "a", "t").unwrap(), Some(12));
        assert_eq!(opt_int(&v, "b", "t").unwrap(), Some(7));
        assert_eq!(opt_int(&v, "z", "t").unwrap(), None);
        assert!(opt_int(&v, "c", "t").is_err());
    }
}
