//! Running the switch: logging, configuration, the runtime, and a stop on
//! SIGTERM or Ctrl-C.

use anyhow::Context;

use crate::cli::args::Cli;
use crate::{Clock, Config, Overrides};

/// Runs the switch until SIGTERM or Ctrl-C; an error when it could not
/// start, or stopped with the journal not closed cleanly.
pub(crate) fn serve(cli: Cli) -> anyhow::Result<()> {
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
        let running = crate::start(config, Clock::System).await?;
        let cancel = running.cancel_token();
        tokio::select! {
            () = wait_for_signal() => {
                // Cluster mode: shards handed over first, while serving.
                running.drain().await;
                tracing::info!("shutting down: answering what is in flight");
                cancel.cancel();
            }
            () = cancel.cancelled() => {}
        }
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
