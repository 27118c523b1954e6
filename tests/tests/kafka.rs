//! Real Kafka clients against the Kafka listener: kcat (librdkafka), confluent-kafka and
//! kafka-python, installed by the README's test command.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{python_script, run_with_deadline, BrokerProcess};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use weir_sdk::wire::OffsetSpec;
use weir_sdk::{Admin, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, Record, TopicConfig};

fn kcat(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new("kcat");
    command.args(args);
    match stdin {
        None => run_with_deadline(&mut command, Duration::from_secs(120)),
        Some(input) => {
            let path =
                std::env::temp_dir().join(format!("weir-kcat-input-{}-{}", std::process::id(), rand::random::<u32>()));
            std::fs::write(&path, input).expect("write kcat input");
            let path_text = path.to_str().expect("utf-8 path").to_owned();
            command.args(["-l", &path_text]);
            let outcome = run_with_deadline(&mut command, Duration::from_secs(120));
            let _ = std::fs::remove_file(&path);
            outcome
        }
    }
}

#[tokio::test]
async fn given_kcat_when_producing_100k_keyed_records_then_it_consumes_them_back_identical() {
    let broker = BrokerProcess::start(&[]);
    Admin::new(broker.client().await).create_topic("kcat", 4, TopicConfig::default()).await.unwrap();
    let bootstrap = broker.kafka_bootstrap();
    let lines: Vec<String> = (0..100_000).map(|i| format!("key-{i}|value-{i}-{}", "x".repeat(i % 50))).collect();
    let input = lines.join("\n") + "\n";
    let (ok, _, err) = kcat(&["-P", "-b", &bootstrap, "-t", "kcat", "-K", "|"], Some(&input));
    assert!(ok, "kcat produce failed: {err}");
    let (ok, out, err) = kcat(&["-C", "-b", &bootstrap, "-t", "kcat", "-e", "-q", "-f", "%k|%s\n"], None);
    assert!(ok, "kcat consume failed: {err}");
    let mut got: Vec<&str> = out.lines().collect();
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got.len(), 100_000, "kcat read back every record");
    assert!(got == want, "records differ from what was produced");
}

#[tokio::test]
async fn given_records_from_either_protocol_then_the_other_reads_them_identical() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    Admin::new(client.clone()).create_topic("cross", 1, TopicConfig::default()).await.unwrap();
    let bootstrap = broker.kafka_bootstrap();

    // QUIC -> kcat.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..100 {
        let record = Record {
            key: Some(Bytes::from(format!("q{i}"))),
            value: Some(Bytes::from(format!("from quic {i}"))),
            headers: vec![("origin".into(), Some(Bytes::from_static(b"quic")))],
            timestamp: 0,
        };
        producer.send("cross", None, record).await.unwrap();
    }
    producer.flush().await.unwrap();
    let (ok, out, err) = kcat(&["-C", "-b", &bootstrap, "-t", "cross", "-e", "-q", "-f", "%k|%s|%h\n"], None);
    assert!(ok, "{err}");
    let expected: Vec<String> = (0..100).map(|i| format!("q{i}|from quic {i}|origin=quic")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);

    // kcat -> QUIC.
    let input: String = (0..100).map(|i| format!("k{i}|from kcat {i}\n")).collect();
    let (ok, _, err) = kcat(&["-P", "-b", &bootstrap, "-t", "cross", "-K", "|", "-H", "origin=kcat"], Some(&input));
    assert!(ok, "{err}");
    let mut consumer =
        Consumer::new(client, ConsumerConfig { offset_reset: OffsetReset::Fail, ..ConsumerConfig::default() });
    consumer.seek("cross", 0, 100);
    let mut records = Vec::new();
    while records.len() < 100 {
        let polled = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert!(!polled.is_empty(), "the records kcat produced arrive");
        records.extend(polled);
    }
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.record.key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(r.record.value.as_deref(), Some(format!("from kcat {i}").as_bytes()));
        assert_eq!(r.record.headers, vec![("origin".to_owned(), Some(Bytes::from_static(b"kcat")))]);
    }
}

