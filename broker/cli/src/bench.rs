//! `weir bench`: load generators against a running broker, and the baselines (bare quinn
//! transfer, bare fjall inserts of the same bytes) that make their figures read as ratios.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use weir_sdk::wire::{OffsetSpec, TopicConfig};
use weir_sdk::{Admin, Compression, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, Record};

use crate::cli::{AcksArg, ConnectArgs};

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    kind: BenchKind,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Subcommand, Clone, Copy)]
enum BenchKind {
    /// Produce as fast as acknowledgements allow.
    Produce,
    /// Read the topic from the start to its end as fast as possible.
    Consume,
    /// Produce at --rate and consume at the same time; latency is produce-to-consume.
    E2e,
    /// Bare quinn bulk transfer and bare fjall inserts of the same bytes, no broker.
    Baseline,
    /// Connectors beside the client: bench produce into TOPIC-produced, then a generator
    /// source (--source-component) writing --count records of --record-bytes into
    /// TOPIC-generated; bench consume of that topic, then a file sink (--sink-component)
    /// reading it into a temporary folder here (so the broker must run on this machine).
    Connectors,
}

#[derive(clap::Args, Clone)]
struct LoadArgs {
    #[arg(long, default_value = "bench", global = true)]
    topic: String,
    #[arg(long, default_value_t = 1, global = true)]
    partitions: u32,
    /// bench produce --api batch: produce to this many topics of --partitions each, named
    /// `TOPIC-0`, `TOPIC-1`, ... (with 1, the topic is --topic itself), going round all their
    /// partitions in turn.
    #[arg(long, default_value_t = 1, global = true)]
    topics: u32,
    #[arg(long, default_value_t = 1024, global = true)]
    record_bytes: usize,
    /// Records to send (per run, all producers together).
    #[arg(long, default_value_t = 1_000_000, global = true)]
    count: u64,
    /// Stop after this many seconds even if --count is not reached.
    #[arg(long, default_value_t = 60, global = true)]
    duration_secs: u64,
    #[arg(long, default_value_t = 1, global = true)]
    producers: usize,
    #[arg(long, value_enum, default_value = "leader", global = true)]
    acks: AcksArg,
    #[arg(long, default_value_t = 256 * 1024, global = true)]
    batch_bytes: usize,
    #[arg(long, default_value_t = 5, global = true)]
    linger_ms: u64,
    #[arg(long, default_value = "none", global = true)]
    compression: Compression,
    /// bench produce: record values of one repeated byte (which Weir stores LZ4-compressed),
    /// or random bytes that nothing compresses (stored as they are), as producers mostly send
    /// once their batches are compressed.
    #[arg(long, value_enum, default_value = "repeated", global = true)]
    values: ValueKind,
    /// Records per second for e2e (0 = as fast as possible).
    #[arg(long, default_value_t = 0, global = true)]
    rate: u64,
    /// Also run the baselines in the same invocation and print ratios.
    #[arg(long, global = true)]
    baseline: bool,
    /// Topic flush mode for a topic the bench creates: always (fsync before ack) or interval.
    #[arg(long, default_value = "interval", global = true)]
    flush: String,
    /// How bench produce hands records to the producer: `batch` gives it --batch-bytes of
    /// records at a time, one delivery each, round the partitions (`Producer::send_batch`);
    /// `record` sends each record with its own delivery future (`Producer::send`), batched by
    /// the producer's --batch-bytes and --linger-ms.
    #[arg(long, value_enum, default_value = "batch", global = true)]
    api: ProduceApi,
    /// Which side of bench e2e this process runs: both (one process), or the producer or the
    /// consumer alone, as users run them (start the consumer first; both stamp and read the
    /// machine's wall clock).
    #[arg(long, value_enum, default_value = "both", global = true)]
    role: E2eRole,
    /// bench connectors: the generator source component (wasm-modules/generator).
    #[arg(long, global = true)]
    source_component: Option<std::path::PathBuf>,
    /// bench connectors: the file sink component (wasm-modules/file-sink).
    #[arg(long, global = true)]
    sink_component: Option<std::path::PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ValueKind {
    Repeated,
    Random,
}

/// The values bench produce cycles through: one of `x`s, or 256 random ones (256 records
/// apart, farther than LZ4's 64 KiB window for 1 KiB records, so no batch compresses).
fn value_pool(load: &LoadArgs) -> Vec<Bytes> {
    match load.values {
        ValueKind::Repeated => vec![Bytes::from(vec![b'x'; load.record_bytes])],
        ValueKind::Random => {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            (0..256)
                .map(|_| {
                    let bytes: Vec<u8> = (0..load.record_bytes)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x.to_le_bytes()[0]
                        })
                        .collect();
                    Bytes::from(bytes)
                })
                .collect()
        }
    }
}

