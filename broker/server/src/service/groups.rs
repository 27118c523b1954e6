//! Consumer groups through the service: offset commits checked against the topics that exist
//! (one rule for every front end), the groups' lag, offset resets (only on a group without
//! members) and deletion for operators (the CLI over QUIC and the console's API call the
//! same functions), and the ticker that expires members and finishes rebalances.

use std::time::Duration;

use weir_sdk::wire::{
    GroupDescribed, GroupListing, GroupMemberView, GroupOffset, GroupTopicPartition, OffsetMove, ResetOffsetsRequest,
    ResetOffsetsResponse, ResetTo,
};
use weir_sdk::{ErrorCode, OffsetSpec, WireError};

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

/// A refused request and the field of it that was wrong, for front ends that name fields
/// (the console's API); the others answer the error alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub error: WireError,
}

impl FieldError {
    fn new(field: &'static str, error: WireError) -> Self {
        Self { field, error }
    }
}

impl From<FieldError> for WireError {
    fn from(e: FieldError) -> Self {
        e.error
    }
}

/// Partitions one offset reset may name.
pub const RESET_PARTITIONS_MAX: usize = 10_000;

fn state_name(state: crate::groups::GroupState) -> String {
    format!("{state:?}")
}

impl Broker {
    /// A group's committed offsets, each with its partition's high watermark and the lag.
    pub fn group_offsets(&self, group_id: &str) -> Vec<GroupOffset> {
        self.groups
            .committed(group_id, None)
            .into_iter()
            .filter_map(|(topic, partition, committed)| {
                let committed = committed?.offset;
                let high_watermark = self.offsets(&topic, partition).ok().map(|(_, hw)| hw);
                let lag = high_watermark.map(|hw| (hw - committed).max(0));
                Some(GroupOffset { topic, partition, committed, high_watermark, lag })
            })
            .collect()
    }

    /// Every group with its state, members and total lag (Kafka's ListGroups, with lag).
    pub fn list_groups(&self) -> Vec<GroupListing> {
        self.groups
            .list()
            .into_iter()
            .map(|(group_id, protocol_type, state)| {
                let members = self.groups.describe(&group_id).map_or(0, |d| d.members.len());
                let total_lag = self.group_offsets(&group_id).iter().filter_map(|o| o.lag).sum();
                GroupListing { group_id, state: state_name(state), protocol_type, members, total_lag }
            })
            .collect()
    }

