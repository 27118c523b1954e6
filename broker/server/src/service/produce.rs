//! Produce: batches checked (size, CRC, schemas, validator modules), placed by the
//! partitioner when the client left the partition open, and queued on the log in request
//! order; producer ids for idempotent producers.

use bytes::Bytes;
use std::sync::Arc;

use weir_sdk::batch::{check_batch_records, decode_batch_records, split_batches, BatchHeader, Record};
use weir_sdk::wire::*;
use weir_sdk::{ErrorCode, FlushMode, WireError};
use weir_storage::log::{Appends, PartitionState};

use std::collections::HashMap;

use weir_registry::validate::{check_datum, schema_id, Compiled, SubjectNameStrategy};

use weir_runtime::PluginKind;

use crate::plugins::{batch_too_large, request_input_batch};
use weir_meta::metadata::{Command, Event, Topic, FIRST_PRODUCER_ID, PRODUCER_ID_BLOCK_MAX};

use super::{mismatched, Broker, PRODUCER_ID_BLOCK};

/// A produce forwarded to the partition's leader over the cluster endpoint.
pub const RPC_PRODUCE: u8 = 16;
/// How long a forwarded produce waits for the leader's answer.
const FORWARD_PRODUCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest a batch under a producer id past the blocks this broker has applied waits for its
/// metadata to reach the block (another broker may have taken it from the controller just now).
const PRODUCER_ID_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

/// The base offset an append gets, here or at the leader it was forwarded to.
type Appending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<i64, WireError>> + Send>>;

/// A partition's checked input: appended here, or forwarded to the broker leading it.
enum Checked {
    Here(Arc<PartitionState>, Vec<(BatchHeader, Bytes)>),
    Forward(u64, Vec<(BatchHeader, Bytes)>),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ForwardedProduce {
    topic: String,
    partition: u32,
    #[serde(default)]
    acks_all: bool,
}

impl Broker {
    /// A new producer identity for an idempotent producer, from the block of ids this broker
    /// took from the controller; takes a new block when it is used up.
    pub async fn init_producer_id(&self) -> Result<ProducerIdentity, WireError> {
        let mut block = self.producer_ids.lock().await;
        if block.is_empty() {
            let at_least = self.stored_producer_id_max().saturating_add(1);
            let command = Command::AllocateProducerIds { count: PRODUCER_ID_BLOCK, at_least };
            let event = self.controller.propose(command).await?;
            let Event::ProducerIds { first, count } = event else {
                return Err(mismatched("AllocateProducerIds", &event));
            };
            *block = first..first + i64::from(count);
        }
        let producer_id = block.start;
        block.start += 1;
        *self.unissued_producer_ids.lock().unwrap_or_else(|e| e.into_inner()) = block.clone();
        Ok(ProducerIdentity { producer_id, producer_epoch: 0 })
    }

    /// The largest producer id with stored state, so new ids are handed out above it: ids that
    /// earlier versions handed out. A stored id too large to be one (half of i64) is ignored,
    /// so no stored state can exhaust the id space.
    fn stored_producer_id_max(&self) -> i64 {
        let max = self.log.producer_id_max();
        if max >= i64::MAX / 2 {
            tracing::warn!(producer_id = max, "ignoring an implausible stored producer id when allocating ids");
            return -1;
        }
        max
    }

