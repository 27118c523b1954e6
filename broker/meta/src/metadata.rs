//! The cluster metadata state machine: topics, their partitions and configs.
//!
//! Pure: `apply` takes a command and returns what changed, with no I/O, so the controller can run
//! it from its replicated log and unit tests can check every rule directly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_registry::state::{Plan, RegistryCommand, RegistryLimits, RegistryOutcome, RegistryState};
use weir_registry::RegistryError;
use weir_sdk::wire::TopicConfig;
use weir_sdk::{ErrorCode, WireError};

use crate::deployments::{self, Deployment, ModuleCommand};
use crate::offsets::{GroupOffsets, OffsetCommit};
use crate::replication::{self, PartitionRegistration};
pub use crate::topic::{unknown_topic, validate_topic_name, Topic, TOPIC_NAME_BYTES_LIMIT};

#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateTopic {
        name: String,
        partitions: u32,
        config: TopicConfig,
        /// Replicas of each partition, in a cluster (at most the live brokers).
        #[serde(default = "one")]
        replication_factor: u32,
    },
    DeleteTopic {
        name: String,
    },
    AlterTopic {
        name: String,
        partitions: u32,
        config: TopicConfig,
    },
    /// A schema registry change; see `weir_registry::state`.
    Registry(RegistryCommand),
    /// A module deployment change; see `deployments.rs`.
    Module(ModuleCommand),
    /// Takes the next `count` producer ids for a broker to hand out to idempotent producers,
    /// so ids stay unique across brokers and restarts. `at_least` skips ids below it (ids a
    /// broker finds in use in its storage).
    AllocateProducerIds {
        count: u32,
        #[serde(default)]
        at_least: i64,
    },
    /// A broker (re)joins the cluster with its listener addresses: it gets a new broker
    /// epoch, is unfenced, and leads the offline partitions it can lead.
    RegisterBroker {
        node_id: u64,
        quic_addr: String,
        kafka_host: String,
        kafka_port: u16,
    },
    /// The controller fences a broker that missed its session timeout (or asked to stop): its
    /// partitions get new leaders from their ISR. Applies only to the epoch it names, so a
    /// broker that registered again meanwhile stays.
    FenceBroker {
        node_id: u64,
        epoch: u64,
    },
    /// A partition's leader changes its ISR (Kafka's AlterPartition): compare-and-set on the
    /// partition epoch, see [`replication::alter_partition`].
    AlterPartition {
        topic_id: u64,
        partition: u32,
        leader: u64,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: BTreeSet<u64>,
    },
    /// Moves partitions' replicas (`weir partition reassign`): for each partition its target
    /// replicas, or `None` to cancel the move under way; see
    /// [`replication::start_reassignment`]. All or nothing.
    ReassignPartitions {
        topic: String,
        moves: BTreeMap<u32, Option<Vec<u64>>>,
        /// The most bytes per second a leader sends the new replicas.
        #[serde(default)]
        throttle_bytes_per_sec: Option<u64>,
    },
    /// Moves each partition's leadership (of `topic`, or of every topic) back to its preferred
    /// replica, the first assigned, where that one is live and in sync (Kafka's preferred
    /// leader election); see [`replication::prefer_leader`].
    ElectPreferredLeaders {
        topic: Option<String>,
    },
    /// A consumer group's offsets, checked by its coordinator (member, generation); see
    /// [`GroupOffsets::commit`].
    CommitOffsets {
        group: String,
        offsets: Vec<OffsetCommit>,
    },
    /// Removes a group's offsets of the given partitions, or all of them.
    DeleteOffsets {
        group: String,
        partitions: Option<Vec<(String, u32)>>,
    },
    /// A command proposed under an id its proposer picked: applied once however often it is
    /// proposed (a proposer that lost the leader's answer proposes it again), and a repeat
    /// answers what the first application did (see [`RECENT_PROPOSALS_KEPT`]).
    Once {
        id: String,
        command: Box<Command>,
    },
}

/// How many proposal ids (with their outcomes) the state keeps to answer repeats.
pub const RECENT_PROPOSALS_KEPT: usize = 1000;

/// What applying a command changed.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    TopicCreated(Topic),
    TopicDeleted(Topic),
    TopicAltered {
        before: Topic,
        after: Topic,
    },
    Registry(RegistryOutcome),
    /// The deployment after the change (as it was, for a removal).
    Module(Deployment),
    /// Producer ids `first .. first + count` belong to the proposer.
    ProducerIds {
        first: i64,
        count: u32,
    },
    BrokerRegistered(BrokerRegistration),
    /// The broker as fenced; `None` if the epoch was not current (nothing changed).
    BrokerFenced(Option<BrokerRegistration>),
    /// A partition's registration after an AlterPartition.
    PartitionAltered {
        topic: String,
        partition: u32,
        registration: PartitionRegistration,
    },
    /// The partitions (`topic/partition`) whose leadership went back to the preferred replica.
    LeadersElected {
        moved: Vec<String>,
    },
    /// The registrations of the partitions a reassignment started, replaced or canceled.
    PartitionsReassigned {
        topic: String,
        registrations: BTreeMap<u32, PartitionRegistration>,
    },
    /// How many offsets a commit stored (those of partitions that exist).
    OffsetsCommitted {
        group: String,
        stored: usize,
    },
    OffsetsDeleted {
        group: String,
        removed: usize,
    },
}

fn one() -> u32 {
    1
}

/// A broker as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: u64,
    /// Goes up each time the broker registers (a restart), across all brokers.
    pub epoch: u64,
    /// Its native QUIC listener, as clients reach it.
    pub quic_addr: String,
    /// Its Kafka listener as Kafka clients are told to reach it.
    pub kafka_host: String,
    pub kafka_port: u16,
    /// Missed its session timeout: leads nothing and is in no ISR until it registers again.
    pub fenced: bool,
}

