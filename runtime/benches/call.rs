//! The host<->guest call: one identity-transform call per batch, for batch sizes from 1 to
//! 1000 records of 1 KiB: `wasm` on the current contract (`weir:plugin@0.2.3`, the batch as one
//! buffer with an index packed into 32-bit words; the SDK's owned `Record`s and `Output`s),
//! `wasm_borrowed` the identity written with the SDK's borrowed API (`wasm-modules/forward`: it
//! answers with spans of the input, copying none of its bytes), `wasm_v0_2` the same identity built for
//! 0.2.0 (the index as lists of records), `wasm_v0_1` built for 0.1.0 (a list of records, each
//! with its own lists), beside a native identity over the same records (the cost with no
//! Wasm at all). `WEIR_BENCH_IDENTITY_WASM=<file.wasm>` adds `wasm_file`: a transform component
//! built elsewhere (e.g. the identity of an earlier commit), called the same way. Per-record cost is the batch time over its size. And loading a plugin:
//! compiling it against loading the cached artifact. `cargo bench -p weir-runtime`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weir_runtime::dev::{
    forward_instance, identity_instance, identity_v0_1_instance, identity_v0_2_instance, native_identity,
    transform_instance, transform_instance_of,
};

// The allocator `weir serve` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use weir_runtime::{InputBatch, OutputBuilder, PluginKind, Runtime, RuntimeConfig, TransformOutput};

fn records(count: usize) -> InputBatch {
    let value = vec![b'x'; 1024];
    let mut batch = InputBatch::new("bench", 0);
    for i in 0..count {
        let key = format!("key-{i}");
        batch.push(i as i64, 1_700_000_000_000, Some(key.as_bytes()), Some(&value), []).expect("fits");
    }
    batch
}

fn call(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("temp dir");
    let mut instance = identity_instance(cache.path());
    let mut forward = forward_instance(cache.path());
    let mut old = identity_v0_1_instance(cache.path());
    let mut typed = identity_v0_2_instance(cache.path());
    let mut file = std::env::var_os("WEIR_BENCH_IDENTITY_WASM")
        .map(|path| transform_instance_of(cache.path(), std::path::Path::new(&path), &[]));
    let mut group = c.benchmark_group("identity_call");
    for size in [1usize, 10, 100, 1000] {
        let batch = records(size);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("wasm", size), &batch, |b, batch| {
            b.iter(|| instance.transform(batch).expect("identity never fails"))
        });
        group.bench_with_input(BenchmarkId::new("wasm_borrowed", size), &batch, |b, batch| {
            b.iter(|| forward.transform(batch).expect("an identity never fails"))
        });
        if let Some(file) = file.as_mut() {
            group.bench_with_input(BenchmarkId::new("wasm_file", size), &batch, |b, batch| {
                b.iter(|| file.transform(batch).expect("an identity never fails"))
            });
        }
        group.bench_with_input(BenchmarkId::new("wasm_v0_2", size), &batch, |b, batch| {
            b.iter(|| typed.transform(batch).expect("identity never fails"))
        });
        group.bench_with_input(BenchmarkId::new("wasm_v0_1", size), &batch, |b, batch| {
            b.iter(|| old.transform(batch).expect("identity never fails"))
        });
        group.bench_with_input(BenchmarkId::new("native", size), &batch, |b, batch| b.iter(|| native_identity(batch)));
    }
    group.finish();
}

/// 1000 JSON records of about 200 bytes, a third of them at level "error".
fn json_records() -> InputBatch {
    let mut batch = InputBatch::new("bench", 0);
    for i in 0..1000 {
        let level = ["error", "info", "warn"][i % 3];
        let value = format!(
            r#"{{"level":"{level}","n":{i},"user":{{"email":"user{i}@example.com","name":"User {i}"}},"message":"request {i} served in {} ms","tags":["a","b"]}}"#,
            i % 97
        );
        batch.push(i as i64, 1_700_000_000_000, None, Some(value.as_bytes()), []).expect("fits");
    }
    batch
}

/// What a stage emits for a record it keeps, natively: its key, headers and timestamp with
/// this value.
fn keep(out: &mut OutputBuilder, r: &weir_runtime::InputView<'_>, value: Option<&[u8]>) {
    out.output(None, r.key(), value, r.headers(), Some(r.timestamp())).expect("fits");
}

fn native_json_filter(batch: &InputBatch) -> TransformOutput {
    let mut out = OutputBuilder::default();
    for r in batch.records() {
        match weir_module_json_filter::matches(r.value().unwrap_or_default(), "/level", "error") {
            Ok(true) => keep(&mut out, &r, r.value()),
            Ok(false) => {}
            Err(e) => out.failed(e.message()).expect("fits"),
        }
        out.emitted().expect("fits");
    }
    out.finish()
}

fn native_pii_mask(batch: &InputBatch, regex: &regex::Regex) -> TransformOutput {
    let mut out = OutputBuilder::default();
    for r in batch.records() {
        match weir_module_pii_mask::mask(r.value().unwrap_or_default(), "/user/email", regex, "***") {
            Ok(masked) => keep(&mut out, &r, Some(&masked)),
            Err(e) => out.failed(e.message()).expect("fits"),
        }
        out.emitted().expect("fits");
    }
    out.finish()
}

/// The JSON filter and the PII masker examples, 1000 records per call, against the same logic
/// compiled natively over the same records.
fn examples(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("temp dir");
    let batch = json_records();
    let mut group = c.benchmark_group("examples_1000_json_records");
    group.throughput(Throughput::Elements(1000));
    let mut filter =
        transform_instance(cache.path(), "weir-module-json-filter", &[("path", "/level"), ("equals", "error")]);
    assert_eq!(filter.transform(&batch).expect("filters").outcomes().flatten().flatten().count(), 334);
    group.bench_function("json_filter_wasm", |b| b.iter(|| filter.transform(&batch).expect("filters")));
    group.bench_function("json_filter_native", |b| b.iter(|| native_json_filter(&batch)));
    let mut mask = transform_instance(cache.path(), "weir-module-pii-mask", &[("paths", "/user/email")]);
    let regex = regex::Regex::new("^.*$").expect("regex");
    group.bench_function("pii_mask_wasm", |b| b.iter(|| mask.transform(&batch).expect("masks")));
    group.bench_function("pii_mask_native", |b| b.iter(|| native_pii_mask(&batch, &regex)));
    group.finish();
}

/// Loading a plugin at deploy (validate and compile) against loading it again from the
/// artifact cache, as a restart does: the pii-mask plugin (regex and JSON inside).
fn load(c: &mut Criterion) {
    let bytes = std::fs::read(weir_runtime::dev::build_plugin("weir-module-pii-mask")).expect("pii-mask plugin");
    let mut group = c.benchmark_group("load_pii_mask");
    group.sample_size(10);
    group.bench_function("compile", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |cache| runtime(cache.path()).load(&bytes, PluginKind::Transform).expect("loads"),
            criterion::BatchSize::PerIteration,
        )
    });
    let cache = tempfile::tempdir().expect("temp dir");
    runtime(cache.path()).load(&bytes, PluginKind::Transform).expect("loads");
    group.bench_function("from_cache", |b| {
        b.iter(|| runtime(cache.path()).load(&bytes, PluginKind::Transform).expect("loads"))
    });
    group.finish();
}

fn runtime(cache_dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig { cache_dir: cache_dir.into(), epoch_tick: std::time::Duration::from_millis(10) })
        .expect("runtime")
}

criterion_group!(benches, call, examples, load);
criterion_main!(benches);
