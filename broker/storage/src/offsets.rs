//! Consumer groups' committed offsets, durable (keyspace `group_offsets`). The group
//! coordinator keeps them in memory and writes through this store.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};

use crate::keys::{group_offset_key, keyspace, parse_group_offset_key};
use crate::StorageError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub metadata: Option<String>,
    /// When it was committed (ms since the epoch); 0 in records of earlier versions.
    #[serde(default)]
    pub commit_time_ms: i64,
}

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

    /// Every committed offset; unreadable records are skipped and logged.
    pub fn load(&self) -> Result<Vec<(GroupPartition, CommittedOffset)>, StorageError> {
        let mut out = Vec::new();
        for guard in self.store.iter() {
            let (key, value) = guard.into_inner()?;
            match (parse_group_offset_key(&key), serde_json::from_slice::<CommittedOffset>(&value)) {
                (Some(k), Ok(v)) => out.push((k, v)),
                _ => tracing::warn!("skipping an unreadable committed offset record"),
            }
        }
        Ok(out)
    }

    /// Commits offsets of one group in one write, fsynced before it returns.
    pub fn commit(&self, group: &str, offsets: &[(String, u32, CommittedOffset)]) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        for (topic, partition, committed) in offsets {
            let value = serde_json::to_vec(committed)
                .map_err(|e| StorageError::Encode { what: "a committed offset", why: e.to_string() })?;
            batch.insert(&self.store, group_offset_key(group, topic, *partition), value);
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
