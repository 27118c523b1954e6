//! Connectors end to end (the connectors issue), against a real `weir serve` and the `weir`
//! CLI: a file source tails a log into a topic, the PII-mask transform masks it into another,
//! and a file sink writes that out; then the broker is SIGKILLed midway and restarted. Also
//! what connectors are denied, a sink that backs off until its target returns, and the
//! connector commands.

mod common;
#[path = "common/endpoint.rs"]
mod endpoint;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{wait_until, BrokerProcess};
use weir_runtime::dev::build_plugin;

/// `n` of every line of `path` (the sink's output), as JSON lines with a masked email.
fn delivered(path: &Path) -> Vec<i64> {
    let Ok(text) = std::fs::read_to_string(path) else { return vec![] };
    // Whole lines only: the sink may be in the middle of appending the last one (a batch's
    // bytes can reach the file in more than one write).
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let json: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
            assert_eq!(json["email"], "***", "every line arrives masked: {line}");
            json["n"].as_i64().unwrap()
        })
        .collect()
}

/// Appends lines `from..to` to the log the source tails.
fn append_lines(path: &Path, from: i64, to: i64) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let mut text = String::new();
    for n in from..to {
        text.push_str(&format!("{{\"email\":\"user{n}@example.com\",\"n\":{n}}}\n"));
    }
    file.write_all(text.as_bytes()).unwrap();
}

/// Lost (never delivered) and duplicated counts of `0..total` in `got`.
fn lost_and_duplicated(got: &[i64], total: i64) -> (Vec<i64>, usize) {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for n in got {
        *counts.entry(*n).or_default() += 1;
    }
    let lost = (0..total).filter(|n| !counts.contains_key(n)).collect();
    let duplicated = counts.values().map(|c| c - 1).sum();
    (lost, duplicated)
}

