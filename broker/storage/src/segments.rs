//! Segment files: where the log keeps the bytes of its large batches.
//!
//! A batch whose stored records section is at least [`SEGMENT_MIN_BODY`] bytes is written once
//! to the end of the active segment file, before the index entry that names it is committed,
//! and the `log` keyspace keeps only its header and where its records are ([`crate::stored`]).
//! Kept as a fjall value, every byte was written twice (the journal, then a blob file at
//! memtable flush) and checksummed twice; here it is copied once into the page cache, or, with
//! [`Options::direct_writes`], an append of [`DIRECT_WRITE_MIN_BYTES`] or more goes around the
//! cache ([`Appender`]). Small batches stay fjall values: a segment costs a read call per
//! batch.
//!
//! The files are shared by every partition, named by an increasing id, and the writer starts a
//! new one past [`SEGMENT_BYTES`] and at every start of the broker, so bytes a crash left
//! behind the last indexed batch are never appended to. The `segment_extent` keyspace says, in
//! the same write batch as the index entries, which partitions a segment holds batches of and
//! the base offset of the last one; a sealed segment is deleted once none of those partitions
//! holds a batch at or below that offset any more (retention, DeleteRecords, truncation or a
//! deleted topic removed them).
//!
//! *The page cache*: the bytes a segment write copies into the page cache stay there, by
//! default, until memory runs short, so the cache grows with everything written. Copying into
//! a growing cache cost the writer about twice as much per GB once it held a few GB
//! (BENCHMARKS.md, twelfth session: on a VM that hands free memory back to its host, fresh
//! pages for the cache cost several times pages freed a moment ago). So once segment bytes
//! are synced, the broker keeps only the newest [`Options::cache_bytes`] of them cached and
//! tells the kernel to drop the older ones (`posix_fadvise(DONTNEED)`; the kernel drops clean
//! pages only). Consumers of the newest bytes still read them from memory; a read further back
//! reads the disk, as it would once the cache held more than memory.
//!
//! *Reads behind the window* of a large section ([`DIRECT_MIN_BYTES`] or more), and of one
//! written around the cache, go around the page cache too (`O_DIRECT`, [`Segments::read_batch`]): the disk writes them straight into the
//! fetch's buffer, where a buffered read would fill fresh cache pages and then copy them out
//! (about ten times the CPU per GB on this machine; BENCHMARKS.md, thirteenth session). The
//! kernel keeps direct reads coherent with the cache (it writes back dirty pages of the range
//! first), so which way a read goes decides only its cost. A folder whose file system refuses
//! `O_DIRECT` is read through the cache.
//!
//! *Durability*: an append that asks for an fsync is stored in fjall (one fsync, not two); the
//! interval flush syncs the segments written since the last flush before it syncs the journal.
//! A crash of the process loses nothing written; a crash of the machine may leave the newest
//! index entries naming bytes that never reached the disk: the partition's recovery drops
//! such batches from the end of its log, as it drops a torn batch.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use weir_sdk::pool::BufferPool;

/// By default a segment takes appends until it holds this many bytes (it may pass it by one
/// write batch).
pub const SEGMENT_BYTES: u64 = 256 << 20;
/// Stored records sections at least this long go to a segment file.
pub const SEGMENT_MIN_BODY: usize = 8 * 1024;

/// By default, synced segment bytes left in the page cache beyond the newest ones are dropped
/// from it once there are more than this many.
pub const SEGMENT_CACHE_BYTES: u64 = 256 << 20;

/// Sections at least this long, behind the cache window, are read around the page cache;
/// shorter ones are read through it, where the kernel's read-ahead serves the next ones.
pub const DIRECT_MIN_BYTES: u32 = 128 * 1024;
/// File offsets, lengths and buffer addresses of direct reads and writes are multiples of
/// this (the logical block size of common disks divides it).
const DIRECT_ALIGN: usize = 4096;
/// Appends of at least this many bytes go to the disk around the page cache. The same as
/// [`DIRECT_MIN_BYTES`]: a section long enough to be read around the cache was written so.
pub const DIRECT_WRITE_MIN_BYTES: u64 = DIRECT_MIN_BYTES as u64;
/// A direct append is put together in an aligned buffer and written this many bytes at a time.
const STAGING_BYTES: usize = 4 << 20;

const SUFFIX: &str = ".seg";

