//! The `loadgen` binary: drive ISO 8583 load (`run`), serve the reference
//! servers (`echo`, `peer`), and tabulate summaries (`report`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use clap::{Parser, Subcommand, ValueEnum};
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
    /// Serve the iso8583_rs approve-all peer.
    Peer {
        /// Address to listen on (port 0 picks one; printed on stdout).
        #[arg(long, default_value = "127.0.0.1:7584")]
        addr: SocketAddr,
    },
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
        Command::Report { files } => report(&files),
    }
}