/// The broker's configured limits. They are checked when a command is proposed
/// ([`State::check_limits`]), never when a committed command is applied: applying an entry
/// depends only on the log, so a restart with lower limits replays the same state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    pub partitions_per_topic_max: u32,
    pub topics_max: usize,
    pub message_bytes_max: u32,
    /// Versions a registry subject may hold, soft-deleted ones included.
    pub schema_versions_per_subject_max: usize,
    /// Schemas (distinct ids) the registry may hold.
    pub schemas_max: usize,
    /// Groups with committed offsets.
    pub groups_max: usize,
}

impl Limits {
    pub fn registry(&self) -> RegistryLimits {
        RegistryLimits { versions_per_subject_max: self.schema_versions_per_subject_max, schemas_max: self.schemas_max }
    }
}

/// A command with its costly part worked out by [`State::prepare`].
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A registry command planned against the state (or refused).
    Registry(Result<Plan, RegistryError>),
    Command(Command),
    /// A [`Command::Once`] not applied before.
    Once(String, Box<Prepared>),
    /// A [`Command::Once`] applied before: its first outcome.
    Repeat(Result<Event, WireError>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Behind an `Arc` each: a request takes its topic out of the state without copying every
    /// partition's assignment (O(1), not O(partitions), per request), and so does a clone of
    /// the state. Serialized as the topic itself.
    pub topics: BTreeMap<String, Arc<Topic>>,
    pub next_topic_id: u64,
    /// Schemas, subjects and compatibility settings of the schema registry.
    #[serde(default)]
    pub registry: RegistryState,
    /// Module deployments by name.
    #[serde(default)]
    pub modules: BTreeMap<String, Deployment>,
    /// The first producer id not yet handed out in a block; ids are never reused.
    #[serde(default = "first_producer_id")]
    pub next_producer_id: i64,
    /// Brokers that registered, by node id (a cluster's; none on a single node).
    #[serde(default)]
    pub brokers: BTreeMap<u64, BrokerRegistration>,
    #[serde(default)]
    pub last_broker_epoch: u64,
    /// The ids of the latest [`Command::Once`] proposals with their outcomes, oldest first.
    #[serde(default)]
    pub recent_proposals: VecDeque<(String, Result<Event, WireError>)>,
    /// Consumer groups' committed offsets.
    #[serde(default)]
    pub group_offsets: GroupOffsets,
}

impl Default for State {
    fn default() -> Self {
        Self {
            topics: BTreeMap::new(),
            next_topic_id: 0,
            registry: RegistryState::default(),
            modules: BTreeMap::new(),
            next_producer_id: first_producer_id(),
            brokers: BTreeMap::new(),
            last_broker_epoch: 0,
            recent_proposals: VecDeque::new(),
            group_offsets: GroupOffsets::default(),
        }
    }
}

// The controller checks registry commands before it proposes them, so this error is reached
// only if replay differs from the first check.
fn registry_error(e: RegistryError) -> WireError {
    WireError::new(ErrorCode::InvalidRequest, format!("schema registry: {e}"))
}

/// Producer ids below this are never handed out (earlier versions started here too).
pub const FIRST_PRODUCER_ID: i64 = 1000;

fn first_producer_id() -> i64 {
    FIRST_PRODUCER_ID
}

/// Largest block of producer ids one command may take.
pub const PRODUCER_ID_BLOCK_MAX: u32 = 1_000_000;

impl State {
    /// Checks a command against the broker's configured limits, before it is proposed. A
    /// command that passes here and [`State::apply`] on a copy of the state is committed.
    pub fn check_limits(&self, command: &Command, limits: &Limits) -> Result<(), WireError> {
        match command {
            Command::CreateTopic { name, partitions, config, .. } => {
                validate_partitions(*partitions, limits)?;
                validate_config_limits(config, limits)?;
                if !self.topics.contains_key(name) && self.topics.len() >= limits.topics_max {
                    return Err(WireError::new(
                        ErrorCode::LimitReached,
                        format!("the broker holds max.topics = {} topics", limits.topics_max),
                    ));
                }
                Ok(())
            }
            Command::AlterTopic { partitions, config, .. } => {
                validate_partitions(*partitions, limits)?;
                validate_config_limits(config, limits)
            }
            Command::DeleteTopic { .. }
            | Command::Registry(_)
            | Command::Module(_)
            | Command::AllocateProducerIds { .. }
            | Command::RegisterBroker { .. }
            | Command::FenceBroker { .. }
            | Command::AlterPartition { .. }
            | Command::ReassignPartitions { .. }
            | Command::ElectPreferredLeaders { .. }
            | Command::DeleteOffsets { partitions: None, .. } => Ok(()),
            Command::DeleteOffsets { partitions: Some(partitions), .. } => {
                GroupOffsets::check_partitions(partitions.len())
            }
            Command::CommitOffsets { group, offsets } => {
                GroupOffsets::check_commit(group, offsets)?;
                if !self.group_offsets.has_group(group) && self.group_offsets.group_count() >= limits.groups_max {
                    return Err(WireError::new(
                        ErrorCode::LimitReached,
                        format!("the cluster holds committed offsets of groups.max = {} groups", limits.groups_max),
                    ));
                }
                Ok(())
            }
            Command::Once { command, .. } => self.check_limits(command, limits),
        }
    }

