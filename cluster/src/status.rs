//! What etcd says of a cluster, for `switch cluster status`: its nodes,
//! the shards each owns and their epochs. It reads etcd only (the epochs
//! in PostgreSQL, each node's figures and the lag are not built).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::EtcdError;
use crate::etcd::{Etcd, LeaseId};
use crate::member::NodeRecord;
use crate::ownership::{ShardOwner, NODES_MAX, SHARD_COUNT_MAX};

/// One node key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its id (the key's last part).
    pub node_id: String,
    /// Its record, or `None` when the value does not parse.
    pub record: Option<NodeRecord>,
    /// The lease the key is attached to.
    pub lease: LeaseId,
    /// The seconds etcd gives that lease still (whole seconds, as etcd
    /// counts them); `None` when it could not say.
    pub lease_left_s: Option<i64>,
}

/// A cluster as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The key prefix read.
    pub prefix: String,
    /// Node keys, by id.
    pub nodes: Vec<Node>,
    /// Owner keys, by shard.
    pub owners: BTreeMap<u32, ShardOwner>,
}

/// Reads the cluster under `prefix`.
///
/// # Errors
/// etcd's; [`EtcdError::TooMany`] past [`NODES_MAX`] nodes.
pub async fn read(etcd: &Etcd, prefix: &str) -> Result<Status, EtcdError> {
    let nodes_prefix = format!("{prefix}/nodes/");
    let mut nodes = Vec::new();
    for kv in etcd.get_prefix(&nodes_prefix, NODES_MAX).await? {
        let id = kv
            .key
            .strip_prefix(nodes_prefix.as_bytes())
            .unwrap_or(&kv.key);
        nodes.push(Node {
            node_id: String::from_utf8_lossy(id).into_owned(),
            record: serde_json::from_slice(&kv.value).ok(),
            lease: kv.lease,
            lease_left_s: etcd.lease_time_to_live(kv.lease).await?,
        });
    }
    let view = crate::member::read_view(etcd, prefix, SHARD_COUNT_MAX).await?;
    Ok(Status {
        prefix: prefix.to_owned(),
        nodes,
        owners: view.owners,
    })
}

impl Status {
    /// The status as text: a line per node (state, lease left, link
    /// address, shards owned, lowest and highest epoch), then a line per owner that has no
    /// node key, then the owned shards' count.
    pub fn render(&self) -> String {
        let mut per_node: BTreeMap<&str, Vec<(u32, i64)>> = BTreeMap::new();
        for (&s, o) in &self.owners {
            per_node
                .entry(o.record.node_id.as_str())
                .or_default()
                .push((s, o.epoch));
        }
        let mut out = String::new();
        let _ = writeln!(out, "cluster {} ({} nodes)", self.prefix, self.nodes.len());
        let _ = writeln!(
            out,
            "  node              state     lease_left  link                   shards  epochs"
        );
        for n in &self.nodes {
            let (state, link) = n
                .record
                .as_ref()
                .map_or(("?", "?"), |r| (r.state.as_str(), r.link_addr.as_str()));
            let shards = per_node.remove(n.node_id.as_str()).unwrap_or_default();
            let left = n.lease_left_s.map_or("?".to_owned(), |s| format!("{s}s"));
            let _ = writeln!(
                out,
                "  {:<17} {:<9} {:<11} {:<22} {:>6}  {}",
                n.node_id,
                state,
                left,
                link,
                shards.len(),
                epochs(&shards)
            );
        }
        for (node, shards) in &per_node {
            let _ = writeln!(
                out,
                "  {node:<17} {:<9} {:<11} {:<22} {:>6}  {} (no node key)",
                "gone",
                "-",
                "-",
                shards.len(),
                epochs(shards)
            );
        }
        let _ = writeln!(out, "shards owned: {}", self.owners.len());
        out
    }

    /// A line per owned shard: shard, owner, epoch.
    pub fn render_shards(&self) -> String {
        let mut out = String::from("  shard  owner             epoch\n");
        for (s, o) in &self.owners {
            let _ = writeln!(out, "  {s:>5}  {:<17} {}", o.record.node_id, o.epoch);
        }
        out
    }
}

/// "lowest..highest" of some epochs, "-" for none.
fn epochs(shards: &[(u32, i64)]) -> String {
    let lo = shards.iter().map(|s| s.1).min();
    let hi = shards.iter().map(|s| s.1).max();
    match (lo, hi) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}..{hi}"),
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::OwnerRecord;

    #[test]
    fn render_groups_shards_by_owner() {
        let owner = |n: &str, epoch| ShardOwner {
            record: OwnerRecord {
                node_id: n.to_owned(),
                lease: 1,
            },
            epoch,
        };
        let status = Status {
            prefix: "/switch/default".into(),
            nodes: vec![Node {
                node_id: "n1".into(),
                record: None,
                lease: 1,
                lease_left_s: Some(2),
            }],
            owners: BTreeMap::from([
                (0, owner("n1", 5)),
                (1, owner("n1", 9)),
                (2, owner("n2", 7)),
            ]),
        };
        let text = status.render();
        assert!(
            text.contains(
                "n1                ?         2s          ?                           2  5..9"
            ),
            "{text}"
        );
        assert!(
            text.contains("n2") && text.contains("(no node key)"),
            "{text}"
        );
        assert!(text.contains("shards owned: 3"), "{text}");
        assert!(status
            .render_shards()
            .contains("    2  n2                7"));
    }
}
