//! Consumer groups through the service: offset commits checked against the topics that exist
//! (one rule for every front end), and the ticker that expires members and finishes
//! rebalances.

use std::time::Duration;

use weir_sdk::{ErrorCode, WireError};

use crate::groups::{CommittedOffset, GroupError};

use super::Broker;

/// Why an offset commit stored nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// It named partitions that do not exist (listed); the first one's error says which.
    UnknownPartitions { unknown: Vec<(String, i32)>, first: WireError },
    /// The group refused it (member, generation, rebalance, storage).
    Group(GroupError),
}

impl Broker {
    /// Commits a group's offsets. A commit naming a partition that does not exist stores
    /// nothing (a consumer must not believe it committed a position it cannot read from), and
    /// the group's rules (member, generation) apply to the rest.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<(), CommitError> {
        let mut unknown = Vec::new();
        let mut first = None;
        for (topic, partition, _) in &offsets {
            let missing = match (self.topic(topic), u32::try_from(*partition)) {
                (Err(e), _) => Some(e),
                (Ok(t), Ok(p)) if p < t.partitions => None,
                (Ok(t), _) => Some(WireError::new(
                    ErrorCode::UnknownPartition,
                    format!("partition {partition} of {topic:?} does not exist: it has 0 to {}", t.partitions - 1),
                )),
            };
            if let Some(e) = missing {
                first.get_or_insert(e);
                unknown.push((topic.clone(), *partition));
            }
        }
        if let Some(first) = first {
            return Err(CommitError::UnknownPartitions { unknown, first });
        }
        let offsets = offsets
            .into_iter()
            .map(|(topic, partition, committed)| (topic, partition.unsigned_abs(), committed))
            .collect();
        self.groups.commit(group_id, generation_id, member_id, offsets).await.map_err(CommitError::Group)
    }
}

/// Expires group members whose session ran out and completes overdue rebalances, every 100
/// ms until `stop` changes.
pub async fn group_ticker(broker: Broker, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => broker.groups.tick(std::time::Instant::now()),
            _ = stop.changed() => return,
        }
    }
}
