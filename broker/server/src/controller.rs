//! The controller: an embedded openraft group that holds cluster metadata.
//!
//! On a single node it is a one-voter group (the cluster work adds voters and a network). Every
//! metadata change is a [`Command`] proposed to Raft; the state machine applies it to
//! [`State`] with the same pure rules the dry-run used. The Raft log, vote and committed index
//! live in fjall keyspaces of the broker's one database; on start, openraft re-applies the
//! committed log to rebuild the state.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use weir_registry::state::{RegistryCommand, RegistryOutcome};
use weir_registry::RegistryError;
use weir_sdk::{ErrorCode, WireError};
use weir_storage::raft::RaftStore;

use weir_meta::metadata::{Command, Event, Limits, State};

/// A snapshot of the metadata is taken after this many entries since the last one; the log
/// behind it is then compacted, keeping [`LOG_KEPT_BEHIND_SNAPSHOT`] entries for followers
/// that are a little behind.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 1000;
pub const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 1000;

/// What applying one Raft entry produced; `None` for entries that carry no command.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied(pub Option<Result<Event, WireError>>);

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Applied,
);

type NodeId = u64;
type Raft = openraft::Raft<TypeConfig>;

fn io_error(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn storage(e: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Storage, format!("controller: {e}"))
}

#[derive(Clone)]
pub struct Controller {
    raft: Raft,
    state: Arc<RwLock<State>>,
    limits: Limits,
    /// Serializes proposals, so the dry-run sees the state the proposal will apply to.
    propose: Arc<Mutex<()>>,
    store: RaftStore,
}

impl Controller {
    /// Opens the Raft storage, restores the newest snapshot, starts the group (which replays
    /// the log after the snapshot), makes this node its single voter on first start, and waits
    /// until it leads.
    pub async fn open(store: RaftStore, node_id: NodeId, limits: Limits) -> Result<Self, WireError> {
        let log = RaftLog { store: store.clone() };
        let held = store.clone();
        let mut machine = StateMachine {
            state: Arc::new(RwLock::new(State::default())),
            last_applied: None,
            membership: StoredMembership::default(),
            store,
        };
        if let Some(StoredSnapshot { meta, data }) = machine.stored_snapshot().map_err(storage)? {
            machine.restore(&meta, &data).map_err(storage)?;
            tracing::info!(last_applied = ?meta.last_log_id, "controller state restored from its snapshot");
        }
        let state = machine.state.clone();
        let config = openraft::Config {
            cluster_name: "weir".into(),
            heartbeat_interval: 100,
            election_timeout_min: 200,
            election_timeout_max: 400,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
            max_in_snapshot_log_to_keep: LOG_KEPT_BEHIND_SNAPSHOT,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(storage)?);
        let raft = Raft::new(node_id, config, NoNetwork, log, machine).await.map_err(storage)?;
        if !raft.is_initialized().await.map_err(storage)? {
            let members = BTreeMap::from([(node_id, BasicNode::default())]);
            raft.initialize(members).await.map_err(storage)?;
        }
        raft.wait(Some(Duration::from_secs(30)))
            .current_leader(node_id, "this node leads the controller")
            .await
            .map_err(storage)?;
        tracing::info!(node_id, topics = state.read().expect("metadata lock").topics.len(), "controller is leader");
        Ok(Self { raft, state, limits, propose: Arc::new(Mutex::new(())), store: held })
    }

    /// Validates a command against the broker's limits and the current state, then commits it
    /// through Raft. Limits are checked here only: applying a committed entry never reads them.
    pub async fn propose(&self, command: Command) -> Result<Event, WireError> {
        let _serial = self.propose.lock().await;
        self.check(&command)?;
        self.replicate(command).await
    }

    /// Checks a command as [`Controller::propose`] does, without proposing it: the broker's
    /// limits, then a dry run on a copy of the state, so a rejected command never reaches the
    /// log.
    pub fn check(&self, command: &Command) -> Result<(), WireError> {
        let state = self.state();
        state.check_limits(command, &self.limits)?;
        state.clone().apply(command.clone()).map(|_| ())
    }

    /// As [`Controller::propose`], for schema registry commands, keeping the registry's errors.
    pub async fn propose_registry(&self, command: RegistryCommand) -> Result<RegistryOutcome, RegistryError> {
        let _serial = self.propose.lock().await;
        {
            let state = self.state();
            let plan = state.registry.plan(command.clone())?;
            state.registry.check_limits(&plan, &self.limits.registry())?;
        }
        match self.replicate(Command::Registry(command)).await {
            Ok(Event::Registry(outcome)) => Ok(outcome),
            Ok(other) => Err(RegistryError::Store(format!("unexpected controller event {other:?}"))),
            Err(e) => Err(RegistryError::Store(e.message)),
        }
    }

    async fn replicate(&self, command: Command) -> Result<Event, WireError> {
        let response = self.raft.client_write(command).await.map_err(storage)?;
        response.data.0.unwrap_or_else(|| Err(storage("a command entry applied without a result")))
    }

    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("metadata lock poisoned")
    }

    /// The schema registry's view of the controller: reads from the replicated state, writes
    /// through Raft.
    pub fn registry_backend(&self) -> RegistryBackend {
        RegistryBackend { controller: self.clone() }
    }

    /// Raft log entries held on disk: at most about [`SNAPSHOT_EVERY_ENTRIES`] +
    /// [`LOG_KEPT_BEHIND_SNAPSHOT`] once snapshots compact it.
    pub fn log_entries_held(&self) -> usize {
        self.store.entry_count()
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

// ---- Raft log storage ------------------------------------------------------------------------------

/// openraft's log storage over the broker's [`RaftStore`]: entries and metadata as JSON.
#[derive(Clone)]
struct RaftLog {
    store: RaftStore,
}

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const SNAPSHOT: &str = "snapshot";

fn read_json<T: DeserializeOwned>(store: &RaftStore, key: &str) -> Result<Option<T>, AnyError> {
    match store.meta(key).map_err(io_error)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(io_error),
        None => Ok(None),
    }
}

