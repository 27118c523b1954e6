//! Fetch and list offsets: stored batches as they are (or through a consume-time module),
//! long-polling on the partitions' end offsets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_sdk::wire::*;
use weir_sdk::{ErrorCode, WireError};

use weir_runtime::PluginKind;

use crate::plugins::{batch_too_large, input_batch, output_record};
use weir_meta::deployments::{self};
use weir_meta::metadata::Topic;

use super::Broker;

/// A fetch forwarded to the partitions' leader over the cluster endpoint.
pub const RPC_FETCH: u8 = 17;
/// A list-offsets forwarded to the partition's leader.
pub const RPC_LIST_OFFSETS: u8 = 18;
/// How much longer than the fetch's own wait a forwarding broker waits for the leader.
const FORWARD_FETCH_SLACK: Duration = Duration::from_secs(10);

/// A forwarded fetch: the wait and sizes, and (topic, partition, offset, max bytes, module)
/// per partition.
#[derive(serde::Serialize, serde::Deserialize)]
struct ForwardedFetch {
    max_wait_ms: u32,
    min_bytes: u32,
    max_bytes: u32,
    partitions: Vec<(String, u32, i64, u32, Option<String>)>,
}

/// A fetched partition as it travels back to a forwarding broker, its batches' lengths in
/// place of the batches, which follow the header.
#[derive(serde::Serialize, serde::Deserialize)]
struct FetchedHeader {
    topic: String,
    partition: u32,
    high_watermark: i64,
    log_start_offset: i64,
    next_offset: Option<i64>,
    error: Option<WireError>,
    batch_bytes: Vec<u32>,
}

/// `u32 header length | JSON: Result<Vec<FetchedHeader>, WireError> | batches`.
fn encode_fetched(outcome: Result<Vec<FetchedPartition>, WireError>) -> Vec<u8> {
    let (headers, batches): (Result<Vec<FetchedHeader>, WireError>, Vec<Bytes>) = match outcome {
        Ok(fetched) => {
            let mut batches = Vec::new();
            let headers = fetched
                .into_iter()
                .map(|p| {
                    let batch_bytes = p.batches.iter().map(|b| u32::try_from(b.len()).unwrap_or(u32::MAX)).collect();
                    batches.extend(p.batches);
                    FetchedHeader {
                        topic: p.topic,
                        partition: p.partition,
                        high_watermark: p.high_watermark,
                        log_start_offset: p.log_start_offset,
                        next_offset: p.next_offset,
                        error: p.error,
                        batch_bytes,
                    }
                })
                .collect();
            (Ok(headers), batches)
        }
        Err(e) => (Err(e), Vec::new()),
    };
    let header = serde_json::to_vec(&headers).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + header.len() + batches.iter().map(Bytes::len).sum::<usize>());
    out.extend_from_slice(&u32::try_from(header.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&header);
    for batch in &batches {
        out.extend_from_slice(batch);
    }
    out
}

/// The inverse of [`encode_fetched`]; `None` if the bytes do not add up.
fn decode_fetched(bytes: &[u8]) -> Option<Result<Vec<FetchedPartition>, WireError>> {
    let length = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let headers: Result<Vec<FetchedHeader>, WireError> =
        serde_json::from_slice(bytes.get(4..4usize.checked_add(length)?)?).ok()?;
    let headers = match headers {
        Ok(h) => h,
        Err(e) => return Some(Err(e)),
    };
    let mut rest = Bytes::copy_from_slice(&bytes[4 + length..]);
    let mut fetched = Vec::with_capacity(headers.len());
    for h in headers {
        let mut batches = Vec::with_capacity(h.batch_bytes.len());
        for len in h.batch_bytes {
            let len = len as usize;
            if len > rest.len() {
                return None;
            }
            batches.push(rest.split_to(len));
        }
        fetched.push(FetchedPartition {
            topic: h.topic,
            partition: h.partition,
            high_watermark: h.high_watermark,
            log_start_offset: h.log_start_offset,
            next_offset: h.next_offset,
            error: h.error,
            batches,
        });
    }
    rest.is_empty().then_some(Ok(fetched))
}

