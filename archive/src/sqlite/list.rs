//! List pages: one indexed walk per merchant of the scope, newest first,
//! merged. The query holds only the filters in use, so SQLite can pick the
//! merchant-reference index when one is given.

use engine::lifecycle::status_record_code;
use engine::ListFilter;
use rusqlite::types::Value;

use super::SqliteArchive;
use crate::records::clamped;
use crate::store::{Page, PAGE_PAYMENTS_MAX, SCOPE_MERCHANTS_MAX};
use crate::ArchiveError;

/// One page of `scope`'s payments matching `filter`, as
/// [`crate::Archive::list`] describes.
pub(super) fn page(
    archive: &SqliteArchive,
    scope: &[u32],
    filter: &ListFilter<'_>,
    before_id: Option<u64>,
    limit: usize,
) -> Result<Page, ArchiveError> {
    for (what, got, max) in [
        ("list page size", limit, PAGE_PAYMENTS_MAX),
        ("list scope merchants", scope.len(), SCOPE_MERCHANTS_MAX),
    ] {
        if got > max {
            return Err(ArchiveError::Limit {
                location: archive.location(),
                what,
                got: got as u64,
                max: max as u64,
            });
        }
    }
    let (sql, mut values) = query(filter, before_id, limit);
    let mut found: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut merchants = scope.to_vec();
    merchants.sort_unstable();
    merchants.dedup();
    for merchant in merchants {
        values[0] = Value::Integer(i64::from(merchant));
        let mut s = archive
            .conn
            .prepare_cached(&sql)
            .map_err(|e| archive.fail(e))?;
        let rows = s
            .query_map(rusqlite::params_from_iter(values.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| archive.fail(e))?;
        for row in rows {
            found.push(row.map_err(|e| archive.fail(e))?);
        }
    }
    found.sort_unstable_by_key(|row| std::cmp::Reverse(row.0));
    let more = found.len() > limit;
    let payments = found
        .iter()
        .take(limit)
        .map(|(id, bytes)| archive.image(*id as u64, bytes))
        .collect::<Result<_, _>>()?;
    Ok(Page { payments, more })
}

/// The query for one merchant (its value, first, is set per merchant) and
/// its values: `limit + 1` rows, so the page knows whether more follow.
fn query(filter: &ListFilter<'_>, before_id: Option<u64>, limit: usize) -> (String, Vec<Value>) {
    let mut sql = String::from("SELECT id, record FROM payments WHERE merchant = ?");
    let mut values = vec![Value::Integer(0)];
    let mut and = |clause: &str, v: Value| {
        sql.push_str(" AND ");
        sql.push_str(clause);
        values.push(v);
    };
    // Stored ids fit in i64: a cursor above that excludes nothing.
    if let Some(before) = before_id.and_then(|b| i64::try_from(b).ok()) {
        and("id < ?", Value::Integer(before));
    }
    if let Some(s) = filter.status {
        and(
            "status = ?",
            Value::Integer(i64::from(status_record_code(s))),
        );
    }
    if let Some(t) = filter.from_ms {
        and("created_ms >= ?", Value::Integer(clamped(t)));
    }
    if let Some(t) = filter.to_ms {
        and("created_ms < ?", Value::Integer(clamped(t)));
    }
    if let Some(a) = filter.amount_min_minor {
        and("amount_minor >= ?", Value::Integer(clamped(a)));
    }
    if let Some(a) = filter.amount_max_minor {
        and("amount_minor <= ?", Value::Integer(clamped(a)));
    }
    if let Some(r) = filter.merchant_reference {
        and("merchant_reference = ?", Value::Text(r.to_owned()));
    }
    if let Some(t) = filter.terminal {
        and("terminal = ?", Value::Blob(t.to_vec()));
    }
    if let Some(r) = filter.rrn {
        and("rrn = ?", Value::Blob(r.to_vec()));
    }
    if let Some(a) = filter.auth_code {
        and("auth_code = ?", Value::Blob(a.to_vec()));
    }
    if !filter.statuses.is_empty() {
        // Status codes are 0..8: written in the text, no value to bind.
        let codes: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| status_record_code(*s).to_string())
            .collect();
        sql.push_str(&format!(" AND status IN ({})", codes.join(",")));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    values.push(Value::Integer(limit as i64 + 1));
    (sql, values)
}
