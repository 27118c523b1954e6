//! The async producer: batches records per partition by size and linger, compresses, pipelines
//! up to `max_in_flight_per_partition` batches per partition (their requests opened in batch
//! order, so the broker appends them in order; set 1 so retries cannot reorder either), sends
//! the batches of a topic's partitions that are ready together in one request per broker, and
//! resolves a delivery future per record with the offset the broker gave it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::batch::{encode_batch, encode_idempotent_batch, Compression, Record};
use crate::client::{Admin, Client, PendingResponse};
use crate::error::ClientError;
use crate::error::ErrorCode;
use crate::partitioner::partition_for_key;
use crate::router::Router;
use crate::wire::{Acks, Frame, FrameKind, ProducePartition, ProduceRequest, ProduceResponse};

/// Leader connections a topic's sender keeps counting requests in flight for before it drops
/// the idle ones (a broker reconnected to is a new client).
const IN_FLIGHT_CLIENTS_KEPT: usize = 16;

/// Largest number of batches of one partition an idempotent producer has in flight: the
/// broker remembers this many per producer to answer retries (as Kafka).
const IDEMPOTENT_IN_FLIGHT_MAX: usize = 5;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a partition's first record waits for more before its batch is sent.
    pub linger: Duration,
    /// A batch is sent once its records reach this many bytes.
    pub batch_bytes: usize,
    pub compression: Compression,
    /// Give up on a record this long after `send` (retries included).
    pub delivery_timeout: Duration,
    pub retry_backoff: Duration,
    /// Bytes of records accepted but not yet acknowledged; `send` waits while this is full.
    pub buffer_bytes: usize,
    /// How long the broker may wait for replication/fsync before answering.
    pub request_timeout_ms: u32,
    /// Batches of one partition sent before the first is acknowledged. Above 1, a batch that
    /// fails and is retried can land after one sent later (as in Kafka without idempotence);
    /// set 1 when order across retries matters more than throughput. With idempotence the
    /// broker keeps order and drops duplicates for up to 5 in flight.
    pub max_in_flight_per_partition: usize,
    /// Idempotent producer (as Kafka's `enable.idempotence`, on by default with `acks=all`):
    /// the producer takes a producer id from the broker and numbers its batches per
    /// partition, so a batch retried after a lost answer or a broker restart is stored once
    /// and in order. Applies only with `acks=all`.
    pub enable_idempotence: bool,
    /// Batches of one topic queued for the same broker go in one request of up to this many
    /// bytes (Kafka's `max.request.size`); a larger batch goes alone.
    pub request_bytes: usize,
    /// Produce requests of one topic to one broker sent before the first is answered, so a
    /// producer leaves its connection's other streams (fetches, metadata) room; batches that
    /// become ready meanwhile wait and go together in the next request. Kafka's
    /// `max.in.flight.requests.per.connection` is 5, but its requests carry 16 KiB batches
    /// where Weir's carry 256 KiB and more: 5 held the producer to a quarter less with 1 MiB
    /// batches over 8 partitions, and to a fifth to a third less with 4 KiB batches over
    /// 1,000 (BENCHMARKS.md, tenth session). Per partition, `max_in_flight_per_partition` applies.
    pub max_requests_in_flight: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes: 256 * 1024,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            buffer_bytes: 64 * 1024 * 1024,
            request_timeout_ms: 30_000,
            max_in_flight_per_partition: 5,
            enable_idempotence: true,
            request_bytes: 1024 * 1024,
            max_requests_in_flight: 64,
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub partition: u32,
    /// `-1` with `acks=none`, where the broker does not answer.
    pub offset: i64,
}

type Reply = oneshot::Sender<Result<Delivery, ClientError>>;
type Pending = (Record, Reply, OwnedSemaphorePermit);

/// Where the records of one [`Producer::send_batch`] landed: one part per partition they went
/// to, each stored as one record batch at consecutive offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchDelivery {
    pub topic: String,
    pub parts: Vec<BatchPart>,
    /// For each record given, in order, its part (empty when there is one part).
    assignment: Vec<u32>,
}

/// The records of a [`BatchDelivery`] stored in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPart {
    pub partition: u32,
    /// Offset of the part's first record; `-1` with `acks=none`.
    pub base_offset: i64,
    pub records: usize,
}

impl BatchDelivery {
    /// Records delivered.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.records).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The partition and offset of each record, in the order they were given (offsets are
    /// `-1` with `acks=none`).
    pub fn offsets(&self) -> Vec<(u32, i64)> {
        let mut next: Vec<i64> = self.parts.iter().map(|p| p.base_offset).collect();
        let mut place = |part: usize| {
            let offset = next[part];
            if offset >= 0 {
                next[part] += 1;
            }
            (self.parts[part].partition, offset)
        };
        if self.assignment.is_empty() {
            (0..self.len()).map(|_| place(0)).collect()
        } else {
            self.assignment.iter().map(|part| place(*part as usize)).collect()
        }
    }
}

type BatchReply = oneshot::Sender<Result<BatchDelivery, ClientError>>;

/// Resolves with the broker's answer (or the producer's giving up): [`DeliveryFuture`] for a
/// record, [`BatchDeliveryFuture`] for a `send_batch`.
pub struct Acknowledgement<T> {
    rx: oneshot::Receiver<Result<T, ClientError>>,
}

