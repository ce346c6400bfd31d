//! The `switch` command line in one place: the switch itself (`serve`) and
//! its operator tools (`iso`, `journal` with `export`, `keys`,
//! `terminals` and `merchants`, `webhooks`, `cluster`).

mod args;
mod cluster;
mod directory;
mod iso;
mod journal;
mod keys;
mod saf;
mod serve;
mod webhooks;

use std::io::{stdin, stdout, BufWriter};

use anyhow::Context as _;
use clap::Parser;

use crate::{Config, Overrides};
use args::{ArchiveAction, Cli, Command, IsoAction, JournalAction, SafAction};

fn profile(name: &str) -> anyhow::Result<&'static codecs::iso8583::Profile> {
    codecs::iso8583::Profile::by_name(name)
        .with_context(|| format!("--profile `{name}`: expected ascii or ascii-hex"))
}

/// Parses the command line and runs the switch or the tool it names.
///
/// # Errors
/// What the switch or the tool failed with, with its context.
pub fn run() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    let Some(command) = cli.command.take() else {
        return serve::serve(cli);
    };
    match command {
        Command::Iso { action } => iso_tool(action),
        Command::DefaultConfig => {
            print!("{}", crate::EMBEDDED_DEFAULT);
            Ok(())
        }
        Command::Keys { action } => keys::keys_command(action),
        Command::Terminals { action } => directory::terminals(&cli, action),
        Command::Merchants { action } => directory::merchants(&cli, action),
        Command::Webhooks { action } => webhooks::webhooks_command(action, cli.config.as_deref()),
        Command::Mandates { action } => keys::mandates_command(action, cli.config.as_deref()),
        Command::Journal { action } => journal_tool(action),
        Command::Cluster { action } => cluster::cluster_command(action),
        Command::Saf { action } => {
            let overrides = Overrides::from_env()?.then(Overrides {
                data_dir: cli.data_dir.clone(),
                http_addr: cli.http_addr,
                ..Default::default()
            });
            let config = Config::load(cli.config.as_deref(), overrides)?;
            let out = BufWriter::new(stdout().lock());
            match action {
                SafAction::List => saf::list(&config, out),
                SafAction::Retry => saf::retry(&config),
            }
        }
        Command::Archive {
            action: ArchiveAction::Rebuild,
        } => {
            let overrides = Overrides::from_env()?.then(Overrides {
                data_dir: cli.data_dir.clone(),
                ..Default::default()
            });
            let config = Config::load(cli.config.as_deref(), overrides)?;
            let n = journal::archive_rebuild(&config)?;
            eprintln!("archive rebuilt: {n} records applied");
            Ok(())
        }
        Command::Export {
            from,
            to,
            format,
            merchant,
            export_data_dir,
            export_config,
            filters,
        } => {
            let format = match format.as_str() {
                "csv" => journal::ExportFormat::Csv,
                "xml" => journal::ExportFormat::Xml,
                other => anyhow::bail!("--format `{other}`: expected csv or xml"),
            };
            let filter = journal::ExportFilter::parse(&filters)?;
            // `--data-dir` and `--config` are taken before or after `export`.
            let overrides = Overrides::from_env()?.then(Overrides {
                data_dir: once("--data-dir", cli.data_dir.clone(), export_data_dir)?,
                ..Default::default()
            });
            let config_path = once("--config", cli.config.clone(), export_config)?;
            let config = Config::load(config_path.as_deref(), overrides)?;
            let out = BufWriter::new(stdout().lock());
            let (dir, range) = (&config.listeners.data_dir, (from.as_str(), to.as_str()));
            let only = journal::Only {
                merchant: merchant.as_deref(),
                filter: &filter,
            };
            let n = journal::export(dir, &config, range, only, format, out)?;
            eprintln!("exported {n} payments");
            Ok(())
        }
    }
}

/// A flag given before or after the subcommand: either, or both alike.
fn once<T: PartialEq>(
    flag: &str,
    before: Option<T>,
    after: Option<T>,
) -> anyhow::Result<Option<T>> {
    match (before, after) {
        (Some(b), Some(a)) if b != a => {
            anyhow::bail!("{flag} given twice, with different values")
        }
        (b, a) => Ok(a.or(b)),
    }
}

fn iso_tool(action: IsoAction) -> anyhow::Result<()> {
    let out = BufWriter::new(stdout().lock());
    match action {
        IsoAction::Decode {
            profile: p,
            unmasked,
        } => Ok(iso::decode_lines(
            profile(&p)?,
            unmasked,
            stdin().lock(),
            out,
        )?),
        IsoAction::Encode { profile: p } => {
            Ok(iso::encode_lines(profile(&p)?, stdin().lock(), out)?)
        }
    }
}

fn journal_tool(action: JournalAction) -> anyhow::Result<()> {
    match action {
        JournalAction::Verify { dir } => {
            let clean = journal::journal_verify(&dir, stdout().lock())?;
            std::process::exit(if clean { 0 } else { 1 });
        }
        JournalAction::Dump { dir } => {
            journal::journal_dump(&dir, BufWriter::new(stdout().lock()))?;
            Ok(())
        }
    }
}
