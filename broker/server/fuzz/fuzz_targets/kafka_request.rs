//! `cargo +nightly fuzz run kafka_request` (from broker/server/): every request body the Kafka listener
//! could read must decode to a request or an error, never a panic or an abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weir_broker::kafka::decode_request(bytes::Bytes::copy_from_slice(data));
});
