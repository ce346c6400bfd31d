//! The on-disk format: capacity constants, record frames, segment and snapshot
//! headers, file names. Pure functions over bytes: no I/O, no clock.
//!
//! Segment file `{first_seq:020}.seg`:
//! ```text
//! header (24 bytes): magic "SWJRNSEG" | version u16 | reserved u16 | first_seq u64 | crc32c u32
//! frame  (17 + n):   crc32c u32 | payload_len u32 | seq u64 | record_type u8 | payload [n]
//! ```
//! The frame CRC covers everything after it (length, seq, type, payload).
//! A segment may end in zeros: the writer extends the file with zeros ahead
//! of its data ([`SEGMENT_PREALLOC_BYTES`] at a time), so an fdatasync
//! flushes data only, not also a new file size. Zeros from a frame position
//! to the end of the file are the segment's clean end (a frame header of
//! zeros never checks: its CRC would be that of zeros, not 0).
//!
//! Snapshot file `{seq:020}.snap` (written as `.snap.tmp`, then renamed):
//! ```text
//! header (36 bytes): magic "SWJRNSNP" | version u16 | reserved u16 | seq u64
//!                    | payload_len u64 | payload crc32c u32 | header crc32c u32
//! payload [payload_len]
//! ```
//! All integers are little-endian.

/// Target size of one segment file; the writer rotates before a frame would
/// cross it (a lone oversized frame may overshoot by one frame).
pub const SEGMENT_BYTES_MAX: u64 = 64 << 20;
/// Zeros the writer keeps written ahead of a segment's data (at least half
/// this, at most this; never past the largest segment file recovery reads).
/// Each extension's fdatasync carries the size change; the ones between
/// carry data only (no file-system journal commit for a size): measured in
/// docs/journal.md, "Zeros ahead" (`benches/fsync_probe.py` runs both ways).
pub const SEGMENT_PREALLOC_BYTES: u64 = 1 << 20;
/// Smallest segment size a [`crate::Config`] may ask for (tests use small
/// segments to exercise rotation).
pub const SEGMENT_BYTES_MIN: u64 = 4 << 10;
/// Largest record payload; checked at append, before any copy.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 10;
/// Records queued between the appenders and the writer thread.
pub const JOURNAL_QUEUE_DEPTH_MAX: usize = 4096;
/// Records the writer takes into one group commit.
pub const BATCH_RECORDS_MAX: usize = 1024;
/// Bytes the writer takes into one group commit (one write call).
pub const BATCH_BYTES_MAX: usize = 1 << 20;
/// Longest flush interval in immediate mode: the loss window on power loss.
pub const FLUSH_INTERVAL_MS_MAX: u64 = 5;
/// Largest snapshot the journal writes or reads back.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;
/// Largest read the tail reader makes, and the size of its one buffer
/// (allocated when it opens): four group commits' worth, so a tail that is
/// far behind reads in few calls while its memory stays bounded. Measured
/// in docs/journal.md, "Tail".
pub const TAIL_READ_BYTES_MAX: usize = 4 << 20;

/// Frame header: crc u32, len u32, seq u64, type u8.
pub(crate) const FRAME_HEADER_BYTES: usize = 4 + 4 + 8 + 1;
/// Largest frame, header included.
pub(crate) const FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX;
/// Segment header: magic, version, reserved, first_seq, crc.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 8 + 2 + 2 + 8 + 4;
/// Snapshot header: magic, version, reserved, seq, len, payload crc, header crc.
pub(crate) const SNAPSHOT_HEADER_BYTES: usize = 8 + 2 + 2 + 8 + 8 + 4 + 4;
/// The tail reader's first read after it caught up: holds any one frame,
/// so a read that starts at a frame always holds the whole frame; the size
/// doubles (to [`TAIL_READ_BYTES_MAX`]) while the tail is behind.
pub(crate) const TAIL_READ_BYTES_MIN: usize = 128 << 10;
/// Largest segment file recovery will read: target plus one overshooting frame.
pub(crate) const SEGMENT_FILE_BYTES_MAX: u64 =
    SEGMENT_BYTES_MAX + SEGMENT_HEADER_BYTES as u64 + FRAME_BYTES_MAX as u64;

const SEGMENT_MAGIC: [u8; 8] = *b"SWJRNSEG";
const SNAPSHOT_MAGIC: [u8; 8] = *b"SWJRNSNP";
/// Bumped on any incompatible format change; readers refuse other versions.
const FORMAT_VERSION: u16 = 1;

