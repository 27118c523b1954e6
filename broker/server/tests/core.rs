//! The broker core in process: a real `weir serve` start (listeners on port 0, its own data
//! folder) driven through the Rust client and the service, restarted in the same folder.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_broker::groups::CommittedOffset;
use weir_broker::server::{start, Running, ServeConfig};
use weir_sdk::wire::{DeployModuleRequest, OffsetSpec};
use weir_sdk::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, Record, TlsTrust,
    TopicConfig,
};

fn config(data_dir: &Path) -> ServeConfig {
    let any = "127.0.0.1:0".parse().expect("address");
    ServeConfig {
        data_dir: data_dir.to_path_buf(),
        quic_addr: any,
        kafka_addr: any,
        registry_addr: any,
        ..ServeConfig::default()
    }
}

async fn client(running: &Running) -> Client {
    let config = ClientConfig::new(running.quic_addr.to_string(), TlsTrust::CaFile(running.cert_path.clone()));
    Client::connect(config).await.expect("connect")
}

async fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deploys the identity plugin as a transform from `input` to `output`.
fn transform_request(name: &str, input: &str, output: &str) -> DeployModuleRequest {
    DeployModuleRequest {
        name: name.into(),
        kind: "transform".into(),
        inputs: vec![input.into()],
        output: Some(output.into()),
        topic: None,
        params: Default::default(),
        deadline_ms: None,
        memory_bytes: None,
        dead_letter_topic: None,
        failures_max: None,
        connector: None,
    }
}

async fn deploy_identity(admin: &Admin, name: &str, input: &str, output: &str) {
    let module = weir_runtime::dev::build_plugin("weir-module-identity");
    let request = transform_request(name, input, output);
    admin.deploy_module(&request, Bytes::from(std::fs::read(module).unwrap())).await.expect("deploy");
}

async fn produce(client: &Client, topic: &str, partition: u32, values: &[&str]) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for v in values {
        let record = Record { value: Some(Bytes::from(v.to_string())), ..Record::default() };
        deliveries.push(producer.send(topic, Some(partition), record).await.expect("queue"));
    }
    for d in deliveries {
        d.await.expect("delivered");
    }
}

