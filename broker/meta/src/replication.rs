//! The rules of partition replication, as Kafka's controller and partition leaders apply
//! them, without I/O or clock (time is an argument): who may lead, when the in-sync replica
//! set (ISR) shrinks and grows, where the high watermark stands, how a change to a partition's
//! leader or ISR is checked against its epochs, and where a returning replica truncates its
//! log (KIP-101 and KIP-279).
//!
//! The broker's replication code (leaders tracking followers, followers fetching, the
//! controller fencing brokers) calls these functions and does the I/O around them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub type BrokerId = u64;

/// A partition as the controller holds it (Kafka's PartitionRegistration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRegistration {
    /// The assigned replicas, the preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas: every record below the high watermark is on each of them.
    pub isr: BTreeSet<BrokerId>,
    /// `None` while the partition is offline (no eligible replica is alive).
    pub leader: Option<BrokerId>,
    /// Goes up by one each time the leader changes; followers and clients fence on it.
    pub leader_epoch: i32,
    /// Goes up by one on every change of this registration; the compare-and-set version of
    /// [`alter_partition`].
    pub partition_epoch: i32,
    /// A move of the partition's replicas under way (`weir partition reassign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassignment: Option<Reassignment>,
}

/// A reassignment under way, as Kafka's KIP-455 keeps it: `replicas` holds the target replicas
/// followed by the ones being removed; the new ones copy the log from the leader, and once
/// every target replica is in the ISR the removed ones go ([`complete_reassignment`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    /// Target replicas that were not replicas before.
    pub adding: Vec<BrokerId>,
    /// Replicas before that are not in the target.
    pub removing: Vec<BrokerId>,
    /// The most bytes per second the leader sends the adding replicas (`None`: unthrottled).
    #[serde(default)]
    pub throttle_bytes_per_sec: Option<u64>,
}

impl PartitionRegistration {
    /// The replicas the partition is moving to (all of them when no move is under way).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        let removing = self.reassignment.as_ref().map(|r| r.removing.as_slice()).unwrap_or_default();
        self.replicas.iter().copied().filter(|b| !removing.contains(b)).collect()
    }

    /// The replicas before the move under way (all of them when none is).
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        let adding = self.reassignment.as_ref().map(|r| r.adding.as_slice()).unwrap_or_default();
        self.replicas.iter().copied().filter(|b| !adding.contains(b)).collect()
    }
}

/// Why a reassignment was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReassignError {
    /// The target names no replica, or a broker twice.
    InvalidTarget(String),
    /// A target replica is not a registered, unfenced broker.
    UnknownBroker(BrokerId),
    /// A cancel with no reassignment under way.
    NoneUnderWay,
    /// Canceling would leave no in-sync original replica to lead.
    NoInSyncOriginal,
}

/// Starts moving a partition to `target` (the preferred leader first): the new replicas are
/// added to `replicas` and copy the log; the registration completes at once when every target
/// replica is already in sync. A reassignment under way is replaced: its original replicas
/// stay the ones to remove (Kafka's rule), and adding replicas no longer wanted go at once.
pub fn start_reassignment(
    current: &PartitionRegistration,
    target: &[BrokerId],
    throttle_bytes_per_sec: Option<u64>,
    live: &BTreeSet<BrokerId>,
) -> Result<PartitionRegistration, ReassignError> {
    if target.is_empty() {
        return Err(ReassignError::InvalidTarget("the target names no replica".into()));
    }
    let distinct: BTreeSet<BrokerId> = target.iter().copied().collect();
    if distinct.len() != target.len() {
        return Err(ReassignError::InvalidTarget(format!("the target {target:?} names a broker twice")));
    }
    if let Some(&broker) = target.iter().find(|b| !live.contains(b)) {
        return Err(ReassignError::UnknownBroker(broker));
    }
    let original = current.original_replicas();
    let adding: Vec<BrokerId> = target.iter().copied().filter(|b| !original.contains(b)).collect();
    let removing: Vec<BrokerId> = original.iter().copied().filter(|b| !target.contains(b)).collect();
    let mut next = current.clone();
    next.replicas = target.iter().chain(&removing).copied().collect();
    // An adding replica of the replaced move that is not wanted now leaves the ISR too.
    next.isr.retain(|b| next.replicas.contains(b));
    next.reassignment = (!adding.is_empty() || !removing.is_empty()).then_some(Reassignment {
        adding,
        removing,
        throttle_bytes_per_sec,
    });
    if next.isr.is_empty() {
        // Only a replaced move's adding replicas were in sync.
        return Err(ReassignError::NoInSyncOriginal);
    }
    if next.leader.is_some_and(|l| !next.replicas.contains(&l)) {
        next.leader = elect_leader(&next, live, false).map(|(leader, _)| leader);
    }
    let next = completed(&next, live).unwrap_or(next);
    Ok(finish(current, next.clone()).unwrap_or(next))
}

