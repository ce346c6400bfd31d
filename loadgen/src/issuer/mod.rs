//! An issuer simulator: the far side of the switch's upstream links, as
//! the upstream contract describes them (routing to issuer hosts). It listens on TCP, reads ISO 8583 requests
//! with the same framing and profiles as the switch's ISO listener, and
//! answers each one on its own after a configurable latency, so answers
//! leave in any order on a pipelined link.
//!
//! Layout:
//! - `answer`: the decisions (approve by counter, decline codes in turn,
//!   silent and late amounts, latency samples) and the answer's encoding;
//!   no I/O, no clock.
//! - `link`: one connection: a reader that decodes and decides, delayed
//!   answers, and a writer that batches what is due.
//! - `delay`: the thread that holds answers for their latency and hands
//!   each to its link's writer when it is due.
//! - `listen`: the accept loop, which can be stopped and resumed.
//! - `counts`: the counters and their snapshot.
//!
//! Behaviour can be changed while it runs ([`IssuerHandle::update`] and the
//! `set_*` shortcuts); each request reads the settings in force when it
//! arrives.

mod answer;
mod counts;
mod delay;
mod link;
mod listen;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{ensure, Context};
use codecs::framing::{FrameConfig, LengthHeader};
use codecs::iso8583::{Mti, Profile};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use counts::IssuerCounts;

use answer::Decider;
use counts::Stats;
use link::LinkEntry;

/// Connections served at once; more wait in the listen backlog (the
/// permit is taken before `accept`).
pub const CONNECTIONS_MAX: usize = 256;
/// Answers decided but not yet written, per link; the link stops reading
/// while it is at this many (backpressure, not loss).
pub const PENDING_ANSWERS_PER_LINK_MAX: usize = 4_096;
/// Received messages kept for [`IssuerHandle::received`]; older ones are
/// dropped first.
pub const RECEIVED_LOG_MAX: usize = 10_000;

/// How long the issuer holds an answer back. Samples are capped at ten
/// minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Always this many ms (0: answer at once).
    Fixed(u64),
    /// Uniform over `min_ms..=max_ms`.
    Uniform {
        /// Shortest delay.
        min_ms: u64,
        /// Longest delay.
        max_ms: u64,
    },
    /// Exponentially distributed with this mean (rounded to whole ms).
    Exponential {
        /// Mean delay.
        mean_ms: u64,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Fixed(0)
    }
}

impl FromStr for Latency {
    type Err = String;

    /// `5` or `fixed:5`, `uniform:1:5`, `exp:2` (all in ms).
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("latency {s:?}: {v:?} is not a whole number of ms"))
        };
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [ms] | ["fixed", ms] => Ok(Latency::Fixed(num(ms)?)),
            ["uniform", min, max] => {
                let (min_ms, max_ms) = (num(min)?, num(max)?);
                if min_ms > max_ms {
                    return Err(format!("latency {s:?}: min above max"));
                }
                Ok(Latency::Uniform { min_ms, max_ms })
            }
            ["exp", mean] => Ok(Latency::Exponential {
                mean_ms: num(mean)?,
            }),
            _ => Err(format!(
                "latency {s:?}: expected MS, fixed:MS, uniform:MIN:MAX or exp:MEAN"
            )),
        }
    }
}

/// What the issuer listens on and how it answers.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// Where to listen (port 0 picks one; [`IssuerHandle::addr`] tells).
    /// Read at start only.
    pub addr: SocketAddr,
    /// Wire profile, as the switch's `[iso].profile`
    /// (`&Profile::ASCII`, `&Profile::ASCII_HEX`). Read at start only.
    pub profile: &'static Profile,
    /// Length header, as the switch's `[iso].length_header`. Read at start only.
    pub length_header: LengthHeader,
    /// Share of authorizations (0100/0200) approved, 0..=100; decided by
    /// a counter (see below), so every 100 consecutive ones hold exactly
    /// this many approvals.
    pub approve_pct: u8,
    /// F39 of declines, two characters each, taken in turn (empty: `05`).
    pub decline_codes: Vec<String>,
    /// Delay before each answer.
    pub latency: Latency,
    /// Requests with one of these F4 values are never answered.
    pub silent_amounts: Vec<u64>,
    /// Requests with one of these F4 values are answered after this many
    /// ms instead of `latency`.
    pub late: Option<(Vec<u64>, u64)>,
    /// Close a link right after reading its N-th request: that request is
    /// counted and logged but never answered; answers already due (latency
    /// 0) are written first, answers still waiting are dropped.
    pub disconnect_after: Option<u64>,
    /// Answer 0800 (false: never, to test dead-link detection).
    pub answer_echo: bool,
    /// Seed of the latency samples.
    pub seed: u64,
    /// Keep the last [`RECEIVED_LOG_MAX`] messages for
    /// [`IssuerHandle::received`] (tests read them). Copying each one's
    /// fields costs more than deciding and answering it, so a benchmark
    /// peer turns it off.
    pub keep_received: bool,
}