impl Broker {
    /// Reads every partition asked for; long-polls until `min_bytes` are available or
    /// `max_wait_ms` (capped by the broker's `fetch_wait_ms_max`) passes. One answer per
    /// partition asked for, in order, each with its own batches.
    /// A partition named twice is read once (the first time), as Kafka's fetch sessions key
    /// partitions, so a request cannot multiply its answer by repeating one.
    ///
    /// In a cluster, partitions another broker leads are read there (`RPC_FETCH` over the
    /// cluster endpoint, never forwarded again); the answer waits for every broker's part.
    pub async fn fetch(&self, mut request: Fetch) -> Result<Vec<FetchedPartition>, WireError> {
        let mut seen = std::collections::HashSet::new();
        request.partitions.retain(|p| seen.insert((p.topic.clone(), p.partition)));
        // Which broker each partition is read on: this one unless another leads it (and, for
        // replica reads, this one holds no replica of it).
        let leaders: Vec<u64> = request
            .partitions
            .iter()
            .map(|p| {
                self.topic(&p.topic)
                    .ok()
                    .filter(|t| !(request.from_replica && self.holds_replica(t, p.partition)))
                    .and_then(|t| self.leader_of(&t, p.partition).filter(|_| p.partition < t.partitions))
                    .unwrap_or(self.config.node_id)
            })
            .collect();
        if leaders.iter().all(|l| *l == self.config.node_id) {
            return self.fetch_here(request).await;
        }
        let mut parts: std::collections::BTreeMap<u64, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, leader) in leaders.iter().enumerate() {
            parts.entry(*leader).or_default().push(i);
        }
        let answers = futures::future::join_all(parts.iter().map(|(leader, indexes)| {
            let part = Fetch {
                partitions: indexes.iter().map(|i| request.partitions[*i].clone()).collect(),
                ..request.clone()
            };
            let leader = *leader;
            async move {
                if leader == self.config.node_id {
                    self.fetch_here(part).await
                } else {
                    self.forward_fetch(leader, part).await
                }
            }
        }))
        .await;
        let mut answered: Vec<Option<FetchedPartition>> = vec![None; request.partitions.len()];
        for ((_, indexes), answer) in parts.iter().zip(answers) {
            match answer {
                Ok(fetched) if fetched.len() == indexes.len() => {
                    for (i, partition) in indexes.iter().zip(fetched) {
                        answered[*i] = Some(partition);
                    }
                }
                other => {
                    let e = other.err().unwrap_or_else(|| {
                        WireError::new(ErrorCode::Internal, "a leader answered another number of partitions")
                    });
                    for i in indexes {
                        answered[*i] = Some(FetchedPartition::failed(&request.partitions[*i], e.clone()));
                    }
                }
            }
        }
        Ok(answered.into_iter().flatten().collect())
    }

    /// Reads a part of a fetch on the broker leading its partitions.
    async fn forward_fetch(&self, leader: u64, part: Fetch) -> Result<Vec<FetchedPartition>, WireError> {
        let asked = ForwardedFetch {
            max_wait_ms: part.max_wait_ms,
            min_bytes: part.min_bytes,
            max_bytes: part.max_bytes,
            partitions: part
                .partitions
                .iter()
                .map(|p| (p.topic.clone(), p.partition, p.offset, p.max_bytes, p.module.clone()))
                .collect(),
        };
        let body = serde_json::to_vec(&asked).map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
        let timeout = Duration::from_millis(u64::from(part.max_wait_ms)) + FORWARD_FETCH_SLACK;
        let answer = self.controller.ask(leader, RPC_FETCH, &body, timeout).await?;
        decode_fetched(&answer).ok_or_else(|| {
            WireError::new(ErrorCode::Internal, format!("broker {leader} answered a forwarded fetch badly"))
        })?
    }

    /// Answers a fetch another broker forwarded (`RPC_FETCH`): read here, never forwarded again.
    pub async fn answer_forwarded_fetch(&self, body: Vec<u8>) -> Vec<u8> {
        let outcome = match serde_json::from_slice::<ForwardedFetch>(&body) {
            Ok(asked) => {
                let request = Fetch {
                    max_wait_ms: asked.max_wait_ms,
                    min_bytes: asked.min_bytes,
                    max_bytes: asked.max_bytes,
                    partitions: asked
                        .partitions
                        .into_iter()
                        .map(|(topic, partition, offset, max_bytes, module)| FetchFrom {
                            topic,
                            partition,
                            offset,
                            max_bytes,
                            module,
                        })
                        .collect(),
                    from_replica: false,
                };
                self.fetch_here(request).await
            }
            Err(e) => Err(WireError::new(ErrorCode::MalformedFrame, format!("forwarded fetch: {e}"))),
        };
        encode_fetched(outcome)
    }

    /// [`Broker::fetch`] of partitions read on this broker.
    async fn fetch_here(&self, request: Fetch) -> Result<Vec<FetchedPartition>, WireError> {
        let wait = Duration::from_millis(u64::from(request.max_wait_ms.min(self.config.fetch_wait_ms_max)));
        let started = Instant::now();
        let deadline = started + wait;
        loop {
            // Subscribe before reading so an append between the read and the wait is not missed.
            let mut watchers: Vec<_> = request
                .partitions
                .iter()
                .filter_map(|p| {
                    self.topic(&p.topic).ok().and_then(|t| self.readable(&t, p.partition, request.from_replica).ok())
                })
                .map(|s| s.subscribe())
                .collect();
            // Fetch modules run off the async runtime, as produce's do.
            let fetched = if request.partitions.iter().any(|p| p.module.is_some()) {
                let (broker, request) = (self.clone(), request.clone());
                tokio::task::spawn_blocking(move || broker.fetch_once(&request))
                    .await
                    .map_err(|e| WireError::new(ErrorCode::Internal, format!("running fetch modules failed: {e}")))?
            } else {
                self.fetch_once(&request)
            };
            let total: usize = fetched.iter().map(FetchedPartition::bytes).sum();
            let any_error = fetched.iter().any(|p| p.error.is_some());
            // A fetch module that dropped everything it read still moved the consumer on.
            let skipped = fetched
                .iter()
                .zip(&request.partitions)
                .any(|(p, asked)| p.next_offset.is_some_and(|next| next > asked.offset));
            let now = Instant::now();
            if total >= request.min_bytes as usize || any_error || skipped || now >= deadline || watchers.is_empty() {
                for p in &fetched {
                    match &p.error {
                        None => self.traffic.fetched(&p.topic, p.bytes() as u64, now - started),
                        Some(e) => self.traffic.refused(e.code),
                    }
                }
                return Ok(fetched);
            }
            let changed = futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            let _ = tokio::time::timeout(deadline - now, changed).await;
        }
    }

    pub(super) fn fetch_once(&self, request: &Fetch) -> Vec<FetchedPartition> {
        let max_bytes = request.max_bytes.min(self.config.fetch_bytes_max) as usize;
        let mut total = 0usize;
        let mut partitions = Vec::with_capacity(request.partitions.len());
        for p in &request.partitions {
            let mut answer = FetchedPartition {
                topic: p.topic.clone(),
                partition: p.partition,
                high_watermark: -1,
                log_start_offset: -1,
                next_offset: None,
                error: None,
                batches: Vec::new(),
            };
            let outcome = self.topic(&p.topic).and_then(|topic| {
                let state = self.readable(&topic, p.partition, request.from_replica)?;
                answer.high_watermark = state.high_watermark();
                answer.log_start_offset = state.log_start_offset();
                let room = max_bytes.saturating_sub(total).min(p.max_bytes as usize);
                // Only the response's first batch may exceed the limits, as in Kafka.
                let batches = self.log.read(&state, p.offset, room, total == 0)?;
                match &p.module {
                    Some(name) if !batches.is_empty() => {
                        let (filtered, next) = self.run_fetch_module(name, &topic, p.partition, p.offset, batches)?;
                        answer.next_offset = Some(next);
                        Ok(filtered)
                    }
                    _ => Ok(batches),
                }
            });
            match outcome {
                Ok(batches) => {
                    answer.batches = batches;
                    total += answer.bytes();
                }
                Err(e) => answer.error = Some(e),
            }
            partitions.push(answer);
        }
        partitions
    }

    /// Runs a transform deployment over batches read for a consumer: one output batch per input
    /// batch, its records keeping their inputs' offsets; the offset after the last input
    /// record, from which the consumer goes on.
    pub(super) fn run_fetch_module(
        &self,
        name: &str,
        topic: &Topic,
        partition: u32,
        from_offset: i64,
        batches: Vec<Bytes>,
    ) -> Result<(Vec<Bytes>, i64), WireError> {
        let deployment =
            self.controller.state().modules.get(name).cloned().ok_or_else(|| deployments::unknown(name))?;
        if deployment.kind != PluginKind::Transform {
            return Err(WireError::new(
                ErrorCode::InvalidModule,
                format!("module {name:?} is a {}; a fetch runs transforms", deployment.kind.as_str()),
            ));
        }
        if let Some(reason) = &deployment.paused {
            return Err(WireError::new(ErrorCode::ModuleFailed, format!("module {name:?} is paused ({reason})")));
        }
        let mut out = Vec::with_capacity(batches.len());
        let mut next = from_offset;
        for batch in batches {
            let header = weir_sdk::batch::BatchHeader::parse(&batch)?;
            next = next.max(header.last_offset() + 1);
            let records = weir_sdk::batch::decode_batches_within(
                &topic.name,
                partition,
                batch,
                from_offset,
                self.config.batch_decompressed_bytes_max,
            )?;
            if records.is_empty() {
                continue;
            }
            let inputs = input_batch(&topic.name, partition, &records)
                .map_err(|e| batch_too_large(&format!("module {name:?}"), &e))?;
            let results = self
                .plugins
                .call_pooled(&deployment, inputs.len(), |instance| instance.transform(&inputs))
                .map_err(|e| self.module_failed(&deployment, e))?;
            let mut kept = Vec::new();
            for (input, outcome) in records.iter().zip(results.outcomes()) {
                let outputs = outcome.map_err(|reason| {
                    WireError::new(
                        ErrorCode::ModuleFailed,
                        format!("module {name:?} failed on the record at offset {}: {reason}", input.offset),
                    )
                })?;
                kept.extend(outputs.map(|o| (input.offset, output_record(&o, input.record.timestamp))));
            }
            self.plugins.metrics(name).records_out.fetch_add(kept.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if !kept.is_empty() {
                out.push(weir_sdk::batch::encode_batch_at_offsets(&kept)?);
            }
        }
        Ok((out, next))
    }

    /// Per entry, in order: the offset its spec names and, for a timestamp, the timestamp of
    /// the record found (`-1, -1` when no record is at or after it). A partition named twice is
    /// answered once; its repeats get an error (as Kafka answers INVALID_REQUEST), so a request
    /// cannot multiply the work of a timestamp search.
    /// Deletes a partition's records before `offset` (Kafka's DeleteRecords; -1 is the high
    /// watermark); returns the new log start offset.
    pub async fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, WireError> {
        let topic = self.topic(topic)?;
        let partition = u32::try_from(partition).map_err(|_| {
            WireError::new(ErrorCode::UnknownPartition, format!("partition {partition} does not exist"))
        })?;
        let state = self.partition(&topic, partition)?;
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.delete_records(&state, offset))
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, format!("deleting records failed: {e}")))?
    }

    pub fn list_offsets(&self, topic: &str, entries: &[(u32, OffsetSpec)]) -> Result<Vec<ListedOffset>, WireError> {
        let topic = self.topic(topic)?;
        let mut seen = std::collections::HashSet::new();
        let listed = entries
            .iter()
            .map(|&(partition, spec)| {
                if !seen.insert(partition) {
                    let e = WireError::new(
                        ErrorCode::InvalidRequest,
                        format!("partition {partition} is named more than once; name each partition once"),
                    );
                    return ListedOffset { partition, found: Err(e) };
                }
                let found = self.partition(&topic, partition).and_then(|state| match spec {
                    OffsetSpec::Earliest => Ok((state.log_start_offset(), -1)),
                    OffsetSpec::Latest => Ok((state.high_watermark(), -1)),
                    OffsetSpec::Timestamp(ts) => Ok(self
                        .log
                        .offset_for_timestamp(&state, ts, self.config.batch_decompressed_bytes_max)?
                        .unwrap_or((-1, -1))),
                });
                ListedOffset { partition, found }
            })
            .collect();
        Ok(listed)
    }

    /// As [`Broker::list_offsets`], asking the broker that leads each partition (in a
    /// cluster; one `RPC_LIST_OFFSETS` over the cluster endpoint per leading broker). The
    /// native listener uses it, so a native consumer finds its start offsets through any broker.
    pub async fn list_offsets_routed(
        &self,
        topic: &str,
        entries: &[(u32, OffsetSpec)],
    ) -> Result<Vec<ListedOffset>, WireError> {
        let described = self.topic(topic)?;
        let leader =
            |p: u32| self.leader_of(&described, p).filter(|l| *l != self.config.node_id && p < described.partitions);
        if entries.iter().all(|(p, _)| leader(*p).is_none()) {
            return self.list_offsets(topic, entries);
        }
        // Everything answered here (repeats and partitions led here included, with the same
        // rules as a local request) but the first mention of a partition led elsewhere.
        let mut answers = self.list_offsets(topic, entries)?;
        let mut seen = std::collections::HashSet::new();
        let mut remote: std::collections::BTreeMap<u64, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, (partition, _)) in entries.iter().enumerate() {
            if let Some(node) = leader(*partition).filter(|_| seen.insert(*partition)) {
                remote.entry(node).or_default().push(i);
            }
        }
        for (node, indexes) in remote {
            let asked: Vec<(u32, OffsetSpec)> = indexes.iter().map(|i| entries[*i]).collect();
            let body =
                serde_json::to_vec(&(topic, &asked)).map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
            let found: Vec<Result<(i64, i64), WireError>> =
                match self.controller.ask(node, RPC_LIST_OFFSETS, &body, FORWARD_FETCH_SLACK).await {
                    Ok(answer) => {
                        serde_json::from_slice::<Result<Vec<Result<(i64, i64), WireError>>, WireError>>(&answer)
                            .unwrap_or_else(|e| {
                                Err(WireError::new(ErrorCode::Internal, format!("broker {node} answered badly: {e}")))
                            })
                            .and_then(|found| {
                                (found.len() == asked.len()).then_some(found).ok_or_else(|| {
                                    WireError::new(
                                        ErrorCode::Internal,
                                        format!("broker {node} answered another number of partitions"),
                                    )
                                })
                            })
                            .unwrap_or_else(|e| vec![Err(e); asked.len()])
                    }
                    Err(e) => vec![Err(e); asked.len()],
                };
            for (i, found) in indexes.into_iter().zip(found) {
                answers[i].found = found;
            }
        }
        Ok(answers)
    }

    /// Answers a list-offsets another broker forwarded (`RPC_LIST_OFFSETS`), here.
    pub fn answer_forwarded_list_offsets(&self, body: &[u8]) -> Vec<u8> {
        let found = match serde_json::from_slice::<(String, Vec<(u32, OffsetSpec)>)>(body) {
            Ok((topic, entries)) => self
                .list_offsets(&topic, &entries)
                .map(|listed| listed.into_iter().map(|l| l.found).collect::<Vec<_>>()),
            Err(e) => Err(WireError::new(ErrorCode::MalformedFrame, format!("forwarded list offsets: {e}"))),
        };
        serde_json::to_vec(&found).unwrap_or_default()
    }

    /// The partition's log start and end offsets.
    pub fn offsets(&self, topic: &str, partition: u32) -> Result<(i64, i64), WireError> {
        let state = self.partition(&*self.topic(topic)?, partition)?;
        Ok((state.log_start_offset(), state.high_watermark()))
    }
}

