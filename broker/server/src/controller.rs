//! The controller: an embedded openraft group that holds cluster metadata.
//!
//! On a single node it is a one-voter group. In a cluster (`controller_voters`), the voters
//! are the listed brokers, their Raft RPCs travel over the broker-to-broker QUIC endpoint
//! (`cluster.rs`, mutual TLS under the cluster CA), and a command proposed on a broker that
//! does not lead is forwarded to the leader, which checks and commits it; the proposing broker
//! answers once its own copy of the state has applied the entry, so its client reads its own
//! write. Every metadata change is a [`Command`] proposed to Raft; the state machine applies it
//! to [`State`] with the same pure rules the dry-run used. The Raft log, vote and committed
//! index live in fjall keyspaces of the broker's one database; on start, openraft re-applies
//! the committed log to rebuild the state.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use openraft::error::{
    ClientWriteError, InitializeError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
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

/// Applied events kept for a subscriber that is behind (it hears it lagged past them).
const EVENTS_BUFFERED: usize = 1024;

/// How long a proposal may take, leader elections and forwarding included, before it fails
/// with `NotController` (a majority of the voters is not up, or not reachable), and how many
/// times it tries to reach a leader within it.
const PROPOSE_DEADLINE: Duration = Duration::from_secs(10);
const PROPOSE_ATTEMPTS: usize = 8;
/// How long a broker that forwarded a command waits for its own state to apply it.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// The cluster side of the controller: the broker-to-broker endpoint and the voters.
pub struct ClusterSetup {
    pub endpoint: quinn::Endpoint,
    /// Every voter's node id and cluster address (`host:port`), this node's included; empty
    /// on a broker that joins as a learner.
    pub voters: BTreeMap<NodeId, String>,
    /// Voters a learner joins through on its first start (`weir serve --join`).
    pub join: BTreeMap<NodeId, String>,
    /// Tests only: a file that cuts this node off from other nodes ([`NetworkFaults`]).
    pub test_partition_file: Option<std::path::PathBuf>,
}

/// A network partition a test makes without root (`weir serve --test-partition-file`): the
/// file's lines are the sides of the partition, each a list of node ids; a node sends nothing
/// to the nodes on other lines (so, each node reading the same file, nothing crosses between
/// sides either way); when a node is cut off, the connections to it are closed, which ends
/// the calls on them in both directions. No file, or an empty one, cuts nothing. Read every
/// [`FAULTS_READ_EVERY`]. Every call to a peer goes through [`Peers::call_within`], which asks
/// this first.
#[derive(Clone, Default)]
struct NetworkFaults {
    cut_off: Arc<std::sync::RwLock<std::collections::BTreeSet<NodeId>>>,
}

const FAULTS_READ_EVERY: Duration = Duration::from_millis(100);

impl NetworkFaults {
    fn watch(
        node_id: NodeId,
        path: std::path::PathBuf,
        connections: &Arc<std::sync::Mutex<HashMap<NodeId, PeerSlot>>>,
    ) -> Self {
        let faults = Self::default();
        let cut_off = Arc::downgrade(&faults.cut_off);
        let connections = Arc::downgrade(connections);
        tokio::spawn(async move {
            while let Some(cut_off) = cut_off.upgrade() {
                let text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
                let sides: Vec<Vec<NodeId>> = text
                    .lines()
                    .map(|line| {
                        line.split(|c: char| c == ',' || c.is_whitespace()).filter_map(|id| id.parse().ok()).collect()
                    })
                    .filter(|side: &Vec<NodeId>| !side.is_empty())
                    .collect();
                let others = if sides.iter().any(|side| side.contains(&node_id)) {
                    sides.into_iter().filter(|side| !side.contains(&node_id)).flatten().collect()
                } else {
                    std::collections::BTreeSet::new()
                };
                let newly_cut: Vec<NodeId> = {
                    let mut current = cut_off.write().unwrap_or_else(|e| e.into_inner());
                    let newly = others.difference(&current).copied().collect();
                    if *current != others {
                        tracing::warn!(node_id, cut_off = ?others, "test network partition changed");
                        *current = others;
                    }
                    newly
                };
                drop(cut_off);
                let slots: Vec<PeerSlot> = match connections.upgrade() {
                    Some(c) => {
                        let table = c.lock().unwrap_or_else(|e| e.into_inner());
                        newly_cut.iter().filter_map(|id| table.get(id).cloned()).collect()
                    }
                    None => return,
                };
                for slot in slots {
                    if let Some(connection) = slot.lock().await.connection.take() {
                        connection.close(0u32.into(), b"test network partition");
                    }
                }
                tokio::time::sleep(FAULTS_READ_EVERY).await;
            }
        });
        faults
    }

    fn cuts(&self, target: NodeId) -> bool {
        self.cut_off.read().unwrap_or_else(|e| e.into_inner()).contains(&target)
    }
}

#[derive(Clone)]
pub struct Controller {
    raft: Raft,
    node_id: NodeId,
    state: Arc<RwLock<State>>,
    limits: Limits,
    /// Serializes proposals, so the dry-run sees the state the proposal will apply to.
    propose: Arc<Mutex<()>>,
    store: RaftStore,
    /// `None` on a single node.
    peers: Option<Peers>,
    events: tokio::sync::broadcast::Sender<Event>,
    /// When each broker's heartbeat last reached this node, while it leads, with the broker
    /// epoch it came under.
    heartbeats: Arc<std::sync::Mutex<HashMap<NodeId, (u64, tokio::time::Instant)>>>,
    /// The broker epoch this process registered under (0: not registered yet).
    registered_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Where this broker's module components are read from when a peer asks for one (emptied
    /// at shutdown: the source holds the plugins, which hold this controller).
    blobs: Arc<std::sync::Mutex<Option<BlobSource>>>,
    /// The broker service's handler for its requests between brokers (emptied at shutdown too).
    service: Arc<std::sync::Mutex<Option<ServiceHandler>>>,
    /// Requests forwarded for clients ([`Controller::ask`]) in flight, at most
    /// `cluster::FORWARDED_STREAMS_MAX`: the rest of each peer connection's streams stay for Raft.
    forwarding: Arc<tokio::sync::Semaphore>,
    /// Proposal ids are this prefix (node id and start time) and a counter.
    proposal_prefix: Arc<str>,
    proposals: Arc<std::sync::atomic::AtomicU64>,
}

