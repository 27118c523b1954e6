//! Segment files: where the log keeps the bytes of its large batches.
//!
//! A batch whose stored records section is at least [`SEGMENT_MIN_BODY`] bytes is written once,
//! by the log writer, to the end of the active segment file, and the `log` keyspace keeps only
//! its header and where its records are ([`crate::stored`]). Kept as a fjall value, every byte
//! was written twice (the journal, then a blob file at memtable flush) and checksummed twice;
//! here it is copied once into the page cache. Small batches stay fjall values: a segment
//! costs a read call per batch.
//!
//! The files are shared by every partition, named by an increasing id, and the writer starts a
//! new one past [`SEGMENT_BYTES`] and at every start of the broker, so bytes a crash left
//! behind the last indexed batch are never appended to. The `segment_extent` keyspace says, in
//! the same write batch as the index entries, which partitions a segment holds batches of and
//! the base offset of the last one; a sealed segment is deleted once none of those partitions
//! holds a batch at or below that offset any more (retention, DeleteRecords, truncation or a
//! deleted topic removed them).
//!
//! *Durability*: an append that asks for an fsync is stored in fjall (one fsync, not two); the
//! interval flush syncs the segments written since the last flush before it syncs the journal.
//! A crash of the process loses nothing written; a crash of the machine may leave the newest
//! index entries naming bytes that never reached the disk: the partition's recovery drops
//! such batches from the end of its log, as it drops a torn batch.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// By default a segment takes appends until it holds this many bytes (it may pass it by one
/// write batch).
pub const SEGMENT_BYTES: u64 = 256 << 20;
/// Stored records sections at least this long go to a segment file.
pub const SEGMENT_MIN_BODY: usize = 8 * 1024;

const SUFFIX: &str = ".seg";

/// Where a batch's stored records section is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub segment: u64,
    pub position: u64,
    pub len: u32,
}

/// The segment files of one broker.
pub struct Segments {
    dir: PathBuf,
    /// Open files by id, for reads (the active one is opened by the writer).
    files: RwLock<HashMap<u64, Arc<File>>>,
    /// The id appends go to; every id below it is sealed.
    active: AtomicU64,
    /// Sealed segments written since the last [`Segments::sync`].
    unsynced: Mutex<Vec<Arc<File>>>,
    /// Where the writer starts a new segment.
    target_bytes: AtomicU64,
}

fn file_name(id: u64) -> String {
    format!("{id:020}{SUFFIX}")
}

impl Segments {
    /// Opens the folder (made if missing); appends go to a new segment above every one there,
    /// and each segment takes appends until it holds `target_bytes`.
    pub fn open(dir: &Path, target_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let next = Self::ids_in(dir)?.into_iter().max().map_or(0, |id| id + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            files: RwLock::new(HashMap::new()),
            active: AtomicU64::new(next),
            unsynced: Mutex::new(Vec::new()),
            target_bytes: AtomicU64::new(target_bytes),
        })
    }

    fn ids_in(dir: &Path) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)).and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// The sealed segments on disk (below the active one), oldest first.
    pub fn sealed(&self) -> io::Result<Vec<u64>> {
        let active = self.active.load(Ordering::Acquire);
        let mut ids: Vec<u64> = Self::ids_in(&self.dir)?.into_iter().filter(|&id| id < active).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    #[cfg(test)]
    pub fn set_target_bytes(&self, bytes: u64) {
        self.target_bytes.store(bytes, Ordering::Relaxed);
    }

    fn file(&self, id: u64) -> io::Result<Arc<File>> {
        if let Some(file) = self.files.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.dir.join(file_name(id)))?);
        Ok(self.files.write().unwrap_or_else(|e| e.into_inner()).entry(id).or_insert(file).clone())
    }

    /// Fills `buf` from segment bytes `at`; `buf` must be `at.len` long.
    pub fn read(&self, at: Located, buf: &mut [u8]) -> io::Result<()> {
        debug_assert_eq!(buf.len(), at.len as usize);
        self.file(at.segment)?.read_exact_at(buf, at.position)
    }

    /// Deletes a sealed segment (no index entry names it any more).
    pub fn delete(&self, id: u64) -> io::Result<()> {
        debug_assert!(id < self.active.load(Ordering::Acquire), "the active segment is never deleted");
        self.files.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
        match std::fs::remove_file(self.dir.join(file_name(id))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Syncs every segment written since the last call; the journal is synced after it, so
    /// no synced index entry names bytes that are not.
    pub fn sync(&self) -> io::Result<()> {
        let sealed = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
        for file in &sealed {
            file.sync_data()?;
        }
        let active = self.active.load(Ordering::Acquire);
        let file = self.files.read().unwrap_or_else(|e| e.into_inner()).get(&active).cloned();
        if let Some(file) = file {
            file.sync_data()?;
        }
        Ok(())
    }
}

/// The writer thread's end of the active segment.
pub struct Appender {
    id: u64,
    file: Arc<File>,
    len: u64,
}

impl Appender {
    /// The segment the next `bytes` go to: the active one, or a new one when it is full (or
    /// when there is none yet, or the last write failed).
    pub fn next(current: Option<Appender>, segments: &Segments) -> io::Result<Appender> {
        if let Some(a) = current {
            if a.len < segments.target_bytes.load(Ordering::Relaxed) {
                return Ok(a);
            }
            a.seal(segments);
        }
        let id = segments.active.load(Ordering::Acquire);
        let file = Arc::new(
            OpenOptions::new().read(true).append(true).create_new(true).open(segments.dir.join(file_name(id)))?,
        );
        segments.files.write().unwrap_or_else(|e| e.into_inner()).insert(id, file.clone());
        Ok(Appender { id, file, len: 0 })
    }

    /// Takes no more appends: the next ones go to a new segment. A segment whose write failed
    /// is sealed too, since how much of the write reached it is not known.
    pub fn seal(self, segments: &Segments) {
        segments.unsynced.lock().unwrap_or_else(|e| e.into_inner()).push(self.file);
        segments.active.store(self.id + 1, Ordering::Release);
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the next `pending` bytes after those already written would start.
    pub fn position(&self, pending: u64) -> u64 {
        self.len + pending
    }

    /// Appends `bodies` in order, at [`Self::position`]`(0)` onwards.
    pub fn write(&mut self, bodies: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = bodies.iter().map(|b| IoSlice::new(b)).collect();
        let mut slices = &mut slices[..];
        let total: u64 = bodies.iter().map(|b| b.len() as u64).sum();
        while !slices.is_empty() {
            match (&*self.file).write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.len += total;
        Ok(())
    }
}