async fn read_all(client: &Client, topic: &str, partition: u32, count: usize) -> Vec<Bytes> {
    let mut consumer =
        Consumer::new(client.clone(), ConsumerConfig { offset_reset: OffsetReset::Fail, ..ConsumerConfig::default() });
    consumer.assign(topic, vec![partition], OffsetSpec::Earliest).await.expect("assign");
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while values.len() < count {
        assert!(Instant::now() < deadline, "read {} of {count} records of {topic}", values.len());
        for r in consumer.poll(Duration::from_millis(200)).await.expect("poll") {
            values.push(r.record.value.expect("value"));
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_topics_when_restarted_with_lower_limits_then_every_topic_keeps_its_id_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let big = TopicConfig { max_message_bytes: 4 << 20, ..TopicConfig::default() };
    let mut ids = Vec::new();
    {
        let running = start(config(dir.path())).await.expect("start");
        let client = client(&running).await;
        let admin = Admin::new(client.clone());
        for (name, config) in
            [("big", big.clone()), ("second", TopicConfig::default()), ("third", TopicConfig::default())]
        {
            ids.push(admin.create_topic(name, 1, config).await.expect("create").id);
            produce(&client, name, 0, &[name, "more"]).await;
        }
        client.close();
        running.stop().await;
    }
    // Fewer topics allowed and smaller batches than the topics were created with.
    let lower = ServeConfig { topics_max: 1, message_bytes_max: 1 << 20, ..config(dir.path()) };
    let running = start(lower).await.expect("restart with lower limits");
    let client = client(&running).await;
    let admin = Admin::new(client.clone());
    for (name, id) in ["big", "second", "third"].into_iter().zip(&ids) {
        let description = admin.describe_topic(name).await.expect("topic survives the restart");
        assert_eq!(description.id, *id, "topic {name} keeps its id");
        let values = read_all(&client, name, 0, 2).await;
        assert_eq!(values, vec![Bytes::from(name), Bytes::from("more")], "topic {name} serves its own records");
    }
    assert_eq!(admin.describe_topic("big").await.unwrap().config.max_message_bytes, 4 << 20);
    // The lower limits hold for what is proposed now.
    let refused = admin.create_topic("fourth", 1, TopicConfig::default()).await.expect_err("over topics_max");
    assert!(refused.to_string().contains("max.topics = 1"), "{refused}");
    client.close();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_idempotent_producers_offsets_and_transform_progress_when_topic_deleted_then_nothing_of_it_remains() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path())).await.expect("start");
    let client = client(&running).await;
    let admin = Admin::new(client.clone());
    let broker = running.broker().clone();
    admin.create_topic("src", 2, TopicConfig::default()).await.unwrap();
    admin.create_topic("dst", 1, TopicConfig::default()).await.unwrap();
    let id = admin.describe_topic("src").await.unwrap().id;

    deploy_identity(&admin, "copy", "src", "dst").await;
    produce(&client, "src", 0, &["a", "b"]).await;
    produce(&client, "src", 1, &["c"]).await;
    assert!(broker.log().producer_count(id) > 0, "the default producer is idempotent and leaves state");
    broker
        .groups()
        .commit(
            "readers",
            -1,
            "",
            vec![("src".into(), 0, CommittedOffset { offset: 2, metadata: None, commit_time_ms: 1 })],
        )
        .await
        .expect("commit");
    wait_until(Duration::from_secs(60), "the transform's progress through src", || {
        broker.plugins().has_topic_progress("src").unwrap()
    })
    .await;

    admin.delete_topic("src").await.expect("delete");
    assert_eq!(broker.log().producer_count(id), 0, "producer states of a deleted topic are gone");
    assert!(broker.groups().committed("readers", None).is_empty(), "committed offsets of a deleted topic are gone");
    // The transform task may still be winding down; none of it is stored once it stops.
    wait_until(Duration::from_secs(10), "progress of a deleted topic to be gone", || {
        !broker.plugins().has_topic_progress("src").unwrap()
    })
    .await;

    // Created again, the name starts clean.
    broker.create_topic("src", 1, TopicConfig::default()).await.unwrap();
    assert!(broker.groups().committed("readers", None).is_empty());
    client.close();
    running.stop().await;
}

