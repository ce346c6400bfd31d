//! What a run does, checked once before anything connects.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};

/// Most connections one run opens.
pub const CONNECTIONS_MAX: usize = 1024;
/// Most requests in flight on one connection: closed-loop depth and the
/// open-loop backlog bound (requests beyond it wait, and their wait counts
/// in their latency). ~150-byte requests, so the bound fits socket buffers
/// and a stalled server cannot deadlock a writer.
pub const INFLIGHT_PER_CONNECTION_MAX: usize = 1024;
/// Highest open-loop rate, requests per second.
pub(crate) const RATE_PER_S_MAX: u64 = 10_000_000;
/// Longest run.
pub(crate) const DURATION_S_MAX: u64 = 3_600;
/// Most runtime threads.
pub(crate) const THREADS_MAX: usize = 64;
/// The STAN space (F11 cycles through 1..=999,999): a larger
/// `--stan-offset` would only wrap.
pub(crate) const STAN_OFFSET_MAX: u64 = 999_999;
/// Most terminals to spread traffic over.
pub(crate) const TERMINALS_MAX: usize = 64;

const _: () = assert!(INFLIGHT_PER_CONNECTION_MAX * CONNECTIONS_MAX <= 1 << 20);

/// What answers on the other side, which decides what is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The switch: every flow of the mix, answers checked against the contract.
    Switch,
    /// The raw echo server: the answer is the request itself.
    Echo,
    /// The iso8583_rs approve-all peer: every request answered with F39 00.
    Peer,
}

/// Weights of the flows that start a new transaction; follow-ups
/// (captures, refunds, reversals, repeats) are sent when their original
/// is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mix {
    /// 0100 alone (a hold left uncaptured).
    pub auth: u32,
    /// 0100, then 0220 capturing it.
    pub preauth_capture: u32,
    /// 0200 sale.
    pub sale: u32,
    /// 0200 sale, then 0200 refund (F3 20) of half of it.
    pub refund: u32,
    /// 0200 sale, then 0400 reversal.
    pub reversal: u32,
    /// 0100, then its repeat 0101, which must get the very same answer.
    pub repeat: u32,
    /// 0100 with a non-numeric F4, answered 30.
    pub malformed: u32,
}

impl Mix {
    /// Authorizations only: what the reference servers are measured with.
    pub const AUTH_ONLY: Mix = Mix {
        auth: 1,
        preauth_capture: 0,
        sale: 0,
        refund: 0,
        reversal: 0,
        repeat: 0,
        malformed: 0,
    };

    /// The default mix against the switch.
    pub const SWITCH_DEFAULT: Mix = Mix {
        auth: 5,
        preauth_capture: 35,
        sale: 30,
        refund: 10,
        reversal: 10,
        repeat: 8,
        malformed: 2,
    };

    /// Parses `name=weight,...` (names as the fields, `-` or `_`); unnamed
    /// flows get 0.
    ///
    /// # Errors
    /// An unknown name, a bad weight, or all weights zero.
    pub fn parse(s: &str) -> anyhow::Result<Mix> {
        let mut mix = Mix {
            auth: 0,
            ..Mix::AUTH_ONLY
        };
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?}: expected name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("mix entry {part:?}: weight is not a number"))?;
            ensure!(
                weight <= 1_000_000,
                "mix entry {part:?}: weight over 1000000"
            );
            let slot = match name.trim().replace('-', "_").as_str() {
                "auth" => &mut mix.auth,
                "preauth_capture" | "capture" => &mut mix.preauth_capture,
                "sale" => &mut mix.sale,
                "refund" => &mut mix.refund,
                "reversal" => &mut mix.reversal,
                "repeat" => &mut mix.repeat,
                "malformed" => &mut mix.malformed,
                other => bail!(
                    "mix entry {part:?}: unknown flow {other:?} (auth, preauth-capture, sale, refund, reversal, repeat, malformed)"
                ),
            };
            *slot = weight;
        }
        ensure!(mix.total() > 0, "mix {s:?}: all weights are zero");
        Ok(mix)
    }

    /// Sum of the weights.
    pub(crate) fn total(&self) -> u64 {
        self.weights().iter().map(|&w| u64::from(w)).sum()
    }

    /// The weights in the order of [`crate::traffic::Flow::ALL`].
    pub(crate) fn weights(&self) -> [u32; 7] {
        [
            self.auth,
            self.preauth_capture,
            self.sale,
            self.refund,
            self.reversal,
            self.repeat,
            self.malformed,
        ]
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Where to connect.
    pub addr: SocketAddr,
    /// What answers there.
    pub target: Target,
    /// Connections to open.
    pub connections: usize,
    /// Closed loop: requests kept in flight per connection.
    pub depth: usize,
    /// Open loop when set: requests per second over all connections.
    pub rate_per_s: Option<u64>,
    /// How long to send.
    pub duration: Duration,
    /// How long to wait for answers after the last send.
    pub drain: Duration,
    /// Runtime worker threads.
    pub threads: usize,
    /// Flows to start.
    pub mix: Mix,
    /// Reuse a pool of this many cards (so velocity can fire; 65 is then
    /// accepted on authorizations); a fresh card per flow when `None`.
    pub cards: Option<u64>,
    /// F42.
    pub merchant: String,
    /// F41 values, spread round-robin.
    pub terminals: Vec<String>,
    /// F49.
    pub currency: u16,
    /// Expect this F39 on every answer instead (to check the checker).
    pub expect_code: Option<[u8; 2]>,
    /// Open loop: most requests in flight per connection.
    pub inflight_max: usize,
    /// Open loop: the pacer sleeps until this close to the next send, then
    /// spins (zero, the default: sleep only, with a 1 µs timer slack).
    pub spin: Duration,
    /// Print a progress line every second on stderr.
    pub progress: bool,
    /// The switch's metrics URL, scraped before and after.
    pub metrics_url: Option<String>,
    /// Name of the run in summaries and tables.
    pub label: String,
    /// Added to every new flow's key number before its STAN and card are
    /// taken from it (below [`STAN_OFFSET_MAX`]): loadgens run at once
    /// against one merchant with offsets far apart use disjoint STANs, so
    /// their originals' F90 keys (merchant, MTI, STAN, F7) do not collide.
    /// 0 by default (the sequence of earlier versions).
    pub stan_offset: u64,
}