/// Reads a module component's bytes by SHA-256 (hex), if this broker has them.
pub type BlobSource = Arc<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

/// Answers the broker service's requests between brokers (kinds from [`SERVICE_KINDS`]).
/// An answer is the concatenation of the chunks returned.
pub type ServiceHandler =
    Arc<dyn Fn(u8, Vec<u8>) -> std::pin::Pin<Box<dyn Future<Output = Vec<bytes::Bytes>> + Send>> + Send + Sync>;

/// Request kinds on the cluster endpoint that belong to the broker service, not the controller.
pub const SERVICE_KINDS: std::ops::RangeInclusive<u8> = 16..=31;

impl Controller {
    /// Opens the Raft storage, restores the newest snapshot and starts the group (which replays
    /// the log after the snapshot). On a single node it makes this node the one voter on first
    /// start and waits until it leads. In a cluster every voter initializes the group with the
    /// same voters on first start (safe: the vote decides), answers peers' RPCs on the cluster
    /// endpoint, and waits until some voter leads.
    pub async fn open(
        store: RaftStore,
        node_id: NodeId,
        limits: Limits,
        cluster: Option<ClusterSetup>,
    ) -> Result<Self, WireError> {
        let log = RaftLog { store: store.clone() };
        let held = store.clone();
        let (events, _) = tokio::sync::broadcast::channel(EVENTS_BUFFERED);
        let mut machine = StateMachine {
            state: Arc::new(RwLock::new(State::default())),
            last_applied: None,
            membership: StoredMembership::default(),
            store,
            events: events.clone(),
        };
        if let Some(StoredSnapshot { meta, data }) = machine.stored_snapshot().map_err(storage)? {
            machine.restore(&meta, &data).map_err(storage)?;
            tracing::info!(last_applied = ?meta.last_log_id, "controller state restored from its snapshot");
        }
        let state = machine.state.clone();
        // A single voter elects itself at once; in a cluster, heartbeats and elections leave
        // room for a loaded machine (Kafka's controller waits 1 s before an election too).
        let (heartbeat_interval, election_timeout_min, election_timeout_max) =
            if cluster.is_some() { (250, 1000, 2000) } else { (100, 200, 400) };
        let config = openraft::Config {
            cluster_name: "weir".into(),
            heartbeat_interval,
            election_timeout_min,
            election_timeout_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
            max_in_snapshot_log_to_keep: LOG_KEPT_BEHIND_SNAPSHOT,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(storage)?);
        let peers = cluster.as_ref().map(|c| Peers::new(c.endpoint.clone(), node_id, c.test_partition_file.clone()));
        let network = QuicNetwork { peers: peers.clone() };
        let raft = Raft::new(node_id, config, network, log, machine).await.map_err(storage)?;
        let controller = Self {
            raft,
            node_id,
            state,
            limits,
            propose: Arc::new(Mutex::new(())),
            store: held,
            peers,
            events,
            heartbeats: Arc::default(),
            registered_epoch: Arc::default(),
            blobs: Arc::default(),
            service: Arc::default(),
            forwarding: Arc::new(tokio::sync::Semaphore::new(crate::cluster::FORWARDED_STREAMS_MAX)),
            proposal_prefix: {
                let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                Arc::from(format!("{node_id}-{}", started.as_nanos()))
            },
            proposals: Arc::default(),
        };
        let members = match &cluster {
            None => BTreeMap::from([(node_id, BasicNode::default())]),
            Some(c) => c.voters.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect(),
        };
        if let Some(c) = &cluster {
            let answering = controller.clone();
            tokio::spawn(crate::cluster::serve(c.endpoint.clone(), move |kind, body| {
                let controller = answering.clone();
                async move { controller.answer(kind, body).await }
            }));
        }
        if cluster.is_some() {
            // openraft's own logs repeat every failed heartbeat; this says what changed.
            let mut metrics = controller.raft.metrics();
            tokio::spawn(async move {
                let mut seen = (None, 0);
                while metrics.changed().await.is_ok() {
                    let now = {
                        let m = metrics.borrow();
                        (m.current_leader, m.current_term)
                    };
                    if now != seen {
                        tracing::info!(leader = ?now.0, term = now.1, "controller leader changed");
                        seen = now;
                    }
                }
            });
        }
        let joining = cluster.as_ref().filter(|c| c.voters.is_empty()).map(|c| c.join.clone());
        if let Some(through) = joining {
            if !controller.raft.is_initialized().await.map_err(storage)? {
                let own = cluster.as_ref().map(|c| c.endpoint.local_addr()).transpose().map_err(storage)?;
                controller.join(&through, own.map(|a| a.to_string()).unwrap_or_default()).await?;
            }
        } else if !controller.raft.is_initialized().await.map_err(storage)? {
            match controller.raft.initialize(members).await {
                Ok(()) => {}
                // A peer's vote request came first (this node answers RPCs already): the group
                // is forming from another voter's identical initialization.
                Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                    tracing::info!(reason = %e, "another voter started the controller group first");
                }
                Err(e) => return Err(storage(e)),
            }
        }
        let state_count = |c: &Self| c.state().topics.len();
        if cluster.is_none() {
            controller
                .raft
                .wait(Some(Duration::from_secs(30)))
                .current_leader(node_id, "this node leads the controller")
                .await
                .map_err(storage)?;
            tracing::info!(node_id, topics = state_count(&controller), "controller is leader");
        } else {
            loop {
                let known = controller
                    .raft
                    .wait(Some(Duration::from_secs(5)))
                    .metrics(|m| m.current_leader.is_some(), "a controller leader")
                    .await;
                match known {
                    Ok(m) => {
                        tracing::info!(node_id, leader = ?m.current_leader, topics = state_count(&controller), "controller joined");
                        break;
                    }
                    Err(_) => tracing::info!(node_id, "waiting for a majority of the controller voters"),
                }
            }
        }
        Ok(controller)
    }

    /// Validates a command against the broker's limits and the current state, then commits it
    /// through Raft. Limits are checked here only: applying a committed entry never reads them.
    /// On a broker that does not lead the controller, the command goes to the leader, which
    /// checks it against its state.
    pub async fn propose(&self, command: Command) -> Result<Event, WireError> {
        self.submit(command).await
    }

    /// A new proposal id: this process's prefix and a counter.
    fn next_proposal_id(&self) -> String {
        format!("{}-{}", self.proposal_prefix, self.proposals.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// Proposes a decision only this node's leadership may take (fencing brokers by the
    /// heartbeats it saw while leading): here and once, never forwarded. If this node stops
    /// leading before it is committed, the decision is dropped: a leader cut off from the
    /// brokers saw no heartbeats, and the new leader decides from its own.
    pub async fn propose_as_leader(&self, command: Command) -> Result<Event, WireError> {
        let not_leading = || WireError::new(ErrorCode::NotController, "this node does not lead the controller");
        if self.raft.metrics().borrow().current_leader != Some(self.node_id) {
            return Err(not_leading());
        }
        let id = self.next_proposal_id();
        match tokio::time::timeout(PROPOSE_DEADLINE, command.here(id, self)).await {
            Ok(Answer::Done { out, .. }) => Ok(out),
            Ok(Answer::Refused(e)) => Err(e),
            Ok(Answer::NotLeader) => Err(not_leading()),
            Err(_) => Err(WireError::new(
                ErrorCode::NotController,
                format!("not committed within {} s while leading", PROPOSE_DEADLINE.as_secs()),
            )),
        }
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
        self.submit(command).await
    }

    /// Proposes here when this node leads, else forwards to the leader; retries while the
    /// leader is unknown, unreachable, changes or does not answer, until the deadline. The
    /// proposal carries one id through every attempt, so however often it reaches the log it
    /// is applied once, and a repeat answers the first outcome (`Command::Once`).
    async fn submit<P: Proposal>(&self, proposal: P) -> Result<P::Out, P::Err> {
        let id = self.next_proposal_id();
        let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
        let mut last = String::from("no attempt");
        for attempt in 0..PROPOSE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let (leader, addr) = match self.leader(deadline).await {
                Ok(l) => l,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let answer = if leader == self.node_id {
                match tokio::time::timeout_at(deadline, proposal.clone().here(id.clone(), self)).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        return Err(P::unavailable(format!(
                            "not committed within {} s: is a majority of the controller voters up? The change may still be made",
                            PROPOSE_DEADLINE.as_secs()
                        )))
                    }
                }
            } else {
                let Some(peers) = &self.peers else {
                    return Err(P::unavailable(format!("node {leader} leads, but this node has no cluster endpoint")));
                };
                let forwarded = Forwarded { id: id.clone(), proposal: proposal.clone() };
                let body = serde_json::to_vec(&forwarded).map_err(|e| P::unavailable(e.to_string()))?;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                // Stop waiting on a leader this node sees replaced (or gone into an election).
                let waiter = self.raft.wait(Some(left));
                let replaced = waiter.metrics(|m| m.current_leader != Some(leader), "the controller leader to change");
                let called = tokio::select! {
                    called = peers.call_within(leader, &addr, P::KIND, &body, left) => called,
                    _ = replaced => Err(PeerError::Failed(format!("node {leader} no longer leads the controller"))),
                };
                match called {
                    Ok(bytes) => match serde_json::from_slice::<Answer<P::Out, P::Err>>(&bytes) {
                        Ok(answer) => answer,
                        Err(e) => {
                            return Err(P::unavailable(format!("controller leader {leader} answered badly: {e}")))
                        }
                    },
                    Err(PeerError::Unreachable(e)) => {
                        last = format!("controller leader {leader} at {addr} unreachable: {e}");
                        continue;
                    }
                    // It may have been taken: proposed again under its id it still applies once.
                    Err(PeerError::Failed(e)) => {
                        last = format!("controller leader {leader} at {addr} did not answer: {e}");
                        continue;
                    }
                }
            };
            match answer {
                Answer::Done { index, out } => {
                    if leader != self.node_id {
                        self.await_applied(index).await;
                    }
                    return Ok(out);
                }
                Answer::Refused(e) => return Err(e),
                Answer::NotLeader => last = format!("node {leader} no longer leads the controller"),
            }
        }
        Err(P::unavailable(format!(
            "no controller leader took the change within {} s (is a majority of the controller voters up?): {last}",
            PROPOSE_DEADLINE.as_secs()
        )))
    }

    /// The controller leader's node id and cluster address, waiting for an election until
    /// `deadline`.
    async fn leader(&self, deadline: tokio::time::Instant) -> Result<(NodeId, String), String> {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let metrics = self
            .raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader.is_some(), "a controller leader")
            .await
            .map_err(|_| "no controller leader elected".to_owned())?;
        let leader = metrics.current_leader.ok_or("no controller leader")?;
        let addr = metrics.membership_config.membership().get_node(&leader).map(|n| n.addr.clone()).unwrap_or_default();
        Ok((leader, addr))
    }

    async fn await_applied(&self, index: u64) {
        let applied =
            self.raft.wait(Some(APPLY_WAIT)).applied_index_at_least(Some(index), "the forwarded change applied").await;
        if applied.is_err() {
            tracing::warn!(index, "a forwarded change committed, but this node has not applied it yet");
        }
    }

    /// The first outcome of proposal `id` if it was applied, as an answer: done at this
    /// node's applied index (the forwarding broker waits for at least that).
    fn repeat(&self, id: &str) -> Option<Answer<Event, WireError>> {
        let outcome = self.state().proposal_outcome(id)?;
        let index = self.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        Some(match outcome {
            Ok(out) => Answer::Done { index, out },
            Err(e) => Answer::Refused(e),
        })
    }

    /// Commits a command on this node, which must lead.
    async fn propose_here(&self, id: String, command: Command) -> Answer<Event, WireError> {
        // Committed offsets change often and apart from the rest: checking them needs no dry
        // run (their rules fail only where `check_limits` does) and no order against other
        // proposals, so they skip the serial lock and Raft batches them.
        if matches!(command, Command::CommitOffsets { .. } | Command::DeleteOffsets { .. }) {
            if let Some(answer) = self.repeat(&id) {
                return answer;
            }
            if let Err(e) = self.state().check_limits(&command, &self.limits) {
                return Answer::Refused(e);
            }
            return self.replicate(Command::Once { id, command: Box::new(command) }).await;
        }
        let _serial = self.propose.lock().await;
        if let Some(answer) = self.repeat(&id) {
            return answer;
        }
        if let Err(e) = self.check(&command) {
            return Answer::Refused(e);
        }
        self.replicate(Command::Once { id, command: Box::new(command) }).await
    }

    async fn propose_registry_here(
        &self,
        id: String,
        command: RegistryCommand,
    ) -> Answer<RegistryOutcome, RegistryError> {
        let _serial = self.propose.lock().await;
        let registry_answer = |answer: Answer<Event, WireError>| match answer {
            Answer::Done { index, out: Event::Registry(outcome) } => Answer::Done { index, out: outcome },
            Answer::Done { out, .. } => {
                Answer::Refused(RegistryError::Store(format!("unexpected controller event {out:?}")))
            }
            Answer::Refused(e) => Answer::Refused(RegistryError::Store(e.message)),
            Answer::NotLeader => Answer::NotLeader,
        };
        if let Some(answer) = self.repeat(&id) {
            return registry_answer(answer);
        }
        {
            let state = self.state();
            let checked = state
                .registry
                .plan(command.clone())
                .and_then(|plan| state.registry.check_limits(&plan, &self.limits.registry()));
            if let Err(e) = checked {
                return Answer::Refused(e);
            }
        }
        registry_answer(self.replicate(Command::Once { id, command: Box::new(Command::Registry(command)) }).await)
    }

    async fn replicate(&self, command: Command) -> Answer<Event, WireError> {
        match self.raft.client_write(command).await {
            Ok(response) => match response.data.0 {
                Some(Ok(out)) => Answer::Done { index: response.log_id.index, out },
                Some(Err(e)) => Answer::Refused(e),
                None => Answer::Refused(storage("a command entry applied without a result")),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Answer::NotLeader,
            Err(e) => Answer::Refused(storage(e)),
        }
    }

    /// Answers a peer's request on the cluster endpoint: the broker service's kinds through
    /// its handler, the rest here.
    async fn answer(&self, kind: u8, body: Vec<u8>) -> Vec<bytes::Bytes> {
        if SERVICE_KINDS.contains(&kind) {
            let handler = self.service.lock().expect("service handler lock").clone();
            return match handler {
                Some(handle) => handle(kind, body).await,
                None => Vec::new(),
            };
        }
        vec![bytes::Bytes::from(self.answer_controller(kind, body).await)]
    }

    async fn answer_controller(&self, kind: u8, body: Vec<u8>) -> Vec<u8> {
        fn encode<T: Serialize>(value: &T) -> Vec<u8> {
            serde_json::to_vec(value).unwrap_or_default()
        }
        match kind {
            RPC_VOTE => match serde_json::from_slice(&body) {
                Ok(request) => encode(&self.raft.vote(request).await),
                Err(_) => Vec::new(),
            },
            RPC_APPEND => match serde_json::from_slice(&body) {
                Ok(request) => encode(&self.raft.append_entries(request).await),
                Err(_) => Vec::new(),
            },
            RPC_SNAPSHOT => match serde_json::from_slice(&body) {
                Ok(request) => encode(&self.raft.install_snapshot(request).await),
                Err(_) => Vec::new(),
            },
            Command::KIND => match serde_json::from_slice::<Forwarded<Command>>(&body) {
                Ok(f) => encode(&f.proposal.here(f.id, self).await),
                Err(e) => encode(&Answer::<Event, WireError>::Refused(WireError::new(
                    ErrorCode::MalformedFrame,
                    format!("forwarded command: {e}"),
                ))),
            },
            RPC_BLOB => {
                let source = self.blobs.lock().expect("blob source lock").clone();
                let found = std::str::from_utf8(&body).ok().zip(source).and_then(|(sha256, f)| f(sha256));
                match found {
                    Some(mut bytes) => {
                        bytes.insert(0, 1);
                        bytes
                    }
                    None => vec![0],
                }
            }
            RPC_JOIN => match serde_json::from_slice::<JoinRequest>(&body) {
                Ok(request) => encode(&self.take_join(request).await),
                Err(e) => encode(&JoinAnswer::Refused(format!("join request: {e}"))),
            },
            RPC_HEARTBEAT => match serde_json::from_slice::<Heartbeat>(&body) {
                Ok(heartbeat) => encode(&self.take_heartbeat(&heartbeat)),
                Err(_) => Vec::new(),
            },
            RegistryCommand::KIND => match serde_json::from_slice::<Forwarded<RegistryCommand>>(&body) {
                Ok(f) => encode(&f.proposal.here(f.id, self).await),
                Err(e) => encode(&Answer::<RegistryOutcome, RegistryError>::Refused(RegistryError::Store(format!(
                    "forwarded registry command: {e}"
                )))),
            },
            _ => Vec::new(),
        }
    }

    /// Answers a broker's heartbeat on the controller leader.
    fn take_heartbeat(&self, heartbeat: &Heartbeat) -> HeartbeatAnswer {
        if self.raft.metrics().borrow().current_leader != Some(self.node_id) {
            return HeartbeatAnswer::NotLeader;
        }
        let current =
            self.state().brokers.get(&heartbeat.node_id).is_some_and(|b| b.epoch == heartbeat.epoch && !b.fenced);
        if !current {
            tracing::debug!(
                node_id = heartbeat.node_id,
                epoch = heartbeat.epoch,
                "heartbeat of a fenced or replaced epoch"
            );
            return HeartbeatAnswer::Fenced;
        }
        tracing::trace!(node_id = heartbeat.node_id, epoch = heartbeat.epoch, "heartbeat");
        let seen = (heartbeat.epoch, tokio::time::Instant::now());
        self.heartbeats.lock().expect("heartbeat table").insert(heartbeat.node_id, seen);
        HeartbeatAnswer::Alive
    }

    /// Registers this broker with the controller (a new broker epoch), retrying until the
    /// controller takes it or `stop` is set.
    async fn register(&self, addresses: &BrokerAddresses, stop: &tokio::sync::watch::Receiver<bool>) -> Option<u64> {
        while !*stop.borrow() {
            let command = Command::RegisterBroker {
                node_id: self.node_id,
                quic_addr: addresses.quic_addr.clone(),
                kafka_host: addresses.kafka_host.clone(),
                kafka_port: addresses.kafka_port,
            };
            match self.propose(command).await {
                Ok(Event::BrokerRegistered(b)) => {
                    self.registered_epoch.store(b.epoch, std::sync::atomic::Ordering::Release);
                    tracing::info!(node_id = self.node_id, epoch = b.epoch, "registered with the controller");
                    return Some(b.epoch);
                }
                Ok(other) => tracing::warn!(?other, "unexpected answer to a broker registration"),
                Err(e) => tracing::warn!(error = %e, "registering with the controller failed; trying again"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    /// In a cluster: registers this broker, then heartbeats the controller leader every
    /// `session_timeout / 6` and registers again if it was fenced; and, while this node leads
    /// the controller, fences every broker whose heartbeat has not come for
    /// `session_timeout` (a new leader gives every broker a full session first). Returns
    /// once this broker is registered; the loops run until `stop`.
    pub async fn run_membership(
        &self,
        addresses: BrokerAddresses,
        session_timeout: Duration,
        leader_rebalance_interval: Option<Duration>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        if self.peers.is_none() {
            return Vec::new();
        }
        let Some(epoch) = self.register(&addresses, &stop).await else { return Vec::new() };
        let interval = (session_timeout / 6).max(Duration::from_millis(100));
        let heartbeat = {
            let (controller, mut stop) = (self.clone(), stop.clone());
            tokio::spawn(async move {
                let mut epoch = epoch;
                loop {
                    // At once after registering: the leader counts a new epoch's session from
                    // when it applied the registration, which may be a while before this broker
                    // (catching up the metadata log after a restart) has applied it too.
                    // Within a third of the session, so one slow attempt (a leader that just
                    // died) leaves time for the next before the session runs out.
                    let within = (session_timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(2));
                    if controller.send_heartbeat(epoch, within).await == HeartbeatAnswer::Fenced {
                        tracing::warn!(
                            node_id = controller.node_id,
                            epoch,
                            "fenced by the controller; registering again"
                        );
                        match controller.register(&addresses, &stop).await {
                            Some(e) => epoch = e,
                            None => return,
                        }
                        continue;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stop.changed() => return,
                    }
                }
            })
        };
        let mut tasks = Vec::new();
        if let Some(every) = leader_rebalance_interval {
            let (controller, mut stop) = (self.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => return,
                    }
                    controller.restore_preferred_leaders().await;
                }
            }));
        }
        let fencing = {
            let (controller, mut stop) = (self.clone(), stop);
            tokio::spawn(async move {
                let mut leading_since = None;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stop.changed() => return,
                    }
                    controller.fence_silent_brokers(&mut leading_since, session_timeout).await;
                }
            })
        };
        tasks.extend([heartbeat, fencing]);
        tasks
    }

    /// The leader's periodic preferred leader election (Kafka's `auto.leader.rebalance.enable`):
    /// when some partition's preferred replica is live and in sync but does not lead, it gets
    /// its leadership back.
    async fn restore_preferred_leaders(&self) {
        if self.raft.metrics().borrow().current_leader != Some(self.node_id) {
            return;
        }
        let imbalanced = {
            let state = self.state();
            let live = state.live_brokers();
            state
                .topics
                .values()
                .flat_map(|t| &t.assignment)
                .any(|r| weir_meta::replication::prefer_leader(r, &live).is_some())
        };
        if !imbalanced {
            return;
        }
        match self.propose_as_leader(Command::ElectPreferredLeaders { topic: None }).await {
            Ok(Event::LeadersElected { moved }) if !moved.is_empty() => {
                tracing::info!(partitions = ?moved, "preferred replicas lead again");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "preferred leader election failed"),
        }
    }

    async fn send_heartbeat(&self, epoch: u64, within: Duration) -> HeartbeatAnswer {
        let heartbeat = Heartbeat { node_id: self.node_id, epoch };
        let deadline = tokio::time::Instant::now() + within;
        let (leader, addr) = match self.leader(deadline).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(epoch, error = %e, "heartbeat not sent: no controller leader known");
                return HeartbeatAnswer::NotLeader;
            }
        };
        if leader == self.node_id {
            return self.take_heartbeat(&heartbeat);
        }
        let (Some(peers), Ok(body)) = (&self.peers, serde_json::to_vec(&heartbeat)) else {
            return HeartbeatAnswer::NotLeader;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match peers.call_within(leader, &addr, RPC_HEARTBEAT, &body, left).await {
            Ok(answer) => serde_json::from_slice(&answer).unwrap_or(HeartbeatAnswer::NotLeader),
            Err(e) => {
                tracing::debug!(epoch, leader, error = ?e, "heartbeat failed");
                HeartbeatAnswer::NotLeader
            }
        }
    }

    /// One round of the leader's fencing: every unfenced broker not heard from within
    /// `session_timeout` is fenced. `leading_since` is when this node's current leadership
    /// began (a new leader counts every broker as heard from then); a broker that registered
    /// under a new epoch counts as heard from when this round first sees that epoch.
    async fn fence_silent_brokers(&self, leading_since: &mut Option<tokio::time::Instant>, session_timeout: Duration) {
        if self.raft.metrics().borrow().current_leader != Some(self.node_id) {
            *leading_since = None;
            return;
        }
        let now = tokio::time::Instant::now();
        let since = *leading_since.get_or_insert(now);
        let silent: Vec<(NodeId, u64)> = {
            let mut heartbeats = self.heartbeats.lock().expect("heartbeat table");
            self.state()
                .brokers
                .values()
                .filter(|b| !b.fenced)
                .filter(|b| {
                    let last = match heartbeats.get(&b.node_id) {
                        Some(&(epoch, at)) if epoch == b.epoch => at.max(since),
                        _ => {
                            heartbeats.insert(b.node_id, (b.epoch, now));
                            now
                        }
                    };
                    let silent = now.duration_since(last) > session_timeout;
                    if silent {
                        tracing::debug!(
                            node_id = b.node_id,
                            epoch = b.epoch,
                            silent = ?now.duration_since(last),
                            leading = ?now.duration_since(since),
                            "a broker's session ran out"
                        );
                    }
                    silent
                })
                .map(|b| (b.node_id, b.epoch))
                .collect()
        };
        for (node_id, epoch) in silent {
            match self.propose_as_leader(Command::FenceBroker { node_id, epoch }).await {
                Ok(_) => tracing::warn!(node_id, epoch, "fenced a broker that missed its session timeout"),
                Err(e) => tracing::warn!(node_id, error = %e, "fencing a silent broker failed"),
            }
        }
    }

    /// Fences this broker on a clean stop, so its partitions show as led elsewhere (or
    /// offline) at once rather than after its session timeout.
    pub async fn leave(&self) {
        if self.peers.is_none() {
            return;
        }
        let Some(epoch) = self.state().brokers.get(&self.node_id).filter(|b| !b.fenced).map(|b| b.epoch) else {
            return;
        };
        if let Err(e) = self.propose(Command::FenceBroker { node_id: self.node_id, epoch }).await {
            tracing::warn!(error = %e, "could not leave the cluster cleanly; the controller fences this broker after its session timeout");
        }
    }

    /// Whether this broker may lead partitions: on a single node always; in a cluster once this
    /// process has registered and while that registration is live (a restarted broker's old
    /// registration, which its own log may still show as leading, does not count).
    pub fn may_lead(&self) -> bool {
        if self.peers.is_none() {
            return true;
        }
        let registered = self.registered_epoch.load(std::sync::atomic::Ordering::Acquire);
        self.state().brokers.get(&self.node_id).is_some_and(|b| !b.fenced && b.epoch == registered)
    }

    /// What each command applied from now on changed, on this node, whoever proposed it.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Lets peers send the broker service's requests (set once, at start).
    pub fn serve_service(&self, handler: ServiceHandler) {
        *self.service.lock().expect("service handler lock") = Some(handler);
    }

    /// Sends a broker service request to broker `node` over the cluster endpoint and returns
    /// its answer; a failure is `RequestTimedOut` (retriable) naming the broker. Waits (within
    /// `timeout`) while `cluster::FORWARDED_STREAMS_MAX` such requests are in flight.
    pub async fn ask(&self, node: NodeId, kind: u8, body: &[u8], timeout: Duration) -> Result<Vec<u8>, WireError> {
        let unreachable = |why: String| WireError::new(ErrorCode::RequestTimedOut, format!("broker {node}: {why}"));
        let started = tokio::time::Instant::now();
        let _permit = tokio::time::timeout(timeout, self.forwarding.acquire())
            .await
            .map_err(|_| {
                unreachable(format!(
                    "{} requests to other brokers are in flight (FORWARDED_STREAMS_MAX); none finished within {timeout:?}",
                    crate::cluster::FORWARDED_STREAMS_MAX
                ))
            })?
            .map_err(|_| unreachable("shutting down".into()))?;
        let timeout = timeout.saturating_sub(started.elapsed());
        let peers = self.peers.as_ref().ok_or_else(|| unreachable("this broker has no cluster endpoint".into()))?;
        let addr = self.node_addr(node).ok_or_else(|| unreachable("no cluster address known for it".into()))?;
        match peers.call_within(node, &addr, kind, body, timeout).await {
            Ok(answer) => Ok(answer),
            Err(PeerError::Unreachable(e) | PeerError::Failed(e)) => Err(unreachable(e)),
        }
    }

    /// Lets peers fetch this broker's module components (set once, at start).
    pub fn serve_blobs(&self, source: BlobSource) {
        *self.blobs.lock().expect("blob source lock") = Some(source);
    }

    /// A module component's bytes from the first voter that has them (in a cluster; `None` on
    /// a single node or if none has them). The caller checks the bytes hash to `sha256`.
    pub async fn fetch_blob(&self, sha256: &str) -> Option<Vec<u8>> {
        let peers = self.peers.as_ref()?;
        let voters = self.status().voters;
        for (id, addr) in voters.into_iter().filter(|(id, _)| *id != self.node_id) {
            match peers.call_within(id, &addr, RPC_BLOB, sha256.as_bytes(), Duration::from_secs(10)).await {
                Ok(answer) if answer.first() == Some(&1) => return Some(answer[1..].to_vec()),
                Ok(_) => {}
                Err(PeerError::Unreachable(e) | PeerError::Failed(e)) => {
                    tracing::debug!(node = id, error = %e, "asking a peer for a module component failed")
                }
            }
        }
        None
    }

    /// The controller as this node sees it, for `weir cluster status`.
    pub fn status(&self) -> ControllerStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        ControllerStatus {
            node_id: self.node_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            voters: membership
                .voter_ids()
                .map(|id| (id, membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default()))
                .collect(),
            learners: membership
                .learner_ids()
                .map(|id| (id, membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default()))
                .collect(),
            last_applied: metrics.last_applied.map(|l| l.index),
        }
    }

    /// A member's cluster address (a voter's or a learner's).
    fn node_addr(&self, node: NodeId) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.membership_config.membership().get_node(&node).map(|n| n.addr.clone())
    }

    /// Joins the controller group as a learner through any of `through` (voters by id), at
    /// this node's cluster address `addr`: asks each in turn, following a voter's word on who
    /// leads, until the leader has added it (within [`JOIN_DEADLINE`]).
    async fn join(&self, through: &BTreeMap<NodeId, String>, addr: String) -> Result<(), WireError> {
        let peers = self.peers.as_ref().ok_or_else(|| storage("joining needs a cluster endpoint"))?;
        let body = serde_json::to_vec(&JoinRequest { node_id: self.node_id, addr }).map_err(storage)?;
        let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
        let mut ask: Vec<(NodeId, String)> = through.iter().map(|(id, a)| (*id, a.clone())).collect();
        let mut last = String::from("no voter answered");
        while tokio::time::Instant::now() < deadline {
            let Some((id, at)) = ask.first().cloned() else { break };
            ask.rotate_left(1);
            let answer = peers.call_within(id, &at, RPC_JOIN, &body, Duration::from_secs(5)).await;
            match answer.map(|bytes| serde_json::from_slice::<JoinAnswer>(&bytes)) {
                Ok(Ok(JoinAnswer::Added)) => {
                    tracing::info!(node_id = self.node_id, through = id, "joined the controller group as a learner");
                    return Ok(());
                }
                Ok(Ok(JoinAnswer::NotLeader(Some(leader)))) => {
                    ask.retain(|n| *n != leader);
                    ask.insert(0, leader);
                    continue;
                }
                Ok(Ok(JoinAnswer::NotLeader(None))) => last = format!("node {id} knows no controller leader"),
                Ok(Ok(JoinAnswer::Refused(why))) => {
                    return Err(WireError::new(ErrorCode::InvalidRequest, format!("joining through node {id}: {why}")))
                }
                Ok(Err(e)) => last = format!("node {id} answered badly: {e}"),
                Err(PeerError::Unreachable(e) | PeerError::Failed(e)) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(WireError::new(
            ErrorCode::NotController,
            format!("could not join the controller group within {} s: {last}", JOIN_DEADLINE.as_secs()),
        ))
    }

    /// A broker's request to join as a learner: the leader adds it (not waiting for it to
    /// catch up); another voter names the leader.
    async fn take_join(&self, request: JoinRequest) -> JoinAnswer {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.node_id) {
            let leader = metrics.current_leader.and_then(|l| Some((l, self.node_addr(l)?)));
            return JoinAnswer::NotLeader(leader);
        }
        let membership = metrics.membership_config.membership();
        if membership.voter_ids().any(|v| v == request.node_id) {
            return JoinAnswer::Refused(format!("node {} is a controller voter; it does not join", request.node_id));
        }
        if let Some(known) = membership.get_node(&request.node_id) {
            return if known.addr == request.addr {
                JoinAnswer::Added
            } else {
                JoinAnswer::Refused(format!(
                    "node {} is a member at {}, not {}; a node id is never reused",
                    request.node_id, known.addr, request.addr
                ))
            };
        }
        match self.raft.add_learner(request.node_id, BasicNode { addr: request.addr.clone() }, false).await {
            Ok(_) => {
                tracing::info!(node_id = request.node_id, addr = %request.addr, "added a learner to the controller group");
                JoinAnswer::Added
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                JoinAnswer::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr)))
            }
            Err(e) => JoinAnswer::Refused(e.to_string()),
        }
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
        self.blobs.lock().expect("blob source lock").take();
        self.service.lock().expect("service handler lock").take();
        let _ = self.raft.shutdown().await;
        if let Some(peers) = &self.peers {
            peers.endpoint.close(0u32.into(), b"shutting down");
        }
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
    /// What each applied command changed, for the broker's reactions on every node.
    events: tokio::sync::broadcast::Sender<Event>,
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
                    if let Ok(event) = &applied {
                        // Nobody listening (a replay at start) is fine.
                        let _ = self.events.send(event.clone());
                    }
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
            events: self.events.clone(),
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

