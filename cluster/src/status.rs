//! What etcd says of a cluster, for `switch cluster status`: its nodes,
//! the shards each owns and their epochs; what each node says of itself
//! (`GET /cluster` at its `http_addr`): the shards it serves, and its
//! commit queue; and, when asked ([`read_postgres`]), what PostgreSQL
//! says: the server written to, its standbys and their replay lag, and
//! the fence's epochs, compared with etcd's.

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
    /// What the node said of itself; `None` when it did not answer (or
    /// has no HTTP address).
    pub figures: Option<Figures>,
}

/// What a node says of itself, from its `GET /cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figures {
    /// Shards it serves (state `open`).
    pub served: usize,
    /// Shards it owns and is still loading.
    pub loading: usize,
    /// Records appended and not yet committed.
    pub queue: u64,
    /// Its committer lost PostgreSQL and is reconnecting.
    pub reconnecting: bool,
    /// Its committer stopped (a fence or an error): the node is stopping.
    pub failed: bool,
}

impl Figures {
    /// From a node's `GET /cluster` body; `None` when it does not parse.
    pub fn parse(body: &[u8]) -> Option<Figures> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let shards = v.get("shards")?.as_array()?;
        let count = |state: &str| {
            shards
                .iter()
                .filter(|s| s.get("state").and_then(serde_json::Value::as_str) == Some(state))
                .count()
        };
        let commit = v.get("commit")?;
        let flag = |name: &str| commit.get(name).and_then(serde_json::Value::as_bool) == Some(true);
        Some(Figures {
            served: count("open"),
            loading: count("loading"),
            queue: commit.get("queue")?.as_u64()?,
            reconnecting: flag("reconnecting"),
            failed: flag("failed"),
        })
    }
}

/// How long `read` waits for one node's `GET /cluster`.
const FIGURES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest `GET /cluster` body read: about 80 bytes a shard, at most
/// 4,096 shards.
const FIGURES_BYTES_MAX: usize = 1 << 20;

