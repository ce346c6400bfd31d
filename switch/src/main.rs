//! The `switch` binary: runs the switch, or an operator tool.

use std::io::{stdin, stdout, BufWriter};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switch::{Clock, Config, Overrides};

/// Card-payment authorization switch.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// ISO 8583 listener address (default 127.0.0.1:8583).
    #[arg(long)]
    iso_addr: Option<SocketAddr>,
    /// Internal-frame listener address (default 127.0.0.1:8584).
    #[arg(long)]
    frame_addr: Option<SocketAddr>,
    /// HTTP address for /metrics, /healthz, /readyz (default 127.0.0.1:9583).
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Data directory (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML); the embedded default when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Journal acknowledgement: durable or immediate.
    #[arg(long)]
    journal_ack: Option<String>,
    /// Start from the valid prefix of a corrupt journal, reporting what is dropped.
    #[arg(long)]
    repair: bool,
    /// Operator tools; without one, the switch runs.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// ISO 8583 operator tools.
    Iso {
        #[command(subcommand)]
        action: IsoAction,
    },
    /// Prints the embedded default configuration.
    DefaultConfig,
}

#[derive(Subcommand)]
enum IsoAction {
    /// Hex message per line on stdin → JSON per line on stdout.
    Decode {
        /// ascii or ascii-hex.
        #[arg(long, default_value = "ascii")]
        profile: String,
        /// Show card data in clear.
        #[arg(long)]
        unmasked: bool,
    },
    /// JSON per line on stdin → hex message per line on stdout.
    Encode {
        /// ascii or ascii-hex.
        #[arg(long, default_value = "ascii")]
        profile: String,
    },
}

fn profile(name: &str) -> anyhow::Result<&'static codecs::iso8583::Profile> {
    codecs::iso8583::Profile::by_name(name)
        .with_context(|| format!("--profile `{name}`: expected ascii or ascii-hex"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Iso {
            action:
                IsoAction::Decode {
                    profile: p,
                    unmasked,
                },
        }) => {
            return Ok(switch::decode_lines(
                profile(&p)?,
                unmasked,
                stdin().lock(),
                BufWriter::new(stdout().lock()),
            )?);
        }
        Some(Command::Iso {
            action: IsoAction::Encode { profile: p },
        }) => {
            return Ok(switch::encode_lines(
                profile(&p)?,
                stdin().lock(),
                BufWriter::new(stdout().lock()),
            )?);
        }
        Some(Command::DefaultConfig) => {
            print!("{}", switch::EMBEDDED_DEFAULT);
            return Ok(());
        }
        None => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let flags = Overrides {
        iso_addr: cli.iso_addr,
        frame_addr: cli.frame_addr,
        http_addr: cli.http_addr,
        data_dir: cli.data_dir,
        journal_ack: cli.journal_ack,
        repair: cli.repair,
    };
    let overrides = Overrides::from_env()?.then(flags);
    let config = Config::load(cli.config.as_deref(), overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(async move {
        let running = switch::start(config, Clock::System).await?;
        let cancel = running.cancel_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: answering what is in flight");
            cancel.cancel();
        });
        running.wait().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
