//! The broker service: every rule about topics, produce, fetch, offsets, groups and modules
//! lives here, in one module per concern, and every front end (native QUIC, Kafka; the console
//! and CLI through them) calls it.

use std::sync::Arc;

use weir_sdk::{ErrorCode, WireError};

use weir_registry::validate::Validator;

use crate::controller::Controller;
use crate::groups::GroupCoordinator;
use crate::plugins::Plugins;
use weir_meta::deployments::Deployment;
use weir_meta::metadata::{Event, Topic};
use weir_meta::topic::Leadership;
use weir_storage::log::{LogStore, PartitionId, PartitionState};

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub node_id: u64,
    /// Longest a fetch may be held waiting for data, whatever the client asks.
    pub fetch_wait_ms_max: u32,
    pub fetch_bytes_max: u32,
    /// An idempotent producer idle this long loses its sequence state (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
    /// Whether a client's metadata request may create a topic it names (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count (Kafka's `num.partitions`).
    pub default_partitions: u32,
    /// Most bytes one batch's record data may inflate to wherever the broker decompresses it
    /// (produce checks, partitioners, validators, schema checks, transforms, timestamps).
    pub batch_decompressed_bytes_max: usize,
    /// How far ahead of the broker's clock a record's create time may be.
    pub message_timestamp_after_max_ms: i64,
}

#[derive(Clone)]
pub struct Broker {
    config: ServiceConfig,
    controller: Controller,
    log: LogStore,
    groups: GroupCoordinator,
    /// Parsed schemas by id, for topics with schema validation.
    validator: Arc<Validator>,
    plugins: Plugins,
    /// Producer ids of the block this broker took from the controller and has not handed out.
    producer_ids: Arc<tokio::sync::Mutex<std::ops::Range<i64>>>,
    /// The same range, readable without waiting: ids in it are not handed out yet, so no batch
    /// may carry them.
    unissued_producer_ids: Arc<std::sync::Mutex<std::ops::Range<i64>>>,
    /// This broker's partition replication roles and tasks (a cluster's).
    replication: Arc<replica::Replication>,
    /// What produce and fetch carried, per topic, and what they refused, per error code.
    traffic: Arc<Traffic>,
}

/// Producer ids taken from the controller per proposal (as Kafka's AllocateProducerIds).
const PRODUCER_ID_BLOCK: u32 = 1000;

/// The error for a controller event that does not belong to the command proposed: a bug, but
/// one that fails the request rather than the broker.
fn mismatched(command: &str, event: &Event) -> WireError {
    WireError::new(ErrorCode::Internal, format!("the controller answered {command} with {event:?}"))
}

mod fetch;
mod groups;
mod maintenance;
mod modules;
mod produce;
mod replica;
mod topics;
mod traffic;

pub use fetch::{Fetch, FetchFrom, FetchedPartition, ListedOffset, RPC_FETCH, RPC_LIST_OFFSETS};
pub use groups::{group_ticker, CommitError, FieldError};
pub use produce::{Produce, Produced, ProducedBatches, ProducerIdentity, RPC_PRODUCE};
pub use replica::{reconcile as reconcile_replication, run_replication, RPC_REPLICA_FETCH};
pub use topics::forget_deleted_topics;
pub use topics::{ConfigChange, ConfigEntry, NewTopic, PartitionInfo, TopicInfo};
pub use traffic::{TopicCounts, Traffic};

impl Broker {
    /// Opens the partitions of every known topic (recovering torn tails).
    pub fn new(
        config: ServiceConfig,
        controller: Controller,
        log: LogStore,
        groups: GroupCoordinator,
        plugins: Plugins,
    ) -> Result<Self, WireError> {
        let broker = Self {
            config,
            controller,
            log,
            groups,
            validator: Arc::default(),
            plugins,
            producer_ids: Arc::new(tokio::sync::Mutex::new(0..0)),
            unissued_producer_ids: Arc::new(std::sync::Mutex::new(0..0)),
            replication: Arc::default(),
            traffic: Arc::default(),
        };
        // Every partition of every topic: a replica moved away while this broker was down is
        // found here, and replication's reconcile removes it once this broker is registered.
        let topics: Vec<Arc<Topic>> = broker.controller.state().topics.values().cloned().collect();
        for topic in &topics {
            for partition in 0..topic.partitions {
                broker.log.open_partition(PartitionId { topic_id: topic.id, partition })?;
            }
        }
        Ok(broker)
    }

