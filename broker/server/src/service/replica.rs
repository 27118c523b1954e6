//! Partition replication between brokers, as Kafka does it: followers fetch from the leader
//! over the cluster endpoint (`RPC_REPLICA_FETCH`), the leader tracks them, moves the high
//! watermark to the lowest log end among the in-sync replicas, and asks the controller to
//! shrink or grow the ISR (AlterPartition); a follower whose log diverged from the leader's
//! truncates by leader epoch (KIP-101/279) before it copies anything.
//!
//! The rules are `weir_meta::replication`'s (pure); this module is the I/O around them:
//! [`reconcile`] turns the controller's partition registrations into this broker's roles
//! (leader of an epoch, follower of a broker, neither), one fetcher task per leader copies the
//! followed partitions, and one task per led partition keeps its high watermark and ISR.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_sdk::batch::validate_batch;
use weir_sdk::{ErrorCode, FlushMode, WireError};

use weir_meta::metadata::{Command, Event, Topic};
use weir_meta::replication::{truncation_step, EpochCache, FollowerTracker, PartitionRegistration};
use weir_storage::log::{PartitionId, PartitionState};

use super::Broker;

/// A follower's fetch from a partition leader.
pub const RPC_REPLICA_FETCH: u8 = 20;
/// Longest a leader holds a follower's fetch when it has nothing new.
const REPLICA_FETCH_WAIT_MS: u32 = 500;
/// Most bytes of batches one replica fetch answer carries.
const REPLICA_FETCH_BYTES_MAX: u32 = 8 * 1024 * 1024;
/// A follower's pause after a failed fetch (leader unreachable, or not leading yet).
const REPLICA_FETCH_BACKOFF: Duration = Duration::from_millis(100);
/// Kafka's `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
pub const REPLICA_LAG_TIME_MAX_MS: u64 = 10_000;
/// How long a leader waits after a refused AlterPartition before proposing another.
const ALTER_PARTITION_BACKOFF: Duration = Duration::from_millis(500);
/// How often a leader holding a throttled replica's fetch looks at its budget again.
const THROTTLED_RETRY: Duration = Duration::from_millis(50);
/// How long an `acks=all` produce waits for the in-sync replicas.
const ACKS_ALL_TIMEOUT: Duration = Duration::from_secs(30);

/// This broker's replication roles and the tasks that carry them out.
#[derive(Default)]
pub struct Replication {
    /// Partitions led here, with followers to track.
    leading: Mutex<HashMap<PartitionId, Arc<Mutex<Led>>>>,
    /// Partitions followed here: their leader and its epoch.
    following: Mutex<HashMap<PartitionId, (u64, i32)>>,
    /// The fetcher task of each leader followed.
    fetchers: Mutex<HashMap<u64, tokio::task::JoinHandle<()>>>,
    /// The high-watermark and ISR task of each led partition.
    keepers: Mutex<HashMap<PartitionId, tokio::task::JoinHandle<()>>>,
    /// Replicas moved away from this broker whose data is being removed.
    removing: Mutex<BTreeSet<PartitionId>>,
}

impl Drop for Replication {
    fn drop(&mut self) {
        for (_, task) in self.fetchers.get_mut().unwrap_or_else(|e| e.into_inner()).drain() {
            task.abort();
        }
        for (_, task) in self.keepers.get_mut().unwrap_or_else(|e| e.into_inner()).drain() {
            task.abort();
        }
    }
}

/// The ISR the high watermark counts: the registration's, and while a change is pending,
/// also every member of the proposed one.
fn maximal_isr(registered: &BTreeSet<u64>, pending: Option<&BTreeSet<u64>>) -> BTreeSet<u64> {
    registered.union(pending.unwrap_or(registered)).copied().collect()
}

impl Replication {
    /// Whether this broker has taken up the leadership of `id` (in a cluster).
    pub fn leads(&self, id: PartitionId) -> bool {
        lock(&self.leading).contains_key(&id)
    }
}

/// A partition this broker leads, in one leader epoch.
struct Led {
    topic: String,
    registration: PartitionRegistration,
    tracker: FollowerTracker,
    /// An AlterPartition of this partition is on its way to the controller, with the ISR it
    /// proposes. Until it is decided the high watermark counts the union of that ISR and the
    /// registration's (Kafka's maximal ISR): a replica being added counts at once, so the
    /// records acknowledged from then on are on it too, and nothing acknowledged is missing
    /// from it when it is in the ISR (and may lead); a replica being dropped counts until it is.
    altering: Option<BTreeSet<u64>>,
    /// No AlterPartition is proposed before this (after one was refused).
    quiet_until: Option<Instant>,
    /// What is sent to replicas being added by a throttled reassignment.
    throttle: Throttle,
}

