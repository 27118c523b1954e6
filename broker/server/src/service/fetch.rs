//! Fetch and list offsets: stored batches as they are (or through a consume-time module),
//! long-polling on the partitions' end offsets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_sdk::wire::*;
use weir_sdk::{ErrorCode, WireError};

use weir_runtime::PluginKind;

use crate::plugins::input_records;
use weir_meta::deployments::{self};
use weir_meta::metadata::Topic;

use super::Broker;

impl Broker {
    /// Reads every partition asked for; long-polls until `min_bytes` are available or
    /// `max_wait_ms` (capped by the broker's `fetch_wait_ms_max`) passes. One answer per
    /// partition asked for, in order, each with its own batches.
    /// A partition named twice is read once (the first time), as Kafka's fetch sessions key
    /// partitions, so a request cannot multiply its answer by repeating one.
    pub async fn fetch(&self, mut request: Fetch) -> Result<Vec<FetchedPartition>, WireError> {
        let mut seen = std::collections::HashSet::new();
        request.partitions.retain(|p| seen.insert((p.topic.clone(), p.partition)));
        let wait = Duration::from_millis(u64::from(request.max_wait_ms.min(self.config.fetch_wait_ms_max)));
        let deadline = Instant::now() + wait;
        loop {
            // Subscribe before reading so an append between the read and the wait is not missed.
            let mut watchers: Vec<_> = request
                .partitions
                .iter()
                .filter_map(|p| self.topic(&p.topic).ok().and_then(|t| self.partition(&t, p.partition).ok()))
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
                let state = self.partition(&topic, p.partition)?;
                answer.high_watermark = state.end_offset();
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
            let inputs = input_records(&records);
            let results = self
                .plugins
                .call_pooled(&deployment, inputs.len(), |instance| instance.transform(&inputs))
                .map_err(|e| self.module_failed(&deployment, e))?;
            let mut kept = Vec::new();
            for (input, result) in inputs.iter().zip(results) {
                let outputs = result.map_err(|reason| {
                    WireError::new(
                        ErrorCode::ModuleFailed,
                        format!("module {name:?} failed on the record at offset {}: {reason}", input.offset),
                    )
                })?;
                for o in outputs {
                    let record = weir_sdk::batch::Record {
                        key: o.key.map(Bytes::from),
                        value: o.value.map(Bytes::from),
                        headers: o.headers.into_iter().map(|h| (h.key, h.value.map(Bytes::from))).collect(),
                        timestamp: o.timestamp.unwrap_or(input.timestamp),
                    };
                    kept.push((input.offset, record));
                }
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
                    OffsetSpec::Latest => Ok((state.end_offset(), -1)),
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

    /// The partition's log start and end offsets.
    pub fn offsets(&self, topic: &str, partition: u32) -> Result<(i64, i64), WireError> {
        let state = self.partition(&self.topic(topic)?, partition)?;
        Ok((state.log_start_offset(), state.end_offset()))
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
}

/// One partition's answer to a list-offsets request: `(offset, timestamp)`, the timestamp
/// only for a search by time (`-1` otherwise, and `-1, -1` when no record is that late).
#[derive(Debug, Clone)]
pub struct ListedOffset {
    pub partition: u32,
    pub found: Result<(i64, i64), WireError>,
}
