//! Retention, fetch semantics and the `weir` CLI against a real broker.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{wait_until, BrokerProcess};
use weir_sdk::wire::OffsetSpec;
use weir_sdk::{
    Admin, ClientError, Consumer, ConsumerConfig, ErrorCode, OffsetReset, Producer, ProducerConfig, Record, TopicConfig,
};

/// `len` bytes that do not compress (xorshift64 from state `x`, which moves on).
fn incompressible(len: usize, x: &mut u64) -> Bytes {
    (0..len)
        .map(|_| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x as u8
        })
        .collect()
}

#[tokio::test]
async fn given_tiny_retention_then_old_batches_go_and_later_consumers_are_unaffected() {
    let broker = BrokerProcess::start(&["--retention-check-ms", "100"]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    let config = TopicConfig::default().with_entries([("retention.bytes", "20000"), ("retention.ms", "-1")]).unwrap();
    admin.create_topic("short", 1, config).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    // One batch per send: wait for each delivery before the next. The values do not compress,
    // so a batch takes its 2 KB stored too (retention.bytes counts what the log takes stored).
    let mut last = 0;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..50u32 {
        let value = incompressible(2000, &mut x);
        last = producer
            .send("short", Some(0), Record { value: Some(value), ..Record::default() })
            .await
            .unwrap()
            .await
            .unwrap()
            .offset;
    }
    assert_eq!(last, 49);

    // A consumer positioned near the end before retention runs.
    let mut tail =
        Consumer::new(client.clone(), ConsumerConfig { offset_reset: OffsetReset::Fail, ..ConsumerConfig::default() });
    tail.seek("short", 0, 45);

    // Retention may already have run while producing; wait until it has caught up with the end.
    let a = admin.clone();
    // Like Kafka, retention keeps at least retention.bytes: it deletes a batch only while the
    // rest still holds that much.
    wait_until(Duration::from_secs(20), "retention to bring the partition within one batch of retention.bytes", || {
        let a = a.clone();
        async move { a.describe_topic("short").await.unwrap().partitions[0].size_bytes < 20_000 + 2200 }
    })
    .await;
    let earliest = admin.list_offsets("short", vec![0], OffsetSpec::Earliest).await.unwrap()[0].offset;
    let described = admin.describe_topic("short").await.unwrap();
    assert!(
        described.partitions[0].size_bytes >= 20_000,
        "retention deletes no more than needed: {}",
        described.partitions[0].size_bytes
    );
    assert!(earliest > 30 && earliest <= 45, "about 20 KB of 2 KB batches are kept: earliest {earliest}");

    let mut got = Vec::new();
    while got.len() < 5 {
        got.extend(tail.poll(Duration::from_secs(1)).await.unwrap().into_iter().map(|r| r.offset));
    }
    assert_eq!(got, vec![45, 46, 47, 48, 49]);

    let mut behind =
        Consumer::new(client, ConsumerConfig { offset_reset: OffsetReset::Fail, ..ConsumerConfig::default() });
    behind.seek("short", 0, 0);
    match behind.poll(Duration::from_millis(100)).await {
        Err(ClientError::Broker(e)) => assert_eq!(e.code, ErrorCode::OffsetOutOfRange),
        other => panic!("reading deleted offsets must fail, got {other:?}"),
    }
}

/// The segment files of a broker's log.
fn segment_files(broker: &BrokerProcess) -> Vec<(String, u64)> {
    let dir = broker.data_dir.join("db").join("segments");
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn given_large_batches_when_retention_deletes_them_then_their_segment_files_go_and_the_rest_reads_whole() {
    let broker = BrokerProcess::start(&["--retention-check-ms", "100", "--segment-bytes", "65536"]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    // Appends that ask for an fsync stay whole in fjall (one fsync, not two): interval flushes.
    let config = TopicConfig::default()
        .with_entries([("retention.bytes", "60000"), ("retention.ms", "-1"), ("flush.mode", "interval")])
        .unwrap();
    admin.create_topic("big", 1, config).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    // 40 batches of one 10 KB record that does not compress: each is stored in a segment
    // file, and a segment of 64 KiB takes about 6 of them.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut values = Vec::new();
    for _ in 0..40u32 {
        let value = incompressible(10_000, &mut x);
        producer
            .send("big", Some(0), Record { value: Some(value.clone()), ..Record::default() })
            .await
            .unwrap()
            .await
            .unwrap();
        values.push(value);
    }
    // 400 KB went into segments of 64 KiB: the newest has id 5 or more (retention may have
    // deleted older ones already).
    let newest: u64 =
        segment_files(&broker).last().map_or(0, |(name, _)| name.trim_end_matches(".seg").parse().unwrap());
    assert!(newest >= 5, "every batch went to a segment file: {:?}", segment_files(&broker));

    // Retention keeps about 60 KB (6 batches); the segments holding only deleted batches go.
    let a = admin.clone();
    wait_until(Duration::from_secs(20), "retention to bring the partition near retention.bytes", || {
        let a = a.clone();
        async move { a.describe_topic("big").await.unwrap().partitions[0].size_bytes < 60_000 + 10_200 }
    })
    .await;
    wait_until(Duration::from_secs(20), "the segment files of deleted batches to go", || {
        let left: u64 = segment_files(&broker).iter().map(|(_, len)| len).sum();
        async move { left < 200_000 }
    })
    .await;

    let earliest = admin.list_offsets("big", vec![0], OffsetSpec::Earliest).await.unwrap()[0].offset;
    assert!((30..40).contains(&earliest), "about 6 batches are kept: earliest {earliest}");
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.seek("big", 0, earliest);
    let mut got = Vec::new();
    while got.len() < 40 - earliest as usize {
        got.extend(consumer.poll(Duration::from_secs(1)).await.unwrap());
    }
    let read: Vec<Bytes> = got.into_iter().map(|r| r.record.value.unwrap()).collect();
    assert_eq!(read, values[earliest as usize..], "what is kept reads back whole from the segments left");
}

#[tokio::test]
async fn given_a_waiting_fetch_when_a_record_arrives_then_it_returns_early() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    Admin::new(client.clone()).create_topic("poll", 1, TopicConfig::default()).await.unwrap();
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign("poll", vec![0], OffsetSpec::Latest).await.unwrap();
    let poller = tokio::spawn(async move { consumer.poll(Duration::from_secs(20)).await });
    let producer = Producer::new(client, ProducerConfig::default());
    producer
        .send("poll", None, Record { value: Some(Bytes::from_static(b"hi")), ..Record::default() })
        .await
        .unwrap()
        .await
        .unwrap();
    let records = tokio::time::timeout(Duration::from_secs(15), poller)
        .await
        .expect("long poll woke on append")
        .unwrap()
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record.value.as_deref(), Some(&b"hi"[..]));
}

#[tokio::test]
async fn given_timestamps_then_list_offsets_finds_the_first_record_at_or_after() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    admin.create_topic("times", 1, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(client, ProducerConfig::default());
    for ts in [1000, 2000, 3000, 4000] {
        producer
            .send(
                "times",
                Some(0),
                Record { value: Some(Bytes::from_static(b"x")), timestamp: ts, ..Record::default() },
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let at = |ts| admin.list_offsets("times", vec![0], OffsetSpec::Timestamp(ts));
    assert_eq!(at(2500).await.unwrap()[0].offset, 2);
    assert_eq!(at(0).await.unwrap()[0].offset, 0);
    assert_eq!(at(9999).await.unwrap()[0].offset, -1);
}

/// `Producer::send_batch`: one delivery for many records. Keyed records are split by key
/// partition and keep their order there; keyless ones go to one partition together; a batch
/// comes after the records `send` queued before it; every record's offset is told.
#[tokio::test]
async fn given_send_batch_then_records_land_by_key_in_order_with_one_delivery() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    admin.create_topic("batches", 4, TopicConfig::default()).await.unwrap();
    let producer =
        Producer::new(client.clone(), ProducerConfig { linger: Duration::from_secs(60), ..ProducerConfig::default() });
    let value = |s: String| Some(Bytes::from(s));
    // Queued with a minute's linger: only the batch after it may send it.
    let first = producer
        .send(
            "batches",
            Some(weir_sdk::partitioner::partition_for_key(b"k1", 4)),
            Record { key: Some(Bytes::from_static(b"k1")), value: value("before".into()), ..Record::default() },
        )
        .await
        .unwrap();
    let keyed: Vec<Record> = (0..200)
        .map(|i| Record {
            key: Some(Bytes::from(format!("k{}", i % 7))),
            value: value(format!("v{i}")),
            ..Record::default()
        })
        .collect();
    let delivery = producer.send_batch("batches", None, keyed.clone()).await.unwrap().await.unwrap();
    let before = tokio::time::timeout(Duration::from_secs(5), first).await.expect("sent ahead of the batch").unwrap();
    assert_eq!(delivery.len(), 200);
    assert!(delivery.parts.len() > 1, "seven keys over four partitions: {:?}", delivery.parts);
    let offsets = delivery.offsets();
    assert_eq!(offsets.len(), 200);
    let mut consumer =
        Consumer::new(client.clone(), ConsumerConfig { offset_reset: OffsetReset::Fail, ..ConsumerConfig::default() });
    consumer.assign_topic("batches", OffsetSpec::Earliest).await.unwrap();
    let mut stored = std::collections::HashMap::new();
    while stored.len() < 201 {
        for r in consumer.poll(Duration::from_secs(1)).await.unwrap() {
            stored.insert((r.partition, r.offset), r.record);
        }
    }
    assert_eq!(stored[&(before.partition, before.offset)].value, value("before".into()));
    for (i, (record, (partition, offset))) in keyed.iter().zip(&offsets).enumerate() {
        let key = record.key.as_ref().unwrap();
        assert_eq!(*partition, weir_sdk::partitioner::partition_for_key(key, 4), "record {i}");
        assert_eq!(stored[&(*partition, *offset)].value, record.value, "record {i} at {partition}/{offset}");
        if key.as_ref() == b"k1" {
            assert!(*offset > before.offset, "the batch follows what send queued before it");
        }
    }

    // Keyless records stay together in one partition, at consecutive offsets.
    let keyless: Vec<Record> = (0..50).map(|i| Record { value: value(format!("n{i}")), ..Record::default() }).collect();
    let delivery = producer.send_batch("batches", None, keyless).await.unwrap().await.unwrap();
    assert_eq!(delivery.parts.len(), 1);
    let part = delivery.parts[0];
    assert_eq!(part.records, 50);
    assert_eq!(delivery.offsets(), (0..50).map(|i| (part.partition, part.base_offset + i)).collect::<Vec<_>>());

    // A named partition out of range, or no records, is refused before anything is sent.
    let err = producer.send_batch("batches", Some(9), vec![Record::default()]).await.unwrap().await.unwrap_err();
    assert!(err.to_string().contains("partition 9 is out of range"), "{err}");
    let err = producer.send_batch("batches", Some(0), Vec::new()).await.err().expect("empty batch refused");
    assert!(err.to_string().contains("at least one record"), "{err}");
}

/// The producer sends the batches of many partitions that are ready together in one request.
/// Each partition's answer reaches its own records: the ones stored get their offsets, in
/// order per partition, and a partition the broker refuses (a batch over the topic's
/// `max.message.bytes`) fails alone, naming the limit, while the others in its request land.
#[tokio::test]
async fn given_many_partitions_ready_at_once_then_each_partitions_answer_reaches_its_records() {
    const PARTITIONS: u32 = 64;
    const PER_PARTITION: usize = 30;
    const REFUSED: u32 = 7;
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    let config = TopicConfig { max_message_bytes: 8 * 1024, ..TopicConfig::default() };
    admin.create_topic("spread", PARTITIONS, config).await.unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig { batch_bytes: 2048, linger: Duration::from_millis(20), ..ProducerConfig::default() },
    );
    let mut deliveries = Vec::new();
    for i in 0..PER_PARTITION {
        for partition in 0..PARTITIONS {
            let value = if partition == REFUSED && i == PER_PARTITION / 2 {
                Bytes::from(vec![b'x'; 16 * 1024])
            } else {
                Bytes::from(format!("{partition}/{i}/{}", "v".repeat(200)))
            };
            let record = Record { value: Some(value), ..Record::default() };
            deliveries.push((partition, i, producer.send("spread", Some(partition), record).await.unwrap()));
        }
    }
    let mut told = std::collections::HashMap::new();
    let (mut refused, mut limit_named) = (0, false);
    for (partition, i, delivery) in deliveries {
        match delivery.await {
            Ok(d) => {
                assert_eq!(d.partition, partition);
                told.insert((partition, d.offset), i);
            }
            Err(e) => {
                // The idempotent producer also fails the partition's batches numbered after
                // the refused one: a gap in its sequence that the broker would never fill.
                assert_eq!(partition, REFUSED, "only the oversized batch's partition fails: {e}");
                let code = e.code();
                let e = e.to_string();
                assert!(matches!(code, Some(ErrorCode::MessageTooLarge | ErrorCode::OutOfOrderSequence)), "{e}");
                limit_named |= code == Some(ErrorCode::MessageTooLarge) && e.contains("max.message.bytes = 8192");
                refused += 1;
            }
        }
    }
    assert!(limit_named, "the 16 KiB record's batch is over the 8 KiB limit");
    assert_eq!(told.len() + refused, PARTITIONS as usize * PER_PARTITION);

    let mut consumer =
        Consumer::new(client.clone(), ConsumerConfig { offset_reset: OffsetReset::Fail, ..ConsumerConfig::default() });
    consumer.assign_topic("spread", OffsetSpec::Earliest).await.unwrap();
    let mut stored: std::collections::HashMap<u32, Vec<(i64, String)>> = std::collections::HashMap::new();
    let mut count = 0;
    while count < told.len() {
        for r in consumer.poll(Duration::from_secs(1)).await.unwrap() {
            let value = String::from_utf8(r.record.value.unwrap().to_vec()).unwrap();
            stored.entry(r.partition).or_default().push((r.offset, value));
            count += 1;
        }
    }
    assert_eq!(count, told.len());
    for (partition, records) in &stored {
        let mut previous = -1;
        for (offset, value) in records {
            let i = told[&(*partition, *offset)];
            assert_eq!(value.split('/').take(2).collect::<Vec<_>>(), [partition.to_string(), i.to_string()]);
            assert!(i as i64 > previous, "partition {partition} keeps the order records were sent in");
            previous = i as i64;
        }
    }
}

/// A producer whose batches may be as large as the topic's `max.message.bytes` never sends one
/// larger: a record that would take the open batch past `batch_bytes` starts the next batch.
#[tokio::test]
async fn given_batch_bytes_at_the_topics_limit_then_no_batch_is_refused_as_too_large() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let config = TopicConfig { max_message_bytes: 8 * 1024, ..TopicConfig::default() };
    Admin::new(client.clone()).create_topic("filled", 1, config).await.unwrap();
    let batching =
        ProducerConfig { batch_bytes: 8 * 1024, linger: Duration::from_millis(50), ..ProducerConfig::default() };
    let producer = Producer::new(client, batching);
    let mut deliveries = Vec::new();
    for i in 0..60u8 {
        // Two such records fill most of a batch; a third would take it past 8 KiB.
        let record = Record { value: Some(Bytes::from(vec![b'a' + i % 26; 3000])), ..Record::default() };
        deliveries.push(producer.send("filled", Some(0), record).await.unwrap());
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await.expect("a batch within batch_bytes is within the topic's limit").offset);
    }
    assert_eq!(offsets, (0..60).collect::<Vec<i64>>());
}

