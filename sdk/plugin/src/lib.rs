//! The guest SDK for Weir plugins.
//!
//! A plugin is a plain Rust function with one of five attribute macros; the macro generates
//! the WebAssembly component glue for the `weir:plugin@0.2.1` contract (`sdk/wit/plugin.wit`).
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
//!
//! Connectors: `#[source] fn(Option<Vec<u8>>, u32) -> Result<Polled, Error>` is polled with the
//! position it reported last (`None` at first, and the stored one after a restart) and at
//! most how many records to answer; `#[sink] fn(Vec<Record>) -> Result<Vec<Result<(), Error>>,
//! Error>` delivers a batch (an `Err` for the whole batch makes the broker retry it; an `Err`
//! for one record sends it to the dead-letter topic). Connectors also have [`secret`] and
//! [`state`], see the directory their config grants at `/data`, and may send [`http`]
//! requests to the hosts their config's `http_allow` lists.
//!
//! A batch arrives as one buffer with an index and the answer leaves the same way; this crate
//! turns them into [`Record`]s and back, so a plugin never sees the wire form.

use std::fmt;

pub mod http;

pub use weir_plugin_macros::{partitioner, sink, source, transform, validator};

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
                "weir:plugin/types@0.2.1": crate::__private::transform::weir::plugin::types,
                "weir:plugin/host@0.2.1": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.2.1": crate::__private::transform::weir::plugin::schema_registry,
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
                "weir:plugin/types@0.2.1": crate::__private::transform::weir::plugin::types,
                "weir:plugin/host@0.2.1": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.2.1": crate::__private::transform::weir::plugin::schema_registry,
            },
        });
    }

    pub mod source {
        wit_bindgen::generate!({
            world: "source",
            path: "../wit",
            default_bindings_module: "weir_plugin::__private::source",
            pub_export_macro: true,
            export_macro_name: "__export_source",
            with: {
                "weir:plugin/host@0.2.1": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.2.1": crate::__private::transform::weir::plugin::schema_registry,
            },
        });
    }
    pub mod sink {
        wit_bindgen::generate!({
            world: "sink",
            path: "../wit",
            default_bindings_module: "weir_plugin::__private::sink",
            pub_export_macro: true,
            export_macro_name: "__export_sink",
            with: {
                "weir:plugin/types@0.2.1": crate::__private::transform::weir::plugin::types,
                "weir:plugin/host@0.2.1": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.2.1": crate::__private::transform::weir::plugin::schema_registry,
                "weir:plugin/connector@0.2.1": crate::__private::source::weir::plugin::connector,
            },
        });
    }

    pub use partitioner::exports::weir::plugin::partition_chooser::Guest as PartitionerGuest;
    pub use sink::exports::weir::plugin::sink_connector::Guest as SinkGuest;
    pub use source::exports::weir::plugin::source_connector::Guest as SourceGuest;
    pub use source::weir::plugin::source_types::{SourceBatch, SourceRecord};
    pub use transform::exports::weir::plugin::transformer::Guest as TransformGuest;
    pub use transform::weir::plugin::types::{InputBatch, OutputBatch};
    pub use validator::exports::weir::plugin::record_validator::Guest as ValidatorGuest;

    use super::wire::{records, OutputWriter};
    use super::{Error, Output, Record};

    pub fn run_transform(batch: InputBatch, f: impl Fn(Record) -> Result<Vec<Output>, Error>) -> OutputBatch {
        let mut out = OutputWriter::sized_for(&batch);
        for record in records(&batch) {
            out.outcome(f(record));
        }
        out.finish()
    }

    pub fn run_transform_batch(
        batch: InputBatch,
        f: impl Fn(Vec<Record>) -> Vec<Result<Vec<Output>, Error>>,
    ) -> OutputBatch {
        let mut out = OutputWriter::sized_for(&batch);
        for result in f(records(&batch).collect()) {
            out.outcome(result);
        }
        out.finish()
    }

    /// A partitioner error or an out-of-range answer traps, failing the batch with the reason.
    pub fn run_partitioner(
        batch: InputBatch,
        partition_count: u32,
        f: impl Fn(&Record, u32) -> Result<u32, Error>,
    ) -> Vec<u32> {
        records(&batch)
            .map(|r| match f(&r, partition_count) {
                Ok(p) => p,
                Err(e) => panic!("partitioner failed for the record at offset {}: {}", r.offset, e.0),
            })
            .collect()
    }

    pub fn run_validator(batch: InputBatch, f: impl Fn(&Record) -> Result<(), Error>) -> Vec<Option<String>> {
        records(&batch).map(|r| f(&r).err().map(|e| e.0)).collect()
    }

    pub fn run_source(
        position: Option<Vec<u8>>,
        max_records: u32,
        f: impl Fn(Option<Vec<u8>>, u32) -> Result<super::Polled, Error>,
    ) -> Result<SourceBatch, String> {
        let polled = f(position, max_records).map_err(|e| e.0)?;
        let mut records = Vec::with_capacity(polled.records.len());
        for output in polled.records {
            if let Some(topic) = output.topic {
                return Err(format!(
                    "a source's records go to its connector's topic, but one names topic {topic:?} (Output::to_topic \
                     is for transforms)"
                ));
            }
            records.push(SourceRecord {
                key: output.key,
                value: output.value,
                headers: output.headers.into_iter().map(|h| (h.key, h.value)).collect(),
                timestamp: output.timestamp,
            });
        }
        Ok(SourceBatch { records, position: polled.position })
    }

    pub fn run_sink(
        batch: InputBatch,
        f: impl Fn(Vec<Record>) -> Result<Vec<Result<(), Error>>, Error>,
    ) -> Result<Vec<Option<String>>, String> {
        let count = batch.records.len();
        let verdicts = f(records(&batch).collect()).map_err(|e| e.0)?;
        if verdicts.len() != count {
            return Err(format!("the sink answered {} verdicts for {count} records", verdicts.len()));
        }
        Ok(verdicts.into_iter().map(|v| v.err().map(|e| e.0)).collect())
    }
}

