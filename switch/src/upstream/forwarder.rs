//! The links of every `[[upstreams]]` entry, started from the
//! configuration, with what encoding messages for each needs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use codecs::framing::FrameConfig;
use codecs::iso8583::Profile;

use super::{LinkConfig, Upstreams};

/// What one upstream needs besides its links.
pub(crate) struct UpstreamWire {
    /// Encoding of its messages.
    pub(crate) profile: &'static Profile,
    /// F32 (empty: none).
    pub(crate) acquirer_id: String,
    /// Answer deadline.
    pub(crate) timeout: Duration,
}

/// The links and what encoding for each needs.
pub(crate) struct Forwarder {
    /// Every upstream's links.
    pub(crate) upstreams: Arc<Upstreams>,
    /// Per upstream, by index.
    pub(crate) wires: Vec<UpstreamWire>,
    /// An operator asked every SAF entry to be sent again now
    /// (`switch saf retry`, `POST /saf/retry`).
    pub(crate) saf_retry: tokio::sync::Notify,
}

impl Forwarder {
    /// Starts the links of every `[[upstreams]]` entry.
    pub(crate) fn start(
        config: &crate::config::Config,
        clock: crate::clock::Clock,
        cancel: tokio_util::sync::CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) -> anyhow::Result<Option<Arc<Forwarder>>> {
        if config.upstreams.is_empty() {
            return Ok(None);
        }
        let mut links = Vec::new();
        let mut wires = Vec::new();
        for u in &config.upstreams {
            let profile = Profile::by_name(&u.profile).unwrap_or(&Profile::ASCII);
            let framing = FrameConfig {
                header: if u.length_header == "ascii4" {
                    codecs::framing::LengthHeader::Ascii4
                } else {
                    codecs::framing::LengthHeader::Binary2
                },
                ..FrameConfig::default()
            };
            let timeout = Duration::from_millis(u.timeout_ms);
            let tls = match &u.tls_ca_file {
                None => None,
                Some(ca) => {
                    let key = |k: &str| format!("upstreams `{}`.{k}", u.name);
                    let connector = crate::net::tls::client_connector(
                        Some(ca),
                        u.tls_cert_file.as_deref(),
                        u.tls_key_file.as_deref(),
                    )
                    .with_context(|| key("tls_ca_file / tls_cert_file / tls_key_file"))?;
                    let host = u.addr.rsplit_once(':').map_or(u.addr.as_str(), |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                        .with_context(|| key("addr"))?;
                    Some((connector, name))
                }
            };
            links.push(LinkConfig {
                name: u.name.clone(),
                addr: u.addr.clone(),
                profile,
                framing,
                connections: u.connections,
                inflight_per_link_max: u.inflight_per_link_max,
                timeout,
                echo_interval: (u.echo_interval_s > 0)
                    .then(|| Duration::from_secs(u.echo_interval_s)),
                sign_on: u.sign_on,
                acquirer_id: u.acquirer_id.clone(),
                clock: clock.clone(),
                tls,
            });
            wires.push(UpstreamWire {
                profile,
                acquirer_id: u.acquirer_id.clone(),
                timeout,
            });
        }
        Ok(Some(Arc::new(Forwarder {
            upstreams: Upstreams::start(links, cancel, tracker),
            wires,
            saf_retry: tokio::sync::Notify::new(),
        })))
    }
}