/// Finishes a reassignment whose target replicas are all in the ISR: the removed replicas
/// leave `replicas` and the ISR, and if the leader was one of them (or there is none) the
/// first in-sync live target replica leads. `None` while it is not done (or none is under way).
pub fn complete_reassignment(
    current: &PartitionRegistration,
    live: &BTreeSet<BrokerId>,
) -> Option<PartitionRegistration> {
    finish(current, completed(current, live)?)
}

/// [`complete_reassignment`] without the epochs bumped.
fn completed(current: &PartitionRegistration, live: &BTreeSet<BrokerId>) -> Option<PartitionRegistration> {
    let reassignment = current.reassignment.as_ref()?;
    let target = current.target_replicas();
    if !target.iter().all(|b| current.isr.contains(b)) {
        return None;
    }
    let mut next = current.clone();
    next.replicas = target;
    next.isr.retain(|b| !reassignment.removing.contains(b));
    next.reassignment = None;
    if next.leader.is_none_or(|l| !next.replicas.contains(&l) || !live.contains(&l)) {
        next.leader = next.replicas.iter().copied().find(|b| live.contains(b) && next.isr.contains(b));
    }
    Some(next)
}

/// Cancels a reassignment under way: the adding replicas go (from the ISR too) and the
/// original replicas stay, led by the current leader if it is one of them, else by the first
/// in-sync live original replica.
pub fn cancel_reassignment(
    current: &PartitionRegistration,
    live: &BTreeSet<BrokerId>,
) -> Result<PartitionRegistration, ReassignError> {
    let Some(reassignment) = current.reassignment.as_ref() else { return Err(ReassignError::NoneUnderWay) };
    let mut next = current.clone();
    next.replicas = current.original_replicas();
    next.isr.retain(|b| !reassignment.adding.contains(b));
    if next.isr.is_empty() {
        return Err(ReassignError::NoInSyncOriginal);
    }
    next.reassignment = None;
    if next.leader.is_some_and(|l| !next.replicas.contains(&l)) {
        next.leader = next.replicas.iter().copied().find(|b| live.contains(b) && next.isr.contains(b));
    }
    Ok(finish(current, next.clone()).unwrap_or(next))
}

impl PartitionRegistration {
    /// A new partition: every replica is in sync (the log is empty) and the first leads.
    pub fn new(replicas: Vec<BrokerId>) -> Self {
        Self {
            leader: replicas.first().copied(),
            isr: replicas.iter().copied().collect(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            reassignment: None,
        }
    }
}

/// Why the controller refused a partition change; the names are Kafka's error codes for
/// AlterPartition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterPartitionError {
    /// The request came from a broker that does not lead the partition.
    NotLeader { leader: Option<BrokerId> },
    /// The request carries an older (or newer) leader epoch than the registration.
    FencedLeaderEpoch { expected: i32, got: i32 },
    /// The request was built on another partition epoch: someone changed it meanwhile.
    InvalidUpdateVersion { expected: i32, got: i32 },
    /// A proposed ISR member is not an assigned replica, or its broker is fenced.
    IneligibleReplica { broker: BrokerId },
    /// The leader left itself out of the ISR it proposed.
    LeaderNotInIsr,
}

/// A leader's request to change the ISR (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsr {
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: BTreeSet<BrokerId>,
}

/// Applies an ISR change if it was built on the current registration (compare-and-set on the
/// partition epoch) by the current leader, and every new member is an assigned, unfenced
/// replica. Shrinking may drop fenced brokers; growing may add only live ones.
pub fn alter_partition(
    current: &PartitionRegistration,
    request: &AlterIsr,
    fenced: &BTreeSet<BrokerId>,
) -> Result<PartitionRegistration, AlterPartitionError> {
    if current.leader != Some(request.leader) {
        return Err(AlterPartitionError::NotLeader { leader: current.leader });
    }
    if request.leader_epoch != current.leader_epoch {
        return Err(AlterPartitionError::FencedLeaderEpoch {
            expected: current.leader_epoch,
            got: request.leader_epoch,
        });
    }
    if request.partition_epoch != current.partition_epoch {
        return Err(AlterPartitionError::InvalidUpdateVersion {
            expected: current.partition_epoch,
            got: request.partition_epoch,
        });
    }
    if !request.isr.contains(&request.leader) {
        return Err(AlterPartitionError::LeaderNotInIsr);
    }
    for &broker in request.isr.difference(&current.isr) {
        if !current.replicas.contains(&broker) || fenced.contains(&broker) {
            return Err(AlterPartitionError::IneligibleReplica { broker });
        }
    }
    let mut next = current.clone();
    next.isr = request.isr.clone();
    next.partition_epoch += 1;
    Ok(next)
}

