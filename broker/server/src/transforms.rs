//! Runs transform deployments: one task per deployment version and input partition, on the
//! partition's leader (every partition, on a single node).
//!
//! A task reads its input from the stored progress offset, calls the module per fetched batch,
//! writes the outputs (and dead letters) through the produce path, waits until they are
//! durable, then stores the new progress. At-least-once: after a crash or restart between the
//! write and the progress store, the batch is transformed and written again.
//!
//! A batch whose call fails (trap, deadline, memory cap) goes to the dead-letter topic whole;
//! a record the module answers with an error goes there alone. Dead letters carry headers
//! `weir.module`, `weir.module.version`, `weir.source.topic`, `weir.source.partition`,
//! `weir.source.offset` and `weir.error`. After `failures_max` failed batches in a row the
//! deployment is paused with the reason; the broker and other deployments go on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_runtime::{CallError, PluginKind, TransformOutput};
use weir_sdk::batch::{decode_batches_within, encode_batch, Compression, ConsumedRecord, Record};
use weir_sdk::{ErrorCode, WireError};

use crate::plugins::{input_batch, output_record, Metrics};
use crate::service::{Broker, Fetch, FetchFrom, Produce};
use weir_meta::deployments::Deployment;
use weir_meta::metadata::Command;

/// Input read per call: one fetch of up to this many bytes is one batch for the module.
const FETCH_BYTES: u32 = 1 << 20;
/// Output records per produced batch (and bytes), well under the default max.message.bytes.
const OUTPUT_BATCH_RECORDS: usize = 1000;
const OUTPUT_BATCH_BYTES: usize = 256 << 10;
const RECONCILE_EVERY: Duration = Duration::from_millis(200);
const RETRY_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TaskKey {
    name: String,
    version: u32,
    topic: String,
    partition: u32,
}

