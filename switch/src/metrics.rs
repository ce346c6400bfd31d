//! Prometheus metrics: names follow the conventions (`switch_` prefix,
//! `_total` counters, `_seconds` histograms). Hot-path handles are
//! registered once at start so recording does not look labels up.

use std::time::Instant;

use codecs::iso8583::Mti;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use engine::Code;

/// MTIs with their own label; others count as `other`.
const MTIS: [&str; 12] = [
    "0100", "0101", "0200", "0201", "0220", "0221", "0400", "0401", "0420", "0421", "0800", "other",
];

/// One request in this many per thread has its stages timed
/// (`switch_stage_duration_seconds`); see [`Metrics::sample_stages`].
pub(crate) const STAGE_SAMPLE_EVERY: u32 = 8;

/// Histogram buckets for request latencies, seconds (10 µs to 1 s).
const LATENCY_BUCKETS_S: [f64; 16] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

/// Buckets of `switch_cluster_commit_batch_records`: records in one
/// PostgreSQL transaction, 1 to `COMMIT_BATCH_RECORDS_MAX` (1,024).
const CLUSTER_BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Buckets of `switch_cluster_load_seconds`: a takeover's fence, read and
/// replay of one shard, 1 ms to 60 s.
const CLUSTER_LOAD_BUCKETS_S: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 15.0, 60.0,
];

/// Buckets of `switch_cluster_forwarded_seconds`: a linked request from
/// the entry node's send to its answer, 100 µs to the 5 s owner wait plus
/// the 2 s link timeout; and of `switch_cluster_velocity_ask_seconds`
/// (at most 1.5 s).
const CLUSTER_FORWARDED_BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 2.5, 7.5,
];

/// Buckets of `switch_cluster_velocity_checkpoint_bytes`: one card
/// shard's velocity checkpoint, 1 KiB to 64 MiB (about 65 bytes a card key
/// with one event, 676 at most; `risk.card_keys_max` keys a node).
const CHECKPOINT_BYTES_BUCKETS: [f64; 9] = [
    1_024.0,
    4_096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Installs the Prometheus recorder once per process and returns its handle.
pub(crate) fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_S)
                // A full name is matched before a suffix.
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switch_upstream_answer_seconds".into()),
                        &crate::upstream::ANSWER_BUCKETS_S,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switch_webhook_delivery_seconds".into()),
                        &crate::webhooks::DELIVERY_BUCKETS_S,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switch_merchant_webhook_delivery_seconds".into()),
                        &crate::webhooks::DELIVERY_BUCKETS_S,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switch_cluster_commit_batch_records".into()),
                        &CLUSTER_BATCH_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switch_cluster_load_seconds".into()),
                        &CLUSTER_LOAD_BUCKETS_S,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switch_cluster_forwarded_seconds".into()),
                        &CLUSTER_FORWARDED_BUCKETS_S,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switch_cluster_velocity_ask_seconds".into()),
                        &CLUSTER_FORWARDED_BUCKETS_S,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switch_cluster_velocity_checkpoint_bytes".into()),
                        &CHECKPOINT_BYTES_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (tests): render from a fresh one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Handles used on every message.
pub(crate) struct Metrics {
    /// `switch_requests_total{mti,code}`, by MTI index then code index.
    requests: Vec<Counter>,
    /// `switch_request_duration_seconds{mti}`.
    latency: Vec<Histogram>,
    /// `switch_stage_duration_seconds{stage}` by [`Stage`].
    stages: [Histogram; 3],
}

/// Pipeline stages timed separately. The engine stage covers validate,
/// risk, lifecycle and the journal hand-off; the journal's own timing is in
/// `switch_journal_*`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stage {
    /// Bytes to message.
    Decode = 0,
    /// Validate, risk, lifecycle, journal hand-off.
    Engine = 1,
    /// Outcome to bytes.
    Encode = 2,
}

impl Metrics {
    /// Registers every handle.
    pub(crate) fn new() -> Self {
        let mut requests = Vec::with_capacity(MTIS.len() * Code::ALL.len());
        let mut latency = Vec::with_capacity(MTIS.len());
        for mti in MTIS {
            for code in Code::ALL {
                requests.push(metrics::counter!("switch_requests_total", "mti" => mti, "code" => code.as_str()));
            }
            latency.push(metrics::histogram!("switch_request_duration_seconds", "mti" => mti));
        }
        metrics::describe_counter!(
            "switch_requests_total",
            "Requests answered, by MTI and response code (F39)."
        );
        metrics::describe_histogram!(
            "switch_request_duration_seconds",
            metrics::Unit::Seconds,
            "Time from a frame's decode to its response being encoded."
        );
        metrics::describe_counter!(
            "switch_codec_errors_total",
            "Frames that failed to decode, by kind."
        );
        metrics::describe_gauge!("switch_connections_open", "Open connections, by listener.");
        metrics::describe_gauge!(
            "switch_requests_in_flight",
            "Requests read and not yet answered."
        );
        metrics::describe_gauge!("switch_payments", "Payments in memory, by status.");
        metrics::describe_gauge!(
            "switch_idempotency_entries",
            "Message keys remembered for repeats."
        );
        metrics::describe_counter!(
            "switch_limit_reached_total",
            "Times a named limit was hit, by limit."
        );
        metrics::describe_counter!(
            "switch_connections_closed_total",
            "Connections closed by the switch, by reason."
        );
        let stages = ["decode", "engine", "encode"]
            .map(|s| metrics::histogram!("switch_stage_duration_seconds", "stage" => s));
        metrics::describe_histogram!(
            "switch_stage_duration_seconds",
            metrics::Unit::Seconds,
            format!("Time spent in each pipeline stage, sampled: one request in {STAGE_SAMPLE_EVERY} per thread.")
        );
        Metrics {
            requests,
            latency,
            stages,
        }
    }

    fn mti_index(mti: Mti) -> usize {
        MTIS.iter()
            .position(|m| m.as_bytes() == mti.as_bytes())
            .unwrap_or(MTIS.len() - 1)
    }

    /// Counts an answer and its latency.
    pub(crate) fn answered(&self, mti: Mti, code: Code, started: Instant) {
        let m = Self::mti_index(mti);
        let c = Code::ALL.iter().position(|x| *x == code).unwrap_or(0);
        if let Some(counter) = self.requests.get(m * Code::ALL.len() + c) {
            counter.increment(1);
        }
        if let Some(h) = self.latency.get(m) {
            h.record(started.elapsed().as_secs_f64());
        }
    }

    /// Whether this request's stages are timed: one request in
    /// [`STAGE_SAMPLE_EVERY`] per thread. Timing every stage of every
    /// request (three more clock reads and three histogram samples) was 3%
    /// of the switch's CPU; the request duration is still recorded for all.
    pub(crate) fn sample_stages(&self) -> bool {
        thread_local! {
            static REQUESTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        REQUESTS.with(|n| {
            let seen = n.get().wrapping_add(1);
            n.set(seen);
            seen % STAGE_SAMPLE_EVERY == 0
        })
    }

    /// Records a stage that began at `from`; returns now, where the next begins.
    pub(crate) fn stage(&self, stage: Stage, from: Instant) -> Instant {
        let now = Instant::now();
        if let Some(h) = self.stages.get(stage as usize) {
            h.record(now.duration_since(from).as_secs_f64());
        }
        now
    }

    /// Counts a codec error (rare path: the label is looked up).
    pub(crate) fn codec_error(&self, kind: &'static str) {
        metrics::counter!("switch_codec_errors_total", "kind" => kind).increment(1);
    }
}