/// The value of record `n`: the pool's values in turn.
fn nth_value(values: &[Bytes], n: u64) -> Bytes {
    // The remainder is below the pool's length, a usize.
    values[usize::try_from(n % values.len() as u64).unwrap_or(0)].clone()
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum E2eRole {
    Both,
    Produce,
    Consume,
}

/// Nanoseconds since the Unix epoch: the send time e2e carries in each value, comparable
/// between processes on one machine.
fn wall_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ProduceApi {
    Batch,
    Record,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let load = args.load.clone();
    anyhow::ensure!(
        load.topics <= 1
            || (matches!(args.kind, BenchKind::Produce) && load.api == ProduceApi::Batch && load.rate == 0),
        "--topics {} works with bench produce --api batch only",
        load.topics
    );
    let total_bytes = load.count * load.record_bytes as u64;
    let baseline = if load.baseline || matches!(args.kind, BenchKind::Baseline) {
        let quic = quinn_baseline(total_bytes.min(4 << 30), load.batch_bytes).await?;
        println!(
            "baseline bare quinn transfer: {} in {:.2?} = {:.1} MB/s",
            human(total_bytes.min(4 << 30)),
            quic.1,
            quic.0
        );
        let fjall = fjall_baseline(load.count.min(4_000_000), load.record_bytes, load.batch_bytes)?;
        println!("baseline bare fjall inserts:  {:.1} MB/s ({} values of {} B in write batches of {} B, journal flushed to OS buffers)", fjall, load.count.min(4_000_000), load.record_bytes, load.batch_bytes);
        if load.flush == "always" {
            let bytes = total_bytes.min(FSYNC_BASELINE_BYTES_MAX);
            let fsync = fsync_baseline(bytes, load.batch_bytes)?;
            println!(
                "baseline file append + fdatasync: {fsync:.1} MB/s ({} in appends of {} B, fdatasync after each)",
                human(bytes),
                load.batch_bytes
            );
            Some((quic.0, fsync, "append + fdatasync"))
        } else {
            Some((quic.0, fjall, "bare fjall"))
        }
    } else {
        None
    };
    let figure = match args.kind {
        BenchKind::Baseline => return Ok(()),
        BenchKind::Produce => produce(&args.connect, &load, None).await?,
        BenchKind::Consume => consume(&args.connect, &load).await?,
        BenchKind::E2e => e2e(&args.connect, &load).await?,
        BenchKind::Connectors => connectors(&args.connect, &load).await?,
    };
    if let Some((quic, store, store_name)) = baseline {
        println!("ratio to bare quinn: {:.2}   ratio to {store_name}: {:.2}", figure / quic, figure / store);
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn print_latency(name: &str, h: &Histogram<u64>) {
    println!(
        "{name} latency: p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

async fn ensure_topic(admin: &Admin, load: &LoadArgs) -> anyhow::Result<()> {
    let existing = admin.list_topics().await?;
    let config = TopicConfig::default().with_entries([("flush.mode", load.flush.as_str()), ("retention.ms", "-1")])?;
    let started = Instant::now();
    let mut created = 0;
    for name in topic_names(load) {
        if !existing.contains(&name) {
            admin.create_topic(&name, load.partitions, config.clone()).await?;
            created += 1;
        }
    }
    if created > 1 {
        println!("created {created} topics of {} partitions in {:.2?}", load.partitions, started.elapsed());
    }
    Ok(())
}

/// The topics a bench uses: --topic, or with --topics N, `TOPIC-0` to `TOPIC-{N-1}`.
fn topic_names(load: &LoadArgs) -> Vec<String> {
    match load.topics {
        0 | 1 => vec![load.topic.clone()],
        n => (0..n).map(|i| format!("{}-{i}", load.topic)).collect(),
    }
}

/// Returns MB/s.
async fn produce(connect: &ConnectArgs, load: &LoadArgs, rate: Option<u64>) -> anyhow::Result<f64> {
    let client = connect.connect().await?;
    ensure_topic(&Admin::new(client.clone()), load).await?;
    let config = ProducerConfig {
        acks: load.acks.into(),
        linger: Duration::from_millis(load.linger_ms),
        batch_bytes: load.batch_bytes,
        compression: load.compression,
        ..ProducerConfig::default()
    };
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(load.duration_secs);
    let per_producer = load.count / load.producers as u64;
    let mut tasks = Vec::new();
    if load.api == ProduceApi::Batch && rate.is_none() {
        for i in 0..load.producers {
            let producer = Producer::new(client.clone(), config.clone());
            tasks.push(tokio::spawn(produce_batches(producer, load.clone(), i, per_producer, deadline, sent.clone())));
        }
    }
    let per_record = tasks.is_empty();
    for i in (0..load.producers).filter(|_| per_record) {
        let producer = Producer::new(client.clone(), config.clone());
        let (load, sent) = (load.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            // Deliveries are polled here, in the sending task, rather than one task each.
            let mut pending = FuturesUnordered::new();
            let mut record_delivery = |outcome: Result<Instant, weir_sdk::ClientError>| -> anyhow::Result<()> {
                let sent_at = outcome?;
                sent.fetch_add(1, Ordering::Relaxed);
                let _ = histogram.record(u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
                Ok(())
            };
            let values = value_pool(&load);
            for n in 0..per_producer {
                if Instant::now() >= deadline {
                    break;
                }
                if let Some(rate) = rate {
                    let due =
                        start + Duration::from_secs_f64((n * load.producers as u64 + i as u64) as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent_at = Instant::now();
                let delivery = producer
                    .send(&load.topic, None, Record { value: Some(nth_value(&values, n)), ..Record::default() })
                    .await?;
                pending.push(async move { delivery.await.map(|_| sent_at) });
                while let Some(Some(outcome)) = pending.next().now_or_never() {
                    record_delivery(outcome)?;
                }
            }
            producer.flush().await?;
            while let Some(outcome) = pending.next().await {
                record_delivery(outcome)?;
            }
            Ok::<_, anyhow::Error>(histogram)
        }));
    }
    let progress = spawn_progress("produce", sent.clone(), load.record_bytes);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        histogram.add(t.await??)?;
    }
    progress.abort();
    let elapsed = start.elapsed();
    let records = sent.load(Ordering::Relaxed);
    let mb_s = records as f64 * load.record_bytes as f64 / elapsed.as_secs_f64() / 1e6;
    println!(
        "produce: {records} records of {} B in {elapsed:.2?}: {:.0} records/s, {mb_s:.1} MB/s (api {:?}, partitions {}, producers {}, acks {:?}, batch {} B, linger {} ms, {:?})",
        load.record_bytes,
        records as f64 / elapsed.as_secs_f64(),
        load.api,
        load.partitions,
        load.producers,
        load.acks,
        load.batch_bytes,
        load.linger_ms,
        load.compression
    );
    print_latency(if load.api == ProduceApi::Batch { "produce ack (per batch)" } else { "produce ack" }, &histogram);
    Ok(mb_s)
}

/// One producer of `bench produce --api batch`: batches of --batch-bytes of records, each
/// given to `send_batch` for the next partition in turn; the acknowledgement latency is per
/// batch.
async fn produce_batches(
    producer: Producer,
    load: LoadArgs,
    index: usize,
    count: u64,
    deadline: Instant,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut pending = FuturesUnordered::new();
    let mut record_delivery =
        |outcome: Result<(Instant, weir_sdk::BatchDelivery), weir_sdk::ClientError>| -> anyhow::Result<()> {
            let (sent_at, delivery) = outcome?;
            sent.fetch_add(delivery.len() as u64, Ordering::Relaxed);
            let _ = histogram.record(u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
            Ok(())
        };
    let values = value_pool(&load);
    // As many records as the record API's producer seals into one batch (it counts 16 bytes
    // of overhead per record), so a --batch-bytes batch fits a topic's max.message.bytes of
    // the same size.
    let per_batch = load.batch_bytes.div_ceil(load.record_bytes + 16).max(1) as u64;
    let mut queued = 0u64;
    let topics = topic_names(&load);
    let partitions = load.partitions.max(1) as usize;
    let slots = topics.len() * partitions;
    let mut slot = index % slots;
    while queued < count && Instant::now() < deadline {
        let n = per_batch.min(count - queued);
        let records =
            (0..n).map(|i| Record { value: Some(nth_value(&values, queued + i)), ..Record::default() }).collect();
        let sent_at = Instant::now();
        let (topic, partition) = (&topics[slot / partitions], u32::try_from(slot % partitions)?);
        let delivery = producer.send_batch(topic, Some(partition), records).await?;
        pending.push(async move { delivery.await.map(|d| (sent_at, d)) });
        while let Some(Some(outcome)) = pending.next().now_or_never() {
            record_delivery(outcome)?;
        }
        queued += n;
        slot = (slot + 1) % slots;
    }
    while let Some(outcome) = pending.next().await {
        record_delivery(outcome)?;
    }
    Ok(histogram)
}

fn spawn_progress(what: &'static str, counter: Arc<AtomicU64>, record_bytes: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = counter.load(Ordering::Relaxed);
            eprintln!(
                "  {what}: {} records/s, {:.1} MB/s, {now} total",
                now - last,
                (now - last) as f64 * record_bytes as f64 / 1e6
            );
            last = now;
        }
    })
}

async fn consume(connect: &ConnectArgs, load: &LoadArgs) -> anyhow::Result<f64> {
    let client = connect.connect().await?;
    let admin = Admin::new(client.clone());
    let d = admin
        .describe_topic(&load.topic)
        .await
        .context("bench consume reads an existing topic; run bench produce first")?;
    let partitions: Vec<u32> = d.partitions.iter().map(|p| p.partition).collect();
    let ends: std::collections::BTreeMap<u32, i64> =
        d.partitions.iter().map(|p| (p.partition, p.high_watermark)).collect();
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            offset_reset: OffsetReset::Fail,
            fetch_max_bytes: 8 << 20,
            partition_max_bytes: 4 << 20,
            module: None,
            read_replica: false,
        },
    );
    consumer.assign(&load.topic, partitions, OffsetSpec::Earliest).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress("consume", counter.clone(), load.record_bytes);
    let start = Instant::now();
    let mut bytes = 0u64;
    while !consumer.assignment().all(|(_, p, pos)| pos >= ends[&p])
        && start.elapsed() < Duration::from_secs(load.duration_secs)
    {
        for r in consumer.poll(Duration::from_millis(500)).await? {
            bytes += r.record.value.as_ref().map_or(0, |v| v.len() as u64);
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    progress.abort();
    let elapsed = start.elapsed();
    let records = counter.load(Ordering::Relaxed);
    let mb_s = bytes as f64 / elapsed.as_secs_f64() / 1e6;
    println!(
        "consume: {records} records in {elapsed:.2?}: {:.0} records/s, {mb_s:.1} MB/s",
        records as f64 / elapsed.as_secs_f64()
    );
    Ok(mb_s)
}

/// A connector deployed for the bench, removed when the bench is done with it.
async fn bench_connector(
    admin: &Admin,
    request: weir_sdk::wire::DeployModuleRequest,
    component: &std::path::Path,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let _ = admin.module_action(&request.name, weir_sdk::wire::ModuleAction::Remove).await;
    admin.deploy_module(&request, Bytes::from(bytes)).await?;
    Ok(())
}

/// Waits until `done` answers how many records are through and it reaches `count` (or the
/// bench's duration passes); prints and returns MB/s.
async fn time_until(
    what: &str,
    count: u64,
    record_bytes: usize,
    duration: Duration,
    mut done: impl AsyncFnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut through = 0;
    while through < count && start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(20)).await;
        through = done().await?;
    }
    let elapsed = start.elapsed();
    let mb_s = through as f64 * record_bytes as f64 / elapsed.as_secs_f64() / 1e6;
    println!(
        "{what}: {through} records in {elapsed:.2?}: {:.0} records/s, {mb_s:.1} MB/s",
        through as f64 / elapsed.as_secs_f64()
    );
    Ok(mb_s)
}

/// Returns the file sink's MB/s; prints each figure beside its client baseline.
async fn connectors(connect: &ConnectArgs, load: &LoadArgs) -> anyhow::Result<f64> {
    use weir_sdk::wire::{ConnectorConfig, DeployModuleRequest, ModuleAction};
    let source = load.source_component.as_deref().context("bench connectors needs --source-component")?;
    let sink = load.sink_component.as_deref().context("bench connectors needs --sink-component")?;
    let admin = Admin::new(connect.connect().await?);
    let duration = Duration::from_secs(load.duration_secs);

    let produced = LoadArgs { topic: format!("{}-produced", load.topic), ..load.clone() };
    let produce_mb = produce(connect, &produced, None).await?;
    let generated = LoadArgs { topic: format!("{}-generated", load.topic), ..load.clone() };
    ensure_topic(&admin, &generated).await?;
    let request = DeployModuleRequest {
        name: "bench-generator".into(),
        kind: "source".into(),
        output: Some(generated.topic.clone()),
        params: [("count", load.count.to_string()), ("value_bytes", load.record_bytes.to_string())]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        deadline_ms: Some(5_000),
        connector: Some(ConnectorConfig {
            batch_records: Some(u32::try_from((load.batch_bytes / load.record_bytes.max(1)).clamp(1, 10_000))?),
            poll_interval_ms: Some(0),
            ..ConnectorConfig::default()
        }),
        ..DeployModuleRequest::default()
    };
    bench_connector(&admin, request, source).await?;
    let topic = generated.topic.clone();
    let source_mb = time_until("generator source", load.count, load.record_bytes, duration, async || {
        Ok(admin.describe_topic(&topic).await?.partitions.iter().map(|p| p.high_watermark.max(0) as u64).sum())
    })
    .await?;
    admin.module_action("bench-generator", ModuleAction::Remove).await?;
    println!("generator source / bench produce: {:.2}", source_mb / produce_mb);

    let consume_mb = consume(connect, &generated).await?;
    let folder = tempfile::tempdir()?;
    let request = DeployModuleRequest {
        name: "bench-file-sink".into(),
        kind: "sink".into(),
        inputs: vec![generated.topic.clone()],
        params: [("path".to_owned(), "out.log".to_owned())].into_iter().collect(),
        deadline_ms: Some(5_000),
        connector: Some(ConnectorConfig {
            dir: Some(folder.path().to_str().context("a UTF-8 temporary folder")?.to_owned()),
            dir_writable: true,
            ..ConnectorConfig::default()
        }),
        ..DeployModuleRequest::default()
    };
    bench_connector(&admin, request, sink).await?;
    let sink_mb = time_until("file sink", load.count, load.record_bytes, duration, async || {
        let described = admin.describe_module("bench-file-sink").await?;
        Ok(described.metrics.progress.values().map(|next| (*next).max(0) as u64).sum())
    })
    .await?;
    admin.module_action("bench-file-sink", ModuleAction::Remove).await?;
    println!("file sink / bench consume: {:.2}", sink_mb / consume_mb);
    Ok(sink_mb)
}

/// Produces at `--rate` while a consumer follows the tail; latency is from send to receipt,
/// measured with a send timestamp (wall clock) carried in each value. `--role` runs one side.
async fn e2e(connect: &ConnectArgs, load: &LoadArgs) -> anyhow::Result<f64> {
    anyhow::ensure!(load.record_bytes >= 16, "e2e needs --record-bytes of at least 16 to carry its timestamp");
    let client = connect.connect().await?;
    let admin = Admin::new(client.clone());
    ensure_topic(&admin, load).await?;
    let mut consumer = match load.role {
        E2eRole::Produce => None,
        _ => {
            let mut consumer = Consumer::new(
                client.clone(),
                ConsumerConfig { offset_reset: OffsetReset::Fail, ..ConsumerConfig::default() },
            );
            consumer.assign_topic(&load.topic, OffsetSpec::Latest).await?;
            Some(consumer)
        }
    };
    let sender = match load.role {
        E2eRole::Consume => None,
        _ => Some(tokio::spawn(send_stamped(client.clone(), load.clone()))),
    };
    let sched_start = SchedStat::of_this_process();
    let Some(consumer) = consumer.as_mut() else {
        let started = Instant::now();
        let sent = sender.expect("the producer role sends").await??;
        let mb_s = sent as f64 * load.record_bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
        println!("e2e producer: {sent} records at target rate {} records/s: {mb_s:.1} MB/s", load.rate);
        SchedStat::print_since(sched_start, started.elapsed());
        return Ok(mb_s);
    };
    if load.role == E2eRole::Consume {
        println!("e2e consumer: following {} from its end", load.topic);
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let start = Instant::now();
    let mut received = 0u64;
    let mut last_record = Instant::now();
    let give_up = start + Duration::from_secs(load.duration_secs + 10);
    loop {
        let producing = sender.as_ref().is_some_and(|s| !s.is_finished());
        if Instant::now() > give_up || received >= load.count && !producing {
            break;
        }
        let records = consumer.poll(Duration::from_millis(200)).await?;
        let now = wall_nanos();
        if records.is_empty() {
            // Alone, the consumer stops 2 s after the producer's last record arrived.
            let quiet = received > 0 && last_record.elapsed() > Duration::from_secs(2);
            if (sender.is_some() && !producing) || (sender.is_none() && quiet) {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for r in records {
            if let Some(v) = &r.record.value {
                let sent = u128::from_be_bytes(v[..16].try_into().expect("16 bytes"));
                let _ = histogram.record(u64::try_from((now.saturating_sub(sent) / 1000).max(1)).unwrap_or(u64::MAX));
                received += 1;
            }
        }
    }
    if let Some(sender) = sender {
        sender.await??;
    }
    let elapsed = start.elapsed();
    let mb_s = received as f64 * load.record_bytes as f64 / elapsed.as_secs_f64() / 1e6;
    println!("e2e: {received} records in {elapsed:.2?} at target rate {} records/s: {mb_s:.1} MB/s", load.rate);
    print_latency("end-to-end", &histogram);
    SchedStat::print_since(sched_start, elapsed);
    Ok(mb_s)
}

/// What the scheduler says of this process's threads (`/proc/self/task/*/schedstat`): time on
/// a CPU, and time runnable but waiting for one. Waiting is what a latency tail on busy cores
/// is made of.
#[derive(Clone, Copy)]
struct SchedStat {
    running: Duration,
    waiting: Duration,
}

impl SchedStat {
    /// `None` where the kernel does not keep the figures (or not on Linux).
    fn of_this_process() -> Option<Self> {
        let mut total = Self { running: Duration::ZERO, waiting: Duration::ZERO };
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let Ok(line) = std::fs::read_to_string(task.ok()?.path().join("schedstat")) else { continue };
            let mut fields = line.split_whitespace().map(str::parse::<u64>);
            let (Some(Ok(running)), Some(Ok(waiting))) = (fields.next(), fields.next()) else { continue };
            total.running += Duration::from_nanos(running);
            total.waiting += Duration::from_nanos(waiting);
        }
        Some(total)
    }

    /// Prints the threads' running and waiting time since `start` (live threads only: those
    /// that ended are not counted).
    fn print_since(start: Option<Self>, wall: Duration) {
        let (Some(start), Some(now)) = (start, Self::of_this_process()) else { return };
        let secs = wall.as_secs_f64().max(1e-9);
        println!(
            "this process: on a CPU {:.2} s, runnable and waiting for a CPU {:.2} s, over {:.2} s ({:.2} cores busy, {:.2} waiting)",
            now.running.saturating_sub(start.running).as_secs_f64(),
            now.waiting.saturating_sub(start.waiting).as_secs_f64(),
            secs,
            now.running.saturating_sub(start.running).as_secs_f64() / secs,
            now.waiting.saturating_sub(start.waiting).as_secs_f64() / secs,
        );
    }
}

/// The producer side of e2e: `--count` records at `--rate`, each value carrying its send time.
/// Returns how many were sent.
async fn send_stamped(client: weir_sdk::Client, load: LoadArgs) -> anyhow::Result<u64> {
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: load.acks.into(),
            linger: Duration::from_millis(load.linger_ms),
            batch_bytes: load.batch_bytes,
            ..ProducerConfig::default()
        },
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs(load.duration_secs);
    let mut sent = 0;
    for n in 0..load.count {
        if Instant::now() >= deadline {
            break;
        }
        if load.rate > 0 {
            tokio::time::sleep_until((start + Duration::from_secs_f64(n as f64 / load.rate as f64)).into()).await;
        }
        let mut value = vec![b'x'; load.record_bytes];
        value[..16].copy_from_slice(&wall_nanos().to_be_bytes());
        // Delivery is observed by the consumer side, not awaited here.
        drop(producer.send(&load.topic, None, Record { value: Some(Bytes::from(value)), ..Record::default() }).await?);
        sent += 1;
    }
    producer.flush().await?;
    Ok(sent)
}

/// A bare quinn bulk transfer over loopback with Weir's transport settings: one stream per
/// `chunk` bytes, like one produce request per batch. Returns (MB/s, elapsed).
async fn quinn_baseline(total_bytes: u64, chunk: usize) -> anyhow::Result<(f64, Duration)> {
    let names = vec!["localhost".to_owned()];
    let generated = rcgen::generate_simple_self_signed(names)?;
    let cert = generated.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!(e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_crypto = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    server_crypto.alpn_protocols = vec![b"bench".to_vec()];
    let mut server_config =
        quinn::ServerConfig::with_crypto(Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(server_crypto)?));
    server_config.transport_config(Arc::new(weir_sdk::client::transport_config()));
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.context("no connection")?.await?;
        let mut received = 0u64;
        while received < total_bytes {
            let (mut send, mut recv) = conn.accept_bi().await?;
            while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                received += chunk.bytes.len() as u64;
            }
            send.write_all(b"ok").await?;
            send.finish()?;
        }
        // Let the client read the last answers; it closes the connection when done.
        conn.closed().await;
        Ok::<_, anyhow::Error>(())
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client_crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_crypto.alpn_protocols = vec![b"bench".to_vec()];
    let mut client_config =
        quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(client_crypto)?));
    client_config.transport_config(Arc::new(weir_sdk::client::transport_config()));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(client_config);
    let conn = endpoint.connect(addr, "localhost")?.await?;
    let data = Bytes::from(vec![7u8; chunk]);
    let start = Instant::now();
    let mut sent = 0u64;
    // Keep a few streams in flight, as a producer with several partitions would.
    let mut in_flight = tokio::task::JoinSet::new();
    while sent < total_bytes {
        let n = usize::try_from((total_bytes - sent).min(chunk as u64)).unwrap_or(chunk);
        let (mut send, mut recv) = conn.open_bi().await?;
        let data = data.slice(..n);
        in_flight.spawn(async move {
            send.write_chunk(data).await?;
            send.finish()?;
            recv.read_to_end(16).await?;
            Ok::<_, anyhow::Error>(())
        });
        sent += n as u64;
        while in_flight.len() >= 4 {
            in_flight.join_next().await.expect("non-empty")??;
        }
    }
    while let Some(r) = in_flight.join_next().await {
        r??;
    }
    let elapsed = start.elapsed();
    conn.close(quinn::VarInt::from_u32(0), b"done");
    receiver.await??;
    Ok((total_bytes as f64 / elapsed.as_secs_f64() / 1e6, elapsed))
}