    /// Works out the costly part of a command reading the state only: a schema registration's
    /// reference resolution, parsing and compatibility checks. The state machine holds its
    /// read lock for this and its write lock only for [`State::apply_prepared`], so readers
    /// (produce, fetch) never wait behind a registration's work.
    pub fn prepare(&self, command: Command) -> Prepared {
        match command {
            Command::Registry(command) => Prepared::Registry(self.registry.plan(command)),
            Command::Once { id, command } => match self.proposal_outcome(&id) {
                Some(outcome) => Prepared::Repeat(outcome),
                None => Prepared::Once(id, Box::new(self.prepare(*command))),
            },
            command => Prepared::Command(command),
        }
    }

    /// The outcome of the [`Command::Once`] proposal `id`, if it was applied (among the latest
    /// [`RECENT_PROPOSALS_KEPT`]).
    pub fn proposal_outcome(&self, id: &str) -> Option<Result<Event, WireError>> {
        self.recent_proposals.iter().rev().find(|(seen, _)| seen == id).map(|(_, outcome)| outcome.clone())
    }

    fn remember_proposal(&mut self, id: String, outcome: &Result<Event, WireError>) {
        if self.recent_proposals.len() >= RECENT_PROPOSALS_KEPT {
            self.recent_proposals.pop_front();
        }
        self.recent_proposals.push_back((id, outcome.clone()));
    }

    /// Applies a prepared command to the state it was prepared against; the same as
    /// [`State::apply`] of the command.
    pub fn apply_prepared(&mut self, prepared: Prepared) -> Result<Event, WireError> {
        match prepared {
            Prepared::Registry(plan) => {
                plan.and_then(|plan| self.registry.commit(plan)).map(Event::Registry).map_err(registry_error)
            }
            Prepared::Command(command) => self.apply(command),
            Prepared::Once(id, prepared) => {
                let outcome = self.apply_prepared(*prepared);
                self.remember_proposal(id, &outcome);
                outcome
            }
            Prepared::Repeat(outcome) => outcome,
        }
    }