/// How the log uses its segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// A segment takes appends until it holds this many bytes.
    pub target_bytes: u64,
    /// Synced segment bytes kept in the page cache, the newest first; older ones are dropped
    /// from it. [`u64::MAX`] leaves the cache to the kernel.
    pub cache_bytes: u64,
    /// Appends of [`DIRECT_WRITE_MIN_BYTES`] or more go around the page cache ([`Appender`]).
    pub direct_writes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { target_bytes: SEGMENT_BYTES, cache_bytes: SEGMENT_CACHE_BYTES, direct_writes: false }
    }
}

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
    /// Sealed segments written since the last [`Segments::sync`]: id, file, length.
    unsynced: Mutex<Vec<(u64, Arc<File>, u64)>>,
    /// Where the writer starts a new segment.
    target_bytes: AtomicU64,
    /// The synced bytes still in the page cache.
    cached: Mutex<CacheWindow>,
    /// Files opened for direct reads, by id.
    direct: RwLock<HashMap<u64, Arc<File>>>,
    /// The file system refused a direct read: every read goes through the page cache.
    direct_refused: AtomicBool,
    /// Sections read around the page cache so far.
    direct_reads: AtomicU64,
    /// Every append goes through the page cache: direct writes are turned off
    /// ([`Options::direct_writes`]) or the file system refused one.
    direct_writes_off: AtomicBool,
    /// Appends written around the page cache so far.
    direct_writes: AtomicU64,
}

fn file_name(id: u64) -> String {
    format!("{id:020}{SUFFIX}")
}