// ---- proposals and the cluster network ------------------------------------------------------------

/// What the cluster endpoint carries for the controller.
const RPC_VOTE: u8 = 1;
const RPC_APPEND: u8 = 2;
const RPC_SNAPSHOT: u8 = 3;
const RPC_HEARTBEAT: u8 = 6;
/// A broker asks to join the controller group as a learner.
const RPC_JOIN: u8 = 8;

#[derive(Serialize, Deserialize)]
struct JoinRequest {
    node_id: NodeId,
    addr: String,
}

#[derive(Debug, Serialize, Deserialize)]
enum JoinAnswer {
    /// Added as a learner (or it was one already, at that address).
    Added,
    /// Ask the leader (when this node knows it).
    NotLeader(Option<(NodeId, String)>),
    Refused(String),
}

/// How long a broker tries to join before it gives up and its start fails.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);
/// Asks for a module component by SHA-256; the answer is `1` and its bytes, or `0`.
const RPC_BLOB: u8 = 7;

/// A broker's heartbeat to the controller leader, with the epoch it registered under.
#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    node_id: NodeId,
    epoch: u64,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
enum HeartbeatAnswer {
    Alive,
    /// The broker is fenced or registered under another epoch: it registers again.
    Fenced,
    NotLeader,
}

/// Where a broker's listeners are, as it registers them.
#[derive(Debug, Clone)]
pub struct BrokerAddresses {
    pub quic_addr: String,
    pub kafka_host: String,
    pub kafka_port: u16,
}

