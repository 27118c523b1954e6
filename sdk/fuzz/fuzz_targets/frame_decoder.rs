//! `cargo +nightly fuzz run frame_decoder` (from sdk/): every input to the native protocol's
//! frame, header and batch decoders must give a value or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir_sdk::wire::fuzz_decode(data);
});
