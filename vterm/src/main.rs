//! The `vterm` binary: serves the virtual terminal, hashes a password for
//! its configuration, or changes its operators.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vterm::{Clock, Config, OperatorsCommand};

/// The web virtual terminal for MO/TO payments.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); see docs/virtual-terminal.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A tool instead of the server.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Reads a password from the first line of standard input and prints
    /// its Argon2id hash for `operators.password_hash`.
    HashPassword,
    /// Adds, blocks, unblocks, resets, lists operators or changes their
    /// roles, in the operator store (`operators_file`) of `--config`; a
    /// running terminal sees the change on its next request.
    Operators {
        /// What to do.
        #[command(subcommand)]
        command: OperatorsCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            println!("{}", vterm::hash_password(password)?);
            Ok(())
        }
        Some(Command::Operators { command }) => {
            let path = cli
                .config
                .context("--config FILE is required for operators")?;
            let config = Config::load(&path)?;
            let now_s = Clock::System.now_s();
            let out = vterm::operators(&config, command, &mut std::io::stdin().lock(), now_s)?;
            println!("{out}");
            Ok(())
        }
        None => {
            let path = cli.config.context("--config FILE is required to serve")?;
            let config = Config::load(&path)?;
            serve(config)
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let running = vterm::start(config, Clock::System).await?;
        let cancel = running.cancel_token();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
            cancel.cancel();
        });
        running.wait().await
    })
}