    /// A batch may carry a producer id of a block another broker took from the controller a
    /// moment ago, which this broker has not applied yet: it waits (up to
    /// [`PRODUCER_ID_CATCH_UP`]) for its metadata to reach the id before the id is checked, so a
    /// real producer is not refused UNKNOWN_PRODUCER_ID. Ids past one maximal block beyond what
    /// it knows are not waited for (no client makes a broker wait on an id it invented far off).
    async fn await_producer_ids(&self, parsed: &ProducedBatches) {
        let Some(id) = parsed.batches.iter().map(|(h, _)| h.producer_id).max().filter(|id| *id >= 0) else { return };
        let deadline = tokio::time::Instant::now() + PRODUCER_ID_CATCH_UP;
        loop {
            let known = self.controller.state().next_producer_id.max(self.stored_producer_id_max().saturating_add(1));
            let may_come = id >= known && id < known.saturating_add(i64::from(PRODUCER_ID_BLOCK_MAX));
            if !may_come || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The first half of a produce: checks every partition's batches and queues the appends,
    /// in request order, and returns the future of the outcome. A front end that calls this
    /// for one request after another, and awaits the futures later, pipelines requests without
    /// reordering them. Nothing of a partition is appended unless all its batches pass.
    pub async fn produce_enqueue(
        &self,
        request: Produce,
    ) -> Result<impl std::future::Future<Output = Vec<Produced>> + Send + 'static, WireError> {
        self.enqueue_produce(request, true).await
    }

    /// As [`Broker::produce_enqueue`]; `may_forward`: a partition led by another broker is
    /// forwarded to it over the cluster endpoint (else refused, as a forwarded request is at
    /// its leader, so two brokers with different views never pass a request back and forth).
    async fn enqueue_produce(
        &self,
        request: Produce,
        may_forward: bool,
    ) -> Result<impl std::future::Future<Output = Vec<Produced>> + Send + 'static, WireError> {
        let topic = self.topic(&request.topic)?;
        let fsync = topic.config.flush == FlushMode::Always;
        let acks_all = request.acks_all;
        let mut pending = Vec::with_capacity(request.partitions.len());
        // The partitions stored here go to the log writer together, after the loop.
        let mut appends = Appends::default();
        for (asked, bytes) in request.partitions {
            let parsed = match ProducedBatches::parse(&bytes, self.config.batch_decompressed_bytes_max) {
                Ok(parsed) => parsed,
                Err(e) => {
                    pending.push((asked.unwrap_or(PARTITION_UNASSIGNED), Err(e), (0, 0)));
                    continue;
                }
            };
            self.await_producer_ids(&parsed).await;
            // Decoding records (decompressing up to batch_decompressed_bytes_max) and module
            // calls run off the async runtime, so they never hold up other connections.
            // Records are decoded (not only checked) for a schema, or to place them.
            let decodes = asked.is_none() || topic.config.value_schema_validation || topic.config.key_schema_validation;
            let checked = if parsed.is_heavy(decodes) || self.has_produce_modules(&topic) {
                let (broker, topic) = (self.clone(), topic.clone());
                tokio::task::spawn_blocking(move || broker.check_partition_input(&topic, asked, parsed, may_forward))
                    .await
                    .unwrap_or_else(|e| {
                        let why = format!("checking produced batches failed: {e}");
                        vec![(asked.unwrap_or(PARTITION_UNASSIGNED), Err(WireError::new(ErrorCode::Internal, why)))]
                    })
            } else {
                self.check_partition_input(&topic, asked, parsed, may_forward)
            };
            for (partition, checked) in checked {
                // Counted where the records are stored (a forwarded part at its leader).
                let mut carried = (0, 0);
                let queued: Result<Appending, WireError> = match checked {
                    Ok(Checked::Here(state, batches)) => {
                        carried = batches.iter().fold((0u64, 0u64), |(records, bytes), (h, b)| {
                            (records + u64::try_from(h.offset_count()).unwrap_or(0), bytes + b.len() as u64)
                        });
                        self.append_here(&topic, state, batches, fsync, acks_all, &mut appends)
                    }
                    Ok(Checked::Forward(leader, batches)) => {
                        Ok(self.forward_produce(leader, topic.name.clone(), partition, batches, acks_all))
                    }
                    Err(e) => Err(e),
                };
                pending.push((partition, queued, carried));
            }
        }
        // Refused (the writer stopped), the appends' futures fail with it.
        if let Err(e) = self.log.submit_appends(appends).await {
            tracing::error!(error = %e, "queueing appends failed");
        }
        let topic_name = topic.name.clone();
        let traffic = self.traffic.clone();
        let started = std::time::Instant::now();
        Ok(async move {
            let mut produced = Vec::with_capacity(pending.len());
            for (partition, queued, (records, bytes)) in pending {
                let base_offset = match queued {
                    Ok(appended) => appended.await,
                    Err(e) => Err(e),
                };
                match &base_offset {
                    Ok(_) if records > 0 => traffic.produced(&topic_name, records, bytes, started.elapsed()),
                    Ok(_) => {}
                    Err(e) => {
                        traffic.refused(e.code);
                        tracing::debug!(topic = %topic_name, partition, error = %e, "produce rejected");
                    }
                }
                produced.push(Produced { partition, base_offset });
            }
            produced
        })
    }

