//! The host<->guest call: one identity-transform call per batch, for batch sizes from 1 to
//! 1000 records of 1 KiB, beside a native identity over the same records (the cost with no
//! Wasm at all). Per-record cost is the batch time over its size. `cargo bench -p weir-runtime`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weir_runtime::{
    Counters, InputRecord, InstanceConfig, Limits, OutputRecord, PluginKind, Runtime, RuntimeConfig, TransformResults,
};

fn records(count: usize) -> Vec<InputRecord> {
    (0..count)
        .map(|i| InputRecord {
            topic: "bench".into(),
            partition: 0,
            offset: i as i64,
            timestamp: 1_700_000_000_000,
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(vec![b'x'; 1024]),
            headers: vec![],
        })
        .collect()
}

fn native_identity(records: &[InputRecord]) -> TransformResults {
    records
        .iter()
        .map(|r| {
            Ok(vec![OutputRecord {
                topic: None,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
                timestamp: Some(r.timestamp),
            }])
        })
        .collect()
}

fn call(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("temp dir");
    let runtime = Runtime::new(RuntimeConfig { cache_dir: cache.path().into(), epoch_tick: Duration::from_millis(10) })
        .expect("runtime");
    let bytes = std::fs::read(weir_runtime::dev::build_plugin("weir-module-identity")).expect("identity module");
    let module = runtime.load(&bytes, PluginKind::Transform).expect("load");
    let mut instance = runtime.instance(
        &module,
        InstanceConfig {
            limits: Limits::default(),
            params: Arc::default(),
            label: "bench".into(),
            counters: Arc::new(Counters::default()),
            schemas: None,
        },
    );
    let mut group = c.benchmark_group("identity_call");
    for size in [1usize, 10, 100, 1000] {
        let batch = records(size);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("wasm", size), &batch, |b, batch| {
            b.iter(|| instance.transform(batch).expect("identity never fails"))
        });
        group.bench_with_input(BenchmarkId::new("native", size), &batch, |b, batch| b.iter(|| native_identity(batch)));
    }
    group.finish();
}

criterion_group!(benches, call);
criterion_main!(benches);
