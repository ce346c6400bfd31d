//! Reading a journal directory back: recovery at open (snapshot, replay,
//! torn-tail truncation, optional repair), and the operator tools `verify`
//! and `dump`.
//!
//! Torn tail versus corruption: a crash can only damage what was written after
//! the last fsync, which is the end of the last segment. So damage in the last
//! segment after which no valid frame follows is a torn tail and is truncated;
//! any other damage (a non-last segment, a valid frame after the damage, a
//! sequence gap, a record in the wrong segment) is corruption. Damage to the
//! very last frame cannot be told from a torn write and is truncated too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{io, BoxError, Error};
use crate::format::{
    decode_frame, decode_segment_header, decode_snapshot, parse_name, valid_frame_after, FileKind,
    Frame, Record, SEGMENT_FILE_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use crate::metric;
use crate::storage::Storage;

/// One item handed to the replay callback at open, in sequence order.
#[derive(Debug, Clone, Copy)]
pub enum Replay<'a> {
    /// The newest valid snapshot; comes first, at most once.
    Snapshot {
        /// The last record sequence the snapshot covers.
        seq: u64,
        /// The bytes the switch gave to `Journal::snapshot`.
        bytes: &'a [u8],
    },
    /// A record after the snapshot.
    Record(Record<'a>),
}

/// Damage found in a file: truncated (torn tail) or dropped (repair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// Where the damage starts; everything from here on was dropped.
    pub offset: u64,
    /// What check failed.
    pub reason: String,
    /// Bytes removed from `file` (its whole length when deleted).
    pub bytes_dropped: u64,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Sequence covered by the snapshot replayed, if any.
    pub snapshot_seq: Option<u64>,
    /// Records handed to the callback after the snapshot.
    pub records_replayed: u64,
    /// Sequence the next append gets.
    pub next_seq: u64,
    /// The torn tail cut off the last segment, if there was one.
    pub truncated: Option<Damage>,
    /// With `repair`: corrupt snapshots, file tails and files that were dropped.
    pub dropped: Vec<Damage>,
    /// Wall time of the whole recovery.
    pub elapsed: Duration,
}

/// Per-segment line of a [`VerifyReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment file.
    pub file: PathBuf,
    /// First sequence the file name (and header) claims.
    pub first_seq: u64,
    /// Valid records before any damage.
    pub records: u64,
    /// Last valid record's sequence.
    pub last_seq: Option<u64>,
    /// File length.
    pub bytes: u64,
    /// Damage found, if any.
    pub damage: Option<SegmentDamage>,
}

/// Damage found by verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDamage {
    /// Byte offset of the first bad frame or header.
    pub offset: u64,
    /// What check failed.
    pub reason: String,
    /// True when recovery would truncate it as a torn tail.
    pub torn_tail: bool,
}

/// Result of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Snapshot files with their sequence, and a reason if invalid.
    pub snapshots: Vec<(PathBuf, u64, Option<String>)>,
    /// Segment files in sequence order.
    pub segments: Vec<SegmentSummary>,
    /// Problems between files (gaps, missing segments).
    pub gaps: Vec<String>,
}

impl VerifyReport {
    /// True when recovery would start without truncating or stopping.
    pub fn is_clean(&self) -> bool {
        self.gaps.is_empty()
            && self.snapshots.iter().all(|(_, _, bad)| bad.is_none())
            && self.segments.iter().all(|s| s.damage.is_none())
    }
}

/// Result of scanning one segment buffer.
#[derive(Debug)]
struct Scan {
    /// Valid records read.
    records: u64,
    /// Sequence after the last valid record.
    next_seq: u64,
    /// First damage, if any.
    damage: Option<SegmentDamage>,
}

