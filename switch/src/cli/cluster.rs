//! `switch cluster status`: what etcd says of a cluster (its nodes, the
//! shards each owns, their epochs). Reads etcd only.

use std::time::Duration;

use anyhow::Context as _;

use crate::cli::args::ClusterAction;

/// Runs a `cluster` subcommand.
pub(crate) fn cluster_command(action: ClusterAction) -> anyhow::Result<()> {
    match action {
        ClusterAction::Status {
            etcd,
            cluster,
            prefix,
            shards,
        } => {
            let prefix = match prefix {
                Some(p) if p.starts_with('/') && !p.ends_with('/') => p,
                Some(p) => anyhow::bail!("--prefix `{p}`: expected /name, no trailing /"),
                None => {
                    cluster::member::check_node_id(&cluster)
                        .map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
                    cluster::member::prefix(&cluster)
                }
            };
            let timeout = Duration::from_millis(cluster::etcd::CALL_TIMEOUT_MS_DEFAULT);
            let client = cluster::etcd::Etcd::new(&etcd, timeout).context("--etcd")?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting tokio")?;
            let status = runtime
                .block_on(cluster::status::read(&client, &prefix))
                .with_context(|| format!("reading {prefix} from etcd"))?;
            print!("{}", status.render());
            if shards {
                print!("{}", status.render_shards());
            }
            Ok(())
        }
    }
}