impl<T> Future for Acknowledgement<T> {
    type Output = Result<T, ClientError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// Resolves when every record given to [`Producer::send_batch`] is acknowledged, or with the
/// first failure of any of its parts.
pub type BatchDeliveryFuture = Acknowledgement<BatchDelivery>;

/// Gathers the answers of a `send_batch`'s parts into its one delivery; holds the batch's
/// share of the producer's buffer until the last part is answered.
struct BatchJoin {
    state: std::sync::Mutex<JoinState>,
    _permit: OwnedSemaphorePermit,
}

struct JoinState {
    delivery: BatchDelivery,
    unanswered: usize,
    failure: Option<ClientError>,
    reply: Option<BatchReply>,
}

impl BatchJoin {
    fn answer(&self, part: usize, outcome: &Result<i64, ClientError>) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(base) => state.delivery.parts[part].base_offset = (*base).max(-1),
            Err(e) => {
                state.failure.get_or_insert_with(|| e.clone());
            }
        }
        state.unanswered -= 1;
        if state.unanswered == 0 {
            if let Some(reply) = state.reply.take() {
                let outcome = match state.failure.take() {
                    Some(e) => Err(e),
                    None => Ok(std::mem::replace(
                        &mut state.delivery,
                        BatchDelivery { topic: String::new(), parts: Vec::new(), assignment: Vec::new() },
                    )),
                };
                let _ = reply.send(outcome);
            }
        }
    }
}

/// Who is waiting for a sealed batch's answer.
enum Waiters {
    /// One delivery per record ([`Producer::send`]), in the batch's order.
    Each(Vec<(Reply, OwnedSemaphorePermit)>),
    /// One part of a [`Producer::send_batch`].
    Part { join: Arc<BatchJoin>, part: usize },
}

impl Waiters {
    /// Answers everyone: `outcome` is the batch's base offset (negative with acks=none).
    fn answer(self, tp: &TopicPartition, outcome: &Result<i64, ClientError>) {
        match self {
            Waiters::Each(replies) => {
                for (i, (reply, _permit)) in replies.into_iter().enumerate() {
                    let offset = match outcome {
                        Ok(base) if *base < 0 => Ok(-1),
                        Ok(base) => Ok(base + i as i64),
                        Err(e) => Err(e.clone()),
                    };
                    let _ = reply.send(offset.map(|offset| Delivery { topic: tp.0.clone(), partition: tp.1, offset }));
                }
            }
            Waiters::Part { join, part } => join.answer(part, outcome),
        }
    }
}

/// Resolves when the broker has acknowledged the record (or the producer gave up on it).
pub type DeliveryFuture = Acknowledgement<Delivery>;

enum Command {
    Send {
        topic: String,
        partition: Option<u32>,
        record: Record,
        reply: Reply,
        permit: OwnedSemaphorePermit,
    },
    SendBatch {
        topic: String,
        partition: Option<u32>,
        records: Vec<Record>,
        reply: BatchReply,
        permit: OwnedSemaphorePermit,
    },
    Flush(oneshot::Sender<()>),
    BatchDone {
        tp: TopicPartition,
        /// The batch's place in its partition's dispatch order ([`Sealed::index`]).
        index: u64,
        failed: bool,
        retried: bool,
    },
    /// A batch's attempt failed and it will be sent again.
    Retrying {
        tp: TopicPartition,
    },
}

/// An idempotent producer's identity and the first sequence number of a batch.
#[derive(Debug, Clone, Copy)]
struct Sequenced {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

/// Records sealed into one batch, numbered when the producer is idempotent.
struct Sealed {
    /// Its place in the partition's dispatch order, set when it is dispatched.
    index: u64,
    records: Vec<Record>,
    waiters: Waiters,
    sequence: Option<Sequenced>,
    /// Set once an earlier batch of the partition was given up on: this one follows a gap in
    /// the sequence, so it is not sent (or retried) any more.
    abandoned: Arc<AtomicBool>,
}

type TopicPartition = (String, u32);

#[derive(Clone)]
pub struct Producer {
    tx: mpsc::Sender<Command>,
    buffer: Arc<Semaphore>,
    buffer_bytes: usize,
}

impl Producer {
    pub fn new(client: Client, mut config: ProducerConfig) -> Self {
        if config.enable_idempotence && config.acks == Acks::All {
            config.max_in_flight_per_partition = config.max_in_flight_per_partition.clamp(1, IDEMPOTENT_IN_FLIGHT_MAX);
        } else {
            config.enable_idempotence = false;
        }
        let (tx, rx) = mpsc::channel(4096);
        let buffer = Arc::new(Semaphore::new(config.buffer_bytes));
        let buffer_bytes = config.buffer_bytes;
        let worker = Worker {
            router: Router::new(client),
            config,
            tx: tx.clone(),
            partition_counts: HashMap::new(),
            sticky: HashMap::new(),
            queues: HashMap::new(),
            opened: VecDeque::new(),
            senders: HashMap::new(),
            topic_senders: HashMap::new(),
            flush_waiters: Vec::new(),
            identity: None,
        };
        tokio::spawn(worker.run(rx));
        Self { tx, buffer, buffer_bytes }
    }

