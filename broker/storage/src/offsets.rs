//! Consumer groups' committed offsets as versions before the controller held them kept them
//! (keyspace `group_offsets`): read once at start, handed to the controller, and removed. The
//! values are JSON whose shape `weir_meta::offsets::CommittedOffset` reads; this store does not
//! interpret them.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::keys::{group_offset_key, keyspace, parse_group_offset_key};
use crate::StorageError;

/// (group, topic, partition).
pub type GroupPartition = (String, String, u32);

#[derive(Clone)]
pub struct OffsetStore {
    db: Database,
    store: Keyspace,
}

impl OffsetStore {
    pub(crate) fn open(db: &Database) -> Result<Self, StorageError> {
        Ok(Self { db: db.clone(), store: db.keyspace(keyspace::GROUP_OFFSETS, KeyspaceCreateOptions::default)? })
    }

    /// Every stored committed offset, its value as stored (JSON); records whose key does not
    /// parse are skipped and logged.
    pub fn load(&self) -> Result<Vec<(GroupPartition, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        for guard in self.store.iter() {
            let (key, value) = guard.into_inner()?;
            match parse_group_offset_key(&key) {
                Some(k) => out.push((k, value.to_vec())),
                None => tracing::warn!("skipping a committed offset record with an unreadable key"),
            }
        }
        Ok(out)
    }

    /// Stores records as an earlier version wrote them, fsynced (tests of the move to the
    /// controller plant them with this).
    pub fn insert_raw(&self, records: &[(GroupPartition, Vec<u8>)]) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        for ((group, topic, partition), value) in records {
            batch.insert(&self.store, group_offset_key(group, topic, *partition), value.clone());
        }
        batch.commit()?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Removes committed offsets in one write.
    pub fn remove(&self, keys: &[GroupPartition]) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        for (group, topic, partition) in keys {
            batch.remove(&self.store, group_offset_key(group, topic, *partition));
        }
        batch.commit()?;
        Ok(())
    }
}
