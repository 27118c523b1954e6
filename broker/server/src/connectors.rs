//! Runs connectors: sources poll their module and write what it finds to their topic; sinks
//! read their topics and hand the records to their module. Each runs as tasks on the brokers
//! (see [`desired_tasks`]); a task's state is stored so that a restarted broker goes on where
//! it stopped.
//!
//! Sources: a poll's records without keys all go to the task's partition (task index modulo
//! the partitions), in one append (batches of 256 KiB) whose last record carries the position after them
//! (`weir.connector.task`, `weir.connector.position` headers). The position is also stored
//! beside the log once the batch is durable; a task that starts reads its partition from
//! where the stored position was taken, so a batch that became durable just before a crash
//! is not written again. Records with keys go to their key's partition, and their position is
//! stored after they are all durable: at-least-once.
//!
//! Sinks: a task reads from the stored progress, calls the module, sends the records it
//! rejects to the dead-letter topic (with the headers transforms use) and stores the progress
//! only after the module acknowledged the batch. A batch the module could not deliver
//! (`err`, an endpoint down) is retried with exponential backoff, and nothing past it is
//! committed meanwhile: at-least-once.
//!
//! A connector's pipeline (`transforms`) passes the records through deployed transforms on
//! the way, in this task and in order: a source's after the poll and before its topic (the
//! position goes with what comes out), a sink's after the read and before the module. A record
//! a stage refuses goes to the connector's dead-letter topic, as one the sink rejects does.
//!
//! A call that fails (trap, deadline, memory cap) counts toward `failures_max`, after which
//! the connector is paused with the error; the broker and other connectors go on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_runtime::{InputBatch, Instance, PluginKind, SourceBatch, SourceRecord};
use weir_sdk::batch::{decode_batches_within, encode_batch, Compression, ConsumedRecord, Record};
use weir_sdk::{ErrorCode, WireError};

use crate::plugins::{input_batch, Metrics};
use crate::service::{Broker, Fetch, FetchFrom, Produce};
use crate::transforms::{dead_letter, pause, reconcile_tasks, stop_tasks, write};
use weir_meta::deployments::Deployment;

/// Headers of a source's last record in a batch: which task wrote it and its position after.
pub const TASK_HEADER: &str = "weir.connector.task";
pub const POSITION_HEADER: &str = "weir.connector.position";

const RECONCILE_EVERY: Duration = Duration::from_millis(200);
const FETCH_BYTES: u32 = 1 << 20;
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// At most this much of a source's partition is read at start to find a position written
/// with records after the stored one.
const RECOVERY_BYTES_MAX: usize = 64 << 20;
/// Payload bytes per batch a source writes.
const SOURCE_BATCH_BYTES: usize = 256 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TaskKey {
    name: String,
    version: u32,
    task: u32,
    /// Sinks: the input partitions this task reads here.
    partitions: Vec<(String, u32)>,
}

/// The tasks this broker should run: a source's task `i` on the leader of partition
/// `i % partitions` of its topic; a sink's task `t` over the input partitions led here whose
/// index (counted over all its topics' partitions) is `t` modulo `tasks_max`.
fn desired_tasks(broker: &Broker) -> Vec<TaskKey> {
    let me = broker.node_id();
    let mut tasks = Vec::new();
    for d in broker.deployments().into_iter().filter(|d| d.kind.is_connector() && d.paused.is_none()) {
        let spec = &d.active().spec;
        let tasks_max = spec.connector.as_ref().map_or(1, |c| c.tasks_max.max(1));
        match d.kind {
            PluginKind::Source => {
                let Some(topic) = spec.output.as_deref() else { continue };
                let Ok(description) = broker.describe_topic(topic) else { continue };
                let count = u32::try_from(description.partitions.len()).unwrap_or(u32::MAX);
                for task in 0..tasks_max {
                    let leader = description.partitions.iter().find(|p| p.partition == task % count.max(1));
                    if leader.is_some_and(|p| p.leader == Some(me)) {
                        tasks.push(TaskKey {
                            name: d.name.clone(),
                            version: d.active_version,
                            task,
                            partitions: vec![],
                        });
                    }
                }
            }
            PluginKind::Sink => {
                let mut by_task: BTreeMap<u32, Vec<(String, u32)>> = BTreeMap::new();
                let mut index = 0u32;
                for topic in &spec.inputs {
                    let Ok(description) = broker.describe_topic(topic) else { continue };
                    for p in description.partitions {
                        if p.leader == Some(me) {
                            by_task.entry(index % tasks_max).or_default().push((topic.clone(), p.partition));
                        }
                        index += 1;
                    }
                }
                for (task, partitions) in by_task {
                    tasks.push(TaskKey { name: d.name.clone(), version: d.active_version, task, partitions });
                }
            }
            _ => {}
        }
    }
    tasks
}

