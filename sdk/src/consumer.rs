//! The consumer: assigned partitions, a position per partition, long-polling fetches sent to
//! each partition's leader (one fetch per leader, through the [`Router`]).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::batch::{decode_validated_batch, split_batches, ConsumedRecord, DECOMPRESSED_BATCH_BYTES_DEFAULT};
use crate::client::{Admin, Client};
use crate::error::{ClientError, ErrorCode};
use crate::router::Router;
use crate::wire::{FetchPartition, FetchRequest, FetchResponse, FrameKind, OffsetSpec};

/// What to do when the position is outside the log (deleted by retention, or past the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Return the OffsetOutOfRange error to the caller.
    Fail,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub fetch_max_bytes: u32,
    pub partition_max_bytes: u32,
    pub offset_reset: OffsetReset,
    /// A transform deployment the broker runs over what this consumer reads (a consume-time
    /// filter or map); `None` reads records as stored.
    pub module: Option<String>,
    /// Read from the connected broker's replica of each partition where it holds one (up to
    /// its high watermark, which may trail the leader's) rather than from the leader.
    pub read_replica: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            fetch_max_bytes: 8 * 1024 * 1024,
            partition_max_bytes: 2 * 1024 * 1024,
            offset_reset: OffsetReset::Latest,
            module: None,
            read_replica: false,
        }
    }
}

/// How long a poll whose every leader failed waits before it returns nothing.
const FAILED_FETCH_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// A partition and the consumer's position in it.
type Position<'a> = (&'a (String, u32), &'a i64);

pub struct Consumer {
    client: Client,
    router: Router,
    admin: Admin,
    config: ConsumerConfig,
    positions: BTreeMap<(String, u32), i64>,
    /// The next fetch, sent while the records of the last one are decoded and handed out
    /// (only while fetches bring records: a consumer at the tail long-polls once).
    prefetched: Option<Prefetch>,
}

/// A fetch sent ahead from the positions the last poll moved to; dropped when the caller moves
/// them (`seek`, `assign`).
struct Prefetch {
    answers: tokio::task::JoinHandle<Result<Vec<(FetchResponse, Bytes)>, ClientError>>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.drop_prefetch();
    }
}

