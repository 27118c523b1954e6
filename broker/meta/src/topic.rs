//! A topic as the metadata holds it, and the rules for names (topics', and modules', which
//! name their dead-letter topics). Shared by the metadata and the deployments, below both.

use serde::{Deserialize, Serialize};
use weir_sdk::wire::TopicConfig;
use weir_sdk::{ErrorCode, WireError};

use crate::replication::PartitionRegistration;

/// Longest topic name, as in Kafka.
pub const TOPIC_NAME_BYTES_LIMIT: usize = 249;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    /// Never reused, so a topic created again under an old name starts with an empty log.
    pub id: u64,
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
    /// Each partition's replicas, leader and epochs, in partition order, in a cluster (where
    /// brokers register). Empty on a single node: the one broker leads every partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignment: Vec<PartitionRegistration>,
    /// Replicas of each partition (1 on a single node).
    #[serde(default = "one")]
    pub replication_factor: u32,
}

fn one() -> u32 {
    1
}

/// Who leads a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// No assignment: a single node's topic, led by whichever broker holds it.
    Unassigned,
    Led(u64),
    /// Assigned, and no replica that may lead is live.
    Offline,
}

impl Topic {
    /// A topic as created: no assignment yet.
    pub fn new(id: u64, name: String, partitions: u32, config: TopicConfig, replication_factor: u32) -> Self {
        Self { id, name, partitions, config, assignment: Vec::new(), replication_factor }
    }

    /// The fewest in-sync replicas an `acks=all` write needs: the topic's
    /// `min.insync.replicas` if set, else 2 (1 for a topic of one replica).
    pub fn min_insync_replicas(&self) -> usize {
        self.config
            .kafka
            .get("min.insync.replicas")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| (self.replication_factor as usize).min(2))
    }

    /// Whether a replica out of the ISR may lead when no in-sync one is live
    /// (`unclean.leader.election.enable`, off by default): acknowledged records may be lost.
    pub fn unclean_election(&self) -> bool {
        self.config.kafka.get("unclean.leader.election.enable").is_some_and(|v| v == "true")
    }

    pub fn leader(&self, partition: u32) -> Leadership {
        match self.assignment.get(partition as usize) {
            None => Leadership::Unassigned,
            Some(registration) => registration.leader.map_or(Leadership::Offline, Leadership::Led),
        }
    }
}

pub fn unknown_topic(name: &str) -> WireError {
    WireError::new(ErrorCode::UnknownTopic, format!("unknown topic {name:?}"))
}

pub fn validate_topic_name(name: &str) -> Result<(), WireError> {
    check_name("topic name", name).map_err(|message| WireError::new(ErrorCode::InvalidTopicName, message))
}

/// Kafka's rules for a topic name, which module names follow too (a module names its default
/// dead-letter topic); the message begins with `what`.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    // A name is shown back whole only when it is short: a client's 1 MiB name is not echoed.
    let shown = if name.len() > 64 {
        format!("{:?}...", name.chars().take(32).collect::<String>())
    } else {
        format!("{name:?}")
    };
    let invalid = |why: String| Err(format!("{what} {shown} {why}"));
    if name.is_empty() {
        return invalid("is empty".into());
    }
    if name.len() > TOPIC_NAME_BYTES_LIMIT {
        return invalid(format!("is {} bytes long; the limit is {TOPIC_NAME_BYTES_LIMIT}", name.len()));
    }
    if name == "." || name == ".." {
        return invalid("is reserved".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return invalid(format!("holds {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}