/// The answer to a proposal, as the leader sends it back to a forwarding broker.
#[derive(Debug, Serialize, Deserialize)]
enum Answer<T, E> {
    /// Committed at this log index.
    Done {
        index: u64,
        out: T,
    },
    Refused(E),
    /// The node asked does not lead (any more); ask again.
    NotLeader,
}

/// A change the controller commits: a metadata command, or a registry command that keeps its
/// own errors.
trait Proposal: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    type Out: Serialize + DeserializeOwned + Send;
    type Err: Serialize + DeserializeOwned + Send;
    /// Its request kind on the cluster endpoint.
    const KIND: u8;
    fn unavailable(message: String) -> Self::Err;
    /// Checks and commits it on this node, which must lead, under proposal id `id`.
    fn here(self, id: String, controller: &Controller) -> impl Future<Output = Answer<Self::Out, Self::Err>> + Send;
}

/// A proposal on its way to the leader, with the id it keeps through retries.
#[derive(Serialize, Deserialize)]
struct Forwarded<P> {
    id: String,
    proposal: P,
}

impl Proposal for Command {
    type Out = Event;
    type Err = WireError;
    const KIND: u8 = 4;
    fn unavailable(message: String) -> WireError {
        WireError::new(ErrorCode::NotController, message)
    }
    fn here(self, id: String, controller: &Controller) -> impl Future<Output = Answer<Event, WireError>> + Send {
        controller.propose_here(id, self)
    }
}

