//! The `loadgen` binary: drive ISO 8583 load (`run`), serve the reference
//! servers (`echo`, `peer`), simulate an issuer host (`issuer`), and
//! tabulate summaries (`report`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use clap::{Parser, Subcommand, ValueEnum};
use codecs::framing::LengthHeader;
use codecs::iso8583::Profile;
use loadgen::issuer::{IssuerConfig, Latency};
use loadgen::{render_table, run, spawn_echo, start_peer, Mix, RunConfig, Summary, Target};

#[derive(Parser)]
#[command(version, about = "Load generator and reference servers for the switch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive load and print a JSON summary on stdout (progress on stderr).
    Run(Box<RunArgs>),
    /// Serve the no-parse echo server (2-byte length framing).
    Echo {
        /// Address to listen on (port 0 picks one; printed on stdout).
        #[arg(long, default_value = "127.0.0.1:7583")]
        addr: SocketAddr,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Serve a webhook receiver for benchmarks: 200 to every POST, after
    /// `--slow-ms` for paths starting `/slow`; `GET /stats` counts per path.
    WebhookSink {
        /// Address to listen on (port 0 picks one; printed on stdout).
        #[arg(long, default_value = "127.0.0.1:7585")]
        addr: SocketAddr,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// How long `/slow…` paths take to answer, ms.
        #[arg(long, default_value_t = 5000)]
        slow_ms: u64,
    },
    /// Serve the iso8583_rs approve-all peer.
    Peer {
        /// Address to listen on (port 0 picks one; printed on stdout).
        #[arg(long, default_value = "127.0.0.1:7584")]
        addr: SocketAddr,
    },
    /// Simulate an issuer host for the switch's upstream links; prints
    /// its counters as a JSON line every 10 s and on SIGINT/SIGTERM.
    Issuer(Box<IssuerArgs>),
    /// Print one table from JSON summaries (files, or `-` for stdin lines).
    Report {
        /// Summary files (one JSON object per line).
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Switch,
    Echo,
    Peer,
}

#[derive(Clone, Copy, ValueEnum)]
enum LengthHeaderArg {
    Binary2,
    Ascii4,
}

#[derive(clap::Args)]
struct IssuerArgs {
    /// Address to listen on (port 0 picks one; printed on stdout).
    #[arg(long, default_value = "127.0.0.1:7001")]
    addr: SocketAddr,
    /// Wire profile, as the switch's `[iso].profile` (`ascii`, `ascii-hex`).
    #[arg(long, default_value = "ascii")]
    profile: String,
    /// Length header, as the switch's `[iso].length_header`.
    #[arg(long, value_enum, default_value = "binary2")]
    length_header: LengthHeaderArg,
    /// Share of authorizations (0100/0200) approved, 0..=100; exact over
    /// every 100 in a row (decided by a counter).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
    approve_pct: u8,
    /// F39 of declines, comma-separated, taken in turn.
    #[arg(long, value_delimiter = ',', default_value = "05")]
    decline_codes: Vec<String>,
    /// Fixed delay before each answer, ms.
    #[arg(long, conflicts_with = "latency")]
    latency_ms: Option<u64>,
    /// Delay before each answer: `fixed:MS`, `uniform:MIN:MAX` or `exp:MEAN` (ms).
    #[arg(long)]
    latency: Option<Latency>,
    /// Requests with these F4 amounts (minor units) are never answered.
    #[arg(long, value_delimiter = ',')]
    silent_amounts: Vec<u64>,
    /// Requests with these F4 amounts are answered after `--late-ms`.
    #[arg(long, value_delimiter = ',')]
    late_amounts: Vec<u64>,
    /// Delay of the late amounts' answers, ms.
    #[arg(long, default_value_t = 3000)]
    late_ms: u64,
    /// Close a link right after reading its N-th request (left unanswered).
    #[arg(long)]
    disconnect_after: Option<u64>,
    /// Never answer 0800 (to test the switch's dead-link detection).
    #[arg(long)]
    no_answer_echo: bool,
    /// Seed of the latency samples.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

impl IssuerArgs {
    fn config(&self) -> anyhow::Result<IssuerConfig> {
        let profile = Profile::by_name(&self.profile)
            .with_context(|| format!("profile {:?}: expected ascii or ascii-hex", self.profile))?;
        let latency = match (self.latency, self.latency_ms) {
            (Some(l), _) => l,
            (None, Some(ms)) => Latency::Fixed(ms),
            (None, None) => Latency::Fixed(0),
        };
        Ok(IssuerConfig {
            addr: self.addr,
            profile,
            length_header: match self.length_header {
                LengthHeaderArg::Binary2 => LengthHeader::Binary2,
                LengthHeaderArg::Ascii4 => LengthHeader::Ascii4,
            },
            approve_pct: self.approve_pct,
            decline_codes: self.decline_codes.clone(),
            latency,
            silent_amounts: self.silent_amounts.clone(),
            late: (!self.late_amounts.is_empty())
                .then(|| (self.late_amounts.clone(), self.late_ms)),
            disconnect_after: self.disconnect_after,
            answer_echo: !self.no_answer_echo,
            seed: self.seed,
            // Nothing reads them here.
            keep_received: false,
        })
    }
}

/// Seconds between two counter lines of `loadgen issuer`.
const ISSUER_REPORT_INTERVAL_S: u64 = 10;

/// Serves the issuer until SIGINT or SIGTERM, printing its counters.
fn issuer_command(args: &IssuerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.clamp(1, 64))
        .enable_all()
        .thread_name("issuer")
        .build()
        .context("building the issuer runtime")?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let issuer = loadgen::issuer::start(config).await?;
        println!("issuer listening on {}", issuer.addr());
        let _ = std::io::stdout().flush();
        let period = Duration::from_secs(ISSUER_REPORT_INTERVAL_S);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = tick.tick() => print_counts(&issuer.counts())?,
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        let last = issuer.counts();
        issuer.shutdown().await;
        print_counts(&last)
    })
}

