//! The controller: the single writer of cluster metadata.
//!
//! Every change is a [`Command`] appended to the controller log (fjall keyspace `controller`,
//! key = big-endian index, value = JSON command) and fsynced before it is applied to the
//! in-memory [`State`]. On start the log is replayed. This is the shape of a one-voter Raft
//! group; the cluster work replaces the append with an openraft proposal, keeping this API.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::Mutex;
use weir_sdk::{ErrorCode, WireError};

use crate::metadata::{Command, Event, Limits, State};

#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    log: Keyspace,
    limits: Limits,
    state: RwLock<State>,
    /// Serializes proposals so log order is apply order.
    propose: Mutex<u64>,
}

fn storage(e: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Storage, format!("controller log: {e}"))
}

impl Controller {
    pub fn open(db: &Database, limits: Limits) -> Result<Self, WireError> {
        let log = db.keyspace("controller", KeyspaceCreateOptions::default).map_err(storage)?;
        let mut state = State::default();
        let mut last_index = 0u64;
        for guard in log.iter() {
            let (key, value) = guard.into_inner().map_err(storage)?;
            let index =
                u64::from_be_bytes(key.as_ref().try_into().map_err(|_| storage("controller log key is not 8 bytes"))?);
            let command: Command =
                serde_json::from_slice(&value).map_err(|e| storage(format!("entry {index}: {e}")))?;
            // Commands were validated when proposed; replay applies them as they were accepted.
            if let Err(e) = state.apply(command, &limits) {
                tracing::warn!(index, error = %e, "controller log entry no longer applies; skipped");
            }
            last_index = index;
        }
        tracing::info!(entries = last_index, topics = state.topics.len(), "controller state recovered");
        Ok(Self {
            inner: Arc::new(Inner {
                db: db.clone(),
                log,
                limits,
                state: RwLock::new(state),
                propose: Mutex::new(last_index),
            }),
        })
    }

    /// Validates a command against the current state, makes it durable, then applies it.
    pub async fn propose(&self, command: Command) -> Result<Event, WireError> {
        let mut last_index = self.inner.propose.lock().await;
        // Dry-run on a copy: a rejected command never reaches the log.
        let mut next = self.state().clone();
        let event = next.apply(command.clone(), &self.inner.limits)?;
        let index = *last_index + 1;
        let value = serde_json::to_vec(&command).map_err(storage)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.log.insert(index.to_be_bytes(), value)?;
            inner.db.persist(PersistMode::SyncAll)
        })
        .await
        .map_err(storage)?
        .map_err(storage)?;
        *self.inner.state.write().expect("metadata lock poisoned") = next;
        *last_index = index;
        Ok(event)
    }

    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().expect("metadata lock poisoned")
    }
}