    /// Queues an append on a partition led here; with `acks_all` on a replicated partition,
    /// refused while too few replicas are in sync, and its future waits for the in-sync
    /// replicas to have the records.
    fn append_here(
        &self,
        topic: &Topic,
        state: Arc<PartitionState>,
        batches: Vec<(BatchHeader, Bytes)>,
        fsync: bool,
        acks_all: bool,
        appends: &mut Appends,
    ) -> Result<Appending, WireError> {
        let replicated_epoch = if acks_all { self.check_insync(topic, state.id)? } else { None };
        let offsets: i64 = batches.iter().map(|(h, _)| h.offset_count()).sum();
        let id = state.id;
        let appended = appends.push(state, batches, fsync);
        let Some(epoch) = replicated_epoch else { return Ok(Box::pin(appended)) };
        let broker = self.clone();
        let min_insync = topic.min_insync_replicas();
        Ok(Box::pin(async move {
            let base = appended.await?;
            broker.await_replicas(id, epoch, base + offsets, min_insync).await?;
            Ok(base)
        }))
    }

    /// Sends a partition's batches to the broker leading it and returns the future of the
    /// base offset they got there. The request goes out at once (in this call's order); the
    /// leader checks them as it checks its own clients' batches.
    fn forward_produce(
        &self,
        leader: u64,
        topic: String,
        partition: u32,
        batches: Vec<(BatchHeader, Bytes)>,
        acks_all: bool,
    ) -> Appending {
        let controller = self.controller.clone();
        let header = serde_json::to_vec(&ForwardedProduce { topic, partition, acks_all }).unwrap_or_default();
        let mut body = Vec::with_capacity(4 + header.len() + batches.iter().map(|(_, b)| b.len()).sum::<usize>());
        body.extend_from_slice(&u32::try_from(header.len()).unwrap_or(u32::MAX).to_be_bytes());
        body.extend_from_slice(&header);
        for (_, batch) in &batches {
            body.extend_from_slice(batch);
        }
        let sent = tokio::spawn(async move {
            let answer = controller.ask(leader, RPC_PRODUCE, &body, FORWARD_PRODUCE_TIMEOUT).await?;
            serde_json::from_slice::<Result<i64, WireError>>(&answer).unwrap_or_else(|e| {
                Err(WireError::new(
                    ErrorCode::Internal,
                    format!("broker {leader} answered a forwarded produce badly: {e}"),
                ))
            })
        });
        Box::pin(async move {
            sent.await.unwrap_or_else(|e| Err(WireError::new(ErrorCode::Internal, format!("forwarding: {e}"))))
        })
    }

    /// Answers a produce another broker forwarded (`RPC_PRODUCE`): appended here if this
    /// broker leads the partition, never forwarded again.
    pub async fn answer_forwarded_produce(&self, body: Vec<u8>) -> Vec<u8> {
        let outcome = async {
            let malformed = |why: &str| WireError::new(ErrorCode::MalformedFrame, format!("forwarded produce: {why}"));
            let length = body.get(..4).ok_or_else(|| malformed("no header length"))?;
            let length = u32::from_be_bytes(length.try_into().map_err(|_| malformed("header length"))?) as usize;
            let header = body.get(4..4 + length).ok_or_else(|| malformed("header past the end"))?;
            let header: ForwardedProduce = serde_json::from_slice(header).map_err(|e| malformed(&e.to_string()))?;
            let batches = Bytes::from(body[4 + length..].to_vec());
            let request = Produce {
                topic: header.topic,
                partitions: vec![(Some(header.partition), batches)],
                acks_all: header.acks_all,
            };
            let produced = self.enqueue_produce(request, false).await?.await;
            produced.into_iter().next().map_or_else(|| Err(malformed("nothing produced")), |p| p.base_offset)
        }
        .await;
        serde_json::to_vec(&outcome).unwrap_or_default()
    }

