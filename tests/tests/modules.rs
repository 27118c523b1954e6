//! Wasm plugins end to end: components built for wasm32-wasip2 by the test, deployed with
//! `weir module deploy` to a real `weir serve`, fed with real produce requests, checked by
//! reading the output topics.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{wait_until, BrokerProcess};
use weir_runtime::dev::build_plugin;
use weir_sdk::batch::ConsumedRecord;
use weir_sdk::wire::{ModuleDescription, OffsetSpec};
use weir_sdk::{Admin, Client, Consumer, ConsumerConfig, Producer, ProducerConfig, Record, TopicConfig};

fn plugin(package: &str) -> String {
    build_plugin(package).to_string_lossy().into_owned()
}

fn deploy(broker: &BrokerProcess, file: &str, args: &[&str]) -> String {
    let mut all = vec!["module", "deploy", file];
    all.extend_from_slice(args);
    let (ok, out, err) = broker.cli(&all, None);
    assert!(ok, "deploy {args:?} failed: {err}");
    out
}

async fn create(admin: &Admin, topics: &[(&str, u32)]) {
    for (name, partitions) in topics {
        admin.create_topic(name, *partitions, TopicConfig::default()).await.unwrap();
    }
}

fn record(key: Option<&str>, value: &str) -> Record {
    Record {
        key: key.map(|k| Bytes::from(k.to_owned())),
        value: Some(Bytes::from(value.to_owned())),
        headers: vec![],
        timestamp: weir_sdk::now_ms(),
    }
}

/// Sends each record as its own batch and waits for it, so that each is one module call.
async fn produce_each(client: &Client, topic: &str, partition: u32, values: &[&str]) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for v in values {
        producer.send(topic, Some(partition), record(None, v)).await.unwrap().await.unwrap();
    }
}

/// Reads `topic` from the start until `count` records arrived (or the deadline passes), then a
/// little longer to catch any record too many.
async fn read(client: &Client, topic: &str, count: usize) -> Vec<ConsumedRecord> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign_topic(topic, OffsetSpec::Earliest).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < count && Instant::now() < deadline {
        got.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    got.extend(consumer.poll(Duration::from_millis(300)).await.unwrap());
    assert_eq!(got.len(), count, "records in {topic}: {:?}", values(&got));
    got
}

/// A temporary file holding `text`.
fn dir_file(name: &str, text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().prefix(name).tempfile().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    file
}

fn values(records: &[ConsumedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

fn header<'a>(record: &'a ConsumedRecord, key: &str) -> &'a str {
    let value = record.record.headers.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref());
    std::str::from_utf8(value.unwrap_or_else(|| panic!("header {key} missing"))).unwrap()
}