impl Default for IssuerConfig {
    /// Loopback port 0, `ascii`, `binary2`, approve all at once, answer
    /// echoes, keep what is received.
    fn default() -> Self {
        IssuerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            profile: &Profile::ASCII,
            length_header: LengthHeader::Binary2,
            approve_pct: 100,
            decline_codes: vec!["05".into()],
            latency: Latency::Fixed(0),
            silent_amounts: Vec::new(),
            late: None,
            disconnect_after: None,
            answer_echo: true,
            seed: 0x5eed,
            keep_received: true,
        }
    }
}

impl IssuerConfig {
    /// Checks what a runtime change could also get wrong.
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.approve_pct <= 100,
            "approve_pct {}: expected 0..=100",
            self.approve_pct
        );
        for c in &self.decline_codes {
            ensure!(
                c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphanumeric()),
                "decline code {c:?}: expected 2 letters or digits"
            );
        }
        Ok(())
    }
}

/// One message the issuer received (requests, and answers to its own
/// echoes), kept in memory for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The link it came on (1, 2, ... in accept order).
    pub link: u64,
    /// Its MTI.
    pub mti: Mti,
    /// Every field present, ascending, content as on the wire (hex text
    /// for binary fields of a hex profile). Card data in the clear: this
    /// is a test tool and nothing is written anywhere.
    pub fields: Vec<(u16, Vec<u8>)>,
}

impl Received {
    /// Field `n`'s content, if present.
    pub fn field(&self, n: u16) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(f, _)| *f == n)
            .map(|(_, v)| v.as_slice())
    }

    /// Field `n` as text, if present and UTF-8.
    pub fn text(&self, n: u16) -> Option<&str> {
        std::str::from_utf8(self.field(n)?).ok()
    }
}

/// What the accept loop and every link share.
#[derive(Debug)]
struct Shared {
    /// Wire profile.
    profile: &'static Profile,
    /// Framing of every link.
    framing: FrameConfig,
    /// [`IssuerConfig::keep_received`], read at start.
    keep_received: bool,
    /// Behaviour in force and the decision state, changed together.
    behaviour: Mutex<Behaviour>,
    /// Counters.
    stats: Stats,
    /// The last [`RECEIVED_LOG_MAX`] messages.
    received: Mutex<VecDeque<Received>>,
    /// Open links, to close or send echoes to.
    links: Mutex<HashMap<u64, LinkEntry>>,
    /// Link ids.
    next_link: AtomicU64,
    /// F11 of the issuer's own echoes.
    echo_stan: AtomicU64,
    /// [`CONNECTIONS_MAX`] permits.
    connection_limit: Arc<Semaphore>,
    /// Cancelled by shutdown: every task's parent.
    root: CancellationToken,
    /// Every task, to wait for at shutdown.
    tasks: TaskTracker,
    /// Holds delayed answers until they are due.
    delayer: delay::Delayer,
}

/// The settings and the counters they drive.
#[derive(Debug)]
struct Behaviour {
    /// Settings in force.
    config: IssuerConfig,
    /// Approval counter and latency generator.
    decider: Decider,
}

impl Shared {
    fn behaviour(&self) -> MutexGuard<'_, Behaviour> {
        // A panic while holding the lock leaves data that is still whole.
        self.behaviour.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn links(&self) -> MutexGuard<'_, HashMap<u64, LinkEntry>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, entry: Received) {
        let mut log = self.received.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= RECEIVED_LOG_MAX {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

/// A running issuer. Dropping it stops every task (without waiting);
/// [`IssuerHandle::shutdown`] also waits for them.
#[derive(Debug)]
pub struct IssuerHandle {
    /// The bound address (kept when listening stops, to bind it again).
    addr: SocketAddr,
    /// State shared with the tasks.
    shared: Arc<Shared>,
    /// The accept loop's own token, `None` while not listening.
    listening: tokio::sync::Mutex<Option<listen::Listening>>,
}

/// Binds `config.addr` and starts serving on the current tokio runtime.
///
/// # Errors
/// When the settings are out of range or the address cannot be bound.
pub async fn start(config: IssuerConfig) -> anyhow::Result<IssuerHandle> {
    config.check()?;
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("issuer: binding {}", config.addr))?;
    let addr = listener.local_addr().context("issuer: local address")?;
    let shared = Arc::new(Shared {
        profile: config.profile,
        framing: FrameConfig {
            header: config.length_header,
            ..FrameConfig::default()
        },
        keep_received: config.keep_received,
        behaviour: Mutex::new(Behaviour {
            decider: Decider::new(config.seed),
            config,
        }),
        stats: Stats::default(),
        received: Mutex::new(VecDeque::new()),
        links: Mutex::new(HashMap::new()),
        next_link: AtomicU64::new(1),
        echo_stan: AtomicU64::new(0),
        connection_limit: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
        root: CancellationToken::new(),
        tasks: TaskTracker::new(),
        delayer: delay::Delayer::start().context("issuer: starting the delay thread")?,
    });
    let listening = listen::spawn(listener, &shared);
    Ok(IssuerHandle {
        addr,
        shared,
        listening: tokio::sync::Mutex::new(Some(listening)),
    })
}

impl IssuerHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters now.
    pub fn counts(&self) -> IssuerCounts {
        self.shared.stats.snapshot()
    }