fn print_counts(c: &loadgen::issuer::IssuerCounts) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string(c).context("serializing the counters")?
    );
    let _ = std::io::stdout().flush();
    Ok(())
}

#[derive(clap::Args)]
struct RunArgs {
    /// Server address.
    #[arg(long)]
    addr: SocketAddr,
    /// What answers there: decides the default mix and what is expected.
    #[arg(long, value_enum, default_value = "switch")]
    target: TargetArg,
    /// Persistent connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Closed loop: requests in flight per connection.
    #[arg(long, short = 'd', default_value_t = 16)]
    depth: usize,
    /// Open loop at this many requests per second (over all connections).
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Milliseconds to wait for answers after the last send.
    #[arg(long, default_value_t = 2000)]
    drain_ms: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Flow weights, e.g. `preauth-capture=35,sale=30,refund=10,reversal=10,repeat=8,malformed=2,auth=5`
    /// (default: that against the switch, `auth=1` otherwise).
    #[arg(long)]
    mix: Option<String>,
    /// Reuse a pool of N cards so the velocity rule can fire (65 is then
    /// accepted on authorizations); default: a fresh card per flow.
    #[arg(long)]
    cards: Option<u64>,
    /// F42.
    #[arg(long, default_value = "DEMO00000000001")]
    merchant: String,
    /// F41 values, comma-separated (default DEMO0001..DEMO0010).
    #[arg(long, value_delimiter = ',')]
    terminals: Vec<String>,
    /// F49.
    #[arg(long, default_value_t = 978)]
    currency: u16,
    /// Expect this F39 on every answer instead (checks the checker).
    #[arg(long)]
    expect_code: Option<String>,
    /// Open loop: most requests in flight per connection.
    #[arg(long, default_value_t = loadgen::INFLIGHT_PER_CONNECTION_MAX)]
    max_inflight: usize,
    /// Open loop: the pacer spins within this many microseconds of the
    /// next send and sleeps before (0, the default: sleep only, with a
    /// 1 us timer slack; spinning takes a core from the server).
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Scrape these switch metrics before and after and compare counts.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Name of the run in the summary.
    #[arg(long)]
    label: Option<String>,
    /// Also append the JSON summary line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Exit with status 1 when anything mismatched or the metrics differ.
    #[arg(long)]
    check: bool,
    /// Added to the STAN sequence (and card index) of new flows, below
    /// 999,999: loadgens run at once against one merchant with offsets far
    /// apart (e.g. 0, 333333, 666666) send disjoint STANs, so a follow-up's
    /// F90 cannot name another loadgen's original.
    #[arg(long, default_value_t = 0)]
    stan_offset: u64,
}

