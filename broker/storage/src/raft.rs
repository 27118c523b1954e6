//! The controller's Raft storage as bytes: log entries by index (keyspace `raft_log`) and named
//! values (keyspace `raft_meta`: vote, committed log id, last purged log id, snapshot). The
//! controller owns their encoding; this store only keeps them, fsynced.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::keys::{keyspace, parse_raft_index_key, raft_index_key};
use crate::StorageError;

#[derive(Clone)]
pub struct RaftStore {
    db: Database,
    entries: Keyspace,
    meta: Keyspace,
}

impl RaftStore {
    pub(crate) fn open(db: &Database) -> Result<Self, StorageError> {
        Ok(Self {
            db: db.clone(),
            entries: db.keyspace(keyspace::RAFT_LOG, KeyspaceCreateOptions::default)?,
            meta: db.keyspace(keyspace::RAFT_META, KeyspaceCreateOptions::default)?,
        })
    }

    /// Appends entries in one write and fsyncs it.
    pub fn append(&self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        for (index, bytes) in entries {
            batch.insert(&self.entries, raft_index_key(index), bytes);
        }
        batch.commit()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Entries from `start` on, while `keep` says so, in index order.
    pub fn entries(&self, start: u64, mut keep: impl FnMut(u64) -> bool) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut out = Vec::new();
        for guard in self.entries.range(raft_index_key(start)..) {
            let (key, value) = guard.into_inner()?;
            let index = parse_raft_index_key(&key)
                .ok_or_else(|| StorageError::Corrupt { what: "a Raft log key", why: format!("{} bytes", key.len()) })?;
            if !keep(index) {
                break;
            }
            out.push(value.to_vec());
        }
        Ok(out)
    }

    /// The newest entry.
    pub fn last_entry(&self) -> Result<Option<Vec<u8>>, StorageError> {
        match self.entries.last_key_value() {
            Some(guard) => Ok(Some(guard.value()?.to_vec())),
            None => Ok(None),
        }
    }

    /// The number of entries held (a scan; for tests and benchmarks).
    pub fn entry_count(&self) -> usize {
        self.entries.iter().count()
    }

    /// Removes entries from `index` on (a conflicting tail).
    pub fn remove_from(&self, index: u64) -> Result<(), StorageError> {
        self.remove_keys(self.entries.range(raft_index_key(index)..))
    }

    /// Removes entries up to and including `index` (those a snapshot covers).
    pub fn remove_through(&self, index: u64) -> Result<(), StorageError> {
        self.remove_keys(self.entries.range(..=raft_index_key(index)))
    }

    fn remove_keys(&self, range: impl Iterator<Item = fjall::Guard>) -> Result<(), StorageError> {
        let keys: Vec<_> = range.map(|g| g.key()).collect::<Result<_, _>>()?;
        let mut batch = self.db.batch();
        for key in keys {
            batch.remove(&self.entries, key);
        }
        batch.commit()?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    /// Stores a named value and fsyncs it.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta.insert(key, value)?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}