impl Proposal for RegistryCommand {
    type Out = RegistryOutcome;
    type Err = RegistryError;
    const KIND: u8 = 5;
    fn unavailable(message: String) -> RegistryError {
        RegistryError::Store(message)
    }
    fn here(
        self,
        id: String,
        controller: &Controller,
    ) -> impl Future<Output = Answer<RegistryOutcome, RegistryError>> + Send {
        controller.propose_registry_here(id, self)
    }
}

/// The controller as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStatus {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// Voter ids and their cluster addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Brokers that joined as learners (`--join`): they get the log and vote in nothing.
    pub learners: BTreeMap<NodeId, String>,
    pub last_applied: Option<u64>,
}

/// Connections to the other brokers' cluster endpoints, one per peer, made on first use and
/// again after one is lost.
#[derive(Clone)]
struct Peers {
    endpoint: quinn::Endpoint,
    /// One slot per peer, so connecting to a peer that is down never holds up the others.
    connections: Arc<std::sync::Mutex<HashMap<NodeId, PeerSlot>>>,
    /// Tests only: peers a test partition cuts this node off from.
    faults: Option<NetworkFaults>,
}

type PeerSlot = Arc<Mutex<PeerConnection>>;

/// A peer's connection, or when connecting to it last failed.
#[derive(Default)]
struct PeerConnection {
    connection: Option<quinn::Connection>,
    failed_at: Option<tokio::time::Instant>,
}