    /// Queues a record. `partition: None` picks one by key (Kafka's murmur2) or, for keyless
    /// records, sticks to one partition per batch. Waits while the producer's buffer is full.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<u32>,
        mut record: Record,
    ) -> Result<DeliveryFuture, ClientError> {
        if record.timestamp == 0 {
            record.timestamp = now_ms();
        }
        let size = record_size(&record).clamp(1, self.buffer_bytes) as u32;
        let permit = self.buffer.clone().acquire_many_owned(size).await.map_err(|_| ClientError::Closed)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Send { topic: topic.to_owned(), partition, record, reply, permit })
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(DeliveryFuture { rx })
    }

    /// Queues records to be sent as one record batch per partition they go to, without the
    /// per-record delivery futures of [`send`](Self::send): the fast path for callers that
    /// have many records at hand. With `partition: None`, keyed records go to their key's
    /// partition and keyless ones to one partition together. Records queued by `send` before
    /// this call are sent first. Each part is one request, so it must fit the topic's largest
    /// batch (`max.message.bytes`; the broker refuses a larger one and names the limit). Waits
    /// while the producer's buffer is full.
    pub async fn send_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        mut records: Vec<Record>,
    ) -> Result<BatchDeliveryFuture, ClientError> {
        if records.is_empty() {
            return Err(ClientError::Invalid("send_batch needs at least one record".into()));
        }
        let now = now_ms();
        let mut size = 0usize;
        for record in &mut records {
            if record.timestamp == 0 {
                record.timestamp = now;
            }
            size = size.saturating_add(record_size(record));
        }
        let size = size.clamp(1, self.buffer_bytes) as u32;
        let permit = self.buffer.clone().acquire_many_owned(size).await.map_err(|_| ClientError::Closed)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::SendBatch { topic: topic.to_owned(), partition, records, reply, permit })
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(BatchDeliveryFuture { rx })
    }

    /// Sends everything queued and waits until each record is acknowledged or failed.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Flush(tx)).await.map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }
}

pub use crate::wire::now_ms;

fn record_size(r: &Record) -> usize {
    r.payload_len() + 16
}

#[derive(Default)]
struct Queue {
    open: Vec<Pending>,
    open_bytes: usize,
    opened_at: Option<Instant>,
    sealed: VecDeque<Sealed>,
    /// Dispatched batches not answered yet, by dispatch index. A batch is dispatched only while
    /// the oldest of these is fewer than `max_in_flight_per_partition` batches back, not merely
    /// while fewer are unanswered: a batch whose first attempt was stored but whose answer was
    /// lost with its connection is retried later, and newer batches answered meanwhile on a
    /// new connection must not push it out of the five the broker remembers per producer
    /// (it would be refused as out of order instead of answered as a duplicate).
    unanswered: std::collections::BTreeSet<u64>,
    /// The dispatch index the next batch gets.
    next_index: u64,
    /// In-flight batches being retried: an idempotent producer sends no newer batch of the
    /// partition meanwhile (as Kafka's sender does), so a retried batch is never more than
    /// the in-flight limit behind the newest sequence the broker has, which it remembers and
    /// answers as a duplicate when the first attempt was stored.
    retrying: usize,
    /// The next batch's first sequence number (idempotent producers).
    next_sequence: i32,
    /// Shared by the batches numbered since the partition's last failure ([`Sealed::abandoned`]).
    abandoned: Arc<AtomicBool>,
}