impl Led {
    /// The ISR change on its way, if this tracker is of leader epoch `epoch`.
    fn clone_altering(&self, epoch: i32) -> Option<BTreeSet<u64>> {
        if self.registration.leader_epoch == epoch {
            self.altering.clone()
        } else {
            None
        }
    }
}

/// The leader's budget for what it sends replicas being added by a throttled reassignment
/// (a token bucket that may go into debt by one answer, refilled at the throttle's rate).
#[derive(Default)]
struct Throttle {
    /// Bytes that may be sent now (negative: owed).
    tokens: i64,
    refilled: Option<Instant>,
}

impl Throttle {
    /// How many bytes an answer to an adding replica may carry now under `rate` bytes per
    /// second (0: none until the debt is paid).
    fn room(&mut self, rate: u64, now: Instant) -> usize {
        let rate = i64::try_from(rate).unwrap_or(i64::MAX).max(1);
        let elapsed = self.refilled.map_or(Duration::from_secs(1), |t| now.saturating_duration_since(t));
        let refill = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX).saturating_mul(rate) / 1000;
        // At most one second's worth is saved up.
        self.tokens = self.tokens.saturating_add(refill).min(rate);
        self.refilled = Some(now);
        usize::try_from(self.tokens).unwrap_or(0)
    }

    fn spend(&mut self, bytes: usize) {
        self.tokens = self.tokens.saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// What wakes a held replica fetch for a partition with nothing to send yet.
enum Wake {
    /// New records on the leader.
    End(tokio::sync::watch::Receiver<i64>),
    /// A throttled replica's budget refilling.
    Throttled,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    u64::try_from(weir_sdk::now_ms()).unwrap_or(0)
}

#[derive(Serialize, Deserialize)]
struct FetchRequest {
    replica: u64,
    partitions: Vec<FetchPartition>,
}

#[derive(Serialize, Deserialize)]
struct FetchPartition {
    topic_id: u64,
    partition: u32,
    fetch_offset: i64,
    leader_epoch: i32,
    /// The epoch of the follower's last batch: the leader checks the follower's log ends
    /// where its own log of that epoch does.
    last_fetched_epoch: Option<i32>,
}

/// A partition's answer; its batches follow the JSON header, `batch_bytes` long each.
#[derive(Serialize, Deserialize)]
struct Fetched {
    topic_id: u64,
    partition: u32,
    error: Option<WireError>,
    high_watermark: i64,
    /// The follower's log diverged: the leader's (epoch, end offset of it) for its
    /// `last_fetched_epoch`; `(-1, -1)` when the leader holds no epoch that old.
    diverging: Option<(i32, i64)>,
    /// The leader's log start: a follower whose log ends below it starts again there, and one
    /// whose log starts below it drops what the leader no longer holds.
    #[serde(default)]
    log_start_offset: i64,
    batch_bytes: Vec<u32>,
}

/// A leader's answer as the chunks written one after another: the length of the JSON
/// headers, the headers, then every partition's batches as read (not copied together).
fn encode(answers: Vec<(Fetched, Vec<Bytes>)>) -> Vec<Bytes> {
    let (headers, batches): (Vec<Fetched>, Vec<Vec<Bytes>>) = answers.into_iter().unzip();
    let header = serde_json::to_vec(&headers).unwrap_or_default();
    let mut out = Vec::with_capacity(2 + batches.iter().map(Vec::len).sum::<usize>());
    out.push(Bytes::copy_from_slice(&u32::try_from(header.len()).unwrap_or(u32::MAX).to_be_bytes()));
    out.push(Bytes::from(header));
    out.extend(batches.into_iter().flatten());
    out
}

/// Splits a leader's answer into each partition's header and batches, which share the answer's
/// buffer (no copy).
fn decode(bytes: Vec<u8>) -> Option<Vec<(Fetched, Vec<Bytes>)>> {
    let length = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let headers: Vec<Fetched> = serde_json::from_slice(bytes.get(4..4usize.checked_add(length)?)?).ok()?;
    let mut rest = Bytes::from(bytes).slice(4 + length..);
    let mut out = Vec::with_capacity(headers.len());
    for h in headers {
        let mut batches = Vec::with_capacity(h.batch_bytes.len());
        for len in &h.batch_bytes {
            let len = *len as usize;
            if len > rest.len() {
                return None;
            }
            batches.push(rest.split_to(len));
        }
        out.push((h, batches));
    }
    rest.is_empty().then_some(out)
}

/// Brings this broker's roles in line with the controller's registrations: leads the
/// partitions it is leader of (stamping their epoch on appends), follows the others it
/// replicates, and starts or stops the tasks that go with them.
pub fn reconcile(broker: &Broker) {
    let me = broker.config.node_id;
    let topics: Vec<std::sync::Arc<Topic>> = broker.controller.state().topics.values().cloned().collect();
    let may_lead = broker.controller.may_lead();
    let replication = &broker.replication;
    let mut wanted_leading = BTreeSet::new();
    let mut wanted_following = HashMap::new();
    let mut moved_away = Vec::new();
    for topic in &topics {
        for (partition, registration) in topic.assignment.iter().enumerate() {
            let id = PartitionId { topic_id: topic.id, partition: u32::try_from(partition).unwrap_or(u32::MAX) };
            if !registration.replicas.contains(&me) {
                if let Some(state) = broker.log.partition(id) {
                    moved_away.push(state);
                }
                continue;
            }
            let state = match broker.log.partition(id).map_or_else(|| broker.log.open_partition(id), Ok) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(topic = %topic.name, partition, error = %e, "cannot open a replica");
                    continue;
                }
            };
            match registration.leader {
                // Led here by a registration of this broker that is not live (this process
                // has not registered yet, or was fenced): not taken up.
                Some(leader) if leader == me && !may_lead => state.follow(),
                Some(leader) if leader == me => {
                    wanted_leading.insert(id);
                    let mut leading = lock(&replication.leading);
                    let current = leading.get(&id).cloned();
                    // The same leader epoch with the same replicas: the ISR may have changed. New
                    // replicas (a reassignment) get a new tracker below.
                    let same = |led: &Led| {
                        led.registration.leader_epoch == registration.leader_epoch
                            && led.registration.replicas == registration.replicas
                    };
                    match current {
                        Some(led) if same(&lock(&led)) => {
                            let mut led = lock(&led);
                            // Also after an unanswered ISR change: the registration decides.
                            let isr = maximal_isr(&registration.isr, led.altering.as_ref());
                            if led.registration != *registration || led.tracker.isr != isr {
                                led.tracker.isr = isr;
                                led.registration = registration.clone();
                                // A smaller ISR may let the high watermark move at once.
                                let hw = led.tracker.advance_high_watermark(state.end_offset());
                                state.set_high_watermark(hw);
                            }
                        }
                        current => {
                            state.lead(registration.leader_epoch, registration.replicas.len() > 1);
                            let mut tracker = FollowerTracker::new(
                                me,
                                registration,
                                state.end_offset(),
                                state.high_watermark(),
                                now_ms(),
                            );
                            // In the same epoch (the replicas changed), an ISR change on its way
                            // still counts (the maximal ISR), and is dropped by its answer.
                            let altering = current
                                .map(|led| lock(&led).clone_altering(registration.leader_epoch))
                                .unwrap_or_default();
                            tracker.isr = maximal_isr(&registration.isr, altering.as_ref());
                            let led = Arc::new(Mutex::new(Led {
                                topic: topic.name.clone(),
                                registration: registration.clone(),
                                tracker,
                                altering,
                                quiet_until: None,
                                throttle: Throttle::default(),
                            }));
                            leading.insert(id, led.clone());
                            tracing::info!(topic = %topic.name, partition, epoch = registration.leader_epoch, isr = ?registration.isr, "leading partition");
                            let task = (registration.replicas.len() > 1)
                                .then(|| tokio::spawn(keep_led_partition(broker.clone(), id, state.clone(), led)));
                            let mut keepers = lock(&replication.keepers);
                            let old = match task {
                                Some(task) => keepers.insert(id, task),
                                None => keepers.remove(&id),
                            };
                            if let Some(old) = old {
                                old.abort();
                            }
                        }
                    }
                }
                Some(leader) => {
                    state.follow();
                    wanted_following.insert(id, (leader, registration.leader_epoch));
                }
                None => state.follow(),
            }
        }
    }
    {
        let mut leading = lock(&replication.leading);
        leading.retain(|id, _| wanted_leading.contains(id));
        lock(&replication.keepers).retain(|id, task| {
            let keep = wanted_leading.contains(id);
            if !keep {
                task.abort();
            }
            keep
        });
    }
    let leaders: BTreeSet<u64> = wanted_following.values().map(|(leader, _)| *leader).collect();
    {
        let mut following = lock(&replication.following);
        for (id, (leader, epoch)) in &wanted_following {
            if following.get(id) != Some(&(*leader, *epoch)) {
                tracing::info!(topic_id = id.topic_id, partition = id.partition, leader, epoch, "following partition");
            }
        }
        *following = wanted_following;
    }
    let mut fetchers = lock(&replication.fetchers);
    fetchers.retain(|leader, task| {
        let keep = leaders.contains(leader) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    for leader in leaders {
        fetchers.entry(leader).or_insert_with(|| tokio::spawn(fetch_from(broker.clone(), leader)));
    }
    drop(fetchers);
    // A replica moved to other brokers (a completed reassignment) is removed, once this
    // process is registered: its metadata then holds everything decided before it started, so
    // a replica moved back meanwhile is not taken for one moved away.
    if may_lead {
        for state in moved_away {
            if lock(&replication.removing).insert(state.id) {
                tokio::spawn(remove_replica(broker.clone(), state));
            }
        }
    }
}

/// Drops the data of a replica this broker no longer holds (records, indexes, epochs,
/// producer states), unless it became a replica here again meanwhile.
async fn remove_replica(broker: Broker, state: Arc<PartitionState>) {
    let id = state.id;
    let held = state.end_offset() > 0;
    let wanted_again = |broker: &Broker| {
        lock(&broker.replication.following).contains_key(&id) || lock(&broker.replication.leading).contains_key(&id)
    };
    let outcome = async {
        if wanted_again(&broker) {
            return Ok(false);
        }
        broker.log.truncate(state, 0).await?;
        if wanted_again(&broker) {
            return Ok(false);
        }
        broker.log.delete_partition(id).map(|()| true)
    }
    .await;
    match outcome {
        Ok(true) if held => {
            tracing::info!(topic_id = id.topic_id, partition = id.partition, "removed a replica moved to other brokers")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(topic_id = id.topic_id, partition = id.partition, error = %e, "removing a moved replica failed")
        }
    }
    lock(&broker.replication.removing).remove(&id);
}

/// Keeps this broker's roles in line with the controller's registrations until `stop`.
pub async fn run_replication(broker: Broker, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut events = broker.controller.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        reconcile(&broker);
        tokio::select! {
            _ = events.recv() => {}
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
    }
    let replication = &broker.replication;
    for (_, task) in lock(&replication.fetchers).drain() {
        task.abort();
    }
    for (_, task) in lock(&replication.keepers).drain() {
        task.abort();
    }
    lock(&replication.leading).clear();
}

/// The leader's side of one led partition with followers: moves its high watermark as its own
/// log grows (the ISR may be the leader alone) and drops followers that fall behind from the
/// ISR. Ends when the partition is no longer led in this epoch (the task is aborted).
async fn keep_led_partition(broker: Broker, id: PartitionId, state: Arc<PartitionState>, led: Arc<Mutex<Led>>) {
    let mut end = state.subscribe_end();
    let tick = Duration::from_millis(REPLICA_LAG_TIME_MAX_MS / 4);
    loop {
        let shrink = {
            let mut led = lock(&led);
            let hw = led.tracker.advance_high_watermark(state.end_offset());
            state.set_high_watermark(hw);
            led.tracker.maybe_shrink(now_ms(), REPLICA_LAG_TIME_MAX_MS)
        };
        if let Some(isr) = shrink {
            alter_isr(&broker, id, &led, isr);
        }
        let _ = tokio::time::timeout(tick, end.changed()).await;
    }
}

/// Proposes a new ISR for a led partition (one proposal at a time per partition).
fn alter_isr(broker: &Broker, id: PartitionId, led: &Arc<Mutex<Led>>, isr: BTreeSet<u64>) {
    let command = prepare_alter_isr(&mut lock(led), broker.config.node_id, id, isr);
    if let Some(command) = command {
        send_alter_isr(broker, id, led, command);
    }
}

/// The AlterPartition to send for a new ISR, if one may be proposed now; from here on the
/// high watermark counts the proposed members too (the maximal ISR). Called under the lock in
/// which the change was decided, so no high watermark moves past a joining replica's log end
/// between the decision and the proposal.
fn prepare_alter_isr(guard: &mut Led, node_id: u64, id: PartitionId, isr: BTreeSet<u64>) -> Option<Command> {
    if guard.altering.is_some()
        || guard.registration.isr == isr
        || guard.quiet_until.is_some_and(|t| Instant::now() < t)
    {
        return None;
    }
    guard.tracker.isr = maximal_isr(&guard.registration.isr, Some(&isr));
    guard.altering = Some(isr.clone());
    tracing::info!(topic = %guard.topic, partition = id.partition, from = ?guard.registration.isr, to = ?isr, "proposing an ISR change");
    Some(Command::AlterPartition {
        topic_id: id.topic_id,
        partition: id.partition,
        leader: node_id,
        leader_epoch: guard.registration.leader_epoch,
        partition_epoch: guard.registration.partition_epoch,
        isr,
    })
}

fn send_alter_isr(broker: &Broker, id: PartitionId, led: &Arc<Mutex<Led>>, command: Command) {
    let (broker, led) = (broker.clone(), led.clone());
    let (epoch, proposed) = match &command {
        Command::AlterPartition { leader_epoch, isr, .. } => (*leader_epoch, isr.clone()),
        _ => return,
    };
    tokio::spawn(async move {
        let outcome = broker.controller.propose(command).await;
        // The partition may have got a new tracker meanwhile (its replicas changed in this
        // epoch), which carried the proposal over: the answer goes to the one holding it.
        let current = lock(&broker.replication.leading).get(&id).cloned();
        let holder = [current, Some(led)].into_iter().flatten().find(|l| {
            let l = lock(l);
            l.registration.leader_epoch == epoch && l.altering.as_ref() == Some(&proposed)
        });
        let Some(holder) = holder else { return };
        let mut guard = lock(&holder);
        guard.altering = None;
        match outcome {
            Ok(Event::PartitionAltered { registration, .. })
                if registration.leader_epoch == guard.registration.leader_epoch
                    && registration.partition_epoch > guard.registration.partition_epoch =>
            {
                guard.tracker.isr = registration.isr.clone();
                guard.registration = registration;
                if let Some(state) = broker.log.partition(id) {
                    let hw = guard.tracker.advance_high_watermark(state.end_offset());
                    state.set_high_watermark(hw);
                }
            }
            Ok(_) => guard.tracker.isr = guard.registration.isr.clone(),
            Err(e) => {
                // The change may have been applied all the same (an answer lost on its way
                // back): the high watermark keeps counting the proposed members until the
                // next reconcile reads the registration as the metadata has it.
                tracing::info!(partition = id.partition, error = %e, "ISR change refused or unanswered");
                guard.quiet_until = Some(Instant::now() + ALTER_PARTITION_BACKOFF);
            }
        }
    });
}

impl Broker {
    /// Answers a follower's fetch (`RPC_REPLICA_FETCH`) for partitions this broker leads:
    /// checks its leader epoch and its log's divergence, records how far it has come (which
    /// may move the high watermark and grow the ISR), and returns the batches from its log
    /// end, long-polling while there are none.
    pub async fn answer_replica_fetch(&self, body: Vec<u8>) -> Vec<Bytes> {
        let request: FetchRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(_) => return encode(Vec::new()),
        };
        let deadline = Instant::now() + Duration::from_millis(u64::from(REPLICA_FETCH_WAIT_MS));
        loop {
            let mut watchers = Vec::new();
            let mut answers = Vec::with_capacity(request.partitions.len());
            let mut room = REPLICA_FETCH_BYTES_MAX as usize;
            let mut worth_answering = false;
            let mut throttled = false;
            for p in &request.partitions {
                let (answer, batches, wake) = self.replica_fetch_partition(request.replica, p, room);
                room = room.saturating_sub(batches.iter().map(Bytes::len).sum());
                worth_answering |= !batches.is_empty() || answer.error.is_some() || answer.diverging.is_some();
                match wake {
                    Some(Wake::End(watcher)) => watchers.push(watcher),
                    Some(Wake::Throttled) => throttled = true,
                    None => {}
                }
                answers.push((answer, batches));
            }
            let now = Instant::now();
            if worth_answering || now >= deadline || (watchers.is_empty() && !throttled) {
                return encode(answers);
            }
            if throttled {
                // Over a reassignment's budget: try again when some of it is back.
                let wait = (deadline - now).min(THROTTLED_RETRY);
                let changed = async {
                    if watchers.is_empty() {
                        std::future::pending::<()>().await;
                    }
                    let _ = futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed()))).await;
                };
                let _ = tokio::time::timeout(wait, changed).await;
                continue;
            }
            let changed = futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            let _ = tokio::time::timeout(deadline - now, changed).await;
        }
    }

    fn replica_fetch_partition(
        &self,
        replica: u64,
        p: &FetchPartition,
        room: usize,
    ) -> (Fetched, Vec<Bytes>, Option<Wake>) {
        let id = PartitionId { topic_id: p.topic_id, partition: p.partition };
        let mut answer = Fetched {
            topic_id: p.topic_id,
            partition: p.partition,
            error: None,
            high_watermark: -1,
            diverging: None,
            log_start_offset: 0,
            batch_bytes: Vec::new(),
        };
        let refuse = |mut answer: Fetched, code, why: String| {
            answer.error = Some(WireError::new(code, why));
            (answer, Vec::new(), None)
        };
        let Some(led) = lock(&self.replication.leading).get(&id).cloned() else {
            return refuse(
                answer,
                ErrorCode::NotLeaderOrFollower,
                format!("broker {} does not lead {id:?}", self.config.node_id),
            );
        };
        let (epoch, assigned) = {
            let led = lock(&led);
            (led.registration.leader_epoch, led.registration.replicas.contains(&replica))
        };
        // A broker that is not a replica in the registration this leader holds (one being
        // added that it has not taken up yet, or one removed) gets nothing.
        if !assigned {
            return refuse(
                answer,
                ErrorCode::NotLeaderOrFollower,
                format!("broker {replica} is not a replica of {id:?} as its leader knows it"),
            );
        }
        if p.leader_epoch < epoch {
            return refuse(
                answer,
                ErrorCode::FencedLeaderEpoch,
                format!("leader epoch {} is older than {epoch}", p.leader_epoch),
            );
        }
        if p.leader_epoch > epoch {
            return refuse(
                answer,
                ErrorCode::UnknownLeaderEpoch,
                format!("leader epoch {} is newer than {epoch}", p.leader_epoch),
            );
        }
        let Some(state) = self.log.partition(id) else {
            return refuse(answer, ErrorCode::NotLeaderOrFollower, format!("{id:?} is not open here"));
        };
        let log_end = state.end_offset();
        answer.log_start_offset = state.log_start_offset();
        // Does the follower's log end where the leader's log of its last epoch ends?
        if let Some(last) = p.last_fetched_epoch {
            let cache = EpochCache { entries: state.epochs() };
            match cache.end_offset_for(last, log_end) {
                Some((held, end)) if held == last && end >= p.fetch_offset => {}
                Some((held, end)) => {
                    answer.diverging = Some((held, end));
                    return (answer, Vec::new(), None);
                }
                None => {
                    answer.diverging = Some((-1, -1));
                    return (answer, Vec::new(), None);
                }
            }
        }
        if p.fetch_offset > log_end {
            let latest = state.epochs().last().map_or(-1, |&(e, _)| e);
            answer.diverging = Some((latest, log_end));
            return (answer, Vec::new(), None);
        }
        let expand = {
            let mut led = lock(&led);
            led.tracker.on_fetch(replica, p.fetch_offset, log_end, now_ms());
            let hw = led.tracker.advance_high_watermark(log_end);
            state.set_high_watermark(hw);
            let expand = led.tracker.maybe_expand(replica);
            if expand.is_some() {
                tracing::debug!(
                    partition = id.partition,
                    replica,
                    fetch_offset = p.fetch_offset,
                    high_watermark = hw,
                    epoch_start = led.tracker.epoch_start_offset,
                    "a follower caught up"
                );
            }
            // Proposed under this lock: the replica counts for the high watermark before any
            // other fetch or append can move it past this replica's log end.
            expand.and_then(|isr| prepare_alter_isr(&mut led, self.config.node_id, id, isr))
        };
        if let Some(command) = expand {
            send_alter_isr(self, id, &led, command);
        }
        answer.high_watermark = state.high_watermark();
        // A replica being added by a throttled reassignment gets what the budget allows.
        let throttled = {
            let mut led = lock(&led);
            let rate = led
                .registration
                .reassignment
                .as_ref()
                .filter(|r| r.adding.contains(&replica))
                .and_then(|r| r.throttle_bytes_per_sec);
            rate.map(|rate| led.throttle.room(rate, Instant::now()))
        };
        if throttled == Some(0) {
            return (answer, Vec::new(), Some(Wake::Throttled));
        }
        match self.log.read_replica(&state, p.fetch_offset, throttled.map_or(room, |t| t.min(room))) {
            Ok(batches) => {
                if throttled.is_some() {
                    lock(&led).throttle.spend(batches.iter().map(Bytes::len).sum());
                }
                answer.batch_bytes = batches.iter().map(|b| u32::try_from(b.len()).unwrap_or(u32::MAX)).collect();
                let watcher = batches.is_empty().then(|| Wake::End(state.subscribe_end()));
                (answer, batches, watcher)
            }
            Err(e) => {
                answer.error = Some(e);
                (answer, Vec::new(), None)
            }
        }
    }

    /// Before an `acks=all` append to a partition led here with followers: refused when
    /// fewer replicas are in sync than the topic's `min.insync.replicas`. Returns the led
    /// partition's leader epoch (`None`: not replicated, nothing to wait for).
    pub(super) fn check_insync(&self, topic: &Topic, id: PartitionId) -> Result<Option<i32>, WireError> {
        let Some(led) = lock(&self.replication.leading).get(&id).cloned() else { return Ok(None) };
        let led = lock(&led);
        if led.registration.replicas.len() <= 1 {
            return Ok(None);
        }
        let (insync, min) = (led.registration.isr.len(), topic.min_insync_replicas());
        if insync < min {
            return Err(WireError::new(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "partition {} of topic {:?} has {insync} in-sync replicas {:?}, fewer than its min.insync.replicas = {min}",
                    id.partition, topic.name, led.registration.isr
                ),
            ));
        }
        Ok(Some(led.registration.leader_epoch))
    }

    /// Waits until the high watermark of a led partition reaches `end` (every in-sync replica
    /// has the records below it). Fails when the ISR falls below `min_insync`, when this broker
    /// stops leading in `epoch`, or after [`ACKS_ALL_TIMEOUT`].
    pub(super) fn await_replicas(
        &self,
        id: PartitionId,
        epoch: i32,
        end: i64,
        min_insync: usize,
    ) -> impl std::future::Future<Output = Result<(), WireError>> + Send + 'static {
        let replication = self.replication.clone();
        let state = self.log.partition(id);
        async move {
            let Some(state) = state else { return Ok(()) };
            let mut hw = state.subscribe();
            let deadline = tokio::time::Instant::now() + ACKS_ALL_TIMEOUT;
            loop {
                // The high watermark counts only while this broker still leads in `epoch`: one
                // that became a follower takes its new leader's high watermark, over a log whose
                // records at these offsets may be others (its own are truncated).
                let reached = *hw.borrow_and_update() >= end;
                if reached && state.leader_epoch() == Some(epoch) {
                    return Ok(());
                }
                let led = lock(&replication.leading).get(&id).cloned();
                let Some(led) = led.filter(|l| lock(l).registration.leader_epoch == epoch) else {
                    return Err(WireError::new(
                        ErrorCode::NotLeaderOrFollower,
                        format!("partition {} changed leader before its replicas had the records", id.partition),
                    ));
                };
                let insync = lock(&led).registration.isr.len();
                if insync < min_insync {
                    return Err(WireError::new(
                        ErrorCode::NotEnoughReplicasAfterAppend,
                        format!(
                            "partition {}: the in-sync replicas fell to {insync}, below min.insync.replicas = {min_insync}, before they had the records",
                            id.partition
                        ),
                    ));
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(WireError::new(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "partition {}: the in-sync replicas did not have the records within {ACKS_ALL_TIMEOUT:?}",
                            id.partition
                        ),
                    ));
                }
                let wait = (deadline - now).min(Duration::from_millis(100));
                let _ = tokio::time::timeout(wait, hw.changed()).await;
            }
        }
    }
}