/// After a failed connect, callers fail at once for this long rather than queue up behind
/// one connect attempt after another to a peer that is down (each up to `CONNECT_TIMEOUT`).
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug)]
enum PeerError {
    /// No connection: the request was not sent.
    Unreachable(String),
    /// The request may have been sent; no answer came.
    Failed(String),
}

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Peers {
    fn new(endpoint: quinn::Endpoint, node_id: NodeId, test_partition_file: Option<std::path::PathBuf>) -> Self {
        let connections = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let faults = test_partition_file.map(|path| NetworkFaults::watch(node_id, path, &connections));
        Self { endpoint, connections, faults }
    }

    fn slot(&self, target: NodeId) -> PeerSlot {
        self.connections.lock().expect("peer table lock").entry(target).or_default().clone()
    }

    async fn connection(&self, target: NodeId, addr: &str) -> Result<quinn::Connection, PeerError> {
        let slot = self.slot(target);
        let mut slot = slot.lock().await;
        if let Some(c) = slot.connection.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        let unreachable = |e: String| PeerError::Unreachable(format!("node {target} at {addr}: {e}"));
        if slot.failed_at.is_some_and(|at| at.elapsed() < RECONNECT_BACKOFF) {
            return Err(unreachable("connecting failed just now".into()));
        }
        let connected = self.connect(target, addr).await;
        match &connected {
            Ok(connection) => *slot = PeerConnection { connection: Some(connection.clone()), failed_at: None },
            Err(_) => *slot = PeerConnection { connection: None, failed_at: Some(tokio::time::Instant::now()) },
        }
        connected
    }

    async fn connect(&self, target: NodeId, addr: &str) -> Result<quinn::Connection, PeerError> {
        let unreachable = |e: String| PeerError::Unreachable(format!("node {target} at {addr}: {e}"));
        let socket = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("no address".into()))?;
        let connecting = self
            .endpoint
            .connect(socket, &crate::cluster::node_name(target))
            .map_err(|e| unreachable(e.to_string()))?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(connection)
    }

    async fn call_within(
        &self,
        target: NodeId,
        addr: &str,
        kind: u8,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        if self.faults.as_ref().is_some_and(|f| f.cuts(target)) {
            // As a partition looks to a caller: no answer within the call's time.
            tokio::time::sleep(timeout.min(Duration::from_millis(500))).await;
            return Err(PeerError::Unreachable(format!("node {target} at {addr}: cut off by the test partition file")));
        }
        let started = tokio::time::Instant::now();
        // The whole call, connecting included, within `timeout`.
        let connection = tokio::time::timeout(timeout, self.connection(target, addr)).await.map_err(|_| {
            PeerError::Unreachable(format!("node {target} at {addr}: not connected within {timeout:?}"))
        })??;
        let timeout = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(timeout, crate::cluster::call(&connection, kind, body)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.slot(target).lock().await.connection = None;
                Err(PeerError::Failed(format!("node {target} at {addr}: {e}")))
            }
            Err(_) => Err(PeerError::Failed(format!("node {target} at {addr}: no answer within {timeout:?}"))),
        }
    }
}