struct Worker {
    /// Each partition's batches go to its leader.
    router: Router,
    config: ProducerConfig,
    tx: mpsc::Sender<Command>,
    partition_counts: HashMap<String, u32>,
    sticky: HashMap<String, u32>,
    queues: HashMap<TopicPartition, Queue>,
    /// Partitions with open records, in the order they got their first ([`Queue::opened_at`]);
    /// an entry whose partition was sealed since is stale and skipped. The linger timer
    /// follows the front, so no step looks at every partition.
    opened: VecDeque<(Instant, TopicPartition)>,
    /// One task per partition encodes its batches in order ([`partition_sender`]).
    senders: HashMap<TopicPartition, mpsc::UnboundedSender<Sealed>>,
    /// One task per topic sends them ([`topic_sender`]).
    topic_senders: HashMap<String, mpsc::UnboundedSender<Encoded>>,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// The producer id and epoch of an idempotent producer, taken before its first batch.
    identity: Option<(i64, i16)>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // One timer, moved only when the earliest linger deadline changes: re-arming a timer
        // per record cost more than the rest of the loop.
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut commands = Vec::with_capacity(256);
        loop {
            let next = self.first_opened().map(|t| t + self.config.linger);
            if next != armed {
                if let Some(deadline) = next {
                    timer.as_mut().reset(deadline);
                }
                armed = next;
            }
            tokio::select! {
                received = rx.recv_many(&mut commands, 256) => {
                    if received == 0 {
                        return;
                    }
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.seal_lingered();
                    continue;
                }
            }
            for command in commands.drain(..) {
                match command {
                    Command::Send { topic, partition, record, reply, permit } => {
                        self.accept(topic, partition, record, reply, permit).await
                    }
                    Command::SendBatch { topic, partition, records, reply, permit } => {
                        self.accept_batch(topic, partition, records, reply, permit).await
                    }
                    Command::Flush(waiter) => {
                        // Every partition with open records is in `opened`.
                        while let Some((_, tp)) = self.opened.pop_front() {
                            self.seal(&tp);
                        }
                        self.flush_waiters.push(waiter);
                        self.answer_flush_waiters();
                    }
                    Command::Retrying { tp } => {
                        if let Some(q) = self.queues.get_mut(&tp) {
                            q.retrying += 1;
                        }
                    }
                    Command::BatchDone { tp, index, failed, retried } => {
                        if let Some(q) = self.queues.get_mut(&tp) {
                            q.unanswered.remove(&index);
                            if retried {
                                q.retrying = q.retrying.saturating_sub(1);
                            }
                        }
                        if failed && self.config.enable_idempotence {
                            // A batch given up on leaves a gap in its partition's sequence:
                            // start again as a new producer, numbering from 0 everywhere. The
                            // partition's batches numbered after the gap can never be stored:
                            // those in flight stop retrying, those not sent fail now (rather
                            // than each waiting out its delivery timeout).
                            self.identity = None;
                            for q in self.queues.values_mut() {
                                q.next_sequence = 0;
                            }
                            if let Some(q) = self.queues.get_mut(&tp) {
                                q.abandoned.store(true, Ordering::Release);
                                q.abandoned = Arc::default();
                                for batch in std::mem::take(&mut q.sealed) {
                                    batch.waiters.answer(&tp, &Err(abandoned_error(&tp)));
                                }
                            }
                        }
                        self.dispatch(&tp);
                        self.answer_flush_waiters();
                    }
                }
            }
        }
    }

    /// The topic's partition count once the producer may send to it (an idempotent producer
    /// has its id), checking a partition the caller named.
    async fn ready(&mut self, topic: &str, partition: Option<u32>) -> Result<u32, ClientError> {
        let count = self.partition_count(topic).await?;
        if self.config.enable_idempotence && self.identity.is_none() {
            let id = Admin::new(self.router.any().await).init_producer_id().await?;
            self.identity = Some((id.producer_id, id.producer_epoch));
        }
        match partition {
            Some(p) if p >= count => Err(ClientError::Invalid(format!(
                "partition {p} is out of range: topic {topic} has {count} partitions"
            ))),
            _ => Ok(count),
        }
    }

    /// The partition of a record the caller named none for: its key's, or the topic's
    /// current sticky partition.
    fn pick_partition(&mut self, topic: &str, key: Option<&Bytes>, count: u32) -> u32 {
        match key {
            Some(key) => partition_for_key(key, count),
            None => *self.sticky.entry(topic.to_owned()).or_insert_with(|| rand::random::<u32>() % count),
        }
    }

    async fn accept(
        &mut self,
        topic: String,
        partition: Option<u32>,
        record: Record,
        reply: Reply,
        permit: OwnedSemaphorePermit,
    ) {
        let count = match self.ready(&topic, partition).await {
            Ok(c) => c,
            Err(e) => return drop(reply.send(Err(e))),
        };
        let partition = match partition {
            Some(p) => p,
            None => self.pick_partition(&topic, record.key.as_ref(), count),
        };
        let tp = (topic, partition);
        let size = record_size(&record);
        // A record that would take the open batch past `batch_bytes` starts the next one, as
        // Kafka's producer does: only a record larger than that makes a larger batch, alone.
        if self.queues.get(&tp).is_some_and(|q| !q.open.is_empty() && q.open_bytes + size > self.config.batch_bytes) {
            self.seal(&tp);
        }
        let queue = self.queues.entry(tp.clone()).or_default();
        queue.open_bytes += size;
        queue.open.push((record, reply, permit));
        if queue.opened_at.is_none() {
            let now = Instant::now();
            queue.opened_at = Some(now);
            self.opened.push_back((now, tp.clone()));
        }
        if queue.open_bytes >= self.config.batch_bytes {
            self.seal(&tp);
        }
    }

    async fn accept_batch(
        &mut self,
        topic: String,
        partition: Option<u32>,
        records: Vec<Record>,
        reply: BatchReply,
        permit: OwnedSemaphorePermit,
    ) {
        let count = match self.ready(&topic, partition).await {
            Ok(c) => c,
            Err(e) => return drop(reply.send(Err(e))),
        };
        // Split by partition, keeping each partition's records in the order given.
        let mut parts: Vec<(u32, Vec<Record>)> = Vec::new();
        let mut assignment = Vec::new();
        match partition {
            Some(p) => parts.push((p, records)),
            None => {
                assignment.reserve(records.len());
                let mut part_of: HashMap<u32, u32> = HashMap::new();
                for record in records {
                    let p = self.pick_partition(&topic, record.key.as_ref(), count);
                    // Parts are at most the topic's partitions, so their index fits a u32.
                    let part = *part_of.entry(p).or_insert_with(|| {
                        parts.push((p, Vec::new()));
                        (parts.len() - 1) as u32
                    });
                    parts[part as usize].1.push(record);
                    assignment.push(part);
                }
                if parts.len() == 1 {
                    assignment = Vec::new();
                }
            }
        }
        let delivery = BatchDelivery {
            topic: topic.clone(),
            parts: parts.iter().map(|(p, r)| BatchPart { partition: *p, base_offset: -1, records: r.len() }).collect(),
            assignment,
        };
        let join = Arc::new(BatchJoin {
            state: std::sync::Mutex::new(JoinState {
                delivery,
                unanswered: parts.len(),
                failure: None,
                reply: Some(reply),
            }),
            _permit: permit,
        });
        for (part, (p, records)) in parts.into_iter().enumerate() {
            let tp = (topic.clone(), p);
            // Records queued by `send` before this batch go first.
            self.seal(&tp);
            self.push_sealed(&tp, records, Waiters::Part { join: join.clone(), part });
        }
    }

    async fn partition_count(&mut self, topic: &str) -> Result<u32, ClientError> {
        if let Some(c) = self.partition_counts.get(topic) {
            return Ok(*c);
        }
        let description = Admin::new(self.router.any().await).describe_topic(topic).await?;
        self.router.learn(topic).await;
        let count = description.partitions.len() as u32;
        self.partition_counts.insert(topic.to_owned(), count);
        Ok(count)
    }

    /// When the partition whose open records have waited longest got its first one.
    fn first_opened(&mut self) -> Option<Instant> {
        while let Some((opened, tp)) = self.opened.front() {
            if self.queues.get(tp).is_some_and(|q| q.opened_at == Some(*opened)) {
                return Some(*opened);
            }
            // Sealed since (by size, a flush or a batch), maybe opened again later.
            self.opened.pop_front();
        }
        None
    }

    fn seal_lingered(&mut self) {
        let now = Instant::now();
        while let Some(opened) = self.first_opened() {
            if opened + self.config.linger > now {
                return;
            }
            if let Some((_, tp)) = self.opened.pop_front() {
                self.seal(&tp);
            }
        }
    }

    fn seal(&mut self, tp: &TopicPartition) {
        let Some(queue) = self.queues.get_mut(tp) else { return };
        if queue.open.is_empty() {
            return;
        }
        let (records, replies) =
            std::mem::take(&mut queue.open).into_iter().map(|(r, reply, p)| (r, (reply, p))).unzip();
        queue.open_bytes = 0;
        queue.opened_at = None;
        self.push_sealed(tp, records, Waiters::Each(replies));
    }

    /// Queues a batch to be sent after those sealed before it, numbering it for an
    /// idempotent producer.
    fn push_sealed(&mut self, tp: &TopicPartition, records: Vec<Record>, waiters: Waiters) {
        let queue = self.queues.entry(tp.clone()).or_default();
        let sequence = self.identity.filter(|_| self.config.enable_idempotence).map(|(producer_id, producer_epoch)| {
            let base_sequence = queue.next_sequence;
            // Sequences wrap at i32::MAX, as Kafka's do.
            let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
            queue.next_sequence = base_sequence.wrapping_add(count) & i32::MAX;
            Sequenced { producer_id, producer_epoch, base_sequence }
        });
        queue.sealed.push_back(Sealed { index: 0, records, waiters, sequence, abandoned: queue.abandoned.clone() });
        if let (Some(count), Some(sticky)) = (self.partition_counts.get(&tp.0), self.sticky.get_mut(&tp.0)) {
            if *sticky == tp.1 {
                *sticky = (*sticky + 1) % count;
            }
        }
        self.dispatch(tp);
    }

    fn dispatch(&mut self, tp: &TopicPartition) {
        let Some(queue) = self.queues.get_mut(tp) else { return };
        if self.config.enable_idempotence && queue.retrying > 0 {
            return;
        }
        let window = self.config.max_in_flight_per_partition.max(1) as u64;
        while queue.unanswered.first().is_none_or(|oldest| queue.next_index - oldest < window) {
            let Some(mut batch) = queue.sealed.pop_front() else { return };
            batch.index = queue.next_index;
            queue.next_index += 1;
            queue.unanswered.insert(batch.index);
            let sender = self.senders.entry(tp.clone()).or_insert_with(|| {
                let topic_sender = self.topic_senders.entry(tp.0.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let sender =
                        topic_sender(self.router.clone(), self.config.clone(), tp.0.clone(), rx, self.tx.clone());
                    tokio::spawn(sender);
                    tx
                });
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(partition_sender(
                    self.config.clone(),
                    tp.clone(),
                    rx,
                    topic_sender.clone(),
                    self.tx.clone(),
                ));
                tx
            });
            if sender.send(batch).is_err() {
                tracing::error!(topic = %tp.0, partition = tp.1, "partition sender stopped");
            }
        }
    }

    fn answer_flush_waiters(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let idle = self.queues.values().all(|q| q.open.is_empty() && q.sealed.is_empty() && q.unanswered.is_empty());
        if idle {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// Encodes a partition's batches, in order, and hands them to their topic's sender.
/// Partitions encode side by side; the topic's sender keeps each partition's order.
async fn partition_sender(
    config: ProducerConfig,
    tp: TopicPartition,
    mut batches: mpsc::UnboundedReceiver<Sealed>,
    topic_sender: mpsc::UnboundedSender<Encoded>,
    done: mpsc::Sender<Command>,
) {
    while let Some(batch) = batches.recv().await {
        let Sealed { index, records, waiters, sequence, abandoned } = batch;
        if abandoned.load(Ordering::Acquire) {
            waiters.answer(&tp, &Err(abandoned_error(&tp)));
            let _ = done.send(Command::BatchDone { tp: tp.clone(), index, failed: false, retried: false }).await;
            continue;
        }
        let encoded = match sequence {
            Some(s) => {
                encode_idempotent_batch(&records, config.compression, s.producer_id, s.producer_epoch, s.base_sequence)
            }
            None => encode_batch(&records, config.compression),
        };
        drop(records);
        let failure = match encoded {
            Ok(payload) => {
                match topic_sender.send(Encoded { partition: tp.1, index, payload, waiters, abandoned }) {
                    Ok(()) => continue,
                    // The topic's sender ends only with the producer.
                    Err(unsent) => (unsent.0.waiters, ClientError::Closed),
                }
            }
            Err(e) => (waiters, ClientError::from(e)),
        };
        failure.0.answer(&tp, &Err(failure.1));
        let _ = done.send(Command::BatchDone { tp: tp.clone(), index, failed: true, retried: false }).await;
    }
}

/// A partition's batch, encoded, on its way to its topic's sender.
struct Encoded {
    partition: u32,
    /// Its place in the partition's dispatch order ([`Sealed::index`]).
    index: u64,
    payload: Bytes,
    waiters: Waiters,
    abandoned: Arc<AtomicBool>,
}

/// Sends a topic's batches as they come, putting those queued together into one request per
/// leader (as Kafka's sender does per broker): at most one batch per partition and
/// `request_bytes` in all, a larger batch alone. A thousand partitions' small batches cost a
/// few requests, not a thousand. Each request's stream is opened and written before the
/// next one's, so the broker appends every partition's batches in the order they came;
/// answers are awaited concurrently.
async fn topic_sender(
    router: Router,
    config: ProducerConfig,
    topic: String,
    mut batches: mpsc::UnboundedReceiver<Encoded>,
    done: mpsc::Sender<Command>,
) {
    let mut carried: Option<Encoded> = None;
    // Each broker's requests in flight: a permit is held until the request is answered.
    let mut in_flight: Vec<(Client, Arc<Semaphore>)> = Vec::new();
    let requests_in_flight = config.max_requests_in_flight.clamp(1, Semaphore::MAX_PERMITS);
    loop {
        let first = match carried.take() {
            Some(batch) => batch,
            None => match batches.recv().await {
                Some(batch) => batch,
                None => return,
            },
        };
        let mut fill = RequestFill::new(config.request_bytes);
        fill.take(first.partition, first.payload.len());
        let mut group = vec![first];
        while !fill.is_full() {
            let Ok(next) = batches.try_recv() else { break };
            if !fill.take(next.partition, next.payload.len()) {
                carried = Some(next);
                break;
            }
            group.push(next);
        }
        let mut requests: Vec<(Client, Vec<Encoded>)> = Vec::new();
        for batch in group {
            let leader = router.leader(&topic, batch.partition).await;
            match requests.iter_mut().find(|(client, _)| client.is_same(&leader)) {
                Some((_, parts)) => parts.push(batch),
                None => requests.push((leader, vec![batch])),
            }
        }
        for (leader, parts) in requests {
            let slots = match in_flight.iter().find(|(client, _)| client.is_same(&leader)) {
                Some((_, slots)) => slots.clone(),
                None => {
                    let slots = Arc::new(Semaphore::new(requests_in_flight));
                    in_flight.push((leader.clone(), slots.clone()));
                    slots
                }
            };
            // The semaphore is never closed, so this is always a permit.
            let slot = slots.acquire_owned().await.ok();
            let mut chunks = produce_chunks(&topic, &config, &parts);
            let sent = send_within(&leader, &config, &mut chunks).await;
            let answer = answer_request(router.clone(), config.clone(), topic.clone(), parts, sent, slot, done.clone());
            tokio::spawn(answer);
        }
        // Brokers the router no longer connects to through these clients, once answered.
        if in_flight.len() > IN_FLIGHT_CLIENTS_KEPT {
            in_flight.retain(|(_, slots)| slots.available_permits() < requests_in_flight);
        }
    }
}

/// Which batches, taken in the order they were queued, share a request: at most one per
/// partition (a partition's next batch waits for the next request, behind it), within the
/// limit in bytes. The first batch is always taken, however large.
struct RequestFill {
    limit: usize,
    bytes: usize,
    partitions: HashSet<u32>,
}

impl RequestFill {
    fn new(limit: usize) -> Self {
        Self { limit, bytes: 0, partitions: HashSet::new() }
    }

    /// Takes the batch if it fits; when it does not, the request is complete.
    fn take(&mut self, partition: u32, bytes: usize) -> bool {
        let first = self.partitions.is_empty();
        if !first && (self.bytes.saturating_add(bytes) > self.limit || self.partitions.contains(&partition)) {
            return false;
        }
        self.partitions.insert(partition);
        self.bytes = self.bytes.saturating_add(bytes);
        true
    }

    fn is_full(&self) -> bool {
        self.bytes >= self.limit
    }
}

/// A produce request for `parts`, as its head and then each batch's bytes.
fn produce_chunks(topic: &str, config: &ProducerConfig, parts: &[Encoded]) -> Vec<Bytes> {
    let request = ProduceRequest {
        topic: topic.to_owned(),
        acks: config.acks,
        timeout_ms: config.request_timeout_ms,
        partitions: parts
            .iter()
            .map(|p| ProducePartition { partition: p.partition, bytes: declared(&p.payload) })
            .collect(),
    };
    let payload_len = parts.iter().map(|p| p.payload.len()).sum();
    let mut chunks = Vec::with_capacity(parts.len() + 1);
    chunks.push(Frame::new(FrameKind::Produce, &request, Bytes::new()).encode_head(payload_len));
    chunks.extend(parts.iter().map(|p| p.payload.clone()));
    chunks
}

/// A batch's length as a produce request declares it. One of 4 GiB or more (far past any
/// frame the broker takes) is declared as `u32::MAX`, which the broker refuses as not adding
/// up to the payload.
fn declared(batch: &Bytes) -> u32 {
    u32::try_from(batch.len()).unwrap_or(u32::MAX)
}

/// Reads a request's answer and settles each of its batches: answered, or retried alone.
async fn answer_request(
    router: Router,
    config: ProducerConfig,
    topic: String,
    parts: Vec<Encoded>,
    sent: Result<PendingResponse, ClientError>,
    slot: Option<OwnedSemaphorePermit>,
    done: mpsc::Sender<Command>,
) {
    let deadline = Instant::now() + config.delivery_timeout;
    let mut answers: HashMap<u32, Result<i64, ClientError>> = match sent {
        Ok(_) if config.acks == Acks::None => parts.iter().map(|p| (p.partition, Ok(-1))).collect(),
        Ok(pending) => match read_within(&config, pending, deadline).await {
            Ok(response) => response
                .partitions
                .into_iter()
                .map(|p| (p.partition, p.error.map_or(Ok(p.base_offset), |e| Err(ClientError::Broker(e)))))
                .collect(),
            Err(e) => parts.iter().map(|p| (p.partition, Err(e.clone()))).collect(),
        },
        Err(e) => parts.iter().map(|p| (p.partition, Err(e.clone()))).collect(),
    };
    drop(slot);
    for part in parts {
        let tp = (topic.clone(), part.partition);
        let outcome = answers.remove(&part.partition).unwrap_or_else(|| {
            Err(ClientError::Invalid(format!("the produce response does not answer partition {}", part.partition)))
        });
        // A failure may wait out retries: the other batches are answered meanwhile.
        let failed = outcome.is_err();
        let settle = settle(router.clone(), config.clone(), tp, part, outcome, deadline, done.clone());
        if failed {
            tokio::spawn(settle);
        } else {
            settle.await;
        }
    }
}

/// Retries a batch's retriable failure until it is stored or the delivery timeout passes,
/// then answers its waiters and tells the producer.
async fn settle(
    router: Router,
    config: ProducerConfig,
    tp: TopicPartition,
    batch: Encoded,
    outcome: Result<i64, ClientError>,
    deadline: Instant,
    done: mpsc::Sender<Command>,
) {
    let mut retry = Retry { done: done.clone(), retried: false, abandoned: batch.abandoned.clone() };
    let outcome = match outcome {
        Err(e) => {
            let alone = produce_chunks(&tp.0, &config, std::slice::from_ref(&batch));
            retry_batch(&router, &config, &tp, &alone, e, deadline, &mut retry).await
        }
        ok => ok,
    };
    let Encoded { index, waiters, abandoned, .. } = batch;
    // A batch after a gap fails because of it: no new gap, no new producer id.
    let failed = outcome.is_err() && !abandoned.load(Ordering::Acquire);
    waiters.answer(&tp, &outcome);
    let _ = done.send(Command::BatchDone { tp, index, failed, retried: retry.retried }).await;
}

/// What a batch's retries tell the producer, and whether it should stop retrying.
struct Retry {
    done: mpsc::Sender<Command>,
    /// It was retried (the producer sends no newer batch of the partition meanwhile).
    retried: bool,
    abandoned: Arc<AtomicBool>,
}

/// Sends a batch whose attempt failed with `error` again, alone (`request`, from
/// [`produce_chunks`]), while the failure is retriable and the deadline allows. Returns the
/// base offset, or -1 for acks=none.
async fn retry_batch(
    router: &Router,
    config: &ProducerConfig,
    tp: &TopicPartition,
    request: &[Bytes],
    mut error: ClientError,
    deadline: Instant,
    retry: &mut Retry,
) -> Result<i64, ClientError> {
    loop {
        if !(retriable(config, &error)
            && Instant::now() + config.retry_backoff < deadline
            && !retry.abandoned.load(Ordering::Acquire))
        {
            return Err(error);
        }
        tracing::debug!(topic = %tp.0, partition = tp.1, %error, "produce failed, retrying");
        // The leader may have moved or stopped: learn it again before the retry.
        router.invalidate(&tp.0);
        if !retry.retried {
            retry.retried = true;
            let _ = retry.done.send(Command::Retrying { tp: tp.clone() }).await;
        }
        tokio::time::sleep(config.retry_backoff).await;
        let attempt = match send_within(&router.leader(&tp.0, tp.1).await, config, &mut request.to_vec()).await {
            Ok(_) if config.acks == Acks::None => return Ok(-1),
            Ok(pending) => read_within(config, pending, deadline).await.and_then(|r| only_partition(r, tp.1)),
            Err(e) => Err(e),
        };
        match attempt {
            Ok(base) => return Ok(base),
            // The delivery timeout cut this attempt's wait short: the failure before it says
            // why the batch was not stored (a partition with no leader, say), a timeout does not.
            Err(ClientError::Broker(e)) if e.code == ErrorCode::RequestTimedOut && Instant::now() >= deadline => {
                return Err(error)
            }
            Err(e) => error = e,
        }
    }
}

/// The error of a record whose batch followed one given up on (a gap in its partition's
/// sequence numbers, which the broker never fills).
fn abandoned_error(tp: &TopicPartition) -> ClientError {
    ClientError::Broker(crate::WireError::new(
        ErrorCode::OutOfOrderSequence,
        format!("an earlier batch to partition {} of {} was not delivered, so this one cannot be", tp.1, tp.0),
    ))
}

/// How long past the broker's own `request_timeout_ms` the producer waits for an answer
/// before it counts the attempt as timed out (a broker or connection that went quiet).
const ANSWER_SLACK: Duration = Duration::from_secs(5);

fn timed_out(what: &str, after: Duration) -> ClientError {
    ClientError::Broker(crate::WireError::new(ErrorCode::RequestTimedOut, format!("{what} within {after:?}")))
}

/// Opens a produce request's stream and writes it, within the request timeout (a stream can
/// wait for credit on a connection whose peer went away).
async fn send_within(
    client: &Client,
    config: &ProducerConfig,
    chunks: &mut [Bytes],
) -> Result<PendingResponse, ClientError> {
    let within = Duration::from_millis(u64::from(config.request_timeout_ms)) + ANSWER_SLACK;
    tokio::time::timeout(within, client.send_request_chunks(chunks))
        .await
        .unwrap_or_else(|_| Err(timed_out("the produce request could not be sent", within)))
}

/// Reads a produce answer within the request timeout (and the delivery deadline): a retriable
/// timeout otherwise, so no batch waits on a broker for ever.
async fn read_within(
    config: &ProducerConfig,
    pending: PendingResponse,
    deadline: Instant,
) -> Result<ProduceResponse, ClientError> {
    let within = (Duration::from_millis(u64::from(config.request_timeout_ms)) + ANSWER_SLACK)
        .min(deadline.saturating_duration_since(Instant::now()));
    let read = async { pending.response().await?.header::<ProduceResponse>().map_err(ClientError::from) };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| Err(timed_out("no answer to the produce request", within)))
}

/// Whether a failed attempt is worth another. For an idempotent producer an out-of-order
/// sequence means an earlier batch of the partition is being retried too (after a lost
/// connection, batches are resent in no fixed order): once it lands, this one fits.
fn retriable(config: &ProducerConfig, e: &ClientError) -> bool {
    // An unknown producer id, for ids this client only ever takes from InitProducerId, means
    // the partition's leader has not applied the block its id came from yet (another broker
    // took it from the controller just now): it will have.
    e.is_retriable()
        || (config.enable_idempotence
            && matches!(e, ClientError::Broker(w) if matches!(w.code, ErrorCode::OutOfOrderSequence | ErrorCode::UnknownProducerId)))
}

/// The base offset a single-partition produce answer gives `partition`.
fn only_partition(response: ProduceResponse, partition: u32) -> Result<i64, ClientError> {
    let answer =
        response.partitions.into_iter().find(|p| p.partition == partition).ok_or_else(|| {
            ClientError::Invalid(format!("the produce response does not answer partition {partition}"))
        })?;
    match answer.error {
        Some(e) => Err(ClientError::Broker(e)),
        None => Ok(answer.base_offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_takes_one_batch_per_partition_within_its_bytes() {
        // (limit, batches offered as (partition, bytes), how many the request takes, full after)
        type Case = (usize, &'static [(u32, usize)], usize, bool);
        let cases: &[Case] = &[
            (100, &[(0, 10), (1, 10), (2, 10)], 3, false),
            (100, &[(0, 60), (1, 40), (2, 1)], 2, true),
            (100, &[(0, 60), (1, 41)], 1, false),
            (100, &[(0, 250), (1, 1)], 1, true),
            (100, &[(0, 10), (1, 10), (0, 10), (2, 10)], 2, false),
            (100, &[(3, 0), (3, 0)], 1, false),
            (0, &[(0, 0), (1, 0)], 1, true),
        ];
        for (limit, offered, takes, full) in cases {
            let mut fill = RequestFill::new(*limit);
            // As the topic's sender takes them: the first, then more until one does not fit
            // or the request is full.
            let mut taken = 0;
            for (partition, bytes) in offered.iter() {
                if (taken > 0 && fill.is_full()) || !fill.take(*partition, *bytes) {
                    break;
                }
                taken += 1;
            }
            assert_eq!(taken, *takes, "limit {limit}, offered {offered:?}");
            assert_eq!(fill.is_full(), *full, "limit {limit}, offered {offered:?}");
        }
    }
}
