//! What the broker does to a produced batch before it is stored, old path beside new, in the
//! same run: `header_and_crc` splits the request's batches and checks each header and CRC
//! (and, for a compressed batch, counts what it inflates to), which is all produce did before
//! issue #10; `decode_records` adds decoding every record of every batch, as Kafka's log
//! validator does, so that no batch whose records cannot be read is ever stored;
//! `check_records` checks the same without building the records (`check_batch_records`, what
//! produce does when no schema or validator reads them).
//! Batches of 1000 records of 1 KiB (1 MiB), uncompressed and lz4.
//! `cargo bench -p weir-sdk --bench produce_validation`.

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_sdk::batch::{
    check_batch_records, decode_batch_records, encode_batch, inflated_batch_len, split_batches, Compression, Record,
};

const LIMIT: usize = 64 << 20;

fn batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..1000)
        .map(|i| Record {
            key: Some(Bytes::from(format!("key-{i}"))),
            // Varied bytes, so lz4 has work to do and the batch is not a run of one byte.
            value: Some(Bytes::from((0..1024).map(|j| ((i * 31 + j * 7) % 251) as u8).collect::<Vec<u8>>())),
            headers: vec![],
            timestamp: 1_700_000_000_000,
        })
        .collect();
    encode_batch(&records, compression).expect("encode")
}

fn header_and_crc(bytes: &Bytes) -> usize {
    let mut inflated = 0;
    for (header, batch) in split_batches(bytes).expect("valid") {
        if header.attributes & 0x07 != 0 {
            inflated += inflated_batch_len(&header, &Bytes::copy_from_slice(batch), LIMIT).expect("inflates");
        }
    }
    inflated
}

fn decode_records(bytes: &Bytes) -> usize {
    let mut records = 0;
    let mut at = 0;
    for (_, batch) in split_batches(bytes).expect("valid") {
        let stored = bytes.slice(at..at + batch.len());
        at += batch.len();
        records += decode_batch_records(stored, LIMIT).expect("decodes").len();
    }
    records
}

fn check_records(bytes: &Bytes) -> usize {
    let mut records = 0;
    let mut at = 0;
    for (_, batch) in split_batches(bytes).expect("valid") {
        let stored = bytes.slice(at..at + batch.len());
        at += batch.len();
        records += check_batch_records(&stored, LIMIT).expect("decodes");
    }
    records
}

fn bench(c: &mut Criterion) {
    for (name, compression) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        let bytes = batch(compression);
        let mut group = c.benchmark_group(format!("produce_validation_1MiB_{name}"));
        // Throughput in uncompressed record bytes, so the rows compare.
        group.throughput(Throughput::Bytes(1000 * 1024));
        group.measurement_time(Duration::from_secs(5));
        group.bench_function("header_and_crc", |b| b.iter(|| header_and_crc(&bytes)));
        group.bench_function("decode_records", |b| b.iter(|| decode_records(&bytes)));
        group.bench_function("check_records", |b| b.iter(|| check_records(&bytes)));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