/// Starts and stops connector tasks to match the deployments, until `stop` changes; then
/// aborts every task it started and waits for each to end.
pub async fn supervise(broker: Broker, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut running: HashMap<TaskKey, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        reconcile_tasks(&mut running, desired_tasks(&broker), |key| {
            let deployment = broker.deployments().into_iter().find(|d| d.name == key.name)?;
            tracing::info!(connector = %key.name, version = key.version, task = key.task, partitions = ?key.partitions, "connector task started");
            Some(match deployment.kind {
                PluginKind::Source => tokio::spawn(run_source(broker.clone(), deployment, key.task)),
                _ => tokio::spawn(run_sink(broker.clone(), deployment, key.task, key.partitions.clone())),
            })
        });
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    stop_tasks(&mut running).await;
}

/// Exponential backoff after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    BACKOFF_FIRST.saturating_mul(1 << failures.min(16)).min(BACKOFF_MAX)
}

/// Whether the deployment still runs this version, unpaused.
fn still_current(broker: &Broker, deployment: &Deployment) -> bool {
    broker
        .controller()
        .state()
        .modules
        .get(&deployment.name)
        .is_some_and(|d| d.active_version == deployment.active_version && d.paused.is_none())
}

/// A failed call: counted, shown, and after `failures_max` in a row the connector pauses
/// (true: the task ends).
async fn call_failed(broker: &Broker, deployment: &Deployment, metrics: &Metrics, failures: u32) -> bool {
    if failures >= deployment.active().spec.failures_max {
        let last = metrics.snapshot().last_error.unwrap_or_default();
        pause(broker, deployment, failures, &last).await;
        return true;
    }
    tokio::time::sleep(backoff(failures)).await;
    false
}

/// A connector's transforms, each a fresh instance of a deployed transform (its component,
/// parameters and limits; not its topics).
struct Pipeline {
    stages: Vec<(String, Instance)>,
}

/// What a pipeline made of a batch.
struct Piped {
    /// The records out of the last stage, each with the index of the input it came from.
    batch: InputBatch,
    origins: Vec<usize>,
    /// Inputs a stage refused, with why.
    refused: Vec<(usize, String)>,
}

impl Pipeline {
    fn new(broker: &Broker, deployment: &Deployment, task: u32) -> Result<Self, WireError> {
        let names = deployment.active().spec.connector.as_ref().map(|c| c.transforms.clone()).unwrap_or_default();
        let deployed = broker.deployments();
        let mut stages = Vec::with_capacity(names.len());
        for name in names {
            let Some(stage) = deployed.iter().find(|d| d.name == name && d.kind == PluginKind::Transform) else {
                return Err(WireError::new(
                    ErrorCode::UnknownModule,
                    format!("transform {name:?} of the pipeline is not deployed"),
                ));
            };
            let label = format!("{name}@{}/{}/task-{task}", stage.active_version, deployment.name);
            stages.push((name, broker.plugins().instance(stage, label)?));
        }
        Ok(Self { stages })
    }