/// Bare fjall: the same values, in write batches of `batch_bytes`, into a kv-separated keyspace
/// with big-endian keys, journal written to OS buffers (as acks=leader with interval flush).
fn fjall_baseline(count: u64, record_bytes: usize, batch_bytes: usize) -> anyhow::Result<f64> {
    let dir = tempfile_dir()?;
    let db = fjall::Database::builder(&dir).open()?;
    let ks = db.keyspace("bench", || {
        fjall::KeyspaceCreateOptions::default().with_kv_separation(Some(fjall::KvSeparationOptions::default()))
    })?;
    let per_batch = (batch_bytes / record_bytes).max(1) as u64;
    let value = vec![b'x'; record_bytes * usize::try_from(per_batch).unwrap_or(1)];
    let start = Instant::now();
    let mut key = 0u64;
    while key < count {
        let mut batch = db.batch();
        batch.insert(&ks, key.to_be_bytes(), value.clone());
        batch.commit()?;
        key += per_batch;
    }
    let elapsed = start.elapsed();
    drop(ks);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(key as f64 * record_bytes as f64 / elapsed.as_secs_f64() / 1e6)
}

/// Bytes the append + fdatasync baseline writes at most (an fdatasync per batch is slow).
const FSYNC_BASELINE_BYTES_MAX: u64 = 512 << 20;

/// A plain file: appends of `batch_bytes`, each followed by fdatasync, as a durable log without
/// group commit would write them. Returns MB/s.
fn fsync_baseline(total_bytes: u64, batch_bytes: usize) -> anyhow::Result<f64> {
    use std::io::Write;
    let dir = tempfile_dir()?;
    let path = dir.join("append");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let data = vec![b'x'; batch_bytes];
    let start = Instant::now();
    let mut written = 0u64;
    while written < total_bytes {
        file.write_all(&data)?;
        file.sync_data()?;
        written += batch_bytes as u64;
    }
    let elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(written as f64 / elapsed.as_secs_f64() / 1e6)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("weir-bench-fjall-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
