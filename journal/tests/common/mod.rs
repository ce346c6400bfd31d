//! A simulated disk for the journal's file layer: in memory, records every
//! operation, forgets unsynced data (and tears the last of it) on a crash,
//! and fails writes, fsyncs or space on demand.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use journal::{Storage, StorageFile, StorageReader};

/// splitmix64: a seeded generator, enough for tests and reproducible.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One file-layer operation, as recorded in the trace.
#[derive(Debug, Clone)]
pub enum Op {
    Create { path: PathBuf },
    Write { inode: u64, data: Vec<u8> },
    Sync { inode: u64 },
    Truncate { path: PathBuf, len: u64 },
    Rename { from: PathBuf, to: PathBuf },
    Remove { path: PathBuf },
    SyncDir,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    synced_len: usize,
}

/// What the disk holds: names now, names as of the last directory fsync,
/// and file contents with how much of each is fsynced.
#[derive(Debug, Clone, Default)]
pub struct State {
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
}

impl State {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { path } => {
                let inode = self.next_inode;
                self.next_inode += 1;
                self.inodes.insert(inode, Inode::default());
                self.names.insert(path.clone(), inode);
            }
            Op::Write { inode, data } => {
                self.inodes
                    .get_mut(inode)
                    .expect("inode")
                    .data
                    .extend_from_slice(data);
            }
            Op::Sync { inode } => {
                let file = self.inodes.get_mut(inode).expect("inode");
                file.synced_len = file.data.len();
            }
            Op::Truncate { path, len } => {
                let inode = self.names[path];
                let file = self.inodes.get_mut(&inode).expect("inode");
                file.data.truncate(*len as usize);
                file.synced_len = file.data.len();
            }
            Op::Rename { from, to } => {
                let inode = self.names.remove(from).expect("rename source");
                self.names.insert(to.clone(), inode);
            }
            Op::Remove { path } => {
                self.names.remove(path);
            }
            Op::SyncDir => self.durable_names = self.names.clone(),
        }
    }

    /// Replays the first `ops` of a trace on an empty disk.
    pub fn replay(trace: &[Op]) -> State {
        let mut state = State::default();
        for op in trace {
            state.apply(op);
        }
        state
    }

    /// The disk after a power loss: durable names only; each file keeps its
    /// fsynced bytes plus a random prefix (possibly none) of the unsynced
    /// ones, whose last bytes may be torn (zeros or garbage).
    pub fn crash(&self, rng: &mut Rng) -> State {
        let mut out = State {
            names: self.durable_names.clone(),
            durable_names: self.durable_names.clone(),
            inodes: HashMap::new(),
            next_inode: self.next_inode,
        };
        for inode in self.durable_names.values() {
            let file = &self.inodes[inode];
            let unsynced = (file.data.len() - file.synced_len) as u64;
            let keep = match rng.below(3) {
                0 => 0,
                _ => rng.below(unsynced + 1) as usize,
            };
            let mut data = file.data[..file.synced_len + keep].to_vec();
            if keep > 0 && rng.below(2) == 0 {
                let torn = 1 + rng.below(keep.min(16) as u64) as usize;
                let garbage = rng.below(2) == 0;
                let len = data.len();
                for byte in &mut data[len - torn..] {
                    *byte = if garbage { rng.next() as u8 } else { 0 };
                }
            }
            let synced_len = data.len();
            out.inodes.insert(*inode, Inode { data, synced_len });
        }
        out
    }

    /// Files (by name) and their contents.
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        self.names
            .iter()
            .map(|(name, inode)| (name.clone(), self.inodes[inode].data.clone()))
            .collect()
    }

    /// Overwrites a file's content (for corruption tests); all durable.
    pub fn set_file(&mut self, path: &Path, data: Vec<u8>) {
        let inode = self.names[path];
        let synced_len = data.len();
        self.inodes.insert(inode, Inode { data, synced_len });
    }
}

/// Failpoints: each makes the matching operation fail from then on.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Writes fail with EIO.
    pub fail_writes: bool,
    /// fsyncs fail with EIO.
    pub fail_syncs: bool,
    /// Writes that would take the total file bytes past this fail with ENOSPC.
    pub space_bytes: Option<u64>,
    /// Writes and fsyncs block while set (a stalled disk).
    pub stalled: bool,
}

#[derive(Debug, Default)]
struct Inner {
    state: State,
    trace: Vec<Op>,
    faults: Faults,
    /// Calls to `StorageFile::sync`, failed ones included.
    sync_calls: u64,
    /// Writes and fsyncs waiting on a stalled disk now.
    stalled_waiters: usize,
}

