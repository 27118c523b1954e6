//! The identity transform as a plugin built before `weir:plugin@0.2.1` was: straight on the
//! 0.2.0 contract (`runtime/wit-0.2.0/`). Brokers must still load and run it, through the
//! current bindings' `typed-transform` world (wasmtime finds its 0.2.0 export under the
//! semver-compatible name).

wit_bindgen::generate!({ world: "transform", path: "../../../runtime/wit-0.2.0" });

use exports::weir::plugin::transformer::Guest;
use weir::plugin::types::{InputBatch, Outcome, OutputBatch, OutputRecord, Range};

#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
struct Identity;

impl Guest for Identity {
    /// Every record out as it came in: the same buffer, spans and headers.
    fn transform(batch: InputBatch) -> OutputBatch {
        let records: Vec<OutputRecord> = batch
            .records
            .iter()
            .map(|r| OutputRecord {
                topic: None,
                key: r.key,
                value: r.value,
                headers: r.headers,
                timestamp: Some(r.timestamp),
            })
            .collect();
        let outcomes = (0..records.len() as u32).map(|i| Outcome::Emitted(Range { first: i, count: 1 })).collect();
        OutputBatch { buffer: batch.buffer, records, headers: batch.headers, outcomes }
    }
}

#[cfg(target_family = "wasm")]
export!(Identity);