/// The batch buffers of the contract, read and written.
mod wire {
    use super::__private::transform::weir::plugin::types::{
        self, InputBatch, Outcome, OutputBatch, OutputRecord, Range, Span,
    };
    use super::{Error, Header, Output, Record};

    fn bytes<'a>(buffer: &'a [u8], span: &Span) -> &'a [u8] {
        // The host builds the buffer and its index together; a span outside it is a broken
        // host, and the trap says so.
        let start = span.start as usize;
        buffer.get(start..start + span.len as usize).expect("the host's span lies inside its buffer")
    }

    fn headers(buffer: &[u8], all: &[types::Header], run: Range) -> Vec<Header> {
        let first = run.first as usize;
        all.get(first..first + run.count as usize)
            .expect("the host's header run lies inside its header list")
            .iter()
            .map(|h| Header {
                key: String::from_utf8_lossy(bytes(buffer, &h.key)).into_owned(),
                value: h.value.as_ref().map(|v| bytes(buffer, v).to_vec()),
            })
            .collect()
    }

    /// The batch's records, each with its own copies of its bytes.
    pub fn records(batch: &InputBatch) -> impl Iterator<Item = Record> + '_ {
        let buffer = &batch.buffer[..];
        batch.records.iter().map(move |r| Record {
            topic: batch.topic.clone(),
            partition: batch.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.as_ref().map(|s| bytes(buffer, s).to_vec()),
            value: r.value.as_ref().map(|s| bytes(buffer, s).to_vec()),
            headers: headers(buffer, &batch.headers, r.headers),
        })
    }

    fn len32(n: usize) -> u32 {
        // A wasm32 guest's memory is below 4 GiB, and so is everything in it.
        u32::try_from(n).expect("below 4 GiB in a wasm32 guest")
    }

    /// Builds an output batch, one outcome per input record.
    #[derive(Default)]
    pub struct OutputWriter {
        buffer: Vec<u8>,
        records: Vec<OutputRecord>,
        headers: Vec<types::Header>,
        outcomes: Vec<Outcome>,
    }

    impl OutputWriter {
        /// Room for an answer the size of `batch`: a transform mostly emits about what it reads,
        /// and growing the buffer as it fills would copy it again and again.
        pub fn sized_for(batch: &InputBatch) -> Self {
            Self {
                buffer: Vec::with_capacity(batch.buffer.len()),
                records: Vec::with_capacity(batch.records.len()),
                headers: Vec::with_capacity(batch.headers.len()),
                outcomes: Vec::with_capacity(batch.records.len()),
            }
        }

        fn put(&mut self, bytes: &[u8]) -> Span {
            let start = len32(self.buffer.len());
            self.buffer.extend_from_slice(bytes);
            Span { start, len: len32(bytes.len()) }
        }

        pub fn outcome(&mut self, result: Result<Vec<Output>, Error>) {
            let outcome = match result {
                Ok(outputs) => {
                    let first = len32(self.records.len());
                    for output in outputs {
                        self.output(output);
                    }
                    Outcome::Emitted(Range { first, count: len32(self.records.len()) - first })
                }
                Err(e) => Outcome::Failed(self.put(e.0.as_bytes())),
            };
            self.outcomes.push(outcome);
        }

        fn output(&mut self, output: Output) {
            let topic = output.topic.as_ref().map(|t| self.put(t.as_bytes()));
            let key = output.key.as_ref().map(|k| self.put(k));
            let value = output.value.as_ref().map(|v| self.put(v));
            let first = len32(self.headers.len());
            for h in &output.headers {
                let key = self.put(h.key.as_bytes());
                let value = h.value.as_ref().map(|v| self.put(v));
                self.headers.push(types::Header { key, value });
            }
            let headers = Range { first, count: len32(self.headers.len()) - first };
            self.records.push(OutputRecord { topic, key, value, headers, timestamp: output.timestamp });
        }

        pub fn finish(self) -> OutputBatch {
            OutputBatch { buffer: self.buffer, records: self.records, headers: self.headers, outcomes: self.outcomes }
        }
    }
}