/// Walks the frames of one segment, calling `f` for each valid one in order.
/// Stops at the first damage, or with the callback's error.
fn scan_segment(
    bytes: &[u8],
    first_seq: u64,
    f: &mut dyn FnMut(Record<'_>) -> Result<(), BoxError>,
) -> Result<Scan, (u64, BoxError)> {
    let damaged = |offset: usize, reason: &str, seq_min: u64, torn_possible: bool| {
        let torn_tail = torn_possible && !valid_frame_after(bytes, offset + 1, seq_min);
        Some(SegmentDamage {
            offset: offset as u64,
            reason: reason.to_owned(),
            torn_tail,
        })
    };
    let mut scan = Scan {
        records: 0,
        next_seq: first_seq,
        damage: None,
    };
    match decode_segment_header(bytes) {
        Ok(seq) if seq == first_seq => {}
        Ok(seq) => {
            let reason = format!("header says first seq {seq}, file name says {first_seq}");
            scan.damage = damaged(0, &reason, 0, false);
            return Ok(scan);
        }
        Err(reason) => {
            scan.damage = damaged(0, reason, 0, true);
            return Ok(scan);
        }
    }
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset < bytes.len() {
        match decode_frame(&bytes[offset..]) {
            // Zeros written ahead of the data: the segment's clean end.
            Frame::Incomplete | Frame::Invalid(_) if all_zeros(&bytes[offset..]) => {
                return Ok(scan);
            }
            Frame::Valid { record, bytes: len } if record.seq == scan.next_seq => {
                f(record).map_err(|e| (record.seq, e))?;
                scan.records += 1;
                scan.next_seq += 1;
                offset += len;
            }
            Frame::Valid { record, .. } => {
                let reason = format!(
                    "sequence gap or record in wrong segment: expected seq {}, found {}",
                    scan.next_seq, record.seq
                );
                scan.damage = damaged(offset, &reason, 0, false);
                return Ok(scan);
            }
            Frame::Incomplete => {
                scan.damage = damaged(offset, "record runs past end of file", scan.next_seq, true);
                return Ok(scan);
            }
            Frame::Invalid(reason) => {
                scan.damage = damaged(offset, reason, scan.next_seq, true);
                return Ok(scan);
            }
        }
    }
    Ok(scan)
}

/// True when `bytes` holds nothing but zeros (or nothing): a segment's
/// clean end when it runs to the end of the file.
pub(crate) fn all_zeros(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Journal files in a directory, sorted by sequence.
#[derive(Debug, Default)]
struct Listing {
    /// `(seq, path)` of `.snap` files.
    snapshots: Vec<(u64, PathBuf)>,
    /// `(first_seq, path)` of `.seg` files.
    segments: Vec<(u64, PathBuf)>,
    /// Leftover `.snap.tmp` files.
    temps: Vec<PathBuf>,
}

fn list(storage: &dyn Storage, dir: &Path) -> Result<Listing, Error> {
    let mut listing = Listing::default();
    for name in storage.list(dir).map_err(io(dir))? {
        let path = dir.join(&name);
        match parse_name(&name) {
            Some((FileKind::Segment, seq)) => listing.segments.push((seq, path)),
            Some((FileKind::Snapshot, seq)) => listing.snapshots.push((seq, path)),
            Some((FileKind::SnapshotTemp, _)) => listing.temps.push(path),
            None => {}
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// The `.seg` files of `dir`, `(first_seq, path)`, oldest first.
pub(crate) fn list_segments(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Vec<(u64, PathBuf)>, Error> {
    Ok(list(storage, dir)?.segments)
}

fn read_segment(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = storage.read(path).map_err(io(path))?;
    if bytes.len() as u64 > SEGMENT_FILE_BYTES_MAX {
        return Err(Error::Corruption {
            file: path.to_owned(),
            offset: SEGMENT_FILE_BYTES_MAX,
            reason: "segment larger than SEGMENT_BYTES_MAX allows".into(),
        });
    }
    Ok(bytes)
}

/// What [`recover`] leaves for the writer.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The report for the caller.
    pub(crate) report: RecoveryReport,
    /// Segments still on disk, `(first_seq, path)`, oldest first.
    pub(crate) segments: Vec<(u64, PathBuf)>,
}

/// Loads the newest valid snapshot and replays later records through
/// `apply`, truncating a torn tail and (with `repair`) dropping corruption.
/// Segments the snapshot covers are deleted only up to `retain_floor`
/// (`u64::MAX`: no floor): the rest are kept, unread, for the tail.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    repair: bool,
    retain_floor: u64,
    apply: &mut dyn FnMut(Replay<'_>) -> Result<(), BoxError>,
) -> Result<Recovered, Error> {
    let started = Instant::now();
    storage.create_dir_all(dir).map_err(io(dir))?;
    let listing = list(storage, dir)?;
    for temp in &listing.temps {
        storage.remove(temp).map_err(io(temp))?;
    }
    let mut report = RecoveryReport::default();
    let snapshot_seq = load_snapshot(storage, &listing, repair, &mut report, apply)?;
    report.snapshot_seq = snapshot_seq;
    let snapshot_seq = snapshot_seq.unwrap_or(0);

    // A segment whose successor starts at or before snapshot_seq + 1 holds
    // only covered records: a snapshot's cleanup was interrupted.
    let segs = &listing.segments;
    let first_live = (0..segs.len())
        .find(|&i| segs.get(i + 1).is_none_or(|next| next.0 > snapshot_seq + 1))
        .unwrap_or(segs.len());
    // Of those, the ones holding records above the floor stay, unread:
    // the archive has not taken them yet.
    let bound = snapshot_seq.min(retain_floor);
    let deletable = (0..first_live)
        .take_while(|&i| {
            segs.get(i + 1)
                .is_some_and(|next| next.0 <= bound.saturating_add(1))
        })
        .count();
    let mut live: Vec<(u64, PathBuf)> = segs[deletable..first_live].to_vec();
    let mut next_seq = snapshot_seq + 1;
    if let Some(first) = segs.get(first_live) {
        if first.0 > snapshot_seq + 1 {
            let reason = format!(
                "records {}..{} missing: no segment or snapshot holds them",
                snapshot_seq + 1,
                first.0 - 1
            );
            return Err(Error::Corruption {
                file: first.1.clone(),
                offset: 0,
                reason,
            });
        }
        next_seq = first.0;
    }
    let mut stop = false;
    let mut last_empty = false;
    for (index, (first_seq, path)) in segs.iter().enumerate().skip(first_live) {
        if stop {
            drop_file(storage, path, "after corruption (repair)", &mut report)?;
            continue;
        }
        if *first_seq != next_seq {
            let reason = format!("segment should start at seq {next_seq}");
            if !repair {
                return Err(Error::Corruption {
                    file: path.clone(),
                    offset: 0,
                    reason,
                });
            }
            drop_file(storage, path, &reason, &mut report)?;
            stop = true;
            continue;
        }
        let bytes = read_segment(storage, path)?;
        let mut on_record = |record: Record<'_>| {
            if record.seq > snapshot_seq {
                report.records_replayed += 1;
                apply(Replay::Record(record))?;
            }
            Ok(())
        };
        let scan = scan_segment(&bytes, *first_seq, &mut on_record)
            .map_err(|(seq, source)| Error::Apply { seq, source })?;
        next_seq = scan.next_seq;
        let is_last = index + 1 == segs.len();
        let kept = match scan.damage {
            None => true,
            Some(damage) => {
                stop = !(is_last && damage.torn_tail);
                if stop && !repair {
                    let (offset, reason) = (damage.offset, damage.reason);
                    return Err(Error::Corruption {
                        file: path.clone(),
                        offset,
                        reason,
                    });
                }
                cut(storage, path, &bytes, damage, stop, &mut report)?
            }
        };
        if kept {
            live.push((*first_seq, path.clone()));
            last_empty = scan.records == 0;
        }
    }
    remove_covered(storage, dir, &segs[..deletable], &mut live, last_empty)?;
    report.next_seq = next_seq.max(snapshot_seq + 1);
    report.elapsed = started.elapsed();
    metric::replay(report.elapsed, report.records_replayed);
    Ok(Recovered {
        report,
        segments: live,
    })
}

/// Replays the newest valid snapshot; returns the sequence it covers.
fn load_snapshot(
    storage: &dyn Storage,
    listing: &Listing,
    repair: bool,
    report: &mut RecoveryReport,
    apply: &mut dyn FnMut(Replay<'_>) -> Result<(), BoxError>,
) -> Result<Option<u64>, Error> {
    for (seq, path) in listing.snapshots.iter().rev() {
        let bytes = storage.read(path).map_err(io(path))?;
        let reason = match decode_snapshot(&bytes) {
            Ok((inner, payload)) if inner == *seq => {
                apply(Replay::Snapshot {
                    seq: *seq,
                    bytes: payload,
                })
                .map_err(|source| Error::Apply { seq: *seq, source })?;
                return Ok(Some(*seq));
            }
            Ok((inner, _)) => format!("header says seq {inner}, file name says {seq}"),
            Err(reason) => reason.to_owned(),
        };
        if !repair {
            return Err(Error::Corruption {
                file: path.clone(),
                offset: 0,
                reason,
            });
        }
        let bytes_dropped = bytes.len() as u64;
        report.dropped.push(Damage {
            file: path.clone(),
            offset: 0,
            reason,
            bytes_dropped,
        });
    }
    Ok(None)
}

/// Cuts a damaged segment at the damage; returns whether the file remains.
fn cut(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
    damage: SegmentDamage,
    repaired: bool,
    report: &mut RecoveryReport,
) -> Result<bool, Error> {
    let bytes_dropped = bytes.len() as u64 - damage.offset;
    let entry = Damage {
        file: path.to_owned(),
        offset: damage.offset,
        reason: damage.reason,
        bytes_dropped,
    };
    if repaired {
        tracing::error!(file = %path.display(), offset = entry.offset, reason = %entry.reason,
            bytes = bytes_dropped, "journal repair: dropping corrupt records");
        report.dropped.push(entry);
    } else {
        tracing::warn!(file = %path.display(), offset = entry.offset, reason = %entry.reason,
            bytes = bytes_dropped, "journal: truncating torn tail");
        metric::truncated();
        report.truncated = Some(entry);
    }
    // A segment cut inside its header holds nothing: delete it.
    if damage.offset < SEGMENT_HEADER_BYTES as u64 {
        storage.remove(path).map_err(io(path))?;
        return Ok(false);
    }
    storage.truncate(path, damage.offset).map_err(io(path))?;
    Ok(true)
}

fn drop_file(
    storage: &dyn Storage,
    path: &Path,
    reason: &str,
    report: &mut RecoveryReport,
) -> Result<(), Error> {
    let bytes_dropped = storage.read(path).map_or(0, |b| b.len() as u64);
    tracing::error!(file = %path.display(), reason, "journal repair: dropping segment");
    storage.remove(path).map_err(io(path))?;
    report.dropped.push(Damage {
        file: path.to_owned(),
        offset: 0,
        reason: reason.into(),
        bytes_dropped,
    });
    Ok(())
}

/// Deletes segments the snapshot and the floor cover, and an empty last segment (the
/// writer recreates it), then makes the deletions durable, and the last
/// segment kept.
///
/// The last segment may end in records whose fsync failed or never came
/// (the process stopped first): their answers were never sent, and their
/// durability is unknown. Recovery replays them, so they are made durable
/// here, before a repeat can be answered from them; a failing fsync stops
/// the start instead.
fn remove_covered(
    storage: &dyn Storage,
    dir: &Path,
    covered: &[(u64, PathBuf)],
    live: &mut Vec<(u64, PathBuf)>,
    last_empty: bool,
) -> Result<(), Error> {
    for (_, path) in covered {
        storage.remove(path).map_err(io(path))?;
    }
    if last_empty {
        if let Some((_, path)) = live.pop() {
            storage.remove(&path).map_err(io(&path))?;
        }
    } else if let Some((_, path)) = live.last() {
        storage.sync_file(path).map_err(io(path))?;
    }
    storage.sync_dir(dir).map_err(io(dir))
}

/// Checks every file in `dir` without changing anything: segments, record
/// counts, first and last sequence, and any damage.
///
/// # Errors
/// [`Error::Io`] when the directory or a file cannot be read.
pub fn verify(storage: &dyn Storage, dir: &Path) -> Result<VerifyReport, Error> {
    let listing = list(storage, dir)?;
    let mut report = VerifyReport::default();
    for (seq, path) in &listing.snapshots {
        let bytes = storage.read(path).map_err(io(path))?;
        let problem = match decode_snapshot(&bytes) {
            Ok((inner, _)) if inner == *seq => None,
            Ok((inner, _)) => Some(format!("header says seq {inner}, file name says {seq}")),
            Err(reason) => Some(reason.to_owned()),
        };
        report.snapshots.push((path.clone(), *seq, problem));
    }
    let snapshot_seq = listing.snapshots.last().map_or(0, |s| s.0);
    let mut expected: Option<u64> = None;
    let count = listing.segments.len();
    for (index, (first_seq, path)) in listing.segments.iter().enumerate() {
        match expected {
            Some(next) if next != *first_seq && *first_seq > snapshot_seq + 1 => report
                .gaps
                .push(format!("{}: expected first seq {next}", path.display())),
            None if *first_seq > snapshot_seq + 1 => report
                .gaps
                .push(format!("{}: records before it are missing", path.display())),
            _ => {}
        }
        let bytes = read_segment(storage, path)?;
        let scan = scan_segment(&bytes, *first_seq, &mut |_| Ok(()))
            .map_err(|(seq, source)| Error::Apply { seq, source })?;
        let mut damage = scan.damage;
        if let Some(d) = damage.as_mut() {
            d.torn_tail &= index + 1 == count;
        }
        expected = Some(scan.next_seq);
        report.segments.push(SegmentSummary {
            file: path.clone(),
            first_seq: *first_seq,
            records: scan.records,
            last_seq: scan.records.checked_sub(1).map(|n| first_seq + n),
            bytes: bytes.len() as u64,
            damage,
        });
    }
    check_reach(&mut report, expected);
    Ok(report)
}

/// A snapshot at `seq` is written only once every record up to `seq` is
/// durable, and it never deletes the active segment: so the segments must
/// reach at least `seq`. Ending below it, the last segment lost durable
/// records (truncated at a frame boundary, which its frames alone cannot
/// show). `next_seq` is the sequence after the last valid record read.
fn check_reach(report: &mut VerifyReport, next_seq: Option<u64>) {
    let claimed = report
        .snapshots
        .iter()
        .filter(|(_, _, problem)| problem.is_none())
        .map(|(_, seq, _)| *seq)
        .max();
    let Some(claimed) = claimed else {
        return;
    };
    match next_seq {
        Some(next) if next <= claimed => report.gaps.push(format!(
            "segments end at seq {}, short of snapshot seq {claimed} (durable when it was \
             written): a segment was truncated",
            next - 1
        )),
        None => report.gaps.push(format!(
            "no segment after snapshot seq {claimed}: the active segment is missing"
        )),
        _ => {}
    }
}

/// Calls `f` for every record in every segment of `dir`, in sequence order,
/// including records a snapshot covers; a torn tail ends the dump quietly.
/// Returns the number of records.
///
/// # Errors
/// [`Error::Corruption`] at the first damage that is not a torn tail, or
/// [`Error::Io`].
pub fn dump(
    storage: &dyn Storage,
    dir: &Path,
    mut f: impl FnMut(Record<'_>),
) -> Result<u64, Error> {
    let listing = list(storage, dir)?;
    let count = listing.segments.len();
    let mut total = 0;
    for (index, (first_seq, path)) in listing.segments.iter().enumerate() {
        let bytes = read_segment(storage, path)?;
        let scan = scan_segment(&bytes, *first_seq, &mut |record| {
            f(record);
            Ok(())
        })
        .map_err(|(seq, source)| Error::Apply { seq, source })?;
        total += scan.records;
        if let Some(damage) = scan.damage {
            if !(damage.torn_tail && index + 1 == count) {
                let (offset, reason) = (damage.offset, damage.reason);
                return Err(Error::Corruption {
                    file: path.clone(),
                    offset,
                    reason,
                });
            }
        }
    }
    Ok(total)
}

/// Reads the state as recovery would, without changing any file: the
/// newest valid snapshot, then every later record in sequence order; a torn
/// tail at the end ends it quietly. For operator tools (exports) that run
/// beside a live switch. Returns the number of records after the snapshot.
///
/// # Errors
/// [`Error::Corruption`] at damage that is not a torn tail (including a bad
/// newest snapshot), [`Error::Io`], or [`Error::Apply`] from `apply`.
pub fn read_state(
    storage: &dyn Storage,
    dir: &Path,
    mut apply: impl FnMut(Replay<'_>) -> Result<(), BoxError>,
) -> Result<u64, Error> {
    let listing = list(storage, dir)?;
    let mut report = RecoveryReport::default();
    let snapshot_seq =
        load_snapshot(storage, &listing, false, &mut report, &mut apply)?.unwrap_or(0);
    let count = listing.segments.len();
    let mut total = 0;
    for (index, (first_seq, path)) in listing.segments.iter().enumerate() {
        let bytes = read_segment(storage, path)?;
        let scan = scan_segment(&bytes, *first_seq, &mut |record| {
            if record.seq <= snapshot_seq {
                return Ok(());
            }
            total += 1;
            apply(Replay::Record(record))
        })
        .map_err(|(seq, source)| Error::Apply { seq, source })?;
        if let Some(damage) = scan.damage {
            if !(damage.torn_tail && index + 1 == count) {
                return Err(Error::Corruption {
                    file: path.clone(),
                    offset: damage.offset,
                    reason: damage.reason,
                });
            }
        }
    }
    Ok(total)
}
