//! The tail reader: the records after a position, in order, following the
//! live journal as the writer appends and rotates (or, opened alone, up to
//! the end of the valid data in a directory).
//!
//! It keeps one segment open and the offset of the next frame in it, reads
//! on from there into one buffer of at most [`TAIL_READ_BYTES_MAX`], and
//! checks every frame's CRC and sequence. Segments are found by name: when
//! the record it wants is not at its offset, the segment ended and the next
//! one is `{seq}.seg`.
//!
//! Bytes past the durable seq may be half written (or still the zeros the
//! writer keeps ahead): the tail never decodes a frame whose seq would be
//! above the bound, and a buffer read earlier in the call may be stale
//! beyond what it used, so a frame that does not check is read again from
//! the file before it counts as damage. What the durable seq covers was in
//! the file before the seq was published, so a second miss there is real
//! damage, reported as [`Error::Corruption`] with file and offset.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{io, Error};
use crate::format::{
    decode_frame, decode_segment_header, segment_name, valid_frame_after, Frame, Record,
    SEGMENT_FILE_BYTES_MAX, SEGMENT_HEADER_BYTES, TAIL_READ_BYTES_MAX, TAIL_READ_BYTES_MIN,
};
use crate::journal::Shared;
use crate::recovery::{all_zeros, list_segments};
use crate::storage::{Storage, StorageReader};

/// Listings at open when the segment chosen is deleted before it is opened
/// (a snapshot's clean-up running at the same time): the second listing
/// shows the deletion, so two are enough.
const OPEN_ATTEMPTS_MAX: usize = 2;

