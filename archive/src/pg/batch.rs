//! A batch as columns: one array per column of each table, for one
//! `INSERT … SELECT FROM UNNEST(…)` per table. Pure: no I/O.
//!
//! One statement may not update a row twice, so the batch is folded
//! first: per key, the record of the highest version (the first of equal
//! ones), which is the row that applying the records one by one leaves.
//! Each table is folded by its own key, since a payment's newest record
//! may carry no answer while an older one does.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::Hash;

use engine::lifecycle::status_record_code;

use crate::records::{clamped, Row};

/// The `payments` columns of a batch, in `schema::UPSERT_PAYMENTS` order.
#[derive(Default)]
pub(super) struct Payments<'a> {
    /// `id`.
    pub(super) id: Vec<i64>,
    /// `version`: the journal seq.
    pub(super) version: Vec<i64>,
    /// `merchant`.
    pub(super) merchant: Vec<i64>,
    /// `terminal`.
    pub(super) terminal: Vec<&'a [u8]>,
    /// `status`, the record code.
    pub(super) status: Vec<i16>,
    /// `created_ms`, clamped.
    pub(super) created_ms: Vec<i64>,
    /// `authorized_minor`, clamped.
    pub(super) authorized_minor: Vec<i64>,
    /// `captured_minor`, clamped.
    pub(super) captured_minor: Vec<i64>,
    /// `amount_minor`: the larger, as the list filter reads it.
    pub(super) amount_minor: Vec<i64>,
    /// `rrn`.
    pub(super) rrn: Vec<&'a [u8]>,
    /// `auth_code`.
    pub(super) auth_code: Vec<&'a [u8]>,
    /// `merchant_reference`, as bytes.
    pub(super) merchant_reference: Vec<Option<&'a [u8]>>,
    /// `record`: the journal payload, the payment's image.
    pub(super) record: Vec<&'a [u8]>,
}

/// The `originals` columns of a batch, in `schema::UPSERT_ORIGINALS` order.
#[derive(Default)]
pub(super) struct Originals {
    /// `merchant`.
    pub(super) merchant: Vec<i64>,
    /// `mti`.
    pub(super) mti: Vec<i32>,
    /// `stan`.
    pub(super) stan: Vec<i64>,
    /// `transmission`, stored `as i64`.
    pub(super) transmission: Vec<i64>,
    /// `version`.
    pub(super) version: Vec<i64>,
    /// `payment`, stored `as i64`.
    pub(super) payment: Vec<i64>,
    /// `refund`.
    pub(super) refund: Vec<Option<i16>>,
}

/// The `answers` columns of a batch, in `schema::UPSERT_ANSWERS` order.
#[derive(Default)]
pub(super) struct Answers<'a> {
    /// `mti`.
    pub(super) mti: Vec<i32>,
    /// `terminal`.
    pub(super) terminal: Vec<&'a [u8]>,
    /// `stan`.
    pub(super) stan: Vec<i64>,
    /// `transmission`, stored `as i64`.
    pub(super) transmission: Vec<i64>,
    /// `version`.
    pub(super) version: Vec<i64>,
    /// `payment`, stored `as i64`.
    pub(super) payment: Vec<i64>,
    /// `code`: F39.
    pub(super) code: Vec<&'a [u8]>,
    /// `rrn`: F37.
    pub(super) rrn: Vec<&'a [u8]>,
    /// `auth_code`: F38, on approval.
    pub(super) auth_code: Vec<Option<&'a [u8]>>,
    /// `content_crc`.
    pub(super) content_crc: Vec<i64>,
    /// `at_ms`, clamped.
    pub(super) at_ms: Vec<i64>,
}

/// A folded batch, as columns.
pub(super) struct Columns<'a> {
    /// One row per payment id.
    pub(super) payments: Payments<'a>,
    /// One row per F90 key.
    pub(super) originals: Originals,
    /// One row per message key.
    pub(super) answers: Answers<'a>,
}

/// The rows of `rows` that win per key (see the module's comment), in the
/// order their keys first appear; rows without a key are skipped.
fn winners<'r, K: Eq + Hash>(
    rows: &'r [Row<'r>],
    key: impl Fn(&'r Row<'r>) -> Option<K>,
) -> Vec<&'r Row<'r>> {
    let mut best: HashMap<K, usize> = HashMap::with_capacity(rows.len());
    let mut order = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let Some(k) = key(row) else { continue };
        match best.entry(k) {
            Entry::Vacant(v) => {
                v.insert(order.len());
                order.push(i);
            }
            Entry::Occupied(o) => {
                let slot = &mut order[*o.get()];
                if rows[*slot].version < row.version {
                    *slot = i;
                }
            }
        }
    }
    order.into_iter().map(|i| &rows[i]).collect()
}

