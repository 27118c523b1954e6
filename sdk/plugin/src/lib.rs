//! The guest SDK for Weir plugins.
//!
//! A plugin is a plain Rust function with one of five attribute macros; the macro generates
//! the WebAssembly component glue for the `weir:plugin@0.2.3` contract (`sdk/wit/plugin.wit`).
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
//! Borrowed, per record: `#[transform(borrowed)] fn(RecordRef<'_>, &mut Emitter<'_>) ->
//! Result<(), Error>`. The record borrows the batch's buffer, and what the transform emits of
//! it (its key, value, headers, or parts of them) is answered by reference to the input: a
//! transform that forwards or filters records copies none of their bytes. An `Err` drops what
//! was emitted for that record and sends it to the dead-letter topic.
//!
//! ```
//! use weir_plugin::{transform, Emitter, Error, OutputRef, RecordRef};
//!
//! #[transform(borrowed)]
//! fn route(record: RecordRef<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
//!     match record.header("kind") {
//!         Some(b"audit") => out.emit(&OutputRef::from_record(&record).to_topic("audit")),
//!         _ => out.forward(&record),
//!     }
//!     Ok(())
//! }
//! ```
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
                "weir:plugin/types@0.2.3": crate::__private::transform::weir::plugin::types,
                "weir:plugin/host@0.2.3": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.2.3": crate::__private::transform::weir::plugin::schema_registry,
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
                "weir:plugin/types@0.2.3": crate::__private::transform::weir::plugin::types,
                "weir:plugin/host@0.2.3": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.2.3": crate::__private::transform::weir::plugin::schema_registry,
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
                "weir:plugin/host@0.2.3": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.2.3": crate::__private::transform::weir::plugin::schema_registry,
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
                "weir:plugin/types@0.2.3": crate::__private::transform::weir::plugin::types,
                "weir:plugin/host@0.2.3": crate::__private::transform::weir::plugin::host,
                "weir:plugin/schema-registry@0.2.3": crate::__private::transform::weir::plugin::schema_registry,
                "weir:plugin/connector@0.2.3": crate::__private::source::weir::plugin::connector,
            },
        });
    }

    pub use partitioner::exports::weir::plugin::partition_chooser::Guest as PartitionerGuest;
    pub use sink::exports::weir::plugin::sink_connector::Guest as SinkGuest;
    pub use source::exports::weir::plugin::source_connector::Guest as SourceGuest;
    pub use source::weir::plugin::source_types::{SourceBatch, SourceRecord};
    pub use transform::exports::weir::plugin::packed_transformer::Guest as TransformGuest;
    pub use transform::weir::plugin::types::{InputBatch, PackedOutputBatch};
    pub use validator::exports::weir::plugin::record_validator::Guest as ValidatorGuest;

    pub use super::wire::PackedInput;
    use super::wire::{records, OutputWriter};
    use super::{Emitter, Error, Output, Record, RecordRef};

    pub fn run_transform_borrowed(
        input: PackedInput,
        f: impl Fn(RecordRef<'_>, &mut Emitter<'_>) -> Result<(), Error>,
    ) -> PackedOutputBatch {
        let mut out = OutputWriter::for_forwarding(&input);
        for record in input.borrowed() {
            let first = out.open();
            let result = f(record, &mut Emitter { writer: &mut out, input: &input.buffer });
            match result {
                Ok(()) => out.emitted(first),
                Err(e) => out.failed(first, &e.0),
            }
        }
        out.finish()
    }

    pub fn run_transform(input: PackedInput, f: impl Fn(Record) -> Result<Vec<Output>, Error>) -> PackedOutputBatch {
        let mut out = OutputWriter::sized_for(&input);
        for record in input.records() {
            out.outcome(f(record));
        }
        out.finish()
    }

    pub fn run_transform_batch(
        input: PackedInput,
        f: impl Fn(Vec<Record>) -> Vec<Result<Vec<Output>, Error>>,
    ) -> PackedOutputBatch {
        let mut out = OutputWriter::sized_for(&input);
        for result in f(input.records().collect()) {
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
    use super::__private::transform::weir::plugin::types::{self, InputBatch, PackedOutputBatch, Range, Span};
    use super::{Error, Header, Output, Record, RecordRef};

    /// A length word that means none (no topic, key or value) in a packed index.
    const NONE: u32 = u32::MAX;
    /// The timestamp word that keeps the input record's timestamp.
    const KEEP_TIMESTAMP: i64 = i64::MIN;

    pub(super) fn bytes<'a>(buffer: &'a [u8], span: &Span) -> &'a [u8] {
        // The host builds the buffer and its index together; a span outside it is a broken
        // host, and the trap says so.
        let start = span.start as usize;
        buffer.get(start..start + span.len as usize).expect("the host's span lies inside its buffer")
    }

    fn header(buffer: &[u8], key: &Span, value: Option<&Span>) -> Header {
        Header {
            key: String::from_utf8_lossy(bytes(buffer, key)).into_owned(),
            value: value.map(|v| bytes(buffer, v).to_vec()),
        }
    }

    fn headers(buffer: &[u8], all: &[types::Header], run: Range) -> Vec<Header> {
        let first = run.first as usize;
        all.get(first..first + run.count as usize)
            .expect("the host's header run lies inside its header list")
            .iter()
            .map(|h| header(buffer, &h.key, h.value.as_ref()))
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

    /// A transform's input as `packed-transformer` passes it: the index in 32-bit words.
    pub struct PackedInput {
        pub topic: String,
        pub partition: u32,
        pub buffer: Vec<u8>,
        pub offsets: Vec<i64>,
        pub timestamps: Vec<i64>,
        /// Six words per record: key start and length, value start and length, first header,
        /// header count.
        pub records: Vec<u32>,
        /// Four words per header: key start and length, value start and length.
        pub headers: Vec<u32>,
    }

    /// The span of a start and length word, or none.
    pub(super) fn packed_span(start: u32, len: u32) -> Option<Span> {
        (len != NONE).then_some(Span { start, len })
    }

    impl PackedInput {
        /// How many records the batch holds.
        pub fn count(&self) -> usize {
            self.offsets.len()
        }

        /// The batch's records, borrowed from its buffer.
        pub fn borrowed(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
            let buffer = &self.buffer[..];
            assert!(
                self.records.len() == 6 * self.count() && self.timestamps.len() == self.count(),
                "the host's index has six words and a timestamp per record"
            );
            self.records.chunks_exact(6).zip(self.offsets.iter().zip(&self.timestamps)).map(
                move |(w, (&offset, &timestamp))| {
                    let first = w[4] as usize;
                    RecordRef {
                        topic: &self.topic,
                        partition: self.partition,
                        offset,
                        timestamp,
                        key: packed_span(w[0], w[1]).map(|s| bytes(buffer, &s)),
                        value: packed_span(w[2], w[3]).map(|s| bytes(buffer, &s)),
                        buffer,
                        headers: self
                            .headers
                            .get(first * 4..(first + w[5] as usize) * 4)
                            .expect("the host's header run lies inside its header list"),
                    }
                },
            )
        }

        /// The batch's records, each with its own copies of its bytes.
        pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
            self.borrowed().map(|r| r.to_record())
        }
    }

    /// The answer's lists of span words.
    #[derive(Clone, Copy)]
    enum List {
        Records,
        Headers,
        Outcomes,
    }

    fn len32(n: usize) -> u32 {
        // A wasm32 guest's memory is below 4 GiB, and so is everything in it.
        u32::try_from(n).expect("below 4 GiB in a wasm32 guest")
    }

    /// Builds a packed answer, one outcome per input record. Its spans address the input
    /// buffer followed by the answer's own (`weir:plugin@0.2.3`): bytes that lie in the input
    /// are answered with their input span, once each, and everything else is copied.
    #[derive(Default)]
    pub struct OutputWriter {
        /// The input buffer's length: where the answer's own buffer starts.
        base: usize,
        /// Bytes of the input the answer's spans cover so far: at most `base`.
        forwarded: usize,
        buffer: Vec<u8>,
        records: Vec<u32>,
        timestamps: Vec<i64>,
        headers: Vec<u32>,
        outcomes: Vec<u32>,
    }

    /// Where `bytes` start in `input`, if they lie in it.
    fn offset_in(input: &[u8], bytes: &[u8]) -> Option<usize> {
        let offset = (bytes.as_ptr() as usize).checked_sub(input.as_ptr() as usize)?;
        (!bytes.is_empty() && offset < input.len() && bytes.len() <= input.len() - offset).then_some(offset)
    }

    impl OutputWriter {
        /// Room for an answer the size of `input`: a transform mostly emits about what it reads,
        /// and growing the buffer as it fills would copy it again and again.
        pub fn sized_for(input: &PackedInput) -> Self {
            Self { buffer: Vec::with_capacity(input.buffer.len()), ..Self::for_forwarding(input) }
        }

        /// Room for the index of an answer the size of `input`, whose bytes are mostly
        /// forwarded from the input rather than copied.
        pub fn for_forwarding(input: &PackedInput) -> Self {
            Self {
                base: input.buffer.len(),
                forwarded: 0,
                buffer: Vec::new(),
                records: Vec::with_capacity(8 * input.count()),
                timestamps: Vec::with_capacity(input.count()),
                headers: Vec::with_capacity(input.headers.len()),
                outcomes: Vec::with_capacity(3 * input.count()),
            }
        }

        /// Pushes the start and length words of `bytes` to `list`: their span in `input` when
        /// they lie there and forwarding them keeps the input's bytes used once, else the
        /// span of a copy after the input.
        fn put(&mut self, list: List, input: &[u8], bytes: Option<&[u8]>) {
            let span = match bytes {
                None => [NONE, NONE],
                Some(bytes) => match offset_in(input, bytes).filter(|_| self.forwarded + bytes.len() <= self.base) {
                    Some(offset) => {
                        self.forwarded += bytes.len();
                        [len32(offset), len32(bytes.len())]
                    }
                    None => {
                        let start = len32(self.base + self.buffer.len());
                        self.buffer.extend_from_slice(bytes);
                        [start, len32(bytes.len())]
                    }
                },
            };
            match list {
                List::Records => self.records.extend(span),
                List::Headers => self.headers.extend(span),
                List::Outcomes => self.outcomes.extend(span),
            }
        }

        /// The first output of the next input record.
        pub fn open(&self) -> usize {
            self.timestamps.len()
        }

        /// Closes an input record: its outputs are those added since `first`.
        pub fn emitted(&mut self, first: usize) {
            self.outcomes.extend([0, len32(first), len32(self.timestamps.len() - first)]);
        }

        /// Closes an input record as failed; outputs added since `first` are dropped.
        pub fn failed(&mut self, first: usize, reason: &str) {
            self.records.truncate(8 * first);
            self.timestamps.truncate(first);
            self.outcomes.push(1);
            self.put(List::Outcomes, &[], Some(reason.as_bytes()));
        }

        pub fn outcome(&mut self, result: Result<Vec<Output>, Error>) {
            let first = self.open();
            match result {
                Ok(outputs) => {
                    for output in outputs {
                        let headers = output.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref()));
                        let (key, value) = (output.key.as_deref(), output.value.as_deref());
                        self.output(&[], output.topic.as_deref(), key, value, headers, output.timestamp);
                    }
                    self.emitted(first);
                }
                Err(e) => self.failed(first, &e.0),
            }
        }

        /// Adds an output of the input record not yet closed; what lies in `input` is
        /// forwarded, the rest copied.
        pub fn output<'h>(
            &mut self,
            input: &[u8],
            topic: Option<&str>,
            key: Option<&[u8]>,
            value: Option<&[u8]>,
            headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
            timestamp: Option<i64>,
        ) {
            self.put(List::Records, input, topic.map(str::as_bytes));
            self.put(List::Records, input, key);
            self.put(List::Records, input, value);
            let first = len32(self.headers.len() / 4);
            for (key, value) in headers {
                self.put(List::Headers, input, Some(key.as_bytes()));
                self.put(List::Headers, input, value);
            }
            self.records.extend([first, len32(self.headers.len() / 4) - first]);
            self.timestamps.push(timestamp.unwrap_or(KEEP_TIMESTAMP));
        }

        pub fn finish(self) -> PackedOutputBatch {
            PackedOutputBatch {
                buffer: self.buffer,
                records: self.records,
                timestamps: self.timestamps,
                headers: self.headers,
                outcomes: self.outcomes,
            }
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
    /// `None` keeps the input record's timestamp (and so does `i64::MIN`, the contract's word
    /// for it).
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

/// A record as its batch holds it, borrowed: what `#[transform(borrowed)]` hands a transform.
/// Nothing of it is copied, and what an [`Emitter`] is given of it (its key, value, headers,
/// or any part of them) is answered by reference to the input, not copied either.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    topic: &'a str,
    partition: u32,
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// The batch's buffer, which `headers` point into.
    buffer: &'a [u8],
    /// Four words per header: key start and length, value start and length.
    headers: &'a [u32],
}