    /// The last [`RECEIVED_LOG_MAX`] messages received, oldest first.
    pub fn received(&self) -> Vec<Received> {
        let log = self
            .shared
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    /// The settings in force.
    pub fn config(&self) -> IssuerConfig {
        self.shared.behaviour().config.clone()
    }

    /// Changes the settings for requests that arrive from now on (`addr`,
    /// `profile`, `length_header`, `seed` and `keep_received` are read at
    /// start only).
    ///
    /// # Errors
    /// When the changed settings are out of range; nothing changes then.
    pub fn update(&self, change: impl FnOnce(&mut IssuerConfig)) -> anyhow::Result<()> {
        let mut b = self.shared.behaviour();
        let mut next = b.config.clone();
        change(&mut next);
        next.check()?;
        b.config = next;
        Ok(())
    }

    /// Sets the approval share (clamped to 100).
    pub fn set_approve_pct(&self, pct: u8) {
        self.shared.behaviour().config.approve_pct = pct.min(100);
    }

    /// Sets the latency.
    pub fn set_latency(&self, latency: Latency) {
        self.shared.behaviour().config.latency = latency;
    }

    /// Sets the amounts never answered.
    pub fn set_silent_amounts(&self, amounts: Vec<u64>) {
        self.shared.behaviour().config.silent_amounts = amounts;
    }

    /// Sets whether 0800 is answered.
    pub fn set_answer_echo(&self, answer: bool) {
        self.shared.behaviour().config.answer_echo = answer;
    }

    /// Closes every open link at once (answers not yet written are dropped).
    pub fn disconnect_all(&self) {
        for entry in self.shared.links().values() {
            Stats::bump(&self.shared.stats.disconnects_forced);
            entry.cancel.cancel();
        }
    }

    /// Stops listening and returns once the listening socket is closed:
    /// new connections are refused until [`Self::resume_listening`]. Open
    /// links stay open.
    pub async fn stop_listening(&self) {
        if let Some(l) = self.listening.lock().await.take() {
            l.stop().await;
        }
    }

    /// Listens again on the same address (nothing to do if listening).
    ///
    /// # Errors
    /// When the address cannot be bound again (taken meanwhile).
    pub async fn resume_listening(&self) -> anyhow::Result<()> {
        let mut slot = self.listening.lock().await;
        if slot.is_none() {
            let listener = TcpListener::bind(self.addr)
                .await
                .with_context(|| format!("issuer: binding {} again", self.addr))?;
            *slot = Some(listen::spawn(listener, &self.shared));
        }
        Ok(())
    }

    /// Sends an 0800/301 echo on every open link; 0810 answers are counted
    /// in `echo_answers` and logged. Returns how many links it was sent on.
    pub fn send_echo(&self) -> usize {
        link::send_echo(&self.shared)
    }

    /// Stops listening, closes every link and waits for every task.
    pub async fn shutdown(self) {
        self.shared.root.cancel();
        self.shared.delayer.stop();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

impl Drop for IssuerHandle {
    fn drop(&mut self) {
        self.shared.root.cancel();
        self.shared.delayer.stop();
    }
}

/// Hands out the next link id (1, 2, ... in accept order).
fn next_link_id(shared: &Shared) -> u64 {
    shared.next_link.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_parses() {
        assert_eq!("0".parse(), Ok(Latency::Fixed(0)));
        assert_eq!("fixed:7".parse(), Ok(Latency::Fixed(7)));
        assert_eq!(
            "uniform:1:5".parse(),
            Ok(Latency::Uniform {
                min_ms: 1,
                max_ms: 5
            })
        );
        assert_eq!("exp:2".parse(), Ok(Latency::Exponential { mean_ms: 2 }));
        assert!("uniform:5:1".parse::<Latency>().is_err());
        assert!("gauss:1".parse::<Latency>().is_err());
        assert!("-1".parse::<Latency>().is_err());
    }

    #[test]
    fn config_checks_codes_and_pct() {
        assert!(IssuerConfig::default().check().is_ok());
        let bad_pct = IssuerConfig {
            approve_pct: 101,
            ..IssuerConfig::default()
        };
        assert!(bad_pct.check().is_err());
        let bad_code = IssuerConfig {
            decline_codes: vec!["5".into()],
            ..IssuerConfig::default()
        };
        assert!(bad_code.check().is_err());
    }
}
