//! Partition logs in fjall.
//!
//! One keyspace, `log`, holds every partition. A key is `topic id (u64) | partition (u32) |
//! base offset (u64)`, all big-endian, so a partition is a contiguous key range and "the batch
//! holding offset X" is one reverse seek. Values are RecordBatch v2 bytes with the base offset
//! the broker assigned, stored with key-value separation; a batch whose records compress is kept
//! with its records section compressed (see [`crate::stored`]); a large batch's section is in a
//! segment file and the value says where ([`crate::segments`]). Every reader goes through
//! [`stored::header`] or [`stored::unpack`].
//!
//! All appends go through one writer thread, which gathers whatever producers have queued into
//! one fjall write batch and, if any of them asked for it, one fsync (group commit). Offsets are
//! assigned there, so they are dense and ordered without locks.
//!
//! *Invariant*: a partition's next offset is only ever read from the log itself (its last batch)
//! and retention never deletes a partition's last batch, so offsets continue after a restart.
//!
//! A second keyspace, `time_index`, holds an entry for each batch that raised its partition's
//! largest timestamp, written in the same write batch as the batch: the first entry at or after
//! a timestamp names the first batch holding a record that late, so a timestamp lookup is one
//! seek and one batch, not a scan of the partition. Retention drops the entries of deleted
//! batches but the last, which says from where on a retained batch may be the answer.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};
use tokio::sync::{oneshot, watch};
use weir_sdk::batch::{set_base_offset, set_partition_leader_epoch, validate_batch, BatchHeader, BATCH_HEADER_BYTES};
use weir_sdk::{ErrorCode, WireError};

use crate::idempotence::{self, ProducerState, Verdict};
pub use crate::keys::PartitionId;
use crate::keys::{
    epoch_key, extent_key, keyspace, log_key, parse_extent_key, parse_log_key, parse_producer_key,
    parse_time_index_key, partition_key, producer_key, time_index_key, topic_prefix, LOG_KEY_BYTES,
};
use crate::segments::{Appender, Located, Segments, SEGMENT_MIN_BODY};
use crate::stored::{self, Packed};
use crate::StorageError;

/// How many batches a truncation reads back to rebuild idempotent producers' states.
const TRUNCATION_SCAN_BATCHES_MAX: usize = 10_000;

/// Upper bound of appends gathered into one write batch.
const GROUP_COMMIT_JOBS_MAX: usize = 1024;
const GROUP_COMMIT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The base offset of a log key; a key of another shape reads as offset 0 (keys are only
/// ever written by [`log_key`]).
fn offset_of_key(key: &[u8]) -> i64 {
    parse_log_key(key).map_or(0, |(_, offset)| offset)
}

/// The base offset a time index entry names.
fn indexed_offset(value: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(value.try_into().ok()?))
}

fn first_key(id: PartitionId) -> [u8; LOG_KEY_BYTES] {
    log_key(id, 0)
}

fn last_key(id: PartitionId) -> [u8; LOG_KEY_BYTES] {
    log_key(id, i64::MAX)
}

/// In-memory view of one partition, kept in step with the log by the writer and retention.
pub struct PartitionState {
    pub id: PartitionId,
    log_start_offset: AtomicI64,
    /// Bytes its stored values take (a compressed batch counts what it takes compressed).
    size_bytes: AtomicU64,
    /// The next offset to assign (the log end offset).
    end_offset: watch::Sender<i64>,
    /// Consumers read below it. It follows the end offset unless the partition is
    /// `replicated`, when replication sets it (the lowest log end among the in-sync replicas).
    high_watermark: watch::Sender<i64>,
    replicated: AtomicBool,
    /// The high watermark last written by [`LogStore::checkpoint_high_watermarks`] (-1: none).
    checkpointed: AtomicI64,
    /// The leader epoch this broker appends clients' batches in, stamped on each of them; -1
    /// while it follows another broker's log, when only [`LogStore::append_replica`] appends.
    leader_epoch: AtomicI32,
    /// The leader-epoch cache: (epoch, first offset of it in this log), both increasing;
    /// kept in the `leader_epoch` keyspace, changed only by the writer.
    epochs: std::sync::Mutex<Vec<(i32, i64)>>,
    /// The largest timestamp of any batch appended (i64::MIN: none); the time index's last key.
    max_timestamp: AtomicI64,
    /// Held by retention and DeleteRecords while they delete from the front.
    deleting: std::sync::Mutex<()>,
}

impl PartitionState {
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    pub fn end_offset(&self) -> i64 {
        *self.end_offset.borrow()
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// The largest timestamp of any batch appended (i64::MIN: none).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// The offset consumers read up to (excluded).
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// A receiver that wakes when the high watermark moves (what a consumer may read).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// A receiver that wakes when the log end offset moves (what a follower may copy).
    pub fn subscribe_end(&self) -> watch::Receiver<i64> {
        self.end_offset.subscribe()
    }

    /// Appends of clients' batches go in leader epoch `epoch` from now on. `replicated`: other
    /// brokers copy this log and the high watermark waits for them ([`Self::set_high_watermark`]);
    /// otherwise it follows the end offset.
    pub fn lead(&self, epoch: i32, replicated: bool) {
        self.leader_epoch.store(epoch, Ordering::Release);
        self.replicated.store(replicated, Ordering::Release);
        if !replicated {
            let end = self.end_offset();
            self.high_watermark.send_if_modified(|hw| std::mem::replace(hw, end) != end);
        }
    }

    /// This broker copies the partition from its leader: clients' appends are refused and the
    /// high watermark is what the leader says.
    pub fn follow(&self) {
        self.leader_epoch.store(-1, Ordering::Release);
        self.replicated.store(true, Ordering::Release);
    }

    /// The epoch clients' batches are appended in; `None` while following.
    pub fn leader_epoch(&self) -> Option<i32> {
        let epoch = self.leader_epoch.load(Ordering::Acquire);
        (epoch >= 0).then_some(epoch)
    }

    /// Sets the high watermark of a replicated partition (never past the log end). A leader
    /// only moves it forward; a follower takes its leader's, which may be behind its own.
    pub fn set_high_watermark(&self, offset: i64) {
        if !self.replicated.load(Ordering::Acquire) {
            return;
        }
        let offset = offset.min(self.end_offset()).max(0);
        self.high_watermark.send_if_modified(|hw| std::mem::replace(hw, offset) != offset);
    }

    /// The leader-epoch cache: (epoch, first offset of it), oldest first.
    pub fn epochs(&self) -> Vec<(i32, i64)> {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record_epoch(&self, epoch: i32, start: i64) {
        let mut epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        epochs.retain(|&(e, s)| s < start && e < epoch);
        epochs.push((epoch, start));
    }

    fn latest_epoch(&self) -> Option<i32> {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner()).last().map(|&(e, _)| e)
    }
}

/// How segment files were read and written (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentIo {
    /// Appends written around the page cache.
    pub direct_writes: u64,
    /// Sections read around the page cache.
    pub direct_reads: u64,
    /// Appends of 128 KiB or more go around the page cache (turned on, not refused so far).
    pub writes_around_cache: bool,
}

/// What the writer thread is asked to do, in queue order.
enum WriterJob {
    Append(AppendJob),
    /// Appends queued together ([`Appends`]), which the writer takes into one group.
    Appends(Vec<AppendJob>),
    /// Drops producer states (and their stored copies); answers how many were dropped.
    ForgetProducers {
        which: ProducerFilter,
        reply: oneshot::Sender<Result<usize, WireError>>,
    },
    /// Drops the partition's records at and past an offset; answers the new end offset. With
    /// `restart_at`, drops every record and the log continues, empty, from that offset.
    Truncate {
        partition: Arc<PartitionState>,
        offset: i64,
        restart_at: Option<i64>,
        reply: oneshot::Sender<Result<i64, WireError>>,
    },
}

/// Which producer states to drop.
#[derive(Debug, Clone, Copy)]
pub enum ProducerFilter {
    /// Every partition of a deleted topic.
    Topic(u64),
    /// Producers idle for longer than `expiration_ms` at `now_ms`.
    IdleAt { now_ms: i64, expiration_ms: i64 },
}

/// Appends gathered (one produce request's partitions) and handed to the writer at once
/// ([`LogStore::submit_appends`]): it takes them into one write batch, with one wake-up,
/// instead of waking for each partition and committing each alone.
#[derive(Default)]
pub struct Appends {
    jobs: Vec<AppendJob>,
}

impl Appends {
    /// Adds an append; the future resolves to its base offset once the appends were submitted
    /// and committed (to an error if they never were).
    pub fn push(
        &mut self,
        partition: Arc<PartitionState>,
        batches: Vec<(BatchHeader, Bytes)>,
        fsync: bool,
    ) -> impl std::future::Future<Output = Result<i64, WireError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        self.jobs.push(AppendJob {
            partition,
            batches: pack(batches),
            fsync,
            replica: false,
            placed: Ok(Vec::new()),
            reply,
        });
        async move { rx.await.map_err(|_| storage_error("log writer dropped the append"))? }
    }
}

/// One append: validated batches for one partition, each ready to store.
struct AppendJob {
    partition: Arc<PartitionState>,
    batches: Vec<(BatchHeader, Packed)>,
    fsync: bool,
    /// Batches copied from the leader, offsets and epochs as the leader assigned them.
    replica: bool,
    /// Where the segment writer put the sections of the batches that go to a segment, one
    /// entry per batch (`None` for the others), or why it could not.
    placed: Result<Vec<Option<Located>>, WireError>,
    reply: oneshot::Sender<Result<i64, WireError>>,
}

#[derive(Clone)]
pub struct LogStore {
    db: Database,
    log: Keyspace,
    time_index: Keyspace,
    log_start: Keyspace,
    leader_epochs: Keyspace,
    high_watermarks: Keyspace,
    partitions: Arc<DashMap<PartitionId, Arc<PartitionState>>>,
    writer: Arc<WriterHandle>,
    dirty: Arc<std::sync::atomic::AtomicBool>,
    /// The largest producer id found in the stored producer states at open (-1: none).
    producer_id_max: i64,
    producer_store: Keyspace,
    segments: Arc<Segments>,
    extents: Keyspace,
}