impl<'a> RecordRef<'a> {
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// The value as UTF-8 text, or an error naming the offset.
    pub fn value_str(&self) -> Result<&'a str, Error> {
        std::str::from_utf8(self.value.unwrap_or_default())
            .map_err(|e| Error::new(format!("value at offset {} is not UTF-8: {e}", self.offset)))
    }

    /// The headers in order: each key and value.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let buffer = self.buffer;
        self.headers.chunks_exact(4).map(move |h| {
            let key = wire::packed_span(h[0], h[1]).expect("the host's header has a key");
            let key = std::str::from_utf8(wire::bytes(buffer, &key)).expect("the host's header keys are UTF-8");
            (key, wire::packed_span(h[2], h[3]).map(|v| wire::bytes(buffer, &v)))
        })
    }

    /// The first header named `key`.
    pub fn header(&self, key: &str) -> Option<&'a [u8]> {
        self.headers().find(|(k, _)| *k == key).and_then(|(_, v)| v)
    }

    /// The record with its own copies of its bytes.
    pub fn to_record(&self) -> Record {
        Record {
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self.headers().map(|(k, v)| Header { key: k.to_owned(), value: v.map(<[u8]>::to_vec) }).collect(),
        }
    }
}

/// A record a borrowed transform emits: its slices may borrow the input record (they are then
/// answered by reference, not copied) or anything else (copied into the answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRef<'a> {
    /// The topic to write to; `None` means the deployment's default output topic.
    pub topic: Option<&'a str>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    /// `None` keeps the input record's timestamp.
    pub timestamp: Option<i64>,
}