/// Reads the journal's records after a position, in sequence order.
///
/// From [`crate::Journal::tail`] it follows the running journal and never
/// reads above its durable seq; from [`Tail::open`] it reads a directory
/// no journal is writing (an offline tool) up to the end of its valid data.
/// One buffer of [`TAIL_READ_BYTES_MAX`], allocated at open.
pub struct Tail {
    /// File layer the segments are read through.
    storage: Arc<dyn Storage>,
    /// Journal directory, for the next segment's name.
    dir: PathBuf,
    /// The running journal, whose durable seq bounds every read; `None`
    /// offline, where the end of valid data is the end.
    live: Option<Arc<Shared>>,
    /// The first sequence not yet handed out (`after_seq + 1` at open).
    next_seq: u64,
    /// The open segment's path, for errors and to know where we are.
    path: PathBuf,
    /// The open segment.
    file: Box<dyn StorageReader>,
    /// Sequence of the frame at the cursor: below `next_seq` while the
    /// first segment's earlier records are skipped.
    file_seq: u64,
    /// The read buffer, `TAIL_READ_BYTES_MAX` long.
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    /// Bytes of `buf` filled by the last read.
    filled: usize,
    /// Cursor in `buf`: the next frame starts here.
    pos: usize,
    /// The last read stopped at the end of the file.
    eof: bool,
    /// Size of the next read: `TAIL_READ_BYTES_MIN` after catching up,
    /// doubled (up to the maximum) each time a full buffer is used up.
    read_bytes: usize,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("position", &self.position())
            .field("file", &self.path)
            .field("offset", &self.cursor_offset())
            .field("live", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

/// What the bytes at the cursor mean for the read loop.
enum Step {
    /// A valid frame with the expected seq was used; advance by its bytes.
    Used(usize),
    /// Read again from the cursor; `grow` when a full buffer was used up.
    Refill {
        /// Double the read size first.
        grow: bool,
    },
    /// Freshly read, and the expected record is not here: the segment ends
    /// (`Ok`: zeros or the file's end) or is damaged (`Err`: the reason).
    End(Result<(), String>),
}

impl Tail {
    /// Opens a tail over `dir` with no journal running (an offline tool such
    /// as an archive rebuild): [`Tail::read`] goes up to the end of the valid
    /// data, and a torn last frame (a crash) ends it quietly.
    ///
    /// # Errors
    /// [`Error::TailGap`] when record `after_seq + 1` is no longer on disk,
    /// [`Error::Corruption`] for a bad segment header, [`Error::Io`]
    /// (`NotFound` for a directory without segments).
    pub fn open(storage: Arc<dyn Storage>, dir: &Path, after_seq: u64) -> Result<Tail, Error> {
        Tail::start(storage, dir, after_seq, None)
    }

    /// Opens the segment holding `after_seq + 1`.
    pub(crate) fn start(
        storage: Arc<dyn Storage>,
        dir: &Path,
        after_seq: u64,
        live: Option<Arc<Shared>>,
    ) -> Result<Tail, Error> {
        let next_seq = after_seq.saturating_add(1);
        for _ in 0..OPEN_ATTEMPTS_MAX {
            let segments = list_segments(&*storage, dir)?;
            let Some(&(first_seq, ref path)) = segments.iter().rev().find(|s| s.0 <= next_seq)
            else {
                let Some(first) = segments.first() else {
                    let none = io::Error::new(io::ErrorKind::NotFound, "no journal segment files");
                    return Err(io(dir)(none));
                };
                return Err(Error::TailGap {
                    wanted: next_seq,
                    first_available: first.0,
                });
            };
            let file = match storage.open_read(path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(path)(e)),
            };
            let mut tail = Tail {
                storage,
                dir: dir.to_owned(),
                live,
                next_seq,
                path: path.clone(),
                file,
                file_seq: first_seq,
                buf: vec![0; TAIL_READ_BYTES_MAX],
                buf_offset: 0,
                filled: 0,
                pos: 0,
                eof: false,
                read_bytes: TAIL_READ_BYTES_MIN,
            };
            tail.check_header()?;
            return Ok(tail);
        }
        let gone = io::Error::new(io::ErrorKind::NotFound, "segments deleted while opening");
        Err(io(dir)(gone))
    }

    /// The last sequence handed out (or `after_seq` before any): the next
    /// [`Tail::read`] starts after it.
    pub fn position(&self) -> u64 {
        self.next_seq - 1
    }

    /// Calls `f` for each record with seq in `(position, upto_seq]`, in
    /// order, at most `max_records` of them; returns how many. A tail from
    /// [`crate::Journal::tail`] also stops at the journal's durable seq
    /// (the drainer passes `journal.durable_seq()` anyway); an offline one
    /// stops at the end of the valid data. Nothing left: `Ok(0)`, no I/O.
    /// Records before an error were handed out and stay handed out.
    ///
    /// # Errors
    /// [`Error::Corruption`] naming file and offset for damage (a bad CRC, a
    /// wrong seq, a missing durable record, a segment not ending in zeros);
    /// [`Error::TailGap`] when the next segment was deleted under the tail
    /// (no retain floor protected it); [`Error::Io`].
    pub fn read(
        &mut self,
        upto_seq: u64,
        max_records: usize,
        mut f: impl FnMut(Record<'_>),
    ) -> Result<usize, Error> {
        let upto_seq = match &self.live {
            Some(shared) => upto_seq.min(shared.durable_seq()),
            None => upto_seq,
        };
        let mut count = 0;
        // Whether the buffer was read during this call, after `upto_seq`
        // was durable: only then is a miss at the cursor real.
        let mut fresh = false;
        while count < max_records && self.next_seq <= upto_seq {
            let step = match decode_frame(&self.buf[self.pos..self.filled]) {
                Frame::Valid { record, bytes } if record.seq == self.file_seq => {
                    if record.seq >= self.next_seq {
                        f(record);
                        count += 1;
                    }
                    Step::Used(bytes)
                }
                frame => self.miss(&frame, fresh),
            };
            match step {
                Step::Used(bytes) => {
                    self.pos += bytes;
                    self.file_seq += 1;
                    self.next_seq = self.next_seq.max(self.file_seq);
                }
                Step::Refill { grow } => {
                    if grow {
                        self.read_bytes = (self.read_bytes * 2).min(TAIL_READ_BYTES_MAX);
                    }
                    self.refill()?;
                    fresh = true;
                }
                Step::End(clean) => {
                    self.read_bytes = TAIL_READ_BYTES_MIN;
                    if !self.end_of_segment(clean)? {
                        break;
                    }
                    fresh = false;
                }
            }
        }
        debug_assert!(
            count == 0 || self.position() <= upto_seq,
            "never past the bound"
        );
        Ok(count)
    }

    /// What to do when the cursor does not hold the expected record.
    fn miss(&self, frame: &Frame<'_>, fresh: bool) -> Step {
        let rest = &self.buf[self.pos..self.filled];
        match frame {
            // The buffer ends inside the frame (or exactly before it).
            Frame::Incomplete if !self.eof && (self.pos > 0 || !fresh) => {
                Step::Refill { grow: self.pos > 0 }
            }
            _ if !fresh => Step::Refill { grow: false },
            _ if all_zeros(rest) => Step::End(Ok(())),
            Frame::Valid { record, .. } => Step::End(Err(format!(
                "sequence gap: expected seq {}, found {}",
                self.file_seq, record.seq
            ))),
            Frame::Incomplete => Step::End(Err("record runs past end of file".into())),
            Frame::Invalid(reason) => Step::End(Err((*reason).into())),
        }
    }

    /// Reads from the cursor's file offset into the buffer.
    fn refill(&mut self) -> Result<(), Error> {
        let offset = self.cursor_offset();
        let want = self.read_bytes;
        let filled =
            read_full(&*self.file, offset, &mut self.buf[..want]).map_err(io(&self.path))?;
        self.buf_offset = offset;
        self.pos = 0;
        self.filled = filled;
        self.eof = filled < want;
        Ok(())
    }

    /// The open segment has no record `file_seq` at the cursor: moves to the
    /// next segment (`Ok(true)`), or finds the end of an offline journal's
    /// data (`Ok(false)`), or the damage.
    fn end_of_segment(&mut self, clean: Result<(), String>) -> Result<bool, Error> {
        let next = self.dir.join(segment_name(self.file_seq));
        let file = match self.storage.open_read(&next) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.no_next_segment(clean),
            Err(e) => return Err(io(&next)(e)),
        };
        if let Err(reason) = clean {
            return Err(self.corruption(self.cursor_offset(), reason));
        }
        self.check_zeros_to_end()?;
        self.path = next;
        self.file = file;
        self.check_header()?;
        Ok(true)
    }

    /// No segment starts at `file_seq`. Damage at the cursor is corruption,
    /// except a torn tail offline: damage in the newest segment after which
    /// no valid frame follows (in what was read). A clean end is a gap
    /// (later segments exist), a deletion under the tail (every segment
    /// starts after it), a missing durable record (live), or the end of the
    /// data (offline).
    fn no_next_segment(&self, clean: Result<(), String>) -> Result<bool, Error> {
        let offset = self.cursor_offset();
        let segments = list_segments(&*self.storage, &self.dir)?;
        let later = segments.iter().find(|s| s.0 > self.file_seq);
        if let Err(reason) = clean {
            let rest = &self.buf[..self.filled];
            if self.live.is_some()
                || later.is_some()
                || valid_frame_after(rest, self.pos + 1, self.file_seq)
            {
                return Err(self.corruption(offset, reason));
            }
            return Ok(false);
        }
        if let Some(first) = segments.first().filter(|s| s.0 > self.file_seq) {
            return Err(Error::TailGap {
                wanted: self.file_seq.max(self.next_seq),
                first_available: first.0,
            });
        }
        if let Some(later) = later {
            let reason = format!(
                "records from seq {} missing: the next segment starts at seq {}",
                self.file_seq, later.0
            );
            return Err(self.corruption(offset, reason));
        }
        if self.live.is_some() {
            let reason = format!(
                "durable record seq {} missing: the segment ends here",
                self.file_seq
            );
            return Err(self.corruption(offset, reason));
        }
        Ok(false)
    }

    /// A sealed segment ends in zeros after its last record: anything else
    /// there is damage.
    fn check_zeros_to_end(&mut self) -> Result<(), Error> {
        let mut offset = self.cursor_offset();
        // Bounded: each pass reads at least one byte of a file no longer
        // than SEGMENT_FILE_BYTES_MAX, or stops.
        while offset <= SEGMENT_FILE_BYTES_MAX {
            let n = read_full(&*self.file, offset, &mut self.buf).map_err(io(&self.path))?;
            if let Some(at) = self.buf[..n].iter().position(|&b| b != 0) {
                let reason = "non-zero bytes after the segment's last record".to_owned();
                return Err(self.corruption(offset + at as u64, reason));
            }
            if n < self.buf.len() {
                return Ok(());
            }
            offset += n as u64;
        }
        let reason = "segment larger than SEGMENT_BYTES_MAX allows".to_owned();
        Err(self.corruption(SEGMENT_FILE_BYTES_MAX, reason))
    }

    /// Reads the open segment's header and places the cursor after it.
    fn check_header(&mut self) -> Result<(), Error> {
        let head = &mut self.buf[..SEGMENT_HEADER_BYTES];
        let n = read_full(&*self.file, 0, head).map_err(io(&self.path))?;
        match decode_segment_header(&self.buf[..n]) {
            Ok(seq) if seq == self.file_seq => {}
            Ok(seq) => {
                let reason = format!(
                    "header says first seq {seq}, file name says {}",
                    self.file_seq
                );
                return Err(self.corruption(0, reason));
            }
            Err(reason) => return Err(self.corruption(0, reason.into())),
        }
        self.buf_offset = SEGMENT_HEADER_BYTES as u64;
        self.pos = 0;
        self.filled = 0;
        self.eof = false;
        Ok(())
    }

    /// File offset of the cursor.
    fn cursor_offset(&self) -> u64 {
        self.buf_offset + self.pos as u64
    }

    fn corruption(&self, offset: u64, reason: String) -> Error {
        Error::Corruption {
            file: self.path.clone(),
            offset,
            reason,
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &dyn StorageReader, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        // Each pass reads at least one byte or stops.
        match file.read_at(offset + filled as u64, &mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