#[tokio::test]
async fn given_the_cli_then_topics_produce_and_consume_script_like_kcat() {
    let broker = BrokerProcess::start(&[]);
    let (ok, out, err) =
        broker.cli(&["topic", "create", "cli", "--partitions", "2", "--config", "retention.ms=3600000"], None);
    assert!(ok, "{err}");
    assert!(out.contains("created topic cli with 2 partitions"), "{out}");

    let input: String = (0..100).map(|i| format!("k{i}|value {i}\n")).collect();
    let (ok, _, err) = broker.cli(&["produce", "cli", "--key-separator", "|", "--header", "origin=test"], Some(&input));
    assert!(ok, "{err}");

    let (ok, out, err) = broker.cli(&["consume", "cli", "--end", "--format", "key-value"], None);
    assert!(ok, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut expected: Vec<String> = (0..100).map(|i| format!("k{i}\tvalue {i}")).collect();
    expected.sort();
    assert_eq!(lines, expected);

    let (ok, out, _) = broker.cli(&["consume", "cli", "--partition", "0", "--count", "1", "--format", "json"], None);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON record");
    assert_eq!(json["headers"]["origin"], "test");
    assert_eq!(json["offset"], 0);

    let (ok, out, _) = broker.cli(&["topic", "describe", "cli"], None);
    assert!(ok);
    assert!(out.contains("retention.ms=3600000"), "{out}");

    let (ok, _, err) = broker.cli(&["topic", "create", "bad/name"], None);
    assert!(!ok, "invalid names fail the command");
    assert!(err.contains("InvalidTopicName") && err.lines().count() == 1, "one clear line: {err}");
    let (ok, _, err) = broker.cli(&["produce", "missing"], Some("x\n"));
    assert!(!ok);
    assert!(err.contains("unknown topic \"missing\""), "{err}");

    let (ok, _, _) = broker.cli(&["topic", "delete", "cli"], None);
    assert!(ok);
    let (ok, out, _) = broker.cli(&["topic", "list"], None);
    assert!(ok);
    assert!(out.trim().is_empty(), "{out}");
}

#[tokio::test]
async fn given_binary_input_then_the_cli_produces_and_consumes_any_bytes() {
    let broker = BrokerProcess::start(&[]);
    let (ok, _, err) = broker.cli(&["topic", "create", "bytes", "--partitions", "1"], None);
    assert!(ok, "{err}");
    // Raw lines may hold any byte but the line break: invalid UTF-8, NUL, 0xff.
    let raw: &[u8] = b"k\xff|\x00\xfe\xffvalue\nplain|text\n";
    let (ok, _, err) = broker.cli_bytes(&["produce", "bytes", "--key-separator", "|"], raw);
    assert!(ok, "raw bytes are produced as they are: {err}");
    // Hex and base64 carry line breaks too.
    let (ok, _, err) = broker.cli_bytes(&["produce", "bytes", "--encoding", "hex"], b"0a0d00ff\n");
    assert!(ok, "{err}");
    let (ok, _, err) = broker.cli_bytes(&["produce", "bytes", "--encoding", "base64"], b"CgAK\n");
    assert!(ok, "{err}");

    let (ok, out, err) =
        broker.cli_bytes(&["consume", "bytes", "--end", "--format", "key-value", "--encoding", "hex"], b"");
    assert!(ok, "{err}");
    let lines: Vec<&str> = std::str::from_utf8(&out).expect("hex is text").lines().collect();
    assert_eq!(lines, ["6bff\t00feff76616c7565", "706c61696e\t74657874", "\t0a0d00ff", "\t0a000a"]);
    let (ok, out, _) = broker.cli_bytes(&["consume", "bytes", "--end", "--count", "1"], b"");
    assert!(ok);
    assert_eq!(out, b"\x00\xfe\xffvalue\n", "raw values are printed byte for byte");
    let (ok, out, _) =
        broker.cli_bytes(&["consume", "bytes", "--end", "--format", "json", "--encoding", "base64"], b"");
    assert!(ok);
    let first: serde_json::Value = serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["value"], "AP7/dmFsdWU=");

    let (ok, _, err) = broker.cli_bytes(&["produce", "bytes", "--encoding", "hex"], b"abc\n");
    assert!(!ok, "odd hex is refused");
    assert!(err.contains("line 1: the value is not hex"), "{err}");
}

