//! The identity transform as a plugin built before `weir:plugin@0.2.0` was: straight on the
//! 0.1.0 contract (`runtime/wit-0.1.0/`), a list of records in and out. Brokers must still
//! load and run it, and the bench of the host-guest call measures it beside the current one.

wit_bindgen::generate!({ world: "transform", path: "../../../runtime/wit-0.1.0" });

use exports::weir::plugin::transformer::Guest;
use weir::plugin::types::{InputRecord, OutputRecord};

#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
struct Identity;

impl Guest for Identity {
    fn transform(records: Vec<InputRecord>) -> Vec<Result<Vec<OutputRecord>, String>> {
        records
            .into_iter()
            .map(|r| {
                Ok(vec![OutputRecord {
                    topic: None,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                    timestamp: Some(r.timestamp),
                }])
            })
            .collect()
    }
}

#[cfg(target_family = "wasm")]
export!(Identity);