impl RunConfig {
    /// Defaults for `target` at `addr`: closed loop, 64 × 16, 5 s.
    pub fn new(addr: SocketAddr, target: Target) -> Self {
        RunConfig {
            addr,
            target,
            connections: 64,
            depth: 16,
            rate_per_s: None,
            duration: Duration::from_secs(5),
            drain: Duration::from_secs(2),
            threads: 1,
            mix: match target {
                Target::Switch => Mix::SWITCH_DEFAULT,
                Target::Echo | Target::Peer => Mix::AUTH_ONLY,
            },
            cards: None,
            merchant: "DEMO00000000001".into(),
            terminals: (1..=10).map(|i| format!("DEMO{i:04}")).collect(),
            currency: 978,
            expect_code: None,
            inflight_max: INFLIGHT_PER_CONNECTION_MAX,
            spin: Duration::ZERO,
            progress: false,
            metrics_url: None,
            label: format!("{target:?}").to_lowercase(),
            stan_offset: 0,
        }
    }

    /// Checks every limit and field format.
    ///
    /// # Errors
    /// Names the setting and what was expected.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=CONNECTIONS_MAX).contains(&self.connections),
            "connections {}: expected 1..={CONNECTIONS_MAX}",
            self.connections
        );
        ensure!(
            (1..=INFLIGHT_PER_CONNECTION_MAX).contains(&self.depth),
            "depth {}: expected 1..={INFLIGHT_PER_CONNECTION_MAX}",
            self.depth
        );
        ensure!(
            (1..=INFLIGHT_PER_CONNECTION_MAX).contains(&self.inflight_max),
            "max-inflight {}: expected 1..={INFLIGHT_PER_CONNECTION_MAX}",
            self.inflight_max
        );
        if let Some(rate) = self.rate_per_s {
            ensure!(
                (1..=RATE_PER_S_MAX).contains(&rate),
                "rate {rate}: expected 1..={RATE_PER_S_MAX} per second"
            );
        }
        ensure!(
            self.duration > Duration::ZERO && self.duration.as_secs() <= DURATION_S_MAX,
            "duration {:?}: expected above 0 and at most {DURATION_S_MAX} s",
            self.duration
        );
        ensure!(
            (1..=THREADS_MAX).contains(&self.threads),
            "threads {}: expected 1..={THREADS_MAX}",
            self.threads
        );
        ensure!(
            self.stan_offset < STAN_OFFSET_MAX,
            "stan-offset {}: expected below {STAN_OFFSET_MAX}",
            self.stan_offset
        );
        ensure!(self.mix.total() > 0, "mix: all weights are zero");
        if self.target != Target::Switch {
            ensure!(
                self.mix.malformed == 0,
                "mix: malformed frames only make sense against the switch (the {:?} target cannot answer them)",
                self.target
            );
        }
        ensure!(
            self.merchant.len() == 15 && self.merchant.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "merchant {:?}: expected 15 printable characters (F42)",
            self.merchant
        );
        ensure!(
            (1..=TERMINALS_MAX).contains(&self.terminals.len()),
            "terminals: expected 1..={TERMINALS_MAX} of them"
        );
        for t in &self.terminals {
            ensure!(
                t.len() == 8 && t.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                "terminal {t:?}: expected 8 printable characters (F41)"
            );
        }
        ensure!(
            self.currency < 1000,
            "currency {}: expected 3 digits",
            self.currency
        );
        if let Some(cards) = self.cards {
            ensure!(cards > 0, "cards: expected at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mix() {
        let m = Mix::parse("sale=3, preauth-capture=2,malformed=1").expect("valid");
        assert_eq!(
            (m.sale, m.preauth_capture, m.malformed, m.auth),
            (3, 2, 1, 0)
        );
        assert!(Mix::parse("sale=0").is_err());
        assert!(Mix::parse("bogus=1").is_err());
        assert!(Mix::parse("sale").is_err());
    }

    #[test]
    fn malformed_only_against_the_switch() {
        let addr = "127.0.0.1:1".parse().expect("addr");
        let mut c = RunConfig::new(addr, Target::Echo);
        c.validate().expect("defaults are valid");
        c.mix.malformed = 1;
        assert!(c.validate().is_err());
        assert!(RunConfig::new(addr, Target::Switch).validate().is_ok());
    }
}
