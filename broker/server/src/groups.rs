//! The consumer group coordinator: Kafka's classic group protocol (join, sync, heartbeat, leave,
//! with client-side assignors) and committed offsets.
//!
//! Protocol-neutral: front ends translate their wire format to these calls and map
//! [`GroupError`] to their own codes. Committed offsets are kept in the controller's replicated
//! state (`weir_meta::offsets`): a commit is acknowledged once the controller has committed it,
//! and a group whose coordinator moves to another broker finds its offsets there. Group
//! membership is soft state, rebuilt by clients rejoining, as in Kafka.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;
use weir_meta::metadata::{Command, Event};
use weir_meta::offsets::{CommitRefusal, GroupOffsets, OffsetCommit, CHANGE_PARTITIONS_MAX};
pub use weir_meta::offsets::{CommittedOffset, OFFSET_METADATA_BYTES_MAX};
use weir_sdk::ErrorCode;

use crate::controller::Controller;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown member id")]
    UnknownMember,
    #[error("generation id does not match the group's")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("the group still has members")]
    NonEmptyGroup,
    #[error("no such group")]
    GroupIdNotFound,
    #[error("session timeout is out of range (6000 to 1800000 ms, as in Kafka)")]
    InvalidSessionTimeout,
    #[error("the member's protocols share none with the group's")]
    InconsistentProtocol,
    #[error("group id is empty")]
    InvalidGroupId,
    #[error("the controller did not store the offsets")]
    Storage,
    #[error("the coordinator stopped before the rebalance completed")]
    CoordinatorNotAvailable,
    #[error("rebalance timeout is out of range (at most 1800000 ms)")]
    InvalidRebalanceTimeout,
    #[error("member metadata and assignments are limited to 1 MiB per member")]
    MetadataTooLarge,
    #[error("the group has its most members (1000)")]
    GroupMaxSizeReached,
    #[error("an offset's metadata is limited to 4096 bytes (Kafka's offset.metadata.max.bytes)")]
    OffsetMetadataTooLarge,
    #[error("the broker holds groups_max groups (with members or committed offsets); delete unused groups")]
    GroupsMaxReached,
    #[error("an offset commit or deletion names at most 10000 partitions (CHANGE_PARTITIONS_MAX), and a commit carries at most 1 MiB of metadata (COMMIT_METADATA_BYTES_MAX)")]
    ChangeTooLarge,
}

/// Group errors with the service's codes; the message says what to do.
impl From<GroupError> for weir_sdk::WireError {
    fn from(e: GroupError) -> Self {
        let code = match e {
            GroupError::UnknownMember => ErrorCode::UnknownMemberId,
            GroupError::IllegalGeneration => ErrorCode::IllegalGeneration,
            GroupError::RebalanceInProgress => ErrorCode::RebalanceInProgress,
            GroupError::NonEmptyGroup => ErrorCode::NonEmptyGroup,
            GroupError::GroupIdNotFound => ErrorCode::GroupNotFound,
            GroupError::InvalidSessionTimeout => ErrorCode::InvalidSessionTimeout,
            GroupError::InconsistentProtocol => ErrorCode::InconsistentGroupProtocol,
            GroupError::InvalidGroupId => ErrorCode::InvalidGroupId,
            GroupError::Storage => ErrorCode::Storage,
            GroupError::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
            GroupError::InvalidRebalanceTimeout | GroupError::MetadataTooLarge | GroupError::ChangeTooLarge => {
                ErrorCode::InvalidRequest
            }
            GroupError::GroupMaxSizeReached | GroupError::GroupsMaxReached => ErrorCode::LimitReached,
            GroupError::OffsetMetadataTooLarge => ErrorCode::InvalidRequest,
        };
        weir_sdk::WireError::new(code, e.to_string())
    }
}

pub const SESSION_TIMEOUT_MS_MIN: i32 = 6_000;
pub const SESSION_TIMEOUT_MS_MAX: i32 = 1_800_000;
pub const REBALANCE_TIMEOUT_MS_MAX: i32 = 1_800_000;
/// A member's protocol metadata, and an assignment, together at most this many bytes.
pub const MEMBER_METADATA_BYTES_MAX: usize = 1 << 20;
/// Members of one group (Kafka's `group.max.size`).
pub const MEMBERS_PER_GROUP_MAX: usize = 1000;

