//! Plugin components by content hash (keyspace `module_blobs`, key-value separated) and
//! transforms' progress: the next input offset per deployment, topic and partition (keyspace
//! `module_progress`).

use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions};

use crate::keys::{
    connector_key, connector_prefix, keyspace, parse_progress_key, progress_key, progress_prefix, ConnectorValue,
};
use crate::StorageError;

#[derive(Clone)]
pub struct ModuleStore {
    blobs: Keyspace,
    progress: Keyspace,
    connectors: Keyspace,
}

impl ModuleStore {
    pub(crate) fn open(db: &Database) -> Result<Self, StorageError> {
        Ok(Self {
            blobs: db.keyspace(keyspace::MODULE_BLOBS, || {
                KeyspaceCreateOptions::default().with_kv_separation(Some(KvSeparationOptions::default()))
            })?,
            progress: db.keyspace(keyspace::MODULE_PROGRESS, KeyspaceCreateOptions::default)?,
            connectors: db.keyspace(keyspace::CONNECTOR_STATE, KeyspaceCreateOptions::default)?,
        })
    }

    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), StorageError> {
        Ok(self.blobs.insert(sha256, bytes)?)
    }

    pub fn remove_blob(&self, sha256: &str) -> Result<(), StorageError> {
        Ok(self.blobs.remove(sha256)?)
    }

    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.blobs.get(sha256)?.map(|v| v.to_vec()))
    }

    pub fn progress(&self, deployment: &str, topic: &str, partition: u32) -> Result<Option<i64>, StorageError> {
        let Some(value) = self.progress.get(progress_key(deployment, topic, partition))? else { return Ok(None) };
        let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| StorageError::Corrupt {
            what: "transform progress",
            why: format!("{} bytes where an offset takes 8", value.len()),
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    pub fn set_progress(
        &self,
        deployment: &str,
        topic: &str,
        partition: u32,
        next_offset: i64,
    ) -> Result<(), StorageError> {
        Ok(self.progress.insert(progress_key(deployment, topic, partition), next_offset.to_be_bytes())?)
    }

    /// Drops a deployment's progress through every topic, and a connector's positions and
    /// state.
    pub fn clear_deployment(&self, deployment: &str) -> Result<(), StorageError> {
        for keyspace in [&self.progress, &self.connectors] {
            let keys: Vec<_> =
                keyspace.prefix(progress_prefix(deployment)).map(|g| g.key()).collect::<Result<_, _>>()?;
            for key in keys {
                keyspace.remove(key)?;
            }
        }
        Ok(())
    }

    pub fn connector_value(
        &self,
        deployment: &str,
        what: ConnectorValue,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.connectors.get(connector_key(deployment, what, name))?.map(|v| v.to_vec()))
    }

    pub fn set_connector_value(
        &self,
        deployment: &str,
        what: ConnectorValue,
        name: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        Ok(self.connectors.insert(connector_key(deployment, what, name), value)?)
    }

    pub fn remove_connector_value(
        &self,
        deployment: &str,
        what: ConnectorValue,
        name: &str,
    ) -> Result<(), StorageError> {
        Ok(self.connectors.remove(connector_key(deployment, what, name))?)
    }

    /// How many values of one kind a connector has stored.
    pub fn connector_values(&self, deployment: &str, what: ConnectorValue) -> Result<usize, StorageError> {
        let mut count = 0;
        for guard in self.connectors.prefix(connector_prefix(deployment, what)) {
            guard.key()?;
            count += 1;
        }
        Ok(count)
    }

    /// Drops every deployment's progress through `topic`.
    pub fn clear_topic(&self, topic: &str) -> Result<(), StorageError> {
        for key in self.topic_keys(topic)? {
            self.progress.remove(key)?;
        }
        Ok(())
    }

    /// Whether any deployment has progress stored through `topic`.
    pub fn has_topic(&self, topic: &str) -> Result<bool, StorageError> {
        Ok(!self.topic_keys(topic)?.is_empty())
    }

    fn topic_keys(&self, topic: &str) -> Result<Vec<fjall::UserKey>, StorageError> {
        let mut keys = Vec::new();
        for guard in self.progress.iter() {
            let key = guard.key()?;
            if parse_progress_key(&key).is_some_and(|(_, t, _)| t == topic) {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}