#[tokio::test]
async fn given_confluent_kafka_group_when_a_member_leaves_and_the_broker_restarts_then_every_record_is_processed_and_offsets_resume(
) {
    let mut broker = BrokerProcess::start(&[]);
    Admin::new(broker.client().await).create_topic("orders", 12, TopicConfig::default()).await.unwrap();
    let bootstrap = broker.kafka_bootstrap();
    let count = "200000";
    let (ok, out, err) = run_with_deadline(
        python_script("confluent_groups.py").args(["produce", &bootstrap, "orders", count]),
        Duration::from_secs(300),
    );
    eprintln!("{out}");
    assert!(ok, "idempotent produce failed: {out}{err}");
    let (ok, out, err) = run_with_deadline(
        python_script("confluent_groups.py").args(["consume", &bootstrap, "orders", "billing", count]),
        Duration::from_secs(300),
    );
    eprintln!("{out}");
    assert!(ok, "group consumption failed: {out}{err}");

    broker.kill9();
    broker.restart();
    let (ok, out, err) = run_with_deadline(
        python_script("confluent_groups.py").args(["resume", &bootstrap, "orders", "billing", count]),
        Duration::from_secs(120),
    );
    eprintln!("{out}");
    assert!(ok, "committed offsets did not resume after restart: {out}{err}");
}

#[tokio::test]
async fn given_kafka_python_then_admin_and_timestamp_seek_work() {
    let broker = BrokerProcess::start(&[]);
    let (ok, out, err) = run_with_deadline(
        python_script("kafka_python_admin.py").arg(broker.kafka_bootstrap()),
        Duration::from_secs(120),
    );
    eprintln!("{out}");
    assert!(ok, "kafka-python: {out}{err}");
    // What kafka-python produced is readable over QUIC too.
    let admin = Admin::new(broker.client().await);
    let end = admin.list_offsets("kp-times", vec![0], OffsetSpec::Latest).await.unwrap()[0].offset;
    assert_eq!(end, 20);
}

// ---- bad input on the Kafka listener -------------------------------------------------------

fn send_request(stream: &mut TcpStream, api_key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("weir-test")))
        .encode(&mut buf, api_key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    send_raw(stream, &buf);
}

fn send_raw(stream: &mut TcpStream, body: &[u8]) {
    let mut framed = BytesMut::new();
    framed.put_i32(body.len() as i32);
    framed.extend_from_slice(body);
    stream.write_all(&framed).unwrap();
}