fn write_json<T: Serialize>(store: &RaftStore, key: &str, value: &T) -> Result<(), AnyError> {
    store.put_meta(key, &serde_json::to_vec(value).map_err(io_error)?).map_err(io_error)
}

impl RaftLog {
    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, AnyError> {
        match self.store.last_entry().map_err(io_error)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(io_error)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for RaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let stored = self
            .store
            .entries(start, |index| range.contains(&index))
            .map_err(|e| StorageIOError::read_logs(io_error(e)))?;
        let mut entries = Vec::with_capacity(stored.len());
        for bytes in &stored {
            entries.push(serde_json::from_slice(bytes).map_err(|e| StorageIOError::read_logs(io_error(e)))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for RaftLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            read_json(&self.store, LAST_PURGED).map_err(StorageIOError::read_logs)?;
        let last = self.last_entry().map_err(StorageIOError::read_logs)?.map(|e| e.log_id);
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        write_json(&self.store, VOTE, vote).map_err(StorageIOError::write_vote)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(read_json(&self.store, VOTE).map_err(StorageIOError::read_vote)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        write_json(&self.store, COMMITTED, &committed).map_err(StorageIOError::write_logs)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(read_json::<Option<LogId<NodeId>>>(&self.store, COMMITTED).map_err(StorageIOError::read_logs)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let value = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(io_error(e)))?;
            encoded.push((entry.log_id.index, value));
        }
        let outcome = self.store.append(encoded);
        callback.log_io_completed(outcome.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        outcome.map_err(|e| StorageIOError::write_logs(io_error(e)))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.store.remove_from(log_id.index).map_err(|e| StorageIOError::write_logs(io_error(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        write_json(&self.store, LAST_PURGED, &Some(log_id)).map_err(StorageIOError::write_logs)?;
        self.store.remove_through(log_id.index).map_err(|e| StorageIOError::write_logs(io_error(e)))?;
        Ok(())
    }
}

// ---- state machine ---------------------------------------------------------------------------------

struct StateMachine {
    state: Arc<RwLock<State>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Where snapshots are kept.
    store: RaftStore,
}

/// The metadata state as a snapshot holds it.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    state: State,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

/// A snapshot as stored: openraft's description of it and the encoded [`SnapshotData`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

impl StateMachine {
    // openraft's error type is what its traits return; boxing it here would only unbox again.
    #[allow(clippy::result_large_err)]
    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError<NodeId>> {
        Ok(read_json(&self.store, SNAPSHOT).map_err(StorageIOError::read_state_machine)?)
    }

    /// Replaces the state with a snapshot's.
    #[allow(clippy::result_large_err)]
    fn restore(&mut self, meta: &SnapshotMeta<NodeId, BasicNode>, data: &[u8]) -> Result<(), StorageError<NodeId>> {
        let data: SnapshotData =
            serde_json::from_slice(data).map_err(|e| StorageIOError::read_state_machine(io_error(e)))?;
        *self.state.write().expect("metadata lock poisoned") = data.state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    /// Encodes the state as it is, stores it as the current snapshot, and returns it.
    #[allow(clippy::result_large_err)]
    fn snapshot(&self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = SnapshotData {
            state: self.state.read().expect("metadata lock").clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        };
        let bytes = serde_json::to_vec(&data).map_err(|e| StorageIOError::read_state_machine(io_error(e)))?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{}", self.last_applied.map_or(0, |id| id.index)),
        };
        let stored = StoredSnapshot { meta: meta.clone(), data: bytes.clone() };
        write_json(&self.store, SNAPSHOT, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        tracing::debug!(last_applied = ?self.last_applied, bytes = bytes.len(), "controller snapshot stored");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        self.snapshot()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Applied(None)),
                EntryPayload::Normal(command) => {
                    // This is the only writer: the state cannot change between the two locks.
                    let prepared = self.state.read().expect("metadata lock poisoned").prepare(command);
                    let applied = self.state.write().expect("metadata lock poisoned").apply_prepared(prepared);
                    out.push(Applied(Some(applied)));
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    out.push(Applied(None));
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine {
            state: Arc::new(RwLock::new(self.state.read().expect("metadata lock").clone())),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            store: self.store.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        self.restore(meta, &data)?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        write_json(&self.store, SNAPSHOT, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.stored_snapshot()?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

// ---- network: none yet -------------------------------------------------------------------------------

/// A one-voter group never sends RPCs; the cluster work replaces this with QUIC on the
/// broker-to-broker port.
struct NoNetwork;

struct Unreachable;

fn unreachable_peer() -> NetworkError {
    NetworkError::new(&std::io::Error::other("single-node controller: no peers to reach"))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = Unreachable;

    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> Self::Network {
        Unreachable
    }
}

impl RaftNetwork<TypeConfig> for Unreachable {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(RPCError::Network(unreachable_peer()))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(RPCError::Network(unreachable_peer()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(RPCError::Network(unreachable_peer()))
    }
}

/// Serves the schema registry's REST API from the controller's replicated state.
#[derive(Clone)]
pub struct RegistryBackend {
    controller: Controller,
}

impl weir_registry::api::Backend for RegistryBackend {
    fn read<R>(&self, f: impl FnOnce(&weir_registry::state::RegistryState) -> R) -> R {
        f(&self.controller.state().registry)
    }

    async fn apply(&self, command: RegistryCommand) -> Result<RegistryOutcome, RegistryError> {
        self.controller.propose_registry(command).await
    }
}
