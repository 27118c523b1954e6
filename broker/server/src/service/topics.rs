//! Topics: create, describe, alter and delete, with everything stored about a deleted topic.

use std::collections::BTreeMap;

use weir_sdk::wire::TopicConfig;
use weir_sdk::{ErrorCode, WireError};

use weir_meta::metadata::{Command, Event, Topic};
use weir_storage::log::{PartitionId, ProducerFilter};

use super::{mismatched, Broker};

impl Broker {
    pub async fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<TopicInfo, WireError> {
        self.create_topic_replicated(name, partitions, 1, config).await
    }

    async fn create_topic_replicated(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    ) -> Result<TopicInfo, WireError> {
        let command = Command::CreateTopic { name: name.to_owned(), partitions, config, replication_factor };
        let event = self.controller.propose(command).await?;
        let Event::TopicCreated(topic) = event else { return Err(mismatched("CreateTopic", &event)) };
        self.open_partitions(&topic)?;
        tracing::info!(topic = %topic.name, partitions = topic.partitions, "topic created");
        self.describe(&topic)
    }

    /// Deletes a topic with everything stored about it: its partitions' batches, the
    /// producer states of its partitions, consumer groups' committed offsets for it and
    /// transforms' progress through it, so a topic created again under the name starts clean.
    pub async fn delete_topic(&self, name: &str) -> Result<(), WireError> {
        let event = self.controller.propose(Command::DeleteTopic { name: name.to_owned() }).await?;
        let Event::TopicDeleted(topic) = event else { return Err(mismatched("DeleteTopic", &event)) };
        self.forget_topic(&topic).await?;
        tracing::info!(topic = %name, id = topic.id, "topic deleted");
        Ok(())
    }