/// What the coordinator lets clients create.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// Groups with members or committed offsets.
    pub groups_max: usize,
    /// Committed offsets of a group without members are dropped this long after they were
    /// committed (Kafka's `offsets.retention.minutes`).
    pub offsets_retention_ms: i64,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self { groups_max: 100_000, offsets_retention_ms: 7 * 24 * 3600 * 1000 }
    }
}

/// How long a brand-new group waits for more members before its first rebalance completes.
const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone)]
pub struct JoinResponse {
    pub generation_id: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member and its metadata for the chosen protocol.
    pub members: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    #[serde(skip)]
    pub metadata: Bytes,
    #[serde(skip)]
    pub assignment: Bytes,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub generation_id: i32,
    pub members: Vec<MemberDescription>,
}

struct Member {
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<Result<JoinResponse, GroupError>>>,
    sync_waiter: Option<oneshot::Sender<Result<Bytes, GroupError>>>,
    assignment: Bytes,
}

struct Group {
    state: GroupState,
    generation_id: i32,
    protocol_type: String,
    protocol_name: String,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: String::new(),
            protocol_name: String::new(),
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline: None,
        }
    }

    fn start_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        // Members waiting for an assignment of the old generation must rejoin.
        for member in self.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(Err(GroupError::RebalanceInProgress));
            }
        }
        let longest = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(1));
        let delay = if self.state == GroupState::Empty { INITIAL_REBALANCE_DELAY } else { Duration::ZERO };
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + longest.max(delay));
        if delay > Duration::ZERO {
            // A new group completes after the initial delay at the earliest, so consumers
            // started together land in one generation.
            self.rebalance_deadline = Some(now + delay);
        }
    }

    /// Completes the join phase if every member has rejoined (or the deadline passed, dropping
    /// those that did not).
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let deadline_passed = self.rebalance_deadline.is_some_and(|d| now >= d);
        let initial_wait = self.generation_id == 0 && !deadline_passed;
        if !(deadline_passed || all_joined) || initial_wait {
            return;
        }
        self.members.retain(|_, m| m.join_waiter.is_some());
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.generation_id += 1;
            return;
        }
        // The first protocol, in the first member's order of preference, that all support.
        let first = self.members.values().next().expect("non-empty");
        let chosen = first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)));
        let Some(protocol) = chosen else {
            for member in self.members.values_mut() {
                if let Some(w) = member.join_waiter.take() {
                    let _ = w.send(Err(GroupError::InconsistentProtocol));
                }
            }
            self.members.clear();
            self.state = GroupState::Empty;
            return;
        };
        self.generation_id += 1;
        self.protocol_name = protocol.clone();
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().expect("non-empty").clone(),
        };
        self.leader = Some(leader.clone());
        let metadata: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, b)| b.clone()).unwrap_or_default();
                (id.clone(), meta)
            })
            .collect();
        for (id, member) in self.members.iter_mut() {
            member.last_seen = now;
            member.assignment = Bytes::new();
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(Ok(JoinResponse {
                    generation_id: self.generation_id,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { metadata.clone() } else { Vec::new() },
                }));
            }
        }
        self.state = GroupState::CompletingRebalance;
        self.rebalance_deadline = None;
    }

    fn remove_member(&mut self, member_id: &str, now: Instant) {
        if let Some(mut member) = self.members.remove(member_id) {
            if let Some(w) = member.join_waiter.take() {
                let _ = w.send(Err(GroupError::UnknownMember));
            }
            if let Some(w) = member.sync_waiter.take() {
                let _ = w.send(Err(GroupError::UnknownMember));
            }
            if self.members.is_empty() && self.state != GroupState::PreparingRebalance {
                self.state = GroupState::Empty;
                self.leader = None;
                self.generation_id += 1;
            } else {
                self.start_rebalance(now);
                self.maybe_complete_join(now);
            }
        }
    }
}

#[derive(Clone)]
pub struct GroupCoordinator {
    groups: Arc<Mutex<HashMap<String, Group>>>,
    /// Holds the committed offsets.
    controller: Controller,
    limits: GroupLimits,
}

/// What a proposal's failure means for the group's client.
fn proposal_error(e: weir_sdk::WireError) -> GroupError {
    match e.code {
        ErrorCode::LimitReached => GroupError::GroupsMaxReached,
        ErrorCode::NotController => GroupError::CoordinatorNotAvailable,
        _ => {
            tracing::warn!(error = %e.message, "a committed-offsets change failed");
            GroupError::Storage
        }
    }
}