impl<'a> OutputRef<'a> {
    /// A record with this value, no key, no headers, to the default output topic.
    pub fn new(value: &'a [u8]) -> Self {
        Self { topic: None, key: None, value: Some(value), headers: Vec::new(), timestamp: None }
    }

    /// The input record unchanged (key, value, headers, timestamp), to the default output topic.
    pub fn from_record(record: &RecordRef<'a>) -> Self {
        Self {
            topic: None,
            key: record.key,
            value: record.value,
            headers: record.headers().collect(),
            timestamp: Some(record.timestamp),
        }
    }

    /// Sends this record to `topic` instead of the deployment's output topic.
    pub fn to_topic(mut self, topic: &'a str) -> Self {
        self.topic = Some(topic);
        self
    }

    pub fn with_value(mut self, value: &'a [u8]) -> Self {
        self.value = Some(value);
        self
    }

    pub fn with_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    pub fn with_header(mut self, key: &'a str, value: &'a [u8]) -> Self {
        self.headers.push((key, Some(value)));
        self
    }
}

/// Where a borrowed transform puts its outputs for the record it was handed. Bytes that lie in
/// the input batch are answered with their place in it, so forwarding copies nothing; each
/// input byte is forwarded so once, and a second output of the same bytes is copied.
pub struct Emitter<'w> {
    writer: &'w mut wire::OutputWriter,
    input: &'w [u8],
}

