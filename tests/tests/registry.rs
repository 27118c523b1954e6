//! The schema registry against real clients: confluent-kafka's SchemaRegistryClient and Avro
//! serdes, and raw HTTP for bad input.

mod common;

use std::time::Duration;

use common::{http, python_script, run_with_deadline, BrokerProcess};

fn check(addr: &str, method: &str, path: &str, body: &str, status: u16, error_code: Option<u64>) -> serde_json::Value {
    let (got, text) = http(addr, method, path, body.as_bytes());
    assert_eq!(got, status, "{method} {path}: {text}");
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path} answered non-JSON {text:?}: {e}"));
    if let Some(code) = error_code {
        assert_eq!(json["error_code"].as_u64(), Some(code), "{method} {path}: {text}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{text}");
    }
    json
}

const USER: &str =
    r#"{"schema": "{\"type\":\"record\",\"name\":\"U\",\"fields\":[{\"name\":\"a\",\"type\":\"string\"}]}"}"#;

/// Runs a confluent-kafka script of `tests/kafka_clients` against the broker's Kafka listener
/// and registry, after creating `validated_topic` (if any) with value schema validation on.
fn run_serdes_script(script: &str, validated_topic: Option<&str>) {
    let broker = BrokerProcess::start(&[]);
    let mut args = vec![broker.kafka_bootstrap(), broker.registry_url()];
    if let Some(topic) = validated_topic {
        let (ok, _, err) = broker
            .cli(&["topic", "create", topic, "--partitions", "2", "--config", "value.schema.validation=true"], None);
        assert!(ok, "{err}");
        args.push(topic.to_owned());
    }
    let (ok, out, err) = run_with_deadline(python_script(script).args(&args), Duration::from_secs(180));
    eprintln!("{out}");
    assert!(ok, "{script}: {out}{err}");
}

#[tokio::test]
async fn given_confluent_avro_serdes_then_records_round_trip_and_evolution_is_checked_as_confluent_does() {
    run_serdes_script("confluent_avro.py", None);
}

#[tokio::test]
async fn given_confluent_json_schema_serdes_then_records_round_trip_through_a_validating_topic() {
    run_serdes_script("confluent_json.py", Some("orders-json"));
}

#[tokio::test]
async fn given_a_schema_with_references_then_confluent_serdes_resolve_it_and_the_broker_validates_with_it() {
    run_serdes_script("confluent_avro_references.py", Some("users-ref"));
}

