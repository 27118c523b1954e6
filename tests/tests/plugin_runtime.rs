//! The Wasm host against real plugin components, built for wasm32-wasip2 from `wasm-modules/`
//! and `tests/modules/` by the test itself: examples, and hostile or broken modules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_runtime::dev::build_plugin;
use weir_runtime::{
    CallError, ConnectorHost, ConnectorState, Contract, Counters, DirGrant, HttpTarget, InputBatch, Instance,
    InstanceConfig, Limits, PluginKind, Runtime, RuntimeConfig, TransformOutput,
};

#[path = "common/endpoint.rs"]
mod endpoint;

struct Host {
    runtime: Runtime,
    _cache: tempfile::TempDir,
}

fn host() -> Host {
    let cache = tempfile::tempdir().unwrap();
    let runtime =
        Runtime::new(RuntimeConfig { cache_dir: cache.path().into(), epoch_tick: Duration::from_millis(10) }).unwrap();
    Host { runtime, _cache: cache }
}

fn instance(host: &Host, package: &str, kind: PluginKind, params: &[(&str, &str)], limits: Limits) -> Instance {
    let bytes = std::fs::read(build_plugin(package)).unwrap();
    let module = host.runtime.load(&bytes, kind).unwrap_or_else(|e| panic!("{package}: {e}"));
    let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    host.runtime.instance(
        &module,
        InstanceConfig {
            limits,
            params: Arc::new(params),
            label: package.into(),
            counters: Arc::new(Counters::default()),
            logs: Arc::default(),
            schemas: None,
            connector: None,
        },
    )
}

fn record(offset: i64, value: &str) -> (i64, &str) {
    (offset, value)
}

/// Records of topic `in`, partition 0: key `k<offset>`, the value, the timestamp from the
/// offset, and a header naming the offset (every tenth record has a header without a value).
fn batch(records: &[(i64, &str)]) -> InputBatch {
    let mut batch = InputBatch::new("in", 0);
    for (offset, value) in records {
        let key = format!("k{offset}");
        let header = offset.to_string();
        let header_value = (offset % 10 != 0).then_some(header.as_bytes());
        batch
            .push(
                *offset,
                1_700_000_000_000 + offset,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                [("at", header_value)],
            )
            .unwrap();
    }
    batch
}

fn values(out: &TransformOutput) -> Vec<String> {
    out.outcomes().flat_map(|r| r.unwrap()).map(|o| String::from_utf8(o.value().unwrap().to_vec()).unwrap()).collect()
}

/// Every input came back once, unchanged: key, value, headers, timestamp.
fn assert_identity(inputs: &InputBatch, out: &TransformOutput) {
    assert_eq!(out.len(), inputs.len());
    for (input, outcome) in inputs.records().zip(out.outcomes()) {
        let outputs: Vec<_> = outcome.unwrap().collect();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].topic(), None);
        assert_eq!(outputs[0].value().as_deref(), input.value());
        assert_eq!(outputs[0].key().as_deref(), input.key());
        assert_eq!(outputs[0].timestamp(), Some(input.timestamp()));
        let headers: Vec<_> = outputs[0].headers().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_vec()))).collect();
        let expected: Vec<_> = input.headers().map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec))).collect();
        assert_eq!(headers, expected);
    }
}

#[test]
fn identity_transform_returns_every_record_unchanged_across_batches() {
    let host = host();
    let mut identity = instance(&host, "weir-module-identity", PluginKind::Transform, &[], Limits::default());
    let values: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
    for round in 0..3 {
        let records: Vec<_> = (0..100).map(|i| record(round * 100 + i, &values[i as usize])).collect();
        let inputs = batch(&records);
        assert_identity(&inputs, &identity.transform(&inputs).unwrap());
    }
}