/// A fetched partition's bytes, split into validated batches, to be decoded into records, its
/// position before them (`from`, where it goes back to if they do not decode) and after.
struct Fetched {
    topic: String,
    partition: u32,
    from: i64,
    batches: Vec<Bytes>,
    next: Option<i64>,
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        Self {
            admin: Admin::new(client.clone()),
            router: Router::new(client.clone()),
            client,
            config,
            positions: BTreeMap::new(),
            prefetched: None,
        }
    }

    /// Assigns every partition of `topic`, each starting at `start`.
    pub async fn assign_topic(&mut self, topic: &str, start: OffsetSpec) -> Result<(), ClientError> {
        let partitions = self.admin.describe_topic(topic).await?.partitions.iter().map(|p| p.partition).collect();
        self.assign(topic, partitions, start).await
    }

    /// Adds partitions of `topic` to the assignment, each starting at `start`.
    pub async fn assign(&mut self, topic: &str, partitions: Vec<u32>, start: OffsetSpec) -> Result<(), ClientError> {
        self.router.learn(topic).await;
        for p in self.admin.list_offsets(topic, partitions, start).await? {
            if let Some(e) = p.error {
                return Err(e.into());
            }
            let offset =
                if p.offset < 0 { self.resolve(topic, p.partition, OffsetSpec::Latest).await? } else { p.offset };
            self.drop_prefetch();
            self.positions.insert((topic.to_owned(), p.partition), offset);
        }
        Ok(())
    }

    pub fn seek(&mut self, topic: &str, partition: u32, offset: i64) {
        self.drop_prefetch();
        self.positions.insert((topic.to_owned(), partition), offset);
    }

    /// Forgets a fetch sent ahead: it was for positions the caller has moved.
    fn drop_prefetch(&mut self) {
        if let Some(p) = self.prefetched.take() {
            p.answers.abort();
        }
    }

    /// The offset of the next record `poll` returns for the partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.positions.get(&(topic.to_owned(), partition)).copied()
    }

    pub fn assignment(&self) -> impl Iterator<Item = (&str, u32, i64)> {
        self.positions.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    async fn resolve(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<i64, ClientError> {
        let answer = self.admin.list_offsets(topic, vec![partition], spec).await?;
        let p = answer
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Invalid("list offsets answered no partition".into()))?;
        match p.error {
            Some(e) => Err(e.into()),
            None => Ok(p.offset),
        }
    }

    /// Fetches from every assigned partition, waiting up to `max_wait` for data. Returns the
    /// records in offset order within each partition and moves the positions past them.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, ClientError> {
        let (records, _) = self.poll_with_high_watermarks(max_wait).await?;
        Ok(records)
    }

    /// As [`Consumer::poll`], also returning each partition's high watermark, so a caller can
    /// tell when it has reached the end of the log.
    pub async fn poll_with_high_watermarks(
        &mut self,
        max_wait: Duration,
    ) -> Result<(Vec<ConsumedRecord>, BTreeMap<(String, u32), i64>), ClientError> {
        if self.positions.is_empty() {
            return Err(ClientError::Invalid("the consumer has no assigned partitions".into()));
        }
        let answers = match self.prefetched.take() {
            Some(p) => p.answers.await.map_err(|e| ClientError::Invalid(format!("a fetch task failed: {e}")))??,
            None => {
                let requests = self.plan(max_wait).await;
                fetch_from_leaders(self.router.clone(), requests).await?
            }
        };
        let mut fetched = Vec::new();
        let mut high_watermarks = BTreeMap::new();
        for (response, mut payload) in answers {
            self.absorb(response, &mut payload, &mut fetched, &mut high_watermarks).await?;
        }
        // Past what came back (the fetched partitions only; each one's old position is kept
        // in `fetched` to go back to), then the next fetch goes out while this one decodes.
        for f in &fetched {
            if let Some(next) = f.next {
                self.positions.insert((f.topic.clone(), f.partition), next.max(f.from));
            }
        }
        let prefetch = match fetched.iter().any(|f| !f.batches.is_empty()) {
            true => {
                let requests = self.plan(max_wait).await;
                Some(Prefetch { answers: tokio::spawn(fetch_from_leaders(self.router.clone(), requests)) })
            }
            false => None,
        };
        let mut records = Vec::new();
        for f in &fetched {
            for batch in &f.batches {
                let limit = DECOMPRESSED_BATCH_BYTES_DEFAULT;
                match decode_validated_batch(&f.topic, f.partition, batch.clone(), f.from, limit) {
                    Ok(decoded) => records.extend(decoded),
                    // A batch that does not decode leaves the positions where they were: the
                    // caller sees the error again until it seeks past it.
                    Err(e) => {
                        if let Some(p) = prefetch {
                            p.answers.abort();
                        }
                        for f in &fetched {
                            self.positions.insert((f.topic.clone(), f.partition), f.from);
                        }
                        return Err(e.into());
                    }
                }
            }
        }
        self.prefetched = prefetch;
        Ok((records, high_watermarks))
    }

    /// One fetch request per leader of the assigned partitions, from their positions.
    async fn plan(&self, max_wait: Duration) -> Vec<(Client, FetchRequest)> {
        let max_wait_ms = max_wait.as_millis().min(u128::from(u32::MAX)) as u32;
        let fetch = |positions: Vec<Position<'_>>| FetchRequest {
            max_wait_ms,
            min_bytes: 1,
            max_bytes: self.config.fetch_max_bytes,
            partitions: positions
                .into_iter()
                .map(|((topic, partition), offset)| FetchPartition {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    max_bytes: self.config.partition_max_bytes,
                    module: self.config.module.clone(),
                })
                .collect(),
            replica_reads: self.config.read_replica,
        };
        // Replica reads go to the broker this consumer connected to; the rest to each leader.
        let mut by_leader: BTreeMap<String, (Client, Vec<Position<'_>>)> = BTreeMap::new();
        for (key, offset) in &self.positions {
            let client = match self.config.read_replica {
                true => self.client.clone(),
                false => self.router.leader(&key.0, key.1).await,
            };
            by_leader
                .entry(client.config().bootstrap.clone())
                .or_insert_with(|| (client, Vec::new()))
                .1
                .push((key, offset));
        }
        by_leader.into_values().map(|(client, positions)| (client, fetch(positions))).collect()
    }

    /// Takes one fetch answer: the batches past each position (CRC checked), high
    /// watermarks, resets of positions out of range, and the position past the batches.
    async fn absorb(
        &mut self,
        response: FetchResponse,
        payload: &mut Bytes,
        fetched: &mut Vec<Fetched>,
        high_watermarks: &mut BTreeMap<(String, u32), i64>,
    ) -> Result<(), ClientError> {
        for p in response.partitions {
            let len = (p.bytes as usize).min(payload.len());
            let bytes = payload.split_to(len);
            let key = (p.topic.clone(), p.partition);
            high_watermarks.insert(key.clone(), p.high_watermark);
            if let Some(e) = p.error {
                if e.code == ErrorCode::OffsetOutOfRange && self.config.offset_reset != OffsetReset::Fail {
                    let spec = if self.config.offset_reset == OffsetReset::Earliest {
                        OffsetSpec::Earliest
                    } else {
                        OffsetSpec::Latest
                    };
                    let offset = self.resolve(&p.topic, p.partition, spec).await?;
                    tracing::info!(topic = %p.topic, partition = p.partition, offset, "position out of range, reset");
                    self.positions.insert(key, offset);
                    continue;
                }
                if e.code.is_retriable() {
                    // The leader moved or is not ready: the next poll asks the one it learns.
                    self.router.invalidate(&p.topic);
                }
                return Err(e.into());
            }
            let Some(position) = self.positions.get(&key).copied() else { continue };
            // Each batch's CRC is checked here, once.
            let batches = split_batches(&bytes)?;
            let next = batches.last().map(|(h, _)| h.last_offset() + 1).max(p.next_offset);
            let batches = batches.iter().map(|(_, b)| bytes.slice_ref(b)).collect();
            fetched.push(Fetched { topic: p.topic.clone(), partition: p.partition, from: position, batches, next });
        }
        Ok(())
    }
}