    fn open_partitions(&self, topic: &Topic) -> Result<(), WireError> {
        for partition in 0..topic.partitions {
            // In a cluster a broker holds only the partitions it replicates (replication's
            // reconcile opens them as it takes up its roles).
            let elsewhere =
                topic.assignment.get(partition as usize).is_some_and(|r| !r.replicas.contains(&self.config.node_id));
            if !elsewhere {
                self.log.open_partition(PartitionId { topic_id: topic.id, partition })?;
            }
        }
        Ok(())
    }

    /// The bound on one batch's decompressed record data.
    pub fn batch_decompressed_bytes_max(&self) -> usize {
        self.config.batch_decompressed_bytes_max
    }

    pub fn log(&self) -> &LogStore {
        &self.log
    }

    /// How segment files were read and written around the page cache (for `/metrics`).
    pub fn segment_io(&self) -> weir_storage::log::SegmentIo {
        self.log.segment_io()
    }

    /// Consumer groups and committed offsets, shared by every front end.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// What produce and fetch carried, per topic (of the topics that exist), and what they
    /// refused.
    pub fn traffic(&self) -> &Traffic {
        let state = self.controller.state();
        self.traffic.retain(|name| state.topics.contains_key(name));
        &self.traffic
    }

    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// This broker's node id.
    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    pub fn deployments(&self) -> Vec<Deployment> {
        self.controller.state().modules.values().cloned().collect()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.controller.state().topics.values().cloned().collect()
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, WireError> {
        self.controller.state().topic(name).cloned()
    }

    fn partition(&self, topic: &Topic, partition: u32) -> Result<Arc<PartitionState>, WireError> {
        if partition >= topic.partitions {
            return Err(WireError::new(
                ErrorCode::UnknownPartition,
                format!(
                    "partition {partition} does not exist: topic {:?} has partitions 0 to {}",
                    topic.name,
                    topic.partitions - 1
                ),
            ));
        }
        self.check_leader(topic, partition)?;
        let id = PartitionId { topic_id: topic.id, partition };
        // In a cluster, a partition is written and read once this broker took up its
        // leadership (stamps its epoch, tracks its followers): until then it answers as a
        // partition whose leader is not ready.
        if !topic.assignment.is_empty() && !self.replication.leads(id) {
            return Err(WireError::new(
                ErrorCode::LeaderNotAvailable,
                format!(
                    "partition {partition} of topic {:?}: broker {} is taking up its leadership",
                    topic.name, self.config.node_id
                ),
            ));
        }
        // A topic created through another broker is opened here on first use.
        match self.log.partition(id) {
            Some(state) => Ok(state),
            None => self.log.open_partition(id),
        }
    }

    /// Whether this broker holds a replica of `partition` in a cluster.
    fn holds_replica(&self, topic: &Topic, partition: u32) -> bool {
        topic.assignment.get(partition as usize).is_some_and(|r| r.replicas.contains(&self.config.node_id))
    }

    /// The partition to read: this broker's replica when `from_replica` and it holds one,
    /// else the partition as [`Broker::partition`] gives it (on its leader only).
    fn readable(&self, topic: &Topic, partition: u32, from_replica: bool) -> Result<Arc<PartitionState>, WireError> {
        if from_replica && self.holds_replica(topic, partition) {
            let id = PartitionId { topic_id: topic.id, partition };
            return self.log.partition(id).map_or_else(|| self.log.open_partition(id), Ok);
        }
        self.partition(topic, partition)
    }

    /// The broker leading `partition` (this one on a single node).
    pub fn leader_of(&self, topic: &Topic, partition: u32) -> Option<u64> {
        match topic.leader(partition) {
            Leadership::Unassigned => Some(self.config.node_id),
            Leadership::Led(leader) => Some(leader),
            Leadership::Offline => None,
        }
    }

    /// Reads and writes of a partition go to its leader: another broker answers
    /// `NotLeaderOrFollower` naming it, or `LeaderNotAvailable` while it has none.
    fn check_leader(&self, topic: &Topic, partition: u32) -> Result<(), WireError> {
        match self.leader_of(topic, partition) {
            Some(leader) if leader == self.config.node_id => Ok(()),
            Some(leader) => {
                let state = self.controller.state();
                let at = state.brokers.get(&leader).map_or_else(String::new, |b| {
                    format!(" (QUIC {}, Kafka {}:{})", b.quic_addr, b.kafka_host, b.kafka_port)
                });
                Err(WireError::new(
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "partition {partition} of topic {:?} is led by broker {leader}{at}, not broker {}",
                        topic.name, self.config.node_id
                    ),
                ))
            }
            None => Err(WireError::new(
                ErrorCode::LeaderNotAvailable,
                format!("partition {partition} of topic {:?} has no leader: its replicas are fenced", topic.name),
            )),
        }
    }
}
