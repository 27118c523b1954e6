//! The web console in a real browser (headless Chromium over WebDriver) against a real
//! `weir serve`: what a user does on its pages, checked on the page and through the API. Each
//! test saves screenshots under target/tmp/console-browser/<test>/ and fails on any error in
//! the browser's console. `WEIR_SCREENSHOTS=docs/screenshots` copies them there (the README's
//! screenshots are made so).

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::{console, wait_until, BrokerProcess};
use fantoccini::Locator;
use serde_json::{json, Value};

fn api(broker: &BrokerProcess, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, body) = console(&broker.console_addr.to_string(), method, path, body);
    assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_made_in_the_browser_shows_records_produced_by_the_cli_filtered_decoded_and_escaped() {
    let broker = BrokerProcess::start(&[]);
    let browser = Browser::start("topics_and_messages").await;
    let url = broker.console_url();

    browser.goto(&url).await;
    browser.wait_text_is("#ov-topics", "0").await;
    browser.screenshot("overview").await;

    // Create a topic from the Topics page.
    browser.click("nav a[data-page=topics]").await;
    browser.fill("#new-topic-name", "orders").await;
    browser.fill("#new-topic-partitions", "3").await;
    browser.fill("#new-topic-configs", "retention.ms=86400000").await;
    browser.click("#create-topic button[type=submit]").await;
    browser.wait_text("#topics-table", "orders").await;
    let created = api(&broker, "GET", "/api/v1/topics/orders", None);
    assert_eq!(created["partitions"].as_array().map(Vec::len), Some(3));
    let retention =
        created["configs"].as_array().unwrap().iter().find(|c| c["name"] == "retention.ms").unwrap().clone();
    assert_eq!(retention["value"], "86400000");
    // A refused create shows its error next to the form.
    browser.fill("#new-topic-name", "orders").await;
    browser.click("#create-topic button[type=submit]").await;
    browser.wait_text("#create-topic + div .error", "already exists").await;
    browser
        .expect_console_errors(&["/api/v1/topics - Failed to load resource: the server responded with a status of 409"])
        .await;
    browser.screenshot("topics").await;

    // Records produced with the CLI, found in the message browser with a filter.
    let lines = [
        r#"k1|{"level":"info","msg":"started"}"#,
        r#"k2|{"level":"error","msg":"disk full"}"#,
        r#"k3|{"level":"info","msg":"stopped"}"#,
        r#"k4|<img src=x onerror=alert(1)>"#,
    ]
    .join("\n");
    let (ok, _, err) = broker.cli(&["produce", "orders", "--partition", "0", "--key-separator", "|"], Some(&lines));
    assert!(ok, "weir produce: {err}");
    browser.goto(&format!("{url}/#/topics/orders")).await;
    browser.wait_text("#records-table", "k4").await;
    browser.select("#browse-partition", "0").await;
    browser.fill("#filter-value", r#""level":"error""#).await;
    browser.click("#browse-button").await;
    browser.wait_text("#browse-status", "1 shown").await;
    let shown = browser.find("#records-table tbody").await.text().await.unwrap();
    assert!(shown.contains("disk full") && !shown.contains("started"), "{shown}");
    browser.screenshot("messages").await;

    // A value that is HTML shows as text: no element is made of it, and no script runs.
    browser.fill("#filter-value", "onerror").await;
    browser.click("#browse-button").await;
    browser.wait_text("#browse-status", "1 shown").await;
    let value = browser.find("#records-table .record-value").await.text().await.unwrap();
    assert_eq!(value, "<img src=x onerror=alert(1)>");
    let images = browser.client.find_all(Locator::Css("#browse-results img")).await.unwrap();
    assert!(images.is_empty(), "the record's value became an element");
    browser.screenshot("escaped").await;

    // A value in the schema registry's wire format, decoded with its Avro schema.
    let (id, value) = common::avro_order(&broker.registry_addr, "orders-value", 42, "green tea");
    api(
        &broker,
        "POST",
        "/api/v1/topics/orders/messages",
        Some(json!({"partition": 1, "encoding": "base64", "value": value})),
    );
    browser.select("#browse-partition", "1").await;
    browser.fill("#filter-value", "").await;
    browser.select("#browse-format", "schema").await;
    browser.click("#browse-button").await;
    let decoded = browser.wait_text("#records-table .record-value", "green tea").await;
    assert!(decoded.contains(&format!("schema {id}")) && decoded.contains("\"id\": 42"), "{decoded}");
    browser.screenshot("avro").await;

    // Schemas: the registered subject, a new version checked before it is saved, a diff.
    browser.goto(&format!("{url}/#/schemas")).await;
    browser.wait_text("#subjects-table", "orders-value").await;
    browser.click("#subjects-table a").await;
    browser.wait_text("#versions-table", "Order").await;
    let breaking = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"},{"name":"qty","type":"int"}]}"#;
    browser.fill("#schema-text", breaking).await;
    browser.click("#schema-register").await;
    browser.wait_text("#schema-check", "Not compatible (BACKWARD)").await;
    let next = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"},{"name":"qty","type":"int","default":1}]}"#;
    browser.fill("#schema-text", next).await;
    browser.click("#schema-register").await;
    browser.wait_text("#schema-status", "version 2").await;
    let diff = browser.wait_text("#schema-diff", "qty").await;
    assert!(diff.lines().any(|l| l.starts_with('+') && l.contains("\"qty\"")), "{diff}");
    browser.screenshot("schemas").await;

    // The cluster page: this node is its own controller and leads every partition.
    browser.goto(&format!("{url}/#/cluster")).await;
    browser.wait_text_is("#cluster-leader", "1").await;
    browser.wait_text("#voters-table", "leader").await;
    browser.wait_text("#brokers-table", "this node").await;
    browser.screenshot("cluster").await;

    // Usable in a narrow window: nothing but tables scrolls sideways, and the navigation wraps.
    browser.window(400, 900).await;
    for page in ["#/", "#/topics", "#/topics/orders", "#/groups", "#/modules", "#/schemas", "#/cluster"] {
        browser.goto(&format!("{url}/{page}")).await;
        browser.find("main h1").await;
        let fits = browser.eval("return document.documentElement.scrollWidth <= window.innerWidth").await;
        assert_eq!(fits, true, "{page} is wider than a 400 px window");
    }
    browser.goto(&format!("{url}/#/topics/orders")).await;
    browser.wait_text("#records-table", "k4").await;
    browser.screenshot("narrow").await;
    // Dark when the system is.
    browser.window(1280, 900).await;
    let background = "return getComputedStyle(document.body).backgroundColor";
    assert_eq!(browser.eval(background).await, "rgb(255, 255, 255)");
    browser.color_scheme("dark").await;
    assert_eq!(browser.eval(background).await, "rgb(18, 21, 27)");
    browser.screenshot("dark").await;

    browser.assert_no_console_errors().await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_transform_uploaded_and_deployed_in_the_browser_fills_its_output_topic() {
    let component = weir_runtime::dev::build_plugin("weir-module-pii-mask");
    let broker = BrokerProcess::start(&[]);
    let browser = Browser::start("modules").await;
    let url = broker.console_url();
    api(&broker, "POST", "/api/v1/topics", Some(json!({"name": "signups"})));
    api(&broker, "POST", "/api/v1/topics", Some(json!({"name": "signups-masked"})));

    browser.goto(&format!("{url}/#/modules")).await;
    browser.wait_text("#modules-list", "No modules deployed yet").await;
    // What the broker refuses is shown with its reason: a file that is not a component.
    let not_wasm = tempfile::Builder::new().suffix(".wasm").tempfile().unwrap();
    std::fs::write(not_wasm.path(), b"not a component").unwrap();
    browser.find("#module-file").await.send_keys(&not_wasm.path().to_string_lossy()).await.unwrap();
    browser.wait_text("#module-inspection .error", "not a WebAssembly file").await;
    browser.fill("#module-name", "mask").await;
    browser.fill("#module-inputs", "signups").await;
    browser.fill("#module-output", "signups-masked").await;
    browser.fill("#module-params", "paths=/email").await;
    browser.fill("#module-deadline", "250").await;
    browser.fill("#module-memory", "32").await;
    browser.click("#module-deploy").await;
    browser.wait_text("#deploy-status .error", "component_base64").await;
    browser
        .expect_console_errors(&[
            "/api/v1/modules/inspect - Failed to load resource: the server responded with a status of 400",
            "/api/v1/modules - Failed to load resource: the server responded with a status of 400",
        ])
        .await;

    // The component is shown for what it is before it is deployed.
    browser.find("#module-file").await.send_keys(&component.to_string_lossy()).await.unwrap();
    browser.wait_text("#module-kinds", "transform (weir:plugin@0.2.3)").await;
    browser.wait_text("#module-imports", "weir:plugin/host").await;
    browser.screenshot("module-inspected").await;
    // Tried on typed records before it is deployed.
    browser.fill("#try-input", "{\"email\":\"ann@example.com\"}").await;
    browser.click("#try-button").await;
    let tried = browser.wait_text("#try-table", "***").await;
    assert!(!tried.lines().any(|l| l.contains("ann@") && l.contains("***")), "{tried}");
    browser.click("#module-deploy").await;
    browser.wait_text("#deploy-status", "Deployed mask version 1").await;
    browser.wait_text("#modules-table", "mask").await;

    let lines: Vec<String> = (0..20).map(|i| format!(r#"{{"user":{i},"email":"user{i}@example.com"}}"#)).collect();
    let (ok, _, err) = broker.cli(&["produce", "signups"], Some(&lines.join("\n")));
    assert!(ok, "weir produce: {err}");
    wait_until(Duration::from_secs(30), "the transform's outputs", || async {
        let topic = api(&broker, "GET", "/api/v1/topics/signups-masked", None);
        topic["partitions"][0]["high_watermark"].as_i64() == Some(20)
    })
    .await;
    browser.goto(&format!("{url}/#/topics/signups-masked")).await;
    let shown = browser.wait_text("#records-table", "***").await;
    assert!(!shown.contains("@example.com"), "an address was not masked: {shown}");
    browser.screenshot("transform-output").await;
    browser.goto(&format!("{url}/#/modules")).await;
    browser.wait_text("#modules-table", "20").await;
    browser.screenshot("modules").await;
    // The deployment's own page: its versions, and the lines the module logged.
    browser.click("#modules-table a").await;
    browser.wait_text("#versions-table", "paths=/email").await;
    browser.wait_text("#versions-table", "250 ms, 32.0 MiB").await;
    browser.wait_text("#module-logs", "INFO mask@1").await;
    browser.wait_text("#module-logs", "masking /email").await;
    browser.screenshot("module").await;

    // A connector's page shows its grants (a secret by name, never its value) and each source
    // task's position.
    let generator = weir_runtime::dev::build_plugin("weir-module-generator");
    let (ok, _, err) = broker.cli(&["topic", "create", "generated"], None);
    assert!(ok, "{err}");
    let (ok, _, err) = broker.cli(
        &["connector", "create", "--name", "gen", "--kind", "source", "--component", &generator.to_string_lossy()]
            .into_iter()
            .chain(["--topic", "generated", "--param", "count=5", "--secret", "token=hunter2"])
            .collect::<Vec<_>>(),
        None,
    );
    assert!(ok, "weir connector create: {err}");
    browser.goto(&format!("{url}/#/modules/gen")).await;
    let grants = browser.wait_text("#connector-grants", "token").await;
    assert!(grants.contains("none") && !grants.contains("hunter2"), "{grants}");
    browser.wait_text("#connector-positions", "5:").await;
    let page = browser.wait_text("#module-detail", "source").await;
    assert!(!page.contains("hunter2"), "a secret's value is never shown: {page}");

    browser.assert_no_console_errors().await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_lag_falls_to_zero_in_the_browser_and_its_offsets_reset_there() {
    let broker = BrokerProcess::start(&[]);
    let browser = Browser::start("groups").await;
    let url = broker.console_url();
    api(&broker, "POST", "/api/v1/topics", Some(json!({"name": "jobs", "partitions": 2})));
    let produce = |from: usize| {
        for i in from..from + 20 {
            api(
                &broker,
                "POST",
                "/api/v1/topics/jobs/messages",
                Some(json!({"partition": i % 2, "value": format!("job {i}")})),
            );
        }
    };
    produce(0);
    let mut member = weir_sdk::GroupConsumer::new(broker.client().await, weir_sdk::GroupConsumerConfig::new("workers"));
    member.subscribe(&["jobs"]).await.unwrap();
    let mut read = 0;
    while read < 20 {
        read += member.poll(Duration::from_secs(5)).await.unwrap().len();
    }
    member.commit().await.unwrap();
    produce(20);

    browser.goto(&format!("{url}/#/groups")).await;
    browser.wait_text("#groups-table", "workers").await;
    browser.click("#groups-table a").await;
    browser.wait_text_is("#group-lag", "20").await;
    browser.wait_text_is("#group-state", "Stable").await;
    browser.screenshot("group-lagging").await;
    // The member catches up; the page, refreshing itself, shows the lag fall to zero.
    let mut read = 0;
    while read < 20 {
        read += member.poll(Duration::from_secs(5)).await.unwrap().len();
    }
    member.commit().await.unwrap();
    browser.wait_text_is("#group-lag", "0").await;
    browser.screenshot("group-caught-up").await;

    // Resetting is refused while the group has a member, and the reason is shown.
    browser.fill("#reset-topic", "jobs").await;
    browser.click("#reset-apply").await;
    browser.wait_text("#reset-status .error", "active members").await;
    browser
        .expect_console_errors(&["/reset-offsets - Failed to load resource: the server responded with a status of 409"])
        .await;
    member.close().await.unwrap();
    browser.wait_text_is("#group-state", "Empty").await;
    browser.select("#reset-to", "earliest").await;
    browser.click("#reset-dry-run").await;
    browser.wait_text("#reset-plan", "20").await;
    let group = api(&broker, "GET", "/api/v1/groups/workers", None);
    assert_eq!(group["total_lag"], 0, "a dry run changes nothing");
    browser.click("#reset-apply").await;
    browser.wait_text_is("#group-lag", "40").await;
    let group = api(&broker, "GET", "/api/v1/groups/workers", None);
    assert_eq!(group["total_lag"], 40);
    assert!(group["offsets"].as_array().unwrap().iter().all(|o| o["committed"] == 0), "{group}");
    browser.screenshot("group-reset").await;

    browser.assert_no_console_errors().await;
    browser.close().await;
}