    /// Removes what this broker stores about a deleted topic: its partitions' batches and
    /// producer states, and transforms' progress through it (unless a topic of the same name
    /// exists again by now; committed offsets go with the topic in the controller's state). Every broker does this when it applies the
    /// deletion (`forget_deleted_topics`); the broker that took it does it before answering.
    /// Doing it twice is harmless.
    pub async fn forget_topic(&self, topic: &Topic) -> Result<(), WireError> {
        self.log.forget_producers(ProducerFilter::Topic(topic.id)).await?;
        let (log, plugins) = (self.log.clone(), self.plugins.clone());
        let deleted = topic.clone();
        let recreated = self.controller.state().topics.contains_key(&topic.name);
        if !recreated {
            self.traffic.forget(&topic.name);
        }
        tokio::task::spawn_blocking(move || {
            for partition in 0..deleted.partitions {
                log.delete_partition(PartitionId { topic_id: deleted.id, partition })?;
            }
            // Progress is kept by name: a topic made again meanwhile keeps its own.
            if recreated {
                return Ok(());
            }
            plugins.clear_topic_progress(&deleted.name)
        })
        .await
        .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))??;
        Ok(())
    }

    /// The brokers Kafka clients are told about: the live registered ones in a cluster, in
    /// node id order; empty on a single node (the answering broker is the only one).
    pub fn live_brokers(&self) -> Vec<weir_meta::metadata::BrokerRegistration> {
        self.controller.state().brokers.values().filter(|b| !b.fenced).cloned().collect()
    }

    /// The broker that coordinates `group`: in a cluster, the registered broker a hash of the
    /// group id picks, or the next live one after it while it is fenced (every broker answers
    /// the same, and a broker's failure moves only its own groups); `None` on a single node.
    pub fn group_coordinator(&self, group: &str) -> Option<weir_meta::metadata::BrokerRegistration> {
        let state = self.controller.state();
        let brokers: Vec<&weir_meta::metadata::BrokerRegistration> = state.brokers.values().collect();
        if brokers.is_empty() {
            return None;
        }
        let hash = weir_sdk::partitioner::murmur2(group.as_bytes()) & 0x7fff_ffff;
        let first = usize::try_from(hash).unwrap_or(0) % brokers.len();
        (0..brokers.len()).map(|i| brokers[(first + i) % brokers.len()]).find(|b| !b.fenced).cloned()
    }

    /// The controller as this broker sees it.
    pub fn cluster_status(&self) -> weir_sdk::wire::ClusterStatusResponse {
        let status = self.controller.status();
        let (state_brokers, offline, offline_partitions, under, under_count, reassigning) = {
            let state = self.controller.state();
            let brokers = state
                .brokers
                .values()
                .map(|b| weir_sdk::wire::ClusterBroker {
                    node_id: b.node_id,
                    epoch: b.epoch,
                    fenced: b.fenced,
                    quic_addr: b.quic_addr.clone(),
                    kafka_addr: format!("{}:{}", b.kafka_host, b.kafka_port),
                })
                .collect();
            let (mut offline, mut under) = (Vec::new(), Vec::new());
            let (mut count, mut under_count, mut reassigning) = (0u64, 0u64, 0u64);
            let listed = weir_sdk::wire::OFFLINE_PARTITIONS_LISTED;
            for topic in state.topics.values() {
                for (partition, registration) in topic.assignment.iter().enumerate() {
                    if registration.leader.is_none() {
                        count += 1;
                        if offline.len() < listed {
                            offline.push(format!("{}/{partition}", topic.name));
                        }
                    }
                    if registration.isr.len() < registration.replicas.len() {
                        under_count += 1;
                        if under.len() < listed {
                            under.push(format!("{}/{partition}", topic.name));
                        }
                    }
                    reassigning += u64::from(registration.reassignment.is_some());
                }
            }
            (brokers, offline, count, under, under_count, reassigning)
        };
        weir_sdk::wire::ClusterStatusResponse {
            node_id: status.node_id,
            controller_leader: status.leader,
            controller_term: status.term,
            voters: status
                .voters
                .into_iter()
                .map(|(node_id, cluster_addr)| weir_sdk::wire::ClusterVoter { node_id, cluster_addr })
                .collect(),
            learners: status
                .learners
                .into_iter()
                .map(|(node_id, cluster_addr)| weir_sdk::wire::ClusterVoter { node_id, cluster_addr })
                .collect(),
            last_applied: status.last_applied,
            brokers: state_brokers,
            offline,
            offline_partitions,
            under_replicated: under,
            under_replicated_partitions: under_count,
            reassigning_partitions: reassigning,
        }
    }

    /// Moves partitions of `topic` to new replicas (`None`: cancels the move under way), all
    /// or nothing; the new replicas copy the log and the old ones go once the new ones are in
    /// sync (see `weir_meta::replication::start_reassignment`). Answers the topic as it is
    /// right after.
    pub async fn reassign_partitions(
        &self,
        topic: &str,
        moves: BTreeMap<u32, Option<Vec<u64>>>,
        throttle_bytes_per_sec: Option<u64>,
    ) -> Result<TopicInfo, WireError> {
        if moves.is_empty() {
            return Err(WireError::new(ErrorCode::InvalidRequest, "a reassignment names no partition"));
        }
        if throttle_bytes_per_sec == Some(0) {
            return Err(WireError::new(
                ErrorCode::InvalidConfig,
                "throttle_bytes_per_sec = 0: a throttle is at least 1 byte per second (leave it out for none)",
            ));
        }
        let command = Command::ReassignPartitions { topic: topic.to_owned(), moves, throttle_bytes_per_sec };
        let event = self.controller.propose(command).await?;
        let Event::PartitionsReassigned { .. } = event else { return Err(mismatched("ReassignPartitions", &event)) };
        self.describe_topic(topic)
    }

    /// The reassignments under way: (topic, partition, its replicas, the move), in topic and
    /// partition order.
    pub fn reassignments(&self) -> Vec<(String, u32, Vec<u64>, weir_meta::replication::Reassignment)> {
        let state = self.controller.state();
        let mut out = Vec::new();
        for topic in state.topics.values() {
            for (partition, registration) in topic.assignment.iter().enumerate() {
                if let Some(moving) = &registration.reassignment {
                    let partition = u32::try_from(partition).unwrap_or(u32::MAX);
                    out.push((topic.name.clone(), partition, registration.replicas.clone(), moving.clone()));
                }
            }
        }
        out
    }

    /// Gives partitions (of `topic`, or all) whose preferred replica is live and in sync
    /// their leadership back; answers the partitions moved, as `topic/partition`.
    pub async fn elect_preferred_leaders(&self, topic: Option<String>) -> Result<Vec<String>, WireError> {
        let event = self.controller.propose(Command::ElectPreferredLeaders { topic }).await?;
        let Event::LeadersElected { moved } = event else { return Err(mismatched("ElectPreferredLeaders", &event)) };
        Ok(moved)
    }

    pub fn list_topics(&self) -> Vec<String> {
        self.controller.state().topics.keys().cloned().collect()
    }

    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo, WireError> {
        self.describe(&*self.topic(name)?)
    }

    pub(super) fn describe(&self, topic: &Topic) -> Result<TopicInfo, WireError> {
        // Offsets are this broker's replica's: zeros where it holds none.
        let partitions = (0..topic.partitions)
            .map(|p| {
                let leader = self.leader_of(topic, p);
                let replica_here =
                    topic.assignment.get(p as usize).is_some_and(|r| r.replicas.contains(&self.config.node_id));
                let local = match leader == Some(self.config.node_id) {
                    true => match self.partition(topic, p) {
                        Err(e) if e.code == ErrorCode::LeaderNotAvailable => None,
                        other => Some(other?),
                    },
                    false if replica_here => self.log.partition(PartitionId { topic_id: topic.id, partition: p }),
                    false => None,
                };
                let (leader_epoch, replicas, isr) = match topic.assignment.get(p as usize) {
                    Some(r) => (r.leader_epoch, r.replicas.clone(), r.isr.iter().copied().collect()),
                    None => (0, vec![self.config.node_id], vec![self.config.node_id]),
                };
                let moving = topic.assignment.get(p as usize).and_then(|r| r.reassignment.clone());
                Ok(PartitionInfo {
                    partition: p,
                    leader,
                    leader_epoch,
                    replicas,
                    isr,
                    log_start_offset: local.as_ref().map_or(0, |s| s.log_start_offset()),
                    high_watermark: local.as_ref().map_or(0, |s| s.high_watermark()),
                    size_bytes: local.as_ref().map_or(0, |s| s.size_bytes()),
                    log_end_offset: local.as_ref().map_or(0, |s| s.end_offset()),
                    adding_replicas: moving.as_ref().map(|m| m.adding.clone()).unwrap_or_default(),
                    removing_replicas: moving.map(|m| m.removing).unwrap_or_default(),
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(TopicInfo { name: topic.name.clone(), id: topic.id, partitions, config: topic.config.clone() })
    }

    /// Changes a topic's partition count (it can only grow) and the config keys given.
    pub async fn alter_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        config: &BTreeMap<String, String>,
    ) -> Result<TopicInfo, WireError> {
        let command = self.alter_command(name, partitions, config)?;
        let event = self.controller.propose(command).await?;
        let Event::TopicAltered { after, .. } = event else { return Err(mismatched("AlterTopic", &event)) };
        self.open_partitions(&after)?;
        self.describe(&after)
    }

    fn alter_command(
        &self,
        name: &str,
        partitions: Option<u32>,
        config: &BTreeMap<String, String>,
    ) -> Result<Command, WireError> {
        let topic = self.topic(name)?;
        let config = topic.config.clone().with_entries(config.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let partitions = partitions.unwrap_or(topic.partitions);
        Ok(Command::AlterTopic { name: name.to_owned(), partitions, config })
    }

    /// Grows a topic to `count` partitions (Kafka's CreatePartitions); with `validate_only`,
    /// only checks.
    pub async fn add_partitions(&self, name: &str, count: u32, validate_only: bool) -> Result<(), WireError> {
        if validate_only {
            return self.controller.check(&self.alter_command(name, Some(count), &BTreeMap::new())?);
        }
        self.alter_topic(name, Some(count), &BTreeMap::new()).await.map(|_| ())
    }
}

/// A topic as the service describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    /// Never reused: a topic created again under the name has another id.
    pub id: u64,
    pub partitions: Vec<PartitionInfo>,
    pub config: TopicConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// The broker that leads the partition; `None` while none does.
    pub leader: Option<u64>,
    pub leader_epoch: i32,
    /// Its replicas (the preferred leader first) and in-sync replicas.
    pub replicas: Vec<u64>,
    pub isr: Vec<u64>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    /// This broker's replica's log end offset (0 when it holds none).
    pub log_end_offset: i64,
    /// Replicas being added and removed by a reassignment under way.
    pub adding_replicas: Vec<u64>,
    pub removing_replicas: Vec<u64>,
}

/// A config entry as a topic has it: its value, and whether that is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub is_default: bool,
}

/// One change of an incremental config alteration (Kafka's IncrementalAlterConfigs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String),
    /// Back to the default.
    Delete,
    /// List operations; every topic config here is a scalar, so these are refused.
    Append(String),
    Subtract(String),
}