fn describe(broker: &BrokerProcess, name: &str) -> serde_json::Value {
    let (ok, out, err) = broker.cli(&["connector", "describe", name], None);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn cli_ok(broker: &BrokerProcess, args: &[&str]) -> String {
    let (ok, out, err) = broker.cli(args, None);
    assert!(ok, "weir {args:?}: {out}{err}");
    out
}

/// A broker that may grant connectors folders under the temporary folder, with topics `lines`
/// (1 partition) and `masked` (3) and the PII mask deployed from one to the other.
fn masking_broker(mask_wasm: &Path) -> BrokerProcess {
    let root = std::env::temp_dir();
    let broker = BrokerProcess::start(&["--connector-dir-root", root.to_str().unwrap()]);
    cli_ok(&broker, &["topic", "create", "lines", "--partitions", "1"]);
    cli_ok(&broker, &["topic", "create", "masked", "--partitions", "3"]);
    let mask = mask_wasm.to_str().unwrap();
    cli_ok(
        &broker,
        &["module", "deploy", mask, "--name", "mask", "--kind", "transform", "--input", "lines", "--output", "masked"]
            .into_iter()
            .chain(["--param", "paths=/email"])
            .collect::<Vec<_>>(),
    );
    broker
}

/// Appends lines 2000 to 6000 to `log` while the broker is SIGKILLed once 3000 have arrived
/// (`arrived` reads the `n`s delivered so far) and restarted; waits until every line arrived.
/// Answers the lost and duplicated counts.
async fn through_a_sigkill(
    broker: &mut BrokerProcess,
    log: &Path,
    arrived: impl Fn() -> Vec<i64>,
) -> (Vec<i64>, usize) {
    let writer = {
        let log = log.to_path_buf();
        std::thread::spawn(move || {
            for chunk in 0..40 {
                append_lines(&log, 2000 + chunk * 100, 2100 + chunk * 100);
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    wait_until(Duration::from_secs(60), "some of the new lines to arrive", || {
        let got = arrived().len();
        async move { got >= 3000 }
    })
    .await;
    broker.kill9();
    writer.join().unwrap();
    broker.restart();
    wait_until(Duration::from_secs(90), "every line to arrive after the restart", || {
        let lost = lost_and_duplicated(&arrived(), 6000).0.len();
        async move { lost == 0 }
    })
    .await;
    lost_and_duplicated(&arrived(), 6000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_lines_reach_a_file_sink_masked_once_and_at_least_once_through_a_sigkill() {
    let source_wasm = build_plugin("weir-module-file-source");
    let sink_wasm = build_plugin("weir-module-file-sink");
    let mask_wasm = build_plugin("weir-module-pii-mask");
    let (input, output) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (log, out) = (input.path().join("app.log"), output.path().join("out.log"));
    append_lines(&log, 0, 2000);

    let mut broker = masking_broker(&mask_wasm);
    // The source from a config file, with a secret that must never be shown back.
    let config = input.path().join("logs.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"logs\"\nkind = \"source\"\ncomponent = {:?}\ntopic = \"lines\"\nbatch_records = 300\n\
             [params]\npath = \"app.log\"\n[secrets]\ntoken = \"hunter2\"\n\
             [capabilities]\ndir = {:?}\ndir_access = \"read-only\"\n",
            source_wasm.to_str().unwrap(),
            input.path().to_str().unwrap()
        ),
    )
    .unwrap();
    let created = cli_ok(&broker, &["connector", "create", "--file", config.to_str().unwrap()]);
    assert!(created.contains("created source logs version 1"), "{created}");
    // The sink from flags.
    let sink = sink_wasm.to_str().unwrap();
    let dir = output.path().to_str().unwrap();
    cli_ok(
        &broker,
        &["connector", "create", "--name", "out", "--kind", "sink", "--component", sink, "--topic", "masked"]
            .into_iter()
            .chain(["--dir", dir, "--dir-writable", "--param", "path=out.log"])
            .collect::<Vec<_>>(),
    );

    // Nothing fails: every line arrives masked, exactly once.
    wait_until(Duration::from_secs(60), "2000 lines to reach the sink", || {
        let out = out.clone();
        async move { delivered(&out).len() >= 2000 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (lost, duplicated) = lost_and_duplicated(&delivered(&out), 2000);
    eprintln!("without faults: lost {}, duplicated {duplicated}", lost.len());
    assert_eq!((lost.len(), duplicated), (0, 0), "exactly once when nothing fails; lost {lost:?}");

    let list = cli_ok(&broker, &["connector", "list"]);
    assert!(list.contains("logs") && list.contains("out") && !list.contains("mask"), "{list}");
    let logs = describe(&broker, "logs");
    assert!(!logs.to_string().contains("hunter2"), "a secret is never shown back: {logs}");
    assert_eq!(logs["versions"][0]["connector"]["secret_names"], serde_json::json!(["token"]));
    let position = logs["metrics"]["positions"]["0"].as_str().unwrap();
    assert!(position.ends_with(&format!(":{}", std::fs::metadata(&log).unwrap().len())), "{position}");
    wait_until(Duration::from_secs(10), "the sink's lag to reach 0", || {
        let broker = &broker;
        async move {
            let out = describe(broker, "out");
            let lag = out["metrics"]["lag"].as_object().cloned().unwrap_or_default();
            !lag.is_empty() && lag.values().all(|l| l == 0)
        }
    })
    .await;

    // SIGKILL midway: lines keep coming while the broker dies and returns; every line arrives
    // at least once.
    let (lost, duplicated) = through_a_sigkill(&mut broker, &log, || delivered(&out)).await;
    eprintln!("through a SIGKILL: 6000 lines, lost {}, duplicated {duplicated}", lost.len());
    assert!(lost.is_empty(), "lost {lost:?}");

    // Denied: a path out of the granted directory fails the poll, shown in its status; the
    // broker and the other connectors go on.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.log"), "{\"email\":\"x\",\"n\":-1}\n").unwrap();
    let climbing = format!("path=../{}/secret.log", outside.path().file_name().unwrap().to_str().unwrap());
    let source = source_wasm.to_str().unwrap();
    let input_dir = input.path().to_str().unwrap();
    cli_ok(
        &broker,
        &["connector", "create", "--name", "escape", "--kind", "source", "--component", source, "--topic", "lines"]
            .into_iter()
            .chain(["--dir", input_dir, "--param", &climbing])
            .collect::<Vec<_>>(),
    );
    wait_until(Duration::from_secs(30), "the denied source to pause with its error", || {
        let broker = &broker;
        async move {
            let escape = describe(broker, "escape");
            escape["paused"]
                .as_str()
                .is_some_and(|p| p.contains("consecutive failed") && p.contains("poll: opening /data/../"))
        }
    })
    .await;
    let list = cli_ok(&broker, &["connector", "list"]);
    assert!(list.lines().any(|l| l.starts_with("escape") && l.contains("paused: 5 consecutive")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("logs") && l.ends_with("running")), "the others go on: {list}");
    // A component importing sockets is refused at create, naming the import.
    let socket = build_plugin("weir-test-open-socket");
    let (ok, _, err) = broker.cli(
        &["connector", "create", "--name", "net", "--kind", "source", "--component", socket.to_str().unwrap()]
            .into_iter()
            .chain(["--topic", "lines"])
            .collect::<Vec<_>>(),
        None,
    );
    assert!(!ok && err.contains("imports wasi:sockets/") && err.contains("network access"), "{err}");
    // Grants outside the rules are refused naming the setting; so is a module command on one.
    let (ok, _, err) = broker.cli(
        &["connector", "create", "--name", "bad", "--kind", "sink", "--component", sink, "--topic", "masked"]
            .into_iter()
            .chain(["--dir", "relative/dir"])
            .collect::<Vec<_>>(),
        None,
    );
    assert!(!ok && err.contains("capabilities.dir \"relative/dir\" must be an absolute path"), "{err}");
    // Outside the broker's connector_dir_roots, also through a link that leads out: refused.
    let link = output.path().join("etc-link");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    for dir in ["/etc", link.to_str().unwrap()] {
        let (ok, _, err) = broker.cli(
            &["connector", "create", "--name", "bad", "--kind", "sink", "--component", sink, "--topic", "masked"]
                .into_iter()
                .chain(["--dir", dir])
                .collect::<Vec<_>>(),
            None,
        );
        let why = if dir == "/etc" { "\"/etc\" is not inside" } else { "(/etc) is not a folder inside" };
        assert!(!ok && err.contains(&format!("{why} the broker's connector_dir_roots")), "{dir}: {err}");
    }
    let (ok, _, err) = broker.cli(&["connector", "describe", "mask"], None);
    assert!(!ok && err.contains("is a transform, not a connector"), "{err}");

    // A sink whose target is not there backs off, says why, and delivers everything once it
    // is: nothing lost.
    cli_ok(
        &broker,
        &["connector", "create", "--name", "late", "--kind", "sink", "--component", sink, "--topic", "masked"]
            .into_iter()
            .chain(["--dir", dir, "--dir-writable", "--param", "path=later/out.log"])
            .collect::<Vec<_>>(),
    );
    wait_until(Duration::from_secs(20), "the sink to report it cannot deliver", || {
        let broker = &broker;
        async move {
            let late = describe(broker, "late");
            late["metrics"]["last_error"].as_str().is_some_and(|e| e.contains("not delivered, retrying: opening"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::create_dir(output.path().join("later")).unwrap();
    let later = output.path().join("later").join("out.log");
    wait_until(Duration::from_secs(60), "the sink to deliver once its target is there", || {
        let later = later.clone();
        async move { lost_and_duplicated(&delivered(&later), 6000).0.is_empty() }
    })
    .await;

    // Pause, resume, restart and delete.
    assert!(cli_ok(&broker, &["connector", "pause", "late"]).contains("paused: paused by an operator"));
    assert!(cli_ok(&broker, &["connector", "resume", "late"]).contains("running"));
    assert!(cli_ok(&broker, &["connector", "restart", "logs"]).contains("source logs: version 1"));
    assert!(cli_ok(&broker, &["connector", "delete", "escape"]).contains("deleted escape"));
    assert!(!cli_ok(&broker, &["connector", "list"]).contains("escape"));
    broker.stop();
}

/// `n` of every line an HTTP sink posted to `endpoint` (NDJSON, values as JSON), each masked.
fn posted(endpoint: &endpoint::Endpoint) -> Vec<i64> {
    let mut got = Vec::new();
    for request in endpoint.requests() {
        assert_eq!(request.header("authorization"), Some("Bearer s3cret"), "the secret goes out as a header");
        for line in String::from_utf8_lossy(&request.body).lines() {
            let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(json["value"]["email"], "***", "every line arrives masked: {line}");
            got.push(json["value"]["n"].as_i64().unwrap());
        }
    }
    got
}

/// File source -> topic -> PII mask -> HTTP sink posting to a local endpoint: exactly once
/// without faults, at least once through a SIGKILL (lost and duplicated printed), nothing lost
/// while the endpoint is down; an HTTP source following an endpoint's cursor; pipelines (a
/// sink and a source through the deployed mask); the generator; and the denials: a host not
/// on the allowlist, a granted name resolving to 127.0.0.1, and a component importing
/// wasi:http with no host granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_lines_reach_an_http_sink_masked_and_http_grants_are_enforced() {
    let source_wasm = build_plugin("weir-module-file-source");
    let sink_wasm = build_plugin("weir-module-http-sink");
    let mask_wasm = build_plugin("weir-module-pii-mask");
    let feed_wasm = build_plugin("weir-module-http-source");
    let input = tempfile::tempdir().unwrap();
    let log = input.path().join("app.log");
    append_lines(&log, 0, 2000);
    let mut endpoint = endpoint::Endpoint::ok();
    let port = endpoint.addr.port();

    let mut broker = masking_broker(&mask_wasm);
    let (source, input_dir) = (source_wasm.to_str().unwrap(), input.path().to_str().unwrap());
    cli_ok(
        &broker,
        &["connector", "create", "--name", "logs", "--kind", "source", "--component", source, "--topic", "lines"]
            .into_iter()
            .chain(["--dir", input_dir, "--param", "path=app.log"])
            .collect::<Vec<_>>(),
    );
    let sink = sink_wasm.to_str().unwrap();
    let granted = format!("127.0.0.1:{port}");
    let url = format!("url=http://127.0.0.1:{port}/ingest");
    let http_sink = |broker: &BrokerProcess, name: &str, url: &str, allow: &str| {
        cli_ok(
            broker,
            &["connector", "create", "--name", name, "--kind", "sink", "--component", sink, "--topic", "masked"]
                .into_iter()
                .chain(["--http-allow", allow, "--deadline-ms", "10000", "--param", url, "--param", "value=json"])
                .chain(["--secret", "authorization=Bearer s3cret"])
                .collect::<Vec<_>>(),
        )
    };
    http_sink(&broker, "post", &url, &granted);

    wait_until(Duration::from_secs(60), "2000 lines to be posted", || {
        let got = posted(&endpoint).len();
        async move { got >= 2000 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (lost, duplicated) = lost_and_duplicated(&posted(&endpoint), 2000);
    eprintln!("HTTP sink without faults: lost {}, duplicated {duplicated}", lost.len());
    assert_eq!((lost.len(), duplicated), (0, 0), "exactly once when nothing fails; lost {lost:?}");
    let described = describe(&broker, "post");
    assert!(!described.to_string().contains("s3cret"), "a secret is never shown back: {described}");
    assert_eq!(described["versions"][0]["connector"]["http_allow"], serde_json::json!([granted]));

    // SIGKILL midway: every line arrives at least once.
    let (lost, duplicated) = through_a_sigkill(&mut broker, &log, || posted(&endpoint)).await;
    eprintln!("HTTP sink through a SIGKILL: 6000 lines, lost {}, duplicated {duplicated}", lost.len());
    assert!(lost.is_empty(), "lost {lost:?}");

    // The endpoint goes away: the sink says why, backs off, and delivers all once it is back.
    endpoint.stop();
    append_lines(&log, 6000, 6500);
    wait_until(Duration::from_secs(30), "the sink to report the endpoint down", || {
        let broker = &broker;
        async move {
            let post = describe(broker, "post");
            post["metrics"]["last_error"].as_str().is_some_and(|e| e.contains("not delivered, retrying"))
        }
    })
    .await;
    let down = describe(&broker, "post");
    eprintln!("endpoint down: {}", down["metrics"]["last_error"]);
    assert!(down["paused"].is_null(), "a sink whose endpoint is down is not paused: {down}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    endpoint.restart();
    wait_until(Duration::from_secs(60), "every line to be posted once the endpoint is back", || {
        let lost = lost_and_duplicated(&posted(&endpoint), 6500).0.len();
        async move { lost == 0 }
    })
    .await;

    // Denied: a host not on the allowlist, and a granted name that resolves to 127.0.0.1; each
    // shown in its status while the broker and the other connectors go on.
    http_sink(&broker, "elsewhere", &url, "127.0.0.1:1");
    let by_name = format!("url=http://localhost:{port}/ingest");
    http_sink(&broker, "rebound", &by_name, &format!("localhost:{port}"));
    for (name, why) in [
        (
            "elsewhere",
            format!("HTTP to 127.0.0.1:{port} denied: it is not in the connector's http_allow (127.0.0.1:1)"),
        ),
        ("rebound", "localhost resolves to".to_owned()),
    ] {
        wait_until(Duration::from_secs(30), "the denial to show in the connector's status", || {
            let (broker, why) = (&broker, why.clone());
            async move {
                let shown = describe(broker, name);
                shown["metrics"]["last_error"].as_str().is_some_and(|e| e.contains(&why))
            }
        })
        .await;
        eprintln!("{name}: {}", describe(&broker, name)["metrics"]["last_error"]);
    }
    assert!(describe(&broker, "rebound")["metrics"]["last_error"].as_str().unwrap().contains("(loopback)"));
    // wasi:http with no host granted: refused at create, naming the import.
    let (ok, _, err) = broker.cli(
        &["connector", "create", "--name", "nohost", "--kind", "sink", "--component", sink, "--topic", "masked"]
            .into_iter()
            .chain(["--param", &url])
            .collect::<Vec<_>>(),
        None,
    );
    assert!(!ok && err.contains("imports wasi:http/") && err.contains("granted no host"), "{err}");
    let list = cli_ok(&broker, &["connector", "list"]);
    assert!(list.lines().any(|l| l.starts_with("logs") && l.ends_with("running")), "the others go on: {list}");

    // An HTTP source pages through an endpoint's events by its cursor into a topic.
    let events = endpoint::Endpoint::start(std::sync::Arc::new(|request| {
        let from: usize = request.query("cursor").map_or(0, |c| c.parse().unwrap());
        let limit: usize = request.query("limit").unwrap().parse().unwrap();
        let to = (from + limit).min(1000);
        let records: Vec<serde_json::Value> = (from..to).map(|n| serde_json::json!({"id": n})).collect();
        (200, serde_json::json!({"records": records, "next_cursor": to}).to_string().into_bytes())
    }));
    let events_port = events.addr.port();
    cli_ok(&broker, &["topic", "create", "events", "--partitions", "1"]);
    let feed = feed_wasm.to_str().unwrap();
    cli_ok(
        &broker,
        &["connector", "create", "--name", "feed", "--kind", "source", "--component", feed, "--topic", "events"]
            .into_iter()
            .chain(["--http-allow", &format!("127.0.0.1:{events_port}"), "--deadline-ms", "10000"])
            .chain(["--param", &format!("url=http://127.0.0.1:{events_port}/events")])
            .collect::<Vec<_>>(),
    );
    let (ok, consumed, err) =
        broker.cli(&["consume", "events", "--from", "earliest", "--follow", "--count", "1000"], None);
    assert!(ok, "{err}");
    let ids: Vec<i64> = consumed
        .lines()
        .filter_map(|l| l.rsplit_once("{\"id\":").and_then(|(_, rest)| rest.trim_end_matches('}').parse().ok()))
        .collect();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>(), "every event once, in order: {consumed:.300}");

    // Pipelines: a sink reading the raw lines through the deployed mask, and a source writing
    // through it, with no topic between them and the transform.
    let second = endpoint::Endpoint::ok();
    let second_port = second.addr.port();
    cli_ok(
        &broker,
        &["connector", "create", "--name", "piped", "--kind", "sink", "--component", sink, "--topic", "lines"]
            .into_iter()
            .chain(["--transform", "mask", "--http-allow", &format!("127.0.0.1:{second_port}")])
            .chain(["--deadline-ms", "10000", "--param", &format!("url=http://127.0.0.1:{second_port}/ingest")])
            .chain(["--param", "value=json", "--secret", "authorization=Bearer s3cret"])
            .collect::<Vec<_>>(),
    );
    cli_ok(&broker, &["topic", "create", "masked-direct", "--partitions", "1"]);
    cli_ok(
        &broker,
        &["connector", "create", "--name", "logs-masked", "--kind", "source", "--component", source]
            .into_iter()
            .chain(["--topic", "masked-direct", "--transform", "mask", "--dir", input_dir, "--param", "path=app.log"])
            .collect::<Vec<_>>(),
    );
    wait_until(Duration::from_secs(60), "every line through the sink's pipeline", || {
        let lost = lost_and_duplicated(&posted(&second), 6500).0.len();
        async move { lost == 0 }
    })
    .await;
    let (ok, consumed, err) =
        broker.cli(&["consume", "masked-direct", "--from", "earliest", "--follow", "--count", "6500"], None);
    assert!(ok, "{err}");
    let masked = consumed.lines().filter(|l| l.contains("\"email\":\"***\"")).count();
    assert!(!consumed.contains("@example.com") && masked == 6500, "{masked} masked lines: {consumed:.300}");
    let piped = describe(&broker, "piped");
    assert_eq!(piped["versions"][0]["connector"]["transforms"], serde_json::json!(["mask"]));
    // A transform in a pipeline is not removed from under it; a stage that does not exist is
    // refused at create.
    let (ok, _, err) = broker.cli(&["module", "remove", "mask"], None);
    assert!(!ok && err.contains("in the pipeline of connector"), "{err}");
    let (ok, _, err) = broker.cli(
        &["connector", "create", "--name", "ghostly", "--kind", "sink", "--component", sink, "--topic", "lines"]
            .into_iter()
            .chain(["--transform", "ghost", "--http-allow", &granted, "--param", &url])
            .collect::<Vec<_>>(),
        None,
    );
    assert!(!ok && err.contains("no transform \"ghost\" is deployed"), "{err}");
    // The generator: `count` records at a `rate`, keyed over `keys`, every id once.
    let generator = build_plugin("weir-module-generator");
    cli_ok(&broker, &["topic", "create", "generated", "--partitions", "2"]);
    cli_ok(
        &broker,
        &["connector", "create", "--name", "gen", "--kind", "source", "--component", generator.to_str().unwrap()]
            .into_iter()
            .chain(["--topic", "generated", "--param", "count=500", "--param", "rate=2000", "--param", "keys=4"])
            .collect::<Vec<_>>(),
    );
    let (ok, consumed, err) =
        broker.cli(&["consume", "generated", "--from", "earliest", "--follow", "--count", "500"], None);
    assert!(ok, "{err}");
    let mut ids: Vec<i64> = consumed
        .lines()
        .filter_map(|l| l.split_once("{\"id\":").and_then(|(_, rest)| rest.split(',').next()?.parse().ok()))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..500).collect::<Vec<_>>(), "every generated id once: {consumed:.300}");
    // A line the mask refuses (not JSON) goes to the source's dead-letter topic, saying why.
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"not json\n").unwrap();
    wait_until(Duration::from_secs(30), "the refused line to be dead-lettered", || {
        let broker = &broker;
        async move { describe(broker, "logs-masked")["metrics"]["records_dead_lettered"].as_u64() == Some(1) }
    })
    .await;
    let (ok, dead, err) =
        broker.cli(&["consume", "logs-masked.dlq", "--from", "earliest", "--follow", "--count", "1"], None);
    assert!(ok && dead.contains("not json"), "{dead}{err}");
    broker.stop();
}

/// `weir module init` and `weir module build` (the connectors issue): a scaffolded sink passes
/// its own host unit test, builds for wasm32-wasip2, and runs as a connector from the config
/// file it came with; a scaffolded transform builds and deploys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_sink_and_transform_build_and_run() {
    let root = weir_runtime::dev::workspace_root();
    let work = tempfile::tempdir().unwrap();
    let weir = |args: &[&str]| {
        let mut command = std::process::Command::new(common::weir_bin());
        // The workspace's lock and the plugin builds' target folder: no download, and the
        // SDK's dependencies compiled once.
        command.args(args).current_dir(work.path()).env("CARGO_NET_OFFLINE", "true");
        command.env("CARGO_TARGET_DIR", root.join("target").join("wasm-plugins"));
        common::run_with_deadline(&mut command, Duration::from_secs(600))
    };
    let (ok, out, err) = weir(&["module", "init", "lines-out", "--kind", "sink"]);
    assert!(ok && out.contains("made sink lines-out"), "{out}{err}");
    let (ok, _, err) = weir(&["module", "init", "lines-out", "--kind", "sink"]);
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, _, err) = weir(&["module", "init", "shout", "--kind", "router"]);
    assert!(!ok && err.contains("invalid value 'router'"), "{err}");
    let crate_dir = work.path().join("lines-out");
    std::fs::copy(root.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();

    // Its host unit test passes as made.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut test = std::process::Command::new(cargo);
    test.args(["test", "--quiet", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_NET_OFFLINE", "true");
    test.env("CARGO_TARGET_DIR", root.join("target").join("wasm-plugins"));
    let (ok, out, err) = common::run_with_deadline(&mut test, Duration::from_secs(600));
    assert!(ok && out.contains("1 passed"), "{out}{err}");

    let (ok, out, err) = weir(&["module", "build", crate_dir.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let component = std::path::PathBuf::from(out.trim());
    assert!(component.ends_with("wasm32-wasip2/release/lines_out.wasm") && component.exists(), "{out}");

    // A broker started without --connector-dir-root grants no directory, and says how to.
    let mut bare = BrokerProcess::start(&[]);
    cli_ok(&bare, &["topic", "create", "output"]);
    let (ok, _, err) = bare.cli(
        &["connector", "create", "--name", "x", "--kind", "sink", "--component", component.to_str().unwrap()]
            .into_iter()
            .chain(["--topic", "output", "--dir", work.path().to_str().unwrap()])
            .collect::<Vec<_>>(),
        None,
    );
    assert!(!ok && err.contains("grants connectors no directory (start weir serve with --connector-dir-root"), "{err}");
    bare.stop();

    // The config it came with, pointed at the component and a folder.
    let broker = BrokerProcess::start(&["--connector-dir-root", std::env::temp_dir().to_str().unwrap()]);
    cli_ok(&broker, &["topic", "create", "output"]);
    let export = tempfile::tempdir().unwrap();
    let config = crate_dir.join("lines-out.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("target/wasm32-wasip2/release/lines_out.wasm", component.to_str().unwrap())
        .replace("# dir = \"/absolute/folder\"", &format!("dir = {:?}", export.path().to_str().unwrap()))
        .replace("# dir_access = \"read-only\"", "dir_access = \"read-write\"");
    std::fs::write(&config, text).unwrap();
    cli_ok(&broker, &["connector", "create", "--file", config.to_str().unwrap()]);
    let (ok, _, err) = broker.cli(&["produce", "output"], Some("one\ntwo\n"));
    assert!(ok, "{err}");
    let out = export.path().join("out.log");
    wait_until(Duration::from_secs(30), "the scaffolded sink to write", || {
        let out = out.clone();
        async move { std::fs::read_to_string(&out).is_ok_and(|t| t == "one\ntwo\n") }
    })
    .await;

    let (ok, out, err) = weir(&["module", "init", "shout", "--kind", "transform"]);
    assert!(ok, "{out}{err}");
    std::fs::copy(root.join("Cargo.lock"), work.path().join("shout").join("Cargo.lock")).unwrap();
    let (ok, out, err) = weir(&["module", "build", "shout"]);
    assert!(ok, "{out}{err}");
    cli_ok(&broker, &["topic", "create", "loud"]);
    cli_ok(
        &broker,
        &[
            "module",
            "deploy",
            out.trim(),
            "--name",
            "shout",
            "--kind",
            "transform",
            "--input",
            "output",
            "--output",
            "loud",
        ],
    );
    let (ok, consumed, err) = broker.cli(&["consume", "loud", "--from", "earliest", "--follow", "--count", "2"], None);
    assert!(ok && consumed.contains("ONE") && consumed.contains("TWO"), "{consumed}{err}");
}