    /// Passes `batch` through every stage (module calls: blocking). Fails with the stage's
    /// error when a call fails; a record a stage refuses or sends to a topic of its own is
    /// refused.
    fn run(&mut self, batch: InputBatch) -> Result<Piped, String> {
        let mut origins: Vec<usize> = (0..batch.len()).collect();
        let mut refused = Vec::new();
        let mut batch = batch;
        for (name, instance) in &mut self.stages {
            if batch.is_empty() {
                break;
            }
            let answer = instance.transform(&batch).map_err(|e| format!("transform {name}: {e}"))?;
            let mut next = InputBatch::new(batch.topic(), batch.partition());
            let mut next_origins = Vec::with_capacity(origins.len());
            for ((outcome, input), origin) in answer.outcomes().zip(batch.records()).zip(&origins) {
                let outputs = match outcome {
                    Ok(outputs) => outputs,
                    Err(reason) => {
                        refused.push((*origin, format!("transform {name}: {reason}")));
                        continue;
                    }
                };
                for output in outputs {
                    if let Some(topic) = output.topic() {
                        refused.push((
                            *origin,
                            format!(
                                "transform {name} sent a record to topic {topic:?}; in a connector's pipeline \
                                 records go on to the next step"
                            ),
                        ));
                        continue;
                    }
                    let (key, value) = (output.key(), output.value());
                    let headers: Vec<(&str, Option<Bytes>)> = output.headers().collect();
                    let pushed = next.push(
                        input.offset(),
                        output.timestamp().unwrap_or(input.timestamp()),
                        key.as_deref(),
                        value.as_deref(),
                        headers.iter().map(|(k, v)| (*k, v.as_deref())),
                    );
                    match pushed {
                        Ok(()) => next_origins.push(*origin),
                        Err(e) => refused.push((*origin, format!("transform {name}: {e}"))),
                    }
                }
            }
            batch = next;
            origins = next_origins;
        }
        Ok(Piped { batch, origins, refused })
    }
}

/// A source's records as a pipeline takes them (offsets are their places in the poll).
fn source_input(topic: &str, partition: u32, records: &[SourceRecord]) -> Result<InputBatch, String> {
    let now = weir_sdk::now_ms();
    let mut batch = InputBatch::new(topic, partition);
    for (i, r) in records.iter().enumerate() {
        let headers = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
        batch
            .push(i as i64, r.timestamp.unwrap_or(now), r.key.as_deref(), r.value.as_deref(), headers)
            .map_err(|e| e.to_string())?;
    }
    Ok(batch)
}

/// The task's instance and pipeline; if they cannot be made (its directory no longer allowed,
/// its component missing, a stage no longer deployed), the error is shown and the task waits
/// before it ends, so the supervisor does not start it again at once.
async fn start_task(
    broker: &Broker,
    deployment: &Deployment,
    task: u32,
    metrics: &Metrics,
) -> Option<(Option<Instance>, Option<Pipeline>)> {
    let label = format!("{}@{}/task-{task}", deployment.name, deployment.active_version);
    let made = broker
        .plugins()
        .connector_instance(deployment, label)
        .and_then(|instance| Ok((Some(instance), Some(Pipeline::new(broker, deployment, task)?))));
    match made {
        Ok(parts) => Some(parts),
        Err(e) => {
            metrics.set_last_error(format!("cannot start: {}", e.message));
            tracing::error!(connector = %deployment.name, task, error = %e, "connector task cannot start");
            tokio::time::sleep(BACKOFF_MAX).await;
            None
        }
    }
}

