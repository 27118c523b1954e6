//! The web console's JSON API (`/api/v1`), its OpenAPI document and `/metrics`, against a real
//! `weir serve`: every route with good and bad input. Bad input is a 4xx with a JSON body that
//! names the field, never a 500.

mod common;

use std::time::Duration;

use common::{console, http, BrokerProcess};
use serde_json::{json, Value};

/// Asserts a refused request: its status, error code and the field it names.
#[track_caller]
fn refused(answer: (u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (got, body) = answer;
    assert_eq!(got, status, "status of {body}");
    assert_eq!(body["error"]["code"], code, "code of {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "a message in {body}");
    match field {
        Some(f) => assert_eq!(body["error"]["field"], f, "field of {body}"),
        None => assert!(body["error"].get("field").is_none(), "no field in {body}"),
    }
}

#[track_caller]
fn ok(answer: (u16, Value), status: u16) -> Value {
    assert_eq!(answer.0, status, "answer {}", answer.1);
    answer.1
}

#[test]
fn given_bad_input_on_every_route_then_the_api_answers_a_4xx_json_error_naming_the_field() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    let c = |method: &str, path: &str, body: Option<Value>| console(&addr, method, path, body);
    ok(
        c(
            "POST",
            "/api/v1/topics",
            Some(json!({"name": "t", "partitions": 2, "configs": {"max.message.bytes": "2048"}})),
        ),
        201,
    );

    // Topics.
    refused(c("GET", "/api/v1/topics/nope", None), 404, "unknown_topic", Some("name"));
    refused(c("POST", "/api/v1/topics", Some(json!({"name": "t"}))), 409, "topic_already_exists", Some("name"));
    refused(
        c("POST", "/api/v1/topics", Some(json!({"name": "u", "configs": {"retention.ms": "soon"}}))),
        400,
        "invalid_config",
        Some("configs"),
    );
    refused(
        c("POST", "/api/v1/topics", Some(json!({"name": "u", "partitions": 0}))),
        400,
        "invalid_field",
        Some("partitions"),
    );
    refused(
        c("POST", "/api/v1/topics", Some(json!({"name": "u", "partitions": "x"}))),
        400,
        "invalid_field",
        Some("partitions"),
    );
    refused(c("POST", "/api/v1/topics", Some(json!({"name": "u", "bogus": 1}))), 400, "invalid_field", Some("bogus"));
    refused(c("POST", "/api/v1/topics", Some(json!({}))), 400, "invalid_field", Some("name"));
    refused(c("POST", "/api/v1/topics", Some(json!({"name": "bad name!"}))), 400, "invalid_topic_name", Some("name"));
    let malformed = common::http_with(
        &addr,
        "POST",
        "/api/v1/topics",
        "Content-Type: application/json\r\nx-weir-console: 1\r\n",
        b"{\"name\": ",
    );
    refused((malformed.0, serde_json::from_str(&malformed.1).unwrap()), 400, "malformed_json", Some("name"));
    let no_csrf = http(&addr, "POST", "/api/v1/topics", br#"{"name":"u"}"#);
    refused((no_csrf.0, serde_json::from_str(&no_csrf.1).unwrap()), 403, "csrf", Some("x-weir-console"));
    refused(c("GET", "/api/v1/topics?limit=0", None), 400, "invalid_field", Some("limit"));
    refused(c("GET", "/api/v1/topics?sort=colour", None), 400, "invalid_field", Some("sort"));
    refused(c("GET", "/api/v1/topics?limit=ten", None), 400, "invalid_query", Some("limit"));
    refused(
        c("PATCH", "/api/v1/topics/t/configs", Some(json!({"set": {"max.message.bytes": "big"}}))),
        400,
        "invalid_config",
        Some("set"),
    );
    refused(c("PATCH", "/api/v1/topics/t/configs", Some(json!({}))), 400, "invalid_field", Some("set"));
    refused(
        c("PATCH", "/api/v1/topics/nope/configs", Some(json!({"reset": ["retention.ms"]}))),
        404,
        "unknown_topic",
        Some("name"),
    );
    refused(c("DELETE", "/api/v1/topics/t", None), 400, "invalid_field", Some("confirm"));
    refused(c("DELETE", "/api/v1/topics/t?confirm=x", None), 400, "invalid_field", Some("confirm"));
    refused(c("DELETE", "/api/v1/topics/nope?confirm=nope", None), 404, "unknown_topic", Some("name"));
    refused(
        c("POST", "/api/v1/topics/t/purge", Some(json!({"partition": 9, "offset": 0}))),
        404,
        "unknown_partition",
        Some("partition"),
    );
    refused(
        c("POST", "/api/v1/topics/t/purge", Some(json!({"partition": 0, "offset": 99}))),
        416,
        "offset_out_of_range",
        Some("offset"),
    );

    // Messages.
    refused(
        c("GET", "/api/v1/topics/t/messages?start=offset&offset=999", None),
        416,
        "offset_out_of_range",
        Some("offset"),
    );
    refused(c("GET", "/api/v1/topics/t/messages?start=offset", None), 400, "invalid_field", Some("offset"));
    refused(c("GET", "/api/v1/topics/t/messages?start=middle", None), 400, "invalid_field", Some("start"));
    refused(c("GET", "/api/v1/topics/t/messages?limit=501", None), 400, "invalid_field", Some("limit"));
    refused(c("GET", "/api/v1/topics/t/messages?partition=7", None), 404, "unknown_partition", Some("partition"));
    refused(
        c("GET", &format!("/api/v1/topics/t/messages?value={}", "x".repeat(300)), None),
        400,
        "invalid_field",
        Some("value"),
    );
    refused(c("GET", "/api/v1/topics/nope/messages", None), 404, "unknown_topic", Some("name"));
    ok(c("POST", "/api/v1/topics/t/messages", Some(json!({"value": "one"}))), 201);
    refused(c("GET", "/api/v1/topics/t/messages?module=nope", None), 404, "unknown_module", Some("module"));
    refused(
        c("POST", "/api/v1/topics/t/messages", Some(json!({"partition": 5, "value": "x"}))),
        404,
        "unknown_partition",
        Some("partition"),
    );
    refused(
        c("POST", "/api/v1/topics/t/messages", Some(json!({"encoding": "base64", "value": "!!"}))),
        400,
        "invalid_field",
        Some("value"),
    );
    refused(
        c("POST", "/api/v1/topics/t/messages", Some(json!({"encoding": "rot13"}))),
        400,
        "invalid_field",
        Some("encoding"),
    );
    refused(
        c("POST", "/api/v1/topics/t/messages", Some(json!({"partition": 0, "value": "v".repeat(4096)}))),
        413,
        "message_too_large",
        Some("value"),
    );
    refused(c("POST", "/api/v1/topics/nope/messages", Some(json!({"value": "x"}))), 404, "unknown_topic", Some("name"));

    // Groups.
    refused(c("GET", "/api/v1/groups/nope", None), 404, "group_not_found", Some("group_id"));
    refused(c("DELETE", "/api/v1/groups/nope", None), 404, "group_not_found", Some("group_id"));
    refused(
        c("POST", "/api/v1/groups/g/reset-offsets", Some(json!({"topic": "nope", "to": "earliest"}))),
        404,
        "unknown_topic",
        Some("topic"),
    );
    refused(
        c("POST", "/api/v1/groups/g/reset-offsets", Some(json!({"topic": "t", "to": "sideways"}))),
        400,
        "invalid_field",
        Some("to"),
    );
    refused(
        c("POST", "/api/v1/groups/g/reset-offsets", Some(json!({"topic": "t", "to": "offset", "offsets": {"0": 999}}))),
        416,
        "offset_out_of_range",
        Some("offsets"),
    );
    refused(
        c("POST", "/api/v1/groups/g/reset-offsets", Some(json!({"topic": "t", "to": "timestamp"}))),
        400,
        "invalid_field",
        Some("timestamp"),
    );
    refused(
        c("POST", "/api/v1/groups/g/reset-offsets", Some(json!({"topic": "t", "to": "earliest", "partitions": [4]}))),
        404,
        "unknown_partition",
        Some("partitions"),
    );

    // Modules.
    let not_wasm = json!({"name": "m", "kind": "transform", "inputs": ["t"], "component_base64": "bm90IHdhc20="});
    refused(c("POST", "/api/v1/modules", Some(not_wasm)), 400, "invalid_module", Some("component_base64"));
    let bad_kind = json!({"name": "m", "kind": "juggler", "inputs": ["t"], "component_base64": "AA=="});
    refused(c("POST", "/api/v1/modules", Some(bad_kind)), 400, "invalid_module", Some("component_base64"));
    refused(
        c("POST", "/api/v1/modules", Some(json!({"name": "m", "kind": "transform", "component_base64": "%%%"}))),
        400,
        "invalid_field",
        Some("component_base64"),
    );
    // Past the broker's module_bytes_max (8 MiB) but within the request body limit.
    let big = "A".repeat((8 << 20) / 3 * 4 + 4096);
    refused(
        c("POST", "/api/v1/modules", Some(json!({"name": "m", "kind": "transform", "component_base64": big}))),
        413,
        "module_too_large",
        Some("component_base64"),
    );
    // Past the body limit itself.
    let huge = "A".repeat(16 << 20);
    let (status, body) =
        c("POST", "/api/v1/modules", Some(json!({"name": "m", "kind": "transform", "component_base64": huge})));
    assert_eq!(status, 413, "{body}");
    refused(c("GET", "/api/v1/modules/nope", None), 404, "unknown_module", Some("name"));
    refused(
        c("POST", "/api/v1/modules/nope/actions", Some(json!({"action": "pause"}))),
        404,
        "unknown_module",
        Some("name"),
    );
    refused(
        c("POST", "/api/v1/modules/nope/actions", Some(json!({"action": "explode"}))),
        400,
        "invalid_field",
        Some("action"),
    );

    refused(c("GET", "/api/v1/nope", None), 404, "unknown_route", None);
    refused(
        c("PUT", "/api/v1/schema-compatibility", Some(json!({"compatibility": "FULL", "x": 1}))),
        400,
        "invalid_field",
        Some("x"),
    );
    // DNS rebinding: a page of another site whose name resolves to 127.0.0.1 sends its own Host.
    let (status, body) = common::http_with(&addr, "GET", "/api/v1/topics", "Host: rebound.example:8080\r\n", b"");
    refused((status, serde_json::from_str(&body).unwrap()), 421, "host", Some("host"));
    // The broker is fine after all of it.
    assert_eq!(ok(c("GET", "/api/v1/topics/t", None), 200)["partitions"].as_array().map(Vec::len), Some(2));
}

#[test]
fn topics_are_created_listed_changed_purged_and_deleted_through_the_api() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    let c = |method: &str, path: &str, body: Option<Value>| console(&addr, method, path, body);
    for (name, partitions) in [("orders", 3), ("audit", 1), ("clicks", 2)] {
        let created = ok(c("POST", "/api/v1/topics", Some(json!({"name": name, "partitions": partitions}))), 201);
        assert_eq!(created["partitions"].as_array().map(Vec::len), Some(partitions));
    }
    let list = ok(c("GET", "/api/v1/topics?sort=partitions&desc=true", None), 200);
    let names: Vec<&str> = list["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders", "clicks", "audit"]);
    assert_eq!(list["total"], 3);
    let page = ok(c("GET", "/api/v1/topics?search=i&limit=1&offset=1", None), 200);
    assert_eq!((page["total"].as_u64(), page["topics"][0]["name"].as_str()), (Some(2), Some("clicks")));

    let changed =
        ok(c("PATCH", "/api/v1/topics/orders/configs", Some(json!({"set": {"retention.ms": "3600000"}}))), 200);
    let retention = changed["configs"].as_array().unwrap().iter().find(|e| e["name"] == "retention.ms").unwrap();
    assert_eq!((retention["value"].as_str(), retention["is_default"].as_bool()), (Some("3600000"), Some(false)));

    for i in 0..10 {
        ok(
            c("POST", "/api/v1/topics/audit/messages", Some(json!({"key": format!("k{i}"), "value": format!("v{i}")}))),
            201,
        );
    }
    let purged = ok(c("POST", "/api/v1/topics/audit/purge", Some(json!({"partition": 0, "offset": 4}))), 200);
    assert_eq!(purged["log_start_offset"], 4);
    let detail = ok(c("GET", "/api/v1/topics/audit", None), 200);
    assert_eq!(
        (detail["partitions"][0]["log_start_offset"].as_i64(), detail["partitions"][0]["high_watermark"].as_i64()),
        (Some(4), Some(10))
    );

    let (status, _) = c("DELETE", "/api/v1/topics/clicks?confirm=clicks", None);
    assert_eq!(status, 204);
    refused(c("GET", "/api/v1/topics/clicks", None), 404, "unknown_topic", Some("name"));
}