/// The registration after `broker` was fenced (missed its session timeout, or shut down):
/// it leaves the ISR unless it is the last member (the last in-sync replica stays recorded,
/// so the partition can come back from it), and if it led, the next leader is chosen by
/// [`elect_leader`]. `None` if nothing changes.
pub fn fence_broker(
    current: &PartitionRegistration,
    broker: BrokerId,
    live: &BTreeSet<BrokerId>,
    unclean_election: bool,
) -> Option<PartitionRegistration> {
    let mut next = current.clone();
    if next.isr.len() > 1 {
        next.isr.remove(&broker);
    }
    if next.leader == Some(broker) {
        next.leader = None;
    }
    if next.leader.is_none() {
        if let Some((leader, isr)) = elect_leader(&next, live, unclean_election) {
            next.leader = Some(leader);
            next.isr = isr;
        }
    }
    finish(current, next)
}

/// The registration after `broker` came back (registered with a new broker epoch): an
/// offline partition it can lead gets it as leader. It does not rejoin the ISR here: its
/// leader adds it once it has caught up ([`FollowerTracker::maybe_expand`]).
pub fn unfence_broker(
    current: &PartitionRegistration,
    live: &BTreeSet<BrokerId>,
    unclean_election: bool,
) -> Option<PartitionRegistration> {
    let mut next = current.clone();
    if next.leader.is_none() {
        if let Some((leader, isr)) = elect_leader(&next, live, unclean_election) {
            next.leader = Some(leader);
            next.isr = isr;
        }
    }
    finish(current, next)
}

/// Moves leadership back to the preferred replica (the first assigned one) when it is live and
/// in sync and someone else leads.
pub fn prefer_leader(current: &PartitionRegistration, live: &BTreeSet<BrokerId>) -> Option<PartitionRegistration> {
    let preferred = *current.replicas.first()?;
    if current.leader == Some(preferred) || !live.contains(&preferred) || !current.isr.contains(&preferred) {
        return None;
    }
    let mut next = current.clone();
    next.leader = Some(preferred);
    finish(current, next)
}

/// Bumps the epochs for a changed registration: the partition epoch always, the leader epoch
/// when the leader changed.
fn finish(current: &PartitionRegistration, mut next: PartitionRegistration) -> Option<PartitionRegistration> {
    if next == *current {
        return None;
    }
    if next.leader != current.leader {
        next.leader_epoch += 1;
    }
    next.partition_epoch += 1;
    Some(next)
}

/// The leader to choose, and the ISR that goes with it: the first assigned replica (in
/// preference order) that is live and in the ISR. With unclean election allowed and no such
/// replica, the first live assigned replica, which becomes the whole ISR (records only the
/// old ISR had may be lost: that is what "unclean" means).
pub fn elect_leader(
    current: &PartitionRegistration,
    live: &BTreeSet<BrokerId>,
    unclean_election: bool,
) -> Option<(BrokerId, BTreeSet<BrokerId>)> {
    let clean = current.replicas.iter().find(|b| live.contains(b) && current.isr.contains(b));
    if let Some(&leader) = clean {
        let isr = current.isr.iter().copied().filter(|b| live.contains(b) || *b == leader).collect();
        return Some((leader, isr));
    }
    if unclean_election {
        let &leader = current.replicas.iter().find(|b| live.contains(b))?;
        return Some((leader, BTreeSet::from([leader])));
    }
    None
}

// ---- the leader's view of its followers -----------------------------------------------------

/// What a partition leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FollowerState {
    /// The follower's log end offset: the offset it fetched from last.
    pub log_end: i64,
    /// When it last was caught up with the leader (see [`FollowerTracker::on_fetch`]).
    pub last_caught_up_ms: u64,
    /// The leader's log end offset and the time at the follower's previous fetch.
    last_fetch_leader_end: i64,
    last_fetch_ms: u64,
}

/// A partition leader's bookkeeping of its followers, the ISR and the high watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerTracker {
    pub leader: BrokerId,
    pub leader_epoch: i32,
    /// The first offset written in this leader epoch: a follower must reach it to rejoin the
    /// ISR, so a replica never counts as in sync on records of an older epoch only.
    pub epoch_start_offset: i64,
    pub isr: BTreeSet<BrokerId>,
    pub high_watermark: i64,
    pub followers: BTreeMap<BrokerId, FollowerState>,
}

impl FollowerTracker {
    /// A leader taking over at `now_ms`: every follower counts as caught up now, so none is
    /// dropped from the ISR before it had `replica.lag.time.max.ms` to fetch.
    pub fn new(
        leader: BrokerId,
        registration: &PartitionRegistration,
        leader_log_end: i64,
        high_watermark: i64,
        now_ms: u64,
    ) -> Self {
        let followers = registration
            .replicas
            .iter()
            .filter(|&&b| b != leader)
            .map(|&b| (b, FollowerState { last_caught_up_ms: now_ms, last_fetch_ms: now_ms, ..Default::default() }))
            .collect();
        Self {
            leader,
            leader_epoch: registration.leader_epoch,
            epoch_start_offset: leader_log_end,
            isr: registration.isr.clone(),
            high_watermark,
            followers,
        }
    }