    /// A group's state, members with their assignments, and lag per partition.
    pub fn describe_group(&self, group_id: &str) -> Result<GroupDescribed, WireError> {
        let d = self
            .groups
            .describe(group_id)
            .ok_or_else(|| WireError::new(ErrorCode::GroupNotFound, format!("no consumer group {group_id:?}")))?;
        let members = d
            .members
            .into_iter()
            .map(|m| GroupMemberView {
                // Another protocol's assignment is not Kafka's consumer protocol: none shown.
                assignment: weir_sdk::consumer_protocol::decode_assignment(&m.assignment)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(topic, partition)| GroupTopicPartition { topic, partition })
                    .collect(),
                member_id: m.member_id,
                client_id: m.client_id,
                client_host: m.client_host,
            })
            .collect();
        let offsets = self.group_offsets(group_id);
        Ok(GroupDescribed {
            group_id: d.group_id,
            state: state_name(d.state),
            protocol_type: d.protocol_type,
            protocol: d.protocol_name,
            generation_id: d.generation_id,
            members,
            total_lag: offsets.iter().filter_map(|o| o.lag).sum(),
            offsets,
        })
    }

    /// Deletes a group and its committed offsets; refused while it has members.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), WireError> {
        self.groups.delete(group_id).await.map_err(WireError::from)
    }

    /// Moves a group's committed offsets of one topic (kafka-consumer-groups --reset-offsets):
    /// to the log start, the high watermark, the first record at or after a time, or given
    /// offsets (each within the partition's records). Only while the group has no members, as
    /// Kafka requires: a member would overwrite the reset with its next commit. With
    /// `dry_run` nothing changes; the answer says what would.
    pub async fn reset_group_offsets(&self, req: ResetOffsetsRequest) -> Result<ResetOffsetsResponse, FieldError> {
        let group_id = req.group_id.as_str();
        if group_id.is_empty() {
            return Err(FieldError::new(
                "group_id",
                WireError::new(ErrorCode::InvalidGroupId, "a group id is not empty"),
            ));
        }
        let refuse_members = |members: usize| {
            FieldError::new(
                "group_id",
                WireError::new(
                    ErrorCode::NonEmptyGroup,
                    format!(
                        "group {group_id:?} has {members} active members; offsets can be reset only while it has none (stop its consumers first)"
                    ),
                ),
            )
        };
        if let Some(d) = self.groups.describe(group_id) {
            if !d.members.is_empty() {
                return Err(refuse_members(d.members.len()));
            }
        }
        let info = self.describe_topic(&req.topic).map_err(|e| FieldError::new("topic", e))?;
        let partitions: Vec<u32> = match (&req.partitions, &req.to) {
            (Some(ps), _) => ps.clone(),
            (None, ResetTo::Offsets(offsets)) => offsets.keys().copied().collect(),
            (None, _) => info.partitions.iter().map(|p| p.partition).collect(),
        };
        let invalid =
            |field, message: String| FieldError::new(field, WireError::new(ErrorCode::InvalidRequest, message));
        if partitions.is_empty() {
            return Err(invalid("partitions", "no partitions to reset".into()));
        }
        if partitions.len() > RESET_PARTITIONS_MAX {
            return Err(invalid("partitions", format!("a reset names at most {RESET_PARTITIONS_MAX} partitions")));
        }
        let named: Vec<(String, u32)> = partitions.iter().map(|p| (req.topic.clone(), *p)).collect();
        let before: std::collections::BTreeMap<u32, i64> = self
            .groups
            .committed(group_id, Some(&named))
            .into_iter()
            .filter_map(|(_, p, c)| Some((p, c?.offset)))
            .collect();
        let mut moves = Vec::with_capacity(partitions.len());
        for p in &partitions {
            let Some(part) = info.partitions.iter().find(|i| i.partition == *p) else {
                return Err(FieldError::new(
                    "partitions",
                    WireError::new(ErrorCode::UnknownPartition, format!("topic {:?} has no partition {p}", req.topic)),
                ));
            };
            let spec = match &req.to {
                ResetTo::Earliest => OffsetSpec::Earliest,
                ResetTo::Latest => OffsetSpec::Latest,
                ResetTo::Timestamp(t) => OffsetSpec::Timestamp(*t),
                ResetTo::Offsets(offsets) => {
                    let o = *offsets
                        .get(p)
                        .ok_or_else(|| invalid("offsets", format!("no offset given for partition {p}")))?;
                    if o < part.log_start_offset || o > part.high_watermark {
                        return Err(FieldError::new(
                            "offsets",
                            WireError::new(
                                ErrorCode::OffsetOutOfRange,
                                format!(
                                    "offset {o} for partition {p} is outside its records, {} to {}",
                                    part.log_start_offset, part.high_watermark
                                ),
                            ),
                        ));
                    }
                    moves.push(OffsetMove {
                        topic: req.topic.clone(),
                        partition: *p,
                        from: before.get(p).copied(),
                        to: o,
                    });
                    continue;
                }
            };
            let listed = self.list_offsets(&req.topic, &[(*p, spec)]).map_err(|e| FieldError::new("topic", e))?;
            let to = match listed.into_iter().next().map(|l| l.found) {
                Some(Ok((offset, _))) if offset >= 0 => offset,
                // No record that late: the end.
                Some(Ok(_)) | None => part.high_watermark,
                Some(Err(e)) => return Err(FieldError::new("partitions", e)),
            };
            moves.push(OffsetMove { topic: req.topic.clone(), partition: *p, from: before.get(p).copied(), to });
        }
        if !req.dry_run {
            let now = weir_sdk::now_ms();
            let commits = moves
                .iter()
                .map(|m| {
                    (
                        m.topic.clone(),
                        m.partition,
                        CommittedOffset { offset: m.to, metadata: None, commit_time_ms: now },
                    )
                })
                .collect();
            // Generation -1 and no member: accepted only while the group has no members, so a
            // member that joined since the check above makes this fail, changing nothing.
            self.groups.commit(group_id, -1, "", commits).await.map_err(|e| match e {
                GroupError::UnknownMember => refuse_members(1),
                other => FieldError::new("group_id", WireError::from(other)),
            })?;
        }
        Ok(ResetOffsetsResponse { dry_run: req.dry_run, offsets: moves })
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