async fn run_source(broker: Broker, deployment: Deployment, task: u32) {
    let name = deployment.name.clone();
    let spec = deployment.active().spec.clone();
    let connector = spec.connector.clone().unwrap_or_default();
    let Some(topic) = spec.output.clone() else { return };
    let plugins = broker.plugins().clone();
    let metrics = plugins.metrics(&name);
    let Some((mut instance, mut pipeline)) = start_task(&broker, &deployment, task, &metrics).await else { return };
    let partitions =
        broker.describe_topic(&topic).map_or(1, |d| u32::try_from(d.partitions.len()).unwrap_or(u32::MAX)).max(1);
    let home = task % partitions;
    let (mut next_offset, mut position) = match recover_position(&broker, &name, task, &topic, home).await {
        Ok(found) => found,
        Err(e) => {
            metrics.set_last_error(format!("reading the stored position: {e}"));
            tracing::error!(connector = %name, error = %e, "source cannot read its position");
            return;
        }
    };
    let mut failures = 0u32;
    let mut pending: Option<SourceBatch> = None;
    loop {
        if !still_current(&broker, &deployment) {
            return;
        }
        let batch = match pending.take() {
            Some(batch) => batch,
            None => {
                let started = Instant::now();
                let mut taken = instance.take().expect("the instance is returned after each call");
                let from = position.clone();
                let max = connector.batch_records;
                let Ok((taken, outcome)) = tokio::task::spawn_blocking(move || {
                    let outcome = taken.poll(from.as_deref(), max);
                    (taken, outcome)
                })
                .await
                else {
                    return;
                };
                let count = outcome.as_ref().ok().and_then(|o| o.as_ref().ok()).map_or(0, |b| b.records.len());
                let memory = taken.memory_high_water_bytes();
                instance = Some(taken);
                match outcome {
                    Ok(Ok(batch)) => {
                        metrics.record_call(started.elapsed(), 0, None, memory);
                        metrics.records_in.fetch_add(count as u64, Ordering::Relaxed);
                        failures = 0;
                        batch
                    }
                    Ok(Err(reason)) => {
                        // The module could not read (a denied path, a broken input): shown,
                        // retried with backoff, and after failures_max in a row it pauses.
                        metrics.batches.fetch_add(1, Ordering::Relaxed);
                        metrics.batches_failed.fetch_add(1, Ordering::Relaxed);
                        metrics.set_last_error(format!("poll: {reason}"));
                        failures = metrics.failures_consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                        if call_failed(&broker, &deployment, &metrics, failures).await {
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        failures = metrics.record_call(started.elapsed(), 0, Some(&e), memory);
                        tracing::warn!(connector = %name, task, error = %e, "source poll failed");
                        if call_failed(&broker, &deployment, &metrics, failures).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let batch = if pipeline.as_ref().is_some_and(|p| !p.stages.is_empty()) && !batch.records.is_empty() {
            match through_pipeline(&broker, &deployment, &metrics, &mut pipeline, &topic, home, batch).await {
                Some(Ok(batch)) => batch,
                Some(Err(reason)) => {
                    // Nothing was written: the next poll asks again from the stored position.
                    metrics.set_last_error(format!("pipeline: {reason}"));
                    failures = metrics.failures_consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                    if call_failed(&broker, &deployment, &metrics, failures).await {
                        return;
                    }
                    continue;
                }
                None => return,
            }
        } else {
            batch
        };
        if batch.records.is_empty() {
            if position.as_deref() != Some(&batch.position[..]) {
                if let Err(e) = plugins.set_position(&name, task, next_offset, &batch.position) {
                    metrics.set_last_error(e.message);
                }
                position = Some(batch.position);
            }
            tokio::time::sleep(Duration::from_millis(connector.poll_interval_ms)).await;
            continue;
        }
        match write_source_batch(&broker, &topic, home, &name, task, &batch).await {
            Ok(end) => {
                metrics.records_out.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                next_offset = end.unwrap_or(next_offset);
                if let Err(e) = plugins.set_position(&name, task, next_offset, &batch.position) {
                    metrics.set_last_error(e.message);
                }
                position = Some(batch.position);
                failures = 0;
            }
            Err(e) => {
                // Not durable: the same records are written again after a pause. An error no
                // retry can mend (records too large for the topic, say) counts toward
                // failures_max, and the connector pauses with it.
                metrics.set_last_error(format!("writing to {topic}: {e}"));
                if e.code.is_retriable() {
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(backoff(failures)).await;
                } else {
                    failures = metrics.failures_consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                    if call_failed(&broker, &deployment, &metrics, failures).await {
                        return;
                    }
                }
                pending = Some(batch);
            }
        }
    }
}

/// A source's poll through its pipeline: what comes out of the last stage, with the poll's
/// position; the records a stage refused are written to the dead-letter topic first. `None`:
/// the task is ending.
async fn through_pipeline(
    broker: &Broker,
    deployment: &Deployment,
    metrics: &Metrics,
    pipeline: &mut Option<Pipeline>,
    topic: &str,
    home: u32,
    batch: SourceBatch,
) -> Option<Result<SourceBatch, String>> {
    let inputs = match source_input(topic, home, &batch.records) {
        Ok(inputs) => inputs,
        Err(e) => return Some(Err(e)),
    };
    let mut stages = pipeline.take().expect("the pipeline is returned after each call");
    let (stages, piped) = tokio::task::spawn_blocking(move || {
        let piped = stages.run(inputs);
        (stages, piped)
    })
    .await
    .ok()?;
    *pipeline = Some(stages);
    let piped = match piped {
        Ok(piped) => piped,
        Err(reason) => return Some(Err(reason)),
    };
    if !piped.refused.is_empty() {
        let now = weir_sdk::now_ms();
        let dead = piped
            .refused
            .iter()
            .map(|(origin, reason)| {
                let r = &batch.records[*origin];
                let record = Record {
                    key: r.key.clone().map(Bytes::from),
                    value: r.value.clone().map(Bytes::from),
                    headers: r.headers.iter().map(|(k, v)| (k.clone(), v.clone().map(Bytes::from))).collect(),
                    timestamp: r.timestamp.unwrap_or(now),
                };
                // Not in any topic yet: offset -1.
                let input = ConsumedRecord { topic: topic.to_owned(), partition: home, offset: -1, record };
                (0, dead_letter(deployment, &input, reason))
            })
            .collect();
        let dlq = &deployment.active().spec.dead_letter_topic;
        if let Err(e) = write(broker, dlq, dead).await {
            return Some(Err(format!("dead-lettering refused records: {e}")));
        }
        metrics.records_dead_lettered.fetch_add(piped.refused.len() as u64, Ordering::Relaxed);
    }
    let records = piped
        .batch
        .records()
        .map(|r| SourceRecord {
            key: r.key().map(<[u8]>::to_vec),
            value: r.value().map(<[u8]>::to_vec),
            headers: r.headers().map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec))).collect(),
            timestamp: Some(r.timestamp()),
        })
        .collect();
    Some(Ok(SourceBatch { records, position: batch.position }))
}

/// Writes a poll's records, waiting until they are durable. Keyless records go to `home` in
/// one append (batches of 256 KiB) whose last record carries the task and its position; records
/// with keys to their key's partition. Answers the offset after them in `home` when all went there.
async fn write_source_batch(
    broker: &Broker,
    topic: &str,
    home: u32,
    name: &str,
    task: u32,
    batch: &SourceBatch,
) -> Result<Option<i64>, WireError> {
    let now = weir_sdk::now_ms();
    let mut records: Vec<Record> = batch
        .records
        .iter()
        .map(|r| Record {
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r.headers.iter().map(|(k, v)| (k.clone(), v.clone().map(Bytes::from))).collect(),
            timestamp: r.timestamp.unwrap_or(now),
        })
        .collect();
    if records.iter().any(|r| r.key.is_some()) {
        write(broker, topic, records.into_iter().map(|r| (home, r)).collect()).await?;
        return Ok(None);
    }
    if let Some(last) = records.last_mut() {
        last.headers.push((TASK_HEADER.to_owned(), Some(Bytes::from(format!("{name}/{task}")))));
        last.headers.push((POSITION_HEADER.to_owned(), Some(Bytes::from(batch.position.clone()))));
    }
    // Batches of at most SOURCE_BATCH_BYTES of payload each (well under a topic's default
    // max.message.bytes), appended together as one entry; the position rides on the last.
    let mut entry = bytes::BytesMut::new();
    let mut start = 0;
    while start < records.len() {
        let (mut end, mut bytes) = (start, 0usize);
        while end < records.len() && (end == start || bytes + records[end].payload_len() <= SOURCE_BATCH_BYTES) {
            bytes += records[end].payload_len();
            end += 1;
        }
        entry.extend_from_slice(&encode_batch(&records[start..end], Compression::None)?);
        start = end;
    }
    let count = records.len() as i64;
    let request = Produce { topic: topic.to_owned(), partitions: vec![(Some(home), entry.freeze())], acks_all: true };
    let mut end = None;
    for produced in broker.produce_enqueue(request).await?.await {
        end = Some(produced.base_offset? + count);
    }
    Ok(end)
}

/// The task's position: the stored one, unless its partition holds a batch written after it
/// (the broker stopped between the write and the store), whose last record then tells it.
/// Answers the offset to read from next time and the position.
async fn recover_position(
    broker: &Broker,
    name: &str,
    task: u32,
    topic: &str,
    home: u32,
) -> Result<(i64, Option<Vec<u8>>), WireError> {
    let stored = broker.plugins().position(name, task)?;
    let (mut offset, mut position) = match stored {
        Some((offset, position)) => (offset, Some(position)),
        None => (broker.offsets(topic, home).map_or(0, |(start, _)| start), None),
    };
    let me = format!("{name}/{task}");
    let (mut scan, mut read, mut found) = (offset, 0usize, false);
    while let Ok((_, high_watermark)) = broker.offsets(topic, home) {
        if scan >= high_watermark || read >= RECOVERY_BYTES_MAX {
            break;
        }
        let from =
            FetchFrom { topic: topic.to_owned(), partition: home, offset: scan, max_bytes: FETCH_BYTES, module: None };
        let request =
            Fetch { max_wait_ms: 0, min_bytes: 0, max_bytes: FETCH_BYTES, partitions: vec![from], from_replica: false };
        let Some(fetched) = broker.fetch(request).await?.pop() else { break };
        if fetched.error.is_some() || fetched.batches.is_empty() {
            break;
        }
        let mut end = scan;
        for chunk in fetched.batches {
            read += chunk.len();
            for r in decode_batches_within(topic, home, chunk, scan, broker.batch_decompressed_bytes_max())? {
                end = end.max(r.offset + 1);
                let header = |key: &str| r.record.headers.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.clone());
                if header(TASK_HEADER).is_some_and(|t| t == me.as_bytes()) {
                    if let Some(p) = header(POSITION_HEADER) {
                        (position, offset, found) = (Some(p.to_vec()), r.offset + 1, true);
                    }
                }
            }
        }
        if end <= scan {
            break;
        }
        scan = end;
    }
    if found {
        tracing::info!(connector = %name, task, offset, "source position taken from a batch written after the stored one");
        if let Some(position) = &position {
            broker.plugins().set_position(name, task, offset, position)?;
        }
    }
    Ok((offset, position))
}

async fn run_sink(broker: Broker, deployment: Deployment, task: u32, partitions: Vec<(String, u32)>) {
    let name = deployment.name.clone();
    let spec = deployment.active().spec.clone();
    let plugins = broker.plugins().clone();
    let metrics = plugins.metrics(&name);
    let Some((mut instance, mut pipeline)) = start_task(&broker, &deployment, task, &metrics).await else { return };
    let mut next: BTreeMap<(String, u32), i64> = BTreeMap::new();
    for (topic, partition) in &partitions {
        let start = match plugins.progress(&name, topic, *partition) {
            Ok(Some(offset)) => offset,
            Ok(None) => broker.offsets(topic, *partition).map_or(0, |(start, _)| start),
            Err(e) => {
                metrics.set_last_error(e.message.clone());
                return;
            }
        };
        next.insert((topic.clone(), *partition), start);
    }
    let mut failures = 0u32;
    loop {
        if !still_current(&broker, &deployment) {
            return;
        }
        let request = Fetch {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: FETCH_BYTES,
            partitions: next
                .iter()
                .map(|((topic, partition), offset)| FetchFrom {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    max_bytes: FETCH_BYTES,
                    module: None,
                })
                .collect(),
            from_replica: false,
        };
        let fetched = match broker.fetch(request).await {
            Ok(fetched) => fetched,
            Err(e) => {
                metrics.set_last_error(format!("reading: {e}"));
                tokio::time::sleep(backoff(1)).await;
                continue;
            }
        };
        for answer in fetched {
            let key = (answer.topic.clone(), answer.partition);
            let Some(&from) = next.get(&key) else { continue };
            if let Some(e) = &answer.error {
                if e.code == ErrorCode::OffsetOutOfRange {
                    let moved = from.clamp(answer.log_start_offset.max(0), answer.high_watermark.max(0));
                    next.insert(key, moved);
                } else {
                    metrics.set_last_error(format!("reading {}[{}]: {e}", answer.topic, answer.partition));
                }
                continue;
            }
            let mut records: Vec<ConsumedRecord> = Vec::new();
            let mut batch_end = from;
            let mut broken = None;
            for chunk in answer.batches {
                if let Ok(header) = weir_sdk::batch::BatchHeader::parse(&chunk) {
                    batch_end = batch_end.max(header.last_offset() + 1);
                }
                match decode_batches_within(
                    &answer.topic,
                    answer.partition,
                    chunk,
                    from,
                    broker.batch_decompressed_bytes_max(),
                ) {
                    Ok(decoded) => records.extend(decoded),
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = broken.filter(|_| records.is_empty()) {
                // A stored batch that does not decode cannot be delivered; it is shown and
                // skipped, as a transform does (its bytes stay in the log).
                metrics.set_last_error(format!("{}[{}] at {from}: {e}", answer.topic, answer.partition));
                next.insert(key.clone(), batch_end);
                let _ = plugins.set_progress(&name, &key.0, key.1, batch_end);
                continue;
            }
            if records.is_empty() {
                continue;
            }
            let inputs = match input_batch(&answer.topic, answer.partition, &records) {
                Ok(inputs) => inputs,
                Err(e) => {
                    metrics.set_last_error(format!("{}[{}]: {e}", answer.topic, answer.partition));
                    tokio::time::sleep(backoff(1)).await;
                    continue;
                }
            };
            let started = Instant::now();
            let mut taken = instance.take().expect("the instance is returned after each call");
            let mut stages = pipeline.take().expect("the pipeline is returned after each call");
            let Ok((taken, stages, piped)) = tokio::task::spawn_blocking(move || {
                let piped = if stages.stages.is_empty() {
                    Ok(Piped { origins: (0..inputs.len()).collect(), batch: inputs, refused: Vec::new() })
                } else {
                    stages.run(inputs)
                };
                let piped = piped.map(|p| {
                    let outcome = if p.batch.is_empty() { Ok(Ok(Vec::new())) } else { taken.write(&p.batch) };
                    (p.origins, p.refused, outcome)
                });
                (taken, stages, piped)
            })
            .await
            else {
                return;
            };
            let memory = taken.memory_high_water_bytes();
            instance = Some(taken);
            pipeline = Some(stages);
            let (origins, refused, outcome) = match piped {
                Ok(piped) => piped,
                Err(reason) => {
                    metrics.set_last_error(format!("pipeline: {reason}"));
                    failures = metrics.failures_consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                    if call_failed(&broker, &deployment, &metrics, failures).await {
                        return;
                    }
                    break;
                }
            };
            let verdicts = match outcome {
                Ok(Ok(verdicts)) => {
                    metrics.record_call(started.elapsed(), records.len(), None, memory);
                    failures = 0;
                    verdicts
                }
                Ok(Err(reason)) => {
                    // Not delivered (an endpoint down): the same records again after a pause,
                    // nothing committed past them meanwhile.
                    metrics.record_call(started.elapsed(), 0, None, memory);
                    metrics.set_last_error(format!("not delivered, retrying: {reason}"));
                    failures = failures.saturating_add(1);
                    tracing::debug!(connector = %name, task, error = %reason, "sink did not deliver; backing off");
                    tokio::time::sleep(backoff(failures)).await;
                    break;
                }
                Err(e) => {
                    failures = metrics.record_call(started.elapsed(), records.len(), Some(&e), memory);
                    tracing::warn!(connector = %name, task, error = %e, "sink call failed");
                    if call_failed(&broker, &deployment, &metrics, failures).await {
                        return;
                    }
                    break;
                }
            };
            // One verdict per input: refused by a stage, or rejected by the module (a record out
            // of the pipeline answers for the input it came from).
            let mut per_input: Vec<Option<String>> = vec![None; records.len()];
            for (origin, reason) in refused {
                per_input[origin].get_or_insert(reason);
            }
            for (out, verdict) in verdicts.into_iter().enumerate() {
                if let (Some(reason), Some(origin)) = (verdict, origins.get(out)) {
                    per_input[*origin].get_or_insert(reason);
                }
            }
            let dead: Vec<(u32, Record)> = records
                .iter()
                .zip(&per_input)
                .filter_map(|(input, verdict)| verdict.as_ref().map(|reason| (input, reason)))
                .map(|(input, reason)| {
                    metrics.set_last_error(format!("record at offset {} rejected: {reason}", input.offset));
                    (input.partition, dead_letter(&deployment, input, reason))
                })
                .collect();
            let delivered = records.len() - dead.len();
            if !dead.is_empty() {
                let count = dead.len() as u64;
                if let Err(e) = write(&broker, &spec.dead_letter_topic, dead).await {
                    metrics.set_last_error(format!("dead-lettering rejected records: {e}"));
                    tokio::time::sleep(backoff(1)).await;
                    break;
                }
                metrics.records_dead_lettered.fetch_add(count, Ordering::Relaxed);
            }
            metrics.records_out.fetch_add(delivered as u64, Ordering::Relaxed);
            let after = records.last().map_or(batch_end, |r| r.offset + 1);
            next.insert(key.clone(), after);
            if let Err(e) = plugins.set_progress(&name, &key.0, key.1, after) {
                metrics.set_last_error(e.message);
            }
        }
    }
}