/// The writer thread's queue; dropping the last store handle stops and joins the thread, so
/// the database can be opened again in the same process.
struct WriterHandle {
    jobs: Option<std::sync::mpsc::SyncSender<WriterJob>>,
    /// The segment writer's thread (when direct writes are on), then the log writer's: each
    /// stops when its queue closes.
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WriterHandle {
    fn jobs(&self) -> &std::sync::mpsc::SyncSender<WriterJob> {
        self.jobs.as_ref().expect("the writer queue lives as long as the handle")
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.jobs.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the writer thread owns: no handle to its own queue.
struct Writer {
    db: Database,
    log: Keyspace,
    time_index: Keyspace,
    log_start: Keyspace,
    leader_epochs: Keyspace,
    dirty: Arc<std::sync::atomic::AtomicBool>,
    /// Idempotent producers' state per partition, mirrored in the `producer_state` keyspace.
    producer_store: Keyspace,
    producers: HashMap<(PartitionId, i64), ProducerState>,
    segments: Arc<Segments>,
    extents: Keyspace,
    /// Where large sections are written when no segment writer thread runs in front of this
    /// one (direct writes off): by this thread, before each group is committed.
    inline_segments: Option<SegmentWriter>,
}

/// Appends the sections of large batches to the active segment and records in each job where
/// they are ([`AppendJob::placed`]), before the log writer commits the index entries that name
/// them. With direct writes on, it runs on a thread of its own in front of the log writer and
/// hands each job on in queue order, so the disk writes the next appends' sections while the
/// log writer commits the last ones (a direct write waits for the disk); with them off, the
/// log writer calls it on its own thread (writes through the page cache do not wait, and a
/// second thread would cost small appends a wake-up each). Bytes of a batch the log writer
/// then refuses (a duplicate, a fenced producer) stay in the segment unnamed, and go with it.
struct SegmentWriter {
    segments: Arc<Segments>,
    /// The active segment, once the writer has written to it.
    appender: Option<Appender>,
}

fn storage_error(e: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Storage, format!("storage: {e}"))
}

impl LogStore {
    /// Opens the partition logs of the database, with their segment files in `segments_dir`,
    /// and starts their writer thread. `queue_depth` bounds appends waiting for the writer.
    pub(crate) fn open(
        db: &Database,
        segments_dir: &Path,
        queue_depth: usize,
        segments: crate::segments::Options,
    ) -> Result<Self, StorageError> {
        // Batches arrive compressed by Weir or by their producer, or incompressible: fjall's blob
        // files do not compress them again (a folder made before keeps the lz4 it was made with).
        let log = db.keyspace(keyspace::LOG, || {
            KeyspaceCreateOptions::default()
                .with_kv_separation(Some(KvSeparationOptions::default().compression(CompressionType::None)))
        })?;
        let time_index = db.keyspace(keyspace::TIME_INDEX, KeyspaceCreateOptions::default)?;
        let log_start = db.keyspace(keyspace::LOG_START, KeyspaceCreateOptions::default)?;
        let leader_epochs = db.keyspace(keyspace::LEADER_EPOCH, KeyspaceCreateOptions::default)?;
        let high_watermarks = db.keyspace(keyspace::HIGH_WATERMARK, KeyspaceCreateOptions::default)?;
        let extents = db.keyspace(keyspace::SEGMENT_EXTENT, KeyspaceCreateOptions::default)?;
        let direct_writes = segments.direct_writes;
        let segments = Arc::new(
            Segments::open(segments_dir, segments)
                .map_err(|e| StorageError::Corrupt { what: "segment folder", why: e.to_string() })?,
        );
        let (tx, jobs) = std::sync::mpsc::sync_channel(queue_depth);
        let dirty = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer_store = db.keyspace(keyspace::PRODUCER_STATE, KeyspaceCreateOptions::default)?;
        let mut producers = HashMap::new();
        let opened_at_ms = weir_sdk::now_ms();
        for guard in producer_store.iter() {
            let (key, value) = guard.into_inner()?;
            match (parse_producer_key(&key), serde_json::from_slice::<ProducerState>(&value)) {
                (Some(k), Ok(mut state)) => {
                    // Written before appends carried their time: count from now.
                    if state.last_append_ms == 0 {
                        state.last_append_ms = opened_at_ms;
                    }
                    producers.insert(k, state);
                }
                _ => tracing::warn!("skipping an unreadable producer state record"),
            }
        }
        let producer_id_max = producers.keys().map(|(_, pid)| *pid).max().unwrap_or(-1);
        let mut writer = Writer {
            db: db.clone(),
            log: log.clone(),
            time_index: time_index.clone(),
            log_start: log_start.clone(),
            leader_epochs: leader_epochs.clone(),
            dirty: dirty.clone(),
            producer_store: producer_store.clone(),
            producers,
            segments: segments.clone(),
            extents: extents.clone(),
            inline_segments: None,
        };
        let segment_writer = SegmentWriter { segments: segments.clone(), appender: None };
        let mut threads = Vec::new();
        let jobs = match direct_writes {
            true => {
                let (placed_tx, placed) = std::sync::mpsc::sync_channel(queue_depth);
                threads.push(
                    std::thread::Builder::new()
                        .name("weir-segment-writer".into())
                        .spawn(move || segment_writer.run(jobs, placed_tx))
                        .expect("spawn segment writer thread"),
                );
                placed
            }
            false => {
                writer.inline_segments = Some(segment_writer);
                jobs
            }
        };
        threads.push(
            std::thread::Builder::new()
                .name("weir-log-writer".into())
                .spawn(move || writer.run(jobs))
                .expect("spawn log writer thread"),
        );
        let writer = Arc::new(WriterHandle { jobs: Some(tx), threads });
        let store = Self {
            db: db.clone(),
            log,
            time_index,
            log_start,
            leader_epochs,
            high_watermarks,
            partitions: Arc::new(DashMap::new()),
            writer,
            dirty,
            producer_id_max,
            producer_store,
            segments,
            extents,
        };
        Ok(store)
    }

    /// Loads a partition's state from the log, dropping a torn or corrupt newest batch.
    pub fn open_partition(&self, id: PartitionId) -> Result<Arc<PartitionState>, WireError> {
        if let Some(p) = self.partitions.get(&id) {
            return Ok(p.clone());
        }
        let range = first_key(id)..=last_key(id);
        let mut end_offset = 0;
        loop {
            let Some(last) = self.log.range(range.clone()).next_back() else { break };
            let (key, value) = last.into_inner().map_err(storage_error)?;
            let base = offset_of_key(&key);
            match stored::unpack(value.into(), &self.segments).and_then(|batch| validate_batch(&batch)) {
                Ok(header) if header.base_offset == base => {
                    end_offset = header.last_offset() + 1;
                    break;
                }
                outcome => {
                    let why = outcome.err().map_or_else(|| "header does not match its key".to_owned(), |e| e.message);
                    tracing::warn!(topic_id = id.topic_id, partition = id.partition, offset = base, reason = %why, "dropping torn newest batch on recovery");
                    self.log.remove(key).map_err(storage_error)?;
                }
            }
        }
        // A start moved by DeleteRecords may lie inside the first stored batch; an empty log
        // that a follower restarted at its leader's start continues from there.
        let moved = self.log_start.get(partition_key(id)).map_err(storage_error)?.and_then(|v| indexed_offset(&v));
        let first_stored = match self.log.range(range.clone()).next() {
            Some(first) => offset_of_key(&first.key().map_err(storage_error)?),
            None => {
                end_offset = end_offset.max(moved.unwrap_or(0));
                end_offset
            }
        };
        let log_start_offset = moved.map_or(first_stored, |m| m.clamp(first_stored, end_offset));
        let size_bytes = self.stored_bytes(range)?;
        let max_timestamp = self.recover_time_index(id, end_offset)?;
        let epochs = self.recover_epochs(id, end_offset)?;
        // A replicated partition restarts at its checkpointed high watermark, at most the true
        // one: records above it may not be committed (a new leader's log may not hold them).
        let checkpointed =
            self.high_watermarks.get(partition_key(id)).map_err(storage_error)?.and_then(|v| indexed_offset(&v));
        let high_watermark = checkpointed.map_or(end_offset, |hw| hw.clamp(0, end_offset));
        let state = Arc::new(PartitionState {
            id,
            log_start_offset: AtomicI64::new(log_start_offset),
            size_bytes: AtomicU64::new(size_bytes),
            end_offset: watch::channel(end_offset).0,
            high_watermark: watch::channel(high_watermark).0,
            replicated: AtomicBool::new(false),
            checkpointed: AtomicI64::new(checkpointed.unwrap_or(-1)),
            leader_epoch: AtomicI32::new(0),
            epochs: std::sync::Mutex::new(epochs),
            max_timestamp: AtomicI64::new(max_timestamp),
            deleting: std::sync::Mutex::new(()),
        });
        tracing::debug!(
            topic_id = id.topic_id,
            partition = id.partition,
            log_start_offset,
            end_offset,
            size_bytes,
            "partition opened"
        );
        // Two opens may race (a partition opened on first use): the first one in is kept.
        Ok(self.partitions.entry(id).or_insert(state).clone())
    }

    /// The bytes a partition's batches take, summed from one pass over its index. Each value's
    /// size comes with the iteration, without the value (which may be in a blob file) and without
    /// a lookup per batch; only a value as short as a segment pointer is read (it is small and
    /// held in the index), and a batch in a segment counts its section. Two iterators over one
    /// snapshot walk the same entries in step: one hands out sizes, the other the values.
    fn stored_bytes(&self, range: std::ops::RangeInclusive<[u8; LOG_KEY_BYTES]>) -> Result<u64, WireError> {
        use fjall::Readable as _;
        let snapshot = self.db.snapshot();
        let entries = snapshot.range(&self.log, range.clone());
        let sizes = snapshot.range(&self.log, range);
        let mut total = 0u64;
        for (entry, size) in entries.zip(sizes) {
            let size = size.size().map_err(storage_error)? as usize;
            total += match size == stored::POINTER_BYTES {
                true => stored::stored_len(&entry.value().map_err(storage_error)?),
                false => size,
            } as u64;
        }
        Ok(total)
    }

    /// The partition's largest timestamp, from its time index: entries of batches past the log's
    /// end (a torn batch dropped on recovery) are removed first. A log written before the index
    /// existed gets it built from its batches' headers, once.
    fn recover_time_index(&self, id: PartitionId, end_offset: i64) -> Result<i64, WireError> {
        let entries = time_index_key(id, i64::MIN)..=time_index_key(id, i64::MAX);
        while let Some(last) = self.time_index.range(entries.clone()).next_back() {
            let (key, value) = last.into_inner().map_err(storage_error)?;
            match (parse_time_index_key(&key), indexed_offset(&value)) {
                (Some((_, timestamp)), Some(offset)) if offset < end_offset => return Ok(timestamp),
                _ => self.time_index.remove(key).map_err(storage_error)?,
            }
        }
        let mut max = i64::MIN;
        let mut write = self.db.batch();
        for guard in self.log.range(first_key(id)..log_key(id, end_offset)) {
            let (key, value) = guard.into_inner().map_err(storage_error)?;
            let header = stored::header(&value)
                .map_err(|e| storage_error(format!("building the time index of partition {}: {e}", id.partition)))?;
            if header.max_timestamp > max {
                max = header.max_timestamp;
                write.insert(&self.time_index, time_index_key(id, max), offset_of_key(&key).to_be_bytes());
            }
        }
        write.commit().map_err(storage_error)?;
        Ok(max)
    }

    /// The partition's leader-epoch cache, without entries past the log's end (a torn batch
    /// dropped on recovery).
    fn recover_epochs(&self, id: PartitionId, end_offset: i64) -> Result<Vec<(i32, i64)>, WireError> {
        let mut epochs = Vec::new();
        for guard in self.leader_epochs.range(epoch_key(id, 0)..=epoch_key(id, i32::MAX)) {
            let (key, value) = guard.into_inner().map_err(storage_error)?;
            let (Some((_, epoch)), Some(start)) = (parse_log_key(&key), indexed_offset(&value)) else { continue };
            if start >= end_offset && start > 0 {
                self.leader_epochs.remove(key).map_err(storage_error)?;
                continue;
            }
            epochs.push((i32::try_from(epoch).unwrap_or(i32::MAX), start));
        }
        Ok(epochs)
    }

    /// The largest producer id with stored state when the store was opened (-1: none), so
    /// that new ids are allocated above every id the log already knows.
    pub fn producer_id_max(&self) -> i64 {
        self.producer_id_max
    }

    pub fn partition(&self, id: PartitionId) -> Option<Arc<PartitionState>> {
        self.partitions.get(&id).map(|p| p.clone())
    }

    /// Hands gathered appends to the writer, in the order they were pushed, after every append
    /// queued before.
    pub async fn submit_appends(&self, appends: Appends) -> Result<(), WireError> {
        match appends.jobs.len() {
            0 => Ok(()),
            _ => self.submit(WriterJob::Appends(appends.jobs)).await,
        }
    }

    /// Appends validated batches to a partition; resolves to the base offset of the first.
    #[cfg(test)]
    pub async fn append(
        &self,
        partition: Arc<PartitionState>,
        batches: Vec<(BatchHeader, Bytes)>,
        fsync: bool,
    ) -> Result<i64, WireError> {
        self.enqueue(partition, batches, fsync).await?.await
    }

    /// Queues an append and returns the future of its base offset. Appends are committed in the
    /// order they were queued, so a caller that queues in order keeps its records in order while
    /// many appends are in flight.
    pub async fn enqueue(
        &self,
        partition: Arc<PartitionState>,
        batches: Vec<(BatchHeader, Bytes)>,
        fsync: bool,
    ) -> Result<impl std::future::Future<Output = Result<i64, WireError>> + Send + 'static, WireError> {
        let (reply, rx) = oneshot::channel();
        let batches = pack(batches);
        self.submit(WriterJob::Append(AppendJob {
            partition,
            batches,
            fsync,
            replica: false,
            placed: Ok(Vec::new()),
            reply,
        }))
        .await?;
        Ok(async move { rx.await.map_err(|_| storage_error("log writer dropped the append"))? })
    }

    /// Appends batches copied from the partition's leader, with the offsets and leader epochs
    /// the leader gave them; the first must start at this log's end. Idempotent producers'
    /// states follow the batches (not checked: the leader did), so this replica deduplicates
    /// retries if it leads later. Resolves to the new log end offset.
    pub async fn append_replica(
        &self,
        partition: Arc<PartitionState>,
        batches: Vec<(BatchHeader, Bytes)>,
        fsync: bool,
    ) -> Result<i64, WireError> {
        let (reply, rx) = oneshot::channel();
        let end_of = |b: &Vec<(BatchHeader, Bytes)>| b.last().map(|(h, _)| h.last_offset() + 1);
        let end = end_of(&batches);
        self.submit(WriterJob::Append(AppendJob {
            partition: partition.clone(),
            batches: pack(batches),
            fsync,
            replica: true,
            placed: Ok(Vec::new()),
            reply,
        }))
        .await?;
        rx.await.map_err(|_| storage_error("log writer dropped the append"))??;
        Ok(end.unwrap_or_else(|| partition.end_offset()))
    }

    /// Drops the partition's records at and past `offset` (a follower's divergent tail): the
    /// whole batch holding `offset` goes, so the new end, which it answers, may be below it.
    /// The time index, the leader-epoch cache and idempotent producers' states follow.
    pub async fn truncate(&self, partition: Arc<PartitionState>, offset: i64) -> Result<i64, WireError> {
        let (reply, rx) = oneshot::channel();
        self.submit(WriterJob::Truncate { partition, offset, restart_at: None, reply }).await?;
        rx.await.map_err(|_| storage_error("log writer dropped the truncation"))?
    }

    /// Drops every record of the partition, which continues, empty, from `offset` (its log
    /// start and end): a follower whose log ends below its leader's log start starts again
    /// there, as Kafka's follower does on OFFSET_OUT_OF_RANGE. Answers the new end.
    pub async fn restart_at(&self, partition: Arc<PartitionState>, offset: i64) -> Result<i64, WireError> {
        let (reply, rx) = oneshot::channel();
        self.submit(WriterJob::Truncate { partition, offset: 0, restart_at: Some(offset.max(0)), reply }).await?;
        rx.await.map_err(|_| storage_error("log writer dropped the restart"))?
    }

    /// Drops idempotent producers' states: of a deleted topic, or idle past their expiration.
    /// Goes through the writer, so no append of the same producer is staged meanwhile.
    pub async fn forget_producers(&self, which: ProducerFilter) -> Result<usize, WireError> {
        let (reply, rx) = oneshot::channel();
        self.submit(WriterJob::ForgetProducers { which, reply }).await?;
        rx.await.map_err(|_| storage_error("log writer dropped the request"))?
    }

    /// Segment sections written and read around the page cache so far, and whether large
    /// appends go around it now.
    pub fn segment_io(&self) -> SegmentIo {
        SegmentIo {
            direct_writes: self.segments.direct_writes(),
            direct_reads: self.segments.direct_reads(),
            writes_around_cache: self.segments.writes_around_cache(),
        }
    }

    /// The number of stored idempotent producer states of a topic's partitions.
    pub fn producer_count(&self, topic_id: u64) -> usize {
        self.producer_store.prefix(topic_prefix(topic_id)).count()
    }

    async fn submit(&self, job: WriterJob) -> Result<(), WireError> {
        match self.writer.jobs().try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                // Block a runtime thread only as long as the writer is behind; the queue bound
                // is what keeps memory bounded.
                let jobs = self.writer.jobs().clone();
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .map_err(storage_error)?
                    .map_err(|_| storage_error("log writer stopped"))?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(storage_error("log writer stopped")),
        }
        Ok(())
    }