impl GroupCoordinator {
    pub fn open(controller: Controller, limits: GroupLimits) -> Self {
        Self { groups: Arc::default(), controller, limits }
    }

    /// Reads the committed offsets in the controller's state.
    fn book<R>(&self, read: impl FnOnce(&GroupOffsets) -> R) -> R {
        read(&self.controller.state().group_offsets)
    }

    /// Whether `group_id` may be created: the broker holds fewer than `groups_max` groups.
    /// The caller holds the groups lock.
    fn may_create(&self, groups: &HashMap<String, Group>, group_id: &str) -> bool {
        self.book(|offsets| {
            if groups.contains_key(group_id) || offsets.has_group(group_id) {
                return true;
            }
            // Groups with members and no offsets, plus groups with offsets.
            let without_offsets = groups.keys().filter(|g| !offsets.has_group(g)).count();
            without_offsets + offsets.group_count() < self.limits.groups_max
        })
    }

    /// Drops the committed offsets of groups without members that were committed longer than
    /// `offsets_retention_ms` before `now_ms`, of the groups `coordinated_here` names (each
    /// broker expires its own groups, whose members it knows); returns how many.
    pub async fn expire_offsets(
        &self,
        now_ms: i64,
        coordinated_here: impl Fn(&str) -> bool,
    ) -> Result<usize, GroupError> {
        let active: std::collections::HashSet<String> = {
            let groups = self.groups.lock().expect("groups lock");
            groups.iter().filter(|(_, g)| !g.members.is_empty()).map(|(id, _)| id.clone()).collect()
        };
        let cutoff = now_ms.saturating_sub(self.limits.offsets_retention_ms);
        let doomed = self.book(|offsets| {
            offsets.committed_before(cutoff, |group| !active.contains(group) && coordinated_here(group))
        });
        let mut expired = 0;
        for (group, partitions) in doomed {
            expired += self.remove(group, Some(partitions)).await?;
        }
        Ok(expired)
    }

    /// Removes a group's offsets (of the given partitions, or all) through the controller.
    async fn remove(&self, group: String, partitions: Option<Vec<(String, u32)>>) -> Result<usize, GroupError> {
        match self.controller.propose(Command::DeleteOffsets { group, partitions }).await.map_err(proposal_error)? {
            Event::OffsetsDeleted { removed, .. } => Ok(removed),
            other => {
                tracing::error!(event = ?other, "DeleteOffsets answered with another event");
                Err(GroupError::Storage)
            }
        }
    }

