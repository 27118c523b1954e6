//! The broker service: every rule about topics, produce, fetch and offsets lives here, and every
//! front end (the native QUIC protocol now; Kafka, console and CLI through them) calls it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_sdk::batch::split_batches;
use weir_sdk::wire::*;
use weir_sdk::{ErrorCode, FlushMode, WireError};

use weir_registry::validate::{SubjectNameStrategy, Validator};

use weir_runtime::{Limits, PluginKind};

use crate::controller::Controller;
use crate::groups::GroupCoordinator;
use crate::plugins::{input_records, Plugins};
use weir_meta::deployments::{self, Deployment, DeploymentSpec, DeploymentVersion, ModuleCommand};
use weir_meta::metadata::{Command, Event, Topic};
use weir_storage::log::{LogStore, PartitionId, PartitionState, ProducerFilter};

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub node_id: u64,
    /// Longest a fetch may be held waiting for data, whatever the client asks.
    pub fetch_wait_ms_max: u32,
    pub fetch_bytes_max: u32,
    /// An idempotent producer idle this long loses its sequence state (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
}

#[derive(Clone)]
pub struct Broker {
    config: ServiceConfig,
    controller: Controller,
    log: LogStore,
    groups: GroupCoordinator,
    /// Parsed schemas by id, for topics with schema validation.
    validator: Arc<Validator>,
    plugins: Plugins,
    /// Producer ids of the block this broker took from the controller and has not handed out.
    producer_ids: Arc<tokio::sync::Mutex<std::ops::Range<i64>>>,
}

/// Producer ids taken from the controller per proposal (as Kafka's AllocateProducerIds).
const PRODUCER_ID_BLOCK: u32 = 1000;

/// The error for a controller event that does not belong to the command proposed: a bug, but
/// one that fails the request rather than the broker.
fn mismatched(command: &str, event: &Event) -> WireError {
    WireError::new(ErrorCode::Internal, format!("the controller answered {command} with {event:?}"))
}

impl Broker {
    /// Opens the partitions of every known topic (recovering torn tails).
    pub fn new(
        config: ServiceConfig,
        controller: Controller,
        log: LogStore,
        groups: GroupCoordinator,
        plugins: Plugins,
    ) -> Result<Self, WireError> {
        let broker = Self {
            config,
            controller,
            log,
            groups,
            validator: Arc::default(),
            plugins,
            producer_ids: Arc::new(tokio::sync::Mutex::new(0..0)),
        };
        let topics: Vec<Topic> = broker.controller.state().topics.values().cloned().collect();
        for topic in &topics {
            broker.open_partitions(topic)?;
        }
        Ok(broker)
    }

    fn open_partitions(&self, topic: &Topic) -> Result<(), WireError> {
        for partition in 0..topic.partitions {
            self.log.open_partition(PartitionId { topic_id: topic.id, partition })?;
        }
        Ok(())
    }

    pub fn log(&self) -> &LogStore {
        &self.log
    }