impl RunArgs {
    fn config(&self) -> anyhow::Result<RunConfig> {
        let target = match self.target {
            TargetArg::Switch => Target::Switch,
            TargetArg::Echo => Target::Echo,
            TargetArg::Peer => Target::Peer,
        };
        let mut c = RunConfig::new(self.addr, target);
        c.connections = self.connections;
        c.depth = self.depth;
        c.rate_per_s = self.rate;
        ensure!(
            self.duration_s.is_finite() && self.duration_s > 0.0,
            "duration-s {}: expected a positive number",
            self.duration_s
        );
        c.duration = Duration::from_secs_f64(self.duration_s.min(1e6));
        c.drain = Duration::from_millis(self.drain_ms);
        c.threads = self.threads;
        if let Some(m) = &self.mix {
            c.mix = Mix::parse(m)?;
        }
        c.cards = self.cards;
        c.merchant.clone_from(&self.merchant);
        if !self.terminals.is_empty() {
            c.terminals.clone_from(&self.terminals);
        }
        c.currency = self.currency;
        c.expect_code = match &self.expect_code {
            Some(code) => Some(
                code.as_bytes()
                    .try_into()
                    .ok()
                    .with_context(|| format!("expect-code {code:?}: expected 2 characters"))?,
            ),
            None => None,
        };
        c.inflight_max = self.max_inflight;
        c.spin = Duration::from_micros(self.spin_us);
        c.progress = !self.quiet;
        c.metrics_url.clone_from(&self.metrics_url);
        if let Some(l) = &self.label {
            c.label.clone_from(l);
        }
        c.stan_offset = self.stan_offset;
        Ok(c)
    }
}

fn human(s: &Summary) -> String {
    let l = &s.latency;
    let mut out = format!(
        "{}: {} {} answered {} of {} sent in {:.2}s = {:.0}/s; latency us p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}; mismatches {}",
        s.label, s.target, s.mode, s.answered, s.sent, s.duration_s, s.throughput_per_s,
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, s.mismatches_total
    );
    if let Some(lag) = &s.send_lag {
        out.push_str(&format!(
            "\n  send lag us (scheduled -> written) p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}; later than 100 us: {}",
            lag.p50_us, lag.p99_us, lag.p999_us, lag.max_us, s.late_sends
        ));
    }
    for m in &s.mismatch_samples {
        out.push_str(&format!("\n  mismatch: {m}"));
    }
    if let Some(m) = &s.metrics {
        out.push_str(&format!(
            "\n  metrics: switch counted {} answers, loadgen {}: {}",
            m.switch_total,
            m.loadgen_total,
            if m.agree {
                "agree".to_string()
            } else {
                format!("DIFFER {:?}", m.differences)
            }
        ));
    }
    out
}

fn run_command(args: &RunArgs) -> anyhow::Result<bool> {
    let cfg = args.config()?;
    let summary = run(&cfg)?;
    eprintln!("{}", human(&summary));
    let line = serde_json::to_string(&summary).context("serializing the summary")?;
    println!("{line}");
    if let Some(path) = &args.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
    }
    let agree = summary.metrics.as_ref().is_none_or(|m| m.agree);
    Ok(!args.check || (summary.mismatches_total == 0 && agree))
}

fn report(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for f in files {
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        for (i, line) in text.lines().enumerate().filter(|(_, l)| l.starts_with('{')) {
            let s: Summary = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a summary", f.display(), i + 1))?;
            runs.push(s);
        }
    }
    print!("{}", render_table(&runs));
    Ok(())
}

fn serve_forever(what: &str, addr: SocketAddr) -> ! {
    println!("{what} listening on {addr}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            if !run_command(&args)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Echo { addr, threads } => serve_forever("echo", spawn_echo(addr, threads)?),
        Command::Peer { addr } => serve_forever("peer", start_peer(addr)?),
        Command::WebhookSink {
            addr,
            threads,
            slow_ms,
        } => serve_forever(
            "webhook sink",
            loadgen::spawn_webhook_sink(addr, threads, slow_ms)?,
        ),
        Command::Issuer(args) => issuer_command(&args),
        Command::Report { files } => report(&files),
    }
}