#[tokio::test]
async fn given_bad_requests_then_confluent_error_bodies_and_schemas_survive_restart() {
    let mut broker = BrokerProcess::start(&[]);
    let addr = broker.registry_addr.to_string();
    assert_eq!(check(&addr, "POST", "/subjects/t-value/versions", USER, 200, None)["id"], 1);
    check(&addr, "POST", "/subjects/t-value/versions", "{not json", 400, Some(400));
    check(&addr, "POST", "/subjects/t-value/versions", r#"{"schema": "{\"type\": \"recrod\"}"}"#, 422, Some(42201));
    check(
        &addr,
        "POST",
        "/subjects/t-value/versions",
        r#"{"schema": "{}", "schemaType": "PROTOBUF"}"#,
        422,
        Some(42201),
    );
    let huge = format!(r#"{{"schema": "{}"}}"#, "x".repeat(5 * 1024 * 1024));
    check(&addr, "POST", "/subjects/t-value/versions", &huge, 400, Some(400));
    check(&addr, "GET", "/subjects/missing/versions", "", 404, Some(40401));
    check(&addr, "GET", "/subjects/t-value/versions/7", "", 404, Some(40402));
    check(&addr, "GET", "/subjects/t-value/versions/0", "", 422, Some(42202));
    check(&addr, "GET", "/subjects/t-value/versions/-2", "", 422, Some(42202));
    check(&addr, "GET", "/subjects/t-value/versions/banana", "", 422, Some(42202));
    check(&addr, "GET", "/schemas/ids/99", "", 404, Some(40403));
    check(&addr, "PUT", "/config", r#"{"compatibility": "SIDEWAYS"}"#, 422, Some(42203));
    assert_eq!(check(&addr, "GET", "/subjects/t-value/versions/latest", "", 200, None)["version"], 1);
    assert_eq!(check(&addr, "GET", "/subjects/t-value/versions/-1", "", 200, None)["id"], 1);
    assert_eq!(check(&addr, "POST", "/subjects/t-value", USER, 200, None)["version"], 1);
    assert_eq!(
        check(&addr, "PUT", "/config/t-value", r#"{"compatibility": "FULL"}"#, 200, None)["compatibility"],
        "FULL"
    );
    check(&addr, "DELETE", "/subjects/t-value?permanent=true", "", 404, Some(40405));

    broker.stop();
    broker.restart();
    let addr = broker.registry_addr.to_string();
    assert_eq!(check(&addr, "GET", "/schemas/ids/1/subjects", "", 200, None), serde_json::json!(["t-value"]));
    assert_eq!(check(&addr, "GET", "/config/t-value", "", 200, None)["compatibilityLevel"], "FULL");
    assert_eq!(
        check(&addr, "POST", "/subjects/other-value/versions", USER, 200, None)["id"],
        1,
        "same schema, same id"
    );
    assert_eq!(check(&addr, "DELETE", "/subjects/t-value", "", 200, None), serde_json::json!([1]));
    check(&addr, "GET", "/subjects/t-value/versions", "", 404, Some(40401));
    assert_eq!(check(&addr, "DELETE", "/subjects/t-value?permanent=true", "", 200, None), serde_json::json!([1]));
}

fn framed(id: u32, datum: &[u8]) -> bytes::Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(datum);
    bytes::Bytes::from(v)
}

#[tokio::test]
async fn given_value_schema_validation_then_bad_records_reject_their_batch_and_valid_ones_land() {
    use weir_sdk::wire::OffsetSpec;
    use weir_sdk::{Admin, ClientError, ErrorCode, Producer, ProducerConfig, Record, TopicConfig};

    let broker = BrokerProcess::start(&[]);
    let addr = broker.registry_addr.to_string();
    assert_eq!(check(&addr, "POST", "/subjects/checked-value/versions", USER, 200, None)["id"], 1);
    let other = r#"{"schema": "{\"type\":\"record\",\"name\":\"V\",\"fields\":[{\"name\":\"b\",\"type\":\"int\"}]}"}"#;
    assert_eq!(check(&addr, "POST", "/subjects/other-value/versions", other, 200, None)["id"], 2);

    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    let config = TopicConfig::default().with_entries([("value.schema.validation", "true")]).unwrap();
    admin.create_topic("checked", 1, config).await.unwrap();
    let producer =
        Producer::new(client, ProducerConfig { max_in_flight_per_partition: 1, ..ProducerConfig::default() });
    let send = |value: Option<bytes::Bytes>| {
        let producer = producer.clone();
        async move { producer.send("checked", Some(0), Record { value, ..Record::default() }).await.unwrap().await }
    };
    let expect_rejected = |outcome: Result<weir_sdk::Delivery, ClientError>, needle: &str| match outcome {
        Err(ClientError::Broker(e)) => {
            assert_eq!(e.code, ErrorCode::InvalidRecord, "{e}");
            assert!(e.message.contains(needle), "{e} should say {needle:?}");
        }
        other => panic!("expected a schema validation error, got {other:?}"),
    };
    let valid = framed(1, &[4, b'h', b'i']);
    expect_rejected(send(Some(bytes::Bytes::from_static(b"{\"a\":\"hi\"}"))).await, "magic byte 0");
    expect_rejected(send(Some(framed(77, &[4, b'h', b'i']))).await, "schema id 77, which is not registered");
    expect_rejected(send(Some(framed(2, &[4]))).await, "not registered for subject checked-value");
    expect_rejected(send(Some(framed(1, &[40, b'h']))).await, "does not decode");
    expect_rejected(send(None).await, "null");

    // One bad record in a batch rejects the batch; the record is named by its index.
    let mut futures = Vec::new();
    for v in [valid.clone(), valid.clone(), framed(1, &[9])] {
        futures.push(producer.send("checked", Some(0), Record { value: Some(v), ..Record::default() }).await.unwrap());
    }
    producer.flush().await.unwrap();
    for f in futures {
        expect_rejected(f.await, "record 2");
    }

    let landed = send(Some(valid)).await.unwrap();
    assert_eq!(landed.offset, 0, "nothing of the rejected batches was stored");
    assert_eq!(admin.list_offsets("checked", vec![0], OffsetSpec::Latest).await.unwrap()[0].offset, 1);
}

fn weir_schema(broker: &BrokerProcess, args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new(common::weir_bin());
    command.arg("schema").args(args).arg("--registry").arg(broker.registry_url());
    run_with_deadline(&mut command, Duration::from_secs(30))
}

#[tokio::test]
async fn given_the_weir_schema_cli_then_it_registers_checks_configures_and_deletes() {
    let broker = BrokerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.avsc");
    let v2 = dir.path().join("v2.avsc");
    let bad = dir.path().join("bad.avsc");
    std::fs::write(&v1, r#"{"type":"record","name":"U","fields":[{"name":"a","type":"string"}]}"#).unwrap();
    std::fs::write(
        &v2,
        r#"{"type":"record","name":"U","fields":[{"name":"a","type":"string"},{"name":"b","type":"int"}]}"#,
    )
    .unwrap();
    std::fs::write(&bad, "{oops").unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let (ok, out, err) = weir_schema(&broker, &["register", "cli-value", "--file", &path(&v1)]);
    assert!(ok && out.contains("with id 1"), "{out}{err}");
    let (ok, out, _) = weir_schema(&broker, &["list"]);
    assert!(ok && out.trim() == "cli-value", "{out}");
    let (ok, out, _) = weir_schema(&broker, &["get", "cli-value"]);
    assert!(ok && out.contains("\"version\": 1"), "{out}");
    let (ok, _, err) = weir_schema(&broker, &["check", "cli-value", "--file", &path(&v2)]);
    assert!(!ok && err.contains("incompatible"), "a new required field breaks BACKWARD: {err}");
    let (ok, _, err) = weir_schema(&broker, &["register", "cli-value", "--file", &path(&bad)]);
    assert!(!ok && err.contains("error_code 42201") && err.lines().count() == 1, "{err}");
    let (ok, out, _) = weir_schema(&broker, &["config", "cli-value", "--set", "NONE"]);
    assert!(ok && out.contains("NONE"), "{out}");
    let (ok, out, err) = weir_schema(&broker, &["register", "cli-value", "--file", &path(&v2)]);
    assert!(ok && out.contains("with id 2"), "{out}{err}");
    let (ok, out, _) = weir_schema(&broker, &["delete", "cli-value", "--version", "1"]);
    assert!(ok && out.contains("deleted versions 1"), "{out}");
    let (ok, out, _) = weir_schema(&broker, &["list", "cli-value"]);
    assert!(ok && out.trim() == "2", "{out}");
}