const _: () = assert!(BATCH_RECORDS_MAX <= JOURNAL_QUEUE_DEPTH_MAX);
const _: () = assert!(FRAME_BYTES_MAX <= BATCH_BYTES_MAX);
const _: () = assert!((BATCH_BYTES_MAX as u64) <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN < SEGMENT_BYTES_MAX);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(FRAME_HEADER_BYTES < SEGMENT_BYTES_MIN as usize);
const _: () = assert!(SEGMENT_PREALLOC_BYTES < SEGMENT_FILE_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX <= TAIL_READ_BYTES_MIN);
const _: () = assert!(TAIL_READ_BYTES_MIN <= TAIL_READ_BYTES_MAX);
const _: () = assert!(SEGMENT_HEADER_BYTES <= TAIL_READ_BYTES_MIN);

/// One journal record, borrowed from a segment buffer during replay or dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Position in the log: 1 for the first record ever, dense, never reused.
    pub seq: u64,
    /// Switch-defined kind of state change; the journal does not interpret it.
    pub record_type: u8,
    /// Switch-defined encoding of the state change.
    pub payload: &'a [u8],
}

/// What a byte range holds when read as a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole frame whose CRC matches; `bytes` is its length on disk.
    Valid { record: Record<'a>, bytes: usize },
    /// The frame's header or claimed length runs past the end of the buffer.
    Incomplete,
    /// A whole frame that fails its checks.
    Invalid(&'static str),
}

/// Appends one frame to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: u64, record_type: u8, payload: &[u8]) {
    assert!(
        payload.len() <= RECORD_PAYLOAD_BYTES_MAX,
        "payload checked by caller"
    );
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Fits: RECORD_PAYLOAD_BYTES_MAX <= u32::MAX (compile-time assertion).
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(record_type);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert!(
        matches!(decode_frame(&out[start..]), Frame::Valid { record, .. } if record.seq == seq),
        "a frame reads back as written"
    );
}

/// Reads the frame at the start of `buf` (checks length before CRC).
pub(crate) fn decode_frame(buf: &[u8]) -> Frame<'_> {
    let Some(head) = buf.get(..FRAME_HEADER_BYTES) else {
        return Frame::Incomplete;
    };
    let crc = u32_at(head, 0);
    let len = u32_at(head, 4) as usize;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return Frame::Invalid("payload length exceeds RECORD_PAYLOAD_BYTES_MAX");
    }
    let Some(whole) = buf.get(..FRAME_HEADER_BYTES + len) else {
        return Frame::Incomplete;
    };
    if crc32c::crc32c(&whole[4..]) != crc {
        return Frame::Invalid("record CRC mismatch");
    }
    let record = Record {
        seq: u64_at(head, 8),
        record_type: head[16],
        payload: &whole[FRAME_HEADER_BYTES..],
    };
    Frame::Valid {
        record,
        bytes: whole.len(),
    }
}

/// True when a valid frame with `seq >= seq_min` starts anywhere in `buf`
/// at or after `from`: tells damage in the middle of a file (something valid
/// follows) from a torn tail (nothing does).
pub(crate) fn valid_frame_after(buf: &[u8], from: usize, seq_min: u64) -> bool {
    (from..buf.len()).any(|offset| {
        matches!(decode_frame(&buf[offset..]), Frame::Valid { record, .. } if record.seq >= seq_min)
    })
}

/// The header every segment file starts with.
pub(crate) fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&out[..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode_segment_header(&out), Ok(first_seq));
    out
}

/// Reads a segment header: the segment's first sequence number.
pub(crate) fn decode_segment_header(buf: &[u8]) -> Result<u64, &'static str> {
    let Some(head) = buf.get(..SEGMENT_HEADER_BYTES) else {
        return Err("segment header incomplete");
    };
    if head[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic");
    }
    if crc32c::crc32c(&head[..20]) != u32_at(head, 20) {
        return Err("segment header CRC mismatch");
    }
    if u16::from_le_bytes([head[8], head[9]]) != FORMAT_VERSION {
        return Err("unsupported segment format version");
    }
    Ok(u64_at(head, 12))
}

