//! Copies every record unchanged to the output topic: the baseline for measuring what a Wasm
//! stage costs in a pipeline.

use weir_plugin::{transform, Error, Output, Record};

#[transform(batch)]
fn identity(records: Vec<Record>) -> Vec<Result<Vec<Output>, Error>> {
    records
        .into_iter()
        .map(|r| {
            Ok(vec![Output {
                topic: None,
                key: r.key,
                value: r.value,
                headers: r.headers,
                timestamp: Some(r.timestamp),
            }])
        })
        .collect()
}