/// Committed offsets an earlier version kept in the broker's own storage move into the
/// controller's state at start, and leave storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_offsets_stored_by_an_earlier_version_when_started_then_they_move_into_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    {
        let running = start(config(dir.path())).await.expect("start");
        let client = client(&running).await;
        Admin::new(client.clone()).create_topic("t", 2, TopicConfig::default()).await.unwrap();
        client.close();
        running.stop().await;
    }
    let legacy = |partition: u32, offset: i64| {
        (("old".to_owned(), "t".to_owned(), partition), format!(r#"{{"offset":{offset},"metadata":"m"}}"#).into_bytes())
    };
    {
        let storage = weir_storage::Storage::open(&dir.path().join("db"), 16).unwrap();
        // As the earliest versions wrote them, without a commit time; and one that does not parse.
        let broken = (("old".to_owned(), "t".to_owned(), 9), b"{not json".to_vec());
        storage.offsets.insert_raw(&[legacy(1, 5), legacy(0, 3), broken]).unwrap();
    }
    let running = start(config(dir.path())).await.expect("restart");
    let broker = running.broker().clone();
    wait_until(Duration::from_secs(30), "the stored offsets in the controller's state", || {
        broker.groups().committed("old", None).len() == 2
    })
    .await;
    let got = broker.groups().committed("old", Some(&[("t".into(), 1)]));
    let committed = got[0].2.clone().expect("t/1 committed");
    assert_eq!((committed.offset, committed.metadata.as_deref()), (5, Some("m")));
    assert!(committed.commit_time_ms > 0, "an offset without a commit time starts its retention now");
    drop(broker);
    running.stop().await;
    let storage = weir_storage::Storage::open(&dir.path().join("db"), 16).unwrap();
    assert!(storage.offsets.load().unwrap().is_empty(), "moved offsets leave the broker's storage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_running_transforms_when_broker_stops_then_no_transform_task_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path())).await.expect("start");
    let client = client(&running).await;
    let admin = Admin::new(client.clone());
    let plugins = running.broker().plugins().clone();
    admin.create_topic("in", 4, TopicConfig::default()).await.unwrap();
    admin.create_topic("out", 1, TopicConfig::default()).await.unwrap();
    deploy_identity(&admin, "identity", "in", "out").await;
    wait_until(Duration::from_secs(30), "one transform task per input partition", || {
        plugins.transform_tasks_running() == 4
    })
    .await;
    client.close();
    running.stop().await;
    assert_eq!(plugins.transform_tasks_running(), 0, "stop ends every transform task it started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_thousands_of_metadata_commands_when_restarted_then_a_snapshot_restores_the_state_and_the_log_is_compacted(
) {
    use weir_broker::controller::{LOG_KEPT_BEHIND_SNAPSHOT, SNAPSHOT_EVERY_ENTRIES};
    let dir = tempfile::tempdir().unwrap();
    let commands = 3 * SNAPSHOT_EVERY_ENTRIES;
    let kept_id;
    {
        let running = start(config(dir.path())).await.expect("start");
        let broker = running.broker().clone();
        kept_id = broker.create_topic("kept", 3, TopicConfig::default()).await.unwrap().id;
        for i in 0..commands / 2 {
            let name = format!("churn-{i}");
            broker.create_topic(&name, 1, TopicConfig::default()).await.unwrap();
            broker.delete_topic(&name).await.unwrap();
        }
        let controller = broker.controller().clone();
        let bound = usize::try_from(SNAPSHOT_EVERY_ENTRIES + LOG_KEPT_BEHIND_SNAPSHOT).unwrap();
        wait_until(Duration::from_secs(30), "the Raft log compacted behind a snapshot", || {
            controller.log_entries_held() <= bound
        })
        .await;
        running.stop().await;
    }
    let running = start(config(dir.path())).await.expect("restart");
    let controller = running.broker().controller().clone();
    let state = controller.state().clone();
    assert_eq!(state.topics.keys().collect::<Vec<_>>(), ["kept"], "only the kept topic exists");
    assert_eq!(state.topics["kept"].id, kept_id);
    assert_eq!(state.next_topic_id, kept_id + commands / 2, "every topic id ever given is remembered");
    let created = running.broker().create_topic("after", 1, TopicConfig::default()).await.unwrap();
    assert_eq!(created.id, kept_id + commands / 2 + 1, "ids go on after the snapshot");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_admin_requests_as_kafka_sends_them_then_the_service_applies_the_rules_for_every_front_end() {
    use weir_broker::service::{CommitError, ConfigChange, NewTopic};
    use weir_sdk::ErrorCode;
    let dir = tempfile::tempdir().unwrap();
    let running = start(ServeConfig { default_partitions: 3, ..config(dir.path()) }).await.expect("start");
    let broker = running.broker().clone();
    let code = |r: Result<u32, weir_sdk::WireError>| r.map_err(|e| e.code);
    let new = |name: &str, partitions: Option<u32>, replication_factor: Option<u32>, validate_only: bool| NewTopic {
        name: name.into(),
        partitions,
        replication_factor,
        config: vec![("retention.ms".into(), "1000".into())],
        validate_only,
    };

    // Auto-creation: only when the client allows it, with the broker's default partitions.
    let created = broker.topic_for_metadata("auto", true).await.unwrap();
    assert_eq!(created.partitions.len(), 3);
    assert_eq!(broker.topic_for_metadata("not-asked", false).await.unwrap_err().code, ErrorCode::UnknownTopic);

    // CreateTopics: counts left open are the broker's; replication within the brokers there are.
    assert_eq!(code(broker.create_topic_as_asked(new("t", None, None, false)).await), Ok(3));
    assert_eq!(code(broker.create_topic_as_asked(new("t2", Some(2), Some(1), false)).await), Ok(2));
    let too_many = broker.create_topic_as_asked(new("t3", None, Some(3), false)).await;
    assert_eq!(code(too_many), Err(ErrorCode::InvalidReplicationFactor));
    assert_eq!(
        code(broker.create_topic_as_asked(new("t4", Some(0), None, false)).await),
        Err(ErrorCode::InvalidPartitions)
    );
    assert_eq!(code(broker.create_topic_as_asked(new("dry", Some(5), None, true)).await), Ok(5));
    assert!(broker.describe_topic("dry").is_err(), "validate_only creates nothing");
    assert_eq!(
        code(broker.create_topic_as_asked(new("t", None, None, true)).await),
        Err(ErrorCode::TopicAlreadyExists)
    );

    // Incremental changes keep the other keys; a whole replacement resets them to defaults.
    let value = |key: &str| {
        broker.topic_configs("t").unwrap().into_iter().find(|e| e.name == key).map(|e| (e.value, e.is_default)).unwrap()
    };
    broker
        .alter_topic_config("t", vec![("max.message.bytes".into(), ConfigChange::Set("2048".into()))], false)
        .await
        .unwrap();
    assert_eq!(value("max.message.bytes"), ("2048".into(), false));
    assert_eq!(value("retention.ms"), ("1000".into(), false), "an increment keeps what it does not name");
    broker.replace_topic_config("t", vec![("max.message.bytes".into(), "4096".into())], false).await.unwrap();
    assert_eq!(value("retention.ms"), ("604800000".into(), true), "a replacement resets what it does not name");
    broker.alter_topic_config("t", vec![("max.message.bytes".into(), ConfigChange::Delete)], false).await.unwrap();
    assert!(value("max.message.bytes").1, "deleted: back to the default");
    let list_op = vec![("retention.ms".into(), ConfigChange::Append("1".into()))];
    assert_eq!(broker.alter_topic_config("t", list_op, false).await.unwrap_err().code, ErrorCode::InvalidConfig);
    let dry = vec![("retention.ms".into(), ConfigChange::Set("5".into()))];
    broker.alter_topic_config("t", dry, true).await.unwrap();
    assert_eq!(value("retention.ms").0, "604800000", "validate_only changes nothing");

    // Offset commits: a partition that does not exist fails the commit whole, for either protocol.
    let at = |offset| CommittedOffset { offset, metadata: None, commit_time_ms: 1 };
    let refused = broker.commit_offsets("g", -1, "", vec![("t".into(), 0, at(1)), ("t".into(), 3, at(1))]).await;
    match refused {
        Err(CommitError::UnknownPartitions { unknown, first }) => {
            assert_eq!(unknown, vec![("t".to_owned(), 3)]);
            assert_eq!(first.code, ErrorCode::UnknownPartition);
        }
        other => panic!("expected unknown partitions, got {other:?}"),
    }
    assert!(broker.groups().committed("g", None).is_empty(), "nothing of a refused commit is stored");
    broker.commit_offsets("g", -1, "", vec![("t".into(), 2, at(7))]).await.unwrap();
    assert_eq!(broker.groups().committed("g", None)[0].2.as_ref().map(|c| c.offset), Some(7));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_stored_batch_that_does_not_decode_when_a_transform_reads_it_then_it_is_dead_lettered_with_the_reason()
{
    use weir_sdk::wire::{Acks, FrameKind, ProducePartition, ProduceRequest, ProduceResponse};
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path())).await.expect("start");
    let client = client(&running).await;
    let admin = Admin::new(client.clone());
    admin.create_topic("raw", 1, TopicConfig::default()).await.unwrap();
    admin.create_topic("clean", 1, TopicConfig::default()).await.unwrap();
    deploy_identity(&admin, "mend", "raw", "clean").await;

    // A batch with an intact header and CRC whose record data is garbage.
    let record = Record { value: Some(Bytes::from_static(b"fine")), ..Record::default() };
    let mut broken = weir_sdk::batch::encode_batch(&[record], weir_sdk::Compression::None).unwrap().to_vec();
    for b in &mut broken[61..] {
        *b = 0xff;
    }
    let crc = crc32c::crc32c(&broken[21..]);
    broken[17..21].copy_from_slice(&crc.to_be_bytes());
    let broken = Bytes::from(broken);
    let request = ProduceRequest {
        topic: "raw".into(),
        acks: Acks::All,
        timeout_ms: 30_000,
        partitions: vec![ProducePartition { partition: 0, bytes: u32::try_from(broken.len()).unwrap() }],
    };
    let (response, _): (ProduceResponse, _) = client.call(FrameKind::Produce, &request, broken.clone()).await.unwrap();
    let refused = response.partitions[0].error.clone().expect("produce decodes records and refuses the batch");
    assert_eq!(refused.code, weir_sdk::ErrorCode::CorruptBatch, "{refused}");
    // Such a batch may still be in a log written before produce decoded records: put it there
    // directly, as such a version would have.
    let broker = running.broker();
    let topic_id = broker.topics().into_iter().find(|t| t.name == "raw").unwrap().id;
    let state = broker.log().partition(weir_storage::PartitionId { topic_id, partition: 0 }).unwrap();
    let header = weir_sdk::batch::validate_batch(&broken).unwrap();
    broker.log().enqueue(state, vec![(header, broken.clone())], true).await.unwrap().await.unwrap();
    produce(&client, "raw", 0, &["after"]).await;

    let dead = read_all(&client, "mend.dlq", 0, 1).await;
    // As stored: with the leader epoch the broker appended it in (0 on a single node).
    let mut stored = broken.to_vec();
    weir_sdk::batch::set_partition_leader_epoch(&mut stored, 0);
    assert_eq!(dead[0], stored, "the batch, whole, is the dead letter's value");
    let mut consumer =
        Consumer::new(client.clone(), ConsumerConfig { offset_reset: OffsetReset::Fail, ..ConsumerConfig::default() });
    consumer.assign("mend.dlq", vec![0], OffsetSpec::Earliest).await.unwrap();
    let letter = consumer.poll(Duration::from_secs(5)).await.unwrap().remove(0);
    let header = |name: &str| {
        letter
            .record
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    assert!(header("weir.error").unwrap().contains("does not decode"), "{:?}", header("weir.error"));
    assert_eq!(header("weir.source.offset").as_deref(), Some("0"));
    assert_eq!(read_all(&client, "clean", 0, 1).await, vec![Bytes::from("after")], "the task went on past it");
    client.close();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_refused_or_removed_deployments_then_their_components_are_not_kept() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path())).await.expect("start");
    let client = client(&running).await;
    let admin = Admin::new(client.clone());
    admin.create_topic("in", 1, TopicConfig::default()).await.unwrap();
    admin.create_topic("out", 1, TopicConfig::default()).await.unwrap();
    let bytes = Bytes::from(std::fs::read(weir_runtime::dev::build_plugin("weir-module-identity")).unwrap());
    let sha256: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let cache = dir.path().join("module-cache");
    let artifacts = || {
        std::fs::read_dir(&cache)
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&sha256)).count())
            .unwrap_or(0)
    };
    let request = |input: &str| transform_request("mend", input, "out");
    // Refused for its spec (an input topic that does not exist): nothing stored or compiled.
    let refused = admin.deploy_module(&request("missing"), bytes.clone()).await.unwrap_err();
    assert!(refused.to_string().contains("missing"), "{refused}");
    assert!(!running.broker().plugins().has_blob(&sha256), "a refused deploy stores no component");
    assert_eq!(artifacts(), 0, "a refused deploy leaves no compiled artifact");
    // Deployed: kept; removed: dropped, bytes and artifact.
    admin.deploy_module(&request("in"), bytes.clone()).await.unwrap();
    assert!(running.broker().plugins().has_blob(&sha256));
    assert_eq!(artifacts(), 1);
    admin.module_action("mend", weir_sdk::wire::ModuleAction::Remove).await.unwrap();
    assert!(!running.broker().plugins().has_blob(&sha256), "a removed deployment's component goes");
    assert_eq!(artifacts(), 0);
    running.stop().await;
}
