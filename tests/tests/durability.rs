//! SIGKILL mid-stream: every acknowledged record must be read back, byte-identical, in order,
//! and once: the native producer is idempotent.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{wait_until, BrokerProcess};
use weir_sdk::wire::OffsetSpec;
use weir_sdk::{
    Acks, Admin, Client, Consumer, ConsumerConfig, FlushMode, OffsetReset, Producer, ProducerConfig, Record,
    TopicConfig,
};

const PARTITIONS: u32 = 8;
const PRODUCERS: u64 = 4;
const RECORDS_PER_PRODUCER: u64 = 50_000;
const KILL_AFTER_ACKED: u64 = 60_000;

/// Sizes from 1 byte to 100 KiB: mostly small, one in a hundred large, one in a thousand 100 KiB.
fn value_len(seq: u64) -> usize {
    match seq {
        2 => 1,
        s if s % 1000 == 0 => 100 * 1024,
        s if s % 100 == 1 => (s.wrapping_mul(7919) % (100 * 1024)) as usize + 1,
        s => (s.wrapping_mul(31) % 1000) as usize + 1,
    }
}

/// Values nothing compresses (xorshift from the producer and sequence), so batches keep their
/// size in the log.
fn record(producer: u64, seq: u64) -> Record {
    let mut state = (producer << 32 | seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut value = Vec::with_capacity(value_len(seq) + 8);
    while value.len() < value_len(seq) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        value.extend_from_slice(&state.to_le_bytes());
    }
    value.truncate(value_len(seq));
    Record {
        key: Some(Bytes::from(format!("p{producer}-{seq:06}"))),
        value: Some(Bytes::from(value)),
        headers: vec![
            ("producer".into(), Some(Bytes::from(producer.to_string()))),
            ("seq".into(), Some(Bytes::from(seq.to_string()))),
        ],
        timestamp: 1_700_000_000_000 + seq as i64,
    }
}

