//! Load generator for the switch: drives ISO 8583 traffic over persistent,
//! pipelined connections and checks every answer.
//!
//! Layout:
//! - `config`: what a run does (target, mode, mix, limits), checked once.
//! - `card`, `clock`: Luhn-valid card numbers; F7 from a wall clock read once.
//! - `traffic`: the deterministic core of one connection, with no I/O and
//!   no clock: picks the next message, encodes it, remembers what it
//!   expects, matches answers by STAN + F41 and counts every mismatch.
//! - `conn`: drives one connection, closed loop (fixed pipeline depth) or
//!   open loop (sends released by `pacer` at precomputed times, latency from
//!   the scheduled time so coordinated omission cannot hide stalls).
//! - `run`: connects, spawns, reports progress every second, merges
//!   histograms into a [`Summary`].
//! - `metrics`: scrapes the switch's `/metrics` before and after a run.
//! - `echo`, `peer`: the reference servers (raw echo, iso8583_rs approve-all).
//! - `report`: one table from several JSON summaries, with ratios.
//! - [`issuer`]: an issuer simulator, the far side of the switch's
//!   upstream links (latency, decline rate, silent and late answers,
//!   link loss), for tests and the `loadgen issuer` command.

mod card;
mod clock;
mod config;
mod conn;
mod echo;
pub mod issuer;
mod metrics;
mod pacer;
mod peer;
mod report;
mod run;
mod stats;
mod traffic;
mod webhook_sink;

pub use config::{Mix, RunConfig, Target, CONNECTIONS_MAX, INFLIGHT_PER_CONNECTION_MAX};
pub use echo::spawn_echo;
pub use peer::start_peer;
pub use report::render_table;
pub use run::run;
pub use stats::{Latency, Mismatches, Summary};
pub use webhook_sink::{spawn_webhook_sink, SINK_PATHS_MAX};