    /// A follower fetched from `fetch_offset` at `now_ms`, while the leader's log ended at
    /// `leader_log_end`. As in Kafka: it is caught up now if it asked for the leader's end, or
    /// caught up as of its previous fetch if it reached the end the leader had then.
    pub fn on_fetch(&mut self, follower: BrokerId, fetch_offset: i64, leader_log_end: i64, now_ms: u64) {
        let Some(state) = self.followers.get_mut(&follower) else { return };
        if fetch_offset >= leader_log_end {
            state.last_caught_up_ms = state.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= state.last_fetch_leader_end {
            state.last_caught_up_ms = state.last_caught_up_ms.max(state.last_fetch_ms);
        }
        state.log_end = fetch_offset;
        state.last_fetch_leader_end = leader_log_end;
        state.last_fetch_ms = now_ms;
    }

    /// The high watermark after the leader's log reached `leader_log_end`: the lowest log end
    /// among the ISR (the leader included), never moving back.
    pub fn advance_high_watermark(&mut self, leader_log_end: i64) -> i64 {
        let lowest = self
            .isr
            .iter()
            .map(|b| if *b == self.leader { leader_log_end } else { self.followers.get(b).map_or(0, |f| f.log_end) })
            .min()
            .unwrap_or(leader_log_end);
        self.high_watermark = self.high_watermark.max(lowest);
        self.high_watermark
    }

    /// The ISR without the followers that have not caught up within `lag_max_ms`, if any are
    /// to go (the leader proposes it to the controller; the leader itself always stays).
    pub fn maybe_shrink(&self, now_ms: u64, lag_max_ms: u64) -> Option<BTreeSet<BrokerId>> {
        let lagging: Vec<BrokerId> = self
            .isr
            .iter()
            .copied()
            .filter(|b| *b != self.leader)
            .filter(|b| self.followers.get(b).is_none_or(|f| now_ms.saturating_sub(f.last_caught_up_ms) > lag_max_ms))
            .collect();
        if lagging.is_empty() {
            return None;
        }
        Some(self.isr.iter().copied().filter(|b| !lagging.contains(b)).collect())
    }

    /// The ISR with `follower` added if it is out of it and has caught up: its log reaches the
    /// high watermark and the start of the current leader epoch.
    pub fn maybe_expand(&self, follower: BrokerId) -> Option<BTreeSet<BrokerId>> {
        if self.isr.contains(&follower) {
            return None;
        }
        let state = self.followers.get(&follower)?;
        if state.log_end < self.high_watermark || state.log_end < self.epoch_start_offset {
            return None;
        }
        let mut isr = self.isr.clone();
        isr.insert(follower);
        Some(isr)
    }
}

// ---- leader epochs and truncation -------------------------------------------------------------

/// A replica's leader-epoch cache: for each leader epoch its log holds records of, the first
/// offset of that epoch (persisted next to the log).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochCache {
    /// (epoch, start offset), both strictly increasing.
    pub entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// Records that epoch `epoch` starts at `start_offset` (the first record appended in it).
    /// Earlier entries at or past that offset cannot be right any more and go.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) {
        if let Some(&(last, _)) = self.entries.last() {
            if epoch <= last {
                return;
            }
        }
        self.entries.retain(|&(_, start)| start < start_offset);
        self.entries.push((epoch, start_offset));
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Kafka's OffsetsForLeaderEpoch, answered from this cache and the log's end: the largest
    /// epoch at or below `epoch` that this log holds, and where it ends (the start of the next
    /// epoch, or the log end for the latest). `None` if the log has no epoch that old.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        let at = self.entries.iter().rposition(|&(e, _)| e <= epoch)?;
        let end = self.entries.get(at + 1).map_or(log_end, |&(_, start)| start);
        Some((self.entries[at].0, end))
    }

    /// Drops what the log no longer holds at or past `offset` (after truncation).
    pub fn truncate_from_end(&mut self, offset: i64) {
        self.entries.retain(|&(_, start)| start < offset);
    }
}

/// One step of a returning follower's truncation (Kafka's OffsetsForLeaderEpoch exchange).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Truncate the log to this offset (drop every record at or past it).
    pub offset: i64,
    /// `false`: ask the leader again about the follower's latest epoch after truncating.
    pub complete: bool,
}

