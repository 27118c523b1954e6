//! Weir's storage: everything a broker keeps on disk, in one fjall `Database` per broker.
//!
//! - [`log::LogStore`]: partition logs (group-committed by one writer thread) and idempotent
//!   producers' sequence state, written in the same batch as the records it describes; large
//!   batches' records sit in [`segments`] files beside the database, in `<dir>/segments`.
//! - [`offsets::OffsetStore`]: committed offsets as earlier versions kept them (moved into the controller at start).
//! - [`modules::ModuleStore`]: plugin components by content hash and transforms' progress.
//! - [`raft::RaftStore`]: the controller's Raft log, vote, committed id and snapshot, as bytes
//!   (the controller owns their encoding).
//!
//! *Boundary*: this is the only crate of the broker that depends on fjall; every key is made
//! by [`keys`].

// Non-test code states why a value fits where it is narrowed, and never unwraps.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::cast_possible_truncation))]

pub mod idempotence;
pub mod keys;
pub mod log;
pub mod modules;
pub mod offsets;
pub mod raft;
pub mod segments;
pub mod stored;

use std::path::Path;

use fjall::Database;

pub use keys::PartitionId;

/// Errors of the stores that are not answered to a client as they are.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    #[error("stored {what} is unreadable: {why}")]
    Corrupt { what: &'static str, why: String },
    #[error("encoding {what}: {why}")]
    Encode { what: &'static str, why: String },
}

/// The stores of one broker, sharing one database.
pub struct Storage {
    pub log: log::LogStore,
    pub offsets: offsets::OffsetStore,
    pub modules: modules::ModuleStore,
    pub raft: raft::RaftStore,
    /// Kept so tests can hold the database open across a store's drop.
    #[cfg(test)]
    pub(crate) db: Database,
}

/// The most journal fjall keeps before it flushes the memtables that hold the oldest journal
/// file (fjall's smallest allowed bound; its default is 512 MiB). A start replays every journal
/// file still kept, about 1.3 s per 64 MiB of small batches here, and small keyspaces (the time
/// index, producer state) that fill slowly keep old journal files alive until this bound makes
/// them flush. Measured in BENCHMARKS.md: restart after a clean stop 5.8 s -> 2.0 s with 4 GiB
/// of 4 KiB batches, the same produce cost.
const JOURNAL_BYTES_MAX: u64 = 64 << 20;

impl Storage {
    /// Opens (or creates) the database in `dir`. `append_queue_depth` bounds appends waiting
    /// for the log writer.
    pub fn open(dir: &Path, append_queue_depth: usize) -> Result<Self, StorageError> {
        Self::open_with(dir, append_queue_depth, segments::Options::default())
    }

    /// As [`Storage::open`], with the log's segment files used as `segments` says.
    pub fn open_with(dir: &Path, append_queue_depth: usize, segments: segments::Options) -> Result<Self, StorageError> {
        // The journal does not compress: the log's batches arrive compressed (see [`stored`])
        // or do not compress, and everything else is small.
        // One background worker: with two or more, fjall's worker 0 hands every compaction
        // request back to the queue and takes it again until another worker is free, a busy
        // loop that burns a core for as long as a memtable flush runs (measured in
        // BENCHMARKS.md). One worker flushes and compacts in turn; the log keyspace's
        // compactions move keys only (values live in blob files), so they are short.
        // The journal is bounded at JOURNAL_BYTES_MAX, so a start replays at most that much.
        let db = Database::builder(dir)
            .journal_compression(fjall::CompressionType::None)
            .worker_threads(1)
            .max_journaling_size(JOURNAL_BYTES_MAX)
            .open()?;
        Ok(Self {
            log: log::LogStore::open(&db, &dir.join("segments"), append_queue_depth, segments)?,
            offsets: offsets::OffsetStore::open(&db)?,
            modules: modules::ModuleStore::open(&db)?,
            raft: raft::RaftStore::open(&db)?,
            #[cfg(test)]
            db,
        })
    }
}
