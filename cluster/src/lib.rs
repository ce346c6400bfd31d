//! Cluster mode's coordination (issue 22, `docs/cluster.md`). Nothing here
//! is on the request path yet; this crate is the first slice, testable
//! alone against a real etcd.
//!
//! Layout:
//! - [`etcd`]: a small etcd v3 client over etcd's JSON gateway (leases,
//!   put, get, delete, create-if-absent), several endpoints tried in turn,
//!   a timeout on every call.
//! - `testing` (feature `testing`): a throwaway etcd server for tests.
//! - `error`: [`EtcdError`].

mod error;
pub mod etcd;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::EtcdError;
