//! The guest SDK for Weir plugins.
//!
//! A plugin is a plain Rust function with one of three attribute macros; the macro generates
//! the WebAssembly component glue for the `weir:plugin@0.1.0` contract (`sdk/wit/plugin.wit`).
//! Build with `cargo build --release --target wasm32-wasip2` and deploy the `.wasm` with
//! `weir module deploy`. See `sdk/README.md` for a complete plugin.
//!
//! ```
//! use weir_plugin::{transform, Error, Output, Record};
//!
//! #[transform]
//! fn upper(record: Record) -> Result<Vec<Output>, Error> {
//!     let value = record.value.as_deref().unwrap_or_default().to_ascii_uppercase();
//!     Ok(vec![Output::from_record(&record).with_value(value)])
//! }
//! ```
//!
//! Per record: `#[transform] fn(Record) -> Result<Vec<Output>, Error>`,
//! `#[partitioner] fn(&Record, u32) -> Result<u32, Error>`,
//! `#[validator] fn(&Record) -> Result<(), Error>`. Per batch: `#[transform(batch)]
//! fn(Vec<Record>) -> Vec<Result<Vec<Output>, Error>>`. A panic traps the module: the broker
//! fails that batch and sends its records to the deployment's dead-letter topic.

use std::fmt;

pub use weir_plugin_macros::{partitioner, transform, validator};

#[doc(hidden)]
pub mod __private {
    pub mod transform {
        wit_bindgen::generate!({
            world: "transform",
            path: "../wit",
            default_bindings_module: "weir_plugin::__private::transform",
            pub_export_macro: true,
            export_macro_name: "__export_transform",
        });
    }
    pub mod partitioner {
        wit_bindgen::generate!({
            world: "partitioner",
            path: "../wit",
            default_bindings_module: "weir_plugin::__private::partitioner",
            pub_export_macro: true,
            export_macro_name: "__export_partitioner",
            with: {
                "weir:plugin/types@0.1.0": crate::__private::transform::weir::plugin::types,
                "weir:plugin/host@0.1.0": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.1.0": crate::__private::transform::weir::plugin::schema_registry,
            },
        });
    }
    pub mod validator {
        wit_bindgen::generate!({
            world: "validator",
            path: "../wit",
            default_bindings_module: "weir_plugin::__private::validator",
            pub_export_macro: true,
            export_macro_name: "__export_validator",
            with: {
                "weir:plugin/types@0.1.0": crate::__private::transform::weir::plugin::types,
                "weir:plugin/host@0.1.0": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.1.0": crate::__private::transform::weir::plugin::schema_registry,
            },
        });
    }

    pub use partitioner::exports::weir::plugin::partition_chooser::Guest as PartitionerGuest;
    pub use transform::exports::weir::plugin::transformer::Guest as TransformGuest;
    pub use validator::exports::weir::plugin::record_validator::Guest as ValidatorGuest;

    use super::{Error, Output, Record};

    pub fn run_transform(
        records: Vec<Record>,
        f: impl Fn(Record) -> Result<Vec<Output>, Error>,
    ) -> Vec<Result<Vec<Output>, String>> {
        records.into_iter().map(|r| f(r).map_err(|e| e.0)).collect()
    }

    pub fn run_transform_batch(
        records: Vec<Record>,
        f: impl Fn(Vec<Record>) -> Vec<Result<Vec<Output>, Error>>,
    ) -> Vec<Result<Vec<Output>, String>> {
        f(records).into_iter().map(|r| r.map_err(|e| e.0)).collect()
    }

    /// A partitioner error or an out-of-range answer traps, failing the batch with the reason.
    pub fn run_partitioner(
        records: Vec<Record>,
        partition_count: u32,
        f: impl Fn(&Record, u32) -> Result<u32, Error>,
    ) -> Vec<u32> {
        records
            .iter()
            .map(|r| match f(r, partition_count) {
                Ok(p) => p,
                Err(e) => panic!("partitioner failed for the record at offset {}: {}", r.offset, e.0),
            })
            .collect()
    }

    pub fn run_validator(records: Vec<Record>, f: impl Fn(&Record) -> Result<(), Error>) -> Vec<Option<String>> {
        records.iter().map(|r| f(r).err().map(|e| e.0)).collect()
    }
}

use __private::transform::weir::plugin::{host, schema_registry, types};

/// A record read from a topic.
pub type Record = types::InputRecord;
/// A record a transform emits.
pub type Output = types::OutputRecord;
pub type Header = types::Header;
/// A schema from the broker's registry.
pub type Schema = schema_registry::Schema;

impl Record {
    /// The value as UTF-8 text, or an error naming the offset.
    pub fn value_str(&self) -> Result<&str, Error> {
        std::str::from_utf8(self.value.as_deref().unwrap_or_default())
            .map_err(|e| Error::new(format!("value at offset {} is not UTF-8: {e}", self.offset)))
    }

    /// The first header named `key`.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.key == key).and_then(|h| h.value.as_deref())
    }
}

impl Output {
    /// A record with this value, no key, no headers, to the default output topic.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self { topic: None, key: None, value: Some(value.into()), headers: Vec::new(), timestamp: None }
    }

    /// The input record unchanged (key, value, headers, timestamp), to the default output topic.
    pub fn from_record(record: &Record) -> Self {
        Self {
            topic: None,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
            timestamp: Some(record.timestamp),
        }
    }

    /// Sends this record to `topic` instead of the deployment's output topic.
    pub fn to_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header { key: key.into(), value: Some(value.into()) });
        self
    }
}

/// Why a record failed; the broker records it with the dead-lettered records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl fmt::Display) -> Self {
        Self(message.to_string())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// One of the deployment's parameters (`weir module deploy --param name=value`).
pub fn param(name: &str) -> Option<String> {
    host::param(name)
}

/// All of the deployment's parameters, sorted by name.
pub fn params() -> Vec<(String, String)> {
    host::params()
}

/// Adds `delta` to the deployment's counter `name` (shown by `weir module describe`).
pub fn counter_add(name: &str, delta: u64) {
    host::counter_add(name, delta)
}

/// The schema registered under `id` in the broker's schema registry.
pub fn schema(id: u32) -> Result<Schema, Error> {
    schema_registry::lookup(id).map_err(Error)
}

/// Structured logs, tagged by the broker with the deployment, version and partition.
pub mod log {
    use super::host::{self, LogLevel};

    pub fn trace(message: &str) {
        host::log(LogLevel::Trace, message)
    }
    pub fn debug(message: &str) {
        host::log(LogLevel::Debug, message)
    }
    pub fn info(message: &str) {
        host::log(LogLevel::Info, message)
    }
    pub fn warn(message: &str) {
        host::log(LogLevel::Warn, message)
    }
    pub fn error(message: &str) {
        host::log(LogLevel::Error, message)
    }
}