/// The borrowed API (`weir:plugin@0.2.3`): the module answers with spans of the input batch,
/// and the broker reads them from the input batch, which the answer shares. A second copy of each record is
/// copied into the answer, as the contract allows each input byte to be forwarded once.
#[test]
fn a_borrowed_transform_forwards_records_by_reference_once_and_copies_further_outputs() {
    let host = host();
    let mut forward = instance(&host, "weir-module-forward", PluginKind::Transform, &[], Limits::default());
    assert_eq!(forward.module().contract(), Contract::V0_2Packed { patch: 3 });
    let values_in: Vec<String> = (0..100).map(|i| format!("value {i}")).collect();
    for round in 0..3 {
        let records: Vec<_> = (0..100).map(|i| record(round * 100 + i, &values_in[i as usize])).collect();
        let inputs = batch(&records);
        assert_identity(&inputs, &forward.transform(&inputs).unwrap());
    }
    let mut twice =
        instance(&host, "weir-module-forward", PluginKind::Transform, &[("copies", "2")], Limits::default());
    let inputs = batch(&[record(0, "a"), record(1, ""), record(2, "ccc"), record(11, "d")]);
    let out = twice.transform(&inputs).unwrap();
    assert_eq!(values(&out), ["a", "a", "", "", "ccc", "ccc", "d", "d"]);
    for (input, outcome) in inputs.records().zip(out.outcomes()) {
        for output in outcome.unwrap() {
            assert_eq!((output.key().as_deref(), output.timestamp()), (input.key(), Some(input.timestamp())));
            let headers: Vec<_> = output.headers().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_vec()))).collect();
            let expected: Vec<_> = input.headers().map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec))).collect();
            assert_eq!(headers, expected);
        }
    }
    // A bad parameter fails each record with the module's error, naming it.
    let mut bad =
        instance(&host, "weir-module-forward", PluginKind::Transform, &[("copies", "many")], Limits::default());
    let out = bad.transform(&inputs).unwrap();
    let errors: Vec<_> = out.outcomes().map(|o| o.err().unwrap_or_default().to_owned()).collect();
    assert!(errors.iter().all(|e| e.starts_with("parameter copies=\"many\"")), "{errors:?}");
}

#[test]
fn a_module_built_for_the_0_1_0_contract_still_loads_and_answers_as_the_current_one() {
    let host = host();
    let mut old = instance(&host, "weir-test-identity-v0-1", PluginKind::Transform, &[], Limits::default());
    let mut new = instance(&host, "weir-module-identity", PluginKind::Transform, &[], Limits::default());
    assert_eq!((old.module().contract(), new.module().contract()), (Contract::V0_1, Contract::V0_2Packed { patch: 3 }));
    let inputs = batch(&[record(0, "a"), record(1, ""), record(2, "c"), record(11, "d")]);
    let (old_out, new_out) = (old.transform(&inputs).unwrap(), new.transform(&inputs).unwrap());
    assert_identity(&inputs, &old_out);
    assert_identity(&inputs, &new_out);
    assert_eq!(values(&old_out), values(&new_out));
    // Deployed as another kind, it is refused naming both versions.
    let bytes = std::fs::read(build_plugin("weir-test-identity-v0-1")).unwrap();
    let err = host.runtime.load(&bytes, PluginKind::Validator).err().expect("refused").to_string();
    assert!(
        err.contains(
            "does not export weir:plugin/record-validator@0.2.3 (nor weir:plugin/record-validator@0.2.2 or \
             weir:plugin/record-validator@0.2.1 or weir:plugin/record-validator@0.2.0 or \
             weir:plugin/record-validator@0.1.0"
        ),
        "{err}"
    );
    assert!(err.contains("it exports weir:plugin/transformer@0.1.0"), "{err}");
}

#[test]
fn a_module_built_for_the_0_2_0_contract_runs_through_the_typed_transform_bindings() {
    let host = host();
    let mut old = instance(&host, "weir-test-identity-v0-2", PluginKind::Transform, &[], Limits::default());
    let mut new = instance(&host, "weir-module-identity", PluginKind::Transform, &[], Limits::default());
    assert_eq!(old.module().contract(), Contract::V0_2 { patch: 0 });
    let inputs = batch(&[record(0, "a"), record(1, ""), record(5, "c"), record(10, "d")]);
    let (old_out, new_out) = (old.transform(&inputs).unwrap(), new.transform(&inputs).unwrap());
    assert_identity(&inputs, &old_out);
    assert_identity(&inputs, &new_out);
    assert_eq!(values(&old_out), values(&new_out));
}