impl Segments {
    /// Opens the folder (made if missing); appends go to a new segment above every one there,
    /// and each segment takes appends until it holds `target_bytes`.
    pub fn open(dir: &Path, options: Options) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let next = Self::ids_in(dir)?.into_iter().max().map_or(0, |id| id + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            files: RwLock::new(HashMap::new()),
            active: AtomicU64::new(next),
            unsynced: Mutex::new(Vec::new()),
            target_bytes: AtomicU64::new(options.target_bytes),
            cached: Mutex::new(CacheWindow::new(options.cache_bytes, next)),
            direct: RwLock::new(HashMap::new()),
            direct_refused: AtomicBool::new(false),
            direct_reads: AtomicU64::new(0),
            direct_writes_off: AtomicBool::new(!options.direct_writes),
            direct_writes: AtomicU64::new(0),
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

    /// `head` followed by the section `at`, in a buffer from `pool`: read around the page cache
    /// when the section is large and not in the cache (written around it, or behind the cache
    /// window), else through it.
    pub fn read_batch(&self, at: Located, head: &[u8], pool: &'static BufferPool) -> io::Result<Bytes> {
        let uncached = at.len >= DIRECT_MIN_BYTES
            && !self.direct_refused.load(Ordering::Relaxed)
            && (!self.direct_writes_off.load(Ordering::Relaxed)
                || self
                    .cached
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .dropped(at.segment, at.position + u64::from(at.len)));
        if uncached {
            match self.read_direct(at, head, pool) {
                Ok(batch) => {
                    self.direct_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(batch);
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidInput {
                        // EINVAL: this file system does not take direct reads (or not aligned so).
                        self.direct_refused.store(true, Ordering::Relaxed);
                    }
                    tracing::debug!(error = %e, ?at, "direct segment read failed; reading through the page cache");
                }
            }
        }
        // Every byte is written (the head, then the read) or the buffer is dropped unread.
        let mut batch = pool.take_filled(head.len() + at.len as usize);
        let buffer = batch.buffer();
        buffer[..head.len()].copy_from_slice(head);
        self.read(at, &mut buffer[head.len()..])?;
        Ok(Bytes::from_owner(batch))
    }

    /// Sections read around the page cache so far.
    pub fn direct_reads(&self) -> u64 {
        self.direct_reads.load(Ordering::Relaxed)
    }

    /// Appends written around the page cache so far.
    pub fn direct_writes(&self) -> u64 {
        self.direct_writes.load(Ordering::Relaxed)
    }

    /// Whether appends of [`DIRECT_WRITE_MIN_BYTES`] or more go around the page cache (turned
    /// on, and not refused by the file system so far).
    pub fn writes_around_cache(&self) -> bool {
        !self.direct_writes_off.load(Ordering::Relaxed)
    }

    /// Turns direct writes off if `e` says the file system does not take them (EINVAL);
    /// whether it did.
    fn refuse_direct_writes(&self, e: &io::Error) -> bool {
        let refused = e.kind() == io::ErrorKind::InvalidInput;
        if refused {
            self.direct_writes_off.store(true, Ordering::Relaxed);
        }
        tracing::debug!(error = %e, refused, "direct segment write failed; writing through the page cache");
        refused
    }

    /// Reads the aligned blocks that hold the section into an aligned part of a pooled buffer,
    /// puts `head` right before the section, and gives the two as a slice of that buffer.
    fn read_direct(&self, at: Located, head: &[u8], pool: &'static BufferPool) -> io::Result<Bytes> {
        const ALIGN: u64 = DIRECT_ALIGN as u64;
        let file = self.direct_file(at.segment)?;
        let start = at.position / ALIGN * ALIGN;
        let to_usize = |n: u64| usize::try_from(n).map_err(io::Error::other);
        let skip = to_usize(at.position - start)?;
        let read_len = to_usize((at.position + u64::from(at.len)).div_ceil(ALIGN) * ALIGN - start)?;
        // An aligned block in front when the header does not fit between the read's start and
        // the section, and up to one block to reach an aligned address.
        let front = if skip >= head.len() { 0 } else { DIRECT_ALIGN };
        let len = DIRECT_ALIGN + front + read_len;
        // Not zero-filled: what is handed on (the head and the section) is written below, or
        // the buffer is dropped unread; bytes around it are never handed on.
        let mut batch = pool.take_filled(len);
        let buffer = batch.buffer();
        let to_aligned = (DIRECT_ALIGN - buffer.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        let read_at = to_aligned + front;
        let needed = skip + at.len as usize;
        let blocks = &mut buffer[read_at..read_at + read_len];
        let mut got = 0;
        while got < needed {
            if got % DIRECT_ALIGN != 0 {
                // A read that stopped short of the section inside a block: the next one would
                // start unaligned. Not EINVAL, so direct reads go on for the next sections.
                return Err(io::Error::other(format!("a direct read stopped {got} bytes in")));
            }
            match file.read_at(&mut blocks[got..], start + got as u64) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let section = read_at + skip;
        buffer[section - head.len()..section].copy_from_slice(head);
        Ok(Bytes::from_owner(batch).slice(section - head.len()..section + at.len as usize))
    }

    fn direct_file(&self, id: u64) -> io::Result<Arc<File>> {
        if let Some(file) = self.direct.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(file.clone());
        }
        let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
        let file = Arc::new(OpenOptions::new().read(true).custom_flags(flags).open(self.dir.join(file_name(id)))?);
        Ok(self.direct.write().unwrap_or_else(|e| e.into_inner()).entry(id).or_insert(file).clone())
    }

    /// Deletes a sealed segment (no index entry names it any more).
    pub fn delete(&self, id: u64) -> io::Result<()> {
        debug_assert!(id < self.active.load(Ordering::Acquire), "the active segment is never deleted");
        self.files.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.direct.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
        match std::fs::remove_file(self.dir.join(file_name(id))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Syncs every segment written since the last call; the journal is synced after it, so
    /// no synced index entry names bytes that are not. Then drops from the page cache the
    /// synced bytes behind the newest [`Options::cache_bytes`].
    pub fn sync(&self) -> io::Result<()> {
        // The active id first: a segment the writer seals meanwhile is then either synced as
        // the active one or found among the sealed (or both), never missed.
        let active = self.active.load(Ordering::Acquire);
        let sealed = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, file, _) in &sealed {
            file.sync_data()?;
        }
        let file = self.files.read().unwrap_or_else(|e| e.into_inner()).get(&active).cloned();
        let mut synced_active = None;
        if let Some(file) = file {
            // What was written before the length is read is synced by the call after it.
            let len = file.metadata()?.len();
            file.sync_data()?;
            synced_active = Some((active, file, len));
        }
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        for (id, file, len) in &sealed {
            cached.synced(*id, file, *len, true);
        }
        if let Some((id, file, len)) = &synced_active {
            cached.synced(*id, file, *len, false);
        }
        for (file, offset, len) in cached.trim() {
            if let Err(e) = rustix::fs::fadvise(&*file, offset, Some(len), rustix::fs::Advice::DontNeed) {
                // Only the cache's size is at stake, not data.
                tracing::debug!(error = %e, "dropping synced segment bytes from the page cache failed");
            }
        }
        Ok(())
    }
}

/// The synced segment bytes left in the page cache, by segment, and which of them to drop.
struct CacheWindow {
    keep: u64,
    segments: BTreeMap<u64, CachedSegment>,
    /// Segments below this id were dropped whole, or were there before the broker started.
    below: u64,
}

struct CachedSegment {
    /// Weak: a deleted segment's file is closed when the log lets go of it, not held open here.
    file: Weak<File>,
    /// Bytes from the start known synced.
    synced: u64,
    /// Bytes from the start already dropped from the cache.
    dropped: u64,
    /// No more appends: once dropped whole, it is forgotten.
    sealed: bool,
}

impl CacheWindow {
    /// A window keeping `keep` bytes, for segments from `first` on (those below were there
    /// before: whether they are cached is not known, and they are read as if they were not).
    fn new(keep: u64, first: u64) -> Self {
        Self { keep, segments: BTreeMap::new(), below: first }
    }

    /// Whether the first `end` bytes of segment `id` are out of the page cache, as far as the
    /// window knows: dropped by it, or from before the broker started. With the window off
    /// (`u64::MAX`), nothing is.
    fn dropped(&self, id: u64, end: u64) -> bool {
        self.keep != u64::MAX && (id < self.below || self.segments.get(&id).is_some_and(|s| end <= s.dropped))
    }

    /// The first `len` bytes of segment `id` are synced.
    fn synced(&mut self, id: u64, file: &Arc<File>, len: u64, sealed: bool) {
        if self.keep == u64::MAX {
            return;
        }
        let entry = self.segments.entry(id).or_insert_with(|| CachedSegment {
            file: Arc::downgrade(file),
            synced: 0,
            dropped: 0,
            sealed: false,
        });
        entry.synced = entry.synced.max(len);
        entry.sealed |= sealed;
    }

    /// The ranges to drop so that at most `keep` synced bytes stay, oldest segments first: a
    /// file, a start and a length. A range starts at a page boundary (the kernel drops only
    /// whole pages, so a page the previous range ended inside is dropped by the next).
    fn trim(&mut self) -> Vec<(Arc<File>, u64, NonZeroU64)> {
        const PAGE: u64 = 4096;
        let held: u64 = self.segments.values().map(|s| s.synced - s.dropped).sum();
        let mut excess = held.saturating_sub(self.keep);
        let mut ranges = Vec::new();
        for segment in self.segments.values_mut() {
            if excess == 0 {
                break;
            }
            let n = excess.min(segment.synced - segment.dropped);
            if n == 0 {
                continue;
            }
            let start = segment.dropped / PAGE * PAGE;
            if let (Some(file), Some(len)) = (segment.file.upgrade(), NonZeroU64::new(segment.dropped + n - start)) {
                ranges.push((file, start, len));
            }
            segment.dropped += n;
            excess -= n;
        }
        let below = &mut self.below;
        self.segments.retain(|&id, s| {
            let whole = s.sealed && s.dropped >= s.synced;
            if whole {
                *below = (*below).max(id + 1);
            }
            !whole && s.file.strong_count() > 0
        });
        ranges
    }
}

/// The writer thread's end of the active segment.
///
/// An append of [`DIRECT_WRITE_MIN_BYTES`] or more is written around the page cache
/// (`O_DIRECT`): the disk takes it from an aligned buffer it is copied into, where a write
/// through the cache copies it into fresh cache pages (on this machine the largest cost of
/// producing incompressible values; BENCHMARKS.md, fourteenth session). A direct write starts
/// at a block boundary and ends at one, so it writes again the bytes of the last block that
/// earlier appends filled partly (kept in `tail`), and it leaves zeros after the append up to
/// the next boundary, which the next append writes over. Smaller appends go through the cache;
/// the kernel keeps the two kinds coherent (a direct write writes back and drops cached pages
/// of its range first). A file system that refuses `O_DIRECT` gets every append through the
/// cache.
pub struct Appender {
    id: u64,
    file: Arc<File>,
    /// The same file opened for direct writes; `None` where the file system refuses them.
    direct: Option<File>,
    len: u64,
    /// The file's bytes from the last block boundary at or below `len` up to `len`.
    tail: Vec<u8>,
    /// Where direct appends are put together; handed on from segment to segment.
    staging: Staging,
}

/// An aligned buffer of [`STAGING_BYTES`], allocated at the first direct append.
#[derive(Default)]
struct Staging {
    buffer: Vec<u8>,
}

impl Staging {
    fn area(&mut self) -> &mut [u8] {
        if self.buffer.is_empty() {
            self.buffer = vec![0; STAGING_BYTES + DIRECT_ALIGN];
        }
        let start = (DIRECT_ALIGN - self.buffer.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        &mut self.buffer[start..start + STAGING_BYTES]
    }
}

impl Appender {
    /// The segment the next `bytes` go to: the active one, or a new one when it is full (or
    /// when there is none yet, or the last write failed).
    pub fn next(current: Option<Appender>, segments: &Segments) -> io::Result<Appender> {
        let mut staging = Staging::default();
        if let Some(mut a) = current {
            if a.len < segments.target_bytes.load(Ordering::Relaxed) {
                return Ok(a);
            }
            staging = std::mem::take(&mut a.staging);
            a.seal(segments);
        }
        let id = segments.active.load(Ordering::Acquire);
        let path = segments.dir.join(file_name(id));
        // Positional writes, not O_APPEND: a direct write leaves the file longer than the
        // appends (up to the next block boundary).
        let file = Arc::new(OpenOptions::new().read(true).write(true).create_new(true).open(&path)?);
        segments.files.write().unwrap_or_else(|e| e.into_inner()).insert(id, file.clone());
        let direct = match segments.direct_writes_off.load(Ordering::Relaxed) {
            true => None,
            false => {
                let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
                match OpenOptions::new().write(true).custom_flags(flags).open(&path) {
                    Ok(direct) => Some(direct),
                    Err(e) => {
                        segments.refuse_direct_writes(&e);
                        None
                    }
                }
            }
        };
        Ok(Appender { id, file, direct, len: 0, tail: Vec::new(), staging })
    }

    /// Takes no more appends: the next ones go to a new segment. A segment whose write failed
    /// is sealed too, since how much of the write reached it is not known.
    pub fn seal(self, segments: &Segments) {
        segments.unsynced.lock().unwrap_or_else(|e| e.into_inner()).push((self.id, self.file, self.len));
        segments.active.store(self.id + 1, Ordering::Release);
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the next `pending` bytes after those already written would start.
    pub fn position(&self, pending: u64) -> u64 {
        self.len + pending
    }

    /// Appends `bodies` in order, at [`Self::position`]`(0)` onwards: around the page cache
    /// when they come to [`DIRECT_WRITE_MIN_BYTES`] or more, else through it.
    pub fn write(&mut self, bodies: &[&[u8]], segments: &Segments) -> io::Result<()> {
        let total: u64 = bodies.iter().map(|b| b.len() as u64).sum();
        let mut written = false;
        if total >= DIRECT_WRITE_MIN_BYTES && self.direct.is_some() {
            match self.write_direct(bodies) {
                Ok(()) => {
                    segments.direct_writes.fetch_add(1, Ordering::Relaxed);
                    written = true;
                }
                // Written again through the cache from the start: the bytes are the same, so
                // whatever part of it reached the file is written over with itself.
                Err(e) => {
                    if segments.refuse_direct_writes(&e) {
                        self.direct = None;
                    }
                }
            }
        }
        if !written {
            self.write_buffered(bodies)?;
        }
        let len = self.len + total;
        // Below one block, so it fits.
        let keep = usize::try_from(len % DIRECT_ALIGN as u64).unwrap_or(0);
        self.tail = tail_after(&self.tail, bodies, keep);
        self.len = len;
        Ok(())
    }

    fn write_buffered(&mut self, bodies: &[&[u8]]) -> io::Result<()> {
        /// At most this many slices in one call (Linux's `IOV_MAX`).
        const SLICES_MAX: usize = 1024;
        let mut slices: Vec<IoSlice<'_>> = bodies.iter().map(|b| IoSlice::new(b)).collect();
        let mut slices = &mut slices[..];
        let mut at = self.len;
        while !slices.is_empty() {
            let n = slices.len().min(SLICES_MAX);
            match rustix::io::pwritev(&*self.file, &slices[..n], at) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    IoSlice::advance_slices(&mut slices, n);
                    at += n as u64;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The tail, then `bodies`, copied into the aligned buffer and written from the block
    /// boundary the tail starts at, a buffer at a time; the last block padded with zeros.
    fn write_direct(&mut self, bodies: &[&[u8]]) -> io::Result<()> {
        const ALIGN: u64 = DIRECT_ALIGN as u64;
        let file = self.direct.as_ref().ok_or_else(|| io::Error::other("no file open for direct writes"))?;
        let area = self.staging.area();
        let mut at = self.len / ALIGN * ALIGN;
        area[..self.tail.len()].copy_from_slice(&self.tail);
        let mut filled = self.tail.len();
        for body in bodies {
            let mut rest = *body;
            while !rest.is_empty() {
                let n = rest.len().min(STAGING_BYTES - filled);
                area[filled..filled + n].copy_from_slice(&rest[..n]);
                filled += n;
                rest = &rest[n..];
                if filled == STAGING_BYTES {
                    write_blocks(file, area, at)?;
                    at += STAGING_BYTES as u64;
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            let padded = filled.next_multiple_of(DIRECT_ALIGN);
            area[filled..padded].fill(0);
            write_blocks(file, &area[..padded], at)?;
        }
        Ok(())
    }
}

/// Writes whole blocks of `blocks` at `at` (both aligned) with a file opened for direct writes.
fn write_blocks(file: &File, mut blocks: &[u8], mut at: u64) -> io::Result<()> {
    while !blocks.is_empty() {
        match file.write_at(blocks, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) if n % DIRECT_ALIGN != 0 => {
                return Err(io::Error::other(format!("a direct write stopped {n} bytes in")))
            }
            Ok(n) => {
                blocks = &blocks[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The last `keep` bytes of `tail` followed by `bodies` (there must be that many).
fn tail_after(tail: &[u8], bodies: &[&[u8]], keep: usize) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut need = keep;
    for part in bodies.iter().rev().copied().chain(std::iter::once(tail)) {
        if need == 0 {
            break;
        }
        let n = need.min(part.len());
        parts.push(&part[part.len() - n..]);
        need -= n;
    }
    debug_assert_eq!(need, 0, "the tail and the bodies hold the last {keep} bytes");
    parts.into_iter().rev().flatten().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<File> {
        Arc::new(tempfile::tempfile().unwrap())
    }

    #[test]
    fn the_window_drops_the_oldest_synced_bytes_beyond_what_it_keeps() {
        let (a, b) = (file(), file());
        // (what, keep, synced: (segment, length, sealed)..., ranges dropped: (segment, start, len))
        type Case = (&'static str, u64, Vec<(u64, u64, bool)>, Vec<(u64, u64, u64)>);
        let cases: Vec<Case> = vec![
            ("under the window: nothing", 10_000, vec![(0, 6000, false)], vec![]),
            ("one segment past it: its oldest bytes", 10_000, vec![(0, 16_000, false)], vec![(0, 0, 6000)]),
            (
                "sealed and active: the sealed one first",
                10_000,
                vec![(0, 12_000, true), (1, 5000, false)],
                vec![(0, 0, 7000)],
            ),
            (
                "both past it: all of the old one, then the new one's oldest",
                1000,
                vec![(0, 12_000, true), (1, 5000, false)],
                vec![(0, 0, 12_000), (1, 0, 4000)],
            ),
            ("keep nothing", 0, vec![(0, 9000, false)], vec![(0, 0, 9000)]),
            ("u64::MAX leaves the cache to the kernel", u64::MAX, vec![(0, 1 << 40, true)], vec![]),
        ];
        for (what, keep, synced, expected) in cases {
            let mut window = CacheWindow::new(keep, 0);
            for (id, len, sealed) in synced {
                window.synced(id, if id == 0 { &a } else { &b }, len, sealed);
            }
            let got: Vec<(u64, u64, u64)> = window
                .trim()
                .into_iter()
                .map(|(f, start, len)| (if Arc::ptr_eq(&f, &a) { 0 } else { 1 }, start, len.get()))
                .collect();
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn later_trims_start_where_the_last_stopped_at_a_page_boundary_and_forget_dropped_segments() {
        let (a, b) = (file(), file());
        let mut window = CacheWindow::new(10_000, 0);
        window.synced(0, &a, 15_000, false);
        assert_eq!(window.trim().iter().map(|(_, s, l)| (*s, l.get())).collect::<Vec<_>>(), vec![(0, 5000)]);
        // 5000 is inside the second page: the next range starts at 4096, so that page goes too.
        window.synced(0, &a, 18_000, true);
        window.synced(1, &b, 10_000, false);
        assert_eq!(window.trim().iter().map(|(_, s, l)| (*s, l.get())).collect::<Vec<_>>(), vec![(4096, 13_904)]);
        assert_eq!(window.segments.keys().copied().collect::<Vec<_>>(), vec![1], "segment 0 is dropped whole");
        // The same length again drops nothing more.
        window.synced(1, &b, 10_000, false);
        assert!(window.trim().is_empty());
        // A deleted segment (its file closed by the log) is forgotten, not held open.
        drop(b);
        window.synced(1, &file(), 20_000, false);
        assert!(window.trim().is_empty(), "nothing to drop from a closed file");
        assert!(window.segments.is_empty());
    }

    #[test]
    fn the_window_says_which_bytes_are_out_of_the_cache() {
        let (a, b) = (file(), file());
        let mut window = CacheWindow::new(10_000, 3);
        window.synced(3, &a, 12_000, true);
        window.synced(4, &b, 9000, false);
        window.trim();
        // (what, segment, end of the read, out of the cache)
        let cases = [
            ("a segment from before the start", 2, 1 << 30, true),
            ("within what was dropped", 3, 5000, true),
            ("up to where the drop ended", 3, 11_000, true),
            ("past it", 3, 11_001, false),
            ("the newest bytes", 4, 100, false),
            ("a segment the window has not seen", 5, 100, false),
        ];
        for (what, id, end, out) in cases {
            assert_eq!(window.dropped(id, end), out, "{what}");
        }
        // Dropped whole and forgotten: still out.
        window.synced(4, &b, 25_000, true);
        window.trim();
        assert!(!window.segments.contains_key(&3) && window.dropped(3, 12_000), "segment 3 was dropped whole");
        assert!(window.dropped(4, 15_000) && !window.dropped(4, 15_001));
        // With the window off, nothing is known out.
        let mut off = CacheWindow::new(u64::MAX, 3);
        off.synced(3, &a, 12_000, true);
        off.trim();
        assert!(!off.dropped(2, 1) && !off.dropped(3, 1));
    }

    #[test]
    fn large_sections_behind_the_window_read_back_the_same_around_the_cache() {
        static POOL: BufferPool = BufferPool::new(8 << 20, 2 << 20);
        let dir = tempfile::tempdir().unwrap();
        let segments =
            Segments::open(dir.path(), Options { target_bytes: 1 << 20, cache_bytes: 0, direct_writes: true }).unwrap();
        let mut appender = None;
        let mut written = Vec::new();
        // Sections of odd lengths, so they start anywhere within a block, some near the start
        // of one (less room before them than the head takes), across several segments.
        for i in 0..24u32 {
            let mut a = Appender::next(appender.take(), &segments).unwrap();
            let len =
                if i % 3 == 0 { 40 } else { DIRECT_MIN_BYTES as usize + 4096 * (i as usize % 5) + 17 * i as usize };
            let body: Vec<u8> = (0..len as u32).map(|j| (i * 7 + j * 13) as u8).collect();
            let at = Located { segment: a.id(), position: a.position(0), len: len as u32 };
            a.write(&[&body], &segments).unwrap();
            written.push((at, body));
            appender = Some(a);
        }
        segments.sync().unwrap();
        let head: Vec<u8> = (0..61u8).collect();
        for (at, body) in &written {
            let batch = segments.read_batch(*at, &head, &POOL).unwrap();
            assert_eq!(&batch[..61], &head[..], "{at:?}");
            assert_eq!(&batch[61..], &body[..], "{at:?}");
        }
        let large = written.iter().filter(|(at, _)| at.len >= DIRECT_MIN_BYTES).count() as u64;
        // Where the file system takes direct reads (ext4 and xfs do), every large
        // section was read around the cache.
        if !segments.direct_refused.load(Ordering::Relaxed) {
            assert_eq!(segments.direct_reads(), large);
        }
    }

    #[test]
    fn appends_through_and_around_the_cache_read_back_as_written() {
        static POOL: BufferPool = BufferPool::new(16 << 20, 8 << 20);
        let dir = tempfile::tempdir().unwrap();
        let segments =
            Segments::open(dir.path(), Options { target_bytes: u64::MAX, cache_bytes: u64::MAX, direct_writes: true })
                .unwrap();
        let mut a = Appender::next(None, &segments).unwrap();
        let big = DIRECT_WRITE_MIN_BYTES as usize;
        // Groups of appended bodies by length: small ones through the cache, leaving the last
        // block part-filled, and groups of the minimum or more (one body or many, one that
        // spans several staging buffers) written around it over that block.
        let groups: Vec<Vec<usize>> = vec![
            vec![100],
            vec![big],
            vec![1, 4095],
            vec![big + 17],
            vec![8191, 3],
            vec![4001; 40],
            vec![5000],
            vec![STAGING_BYTES + 123, 77, STAGING_BYTES - 5],
            vec![12_345],
            vec![big - 1],
        ];
        let mut written: Vec<(Located, Vec<u8>)> = Vec::new();
        let mut all = Vec::new();
        let mut large_groups = 0;
        for (g, lens) in groups.iter().enumerate() {
            let bodies: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| (0..len).map(|j| (g * 31 + i * 7 + j * 13 + j / 251) as u8).collect())
                .collect();
            let mut pending = 0;
            for body in &bodies {
                let at = Located { segment: a.id(), position: a.position(pending), len: body.len() as u32 };
                written.push((at, body.clone()));
                pending += body.len() as u64;
                all.extend_from_slice(body);
            }
            large_groups += u64::from(pending >= DIRECT_WRITE_MIN_BYTES);
            a.write(&bodies.iter().map(Vec::as_slice).collect::<Vec<_>>(), &segments).unwrap();
            assert_eq!(a.position(0), all.len() as u64, "group {g}");
        }
        let direct = !segments.direct_writes_off.load(Ordering::Relaxed);
        // Where the file system takes direct writes (ext4 and xfs do), every large group went
        // around the cache.
        if direct {
            assert_eq!(segments.direct_writes(), large_groups);
        }
        let file = std::fs::read(dir.path().join(file_name(a.id()))).unwrap();
        assert!(file.len() >= all.len() && file.len() < all.len() + DIRECT_ALIGN, "{} for {}", file.len(), all.len());
        assert!(file[..all.len()] == all[..], "the file holds the appends in order");
        let head = [7u8; 61];
        for (at, body) in &written {
            let mut back = vec![0; at.len as usize];
            segments.read(*at, &mut back).unwrap();
            assert!(back == *body, "{at:?} through the cache");
            let batch = segments.read_batch(*at, &head, &POOL).unwrap();
            assert!(batch[..61] == head && batch[61..] == body[..], "{at:?} as a batch");
        }
        // Large sections, written around the cache, were read around it too.
        if direct && !segments.direct_refused.load(Ordering::Relaxed) {
            let large = written.iter().filter(|(at, _)| at.len >= DIRECT_MIN_BYTES).count() as u64;
            assert_eq!(segments.direct_reads(), large);
        }
    }

    #[test]
    fn the_tail_is_the_last_bytes_of_the_partial_block() {
        // (what, tail, bodies, keep, expected)
        type Case = (&'static str, &'static [u8], &'static [&'static [u8]], usize, &'static [u8]);
        let cases: [Case; 6] = [
            ("nothing kept at a boundary", b"abc", &[b"defg"], 0, b""),
            ("within the last body", b"abc", &[b"defg"], 2, b"fg"),
            ("the whole last body and part of the one before", b"", &[b"abc", b"de"], 4, b"bcde"),
            ("reaching into the old tail", b"xyz", &[b"ab"], 4, b"yzab"),
            ("empty bodies skipped", b"xyz", &[b"a", b"", b"b"], 3, b"zab"),
            ("no bodies", b"xyz", &[], 2, b"yz"),
        ];
        for (what, tail, bodies, keep, expected) in cases {
            assert_eq!(tail_after(tail, bodies, keep), expected, "{what}");
        }
    }

    #[test]
    fn bytes_dropped_from_the_cache_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let segments =
            Segments::open(dir.path(), Options { target_bytes: 64 * 1024, cache_bytes: 0, direct_writes: true })
                .unwrap();
        let mut appender = None;
        let mut written = Vec::new();
        for i in 0..40u32 {
            let mut a = Appender::next(appender.take(), &segments).unwrap();
            let body: Vec<u8> = (0..10_000u32).map(|j| (i * 31 + j) as u8).collect();
            let at = Located { segment: a.id(), position: a.position(0), len: body.len() as u32 };
            a.write(&[&body], &segments).unwrap();
            written.push((at, body));
            appender = Some(a);
            if i % 7 == 0 {
                segments.sync().unwrap();
            }
        }
        segments.sync().unwrap();
        assert!(written.last().unwrap().0.segment >= 5, "the writes span several segments");
        for (at, body) in written {
            let mut back = vec![0; at.len as usize];
            segments.read(at, &mut back).unwrap();
            assert_eq!(back, body, "{at:?}");
        }
    }
}
