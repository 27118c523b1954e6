//! The Wasm host against real plugin components, built for wasm32-wasip2 from `wasm-modules/`
//! and `tests/modules/` by the test itself: examples, and hostile or broken modules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_runtime::dev::build_plugin;
use weir_runtime::{
    CallError, Counters, InputRecord, Instance, InstanceConfig, Limits, PluginKind, Runtime, RuntimeConfig,
};

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
            schemas: None,
        },
    )
}

fn record(offset: i64, value: &str) -> InputRecord {
    InputRecord {
        topic: "in".into(),
        partition: 0,
        offset,
        timestamp: 1_700_000_000_000 + offset,
        key: Some(format!("k{offset}").into_bytes()),
        value: Some(value.as_bytes().to_vec()),
        headers: vec![],
    }
}

fn values(outputs: &[Result<Vec<weir_runtime::OutputRecord>, String>]) -> Vec<String> {
    outputs
        .iter()
        .flat_map(|r| r.as_ref().unwrap().iter())
        .map(|o| String::from_utf8(o.value.clone().unwrap()).unwrap())
        .collect()
}

#[test]
fn identity_transform_returns_every_record_unchanged_across_batches() {
    let host = host();
    let mut identity = instance(&host, "weir-module-identity", PluginKind::Transform, &[], Limits::default());
    for batch in 0..3 {
        let records: Vec<_> = (0..100).map(|i| record(batch * 100 + i, &format!("v{i}"))).collect();
        let out = identity.transform(&records).unwrap();
        assert_eq!(out.len(), 100);
        for (input, result) in records.iter().zip(&out) {
            let outputs = result.as_ref().unwrap();
            assert_eq!(outputs.len(), 1);
            assert_eq!(outputs[0].value, input.value);
            assert_eq!(outputs[0].key, input.key);
            assert_eq!(outputs[0].timestamp, Some(input.timestamp));
        }
    }
}

#[test]
fn json_filter_keeps_matching_records_and_errors_on_non_json() {
    let host = host();
    let params = [("path", "/level"), ("equals", "error")];
    let mut filter = instance(&host, "weir-module-json-filter", PluginKind::Transform, &params, Limits::default());
    let out = filter
        .transform(&[record(0, r#"{"level":"error","n":0}"#), record(1, r#"{"level":"info"}"#), record(2, "plain")])
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().len(), 1);
    assert_eq!(out[1].as_ref().unwrap().len(), 0);
    assert!(out[2].as_ref().unwrap_err().contains("expected"), "{:?}", out[2]);
}

#[test]
fn given_an_infinite_loop_when_called_then_it_is_interrupted_at_its_deadline_and_the_next_call_runs_afresh() {
    let host = host();
    let limits = Limits { deadline_ms: 50, ..Limits::default() };
    let mut spin = instance(&host, "weir-test-spin-forever", PluginKind::Transform, &[], limits);
    let started = Instant::now();
    let err = spin.transform(&[record(0, "x")]).unwrap_err();
    println!("spin-forever: {err} after {:?}", started.elapsed());
    assert_eq!(err, CallError::Timeout { deadline_ms: 50 });
    assert!(started.elapsed() < Duration::from_secs(10), "interrupted long after its deadline");
    // A second call gets a fresh instance and is interrupted again, not refused.
    assert_eq!(spin.transform(&[record(1, "x")]).unwrap_err(), CallError::Timeout { deadline_ms: 50 });
}

#[test]
fn given_a_memory_bomb_when_called_then_it_is_stopped_at_the_memory_cap() {
    let host = host();
    let limits = Limits { memory_bytes: 16 << 20, deadline_ms: 5_000 };
    let mut bomb = instance(&host, "weir-test-memory-bomb", PluginKind::Transform, &[], limits);
    let err = bomb.transform(&[record(0, "x")]).unwrap_err();
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
    let err = module.transform(&[record(0, "fine"), record(1, "boom")]).unwrap_err();
    println!("panic-on-boom: {err}");
    assert!(matches!(&err, CallError::Trap(m) if m.contains("boom at offset 1")), "{err:?}");
    assert_eq!(values(&module.transform(&[record(2, "fine again")]).unwrap()), ["fine again"]);
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
    assert!(err.contains("does not export weir:plugin/record-validator@0.1.0"), "{err}");
}

#[test]
fn partitioners_answer_in_range_or_are_refused() {
    let host = host();
    let mut key_hash =
        instance(&host, "weir-module-key-hash-partitioner", PluginKind::Partitioner, &[], Limits::default());
    let records: Vec<_> = (0..50).map(|i| record(i, "v")).collect();
    let partitions = key_hash.partition(&records, 7).unwrap();
    assert!(partitions.iter().all(|p| *p < 7));
    assert!(partitions.iter().collect::<std::collections::BTreeSet<_>>().len() > 3, "{partitions:?}");

    let params = [("path", "/region"), ("partitions", "eu=0,us=1,apac=2")];
    let mut by_region =
        instance(&host, "weir-module-field-partitioner", PluginKind::Partitioner, &params, Limits::default());
    let regions = [r#"{"region":"us"}"#, r#"{"region":"apac"}"#, r#"{"region":"eu"}"#];
    let records: Vec<_> = regions.iter().enumerate().map(|(i, v)| record(i as i64, v)).collect();
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
        .validate(&[
            record(0, r#"{"id":1,"amount":2}"#),
            record(1, r#"{"id":"x","amount":2}"#),
            record(2, r#"{"id":1}"#),
        ])
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