    /// One partition's input of a produce request, checked and placed: the partition the
    /// client asked for, or those the topic's partitioner gives each record. A partition led
    /// by another broker is left to it (`Checked::Forward`) when `may_forward`.
    fn check_partition_input(
        &self,
        topic: &Topic,
        asked: Option<u32>,
        parsed: ProducedBatches,
        may_forward: bool,
    ) -> Vec<(u32, Result<Checked, WireError>)> {
        let assigned = match asked {
            Some(partition) => vec![(partition, parsed)],
            None => match self.assign_partitions(topic, &parsed) {
                Ok(assigned) => assigned,
                Err(e) => return vec![(PARTITION_UNASSIGNED, Err(e))],
            },
        };
        assigned
            .into_iter()
            .map(|(partition, parsed)| {
                let elsewhere = self.leader_of(topic, partition).filter(|l| *l != self.config.node_id);
                if let Some(leader) = elsewhere.filter(|_| may_forward && partition < topic.partitions) {
                    return (partition, Ok(Checked::Forward(leader, parsed.batches)));
                }
                let checked = self.partition(topic, partition).and_then(|state| {
                    self.check_batches(topic, partition, &parsed).map(|()| Checked::Here(state, parsed.batches))
                });
                (partition, checked)
            })
            .collect()
    }

    /// Whether the topic has partitioner or validator modules, which produce calls.
    fn has_produce_modules(&self, topic: &Topic) -> bool {
        self.controller.state().modules.values().any(|d| {
            matches!(d.kind, PluginKind::Validator | PluginKind::Partitioner)
                && d.active().spec.topic.as_deref() == Some(topic.name.as_str())
        })
    }