use __private::source::weir::plugin::connector;
use __private::transform::weir::plugin::{host, schema_registry};

/// What a source's poll found: the records (none when there is nothing new; the broker polls
/// again after a pause) and the position after them, which the broker stores once the records
/// are durable and hands back to the next poll, also after a restart. Records go to the
/// connector's topic: leave [`Output::topic`] unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Polled {
    pub records: Vec<Output>,
    pub position: Vec<u8>,
}

/// One of the connector's secrets (`[secrets]` in its config), or `None`. The broker never
/// logs secrets nor shows them back.
pub fn secret(name: &str) -> Option<String> {
    connector::secret(name)
}

/// The connector's own key-value state, kept by the broker across restarts (small values:
/// the broker refuses a set past its limits, naming the limit).
pub mod state {
    use super::{connector, Error};

    pub fn get(key: &str) -> Option<Vec<u8>> {
        connector::state_get(key)
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        connector::state_set(key, value).map_err(Error)
    }

    pub fn delete(key: &str) {
        connector::state_delete(key)
    }
}

/// A record read from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// A record a transform emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The topic to write to; `None` means the deployment's default output topic.
    pub topic: Option<String>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    /// `None` keeps the input record's timestamp.
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

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

/// The deployment's parameters, asked of the host once per instance: they are fixed for the
/// life of an instance (a new version, or a restart after a failed call, is a new instance
/// with fresh memory), and a host call per record would cost more than the lookup.
fn cached_params() -> &'static std::collections::BTreeMap<String, String> {
    static PARAMS: std::sync::OnceLock<std::collections::BTreeMap<String, String>> = std::sync::OnceLock::new();
    PARAMS.get_or_init(|| host::params().into_iter().collect())
}

/// One of the deployment's parameters (`weir module deploy --param name=value`).
pub fn param(name: &str) -> Option<String> {
    cached_params().get(name).cloned()
}

/// All of the deployment's parameters, sorted by name.
pub fn params() -> Vec<(String, String)> {
    cached_params().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
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

#[cfg(test)]
mod tests {
    use super::__private::transform::weir::plugin::types::{self, InputBatch, Outcome, Range, Span};
    use super::wire::{records, OutputWriter};
    use super::{Error, Header, Output};

    fn span(start: u32, len: u32) -> Span {
        Span { start, len }
    }

    #[test]
    fn records_are_read_from_the_batch_buffer_and_outputs_written_to_one() {
        let batch = InputBatch {
            topic: "in".into(),
            partition: 2,
            buffer: b"k1v1hx".to_vec(),
            records: vec![
                types::InputRecord {
                    offset: 5,
                    timestamp: 9,
                    key: Some(span(0, 2)),
                    value: Some(span(2, 2)),
                    headers: Range { first: 0, count: 1 },
                },
                types::InputRecord {
                    offset: 6,
                    timestamp: 10,
                    key: None,
                    value: None,
                    headers: Range { first: 1, count: 0 },
                },
            ],
            headers: vec![types::Header { key: span(4, 1), value: Some(span(5, 1)) }],
        };
        let read: Vec<_> = records(&batch).collect();
        assert_eq!((read[0].topic.as_str(), read[0].partition, read[0].offset, read[0].timestamp), ("in", 2, 5, 9));
        assert_eq!((read[0].key.as_deref(), read[0].value.as_deref()), (Some(&b"k1"[..]), Some(&b"v1"[..])));
        assert_eq!(read[0].headers, [Header { key: "h".into(), value: Some(b"x".to_vec()) }]);
        assert_eq!((read[1].key.as_deref(), read[1].value.as_deref(), read[1].headers.len()), (None, None, 0));

        let mut out = OutputWriter::default();
        out.outcome(Ok(vec![Output::from_record(&read[0]).to_topic("t"), Output::new("n")]));
        out.outcome(Err(Error::new("bad")));
        out.outcome(Ok(vec![]));
        let answer = out.finish();
        let text = |s: &Span| &answer.buffer[s.start as usize..(s.start + s.len) as usize];
        assert!(matches!(&answer.outcomes[0], Outcome::Emitted(Range { first: 0, count: 2 })));
        assert!(matches!(&answer.outcomes[1], Outcome::Failed(s) if text(s) == b"bad"));
        assert!(matches!(&answer.outcomes[2], Outcome::Emitted(Range { first: 2, count: 0 })));
        let first = &answer.records[0];
        assert_eq!(text(first.topic.as_ref().unwrap()), b"t");
        assert_eq!(text(first.key.as_ref().unwrap()), b"k1");
        assert_eq!(text(first.value.as_ref().unwrap()), b"v1");
        assert_eq!(first.timestamp, Some(9));
        let header = &answer.headers[first.headers.first as usize];
        assert_eq!(
            (first.headers.count, text(&header.key), text(header.value.as_ref().unwrap())),
            (1, &b"h"[..], &b"x"[..])
        );
        let second = &answer.records[1];
        assert_eq!((second.topic.is_none(), second.key.is_none(), second.headers.count), (true, true, 0));
        assert_eq!(text(second.value.as_ref().unwrap()), b"n");
    }
}
