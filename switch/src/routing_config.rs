//! The routing keys of `../shared/upstream.md`: `[[upstreams]]`,
//! `[[routes]]`, `[routing]`, `[stand_in]` and `[saf]`, validated at start
//! (a route naming an unknown upstream is a start-up error) and compiled
//! into the engine's routing table.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::Deserialize;

/// A refused key and why: the configuration's error names them.
pub(crate) struct Refusal {
    /// The key, dotted.
    pub(crate) key: String,
    /// What is wrong.
    pub(crate) problem: String,
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Refusal {
    Refusal {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Most upstreams a configuration may name.
pub(crate) const UPSTREAMS_MAX: usize = 64;
/// Most routes.
pub(crate) const ROUTES_MAX: usize = 10_000;

/// One issuer host (`[[upstreams]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// `[a-z0-9-]{1,32}`: metric label and what routes name.
    pub name: String,
    /// `host:port`.
    pub addr: String,
    /// As `[iso].profile`.
    #[serde(default = "ascii")]
    pub profile: String,
    /// As `[iso].length_header`.
    #[serde(default = "binary2")]
    pub length_header: String,
    /// Links kept open, 1..=64.
    #[serde(default = "two")]
    pub connections: usize,
    /// Requests awaiting an answer on one link.
    #[serde(default = "five_twelve")]
    pub inflight_per_link_max: usize,
    /// Answer deadline of one request, 50..=60,000 ms.
    #[serde(default = "two_thousand")]
    pub timeout_ms: u64,
    /// 0800/301 on a link that has received nothing this long; 0: never.
    #[serde(default = "thirty")]
    pub echo_interval_s: u64,
    /// 0800/001 on connect, 0800/002 before a planned close.
    #[serde(default)]
    pub sign_on: bool,
    /// F32 on every message to this host.
    #[serde(default)]
    pub acquirer_id: String,
    /// Trust anchors for TLS to this host (PEM); set: the link is TLS.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM), when the host asks for one.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Its key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

fn ascii() -> String {
    "ascii".into()
}
fn binary2() -> String {
    "binary2".into()
}
fn two() -> usize {
    2
}
fn five_twelve() -> usize {
    512
}
fn two_thousand() -> u64 {
    2_000
}
fn thirty() -> u64 {
    30
}

/// One routing rule (`[[routes]]`): first match wins.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// PAN prefixes (1..=11 digits) or ranges `510000-559999` (same length).
    pub pan_prefixes: Vec<String>,
    /// An upstream's name, or `local`.
    pub upstream: String,
}

/// `[routing]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// Where a PAN matching no route goes: `local`, an upstream's name, or
    /// `decline` (91).
    pub default: String,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            default: "local".into(),
        }
    }
}

/// `[stand_in]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StandInSettings {
    /// Whether the switch approves in the issuer's stead.
    pub enabled: bool,
    /// Highest amount per currency (ISO 4217 numeric as a string key).
    pub amount_max_minor: BTreeMap<String, u64>,
}

/// `[saf]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafSettings {
    /// First retry, ms; doubles up to `retry_interval_max_ms`.
    pub retry_interval_ms: u64,
    /// Longest retry interval, ms.
    pub retry_interval_max_ms: u64,
    /// An entry not acknowledged by then is dropped, logged and counted.
    pub expire_s: u64,
    /// Most entries (this project's extension of the contract): from 90%
    /// of it no new authorization is forwarded (91), so the reversals and
    /// advices of what was already forwarded always fit.
    pub entries_max: usize,
}

impl Default for SafSettings {
    fn default() -> Self {
        SafSettings {
            retry_interval_ms: 1_000,
            retry_interval_max_ms: 60_000,
            expire_s: 86_400,
            entries_max: 100_000,
        }
    }
}

/// A prefix or range as (digits, lo, hi).
fn prefix_range(s: &str) -> Option<(u8, u64, u64)> {
    let digits = |t: &str| (1..=11).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit());
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    if !digits(lo) || !digits(hi) || lo.len() != hi.len() {
        return None;
    }
    let (l, h) = (lo.parse().ok()?, hi.parse().ok()?);
    (l <= h).then_some((lo.len() as u8, l, h))
}