/// The simulated disk; clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    inner: Arc<(Mutex<Inner>, Condvar)>,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    pub fn from_state(state: State) -> SimDisk {
        let disk = SimDisk::default();
        disk.lock().state = state;
        disk
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(inner: &mut Inner, op: Op) {
        inner.state.apply(&op);
        inner.trace.push(op);
    }

    pub fn trace(&self) -> Vec<Op> {
        self.lock().trace.clone()
    }

    pub fn trace_len(&self) -> usize {
        self.lock().trace.len()
    }

    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    pub fn sync_calls(&self) -> u64 {
        self.lock().sync_calls
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
        self.inner.1.notify_all();
    }

    /// Writes and fsyncs waiting on the stalled disk now.
    pub fn stalled_waiters(&self) -> usize {
        self.lock().stalled_waiters
    }

    /// Waits while the disk is stalled; returns the guard.
    fn ready(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.lock();
        if inner.faults.stalled {
            inner.stalled_waiters += 1;
            while inner.faults.stalled {
                inner = self.inner.1.wait(inner).unwrap_or_else(|e| e.into_inner());
            }
            inner.stalled_waiters -= 1;
        }
        inner
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl Storage for SimDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let inner = self.lock();
        Ok(inner
            .state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inner = self.lock();
        let inode = inner.state.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(inner.state.inodes[inode].data.clone())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut inner = self.lock();
        let inode = inner.state.next_inode;
        SimDisk::record(
            &mut inner,
            Op::Create {
                path: path.to_owned(),
            },
        );
        Ok(Box::new(SimFile {
            disk: self.clone(),
            inode,
        }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.state.names.contains_key(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        SimDisk::record(
            &mut inner,
            Op::Truncate {
                path: path.to_owned(),
                len,
            },
        );
        Ok(())
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.faults.fail_syncs {
            return Err(eio());
        }
        let inode = *inner.state.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        SimDisk::record(&mut inner, Op::Sync { inode });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.state.names.contains_key(from) {
            return Err(io::ErrorKind::NotFound.into());
        }
        SimDisk::record(
            &mut inner,
            Op::Rename {
                from: from.to_owned(),
                to: to.to_owned(),
            },
        );
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.state.names.contains_key(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        SimDisk::record(
            &mut inner,
            Op::Remove {
                path: path.to_owned(),
            },
        );
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.faults.fail_syncs {
            return Err(eio());
        }
        SimDisk::record(&mut inner, Op::SyncDir);
        Ok(())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageReader>> {
        let inner = self.lock();
        let inode = *inner.state.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(SimReader {
            disk: self.clone(),
            inode,
        }))
    }
}

/// A file open for reading: keeps its inode when the name goes.
struct SimReader {
    disk: SimDisk,
    inode: u64,
}

impl StorageReader for SimReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let inner = self.disk.lock();
        let inode = inner.state.inodes.get(&self.inode);
        let data = &inode.ok_or(io::ErrorKind::NotFound)?.data;
        let start = (offset as usize).min(data.len());
        let n = (data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        let inner = self.disk.lock();
        let inode = inner.state.inodes.get(&self.inode);
        Ok(inode.ok_or(io::ErrorKind::NotFound)?.data.len() as u64)
    }
}

struct SimFile {
    disk: SimDisk,
    inode: u64,
}

impl StorageFile for SimFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.disk.ready();
        if inner.faults.fail_writes {
            return Err(eio());
        }
        if let Some(space) = inner.faults.space_bytes {
            let used: usize = inner.state.inodes.values().map(|i| i.data.len()).sum();
            if used as u64 + bytes.len() as u64 > space {
                return Err(enospc());
            }
        }
        SimDisk::record(
            &mut inner,
            Op::Write {
                inode: self.inode,
                data: bytes.to_vec(),
            },
        );
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut inner = self.disk.ready();
        inner.sync_calls += 1;
        if inner.faults.fail_syncs {
            return Err(eio());
        }
        SimDisk::record(&mut inner, Op::Sync { inode: self.inode });
        Ok(())
    }
}

/// The payload the workloads write for `seq`: length and bytes from the seed.
pub fn payload_for(seed: u64, seq: u64) -> Vec<u8> {
    let mut rng = Rng(seed ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let len = rng.below(200) as usize;
    (0..len).map(|_| rng.next() as u8).collect()
}