impl Emitter<'_> {
    /// Emits `record` unchanged (key, value, headers, timestamp) to the default output topic.
    pub fn forward(&mut self, record: &RecordRef<'_>) {
        self.writer.output(self.input, None, record.key, record.value, record.headers(), Some(record.timestamp));
    }

    /// Emits `output`.
    pub fn emit(&mut self, output: &OutputRef<'_>) {
        let headers = output.headers.iter().copied();
        self.writer.output(self.input, output.topic, output.key, output.value, headers, output.timestamp);
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
    use super::__private::run_transform_borrowed;
    use super::__private::transform::weir::plugin::types::{self, InputBatch, Range, Span};
    use super::wire::{records, OutputWriter, PackedInput};
    use super::{Error, Header, Output, OutputRef, Record, RecordRef};

    const NONE: u32 = u32::MAX;

    fn span(start: u32, len: u32) -> Span {
        Span { start, len }
    }

    /// Two records: the first with key, value and a header; the second with none of them.
    fn check_read(read: &[Record]) {
        assert_eq!((read[0].topic.as_str(), read[0].partition, read[0].offset, read[0].timestamp), ("in", 2, 5, 9));
        assert_eq!((read[0].key.as_deref(), read[0].value.as_deref()), (Some(&b"k1"[..]), Some(&b"v1"[..])));
        assert_eq!(read[0].headers, [Header { key: "h".into(), value: Some(b"x".to_vec()) }]);
        assert_eq!((read[1].key.as_deref(), read[1].value.as_deref(), read[1].headers.len()), (None, None, 0));
        assert_eq!((read[1].offset, read[1].timestamp), (6, 10));
    }

    #[test]
    fn records_are_read_from_the_batch_buffer_typed_or_packed() {
        let typed = InputBatch {
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
        check_read(&records(&typed).collect::<Vec<_>>());
        check_read(&two_records().records().collect::<Vec<_>>());
    }

    #[test]
    fn outputs_are_written_to_one_buffer_with_a_packed_index() {
        let record = Record {
            topic: "in".into(),
            partition: 0,
            offset: 5,
            timestamp: 9,
            key: Some(b"k1".to_vec()),
            value: Some(b"v1".to_vec()),
            headers: vec![Header { key: "h".into(), value: Some(b"x".to_vec()) }],
        };
        let mut out = OutputWriter::default();
        out.outcome(Ok(vec![Output::from_record(&record).to_topic("t"), Output::new("n")]));
        out.outcome(Err(Error::new("bad")));
        out.outcome(Ok(vec![]));
        let answer = out.finish();
        let text = |start: u32, len: u32| &answer.buffer[start as usize..(start + len) as usize];
        assert_eq!(answer.outcomes.len(), 9);
        assert_eq!(answer.outcomes[0..3], [0, 0, 2]);
        assert_eq!(answer.outcomes[3], 1);
        assert_eq!(text(answer.outcomes[4], answer.outcomes[5]), b"bad");
        assert_eq!(answer.outcomes[6..9], [0, 2, 0]);
        let (first, second) = (&answer.records[0..8], &answer.records[8..16]);
        assert_eq!(answer.records.len(), 16);
        assert_eq!(text(first[0], first[1]), b"t");
        assert_eq!(text(first[2], first[3]), b"k1");
        assert_eq!(text(first[4], first[5]), b"v1");
        assert_eq!((first[6], first[7]), (0, 1));
        assert_eq!(answer.timestamps, [9, i64::MIN]);
        let header = &answer.headers[0..4];
        assert_eq!((text(header[0], header[1]), text(header[2], header[3])), (&b"h"[..], &b"x"[..]));
        assert_eq!((second[1], second[3], second[7]), (NONE, NONE, 0));
        assert_eq!(text(second[4], second[5]), b"n");
    }

    /// The records `check_read` expects, as `packed-transformer` passes them.
    fn two_records() -> PackedInput {
        PackedInput {
            topic: "in".into(),
            partition: 2,
            buffer: b"k1v1hx".to_vec(),
            offsets: vec![5, 6],
            timestamps: vec![9, 10],
            records: vec![0, 2, 2, 2, 0, 1, NONE, NONE, NONE, NONE, 1, 0],
            headers: vec![4, 1, 5, 1],
        }
    }

    #[test]
    fn borrowed_records_are_the_batch_buffer_itself() {
        let input = two_records();
        let read: Vec<RecordRef<'_>> = input.borrowed().collect();
        let owned: Vec<Record> = read.iter().map(RecordRef::to_record).collect();
        check_read(&owned);
        let value = read[0].value().unwrap();
        assert_eq!(value.as_ptr(), input.buffer[2..].as_ptr(), "no copy");
        assert_eq!(read[0].header("h"), Some(&b"x"[..]));
        assert_eq!((read[0].topic(), read[0].partition(), read[1].header("h")), ("in", 2, None));
        assert_eq!(read[0].value_str().unwrap(), "v1");
    }

    /// Forwarded bytes are answered with their span in the input (the first 6 bytes of the
    /// space the answer's spans address); anything else, and input bytes forwarded a second
    /// time, are copied after it.
    #[test]
    fn a_borrowed_transform_answers_forwarded_bytes_by_reference_and_copies_the_rest() {
        let answer = run_transform_borrowed(two_records(), |record, out| {
            if record.offset() == 6 {
                out.forward(&record);
                return Err(Error::new("bad"));
            }
            out.forward(&record);
            let value = record.value().unwrap();
            out.emit(&OutputRef::new(&value[1..]).to_topic("t").with_header("n", b"new"));
            Ok(())
        });
        let all = [&b"k1v1hx"[..], &answer.buffer].concat();
        let text = |start: u32, len: u32| &all[start as usize..(start + len) as usize];
        assert_eq!(answer.records.len(), 16, "two outputs; the failed record's is dropped");
        let (first, second) = (&answer.records[0..8], &answer.records[8..16]);
        assert_eq!(first[..6], [NONE, NONE, 0, 2, 2, 2], "the key and value are the input's spans");
        assert_eq!(answer.headers[..4], [4, 1, 5, 1], "so is the header");
        assert_eq!((first[6], first[7]), (0, 1));
        assert!(second[0] >= 6 && second[4] >= 6, "copied: the input's bytes were all forwarded once");
        assert_eq!((text(second[0], second[1]), text(second[4], second[5])), (&b"t"[..], &b"1"[..]));
        assert_eq!((second[6], second[7]), (1, 1));
        let header = &answer.headers[4..8];
        assert_eq!((text(header[0], header[1]), text(header[2], header[3])), (&b"n"[..], &b"new"[..]));
        assert_eq!(answer.timestamps, [9, i64::MIN]);
        assert_eq!(answer.outcomes[0..3], [0, 0, 2]);
        assert_eq!(answer.outcomes[3], 1);
        assert_eq!(text(answer.outcomes[4], answer.outcomes[5]), b"bad");
    }
}