/// A connector's state in memory, for the runtime's tests.
#[derive(Default)]
struct MemoryState(std::sync::Mutex<BTreeMap<String, Vec<u8>>>);

impl ConnectorState for MemoryState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.lock().unwrap().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.lock().unwrap().insert(key.into(), value.to_vec());
        Ok(())
    }
    fn delete(&self, key: &str) {
        self.0.lock().unwrap().remove(key);
    }
}

fn connector(host: &Host, package: &str, kind: PluginKind, params: &[(&str, &str)], dir: Option<DirGrant>) -> Instance {
    http_connector(host, package, kind, params, dir, &[])
}

/// A connector granted HTTP to `http_allow`, with a deadline that covers a request.
fn http_connector(
    host: &Host,
    package: &str,
    kind: PluginKind,
    params: &[(&str, &str)],
    dir: Option<DirGrant>,
    http_allow: &[&str],
) -> Instance {
    let bytes = std::fs::read(build_plugin(package)).unwrap();
    let module = host.runtime.load(&bytes, kind).unwrap_or_else(|e| panic!("{package}: {e}"));
    let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let http_allow: Vec<HttpTarget> = http_allow.iter().map(|e| HttpTarget::parse(e).unwrap()).collect();
    let limits =
        if http_allow.is_empty() { Limits::default() } else { Limits { deadline_ms: 10_000, ..Limits::default() } };
    let connector = ConnectorHost {
        secrets: Arc::default(),
        state: Arc::new(MemoryState::default()),
        dir,
        http_allow: http_allow.into(),
    };
    host.runtime.instance(
        &module,
        InstanceConfig {
            limits,
            params: Arc::new(params),
            label: package.into(),
            counters: Arc::new(Counters::default()),
            logs: Arc::default(),
            schemas: None,
            connector: Some(connector),
        },
    )
}

/// Capabilities (the connectors issue): a connector sees its granted directory and nothing
/// else, writes only where the grant is read-write, and an import of sockets is refused at
/// load naming it.
#[test]
fn connectors_see_only_their_granted_directory_and_write_only_where_granted() {
    let host = host();
    let granted = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("in.log"), "a\nb\n").unwrap();
    std::fs::write(outside.path().join("secret.log"), "s\n").unwrap();
    let read_only = || Some(DirGrant { host_path: granted.path().into(), writable: false });

    let mut source =
        connector(&host, "weir-module-file-source", PluginKind::Source, &[("path", "in.log")], read_only());
    assert_eq!(source.module().contract(), Contract::V0_2 { patch: 3 });
    let polled = source.poll(None, 10).unwrap().unwrap();
    let lines: Vec<_> = polled.records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(lines, [b"a".to_vec(), b"b".to_vec()]);
    let again = source.poll(Some(&polled.position), 10).unwrap().unwrap();
    assert!(again.records.is_empty(), "from its position: nothing new");

    // Out of the directory, by climbing or by a symbolic link inside it: denied, the call
    // says so.
    std::os::unix::fs::symlink(outside.path().join("secret.log"), granted.path().join("link.log")).unwrap();
    let climbing = format!("../{}/secret.log", outside.path().file_name().unwrap().to_str().unwrap());
    for path in [climbing.as_str(), "link.log"] {
        let mut escaping =
            connector(&host, "weir-module-file-source", PluginKind::Source, &[("path", path)], read_only());
        let err = escaping.poll(None, 10).unwrap().expect_err("denied");
        assert!(err.contains("opening /data/") && err.contains(path), "{path}: {err}");
    }
    // No grant: no directory at all.
    let mut ungranted = connector(&host, "weir-module-file-source", PluginKind::Source, &[("path", "in.log")], None);
    let err = ungranted.poll(None, 10).unwrap().expect_err("no directory");
    assert!(err.contains("opening /data/in.log"), "{err}");

    // A sink writes only into a read-write grant.
    let records = [record(0, "x"), record(1, "y")];
    let inputs = batch(&records);
    let mut refused = connector(&host, "weir-module-file-sink", PluginKind::Sink, &[("path", "out.log")], read_only());
    let err = refused.write(&inputs).unwrap().expect_err("read-only");
    assert!(err.contains("opening /data/out.log"), "{err}");
    let writable = Some(DirGrant { host_path: granted.path().into(), writable: true });
    let mut sink = connector(&host, "weir-module-file-sink", PluginKind::Sink, &[("path", "out.log")], writable);
    assert_eq!(sink.write(&inputs).unwrap().unwrap(), [None, None]);
    assert_eq!(std::fs::read_to_string(granted.path().join("out.log")).unwrap(), "x\ny\n");

    // The generator needs no grant.
    let mut generator = connector(&host, "weir-module-generator", PluginKind::Source, &[("keys", "3")], None);
    let polled = generator.poll(None, 7).unwrap().unwrap();
    assert_eq!(polled.records.len(), 7);
    assert_eq!(polled.records[4].key.as_deref(), Some(&b"k-1"[..]));

    // Sockets are not granted: refused at load, naming the import.
    let bytes = std::fs::read(build_plugin("weir-test-open-socket")).unwrap();
    let err = host.runtime.load(&bytes, PluginKind::Source).err().expect("refused").to_string();
    assert!(err.contains("imports wasi:sockets/") && err.contains("network access"), "{err}");
    // A source is neither a transform nor a sink.
    let bytes = std::fs::read(build_plugin("weir-module-file-source")).unwrap();
    let err = host.runtime.load(&bytes, PluginKind::Transform).err().expect("refused").to_string();
    assert!(err.contains("does not export weir:plugin/packed-transformer@0.2.3"), "{err}");
    let err = host.runtime.load(&bytes, PluginKind::Sink).err().expect("refused").to_string();
    assert!(err.contains("does not export weir:plugin/sink-connector@0.2.3"), "{err}");
}