async fn describe(admin: &Admin, name: &str) -> ModuleDescription {
    admin.describe_module(name).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_json_filter_transform_then_exactly_the_matching_records_reach_the_output() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    create(&admin, &[("logs", 2), ("errors", 1)]).await;
    let out = deploy(
        &broker,
        &plugin("weir-module-json-filter"),
        &["--name", "only-errors", "--kind", "transform", "--input", "logs", "--output", "errors"],
    );
    assert!(out.contains("deployed transform only-errors version 1"), "{out}");
    // Parameters can change with a new version: version 1 had none, so it fails every record.
    // Version 2 carries them.
    deploy(
        &broker,
        &plugin("weir-module-json-filter"),
        &[
            "--name",
            "only-errors",
            "--kind",
            "transform",
            "--input",
            "logs",
            "--output",
            "errors",
            "--param",
            "path=/level",
            "--param",
            "equals=error",
        ],
    );
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut expected = BTreeSet::new();
    let mut deliveries = Vec::new();
    for i in 0..200 {
        let level = if i % 2 == 0 { "error" } else { "info" };
        let value = format!(r#"{{"level":"{level}","n":{i}}}"#);
        if level == "error" {
            expected.insert(value.clone());
        }
        deliveries.push(producer.send("logs", Some(i % 2), record(None, &value)).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
    let a = admin.clone();
    wait_until(Duration::from_secs(30), "the filter to read every record", || {
        let a = a.clone();
        async move {
            let m = describe(&a, "only-errors").await.metrics;
            m.progress.values().sum::<i64>() >= 200 || m.last_error.is_some()
        }
    })
    .await;
    println!("only-errors: {:?}", describe(&admin, "only-errors").await);
    let got = read(&client, "errors", 100).await;
    assert_eq!(values(&got).into_iter().collect::<BTreeSet<_>>(), expected);
    let a = admin.clone();
    wait_until(Duration::from_secs(10), "metrics to count every record", || {
        let a = a.clone();
        async move { describe(&a, "only-errors").await.metrics.records_in >= 200 }
    })
    .await;
    let described = describe(&admin, "only-errors").await;
    println!("only-errors metrics: {:?}", described.metrics);
    assert_eq!(described.active_version, 2);
    assert_eq!(described.metrics.records_out, 100);
    assert_eq!(described.metrics.counters.get("kept"), Some(&100));
    assert_eq!(described.metrics.counters.get("dropped"), Some(&100));
    assert_eq!(described.metrics.progress.get("logs/0"), Some(&100));
    assert!(described.metrics.call_latency_us_p99 > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_masker_feeding_a_router_then_masked_records_land_in_their_region_topics() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    create(&admin, &[("orders-raw", 1), ("orders", 1), ("orders-eu", 1), ("orders-us", 1), ("orders-other", 1)]).await;
    deploy(
        &broker,
        &plugin("weir-module-pii-mask"),
        &[
            "--name",
            "mask",
            "--kind",
            "transform",
            "--input",
            "orders-raw",
            "--output",
            "orders",
            "--param",
            "paths=/email,/card",
            "--param",
            r"pattern=\d{4}-",
            "--param",
            "replacement=XXXX-",
        ],
    );
    deploy(
        &broker,
        &plugin("weir-module-router"),
        &[
            "--name",
            "by-region",
            "--kind",
            "transform",
            "--input",
            "orders",
            "--output",
            "orders-other",
            "--param",
            "path=/region",
            "--param",
            "routes=eu=orders-eu,us=orders-us",
        ],
    );
    let raw = [
        r#"{"id":1,"region":"eu","email":"1234-ann@example.com","card":"4111-1111-1111-1111"}"#,
        r#"{"id":2,"region":"us","email":"bob@example.com","card":"5500-0000-0000-0004"}"#,
        r#"{"id":3,"region":"apac","card":"3400-0000-0000-009"}"#,
        r#"{"id":4,"region":"eu","email":"x@y.z"}"#,
    ];
    produce_each(&client, "orders-raw", 0, &raw).await;
    let eu = values(&read(&client, "orders-eu", 2).await);
    let us = values(&read(&client, "orders-us", 1).await);
    let other = values(&read(&client, "orders-other", 1).await);
    assert_eq!(
        eu,
        [
            r#"{"card":"XXXX-XXXX-XXXX-1111","email":"XXXX-ann@example.com","id":1,"region":"eu"}"#,
            r#"{"email":"x@y.z","id":4,"region":"eu"}"#
        ]
    );
    assert_eq!(us, [r#"{"card":"XXXX-XXXX-XXXX-0004","email":"bob@example.com","id":2,"region":"us"}"#]);
    assert_eq!(other, [r#"{"card":"XXXX-XXXX-XXXX-009","id":3,"region":"apac"}"#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_partitioner_modules_then_the_broker_places_records_they_choose() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    create(&admin, &[("by-region", 3), ("by-key", 5), ("broken", 3)]).await;
    deploy(
        &broker,
        &plugin("weir-module-field-partitioner"),
        &[
            "--name",
            "region-partitioner",
            "--kind",
            "partitioner",
            "--topic",
            "by-region",
            "--param",
            "path=/region",
            "--param",
            "partitions=eu=0,us=1,apac=2",
        ],
    );
    let regions = ["eu", "us", "apac"];
    let lines: String = (0..30).map(|i| format!("{{\"region\":\"{}\",\"n\":{i}}}\n", regions[i % 3])).collect();
    let (ok, _, err) = broker.cli(&["produce", "by-region", "--broker-partitions"], Some(&lines));
    assert!(ok, "{err}");
    for r in read(&client, "by-region", 30).await {
        let value = String::from_utf8(r.record.value.unwrap().to_vec()).unwrap();
        let region = regions[r.partition as usize];
        assert!(value.contains(&format!("\"region\":\"{region}\"")), "{value} in partition {}", r.partition);
    }

    deploy(
        &broker,
        &plugin("weir-module-key-hash-partitioner"),
        &["--name", "kh", "--kind", "partitioner", "--topic", "by-key"],
    );
    let lines: String = (0..50).map(|i| format!("user-{i}:v{i}\n")).collect();
    let (ok, _, err) = broker.cli(&["produce", "by-key", "--broker-partitions", "--key-separator", ":"], Some(&lines));
    assert!(ok, "{err}");
    let got = read(&client, "by-key", 50).await;
    for r in &got {
        let key = r.record.key.as_ref().unwrap();
        assert_eq!(r.partition, weir_sdk::partitioner::partition_for_key(key, 5), "key-hash matches Kafka's murmur2");
    }
    assert!(got.iter().map(|r| r.partition).collect::<BTreeSet<_>>().len() > 2);

    deploy(
        &broker,
        &plugin("weir-test-out-of-range-partitioner"),
        &["--name", "past-the-end", "--kind", "partitioner", "--topic", "broken"],
    );
    let (ok, _, err) = broker.cli(&["produce", "broken", "--broker-partitions"], Some("a\nb\n"));
    assert!(!ok);
    println!("out-of-range partitioner: {err}");
    assert!(err.contains("answered partition 8 for record 0, but the topic has 3 partitions"), "{err}");
    let described = admin.describe_topic("broken").await.unwrap();
    assert!(described.partitions.iter().all(|p| p.high_watermark == 0), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_json_shape_validator_then_a_batch_with_an_invalid_record_is_rejected_whole() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    create(&admin, &[("payments", 1)]).await;
    deploy(
        &broker,
        &plugin("weir-module-json-shape-validator"),
        &[
            "--name",
            "payment-shape",
            "--kind",
            "validator",
            "--topic",
            "payments",
            "--param",
            "required=id,amount",
            "--param",
            "types=id=integer,amount=number",
        ],
    );
    let bad = [r#"{"id":1,"amount":5}"#, r#"{"id":2,"amount":7.5}"#, r#"{"id":"three","amount":1}"#];
    let records: Vec<Record> = bad.iter().map(|v| record(None, v)).collect();
    let err = admin.produce_unassigned("payments", &records, weir_sdk::Acks::All).await.unwrap_err().to_string();
    println!("validator rejection: {err}");
    assert!(
        err.contains(r#"record 2 of the produce request to topic "payments" partition 0 was rejected by validator module "payment-shape" v1: field "id" must be integer, got "three""#),
        "{err}"
    );
    assert_eq!(admin.describe_topic("payments").await.unwrap().partitions[0].high_watermark, 0, "nothing stored");
    // The same producer's valid batch lands.
    produce_each(&client, "payments", 0, &[r#"{"id":3,"amount":1}"#]).await;
    assert_eq!(values(&read(&client, "payments", 1).await), [r#"{"id":3,"amount":1}"#]);
    let metrics = describe(&admin, "payment-shape").await.metrics;
    assert_eq!((metrics.records_rejected, metrics.records_in), (1, 4), "{metrics:?}");

    // A Kafka client gets INVALID_RECORD for a record the validator rejects.
    let input = dir_file("kcat-payments", "{\"id\":4}\n");
    let mut kcat = std::process::Command::new("kcat");
    kcat.args([
        "-P",
        "-b",
        &broker.kafka_bootstrap(),
        "-t",
        "payments",
        "-p",
        "0",
        "-l",
        input.path().to_str().unwrap(),
    ]);
    let (_, out, err) = common::run_with_deadline(&mut kcat, Duration::from_secs(60));
    println!("kcat against the validator: {}", err.trim());
    assert!(err.contains("Broker failed to validate record"), "INVALID_RECORD reaches librdkafka: {out} {err}");
    assert_eq!(admin.describe_topic("payments").await.unwrap().partitions[0].high_watermark, 1, "nothing more stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_hostile_transforms_then_their_batches_are_dead_lettered_and_the_broker_keeps_serving() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    create(
        &admin,
        &[
            ("spin-in", 1),
            ("spin-out", 1),
            ("bomb-in", 1),
            ("bomb-out", 1),
            ("boom-in", 1),
            ("boom-out", 1),
            ("other", 1),
        ],
    )
    .await;
    deploy(
        &broker,
        &plugin("weir-test-spin-forever"),
        &[
            "--name",
            "spin",
            "--kind",
            "transform",
            "--input",
            "spin-in",
            "--output",
            "spin-out",
            "--deadline-ms",
            "50",
            "--failures-max",
            "2",
        ],
    );
    deploy(
        &broker,
        &plugin("weir-test-memory-bomb"),
        &[
            "--name",
            "bomb",
            "--kind",
            "transform",
            "--input",
            "bomb-in",
            "--output",
            "bomb-out",
            "--memory-mb",
            "16",
            "--deadline-ms",
            "5000",
        ],
    );
    deploy(
        &broker,
        &plugin("weir-test-panic-on-boom"),
        &["--name", "boom", "--kind", "transform", "--input", "boom-in", "--output", "boom-out"],
    );
    produce_each(&client, "spin-in", 0, &["s0"]).await;
    produce_each(&client, "bomb-in", 0, &["b0"]).await;
    produce_each(&client, "boom-in", 0, &["fine"]).await;
    // Each batch of its own, so that one failure is one batch.
    let spin = read(&client, "spin.dlq", 1).await;
    produce_each(&client, "spin-in", 0, &["s1"]).await;
    produce_each(&client, "boom-in", 0, &["boom"]).await;
    produce_each(&client, "boom-in", 0, &["after"]).await;

    // The broker serves other topics while modules spin and trap.
    produce_each(&client, "other", 0, &["still here"]).await;
    assert_eq!(values(&read(&client, "other", 1).await), ["still here"]);

    assert_eq!(header(&spin[0], "weir.error"), "interrupted at its deadline of 50 ms");
    assert_eq!(header(&spin[0], "weir.module"), "spin");
    assert_eq!(header(&spin[0], "weir.source.topic"), "spin-in");
    assert_eq!(header(&spin[0], "weir.source.offset"), "0");
    let spin = read(&client, "spin.dlq", 2).await;
    assert_eq!(values(&spin), ["s0", "s1"]);

    let bomb = read(&client, "bomb.dlq", 1).await;
    println!("memory bomb: {}", header(&bomb[0], "weir.error"));
    assert!(header(&bomb[0], "weir.error").starts_with("stopped at its memory cap of 16777216 bytes"));

    let boom_out = read(&client, "boom-out", 2).await;
    assert_eq!(values(&boom_out), ["fine", "after"]);
    let boom_dlq = read(&client, "boom.dlq", 1).await;
    assert_eq!(values(&boom_dlq), ["boom"]);
    assert!(header(&boom_dlq[0], "weir.error").contains("boom at offset 1"), "{}", header(&boom_dlq[0], "weir.error"));

    // Two failed batches in a row pause `spin`, saying why; the others run on.
    let a = admin.clone();
    wait_until(Duration::from_secs(10), "spin to be paused", || {
        let a = a.clone();
        async move { describe(&a, "spin").await.paused.is_some() }
    })
    .await;
    let spin = describe(&admin, "spin").await;
    println!("spin: paused = {:?}, metrics = {:?}", spin.paused, spin.metrics);
    assert!(spin.paused.unwrap().contains("2 consecutive failed batches, the last: interrupted at its deadline"));
    assert_eq!(spin.metrics.records_dead_lettered, 2);
    assert_eq!(describe(&admin, "boom").await.paused, None);
    let bomb = describe(&admin, "bomb").await;
    assert!(bomb.metrics.memory_high_water_bytes <= 16 << 20 && bomb.metrics.memory_high_water_bytes > 0, "{bomb:?}");
}

#[test]
fn given_files_that_are_not_acceptable_plugins_then_deploy_refuses_them_with_the_reason() {
    let broker = BrokerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("readme.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (ok, _, err) = broker.cli(&["topic", "create", "t", "--partitions", "1"], None);
    assert!(ok, "{err}");
    let check = |file: PathBuf, kind: &str, expected: &str| {
        let file = file.to_string_lossy().into_owned();
        let (ok, _, err) =
            broker.cli(&["module", "deploy", &file, "--name", "m", "--kind", kind, "--topic", "t"], None);
        println!("{expected}: {}", err.trim());
        assert!(!ok && err.contains(expected), "{err}");
    };
    check(text, "validator", "not a WebAssembly file");
    check(core, "validator", "core WebAssembly module, not a component");
    check(build_plugin("weir-test-open-socket"), "validator", "imports wasi:sockets/");
    check(build_plugin("weir-module-identity"), "validator", "does not export weir:plugin/record-validator@0.2.3");
    // A deployment refused for its settings leaves no dead-letter topic behind.
    let identity = build_plugin("weir-module-identity").to_string_lossy().into_owned();
    let (ok, _, err) = broker.cli(
        &["module", "deploy", &identity, "--name", "m", "--kind", "transform", "--input", "ghost", "--output", "t"],
        None,
    );
    assert!(!ok && err.contains("input topic \"ghost\" does not exist"), "{err}");
    let (_, topics, _) = broker.cli(&["topic", "list"], None);
    assert!(!topics.contains("m.dlq"), "{topics}");
    let (_, out, _) = broker.cli(&["module", "list"], None);
    assert!(!out.contains("\nm "), "nothing deployed: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_versions_and_a_restart_then_rollback_and_deployments_survive() {
    let mut broker = BrokerProcess::start(&[]);
    let identity = plugin("weir-module-identity");
    let filter = plugin("weir-module-json-filter");
    {
        let client = broker.client().await;
        create(&Admin::new(client), &[("a", 1), ("b", 1)]).await;
    }
    deploy(&broker, &identity, &["--name", "copy", "--kind", "transform", "--input", "a", "--output", "b"]);
    deploy(
        &broker,
        &filter,
        &[
            "--name",
            "copy",
            "--kind",
            "transform",
            "--input",
            "a",
            "--output",
            "b",
            "--param",
            "path=/x",
            "--param",
            "equals=never",
        ],
    );
    let (ok, out, err) = broker.cli(&["module", "rollback", "copy"], None);
    assert!(ok && out.contains("version 1"), "{out} {err}");
    broker.stop();
    broker.restart();
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    let copy = describe(&admin, "copy").await;
    assert_eq!((copy.active_version, copy.versions.len()), (1, 2));
    assert_eq!(
        copy.versions[1].params,
        BTreeMap::from([("path".into(), "/x".into()), ("equals".into(), "never".into())])
    );
    // Version 1 (identity) runs after the restart, from its precompiled artifact.
    produce_each(&client, "a", 0, &["one", "two"]).await;
    assert_eq!(values(&read(&client, "b", 2).await), ["one", "two"]);
    let (ok, out, _) = broker.cli(&["module", "list"], None);
    assert!(ok && out.contains("copy") && out.contains("running"), "{out}");
    let (ok, _, _) = broker.cli(&["module", "pause", "copy"], None);
    assert!(ok);
    produce_each(&client, "a", 0, &["three"]).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (ok, _, _) = broker.cli(&["module", "resume", "copy"], None);
    assert!(ok);
    assert_eq!(values(&read(&client, "b", 3).await), ["one", "two", "three"]);
    let (ok, out, _) = broker.cli(&["module", "remove", "copy"], None);
    assert!(ok && out.contains("removed copy"));
    let (ok, _, err) = broker.cli(&["module", "describe", "copy"], None);
    assert!(!ok && err.contains("unknown module \"copy\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_avro_records_then_a_plugin_decodes_them_with_the_schema_it_looks_up_by_id() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    create(&admin, &[("users-avro", 1), ("users-json", 1)]).await;
    let schema_text =
        r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"visits","type":"int"}]}"#;
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("user.avsc");
    std::fs::write(&schema_file, schema_text).unwrap();
    let mut register = std::process::Command::new(common::weir_bin());
    register
        .args(["schema", "register", "users-avro-value", "--file", schema_file.to_str().unwrap(), "--registry"])
        .arg(broker.registry_url());
    let (ok, out, err) = common::run_with_deadline(&mut register, Duration::from_secs(30));
    assert!(ok, "{out} {err}");
    deploy(
        &broker,
        &plugin("weir-module-avro-to-json"),
        &["--name", "avro-json", "--kind", "transform", "--input", "users-avro", "--output", "users-json"],
    );
    let schema = apache_avro::Schema::parse_str(schema_text).unwrap();
    let framed = |id: u32, name: &str, visits: i32| {
        let value = apache_avro::types::Value::Record(vec![
            ("name".into(), apache_avro::types::Value::String(name.into())),
            ("visits".into(), apache_avro::types::Value::Int(visits)),
        ]);
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend(apache_avro::to_avro_datum(&schema, value).unwrap());
        bytes
    };
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for (id, name, visits) in [(1, "ann", 3), (99, "ghost", 0), (1, "bob", 5)] {
        let record = Record { value: Some(Bytes::from(framed(id, name, visits))), ..record(None, "") };
        producer.send("users-avro", Some(0), record).await.unwrap().await.unwrap();
    }
    let json = read(&client, "users-json", 2).await;
    assert_eq!(values(&json), [r#"{"name":"ann","visits":3}"#, r#"{"name":"bob","visits":5}"#]);
    assert_eq!(header(&json[0], "weir.schema.id"), "1");
    let dead = read(&client, "avro-json.dlq", 1).await;
    assert_eq!(header(&dead[0], "weir.error"), "schema id 99 is not registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_consume_time_filter_then_only_matching_records_cross_the_network_with_their_offsets() {
    let broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    create(&admin, &[("events", 1)]).await;
    // No --input/--output: the transform runs only when a consumer asks for it.
    deploy(
        &broker,
        &plugin("weir-module-json-filter"),
        &["--name", "errors-only", "--kind", "transform", "--param", "path=/level", "--param", "equals=error"],
    );
    let levels = ["info", "error", "info", "info", "error", "debug", "info"];
    let values_sent: Vec<String> =
        levels.iter().enumerate().map(|(i, l)| format!(r#"{{"level":"{l}","n":{i}}}"#)).collect();
    let refs: Vec<&str> = values_sent.iter().map(String::as_str).collect();
    produce_each(&client, "events", 0, &refs).await;

    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig { module: Some("errors-only".into()), ..ConsumerConfig::default() },
    );
    consumer.assign_topic("events", OffsetSpec::Earliest).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumer.assignment().any(|(_, _, position)| position < levels.len() as i64) && Instant::now() < deadline {
        got.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [1, 4], "outputs keep their input offsets");
    assert_eq!(values(&got), [values_sent[1].clone(), values_sent[4].clone()]);
    assert!(
        consumer.assignment().all(|(_, _, position)| position == levels.len() as i64),
        "the dropped tail is skipped"
    );

    let mut cli = std::process::Command::new(common::weir_bin());
    cli.args(["consume", "events", "--module", "errors-only", "--from", "earliest", "--end", "--bootstrap"])
        .arg(broker.quic_addr.to_string())
        .arg("--data-dir")
        .arg(&broker.data_dir);
    let (ok, out, err) = common::run_with_deadline(&mut cli, Duration::from_secs(30));
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), [values_sent[1].as_str(), values_sent[4].as_str()]);
    // The stored log is untouched.
    assert_eq!(read(&client, "events", levels.len()).await.len(), levels.len());
}
