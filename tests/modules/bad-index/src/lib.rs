//! Hostile: written straight on the `weir:plugin@0.2.2` contract (the packed index, its spans
//! addressing the answer's buffer alone: `runtime/wit-0.2.2/`), it answers
//! every batch with one output per record whose value lies past the end of its (empty)
//! buffer. The broker must refuse the answer, naming the entry, and never read outside the
//! buffer.

wit_bindgen::generate!({ world: "transform", path: "../../../runtime/wit-0.2.2" });

use exports::weir::plugin::packed_transformer::Guest;
use weir::plugin::types::PackedOutputBatch;

/// A length word meaning none.
const NONE: u32 = u32::MAX;

#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
struct BadIndex;

impl Guest for BadIndex {
    fn transform(
        _topic: String,
        _partition: u32,
        _buffer: Vec<u8>,
        offsets: Vec<i64>,
        _timestamps: Vec<i64>,
        _records: Vec<u32>,
        _headers: Vec<u32>,
    ) -> PackedOutputBatch {
        let count = u32::try_from(offsets.len()).unwrap_or(u32::MAX);
        PackedOutputBatch {
            buffer: Vec::new(),
            // No topic, no key, a 1 MiB value from byte i * 1024, no headers.
            records: (0..count).flat_map(|i| [NONE, NONE, NONE, NONE, i * 1024, 1 << 20, 0, 0]).collect(),
            timestamps: vec![i64::MIN; offsets.len()],
            headers: Vec::new(),
            // Input record i emitted output record i.
            outcomes: (0..count).flat_map(|i| [0, i, 1]).collect(),
        }
    }
}

#[cfg(target_family = "wasm")]
export!(BadIndex);