/// Checks every routing key; returns nothing, or the first error naming
/// its key.
pub(crate) fn validate(
    upstreams: &[UpstreamSettings],
    routes: &[RouteSettings],
    routing: &RoutingSettings,
    stand_in: &StandInSettings,
    saf: &SafSettings,
) -> Result<(), Refusal> {
    if upstreams.len() > UPSTREAMS_MAX {
        return Err(invalid("upstreams", format!("more than {UPSTREAMS_MAX}")));
    }
    let mut names = HashSet::new();
    for (i, u) in upstreams.iter().enumerate() {
        let key = |k: &str| format!("upstreams[{i}].{k}");
        let ok_name = (1..=32).contains(&u.name.len())
            && u.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_name || matches!(u.name.as_str(), "local" | "decline") {
            return Err(invalid(
                key("name"),
                format!(
                    "`{}`: expected [a-z0-9-]{{1,32}}, not `local` or `decline`",
                    u.name
                ),
            ));
        }
        if !names.insert(u.name.as_str()) {
            return Err(invalid(key("name"), format!("`{}` appears twice", u.name)));
        }
        if u.addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(invalid(
                key("addr"),
                format!("`{}`: expected host:port", u.addr),
            ));
        }
        if codecs::iso8583::Profile::by_name(&u.profile).is_none() {
            return Err(invalid(
                key("profile"),
                format!("`{}`: expected `ascii` or `ascii-hex`", u.profile),
            ));
        }
        if !matches!(u.length_header.as_str(), "binary2" | "ascii4") {
            return Err(invalid(
                key("length_header"),
                format!("`{}`: expected `binary2` or `ascii4`", u.length_header),
            ));
        }
        for (k, v, lo, hi) in [
            ("connections", u.connections as u64, 1, 64),
            (
                "inflight_per_link_max",
                u.inflight_per_link_max as u64,
                1,
                65_536,
            ),
            ("timeout_ms", u.timeout_ms, 50, 60_000),
            ("echo_interval_s", u.echo_interval_s, 0, 86_400),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(invalid(key(k), format!("{v} is outside {lo}..={hi}")));
            }
        }
        if u.acquirer_id.len() > 11 || !u.acquirer_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                key("acquirer_id"),
                format!("`{}`: expected up to 11 digits (F32)", u.acquirer_id),
            ));
        }
        if u.tls_cert_file.is_some() != u.tls_key_file.is_some() {
            return Err(invalid(
                key("tls_cert_file"),
                "tls_cert_file and tls_key_file go together",
            ));
        }
        if u.tls_cert_file.is_some() && u.tls_ca_file.is_none() {
            return Err(invalid(
                key("tls_ca_file"),
                "a client certificate needs TLS, which needs tls_ca_file",
            ));
        }
    }
    let known = |name: &str| name == "local" || names.contains(name);
    if routes.len() > ROUTES_MAX {
        return Err(invalid("routes", format!("more than {ROUTES_MAX}")));
    }
    for (i, r) in routes.iter().enumerate() {
        if !known(&r.upstream) {
            return Err(invalid(
                format!("routes[{i}].upstream"),
                format!("`{}` names no upstream (nor `local`)", r.upstream),
            ));
        }
        if r.pan_prefixes.is_empty() {
            return Err(invalid(format!("routes[{i}].pan_prefixes"), "empty"));
        }
        for p in &r.pan_prefixes {
            if prefix_range(p).is_none() {
                return Err(invalid(
                    format!("routes[{i}].pan_prefixes"),
                    format!("`{p}`: expected 1..=11 digits, or a range of two of the same length"),
                ));
            }
        }
    }
    if !(known(&routing.default) || routing.default == "decline") {
        return Err(invalid(
            "routing.default",
            format!(
                "`{}`: expected `local`, `decline` or an upstream's name",
                routing.default
            ),
        ));
    }
    for c in stand_in.amount_max_minor.keys() {
        if c.len() != 3 || c.parse::<u16>().is_err() {
            return Err(invalid(
                "stand_in.amount_max_minor",
                format!("`{c}`: expected an ISO 4217 numeric code"),
            ));
        }
    }
    for (k, v, lo, hi) in [
        (
            "saf.retry_interval_ms",
            saf.retry_interval_ms,
            10,
            3_600_000,
        ),
        (
            "saf.retry_interval_max_ms",
            saf.retry_interval_max_ms,
            10,
            86_400_000,
        ),
        ("saf.expire_s", saf.expire_s, 1, 90 * 86_400),
        ("saf.entries_max", saf.entries_max as u64, 10, 10_000_000),
    ] {
        if !(lo..=hi).contains(&v) {
            return Err(invalid(k, format!("{v} is outside {lo}..={hi}")));
        }
    }
    if saf.retry_interval_max_ms < saf.retry_interval_ms {
        return Err(invalid(
            "saf.retry_interval_max_ms",
            "below saf.retry_interval_ms",
        ));
    }
    Ok(())
}