    /// At least one batch; each within `max.message.bytes` (checked first, on the header
    /// alone), holding a record for every offset it spans, stamped no further ahead than the
    /// broker accepts, and with every record decoding within `batch_decompressed_bytes_max`;
    /// then the records accepted by the topic's schema checks and validator modules.
    pub(super) fn check_batches(
        &self,
        topic: &Topic,
        partition: u32,
        parsed: &ProducedBatches,
    ) -> Result<(), WireError> {
        if parsed.batches.is_empty() {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                "produce request holds no record batch for a partition",
            ));
        }
        let latest_ms = weir_sdk::now_ms().saturating_add(self.config.message_timestamp_after_max_ms);
        if parsed.batches.iter().any(|(header, _)| header.producer_id >= 0) {
            // Ids this cluster handed out (or with state here from before) only: a client cannot
            // plant sequence state under an id a producer is given later, nor one near i64::MAX.
            let allocated = FIRST_PRODUCER_ID
                ..self.controller.state().next_producer_id.max(self.stored_producer_id_max().saturating_add(1));
            let unissued = self.unissued_producer_ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let handed_out = |id: &i64| allocated.contains(id) && !unissued.contains(id);
            if let Some((header, _)) =
                parsed.batches.iter().find(|(h, _)| h.producer_id >= 0 && !handed_out(&h.producer_id))
            {
                return Err(WireError::new(
                    ErrorCode::UnknownProducerId,
                    format!(
                        "producer id {} was never handed out by this cluster; an idempotent producer takes one with InitProducerId",
                        header.producer_id
                    ),
                ));
            }
        }
        for (header, _) in &parsed.batches {
            // Kafka's v2 rule: a producer's batch holds every offset it spans.
            if i64::from(header.record_count) != header.offset_count() {
                return Err(WireError::new(
                    ErrorCode::CorruptBatch,
                    format!(
                        "record batch holds {} records but spans {} offsets (last offset delta {})",
                        header.record_count,
                        header.offset_count(),
                        header.last_offset_delta
                    ),
                ));
            }
            // Create-time stamps far ahead would hold off time retention (as Kafka's
            // log.message.timestamp.after.max.ms); attribute bit 3 marks log-append time.
            if header.attributes & 0x08 == 0 && header.max_timestamp > latest_ms {
                return Err(WireError::new(
                    ErrorCode::InvalidTimestamp,
                    format!(
                        "record timestamp {} is more than message_timestamp_after_max_ms = {} ahead of the broker's clock",
                        header.max_timestamp, self.config.message_timestamp_after_max_ms
                    ),
                ));
            }
            if header.total_bytes > topic.config.max_message_bytes as usize {
                return Err(WireError::new(
                    ErrorCode::MessageTooLarge,
                    format!(
                        "record batch of {} bytes exceeds max.message.bytes = {} of topic {:?}",
                        header.total_bytes, topic.config.max_message_bytes, topic.name
                    ),
                ));
            }
        }
        // Every record decodes, within the decompression bound, as Kafka's log validator
        // checks: no consumer ever meets a stored batch it cannot read. When schemas or
        // validators will read the records, they are decoded once here and kept; otherwise
        // they are only checked, without building them.
        let schemas = topic.config.value_schema_validation || topic.config.key_schema_validation;
        let decoded = match schemas || !self.deployments_on(topic, PluginKind::Validator).is_empty() {
            true => parsed.records()?.len(),
            false => parsed.check_records()?,
        };
        let claimed: i64 = parsed.batches.iter().map(|(h, _)| i64::from(h.record_count)).sum();
        if i64::try_from(decoded).ok() != Some(claimed) {
            return Err(WireError::new(
                ErrorCode::CorruptBatch,
                format!("record batches claim {claimed} records but {decoded} decode"),
            ));
        }
        if topic.config.value_schema_validation || topic.config.key_schema_validation {
            self.validate_records(topic, partition, parsed)?;
        }
        self.validate_with_modules(topic, partition, parsed)
    }

    /// Schema validation: every record of every batch must carry a registered schema id of its
    /// subject and decode with it; the first failure rejects the whole request for the
    /// partition, naming the record.
    pub(super) fn validate_records(
        &self,
        topic: &Topic,
        partition: u32,
        parsed: &ProducedBatches,
    ) -> Result<(), WireError> {
        let strategy = match topic.config.subject_name_strategy {
            weir_sdk::wire::SubjectNameStrategy::TopicName => SubjectNameStrategy::TopicName,
            weir_sdk::wire::SubjectNameStrategy::RecordName => SubjectNameStrategy::RecordName,
            weir_sdk::wire::SubjectNameStrategy::TopicRecordName => SubjectNameStrategy::TopicRecordName,
        };
        let records = parsed.records()?;
        let parts = [(true, topic.config.key_schema_validation), (false, topic.config.value_schema_validation)];
        // The metadata lock is held only to look up each distinct schema id; records are
        // decoded after it is let go, so a large batch never holds up a Raft apply.
        let mut schemas: HashMap<(bool, u32), Result<Compiled, String>> = HashMap::new();
        {
            let state = self.controller.state();
            for r in records {
                for (is_key, _) in parts.iter().filter(|(_, on)| *on) {
                    if let Ok(id) = schema_id(*is_key, part_of(r, *is_key)) {
                        schemas.entry((*is_key, id)).or_insert_with(|| {
                            self.validator.schema_for(&state.registry, &topic.name, *is_key, strategy, id)
                        });
                    }
                }
            }
        }
        for (index, r) in records.iter().enumerate() {
            for (is_key, _) in parts.iter().filter(|(_, on)| *on) {
                let bytes = part_of(r, *is_key);
                let outcome = schema_id(*is_key, bytes).and_then(|id| {
                    let schema =
                        schemas.get(&(*is_key, id)).cloned().unwrap_or_else(|| Err("schema not looked up".into()))?;
                    check_datum(&schema, *is_key, id, bytes)
                });
                if let Err(why) = outcome {
                    return Err(WireError::new(
                        ErrorCode::InvalidRecord,
                        format!("record {index} of the produce request to topic {:?} partition {partition} failed schema validation: {why}; nothing of the request for that partition was stored", topic.name),
                    )
                    .for_record(index));
                }
            }
        }
        Ok(())
    }

    /// Validator modules deployed on the topic: every record must be accepted by each; the first
    /// rejection rejects the request for the partition, naming the record and the reason.
    pub(super) fn validate_with_modules(
        &self,
        topic: &Topic,
        partition: u32,
        parsed: &ProducedBatches,
    ) -> Result<(), WireError> {
        let validators = self.deployments_on(topic, PluginKind::Validator);
        if validators.is_empty() {
            return Ok(());
        }
        // Offsets are given on append; a validator sees the record's index in the request.
        let inputs = request_input_batch(&topic.name, partition, parsed.records()?)
            .map_err(|e| batch_too_large(&format!("the validator modules of topic {:?}", topic.name), &e))?;
        for deployment in validators {
            let name = &deployment.name;
            if let Some(reason) = &deployment.paused {
                return Err(WireError::new(
                    ErrorCode::ModuleFailed,
                    format!("validator module {name:?} of topic {:?} is paused ({reason}); resume or remove it. Nothing of the request for partition {partition} was stored", topic.name),
                ));
            }
            let verdicts = self
                .plugins
                .call_pooled(&deployment, inputs.len(), |instance| instance.validate(&inputs))
                .map_err(|e| {
                let e = self.module_failed(&deployment, e);
                WireError::new(
                    e.code,
                    format!("{}; nothing of the request for partition {partition} was stored", e.message),
                )
            })?;
            let metrics = self.plugins.metrics(name);
            let rejected = verdicts.iter().filter(|v| v.is_some()).count() as u64;
            metrics.records_out.fetch_add(inputs.len() as u64 - rejected, std::sync::atomic::Ordering::Relaxed);
            if let Some((index, reason)) = verdicts.iter().enumerate().find_map(|(i, v)| v.as_ref().map(|r| (i, r))) {
                metrics.records_rejected.fetch_add(rejected, std::sync::atomic::Ordering::Relaxed);
                return Err(WireError::new(
                    ErrorCode::InvalidRecord,
                    format!(
                        "record {index} of the produce request to topic {:?} partition {partition} was rejected by validator module {name:?} v{}: {reason}; nothing of the request for that partition was stored",
                        topic.name, deployment.active_version
                    ),
                )
                .for_record(index));
            }
        }
        Ok(())
    }

    /// Splits a batch the client left without a partition: the topic's partitioner module
    /// picks each record's partition, or, without one, Kafka's murmur2 of the key (records
    /// without a key go round the partitions). One new batch per partition.
    pub(super) fn assign_partitions(
        &self,
        topic: &Topic,
        parsed: &ProducedBatches,
    ) -> Result<Vec<(u32, ProducedBatches)>, WireError> {
        if parsed.batches.iter().any(|(header, _)| header.producer_id >= 0) {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                "an idempotent batch must name its partition: the broker cannot split it and keep its sequence numbers",
            ));
        }
        let records = parsed.records()?;
        let partitions: Vec<u32> = match self.deployments_on(topic, PluginKind::Partitioner).into_iter().next() {
            Some(deployment) => {
                if let Some(reason) = &deployment.paused {
                    return Err(WireError::new(
                        ErrorCode::ModuleFailed,
                        format!("partitioner module {:?} of topic {:?} is paused ({reason}); resume or remove it, or name the partition. Nothing of the request was stored", deployment.name, topic.name),
                    ));
                }
                let inputs = request_input_batch(&topic.name, 0, records)
                    .map_err(|e| batch_too_large(&format!("partitioner module {:?}", deployment.name), &e))?;
                let partitions = self
                    .plugins
                    .call_pooled(&deployment, inputs.len(), |instance| instance.partition(&inputs, topic.partitions))
                    .map_err(|e| {
                        let e = self.module_failed(&deployment, e);
                        WireError::new(e.code, format!("{}; nothing of the request was stored", e.message))
                    })?;
                self.plugins
                    .metrics(&deployment.name)
                    .records_out
                    .fetch_add(inputs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                partitions
            }
            None => records
                .iter()
                .enumerate()
                .map(|(i, r)| match &r.key {
                    Some(key) => weir_sdk::partitioner::partition_for_key(key, topic.partitions),
                    // Keyless records go round the partitions.
                    None => u32::try_from(i % topic.partitions as usize).unwrap_or(0),
                })
                .collect(),
        };
        let mut by_partition: std::collections::BTreeMap<u32, Vec<Record>> = Default::default();
        for (record, partition) in records.iter().zip(partitions) {
            by_partition.entry(partition).or_default().push(record.clone());
        }
        by_partition
            .into_iter()
            .map(|(p, records)| {
                let batch = weir_sdk::batch::encode_batch(&records, weir_sdk::batch::Compression::None)?;
                Ok((p, ProducedBatches::parse(&batch, self.config.batch_decompressed_bytes_max)?))
            })
            .collect()
    }

    // ---- module deployments -------------------------------------------------------------------
}