/// Outgoing HTTP (the connectors issue): a sink posts to a granted address and nowhere else;
/// a granted name that resolves to loopback is refused; what the endpoint answers decides
/// delivered, rejected or sent again; a source follows an endpoint's cursor; a transform may
/// not import wasi:http at all.
#[test]
fn http_connectors_reach_only_granted_hosts_and_addresses() {
    let host = host();
    let endpoint = endpoint::Endpoint::ok();
    let port = endpoint.addr.port();
    let url = format!("url=http://127.0.0.1:{port}/in");
    let granted = format!("127.0.0.1:{port}");
    let sink = |params: &[&str], allow: &[&str]| {
        let params: Vec<(&str, &str)> = params.iter().map(|p| p.split_once('=').unwrap()).collect();
        http_connector(&host, "weir-module-http-sink", PluginKind::Sink, &params, None, allow)
    };
    let inputs = batch(&[record(0, r#"{"n":0}"#), record(1, r#"{"n":1}"#)]);

    let mut posting = sink(&[&url, "value=json"], &[&granted]);
    assert_eq!(posting.write(&inputs).unwrap().unwrap(), [None, None]);
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.target.as_str()), ("POST", "/in"));
    assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(request.header("weir-offsets"), Some("in/0/0-1"));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&request.body).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((lines[0]["value"]["n"].as_i64(), lines[1]["offset"].as_i64()), (Some(0), Some(1)));

    // Another port of the same address: not granted.
    let mut elsewhere = sink(&[&url], &["127.0.0.1:1"]);
    let err = elsewhere.write(&inputs).unwrap().expect_err("denied");
    println!("not granted: {err}");
    assert!(
        err.contains(&format!(
            "the host refused: HTTP to 127.0.0.1:{port} denied: it is not in the connector's http_allow (127.0.0.1:1)"
        )),
        "{err}"
    );
    // A granted name resolving to 127.0.0.1 does not grant loopback.
    let by_name = format!("url=http://localhost:{port}/in");
    let mut rebinding = sink(&[&by_name], &[&format!("localhost:{port}")]);
    let err = rebinding.write(&inputs).unwrap().expect_err("denied");
    println!("name to loopback: {err}");
    assert!(err.contains("localhost resolves to") && err.contains("(loopback)"), "{err}");
    assert_eq!(endpoint.requests().len(), 1, "nothing denied reached the endpoint");

    // 503: sent again later; 400: the records are rejected; nobody listening: sent again.
    for (status, expected) in [(503, "answered 503; the batch is sent again"), (400, "answered 400: no")] {
        let answering = endpoint::Endpoint::start(Arc::new(move |_| (status, b"no".to_vec())));
        let port = answering.addr.port();
        let mut s = sink(&[&format!("url=http://127.0.0.1:{port}/")], &[&format!("127.0.0.1:{port}")]);
        let shown = match s.write(&inputs).unwrap() {
            Err(reason) => reason,
            Ok(verdicts) => verdicts.into_iter().map(|v| v.expect("rejected")).collect::<Vec<_>>().join("; "),
        };
        assert!(shown.contains(expected), "{status}: {shown}");
    }
    let mut down = endpoint::Endpoint::ok();
    down.stop();
    let port = down.addr.port();
    let mut s = sink(&[&format!("url=http://127.0.0.1:{port}/")], &[&format!("127.0.0.1:{port}")]);
    let err = s.write(&inputs).unwrap().expect_err("nobody listens");
    println!("endpoint down: {err}");
    assert!(err.contains("ConnectionRefused"), "{err}");

    // A source pages through an endpoint by its cursor.
    let events = endpoint::Endpoint::start(Arc::new(|request| {
        let from: usize = request.query("cursor").map_or(0, |c| c.parse().unwrap());
        let limit: usize = request.query("limit").unwrap().parse().unwrap();
        let to = (from + limit).min(5);
        let records: Vec<serde_json::Value> =
            (from..to).map(|n| serde_json::json!({"id": format!("e{n}"), "n": n})).collect();
        (200, serde_json::json!({"records": records, "next_cursor": to.to_string()}).to_string().into_bytes())
    }));
    let port = events.addr.port();
    let url = format!("http://127.0.0.1:{port}/events");
    let allow = format!("127.0.0.1:{port}");
    let params = [("url", url.as_str()), ("key_field", "id")];
    let mut source = http_connector(&host, "weir-module-http-source", PluginKind::Source, &params, None, &[&allow]);
    let first = source.poll(None, 2).unwrap().unwrap();
    assert_eq!((first.records.len(), first.position.as_slice()), (2, &b"2"[..]));
    assert_eq!(first.records[1].key.as_deref(), Some(&b"e1"[..]));
    let rest = source.poll(Some(&first.position), 10).unwrap().unwrap();
    assert_eq!((rest.records.len(), rest.position.as_slice()), (3, &b"5"[..]));
    let none = source.poll(Some(&rest.position), 10).unwrap().unwrap();
    assert_eq!((none.records.len(), none.position.as_slice()), (0, &b"5"[..]));

    // Only connectors may import wasi:http.
    let bytes = std::fs::read(build_plugin("weir-module-http-sink")).unwrap();
    let err = host.runtime.load(&bytes, PluginKind::Transform).err().expect("refused").to_string();
    assert!(err.contains("only sources and sinks are granted, and it is deployed as a transform"), "{err}");
}