fn read_response(stream: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

fn api_versions_ok(addr: &str) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send_request(&mut stream, ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
    let Some(mut body) = read_response(&mut stream) else { return false };
    let _header = ResponseHeader::decode(&mut body, 0).unwrap();
    ApiVersionsResponse::decode(&mut body, 3).map(|r| r.error_code == 0 && !r.api_keys.is_empty()).unwrap_or(false)
}

#[tokio::test]
async fn given_malformed_kafka_requests_then_clear_errors_and_the_broker_keeps_serving() {
    let broker = BrokerProcess::start(&[]);
    Admin::new(broker.client().await).create_topic("bad", 1, TopicConfig::default()).await.unwrap();
    let addr = broker.kafka_bootstrap();

    // An unknown API key: an UNSUPPORTED_VERSION answer, and the connection stays usable.
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = BytesMut::new();
    raw.put_i16(999);
    raw.put_i16(0);
    raw.put_i32(42);
    raw.put_i16(-1);
    send_raw(&mut stream, &raw);
    let mut body = read_response(&mut stream).expect("an answer, not a dropped connection");
    assert_eq!(i32::from_be_bytes(body[..4].try_into().unwrap()), 42, "correlation id echoed");
    let _ = bytes::Buf::get_i32(&mut body);
    let answer = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(answer.error_code, 35, "UNSUPPORTED_VERSION");
    // An unsupported version of a known API, on the same connection.
    let mut raw = BytesMut::new();
    raw.put_i16(ApiKey::Metadata as i16);
    raw.put_i16(99);
    raw.put_i32(43);
    raw.put_i16(-1);
    send_raw(&mut stream, &raw);
    let body = read_response(&mut stream).expect("answer");
    assert_eq!(i32::from_be_bytes(body[..4].try_into().unwrap()), 43);

    // A produce whose batch fails its CRC: CORRUPT_MESSAGE for that partition.
    let mut batch = weir_sdk::batch::encode_batch(
        &[Record { value: Some(Bytes::from_static(b"payload")), timestamp: 1, ..Record::default() }],
        weir_sdk::Compression::None,
    )
    .unwrap()
    .to_vec();
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    let produce = ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bad")))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))]),
    ]);
    send_request(&mut stream, ApiKey::Produce, 9, 44, &produce);
    let mut body = read_response(&mut stream).expect("produce answer");
    let _header = ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(9)).unwrap();
    let response = ProduceResponse::decode(&mut body, 9).unwrap();
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 2, "CORRUPT_MESSAGE");
    assert!(
        partition.error_message.as_ref().is_some_and(|m| m.as_str().contains("CRC-32C")),
        "{:?}",
        partition.error_message
    );

    // A size prefix over the limit: the connection is closed (the stream cannot be resynced).
    let mut huge = TcpStream::connect(&addr).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    huge.write_all(&i32::MAX.to_be_bytes()).unwrap();
    assert!(read_response(&mut huge).is_none(), "oversized request closes its connection");

    // Garbage after a valid header: that connection is closed, nothing else is affected.
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = BytesMut::new();
    raw.put_i16(ApiKey::Metadata as i16);
    raw.put_i16(9);
    raw.put_i32(7);
    raw.extend_from_slice(&[0xff; 40]);
    send_raw(&mut garbage, &raw);
    assert!(read_response(&mut garbage).is_none());

    // A request cut short: its size says 10 bytes (an ApiVersions v0 header), the client sends
    // 6 and ends its side. Nothing of it is decoded or answered; the connection closes.
    let mut cut = TcpStream::connect(&addr).unwrap();
    cut.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = BytesMut::new();
    raw.put_i32(10);
    raw.put_i16(ApiKey::ApiVersions as i16);
    raw.put_i16(0);
    raw.put_i16(0x002a);
    cut.write_all(&raw).unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_response(&mut cut).is_none(), "a request cut short is not answered");

    // Offset commits become controller log entries, so their size is bounded whatever the
    // request claims: 30,000 entries naming one partition store one offset (the last), and
    // 300 partitions with 4 KiB of metadata each (1.2 MiB together) are refused whole.
    Admin::new(broker.client().await).create_topic("wide", 300, TopicConfig::default()).await.unwrap();
    let commit = |topic: &'static str, partitions: Vec<(i32, i64, usize)>| {
        let request = OffsetCommitRequest::default()
            .with_group_id(StrBytes::from_static_str("hoarder").into())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(partition, offset, metadata)| {
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(partition)
                                .with_committed_offset(offset)
                                .with_committed_metadata(Some(StrBytes::from_string("m".repeat(metadata))))
                        })
                        .collect(),
                )]);
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        send_request(&mut stream, ApiKey::OffsetCommit, 2, 50, &request);
        let mut body = read_response(&mut stream).expect("an offset commit answer");
        let _header = ResponseHeader::decode(&mut body, 0).unwrap();
        let response = OffsetCommitResponse::decode(&mut body, 2).unwrap();
        response.topics[0].partitions.iter().map(|p| p.error_code).collect::<Vec<i16>>()
    };
    let committed = |topic: &'static str, partition: i32| {
        let request = OffsetFetchRequest::default()
            .with_group_id(StrBytes::from_static_str("hoarder").into())
            .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_indexes(vec![partition])]));
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        send_request(&mut stream, ApiKey::OffsetFetch, 1, 51, &request);
        let mut body = read_response(&mut stream).expect("an offset fetch answer");
        let _header = ResponseHeader::decode(&mut body, 0).unwrap();
        OffsetFetchResponse::decode(&mut body, 1).unwrap().topics[0].partitions[0].committed_offset
    };
    let repeated: Vec<(i32, i64, usize)> = (0..30_000).map(|i| (0, i64::from(i), 0)).collect();
    assert!(commit("bad", repeated).iter().all(|code| *code == 0), "one partition named 30,000 times is one offset");
    assert_eq!(committed("bad", 0), 29_999, "the last offset named for the partition is stored");
    let heavy: Vec<(i32, i64, usize)> = (0..300).map(|p| (p, 1, 4096)).collect();
    assert!(commit("wide", heavy).iter().all(|code| *code == 42), "1.2 MiB of metadata: INVALID_REQUEST");
    assert_eq!(committed("wide", 0), -1, "nothing of a refused commit is stored");

    assert!(api_versions_ok(&addr), "the broker still serves new connections");
    let admin = Admin::new(broker.client().await);
    let offsets = admin.list_offsets("bad", vec![0], OffsetSpec::Latest).await.unwrap();
    assert_eq!(offsets[0].offset, 0, "nothing of the corrupt batch was stored");
}

