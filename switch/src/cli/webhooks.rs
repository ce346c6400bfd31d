//! `switch webhooks`: merchants' endpoints (beside a running switch, which
//! notices a change within a second) and their events' delivery status.

use crate::cli::args::WebhooksAction;
use crate::clock::{Clock, UtcDateTime};
use crate::webhooks::{EndpointAdmin, Queue, Row, LIST_ROWS_MAX};

/// `switch webhooks set|list|remove|resend`. `config`: the switch's
/// configuration file (`--config`), for the merchants it serves.
pub(crate) fn webhooks_command(
    action: WebhooksAction,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let clock = Clock::System;
    match action {
        WebhooksAction::Set {
            data_dir,
            merchant,
            url,
        } => {
            let overrides = crate::Overrides::from_env()?.then(crate::Overrides {
                data_dir: Some(data_dir.clone()),
                ..Default::default()
            });
            let known = crate::directory::merchant_ids(
                &crate::Config::load(config, overrides)?,
                &data_dir,
            )?;
            if !known.contains(&merchant) {
                anyhow::bail!(
                    "--merchant `{merchant}`: not a merchant of this switch (the configuration of --config, or added at runtime)"
                );
            }
            let secret = endpoints(config, &data_dir)?.set(&merchant, &url, clock.now_s())?;
            eprintln!("Webhook endpoint of {merchant} set; its signing secret is shown this once.");
            println!("{secret}");
        }
        WebhooksAction::List {
            data_dir,
            events: false,
            ..
        } => {
            println!("MERCHANT         SECRET       CREATED     URL");
            for e in endpoints(config, &data_dir)?.list()? {
                println!(
                    "{:<16} {:<12} {:<11} {}",
                    e.merchant,
                    e.secret_masked(),
                    e.created_unix_s,
                    e.url
                );
            }
        }
        WebhooksAction::List {
            data_dir,
            events: true,
            merchant,
            payment,
            limit,
        } => {
            let rows = if let Some(url) = cluster_queue(config)? {
                crate::webhooks::cluster_rows(&url, merchant.as_deref(), payment, limit)?
            } else {
                let q = Queue::open(&data_dir)?;
                match payment {
                    Some(id) => q.payment_rows(id, limit)?,
                    None => q.rows(merchant.as_deref(), limit.min(LIST_ROWS_MAX))?,
                }
            };
            println!("EVENT                 TYPE                  MERCHANT         PAYMENT     STATUS     ATTEMPTS  LAST_CODE  LAST_ATTEMPT          NEXT_ATTEMPT          LAST_ERROR");
            for r in rows {
                println!("{}", row_line(&r));
            }
        }
        WebhooksAction::Remove { data_dir, merchant } => {
            endpoints(config, &data_dir)?.remove(&merchant)?;
            println!("removed the webhook endpoint of {merchant}");
        }
        WebhooksAction::Resend { data_dir, event } => {
            let found = match cluster_queue(config)? {
                Some(url) => crate::webhooks::cluster_resend(&url, &event, clock.now_ms())?,
                None => Queue::open(&data_dir)?.resend(&event, clock.now_ms())?,
            };
            if !found {
                anyhow::bail!("--event `{event}`: no such event in the queue");
            }
            println!("queued {event} again");
        }
    }
    Ok(())
}

/// The endpoints: a cluster node's `config`'s (PostgreSQL's row, for
/// every node), else those of `data_dir`.
fn endpoints(
    config: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> anyhow::Result<EndpointAdmin> {
    let Some(path) = config else {
        return Ok(EndpointAdmin::new(data_dir));
    };
    let config = crate::Config::load(Some(path), crate::Overrides::from_env()?)?;
    Ok(match config.cluster {
        Some(_) => EndpointAdmin::cluster(crate::cluster_node::cluster_endpoints(&config)?),
        None => EndpointAdmin::new(data_dir),
    })
}

/// The PostgreSQL URL of the queue when `config` is a cluster node's (its
/// events are in `webhook_events`, `docs/cluster.md`), `None` otherwise.
fn cluster_queue(config: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = config else { return Ok(None) };
    let config = crate::Config::load(Some(path), crate::Overrides::from_env()?)?;
    Ok(config.cluster.is_some().then_some(config.archive.url))
}

/// A time as `2026-11-23T11:49:10Z`.
fn time(ms: u64) -> String {
    let t = UtcDateTime::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

fn row_line(r: &Row) -> String {
    let next = if r.status == "pending" {
        time(r.next_attempt_at_ms)
    } else {
        "-".into()
    };
    format!(
        "{:<21} {:<21} {:<16} {:<11} {:<10} {:<9} {:<10} {:<21} {:<21} {}",
        r.id,
        r.kind,
        r.merchant,
        r.payment_id,
        r.status,
        r.attempts,
        r.last_status_code.map_or("-".into(), |c| c.to_string()),
        r.last_attempt_at_ms.map_or("-".into(), time),
        next,
        r.last_error.as_deref().unwrap_or("-"),
    )
}