    /// Fsyncs the journal if anything was written without fsync since the last call.
    pub fn flush_if_dirty(&self) -> Result<bool, WireError> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.segments.sync().map_err(storage_error)?;
            self.db.persist(PersistMode::SyncData).map_err(storage_error)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The base offset of the stored batch holding `offset` (the last one starting at or before
    /// it): one reverse seek.
    fn batch_holding(&self, id: PartitionId, offset: i64) -> Result<Option<i64>, WireError> {
        self.log
            .range(first_key(id)..=log_key(id, offset))
            .next_back()
            .map(|g| g.key().map(|k| offset_of_key(&k)))
            .transpose()
            .map_err(storage_error)
    }

    /// Reads batches starting with the one that holds `offset`, up to `max_bytes`; with
    /// `first_may_exceed`, the first batch is returned even when larger, so a consumer cannot get
    /// stuck behind a batch bigger than its fetch size. Each batch's CRC is checked; a corrupt
    /// batch is reported with its location.
    /// Only records below the high watermark are read; an offset between it and the log end
    /// reads nothing.
    pub fn read(
        &self,
        partition: &PartitionState,
        offset: i64,
        max_bytes: usize,
        first_may_exceed: bool,
    ) -> Result<Vec<Bytes>, WireError> {
        self.read_below(partition, offset, max_bytes, first_may_exceed, partition.high_watermark(), true)
    }

    /// As [`Self::read`], up to the log end: what a follower copies. The CRCs are left to the
    /// follower, which checks each batch as it appends it (one check per copy, not two).
    pub fn read_replica(
        &self,
        partition: &PartitionState,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, WireError> {
        self.read_below(partition, offset, max_bytes, true, partition.end_offset(), false)
    }

    fn read_below(
        &self,
        partition: &PartitionState,
        offset: i64,
        max_bytes: usize,
        first_may_exceed: bool,
        upto: i64,
        check_crc: bool,
    ) -> Result<Vec<Bytes>, WireError> {
        let (start, end) = (partition.log_start_offset(), partition.end_offset());
        if offset < start || offset > end {
            return Err(WireError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "offset {offset} is outside the log of partition {}: it holds {start} to {end}",
                    partition.id.partition
                ),
            ));
        }
        let id = partition.id;
        let seek_from = self.batch_holding(id, offset)?.unwrap_or(start);
        let mut out = Vec::new();
        let mut total = 0usize;
        let range = (Bound::Included(log_key(id, seek_from)), Bound::Excluded(log_key(id, upto.min(end))));
        for guard in self.log.range(range) {
            let (key, value) = guard.into_inner().map_err(storage_error)?;
            let value: Bytes = value.into();
            let corrupt = |e: WireError| {
                WireError::new(
                    ErrorCode::CorruptBatch,
                    format!(
                        "stored batch at offset {} of partition {}: {}",
                        offset_of_key(&key),
                        id.partition,
                        e.message
                    ),
                )
            };
            // Where the batch ends and how large it is come from the header alone; the batch is
            // decompressed and its CRC computed only if it goes into the answer.
            let header = stored::header(&value).map_err(corrupt)?;
            let key_offset = offset_of_key(&key);
            if header.base_offset != key_offset {
                return Err(WireError::new(
                    ErrorCode::CorruptBatch,
                    format!(
                        "stored batch under offset {key_offset} of partition {} says base offset {}",
                        id.partition, header.base_offset
                    ),
                ));
            }
            if header.last_offset() < offset {
                continue;
            }
            if total + header.total_bytes > max_bytes && (!out.is_empty() || !first_may_exceed) {
                break;
            }
            let batch = match stored::unpack(value, &self.segments) {
                Ok(batch) => batch,
                // Retention deleted the batch, and then its segment, while this read went on.
                Err(_) if header.last_offset() < partition.log_start_offset() => {
                    if out.is_empty() {
                        return Err(WireError::new(
                            ErrorCode::OffsetOutOfRange,
                            format!(
                                "offset {offset} of partition {} was deleted by retention while it was read",
                                id.partition
                            ),
                        ));
                    }
                    break;
                }
                Err(e) => return Err(corrupt(e)),
            };
            if check_crc {
                validate_batch(&batch).map_err(corrupt)?;
            }
            total += batch.len();
            out.push(batch);
            if total >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The first offset whose record has a timestamp at or after `timestamp_ms`, and that
    /// record's timestamp; `None` when there is none. The time index names the first batch
    /// that late; when retention has deleted it, retained batches are read from the log start
    /// up to the next indexed one. A batch's records are decompressed within
    /// `inflated_bytes_max`.
    pub fn offset_for_timestamp(
        &self,
        partition: &PartitionState,
        timestamp_ms: i64,
        inflated_bytes_max: usize,
    ) -> Result<Option<(i64, i64)>, WireError> {
        let id = partition.id;
        let (start, end) = (partition.log_start_offset(), partition.end_offset());
        let entries = time_index_key(id, timestamp_ms)..=time_index_key(id, i64::MAX);
        let Some(first) = self.time_index.range(entries).next() else { return Ok(None) };
        let (_, value) = first.into_inner().map_err(storage_error)?;
        let indexed = indexed_offset(&value).ok_or_else(|| storage_error("a time index entry is not an offset"))?;
        // From the batch holding the later of the indexed offset and the log start (which
        // DeleteRecords may have moved inside a batch).
        let from = indexed.max(start);
        let seek = self.batch_holding(id, from)?.unwrap_or(from);
        for guard in self.log.range(log_key(id, seek)..log_key(id, end)) {
            let value: Bytes = guard.value().map_err(storage_error)?.into();
            let header = stored::header(&value)?;
            if header.max_timestamp < timestamp_ms || header.last_offset() < start {
                continue;
            }
            let value = stored::unpack(value, &self.segments)?;
            validate_batch(&value)?;
            let records = weir_sdk::batch::decode_batches_within("", id.partition, value, 0, inflated_bytes_max)?;
            if let Some(r) = records.iter().find(|r| r.offset >= start && r.record.timestamp >= timestamp_ms) {
                return Ok(Some((r.offset, r.record.timestamp)));
            }
        }
        Ok(None)
    }

    /// Moves the partition's log start up to `offset` (Kafka's DeleteRecords; -1 is the high
    /// watermark) and returns the new start, the low watermark. Batches wholly below it are
    /// deleted but the newest, which carries the next offset, as retention keeps it; the start
    /// is stored first, so records below it are never readable again, after a restart too.
    pub fn delete_records(&self, partition: &PartitionState, offset: i64) -> Result<i64, WireError> {
        let id = partition.id;
        let _deleting = partition.deleting.lock().unwrap_or_else(|e| e.into_inner());
        let (start, end) = (partition.log_start_offset(), partition.end_offset());
        let target = if offset == -1 { end } else { offset };
        if !(0..=end).contains(&target) {
            return Err(WireError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "cannot delete records before offset {offset} of partition {}: it holds {start} to {end} (-1 is its end)",
                    id.partition
                ),
            ));
        }
        if target <= start {
            return Ok(start);
        }
        self.log_start.insert(partition_key(id), target.to_be_bytes()).map_err(storage_error)?;
        self.db.persist(PersistMode::SyncData).map_err(storage_error)?;
        partition.log_start_offset.fetch_max(target, Ordering::AcqRel);
        let mut deleted = 0;
        for guard in self.log.range(first_key(id)..log_key(id, target)) {
            let (key, value) = guard.into_inner().map_err(storage_error)?;
            let header = stored::header(&value)?;
            if header.last_offset() >= target || header.last_offset() + 1 >= end {
                break;
            }
            self.log.remove(key).map_err(storage_error)?;
            partition.size_bytes.fetch_sub(stored::stored_len(&value) as u64, Ordering::Relaxed);
            deleted += 1;
        }
        self.prune_time_index(id, target)?;
        tracing::info!(
            topic_id = id.topic_id,
            partition = id.partition,
            log_start_offset = target,
            deleted,
            "records deleted"
        );
        Ok(target)
    }