/// A node's figures from `http_addr`; `None` when it does not answer.
async fn figures(http: &reqwest::Client, http_addr: &str) -> Option<Figures> {
    let response = http
        .get(format!("http://{http_addr}/cluster"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > FIGURES_BYTES_MAX {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Figures::parse(&body)
}

/// A cluster as etcd holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The key prefix read.
    pub prefix: String,
    /// Node keys, by id.
    pub nodes: Vec<Node>,
    /// Owner keys, by shard.
    pub owners: BTreeMap<u32, ShardOwner>,
    /// What PostgreSQL says, when it was read.
    pub postgres: Option<Postgres>,
}

/// What the PostgreSQL server the URL reaches says.
#[derive(Debug, Clone, PartialEq)]
pub struct Postgres {
    /// Its address (`host:port`, `local` over a socket).
    pub server: String,
    /// Whether it is a standby (in recovery): nodes cannot write there.
    pub in_recovery: bool,
    /// The standbys streaming from it (`pg_stat_replication`).
    pub standbys: Vec<Standby>,
    /// The fence's epoch of each shard (`shard_owner`).
    pub epochs: BTreeMap<u32, i64>,
}

/// One standby, as its primary sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Standby {
    /// Its `application_name`.
    pub name: String,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `sync`, `async`, `potential`, `quorum`.
    pub sync_state: String,
    /// How far its replay is behind, in ms; `None` when idle (PostgreSQL
    /// clears it once the standby caught up with no new WAL).
    pub replay_lag_ms: Option<f64>,
}

/// Most standbys listed.
const STANDBYS_MAX: i64 = 16;

/// Reads what `client`'s server says of itself, its standbys (the role
/// must be allowed `pg_stat_replication`'s columns, as a superuser or
/// `pg_monitor` is) and the fence's epochs (none before a node installed
/// the fence).
///
/// # Errors
/// PostgreSQL's.
pub fn read_postgres(client: &mut postgres::Client) -> Result<Postgres, postgres::Error> {
    let row = client.query_one(
        "SELECT host(inet_server_addr()), inet_server_port(), pg_is_in_recovery(), \
                to_regclass('shard_owner') IS NOT NULL",
        &[],
    )?;
    let (host, port): (Option<String>, Option<i32>) = (row.get(0), row.get(1));
    let server = match (host, port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        _ => "local".to_owned(),
    };
    let fenced: bool = row.get(3);
    let standbys = client
        .query(
            "SELECT application_name, state, sync_state, \
                    (EXTRACT(EPOCH FROM replay_lag) * 1000)::float8 \
             FROM pg_stat_replication ORDER BY application_name LIMIT $1",
            &[&STANDBYS_MAX],
        )?
        .iter()
        .map(|r| Standby {
            name: r.get::<_, Option<String>>(0).unwrap_or_default(),
            state: r.get::<_, Option<String>>(1).unwrap_or_default(),
            sync_state: r.get::<_, Option<String>>(2).unwrap_or_default(),
            replay_lag_ms: r.get(3),
        })
        .collect();
    let mut epochs = BTreeMap::new();
    if fenced {
        let limit = i64::from(SHARD_COUNT_MAX);
        for r in client.query(
            "SELECT shard, epoch FROM shard_owner ORDER BY shard LIMIT $1",
            &[&limit],
        )? {
            let shard: i32 = r.get(0);
            if let Ok(shard) = u32::try_from(shard) {
                epochs.insert(shard, r.get(1));
            }
        }
    }
    Ok(Postgres {
        server,
        in_recovery: row.get(2),
        standbys,
        epochs,
    })
}

/// Reads the cluster under `prefix`.
///
/// # Errors
/// etcd's; [`EtcdError::TooMany`] past [`NODES_MAX`] nodes.
pub async fn read(etcd: &Etcd, prefix: &str) -> Result<Status, EtcdError> {
    let nodes_prefix = format!("{prefix}/nodes/");
    let http = crate::etcd::http_client(FIGURES_TIMEOUT)?;
    let mut nodes = Vec::new();
    for kv in etcd.get_prefix(&nodes_prefix, NODES_MAX).await? {
        let id = kv
            .key
            .strip_prefix(nodes_prefix.as_bytes())
            .unwrap_or(&kv.key);
        let record: Option<NodeRecord> = serde_json::from_slice(&kv.value).ok();
        let at = record.as_ref().and_then(|r| r.http_addr.clone());
        nodes.push(Node {
            node_id: String::from_utf8_lossy(id).into_owned(),
            record,
            lease: kv.lease,
            lease_left_s: etcd.lease_time_to_live(kv.lease).await?,
            figures: match at {
                Some(at) => figures(&http, &at).await,
                None => None,
            },
        });
    }
    let view = crate::member::read_view(etcd, prefix, SHARD_COUNT_MAX).await?;
    Ok(Status {
        prefix: prefix.to_owned(),
        nodes,
        owners: view.owners,
        postgres: None,
    })
}

impl Status {
    /// The status as text: a line per node (state, lease left, link
    /// address, shards owned, lowest and highest epoch, and as the node
    /// says: shards served, loading, commit queue, `reconnecting` or
    /// `failed`; `?` when it did not answer), then a line per owner that
    /// has no node key, then the owned shards' count.
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
            "  node              state     lease_left  link                   shards  served  loading  queue  epochs"
        );
        for n in &self.nodes {
            let (state, link) = n
                .record
                .as_ref()
                .map_or(("?", "?"), |r| (r.state.as_str(), r.link_addr.as_str()));
            let shards = per_node.remove(n.node_id.as_str()).unwrap_or_default();
            let left = n.lease_left_s.map_or("?".to_owned(), |s| format!("{s}s"));
            let (served, loading, queue, note) = n.figures.map_or(
                (
                    "?".to_owned(),
                    "?".to_owned(),
                    "?".to_owned(),
                    " (no answer to GET /cluster)",
                ),
                |f| {
                    let note = if f.failed {
                        " (committer failed)"
                    } else if f.reconnecting {
                        " (reconnecting to PostgreSQL)"
                    } else {
                        ""
                    };
                    (
                        f.served.to_string(),
                        f.loading.to_string(),
                        f.queue.to_string(),
                        note,
                    )
                },
            );
            let _ = writeln!(
                out,
                "  {:<17} {:<9} {:<11} {:<22} {:>6}  {served:>6}  {loading:>7}  {queue:>5}  {}{note}",
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
                "  {node:<17} {:<9} {:<11} {:<22} {:>6}  {:>6}  {:>7}  {:>5}  {} (no node key)",
                "gone",
                "-",
                "-",
                shards.len(),
                "-",
                "-",
                "-",
                epochs(shards)
            );
        }
        let _ = writeln!(out, "shards owned: {}", self.owners.len());
        if let Some(pg) = &self.postgres {
            self.render_postgres(pg, &mut out);
        }
        out
    }

    /// The PostgreSQL lines: the server and its role, each standby, and
    /// the shards whose epoch there differs from etcd's (a takeover in
    /// progress, or a fault).
    fn render_postgres(&self, pg: &Postgres, out: &mut String) {
        let role = if pg.in_recovery {
            "a standby (in recovery): nodes cannot write here"
        } else {
            "primary"
        };
        let _ = write!(out, "postgres {}: {role}", pg.server);
        if pg.standbys.is_empty() {
            let _ = writeln!(out, ", no standby streaming");
        } else {
            let _ = writeln!(out, ", {} standby(s):", pg.standbys.len());
        }
        for s in &pg.standbys {
            let lag = s
                .replay_lag_ms
                .map_or("none".to_owned(), |ms| format!("{ms:.1}ms"));
            let _ = writeln!(
                out,
                "  standby {} {} ({}), replay lag {lag}",
                s.name, s.state, s.sync_state
            );
        }
        let differ: Vec<String> = self
            .owners
            .iter()
            .filter_map(|(shard, o)| {
                let fenced = pg.epochs.get(shard).copied();
                (fenced != Some(o.epoch)).then(|| {
                    let fenced = fenced.map_or("none".to_owned(), |e| e.to_string());
                    format!("shard {shard} etcd {} postgres {fenced}", o.epoch)
                })
            })
            .collect();
        if differ.is_empty() {
            let _ = writeln!(out, "epochs: every owned shard's as in etcd");
        } else {
            let _ = writeln!(
                out,
                "epochs differ (a takeover in progress, or a fault): {}",
                differ.join("; ")
            );
        }
    }

    /// The status as one JSON object: `prefix`; `nodes`, each with
    /// `node_id`, `state`, `link_addr`, `lease`, `lease_left_s`, its
    /// `shards` (owned, by etcd) and `figures` (`served`, `loading`,
    /// `queue`, `reconnecting`, `failed`; `null` when it did not answer);
    /// `shards`, each with `shard`, `owner`, `epoch` and `owner_known`
    /// (false when the owner has no node key).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                let shards: Vec<u32> = self
                    .owners
                    .iter()
                    .filter(|(_, o)| o.record.node_id == n.node_id)
                    .map(|(&s, _)| s)
                    .collect();
                json!({
                    "node_id": n.node_id,
                    "state": n.record.as_ref().map(|r| r.state.clone()),
                    "link_addr": n.record.as_ref().map(|r| r.link_addr.clone()),
                    "lease": n.lease,
                    "lease_left_s": n.lease_left_s,
                    "shards": shards,
                    "figures": n.figures.map(|f| json!({
                        "served": f.served,
                        "loading": f.loading,
                        "queue": f.queue,
                        "reconnecting": f.reconnecting,
                        "failed": f.failed,
                    })),
                })
            })
            .collect();
        let shards: Vec<serde_json::Value> = self
            .owners
            .iter()
            .map(|(&s, o)| {
                json!({
                    "shard": s,
                    "owner": o.record.node_id,
                    "epoch": o.epoch,
                    "postgres_epoch": self.postgres.as_ref().and_then(|pg| pg.epochs.get(&s)),
                    "owner_known": self.nodes.iter().any(|n| n.node_id == o.record.node_id),
                })
            })
            .collect();
        let postgres = self.postgres.as_ref().map(|pg| {
            json!({
                "server": pg.server,
                "in_recovery": pg.in_recovery,
                "standbys": pg.standbys.iter().map(|s| json!({
                    "name": s.name,
                    "state": s.state,
                    "sync_state": s.sync_state,
                    "replay_lag_ms": s.replay_lag_ms,
                })).collect::<Vec<_>>(),
            })
        });
        json!({ "prefix": self.prefix, "nodes": nodes, "shards": shards, "postgres": postgres })
    }

    /// A line per owned shard: shard, owner, epoch (and the fence's epoch
    /// in PostgreSQL when it was read).
    pub fn render_shards(&self) -> String {
        let Some(pg) = &self.postgres else {
            let mut out = String::from("  shard  owner             epoch\n");
            for (s, o) in &self.owners {
                let _ = writeln!(out, "  {s:>5}  {:<17} {}", o.record.node_id, o.epoch);
            }
            return out;
        };
        let mut out = String::from("  shard  owner             epoch  postgres\n");
        for (s, o) in &self.owners {
            let fenced = pg.epochs.get(s).map_or("-".to_owned(), i64::to_string);
            let _ = writeln!(
                out,
                "  {s:>5}  {:<17} {:<5}  {fenced}",
                o.record.node_id, o.epoch
            );
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
            nodes: vec![
                Node {
                    node_id: "n1".into(),
                    record: None,
                    lease: 1,
                    lease_left_s: Some(2),
                    figures: Figures::parse(
                        br#"{"node_id":"n1","shards":[{"shard":0,"epoch":5,"state":"open","admitted":0},{"shard":1,"epoch":9,"state":"loading","admitted":0}],"commit":{"last_seq":9,"committed_seq":7,"queue":2,"reconnecting":true,"failed":false}}"#,
                    ),
                },
                Node {
                    node_id: "n3".into(),
                    record: None,
                    lease: 3,
                    lease_left_s: None,
                    figures: None,
                },
            ],
            owners: BTreeMap::from([
                (0, owner("n1", 5)),
                (1, owner("n1", 9)),
                (2, owner("n2", 7)),
            ]),
            postgres: None,
        };
        let text = status.render();
        assert!(
            text.contains(
                "n1                ?         2s          ?                           2       1        1      2  5..9 (reconnecting to PostgreSQL)"
            ),
            "{text}"
        );
        assert!(
            text.contains("n3                ?         ?           ?                           0       ?        ?      ?  - (no answer to GET /cluster)"),
            "{text}"
        );
        assert_eq!(Figures::parse(b"{}"), None);
        assert!(
            text.contains("n2") && text.contains("(no node key)"),
            "{text}"
        );
        assert!(text.contains("shards owned: 3"), "{text}");
        assert!(status
            .render_shards()
            .contains("    2  n2                7"));
        let json = status.to_json();
        assert_eq!(json["nodes"][0]["shards"], serde_json::json!([0, 1]));
        assert_eq!(json["nodes"][0]["figures"]["queue"], 2);
        assert_eq!(json["nodes"][0]["figures"]["reconnecting"], true);
        assert_eq!(json["nodes"][1]["figures"], serde_json::Value::Null);
        assert_eq!(
            json["shards"][2],
            serde_json::json!({"shard": 2, "owner": "n2", "epoch": 7, "postgres_epoch": null, "owner_known": false})
        );
        assert!(!text.contains("postgres"), "{text}");

        // With PostgreSQL read: the server, its standby, and the shards
        // whose fence epoch is not etcd's (one behind: a load under way;
        // none: never fenced).
        let mut status = status;
        status.postgres = Some(Postgres {
            server: "10.0.0.5:5432".into(),
            in_recovery: false,
            standbys: vec![Standby {
                name: "pg2".into(),
                state: "streaming".into(),
                sync_state: "sync".into(),
                replay_lag_ms: Some(0.42),
            }],
            epochs: BTreeMap::from([(0, 5), (1, 8)]),
        });
        let text = status.render();
        assert!(
            text.contains("postgres 10.0.0.5:5432: primary, 1 standby(s):\n  standby pg2 streaming (sync), replay lag 0.4ms\n"),
            "{text}"
        );
        assert!(
            text.contains("epochs differ (a takeover in progress, or a fault): shard 1 etcd 9 postgres 8; shard 2 etcd 7 postgres none"),
            "{text}"
        );
        assert!(status
            .render_shards()
            .contains("    1  n1                9      8"));
        if let Some(pg) = status.postgres.as_mut() {
            pg.epochs.extend([(1, 9), (2, 7)]);
        }
        assert!(status
            .render()
            .contains("epochs: every owned shard's as in etcd"));
        assert_eq!(status.to_json()["shards"][1]["postgres_epoch"], 9);
    }
}