/// A fetch as the service takes it, whichever protocol carried it.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Longest the fetch waits for `min_bytes` (capped by the broker's `fetch_wait_ms_max`).
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Bytes of the whole answer (capped by the broker's `fetch_bytes_max`); only the first
    /// batch of the answer may exceed it.
    pub max_bytes: u32,
    pub partitions: Vec<FetchFrom>,
    /// Read partitions this broker holds a replica of here, up to its replica's high
    /// watermark (Kafka's fetch from follower, KIP-392); the others from their leaders.
    pub from_replica: bool,
}

/// Where to read one partition from.
#[derive(Debug, Clone)]
pub struct FetchFrom {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub max_bytes: u32,
    /// A transform deployment to run over what is read (a consume-time module).
    pub module: Option<String>,
}

/// One partition's answer to a fetch: its offsets, or why it could not be read, and the
/// stored batches, whole and as stored (or a consume-time module's outputs).
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: u32,
    /// `-1` when the partition could not be read.
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// With a consume-time module: where to read next (its outputs keep their inputs'
    /// offsets, so the last output says nothing of inputs it dropped).
    pub next_offset: Option<i64>,
    pub error: Option<WireError>,
    pub batches: Vec<Bytes>,
}

impl FetchedPartition {
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }

    /// The answer for a partition that could not be read.
    fn failed(asked: &FetchFrom, error: WireError) -> Self {
        Self {
            topic: asked.topic.clone(),
            partition: asked.partition,
            high_watermark: -1,
            log_start_offset: -1,
            next_offset: None,
            error: Some(error),
            batches: Vec::new(),
        }
    }
}

/// One partition's answer to a list-offsets request: `(offset, timestamp)`, the timestamp
/// only for a search by time (`-1` otherwise, and `-1, -1` when no record is that late).
#[derive(Debug, Clone)]
pub struct ListedOffset {
    pub partition: u32,
    pub found: Result<(i64, i64), WireError>,
}