/// A batch of one record from an idempotent producer, CRC recomputed after setting its ids.
fn idempotent_batch(producer_id: i64, sequence: i32) -> Bytes {
    let record = Record { value: Some(Bytes::from(format!("seq {sequence}"))), timestamp: 1, ..Record::default() };
    let mut b = weir_sdk::batch::encode_batch(&[record], weir_sdk::Compression::None).unwrap().to_vec();
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn produce_one(
    stream: &mut TcpStream,
    correlation_id: i32,
    records: Bytes,
) -> produce_response::PartitionProduceResponse {
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("idem")))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))]),
    ]);
    send_request(stream, ApiKey::Produce, 9, correlation_id, &produce);
    let mut body = read_response(stream).expect("produce answer");
    let _header = ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(9)).unwrap();
    ProduceResponse::decode(&mut body, 9).unwrap().responses[0].partition_responses[0].clone()
}

#[tokio::test]
async fn given_an_idempotent_producer_then_retries_are_deduplicated_and_gaps_rejected_across_restart() {
    let mut broker = BrokerProcess::start(&[]);
    Admin::new(broker.client().await).create_topic("idem", 1, TopicConfig::default()).await.unwrap();
    let addr = broker.kafka_bootstrap();
    let connect = || {
        let stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    };
    let mut stream = connect();
    let pid = init_producer_id(&mut stream, 1);
    assert!(pid >= 0);

    assert_eq!(produce_one(&mut stream, 2, idempotent_batch(pid, 0)).base_offset, 0);
    assert_eq!(produce_one(&mut stream, 3, idempotent_batch(pid, 1)).base_offset, 1);
    let retry = produce_one(&mut stream, 4, idempotent_batch(pid, 1));
    assert_eq!((retry.error_code, retry.base_offset), (0, 1), "a retried batch gets its original offset");
    let gap = produce_one(&mut stream, 5, idempotent_batch(pid, 5));
    assert_eq!(gap.error_code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");

    broker.kill9();
    broker.restart();
    let mut stream = connect();
    let retry = produce_one(&mut stream, 6, idempotent_batch(pid, 1));
    assert_eq!((retry.error_code, retry.base_offset), (0, 1), "sequence state survives a restart");
    assert_eq!(produce_one(&mut stream, 7, idempotent_batch(pid, 2)).base_offset, 2);
    let admin = Admin::new(broker.client().await);
    assert_eq!(
        admin.list_offsets("idem", vec![0], OffsetSpec::Latest).await.unwrap()[0].offset,
        3,
        "no duplicate was stored"
    );

    // A second InitProducerId after restart hands out a new id.
    assert!(init_producer_id(&mut stream, 8) > pid);
}

fn init_producer_id(stream: &mut TcpStream, correlation_id: i32) -> i64 {
    let request = InitProducerIdRequest::default().with_transaction_timeout_ms(60_000);
    send_request(stream, ApiKey::InitProducerId, 4, correlation_id, &request);
    let mut body = read_response(stream).unwrap();
    let _header = ResponseHeader::decode(&mut body, ApiKey::InitProducerId.response_header_version(4)).unwrap();
    let init = InitProducerIdResponse::decode(&mut body, 4).unwrap();
    assert_eq!(init.error_code, 0);
    init.producer_id.0
}

#[tokio::test]
async fn given_a_rust_group_consumer_and_a_kafka_consumer_in_one_group_then_they_split_the_partitions() {
    use weir_sdk::{GroupConsumer, GroupConsumerConfig};
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    Admin::new(client.clone()).create_topic("shared", 4, TopicConfig::default()).await.unwrap();

    // The Rust member joins first, so it leads and computes the range assignment for both.
    let mut rust = GroupConsumer::new(client.clone(), GroupConsumerConfig::new("mixed"));
    rust.subscribe(&["shared"]).await.unwrap();
    assert_eq!(rust.assignment().len(), 4, "alone, it owns every partition");

    let mut python = python_script("confluent_member.py");
    python.args([broker.kafka_bootstrap().as_str(), "shared", "mixed", "2000"]);
    let python = std::thread::spawn(move || run_with_deadline(&mut python, Duration::from_secs(150)));

    // Keep polling (which rejoins) until the Kafka consumer is in and the partitions are split.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rust.assignment().len() != 2 {
        assert!(std::time::Instant::now() < deadline, "the group did not rebalance to two members");
        rust.poll(Duration::from_millis(200)).await.unwrap();
    }
    let mine: Vec<u32> = rust.assignment().iter().map(|(_, p)| *p).collect();

    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for partition in 0..4u32 {
        for i in 0..1000 {
            producer
                .send(
                    "shared",
                    Some(partition),
                    Record { value: Some(Bytes::from(format!("{partition}-{i}"))), ..Record::default() },
                )
                .await
                .unwrap();
        }
    }
    producer.flush().await.unwrap();

    let mut read = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read.len() < 2000 {
        assert!(std::time::Instant::now() < deadline, "the Rust member read {} of its 2000 records", read.len());
        read.extend(rust.poll(Duration::from_millis(500)).await.unwrap().into_iter().map(|r| (r.partition, r.offset)));
    }
    rust.commit().await.unwrap();
    let (ok, out, err) = python.join().unwrap();
    assert!(ok, "the Kafka member failed: {out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let theirs: Vec<u32> = report["assigned"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u32).collect();
    let their_reads = report["read"].as_array().unwrap().len();
    eprintln!(
        "rust member partitions {mine:?} read {}, kafka member partitions {theirs:?} read {their_reads}",
        read.len()
    );

    let mut all: Vec<u32> = mine.iter().chain(&theirs).copied().collect();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3], "the two members split the partitions without overlap");
    assert_eq!(read.len(), 2000);
    assert!(read.iter().all(|(p, _)| mine.contains(p)));
    assert_eq!(their_reads, 2000);
    rust.close().await.unwrap();
}