/// openraft's network: Raft RPCs over the cluster endpoint. On a single node there are no
/// peers and nothing is ever sent.
struct QuicNetwork {
    peers: Option<Peers>,
}

struct PeerClient {
    peers: Option<Peers>,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for QuicNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient { peers: self.peers.clone(), target, addr: node.addr.clone() }
    }
}

impl PeerClient {
    /// Sends one Raft RPC and decodes the peer's `Result`.
    async fn rpc<Req, Resp, E>(
        &self,
        kind: u8,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let network = |e: String| RPCError::Network(NetworkError::new(&std::io::Error::other(e)));
        let Some(peers) = &self.peers else {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                "single-node controller: no peers to reach",
            ))));
        };
        let body = serde_json::to_vec(request).map_err(|e| network(e.to_string()))?;
        let answer = match peers.call_within(self.target, &self.addr, kind, &body, option.hard_ttl()).await {
            Ok(answer) => answer,
            Err(PeerError::Unreachable(e)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))
            }
            Err(PeerError::Failed(e)) => return Err(network(e)),
        };
        match serde_json::from_slice::<Result<Resp, E>>(&answer) {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(network(format!("node {} answered badly: {e}", self.target))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(RPC_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.rpc(RPC_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(RPC_VOTE, &rpc, &option).await
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
