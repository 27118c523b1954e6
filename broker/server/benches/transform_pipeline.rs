//! A transform task's work per fetched batch, with and without a module, in the same run.
//!
//! `transform_pipeline_1KiB`: decode a stored 1 MiB batch of 1000 records of 1 KiB, hand the
//! records to the stage, collect the outputs, encode the output batch: the CPU work alone, the
//! harshest ratio. `transform_pipeline_with_log_1KiB`: the same, starting from a read of the
//! input partition in the fjall log and ending with the output batch appended to another
//! partition (without fsync, as `flush.mode=interval`): the task's whole path but the network.
//! `no_module` is a native identity stage; `identity_wasm` calls the identity component
//! (`weir:plugin@0.2.3`: the batch crosses as one buffer with an index packed into 32-bit
//! words; the SDK's owned `Record`s and `Output`s); `identity_wasm_borrowed` the identity
//! written with the SDK's borrowed API (`wasm-modules/forward`: its answer points into the
//! input, so the module copies none of the records' bytes); `identity_wasm_v0_1` the same
//! identity built for 0.1.0 (a list of records, each with
//! its own lists). `WEIR_BENCH_IDENTITY_WASM=<file.wasm>` adds `identity_wasm_file`: a transform
//! component built elsewhere (e.g. the identity of an earlier commit), called the same way.
//! `cargo bench -p weir-broker --bench transform_pipeline`.

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_broker::plugins::input_batch;
use weir_broker::transforms::output_records;
use weir_runtime::dev::{
    forward_instance, identity_instance, identity_v0_1_instance, native_identity, transform_instance_of,
};
use weir_runtime::{InputBatch, TransformOutput};
use weir_sdk::batch::{decode_batches, encode_batch, validate_batch, Compression, Record};
use weir_storage::{PartitionId, Storage};

// The allocator `weir serve` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: usize = 1000;

fn stored_batch() -> Bytes {
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| Record {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'x'; 1024])),
            headers: vec![],
            timestamp: 1_700_000_000_000,
        })
        .collect();
    encode_batch(&records, Compression::None).expect("encode")
}

fn pipeline(batch: &Bytes, stage: &mut dyn FnMut(&InputBatch) -> TransformOutput) -> Bytes {
    let records = decode_batches("in", 0, batch.clone(), 0).expect("decode");
    let inputs = input_batch("in", 0, &records).expect("a 1 MiB batch fits");
    let answer = stage(&inputs);
    let (outputs, failed) = output_records(&records, &answer, "out");
    assert!(failed.is_empty());
    let out: Vec<Record> = outputs.into_values().flatten().map(|(_, r)| r).collect();
    encode_batch(&out, Compression::None).expect("encode")
}

fn bench(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("temp dir");
    let mut instance = identity_instance(cache.path());
    let mut forward = forward_instance(cache.path());
    let mut old = identity_v0_1_instance(cache.path());
    let mut file = std::env::var_os("WEIR_BENCH_IDENTITY_WASM")
        .map(|path| transform_instance_of(cache.path(), std::path::Path::new(&path), &[]));
    let batch = stored_batch();
    let mut group = c.benchmark_group("transform_pipeline_1KiB");
    group.throughput(Throughput::Bytes((RECORDS * 1024) as u64));
    group.bench_function("no_module", |b| b.iter(|| pipeline(&batch, &mut native_identity)));
    group.bench_function("identity_wasm", |b| {
        b.iter(|| pipeline(&batch, &mut |inputs| instance.transform(inputs).expect("identity never fails")))
    });
    group.bench_function("identity_wasm_borrowed", |b| {
        b.iter(|| pipeline(&batch, &mut |inputs| forward.transform(inputs).expect("identity never fails")))
    });
    if let Some(file) = file.as_mut() {
        group.bench_function("identity_wasm_file", |b| {
            b.iter(|| pipeline(&batch, &mut |inputs| file.transform(inputs).expect("an identity never fails")))
        });
    }
    group.bench_function("identity_wasm_v0_1", |b| {
        b.iter(|| pipeline(&batch, &mut |inputs| old.transform(inputs).expect("identity never fails")))
    });
    group.finish();

    let dir = tempfile::tempdir().expect("temp dir");
    let log = Storage::open(dir.path(), 64).expect("storage").log;
    let input = log.open_partition(PartitionId { topic_id: 1, partition: 0 }).expect("input partition");
    let output = log.open_partition(PartitionId { topic_id: 2, partition: 0 }).expect("output partition");
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let header = validate_batch(&batch).expect("valid batch");
    tokio.block_on(async {
        log.enqueue(input.clone(), vec![(header, batch.clone())], true).await.unwrap().await.unwrap()
    });
    let with_log = |stage: &mut dyn FnMut(&InputBatch) -> TransformOutput| {
        let stored = log.read(&input, 0, 2 << 20, true).expect("read");
        let out = pipeline(&stored[0], stage);
        let header = validate_batch(&out).expect("valid output");
        tokio.block_on(async { log.enqueue(output.clone(), vec![(header, out)], false).await.unwrap().await.unwrap() })
    };
    let mut group = c.benchmark_group("transform_pipeline_with_log_1KiB");
    // Every iteration appends 1 MiB: keep the run to a few GB of disk.
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Bytes((RECORDS * 1024) as u64));
    group.bench_function("no_module", |b| b.iter(|| with_log(&mut native_identity)));
    group.bench_function("identity_wasm", |b| {
        b.iter(|| with_log(&mut |inputs| instance.transform(inputs).expect("identity never fails")))
    });
    group.bench_function("identity_wasm_borrowed", |b| {
        b.iter(|| with_log(&mut |inputs| forward.transform(inputs).expect("identity never fails")))
    });
    if let Some(file) = file.as_mut() {
        group.bench_function("identity_wasm_file", |b| {
            b.iter(|| with_log(&mut |inputs| file.transform(inputs).expect("an identity never fails")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