fn parse_key(key: &[u8]) -> (u64, u64) {
    let text = std::str::from_utf8(key).expect("utf-8 key");
    let (p, s) = text[1..].split_once('-').expect("p<producer>-<seq>");
    (p.parse().expect("producer"), s.parse().expect("seq"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_broker_killed_while_producing_with_acks_all_then_no_acked_record_is_lost() {
    // Each append fsynced (the default flush mode): batches are kept in fjall.
    // Five batches in flight per partition: the idempotent producer (the default with
    // acks=all) keeps order and stores a retried batch once.
    let batching = ProducerConfig { max_in_flight_per_partition: 5, ..ProducerConfig::default() };
    killed_while_producing(&[], FlushMode::Always, batching).await;
}

/// The same with appends not fsynced and large batches, so sections go to segment files, and
/// the groups of 128 KiB or more are written around the page cache: an acknowledged append is
/// on its way to the disk, not in the broker's memory, when the process dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_broker_killed_while_writing_segments_around_the_page_cache_then_no_acked_record_is_lost() {
    // Batches gathered for longer, so appends come to more than 128 KiB (and stay below the
    // topic's 1 MiB max.message.bytes), five in flight per partition.
    let batching = ProducerConfig {
        linger: Duration::from_millis(100),
        batch_bytes: 512 << 10,
        max_in_flight_per_partition: 5,
        ..ProducerConfig::default()
    };
    let broker =
        killed_while_producing(&["--segment-direct-writes", "true"], FlushMode::IntervalMs(1000), batching).await;
    // Where the file system takes direct writes (ext4 and xfs do), the killed broker and the
    // restarted one wrote appends that way.
    if metric(&broker, "weir_segment_direct_writes_enabled") == 1.0 {
        assert!(broker.direct_writes_before_kill > 0.0, "no append went around the page cache before the kill");
        assert!(metric(&broker, "weir_segment_direct_writes_total") > 0.0, "nor after the restart");
    }
}

/// A sample without labels from the broker's `/metrics`.
fn metric(broker: &Killed, name: &str) -> f64 {
    let (status, metrics) = common::http_with(&broker.process.console_addr.to_string(), "GET", "/metrics", "", b"");
    assert_eq!(status, 200);
    let line =
        metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {metrics}"));
    line[name.len() + 1..].parse().unwrap()
}

/// The broker restarted after the kill, and how many appends it had written around the page
/// cache before it.
struct Killed {
    process: BrokerProcess,
    direct_writes_before_kill: f64,
}

/// Runs the producers, kills the broker mid-stream, restarts it and checks what was acknowledged.
async fn killed_while_producing(serve_args: &[&str], flush: FlushMode, batching: ProducerConfig) -> Killed {
    let mut broker = Killed { process: BrokerProcess::start(serve_args), direct_writes_before_kill: 0.0 };
    let admin = Admin::new(broker.process.client().await);
    // Record timestamps are fixed in the past, so time retention is off for this topic.
    let config = TopicConfig { retention_ms: None, flush, ..TopicConfig::default() };
    admin.create_topic("fault", PARTITIONS, config).await.expect("create topic");

    let acked_count = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let client = Client::connect(broker.process.client_config()).await.expect("connect");
        let producer = Producer::new(
            client,
            ProducerConfig {
                acks: Acks::All,
                delivery_timeout: Duration::from_secs(90),
                buffer_bytes: 16 << 20,
                enable_idempotence: true,
                max_in_flight_per_partition: batching.max_in_flight_per_partition,
                linger: batching.linger,
                batch_bytes: batching.batch_bytes,
                ..ProducerConfig::default()
            },
        );
        let acked_count = acked_count.clone();
        producers.push(tokio::spawn(async move {
            let mut pending = tokio::task::JoinSet::new();
            for seq in 0..RECORDS_PER_PRODUCER {
                let delivery = producer.send("fault", None, record(p, seq)).await.expect("queue record");
                let acked_count = acked_count.clone();
                pending.spawn(async move {
                    let outcome = delivery.await;
                    if outcome.is_ok() {
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                    (seq, outcome)
                });
            }
            producer.flush().await.expect("flush");
            let mut acked = Vec::new();
            let mut failed: BTreeMap<String, u64> = BTreeMap::new();
            while let Some(joined) = pending.join_next().await {
                match joined.expect("delivery task") {
                    (seq, Ok(d)) => acked.push((p, seq, d.partition, d.offset)),
                    (_, Err(e)) => *failed.entry(e.to_string()).or_default() += 1,
                }
            }
            (acked, failed)
        }));
    }

    // Kill the broker mid-stream, then bring it back on the same port and data folder.
    let counter = acked_count.clone();
    wait_until(Duration::from_secs(300), "records acknowledged before the kill", || {
        let n = counter.load(Ordering::Relaxed);
        async move { n >= KILL_AFTER_ACKED }
    })
    .await;
    let acked_at_kill = acked_count.load(Ordering::Relaxed);
    broker.direct_writes_before_kill = metric(&broker, "weir_segment_direct_writes_total");
    broker.process.kill9();
    let killed_at = Instant::now();
    broker.process.restart();
    eprintln!("broker SIGKILLed with {acked_at_kill} records acked; serving again after {:?}", killed_at.elapsed());

    let mut acked = Vec::new();
    // Why deliveries failed, with how many each.
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for p in producers {
        let (a, f) = p.await.expect("producer task");
        acked.extend(a);
        for (why, n) in f {
            *failures.entry(why).or_default() += n;
        }
    }
    let failed: u64 = failures.values().sum();

    // Read everything back.
    let client = broker.process.client().await;
    let admin = Admin::new(client.clone());
    let ends: BTreeMap<u32, i64> = admin
        .list_offsets("fault", (0..PARTITIONS).collect(), OffsetSpec::Latest)
        .await
        .expect("offsets")
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect();
    let mut consumer =
        Consumer::new(client, ConsumerConfig { offset_reset: OffsetReset::Fail, ..ConsumerConfig::default() });
    consumer.assign("fault", (0..PARTITIONS).collect(), OffsetSpec::Earliest).await.expect("assign");
    let mut stored: HashMap<(u32, i64), Record> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !consumer.assignment().all(|(_, p, pos)| pos >= ends[&p]) {
        assert!(Instant::now() < deadline, "reading back took over 300 s");
        for r in consumer.poll(Duration::from_millis(500)).await.expect("poll") {
            stored.insert((r.partition, r.offset), r.record);
        }
    }

    let mut lost = 0u64;
    for &(p, seq, partition, offset) in &acked {
        match stored.get(&(partition, offset)) {
            Some(r) if *r == record(p, seq) => {}
            other => {
                if lost < 5 {
                    eprintln!(
                        "lost: producer {p} seq {seq} acked at {partition}/{offset}, found {:?}",
                        other.map(|r| &r.key)
                    );
                }
                lost += 1;
            }
        }
    }
    // Duplicates (a batch retried after the kill whose first copy was stored) and order: within
    // a partition, each producer's records first appear in sequence order.
    let mut seen = HashSet::new();
    let mut duplicated = 0u64;
    let mut out_of_order = 0u64;
    let mut by_partition: BTreeMap<u32, Vec<(i64, &Record)>> = BTreeMap::new();
    for ((partition, offset), r) in &stored {
        by_partition.entry(*partition).or_default().push((*offset, r));
    }
    for records in by_partition.values_mut() {
        records.sort_by_key(|(o, _)| *o);
        let mut last_seq: HashMap<u64, u64> = HashMap::new();
        for (_, r) in records.iter() {
            let (p, seq) = parse_key(r.key.as_ref().expect("key"));
            if !seen.insert((p, seq)) {
                duplicated += 1;
                continue;
            }
            if last_seq.get(&p).is_some_and(|&last| seq < last) {
                out_of_order += 1;
            }
            last_seq.insert(p, seq);
        }
    }
    let read = stored.len();
    eprintln!(
        "acked {} / read {read} / lost {lost} / duplicated {duplicated} / out of order {out_of_order} / failed {failed} (acked before kill {acked_at_kill})",
        acked.len()
    );
    assert!(acked.len() as u64 > KILL_AFTER_ACKED, "a vacuous run proves nothing: only {} acked", acked.len());
    assert_eq!(lost, 0, "acknowledged records were lost");
    assert_eq!(out_of_order, 0, "records of one producer were reordered within a partition");
    assert_eq!(duplicated, 0, "an idempotent producer's retried batches are stored once");
    assert_eq!(failed, 0, "the producers' retries outlast a restart; failures: {failures:?}");
    broker
}

#[tokio::test]
async fn given_clean_restart_then_offsets_continue_where_they_stopped() {
    let mut broker = BrokerProcess::start(&[]);
    let admin = Admin::new(broker.client().await);
    admin.create_topic("restart", 1, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(broker.client().await, ProducerConfig::default());
    let mut last = -1;
    for i in 0..10 {
        last = producer
            .send("restart", Some(0), Record { value: Some(Bytes::from(format!("a{i}"))), ..Record::default() })
            .await
            .unwrap()
            .await
            .unwrap()
            .offset;
    }
    assert_eq!(last, 9);
    broker.stop();
    broker.restart();
    let client = broker.client().await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let next = producer
        .send("restart", Some(0), Record { value: Some(Bytes::from_static(b"b")), ..Record::default() })
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(next.offset, 10, "offsets continue after restart");
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.assign("restart", vec![0], OffsetSpec::Earliest).await.unwrap();
    let mut values = Vec::new();
    while values.len() < 11 {
        values
            .extend(consumer.poll(Duration::from_secs(1)).await.unwrap().into_iter().map(|r| r.record.value.unwrap()));
    }
    assert_eq!(values[0], Bytes::from_static(b"a0"));
    assert_eq!(values[10], Bytes::from_static(b"b"));
}
