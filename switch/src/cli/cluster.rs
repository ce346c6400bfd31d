//! `switch cluster status`: what etcd says of a cluster (its nodes, the
//! shards each owns, their epochs) and each node of itself (`GET
//! /cluster`), and with `--pg` PostgreSQL (its role, standbys, the
//! fence's epochs), as text or `--json`. `switch cluster drain
//! NODE`: asks a node to hand every shard over (etcd key
//! `PREFIX/drain/NODE`, read by the node at each poll), `--undo` ends it.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::cli::args::ClusterAction;

/// How long `cluster drain --wait` waits for the node to own nothing.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(60);
/// How often `cluster drain --wait` reads etcd.
const DRAIN_WAIT_POLL: Duration = Duration::from_millis(200);

/// Runs a `cluster` subcommand.
pub(crate) fn cluster_command(action: ClusterAction) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    match action {
        ClusterAction::Status {
            etcd,
            etcd_tls,
            cluster,
            prefix,
            shards,
            pg,
            json,
        } => {
            let prefix = key_prefix(prefix, &cluster)?;
            let client = etcd_client(&etcd, &etcd_tls)?;
            let mut status = runtime
                .block_on(cluster::status::read(&client, &prefix))
                .with_context(|| format!("reading {prefix} from etcd"))?;
            if let Some(url) = pg {
                status.postgres = Some(read_postgres(&url)?);
            }
            if json {
                println!("{}", status.to_json());
                return Ok(());
            }
            print!("{}", status.render());
            if shards {
                print!("{}", status.render_shards());
            }
            Ok(())
        }
        ClusterAction::Drain {
            node,
            etcd,
            etcd_tls,
            cluster,
            prefix,
            wait,
            undo,
        } => {
            cluster::member::check_node_id(&node).map_err(|e| anyhow::anyhow!("NODE: {e}"))?;
            let prefix = key_prefix(prefix, &cluster)?;
            let client = etcd_client(&etcd, &etcd_tls)?;
            runtime.block_on(drain(&client, &prefix, &node, wait, undo))
        }
    }
}

/// Writes (or with `undo` deletes) the drain key of `node`; with `wait`,
/// returns once etcd names it owner of no shard.
async fn drain(
    client: &cluster::etcd::Etcd,
    prefix: &str,
    node: &str,
    wait: bool,
    undo: bool,
) -> anyhow::Result<()> {
    let key = cluster::member::drain_key(prefix, node);
    if undo {
        client
            .delete(&key)
            .await
            .with_context(|| format!("deleting {key}"))?;
        println!("{node}: drain ended; it gets its shards back by hand-over");
        return Ok(());
    }
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let value = format!("{{\"at_ms\":{at_ms}}}");
    client
        .put(&key, value.as_bytes(), None)
        .await
        .with_context(|| format!("writing {key}"))?;
    println!("{node}: asked to drain ({key}); `--undo` ends it");
    if !wait {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let view = cluster::member::read_view(client, prefix, cluster::ownership::SHARD_COUNT_MAX)
            .await
            .with_context(|| format!("reading {prefix} from etcd"))?;
        let owned = view
            .owners
            .values()
            .filter(|o| o.record.node_id == node)
            .count();
        if owned == 0 {
            println!(
                "{node}: owns no shard ({} ms)",
                started.elapsed().as_millis()
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < DRAIN_WAIT_MAX,
            "{node} still owns {owned} shards after {DRAIN_WAIT_MAX:?} (is it running?)"
        );
        tokio::time::sleep(DRAIN_WAIT_POLL).await;
    }
}

/// The key prefix from `--prefix` or `--cluster`.
fn key_prefix(prefix: Option<String>, cluster: &str) -> anyhow::Result<String> {
    match prefix {
        Some(p) if p.starts_with('/') && !p.ends_with('/') => Ok(p),
        Some(p) => anyhow::bail!("--prefix `{p}`: expected /name, no trailing /"),
        None => {
            cluster::member::check_node_id(cluster)
                .map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
            Ok(cluster::member::prefix(cluster))
        }
    }
}

/// What PostgreSQL at `url` says (`--pg`), through a session bounded as
/// the archive's; the error names the URL without its password.
fn read_postgres(url: &str) -> anyhow::Result<cluster::status::Postgres> {
    let location = archive::redact_url(url);
    let mut client = archive::pg_session(url)?
        .connect()
        .with_context(|| format!("connecting to --pg {location}"))?;
    cluster::status::read_postgres(&mut client).with_context(|| format!("reading --pg {location}"))
}

/// An etcd client of `--etcd`, over TLS with `--etcd-ca` (as a node's).
fn etcd_client(
    etcd: &[String],
    tls: &crate::cli::args::EtcdTlsArgs,
) -> anyhow::Result<cluster::etcd::Etcd> {
    let files = crate::config::EtcdFiles {
        ca: tls.ca.as_deref(),
        cert: tls.cert.as_deref(),
        key: tls.key.as_deref(),
        names: ["--etcd-ca", "--etcd-cert", "--etcd-key"],
    };
    let timeout = Duration::from_millis(cluster::etcd::CALL_TIMEOUT_MS_DEFAULT);
    crate::config::etcd_client(etcd, files, timeout).context("--etcd")
}
