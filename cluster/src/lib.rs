//! Cluster mode's coordination (issue 22, `docs/cluster.md`): who owns
//! which shard, and the fence that makes a stale owner's writes fail.
//! Nothing here is on the request path yet; this crate is the first slice,
//! testable alone against a real etcd and PostgreSQL.
//!
//! Layout:
//! - [`etcd`]: a small etcd v3 client over etcd's JSON gateway (leases,
//!   put, get, delete, create-if-absent), several endpoints tried in turn,
//!   a timeout on every call.
//! - [`assign`]: the shard a node should own, by rendezvous hashing over
//!   the live nodes. Pure.
//! - [`ownership`]: the decision of each poll (acquire, adopt, release,
//!   lost) from what etcd holds. Pure: no I/O, no clock.
//! - [`member`]: a node in etcd: its lease and keep-alives, its node key,
//!   the poll that applies [`ownership`]'s plans, and the local lease
//!   deadline past which it owns nothing.
//! - [`fence`]: the PostgreSQL table of shard epochs and the function every
//!   write batch calls in its transaction.
//! - [`status`]: what etcd says of a cluster, for `switch cluster status`.
//! - `testing` (feature `testing`): a throwaway etcd server for tests.
//! - `error`: [`EtcdError`], [`FenceError`], [`MemberError`].

pub mod assign;
mod error;
pub mod etcd;
pub mod fence;
pub mod member;
pub mod ownership;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{EtcdError, FenceError, MemberError};
