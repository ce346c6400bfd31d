//! List pages: one indexed walk per merchant of the scope, newest first,
//! merged, as in the SQLite file. The query holds only the filters in
//! use, so the planner can pick the merchant-reference index when one is
//! given; each variant is prepared once per connection.

use engine::lifecycle::status_record_code;
use engine::ListFilter;
use postgres::types::ToSql;

use super::PgArchive;
use crate::records::clamped;
use crate::store::{Page, PAGE_PAYMENTS_MAX, SCOPE_MERCHANTS_MAX};
use crate::ArchiveError;

/// List statements kept per connection: one per combination of filters
/// in use (eight optional clauses, so at most 256 exist; a handful are
/// used). Past this the cache starts again, which costs one prepare each.
pub(super) const STATEMENTS_CACHED_MAX: usize = 64;

/// A value of a list query.
type Value = Box<dyn ToSql + Sync>;

/// One page of `scope`'s payments matching `filter`, as
/// [`crate::Archive::list`] describes.
pub(super) fn page(
    archive: &PgArchive,
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
                location: archive.location.clone(),
                what,
                got: got as u64,
                max: max as u64,
            });
        }
    }
    let (sql, mut values) = query(filter, before_id, limit);
    let mut merchants = scope.to_vec();
    merchants.sort_unstable();
    merchants.dedup();
    let mut found: Vec<(i64, Vec<u8>)> = Vec::new();
    for merchant in merchants {
        values[0] = Box::new(i64::from(merchant));
        let rows = archive.with_session(|s| {
            if !s.lists.contains_key(&sql) {
                if s.lists.len() >= STATEMENTS_CACHED_MAX {
                    s.lists.clear();
                }
                let statement = s.client.prepare(&sql)?;
                s.lists.insert(sql.clone(), statement);
            }
            let Some(statement) = s.lists.get(&sql) else {
                // Inserted just above.
                return Ok(Vec::new());
            };
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
            let rows = s.client.query(statement, &params)?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<(i64, Vec<u8>)>, postgres::Error>>()
        })?;
        found.extend(rows);
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
    let mut sql = String::from("SELECT id, record FROM payments WHERE merchant = $1::int8");
    let mut values: Vec<Value> = vec![Box::new(0i64)];
    let mut and = |clause: &str, cast: &str, v: Value| {
        values.push(v);
        sql.push_str(&format!(" AND {clause} ${}::{cast}", values.len()));
    };
    // Stored ids fit in i64: a cursor above that excludes nothing.
    if let Some(before) = before_id.and_then(|b| i64::try_from(b).ok()) {
        and("id <", "int8", Box::new(before));
    }
    if let Some(s) = filter.status {
        and(
            "status =",
            "int2",
            Box::new(i16::from(status_record_code(s))),
        );
    }
    if let Some(t) = filter.from_ms {
        and("created_ms >=", "int8", Box::new(clamped(t)));
    }
    if let Some(t) = filter.to_ms {
        and("created_ms <", "int8", Box::new(clamped(t)));
    }
    if let Some(a) = filter.amount_min_minor {
        and("amount_minor >=", "int8", Box::new(clamped(a)));
    }
    if let Some(a) = filter.amount_max_minor {
        and("amount_minor <=", "int8", Box::new(clamped(a)));
    }
    if let Some(r) = filter.merchant_reference {
        and(
            "merchant_reference =",
            "bytea",
            Box::new(r.as_bytes().to_vec()),
        );
    }
    if let Some(t) = filter.terminal {
        and("terminal =", "bytea", Box::new(t.to_vec()));
    }
    if let Some(r) = filter.rrn {
        and("rrn =", "bytea", Box::new(r.to_vec()));
    }
    if let Some(a) = filter.auth_code {
        and("auth_code =", "bytea", Box::new(a.to_vec()));
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
    values.push(Box::new(limit as i64 + 1));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}::int8", values.len()));
    (sql, values)
}
