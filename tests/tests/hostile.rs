//! Hostile input against a real broker (issue #10, started): each test sends exactly the
//! hostile input, asserts the clear error, that the broker lives with bounded memory (the peak
//! is printed), and that a well-behaved client beside it kept producing and fetching.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{kafka_call, try_kafka_call, BrokerProcess};
use weir_sdk::batch::{encode_batch, Compression, Record};
use weir_sdk::wire::{Acks, FrameKind, OffsetSpec, ProducePartition, ProduceRequest, ProduceResponse};
use weir_sdk::{Admin, Consumer, ConsumerConfig, ErrorCode, Producer, ProducerConfig, TopicConfig};

/// The bound on one produce or fetch of the well-behaved client while the attack runs.
const WELL_BEHAVED_BOUND: Duration = Duration::from_secs(5);

/// Produces and reads back one record at a time (topic `calm`) until the returned flag is set;
/// the task returns how many round trips it made and the slowest.
fn well_behaved(broker: &BrokerProcess) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(u64, Duration)>) {
    let config = broker.client_config();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let calm = tokio::spawn(async move {
        let stop = flag;
        let client = weir_sdk::Client::connect(config).await.expect("connect");
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        let mut consumer = Consumer::new(client, ConsumerConfig::default());
        consumer.assign("calm", vec![0], OffsetSpec::Earliest).await.expect("assign");
        let (mut trips, mut slowest) = (0u64, Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let record = Record { value: Some(Bytes::from(format!("calm-{trips}"))), ..Record::default() };
            producer.send("calm", Some(0), record).await.expect("queue").await.expect("produced");
            let mut got = Vec::new();
            while got.is_empty() {
                got = consumer.poll(Duration::from_millis(200)).await.expect("poll");
            }
            slowest = slowest.max(started.elapsed());
            trips += 1;
        }
        (trips, slowest)
    });
    (stop, calm)
}