    /// Consumer groups and committed offsets, shared by every front end.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    pub fn deployments(&self) -> Vec<Deployment> {
        self.controller.state().modules.values().cloned().collect()
    }

    pub fn topics(&self) -> Vec<Topic> {
        self.controller.state().topics.values().cloned().collect()
    }

    fn topic(&self, name: &str) -> Result<Topic, WireError> {
        self.controller.state().topic(name).cloned()
    }

    fn partition(&self, topic: &Topic, partition: u32) -> Result<Arc<PartitionState>, WireError> {
        if partition >= topic.partitions {
            return Err(WireError::new(
                ErrorCode::UnknownPartition,
                format!(
                    "partition {partition} does not exist: topic {:?} has partitions 0 to {}",
                    topic.name,
                    topic.partitions - 1
                ),
            ));
        }
        self.log.partition(PartitionId { topic_id: topic.id, partition }).ok_or_else(|| {
            WireError::new(ErrorCode::Internal, format!("partition {partition} of {:?} is not open", topic.name))
        })
    }

    pub async fn create_topic(&self, request: CreateTopicRequest) -> Result<TopicDescription, WireError> {
        let event = self
            .controller
            .propose(Command::CreateTopic {
                name: request.name,
                partitions: request.partitions,
                config: request.config,
            })
            .await?;
        let Event::TopicCreated(topic) = event else { return Err(mismatched("CreateTopic", &event)) };
        self.open_partitions(&topic)?;
        tracing::info!(topic = %topic.name, partitions = topic.partitions, "topic created");
        self.describe(&topic)
    }

    /// Deletes a topic with everything stored about it: its partitions' batches, the
    /// producer states of its partitions, consumer groups' committed offsets for it and
    /// transforms' progress through it, so a topic created again under the name starts clean.
    pub async fn delete_topic(&self, name: &str) -> Result<(), WireError> {
        let event = self.controller.propose(Command::DeleteTopic { name: name.to_owned() }).await?;
        let Event::TopicDeleted(topic) = event else { return Err(mismatched("DeleteTopic", &event)) };
        self.log.forget_producers(ProducerFilter::Topic(topic.id)).await?;
        let (log, groups, plugins) = (self.log.clone(), self.groups.clone(), self.plugins.clone());
        let deleted = topic.clone();
        tokio::task::spawn_blocking(move || {
            for partition in 0..deleted.partitions {
                log.delete_partition(PartitionId { topic_id: deleted.id, partition })?;
            }
            groups
                .delete_topic_offsets(&deleted.name)
                .map_err(|e| WireError::new(ErrorCode::Storage, format!("deleting committed offsets: {e:?}")))?;
            plugins.clear_topic_progress(&deleted.name)
        })
        .await
        .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))??;
        tracing::info!(topic = %name, id = topic.id, "topic deleted");
        Ok(())
    }

    /// A new producer identity for an idempotent producer, from the block of ids this broker
    /// took from the controller; takes a new block when it is used up.
    pub async fn init_producer_id(&self) -> Result<InitProducerIdResponse, WireError> {
        let mut block = self.producer_ids.lock().await;
        if block.is_empty() {
            let at_least = self.log.producer_id_max().saturating_add(1);
            let command = Command::AllocateProducerIds { count: PRODUCER_ID_BLOCK, at_least };
            let event = self.controller.propose(command).await?;
            let Event::ProducerIds { first, count } = event else {
                return Err(mismatched("AllocateProducerIds", &event));
            };
            *block = first..first + i64::from(count);
        }
        let producer_id = block.start;
        block.start += 1;
        Ok(InitProducerIdResponse { producer_id, producer_epoch: 0 })
    }

    pub fn list_topics(&self) -> Vec<String> {
        self.controller.state().topics.keys().cloned().collect()
    }

    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription, WireError> {
        self.describe(&self.topic(name)?)
    }

    fn describe(&self, topic: &Topic) -> Result<TopicDescription, WireError> {
        let partitions = (0..topic.partitions)
            .map(|p| {
                let state = self.partition(topic, p)?;
                Ok(PartitionDescription {
                    partition: p,
                    leader: self.config.node_id,
                    log_start_offset: state.log_start_offset(),
                    high_watermark: state.end_offset(),
                    size_bytes: state.size_bytes(),
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(TopicDescription { name: topic.name.clone(), id: topic.id, partitions, config: topic.config.clone() })
    }

    pub async fn alter_topic(&self, request: AlterTopicRequest) -> Result<TopicDescription, WireError> {
        let topic = self.topic(&request.name)?;
        let config = topic.config.clone().with_entries(request.config.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let partitions = request.partitions.unwrap_or(topic.partitions);
        let event = self.controller.propose(Command::AlterTopic { name: request.name, partitions, config }).await?;
        let Event::TopicAltered { after, .. } = event else { return Err(mismatched("AlterTopic", &event)) };
        self.open_partitions(&after)?;
        self.describe(&after)
    }

    /// Validates every batch (CRC, size) before anything of a partition is appended.
    ///
    /// The first half of a produce: validates and queues the appends, in request order, and
    /// returns the future of the response. A front end that calls this for one request after
    /// another, and awaits the futures later, pipelines requests without reordering them.
    pub async fn produce_enqueue(
        &self,
        request: ProduceRequest,
        payload: Bytes,
    ) -> Result<impl std::future::Future<Output = ProduceResponse> + Send + 'static, WireError> {
        let topic = self.topic(&request.topic)?;
        let declared: u64 = request.partitions.iter().map(|p| u64::from(p.bytes)).sum();
        if declared != payload.len() as u64 {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!("produce request declares {declared} bytes of batches but carries {}", payload.len()),
            ));
        }
        let fsync = topic.config.flush == FlushMode::Always;
        let mut offset = 0usize;
        let mut pending = Vec::with_capacity(request.partitions.len());
        for p in &request.partitions {
            let bytes = payload.slice(offset..offset + p.bytes as usize);
            offset += p.bytes as usize;
            let assigned = if p.partition == PARTITION_UNASSIGNED {
                match self.assign_partitions(&topic, &bytes) {
                    Ok(assigned) => assigned,
                    Err(e) => {
                        pending.push((p.partition, Err(e)));
                        continue;
                    }
                }
            } else {
                vec![(p.partition, bytes)]
            };
            for (partition, bytes) in assigned {
                let queued = match self
                    .partition(&topic, partition)
                    .and_then(|state| Ok((state, self.validate_batches(&topic, partition, &bytes)?)))
                {
                    Ok((state, batches)) => self.log.enqueue(state, batches, fsync).await,
                    Err(e) => Err(e),
                };
                pending.push((partition, queued));
            }
        }
        let topic_name = topic.name;
        Ok(async move {
            let mut partitions = Vec::with_capacity(pending.len());
            for (partition, queued) in pending {
                let outcome = match queued {
                    Ok(appended) => appended.await,
                    Err(e) => Err(e),
                };
                partitions.push(match outcome {
                    Ok(base_offset) => {
                        ProducePartitionResponse { partition, base_offset, log_append_time_ms: -1, error: None }
                    }
                    Err(e) => {
                        tracing::debug!(topic = %topic_name, partition, error = %e, "produce rejected");
                        ProducePartitionResponse { partition, base_offset: -1, log_append_time_ms: -1, error: Some(e) }
                    }
                });
            }
            ProduceResponse { partitions }
        })
    }

    fn validate_batches(
        &self,
        topic: &Topic,
        partition: u32,
        bytes: &Bytes,
    ) -> Result<Vec<(weir_sdk::batch::BatchHeader, Bytes)>, WireError> {
        let mut out = Vec::new();
        let mut at = 0usize;
        for (header, batch) in split_batches(bytes)? {
            if header.total_bytes > topic.config.max_message_bytes as usize {
                return Err(WireError::new(
                    ErrorCode::MessageTooLarge,
                    format!(
                        "record batch of {} bytes exceeds max.message.bytes = {} of topic {:?}",
                        header.total_bytes, topic.config.max_message_bytes, topic.name
                    ),
                ));
            }
            out.push((header, bytes.slice(at..at + batch.len())));
            at += batch.len();
        }
        if topic.config.value_schema_validation || topic.config.key_schema_validation {
            self.validate_records(topic, partition, &out)?;
        }
        self.validate_with_modules(topic, partition, &out)?;
        if out.is_empty() {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                "produce request holds no record batch for a partition",
            ));
        }
        Ok(out)
    }

    /// Schema validation: every record of every batch must carry a registered schema id of its
    /// subject and decode with it; the first failure rejects the whole request for the
    /// partition, naming the record.
    fn validate_records(
        &self,
        topic: &Topic,
        partition: u32,
        batches: &[(weir_sdk::batch::BatchHeader, Bytes)],
    ) -> Result<(), WireError> {
        let strategy =
            SubjectNameStrategy::parse(&topic.config.subject_name_strategy).unwrap_or(SubjectNameStrategy::TopicName);
        let state = self.controller.state();
        let mut index = 0usize;
        for (_, batch) in batches {
            for record in weir_sdk::batch::decode_batches(&topic.name, 0, batch.clone(), 0)? {
                let r = &record.record;
                let outcome = if topic.config.key_schema_validation {
                    self.validator.check(&state.registry, &topic.name, true, strategy, r.key.as_deref())
                } else {
                    Ok(())
                }
                .and_then(|()| {
                    if topic.config.value_schema_validation {
                        self.validator.check(&state.registry, &topic.name, false, strategy, r.value.as_deref())
                    } else {
                        Ok(())
                    }
                });
                if let Err(why) = outcome {
                    return Err(WireError::new(
                        ErrorCode::InvalidRecord,
                        format!("record {index} of the produce request to topic {:?} partition {partition} failed schema validation: {why}; nothing of the request for that partition was stored", topic.name),
                    ));
                }
                index += 1;
            }
        }
        Ok(())
    }

    /// Validator modules deployed on the topic: every record must be accepted by each; the first
    /// rejection rejects the request for the partition, naming the record and the reason.
    fn validate_with_modules(
        &self,
        topic: &Topic,
        partition: u32,
        batches: &[(weir_sdk::batch::BatchHeader, Bytes)],
    ) -> Result<(), WireError> {
        let validators = self.deployments_on(topic, PluginKind::Validator);
        if validators.is_empty() {
            return Ok(());
        }
        let mut records = Vec::new();
        for (_, batch) in batches {
            records.extend(weir_sdk::batch::decode_batches(&topic.name, 0, batch.clone(), 0)?);
        }
        let mut inputs = input_records(&records);
        for (index, input) in inputs.iter_mut().enumerate() {
            // Offsets are given on append; a validator sees the record's index in the request.
            input.offset = index as i64;
        }
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
                ));
            }
        }
        Ok(())
    }

    /// Active deployments of `kind` serving `topic`.
    fn deployments_on(&self, topic: &Topic, kind: PluginKind) -> Vec<Deployment> {
        self.controller
            .state()
            .modules
            .values()
            .filter(|d| d.kind == kind && d.active().spec.topic.as_deref() == Some(topic.name.as_str()))
            .cloned()
            .collect()
    }

    /// Counts a failed call; pauses the deployment once it has failed `failures_max` times in a row.
    pub(crate) fn module_failed(&self, deployment: &Deployment, error: WireError) -> WireError {
        let failures =
            self.plugins.metrics(&deployment.name).failures_consecutive.load(std::sync::atomic::Ordering::Relaxed);
        let failures_max = deployment.active().spec.failures_max;
        if failures >= failures_max && deployment.paused.is_none() {
            let reason = format!("{failures} consecutive failures, the last: {}", error.message);
            tracing::warn!(module = %deployment.name, %reason, "pausing module deployment");
            let controller = self.controller.clone();
            let name = deployment.name.clone();
            tokio::spawn(async move {
                if let Err(e) = controller.propose(Command::Module(ModuleCommand::Pause { name, reason })).await {
                    tracing::error!(error = %e, "pausing a failing module deployment");
                }
            });
        }
        error
    }

    /// Splits a batch the client left without a partition: the topic's partitioner module
    /// picks each record's partition, or, without one, Kafka's murmur2 of the key (records
    /// without a key go round the partitions). One new batch per partition.
    fn assign_partitions(&self, topic: &Topic, bytes: &Bytes) -> Result<Vec<(u32, Bytes)>, WireError> {
        let mut records = Vec::new();
        for (header, _) in split_batches(bytes)? {
            if header.producer_id >= 0 {
                return Err(WireError::new(
                    ErrorCode::InvalidRequest,
                    "an idempotent batch must name its partition: the broker cannot split it and keep its sequence numbers",
                ));
            }
        }
        records.extend(weir_sdk::batch::decode_batches(&topic.name, 0, bytes.clone(), 0)?);
        let partitions: Vec<u32> = match self.deployments_on(topic, PluginKind::Partitioner).into_iter().next() {
            Some(deployment) => {
                if let Some(reason) = &deployment.paused {
                    return Err(WireError::new(
                        ErrorCode::ModuleFailed,
                        format!("partitioner module {:?} of topic {:?} is paused ({reason}); resume or remove it, or name the partition. Nothing of the request was stored", deployment.name, topic.name),
                    ));
                }
                let inputs = input_records(&records);
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
                .map(|(i, r)| match &r.record.key {
                    Some(key) => weir_sdk::partitioner::partition_for_key(key, topic.partitions),
                    None => i as u32 % topic.partitions,
                })
                .collect(),
        };
        let mut by_partition: std::collections::BTreeMap<u32, Vec<weir_sdk::batch::Record>> = Default::default();
        for (record, partition) in records.into_iter().zip(partitions) {
            by_partition.entry(partition).or_default().push(record.record);
        }
        by_partition
            .into_iter()
            .map(|(p, records)| Ok((p, weir_sdk::batch::encode_batch(&records, weir_sdk::batch::Compression::None)?)))
            .collect()
    }

    // ---- module deployments -------------------------------------------------------------------

    pub async fn deploy_module(
        &self,
        request: DeployModuleRequest,
        bytes: Bytes,
    ) -> Result<ModuleDescription, WireError> {
        let invalid = |m: String| WireError::new(ErrorCode::InvalidModule, m);
        let kind = PluginKind::parse(&request.kind).map_err(invalid)?;
        deployments::validate_name(&request.name)?;
        let plugins = self.plugins.clone();
        let upload = bytes.clone();
        let module = tokio::task::spawn_blocking(move || plugins.accept(&upload, kind))
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))??;
        let defaults = self.plugins.config();
        let dead_letter_topic = request.dead_letter_topic.unwrap_or_else(|| format!("{}.dlq", request.name));
        let spec = DeploymentSpec {
            kind,
            inputs: request.inputs,
            output: request.output,
            topic: request.topic,
            params: request.params,
            limits: Limits {
                deadline_ms: request.deadline_ms.unwrap_or(defaults.limits.deadline_ms),
                memory_bytes: request.memory_bytes.unwrap_or(defaults.limits.memory_bytes),
            },
            dead_letter_topic: dead_letter_topic.clone(),
            failures_max: request.failures_max.unwrap_or(defaults.failures_max),
        };
        let version = DeploymentVersion {
            version: 0,
            sha256: module.sha256().to_owned(),
            size_bytes: bytes.len() as u64,
            deployed_at_ms: weir_sdk::now_ms(),
            spec,
        };
        let command = ModuleCommand::Deploy { name: request.name.clone(), version };
        // Check the deployment before creating its dead-letter topic, so that a refused deploy
        // leaves nothing behind.
        {
            let state = self.controller.state();
            let mut topics = state.topics.clone();
            topics.entry(dead_letter_topic.clone()).or_insert_with(|| Topic {
                id: 0,
                name: dead_letter_topic.clone(),
                partitions: 1,
                config: TopicConfig::default(),
            });
            deployments::apply(&mut state.modules.clone(), &topics, command.clone())?;
        }
        if self.topic(&dead_letter_topic).is_err() {
            let created = self
                .create_topic(CreateTopicRequest {
                    name: dead_letter_topic.clone(),
                    partitions: 1,
                    config: TopicConfig::default(),
                })
                .await;
            match created {
                Ok(_) => {
                    tracing::info!(topic = %dead_letter_topic, module = %request.name, "dead-letter topic created")
                }
                Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.controller.propose(Command::Module(command)).await?;
        let Event::Module(deployment) = event else { return Err(mismatched("Deploy", &event)) };
        self.plugins.metrics(&deployment.name).failures_consecutive.store(0, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(module = %deployment.name, version = deployment.active_version, kind = kind.as_str(), sha256 = %module.sha256(), "module deployed");
        Ok(self.describe_deployment(&deployment))
    }

    pub async fn module_action(&self, name: &str, action: ModuleAction) -> Result<ModuleDescription, WireError> {
        let name = name.to_owned();
        let command = match action {
            ModuleAction::Pause => ModuleCommand::Pause { name: name.clone(), reason: "paused by an operator".into() },
            ModuleAction::Resume => ModuleCommand::Resume { name: name.clone() },
            ModuleAction::Rollback => ModuleCommand::Rollback { name: name.clone() },
            ModuleAction::Remove => ModuleCommand::Remove { name: name.clone() },
        };
        let event = self.controller.propose(Command::Module(command)).await?;
        let Event::Module(deployment) = event else { return Err(mismatched("a module command", &event)) };
        let description = self.describe_deployment(&deployment);
        match action {
            ModuleAction::Remove => {
                self.plugins.forget(&name);
                self.plugins.clear_progress(&name)?;
            }
            ModuleAction::Resume | ModuleAction::Rollback => {
                self.plugins.metrics(&name).failures_consecutive.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            ModuleAction::Pause => {}
        }
        tracing::info!(module = %name, ?action, version = deployment.active_version, "module deployment changed");
        Ok(description)
    }

    pub fn list_modules(&self) -> ListModulesResponse {
        ListModulesResponse { modules: self.deployments().iter().map(|d| self.describe_deployment(d)).collect() }
    }

    pub fn describe_module(&self, name: &str) -> Result<ModuleDescription, WireError> {
        let state = self.controller.state();
        let deployment = state.modules.get(name).ok_or_else(|| deployments::unknown(name))?;
        Ok(self.describe_deployment(deployment))
    }

    fn describe_deployment(&self, d: &Deployment) -> ModuleDescription {
        ModuleDescription {
            name: d.name.clone(),
            kind: d.kind.as_str().to_owned(),
            active_version: d.active_version,
            versions: d
                .versions
                .iter()
                .map(|v| ModuleVersionDescription {
                    version: v.version,
                    sha256: v.sha256.clone(),
                    size_bytes: v.size_bytes,
                    deployed_at_ms: v.deployed_at_ms,
                    inputs: v.spec.inputs.clone(),
                    output: v.spec.output.clone(),
                    topic: v.spec.topic.clone(),
                    params: v.spec.params.clone(),
                    deadline_ms: v.spec.limits.deadline_ms,
                    memory_bytes: v.spec.limits.memory_bytes,
                    dead_letter_topic: v.spec.dead_letter_topic.clone(),
                    failures_max: v.spec.failures_max,
                })
                .collect(),
            paused: d.paused.clone(),
            metrics: self.plugins.metrics(&d.name).snapshot(),
        }
    }

    /// Long-polls until `min_bytes` are available or `max_wait_ms` passes.
    pub async fn fetch(&self, request: FetchRequest) -> Result<(FetchResponse, Vec<Bytes>), WireError> {
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
            let (response, chunks) = self.fetch_once(&request);
            let total: usize = chunks.iter().map(Bytes::len).sum();
            let any_error = response.partitions.iter().any(|p| p.error.is_some());
            // A fetch module that dropped everything it read still moved the consumer on.
            let skipped = response
                .partitions
                .iter()
                .zip(&request.partitions)
                .any(|(answer, asked)| answer.next_offset.is_some_and(|next| next > asked.offset));
            let now = Instant::now();
            if total >= request.min_bytes as usize || any_error || skipped || now >= deadline || watchers.is_empty() {
                return Ok((response, chunks));
            }
            let changed = futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            let _ = tokio::time::timeout(deadline - now, changed).await;
        }
    }

    fn fetch_once(&self, request: &FetchRequest) -> (FetchResponse, Vec<Bytes>) {
        let max_bytes = request.max_bytes.min(self.config.fetch_bytes_max) as usize;
        let mut chunks = Vec::new();
        let mut total = 0usize;
        let mut partitions = Vec::with_capacity(request.partitions.len());
        for p in &request.partitions {
            let mut answer = FetchPartitionResponse {
                topic: p.topic.clone(),
                partition: p.partition,
                high_watermark: -1,
                log_start_offset: -1,
                bytes: 0,
                error: None,
                next_offset: None,
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
                    let bytes: usize = batches.iter().map(Bytes::len).sum();
                    answer.bytes = bytes as u32;
                    total += bytes;
                    chunks.extend(batches);
                }
                Err(e) => answer.error = Some(e),
            }
            partitions.push(answer);
        }
        (FetchResponse { partitions }, chunks)
    }

    /// Runs a transform deployment over batches read for a consumer: one output batch per input
    /// batch, its records keeping their inputs' offsets; the offset after the last input
    /// record, from which the consumer goes on.
    fn run_fetch_module(
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
            let records = weir_sdk::batch::decode_batches(&topic.name, partition, batch, from_offset)?;
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

    pub fn list_offsets(&self, request: ListOffsetsRequest) -> Result<ListOffsetsResponse, WireError> {
        let topic = self.topic(&request.topic)?;
        let partitions = request
            .partitions
            .iter()
            .map(|&partition| {
                let outcome = self.partition(&topic, partition).and_then(|state| match request.spec {
                    OffsetSpec::Earliest => Ok((state.log_start_offset(), -1)),
                    OffsetSpec::Latest => Ok((state.end_offset(), -1)),
                    OffsetSpec::Timestamp(ts) => Ok(self.log.offset_for_timestamp(&state, ts)?.unwrap_or((-1, -1))),
                });
                match outcome {
                    Ok((offset, timestamp)) => ListOffsetsPartition { partition, offset, timestamp, error: None },
                    Err(e) => ListOffsetsPartition { partition, offset: -1, timestamp: -1, error: Some(e) },
                }
            })
            .collect();
        Ok(ListOffsetsResponse { partitions })
    }

    /// The partition's log start and end offsets.
    pub fn offsets(&self, topic: &str, partition: u32) -> Result<(i64, i64), WireError> {
        let state = self.partition(&self.topic(topic)?, partition)?;
        Ok((state.log_start_offset(), state.end_offset()))
    }

    /// One retention pass over every topic.
    pub fn enforce_retention(&self, now_ms: i64) {
        for topic in self.topics() {
            if topic.config.retention_ms.is_none() && topic.config.retention_bytes.is_none() {
                continue;
            }
            for p in 0..topic.partitions {
                let Ok(state) = self.partition(&topic, p) else { continue };
                if let Err(e) =
                    self.log.enforce_retention(&state, topic.config.retention_ms, topic.config.retention_bytes, now_ms)
                {
                    tracing::error!(topic = %topic.name, partition = p, error = %e, "retention pass failed");
                }
            }
        }
    }

    /// Drops the sequence state of idempotent producers idle past the expiration.
    pub async fn expire_producers(&self, now_ms: i64) -> Result<usize, WireError> {
        let expiration_ms = i64::try_from(self.config.producer_id_expiration_ms).unwrap_or(i64::MAX);
        self.log.forget_producers(ProducerFilter::IdleAt { now_ms, expiration_ms }).await
    }

    /// The shortest flush interval among topics that flush on an interval.
    pub fn flush_interval(&self) -> Option<Duration> {
        self.topics()
            .iter()
            .filter_map(|t| match t.config.flush {
                FlushMode::IntervalMs(ms) => Some(Duration::from_millis(ms)),
                FlushMode::Always => None,
            })
            .min()
    }
}