/// A follower's fetcher for every partition it follows on `leader`: fetches from each one's
/// log end, truncates a diverged tail first, appends what the leader sends and takes its high
/// watermark. Ends when this broker follows nothing on `leader` any more.
async fn fetch_from(broker: Broker, leader: u64) {
    let me = broker.config.node_id;
    loop {
        let followed: Vec<(PartitionId, i32, Arc<PartitionState>)> = lock(&broker.replication.following)
            .iter()
            .filter(|(_, (l, _))| *l == leader)
            .filter_map(|(id, (_, epoch))| broker.log.partition(*id).map(|s| (*id, *epoch, s)))
            .collect();
        if followed.is_empty() {
            return;
        }
        let request = FetchRequest {
            replica: me,
            partitions: followed
                .iter()
                .map(|(id, epoch, state)| FetchPartition {
                    topic_id: id.topic_id,
                    partition: id.partition,
                    fetch_offset: state.end_offset(),
                    leader_epoch: *epoch,
                    last_fetched_epoch: state.epochs().last().map(|&(e, _)| e),
                })
                .collect(),
        };
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let timeout = Duration::from_millis(u64::from(REPLICA_FETCH_WAIT_MS)) + Duration::from_secs(5);
        let answers = match broker.controller.ask(leader, RPC_REPLICA_FETCH, &body, timeout).await {
            Ok(bytes) => decode(bytes),
            Err(e) => {
                tracing::debug!(leader, error = %e, "replica fetch failed");
                None
            }
        };
        let Some(answers) = answers else {
            tokio::time::sleep(REPLICA_FETCH_BACKOFF).await;
            continue;
        };
        let mut backoff = false;
        for (answer, batches) in answers {
            let id = PartitionId { topic_id: answer.topic_id, partition: answer.partition };
            let Some((_, epoch, state)) = followed.iter().find(|(f, _, _)| *f == id) else { continue };
            // Still following this leader in this epoch?
            if lock(&broker.replication.following).get(&id) != Some(&(leader, *epoch)) {
                continue;
            }
            if let Err(e) = copy(&broker, state, answer, batches).await {
                tracing::debug!(leader, partition = id.partition, error = %e, "replica fetch of a partition failed");
                backoff = true;
            }
        }
        if backoff {
            tokio::time::sleep(REPLICA_FETCH_BACKOFF).await;
        }
    }
}

