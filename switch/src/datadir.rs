//! The data directory: one switch at a time, and owner-only modes.
//!
//! Two switches on one directory would each truncate and append to the
//! other's live journal segment, losing approvals already acknowledged. So
//! `start` takes an exclusive `flock` on `<data_dir>/switch.lock` before
//! anything reads or writes the journal, the snapshots or the token key, and
//! holds it for the process's life (the kernel drops it when the process
//! ends, however it ends). The file keeps the holder's pid for the refusal
//! message; it is never removed, because removing a locked file would let a
//! third process lock a new file of the same name. Read-only tools (`journal
//! verify|dump`, `export`) do not take it; `keys` and `mandates` have their
//! own lock on `keys.json`.
//!
//! Modes: the journal and `token.key` hold card tokens and the key that
//! makes them, so at start the directory and what is in it lose any
//! permission for group or others (a warning names each file fixed); new
//! files are created 0600.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in the data directory.
pub(crate) const LOCK_FILE: &str = "switch.lock";

/// Most bytes of the lock file read for the holder's pid (a decimal u32
/// and a newline fit many times over).
const LOCK_FILE_BYTES_MAX: u64 = 64;

/// Directory levels checked for modes: the data directory and its
/// `journal/` (nothing the switch writes is deeper).
const MODE_CHECK_DEPTH_MAX: usize = 2;

/// Entries checked per directory: far above what the switch keeps (a few
/// segments and snapshots), so a directory that big is not walked forever.
const MODE_CHECK_ENTRIES_MAX: usize = 100_000;

/// Permission bits for group and others: none are wanted.
const GROUP_OTHER_BITS: u32 = 0o077;

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DataDirError {
    /// Another process holds the lock.
    #[error("data directory {} is in use by another switch (pid {holder}, per {}); stop it first, or give this one another --data-dir", .dir.display(), .lock.display())]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// The pid the lock file names, or "unknown".
        holder: String,
    },
    /// The directory or the lock file cannot be created, read or locked.
    #[error("data directory {}: {source}", .path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The exclusive lock on a data directory; released when dropped (or when
/// the process ends).
#[derive(Debug)]
pub(crate) struct DirLock {
    /// The open, locked lock file: unlocked and closed when dropped.
    _file: Flock<File>,
}

/// Creates `dir` (0700) if missing, locks it for this process and writes
/// this process's pid into the lock file.
///
/// # Errors
/// [`DataDirError::InUse`] naming the holder's pid when another process (or
/// another `start` in this one) holds it; [`DataDirError::Io`] otherwise.
pub(crate) fn lock(dir: &Path) -> Result<DirLock, DataDirError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let path = dir.join(LOCK_FILE);
    // Not truncated at open: until locked, the pid in it is the holder's.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = (&file).take(LOCK_FILE_BYTES_MAX).read_to_string(&mut text);
            let holder = match text.trim() {
                "" => "unknown".to_owned(),
                pid => pid.to_owned(),
            };
            return Err(DataDirError::InUse {
                dir: dir.to_path_buf(),
                lock: path,
                holder,
            });
        }
        Err((_, errno)) => return Err(io(&path)(errno.into())),
    };
    file.set_len(0).map_err(io(&path))?;
    file.rewind().map_err(io(&path))?;
    writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
    Ok(DirLock { _file: file })
}

/// Removes group and other permissions from `dir` and everything the
/// switch keeps in it, with a warning per fix. Symbolic links are left
/// alone (their target is not ours to change).
///
/// # Errors
/// When a directory cannot be listed or a mode cannot be changed.
pub(crate) fn tighten_modes(dir: &Path) -> Result<usize, DataDirError> {
    let mut fixed = 0;
    let mut pending = vec![(dir.to_path_buf(), 1)];
    while let Some((current, depth)) = pending.pop() {
        fixed += usize::from(tighten(&current)?);
        let entries = std::fs::read_dir(&current).map_err(io(&current))?;
        for entry in entries.take(MODE_CHECK_ENTRIES_MAX) {
            let entry = entry.map_err(io(&current))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io(&path))?;
            if kind.is_dir() && depth < MODE_CHECK_DEPTH_MAX {
                pending.push((path, depth + 1));
            } else if kind.is_file() {
                fixed += usize::from(tighten(&path)?);
            }
        }
    }
    Ok(fixed)
}

/// Clears group and other bits of one file or directory; returns whether
/// it had any.
fn tighten(path: &Path) -> Result<bool, DataDirError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_BITS == 0 || meta.file_type().is_symlink() {
        return Ok(false);
    }
    let tightened = mode & !GROUP_OTHER_BITS;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(tightened)).map_err(io(path))?;
    tracing::warn!(
        file = %path.display(),
        was = format!("{mode:04o}"),
        now = format!("{tightened:04o}"),
        "data directory: group or others had access; removed"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("datadir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = temp_dir("lock");
        let held = lock(&dir).expect("first lock");
        let refused = lock(&dir).expect_err("second lock refused");
        let message = refused.to_string();
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        assert!(message.contains(&dir.display().to_string()), "{message}");
        drop(held);
        lock(&dir).expect("free again once dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn modes_lose_group_and_other_bits() {
        let dir = temp_dir("modes");
        std::fs::create_dir_all(dir.join("journal")).expect("dirs");
        let file = dir.join("journal").join("x.seg");
        std::fs::write(&file, b"x").expect("file");
        for p in [&dir, &dir.join("journal")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(tighten_modes(&dir).expect("fixed"), 3);
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("journal")), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(tighten_modes(&dir).expect("nothing left"), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