#[tokio::test]
async fn given_the_group_cli_then_groups_list_describe_reset_like_kafka_consumer_groups_and_delete() {
    let broker = BrokerProcess::start(&[]);
    let admin = Admin::new(broker.client().await);
    admin.create_topic("tasks", 2, TopicConfig::default()).await.unwrap();
    let lines: Vec<String> = (0..30).map(|i| format!("task {i}")).collect();
    let (ok, _, err) = broker.cli(&["produce", "tasks", "--broker-partitions"], Some(&lines.join("\n")));
    assert!(ok, "{err}");
    let mut member = weir_sdk::GroupConsumer::new(broker.client().await, weir_sdk::GroupConsumerConfig::new("crew"));
    member.subscribe(&["tasks"]).await.unwrap();
    let mut read = 0;
    while read < 30 {
        read += member.poll(Duration::from_secs(5)).await.unwrap().len();
    }
    member.commit().await.unwrap();

    let (ok, out, err) = broker.cli(&["group", "list"], None);
    assert!(ok, "{err}");
    let row = out.lines().find(|l| l.starts_with("crew ")).unwrap_or_else(|| panic!("no crew in {out}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["crew", "Stable", "1", "0"]);
    let (ok, out, err) = broker.cli(&["group", "describe", "crew"], None);
    assert!(ok, "{err}");
    assert!(out.starts_with("group crew is Stable (1 members, protocol range"), "{out}");
    let rows: Vec<Vec<&str>> = out.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for row in &rows {
        assert_eq!(row[0], "tasks");
        assert_eq!(row[2], row[3], "committed at the end: {out}");
        assert_eq!(row[4], "0");
        assert!(row[5].starts_with("weir-rust-"), "the owning member: {out}");
    }

    // Refused while the group has a member, naming why.
    let (ok, _, err) =
        broker.cli(&["group", "reset-offsets", "crew", "--topic", "tasks", "--to-earliest", "--execute"], None);
    assert!(!ok && err.contains("active members"), "{err}");
    let (ok, _, err) = broker.cli(&["group", "delete", "crew"], None);
    assert!(!ok && err.contains("members"), "{err}");
    // Neither --dry-run nor --execute: refused by the command itself.
    let (ok, _, err) = broker.cli(&["group", "reset-offsets", "crew", "--topic", "tasks", "--to-earliest"], None);
    assert!(!ok && err.contains("--dry-run"), "{err}");
    member.close().await.unwrap();

    let (ok, out, err) =
        broker.cli(&["group", "reset-offsets", "crew", "--topic", "tasks", "--to-earliest", "--dry-run"], None);
    assert!(ok, "{err}");
    assert!(out.contains("dry run: nothing changed"), "{out}");
    let news: Vec<&str> =
        out.lines().skip(1).filter(|l| l.starts_with("tasks")).map(|l| l.split_whitespace().last().unwrap()).collect();
    assert_eq!(news, ["0", "0"]);
    assert_eq!(admin.describe_group("crew").await.unwrap().total_lag, 0, "a dry run changes nothing");

    let (ok, out, err) =
        broker.cli(&["group", "reset-offsets", "crew", "--topic", "tasks", "--offsets", "0:1,1:2", "--execute"], None);
    assert!(ok, "{err}");
    assert!(!out.contains("dry run"), "{out}");
    let described = admin.describe_group("crew").await.unwrap();
    let committed: Vec<(u32, i64)> = described.offsets.iter().map(|o| (o.partition, o.committed)).collect();
    assert_eq!(committed, [(0, 1), (1, 2)]);
    assert_eq!(described.total_lag, 27);
    let (ok, _, err) =
        broker.cli(&["group", "reset-offsets", "crew", "--topic", "tasks", "--to-offset", "100000", "--execute"], None);
    assert!(!ok && err.contains("outside its records"), "{err}");

    let (ok, out, err) = broker.cli(&["group", "delete", "crew"], None);
    assert!(ok && out.contains("deleted group crew"), "{out}{err}");
    let (ok, _, err) = broker.cli(&["group", "describe", "crew"], None);
    assert!(!ok && err.contains("no consumer group"), "{err}");
}