/// Starts and stops transform tasks to match the deployments in the metadata, until `stop`
/// changes (or its sender is gone); then aborts every task it started and waits for each to
/// end, so a stopped broker runs no transform.
pub async fn supervise(broker: Broker, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut running: HashMap<TaskKey, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut component_retry_at = HashMap::new();
    loop {
        broker.sync_components(&mut component_retry_at).await;
        reconcile_tasks(&mut running, desired_tasks(&broker), |key| {
            tracing::info!(module = %key.name, version = key.version, topic = %key.topic, partition = key.partition, "transform task started");
            let running_task = broker.plugins().task_started();
            Some(tokio::spawn(run_partition(broker.clone(), key.clone(), running_task)))
        });
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    stop_tasks(&mut running).await;
}

/// A task per active transform version and input partition led here.
fn desired_tasks(broker: &Broker) -> HashSet<TaskKey> {
    let mut desired = HashSet::new();
    for d in broker.deployments().into_iter().filter(|d| d.kind == PluginKind::Transform && d.paused.is_none()) {
        for topic in &d.active().spec.inputs {
            let Ok(description) = broker.describe_topic(topic) else { continue };
            // A partition's transform runs on the broker that leads it.
            for p in description.partitions.into_iter().filter(|p| p.leader == Some(broker.node_id())) {
                desired.insert(TaskKey {
                    name: d.name.clone(),
                    version: d.active_version,
                    topic: topic.clone(),
                    partition: p.partition,
                });
            }
        }
    }
    desired
}

/// One round of a task supervisor (transforms' and connectors'): aborts the running tasks not
/// wanted any more (or finished), and `start`s the wanted ones not running.
pub(crate) fn reconcile_tasks<K: Eq + std::hash::Hash + Clone>(
    running: &mut HashMap<K, tokio::task::JoinHandle<()>>,
    wanted: impl IntoIterator<Item = K>,
    mut start: impl FnMut(&K) -> Option<tokio::task::JoinHandle<()>>,
) {
    let wanted: HashSet<K> = wanted.into_iter().collect();
    running.retain(|key, task| {
        let keep = wanted.contains(key) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    for key in wanted {
        if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
            if let Some(task) = start(slot.key()) {
                slot.insert(task);
            }
        }
    }
}

/// Aborts every task and waits for each to end.
pub(crate) async fn stop_tasks<K>(running: &mut HashMap<K, tokio::task::JoinHandle<()>>) {
    for (_, task) in running.drain() {
        task.abort();
        let _ = task.await;
    }
}

/// Runs one task; `_running` counts it among the running transform tasks until it ends.
async fn run_partition(broker: Broker, key: TaskKey, _running: crate::plugins::RunningTask) {
    let Some(deployment) = broker.deployments().into_iter().find(|d| d.name == key.name) else { return };
    let label = format!("{}@{}/{}[{}]", key.name, key.version, key.topic, key.partition);
    let plugins = broker.plugins().clone();
    let metrics = plugins.metrics(&key.name);
    let mut instance = match plugins.instance(&deployment, label) {
        Ok(instance) => Some(instance),
        Err(e) => {
            metrics.set_last_error(e.message.clone());
            tracing::error!(module = %key.name, error = %e, "transform cannot start");
            return;
        }
    };
    let spec = deployment.active().spec.clone();
    let mut next = match plugins.progress(&key.name, &key.topic, key.partition) {
        Ok(Some(offset)) => offset,
        Ok(None) => broker.offsets(&key.topic, key.partition).map_or(0, |(start, _)| start),
        Err(e) => {
            metrics.set_last_error(e.message.clone());
            tracing::error!(module = %key.name, error = %e, "transform cannot read its progress");
            return;
        }
    };
    loop {
        let request = Fetch {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: FETCH_BYTES,
            partitions: vec![FetchFrom {
                topic: key.topic.clone(),
                partition: key.partition,
                offset: next,
                max_bytes: FETCH_BYTES,
                module: None,
            }],
            from_replica: false,
        };
        let fetched = match broker.fetch(request).await.map(|mut f| f.pop()) {
            Ok(Some(fetched)) => fetched,
            Ok(None) => {
                metrics
                    .set_last_error(format!("reading {}[{}]: no answer for the partition", key.topic, key.partition));
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
            Err(e) => {
                metrics.set_last_error(format!("reading {}[{}]: {e}", key.topic, key.partition));
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        let answer = &fetched;
        if let Some(e) = &answer.error {
            if e.code == ErrorCode::OffsetOutOfRange {
                // Retention removed what was not read yet, or the log is shorter than stored
                // progress: go on from the nearest offset that exists.
                next = next.clamp(answer.log_start_offset.max(0), answer.high_watermark.max(0));
                tracing::warn!(module = %key.name, topic = %key.topic, partition = key.partition, next, "progress out of range; moved");
            } else {
                metrics.set_last_error(format!("reading {}[{}]: {e}", key.topic, key.partition));
                tokio::time::sleep(RETRY_AFTER).await;
            }
            continue;
        }
        let mut records = Vec::new();
        let mut batch_end = next;
        // Stored batches whose records do not decode go to the dead-letter topic whole, with
        // the reason; the task moves past them.
        let mut undecodable = Vec::new();
        let mut undecodable_end = next;
        for chunk in fetched.batches {
            let header = weir_sdk::batch::BatchHeader::parse(&chunk).ok();
            if let Some(header) = &header {
                batch_end = batch_end.max(header.last_offset() + 1);
            }
            let decoded = decode_batches_within(
                &key.topic,
                key.partition,
                chunk.clone(),
                next,
                broker.batch_decompressed_bytes_max(),
            );
            match decoded {
                Ok(decoded) => records.extend(decoded),
                Err(e) => {
                    let at = header.as_ref().map_or(next, |h| h.base_offset);
                    let reason = format!("the stored batch at offset {at} does not decode: {e}");
                    metrics.set_last_error(format!("{}[{}]: {reason}", key.topic, key.partition));
                    tracing::error!(module = %key.name, topic = %key.topic, partition = key.partition, offset = at, error = %e, "stored batch does not decode; dead-lettering it");
                    undecodable_end = undecodable_end.max(header.map_or(next, |h| h.last_offset() + 1));
                    undecodable.push((key.partition, undecodable_letter(&deployment, &key, at, chunk, &reason)));
                }
            }
        }
        if !undecodable.is_empty() {
            let count = undecodable.len() as u64;
            if let Err(e) = write(&broker, &spec.dead_letter_topic, undecodable).await {
                if write_failed(&broker, &deployment, &metrics, format!("dead-lettering undecodable batches: {e}"))
                    .await
                {
                    return;
                }
                continue;
            }
            metrics.records_dead_lettered.fetch_add(count, Ordering::Relaxed);
        }
        if records.is_empty() {
            next = batch_end;
            if let Err(e) = plugins.set_progress(&key.name, &key.topic, key.partition, next) {
                metrics.set_last_error(e.message);
            }
            continue;
        }
        // Once a deploy, rollback or pause has returned, no batch goes to the old version: the
        // supervisor stops this task within its period, but a batch read meanwhile stops here.
        if !still_current(&broker, &key) {
            return;
        }
        let started = Instant::now();
        let taken = instance.take().expect("the instance is returned after each call");
        let (taken, outcome) = match input_batch(&key.topic, key.partition, &records) {
            Ok(inputs) => {
                let mut taken = taken;
                match tokio::task::spawn_blocking(move || {
                    let outcome = taken.transform(&inputs);
                    (taken, outcome)
                })
                .await
                {
                    Ok(done) => done,
                    Err(e) => {
                        tracing::error!(module = %key.name, error = %e, "transform call task failed");
                        return;
                    }
                }
            }
            Err(e) => (taken, Err(CallError::from(e))),
        };
        let failures = metrics.record_call(
            started.elapsed(),
            records.len(),
            outcome.as_ref().err(),
            taken.memory_high_water_bytes(),
        );
        instance = Some(taken);
        let (outputs, dead) = match outcome {
            Ok(results) => {
                let (outputs, failed) = output_records(&records, &results, spec.output.as_deref().unwrap_or_default());
                let dead: Vec<_> = failed
                    .into_iter()
                    .map(|(input, reason)| {
                        metrics.set_last_error(format!("record at offset {}: {reason}", input.offset));
                        (input.partition, dead_letter(&deployment, input, reason))
                    })
                    .collect();
                (outputs, dead)
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(module = %key.name, topic = %key.topic, partition = key.partition, offset = next, error = %reason, "transform batch failed; dead-lettering it");
                let dead =
                    records.iter().map(|input| (input.partition, dead_letter(&deployment, input, &reason))).collect();
                (BTreeMap::new(), dead)
            }
        };
        let out_count: usize = outputs.values().map(Vec::len).sum();
        let mut written = Ok(());
        for (topic, records) in outputs {
            written = written.and(write(&broker, &topic, records).await);
        }
        let dead_count = dead.len();
        if !dead.is_empty() {
            written = written.and(write(&broker, &spec.dead_letter_topic, dead).await);
        }
        if let Err(e) = written {
            // Not durable: keep the progress and try the batch again (outputs already written
            // may be written twice: at-least-once).
            if write_failed(&broker, &deployment, &metrics, format!("writing outputs: {e}")).await {
                return;
            }
            continue;
        }
        metrics.records_out.fetch_add(out_count as u64, Ordering::Relaxed);
        metrics.records_dead_lettered.fetch_add(dead_count as u64, Ordering::Relaxed);
        next = records.last().map_or(batch_end, |r| r.offset + 1).max(undecodable_end);
        if let Err(e) = plugins.set_progress(&key.name, &key.topic, key.partition, next) {
            metrics.set_last_error(e.message);
        }
        if failures >= spec.failures_max {
            let last = metrics.snapshot().last_error.unwrap_or_default();
            pause(&broker, &deployment, failures, &last).await;
            return;
        }
    }
}

/// Output records by topic, each with the partition of the input it came from.
pub type OutputsByTopic = BTreeMap<String, Vec<(u32, Record)>>;

/// The records a transform's answer asks to write, by topic, each with its input's partition;
/// and the inputs the module failed, with the reason.
pub fn output_records<'a>(
    inputs: &'a [ConsumedRecord],
    results: &'a TransformOutput,
    default_topic: &str,
) -> (OutputsByTopic, Vec<(&'a ConsumedRecord, &'a str)>) {
    let mut outputs = OutputsByTopic::new();
    let mut failed = Vec::new();
    for (input, outcome) in inputs.iter().zip(results.outcomes()) {
        match outcome {
            Ok(outs) => {
                for out in outs {
                    let record = output_record(&out, input.record.timestamp);
                    let topic = out.topic().unwrap_or(default_topic);
                    match outputs.get_mut(topic) {
                        Some(records) => records.push((input.partition, record)),
                        None => {
                            outputs.insert(topic.to_owned(), vec![(input.partition, record)]);
                        }
                    }
                }
            }
            Err(reason) => failed.push((input, reason)),
        }
    }
    (outputs, failed)
}

fn still_current(broker: &Broker, key: &TaskKey) -> bool {
    broker
        .controller()
        .state()
        .modules
        .get(&key.name)
        .is_some_and(|d| d.active_version == key.version && d.paused.is_none())
}

pub(crate) async fn pause(broker: &Broker, deployment: &Deployment, failures: u32, last_error: &str) {
    let reason = format!("{failures} consecutive failed batches, the last: {last_error}");
    tracing::warn!(module = %deployment.name, %reason, "pausing module deployment");
    let command = weir_meta::deployments::ModuleCommand::Pause { name: deployment.name.clone(), reason };
    if let Err(e) = broker.controller().propose(Command::Module(command)).await {
        tracing::error!(module = %deployment.name, error = %e, "pausing a failing module deployment");
    }
}

pub(crate) fn dead_letter(deployment: &Deployment, input: &ConsumedRecord, reason: &str) -> Record {
    let mut headers = input.record.headers.clone();
    let mut add = |k: &str, v: String| headers.push((k.to_owned(), Some(Bytes::from(v))));
    add("weir.module", deployment.name.clone());
    add("weir.module.version", deployment.active_version.to_string());
    add("weir.source.topic", input.topic.clone());
    add("weir.source.partition", input.partition.to_string());
    add("weir.source.offset", input.offset.to_string());
    // The module's reason, of any length it likes: cut, so a dead letter stays a record.
    add("weir.error", weir_runtime::cut_text(reason.to_owned(), weir_runtime::REASON_BYTES_MAX));
    Record {
        key: input.record.key.clone(),
        value: input.record.value.clone(),
        headers,
        timestamp: input.record.timestamp,
    }
}

/// Counts a failed write: pauses the deployment once `failures_max` writes in a row failed
/// (true: the task ends), otherwise waits before the batch is tried again.
async fn write_failed(broker: &Broker, deployment: &Deployment, metrics: &Metrics, reason: String) -> bool {
    metrics.set_last_error(reason.clone());
    let failures = metrics.failures_consecutive.fetch_add(1, Ordering::Relaxed) + 1;
    if failures >= deployment.active().spec.failures_max {
        pause(broker, deployment, failures, &reason).await;
        return true;
    }
    tokio::time::sleep(RETRY_AFTER).await;
    false
}

/// A dead letter for a stored batch whose records do not decode: the batch's bytes as the
/// value, with the same headers as other dead letters (the offset is the batch's base offset).
fn undecodable_letter(deployment: &Deployment, key: &TaskKey, offset: i64, batch: Bytes, reason: &str) -> Record {
    let headers = [
        ("weir.module", deployment.name.clone()),
        ("weir.module.version", deployment.active_version.to_string()),
        ("weir.source.topic", key.topic.clone()),
        ("weir.source.partition", key.partition.to_string()),
        ("weir.source.offset", offset.to_string()),
        ("weir.error", reason.to_owned()),
    ];
    Record {
        key: None,
        value: Some(batch),
        headers: headers.into_iter().map(|(k, v)| (k.to_owned(), Some(Bytes::from(v)))).collect(),
        timestamp: weir_sdk::now_ms(),
    }
}

/// Appends records to `topic` and waits until they are durable. A record goes to the
/// partition its key hashes to, or without a key to its source partition (modulo the count).
pub(crate) async fn write(broker: &Broker, topic: &str, records: Vec<(u32, Record)>) -> Result<(), WireError> {
    let partitions = u32::try_from(broker.describe_topic(topic)?.partitions.len()).unwrap_or(u32::MAX);
    let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for (source_partition, record) in records {
        let p = match &record.key {
            Some(key) => weir_sdk::partitioner::partition_for_key(key, partitions),
            None => source_partition % partitions,
        };
        by_partition.entry(p).or_default().push(record);
    }
    let mut entries = Vec::new();
    for (partition, records) in by_partition {
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len()
                && end - start < OUTPUT_BATCH_RECORDS
                && (bytes < OUTPUT_BATCH_BYTES || end == start)
            {
                bytes +=
                    records[end].value.as_ref().map_or(0, Bytes::len) + records[end].key.as_ref().map_or(0, Bytes::len);
                end += 1;
            }
            entries.push((Some(partition), encode_batch(&records[start..end], Compression::None)?));
            start = end;
        }
    }
    // Outputs are durable on every in-sync replica before the progress past their inputs is.
    let request = Produce { topic: topic.to_owned(), partitions: entries, acks_all: true };
    for produced in broker.produce_enqueue(request).await?.await {
        produced.base_offset?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_meta::deployments::{DeploymentSpec, DeploymentVersion};

    #[test]
    fn a_modules_reason_of_any_length_is_cut_in_a_dead_letter_and_in_the_last_error() {
        let spec = DeploymentSpec {
            kind: PluginKind::Sink,
            inputs: vec!["in".into()],
            output: None,
            topic: None,
            params: BTreeMap::new(),
            limits: weir_runtime::Limits::default(),
            dead_letter_topic: "d.dlq".into(),
            failures_max: 5,
            connector: None,
        };
        let version = DeploymentVersion { version: 1, sha256: "ab".into(), size_bytes: 1, deployed_at_ms: 0, spec };
        let deployment = Deployment {
            name: "d".into(),
            kind: PluginKind::Sink,
            versions: vec![version],
            active_version: 1,
            paused: None,
        };
        let input = ConsumedRecord { topic: "in".into(), partition: 0, offset: 7, record: Record::default() };
        let reason = "no".repeat(1 << 20);
        let letter = dead_letter(&deployment, &input, &reason);
        let error = letter.headers.iter().find(|(k, _)| k == "weir.error").and_then(|(_, v)| v.clone()).unwrap();
        assert_eq!(error.len(), weir_runtime::REASON_BYTES_MAX + 3, "cut, with ... after");
        let metrics = Metrics::default();
        metrics.set_last_error(reason);
        assert_eq!(metrics.snapshot().last_error.unwrap().len(), weir_runtime::REASON_BYTES_MAX + 3);
    }
}