/// Folds `rows` and lays them out as columns. Ids and seqs were checked
/// to fit `i64` when the batch was decoded.
pub(super) fn columns<'a>(rows: &'a [Row<'a>]) -> Columns<'a> {
    Columns {
        payments: payments(&winners(rows, |r| Some(r.rec.payment.id))),
        originals: originals(&winners(rows, |r| {
            r.rec
                .index
                .as_ref()
                .map(|(k, _)| (k.merchant, k.mti, k.stan, k.transmission))
        })),
        answers: answers(&winners(rows, |r| {
            r.rec
                .answer
                .as_ref()
                .map(|(k, _)| (k.mti, k.terminal, k.stan, k.transmission))
        })),
    }
}

/// The `payments` columns of the winning rows.
fn payments<'a>(rows: &[&'a Row<'a>]) -> Payments<'a> {
    let mut c = Payments::default();
    for row in rows {
        let p = &row.rec.payment;
        c.id.push(p.id as i64);
        c.version.push(row.version);
        c.merchant.push(i64::from(p.merchant));
        c.terminal.push(&p.terminal[..]);
        c.status.push(i16::from(status_record_code(p.status)));
        c.created_ms.push(clamped(p.created_ms));
        c.authorized_minor.push(clamped(p.authorized_minor));
        c.captured_minor.push(clamped(p.captured_minor));
        c.amount_minor
            .push(clamped(p.authorized_minor.max(p.captured_minor)));
        c.rrn.push(&p.rrn[..]);
        c.auth_code.push(&p.auth_code[..]);
        c.merchant_reference
            .push(p.extras.as_ref().map(|e| e.merchant_reference.as_bytes()));
        c.record.push(row.payload);
    }
    c
}

/// The `originals` columns of the winning rows that carry an index entry.
fn originals(rows: &[&Row<'_>]) -> Originals {
    let mut c = Originals::default();
    for row in rows {
        let Some((k, t)) = &row.rec.index else {
            continue;
        };
        c.merchant.push(i64::from(k.merchant));
        c.mti.push(i32::from(k.mti));
        c.stan.push(i64::from(k.stan));
        c.transmission.push(k.transmission as i64);
        c.version.push(row.version);
        c.payment.push(t.payment as i64);
        c.refund.push(t.refund.map(i16::from));
    }
    c
}

/// The `answers` columns of the winning rows that carry an answer.
fn answers<'a>(rows: &[&'a Row<'a>]) -> Answers<'a> {
    let mut c = Answers::default();
    for row in rows {
        let Some((k, a)) = &row.rec.answer else {
            continue;
        };
        c.mti.push(i32::from(k.mti));
        c.terminal.push(&k.terminal[..]);
        c.stan.push(i64::from(k.stan));
        c.transmission.push(k.transmission as i64);
        c.version.push(row.version);
        c.payment.push(row.rec.payment.id as i64);
        c.code.push(&a.code.0[..]);
        c.rrn.push(&a.rrn[..]);
        c.auth_code.push(a.auth_code.as_ref().map(|c| &c[..]));
        c.content_crc.push(i64::from(a.content_crc));
        c.at_ms.push(clamped(a.at_ms));
    }
    c
}

#[cfg(all(test, feature = "contract"))]
mod tests {
    use engine::Status;

    use super::*;
    use crate::contract::{payment, record};
    use crate::records::decode_batch;

    /// Records of payment 1 at seqs 5, 9, 7 and 9 again (another status),
    /// and payment 2 at seq 3.
    fn batch() -> Vec<(u64, Vec<u8>)> {
        let mut recs = Vec::new();
        for (seq, status) in [(5, 0), (9, 1), (7, 2), (9, 3)] {
            let mut p = payment(1, 1, 10, 10);
            p.status = Status::ALL[status];
            recs.push((seq, record(&p)));
        }
        recs.push((3, record(&payment(2, 1, 20, 20))));
        recs
    }

    #[test]
    fn a_batch_folds_to_the_highest_version_per_key_first_of_equals() {
        let recs = batch();
        let refs: Vec<(u64, &[u8])> = recs.iter().map(|(s, r)| (*s, &r[..])).collect();
        let rows = decode_batch("test", &refs).expect("decode");
        let c = columns(&rows);
        assert_eq!(c.payments.id, vec![1, 2]);
        assert_eq!(c.payments.version, vec![9, 3]);
        let want = i16::from(status_record_code(Status::ALL[1]));
        assert_eq!(c.payments.status[0], want);
        assert_eq!(c.payments.record[0], &recs[1].1[..]);
        // Each record carries an index entry and an answer of its payment.
        assert_eq!(c.originals.version, vec![9, 3]);
        assert_eq!(c.answers.version, vec![9, 3]);
        assert_eq!(c.answers.payment, vec![1, 2]);
    }

    #[test]
    fn an_empty_batch_has_no_rows() {
        let c = columns(&[]);
        assert!(c.payments.id.is_empty() && c.originals.mti.is_empty() && c.answers.mti.is_empty());
    }
}