#[test]
fn the_message_browser_reads_filters_decodes_avro_and_stays_within_its_bounds() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    let c = |method: &str, path: &str, body: Option<Value>| console(&addr, method, path, body);
    ok(c("POST", "/api/v1/topics", Some(json!({"name": "events", "partitions": 2}))), 201);
    for i in 0..40 {
        let level = if i % 4 == 0 { "error" } else { "info" };
        let record = json!({
            "partition": i % 2,
            "key": format!("user-{i}"),
            "value": format!(r#"{{"level":"{level}","n":{i}}}"#),
            "headers": [{"key": "trace", "value": format!("t{i}")}],
        });
        ok(c("POST", "/api/v1/topics/events/messages", Some(record)), 201);
    }
    let all = ok(c("GET", "/api/v1/topics/events/messages?limit=500", None), 200);
    assert_eq!(all["records"].as_array().unwrap().len(), 40);
    assert_eq!(all["stopped"], "end");
    let errors = ok(c("GET", "/api/v1/topics/events/messages?value=%22error%22", None), 200);
    assert_eq!(errors["records"].as_array().unwrap().len(), 10);
    assert!(errors["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["value"]["text"].as_str().unwrap().contains("error")));
    let by_header = ok(c("GET", "/api/v1/topics/events/messages?header=t17", None), 200);
    assert_eq!(by_header["records"][0]["key"]["text"], "user-17");
    let by_key = ok(c("GET", "/api/v1/topics/events/messages?partition=1&key=user-3", None), 200);
    let keys: Vec<&str> =
        by_key["records"].as_array().unwrap().iter().map(|r| r["key"]["text"].as_str().unwrap()).collect();
    assert_eq!(keys, ["user-3", "user-31", "user-33", "user-35", "user-37", "user-39"]);
    let newest = ok(c("GET", "/api/v1/topics/events/messages?partition=0&start=newest&limit=3", None), 200);
    let offsets: Vec<i64> =
        newest["records"].as_array().unwrap().iter().map(|r| r["offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, [17, 18, 19]);
    let from = ok(c("GET", "/api/v1/topics/events/messages?partition=0&start=offset&offset=15&limit=2", None), 200);
    assert_eq!(from["records"][0]["offset"], 15);
    assert_eq!(from["stopped"], "limit");
    assert_eq!(from["positions"][0]["next_offset"], 17);
    let later = ok(
        c(
            "GET",
            &format!("/api/v1/topics/events/messages?start=timestamp&timestamp={}", weir_sdk::now_ms() + 60_000),
            None,
        ),
        200,
    );
    assert_eq!(later["records"].as_array().unwrap().len(), 0);

    // A value in the schema registry's wire format is shown decoded with its schema.
    let (id, value) = common::avro_order(&broker.registry_addr, "events-value", 7, "<b>tea</b>");
    let at = ok(
        c(
            "POST",
            "/api/v1/topics/events/messages",
            Some(json!({"partition": 1, "encoding": "base64", "value": value})),
        ),
        201,
    );
    let shown = ok(
        c("GET", &format!("/api/v1/topics/events/messages?partition=1&start=offset&offset={}", at["offset"]), None),
        200,
    );
    assert_eq!(shown["records"][0]["value"]["schema_id"], id);
    assert_eq!(shown["records"][0]["value"]["decoded"], json!({"id": 7, "item": "<b>tea</b>"}));

    // Bounds: a value past the preview is cut, and says so.
    ok(c("POST", "/api/v1/topics", Some(json!({"name": "big", "configs": {"max.message.bytes": "1048576"}}))), 201);
    ok(c("POST", "/api/v1/topics/big/messages", Some(json!({"value": "x".repeat(200_000)}))), 201);
    let big = ok(c("GET", "/api/v1/topics/big/messages", None), 200);
    assert_eq!(big["records"][0]["value"]["size"], 200_000);
    assert_eq!(big["records"][0]["value"]["truncated"], true);
    assert_eq!(big["records"][0]["value"]["text"].as_str().map(str::len), Some(64 << 10));
    // What a browse holds stays within the answer's bound while it reads: 64 previews of
    // 64 KiB fill the 4 MiB, and the browse stops there, saying so and where it stopped.
    ok(c("POST", "/api/v1/topics", Some(json!({"name": "wide", "configs": {"max.message.bytes": "1048576"}}))), 201);
    for _ in 0..70 {
        ok(c("POST", "/api/v1/topics/wide/messages", Some(json!({"value": "w".repeat(70_000)}))), 201);
    }
    let wide = ok(c("GET", "/api/v1/topics/wide/messages?limit=500", None), 200);
    assert_eq!(wide["records"].as_array().map(Vec::len), Some(64));
    assert_eq!(
        (wide["stopped"].as_str(), wide["positions"][0]["next_offset"].as_i64()),
        (Some("answer_bytes"), Some(64))
    );
}

#[test]
fn a_groups_lag_shows_and_its_offsets_reset_only_while_it_has_no_members() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    let c = |method: &str, path: &str, body: Option<Value>| console(&addr, method, path, body);
    ok(c("POST", "/api/v1/topics", Some(json!({"name": "jobs", "partitions": 2}))), 201);
    for i in 0..20 {
        ok(
            c("POST", "/api/v1/topics/jobs/messages", Some(json!({"partition": i % 2, "value": format!("job {i}")}))),
            201,
        );
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut member = runtime.block_on(async {
        let mut member =
            weir_sdk::GroupConsumer::new(broker.client().await, weir_sdk::GroupConsumerConfig::new("workers"));
        member.subscribe(&["jobs"]).await.unwrap();
        let mut read = 0;
        while read < 20 {
            read += member.poll(Duration::from_secs(5)).await.unwrap().len();
        }
        member.commit().await.unwrap();
        member
    });
    let group = ok(c("GET", "/api/v1/groups/workers", None), 200);
    assert_eq!(group["state"], "Stable");
    assert_eq!(group["total_lag"], 0);
    let members = group["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    let mut assigned: Vec<(String, u64)> = members[0]["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["topic"].as_str().unwrap().to_owned(), a["partition"].as_u64().unwrap()))
        .collect();
    assigned.sort();
    assert_eq!(assigned, [("jobs".to_owned(), 0), ("jobs".to_owned(), 1)]);
    refused(
        c("POST", "/api/v1/groups/workers/reset-offsets", Some(json!({"topic": "jobs", "to": "earliest"}))),
        409,
        "non_empty_group",
        Some("group_id"),
    );
    runtime.block_on(async {
        member.commit().await.unwrap();
    });
    runtime.block_on(member.close()).unwrap();

    let plan = ok(
        c(
            "POST",
            "/api/v1/groups/workers/reset-offsets",
            Some(json!({"topic": "jobs", "to": "earliest", "dry_run": true})),
        ),
        200,
    );
    assert_eq!(
        plan["offsets"],
        json!([
            {"topic": "jobs", "partition": 0, "from": 10, "to": 0},
            {"topic": "jobs", "partition": 1, "from": 10, "to": 0},
        ])
    );
    assert_eq!(ok(c("GET", "/api/v1/groups/workers", None), 200)["total_lag"], 0, "a dry run changes nothing");
    ok(
        c(
            "POST",
            "/api/v1/groups/workers/reset-offsets",
            Some(json!({"topic": "jobs", "to": "offset", "offsets": {"0": 4}})),
        ),
        200,
    );
    let group = ok(c("GET", "/api/v1/groups/workers", None), 200);
    assert_eq!((group["state"].as_str(), group["total_lag"].as_i64()), (Some("Empty"), Some(6)));
    let list = ok(c("GET", "/api/v1/groups", None), 200);
    assert_eq!(list[0]["group_id"], "workers");
    assert_eq!(list[0]["total_lag"], 6);
    let (status, _) = c("DELETE", "/api/v1/groups/workers", None);
    assert_eq!(status, 204);
    refused(c("GET", "/api/v1/groups/workers", None), 404, "group_not_found", Some("group_id"));
}

#[test]
fn the_openapi_document_validates_and_lists_every_route() {
    let broker = BrokerProcess::start(&[]);
    let (status, document) = console(&broker.console_addr.to_string(), "GET", "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    let expected = [
        "/api/v1/cluster",
        "/api/v1/events",
        "/api/v1/groups",
        "/api/v1/groups/{group_id}",
        "/api/v1/groups/{group_id}/reset-offsets",
        "/api/v1/modules",
        "/api/v1/modules/inspect",
        "/api/v1/modules/try",
        "/api/v1/modules/{name}",
        "/api/v1/modules/{name}/actions",
        "/api/v1/openapi.json",
        "/api/v1/overview",
        "/api/v1/schema-compatibility",
        "/api/v1/schemas",
        "/api/v1/schemas/{subject}",
        "/api/v1/schemas/{subject}/check",
        "/api/v1/schemas/{subject}/compatibility",
        "/api/v1/topics",
        "/api/v1/topics/{name}",
        "/api/v1/topics/{name}/configs",
        "/api/v1/topics/{name}/messages",
        "/api/v1/topics/{name}/purge",
        "/metrics",
    ];
    assert_eq!(paths, expected);
    // Every route the document lists answers (a GET where it has one), so the document and the
    // router are the same list.
    for (path, item) in document["paths"].as_object().unwrap() {
        if item.get("get").is_some() && !path.contains('{') && path != "/api/v1/events" {
            let (status, body) = console(&broker.console_addr.to_string(), "GET", path, None);
            assert_eq!(status, 200, "GET {path}: {body}");
        }
    }
    // A real validator of OpenAPI documents (openapi-spec-validator, installed by the test command).
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), document.to_string()).unwrap();
    let out = std::process::Command::new(std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "the OpenAPI document does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_scrape_as_prometheus_text_after_traffic() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    ok(console(&addr, "POST", "/api/v1/topics", Some(json!({"name": "m\"etrics"}))), 400);
    ok(console(&addr, "POST", "/api/v1/topics", Some(json!({"name": "metered", "partitions": 2}))), 201);
    for i in 0..25 {
        ok(console(&addr, "POST", "/api/v1/topics/metered/messages", Some(json!({"value": format!("r{i}")}))), 201);
    }
    ok(console(&addr, "GET", "/api/v1/topics/metered/messages?limit=500", None), 200);
    let (_, refused) =
        console(&addr, "POST", "/api/v1/topics/metered/messages", Some(json!({"partition": 9, "value": "x"})));
    assert_eq!(refused["error"]["code"], "unknown_partition");
    let (status, text) = common::http_with(&addr, "GET", "/metrics", "", b"");
    assert_eq!(status, 200);
    // Parsed by the Prometheus project's own parser (prometheus-client for Python), which
    // fails on anything the text format does not allow.
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the metrics do not parse:\n{text}");
    let samples: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sample = |name: &str, labels: &str| samples[format!("{name}{labels}")].as_f64();
    assert_eq!(sample("weir_produced_records_total", r#"{"topic": "metered"}"#), Some(25.0), "{samples}");
    assert!(sample("weir_produced_bytes_total", r#"{"topic": "metered"}"#).unwrap() > 25.0 * 60.0);
    assert!(sample("weir_fetched_bytes_total", r#"{"topic": "metered"}"#).unwrap() > 0.0);
    assert_eq!(sample("weir_partitions", r#"{"topic": "metered"}"#), Some(2.0));
    assert!(sample("weir_log_bytes", r#"{"topic": "metered"}"#).unwrap() > 0.0);
    assert_eq!(sample("weir_request_errors_total", r#"{"code": "unknown_partition"}"#), Some(1.0));
    assert_eq!(sample("weir_offline_partitions", "{}"), Some(0.0));
    // Direct segment writes are off by default; small records never reach a segment.
    assert_eq!(sample("weir_segment_direct_writes_enabled", "{}"), Some(0.0));
    assert_eq!(sample("weir_segment_direct_writes_total", "{}"), Some(0.0));
    assert_eq!(sample("weir_segment_direct_reads_total", "{}"), Some(0.0));
}

#[test]
fn schemas_are_checked_before_saving_registered_listed_and_their_levels_set() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    let c = |method: &str, path: &str, body: Option<Value>| console(&addr, method, path, body);
    let v1 = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"}]}"#;
    let v2 = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"},{"name":"email","type":"string","default":""}]}"#;
    // Removing a field's default makes it unreadable for old data: not BACKWARD compatible.
    let breaking =
        r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"},{"name":"age","type":"int"}]}"#;

    assert_eq!(ok(c("GET", "/api/v1/schemas", None), 200), json!({"compatibility": "BACKWARD", "subjects": []}));
    let first = ok(c("POST", "/api/v1/schemas/users-value/check", Some(json!({"schema": v1}))), 200);
    assert_eq!(first["compatible"], true, "a subject without versions takes anything");
    assert_eq!(
        ok(c("POST", "/api/v1/schemas/users-value", Some(json!({"schema": v1}))), 201),
        json!({"id": 1, "version": 1})
    );
    let check = ok(c("POST", "/api/v1/schemas/users-value/check", Some(json!({"schema": breaking}))), 200);
    assert_eq!((check["compatible"].as_bool(), check["compatibility"].as_str()), (Some(false), Some("BACKWARD")));
    assert!(check["problems"][0].as_str().is_some_and(|p| p.contains("age")), "{check}");
    refused(
        c("POST", "/api/v1/schemas/users-value", Some(json!({"schema": breaking}))),
        409,
        "incompatible_schema",
        Some("schema"),
    );
    assert_eq!(
        ok(c("POST", "/api/v1/schemas/users-value/check", Some(json!({"schema": v2}))), 200)["compatible"],
        true
    );
    assert_eq!(ok(c("POST", "/api/v1/schemas/users-value", Some(json!({"schema": v2}))), 201)["version"], 2);
    let json_schema = r#"{"type":"object","properties":{"n":{"type":"integer"}}}"#;
    ok(c("POST", "/api/v1/schemas/events-value", Some(json!({"schema": json_schema, "schema_type": "JSON"}))), 201);

    let list = ok(c("GET", "/api/v1/schemas", None), 200);
    assert_eq!(list["subjects"][0]["subject"], "events-value");
    assert_eq!(list["subjects"][0]["schema_type"], "JSON");
    assert_eq!(list["subjects"][1]["versions"], json!([1, 2]));
    let subject = ok(c("GET", "/api/v1/schemas/users-value", None), 200);
    assert_eq!(subject["versions"][1]["schema"], v2);

    ok(c("PUT", "/api/v1/schemas/users-value/compatibility", Some(json!({"compatibility": "NONE"}))), 200);
    assert_eq!(
        ok(c("POST", "/api/v1/schemas/users-value/check", Some(json!({"schema": breaking}))), 200)["compatible"],
        true
    );
    ok(c("PUT", "/api/v1/schema-compatibility", Some(json!({"compatibility": "FULL"}))), 200);
    let list = ok(c("GET", "/api/v1/schemas", None), 200);
    assert_eq!(
        (list["compatibility"].as_str(), list["subjects"][0]["compatibility"].as_str()),
        (Some("FULL"), Some("FULL"))
    );
    assert_eq!(list["subjects"][1]["compatibility"], "NONE");

    refused(c("GET", "/api/v1/schemas/nope", None), 404, "subject_not_found", Some("subject"));
    refused(
        c("POST", "/api/v1/schemas/x", Some(json!({"schema": "{not json"}))),
        400,
        "invalid_schema",
        Some("schema"),
    );
    refused(
        c("POST", "/api/v1/schemas/x/check", Some(json!({"schema": v1, "schema_type": "XML"}))),
        400,
        "invalid_schema",
        Some("schema_type"),
    );
    refused(
        c("PUT", "/api/v1/schema-compatibility", Some(json!({"compatibility": "SIDEWAYS"}))),
        400,
        "invalid_compatibility",
        Some("compatibility"),
    );
    refused(c("POST", "/api/v1/schemas/x", Some(json!({"text": v1}))), 400, "invalid_field", Some("text"));
}

#[test]
fn an_uploaded_component_is_inspected_before_it_is_deployed() {
    use base64::Engine;
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    let inspect = |package: &str| {
        let bytes = std::fs::read(weir_runtime::dev::build_plugin(package)).unwrap();
        let body = json!({"component_base64": base64::engine::general_purpose::STANDARD.encode(&bytes)});
        (bytes.len(), console(&addr, "POST", "/api/v1/modules/inspect", Some(body)))
    };
    let (size, answer) = inspect("weir-module-pii-mask");
    let pii = ok(answer, 200);
    assert_eq!(pii["kinds"], json!([{"kind": "transform", "contract": "0.2.3"}]));
    assert_eq!(pii["size_bytes"].as_u64(), Some(size as u64));
    assert_eq!(pii["sha256"].as_str().map(str::len), Some(64));
    assert!(pii["refusal"].is_null(), "{pii}");
    assert!(pii["imports"].as_array().unwrap().iter().all(|i| i["granted"] == true), "{pii}");
    assert!(pii["exports"].as_array().unwrap().iter().any(|e| e == "weir:plugin/packed-transformer@0.2.3"), "{pii}");

    let old = ok(inspect("weir-test-identity-v0-1").1, 200);
    assert_eq!(old["kinds"], json!([{"kind": "transform", "contract": "0.1.0"}]));

    let socket = ok(inspect("weir-test-open-socket").1, 200);
    let refusal = socket["refusal"].as_str().unwrap_or_default();
    assert!(refusal.contains("wasi:sockets") && refusal.contains("network access"), "{socket}");
    assert!(socket["imports"].as_array().unwrap().iter().any(|i| i["granted"] == false), "{socket}");

    let not_wasm = json!({"component_base64": "bm90IHdhc20="});
    refused(
        console(&addr, "POST", "/api/v1/modules/inspect", Some(not_wasm)),
        400,
        "invalid_module",
        Some("component_base64"),
    );
    // Nothing was kept: no deployment, no stored component.
    assert_eq!(ok(console(&addr, "GET", "/api/v1/modules", None), 200)["modules"], json!([]));
}

#[test]
fn a_component_is_tried_on_typed_and_stored_records_without_being_deployed() {
    use base64::Engine;
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    let c = |method: &str, path: &str, body: Option<Value>| console(&addr, method, path, body);
    let component = |package: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(weir_runtime::dev::build_plugin(package)).unwrap())
    };
    let mask = component("weir-module-pii-mask");
    let typed = json!({
        "component_base64": mask,
        "kind": "transform",
        "params": {"paths": "/email"},
        "records": [{"key": "a", "value": r#"{"email":"a@example.com","n":1}"#}, {"value": "not json"}],
    });
    let tried = ok(c("POST", "/api/v1/modules/try", Some(typed)), 200);
    assert_eq!(tried["kind"], "transform");
    let first = &tried["results"][0];
    assert_eq!(first["input"]["key"]["text"], "a");
    let out: Value = serde_json::from_str(first["outputs"][0]["value"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(out, json!({"email": "***", "n": 1}));
    assert!(tried["results"][1]["error"].as_str().is_some_and(|e| !e.is_empty()), "{tried}");

    ok(c("POST", "/api/v1/topics", Some(json!({"name": "people"}))), 201);
    for i in 0..5 {
        ok(
            c(
                "POST",
                "/api/v1/topics/people/messages",
                Some(json!({"value": format!(r#"{{"email":"p{i}@example.com"}}"#)})),
            ),
            201,
        );
    }
    let stored = json!({
        "component_base64": mask,
        "kind": "transform",
        "params": {"paths": "/email"},
        "from": {"topic": "people", "partition": 0, "offset": 2, "count": 10},
    });
    let tried = ok(c("POST", "/api/v1/modules/try", Some(stored)), 200);
    let results = tried["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "offsets 2 to 4");
    assert_eq!(results[0]["input"]["offset"], 2);
    assert!(results.iter().all(|r| r["outputs"][0]["value"]["text"] == r#"{"email":"***"}"#), "{tried}");

    let partitioner = json!({
        "component_base64": component("weir-module-key-hash-partitioner"),
        "kind": "partitioner",
        "partitions": 4,
        "records": [{"key": "k1", "value": "x"}, {"key": "k1", "value": "y"}, {"key": "k2", "value": "z"}],
    });
    let tried = ok(c("POST", "/api/v1/modules/try", Some(partitioner)), 200);
    let chosen: Vec<u64> =
        tried["results"].as_array().unwrap().iter().map(|r| r["partition"].as_u64().unwrap()).collect();
    assert_eq!(chosen[0], chosen[1], "the same key, the same partition");
    assert!(chosen.iter().all(|p| *p < 4));

    let base = |extra: Value| {
        let mut body = json!({"component_base64": mask, "kind": "transform", "records": [{"value": "x"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    refused(
        c("POST", "/api/v1/modules/try", Some(base(json!({"kind": "juggler"})))),
        400,
        "invalid_field",
        Some("kind"),
    );
    refused(
        c("POST", "/api/v1/modules/try", Some(base(json!({"records": []})))),
        400,
        "invalid_field",
        Some("records"),
    );
    let many: Vec<Value> = (0..101).map(|_| json!({"value": "x"})).collect();
    refused(
        c("POST", "/api/v1/modules/try", Some(base(json!({"records": many})))),
        400,
        "invalid_field",
        Some("records"),
    );
    refused(
        c("POST", "/api/v1/modules/try", Some(base(json!({"component_base64": "bm90IHdhc20="})))),
        400,
        "invalid_module",
        Some("component_base64"),
    );
    refused(
        c(
            "POST",
            "/api/v1/modules/try",
            Some(base(json!({"from": {"topic": "nope", "partition": 0, "offset": 0, "count": 1}, "records": null}))),
        ),
        404,
        "unknown_topic",
        Some("from"),
    );
    // Nothing was deployed or kept.
    assert_eq!(ok(c("GET", "/api/v1/modules", None), 200)["modules"], json!([]));
}

#[test]
fn the_cluster_view_shows_the_controller_brokers_and_their_partitions() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    ok(console(&addr, "POST", "/api/v1/topics", Some(json!({"name": "a", "partitions": 3}))), 201);
    let cluster = ok(console(&addr, "GET", "/api/v1/cluster", None), 200);
    assert_eq!(cluster["status"]["controller_leader"], 1);
    assert_eq!(cluster["brokers"], json!([{"node_id": 1, "leader_of": 3, "replica_of": 3, "in_sync_of": 3}]));
    assert_eq!(cluster["reassignments"], json!([]));
}

/// Opens `/api/v1/events` and reads up to the first event: (status, that event's data).
fn first_event(addr: &str) -> (u16, std::net::TcpStream, String) {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut data = String::new();
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(d) = line.strip_prefix("data:") {
            data = d.trim().to_owned();
            break;
        }
        // A refused stream answers JSON with its length; its body is the last line.
        if status != 200 && line.starts_with('{') {
            data = line;
            break;
        }
    }
    (status, stream, data)
}

#[test]
fn the_overview_streams_as_server_sent_events_and_open_streams_are_bounded() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.console_addr.to_string();
    ok(console(&addr, "POST", "/api/v1/topics", Some(json!({"name": "live", "partitions": 4}))), 201);
    let overview = ok(console(&addr, "GET", "/api/v1/overview", None), 200);
    assert_eq!((overview["topics"].as_u64(), overview["partitions"].as_u64()), (Some(1), Some(4)));
    let (status, first, data) = first_event(&addr);
    assert_eq!(status, 200);
    let event: Value = serde_json::from_str(&data).unwrap();
    assert_eq!((event["topics"].as_u64(), event["partitions"].as_u64()), (Some(1), Some(4)), "{event}");
    // Rates follow traffic: the next events count what was produced.
    for i in 0..50 {
        ok(console(&addr, "POST", "/api/v1/topics/live/messages", Some(json!({"value": format!("v{i}")}))), 201);
    }
    let mut streams = vec![first];
    let mut rated = false;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(600));
        let (_, stream, data) = first_event(&addr);
        streams.push(stream);
        let event: Value = serde_json::from_str(&data).unwrap();
        if event["rate"]["records_per_sec"].as_f64().unwrap_or(0.0) > 0.0 {
            rated = true;
            break;
        }
    }
    assert!(rated, "no produce rate shown after 50 records");
    // Streams are bounded: past EVENT_STREAMS_MAX open ones, a new one is refused.
    while streams.len() < 16 {
        let (status, stream, _) = first_event(&addr);
        assert_eq!(status, 200);
        streams.push(stream);
    }
    let (status, _, body) = first_event(&addr);
    assert_eq!(status, 429, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "limit_reached");
    // Closing one frees its place.
    drop(streams.pop());
    let mut reopened = false;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(200));
        if first_event(&addr).0 == 200 {
            reopened = true;
            break;
        }
    }
    assert!(reopened, "a closed stream's place was not freed");
}