    /// Drops the time index entries of batches below `log_start_offset` but the last of them.
    fn prune_time_index(&self, id: PartitionId, log_start_offset: i64) -> Result<(), WireError> {
        let mut below = Vec::new();
        for guard in self.time_index.range(time_index_key(id, i64::MIN)..=time_index_key(id, i64::MAX)) {
            let (key, value) = guard.into_inner().map_err(storage_error)?;
            if indexed_offset(&value).is_some_and(|offset| offset >= log_start_offset) {
                break;
            }
            below.push(key);
        }
        below.pop();
        for key in below {
            self.time_index.remove(key).map_err(storage_error)?;
        }
        Ok(())
    }

    /// Deletes whole batches from the front while they are older than `retention_ms` or the
    /// partition is over `retention_bytes`. Never deletes the newest batch. Returns batches
    /// deleted.
    pub fn enforce_retention(
        &self,
        partition: &PartitionState,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        now_ms: i64,
    ) -> Result<usize, WireError> {
        let id = partition.id;
        let _deleting = partition.deleting.lock().unwrap_or_else(|e| e.into_inner());
        let end = partition.end_offset();
        let mut deleted = 0;
        for guard in self.log.range(first_key(id)..log_key(id, end)) {
            let (key, value) = guard.into_inner().map_err(storage_error)?;
            let header = stored::header(&value)?;
            if header.last_offset() + 1 >= end {
                break; // the newest batch stays: it carries the partition's next offset
            }
            let too_old = retention_ms.is_some_and(|ms| header.max_timestamp < now_ms - ms as i64);
            let too_big = retention_bytes
                .is_some_and(|b| partition.size_bytes().saturating_sub(stored::stored_len(&value) as u64) >= b);
            if !(too_old || too_big) {
                break;
            }
            // Readers see the new start before the batch disappears (never a start DeleteRecords
            // moved further).
            partition.log_start_offset.fetch_max(header.last_offset() + 1, Ordering::AcqRel);
            self.log.remove(key).map_err(storage_error)?;
            partition.size_bytes.fetch_sub(stored::stored_len(&value) as u64, Ordering::Relaxed);
            deleted += 1;
        }
        if deleted > 0 {
            self.prune_time_index(id, partition.log_start_offset())?;
            tracing::info!(
                topic_id = id.topic_id,
                partition = id.partition,
                deleted,
                log_start_offset = partition.log_start_offset(),
                "retention deleted batches"
            );
        }
        Ok(deleted)
    }

    /// Removes a partition's batches and forgets it.
    pub fn delete_partition(&self, id: PartitionId) -> Result<(), WireError> {
        self.partitions.remove(&id);
        let keys: Vec<_> = self
            .log
            .range(first_key(id)..=last_key(id))
            .map(|g| g.key())
            .collect::<Result<_, _>>()
            .map_err(storage_error)?;
        for key in keys {
            self.log.remove(key).map_err(storage_error)?;
        }
        let entries: Vec<_> = self
            .time_index
            .range(time_index_key(id, i64::MIN)..=time_index_key(id, i64::MAX))
            .map(|g| g.key())
            .collect::<Result<_, _>>()
            .map_err(storage_error)?;
        for key in entries {
            self.time_index.remove(key).map_err(storage_error)?;
        }
        self.log_start.remove(partition_key(id)).map_err(storage_error)?;
        self.high_watermarks.remove(partition_key(id)).map_err(storage_error)?;
        Ok(())
    }

    /// Writes the high watermark of each replicated partition that moved since the last
    /// checkpoint, in one write (Kafka's `replication-offset-checkpoint`); returns how many.
    /// Not fsynced: an older checkpoint is still at most the true high watermark.
    pub fn checkpoint_high_watermarks(&self) -> Result<usize, WireError> {
        let mut batch = self.db.batch();
        let mut moved = Vec::new();
        for entry in self.partitions.iter() {
            let p = entry.value();
            let hw = p.high_watermark();
            if p.replicated.load(Ordering::Acquire) && p.checkpointed.load(Ordering::Acquire) != hw {
                batch.insert(&self.high_watermarks, partition_key(p.id), hw.to_be_bytes());
                moved.push((p.clone(), hw));
            }
        }
        if moved.is_empty() {
            return Ok(0);
        }
        batch.commit().map_err(storage_error)?;
        for (p, hw) in &moved {
            p.checkpointed.store(*hw, Ordering::Release);
        }
        Ok(moved.len())
    }

    /// Deletes the sealed segment files no index entry names any more: for each partition a
    /// segment holds batches of, the partition holds no batch at or below the base offset of
    /// its last one there. Returns how many were deleted.
    ///
    /// Why that is enough: a partition's batches in one segment were appended with increasing
    /// offsets, except after a truncation, which removed the batches above its new end first;
    /// the extent is rewritten with each group's last base, so every batch of the partition
    /// still in the segment is at or below it. A batch at or below it elsewhere (a newer
    /// segment, after a truncation) only keeps the segment longer than needed.
    pub fn collect_segments(&self) -> Result<usize, WireError> {
        let mut deleted = 0;
        for segment in self.segments.sealed().map_err(storage_error)? {
            let mut rows = Vec::new();
            let mut live = false;
            for guard in self.extents.prefix(segment.to_be_bytes()) {
                let (key, value) = guard.into_inner().map_err(storage_error)?;
                let (Some((_, id)), Some(last_base)) = (parse_extent_key(&key), indexed_offset(&value)) else {
                    continue;
                };
                if self.log.range(first_key(id)..=log_key(id, last_base)).next().is_some() {
                    live = true;
                    break;
                }
                rows.push(key);
            }
            if live {
                continue;
            }
            let mut write = self.db.batch();
            for key in rows {
                write.remove(&self.extents, key);
            }
            write.commit().map_err(storage_error)?;
            self.segments.delete(segment).map_err(storage_error)?;
            deleted += 1;
        }
        if deleted > 0 {
            tracing::info!(deleted, "segment files no batch refers to deleted");
        }
        Ok(deleted)
    }

    /// Test and tooling hook: writes raw bytes as the value at a key, bypassing validation.
    #[cfg(test)]
    fn write_raw(&self, id: PartitionId, offset: i64, bytes: &[u8]) {
        self.log.insert(log_key(id, offset).to_vec(), bytes.to_vec()).unwrap();
        self.db.persist(PersistMode::SyncAll).unwrap();
    }
}

impl Writer {
    fn run(mut self, jobs: std::sync::mpsc::Receiver<WriterJob>) {
        while let Ok(first) = jobs.recv() {
            let mut group = Vec::new();
            let mut bytes = 0usize;
            let mut next = Some(first);
            // Appends queued behind each other share one write batch; any other job ends the
            // group and runs after it, so jobs take effect in queue order.
            let mut other = None;
            while let Some(job) = next.take() {
                bytes += job_bytes(&job);
                match job {
                    WriterJob::Append(append) => group.push(append),
                    WriterJob::Appends(appends) => group.extend(appends),
                    job @ (WriterJob::ForgetProducers { .. } | WriterJob::Truncate { .. }) => {
                        other = Some(job);
                        break;
                    }
                }
                if group.len() < GROUP_COMMIT_JOBS_MAX && bytes < GROUP_COMMIT_BYTES_MAX {
                    next = jobs.try_recv().ok();
                }
            }
            if !group.is_empty() {
                if let Some(inline) = self.inline_segments.as_mut() {
                    inline.place(group.iter_mut().collect());
                }
                self.commit_group(group);
            }
            match other {
                Some(WriterJob::ForgetProducers { which, reply }) => {
                    let _ = reply.send(self.forget_producers(which));
                }
                Some(WriterJob::Truncate { partition, offset, restart_at, reply }) => {
                    let _ = reply.send(self.truncate(&partition, offset, restart_at));
                }
                _ => {}
            }
        }
    }

    fn forget_producers(&mut self, which: ProducerFilter) -> Result<usize, WireError> {
        let doomed: Vec<(PartitionId, i64)> = self
            .producers
            .iter()
            .filter(|((id, _), state)| match which {
                ProducerFilter::Topic(topic_id) => id.topic_id == topic_id,
                ProducerFilter::IdleAt { now_ms, expiration_ms } => state.expired(now_ms, expiration_ms),
            })
            .map(|(key, _)| *key)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut write = self.db.batch();
        for (id, producer_id) in &doomed {
            write.remove(&self.producer_store, producer_key(*id, *producer_id));
        }
        write.commit().map_err(storage_error)?;
        for key in &doomed {
            self.producers.remove(key);
        }
        Ok(doomed.len())
    }

    /// [`LogStore::truncate`], on the writer thread so no append is staged meanwhile.
    fn truncate(&mut self, partition: &PartitionState, offset: i64, restart_at: Option<i64>) -> Result<i64, WireError> {
        let id = partition.id;
        let _deleting = partition.deleting.lock().unwrap_or_else(|e| e.into_inner());
        let end = partition.end_offset();
        if offset >= end && restart_at.is_none() {
            return Ok(end);
        }
        let offset = offset.max(0);
        // The batch holding `offset` goes whole: the new end is its base.
        let holding = self.log.range(first_key(id)..=log_key(id, offset)).next_back();
        let new_end = match holding {
            Some(guard) => {
                let (key, value) = guard.into_inner().map_err(storage_error)?;
                let header = stored::header(&value)?;
                if header.last_offset() >= offset {
                    offset_of_key(&key)
                } else {
                    offset
                }
            }
            None => offset,
        };
        let mut write = self.db.batch();
        let mut removed_bytes = 0u64;
        for guard in self.log.range(log_key(id, new_end)..=last_key(id)) {
            let (key, value) = guard.into_inner().map_err(storage_error)?;
            removed_bytes += stored::stored_len(&value) as u64;
            write.remove(&self.log, key);
        }
        let mut max_timestamp = i64::MIN;
        for guard in self.time_index.range(time_index_key(id, i64::MIN)..=time_index_key(id, i64::MAX)) {
            let (key, value) = guard.into_inner().map_err(storage_error)?;
            match (parse_time_index_key(&key), indexed_offset(&value)) {
                (Some((_, timestamp)), Some(at)) if at < new_end => max_timestamp = timestamp,
                _ => write.remove(&self.time_index, key),
            }
        }
        for guard in self.leader_epochs.range(epoch_key(id, 0)..=epoch_key(id, i32::MAX)) {
            let (key, value) = guard.into_inner().map_err(storage_error)?;
            if indexed_offset(&value).is_none_or(|start| start >= new_end) {
                write.remove(&self.leader_epochs, key);
            }
        }
        let start = partition.log_start_offset();
        // Restarting: every record went (the new end was 0); the log starts and ends there now.
        let (new_start, final_end) = match restart_at {
            Some(at) => (Some(at), at),
            None => ((new_end < start).then_some(new_end), new_end),
        };
        if let Some(new_start) = new_start {
            write.insert(&self.log_start, partition_key(id), new_start.to_be_bytes());
        }
        // Idempotent producers whose state names a dropped batch are rebuilt from the batches
        // that stay (the newest RECENT_BATCHES of each, read backwards from the new end).
        let affected: Vec<i64> = self
            .producers
            .iter()
            .filter(|((p, _), state)| *p == id && state.recent.iter().any(|&(_, _, at)| at >= new_end))
            .map(|((_, pid), _)| *pid)
            .collect();
        let rebuilt = self.rebuild_producers(id, new_end, &affected)?;
        for pid in &affected {
            match rebuilt.get(pid) {
                Some(state) => {
                    let value = serde_json::to_vec(state).map_err(storage_error)?;
                    write.insert(&self.producer_store, producer_key(id, *pid), value);
                }
                None => write.remove(&self.producer_store, producer_key(id, *pid)),
            }
        }
        write.commit().map_err(storage_error)?;
        self.db.persist(PersistMode::SyncData).map_err(storage_error)?;
        for pid in affected {
            match rebuilt.get(&pid) {
                Some(state) => self.producers.insert((id, pid), state.clone()),
                None => self.producers.remove(&(id, pid)),
            };
        }
        partition.epochs.lock().unwrap_or_else(|e| e.into_inner()).retain(|&(_, s)| s < new_end);
        if let Some(new_start) = new_start {
            partition.log_start_offset.store(new_start, Ordering::Release);
        }
        partition.size_bytes.fetch_sub(removed_bytes.min(partition.size_bytes()), Ordering::Relaxed);
        partition.max_timestamp.store(max_timestamp, Ordering::Release);
        partition.end_offset.send_if_modified(|current| std::mem::replace(current, final_end) != final_end);
        partition.high_watermark.send_if_modified(|hw| {
            let lowered = (*hw).min(final_end);
            std::mem::replace(hw, lowered) != lowered
        });
        tracing::info!(topic_id = id.topic_id, partition = id.partition, from = end, to = final_end, "log truncated");
        Ok(final_end)
    }