/// Applies one partition's answer to a follower's fetch.
async fn copy(
    broker: &Broker,
    state: &Arc<PartitionState>,
    answer: Fetched,
    batches: Vec<Bytes>,
) -> Result<(), WireError> {
    if let Some(e) = answer.error {
        // The leader no longer holds the records after this replica's end (retention, deleted
        // records, or a new replica of an old partition): start again at its log start.
        if e.code == ErrorCode::OffsetOutOfRange && answer.log_start_offset > state.end_offset() {
            tracing::info!(
                partition = state.id.partition,
                log_end = state.end_offset(),
                leader_log_start = answer.log_start_offset,
                "the leader's log starts past this replica's end: starting again there"
            );
            broker.log.restart_at(state.clone(), answer.log_start_offset).await?;
            return Ok(());
        }
        return Err(e);
    }
    if let Some((epoch, end)) = answer.diverging {
        let leader_answer = (epoch >= 0).then_some((epoch, end));
        let step = truncation_step(&EpochCache { entries: state.epochs() }, state.end_offset(), leader_answer);
        tracing::info!(
            partition = state.id.partition,
            to = step.offset,
            log_end = state.end_offset(),
            "truncating a diverged replica"
        );
        broker.log.truncate(state.clone(), step.offset).await?;
        return Ok(());
    }
    if !batches.is_empty() {
        let parsed = batches.into_iter().map(|b| validate_batch(&b).map(|h| (h, b))).collect::<Result<Vec<_>, _>>()?;
        let fsync = broker
            .controller
            .state()
            .topics
            .values()
            .find(|t| t.id == state.id.topic_id)
            .is_some_and(|t| t.config.flush == FlushMode::Always);
        broker.log.append_replica(state.clone(), parsed, fsync).await?;
    }
    state.set_high_watermark(answer.high_watermark);
    // The leader's log start moved on (retention, deleted records): this replica's too.
    if answer.log_start_offset > state.log_start_offset() && answer.log_start_offset <= state.end_offset() {
        broker.log.delete_records(state, answer.log_start_offset)?;
    }
    Ok(())
}
