//! A transform task's work per fetched batch, with and without a module, in the same run:
//! decode a stored 1 MiB batch of 1 KiB records, hand the records to the stage, collect the
//! outputs, encode the output batch. `no_module` is a native identity stage; `identity_wasm`
//! calls the identity component. The log append and the network are left out: they cost the
//! same with or without a module, so leaving them out makes the ratio a lower bound.
//! `cargo bench -p weir-broker --bench transform_pipeline`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_broker::plugins::input_records;
use weir_broker::transforms::output_records;
use weir_runtime::{
    Counters, InstanceConfig, Limits, OutputRecord, PluginKind, Runtime, RuntimeConfig, TransformResults,
};
use weir_sdk::batch::{decode_batches, encode_batch, Compression, Record};

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

fn pipeline(batch: &Bytes, stage: &mut dyn FnMut(&[weir_runtime::InputRecord]) -> TransformResults) -> Bytes {
    let records = decode_batches("in", 0, batch.clone(), 0).expect("decode");
    let inputs = input_records(&records);
    let (outputs, failed) = output_records(&inputs, stage(&inputs), "out");
    assert!(failed.is_empty());
    let out: Vec<Record> = outputs.into_values().flatten().map(|(_, r)| r).collect();
    encode_batch(&out, Compression::None).expect("encode")
}

fn bench(c: &mut Criterion) {
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
    let batch = stored_batch();
    let mut group = c.benchmark_group("transform_pipeline_1KiB");
    group.throughput(Throughput::Bytes((RECORDS * 1024) as u64));
    group.bench_function("no_module", |b| {
        b.iter(|| {
            pipeline(&batch, &mut |inputs| {
                inputs
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
            })
        })
    });
    group.bench_function("identity_wasm", |b| {
        b.iter(|| pipeline(&batch, &mut |inputs| instance.transform(inputs).expect("identity never fails")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