    /// Applies a committed command. Depends only on the state and the command (never on
    /// configuration), so replaying the same log always rebuilds the same state.
    pub fn apply(&mut self, command: Command) -> Result<Event, WireError> {
        match command {
            Command::CreateTopic { name, partitions, config, replication_factor } => {
                validate_topic_name(&name)?;
                if partitions == 0 {
                    return Err(WireError::new(ErrorCode::InvalidPartitions, "a topic needs at least one partition"));
                }
                validate_config(&config)?;
                if self.topics.contains_key(&name) {
                    return Err(WireError::new(
                        ErrorCode::TopicAlreadyExists,
                        format!("topic {name:?} already exists"),
                    ));
                }
                let mut topic =
                    Topic::new(self.next_topic_id + 1, name.clone(), partitions, config, replication_factor);
                self.assign(&mut topic)?;
                self.next_topic_id += 1;
                self.topics.insert(name, Arc::new(topic.clone()));
                Ok(Event::TopicCreated(topic))
            }
            Command::DeleteTopic { name } => {
                let topic = self.topics.remove(&name).ok_or_else(|| unknown_topic(&name))?;
                self.group_offsets.remove_topic(&name);
                Ok(Event::TopicDeleted(Arc::unwrap_or_clone(topic)))
            }
            Command::AlterTopic { name, partitions, config } => {
                let topic = self.topics.get(&name).ok_or_else(|| unknown_topic(&name))?;
                if partitions < topic.partitions {
                    return Err(WireError::new(
                        ErrorCode::InvalidPartitions,
                        format!(
                            "partitions can only grow: topic {name:?} has {}, asked for {partitions}",
                            topic.partitions
                        ),
                    ));
                }
                validate_config(&config)?;
                let before = Topic::clone(topic);
                let mut after = Topic::clone(topic);
                after.partitions = partitions;
                after.config = config;
                self.assign(&mut after)?;
                self.topics.insert(name, Arc::new(after.clone()));
                Ok(Event::TopicAltered { before, after })
            }
            // The controller dry-runs registry commands and proposes only those that apply, so
            // this error is reached only if replay differs from the first apply.
            Command::Registry(command) => self.registry.apply(command).map(Event::Registry).map_err(registry_error),
            Command::Module(command) => deployments::apply(&mut self.modules, &self.topics, command).map(Event::Module),
            Command::AllocateProducerIds { count, at_least } => {
                if count == 0 || count > PRODUCER_ID_BLOCK_MAX {
                    return Err(WireError::new(
                        ErrorCode::InvalidRequest,
                        format!("a producer id block holds 1 to {PRODUCER_ID_BLOCK_MAX} ids, not {count}"),
                    ));
                }
                let first = self.next_producer_id.max(at_least);
                let next = first
                    .checked_add(i64::from(count))
                    .ok_or_else(|| WireError::new(ErrorCode::LimitReached, "producer ids are exhausted"))?;
                self.next_producer_id = next;
                Ok(Event::ProducerIds { first, count })
            }
            Command::RegisterBroker { node_id, quic_addr, kafka_host, kafka_port } => {
                // A broker registering again without having been fenced restarted (maybe with
                // an empty data folder): its old incarnation is fenced first, so it is in no
                // ISR and leads nothing until its leaders see it caught up.
                if self.brokers.get(&node_id).is_some_and(|b| !b.fenced) {
                    if let Some(broker) = self.brokers.get_mut(&node_id) {
                        broker.fenced = true;
                    }
                    let live = self.live_brokers();
                    self.each_partition(|topic, current| {
                        replication::fence_broker(current, node_id, &live, topic.unclean_election())
                    });
                }
                self.last_broker_epoch += 1;
                let registration = BrokerRegistration {
                    node_id,
                    epoch: self.last_broker_epoch,
                    quic_addr,
                    kafka_host,
                    kafka_port,
                    fenced: false,
                };
                self.brokers.insert(node_id, registration.clone());
                let live = self.live_brokers();
                self.each_partition(|topic, current| {
                    replication::unfence_broker(current, &live, topic.unclean_election())
                });
                Ok(Event::BrokerRegistered(registration))
            }
            Command::Once { id, command } => {
                if let Some(outcome) = self.proposal_outcome(&id) {
                    return outcome;
                }
                let outcome = self.apply(*command);
                self.remember_proposal(id, &outcome);
                outcome
            }
            Command::FenceBroker { node_id, epoch } => {
                let Some(broker) = self.brokers.get_mut(&node_id).filter(|b| b.epoch == epoch && !b.fenced) else {
                    return Ok(Event::BrokerFenced(None));
                };
                broker.fenced = true;
                let fenced = broker.clone();
                let live = self.live_brokers();
                self.each_partition(|topic, current| {
                    replication::fence_broker(current, node_id, &live, topic.unclean_election())
                });
                Ok(Event::BrokerFenced(Some(fenced)))
            }
            Command::AlterPartition { topic_id, partition, leader, leader_epoch, partition_epoch, isr } => {
                let fenced: BTreeSet<u64> = self.brokers.values().filter(|b| b.fenced).map(|b| b.node_id).collect();
                let live = self.live_brokers();
                let topic =
                    Arc::make_mut(self.topics.values_mut().find(|t| t.id == topic_id).ok_or_else(|| {
                        WireError::new(ErrorCode::UnknownTopic, format!("no topic has id {topic_id}"))
                    })?);
                let current = topic.assignment.get_mut(partition as usize).ok_or_else(|| {
                    WireError::new(
                        ErrorCode::UnknownPartition,
                        format!("topic {:?} has no partition {partition}", topic.name),
                    )
                })?;
                let request = replication::AlterIsr { leader, leader_epoch, partition_epoch, isr };
                let next = replication::alter_partition(current, &request, &fenced).map_err(|e| {
                    let code = match e {
                        replication::AlterPartitionError::NotLeader { .. } => ErrorCode::NotLeaderOrFollower,
                        replication::AlterPartitionError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
                        _ => ErrorCode::InvalidRequest,
                    };
                    WireError::new(
                        code,
                        format!("AlterPartition of {:?} partition {partition} refused: {e:?}", topic.name),
                    )
                })?;
                // The ISR grew to hold every target replica of a reassignment: it completes.
                let next = replication::complete_reassignment(&next, &live).unwrap_or(next);
                *current = next.clone();
                Ok(Event::PartitionAltered { topic: topic.name.clone(), partition, registration: next })
            }
            Command::ElectPreferredLeaders { topic } => {
                if let Some(name) = &topic {
                    if !self.topics.contains_key(name) {
                        return Err(unknown_topic(name));
                    }
                }
                let live = self.live_brokers();
                let mut moved = Vec::new();
                for t in self.topics.values_mut().filter(|t| topic.as_ref().is_none_or(|name| *name == t.name)) {
                    let changes: Vec<(usize, PartitionRegistration)> = t
                        .assignment
                        .iter()
                        .enumerate()
                        .filter_map(|(i, r)| replication::prefer_leader(r, &live).map(|next| (i, next)))
                        .collect();
                    if changes.is_empty() {
                        continue;
                    }
                    let t = Arc::make_mut(t);
                    for (partition, next) in changes {
                        t.assignment[partition] = next;
                        moved.push(format!("{}/{partition}", t.name));
                    }
                }
                Ok(Event::LeadersElected { moved })
            }
            Command::CommitOffsets { group, offsets } => {
                let stored = self.group_offsets.commit(&group, offsets, &self.topics)?;
                Ok(Event::OffsetsCommitted { group, stored })
            }
            Command::DeleteOffsets { group, partitions } => {
                let removed = self.group_offsets.delete(&group, partitions.as_deref());
                Ok(Event::OffsetsDeleted { group, removed })
            }
            Command::ReassignPartitions { topic, moves, throttle_bytes_per_sec } => {
                let live = self.live_brokers();
                let topic = Arc::make_mut(self.topics.get_mut(&topic).ok_or_else(|| unknown_topic(&topic))?);
                if topic.assignment.is_empty() {
                    return Err(WireError::new(
                        ErrorCode::InvalidRequest,
                        "partitions are reassigned in a cluster; this single node's partitions have no replicas",
                    ));
                }
                let mut registrations = BTreeMap::new();
                for (&partition, target) in &moves {
                    let current = topic.assignment.get(partition as usize).ok_or_else(|| {
                        WireError::new(
                            ErrorCode::UnknownPartition,
                            format!("topic {:?} has no partition {partition}", topic.name),
                        )
                    })?;
                    let next = match target {
                        Some(target) => replication::start_reassignment(current, target, throttle_bytes_per_sec, &live),
                        None => replication::cancel_reassignment(current, &live),
                    }
                    .map_err(|e| {
                        let (code, why) = match e {
                            replication::ReassignError::InvalidTarget(why) => {
                                (ErrorCode::InvalidReplicaAssignment, why)
                            }
                            replication::ReassignError::UnknownBroker(b) => (
                                ErrorCode::InvalidReplicaAssignment,
                                format!("broker {b} is not a live registered broker"),
                            ),
                            replication::ReassignError::NoneUnderWay => {
                                (ErrorCode::NoReassignmentInProgress, "no reassignment is under way".into())
                            }
                            replication::ReassignError::NoInSyncOriginal => {
                                (ErrorCode::InvalidReplicaAssignment, "no in-sync replica would be left to lead".into())
                            }
                        };
                        WireError::new(code, format!("partition {partition} of topic {:?}: {why}", topic.name))
                    })?;
                    registrations.insert(partition, next);
                }
                for (&partition, registration) in &registrations {
                    topic.assignment[partition as usize] = registration.clone();
                }
                Ok(Event::PartitionsReassigned { topic: topic.name.clone(), registrations })
            }
        }
    }