/// https: a sink posts over TLS to a granted address whose certificate the host's roots trust
/// (the system's roots, here read from SSL_CERT_FILE as on any machine that sets it), and a
/// certificate they do not trust fails the request.
#[test]
fn an_http_sink_posts_over_tls_only_to_a_certificate_it_trusts() {
    let (trusted, pem) = endpoint::Endpoint::ok_over_tls();
    let (untrusted, _) = endpoint::Endpoint::ok_over_tls();
    let roots = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(roots.path(), pem).unwrap();
    // The only test of this binary that sends https, before its first request loads the roots.
    std::env::set_var("SSL_CERT_FILE", roots.path());
    std::env::remove_var("SSL_CERT_DIR");
    let host = host();
    let inputs = batch(&[record(0, "a"), record(1, "b")]);
    for (endpoint, delivered) in [(&trusted, true), (&untrusted, false)] {
        let port = endpoint.addr.port();
        let url = format!("https://127.0.0.1:{port}/in");
        let allow = format!("127.0.0.1:{port}");
        let params = [("url", url.as_str())];
        let mut sink = http_connector(&host, "weir-module-http-sink", PluginKind::Sink, &params, None, &[&allow]);
        let answer = sink.write(&inputs).unwrap();
        println!("{url}: {answer:?}");
        if delivered {
            assert_eq!(answer.unwrap(), [None, None]);
            let requests = endpoint.requests();
            assert_eq!(requests.len(), 1);
            assert_eq!(String::from_utf8_lossy(&requests[0].body).lines().count(), 2);
        } else {
            let err = answer.unwrap_err();
            assert!(err.contains("TLS with 127.0.0.1") && err.contains("certificate"), "{err}");
            assert!(endpoint.requests().is_empty());
        }
    }
}

