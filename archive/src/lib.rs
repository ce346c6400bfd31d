//! The archive store: where every payment lives after it leaves memory,
//! for `[archive] retention_days`, fed from the journal (write-behind,
//! batched) and looked up when memory has no answer (issue 18).
//!
//! One trait, [`Archive`], with idempotent upserts keyed by payment id and
//! versioned by journal seq, so the archive can be rebuilt from the
//! journal and a batch applied twice changes nothing. Implementations:
//! [`SqliteArchive`] (embedded, bundled SQLite) and [`PgArchive`] (a
//! PostgreSQL server); both pass the same [`contract`] suite.
//!
//! Layout (one module per concept):
//! - `store`: the trait, its page type and the callers' limits.
//! - `error`: [`ArchiveError`].
//! - `records`: journal records decoded and checked before a write, stored
//!   images checked when read back; the same for every store.
//! - `fetch`: the engine's lookups answered from a store.
//! - `batches`: records applied a full batch at a time, for one-off writers.
//! - `sqlite`: the SQLite file (`schema`: tables, indexes, durability;
//!   `list`: list pages).
//! - `pg`: the PostgreSQL server (`schema`, `list` likewise; `batch`: a
//!   batch as column arrays; `redact`: the URL without its password).
//! - `contract` (feature `contract`): the suite every implementation runs;
//!   `testing` (same feature): a throwaway PostgreSQL server for tests.

mod batches;
#[cfg(feature = "contract")]
#[doc(hidden)]
pub mod contract;
mod error;
mod fetch;
mod pg;
mod records;
mod sqlite;
mod store;
#[cfg(feature = "contract")]
#[doc(hidden)]
pub mod testing;

pub use batches::Batches;
pub use error::ArchiveError;
pub use fetch::fetch;
pub use pg::redact::redact as redact_url;
pub use pg::schema::IDLE_IN_TRANSACTION_MS as PG_IDLE_IN_TRANSACTION_MS;
pub use pg::{session as pg_session, PgArchive, PgSession};
pub use sqlite::{SqliteArchive, FILE_NAME};
pub use store::{
    Archive, Page, BATCH_RECORDS_MAX, DELETE_PAYMENTS_MAX, LIST_SCAN_PAYMENTS_MAX, OPEN_HOLDS_MAX,
    PAGE_PAYMENTS_MAX, SCOPE_MERCHANTS_MAX,
};