    /// The states of `producer_ids` as the partition's batches below `end` leave them: the
    /// newest batches of each, read backwards (at most [`TRUNCATION_SCAN_BATCHES_MAX`] batches);
    /// a producer with none there has no state.
    fn rebuild_producers(
        &self,
        id: PartitionId,
        end: i64,
        producer_ids: &[i64],
    ) -> Result<HashMap<i64, ProducerState>, WireError> {
        let mut found: HashMap<i64, Vec<BatchHeader>> = HashMap::new();
        if producer_ids.is_empty() {
            return Ok(HashMap::new());
        }
        for guard in self.log.range(first_key(id)..log_key(id, end)).rev().take(TRUNCATION_SCAN_BATCHES_MAX) {
            let value = guard.value().map_err(storage_error)?;
            let header = stored::header(&value)?;
            if producer_ids.contains(&header.producer_id) {
                let newest = found.entry(header.producer_id).or_default();
                if newest.len() < idempotence::RECENT_BATCHES {
                    newest.push(header);
                }
            }
            if found.len() == producer_ids.len() && found.values().all(|b| b.len() >= idempotence::RECENT_BATCHES) {
                break;
            }
        }
        let now_ms = weir_sdk::now_ms();
        Ok(found
            .into_iter()
            .map(|(pid, mut headers)| {
                headers.reverse();
                let mut state: Option<ProducerState> = None;
                for h in headers {
                    let last = h.base_sequence.wrapping_add(h.last_offset_delta);
                    state = Some(ProducerState::record(
                        state.as_ref(),
                        h.producer_epoch,
                        h.base_sequence,
                        last,
                        h.base_offset,
                        now_ms,
                    ));
                }
                (pid, state.unwrap_or_default())
            })
            .collect())
    }

    fn commit_group(&mut self, group: Vec<AppendJob>) {
        let now_ms = weir_sdk::now_ms();
        // The base offset of each partition's last batch in each segment written to.
        let mut extents: HashMap<(u64, PartitionId), i64> = HashMap::new();
        let mut write = self.db.batch();
        let mut fsync = false;
        // Next offsets and producer states as this group assigns them; applied only after the
        // commit succeeds.
        let mut next: HashMap<PartitionId, i64> = HashMap::new();
        let mut producers: HashMap<(PartitionId, i64), ProducerState> = HashMap::new();
        // Each partition's largest timestamp as this group raises it.
        let mut max_timestamps: HashMap<PartitionId, i64> = HashMap::new();
        // Each partition's latest leader epoch as this group writes it, and new epochs' starts.
        let mut latest_epochs: HashMap<PartitionId, Option<i32>> = HashMap::new();
        let mut new_epochs: Vec<(Arc<PartitionState>, i32, i64)> = Vec::new();
        let mut outcomes = Vec::with_capacity(group.len());
        for job in &group {
            let id = job.partition.id;
            let start = *next.entry(id).or_insert_with(|| job.partition.end_offset());
            match self.stage(job, start, now_ms, &mut producers) {
                Ok(staged) => {
                    let max = max_timestamps.entry(id).or_insert_with(|| job.partition.max_timestamp());
                    let latest = latest_epochs.entry(id).or_insert_with(|| job.partition.latest_epoch());
                    for (offset, stored, timestamp, epoch) in &staged.batches {
                        match stored {
                            Stored::Inline(value) => {
                                write.insert(&self.log, log_key(id, *offset).to_vec(), value.clone())
                            }
                            Stored::Segment { head, at } => {
                                extents.insert((at.segment, id), *offset);
                                write.insert(
                                    &self.log,
                                    log_key(id, *offset).to_vec(),
                                    stored::pointer_value(head, *at),
                                );
                            }
                        }
                        if *timestamp > *max {
                            *max = *timestamp;
                            write.insert(&self.time_index, time_index_key(id, *timestamp), offset.to_be_bytes());
                        }
                        if latest.is_none_or(|l| *epoch > l) {
                            *latest = Some(*epoch);
                            write.insert(&self.leader_epochs, epoch_key(id, *epoch), offset.to_be_bytes());
                            new_epochs.push((job.partition.clone(), *epoch, *offset));
                        }
                    }
                    next.insert(id, staged.end);
                    fsync |= job.fsync && !staged.batches.is_empty();
                    outcomes.push(Ok((staged.base, staged.added)));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        for ((id, producer_id), state) in &producers {
            let value = serde_json::to_vec(state).expect("producer state serializes");
            write.insert(&self.producer_store, producer_key(*id, *producer_id), value);
        }
        // The segment writer wrote the sections before it handed the jobs on, so they reach
        // the segment before the index entries that name them.
        for ((segment, id), base) in &extents {
            write.insert(&self.extents, extent_key(*segment, *id), base.to_be_bytes());
        }
        let mut result = write.commit().map_err(storage_error);
        if result.is_ok() {
            if fsync {
                result = self.db.persist(PersistMode::SyncData).map_err(storage_error);
            }
            // Sections of appends that did not ask for an fsync are synced by the next
            // interval flush, even when another append of the group had the journal synced.
            if !fsync || !extents.is_empty() {
                self.dirty.store(true, Ordering::Release);
            }
        }
        if result.is_ok() {
            self.producers.extend(producers);
            for (partition, epoch, start) in &new_epochs {
                partition.record_epoch(*epoch, *start);
            }
            for job in &group {
                if let Some(max) = max_timestamps.get(&job.partition.id) {
                    job.partition.max_timestamp.fetch_max(*max, Ordering::AcqRel);
                }
            }
            for job in &group {
                let end = next[&job.partition.id];
                job.partition.end_offset.send_if_modified(|current| {
                    // Invariant: a partition's end offset only moves forward.
                    assert!(
                        end >= *current,
                        "end offset of {:?} would move back from {current} to {end}",
                        job.partition.id
                    );
                    let moved = *current != end;
                    *current = end;
                    moved
                });
                if !job.partition.replicated.load(Ordering::Acquire) {
                    job.partition.high_watermark.send_if_modified(|hw| std::mem::replace(hw, end) != end);
                }
            }
        }
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let reply = match (&result, outcome) {
                (Ok(()), Ok((base, added))) => {
                    job.partition.size_bytes.fetch_add(added, Ordering::Relaxed);
                    Ok(base)
                }
                (Ok(()), Err(e)) => Err(e),
                (Err(e), _) => Err(e.clone()),
            };
            let _ = job.reply.send(reply);
        }
    }

    /// Assigns offsets to a job's batches from `start`, applying the idempotent-producer rules.
    /// Either every batch of the job is accepted (duplicates answered with their old offset)
    /// or the job fails whole.
    fn stage(
        &self,
        job: &AppendJob,
        start: i64,
        now_ms: i64,
        producers: &mut HashMap<(PartitionId, i64), ProducerState>,
    ) -> Result<Staged, WireError> {
        let id = job.partition.id;
        let mut end = start;
        let mut base = None;
        let mut batches = Vec::with_capacity(job.batches.len());
        let mut added = 0u64;
        let mut staged_producers: HashMap<i64, ProducerState> = HashMap::new();
        let placed = job.placed.as_ref().map_err(Clone::clone)?;
        let epoch = if job.replica {
            None
        } else {
            Some(job.partition.leader_epoch().ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotLeaderOrFollower,
                    format!("partition {} is followed here, not led: its leader takes appends", id.partition),
                )
            })?)
        };
        for (i, (header, packed)) in job.batches.iter().enumerate() {
            let bytes = &packed.batch;
            // A copy of the leader's log: offsets as the leader gave them, contiguous.
            if job.replica && header.base_offset != end {
                return Err(WireError::new(
                    ErrorCode::CorruptBatch,
                    format!(
                        "replicated batch of partition {} starts at offset {} but the log ends at {end}",
                        id.partition, header.base_offset
                    ),
                ));
            }
            if header.producer_id >= 0 && header.base_sequence >= 0 {
                let pid = header.producer_id;
                let last_sequence = header.base_sequence.wrapping_add(header.last_offset_delta);
                let current = staged_producers
                    .get(&pid)
                    .or_else(|| producers.get(&(id, pid)))
                    .or_else(|| self.producers.get(&(id, pid)));
                // A copied batch was checked by the leader: its state follows it as it is.
                let verdict = match job.replica {
                    true => Verdict::Append,
                    false => idempotence::check(current, header.producer_epoch, header.base_sequence, last_sequence)
                        .inspect_err(|e| {
                            tracing::debug!(
                                partition = id.partition,
                                producer_id = pid,
                                epoch = header.producer_epoch,
                                first = header.base_sequence,
                                last = last_sequence,
                                state = ?current,
                                "idempotent batch refused: {}",
                                e.message
                            )
                        })?,
                };
                match verdict {
                    Verdict::Duplicate { base_offset } => {
                        tracing::debug!(
                            partition = id.partition,
                            producer_id = pid,
                            base_offset,
                            "duplicate batch answered with its original offset"
                        );
                        base.get_or_insert(base_offset);
                        continue;
                    }
                    Verdict::Append => {
                        let state = ProducerState::record(
                            current,
                            header.producer_epoch,
                            header.base_sequence,
                            last_sequence,
                            end,
                            now_ms,
                        );
                        staged_producers.insert(pid, state);
                    }
                }
            }
            // The batch (or its header and compressed records) is copied once, into the value
            // fjall stores or, for a large one, into its segment file (no zero-fill, no second
            // copy), with the offset and leader epoch stamped into its first 16 bytes.
            let mut head = [0u8; STAMPED_HEAD_BYTES];
            head.copy_from_slice(&bytes[..STAMPED_HEAD_BYTES]);
            let epoch = match epoch {
                Some(epoch) => {
                    set_base_offset(&mut head, end);
                    set_partition_leader_epoch(&mut head, epoch);
                    epoch
                }
                None => header.partition_leader_epoch.max(0),
            };
            let stored = match goes_to_segment(job.fsync, packed) {
                true => {
                    let mut stamped = [0u8; BATCH_HEADER_BYTES];
                    stamped.copy_from_slice(packed.header_bytes());
                    stamped[..STAMPED_HEAD_BYTES].copy_from_slice(&head);
                    let at = placed.get(i).copied().flatten().ok_or_else(|| {
                        storage_error("a large batch reached the log writer without its segment place")
                    })?;
                    Stored::Segment { head: stamped, at }
                }
                false => {
                    let value = fjall::Slice::from_reader(&mut packed.reader(&head), packed.stored_len())
                        .map_err(storage_error)?;
                    debug_assert!(
                        stored::unpack(value.clone().into(), &self.segments).is_ok_and(|b| validate_batch(&b).is_ok()),
                        "batch stays valid with its assigned offset"
                    );
                    Stored::Inline(value)
                }
            };
            // Invariant: offsets are dense and increasing; a batch is stored under its base offset.
            // (BatchHeader::parse refuses a negative last offset delta, so a count is at least 1.)
            assert!(header.offset_count() > 0, "a parsed batch holds at least one offset");
            if let Some((previous, _, _, _)) = batches.last() {
                assert!(*previous < end, "offsets increase within an append");
            }
            base.get_or_insert(end);
            batches.push((end, stored, header.max_timestamp, epoch));
            end += header.offset_count();
            added += packed.stored_len() as u64;
        }
        producers.extend(staged_producers.into_iter().map(|(pid, state)| ((id, pid), state)));
        Ok(Staged { base: base.unwrap_or(start), end, batches, added })
    }
}