/// A topic to create as an admin client asks for it: the partition count and replication
/// factor may be left to the broker.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: Option<u32>,
    pub replication_factor: Option<u32>,
    pub config: Vec<(String, String)>,
    pub validate_only: bool,
}

impl Broker {
    /// Creates a topic as an admin client asks (Kafka's CreateTopics): a partition count left
    /// open is the broker's `default_partitions`, a replication factor left open is 1; one
    /// above the live brokers is refused; with `validate_only` nothing is created. Returns the
    /// partition count.
    pub async fn create_topic_as_asked(&self, new: NewTopic) -> Result<u32, WireError> {
        let config = TopicConfig::default().with_entries(new.config.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let validate_only = new.validate_only;
        if validate_only {
            let (partitions, replication_factor) = self.check_new_topic(&new)?;
            let command = Command::CreateTopic { name: new.name, partitions, config, replication_factor };
            self.controller.check(&command)?;
            return Ok(partitions);
        }
        let created = self.create_topic_with(new, config).await?;
        Ok(u32::try_from(created.partitions.len()).unwrap_or(u32::MAX))
    }

    /// Creates `new` with `config` (its own config entries are not read).
    pub async fn create_topic_with(&self, new: NewTopic, config: TopicConfig) -> Result<TopicInfo, WireError> {
        let (partitions, replication_factor) = self.check_new_topic(&new)?;
        self.create_topic_replicated(&new.name, partitions, replication_factor, config).await
    }

    /// The partition count and replication factor of a topic to create, defaults filled in.
    fn check_new_topic(&self, new: &NewTopic) -> Result<(u32, u32), WireError> {
        let live = self.live_brokers().len();
        let brokers = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
        // Kafka's own messages, which clients and their tests match on.
        match new.replication_factor {
            Some(0) => {
                return Err(WireError::new(
                    ErrorCode::InvalidReplicationFactor,
                    "Replication factor must be larger than 0.",
                ))
            }
            Some(factor) if factor > brokers => {
                return Err(WireError::new(
                    ErrorCode::InvalidReplicationFactor,
                    format!("Replication factor: {factor} larger than available brokers: {brokers}."),
                ))
            }
            _ => {}
        }
        Ok((new.partitions.unwrap_or(self.config.default_partitions), new.replication_factor.unwrap_or(1)))
    }

    /// A topic for a client's metadata request: created first, with the broker's default
    /// partition count, when it does not exist, the client allows it and the broker's
    /// `auto_create_topics` is on (Kafka's `auto.create.topics.enable`).
    pub async fn topic_for_metadata(&self, name: &str, allow_auto_create: bool) -> Result<TopicInfo, WireError> {
        match self.describe_topic(name) {
            Err(e) if e.code == ErrorCode::UnknownTopic && allow_auto_create && self.config.auto_create_topics => {
                match self.create_topic(name, self.config.default_partitions, TopicConfig::default()).await {
                    Err(e) if e.code == ErrorCode::TopicAlreadyExists => self.describe_topic(name),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Every config of a topic with its value, as Kafka's DescribeConfigs lists them.
    pub fn topic_configs(&self, name: &str) -> Result<Vec<ConfigEntry>, WireError> {
        let topic = self.topic(name)?;
        let defaults = default_entries();
        let entries: Vec<ConfigEntry> = topic
            .config
            .entries()
            .into_iter()
            .map(|(name, value)| {
                let is_default = defaults.get(&name).is_none_or(|d| *d == value);
                ConfigEntry { name, value, is_default }
            })
            .collect();
        Ok(entries)
    }

    /// The broker's own configs, as Kafka's DescribeConfigs lists them.
    pub fn broker_configs(&self) -> Vec<ConfigEntry> {
        let entry = |name: &str, value: String| ConfigEntry { name: name.into(), value, is_default: false };
        vec![
            entry("broker.id", self.config.node_id.to_string()),
            entry("auto.create.topics.enable", self.config.auto_create_topics.to_string()),
            entry("num.partitions", self.config.default_partitions.to_string()),
        ]
    }

    /// Replaces a topic's whole config (Kafka's AlterConfigs): keys not given return to their
    /// defaults. With `validate_only`, only checks.
    pub async fn replace_topic_config(
        &self,
        name: &str,
        given: Vec<(String, String)>,
        validate_only: bool,
    ) -> Result<(), WireError> {
        let mut entries = default_entries();
        // The default flushes on every append; an interval is set only when asked for.
        entries.remove("flush.interval.ms");
        entries.extend(given);
        self.change_config(name, entries, validate_only).await
    }

    /// Changes some configs of a topic (Kafka's IncrementalAlterConfigs); the others keep their
    /// values. With `validate_only`, only checks.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    ) -> Result<(), WireError> {
        let defaults = default_entries();
        let mut entries = std::collections::BTreeMap::new();
        for (key, change) in changes {
            match change {
                ConfigChange::Set(value) => {
                    entries.insert(key, value);
                }
                ConfigChange::Delete => {
                    if let Some(default) = defaults.get(&key) {
                        entries.insert(key, default.clone());
                    }
                }
                ConfigChange::Append(_) | ConfigChange::Subtract(_) => {
                    return Err(WireError::new(
                        ErrorCode::InvalidConfig,
                        format!(
                            "config {key}: APPEND and SUBTRACT apply to list configs; topic configs here are scalar"
                        ),
                    ))
                }
            }
        }
        self.change_config(name, entries, validate_only).await
    }

    async fn change_config(
        &self,
        name: &str,
        entries: std::collections::BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), WireError> {
        if validate_only {
            return self.controller.check(&self.alter_command(name, None, &entries)?);
        }
        self.alter_topic(name, None, &entries).await.map(|_| ())
    }
}

/// Every topic config key with its default value.
fn default_entries() -> BTreeMap<String, String> {
    TopicConfig::default().entries().into_iter().collect()
}

/// On every broker: removes what it stores about each topic the controller deletes, whichever
/// broker took the deletion, until `stop`.
pub async fn forget_deleted_topics(broker: Broker, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut events = broker.controller.subscribe();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.changed() => return,
        };
        match event {
            Ok(Event::TopicDeleted(topic)) => {
                if let Err(e) = broker.forget_topic(&topic).await {
                    tracing::warn!(topic = %topic.name, id = topic.id, error = %e, "removing a deleted topic's data failed");
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "metadata events went by unseen; a deleted topic's data may stay on disk");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
