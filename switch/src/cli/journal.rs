//! Operator tools over the data directory: `switch journal verify`,
//! `switch journal dump` (JSON lines, masked) and `switch export` (CSV or
//! XML of a period's payments). They read files only and can run beside a
//! live switch.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use crate::clock::UtcDateTime;
use crate::config::Config;
use engine::record;
use engine::Payment;
use engine::{Answer, MessageKey};

/// The journal directory of a data directory (or the directory itself when
/// it already is one).
fn journal_dir(dir: &Path) -> PathBuf {
    let inner = dir.join("journal");
    if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

/// `switch journal verify DIR`: segments, record counts, sequences, damage.
/// Returns whether the journal is clean.
///
/// # Errors
/// When the directory cannot be read.
pub(crate) fn journal_verify(dir: &Path, mut out: impl Write) -> anyhow::Result<bool> {
    let dir = journal_dir(dir);
    let report = journal::verify(&journal::OsStorage, &dir)
        .with_context(|| format!("verifying {}", dir.display()))?;
    writeln!(out, "{report:#?}")?;
    writeln!(
        out,
        "{}",
        if report.is_clean() {
            "clean"
        } else {
            "DAMAGED"
        }
    )?;
    Ok(report.is_clean())
}

fn payment_json(p: &Payment) -> serde_json::Value {
    json!({
        "id": p.id,
        "merchant": p.merchant,
        "terminal": String::from_utf8_lossy(&p.terminal),
        "kind": format!("{:?}", p.kind),
        "status": p.status.label(),
        "currency": p.currency,
        "authorized_minor": p.authorized_minor,
        "captured_minor": p.captured_minor,
        "refunded_minor": p.refunded_minor(),
        "card_token": p.card_token.to_hex(),
        "masked_pan": p.masked_pan.as_str(),
        "created_ms": p.created_ms,
        "auth_code": String::from_utf8_lossy(&p.auth_code),
        "rrn": String::from_utf8_lossy(&p.rrn),
        "scam": p.scam,
        "flag_reasons": p.flag_reasons,
        "eci": p.more.eci,
        "channel": p.more.channel,
        "requested_minor": p.more.requested_minor,
        "flag_notes": p.more.flag_notes.as_deref().map(|n| json!({
            "flagged_by": n.flagged_by, "flag_note": n.flag_note, "unflagged_by": n.unflagged_by,
            "unflag_reason": n.unflag_reason, "unflagged_ms": n.unflagged_ms,
        })),
        "history": p.history.iter().map(|a| json!({
            "op": a.op.label(), "amount_minor": a.amount_minor, "at_ms": a.at_ms, "code": a.code.to_string(),
        })).collect::<Vec<_>>(),
    })
}

fn answer_json(k: &MessageKey, a: &Answer) -> serde_json::Value {
    json!({
        "mti": format!("{:04}", k.mti), "terminal": String::from_utf8_lossy(&k.terminal), "stan": k.stan,
        "transmission": format!("{:010}", k.transmission), "code": a.code.to_string(),
        "rrn": String::from_utf8_lossy(&a.rrn), "auth_code": a.auth_code.map(|c| String::from_utf8_lossy(&c).into_owned()),
    })
}

/// `switch journal dump DIR`: every record as a JSON line (masked card, token).
/// Returns the number of records.
///
/// # Errors
/// At damage other than a torn tail, or a record that does not decode.
pub(crate) fn journal_dump(dir: &Path, mut out: impl Write) -> anyhow::Result<u64> {
    let dir = journal_dir(dir);
    let mut failure = None;
    let n = journal::dump(&journal::OsStorage, &dir, |r| {
        if failure.is_some() {
            return;
        }
        let line = if r.record_type == engine::upstream::RECORD_UPSTREAM {
            upstream_json(r.seq, r.payload)
        } else {
            match record::decode(r.payload) {
                Ok(rec) => json!({
                    "seq": r.seq,
                    "type": "payment",
                    "payment": payment_json(&rec.payment),
                    "answer": rec.answer.map(|(k, a)| answer_json(&k, &a)),
                }),
                Err(e) => json!({"seq": r.seq, "type": r.record_type, "error": e.to_string()}),
            }
        };
        if let Err(e) = writeln!(out, "{line}") {
            failure = Some(e);
        }
    })
    .with_context(|| format!("dumping {}", dir.display()))?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(n),
    }
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    /// Comma-separated, one payment per line, with a header.
    Csv,
    /// `<payments>` with one `<payment>` element each.
    Xml,
}

