//! The file layer the journal writes through. [`OsStorage`] is the real one
//! (std::fs, real fsync); tests supply a simulated disk that forgets unsynced
//! writes and fails on demand.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

use crate::format::{SEGMENT_FILE_BYTES_MAX, SEGMENT_PREALLOC_BYTES};

/// Directory and file operations the journal needs, and nothing more.
///
/// Files are append-only: written sequentially from creation, made durable
/// by [`StorageFile::sync`]; names become durable by [`Storage::sync_dir`].
pub trait Storage: Send + Sync + 'static {
    /// Creates `dir` and its parents if missing.
    ///
    /// # Errors
    /// The operating system's error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files in `dir`.
    ///
    /// # Errors
    /// The operating system's error.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of `path`.
    ///
    /// # Errors
    /// The operating system's error.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates `path` empty (truncating it if it exists), open for appending.
    ///
    /// # Errors
    /// The operating system's error.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Like [`Storage::create`], for a segment: the file may also hold
    /// zeros after what was written (see [`crate::SEGMENT_PREALLOC_BYTES`]),
    /// which readers take as the segment's end.
    ///
    /// # Errors
    /// The operating system's error.
    fn create_segment(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.create(path)
    }
    /// Cuts `path` to `len` bytes and makes that durable.
    ///
    /// # Errors
    /// The operating system's error.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Makes everything in `path` durable, whoever wrote it: recovery
    /// replays the last segment from what a crashed (or failed) process
    /// left, which may never have been fsynced.
    ///
    /// # Errors
    /// The operating system's error.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    /// The operating system's error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes `path`.
    ///
    /// # Errors
    /// The operating system's error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and deletions in `dir` durable.
    ///
    /// # Errors
    /// The operating system's error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for reading at any offset: the tail reader keeps a
    /// segment open and reads on from where it stopped while the writer
    /// appends, instead of reading the whole file again.
    ///
    /// # Errors
    /// The operating system's error (`NotFound` when `path` is gone).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageReader>>;
}

/// A file open for positional reads. It keeps reading what it opened even
/// after the name is removed (as an open file does on Unix), so a reader is
/// never cut off mid-file by a deletion.
pub trait StorageReader: Send {
    /// Reads up to `buf.len()` bytes starting at `offset`; returns how many
    /// (0 at or past the end of the file). Sees everything written to the
    /// file before the call, synced or not.
    ///
    /// # Errors
    /// The operating system's error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The file's current length in bytes (zeros written ahead included).
    ///
    /// # Errors
    /// The operating system's error.
    fn len_bytes(&self) -> io::Result<u64>;
}

/// A file open for appending.
pub trait StorageFile: Send {
    /// Appends all of `bytes`.
    ///
    /// # Errors
    /// The operating system's error (EIO, ENOSPC...).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (fdatasync).
    ///
    /// # Errors
    /// The operating system's error. After one, the journal never calls
    /// `sync` on this file again: what it reported durable is unknown.
    fn sync(&mut self) -> io::Result<()>;
}

/// The real file layer: std::fs with real fsync. Directories it creates
/// are 0700 and files 0600 (before the umask): records hold card tokens,
/// which are for the switch's owner alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

impl Storage for OsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(OsFile::create(path, false)?))
    }

    fn create_segment(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(OsFile::create(path, true)?))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        fs::File::open(path)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageReader>> {
        Ok(Box::new(OsReader {
            file: fs::File::open(path)?,
        }))
    }
}

/// A real file open read-only (pread).
struct OsReader {
    /// The open file.
    file: fs::File,
}

impl StorageReader for OsReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// Zeros per write call when extending a segment.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// A real file; `sync` is fdatasync (a size change is data for it).
struct OsFile {
    /// The open file.
    file: fs::File,
    /// Where the next write goes: the end of what was written.
    pos: u64,
    /// File size: `pos` plus any zeros written ahead.
    len: u64,
    /// Whether to keep zeros written ahead (segments).
    prealloc: bool,
}

impl OsFile {
    fn create(path: &Path, prealloc: bool) -> io::Result<Self> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        Ok(OsFile {
            file,
            pos: 0,
            len: 0,
            prealloc,
        })
    }

    /// Keeps at least half of [`SEGMENT_PREALLOC_BYTES`] of zeros after
    /// `pos`, so most fdatasyncs find the file size unchanged.
    fn extend(&mut self) -> io::Result<()> {
        let want = (self.pos + SEGMENT_PREALLOC_BYTES).min(SEGMENT_FILE_BYTES_MAX);
        if self.len >= self.pos + SEGMENT_PREALLOC_BYTES / 2 || self.len >= want {
            return Ok(());
        }
        let mut at = self.len.max(self.pos);
        while at < want {
            // At most ZEROS.len(): fits usize.
            let n = (want - at).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        self.len = want;
        Ok(())
    }
}

impl StorageFile for OsFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.pos)?;
        self.pos += bytes.len() as u64;
        self.len = self.len.max(self.pos);
        if self.prealloc {
            self.extend()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}