    /// Expires members whose session ran out and completes overdue rebalances. Called by a
    /// background ticker.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.groups.lock().expect("groups lock");
        for (group_id, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %group_id, member = %id, "member session expired");
                group.remove_member(&id, now);
            }
            group.maybe_complete_join(now);
        }
        // A group without members is forgotten (its committed offsets stay, and still list
        // and describe it), so groups a client names and leaves do not pile up.
        groups.retain(|_, group| !group.members.is_empty());
    }

    pub async fn join(&self, request: JoinRequest) -> Result<JoinResponse, GroupError> {
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&request.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        let rebalance_timeout_ms =
            if request.rebalance_timeout_ms > 0 { request.rebalance_timeout_ms } else { request.session_timeout_ms };
        if rebalance_timeout_ms > REBALANCE_TIMEOUT_MS_MAX {
            return Err(GroupError::InvalidRebalanceTimeout);
        }
        let metadata_bytes: usize = request.protocols.iter().map(|(name, m)| name.len() + m.len()).sum();
        if metadata_bytes > MEMBER_METADATA_BYTES_MAX {
            return Err(GroupError::MetadataTooLarge);
        }
        // Copied, so a member does not keep the whole request it came in alive.
        let protocols: Vec<(String, Bytes)> =
            request.protocols.iter().map(|(name, m)| (name.clone(), Bytes::copy_from_slice(m))).collect();
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        {
            let mut groups = self.groups.lock().expect("groups lock");
            if !self.may_create(&groups, &request.group_id) {
                return Err(GroupError::GroupsMaxReached);
            }
            let group = groups.entry(request.group_id.clone()).or_insert_with(Group::new);
            if group.members.is_empty() {
                group.protocol_type = request.protocol_type.clone();
            } else if group.protocol_type != request.protocol_type {
                return Err(GroupError::InconsistentProtocol);
            }
            if request.member_id.is_empty() && group.members.len() >= MEMBERS_PER_GROUP_MAX {
                return Err(GroupError::GroupMaxSizeReached);
            }
            let member_id = if request.member_id.is_empty() {
                format!(
                    "{}-{:016x}",
                    if request.client_id.is_empty() { "member" } else { &request.client_id },
                    rand::random::<u64>()
                )
            } else if group.members.contains_key(&request.member_id) {
                request.member_id.clone()
            } else {
                return Err(GroupError::UnknownMember);
            };
            let member = group.members.entry(member_id).or_insert_with(|| Member {
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout: Duration::from_millis(request.session_timeout_ms as u64),
                rebalance_timeout: Duration::from_millis(rebalance_timeout_ms as u64),
                protocols: Vec::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
                assignment: Bytes::new(),
            });
            member.protocols = protocols;
            member.session_timeout = Duration::from_millis(request.session_timeout_ms as u64);
            member.rebalance_timeout = Duration::from_millis(rebalance_timeout_ms as u64);
            member.last_seen = now;
            if let Some(old) = member.join_waiter.replace(tx) {
                let _ = old.send(Err(GroupError::RebalanceInProgress));
            }
            group.start_rebalance(now);
            group.maybe_complete_join(now);
        }
        rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    pub async fn sync(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, GroupError> {
        if assignments.iter().any(|(id, a)| id.len() + a.len() > MEMBER_METADATA_BYTES_MAX) {
            return Err(GroupError::MetadataTooLarge);
        }
        // Copied, so an assignment does not keep the whole request it came in alive.
        let assignments: Vec<(String, Bytes)> =
            assignments.into_iter().map(|(id, a)| (id, Bytes::copy_from_slice(&a))).collect();
        let (tx, rx) = oneshot::channel();
        {
            let mut groups = self.groups.lock().expect("groups lock");
            let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMember)?;
            if !group.members.contains_key(member_id) {
                return Err(GroupError::UnknownMember);
            }
            if generation_id != group.generation_id {
                return Err(GroupError::IllegalGeneration);
            }
            match group.state {
                GroupState::PreparingRebalance | GroupState::Empty => return Err(GroupError::RebalanceInProgress),
                GroupState::Stable => {
                    let member = group.members.get_mut(member_id).expect("checked");
                    member.last_seen = Instant::now();
                    return Ok(member.assignment.clone());
                }
                GroupState::CompletingRebalance => {}
            }
            let member = group.members.get_mut(member_id).expect("checked");
            member.last_seen = Instant::now();
            member.sync_waiter = Some(tx);
            if group.leader.as_deref() == Some(member_id) {
                let assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, m) in group.members.iter_mut() {
                    m.assignment = assigned.get(id).cloned().unwrap_or_default();
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(Ok(m.assignment.clone()));
                    }
                }
                group.state = GroupState::Stable;
            }
        }
        rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    pub fn heartbeat(&self, group_id: &str, generation_id: i32, member_id: &str) -> Result<(), GroupError> {
        let mut groups = self.groups.lock().expect("groups lock");
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMember)?;
        let state = group.state;
        let generation = group.generation_id;
        let member = group.members.get_mut(member_id).ok_or(GroupError::UnknownMember)?;
        member.last_seen = Instant::now();
        if state == GroupState::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if generation_id != generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// Removes members; the rest of the group rebalances.
    pub fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<Result<(), GroupError>> {
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(group) = groups.get_mut(group_id) else {
            return member_ids.iter().map(|_| Err(GroupError::UnknownMember)).collect();
        };
        let now = Instant::now();
        member_ids
            .iter()
            .map(|id| {
                if !group.members.contains_key(id) {
                    return Err(GroupError::UnknownMember);
                }
                tracing::info!(group = %group_id, member = %id, "member left");
                group.remove_member(id, now);
                Ok(())
            })
            .collect()
    }

    /// Commits offsets through the controller. A member of an active group must give its
    /// generation; a commit with generation -1 is accepted only for a group with no members
    /// (standalone consumers, admin tools).
    pub async fn commit(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        offsets: Vec<(String, u32, CommittedOffset)>,
    ) -> Result<(), GroupError> {
        // One controller entry: each partition once (the last offset named for it), within
        // the bounds of `weir_meta::offsets`.
        let offsets: BTreeMap<(String, u32), CommittedOffset> =
            offsets.into_iter().map(|(topic, partition, committed)| ((topic, partition), committed)).collect();
        let metadata = offsets.values().map(|c| c.metadata.as_ref().map_or(0, String::len));
        match GroupOffsets::refusal(group_id, offsets.len(), metadata) {
            None => {}
            Some(CommitRefusal::NoGroup) => return Err(GroupError::InvalidGroupId),
            Some(CommitRefusal::MetadataTooLarge) => return Err(GroupError::OffsetMetadataTooLarge),
            Some(CommitRefusal::TooLarge) => return Err(GroupError::ChangeTooLarge),
        }
        {
            let groups = self.groups.lock().expect("groups lock");
            if !self.may_create(&groups, group_id) {
                return Err(GroupError::GroupsMaxReached);
            }
            if let Some(group) = groups.get(group_id) {
                if !group.members.is_empty() || generation_id >= 0 {
                    if !group.members.contains_key(member_id) {
                        return Err(GroupError::UnknownMember);
                    }
                    if generation_id != group.generation_id {
                        return Err(GroupError::IllegalGeneration);
                    }
                    // As in Kafka: members of the current generation may still commit while
                    // the group prepares a rebalance, not while assignments are being handed out.
                    if group.state == GroupState::CompletingRebalance {
                        return Err(GroupError::RebalanceInProgress);
                    }
                }
            } else if generation_id >= 0 {
                return Err(GroupError::UnknownMember);
            }
        }
        let offsets = offsets
            .into_iter()
            .map(|((topic, partition), committed)| OffsetCommit { topic, partition, committed })
            .collect();
        let command = Command::CommitOffsets { group: group_id.to_owned(), offsets };
        self.controller.propose(command).await.map_err(proposal_error)?;
        Ok(())
    }

    /// Committed offsets of a group: of the given partitions, or all when `None`.
    pub fn committed(
        &self,
        group_id: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Vec<(String, u32, Option<CommittedOffset>)> {
        self.book(|offsets| offsets.committed(group_id, partitions))
    }

    pub async fn delete_offsets(&self, group_id: &str, partitions: &[(String, u32)]) -> Result<(), GroupError> {
        let partitions: std::collections::BTreeSet<(String, u32)> = partitions.iter().cloned().collect();
        if partitions.is_empty() {
            return Ok(());
        }
        if partitions.len() > CHANGE_PARTITIONS_MAX {
            return Err(GroupError::ChangeTooLarge);
        }
        self.remove(group_id.to_owned(), Some(partitions.into_iter().collect())).await.map(|_| ())
    }

    /// Every group: with members, or with committed offsets only (Empty). Each lock is held
    /// only to copy what it guards.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let mut out: BTreeMap<String, (String, GroupState)> = {
            let groups = self.groups.lock().expect("groups lock");
            groups.iter().map(|(id, g)| (id.clone(), (g.protocol_type.clone(), g.state))).collect()
        };
        let with_offsets: Vec<String> = self.book(|offsets| offsets.groups().map(str::to_owned).collect());
        for g in with_offsets {
            out.entry(g).or_insert_with(|| ("consumer".into(), GroupState::Empty));
        }
        out.into_iter().map(|(id, (protocol_type, state))| (id, protocol_type, state)).collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let known_by_offsets = self.book(|offsets| offsets.has_group(group_id));
        let groups = self.groups.lock().expect("groups lock");
        match groups.get(group_id) {
            Some(g) => Some(GroupDescription {
                group_id: group_id.to_owned(),
                state: g.state,
                protocol_type: g.protocol_type.clone(),
                protocol_name: g.protocol_name.clone(),
                generation_id: g.generation_id,
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| MemberDescription {
                        member_id: id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: m
                            .protocols
                            .iter()
                            .find(|(n, _)| *n == g.protocol_name)
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default(),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            }),
            None if known_by_offsets => Some(GroupDescription {
                group_id: group_id.to_owned(),
                state: GroupState::Empty,
                protocol_type: "consumer".into(),
                protocol_name: String::new(),
                generation_id: 0,
                members: Vec::new(),
            }),
            None => None,
        }
    }

    /// Deletes a group with no members and its committed offsets.
    pub async fn delete(&self, group_id: &str) -> Result<(), GroupError> {
        let known_by_offsets = self.book(|offsets| offsets.has_group(group_id));
        {
            let mut groups = self.groups.lock().expect("groups lock");
            match groups.get(group_id) {
                Some(g) if !g.members.is_empty() => return Err(GroupError::NonEmptyGroup),
                Some(_) => {
                    groups.remove(group_id);
                }
                None if !known_by_offsets => return Err(GroupError::GroupIdNotFound),
                None => {}
            }
        }
        if known_by_offsets {
            self.remove(group_id.to_owned(), None).await?;
        }
        Ok(())
    }
}