/// Where a returning follower truncates its log, given the leader's answer to "where does my
/// latest epoch end?" (`leader_answer`: the largest epoch the leader holds at or below the
/// follower's latest, and its end offset on the leader; `None` if the leader holds no epoch
/// that old).
///
/// KIP-101: by epoch, never by the high watermark alone. KIP-279: when the leader answers with
/// an older epoch than the follower asked about, the follower compares with its own end of
/// that epoch; if it does not hold that epoch at all, its records after its largest older
/// epoch are not on the leader, so it cuts there and asks again.
pub fn truncation_step(follower: &EpochCache, follower_log_end: i64, leader_answer: Option<(i32, i64)>) -> Truncation {
    let Some((epoch, leader_end)) = leader_answer else { return Truncation { offset: 0, complete: true } };
    match follower.end_offset_for(epoch, follower_log_end) {
        Some((own_epoch, own_end)) if own_epoch == epoch => {
            Truncation { offset: leader_end.min(own_end).min(follower_log_end), complete: true }
        }
        Some((_, own_end)) => Truncation { offset: own_end.min(follower_log_end), complete: false },
        // Every epoch the follower holds is newer than anything the leader holds up to it.
        None => Truncation { offset: 0, complete: true },
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // the case tables spell out their columns
mod tests {
    use super::*;

    fn set(ids: &[BrokerId]) -> BTreeSet<BrokerId> {
        ids.iter().copied().collect()
    }

    fn reg(replicas: &[BrokerId], isr: &[BrokerId], leader: Option<BrokerId>) -> PartitionRegistration {
        PartitionRegistration {
            replicas: replicas.to_vec(),
            isr: set(isr),
            leader,
            leader_epoch: 5,
            partition_epoch: 9,
            reassignment: None,
        }
    }

    #[test]
    fn alter_partition_is_compare_and_set_on_the_epochs() {
        let current = reg(&[1, 2, 3], &[1, 2, 3], Some(1));
        let ask = |leader, leader_epoch, partition_epoch, isr: &[BrokerId]| AlterIsr {
            leader,
            leader_epoch,
            partition_epoch,
            isr: set(isr),
        };
        let none = BTreeSet::new();
        let cases: Vec<(AlterIsr, BTreeSet<BrokerId>, Result<BTreeSet<BrokerId>, AlterPartitionError>)> = vec![
            (ask(1, 5, 9, &[1, 2]), none.clone(), Ok(set(&[1, 2]))),
            (ask(2, 5, 9, &[1, 2]), none.clone(), Err(AlterPartitionError::NotLeader { leader: Some(1) })),
            (ask(1, 4, 9, &[1, 2]), none.clone(), Err(AlterPartitionError::FencedLeaderEpoch { expected: 5, got: 4 })),
            (
                ask(1, 5, 8, &[1, 2]),
                none.clone(),
                Err(AlterPartitionError::InvalidUpdateVersion { expected: 9, got: 8 }),
            ),
            (ask(1, 5, 9, &[2, 3]), none.clone(), Err(AlterPartitionError::LeaderNotInIsr)),
            (ask(1, 5, 9, &[1, 2, 3, 4]), none.clone(), Err(AlterPartitionError::IneligibleReplica { broker: 4 })),
        ];
        for (request, fenced, expected) in cases {
            let got = alter_partition(&current, &request, &fenced).map(|r| r.isr);
            assert_eq!(got, expected, "{request:?}");
        }
        // A shrink may drop a fenced broker; growing back to a fenced one is refused.
        let shrunk = reg(&[1, 2, 3], &[1, 2], Some(1));
        assert_eq!(
            alter_partition(&shrunk, &ask(1, 5, 9, &[1, 2, 3]), &set(&[3])),
            Err(AlterPartitionError::IneligibleReplica { broker: 3 })
        );
        let grown = alter_partition(&shrunk, &ask(1, 5, 9, &[1, 2, 3]), &none).expect("grows");
        assert_eq!((grown.partition_epoch, grown.leader_epoch), (10, 5), "partition epoch bumps, leader epoch stays");
        // The second request built on the old partition epoch loses.
        assert_eq!(
            alter_partition(&grown, &ask(1, 5, 9, &[1]), &none),
            Err(AlterPartitionError::InvalidUpdateVersion { expected: 10, got: 9 })
        );
    }

    #[test]
    fn leaders_are_elected_from_the_isr_in_preference_order() {
        let live = |ids: &[BrokerId]| set(ids);
        let cases: Vec<(PartitionRegistration, BTreeSet<BrokerId>, bool, Option<(BrokerId, BTreeSet<BrokerId>)>)> = vec![
            (reg(&[1, 2, 3], &[1, 2, 3], None), live(&[1, 2, 3]), false, Some((1, set(&[1, 2, 3])))),
            (reg(&[1, 2, 3], &[2, 3], None), live(&[1, 2, 3]), false, Some((2, set(&[2, 3])))),
            // Out of the ISR: never chosen cleanly, even if preferred and live.
            (reg(&[1, 2, 3], &[3], None), live(&[1, 2]), false, None),
            (reg(&[1, 2, 3], &[3], None), live(&[1, 2]), true, Some((1, set(&[1])))),
            (reg(&[1, 2, 3], &[1, 2, 3], None), live(&[]), true, None),
            // Dead ISR members leave the ISR that goes with the new leader.
            (reg(&[1, 2, 3], &[1, 2, 3], None), live(&[3]), false, Some((3, set(&[3])))),
        ];
        for (current, live, unclean, expected) in cases {
            assert_eq!(elect_leader(&current, &live, unclean), expected, "{current:?} live {live:?} unclean {unclean}");
        }
    }

    #[test]
    fn fencing_a_leader_moves_leadership_and_bumps_both_epochs() {
        let current = reg(&[1, 2, 3], &[1, 2, 3], Some(1));
        let next = fence_broker(&current, 1, &set(&[2, 3]), false).expect("changes");
        assert_eq!(next.leader, Some(2));
        assert_eq!(next.isr, set(&[2, 3]));
        assert_eq!((next.leader_epoch, next.partition_epoch), (6, 10));

        // A follower fenced: it leaves the ISR, the leader and its epoch stay.
        let next = fence_broker(&current, 3, &set(&[1, 2]), false).expect("changes");
        assert_eq!(
            (next.leader, next.isr.clone(), next.leader_epoch, next.partition_epoch),
            (Some(1), set(&[1, 2]), 5, 10)
        );

        // The last ISR member fenced: the partition goes offline and remembers it.
        let alone = reg(&[1, 2, 3], &[1], Some(1));
        let offline = fence_broker(&alone, 1, &set(&[2, 3]), false).expect("changes");
        assert_eq!((offline.leader, offline.isr.clone()), (None, set(&[1])));
        // It comes back, and only it may lead again (clean election).
        assert_eq!(unfence_broker(&offline, &set(&[2, 3]), false), None);
        let back = unfence_broker(&offline, &set(&[1, 2, 3]), false).expect("changes");
        assert_eq!((back.leader, back.leader_epoch), (Some(1), offline.leader_epoch + 1));

        // Fencing a broker that holds nothing here changes nothing.
        assert_eq!(fence_broker(&current, 7, &set(&[1, 2, 3]), false), None);
    }

    #[test]
    fn the_preferred_replica_gets_leadership_back_once_in_sync() {
        let led_by_2 = reg(&[1, 2, 3], &[2, 3], Some(2));
        assert_eq!(prefer_leader(&led_by_2, &set(&[1, 2, 3])), None, "1 is not in sync yet");
        let in_sync = reg(&[1, 2, 3], &[1, 2, 3], Some(2));
        let next = prefer_leader(&in_sync, &set(&[1, 2, 3])).expect("moves");
        assert_eq!((next.leader, next.leader_epoch), (Some(1), 6));
        assert_eq!(prefer_leader(&next, &set(&[1, 2, 3])), None);
    }

    #[test]
    fn a_reassignment_adds_the_target_replicas_and_drops_the_old_ones_once_the_targets_are_in_sync() {
        let live = set(&[1, 2, 3, 4, 5, 6]);
        let current = reg(&[1, 2, 3], &[1, 2, 3], Some(1));
        let moving = start_reassignment(&current, &[4, 5, 6], Some(1_000), &live).expect("starts");
        assert_eq!(moving.replicas, [4, 5, 6, 1, 2, 3], "the targets first, then the replicas leaving");
        assert_eq!(
            moving.reassignment,
            Some(Reassignment { adding: vec![4, 5, 6], removing: vec![1, 2, 3], throttle_bytes_per_sec: Some(1_000) })
        );
        assert_eq!((moving.leader, moving.leader_epoch, moving.partition_epoch), (Some(1), 5, 10));
        assert_eq!((moving.target_replicas(), moving.original_replicas()), (vec![4, 5, 6], vec![1, 2, 3]));

        // The leader adds the new replicas to the ISR as they catch up; with all three in sync the
        // move completes, and the leader, leaving, hands over to the first target in sync.
        let mut grown = moving.clone();
        grown.isr = set(&[1, 2, 3, 4, 5]);
        assert_eq!(complete_reassignment(&grown, &live), None, "6 is not in sync yet");
        grown.isr.insert(6);
        let done = complete_reassignment(&grown, &live).expect("completes");
        assert_eq!((done.replicas.clone(), done.isr.clone(), done.leader), (vec![4, 5, 6], set(&[4, 5, 6]), Some(4)));
        assert_eq!((done.reassignment.clone(), done.leader_epoch, done.partition_epoch), (None, 6, 11));
        assert_eq!(complete_reassignment(&done, &live), None, "nothing under way");

        // A target already in sync completes at once: one leader change, epochs bumped once.
        let shrunk = start_reassignment(&current, &[2, 3], None, &live).expect("starts");
        assert_eq!((shrunk.replicas.clone(), shrunk.isr.clone(), shrunk.leader), (vec![2, 3], set(&[2, 3]), Some(2)));
        assert_eq!((shrunk.reassignment.clone(), shrunk.leader_epoch, shrunk.partition_epoch), (None, 6, 10));
        // A new order only: the preferred leader changes, the leader does not.
        let reordered = start_reassignment(&current, &[3, 2, 1], None, &live).expect("starts");
        assert_eq!((reordered.replicas.clone(), reordered.leader, reordered.leader_epoch), (vec![3, 2, 1], Some(1), 5));

        // Refused targets.
        let refused: Vec<(&[BrokerId], ReassignError)> = vec![
            (&[], ReassignError::InvalidTarget("the target names no replica".into())),
            (&[4, 4], ReassignError::InvalidTarget("the target [4, 4] names a broker twice".into())),
            (&[4, 9], ReassignError::UnknownBroker(9)),
        ];
        for (target, expected) in refused {
            assert_eq!(start_reassignment(&current, target, None, &live), Err(expected), "{target:?}");
        }
    }

    #[test]
    fn a_reassignment_is_replaced_or_canceled_from_its_original_replicas() {
        let live = set(&[1, 2, 3, 4, 5, 6, 7]);
        let current = reg(&[1, 2, 3], &[1, 2, 3], Some(1));
        let mut moving = start_reassignment(&current, &[4, 5, 6], None, &live).expect("starts");
        moving.isr.insert(4);

        // Replaced: the original replicas are still [1, 2, 3]; 4, no longer wanted, leaves the ISR.
        let replaced = start_reassignment(&moving, &[1, 5, 7], None, &live).expect("replaces");
        assert_eq!(replaced.replicas, [1, 5, 7, 2, 3]);
        assert_eq!(replaced.isr, set(&[1, 2, 3]));
        assert_eq!(
            replaced.reassignment,
            Some(Reassignment { adding: vec![5, 7], removing: vec![2, 3], throttle_bytes_per_sec: None })
        );

        // Canceled: back to the original replicas, the adding ones out of the ISR.
        let canceled = cancel_reassignment(&moving, &live).expect("cancels");
        assert_eq!(
            (canceled.replicas.clone(), canceled.isr.clone(), canceled.reassignment.clone()),
            (vec![1, 2, 3], set(&[1, 2, 3]), None)
        );
        assert_eq!(canceled.leader, Some(1));
        assert_eq!(cancel_reassignment(&canceled, &live), Err(ReassignError::NoneUnderWay));

        // A new replica that took over leadership (the old ones failed) hands it back on cancel
        // to an original replica in sync; with none in sync the cancel is refused.
        let mut led_by_new = moving.clone();
        led_by_new.leader = Some(4);
        led_by_new.isr = set(&[2, 4]);
        let back = cancel_reassignment(&led_by_new, &live).expect("cancels");
        assert_eq!((back.leader, back.isr.clone(), back.leader_epoch), (Some(2), set(&[2]), 6));
        led_by_new.isr = set(&[4]);
        assert_eq!(cancel_reassignment(&led_by_new, &live), Err(ReassignError::NoInSyncOriginal));
    }

    fn tracker() -> FollowerTracker {
        FollowerTracker::new(1, &reg(&[1, 2, 3], &[1, 2, 3], Some(1)), 100, 100, 1_000)
    }

    #[test]
    fn the_high_watermark_is_the_lowest_isr_log_end_and_never_moves_back() {
        let mut t = tracker();
        t.on_fetch(2, 100, 100, 1_000);
        t.on_fetch(3, 100, 100, 1_000);
        // The leader appends to 150; followers at 120 and 140.
        t.on_fetch(2, 120, 150, 1_010);
        t.on_fetch(3, 140, 150, 1_010);
        assert_eq!(t.advance_high_watermark(150), 120);
        // Follower 2 leaves the ISR: the watermark follows the others.
        t.isr = set(&[1, 3]);
        assert_eq!(t.advance_high_watermark(150), 140);
        // A new ISR member behind the watermark does not pull it back.
        t.isr = set(&[1, 2, 3]);
        assert_eq!(t.advance_high_watermark(150), 140);
    }

    #[test]
    fn followers_that_stop_catching_up_leave_the_isr_and_return_when_caught_up_in_this_epoch() {
        let lag_max = 10_000;
        let mut t = tracker();
        // Both followers fetch the leader's end at 1s.
        t.on_fetch(2, 100, 100, 1_000);
        t.on_fetch(3, 100, 100, 1_000);
        // The leader writes on; follower 2 keeps reaching the end it saw on its previous fetch,
        // follower 3 stops fetching.
        let mut leader_end = 100;
        for second in 2..=20u64 {
            let previous_end = leader_end;
            leader_end += 10;
            t.on_fetch(2, previous_end, leader_end, second * 1_000);
        }
        assert_eq!(t.maybe_shrink(11_000, lag_max), None, "3 is 10 s behind: not past the limit yet");
        assert_eq!(t.maybe_shrink(20_000, lag_max), Some(set(&[1, 2])));
        t.isr = set(&[1, 2]);

        // 3 returns: below the high watermark it stays out; at it, it comes back.
        t.on_fetch(2, leader_end, leader_end, 20_500);
        let hw = t.advance_high_watermark(leader_end);
        t.on_fetch(3, hw - 1, leader_end, 21_000);
        assert_eq!(t.maybe_expand(3), None);
        t.on_fetch(3, hw, leader_end, 21_100);
        assert_eq!(t.maybe_expand(3), Some(set(&[1, 2, 3])));

        // A new leader epoch that started past the follower's log: it is not in sync yet even at
        // the high watermark of old records.
        let mut t = FollowerTracker::new(1, &reg(&[1, 2], &[1], Some(1)), 500, 400, 0);
        t.on_fetch(2, 450, 500, 1);
        t.high_watermark = 400;
        assert_eq!(t.maybe_expand(2), None, "has not reached the epoch start 500");
        t.on_fetch(2, 500, 500, 2);
        assert_eq!(t.maybe_expand(2), Some(set(&[1, 2])));
    }

    #[test]
    fn the_epoch_cache_answers_where_each_epoch_ends() {
        let mut cache = EpochCache::default();
        cache.assign(1, 0);
        cache.assign(1, 5); // same epoch again: no entry
        cache.assign(3, 10);
        cache.assign(2, 12); // older epoch: ignored
        assert_eq!(cache.entries, vec![(1, 0), (3, 10)]);
        let cases = [(0, None), (1, Some((1, 10))), (2, Some((1, 10))), (3, Some((3, 42))), (9, Some((3, 42)))];
        for (epoch, expected) in cases {
            assert_eq!(cache.end_offset_for(epoch, 42), expected, "epoch {epoch}");
        }
        // A new epoch starting at an offset earlier entries claim drops them.
        cache.assign(4, 10);
        assert_eq!(cache.entries, vec![(1, 0), (4, 10)]);
        cache.truncate_from_end(10);
        assert_eq!(cache.entries, vec![(1, 0)]);
    }

    /// Replicas' logs as (epoch of each record), and their epoch caches built from them.
    fn log(epochs: &[i32]) -> (EpochCache, i64) {
        let mut cache = EpochCache::default();
        for (offset, &epoch) in epochs.iter().enumerate() {
            cache.assign(epoch, offset as i64);
        }
        (cache, epochs.len() as i64)
    }

    /// The follower truncates as the protocol says, given what the leader holds, asking again
    /// while a step is not complete; returns the final offset and the number of rounds.
    fn truncate(follower: &[i32], leader: &[i32]) -> (i64, usize) {
        let (mut follower_cache, mut follower_end) = log(follower);
        let (leader_cache, leader_end) = log(leader);
        for round in 1..=follower.len() + 1 {
            let Some(asked) = follower_cache.latest_epoch() else { return (0, round) };
            let step = truncation_step(&follower_cache, follower_end, leader_cache.end_offset_for(asked, leader_end));
            follower_end = step.offset;
            follower_cache.truncate_from_end(step.offset);
            if step.complete {
                return (follower_end, round);
            }
        }
        panic!("truncation did not complete");
    }

    #[test]
    fn returning_followers_truncate_divergent_tails_by_epoch_never_by_high_watermark() {
        let cases: [(&[i32], &[i32], i64, usize, &str); 7] = [
            (&[1, 1, 1], &[1, 1, 1, 2], 3, 1, "same history, behind: nothing to cut"),
            (&[1, 1, 1], &[1, 1], 2, 1, "KIP-101: the leader lost offset 2 of epoch 1 (it was never in sync)"),
            (&[1, 1, 2], &[1, 1, 3], 2, 1, "the follower's epoch-2 record is not on the leader"),
            // KIP-279's double failover: the follower led epoch 2 briefly and wrote offsets 1
            // and 2; the leader holds epoch 1 through offset 1 and then epoch 3. Asked about
            // epoch 2 the leader answers "epoch 1 ends at 2"; cutting at 2 would keep two
            // different records at offset 1. The follower's own epoch 1 ends at 1.
            (&[1, 2, 2], &[1, 1, 3], 1, 1, "KIP-279 double failover"),
            // The leader answers with an epoch the follower never had: cut after the
            // follower's older epoch and ask again.
            (&[1, 1, 1, 1, 1, 3], &[1, 1, 1, 2, 2, 2, 2], 3, 2, "KIP-279 epoch unknown to the follower"),
            (&[2, 2], &[3, 3, 3], 0, 1, "no common epoch: everything goes"),
            (&[1, 1, 4, 4], &[1, 1, 4, 4, 4, 5], 4, 1, "the leader moved on: the follower is a prefix"),
        ];
        for (follower, leader, expected, rounds, why) in cases {
            let (at, took) = truncate(follower, leader);
            assert_eq!((at, took), (expected, rounds), "{why}: follower {follower:?} leader {leader:?}");
            // Whatever the follower keeps is identical to the leader's log there.
            assert_eq!(&follower[..at as usize], &leader[..at as usize], "{why}: kept a divergent record");
        }
    }
}
