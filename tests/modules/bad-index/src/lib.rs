//! Hostile: written straight on the `weir:plugin@0.2.0` contract, it answers every batch with
//! one output per record whose value lies past the end of its (empty) buffer. The broker must
//! refuse the answer, naming the entry, and never read outside the buffer.

wit_bindgen::generate!({ world: "transform", path: "../../../sdk/wit" });

use exports::weir::plugin::transformer::Guest;
use weir::plugin::types::{InputBatch, Outcome, OutputBatch, OutputRecord, Range, Span};

#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
struct BadIndex;

impl Guest for BadIndex {
    fn transform(batch: InputBatch) -> OutputBatch {
        let count = u32::try_from(batch.records.len()).unwrap_or(u32::MAX);
        OutputBatch {
            buffer: Vec::new(),
            records: (0..count)
                .map(|i| OutputRecord {
                    topic: None,
                    key: None,
                    value: Some(Span { start: i * 1024, len: 1 << 20 }),
                    headers: Range { first: 0, count: 0 },
                    timestamp: None,
                })
                .collect(),
            headers: Vec::new(),
            outcomes: (0..count).map(|i| Outcome::Emitted(Range { first: i, count: 1 })).collect(),
        }
    }
}

#[cfg(target_family = "wasm")]
export!(BadIndex);