/// Decides, in the appending task rather than on the writer's thread, how each batch is stored.
fn pack(batches: Vec<(BatchHeader, Bytes)>) -> Vec<(BatchHeader, Packed)> {
    batches.into_iter().map(|(header, batch)| (header, Packed::new(&header, batch))).collect()
}

/// The bytes of a batch header a leader rewrites when it appends: the base offset, the batch
/// length (kept) and the partition leader epoch, all outside the CRC.
const STAMPED_HEAD_BYTES: usize = 16;

struct Staged {
    base: i64,
    end: i64,
    /// (base offset, how it is stored, largest timestamp, leader epoch) of each batch appended.
    batches: Vec<(i64, Stored, i64, i32)>,
    added: u64,
}

/// How the writer stores a staged batch.
enum Stored {
    /// As a fjall value, whole.
    Inline(fjall::Slice),
    /// Its section in a segment (written by the segment writer), its stamped header in a
    /// pointer value.
    Segment { head: [u8; BATCH_HEADER_BYTES], at: Located },
}

/// Whether a batch's section goes to a segment file: large, and not asking for an fsync before
/// its answer (which fjall's journal gives with one fsync; a segment would need a second).
fn goes_to_segment(fsync: bool, packed: &Packed) -> bool {
    !fsync && packed.section().len() >= SEGMENT_MIN_BODY
}