/// Reads one answer and its header; returns the body after the header.
fn read_answer(stream: &mut TcpStream, api_key: ApiKey, version: i16) -> (i32, Bytes) {
    let mut body = read_response(stream).expect("an answer");
    let header = ResponseHeader::decode(&mut body, api_key.response_header_version(version)).unwrap();
    (header.correlation_id, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_pipelined_requests_on_one_connection_then_they_take_effect_in_order() {
    let broker = BrokerProcess::start(&[]);
    Admin::new(broker.client().await).create_topic("ordered", 1, TopicConfig::default()).await.unwrap();
    let addr = broker.kafka_bootstrap();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // 1,000 offset commits sent back to back, as an async-committing consumer does; none is
        // read until all are sent. The last one sent must be the one that stays.
        const COMMITS: i32 = 1000;
        let writer = {
            let mut stream = stream.try_clone().unwrap();
            std::thread::spawn(move || {
                for n in 1..=COMMITS {
                    let commit = OffsetCommitRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("pipelined")))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str("ordered")))
                            .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(i64::from(n))])]);
                    send_request(&mut stream, ApiKey::OffsetCommit, 8, n, &commit);
                }
            })
        };
        for n in 1..=COMMITS {
            let (correlation_id, mut body) = read_answer(&mut stream, ApiKey::OffsetCommit, 8);
            assert_eq!(correlation_id, n, "answers in request order");
            let answer = OffsetCommitResponse::decode(&mut body, 8).unwrap();
            assert_eq!(answer.topics[0].partitions[0].error_code, 0);
        }
        writer.join().unwrap();
        let fetch = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("pipelined")))
            .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("ordered")))
                .with_partition_indexes(vec![0])]));
        send_request(&mut stream, ApiKey::OffsetFetch, 5, 0, &fetch);
        let (_, mut body) = read_answer(&mut stream, ApiKey::OffsetFetch, 5);
        let committed = OffsetFetchResponse::decode(&mut body, 5).unwrap().topics[0].partitions[0].committed_offset;
        assert_eq!(committed, i64::from(COMMITS), "the last commit sent is the one kept");

        // CreateTopics then Produce to the new topic, pipelined: the produce sees the topic.
        let create = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("made-then-used")))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ]);
        let record = Record { value: Some(Bytes::from_static(b"first")), ..Record::default() };
        let records = weir_sdk::batch::encode_batch(&[record], weir_sdk::Compression::None).unwrap();
        let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("made-then-used")))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_index(1)
                    .with_records(Some(records))]),
        ]);
        send_request(&mut stream, ApiKey::CreateTopics, 5, 1, &create);
        send_request(&mut stream, ApiKey::Produce, 9, 2, &produce);
        let (_, mut body) = read_answer(&mut stream, ApiKey::CreateTopics, 5);
        assert_eq!(CreateTopicsResponse::decode(&mut body, 5).unwrap().topics[0].error_code, 0);
        let (_, mut body) = read_answer(&mut stream, ApiKey::Produce, 9);
        let produced = ProduceResponse::decode(&mut body, 9).unwrap().responses[0].partition_responses[0].clone();
        assert_eq!((produced.error_code, produced.base_offset), (0, 0), "{produced:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_kafka_topic_configs_and_bad_create_topics_then_answers_are_kafkas() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.kafka_bootstrap();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut correlation = 0;
        let mut create =
            |name: &str, partitions: i32, replication: i16, configs: &[(&str, &str)], validate_only: bool| {
                correlation += 1;
                let topic = create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.into())))
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                create_topics_request::CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string((*k).into()))
                                    .with_value(Some(StrBytes::from_string((*v).into())))
                            })
                            .collect(),
                    );
                let request = CreateTopicsRequest::default()
                    .with_timeout_ms(10_000)
                    .with_validate_only(validate_only)
                    .with_topics(vec![topic]);
                send_request(&mut stream, ApiKey::CreateTopics, 5, correlation, &request);
                let (_, mut body) = read_answer(&mut stream, ApiKey::CreateTopics, 5);
                let topic = CreateTopicsResponse::decode(&mut body, 5).unwrap().topics.remove(0);
                (topic.error_code, topic.error_message.map(|m| m.to_string()).unwrap_or_default())
            };
        // Kafka's topic configs Weir does not act on are accepted (0092 sets message.format.version).
        let kafka_configs =
            [("message.format.version", "2.8"), ("cleanup.policy", "compact"), ("segment.bytes", "1048576")];
        assert_eq!(create("configured", 2, 1, &kafka_configs, false).0, 0);
        let (code, message) = create("configured", 2, 1, &[], false);
        assert_eq!(code, 36, "TOPIC_ALREADY_EXISTS: {message}");
        assert!(message.contains("already exists"), "{message}");
        let (code, message) = create("bad-config", 1, 1, &[("colour", "red")], false);
        assert_eq!(code, 40, "INVALID_CONFIG: {message}");
        let (code, message) = create("bad-value", 1, 1, &[("min.insync.replicas", "zero")], false);
        assert_eq!(code, 40, "INVALID_CONFIG: {message}");
        let (code, message) = create("no-partitions", 0, 1, &[], false);
        assert_eq!(code, 37, "INVALID_PARTITIONS: {message}");
        let (code, message) = create("no-replicas", 1, 0, &[], false);
        assert_eq!(code, 38, "INVALID_REPLICATION_FACTOR: {message}");
        let (code, message) = create("too-many-replicas", 1, 3, &[], false);
        assert_eq!(code, 38, "INVALID_REPLICATION_FACTOR: {message}");
        assert!(message.contains("larger than available brokers: 1"), "{message}");
        // Validate-only: the answer a create would get, and nothing created.
        assert_eq!(create("dry", 3, 1, &[], true).0, 0);
        assert_eq!(create("dry", 3, 1, &[], false).0, 0, "the validate-only request created nothing");

        let describe = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("configured")),
        ]);
        send_request(&mut stream, ApiKey::DescribeConfigs, 4, 99, &describe);
        let (_, mut body) = read_answer(&mut stream, ApiKey::DescribeConfigs, 4);
        let result = DescribeConfigsResponse::decode(&mut body, 4).unwrap().results.remove(0);
        assert_eq!(result.error_code, 0);
        let config = |name: &str| {
            let c = result.configs.iter().find(|c| c.name.as_str() == name).unwrap_or_else(|| panic!("{name} listed"));
            (c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(), c.config_source)
        };
        // Kafka's ConfigSource: DYNAMIC_TOPIC_CONFIG (1) for what the topic sets, DEFAULT_CONFIG (5).
        assert_eq!(config("message.format.version"), ("2.8".into(), 1));
        assert_eq!(config("cleanup.policy"), ("compact".into(), 1));
        assert_eq!(config("segment.bytes"), ("1048576".into(), 1));
        assert_eq!(config("min.insync.replicas"), ("1".into(), 5));
        assert_eq!(config("retention.ms"), ("604800000".into(), 5));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn given_confluent_kafka_delete_records_then_records_before_the_offset_are_gone() {
    let broker = BrokerProcess::start(&[]);
    let (ok, out, err) = run_with_deadline(
        python_script("confluent_delete_records.py").arg(broker.kafka_bootstrap()),
        Duration::from_secs(120),
    );
    eprintln!("{out}");
    assert!(ok, "confluent-kafka delete_records: {out}{err}");
    // The QUIC side sees the same log start.
    let admin = Admin::new(broker.client().await);
    assert_eq!(admin.list_offsets("purged", vec![0], OffsetSpec::Earliest).await.unwrap()[0].offset, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_batch_with_a_record_the_topic_refuses_then_produce_names_it_as_kip_467_does() {
    let broker = BrokerProcess::start(&[]);
    let (ok, _, err) = broker.cli(&["topic", "create", "checked", "--config", "value.schema.validation=true"], None);
    assert!(ok, "{err}");
    let (status, body) = common::http(
        &broker.registry_addr.to_string(),
        "POST",
        "/subjects/checked-value/versions",
        br#"{"schema": "\"string\""}"#,
    );
    assert_eq!(status, 200, "{body}");
    let addr = broker.kafka_bootstrap();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // Records 0 and 2 are the string "x" under schema id 1; record 1 does not carry the
        // schema registry wire format: the batch is refused, and the answer names record 1.
        let valid: &[u8] = &[0, 0, 0, 0, 1, 2, b'x'];
        let records: Vec<Record> = [valid, b"plain", valid]
            .iter()
            .map(|v| Record { value: Some(Bytes::copy_from_slice(v)), ..Record::default() })
            .collect();
        let batch = weir_sdk::batch::encode_batch(&records, weir_sdk::Compression::None).unwrap();
        let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("checked")))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))]),
        ]);
        send_request(&mut stream, ApiKey::Produce, 9, 1, &produce);
        let (_, mut body) = read_answer(&mut stream, ApiKey::Produce, 9);
        let answer = ProduceResponse::decode(&mut body, 9).unwrap().responses[0].partition_responses[0].clone();
        assert_eq!(answer.error_code, 87, "INVALID_RECORD: {answer:?}");
        assert_eq!(answer.base_offset, -1);
        assert_eq!(answer.record_errors.len(), 1, "{answer:?}");
        assert_eq!(answer.record_errors[0].batch_index, 1);
        let message = answer.record_errors[0].batch_index_error_message.as_ref().unwrap().to_string();
        assert!(message.contains("record 1") && message.contains("wire format"), "{message}");
    })
    .await
    .unwrap();
}
