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
    /// API keys of the internal-frame listener.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Service-provider mandates: which merchants a provider's keys act for.
    Mandates {
        #[command(subcommand)]
        action: MandatesAction,
    },
    /// Journal operator tools (read-only; safe beside a running switch).
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// Payments of a period with masked cards, for reconciliation.
    Export {
        /// First day, YYYY-MM-DD (UTC), inclusive.
        #[arg(long)]
        from: String,
        /// Last day, YYYY-MM-DD (UTC), inclusive.
        #[arg(long)]
        to: String,
        /// csv or xml.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Only this merchant (MID).
        #[arg(long)]
        merchant: Option<String>,
    },
}

#[derive(Subcommand)]
enum JournalAction {
    /// Checks every segment and snapshot; exits 1 when damaged.
    Verify {
        /// Data directory (or its journal directory).
        dir: PathBuf,
    },
    /// Every record as a JSON line, card data masked.
    Dump {
        /// Data directory (or its journal directory).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Creates a key; prints its client id and secret (shown this once).
    Create {
        /// Data directory of the switch (as the server's `--data-dir`).
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The merchant's MID (15 characters); or `--provider`.
        #[arg(
            long,
            required_unless_present = "provider",
            conflicts_with = "provider"
        )]
        merchant: Option<String>,
        /// A service provider's id (`XX-0000-0000`).
        #[arg(long)]
        provider: Option<String>,
        /// Who or what uses the key.
        #[arg(long)]
        name: String,
    },
    /// Lists keys, secrets masked.
    List {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Revokes a key at once and for good.
    Revoke {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The key's client id.
        id: String,
    },
}

#[derive(Subcommand)]
enum MandatesAction {
    /// Grants a provider a mandate for a merchant.
    Grant {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The merchant's MID.
        #[arg(long)]
        merchant: String,
        /// The provider id.
        #[arg(long)]
        provider: String,
    },
    /// Revokes a mandate; the provider's next request is refused.
    Revoke {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The merchant's MID.
        #[arg(long)]
        merchant: String,
        /// The provider id.
        #[arg(long)]
        provider: String,
    },
    /// Lists mandates, revoked ones included.
    List {
        /// Data directory of the switch.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
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
        Some(Command::Keys { action }) => return keys_command(action),
        Some(Command::Mandates { action }) => return mandates_command(action),
        Some(Command::Journal {
            action: JournalAction::Verify { dir },
        }) => {
            let clean = switch::journal_verify(&dir, stdout().lock())?;
            std::process::exit(if clean { 0 } else { 1 });
        }
        Some(Command::Journal {
            action: JournalAction::Dump { dir },
        }) => {
            switch::journal_dump(&dir, BufWriter::new(stdout().lock()))?;
            return Ok(());
        }
        Some(Command::Export {
            from,
            to,
            format,
            merchant,
        }) => {
            let format = match format.as_str() {
                "csv" => switch::ExportFormat::Csv,
                "xml" => switch::ExportFormat::Xml,
                other => anyhow::bail!("--format `{other}`: expected csv or xml"),
            };
            let overrides = Overrides::from_env()?.then(Overrides {
                data_dir: cli.data_dir.clone(),
                ..Default::default()
            });
            let config = Config::load(cli.config.as_deref(), overrides)?;
            let n = switch::export(
                &config.listeners.data_dir,
                &config,
                &from,
                &to,
                merchant.as_deref(),
                format,
                BufWriter::new(stdout().lock()),
            )?;
            eprintln!("exported {n} payments");
            return Ok(());
        }
        None => {}
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
        // A journal that could not be flushed and closed is a failed stop:
        // the exit status says so (non-zero), not only the log.
        if let Err(e) = running.wait().await {
            tracing::error!(
                error = format!("{e:#}"),
                "stopped with the journal not closed cleanly"
            );
            return Err(e);
        }
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

fn keys_command(action: KeysAction) -> anyhow::Result<()> {
    match action {
        KeysAction::Create {
            data_dir,
            merchant,
            provider,
            name,
        } => {
            let owner = match (merchant, provider) {
                (Some(mid), _) => switch::Owner::Merchant(mid),
                (None, Some(pid)) => switch::Owner::Provider(pid),
                (None, None) => anyhow::bail!("--merchant or --provider is required"),
            };
            let key = switch::KeyAdmin::new(&data_dir).create_key(owner, &name)?;
            println!("client_id: {}", key.client_id);
            println!("secret:    {}", key.secret);
            eprintln!("The secret is shown this once; only its hash is stored.");
        }
        KeysAction::List { data_dir } => {
            println!("CLIENT_ID     OWNER                     SECRET   CREATED     STATUS   NAME");
            for k in switch::KeyAdmin::new(&data_dir).keys()? {
                let owner = match &k.owner {
                    switch::Owner::Merchant(mid) => format!("merchant {mid}"),
                    switch::Owner::Provider(pid) => format!("provider {pid}"),
                };
                let status = if k.revoked_unix_s.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<13} {owner:<25} {:<8} {:<11} {status:<8} {}",
                    k.client_id, k.secret_hint, k.created_unix_s, k.name
                );
            }
        }
        KeysAction::Revoke { data_dir, id } => {
            switch::KeyAdmin::new(&data_dir).revoke_key(&id)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

fn mandates_command(action: MandatesAction) -> anyhow::Result<()> {
    match action {
        MandatesAction::Grant {
            data_dir,
            merchant,
            provider,
        } => {
            switch::KeyAdmin::new(&data_dir).grant_mandate(&merchant, &provider)?;
            println!("granted {provider} a mandate for {merchant}");
        }
        MandatesAction::Revoke {
            data_dir,
            merchant,
            provider,
        } => {
            switch::KeyAdmin::new(&data_dir).revoke_mandate(&merchant, &provider)?;
            println!("revoked the mandate of {merchant} to {provider}");
        }
        MandatesAction::List { data_dir } => {
            println!("MERCHANT         PROVIDER      GRANTED     STATUS");
            for m in switch::KeyAdmin::new(&data_dir).mandates()? {
                let status = if m.revoked_unix_s.is_some() {
                    "revoked"
                } else {
                    "in force"
                };
                println!(
                    "{:<16} {:<13} {:<11} {status}",
                    m.merchant, m.provider, m.granted_unix_s
                );
            }
        }
    }
    Ok(())
}