/// A produce request as the service takes it, whichever protocol carried it: per entry, the
/// partition (`None`: the broker places each record) and that entry's batches, back to back.
#[derive(Debug, Clone)]
pub struct Produce {
    pub topic: String,
    pub partitions: Vec<(Option<u32>, Bytes)>,
    /// `acks=all`: answered once every in-sync replica has the records (on a replicated
    /// partition; refused while fewer than `min.insync.replicas` are in sync).
    pub acks_all: bool,
}

/// What became of one partition's batches: the base offset they got, or why nothing of them
/// was stored. `partition` is [`PARTITION_UNASSIGNED`] when the broker could not place records
/// it was asked to place.
#[derive(Debug, Clone)]
pub struct Produced {
    pub partition: u32,
    pub base_offset: Result<i64, WireError>,
}

/// A partition's batches of one produce request, parsed once: each batch's header (its CRC
/// checked here, once) and its records, decoded once within `inflated_bytes_max` and then
/// kept for the schema checks, validators and partitioners. `Broker::check_batches` decodes
/// them before anything is stored, so neither a decompression bomb nor a batch whose records
/// do not decode ever is.
pub struct ProducedBatches {
    batches: Vec<(BatchHeader, Bytes)>,
    inflated_bytes_max: usize,
    records: std::sync::OnceLock<Result<Vec<Record>, WireError>>,
}