#[test]
fn json_filter_keeps_matching_records_and_errors_on_non_json() {
    let host = host();
    let params = [("path", "/level"), ("equals", "error")];
    let mut filter = instance(&host, "weir-module-json-filter", PluginKind::Transform, &params, Limits::default());
    let out = filter
        .transform(&batch(&[
            record(0, r#"{"level":"error","n":0}"#),
            record(1, r#"{"level":"info"}"#),
            record(2, "plain"),
        ]))
        .unwrap();
    let outcomes: Vec<_> = out.outcomes().map(|o| o.map(|outputs| outputs.len())).collect();
    assert_eq!(&outcomes[..2], [Ok(1), Ok(0)]);
    assert!(outcomes[2].unwrap_err().contains("expected"), "{:?}", outcomes[2]);
}

#[test]
fn given_an_infinite_loop_when_called_then_it_is_interrupted_at_its_deadline_and_the_next_call_runs_afresh() {
    let host = host();
    let limits = Limits { deadline_ms: 50, ..Limits::default() };
    let mut spin = instance(&host, "weir-test-spin-forever", PluginKind::Transform, &[], limits);
    let started = Instant::now();
    let err = spin.transform(&batch(&[record(0, "x")])).unwrap_err();
    println!("spin-forever: {err} after {:?}", started.elapsed());
    assert_eq!(err, CallError::Timeout { deadline_ms: 50 });
    assert!(started.elapsed() < Duration::from_secs(10), "interrupted long after its deadline");
    // A second call gets a fresh instance and is interrupted again, not refused.
    assert_eq!(spin.transform(&batch(&[record(1, "x")])).unwrap_err(), CallError::Timeout { deadline_ms: 50 });
}

#[test]
fn given_a_memory_bomb_when_called_then_it_is_stopped_at_the_memory_cap() {
    let host = host();
    let limits = Limits { memory_bytes: 16 << 20, deadline_ms: 5_000 };
    let mut bomb = instance(&host, "weir-test-memory-bomb", PluginKind::Transform, &[], limits);
    let err = bomb.transform(&batch(&[record(0, "x")])).unwrap_err();
    println!("memory-bomb: {err}");
    assert!(
        matches!(err, CallError::MemoryCap { memory_bytes, desired_bytes } if memory_bytes == 16 << 20 && desired_bytes > 16 << 20),
        "{err:?}"
    );
    assert!(bomb.memory_high_water_bytes() <= 16 << 20);
    assert!(bomb.memory_high_water_bytes() > 8 << 20, "{}", bomb.memory_high_water_bytes());
}

#[test]
fn given_a_panicking_module_then_the_call_fails_with_the_panic_message_and_the_next_batch_runs() {
    let host = host();
    let mut module = instance(&host, "weir-test-panic-on-boom", PluginKind::Transform, &[], Limits::default());
    let err = module.transform(&batch(&[record(0, "fine"), record(1, "boom")])).unwrap_err();
    println!("panic-on-boom: {err}");
    assert!(matches!(&err, CallError::Trap(m) if m.contains("boom at offset 1")), "{err:?}");
    assert_eq!(values(&module.transform(&batch(&[record(2, "fine again")])).unwrap()), ["fine again"]);
}

#[test]
fn given_an_answer_whose_index_points_outside_its_buffer_then_the_call_fails_naming_the_entry() {
    let host = host();
    let mut module = instance(&host, "weir-test-bad-index", PluginKind::Transform, &[], Limits::default());
    // Built for 0.2.2: its spans address its own buffer only, and are read so.
    assert_eq!(module.module().contract(), Contract::V0_2Packed { patch: 2 });
    let err = module.transform(&batch(&[record(0, "a"), record(1, "b")])).unwrap_err();
    println!("bad-index: {err}");
    assert_eq!(
        err,
        CallError::Contract(
            "output record 0's value (1048576 bytes from byte 0) lies outside the answer's 0-byte buffer".into()
        )
    );
}

#[test]
fn given_a_module_that_imports_sockets_then_load_refuses_it_naming_the_import() {
    let host = host();
    let bytes = std::fs::read(build_plugin("weir-test-open-socket")).unwrap();
    let err = host.runtime.load(&bytes, PluginKind::Transform).err().expect("refused").to_string();
    println!("open-socket: {err}");
    assert!(err.contains("imports wasi:sockets/"), "{err}");
    assert!(err.contains("network access"), "{err}");
}

#[test]
fn given_a_transform_deployed_as_a_validator_then_load_names_the_missing_export() {
    let host = host();
    let bytes = std::fs::read(build_plugin("weir-module-identity")).unwrap();
    let err = host.runtime.load(&bytes, PluginKind::Validator).err().expect("refused").to_string();
    assert!(err.contains("does not export weir:plugin/record-validator@0.2.3"), "{err}");
}

#[test]
fn partitioners_answer_in_range_or_are_refused() {
    let host = host();
    let mut key_hash =
        instance(&host, "weir-module-key-hash-partitioner", PluginKind::Partitioner, &[], Limits::default());
    let records: Vec<_> = (0..50).map(|i| record(i, "v")).collect();
    let partitions = key_hash.partition(&batch(&records), 7).unwrap();
    assert!(partitions.iter().all(|p| *p < 7));
    assert!(partitions.iter().collect::<std::collections::BTreeSet<_>>().len() > 3, "{partitions:?}");

    let params = [("path", "/region"), ("partitions", "eu=0,us=1,apac=2")];
    let mut by_region =
        instance(&host, "weir-module-field-partitioner", PluginKind::Partitioner, &params, Limits::default());
    let regions = [r#"{"region":"us"}"#, r#"{"region":"apac"}"#, r#"{"region":"eu"}"#];
    let records: Vec<_> = regions.iter().enumerate().map(|(i, v)| record(i as i64, v)).collect();
    let records = batch(&records);
    assert_eq!(by_region.partition(&records, 3).unwrap(), [1, 2, 0]);

    let mut broken =
        instance(&host, "weir-test-out-of-range-partitioner", PluginKind::Partitioner, &[], Limits::default());
    let err = broken.partition(&records, 3).unwrap_err().to_string();
    assert!(err.contains("answered partition 8 for record 0, but the topic has 3 partitions"), "{err}");
}

#[test]
fn json_shape_validator_gives_a_reason_per_rejected_record() {
    let host = host();
    let params = [("required", "id,amount"), ("types", "id=integer,amount=number")];
    let mut validator =
        instance(&host, "weir-module-json-shape-validator", PluginKind::Validator, &params, Limits::default());
    let verdicts = validator
        .validate(&batch(&[
            record(0, r#"{"id":1,"amount":2}"#),
            record(1, r#"{"id":"x","amount":2}"#),
            record(2, r#"{"id":1}"#),
        ]))
        .unwrap();
    assert_eq!(
        verdicts,
        [
            None,
            Some(r#"field "id" must be integer, got "x""#.into()),
            Some(r#"required field "amount" is missing"#.into())
        ]
    );
}

#[test]
fn a_compiled_module_is_cached_by_content_hash() {
    let host = host();
    let bytes = std::fs::read(build_plugin("weir-module-identity")).unwrap();
    let first = host.runtime.load(&bytes, PluginKind::Transform).unwrap();
    let cached: Vec<_> = std::fs::read_dir(host._cache.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].to_string_lossy().starts_with(first.sha256()));
    let again = host.runtime.load(&bytes, PluginKind::Transform).unwrap();
    assert_eq!(first.sha256(), again.sha256());
}