/// Milliseconds at 00:00 UTC of a `YYYY-MM-DD` date.
fn date_ms(s: &str) -> anyhow::Result<u64> {
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        anyhow::bail!("date `{s}`: expected YYYY-MM-DD")
    };
    let days = codecs::iso8583::datetime::days_from_civil(y.parse()?, m.parse()?, d.parse()?)
        .with_context(|| format!("date `{s}` out of range (a real date, 1970 to 9999)"))?;
    Ok(days * 86_400_000)
}

fn iso_time(ms: u64) -> String {
    let t = UtcDateTime::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Which payments of the period an export keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Only<'a> {
    /// One merchant's (MID), or all.
    pub(crate) merchant: Option<&'a str>,
    /// The list's filters.
    pub(crate) filter: &'a ExportFilter,
}

/// `switch export`'s filters, checked: the internal-frame list's.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExportFilter {
    scam: Option<bool>,
    rrn: Option<[u8; 12]>,
    auth_code: Option<[u8; 6]>,
    last4: Option<[u8; 4]>,
    channel: Option<u8>,
    eci: Option<u8>,
    code: Option<engine::Code>,
    statuses: Vec<engine::Status>,
}

impl ExportFilter {
    /// Checks the flags as the internal frames check the list's fields.
    ///
    /// # Errors
    /// The first flag that is not what it should be, by name.
    pub(crate) fn parse(f: &super::args::ExportFilters) -> anyhow::Result<ExportFilter> {
        fn fixed<const N: usize>(
            flag: &str,
            v: &Option<String>,
            ok: fn(u8) -> bool,
            what: &str,
        ) -> anyhow::Result<Option<[u8; N]>> {
            let Some(v) = v else { return Ok(None) };
            match <[u8; N]>::try_from(v.as_bytes()) {
                Ok(b) if b.iter().all(|&c| ok(c)) => Ok(Some(b)),
                _ => anyhow::bail!("{flag} `{v}`: expected {what}"),
            }
        }
        let scam = match f.scam.as_deref() {
            None => None,
            Some("yes") => Some(true),
            Some("no") => Some(false),
            Some(v) => anyhow::bail!("--scam `{v}`: expected yes or no"),
        };
        if let Some(c) = f.channel.filter(|c| !matches!(c, 0 | 8 | 59 | 99)) {
            anyhow::bail!("--channel `{c}`: expected 0, 8, 59 or 99");
        }
        if let Some(e) = f.eci.filter(|e| *e > 99) {
            anyhow::bail!("--eci `{e}`: expected 0 to 99");
        }
        let code_char = |c: u8| c.is_ascii_digit() || c.is_ascii_uppercase();
        let statuses = match &f.status {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|label| {
                    engine::Status::ALL
                        .into_iter()
                        .find(|s| s.label() == label.trim())
                        .with_context(|| {
                            let all: Vec<&str> =
                                engine::Status::ALL.iter().map(|s| s.label()).collect();
                            format!("--status `{label}`: expected some of {}", all.join(","))
                        })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        Ok(ExportFilter {
            scam,
            rrn: fixed(
                "--rrn",
                &f.rrn,
                |c| (b' '..=b'~').contains(&c),
                "12 characters",
            )?,
            auth_code: fixed(
                "--auth-code",
                &f.auth_code,
                |c| c.is_ascii_alphanumeric(),
                "6 letters or digits",
            )?,
            last4: fixed("--last4", &f.last4, |c| c.is_ascii_digit(), "4 digits")?,
            channel: f.channel,
            eci: f.eci,
            code: fixed("--code", &f.code, code_char, "2 digits or capitals")?.map(engine::Code),
            statuses,
        })
    }

    /// As the engine's list filter.
    fn list_filter(&self) -> engine::ListFilter<'_> {
        engine::ListFilter {
            statuses: &self.statuses,
            scam: self.scam,
            rrn: self.rrn,
            auth_code: self.auth_code,
            last4: self.last4,
            channel: self.channel,
            eci: self.eci,
            code: self.code,
            ..Default::default()
        }
    }
}

/// `switch export`: the payments created from `from` (inclusive) to `to`
/// (inclusive, whole day, UTC), optionally of one merchant. Returns how many.
///
/// # Errors
/// Bad dates, an unknown merchant, or a journal that cannot be read.
pub(crate) fn export(
    data_dir: &Path,
    config: &Config,
    (from, to): (&str, &str),
    Only { merchant, filter }: Only<'_>,
    format: ExportFormat,
    out: impl Write,
) -> anyhow::Result<usize> {
    let (from_ms, to_ms) = (date_ms(from)?, date_ms(to)? + 86_400_000);
    let mids = crate::directory::merchant_ids(config, &config.listeners.data_dir)
        .context("the directory of added merchants")?;
    let merchant_index = match merchant {
        None => None,
        Some(mid) => Some(
            mids.iter()
                .position(|m| m == mid)
                .with_context(|| format!("--merchant `{mid}` is not configured nor added"))?,
        ),
    };
    let mut payments = archived_payments(config, (from_ms, to_ms), merchant_index, mids.len())?;
    // The journal's newer images win: what the archive has not drained yet.
    payments.extend(read_payments(data_dir)?);
    let rows: Vec<ExportRow> = payments
        .values()
        .filter(|p| p.created_ms >= from_ms && p.created_ms < to_ms)
        .filter(|p| merchant_index.is_none_or(|m| p.merchant as usize == m))
        .filter(|p| filter.list_filter().matches(p))
        .map(|p| ExportRow::new(p, &mids))
        .collect();
    write_rows(&rows, format, (from, to), out)?;
    Ok(rows.len())
}

/// The archive's payments created in `[from_ms, to_ms)`, of one merchant
/// or all (`merchants` of them), paged through (beside a running switch:
/// SQLite's WAL lets this read while the drainer writes).
fn archived_payments(
    config: &Config,
    (from_ms, to_ms): (u64, u64),
    merchant: Option<usize>,
    merchants: usize,
) -> anyhow::Result<BTreeMap<u64, Payment>> {
    let mut store = crate::archive_stage::open_store(&config.archive, &config.listeners.data_dir)?;
    let all: Vec<u32> = match merchant {
        Some(m) => vec![m as u32],
        None => (0..merchants as u32).collect(),
    };
    let filter = engine::ListFilter {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        ..Default::default()
    };
    let mut payments = BTreeMap::new();
    for scope in all.chunks(archive::SCOPE_MERCHANTS_MAX) {
        let mut cursor = None;
        loop {
            let page = store
                .get()
                .list(scope, &filter, cursor, archive::PAGE_PAYMENTS_MAX)
                .context("reading the archive")?;
            cursor = page.payments.last().map(|p| p.id);
            payments.extend(page.payments.into_iter().map(|p| (p.id, p)));
            if !page.more {
                break;
            }
        }
    }
    Ok(payments)
}

/// `switch archive rebuild`: every payment the data directory still has
/// (the newest snapshot's, then every record of every segment, the ones a
/// snapshot covers included) written into the archive again, as idempotent
/// upserts: what is there already and as new stays. Returns how many
/// records were applied. Run it with the switch stopped (the data
/// directory's lock is taken).
///
/// # Errors
/// When the directory is in use, the journal cannot be read, or the
/// archive cannot be written.
pub(crate) fn archive_rebuild(config: &Config) -> anyhow::Result<u64> {
    let data_dir = &config.listeners.data_dir;
    let _lock = crate::datadir::lock(data_dir)?;
    let mut store = crate::archive_stage::open_store(&config.archive, data_dir)?;
    let dir = journal_dir(data_dir);
    let mut batches = archive::Batches::new(store.get());
    let mut buf = Vec::new();
    // The snapshot's payments first, under its seq: a record after it wins.
    journal::read_state(&journal::OsStorage, &dir, |item| {
        if let journal::Replay::Snapshot { seq, bytes } = item {
            for p in &record::decode_snapshot(bytes)?.payments {
                let rec = record::PaymentRecordRef {
                    payment: p,
                    index: None,
                    answer: None,
                };
                record::encode(&rec, &mut buf);
                batches.push(seq, &buf);
            }
        }
        Ok(())
    })
    .with_context(|| format!("reading {}", dir.display()))?;
    journal::dump(&journal::OsStorage, &dir, |r| {
        // Payments only: other records (upstream forwards and SAF) pass
        // empty, raising the watermark only.
        let payload = if r.record_type == record::RECORD_PAYMENT {
            r.payload
        } else {
            &[]
        };
        batches.push(r.seq, payload)
    })
    .with_context(|| format!("reading {}", dir.display()))?;
    batches.finish().context("writing the archive")
}

/// Every payment in the journal and its newest snapshot, as last recorded.
fn read_payments(data_dir: &Path) -> anyhow::Result<BTreeMap<u64, Payment>> {
    let mut payments: BTreeMap<u64, Payment> = BTreeMap::new();
    let dir = journal_dir(data_dir);
    journal::read_state(&journal::OsStorage, &dir, |item| {
        match item {
            journal::Replay::Snapshot { bytes, .. } => {
                for p in record::decode_snapshot(bytes)?.payments {
                    payments.insert(p.id, p);
                }
            }
            journal::Replay::Record(r) if r.record_type == record::RECORD_PAYMENT => {
                let rec = record::decode(r.payload)?;
                payments.insert(rec.payment.id, rec.payment);
            }
            journal::Replay::Record(_) => {}
        }
        Ok(())
    })
    .with_context(|| format!("reading {}", dir.display()))?;
    Ok(payments)
}

fn write_rows(
    rows: &[ExportRow],
    format: ExportFormat,
    (from, to): (&str, &str),
    mut out: impl Write,
) -> std::io::Result<()> {
    match format {
        ExportFormat::Csv => {
            writeln!(out, "{}", ExportRow::COLUMNS.join(","))?;
            for row in rows {
                let cells: Vec<String> = row.cells().iter().map(|c| csv_field(c)).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        ExportFormat::Xml => {
            writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
            writeln!(
                out,
                "<payments from=\"{}\" to=\"{}\" count=\"{}\">",
                xml_escape(from),
                xml_escape(to),
                rows.len()
            )?;
            for row in rows {
                let attrs: Vec<String> = ExportRow::COLUMNS
                    .iter()
                    .zip(row.cells())
                    .map(|(name, value)| format!("{name}=\"{}\"", xml_escape(value)))
                    .collect();
                writeln!(out, "  <payment {}/>", attrs.join(" "))?;
            }
            writeln!(out, "</payments>")?;
        }
    }
    out.flush()
}

/// Columns of an export, in order.
const EXPORT_COLUMNS: usize = 27;

/// One exported payment, as text cells in [`ExportRow::COLUMNS`] order.
struct ExportRow {
    /// The cells.
    cells: [String; EXPORT_COLUMNS],
}

impl ExportRow {
    /// Column names (CSV header, XML attribute names). New columns go at
    /// the end, so readers by position keep working.
    const COLUMNS: [&'static str; EXPORT_COLUMNS] = [
        "payment_id",
        "merchant_id",
        "terminal_id",
        "created_utc",
        "kind",
        "status",
        "currency",
        "authorized",
        "captured",
        "refunded",
        "masked_pan",
        "auth_code",
        "rrn",
        "scam",
        "flag_reasons",
        "merchant_reference",
        "response_code",
        "requested",
        "eci",
        "channel",
        "stood_in",
        "flagged_by",
        "flag_note",
        "unflagged_by",
        "unflag_reason",
        "unflagged_utc",
        "refused_operations",
    ];

    fn new(p: &Payment, mids: &[String]) -> Self {
        let decimal = |minor: u64| {
            codecs::iso8583::amount::Amount {
                minor,
                currency: p.currency,
            }
            .to_decimal()
            .map_or(minor.to_string(), |d| d.to_string())
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        let notes = p.more.flag_notes.as_deref();
        let note = |f: fn(&engine::FlagNotes) -> &Option<String>| {
            notes.and_then(|n| f(n).clone()).unwrap_or_default()
        };
        let opt = |v: Option<u8>| v.map_or(String::new(), |v| format!("{v:02}"));
        ExportRow {
            cells: [
                p.id.to_string(),
                mids.get(p.merchant as usize)
                    .map_or("?", String::as_str)
                    .to_string(),
                text(&p.terminal),
                iso_time(p.created_ms),
                format!("{:?}", p.kind),
                p.status.label().to_string(),
                format!("{:03}", p.currency),
                decimal(p.authorized_minor),
                decimal(p.captured_minor),
                decimal(p.refunded_minor()),
                p.masked_pan.to_string(),
                // A declined payment has no approval code.
                if p.status == engine::Status::Declined {
                    String::new()
                } else {
                    text(&p.auth_code)
                },
                text(&p.rrn),
                p.scam.to_string(),
                p.flag_reasons.clone(),
                p.extras
                    .as_ref()
                    .map(|e| e.merchant_reference.clone())
                    .unwrap_or_default(),
                p.result_code().map(|c| c.to_string()).unwrap_or_default(),
                // What the authorization asked for: a decline's amount.
                decimal(p.more.requested_minor.unwrap_or(p.authorized_minor)),
                opt(p.more.eci),
                opt(p.more.channel),
                p.upstream.as_ref().is_some_and(|u| u.stood_in).to_string(),
                note(|n| &n.flagged_by),
                note(|n| &n.flag_note),
                note(|n| &n.unflagged_by),
                note(|n| &n.unflag_reason),
                notes
                    .and_then(|n| n.unflagged_ms)
                    .map(iso_time)
                    .unwrap_or_default(),
                refused(p),
            ],
        }
    }

    fn cells(&self) -> &[String; EXPORT_COLUMNS] {
        &self.cells
    }
}

/// The refused operations of `p`'s history, `op:code:amount` each, `;`
/// between them (empty when none).
fn refused(p: &Payment) -> String {
    p.history
        .iter()
        .filter(|a| !a.code.approved() && !matches!(a.op.label(), "sale" | "preauth"))
        .map(|a| format!("{}:{}:{}", a.op.label(), a.code, a.amount_minor))
        .collect::<Vec<_>>()
        .join(";")
}

/// An upstream record (forwards and SAF) as a JSON line: no card data is
/// in one.
fn upstream_json(seq: u64, payload: &[u8]) -> serde_json::Value {
    use engine::upstream::UpstreamRecord;
    match engine::upstream::decode(payload) {
        Ok(UpstreamRecord::Forward(p)) => json!({
            "seq": seq,
            "type": "forward",
            "forward": p.id,
            "upstream": p.upstream,
            "stan": format!("{:06}", p.stan),
            "transmission": format!("{:010}", p.transmission),
            "mti": format!("{:04}", p.mti),
            "terminal": String::from_utf8_lossy(&p.terminal),
            "amount_minor": p.amount_minor,
            "currency": p.currency,
            "rrn": String::from_utf8_lossy(&p.rrn),
        }),
        Ok(UpstreamRecord::ForwardDone(id)) => {
            json!({"seq": seq, "type": "forward_done", "forward": id})
        }
        Ok(UpstreamRecord::SafQueued(e)) => {
            json!({"seq": seq, "type": "saf_queued", "entry": crate::saf::entry_json(&e)})
        }
        Ok(UpstreamRecord::SafDone(id)) => json!({"seq": seq, "type": "saf_done", "id": id}),
        Err(e) => json!({"seq": seq, "type": "upstream", "error": e.to_string()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_midnight_utc() {
        assert_eq!(date_ms("1970-01-01").expect("valid"), 0);
        assert_eq!(date_ms("2026-11-23").expect("valid"), 1_795_392_000_000);
        assert_eq!(iso_time(1_795_434_550_000), "2026-11-23T11:49:10Z");
        assert!(date_ms("2026-13-01").is_err());
        assert!(date_ms("yesterday").is_err());
    }

    #[test]
    fn escaping() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(xml_escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
