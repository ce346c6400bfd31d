//! One run: connect, spawn a task per connection (and the pacer thread in
//! open loop), print progress every second, then merge the results.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpStream;

use crate::clock::unix_ns_now;
use crate::config::RunConfig;
use crate::conn::{closed_loop, open_loop, Conn, ConnResult, Control, Ctx, Progress, Slot};
use crate::metrics::{scrape, MetricsCheck};
use crate::pacer::{pace, OpenPlan};
use crate::stats::{new_histogram, Latency, Summary, Totals};
use crate::traffic::{Shape, Traffic};

/// How long after a run the switch's counters are scraped, so answers
/// written are counted.
const METRICS_SETTLE: Duration = Duration::from_millis(300);

/// Runs the load `cfg` describes and returns its summary.
///
/// # Errors
/// A bad config, a connection that cannot be opened, or a metrics URL that
/// cannot be scraped. Mismatches are not errors: they are in the summary.
pub fn run(cfg: &RunConfig) -> anyhow::Result<Summary> {
    cfg.validate()?;
    let before = cfg.metrics_url.as_deref().map(scrape).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .build()
        .context("building the runtime")?;
    let (results, elapsed) = rt.block_on(drive(cfg))?;
    drop(rt);
    let mut totals = Totals::default();
    let mut hist = new_histogram();
    let mut late_sends = 0;
    let mut send_lag = new_histogram();
    for r in &results {
        totals.add(&r.tally);
        hist.add(&r.hist).context("merging histograms")?;
        late_sends += r.late_sends;
        if let Some(lag) = &r.send_lag {
            send_lag.add(lag).context("merging send lags")?;
        }
    }
    let metrics = match (&cfg.metrics_url, before) {
        (Some(url), Some(before)) => {
            std::thread::sleep(METRICS_SETTLE);
            let after = scrape(url)?;
            Some(MetricsCheck::new(&before, &after, &totals.codes))
        }
        _ => None,
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    Ok(Summary {
        label: cfg.label.clone(),
        target: format!("{:?}", cfg.target).to_lowercase(),
        mode: if cfg.rate_per_s.is_some() {
            "open"
        } else {
            "closed"
        }
        .into(),
        connections: cfg.connections,
        depth: if cfg.rate_per_s.is_some() {
            0
        } else {
            cfg.depth
        },
        rate_per_s: cfg.rate_per_s,
        duration_s: secs,
        sent: totals.sent,
        answered: totals.answered,
        throughput_per_s: totals.answered as f64 / secs,
        latency: Latency::from_histogram(&hist),
        mismatches: totals.mismatches,
        mismatches_total: totals.mismatches.total(),
        codes: totals.codes,
        mismatch_samples: totals.samples,
        late_sends,
        send_lag: cfg.rate_per_s.map(|_| Latency::from_histogram(&send_lag)),
        metrics,
    })
}

/// Connects, runs every connection, returns their results and the time
/// from start until the last one ended.
async fn drive(cfg: &RunConfig) -> anyhow::Result<(Vec<ConnResult>, Duration)> {
    let shape = Arc::new(Shape::new(cfg, unix_ns_now())?);
    let open = cfg.rate_per_s.is_some();
    let inflight = if open { cfg.inflight_max } else { cfg.depth };
    // Everything a connection needs exists before the clock starts.
    let mut conns = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        let s = TcpStream::connect(cfg.addr)
            .await
            .with_context(|| format!("connection {i} to {}", cfg.addr))?;
        s.set_nodelay(true).context("TCP_NODELAY")?;
        let traffic = Traffic::new(Arc::clone(&shape), i, inflight);
        conns.push(Conn::new(s, traffic, inflight, open));
    }
    let ctx = Ctx {
        start: Instant::now(),
        control: Arc::new(Control::default()),
        progress: Arc::new(Progress::default()),
    };
    let plan = cfg.rate_per_s.map(|rate| OpenPlan {
        rate_per_s: rate,
        connections: cfg.connections as u64,
        total: (u128::from(rate) * cfg.duration.as_nanos() / 1_000_000_000) as u64,
    });
    let slots: Vec<Arc<Slot>> = (0..cfg.connections).map(|_| Arc::default()).collect();
    let mut tasks = Vec::with_capacity(cfg.connections);
    for (i, conn) in conns.into_iter().enumerate() {
        let ctx = ctx.clone();
        tasks.push(match plan {
            Some(plan) => tokio::spawn(open_loop(
                conn,
                Arc::clone(&slots[i]),
                plan,
                i as u64,
                cfg.inflight_max,
                ctx,
            )),
            None => tokio::spawn(closed_loop(conn, cfg.depth, ctx)),
        });
    }
    let pacer = plan.map(|plan| {
        let (start, cancel, spin) = (ctx.start, ctx.control.cancel.clone(), cfg.spin);
        std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || pace(&slots, plan, start, spin, &cancel))
    });
    let progress = cfg.progress.then(|| spawn_progress(&ctx, cfg.duration));
    tokio::time::sleep(cfg.duration).await;
    ctx.control.stop_sending.store(true, Ordering::Relaxed);
    let cancel = ctx.control.cancel.clone();
    let drain = cfg.drain;
    tokio::spawn(async move {
        tokio::time::sleep(drain).await;
        cancel.cancel();
    });
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.context("connection task")??);
    }
    let elapsed = ctx.start.elapsed();
    ctx.control.cancel.cancel();
    if let Some(p) = pacer {
        p.context("pacer thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("pacer thread panicked"))?;
    }
    if let Some(p) = progress {
        p.await.context("progress task")?;
    }
    Ok((results, elapsed))
}

/// Prints a line per second on stderr until cancelled.
fn spawn_progress(ctx: &Ctx, duration: Duration) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last_sent, mut last_answered) = (0u64, 0u64);
        loop {
            tokio::select! {
                () = ctx.control.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let p = &ctx.progress;
            let sent = p.sent.load(Ordering::Relaxed);
            let answered = p.answered.load(Ordering::Relaxed);
            let line = format!(
                "[{:>5.1}/{:.0}s] sent {:>9}/s answered {:>9}/s in flight {:>6} total {:>10} mismatches {}",
                ctx.start.elapsed().as_secs_f64(),
                duration.as_secs_f64(),
                sent - last_sent,
                answered - last_answered,
                sent.saturating_sub(answered),
                answered,
                p.mismatches.load(Ordering::Relaxed),
            );
            let _ = writeln!(std::io::stderr(), "{line}");
            (last_sent, last_answered) = (sent, answered);
        }
    })
}