/// Moves the committed offsets an earlier version kept in this broker's storage (keyspace
/// `group_offsets`) into the controller's state when the broker starts: each group's offsets
/// of partitions the state has none for, then removes them from storage. What the controller
/// does not take stays in storage for the next start.
pub async fn migrate_local_offsets(store: weir_storage::offsets::OffsetStore, controller: &Controller) {
    let local = match store.load() {
        Ok(local) if local.is_empty() => return,
        Ok(local) => local,
        Err(e) => {
            tracing::error!(error = ?e, "reading the committed offsets stored by an earlier version failed");
            return;
        }
    };
    let now = weir_sdk::wire::now_ms();
    let mut by_group: BTreeMap<String, Vec<(String, u32, CommittedOffset)>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for ((group, topic, partition), value) in local {
        match serde_json::from_slice::<CommittedOffset>(&value) {
            Ok(committed) => by_group.entry(group).or_default().push((topic, partition, committed)),
            Err(_) => unreadable.push((group, topic, partition)),
        }
    }
    if !unreadable.is_empty() {
        tracing::warn!(
            records = unreadable.len(),
            "dropping committed offsets stored by an earlier version that do not parse"
        );
        if let Err(e) = store.remove(&unreadable) {
            tracing::warn!(error = ?e, "removing unreadable committed offsets failed");
        }
    }
    for (group, offsets) in by_group {
        let keys: Vec<(String, String, u32)> = offsets.iter().map(|(t, p, _)| (group.clone(), t.clone(), *p)).collect();
        let fresh: Vec<OffsetCommit> = {
            let state = controller.state();
            offsets
                .into_iter()
                .filter(|(t, p, _)| state.group_offsets.committed(&group, Some(&[(t.clone(), *p)]))[0].2.is_none())
                .map(|(topic, partition, mut committed)| {
                    // Records of the earliest versions have no commit time: their retention
                    // starts now.
                    if committed.commit_time_ms == 0 {
                        committed.commit_time_ms = now;
                    }
                    OffsetCommit { topic, partition, committed }
                })
                .collect()
        };
        let mut attempt = 0u32;
        while !fresh.is_empty() {
            let command = Command::CommitOffsets { group: group.clone(), offsets: fresh.clone() };
            match controller.propose(command).await {
                Ok(_) => break,
                Err(e) if attempt < 3 && e.code == ErrorCode::NotController => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::error!(group = %group, error = %e.message, "moving a group's committed offsets into the controller failed; they stay in storage");
                    return;
                }
            }
        }
        if let Err(e) = store.remove(&keys) {
            tracing::warn!(group = %group, error = ?e, "removing migrated committed offsets from storage failed");
        }
        tracing::info!(group = %group, offsets = keys.len(), "committed offsets moved into the controller's state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_request(group: &str, member: &str) -> JoinRequest {
        JoinRequest {
            group_id: group.into(),
            member_id: member.into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        }
    }

    /// A coordinator over a single node's controller, with topic `t` (two partitions).
    async fn coordinator(dir: &std::path::Path, limits: GroupLimits) -> GroupCoordinator {
        let storage = weir_storage::Storage::open(dir, 16).unwrap();
        let controller_limits = weir_meta::metadata::Limits {
            partitions_per_topic_max: 100,
            topics_max: 100,
            message_bytes_max: 1 << 20,
            schema_versions_per_subject_max: 10,
            schemas_max: 10,
            groups_max: limits.groups_max,
        };
        let controller = Controller::open(storage.raft, 1, controller_limits, None).await.unwrap();
        if controller.state().topic("t").is_err() {
            let create = Command::CreateTopic {
                name: "t".into(),
                partitions: 2,
                config: weir_sdk::TopicConfig::default(),
                replication_factor: 1,
            };
            controller.propose(create).await.unwrap();
        }
        GroupCoordinator::open(controller, limits)
    }

    fn spawn_ticker(c: &GroupCoordinator) {
        let c = c.clone();
        tokio::spawn(async move {
            loop {
                c.tick(Instant::now());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    #[tokio::test]
    async fn two_members_join_one_generation_and_sync_assignments() {
        let dir = tempfile::tempdir().unwrap();
        let c = coordinator(dir.path(), GroupLimits::default()).await;
        spawn_ticker(&c);
        let (a, b) = tokio::join!(c.join(join_request("g", "")), c.join(join_request("g", "")));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.generation_id, 1);
        assert_eq!(a.generation_id, b.generation_id);
        assert_eq!(a.leader, b.leader);
        let (leader, follower) = if a.member_id == a.leader { (a, b) } else { (b, a) };
        assert_eq!(leader.members.len(), 2, "the leader sees every member");
        assert!(follower.members.is_empty());
        let assignments = vec![
            (leader.member_id.clone(), Bytes::from_static(b"L")),
            (follower.member_id.clone(), Bytes::from_static(b"F")),
        ];
        let (l, f) = tokio::join!(
            c.sync("g", 1, &leader.member_id, assignments),
            c.sync("g", 1, &follower.member_id, Vec::new())
        );
        assert_eq!(l.unwrap(), Bytes::from_static(b"L"));
        assert_eq!(f.unwrap(), Bytes::from_static(b"F"));
        assert_eq!(c.heartbeat("g", 1, &leader.member_id), Ok(()));
        assert_eq!(c.heartbeat("g", 0, &leader.member_id), Err(GroupError::IllegalGeneration));
        assert_eq!(c.heartbeat("g", 1, "stranger"), Err(GroupError::UnknownMember));

        // One leaves: the other is told to rejoin and gets a new generation alone.
        assert_eq!(c.leave("g", std::slice::from_ref(&follower.member_id)), vec![Ok(())]);
        assert_eq!(c.heartbeat("g", 1, &leader.member_id), Err(GroupError::RebalanceInProgress));
        let again = c.join(join_request("g", &leader.member_id)).await.unwrap();
        assert_eq!(again.generation_id, 2);
        assert_eq!(again.members.len(), 1);
    }

    #[tokio::test]
    async fn committed_offsets_survive_reopen_and_check_generation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = coordinator(dir.path(), GroupLimits::default()).await;
            let committed = CommittedOffset { offset: 42, metadata: None, commit_time_ms: 1 };
            assert_eq!(c.commit("solo", -1, "", vec![("t".into(), 1, committed.clone())]).await, Ok(()));
            assert_eq!(
                c.commit("solo", 5, "m", vec![("t".into(), 1, committed)]).await,
                Err(GroupError::UnknownMember)
            );
            assert_eq!(c.delete("missing").await, Err(GroupError::GroupIdNotFound));
            c.controller.shutdown().await;
        }
        let c = coordinator(dir.path(), GroupLimits::default()).await;
        let got = c.committed("solo", Some(&[("t".into(), 1), ("t".into(), 0)]));
        assert_eq!(got[0].2.as_ref().map(|c| c.offset), Some(42));
        assert_eq!(got[1].2, None);
        assert_eq!(c.delete("solo").await, Ok(()));
        assert!(c.committed("solo", None).is_empty());
    }

    #[tokio::test]
    async fn a_commit_or_deletion_names_each_partition_once_within_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let c = coordinator(dir.path(), GroupLimits::default()).await;
        let at = |offset| CommittedOffset { offset, metadata: None, commit_time_ms: 1 };
        let repeated: Vec<(String, u32, CommittedOffset)> = (0..30_000).map(|i| ("t".to_owned(), 1, at(i))).collect();
        assert_eq!(c.commit("g", -1, "", repeated).await, Ok(()));
        assert_eq!(c.committed("g", None).len(), 1);
        assert_eq!(c.committed("g", None)[0].2.as_ref().map(|c| c.offset), Some(29_999), "the last one named wins");
        let distinct: Vec<(String, u32, CommittedOffset)> =
            (0..=CHANGE_PARTITIONS_MAX as u32).map(|p| ("t".to_owned(), p, at(1))).collect();
        assert_eq!(c.commit("g", -1, "", distinct).await, Err(GroupError::ChangeTooLarge));
        let wide: Vec<(String, u32)> = (0..=CHANGE_PARTITIONS_MAX as u32).map(|p| ("t".to_owned(), p)).collect();
        assert_eq!(c.delete_offsets("g", &wide).await, Err(GroupError::ChangeTooLarge));
        let repeated: Vec<(String, u32)> = (0..30_000).map(|_| ("t".to_owned(), 1)).collect();
        assert_eq!(c.delete_offsets("g", &repeated).await, Ok(()));
        assert!(c.committed("g", None).is_empty());
    }

    #[tokio::test]
    async fn joins_are_bounded_and_groups_without_members_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let c = coordinator(dir.path(), GroupLimits::default()).await;
        let long = JoinRequest { rebalance_timeout_ms: REBALANCE_TIMEOUT_MS_MAX + 1, ..join_request("g", "") };
        assert_eq!(c.join(long).await.unwrap_err(), GroupError::InvalidRebalanceTimeout);
        let fat = JoinRequest {
            protocols: vec![("range".into(), Bytes::from(vec![0u8; MEMBER_METADATA_BYTES_MAX + 1]))],
            ..join_request("g", "")
        };
        assert_eq!(c.join(fat).await.unwrap_err(), GroupError::MetadataTooLarge);
        assert!(c.describe("g").is_none(), "a refused join leaves no group behind");

        spawn_ticker(&c);
        let joined = c.join(join_request("g", "")).await.unwrap();
        assert_eq!(c.leave("g", std::slice::from_ref(&joined.member_id)), vec![Ok(())]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.groups.lock().expect("groups lock").contains_key("g") {
            assert!(Instant::now() < deadline, "a group without members is forgotten by the ticker");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn offsets_have_a_metadata_limit_groups_a_count_limit_and_idle_offsets_expire() {
        let dir = tempfile::tempdir().unwrap();
        let limits = GroupLimits { groups_max: 2, offsets_retention_ms: 1_000 };
        let at = |offset, commit_time_ms, metadata: usize| {
            let metadata = (metadata > 0).then(|| "m".repeat(metadata));
            vec![("t".to_owned(), 0, CommittedOffset { offset, metadata, commit_time_ms })]
        };
        {
            let c = coordinator(dir.path(), limits).await;
            assert_eq!(
                c.commit("a", -1, "", at(1, 10_000, OFFSET_METADATA_BYTES_MAX + 1)).await,
                Err(GroupError::OffsetMetadataTooLarge)
            );
            assert!(c.describe("a").is_none(), "a refused commit leaves nothing behind");
            c.commit("a", -1, "", at(1, 10_000, OFFSET_METADATA_BYTES_MAX)).await.unwrap();
            c.commit("b", -1, "", at(2, 10_500, 0)).await.unwrap();
            assert_eq!(c.commit("c", -1, "", at(3, 10_500, 0)).await, Err(GroupError::GroupsMaxReached));
            assert_eq!(c.join(join_request("c", "")).await.unwrap_err(), GroupError::GroupsMaxReached);
            c.commit("a", -1, "", at(4, 10_000, 0)).await.unwrap();
            // Another broker coordinates b: this one expires nothing of it.
            assert_eq!(c.expire_offsets(20_000, |g| g != "b").await, Ok(1));
            assert_eq!(c.committed("b", None).len(), 1);
            c.commit("a", -1, "", at(4, 10_000, 0)).await.unwrap();
            // At 11,200 ms only a's offset (committed at 10,000) is past its 1 s retention.
            assert_eq!(c.expire_offsets(11_200, |_| true).await, Ok(1));
            assert!(c.committed("a", None).is_empty());
            assert_eq!(c.committed("b", None).len(), 1);
            assert_eq!(c.list().len(), 1);
            c.commit("c", -1, "", at(5, 11_200, 0)).await.unwrap();
            c.controller.shutdown().await;
        }
        let c = coordinator(dir.path(), limits).await;
        let groups: Vec<String> = c.list().into_iter().map(|(g, _, _)| g).collect();
        assert_eq!(groups, ["b", "c"], "the expiry was durable");
    }
}
