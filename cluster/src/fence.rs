//! The fence in PostgreSQL: a table of shard epochs, and a function every
//! write batch calls inside its transaction (`docs/cluster.md`, One batch,
//! one transaction).
//!
//! `switch_fence(shard, epoch, owner)`:
//! - makes the shard's row if there is none, then locks it (`FOR UPDATE`,
//!   held to the end of the transaction, so batches and takeovers of one
//!   shard are ordered);
//! - **raises** SQLSTATE `SWF01` when the stored epoch is greater than the
//!   writer's: a later owner took the shard over, and the whole
//!   transaction fails, whatever the writer's clock or lease say;
//! - otherwise writes the writer's epoch and owner (raising the stored
//!   epoch when the writer's is greater: a takeover is the new owner's
//!   first fenced write). It writes even when nothing changes, so that
//!   every batch's `COMMIT` waits for a synchronous standby's flush.
//!
//! Epochs are etcd create revisions: they only grow, so a stale owner's
//! epoch is always the smaller one.

use postgres::error::SqlState;
use postgres::GenericClient;

use crate::error::FenceError;
use crate::ownership::SHARD_COUNT_MAX;

/// The SQLSTATE `switch_fence` raises for a fenced writer.
pub const SQLSTATE_FENCED: &str = "SWF01";
/// The advisory lock key installing the schema takes, so two nodes
/// starting at once do not race on `CREATE`.
const INSTALL_LOCK: i64 = 0x5357_4652; // "SWFR"

/// The table and the function, idempotent.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS shard_owner (
    shard    INT4 PRIMARY KEY CHECK (shard >= 0),
    epoch    INT8 NOT NULL CHECK (epoch > 0),
    owner    TEXT NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION switch_fence(p_shard INT4, p_epoch INT8, p_owner TEXT)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stored INT8;
BEGIN
    INSERT INTO shard_owner (shard, epoch, owner) VALUES (p_shard, p_epoch, p_owner)
        ON CONFLICT (shard) DO NOTHING;
    SELECT epoch INTO stored FROM shard_owner WHERE shard = p_shard FOR UPDATE;
    IF stored > p_epoch THEN
        RAISE EXCEPTION 'shard % fenced: epoch % is stored, the writer has %', p_shard, stored, p_epoch
            USING ERRCODE = 'SWF01', DETAIL = stored::text;
    END IF;
    IF stored < p_epoch THEN
        UPDATE shard_owner SET epoch = p_epoch, owner = p_owner, taken_at = now() WHERE shard = p_shard;
    ELSE
        UPDATE shard_owner SET owner = p_owner WHERE shard = p_shard;
    END IF;
END
$$;
"#;

/// Creates `shard_owner` and `switch_fence` if they are not there.
///
/// # Errors
/// PostgreSQL's.
pub fn install(client: &mut postgres::Client) -> Result<(), FenceError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INSTALL_LOCK])?;
    tx.batch_execute(SCHEMA)?;
    tx.commit()?;
    Ok(())
}

/// Checks and moves the fence of `shard` for a writer at `epoch` inside
/// the caller's transaction `tx` (call it first in every write batch, once
/// per shard the batch writes, in shard order so two batches never wait
/// on each other's locks). The transaction must be READ COMMITTED (the
/// default): then the row lock reads the latest epoch after a wait, where
/// REPEATABLE READ would fail with a serialization error instead.
///
/// # Errors
/// [`FenceError::Fenced`] when a later epoch is stored: the transaction is
/// aborted and must be rolled back; [`FenceError::Argument`] for a shard
/// past [`SHARD_COUNT_MAX`] or an epoch below 1; PostgreSQL's otherwise.
pub fn check(
    tx: &mut impl GenericClient,
    shard: u32,
    epoch: i64,
    owner: &str,
) -> Result<(), FenceError> {
    if shard >= SHARD_COUNT_MAX || epoch < 1 {
        return Err(FenceError::Argument(format!(
            "shard {shard} (expected < {SHARD_COUNT_MAX}), epoch {epoch} (expected >= 1)"
        )));
    }
    let shard_sql = i32::try_from(shard).map_err(|e| FenceError::Argument(e.to_string()))?;
    match tx.execute(
        "SELECT switch_fence($1, $2, $3)",
        &[&shard_sql, &epoch, &owner],
    ) {
        Ok(_) => Ok(()),
        Err(e) => match e.as_db_error() {
            Some(db) if *db.code() == SqlState::from_code(SQLSTATE_FENCED) => {
                Err(FenceError::Fenced {
                    shard,
                    stored: db.detail().and_then(|d| d.parse().ok()).unwrap_or(i64::MAX),
                    writer: epoch,
                })
            }
            _ => Err(e.into()),
        },
    }
}

/// The stored epoch of `shard`, if it has a row.
///
/// # Errors
/// PostgreSQL's.
pub fn stored(client: &mut impl GenericClient, shard: u32) -> Result<Option<i64>, FenceError> {
    let shard_sql = i32::try_from(shard).map_err(|e| FenceError::Argument(e.to_string()))?;
    let row = client.query_opt(
        "SELECT epoch FROM shard_owner WHERE shard = $1",
        &[&shard_sql],
    )?;
    Ok(row.map(|r| r.get(0)))
}