/// Sends each leader its fetch. With one leader, its answer or error. With several, the
/// answers that are in once the first brings records (the other long polls are dropped
/// and asked again next time); a leader that failed retriably is skipped this time and
/// learned again, so one broker's failure does not stop reading from the others.
async fn fetch_from_leaders(
    router: Router,
    mut requests: Vec<(Client, FetchRequest)>,
) -> Result<Vec<(FetchResponse, Bytes)>, ClientError> {
    if requests.len() == 1 {
        let (client, request) = requests.pop().expect("one request");
        return match client.call(FrameKind::Fetch, &request, Bytes::new()).await {
            Ok(answer) => Ok(vec![answer]),
            Err(e) => {
                if e.is_retriable() {
                    for p in &request.partitions {
                        router.invalidate(&p.topic);
                    }
                }
                Err(e)
            }
        };
    }
    let mut pending = tokio::task::JoinSet::new();
    for (client, request) in requests {
        pending.spawn(async move {
            let answer = client.call::<_, FetchResponse>(FrameKind::Fetch, &request, Bytes::new()).await;
            (request, answer)
        });
    }
    let mut answers = Vec::new();
    let mut failed = 0usize;
    let mut absorb = |(request, answer): (FetchRequest, Result<(FetchResponse, Bytes), ClientError>)| match answer {
        Ok(answer) => {
            let has_records = !answer.1.is_empty();
            answers.push(answer);
            Ok(has_records)
        }
        Err(e) if e.is_retriable() => {
            tracing::debug!(error = %e, "a leader's fetch failed; learning the leaders again");
            for p in &request.partitions {
                router.invalidate(&p.topic);
            }
            failed += 1;
            Ok(false)
        }
        Err(e) => Err(e),
    };
    while let Some(joined) = pending.join_next().await {
        let joined = joined.map_err(|e| ClientError::Invalid(format!("a fetch task failed: {e}")))?;
        if absorb(joined)? {
            while let Some(ready) = pending.try_join_next() {
                let ready = ready.map_err(|e| ClientError::Invalid(format!("a fetch task failed: {e}")))?;
                absorb(ready)?;
            }
            break;
        }
    }
    pending.abort_all();
    if answers.is_empty() && failed > 0 {
        // Every leader failed: a pause before the caller polls again, not a tight loop.
        tokio::time::sleep(FAILED_FETCH_BACKOFF).await;
    }
    Ok(answers)
}