impl SegmentWriter {
    fn run(mut self, jobs: std::sync::mpsc::Receiver<WriterJob>, placed: std::sync::mpsc::SyncSender<WriterJob>) {
        while let Ok(first) = jobs.recv() {
            // Appends queued behind each other are written with one call.
            let mut bytes = job_bytes(&first);
            let mut taken = vec![first];
            while taken.len() < GROUP_COMMIT_JOBS_MAX && bytes < GROUP_COMMIT_BYTES_MAX {
                match jobs.try_recv() {
                    Ok(job) => {
                        bytes += job_bytes(&job);
                        taken.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.place(taken.iter_mut().flat_map(appends_mut).collect());
            for job in taken {
                if placed.send(job).is_err() {
                    return;
                }
            }
        }
    }

    /// Appends the sections of the jobs' large batches to the active segment, in order, and
    /// records in each job where its sections are (or why they are not).
    fn place(&mut self, mut jobs: Vec<&mut AppendJob>) {
        let large = |job: &AppendJob| job.batches.iter().any(|(_, packed)| goes_to_segment(job.fsync, packed));
        jobs.retain(|job| large(job));
        if jobs.is_empty() {
            return;
        }
        let appender = match Appender::next(self.appender.take(), &self.segments) {
            Ok(appender) => self.appender.insert(appender),
            Err(e) => {
                let e = storage_error(format!("opening a segment file: {e}"));
                for job in jobs {
                    job.placed = Err(e.clone());
                }
                return;
            }
        };
        let mut len = 0u64;
        for job in jobs.iter_mut() {
            let fsync = job.fsync;
            job.placed = Ok(job
                .batches
                .iter()
                .map(|(_, packed)| {
                    goes_to_segment(fsync, packed).then(|| {
                        let section = packed.section();
                        let at = Located {
                            segment: appender.id(),
                            position: appender.position(len),
                            // A section is at most a batch, whose length is an i32.
                            len: u32::try_from(section.len()).unwrap_or(u32::MAX),
                        };
                        len += section.len() as u64;
                        at
                    })
                })
                .collect());
        }
        let written = {
            let sections: Vec<&[u8]> = jobs
                .iter()
                .flat_map(|job| job.batches.iter().filter(|(_, packed)| goes_to_segment(job.fsync, packed)))
                .map(|(_, packed)| packed.section())
                .collect();
            appender.write(&sections, &self.segments)
        };
        if let Err(e) = written {
            let e = storage_error(format!("writing a segment file: {e}"));
            // How much of the write reached the segment is not known: the next appends go to a
            // new one.
            if let Some(appender) = self.appender.take() {
                appender.seal(&self.segments);
            }
            for job in jobs {
                job.placed = Err(e.clone());
            }
        }
    }
}

/// The appends a writer job holds.
fn appends_of(job: &WriterJob) -> &[AppendJob] {
    match job {
        WriterJob::Append(append) => std::slice::from_ref(append),
        WriterJob::Appends(appends) => appends,
        WriterJob::ForgetProducers { .. } | WriterJob::Truncate { .. } => &[],
    }
}

fn appends_mut(job: &mut WriterJob) -> &mut [AppendJob] {
    match job {
        WriterJob::Append(append) => std::slice::from_mut(append),
        WriterJob::Appends(appends) => appends,
        WriterJob::ForgetProducers { .. } | WriterJob::Truncate { .. } => &mut [],
    }
}

/// Bytes of the batches a writer job appends.
fn job_bytes(job: &WriterJob) -> usize {
    appends_of(job).iter().flat_map(|a| a.batches.iter()).map(|(h, _)| h.total_bytes).sum()
}

/// How often the interval flusher looks for unflushed appends.
pub const FLUSH_TICK: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use weir_sdk::batch::{encode_batch, Compression, Record};

    fn batch(n: usize, timestamp: i64) -> (BatchHeader, Bytes) {
        let records: Vec<Record> = (0..n)
            .map(|i| Record { value: Some(Bytes::from(format!("v{i}"))), timestamp, ..Record::default() })
            .collect();
        let bytes = encode_batch(&records, Compression::None).unwrap();
        (validate_batch(&bytes).unwrap(), bytes)
    }

    const P: PartitionId = PartitionId { topic_id: 1, partition: 0 };

    /// The log store of a database in `dir`, and the database (kept open by the caller).
    fn open_store(dir: &Path) -> (LogStore, Database) {
        let storage = crate::Storage::open(dir, 16).unwrap();
        (storage.log, storage.db)
    }

    /// The same, with large appends written to segments around the page cache (on a thread of
    /// their own) or through it.
    fn open_store_writing(dir: &Path, direct_writes: bool) -> (LogStore, Database) {
        let options = crate::segments::Options { direct_writes, ..Default::default() };
        let storage = crate::Storage::open_with(dir, 16, options).unwrap();
        (storage.log, storage.db)
    }

    #[tokio::test]
    async fn offsets_are_dense_and_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _db) = open_store(dir.path());
            let p = store.open_partition(P).unwrap();
            assert_eq!(store.append(p.clone(), vec![batch(3, 1)], true).await.unwrap(), 0);
            assert_eq!(store.append(p.clone(), vec![batch(2, 1), batch(1, 1)], true).await.unwrap(), 3);
            assert_eq!(p.end_offset(), 6);
            let read = store.read(&p, 4, 1 << 20, true).unwrap();
            assert_eq!(read.len(), 2, "the batch holding offset 4 and the one after");
            assert_eq!(validate_batch(&read[0]).unwrap().base_offset, 3);
        }
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        assert_eq!(p.end_offset(), 6);
        assert_eq!(store.append(p, vec![batch(1, 1)], true).await.unwrap(), 6);
    }

    /// A batch of `n` records of 1 KiB, each one byte repeated (compressible) or not.
    fn kib_batch(n: usize, timestamp: i64, compressible: bool) -> (BatchHeader, Bytes) {
        let value = |i: usize| match compressible {
            true => vec![b'a' + (i % 26) as u8; 1024],
            false => stored::random(1024, i as u64 + 1),
        };
        let records: Vec<Record> =
            (0..n).map(|i| Record { value: Some(Bytes::from(value(i))), timestamp, ..Record::default() }).collect();
        let bytes = encode_batch(&records, Compression::None).unwrap();
        (validate_batch(&bytes).unwrap(), bytes)
    }

    /// The record values of batches read back.
    fn values(batches: &[Bytes]) -> Vec<Bytes> {
        batches
            .iter()
            .flat_map(|b| weir_sdk::batch::decode_batches_within("", 0, b.clone(), 0, 1 << 30).unwrap())
            .map(|r| r.record.value.unwrap())
            .collect()
    }

    #[tokio::test]
    async fn compressible_batches_are_stored_smaller_and_read_back_whole_by_every_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (compressible, incompressible) = (kib_batch(64, 100, true), kib_batch(64, 200, false));
        let sent = values(&[compressible.1.clone(), incompressible.1.clone(), compressible.1.clone()]);
        {
            let (store, _db) = open_store(dir.path());
            let p = store.open_partition(P).unwrap();
            store.append(p.clone(), vec![compressible.clone()], false).await.unwrap();
            let after_one = p.size_bytes();
            assert!(
                after_one < compressible.1.len() as u64 / 4,
                "stored {after_one} bytes of {}",
                compressible.1.len()
            );
            store.append(p.clone(), vec![incompressible.clone()], false).await.unwrap();
            assert_eq!(
                p.size_bytes() - after_one,
                incompressible.1.len() as u64,
                "random records are stored as they are"
            );
            store.append(p.clone(), vec![compressible.clone()], true).await.unwrap();
            let read = store.read(&p, 0, 1 << 20, true).unwrap();
            assert_eq!(values(&read), sent);
            assert_eq!(read.iter().map(|b| validate_batch(b).unwrap().base_offset).collect::<Vec<_>>(), [0, 64, 128]);
            assert_eq!(values(&store.read_replica(&p, 64, 1 << 20).unwrap()), sent[64..]);
            assert_eq!(
                store.read(&p, 0, 70_000, false).unwrap().len(),
                1,
                "fetch sizes count the batch, not what it takes stored"
            );
            assert_eq!(store.offset_for_timestamp(&p, 150, 1 << 20).unwrap(), Some((64, 200)));
        }
        // After a restart the newest (compressed) batch passes recovery's check, and a follower's
        // truncation and a replica's append work on compressed batches.
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        assert_eq!(p.end_offset(), 192);
        assert_eq!(values(&store.read(&p, 0, 1 << 20, true).unwrap()), sent);
        p.follow();
        assert_eq!(store.truncate(p.clone(), 130).await.unwrap(), 128);
        let mut copied = compressible.1.to_vec();
        set_base_offset(&mut copied, 128);
        let copied = Bytes::from(copied);
        store.append_replica(p.clone(), vec![(validate_batch(&copied).unwrap(), copied)], false).await.unwrap();
        assert_eq!(values(&store.read_replica(&p, 0, 1 << 20).unwrap()), sent);
    }

    #[tokio::test]
    async fn torn_newest_batch_is_dropped_on_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let good_end;
        {
            let (store, _db) = open_store(dir.path());
            let p = store.open_partition(P).unwrap();
            store.append(p.clone(), vec![batch(3, 1)], true).await.unwrap();
            store.append(p.clone(), vec![batch(3, 1)], true).await.unwrap();
            good_end = p.end_offset();
            let (_, mut torn) = batch(4, 1);
            let mut torn_vec = torn.to_vec();
            set_base_offset(&mut torn_vec, good_end);
            torn = Bytes::from(torn_vec);
            store.write_raw(P, good_end, &torn[..torn.len() - 7]);
        }
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        assert_eq!(p.end_offset(), good_end, "only the torn batch is gone");
        assert_eq!(store.read(&p, 0, 1 << 20, true).unwrap().len(), 2);
    }

    /// The segment files in a database folder, by id.
    fn segment_ids(dir: &Path) -> Vec<u64> {
        let mut ids: Vec<u64> = std::fs::read_dir(dir.join("segments"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().trim_end_matches(".seg").parse().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A batch of `n` records of 1 KiB, each half random: LZ4 halves its records section.
    fn half_random_batch(n: usize, timestamp: i64) -> (BatchHeader, Bytes) {
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let value = [stored::random(512, i as u64 + 1), vec![b'a'; 512]].concat();
                Record { value: Some(Bytes::from(value)), timestamp, ..Record::default() }
            })
            .collect();
        let bytes = encode_batch(&records, Compression::None).unwrap();
        (validate_batch(&bytes).unwrap(), bytes)
    }

    #[tokio::test]
    async fn large_batches_are_written_once_to_a_segment_and_read_back_by_every_reader_after_reopen() {
        large_batches_round_trip(false).await;
    }

    #[tokio::test]
    async fn large_batches_written_around_the_page_cache_read_back_the_same() {
        large_batches_round_trip(true).await;
    }

    async fn large_batches_round_trip(direct_writes: bool) {
        let dir = tempfile::tempdir().unwrap();
        // (what, batch, fsync, kept in fjall whole)
        let cases = [
            ("large, incompressible", kib_batch(16, 1_000, false), false, false),
            ("large, compressed by Weir to a section still over 8 KiB", half_random_batch(64, 1_001), false, false),
            ("small", kib_batch(2, 1_002, false), false, true),
            ("large, appended with an fsync: one fsync, in fjall", kib_batch(16, 1_003, false), true, true),
            ("large again, after an inline one", kib_batch(20, 1_004, false), false, false),
            ("over 128 KiB: around the page cache if direct writes are on", kib_batch(200, 1_004, false), false, false),
            ("large after that, starting inside a block", kib_batch(17, 1_004, false), false, false),
        ];
        let (sent, size) = {
            let (store, _db) = open_store_writing(dir.path(), direct_writes);
            let p = store.open_partition(P).unwrap();
            let mut sent = Vec::new();
            for (what, (header, bytes), fsync, inline) in cases.clone() {
                let base = store.append(p.clone(), vec![(header, bytes.clone())], fsync).await.unwrap();
                let value = store.log.get(log_key(P, base)).unwrap().unwrap();
                assert_eq!(stored::located(&value).is_none(), inline, "{what}: {} bytes in fjall", value.len());
                if let Some(at) = stored::located(&value) {
                    assert!(at.len as usize >= SEGMENT_MIN_BODY, "{what}: {at:?}");
                    assert_eq!(
                        stored::stored_len(&value) < bytes.len(),
                        what.contains("compressed"),
                        "{what}: {at:?} of a batch of {}",
                        bytes.len()
                    );
                }
                assert_eq!(stored::header(&value).unwrap().max_timestamp, header.max_timestamp, "{what}");
                sent.push(bytes);
            }
            assert_eq!(segment_ids(dir.path()).len(), 1, "one segment holds every large batch");
            // Where the file system takes direct writes (ext4 and xfs do), the largest went so.
            let expected = u64::from(direct_writes && store.segments.writes_around_cache());
            assert_eq!(store.segments.direct_writes(), expected);
            let read = store.read(&p, 0, usize::MAX, true).unwrap();
            assert_eq!(values(&read), values(&sent));
            (sent, p.size_bytes())
        };
        let (store, _db) = open_store_writing(dir.path(), direct_writes);
        let p = store.open_partition(P).unwrap();
        assert_eq!(p.size_bytes(), size, "sizes count the sections in segments after a restart too");
        assert_eq!(p.max_timestamp(), 1_004);
        for from in [0, 16, p.end_offset() - 1] {
            let read = store.read(&p, from, usize::MAX, true).unwrap();
            let replica = store.read_replica(&p, from, usize::MAX).unwrap();
            assert_eq!(read, replica, "from {from}: consumers and followers read the same batches");
        }
        assert_eq!(values(&store.read(&p, 0, usize::MAX, true).unwrap()), values(&sent));
        assert_eq!(store.offset_for_timestamp(&p, 1_001, 1 << 30).unwrap(), Some((16, 1_001)));
        // Appends after a restart go to a new segment: nothing is written behind bytes a crash
        // may have left.
        let (header, bytes) = kib_batch(16, 1_005, false);
        store.append(p.clone(), vec![(header, bytes.clone())], false).await.unwrap();
        assert_eq!(segment_ids(dir.path()).len(), 2);
        let read = store.read(&p, 0, usize::MAX, true).unwrap();
        assert_eq!(values(&read), values(&[sent, vec![bytes]].concat()));
    }

    #[tokio::test]
    async fn a_segment_cut_short_by_a_crash_loses_only_the_batches_it_cut() {
        let dir = tempfile::tempdir().unwrap();
        let good_end;
        {
            let (store, _db) = open_store(dir.path());
            let p = store.open_partition(P).unwrap();
            for i in 0..3 {
                store.append(p.clone(), vec![kib_batch(16, i, false)], false).await.unwrap();
            }
            good_end = 32;
            store.flush_if_dirty().unwrap();
        }
        // As if the machine stopped before the last section reached the disk.
        let [segment] = segment_ids(dir.path())[..] else { panic!("one segment") };
        let file = dir.path().join("segments").join(format!("{segment:020}.seg"));
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 100).unwrap();
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        assert_eq!(p.end_offset(), good_end, "the cut batch is dropped, the two before it stay");
        assert_eq!(store.read(&p, 0, usize::MAX, true).unwrap().len(), 2);
        assert_eq!(store.append(p.clone(), vec![kib_batch(16, 9, false)], false).await.unwrap(), good_end);
        assert_eq!(store.read(&p, 0, usize::MAX, true).unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_segment_file_is_deleted_once_no_partition_has_a_batch_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open_store(dir.path());
        store.segments.set_target_bytes(1); // every append after the first starts a segment
        let q = PartitionId { topic_id: 2, partition: 0 };
        let (p, q) = (store.open_partition(P).unwrap(), store.open_partition(q).unwrap());
        // Segments 0..4 hold one batch of P each; segment 2 holds one of Q as well.
        for i in 0..5 {
            store.append(p.clone(), vec![kib_batch(16, 1_000, false)], false).await.unwrap();
            if i == 2 {
                store.segments.set_target_bytes(u64::MAX);
                store.append(q.clone(), vec![kib_batch(16, 1_000, false)], false).await.unwrap();
                store.segments.set_target_bytes(1);
            }
        }
        let before = segment_ids(dir.path());
        assert_eq!(before.len(), 5, "{before:?}");
        assert_eq!(store.collect_segments().unwrap(), 0, "every segment holds a batch");
        assert_eq!(store.enforce_retention(&p, Some(10), None, 100_000).unwrap(), 4, "all but P's newest");
        assert_eq!(store.collect_segments().unwrap(), 3, "segments 0, 1 and 3");
        assert_eq!(segment_ids(dir.path()), vec![before[2], before[4]], "Q's batch and P's newest keep theirs");
        store.delete_partition(q.id).unwrap();
        assert_eq!(store.collect_segments().unwrap(), 1);
        assert_eq!(segment_ids(dir.path()), vec![before[4]], "the active segment stays");
        assert_eq!(store.read(&p, p.log_start_offset(), usize::MAX, true).unwrap().len(), 1);
        // Truncated batches leave their bytes behind until the segment goes.
        store.append(p.clone(), vec![kib_batch(16, 1_000, false)], false).await.unwrap();
        store.truncate(p.clone(), 80).await.unwrap();
        store.append(p.clone(), vec![kib_batch(16, 1_000, false)], false).await.unwrap();
        assert_eq!(store.read(&p, 64, usize::MAX, true).unwrap().len(), 2);
        // The truncated batch's segment stays while P holds a batch at or below its offset.
        assert_eq!(store.collect_segments().unwrap(), 0);
    }

    #[tokio::test]
    async fn appends_submitted_together_are_stored_in_the_order_they_were_pushed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open_store(dir.path());
        let q = PartitionId { topic_id: 2, partition: 0 };
        let (p, q) = (store.open_partition(P).unwrap(), store.open_partition(q).unwrap());
        let mut appends = Appends::default();
        let first = appends.push(p.clone(), vec![batch(3, 1)], false);
        let other = appends.push(q.clone(), vec![batch(2, 1)], false);
        let second = appends.push(p.clone(), vec![kib_batch(16, 1, false)], false);
        store.submit_appends(appends).await.unwrap();
        assert_eq!((first.await.unwrap(), second.await.unwrap(), other.await.unwrap()), (0, 3, 0));
        assert_eq!((p.end_offset(), q.end_offset()), (19, 2));
        // Appends never submitted answer an error, not a hang.
        let mut dropped = Appends::default();
        let never = dropped.push(p.clone(), vec![batch(1, 1)], false);
        drop(dropped);
        assert!(never.await.is_err());
        assert_eq!(p.end_offset(), 19);
    }

    #[tokio::test]
    async fn retention_deletes_from_the_front_but_keeps_the_newest_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        for _ in 0..5 {
            store.append(p.clone(), vec![batch(2, 1_000)], false).await.unwrap();
        }
        assert_eq!(store.enforce_retention(&p, Some(10), None, 1_000).unwrap(), 0, "nothing is old yet");
        assert_eq!(store.enforce_retention(&p, Some(10), None, 100_000).unwrap(), 4);
        assert_eq!(p.log_start_offset(), 8);
        assert_eq!(store.read(&p, 0, 1 << 20, true).unwrap_err().code, ErrorCode::OffsetOutOfRange);
        assert_eq!(store.read(&p, 8, 1 << 20, true).unwrap().len(), 1);
        let single = p.size_bytes();
        store.append(p.clone(), vec![batch(2, 1_000)], false).await.unwrap();
        assert_eq!(store.enforce_retention(&p, None, Some(single), 1_000).unwrap(), 1);
        assert_eq!(p.log_start_offset(), 10);
    }

    /// A batch of `n` records from idempotent producer `pid`, starting at `sequence`.
    #[tokio::test]
    async fn delete_records_moves_the_start_durably_even_inside_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _db) = open_store(dir.path());
            let p = store.open_partition(P).unwrap();
            for t in [100, 200, 300, 400] {
                store.append(p.clone(), vec![batch(2, t)], false).await.unwrap();
            }
            assert_eq!(store.delete_records(&p, 3).unwrap(), 3);
            assert_eq!(p.log_start_offset(), 3);
            assert_eq!(store.read(&p, 2, 1 << 20, true).unwrap_err().code, ErrorCode::OffsetOutOfRange);
            let first = store.read(&p, 3, 1 << 20, true).unwrap();
            assert_eq!(validate_batch(&first[0]).unwrap().base_offset, 2, "the batch holding 3 stays");
            assert_eq!(store.offset_for_timestamp(&p, 0, 1 << 20).unwrap(), Some((3, 200)), "not below the start");
            assert_eq!(store.delete_records(&p, 1).unwrap(), 3, "a start never moves back");
            assert_eq!(store.delete_records(&p, 9).unwrap_err().code, ErrorCode::OffsetOutOfRange);
        }
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        assert_eq!(p.log_start_offset(), 3, "the start survives a restart");
        assert_eq!(store.delete_records(&p, -1).unwrap(), 8, "-1 deletes up to the end");
        assert_eq!((p.log_start_offset(), p.end_offset()), (8, 8));
        store.append(p.clone(), vec![batch(2, 500)], false).await.unwrap();
        assert_eq!(store.read(&p, 8, 1 << 20, true).unwrap().len(), 1, "appends go on after the newest batch");
    }

    /// Entries in the time index of partition `P`: (timestamp, base offset).
    fn index_entries(store: &LogStore) -> Vec<(i64, i64)> {
        store
            .time_index
            .range(time_index_key(P, i64::MIN)..=time_index_key(P, i64::MAX))
            .map(|g| {
                let (k, v) = g.into_inner().unwrap();
                (parse_time_index_key(&k).unwrap().1, indexed_offset(&v).unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn timestamp_lookups_seek_the_time_index_across_retention_restart_and_an_older_log() {
        let dir = tempfile::tempdir().unwrap();
        let find = |store: &LogStore, p: &PartitionState, t| store.offset_for_timestamp(p, t, 1 << 20).unwrap();
        {
            let (store, _db) = open_store(dir.path());
            let p = store.open_partition(P).unwrap();
            // Batches of 2 records at times 100, 300, 200 (late), 500: offsets 0, 2, 4, 6.
            for t in [100, 300, 200, 500] {
                store.append(p.clone(), vec![batch(2, t)], false).await.unwrap();
            }
            assert_eq!(index_entries(&store), [(100, 0), (300, 2), (500, 6)], "only batches that raise the max");
            assert_eq!(find(&store, &p, 50), Some((0, 100)));
            assert_eq!(find(&store, &p, 150), Some((2, 300)), "the first record at or after, in offset order");
            assert_eq!(find(&store, &p, 300), Some((2, 300)));
            assert_eq!(find(&store, &p, 301), Some((6, 500)));
            assert_eq!(find(&store, &p, 501), None);
            // Retention deletes the batches at 0 and 2; the index keeps the last entry below the
            // new start, and a lookup reads retained batches from the start.
            assert_eq!(store.enforce_retention(&p, None, Some(2 * p.size_bytes() / 4), 0).unwrap(), 2);
            assert_eq!(p.log_start_offset(), 4);
            assert_eq!(index_entries(&store), [(300, 2), (500, 6)]);
            assert_eq!(find(&store, &p, 150), Some((4, 200)), "the retained late batch answers");
            assert_eq!(find(&store, &p, 250), Some((6, 500)));
        }
        // A restart recovers the largest timestamp; a log without an index gets one built.
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        assert_eq!(p.max_timestamp(), 500);
        let keys: Vec<_> = store.time_index.iter().map(|g| g.key().unwrap()).collect();
        for key in keys {
            store.time_index.remove(key).unwrap();
        }
        store.partitions.remove(&P);
        let p = store.open_partition(P).unwrap();
        assert_eq!(index_entries(&store), [(200, 4), (500, 6)]);
        assert_eq!(find(&store, &p, 150), Some((4, 200)));
        store.delete_partition(P).unwrap();
        assert!(index_entries(&store).is_empty(), "a deleted partition leaves no index behind");
    }

    fn idempotent_batch(n: usize, pid: i64, epoch: i16, sequence: i32) -> (BatchHeader, Bytes) {
        let (_, bytes) = batch(n, 1);
        let mut b = bytes.to_vec();
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&sequence.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        (validate_batch(&b).unwrap(), Bytes::from(b))
    }

    #[tokio::test]
    async fn idempotent_producer_duplicates_are_dropped_and_gaps_rejected_across_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _db) = open_store(dir.path());
            let p = store.open_partition(P).unwrap();
            assert_eq!(store.append(p.clone(), vec![idempotent_batch(3, 7, 0, 0)], true).await.unwrap(), 0);
            assert_eq!(store.append(p.clone(), vec![idempotent_batch(2, 7, 0, 3)], true).await.unwrap(), 3);
            assert_eq!(
                store.append(p.clone(), vec![idempotent_batch(2, 7, 0, 3)], true).await.unwrap(),
                3,
                "a retry gets the original offset"
            );
            assert_eq!(p.end_offset(), 5, "and is not stored twice");
        }
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        assert_eq!(
            store.append(p.clone(), vec![idempotent_batch(2, 7, 0, 3)], true).await.unwrap(),
            3,
            "remembered across restart"
        );
        let gap = store.append(p.clone(), vec![idempotent_batch(1, 7, 0, 9)], true).await.unwrap_err();
        assert_eq!(gap.code, ErrorCode::OutOfOrderSequence);
        let fenced = store.append(p.clone(), vec![idempotent_batch(1, 7, -1, 5)], true).await.unwrap_err();
        assert_eq!(fenced.code, ErrorCode::InvalidProducerEpoch);
        assert_eq!(store.append(p.clone(), vec![idempotent_batch(1, 7, 0, 5)], true).await.unwrap(), 5);
    }

    /// The leader's batches as stored, ready for a follower to copy.
    fn copied(store: &LogStore, p: &PartitionState, from: i64) -> Vec<(BatchHeader, Bytes)> {
        let read = store.read_replica(p, from, usize::MAX).unwrap();
        read.into_iter().map(|b| (validate_batch(&b).unwrap(), b)).collect()
    }

    #[tokio::test]
    async fn a_follower_copies_offsets_epochs_and_producers_and_truncates_a_divergent_tail() {
        let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader, _l) = open_store(leader_dir.path());
        let lp = leader.open_partition(P).unwrap();
        lp.lead(3, true);
        leader.append(lp.clone(), vec![idempotent_batch(2, 7, 0, 0), batch(1, 5)], true).await.unwrap();
        assert_eq!((lp.end_offset(), lp.high_watermark()), (3, 0), "a replicated log waits for its followers");
        assert!(leader.read(&lp, 0, usize::MAX, true).unwrap().is_empty(), "consumers read below the high watermark");
        lp.lead(4, true);
        leader.append(lp.clone(), vec![idempotent_batch(1, 7, 0, 2)], true).await.unwrap();
        assert_eq!(lp.epochs(), vec![(3, 0), (4, 3)]);
        {
            let (follower, _f) = open_store(follower_dir.path());
            let fp = follower.open_partition(P).unwrap();
            fp.follow();
            let refused = follower.append(fp.clone(), vec![batch(1, 5)], true).await.unwrap_err();
            assert_eq!(refused.code, ErrorCode::NotLeaderOrFollower, "a follower takes no client appends");
            let gap = follower.append_replica(fp.clone(), copied(&leader, &lp, 3), true).await.unwrap_err();
            assert_eq!(gap.code, ErrorCode::CorruptBatch, "a copy must continue the log: {gap}");
            assert_eq!(follower.append_replica(fp.clone(), copied(&leader, &lp, 0), true).await.unwrap(), 4);
            assert_eq!(fp.epochs(), lp.epochs());
            assert_eq!(
                follower.read_replica(&fp, 0, usize::MAX).unwrap(),
                leader.read_replica(&lp, 0, usize::MAX).unwrap()
            );
            fp.set_high_watermark(10);
            assert_eq!(fp.high_watermark(), 4, "never past the log end");
        }
        // Restarted, the follower still knows its epochs, and as leader it deduplicates the
        // producer's retry of the batch it copied.
        let (follower, _f) = open_store(follower_dir.path());
        let fp = follower.open_partition(P).unwrap();
        assert_eq!(fp.epochs(), vec![(3, 0), (4, 3)]);
        fp.lead(5, false);
        assert_eq!(follower.append(fp.clone(), vec![idempotent_batch(1, 7, 0, 2)], true).await.unwrap(), 3);
        assert_eq!(fp.end_offset(), 4);
        follower.append(fp.clone(), vec![idempotent_batch(2, 7, 0, 3)], true).await.unwrap();
        assert_eq!(fp.epochs(), vec![(3, 0), (4, 3), (5, 4)]);
        // Truncated inside the epoch-5 batch: the whole batch goes, epoch 5 with it, and the
        // producer's state is the copied batches' again (sequence 3 is next, not a duplicate).
        assert_eq!(follower.truncate(fp.clone(), 5).await.unwrap(), 4);
        assert_eq!((fp.end_offset(), fp.high_watermark()), (4, 4));
        assert_eq!(fp.epochs(), vec![(3, 0), (4, 3)]);
        assert_eq!(follower.append(fp.clone(), vec![idempotent_batch(1, 7, 0, 3)], true).await.unwrap(), 4);
        assert_eq!(follower.truncate(fp.clone(), 0).await.unwrap(), 0);
        assert!(fp.epochs().is_empty());
        assert_eq!(
            follower.append(fp.clone(), vec![idempotent_batch(1, 7, 0, 9)], true).await.unwrap(),
            0,
            "no state left"
        );
        drop((follower, _f));
        let (follower, _f) = open_store(follower_dir.path());
        let fp = follower.open_partition(P).unwrap();
        assert_eq!((fp.end_offset(), fp.epochs()), (1, vec![(5, 0)]), "truncation is durable");
    }

    #[tokio::test]
    async fn a_follower_below_its_leaders_log_start_restarts_there_empty() {
        let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader, _l) = open_store(leader_dir.path());
        let lp = leader.open_partition(P).unwrap();
        lp.lead(1, true);
        for _ in 0..4 {
            leader.append(lp.clone(), vec![batch(3, 1)], true).await.unwrap();
        }
        {
            let (follower, _f) = open_store(follower_dir.path());
            let fp = follower.open_partition(P).unwrap();
            fp.follow();
            follower.append_replica(fp.clone(), copied(&leader, &lp, 0)[..1].to_vec(), true).await.unwrap();
            assert_eq!((fp.end_offset(), fp.epochs()), (3, vec![(1, 0)]));
            // The leader's log start moves past the follower's end: it starts again there.
            leader.delete_records(&lp, 6).unwrap();
            assert_eq!(leader.read_replica(&lp, 3, usize::MAX).unwrap_err().code, ErrorCode::OffsetOutOfRange);
            assert_eq!(follower.restart_at(fp.clone(), 6).await.unwrap(), 6);
            assert_eq!((fp.log_start_offset(), fp.end_offset(), fp.high_watermark()), (6, 6, 0));
            assert!(fp.epochs().is_empty());
            assert_eq!(follower.append_replica(fp.clone(), copied(&leader, &lp, 6), true).await.unwrap(), 12);
            assert_eq!(
                follower.read_replica(&fp, 6, usize::MAX).unwrap(),
                leader.read_replica(&lp, 6, usize::MAX).unwrap()
            );
        }
        let (follower, _f) = open_store(follower_dir.path());
        let fp = follower.open_partition(P).unwrap();
        assert_eq!((fp.log_start_offset(), fp.end_offset()), (6, 12), "the restart is durable");
    }

    #[tokio::test]
    async fn a_replicated_partition_restarts_at_its_checkpointed_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let other = PartitionId { topic_id: 2, partition: 0 };
        {
            let (store, _db) = open_store(dir.path());
            let p = store.open_partition(P).unwrap();
            p.lead(1, true);
            store.append(p.clone(), vec![batch(2, 5), batch(3, 6)], true).await.unwrap();
            p.set_high_watermark(2);
            let single = store.open_partition(other).unwrap();
            single.lead(1, false);
            store.append(single.clone(), vec![batch(4, 5)], true).await.unwrap();
            assert_eq!(store.checkpoint_high_watermarks().unwrap(), 1, "only the replicated partition");
            assert_eq!(store.checkpoint_high_watermarks().unwrap(), 0, "nothing moved since");
            // Moved after the checkpoint and not written: the restart starts at 2, below it.
            p.set_high_watermark(4);
        }
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        assert_eq!((p.end_offset(), p.high_watermark()), (5, 2), "records above the checkpoint wait for replication");
        assert!(store.read(&p, 2, usize::MAX, true).unwrap().is_empty());
        let single = store.open_partition(other).unwrap();
        assert_eq!(single.high_watermark(), 4, "a partition never replicated serves its whole log");
        store.delete_partition(P).unwrap();
        let p = store.open_partition(P).unwrap();
        assert_eq!((p.end_offset(), p.high_watermark()), (0, 0), "a deleted partition's checkpoint goes with it");
    }

    #[tokio::test]
    async fn read_rejects_offsets_outside_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open_store(dir.path());
        let p = store.open_partition(P).unwrap();
        store.append(p.clone(), vec![batch(2, 1)], true).await.unwrap();
        assert_eq!(store.read(&p, -1, 100, true).unwrap_err().code, ErrorCode::OffsetOutOfRange);
        assert_eq!(store.read(&p, 3, 100, true).unwrap_err().code, ErrorCode::OffsetOutOfRange);
        assert!(store.read(&p, 2, 100, true).unwrap().is_empty(), "the end of the log is empty, not an error");
    }
}