/// The engine's routing table (after [`validate`]).
pub(crate) fn routing(
    upstreams: &[UpstreamSettings],
    routes: &[RouteSettings],
    routing: &RoutingSettings,
) -> engine::upstream::Routing {
    use engine::upstream::{Route, RouteRule};
    let route_of = |name: &str| match name {
        "local" => Route::Local,
        "decline" => Route::Decline,
        n => upstreams
            .iter()
            .position(|u| u.name == n)
            .map_or(Route::Decline, |i| Route::Upstream(i as u16)),
    };
    let mut rules = Vec::new();
    for r in routes {
        let route = route_of(&r.upstream);
        for p in &r.pan_prefixes {
            if let Some((digits, lo, hi)) = prefix_range(p) {
                rules.push(RouteRule {
                    digits,
                    lo,
                    hi,
                    route,
                });
            }
        }
    }
    engine::upstream::Routing {
        rules,
        default: route_of(&routing.default),
        upstreams: upstreams.iter().map(|u| u.name.clone()).collect(),
    }
}

/// The engine's stand-in rules.
pub(crate) fn stand_in(s: &StandInSettings) -> engine::upstream::StandIn {
    engine::upstream::StandIn {
        enabled: s.enabled,
        amount_max_minor: s
            .amount_max_minor
            .iter()
            .filter_map(|(c, v)| Some((c.parse().ok()?, *v)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const BASE: &str = "[listeners]\niso_addr = \"127.0.0.1:0\"\nframe_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), "t").map_err(|e| e.to_string())
    }

    #[test]
    fn the_contracts_example_is_valid_and_compiles_in_order() {
        let c = parse(
            r#"
[[upstreams]]
name = "visa-sim"
addr = "127.0.0.1:7001"
profile = "ascii"
length_header = "binary2"
connections = 2
inflight_per_link_max = 512
timeout_ms = 2000
echo_interval_s = 30
sign_on = false
acquirer_id = "123456"

[[routes]]
pan_prefixes = ["510000-559999", "4"]
upstream = "visa-sim"

[routing]
default = "decline"

[stand_in]
enabled = true
amount_max_minor = { "978" = 5000, "840" = 5000 }

[saf]
retry_interval_ms = 1000
retry_interval_max_ms = 60000
expire_s = 86400
"#,
        )
        .expect("valid");
        let r = super::routing(&c.upstreams, &c.routes, &c.routing);
        use engine::upstream::Route;
        assert_eq!(r.route(b"4111111111111111"), Route::Upstream(0));
        assert_eq!(r.route(b"5200000000000007"), Route::Upstream(0));
        assert_eq!(r.route(b"3700000000000002"), Route::Decline);
        assert!(super::stand_in(&c.stand_in).allows(840, 5_000));
    }

    #[test]
    fn bad_routing_keys_are_errors_naming_the_key() {
        for (extra, key) in [
            (
                "[[routes]]\npan_prefixes = [\"4\"]\nupstream = \"nowhere\"\n",
                "routes[0].upstream",
            ),
            (
                "[[upstreams]]\nname = \"a\"\naddr = \"h:1\"\n[[routes]]\npan_prefixes = [\"51-5\"]\nupstream = \"a\"\n",
                "routes[0].pan_prefixes",
            ),
            (
                "[[upstreams]]\nname = \"A\"\naddr = \"h:1\"\n",
                "upstreams[0].name",
            ),
            (
                "[[upstreams]]\nname = \"a\"\naddr = \"h:1\"\ntimeout_ms = 10\n",
                "upstreams[0].timeout_ms",
            ),
            (
                "[[upstreams]]\nname = \"a\"\naddr = \"nohost\"\n",
                "upstreams[0].addr",
            ),
            ("[routing]\ndefault = \"elsewhere\"\n", "routing.default"),
            (
                "[stand_in]\namount_max_minor = { \"EUR\" = 1 }\n",
                "stand_in.amount_max_minor",
            ),
            (
                "[[upstreams]]\nname = \"a\"\naddr = \"h:1\"\ncolour = \"red\"\n",
                "colour",
            ),
        ] {
            let e = parse(extra).expect_err(extra);
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