impl ProducedBatches {
    /// Batches worth checking off the async runtime: compressed, or over 256 KiB when their
    /// records are to be decoded (`decodes`; about 120 µs per MiB), or over 4 MiB when they are
    /// only checked (about 30 µs per MiB, `check_records`). Handing a check to the blocking
    /// pool costs two thread switches, more than checking a batch of a few MiB.
    pub fn is_heavy(&self, decodes: bool) -> bool {
        let limit = if decodes { 256 << 10 } else { 4 << 20 };
        self.batches.iter().any(|(h, _)| h.attributes & 0x07 != 0)
            || self.batches.iter().map(|(h, _)| h.total_bytes).sum::<usize>() > limit
    }

    pub fn parse(bytes: &Bytes, inflated_bytes_max: usize) -> Result<Self, WireError> {
        let mut batches = Vec::new();
        let mut at = 0usize;
        for (header, batch) in split_batches(bytes)? {
            let batch = bytes.slice(at..at + batch.len());
            at += batch.len();
            batches.push((header, batch));
        }
        Ok(Self { batches, inflated_bytes_max, records: std::sync::OnceLock::new() })
    }

    /// How many records the batches hold, each batch checked to decode as [`Self::records`]
    /// would decode it (the records decoded already, if they were).
    pub fn check_records(&self) -> Result<usize, WireError> {
        if let Some(records) = self.records.get() {
            return records.as_ref().map(|r| r.len()).map_err(Clone::clone);
        }
        let mut count = 0;
        for (_, batch) in &self.batches {
            count += check_batch_records(batch, self.inflated_bytes_max)?;
        }
        Ok(count)
    }

    /// The records of every batch, in order; decoded once.
    pub fn records(&self) -> Result<&[Record], WireError> {
        self.records
            .get_or_init(|| {
                let mut out = Vec::new();
                for (_, batch) in &self.batches {
                    out.extend(decode_batch_records(batch.clone(), self.inflated_bytes_max)?);
                }
                Ok(out)
            })
            .as_deref()
            .map_err(Clone::clone)
    }
}

/// An idempotent producer's identity: an id no other producer had, and its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// A record's key or value.
fn part_of(r: &Record, is_key: bool) -> Option<&[u8]> {
    if is_key {
        r.key.as_deref()
    } else {
        r.value.as_deref()
    }
}