    /// Registered brokers that are not fenced.
    pub fn live_brokers(&self) -> BTreeSet<u64> {
        self.brokers.values().filter(|b| !b.fenced).map(|b| b.node_id).collect()
    }

    /// Applies a replication rule to every assigned partition, keeping what it changes.
    fn each_partition(
        &mut self,
        mut rule: impl FnMut(&Topic, &PartitionRegistration) -> Option<PartitionRegistration>,
    ) {
        for topic in self.topics.values_mut() {
            let changes: Vec<(usize, PartitionRegistration)> =
                topic.assignment.iter().enumerate().filter_map(|(i, r)| rule(topic, r).map(|next| (i, next))).collect();
            // Copied (if a reader holds it) only when something changes.
            if !changes.is_empty() {
                let topic = Arc::make_mut(topic);
                for (i, next) in changes {
                    topic.assignment[i] = next;
                }
            }
        }
    }

    /// Gives each partition of `topic` that has none an assignment, in a cluster: its
    /// replication factor's replicas on distinct live brokers, in node id order from a place
    /// that moves by one per partition (so leaders, the first replicas, spread) and depends on
    /// the topic id (so topics spread too). On a single node (no registered brokers)
    /// partitions stay unassigned.
    fn assign(&self, topic: &mut Topic) -> Result<(), WireError> {
        if self.brokers.is_empty() {
            return Ok(());
        }
        let live: Vec<u64> = self.live_brokers().into_iter().collect();
        if live.is_empty() {
            return Err(WireError::new(
                ErrorCode::InvalidReplicationFactor,
                "no live broker to place the partitions on: every registered broker is fenced",
            ));
        }
        let factor = topic.replication_factor as usize;
        if factor == 0 || factor > live.len() {
            return Err(WireError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("Replication factor: {factor} larger than available brokers: {}.", live.len()),
            ));
        }
        let start = usize::try_from(topic.id % live.len() as u64).unwrap_or(0);
        for partition in topic.assignment.len()..topic.partitions as usize {
            let replicas = (0..factor).map(|i| live[(start + partition + i) % live.len()]).collect();
            topic.assignment.push(PartitionRegistration::new(replicas));
        }
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Result<&Arc<Topic>, WireError> {
        self.topics.get(name).ok_or_else(|| unknown_topic(name))
    }
}

fn validate_partitions(partitions: u32, limits: &Limits) -> Result<(), WireError> {
    if partitions == 0 || partitions > limits.partitions_per_topic_max {
        return Err(WireError::new(
            ErrorCode::InvalidPartitions,
            format!(
                "partitions = {partitions} is out of range: a topic has 1 to max.partitions.per.topic = {}",
                limits.partitions_per_topic_max
            ),
        ));
    }
    Ok(())
}

/// The broker's limit on a topic's config, checked when a command is proposed.
fn validate_config_limits(config: &TopicConfig, limits: &Limits) -> Result<(), WireError> {
    if config.max_message_bytes > limits.message_bytes_max {
        return Err(WireError::new(
            ErrorCode::InvalidConfig,
            format!(
                "max.message.bytes = {} is out of range: 64 to the broker's message.bytes.max = {}",
                config.max_message_bytes, limits.message_bytes_max
            ),
        ));
    }
    Ok(())
}