/// The header of a snapshot file holding `payload` as of `seq`.
pub(crate) fn snapshot_header(seq: u64, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut out = [0u8; SNAPSHOT_HEADER_BYTES];
    out[..8].copy_from_slice(&SNAPSHOT_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&seq.to_le_bytes());
    out[20..28].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    out[28..32].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&out[..32]);
    out[32..36].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a whole snapshot file: the sequence it covers and its payload.
pub(crate) fn decode_snapshot(buf: &[u8]) -> Result<(u64, &[u8]), &'static str> {
    let Some(head) = buf.get(..SNAPSHOT_HEADER_BYTES) else {
        return Err("snapshot header incomplete");
    };
    if head[..8] != SNAPSHOT_MAGIC {
        return Err("bad snapshot magic");
    }
    if crc32c::crc32c(&head[..32]) != u32_at(head, 32) {
        return Err("snapshot header CRC mismatch");
    }
    if u16::from_le_bytes([head[8], head[9]]) != FORMAT_VERSION {
        return Err("unsupported snapshot format version");
    }
    let len = u64_at(head, 20);
    if len > SNAPSHOT_BYTES_MAX || buf.len() as u64 != SNAPSHOT_HEADER_BYTES as u64 + len {
        return Err("snapshot length does not match its header");
    }
    let payload = &buf[SNAPSHOT_HEADER_BYTES..];
    if crc32c::crc32c(payload) != u32_at(head, 28) {
        return Err("snapshot payload CRC mismatch");
    }
    Ok((u64_at(head, 12), payload))
}

/// Kinds of file the journal keeps in its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// `{first_seq}.seg`.
    Segment,
    /// `{seq}.snap`.
    Snapshot,
    /// `{seq}.snap.tmp`: a snapshot that never got renamed; deleted at open.
    SnapshotTemp,
}

/// File name of the segment starting at `first_seq`.
pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// File name of the snapshot covering records up to `seq`.
pub(crate) fn snapshot_name(seq: u64) -> String {
    format!("{seq:020}.snap")
}

/// Parses a journal file name; `None` for files the journal does not own.
pub(crate) fn parse_name(name: &str) -> Option<(FileKind, u64)> {
    let (stem, kind) = if let Some(stem) = name.strip_suffix(".seg") {
        (stem, FileKind::Segment)
    } else if let Some(stem) = name.strip_suffix(".snap") {
        (stem, FileKind::Snapshot)
    } else if let Some(stem) = name.strip_suffix(".snap.tmp") {
        (stem, FileKind::SnapshotTemp)
    } else {
        return None;
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(|seq| (kind, seq))
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&segment_name(42)), Some((FileKind::Segment, 42)));
        assert_eq!(parse_name(&snapshot_name(7)), Some((FileKind::Snapshot, 7)));
        let temp = format!("{}.tmp", snapshot_name(7));
        assert_eq!(parse_name(&temp), Some((FileKind::SnapshotTemp, 7)));
        assert_eq!(parse_name("notes.txt"), None);
        assert_eq!(parse_name("12.seg"), None);
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let head = segment_header(99);
        assert_eq!(decode_segment_header(&head), Ok(99));
        for bit in 0..head.len() * 8 {
            let mut bad = head;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_segment_header(&bad).is_err(), "bit {bit}");
        }
        let payload = b"state";
        let mut snap = snapshot_header(5, payload).to_vec();
        snap.extend_from_slice(payload);
        assert_eq!(decode_snapshot(&snap), Ok((5, &payload[..])));
        snap.push(0);
        assert!(decode_snapshot(&snap).is_err());
    }

    proptest! {
        #[test]
        fn frames_round_trip(seq in 1u64.., record_type: u8, payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            encode_frame(&mut out, seq, record_type, &payload);
            prop_assert_eq!(out.len(), FRAME_HEADER_BYTES + payload.len());
            let expected = Record { seq, record_type, payload: &payload };
            prop_assert_eq!(decode_frame(&out), Frame::Valid { record: expected, bytes: out.len() });
            for cut in 0..out.len() {
                prop_assert_eq!(decode_frame(&out[..cut]), Frame::Incomplete);
            }
        }

        #[test]
        fn every_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..64), bit in 0usize..(81 * 8)) {
            let mut out = Vec::new();
            encode_frame(&mut out, 3, 1, &payload);
            let bit = bit % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            let valid = matches!(decode_frame(&out), Frame::Valid { .. });
            prop_assert!(!valid, "flipped bit {} went undetected", bit);
        }
    }
}