/// Stops the well-behaved client, reports its round trips and the broker's peak RSS beside
/// `what` the attack did, and checks that the client made round trips within the bound and the
/// broker lives with bounded memory.
async fn assert_calm_beside(
    broker: &BrokerProcess,
    stop: &AtomicBool,
    calm: tokio::task::JoinHandle<(u64, Duration)>,
    what: &str,
) {
    stop.store(true, Ordering::Relaxed);
    let (trips, slowest) = calm.await.unwrap();
    let peak = broker.peak_rss_bytes().expect("the broker is alive");
    eprintln!("{what} / well-behaved round trips {trips}, slowest {slowest:?} / broker peak RSS {} MiB", peak >> 20);
    assert!(trips > 0, "the well-behaved client made no round trip: a vacuous run");
    assert!(slowest < WELL_BEHAVED_BOUND, "a well-behaved round trip took {slowest:?}");
    assert!(peak < 1 << 30, "the broker's peak RSS reached {} MiB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_zstd_decompression_bomb_when_produced_then_it_is_refused_unstored_and_others_keep_working() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    admin.create_topic("bombs", 1, TopicConfig::default()).await.unwrap();
    admin.create_topic("calm", 1, TopicConfig::default()).await.unwrap();

    // One record of 100 MiB of zeros, zstd: a few KiB on the wire, well under
    // max.message.bytes, past the broker's default batch_decompressed_bytes_max of 64 MiB.
    let record = Record { value: Some(Bytes::from(vec![0u8; 100 << 20])), ..Record::default() };
    let bomb = encode_batch(&[record], Compression::Zstd).unwrap();
    assert!(bomb.len() < 64 << 10, "the bomb is {} bytes on the wire", bomb.len());

    let (stop, calm) = well_behaved(&broker);
    let refused = Arc::new(AtomicU64::new(0));
    for _ in 0..5 {
        let request = ProduceRequest {
            topic: "bombs".into(),
            acks: Acks::All,
            timeout_ms: 30_000,
            partitions: vec![ProducePartition { partition: 0, bytes: u32::try_from(bomb.len()).unwrap() }],
        };
        let (response, _): (ProduceResponse, _) =
            client.call(FrameKind::Produce, &request, bomb.clone()).await.expect("an answer, not a dead broker");
        let error = response.partitions[0].error.clone().expect("the bomb is refused");
        assert_eq!(error.code, ErrorCode::CorruptBatch, "{error}");
        assert!(error.message.contains("batch_decompressed_bytes_max"), "names the limit: {error}");
        refused.fetch_add(1, Ordering::Relaxed);
    }
    let end = admin.list_offsets("bombs", vec![0], OffsetSpec::Latest).await.unwrap()[0].offset;
    assert_eq!(end, 0, "nothing of a refused bomb is stored");
    let what = format!("zstd bombs refused {}", refused.load(Ordering::Relaxed));
    assert_calm_beside(&broker, &stop, calm, &what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_avro_record_claiming_2_pow_29_items_when_validated_then_it_is_refused_and_the_broker_lives() {
    let broker = BrokerProcess::start(&[]);
    let (ok, _, err) = broker
        .cli(&["topic", "create", "avro-bomb", "--partitions", "1", "--config", "value.schema.validation=true"], None);
    assert!(ok, "{err}");
    let client = broker.client().await;
    Admin::new(client.clone()).create_topic("calm", 1, TopicConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("nulls.avsc");
    std::fs::write(&schema_file, r#"{"type":"array","items":"null"}"#).unwrap();
    let mut register = std::process::Command::new(common::weir_bin());
    register
        .args(["schema", "register", "avro-bomb-value", "--file", schema_file.to_str().unwrap(), "--registry"])
        .arg(broker.registry_url());
    let (ok, out, err) = common::run_with_deadline(&mut register, Duration::from_secs(30));
    assert!(ok, "{out} {err}");

    // Confluent framing (magic 0, schema id 1: the first schema of a fresh registry), then one
    // array block claiming 2^29 items (zigzag varint) of null, which take no bytes, and the end.
    let mut value = vec![0u8, 0, 0, 0, 1];
    value.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04, 0x00]);
    let (stop, calm) = well_behaved(&broker);
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for _ in 0..3 {
        let record = Record { value: Some(Bytes::from(value.clone())), ..Record::default() };
        let outcome = producer.send("avro-bomb", Some(0), record).await.expect("queue").await;
        let error = match outcome {
            Err(weir_sdk::ClientError::Broker(e)) => e,
            other => panic!("expected the record refused, got {other:?}"),
        };
        assert_eq!(error.code, ErrorCode::InvalidRecord, "{error}");
        assert!(error.message.contains("schema validation"), "{error}");
    }
    assert_calm_beside(&broker, &stop, calm, "avro bombs refused 3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_kafka_requests_repeating_one_entry_then_answers_stay_in_proportion_to_distinct_entries() {
    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    let broker = BrokerProcess::start(&[]);
    Admin::new(broker.client().await).create_topic("wide", 1000, TopicConfig::default()).await.unwrap();
    let mut stream = std::net::TcpStream::connect(broker.kafka_bootstrap()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut call =
        |api_key: ApiKey, version: i16, body: &dyn Fn(&mut BytesMut)| kafka_call(&mut stream, api_key, version, body);

    // Metadata naming one 1,000-partition topic 10,000 times: one topic in the answer.
    let topic =
        metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("wide"))));
    let request = MetadataRequest::default().with_topics(Some(vec![topic; 10_000]));
    let (sent, mut answer) = call(ApiKey::Metadata, 9, &|buf| request.encode(buf, 9).unwrap());
    let answer_bytes = answer.len();
    let response = MetadataResponse::decode(&mut answer, 9).unwrap();
    assert_eq!(response.topics.len(), 1, "each topic once");
    assert_eq!(response.topics[0].partitions.len(), 1000);
    eprintln!("metadata: request {sent} bytes, answer {answer_bytes} bytes");
    assert!(answer_bytes < 4 * sent, "the answer ({answer_bytes} bytes) is in proportion to the request ({sent})");

    // DescribeGroups repeating one group id: one group in the answer.
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_static_str("g")); 10_000]);
    let (_, mut answer) = call(ApiKey::DescribeGroups, 5, &|buf| request.encode(buf, 5).unwrap());
    assert_eq!(DescribeGroupsResponse::decode(&mut answer, 5).unwrap().groups.len(), 1, "each group once");

    // DescribeConfigs repeating one topic: one result, with its configs listed once.
    let resource = describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("wide"));
    let request = DescribeConfigsRequest::default().with_resources(vec![resource; 10_000]);
    let (_, mut answer) = call(ApiKey::DescribeConfigs, 4, &|buf| request.encode(buf, 4).unwrap());
    assert_eq!(DescribeConfigsResponse::decode(&mut answer, 4).unwrap().results.len(), 1, "each resource once");

    // Fetch repeating one partition that holds 64 KiB: the partition is read and answered once.
    let producer = Producer::new(broker.client().await, ProducerConfig::default());
    let record = Record { value: Some(Bytes::from(vec![b'x'; 64 << 10])), ..Record::default() };
    producer.send("wide", Some(0), record).await.unwrap().await.unwrap();
    let partition = fetch_request::FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20);
    let topic = fetch_request::FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("wide")))
        .with_partitions(vec![partition; 5_000]);
    let request = FetchRequest::default().with_max_bytes(1 << 30).with_max_wait_ms(0).with_topics(vec![topic]);
    let (_, mut answer) = call(ApiKey::Fetch, 12, &|buf| request.encode(buf, 12).unwrap());
    let answer_bytes = answer.len();
    let response = FetchResponse::decode(&mut answer, 12).unwrap();
    assert_eq!(response.responses[0].partitions.len(), 1, "each partition once");
    assert!(answer_bytes < 256 << 10, "one copy of the data, not 5,000: {answer_bytes} bytes");

    // ListOffsets by timestamp repeating one partition: searched once, the repeats refused.
    let partition = list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(0);
    let topic = list_offsets_request::ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("wide")))
        .with_partitions(vec![partition; 1_000]);
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![topic]);
    let (_, mut answer) = call(ApiKey::ListOffsets, 7, &|buf| request.encode(buf, 7).unwrap());
    let response = ListOffsetsResponse::decode(&mut answer, 7).unwrap();
    let partitions = &response.topics[0].partitions;
    assert_eq!((partitions[0].error_code, partitions[0].offset), (0, 0), "the first is answered");
    assert!(partitions[1..].iter().all(|p| p.error_code == 42), "repeats get INVALID_REQUEST");
    assert!(broker.peak_rss_bytes().expect("alive") < 1 << 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_batches_that_lie_about_their_records_or_their_time_then_they_are_refused() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    Admin::new(client.clone()).create_topic("lies", 1, TopicConfig::default()).await.unwrap();
    let produce = |batch: Bytes| {
        let client = client.clone();
        async move {
            let request = ProduceRequest {
                topic: "lies".into(),
                acks: Acks::All,
                timeout_ms: 30_000,
                partitions: vec![ProducePartition { partition: 0, bytes: u32::try_from(batch.len()).unwrap() }],
            };
            let (response, _): (ProduceResponse, _) = client.call(FrameKind::Produce, &request, batch).await.unwrap();
            response.partitions[0].error.clone()
        }
    };
    let now = weir_sdk::now_ms();
    let at = |timestamp: i64| Record { value: Some(Bytes::from_static(b"v")), timestamp, ..Record::default() };

    // Two records whose header claims a last offset delta of 99: it would take 100 offsets.
    let mut wide = encode_batch(&[at(now), at(now)], Compression::None).unwrap().to_vec();
    wide[23..27].copy_from_slice(&99i32.to_be_bytes());
    let crc = crc32c::crc32c(&wide[21..]);
    wide[17..21].copy_from_slice(&crc.to_be_bytes());
    let error = produce(Bytes::from(wide)).await.expect("refused");
    assert_eq!(error.code, ErrorCode::CorruptBatch, "{error}");
    assert!(error.message.contains("spans 100 offsets"), "{error}");

    // A year ahead of the broker's clock would hold off time retention of the partition.
    let error = produce(encode_batch(&[at(now + 365 * 24 * 3600 * 1000)], Compression::None).unwrap()).await;
    let error = error.expect("refused");
    assert_eq!(error.code, ErrorCode::InvalidTimestamp, "{error}");
    assert!(error.message.contains("message_timestamp_after_max_ms"), "{error}");
    // A minute ahead (clock skew) and long ago are fine.
    assert_eq!(produce(encode_batch(&[at(now + 60_000)], Compression::None).unwrap()).await, None);
    assert_eq!(produce(encode_batch(&[at(1)], Compression::None).unwrap()).await, None);

    // Intact header and CRC over record data that does not decode: refused at produce, over
    // QUIC and over Kafka, so no consumer ever meets it.
    let mut garbage = encode_batch(&[at(now)], Compression::None).unwrap().to_vec();
    garbage[61..].iter_mut().for_each(|b| *b = 0xff);
    let crc = crc32c::crc32c(&garbage[21..]);
    garbage[17..21].copy_from_slice(&crc.to_be_bytes());
    let error = produce(Bytes::from(garbage.clone())).await.expect("refused");
    assert_eq!(error.code, ErrorCode::CorruptBatch, "{error}");
    let bootstrap = broker.kafka_bootstrap();
    let kafka_code = tokio::task::spawn_blocking(move || {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
        use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
        let mut stream = std::net::TcpStream::connect(bootstrap).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(TopicName(StrBytes::from_static_str("lies"))).with_partition_data(
                vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(garbage)))],
            ),
        ]);
        let (_, mut answer) = kafka_call(&mut stream, ApiKey::Produce, 3, &|buf| request.encode(buf, 3).unwrap());
        ProduceResponse::decode(&mut answer, 3).unwrap().responses[0].partition_responses[0].error_code
    })
    .await
    .unwrap();
    assert_eq!(kafka_code, 2, "CORRUPT_MESSAGE");
    let end = Admin::new(client).list_offsets("lies", vec![0], OffsetSpec::Latest).await.unwrap()[0].offset;
    assert_eq!(end, 2, "only the two honest batches are stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_group_joins_with_outsized_metadata_or_timeouts_then_they_are_refused() {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    let broker = BrokerProcess::start(&[]);
    let mut stream = std::net::TcpStream::connect(broker.kafka_bootstrap()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let join = |metadata: usize, rebalance_timeout_ms: i32| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(rebalance_timeout_ms)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from(vec![0u8; metadata]))])
    };
    for (request, why) in
        [(join(2 << 20, 10_000), "2 MiB of member metadata"), (join(16, i32::MAX), "a rebalance timeout of 24 days")]
    {
        let (_, mut answer) = kafka_call(&mut stream, ApiKey::JoinGroup, 5, &|buf| request.encode(buf, 5).unwrap());
        let response = JoinGroupResponse::decode(&mut answer, 5).unwrap();
        assert_eq!(response.error_code, 42, "{why} is INVALID_REQUEST");
    }
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_static_str("g"))]);
    let (_, mut answer) = kafka_call(&mut stream, ApiKey::DescribeGroups, 5, &|buf| request.encode(buf, 5).unwrap());
    let described = DescribeGroupsResponse::decode(&mut answer, 5).unwrap();
    assert_eq!(described.groups[0].group_state.as_str(), "Dead", "a refused join leaves no group behind");
    assert!(broker.peak_rss_bytes().expect("alive") < 1 << 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_idle_or_trickling_kafka_connections_then_the_broker_closes_them() {
    use std::io::{Read, Write};
    let broker = BrokerProcess::start_with_config("connection_idle_ms_max = 500\n");
    let closed_within = |stream: &mut std::net::TcpStream| {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let read = stream.read(&mut byte);
        assert!(matches!(read, Ok(0)) || read.is_err(), "the broker closes the connection: {read:?}");
        started.elapsed()
    };
    // Connected and silent.
    let mut idle = std::net::TcpStream::connect(broker.kafka_bootstrap()).unwrap();
    let waited = closed_within(&mut idle);
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");
    // A request that announces 100 bytes and never sends them.
    let mut trickle = std::net::TcpStream::connect(broker.kafka_bootstrap()).unwrap();
    trickle.write_all(&100i32.to_be_bytes()).unwrap();
    trickle.write_all(&[0, 18, 0, 3]).unwrap();
    let waited = closed_within(&mut trickle);
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");
    eprintln!("idle and trickling connections closed; the last after {waited:?}");
    // A client that talks is served as before.
    let mut busy = std::net::TcpStream::connect(broker.kafka_bootstrap()).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = kafka_protocol::messages::ApiVersionsRequest::default();
    let (_, mut answer) = kafka_call(&mut busy, kafka_protocol::messages::ApiKey::ApiVersions, 0, &|buf| {
        kafka_protocol::protocol::Encodable::encode(&request, buf, 0).unwrap()
    });
    let versions =
        <kafka_protocol::messages::ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut answer, 0)
            .unwrap();
    assert_eq!(versions.error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_batches_under_producer_ids_never_handed_out_then_they_are_refused_and_ids_go_on() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    admin.create_topic("pids", 1, TopicConfig::default()).await.unwrap();
    let record = [Record { value: Some(Bytes::from_static(b"v")), timestamp: weir_sdk::now_ms(), ..Record::default() }];
    let granted = admin.init_producer_id().await.unwrap().producer_id;
    // Next to i64::MAX (which, stored, would exhaust allocation), the id handed out next
    // (which, stored, would break the producer that gets it), and one past this broker's block
    // (which it may wait a moment for, as another broker's block, before refusing it).
    for planted in [i64::MAX - 5, granted + 1, 7, granted + 5_000] {
        let batch = weir_sdk::batch::encode_idempotent_batch(&record, Compression::None, planted, 0, 0).unwrap();
        let request = ProduceRequest {
            topic: "pids".into(),
            acks: Acks::All,
            timeout_ms: 30_000,
            partitions: vec![ProducePartition { partition: 0, bytes: u32::try_from(batch.len()).unwrap() }],
        };
        let (response, _): (ProduceResponse, _) = client.call(FrameKind::Produce, &request, batch).await.unwrap();
        let error = response.partitions[0].error.clone().expect("refused");
        assert_eq!(error.code, ErrorCode::UnknownProducerId, "producer id {planted}: {error}");
    }
    let batch = weir_sdk::batch::encode_idempotent_batch(&record, Compression::None, granted, 0, 0).unwrap();
    let request = ProduceRequest {
        topic: "pids".into(),
        acks: Acks::All,
        timeout_ms: 30_000,
        partitions: vec![ProducePartition { partition: 0, bytes: u32::try_from(batch.len()).unwrap() }],
    };
    let (response, _): (ProduceResponse, _) = client.call(FrameKind::Produce, &request, batch).await.unwrap();
    assert_eq!(response.partitions[0].error, None, "the granted id produces");
    assert_eq!(admin.init_producer_id().await.unwrap().producer_id, granted + 1, "ids go on");
}

/// Registers `schema` (with `references`, each `[name, subject]` at version 1) under `subject`
/// over the registry's REST API; returns (status, body).
fn register_schema(addr: &str, subject: &str, schema: &str, references: &[[&str; 2]]) -> (u16, serde_json::Value) {
    let references: Vec<_> = references
        .iter()
        .map(|[name, subject]| serde_json::json!({"name": name, "subject": subject, "version": 1}))
        .collect();
    let body = serde_json::json!({"schema": schema, "references": references}).to_string();
    let (status, text) = common::http(addr, "POST", &format!("/subjects/{subject}/versions"), body.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

fn record_schema(name: &str, fields: &[(&str, &str)]) -> String {
    let fields: Vec<_> = fields.iter().map(|(f, t)| serde_json::json!({"name": f, "type": t})).collect();
    serde_json::json!({"type": "record", "name": name, "fields": fields}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_schema_references_that_fan_out_or_repeat_then_they_resolve_once_or_are_refused() {
    let broker = BrokerProcess::start_with_config("schema_versions_per_subject_max = 3\n");
    let client = broker.client().await;
    Admin::new(client.clone()).create_topic("calm", 1, TopicConfig::default()).await.unwrap();
    let (ok, _, err) = broker
        .cli(&["topic", "create", "diamond", "--partitions", "1", "--config", "value.schema.validation=true"], None);
    assert!(ok, "{err}");
    let (stop, calm) = well_behaved(&broker);

    // 15 levels of diamonds: S_i has fields of types X_i and Y_i, each holding S_(i+1). Followed
    // path by path that is 2^15 resolutions under the metadata lock; schema by schema, 46.
    const LEVELS: usize = 15;
    let addr = broker.registry_addr.to_string();
    let top = tokio::task::spawn_blocking(move || {
        let bottom = format!("S{LEVELS}");
        let (status, body) =
            register_schema(&addr, &format!("s{LEVELS}"), &record_schema(&bottom, &[("n", "int")]), &[]);
        assert_eq!(status, 200, "{body}");
        let mut last = body;
        for i in (0..LEVELS).rev() {
            let below = format!("S{}", i + 1);
            let below_subject = format!("s{}", i + 1);
            for side in ["X", "Y"] {
                let name = format!("{side}{i}");
                let (status, body) =
                    register_schema(&addr, &name, &record_schema(&name, &[("v", &below)]), &[[&below, &below_subject]]);
                assert_eq!(status, 200, "{body}");
            }
            let (x, y) = (format!("X{i}"), format!("Y{i}"));
            let schema = record_schema(&format!("S{i}"), &[("x", &x), ("y", &y)]);
            let subject = if i == 0 { "diamond-value".to_owned() } else { format!("s{i}") };
            let (status, body) = register_schema(&addr, &subject, &schema, &[[&x, &x], [&y, &y]]);
            assert_eq!(status, 200, "{body}");
            last = body;
        }
        // The same type twice in one reference list is refused, naming it.
        let (status, body) =
            register_schema(&addr, "dup", &record_schema("D", &[("a", "X0")]), &[["X0", "X0"], ["X0", "X0"]]);
        assert_eq!((status, body["error_code"].as_u64()), (422, Some(42201)), "{body}");
        assert!(body["message"].as_str().unwrap().contains("appears more than once"), "{body}");
        // A subject holds at most schema_versions_per_subject_max versions.
        let mut refused = None;
        for n in 0..4 {
            let schema = record_schema("V", &[("a", "int")])
                .replace("\"int\"}", &format!("\"int\"}},{{\"name\":\"f{n}\",\"type\":\"int\",\"default\":0}}"));
            let (status, body) = register_schema(&addr, "versions", &schema, &[]);
            if status != 200 {
                refused = Some((n, status, body));
                break;
            }
        }
        let (n, status, body) = refused.expect("a fourth version is refused");
        assert_eq!((n, status, body["error_code"].as_u64()), (3, 422, Some(42290)), "{body}");
        assert!(body["message"].as_str().unwrap().contains("schema.versions.per.subject.max is 3"), "{body}");
        last["id"].as_u64().unwrap()
    })
    .await
    .unwrap();

    // A record of the top schema: 2^15 ints (0 is one byte each). The broker decodes it with
    // the resolved schema; one byte short, it is refused.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut value = vec![0u8];
    value.extend_from_slice(&u32::try_from(top).unwrap().to_be_bytes());
    value.extend(std::iter::repeat_n(0u8, 1 << LEVELS));
    let record = Record { value: Some(Bytes::from(value.clone())), ..Record::default() };
    producer.send("diamond", Some(0), record).await.expect("queue").await.expect("a valid record lands");
    value.pop();
    let record = Record { value: Some(Bytes::from(value)), ..Record::default() };
    match producer.send("diamond", Some(0), record).await.expect("queue").await {
        Err(weir_sdk::ClientError::Broker(e)) => assert_eq!(e.code, ErrorCode::InvalidRecord, "{e}"),
        other => panic!("a truncated record is refused, got {other:?}"),
    }
    assert_calm_beside(&broker, &stop, calm, "46 schemas in 15 reference diamonds, duplicates and excess refused")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_client_pushing_more_than_its_budget_or_its_connections_then_it_is_held_to_them() {
    use std::io::Read;
    const MIB: usize = 1 << 20;
    let broker = BrokerProcess::start_with_config(&format!(
            "frame_bytes_max = {}\nkafka_request_bytes_max = {}\nmessage_bytes_max = {MIB}\nfetch_bytes_max = {MIB}\nmodule_bytes_max = {MIB}\nconnection_bytes_max = {}\naddress_bytes_max = {}\nbroker_bytes_max = {}\nconnections_per_address_max = 5\nconnection_idle_ms_max = 3000\n",
            4 * MIB,
            4 * MIB,
            8 * MIB,
            16 * MIB,
            32 * MIB
        ));
    let admin = Admin::new(broker.client().await);
    admin.create_topic("calm", 1, TopicConfig::default()).await.unwrap();
    let (stop, calm) = well_behaved(&broker);
    let rss_before = broker.peak_rss_bytes().unwrap();

    // One connection opens 32 streams and sends a 3 MiB frame on each, 96 MiB in all, and
    // reads no answer. Without a budget the broker read every frame into memory.
    let attacker = weir_sdk::Client::connect(broker.client_config()).await.unwrap();
    let conn = attacker.connection().await.unwrap();
    let mut writers = Vec::new();
    for _ in 0..32 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        writers.push(tokio::spawn(async move {
            let mut frame = u32::try_from(3 * MIB).unwrap().to_be_bytes().to_vec();
            frame.resize(4 + 3 * MIB, 0);
            let _ = send.write_all(&frame).await;
            std::future::pending::<()>().await;
            drop(recv);
        }));
    }
    // The broker reads two frames (8 MiB of budget, held until their answers are taken) and
    // closes the connection at the third.
    let closed = tokio::time::timeout(Duration::from_secs(30), conn.closed()).await.expect("the broker closes it");
    let reason = closed.to_string();
    assert!(reason.contains("connection_bytes_max = 8388608"), "{reason}");
    writers.iter().for_each(tokio::task::JoinHandle::abort);
    let rss_attack = broker.peak_rss_bytes().unwrap();
    eprintln!(
        "96 MiB pushed on one connection: closed ({reason}); broker peak RSS {} MiB before, {} MiB after",
        rss_before >> 20,
        rss_attack >> 20
    );
    assert!(
        rss_attack < rss_before + 64 * MIB as u64,
        "the broker grew from {} to {} MiB",
        rss_before >> 20,
        rss_attack >> 20
    );

    // Five connections per address, QUIC and Kafka together: the calm client and the admin
    // client hold two. The attacker's connection counts until the broker has let go of it
    // (its held frames answered or dropped), so a connection may have to wait for room.
    drop(attacker);
    let room = Instant::now() + Duration::from_secs(10);
    let mut kafka: Vec<std::net::TcpStream> = Vec::new();
    while kafka.len() < 3 {
        let mut stream = std::net::TcpStream::connect(broker.kafka_bootstrap()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = kafka_protocol::messages::ApiVersionsRequest::default();
        match try_kafka_call(&mut stream, kafka_protocol::messages::ApiKey::ApiVersions, 0, &|buf| {
            kafka_protocol::protocol::Encodable::encode(&request, buf, 0).unwrap()
        }) {
            Ok((_, answer)) => {
                assert!(!answer.is_empty(), "a connection within the cap is served");
                kafka.push(stream);
            }
            Err(e) => {
                assert!(Instant::now() < room, "a connection within the cap was refused for 10 s: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let mut fifth = std::net::TcpStream::connect(broker.kafka_bootstrap()).unwrap();
    fifth.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read = fifth.read(&mut [0u8; 1]);
    assert!(matches!(read, Ok(0)) || read.is_err(), "a sixth connection is closed: {read:?}");
    let extra = weir_sdk::Client::connect(broker.client_config()).await.unwrap();
    let extra = extra.connection().await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), extra.closed()).await.expect("closed").to_string();
    assert!(closed.contains("connections_per_address_max = 5"), "{closed}");
    // A closed connection makes room again.
    drop(kafka.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = std::net::TcpStream::connect(broker.kafka_bootstrap()).unwrap();
    again.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = kafka_protocol::messages::ApiVersionsRequest::default();
    let (_, answer) = kafka_call(&mut again, kafka_protocol::messages::ApiKey::ApiVersions, 0, &|buf| {
        kafka_protocol::protocol::Encodable::encode(&request, buf, 0).unwrap()
    });
    assert!(!answer.is_empty());
    drop(admin);
    assert_calm_beside(&broker, &stop, calm, "budget and per-address connection cap held").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_slow_registry_http_clients_then_their_connections_are_cut_and_others_are_served() {
    use std::io::{Read, Write};
    let broker = BrokerProcess::start_with_config("http_header_timeout_ms = 500\nhttp_request_timeout_ms = 1000\n");
    Admin::new(broker.client().await).create_topic("calm", 1, TopicConfig::default()).await.unwrap();
    let (stop, calm) = well_behaved(&broker);
    let addr = broker.registry_addr.to_string();
    tokio::task::spawn_blocking(move || {
        let read_all = |stream: &mut std::net::TcpStream| {
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let started = Instant::now();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
        };
        // Slowloris: half a header, then nothing.
        let mut slow_header = std::net::TcpStream::connect(&addr).unwrap();
        slow_header.write_all(b"GET /subjects HTTP/1.1\r\nHost: weir\r\nX-Slow: ").unwrap();
        let (waited, _) = read_all(&mut slow_header);
        assert!(waited < Duration::from_secs(10), "a half-sent header holds the connection {waited:?}");
        // A body announced at 100 bytes, 10 sent: 408 with Confluent's error body.
        let mut slow_body = std::net::TcpStream::connect(&addr).unwrap();
        let head = "POST /subjects/s/versions HTTP/1.1\r\nHost: weir\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"schema\":";
        slow_body.write_all(head.as_bytes()).unwrap();
        let (waited, answer) = read_all(&mut slow_body);
        assert!(waited < Duration::from_secs(10), "a trickled body holds the connection {waited:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("http_request_timeout_ms = 1000"), "{answer}");
        // An idle keep-alive connection after one answer is closed too.
        let mut idle = std::net::TcpStream::connect(&addr).unwrap();
        idle.write_all(b"GET /subjects HTTP/1.1\r\nHost: weir\r\n\r\n").unwrap();
        let (waited, answer) = read_all(&mut idle);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(waited < Duration::from_secs(10), "an idle keep-alive connection stays {waited:?}");
        // And a client that talks is served.
        let (status, body) = common::http(&addr, "GET", "/subjects", b"");
        assert_eq!((status, body.as_str()), (200, "[]"));
    })
    .await
    .unwrap();
    assert_calm_beside(&broker, &stop, calm, "slow registry clients cut off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_offset_commits_with_outsized_metadata_or_too_many_groups_then_they_are_refused() {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::{ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    let broker = BrokerProcess::start_with_config("groups_max = 2\n");
    let admin = Admin::new(broker.client().await);
    admin.create_topic("calm", 1, TopicConfig::default()).await.unwrap();
    admin.create_topic("t", 1, TopicConfig::default()).await.unwrap();
    let (stop, calm) = well_behaved(&broker);
    let bootstrap = broker.kafka_bootstrap();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(bootstrap).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut commit = |group: &str, metadata: usize| -> i16 {
            let request = OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.into())))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0)
                        .with_committed_metadata(Some(StrBytes::from_string("m".repeat(metadata))))])]);
            let (_, mut answer) =
                kafka_call(&mut stream, ApiKey::OffsetCommit, 2, &|buf| request.encode(buf, 2).unwrap());
            OffsetCommitResponse::decode(&mut answer, 2).unwrap().topics[0].partitions[0].error_code
        };
        assert_eq!(commit("g1", 5000), 12, "OFFSET_METADATA_TOO_LARGE past 4096 bytes");
        assert_eq!(commit("g1", 4096), 0);
        assert_eq!(commit("g2", 0), 0);
        assert_eq!(commit("g3", 0), 44, "POLICY_VIOLATION past groups_max");
        assert_eq!(commit("g1", 0), 0, "an existing group still commits");
    })
    .await
    .unwrap();
    assert_calm_beside(&broker, &stop, calm, "offset metadata and group count bounded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_client_taking_producer_ids_in_a_loop_then_it_is_throttled_and_others_are_not() {
    use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse};
    use kafka_protocol::protocol::{Decodable, Encodable};
    let broker = BrokerProcess::start_with_config("producer_ids_per_address_per_minute = 20\n");
    Admin::new(broker.client().await).create_topic("calm", 1, TopicConfig::default()).await.unwrap();
    // The calm producer is idempotent: it took its producer id from the same allowance.
    let (stop, calm) = well_behaved(&broker);
    let bootstrap = broker.kafka_bootstrap();
    let (granted, throttled) = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(bootstrap).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut granted, mut throttled) = (0, None);
        for _ in 0..40 {
            let request = InitProducerIdRequest::default().with_transaction_timeout_ms(60_000);
            let (_, mut answer) =
                kafka_call(&mut stream, ApiKey::InitProducerId, 4, &|buf| request.encode(buf, 4).unwrap());
            let answer = InitProducerIdResponse::decode(&mut answer, 4).unwrap();
            match answer.error_code {
                0 => granted += 1,
                89 => {
                    throttled = Some(answer.throttle_time_ms);
                    break;
                }
                other => panic!("unexpected error {other}"),
            }
        }
        (granted, throttled)
    })
    .await
    .unwrap();
    let wait = throttled.expect("THROTTLING_QUOTA_EXCEEDED within 40 calls");
    assert!(granted <= 20, "granted {granted}");
    assert!(wait > 0 && wait <= 3_000, "throttle_time_ms {wait}");
    let what = format!("{granted} producer ids granted, then throttled for {wait} ms");
    assert_calm_beside(&broker, &stop, calm, &what).await;
}