/// Rules of a topic config that hold whatever the broker's configuration.
fn validate_config(config: &TopicConfig) -> Result<(), WireError> {
    let invalid = |message: String| Err(WireError::new(ErrorCode::InvalidConfig, message));
    if config.max_message_bytes < 64 {
        return invalid(format!("max.message.bytes = {} is out of range: at least 64", config.max_message_bytes));
    }
    if let weir_sdk::FlushMode::IntervalMs(ms) = config.flush {
        if ms == 0 || ms > 3_600_000 {
            return invalid(format!("flush.interval.ms = {ms} is out of range: 1 to 3600000"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        partitions_per_topic_max: 1000,
        topics_max: 3,
        message_bytes_max: 8 << 20,
        schema_versions_per_subject_max: 1000,
        schemas_max: 1000,
        groups_max: 2,
    };

    fn create(name: &str, partitions: u32) -> Command {
        Command::CreateTopic { name: name.into(), partitions, config: TopicConfig::default(), replication_factor: 1 }
    }

    /// As the controller does: limits when proposed, then the rules of the state.
    fn check(state: &mut State, command: Command, expected: Result<(), ErrorCode>) {
        let got = state
            .check_limits(&command, &LIMITS)
            .and_then(|()| state.apply(command.clone()))
            .map(|_| ())
            .map_err(|e| e.code);
        assert_eq!(got, expected, "{command:?}");
    }

    #[test]
    fn topic_rules() {
        let mut s = State::default();
        check(&mut s, create("orders", 8), Ok(()));
        check(&mut s, create("orders", 8), Err(ErrorCode::TopicAlreadyExists));
        check(&mut s, create("", 1), Err(ErrorCode::InvalidTopicName));
        check(&mut s, create(&"x".repeat(250), 1), Err(ErrorCode::InvalidTopicName));
        check(&mut s, create("bad name", 1), Err(ErrorCode::InvalidTopicName));
        check(&mut s, create("..", 1), Err(ErrorCode::InvalidTopicName));
        check(&mut s, create("zero", 0), Err(ErrorCode::InvalidPartitions));
        check(&mut s, create("absurd", 1_000_000), Err(ErrorCode::InvalidPartitions));
        let tiny = TopicConfig { max_message_bytes: 1, ..TopicConfig::default() };
        check(
            &mut s,
            Command::CreateTopic { name: "tiny".into(), partitions: 1, config: tiny, replication_factor: 1 },
            Err(ErrorCode::InvalidConfig),
        );
        check(
            &mut s,
            Command::AlterTopic { name: "orders".into(), partitions: 4, config: TopicConfig::default() },
            Err(ErrorCode::InvalidPartitions),
        );
        check(
            &mut s,
            Command::AlterTopic { name: "orders".into(), partitions: 12, config: TopicConfig::default() },
            Ok(()),
        );
        check(&mut s, Command::DeleteTopic { name: "nope".into() }, Err(ErrorCode::UnknownTopic));
        check(&mut s, create("a", 1), Ok(()));
        check(&mut s, create("b", 1), Ok(()));
        check(&mut s, create("c", 1), Err(ErrorCode::LimitReached));
        check(&mut s, Command::DeleteTopic { name: "orders".into() }, Ok(()));
        check(&mut s, create("orders", 1), Ok(()));
        assert_eq!(s.topic("orders").unwrap().id, 4, "ids are never reused");
    }

    /// Replaying one committed log into fresh state machines gives the same state, whatever
    /// limits the broker runs with now: a restart with lower limits keeps every topic's id.
    #[test]
    fn replay_depends_only_on_the_log() {
        let big = TopicConfig { max_message_bytes: 4 << 20, ..TopicConfig::default() };
        let log = vec![
            create("a", 8),
            Command::CreateTopic { name: "big".into(), partitions: 2, config: big, replication_factor: 1 },
            create("b", 1),
            commit("g1", &[("a", 3, 10), ("b", 0, 20)]),
            commit("g2", &[("a", 0, 30)]),
            Command::DeleteTopic { name: "a".into() },
            Command::AllocateProducerIds { count: 1000, at_least: 0 },
            create("c", 600),
            Command::AllocateProducerIds { count: 10, at_least: 5000 },
        ];
        let mut first = State::default();
        for command in &log {
            first.check_limits(command, &LIMITS).unwrap();
            first.apply(command.clone()).unwrap();
        }
        // The same entries, replayed as a restart with far lower limits would.
        let lower = Limits {
            partitions_per_topic_max: 4,
            topics_max: 1,
            message_bytes_max: 1 << 20,
            schema_versions_per_subject_max: 1,
            schemas_max: 1,
            groups_max: 1,
        };
        let mut replayed = State::default();
        for command in &log {
            replayed.apply(command.clone()).expect("a committed entry applies on replay");
        }
        assert_eq!(replayed, first);
        assert_eq!(replayed.topic("c").unwrap().id, 4);
        assert_eq!(replayed.topic("big").unwrap().id, 2);
        assert_eq!(replayed.next_producer_id, 5010);
        // A deleted topic takes its committed offsets (and g2, which had no others) with it.
        let offsets = &replayed.group_offsets;
        assert_eq!(offsets.groups().collect::<Vec<_>>(), ["g1"]);
        assert_eq!(
            offsets.committed("g1", None).into_iter().map(|(t, p, _)| (t, p)).collect::<Vec<_>>(),
            [("b".to_owned(), 0)]
        );
        // The lower limits hold for what is proposed next.
        let err = replayed.check_limits(&create("d", 1), &lower).unwrap_err();
        assert_eq!(err.code, ErrorCode::LimitReached);
        let err = replayed.check_limits(&commit("g3", &[("b", 0, 1)]), &lower).unwrap_err();
        assert!(err.message.contains("groups.max = 1"), "{}", err.message);
        replayed.check_limits(&commit("g1", &[("b", 0, 1)]), &lower).expect("a group with offsets commits again");
    }

    fn commit(group: &str, offsets: &[(&str, u32, i64)]) -> Command {
        let offsets = offsets
            .iter()
            .map(|&(topic, partition, offset)| crate::offsets::OffsetCommit {
                topic: topic.to_owned(),
                partition,
                committed: crate::offsets::CommittedOffset { offset, metadata: None, commit_time_ms: 1 },
            })
            .collect();
        Command::CommitOffsets { group: group.to_owned(), offsets }
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut s = State::default();
        let Event::ProducerIds { first: a, count } =
            s.apply(Command::AllocateProducerIds { count: 100, at_least: 0 }).unwrap()
        else {
            panic!("a block")
        };
        assert_eq!((a, count), (1000, 100));
        let Event::ProducerIds { first: b, .. } =
            s.apply(Command::AllocateProducerIds { count: 5, at_least: 0 }).unwrap()
        else {
            panic!("a block")
        };
        assert_eq!(b, 1100);
        let Event::ProducerIds { first: c, .. } =
            s.apply(Command::AllocateProducerIds { count: 5, at_least: 7000 }).unwrap()
        else {
            panic!("a block")
        };
        assert_eq!(c, 7000, "ids found in use are skipped");
        assert!(s.apply(Command::AllocateProducerIds { count: 0, at_least: 0 }).is_err());
    }

    fn register(state: &mut State, node_id: u64) -> u64 {
        let command = Command::RegisterBroker {
            node_id,
            quic_addr: format!("127.0.0.1:750{node_id}"),
            kafka_host: "127.0.0.1".into(),
            kafka_port: 9200 + node_id as u16,
        };
        match state.apply(command).unwrap() {
            Event::BrokerRegistered(b) => b.epoch,
            other => panic!("{other:?}"),
        }
    }

    fn leaders(state: &State, topic: &str) -> Vec<Option<u64>> {
        state.topics[topic].assignment.iter().map(|r| r.leader).collect()
    }

    #[test]
    fn a_single_nodes_topics_are_unassigned() {
        let mut s = State::default();
        s.apply(create("t", 3)).unwrap();
        assert!(s.topics["t"].assignment.is_empty());
        assert_eq!(s.topics["t"].leader(2), crate::topic::Leadership::Unassigned);
    }

    #[test]
    fn partitions_spread_over_live_brokers_and_follow_fencing_and_registration() {
        let mut s = State::default();
        let epochs: Vec<u64> = (1..=3).map(|id| register(&mut s, id)).collect();
        assert_eq!(epochs, [1, 2, 3]);
        s.apply(create("t", 6)).unwrap();
        // Topic id 1: placement starts at the second live broker and goes round.
        assert_eq!(leaders(&s, "t"), [Some(2), Some(3), Some(1), Some(2), Some(3), Some(1)]);
        assert!(s.topics["t"].assignment.iter().all(|r| r.replicas.len() == 1 && r.leader_epoch == 0));

        // Fencing names an epoch: a stale one changes nothing.
        assert_eq!(s.apply(Command::FenceBroker { node_id: 2, epoch: 99 }).unwrap(), Event::BrokerFenced(None));
        let Event::BrokerFenced(Some(fenced)) = s.apply(Command::FenceBroker { node_id: 2, epoch: 2 }).unwrap() else {
            panic!("fenced")
        };
        assert!(fenced.fenced);
        // Broker 2 was the only replica of partitions 0 and 3: offline, their ISR remembers it.
        assert_eq!(leaders(&s, "t"), [None, Some(3), Some(1), None, Some(3), Some(1)]);
        assert_eq!(s.topics["t"].leader(0), crate::topic::Leadership::Offline);
        assert_eq!(s.topics["t"].assignment[0].isr, BTreeSet::from([2]));
        assert_eq!(s.topics["t"].assignment[0].leader_epoch, 1);

        // A topic made meanwhile goes to the live brokers only; grown partitions too.
        s.apply(create("u", 4)).unwrap();
        assert!(leaders(&s, "u").iter().all(|l| matches!(l, Some(1) | Some(3))));
        s.apply(Command::AlterTopic { name: "u".into(), partitions: 6, config: TopicConfig::default() }).unwrap();
        assert_eq!(s.topics["u"].assignment.len(), 6);
        assert!(leaders(&s, "u").iter().all(|l| matches!(l, Some(1) | Some(3))));

        // Broker 2 registers again with a new epoch and leads its partitions again; the old
        // epoch can no longer fence it.
        assert_eq!(register(&mut s, 2), 4);
        assert_eq!(leaders(&s, "t"), [Some(2), Some(3), Some(1), Some(2), Some(3), Some(1)]);
        assert_eq!(s.topics["t"].assignment[0].leader_epoch, 2);
        assert_eq!(s.apply(Command::FenceBroker { node_id: 2, epoch: 2 }).unwrap(), Event::BrokerFenced(None));

        // Every broker fenced: a new topic has nowhere to go.
        for (id, epoch) in [(1, 1), (2, 4), (3, 3)] {
            s.apply(Command::FenceBroker { node_id: id, epoch }).unwrap();
        }
        assert_eq!(s.apply(create("v", 1)).unwrap_err().code, ErrorCode::InvalidReplicationFactor);
    }

    #[test]
    fn replicated_partitions_alter_their_isr_by_compare_and_set_and_a_restarted_broker_leaves_every_isr() {
        let mut s = State::default();
        for id in 1..=3 {
            register(&mut s, id);
        }
        let replicated = |name: &str, replication_factor| Command::CreateTopic {
            name: name.into(),
            partitions: 3,
            config: TopicConfig::default(),
            replication_factor,
        };
        assert_eq!(s.apply(replicated("four", 4)).unwrap_err().code, ErrorCode::InvalidReplicationFactor);
        s.apply(replicated("t", 3)).unwrap();
        let t = &s.topics["t"];
        assert_eq!(t.min_insync_replicas(), 2, "the default for replicated topics");
        let replicas: Vec<Vec<u64>> = t.assignment.iter().map(|r| r.replicas.clone()).collect();
        assert_eq!(replicas, [vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]], "distinct brokers, leaders spread");
        assert!(t.assignment.iter().all(|r| r.isr.len() == 3));

        let alter = |isr: &[u64], partition_epoch| Command::AlterPartition {
            topic_id: 1,
            partition: 0,
            leader: 2,
            leader_epoch: 0,
            partition_epoch,
            isr: isr.iter().copied().collect(),
        };
        let Event::PartitionAltered { registration, .. } = s.apply(alter(&[2, 3], 0)).unwrap() else { panic!() };
        assert_eq!((registration.isr, registration.partition_epoch), (BTreeSet::from([2, 3]), 1));
        // Built on the old partition epoch: refused, nothing changes.
        assert_eq!(s.apply(alter(&[2], 0)).unwrap_err().code, ErrorCode::InvalidRequest);
        assert_eq!(s.topics["t"].assignment[0].isr, BTreeSet::from([2, 3]));

        // Broker 2 restarts before its session ran out (its data folder may be empty): its old
        // incarnation is fenced, so it leads nothing and is in no ISR until it catches up.
        register(&mut s, 2);
        let t = &s.topics["t"];
        assert_eq!(leaders(&s, "t"), [Some(3), Some(3), Some(1)]);
        assert!(t.assignment.iter().all(|r| !r.isr.contains(&2)), "{:?}", t.assignment);
        assert_eq!(t.assignment[0].leader_epoch, 1);
    }

    #[test]
    fn a_reassignment_completes_when_the_leader_adds_the_last_target_to_the_isr() {
        let mut s = State::default();
        for id in 1..=4 {
            register(&mut s, id);
        }
        s.apply(Command::CreateTopic {
            name: "t".into(),
            partitions: 2,
            config: TopicConfig::default(),
            replication_factor: 2,
        })
        .unwrap();
        let before = s.topics["t"].assignment[0].clone();
        let target: Vec<u64> = (1..=4).filter(|b| !before.replicas.contains(b)).collect();
        let reassign = |moves: BTreeMap<u32, Option<Vec<u64>>>| Command::ReassignPartitions {
            topic: "t".into(),
            moves,
            throttle_bytes_per_sec: None,
        };
        // All or nothing: a bad partition refuses the whole command.
        let bad = BTreeMap::from([(0, Some(target.clone())), (1, Some(vec![9]))]);
        assert_eq!(s.apply(reassign(bad)).unwrap_err().code, ErrorCode::InvalidReplicaAssignment);
        assert_eq!(s.topics["t"].assignment[0], before);
        assert_eq!(
            s.apply(reassign(BTreeMap::from([(5, Some(target.clone()))]))).unwrap_err().code,
            ErrorCode::UnknownPartition
        );

        s.apply(reassign(BTreeMap::from([(0, Some(target.clone()))]))).unwrap();
        let leader = before.leader.unwrap();
        let alter = |isr: BTreeSet<u64>, partition_epoch| Command::AlterPartition {
            topic_id: 1,
            partition: 0,
            leader,
            leader_epoch: 0,
            partition_epoch,
            isr,
        };
        let mut isr = before.isr.clone();
        isr.insert(target[0]);
        s.apply(alter(isr.clone(), 1)).unwrap();
        assert!(s.topics["t"].assignment[0].reassignment.is_some(), "one target still out of sync");
        isr.insert(target[1]);
        let Event::PartitionAltered { registration, .. } = s.apply(alter(isr, 2)).unwrap() else { panic!() };
        assert_eq!(registration.replicas, target);
        assert_eq!(registration.isr, target.iter().copied().collect::<BTreeSet<_>>());
        assert_eq!((registration.leader, registration.leader_epoch), (Some(target[0]), 1));
        assert_eq!(s.topics["t"].assignment[0], registration);
        // Nothing under way now: a cancel is refused.
        assert_eq!(
            s.apply(reassign(BTreeMap::from([(0, None)]))).unwrap_err().code,
            ErrorCode::NoReassignmentInProgress
        );
    }

    #[test]
    fn preferred_leaders_take_their_partitions_back_once_in_sync() {
        let mut s = State::default();
        let epochs: Vec<u64> = (1..=3).map(|id| register(&mut s, id)).collect();
        s.apply(Command::CreateTopic {
            name: "p".into(),
            partitions: 3,
            config: TopicConfig::default(),
            replication_factor: 3,
        })
        .unwrap();
        let preferred: Vec<Option<u64>> =
            s.topics["p"].assignment.iter().map(|r| r.replicas.first().copied()).collect();
        assert_eq!(leaders(&s, "p"), preferred);
        s.apply(Command::FenceBroker { node_id: 2, epoch: epochs[1] }).unwrap();
        register(&mut s, 2);
        let elect = |topic: Option<&str>| Command::ElectPreferredLeaders { topic: topic.map(str::to_owned) };
        assert_eq!(s.apply(elect(Some("nope"))).unwrap_err().code, ErrorCode::UnknownTopic);
        // Broker 2 is back but out of every ISR: nothing moves to it.
        assert_eq!(s.apply(elect(None)).unwrap(), Event::LeadersElected { moved: vec![] });
        let led_by_2 = preferred.iter().position(|p| *p == Some(2)).unwrap();
        let current = s.topics["p"].assignment[led_by_2].clone();
        assert_ne!(current.leader, Some(2));
        let mut isr = current.isr.clone();
        isr.insert(2);
        s.apply(Command::AlterPartition {
            topic_id: 1,
            partition: led_by_2 as u32,
            leader: current.leader.unwrap(),
            leader_epoch: current.leader_epoch,
            partition_epoch: current.partition_epoch,
            isr,
        })
        .unwrap();
        assert_eq!(s.apply(elect(Some("p"))).unwrap(), Event::LeadersElected { moved: vec![format!("p/{led_by_2}")] });
        assert_eq!(leaders(&s, "p"), preferred);
        assert_eq!(s.topics["p"].assignment[led_by_2].leader_epoch, current.leader_epoch + 1);
    }

    #[test]
    fn a_proposal_repeated_under_its_id_is_applied_once_and_answers_its_first_outcome() {
        let once = |id: &str, command: Command| Command::Once { id: id.into(), command: Box::new(command) };
        let mut s = State::default();
        let first = s.apply(once("n1-1", create("t", 1))).unwrap();
        // Proposed again (its answer was lost): the same outcome, nothing applied twice.
        assert_eq!(s.apply(once("n1-1", create("t", 1))).unwrap(), first);
        let mut prepared = s.clone();
        assert_eq!(prepared.apply_prepared(s.prepare(once("n1-1", create("t", 1)))).unwrap(), first);
        assert_eq!(s.next_topic_id, 1);
        // A refusal repeats as the refusal.
        let refused = s.apply(once("n1-2", create("t", 1))).unwrap_err();
        assert_eq!(refused.code, ErrorCode::TopicAlreadyExists);
        s.apply(Command::DeleteTopic { name: "t".into() }).unwrap();
        assert_eq!(
            s.apply(once("n1-2", create("t", 1))).unwrap_err(),
            refused,
            "not applied now that it would succeed"
        );
        // Other ids apply; only the latest RECENT_PROPOSALS_KEPT are remembered.
        for i in 0..RECENT_PROPOSALS_KEPT {
            s.apply(once(&format!("bulk-{i}"), Command::AllocateProducerIds { count: 1, at_least: 0 })).unwrap();
        }
        assert_eq!(s.recent_proposals.len(), RECENT_PROPOSALS_KEPT);
        assert!(s.proposal_outcome("n1-1").is_none() && s.proposal_outcome("bulk-0").is_some());
    }
}
