//! Batches as they cross the host-guest boundary: every key, value and header of a call in one
//! buffer with an index, so a call costs a few allocations in the guest, not several per
//! record. The broker builds an [`InputBatch`]; a transform is handed its index packed into
//! 32-bit words (`weir:plugin@0.2.2`'s `packed-transformer`: one copy per list, where a list of
//! records is lowered field by field) and answers the same way. The answer comes back as a
//! [`TransformOutput`], checked entry by entry before the broker reads it, and read without
//! copying (its keys and values are slices of the answer's buffer, or, from 0.2.3, of the
//! input's, which the answer shares). Answers of components built for 0.2.0 and 0.2.1 (lists
//! of records) are packed when they come, and checked the same way.

use std::sync::Arc;

use bytes::Bytes;

use crate::bindings::types as wit;
use crate::error::CallError;

/// The most bytes of keys, values and headers one batch can hold: its spans are 32-bit, and a
/// length of `u32::MAX` means none in a packed index.
pub const BATCH_BYTES_MAX: u64 = u32::MAX as u64 - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a plugin batch holds at most {BATCH_BYTES_MAX} bytes of keys, values and headers; this one needs {needed}")]
pub struct BatchTooLarge {
    pub needed: u64,
}

impl From<BatchTooLarge> for CallError {
    fn from(e: BatchTooLarge) -> Self {
        CallError::Input(e.to_string())
    }
}

/// Appends `bytes` to `buffer` and says where they went.
fn put(buffer: &mut Vec<u8>, bytes: &[u8]) -> Result<wit::Span, BatchTooLarge> {
    let needed = buffer.len() as u64 + bytes.len() as u64;
    let (Ok(start), Ok(len), true) =
        (u32::try_from(buffer.len()), u32::try_from(bytes.len()), needed <= BATCH_BYTES_MAX)
    else {
        return Err(BatchTooLarge { needed });
    };
    buffer.extend_from_slice(bytes);
    Ok(wit::Span { start, len })
}

fn count32(n: usize) -> Result<u32, BatchTooLarge> {
    u32::try_from(n).map_err(|_| BatchTooLarge { needed: n as u64 })
}

/// Appends headers to `buffer` and `list`; their run of `list`.
fn put_headers<'h>(
    buffer: &mut Vec<u8>,
    list: &mut Vec<wit::Header>,
    headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
) -> Result<wit::Range, BatchTooLarge> {
    let first = count32(list.len())?;
    for (key, value) in headers {
        let key = put(buffer, key.as_bytes())?;
        let value = value.map(|v| put(buffer, v)).transpose()?;
        list.push(wit::Header { key, value });
    }
    Ok(wit::Range { first, count: count32(list.len())? - first })
}

/// Records of one partition for one call.
#[derive(Debug, Clone)]
pub struct InputBatch {
    /// Shared, so an answer that forwards bytes of the buffer holds it without a copy
    /// ([`InputBatch::shared_buffer`]); a push to a batch so shared copies it first.
    pub(crate) wit: Arc<wit::InputBatch>,
}

/// The buffer of a shared input batch, as the owner of a `Bytes`.
struct SharedBuffer(Arc<wit::InputBatch>);

impl AsRef<[u8]> for SharedBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.0.buffer
    }
}

impl InputBatch {
    pub fn new(topic: &str, partition: u32) -> Self {
        Self::with_capacity(topic, partition, 0, 0)
    }

    /// Room for `records` records whose keys, values and headers take `bytes` bytes.
    pub fn with_capacity(topic: &str, partition: u32, records: usize, bytes: usize) -> Self {
        Self {
            wit: Arc::new(wit::InputBatch {
                topic: topic.to_owned(),
                partition,
                buffer: Vec::with_capacity(bytes),
                records: Vec::with_capacity(records),
                headers: Vec::new(),
            }),
        }
    }

    /// Adds a record. On an error the batch is left as it was.
    pub fn push<'h>(
        &mut self,
        offset: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Result<(), BatchTooLarge> {
        let batch = Arc::make_mut(&mut self.wit);
        let (bytes, header_count) = (batch.buffer.len(), batch.headers.len());
        let pushed = (|| {
            let key = key.map(|k| put(&mut batch.buffer, k)).transpose()?;
            let value = value.map(|v| put(&mut batch.buffer, v)).transpose()?;
            let headers = put_headers(&mut batch.buffer, &mut batch.headers, headers)?;
            count32(batch.records.len() + 1)?;
            Ok(wit::InputRecord { offset, timestamp, key, value, headers })
        })();
        match pushed {
            Ok(record) => {
                batch.records.push(record);
                Ok(())
            }
            Err(e) => {
                batch.buffer.truncate(bytes);
                batch.headers.truncate(header_count);
                Err(e)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.wit.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wit.records.is_empty()
    }

    pub fn topic(&self) -> &str {
        &self.wit.topic
    }

    pub fn partition(&self) -> u32 {
        self.wit.partition
    }

    /// The records, in the order they were pushed.
    pub fn records(&self) -> impl ExactSizeIterator<Item = InputView<'_>> {
        self.wit.records.iter().map(move |record| InputView { batch: self, record })
    }

    fn bytes(&self, span: &wit::Span) -> &[u8] {
        slice(&self.wit.buffer, span).unwrap_or_default()
    }

    /// The buffer as `Bytes` sharing it, not a copy.
    pub(crate) fn shared_buffer(&self) -> Bytes {
        Bytes::from_owner(SharedBuffer(self.wit.clone()))
    }
}

/// One record of an [`InputBatch`].
#[derive(Clone, Copy)]
pub struct InputView<'a> {
    batch: &'a InputBatch,
    record: &'a wit::InputRecord,
}

impl<'a> InputView<'a> {
    pub fn offset(&self) -> i64 {
        self.record.offset
    }

    pub fn timestamp(&self) -> i64 {
        self.record.timestamp
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        self.record.key.as_ref().map(|s| self.batch.bytes(s))
    }

    pub fn value(&self) -> Option<&'a [u8]> {
        self.record.value.as_ref().map(|s| self.batch.bytes(s))
    }

    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let batch = self.batch;
        run(&batch.wit.headers, &self.record.headers).iter().map(move |h| {
            (std::str::from_utf8(batch.bytes(&h.key)).unwrap_or_default(), h.value.as_ref().map(|v| batch.bytes(v)))
        })
    }
}

fn slice<'b>(buffer: &'b [u8], span: &wit::Span) -> Option<&'b [u8]> {
    let start = span.start as usize;
    buffer.get(start..start.checked_add(span.len as usize)?)
}

fn run<'l, T>(list: &'l [T], range: &wit::Range) -> &'l [T] {
    let first = range.first as usize;
    first.checked_add(range.count as usize).and_then(|end| list.get(first..end)).unwrap_or_default()
}

/// A length word that means none (no topic, key or value) in a packed index.
const NONE: u32 = u32::MAX;
/// The timestamp word of a packed answer that keeps the input record's timestamp.
const KEEP_TIMESTAMP: i64 = i64::MIN;
/// Words per entry of a packed index: an input record, an output record, a header, an outcome.
const INPUT_WORDS: usize = 6;
const OUTPUT_WORDS: usize = 8;
const HEADER_WORDS: usize = 4;
const OUTCOME_WORDS: usize = 3;
const EMITTED: u32 = 0;
const FAILED: u32 = 1;

/// A batch's index as `packed-transformer` takes it (`weir:plugin@0.2.2`).
pub(crate) struct PackedIndex {
    pub offsets: Vec<i64>,
    pub timestamps: Vec<i64>,
    pub records: Vec<u32>,
    pub headers: Vec<u32>,
}

fn push_span(words: &mut Vec<u32>, span: Option<&wit::Span>) {
    match span {
        Some(s) => words.extend([s.start, s.len]),
        None => words.extend([NONE, NONE]),
    }
}

impl InputBatch {
    /// The index packed into words; the buffer is passed as it is.
    pub(crate) fn packed_index(&self) -> PackedIndex {
        let records = &self.wit.records;
        let mut index = PackedIndex {
            offsets: records.iter().map(|r| r.offset).collect(),
            timestamps: records.iter().map(|r| r.timestamp).collect(),
            records: Vec::with_capacity(INPUT_WORDS * records.len()),
            headers: Vec::with_capacity(HEADER_WORDS * self.wit.headers.len()),
        };
        for r in records {
            push_span(&mut index.records, r.key.as_ref());
            push_span(&mut index.records, r.value.as_ref());
            index.records.extend([r.headers.first, r.headers.count]);
        }
        for h in &self.wit.headers {
            push_span(&mut index.headers, Some(&h.key));
            push_span(&mut index.headers, h.value.as_ref());
        }
        index
    }
}

/// A transform's answer: per input record, its outputs or the module's error for it. Held as
/// the current contract's packed index over the input's buffer followed by the answer's own
/// (answers of older contracts are packed when they come, and address their own buffer only).
#[derive(Debug, Clone)]
pub struct TransformOutput {
    /// The call's input buffer (shared, not copied): a span starting below its length
    /// addresses it (0.2.3 on; empty for older contracts and native stages).
    input: Bytes,
    buffer: Bytes,
    /// [`OUTPUT_WORDS`] per output record.
    records: Vec<u32>,
    timestamps: Vec<i64>,
    /// [`HEADER_WORDS`] per header.
    headers: Vec<u32>,
    /// [`OUTCOME_WORDS`] per input record.
    outcomes: Vec<u32>,
}

/// The span of a start and a length word, or none.
fn span_of(start: u32, len: u32) -> Option<wit::Span> {
    (len != NONE).then_some(wit::Span { start, len })
}

/// A typed answer (`weir:plugin@0.2.0` and 0.2.1) in the packed form. A span whose length is
/// the packed form's none cannot lie inside a buffer, and is refused as lying outside it; a
/// timestamp of `i64::MIN` reads as keeping the input record's, as it does in the packed form.
pub(crate) fn packed_answer(answer: wit::OutputBatch) -> Result<wit::PackedOutputBatch, CallError> {
    let wit::OutputBatch { buffer, records, headers, outcomes } = answer;
    let size = buffer.len();
    let push = |words: &mut Vec<u32>, span: Option<&wit::Span>, what: &dyn Fn() -> String| {
        if let Some(s) = span.filter(|s| s.len == NONE) {
            return Err(CallError::Contract(format!(
                "{} ({} bytes from byte {}) lies outside the answer's {size}-byte buffer",
                what(),
                s.len,
                s.start
            )));
        }
        push_span(words, span);
        Ok(())
    };
    let mut packed = wit::PackedOutputBatch {
        buffer: Vec::new(),
        records: Vec::with_capacity(OUTPUT_WORDS * records.len()),
        timestamps: Vec::with_capacity(records.len()),
        headers: Vec::with_capacity(HEADER_WORDS * headers.len()),
        outcomes: Vec::with_capacity(OUTCOME_WORDS * outcomes.len()),
    };
    for (i, h) in headers.iter().enumerate() {
        push(&mut packed.headers, Some(&h.key), &|| format!("header {i}'s key"))?;
        push(&mut packed.headers, h.value.as_ref(), &|| format!("header {i}'s value"))?;
    }
    for (i, r) in records.iter().enumerate() {
        push(&mut packed.records, r.topic.as_ref(), &|| format!("output record {i}'s topic"))?;
        push(&mut packed.records, r.key.as_ref(), &|| format!("output record {i}'s key"))?;
        push(&mut packed.records, r.value.as_ref(), &|| format!("output record {i}'s value"))?;
        packed.records.extend([r.headers.first, r.headers.count]);
        packed.timestamps.push(r.timestamp.unwrap_or(KEEP_TIMESTAMP));
    }
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            wit::Outcome::Emitted(run) => packed.outcomes.extend([EMITTED, run.first, run.count]),
            wit::Outcome::Failed(span) => {
                packed.outcomes.push(FAILED);
                push(&mut packed.outcomes, Some(span), &|| format!("the error for input record {i}"))?;
            }
        }
    }
    packed.buffer = buffer;
    Ok(packed)
}

impl TransformOutput {
    /// A module's answer to a batch of `inputs` records, once every index entry is checked
    /// against the buffer and lists it points into: the error names the first that is not.
    /// Each byte of the buffer, each header and each output record may be used once (spans
    /// add up to at most the buffer, runs come in order without overlapping), so an answer
    /// cannot make the broker write more than the module itself held in its memory.
    pub(crate) fn checked(answer: wit::PackedOutputBatch, inputs: usize) -> Result<Self, CallError> {
        Self::checked_over(answer, inputs, Bytes::new())
    }

    /// The same for an answer whose spans address `input` (the call's input buffer) followed
    /// by the answer's buffer (`weir:plugin@0.2.3`). Each span lies wholly in one of the two,
    /// and the spans into each add up to at most its length: a module forwards each input byte
    /// once at most without copying it, so an answer is still no larger than the input and
    /// what the module held.
    pub(crate) fn checked_over(answer: wit::PackedOutputBatch, inputs: usize, input: Bytes) -> Result<Self, CallError> {
        let wit::PackedOutputBatch { buffer, records, timestamps, headers, outcomes } = answer;
        let words = |list: &[u32], per: usize, name: &str, entry: &str| {
            if list.len().is_multiple_of(per) {
                Ok(list.len() / per)
            } else {
                Err(CallError::Contract(format!(
                    "the answer's {name} list has {} words, not {per} per {entry}",
                    list.len()
                )))
            }
        };
        let header_count = words(&headers, HEADER_WORDS, "headers", "header")?;
        let record_count = words(&records, OUTPUT_WORDS, "records", "output record")?;
        check_count(words(&outcomes, OUTCOME_WORDS, "outcomes", "input record")?, inputs)?;
        if timestamps.len() != record_count {
            return Err(CallError::Contract(format!(
                "the answer has {} timestamps for {record_count} output records; the contract is one per output record",
                timestamps.len()
            )));
        }
        let mut spans = Spans { input: &input, buffer: &buffer, used_input: 0, used: 0 };
        for (i, h) in headers.chunks_exact(HEADER_WORDS).enumerate() {
            let Some(key) = span_of(h[0], h[1]) else {
                return Err(CallError::Contract(format!("header {i} has no key; every header has one")));
            };
            spans.text(&key, &|| format!("header {i}'s key"))?;
            if let Some(v) = span_of(h[2], h[3]) {
                spans.bytes(&v, &|| format!("header {i}'s value"))?;
            }
        }
        let mut header_runs = Runs { len: header_count, list: "headers", end: 0 };
        for (i, r) in records.chunks_exact(OUTPUT_WORDS).enumerate() {
            if let Some(t) = span_of(r[0], r[1]) {
                spans.text(&t, &|| format!("output record {i}'s topic"))?;
            }
            if let Some(k) = span_of(r[2], r[3]) {
                spans.bytes(&k, &|| format!("output record {i}'s key"))?;
            }
            if let Some(v) = span_of(r[4], r[5]) {
                spans.bytes(&v, &|| format!("output record {i}'s value"))?;
            }
            header_runs.next(&wit::Range { first: r[6], count: r[7] }, &|| format!("output record {i}'s headers"))?;
        }
        let mut output_runs = Runs { len: record_count, list: "output records", end: 0 };
        for (i, o) in outcomes.chunks_exact(OUTCOME_WORDS).enumerate() {
            match o[0] {
                EMITTED => output_runs
                    .next(&wit::Range { first: o[1], count: o[2] }, &|| format!("the outputs of input record {i}"))?,
                FAILED => {
                    let what = || format!("the error for input record {i}");
                    let span = span_of(o[1], o[2]).ok_or_else(|| CallError::Contract(format!("{} is none", what())))?;
                    spans.text(&span, &what)?
                }
                tag => {
                    return Err(CallError::Contract(format!(
                        "the outcome of input record {i} is of kind {tag}; the kinds are {EMITTED} (emitted) and \
                         {FAILED} (failed)"
                    )))
                }
            }
        }
        Ok(Self { input, buffer: Bytes::from(buffer), records, timestamps, headers, outcomes })
    }

    /// How many input records this answers (as many as were in the batch).
    pub fn len(&self) -> usize {
        self.outcomes.len() / OUTCOME_WORDS
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// Per input record, in order: its outputs, or the module's error for it.
    pub fn outcomes(&self) -> impl ExactSizeIterator<Item = Result<Outputs<'_>, &str>> {
        self.outcomes.chunks_exact(OUTCOME_WORDS).map(move |o| {
            if o[0] == FAILED {
                Err(span_of(o[1], o[2]).map_or("", |s| self.text(&s)))
            } else {
                let first = o[1] as usize;
                Ok(Outputs { answer: self, next: first, end: first.saturating_add(o[2] as usize) })
            }
        })
    }

    /// The bytes a span addresses, and where in them it starts: the input's below its length,
    /// the answer's buffer after.
    fn region(&self, span: &wit::Span) -> (&Bytes, usize) {
        let start = span.start as usize;
        if start < self.input.len() {
            (&self.input, start)
        } else {
            (&self.buffer, start - self.input.len())
        }
    }

    fn text(&self, span: &wit::Span) -> &str {
        // Checked to be UTF-8 inside the input or the answer's buffer when the answer came.
        let (region, start) = self.region(span);
        slice(region, &wit::Span { start: start as u32, len: span.len })
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn bytes(&self, span: &wit::Span) -> Bytes {
        let (region, start) = self.region(span);
        let end = start.saturating_add(span.len as usize);
        if end <= region.len() {
            region.slice(start..end)
        } else {
            Bytes::new()
        }
    }

    /// The words of output record `index` (checked to exist when the answer came).
    fn record(&self, index: usize) -> &[u32] {
        self.records.get(index * OUTPUT_WORDS..(index + 1) * OUTPUT_WORDS).unwrap_or(&[NONE; OUTPUT_WORDS])
    }
}

/// One answer per input record, as the contract says.
pub(crate) fn check_count(got: usize, expected: usize) -> Result<(), CallError> {
    if got != expected {
        return Err(CallError::Contract(format!(
            "the module answered {got} results for a batch of {expected} records; the contract is one per record"
        )));
    }
    Ok(())
}

/// Checks an answer's spans: each inside the input or the answer's buffer, and the spans into
/// each together no longer than it.
struct Spans<'b> {
    /// The call's input buffer, which spans below its length address (empty for a contract
    /// before 0.2.3).
    input: &'b [u8],
    buffer: &'b [u8],
    used_input: u64,
    used: u64,
}

impl<'b> Spans<'b> {
    fn bytes(&mut self, span: &wit::Span, what: &dyn Fn() -> String) -> Result<&'b [u8], CallError> {
        let size = self.buffer.len();
        let input = self.input.len();
        let outside = || {
            let after = if input == 0 { String::new() } else { format!("the call's {input}-byte input buffer and ") };
            CallError::Contract(format!(
                "{} ({} bytes from byte {}) lies outside {after}the answer's {size}-byte buffer{}",
                what(),
                span.len,
                span.start,
                if input == 0 { "" } else { " after it (a span lies wholly in one of them)" }
            ))
        };
        if (span.start as usize) < input {
            let bytes = slice(self.input, span).ok_or_else(outside)?;
            self.used_input += u64::from(span.len);
            if self.used_input > input as u64 {
                return Err(CallError::Contract(format!(
                    "{} brings the bytes the answer's spans cover in the input buffer to {}, past its {input} \
                     bytes: each input byte may be forwarded once (copy it into the answer's buffer to emit it \
                     again)",
                    what(),
                    self.used_input
                )));
            }
            return Ok(bytes);
        }
        let local = wit::Span { start: span.start - input as u32, len: span.len };
        let bytes = slice(self.buffer, &local).ok_or_else(outside)?;
        self.used += u64::from(span.len);
        if self.used > size as u64 {
            return Err(CallError::Contract(format!(
                "{} brings the bytes the answer's spans cover to {}, past its {size}-byte buffer: \
                 each byte of the buffer may be used once",
                what(),
                self.used
            )));
        }
        Ok(bytes)
    }

    fn text(&mut self, span: &wit::Span, what: &dyn Fn() -> String) -> Result<(), CallError> {
        std::str::from_utf8(self.bytes(span, what)?)
            .map(|_| ())
            .map_err(|e| CallError::Contract(format!("{} is not UTF-8: {e}", what())))
    }
}

/// Checks runs of one of an answer's lists: each inside it, in order, none overlapping.
struct Runs<'l> {
    len: usize,
    list: &'l str,
    /// Where the last run ended.
    end: u64,
}

impl Runs<'_> {
    fn next(&mut self, range: &wit::Range, what: &dyn Fn() -> String) -> Result<(), CallError> {
        let (first, end) = (u64::from(range.first), u64::from(range.first) + u64::from(range.count));
        if end > self.len as u64 {
            return Err(CallError::Contract(format!(
                "{} (entries {first} to {end}) lies outside the answer's {} {}",
                what(),
                self.len,
                self.list
            )));
        }
        if range.count > 0 {
            if first < self.end {
                return Err(CallError::Contract(format!(
                    "{} (entries {first} to {end}) overlaps or comes before the run that ends at {}: \
                     each of the answer's {} is used once, in order",
                    what(),
                    self.end,
                    self.list
                )));
            }
            self.end = end;
        }
        Ok(())
    }
}

/// The outputs of one input record.
pub struct Outputs<'a> {
    answer: &'a TransformOutput,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Outputs<'a> {
    type Item = OutputView<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        (self.next < self.end).then(|| {
            self.next += 1;
            OutputView { answer: self.answer, index: self.next - 1 }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Outputs<'_> {}

/// One output record; its key, value and header values share the answer's buffer.
#[derive(Clone, Copy)]
pub struct OutputView<'a> {
    answer: &'a TransformOutput,
    index: usize,
}

impl<'a> OutputView<'a> {
    fn words(&self) -> &'a [u32] {
        self.answer.record(self.index)
    }

    /// `None`: the deployment's default output topic.
    pub fn topic(&self) -> Option<&'a str> {
        let w = self.words();
        span_of(w[0], w[1]).map(|t| self.answer.text(&t))
    }

    pub fn key(&self) -> Option<Bytes> {
        let w = self.words();
        span_of(w[2], w[3]).map(|s| self.answer.bytes(&s))
    }

    pub fn value(&self) -> Option<Bytes> {
        let w = self.words();
        span_of(w[4], w[5]).map(|s| self.answer.bytes(&s))
    }

    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<Bytes>)> + 'a {
        let (answer, w) = (self.answer, self.words());
        let (first, count) = (w[6] as usize, w[7] as usize);
        let run = first
            .checked_add(count)
            .and_then(|end| answer.headers.get(first * HEADER_WORDS..end.checked_mul(HEADER_WORDS)?))
            .unwrap_or_default();
        run.chunks_exact(HEADER_WORDS).map(move |h| {
            (span_of(h[0], h[1]).map_or("", |k| answer.text(&k)), span_of(h[2], h[3]).map(|v| answer.bytes(&v)))
        })
    }

    /// `None` keeps the input record's timestamp.
    pub fn timestamp(&self) -> Option<i64> {
        self.answer.timestamps.get(self.index).copied().filter(|t| *t != KEEP_TIMESTAMP)
    }
}

/// Builds a [`TransformOutput`] on the host: a native stage's answer, or an 0.1.0 module's
/// answer in the current form.
#[derive(Debug, Default)]
pub struct OutputBuilder {
    buffer: Vec<u8>,
    records: Vec<u32>,
    timestamps: Vec<i64>,
    headers: Vec<u32>,
    outcomes: Vec<u32>,
    /// The first output of the input record not yet closed.
    open: usize,
}

impl OutputBuilder {
    /// Room for an answer the size of `batch` (one output per record, as many bytes): growing
    /// the buffer as it fills would copy it again and again.
    pub fn sized_for(batch: &InputBatch) -> Self {
        let records = batch.len();
        Self {
            buffer: Vec::with_capacity(batch.wit.buffer.len()),
            records: Vec::with_capacity(OUTPUT_WORDS * records),
            timestamps: Vec::with_capacity(records),
            headers: Vec::with_capacity(HEADER_WORDS * batch.wit.headers.len()),
            outcomes: Vec::with_capacity(OUTCOME_WORDS * records),
            open: 0,
        }
    }

    /// Adds an output of the input record not yet closed. A timestamp of `i64::MIN` keeps the
    /// input record's, as `None` does.
    pub fn output<'h>(
        &mut self,
        topic: Option<&str>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
        timestamp: Option<i64>,
    ) -> Result<(), BatchTooLarge> {
        let topic = topic.map(|t| put(&mut self.buffer, t.as_bytes())).transpose()?;
        let key = key.map(|k| put(&mut self.buffer, k)).transpose()?;
        let value = value.map(|v| put(&mut self.buffer, v)).transpose()?;
        let first = count32(self.headers.len() / HEADER_WORDS)?;
        for (key, value) in headers {
            let key = put(&mut self.buffer, key.as_bytes())?;
            let value = value.map(|v| put(&mut self.buffer, v)).transpose()?;
            push_span(&mut self.headers, Some(&key));
            push_span(&mut self.headers, value.as_ref());
        }
        let count = count32(self.headers.len() / HEADER_WORDS)? - first;
        count32(self.timestamps.len() + 1)?;
        for span in [topic, key, value] {
            push_span(&mut self.records, span.as_ref());
        }
        self.records.extend([first, count]);
        self.timestamps.push(timestamp.unwrap_or(KEEP_TIMESTAMP));
        Ok(())
    }

    /// Closes the input record: its outcome is the outputs added since the last close.
    pub fn emitted(&mut self) -> Result<(), BatchTooLarge> {
        let first = count32(self.open)?;
        let count = count32(self.timestamps.len() - self.open)?;
        self.outcomes.extend([EMITTED, first, count]);
        self.open = self.timestamps.len();
        Ok(())
    }

    /// Closes the input record as failed; outputs added since the last close are dropped.
    pub fn failed(&mut self, reason: &str) -> Result<(), BatchTooLarge> {
        self.records.truncate(self.open * OUTPUT_WORDS);
        self.timestamps.truncate(self.open);
        let span = put(&mut self.buffer, reason.as_bytes())?;
        self.outcomes.push(FAILED);
        push_span(&mut self.outcomes, Some(&span));
        Ok(())
    }

    pub fn finish(self) -> TransformOutput {
        TransformOutput {
            input: Bytes::new(),
            buffer: Bytes::from(self.buffer),
            records: self.records,
            timestamps: self.timestamps,
            headers: self.headers,
            outcomes: self.outcomes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        buffer: &[u8],
        records: Vec<wit::OutputRecord>,
        headers: Vec<wit::Header>,
        outcomes: Vec<wit::Outcome>,
    ) -> wit::OutputBatch {
        wit::OutputBatch { buffer: buffer.to_vec(), records, headers, outcomes }
    }

    fn span(start: u32, len: u32) -> wit::Span {
        wit::Span { start, len }
    }

    fn range(first: u32, count: u32) -> wit::Range {
        wit::Range { first, count }
    }

    fn output(value: wit::Span, headers: wit::Range) -> wit::OutputRecord {
        wit::OutputRecord { topic: None, key: None, value: Some(value), headers, timestamp: None }
    }

    #[test]
    fn an_input_batch_gives_back_what_was_pushed() {
        let mut batch = InputBatch::new("orders", 3);
        batch.push(7, 100, Some(b"k"), None, [("h", Some(&b"v"[..])), ("n", None)]).unwrap();
        batch.push(8, 101, None, Some(b"value"), []).unwrap();
        let records: Vec<_> = batch.records().collect();
        assert_eq!((batch.topic(), batch.partition(), batch.len()), ("orders", 3, 2));
        assert_eq!(
            (records[0].offset(), records[0].timestamp(), records[0].key(), records[0].value()),
            (7, 100, Some(&b"k"[..]), None)
        );
        assert_eq!(records[0].headers().collect::<Vec<_>>(), [("h", Some(&b"v"[..])), ("n", None)]);
        assert_eq!(
            (records[1].key(), records[1].value(), records[1].headers().count()),
            (None, Some(&b"value"[..]), 0)
        );
    }

    #[test]
    fn an_answer_is_read_as_written_and_its_bytes_share_one_buffer() {
        let mut builder = OutputBuilder::default();
        builder.output(Some("out"), Some(b"k"), Some(b"v1"), [("h", Some(&b"x"[..]))], Some(5)).unwrap();
        builder.output(None, None, Some(b"v2"), [], None).unwrap();
        builder.emitted().unwrap();
        builder.output(None, None, Some(b"dropped"), [], None).unwrap();
        builder.failed("bad record").unwrap();
        builder.emitted().unwrap();
        let out = builder.finish();
        assert_eq!(out.len(), 3);
        let mut outcomes = out.outcomes();
        let first: Vec<_> = outcomes.next().unwrap().unwrap().collect();
        assert_eq!(first.len(), 2);
        assert_eq!(
            (first[0].topic(), first[0].key().as_deref(), first[0].value().as_deref(), first[0].timestamp()),
            (Some("out"), Some(&b"k"[..]), Some(&b"v1"[..]), Some(5))
        );
        assert_eq!(
            first[0].headers().map(|(k, v)| (k.to_owned(), v)).collect::<Vec<_>>(),
            [("h".to_owned(), Some(Bytes::from_static(b"x")))]
        );
        assert_eq!((first[1].topic(), first[1].value().as_deref()), (None, Some(&b"v2"[..])));
        assert_eq!(outcomes.next().unwrap().err(), Some("bad record"));
        assert_eq!(outcomes.next().unwrap().map(|o| o.len()).ok(), Some(0));
    }

    #[test]
    fn an_answer_whose_index_points_outside_it_is_refused_naming_the_entry() {
        let ok_header = wit::Header { key: span(0, 1), value: None };
        let cases: Vec<(wit::OutputBatch, usize, &str)> = vec![
            (answer(b"ab", vec![], vec![], vec![]), 1, "answered 0 results for a batch of 1 records"),
            (
                answer(b"ab", vec![output(span(1, 2), range(0, 0))], vec![], vec![wit::Outcome::Emitted(range(0, 1))]),
                1,
                "output record 0's value (2 bytes from byte 1) lies outside the answer's 2-byte buffer",
            ),
            (
                answer(
                    b"ab",
                    vec![output(span(u32::MAX, u32::MAX), range(0, 0))],
                    vec![],
                    vec![wit::Outcome::Emitted(range(0, 1))],
                ),
                1,
                "output record 0's value",
            ),
            (
                answer(
                    b"ab",
                    vec![output(span(0, 1), range(0, 2))],
                    vec![ok_header],
                    vec![wit::Outcome::Emitted(range(0, 1))],
                ),
                1,
                "output record 0's headers (entries 0 to 2) lies outside the answer's 1 headers",
            ),
            (
                answer(
                    b"ab",
                    vec![output(span(0, 1), range(0, 0))],
                    vec![],
                    vec![wit::Outcome::Emitted(range(u32::MAX, 2))],
                ),
                1,
                "the outputs of input record 0 (entries 4294967295 to 4294967297)",
            ),
            (
                answer(b"\xff", vec![], vec![], vec![wit::Outcome::Failed(span(0, 1))]),
                1,
                "the error for input record 0 is not UTF-8",
            ),
            (
                answer(
                    b"\xff",
                    vec![],
                    vec![wit::Header { key: span(0, 1), value: None }],
                    vec![wit::Outcome::Emitted(range(0, 0))],
                ),
                1,
                "header 0's key is not UTF-8",
            ),
            (
                answer(
                    b"a",
                    vec![wit::OutputRecord {
                        topic: Some(span(0, 9)),
                        key: None,
                        value: None,
                        headers: range(0, 0),
                        timestamp: None,
                    }],
                    vec![],
                    vec![wit::Outcome::Emitted(range(0, 1))],
                ),
                1,
                "output record 0's topic (9 bytes from byte 0)",
            ),
            // Amplification: one small answer claiming many outputs, headers or bytes.
            (answer(b"ab", vec![output(span(0, 1), range(0, 0))], vec![], vec![wit::Outcome::Emitted(range(0, 1)), wit::Outcome::Emitted(range(0, 1))]), 2, "the outputs of input record 1 (entries 0 to 1) overlaps or comes before the run that ends at 1: each of the answer's output records is used once, in order"),
            (answer(b"abc", vec![output(span(0, 1), range(0, 1)), output(span(1, 1), range(0, 1))], vec![ok_header], vec![wit::Outcome::Emitted(range(0, 2))]), 1, "output record 1's headers (entries 0 to 1) overlaps"),
            (answer(b"ab", vec![output(span(0, 2), range(0, 0)), output(span(0, 2), range(0, 0))], vec![], vec![wit::Outcome::Emitted(range(0, 2))]), 1, "output record 1's value brings the bytes the answer's spans cover to 4, past its 2-byte buffer"),
        ];
        for (answer, inputs, expected) in cases {
            let err = packed_answer(answer).and_then(|p| TransformOutput::checked(p, inputs)).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
        let fine = answer(
            b"hab",
            vec![output(span(1, 2), range(0, 1))],
            vec![ok_header],
            vec![wit::Outcome::Emitted(range(0, 1))],
        );
        let out = TransformOutput::checked(packed_answer(fine).unwrap(), 1).unwrap();
        let outputs: Vec<_> = out.outcomes().next().unwrap().unwrap().collect();
        assert_eq!(outputs[0].value().as_deref(), Some(&b"ab"[..]));
        assert_eq!(outputs[0].headers().map(|(k, _)| k).collect::<Vec<_>>(), ["h"]);
    }

    fn packed(
        records: Vec<u32>,
        timestamps: Vec<i64>,
        headers: Vec<u32>,
        outcomes: Vec<u32>,
    ) -> wit::PackedOutputBatch {
        wit::PackedOutputBatch { buffer: b"hab".to_vec(), records, timestamps, headers, outcomes }
    }

    #[test]
    fn a_packed_answer_of_the_wrong_shape_is_refused_naming_the_list_or_entry() {
        const N: u32 = NONE;
        let one = || vec![N, N, N, N, 1, 2, 0, 0];
        let cases: Vec<(wit::PackedOutputBatch, &str)> = vec![
            (
                packed(vec![N; 7], vec![0], vec![], vec![0, 0, 1]),
                "the answer's records list has 7 words, not 8 per output record",
            ),
            (
                packed(one(), vec![0], vec![0, 1], vec![0, 0, 1]),
                "the answer's headers list has 2 words, not 4 per header",
            ),
            (
                packed(one(), vec![0], vec![], vec![0, 0]),
                "the answer's outcomes list has 2 words, not 3 per input record",
            ),
            (packed(one(), vec![0], vec![], vec![0, 0, 1, 0, 1, 0]), "answered 2 results for a batch of 1 records"),
            (packed(one(), vec![], vec![], vec![0, 0, 1]), "the answer has 0 timestamps for 1 output records"),
            (
                packed(one(), vec![0], vec![], vec![7, 0, 1]),
                "the outcome of input record 0 is of kind 7; the kinds are 0 (emitted) and 1 (failed)",
            ),
            (packed(vec![], vec![], vec![], vec![1, N, N]), "the error for input record 0 is none"),
            (packed(vec![], vec![], vec![N, N, N, N], vec![0, 0, 0]), "header 0 has no key; every header has one"),
            (
                packed(vec![N, N, N, N, 1, u32::MAX - 1, 0, 0], vec![0], vec![], vec![0, 0, 1]),
                "output record 0's value (4294967294 bytes from byte 1) lies outside the answer's 3-byte buffer",
            ),
        ];
        for (answer, expected) in cases {
            let err = TransformOutput::checked(answer, 1).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
        let fine = TransformOutput::checked(packed(one(), vec![KEEP_TIMESTAMP], vec![], vec![0, 0, 1]), 1).unwrap();
        let outputs: Vec<_> = fine.outcomes().next().unwrap().unwrap().collect();
        assert_eq!(
            (outputs[0].value().as_deref(), outputs[0].key(), outputs[0].timestamp()),
            (Some(&b"ab"[..]), None, None)
        );
    }

    /// 0.2.3: spans below the input's length are the input's bytes, forwarded once at most;
    /// the answer's buffer follows the input.
    #[test]
    fn a_packed_answer_may_forward_input_bytes_once_each() {
        const N: u32 = NONE;
        let input = b"KEYvalue";
        let cases: Vec<(wit::PackedOutputBatch, &str)> = vec![
            (
                packed(vec![N, N, N, N, 6, 4, 0, 0], vec![0], vec![], vec![0, 0, 1]),
                "output record 0's value (4 bytes from byte 6) lies outside the call's 8-byte input buffer and the \
                 answer's 3-byte buffer after it (a span lies wholly in one of them)",
            ),
            (
                packed(vec![N, N, N, N, 9, 3, 0, 0], vec![0], vec![], vec![0, 0, 1]),
                "output record 0's value (3 bytes from byte 9) lies outside",
            ),
            (
                packed(vec![N, N, 0, 3, 3, 5, 0, 0, N, N, N, N, 3, 5, 0, 0], vec![0, 0], vec![], vec![0, 0, 2]),
                "output record 1's value brings the bytes the answer's spans cover in the input buffer to 13, past \
                 its 8 bytes: each input byte may be forwarded once",
            ),
            (packed(vec![], vec![], vec![0, 3, N, N], vec![0, 0, 0]), "header 0's key is not UTF-8"),
        ];
        for (mut answer, expected) in cases {
            if expected.starts_with("header") {
                answer.headers = vec![0, 1, N, N];
                let err =
                    TransformOutput::checked_over(answer, 1, Bytes::from_static(b"\xffbc")).unwrap_err().to_string();
                assert!(err.contains(expected), "{err:?} should contain {expected:?}");
                continue;
            }
            let err = TransformOutput::checked_over(answer, 1, Bytes::from_static(input)).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
        // The key and value forwarded from the input; a topic and a header key after it.
        let fine = TransformOutput::checked_over(
            packed(vec![9, 2, 0, 3, 3, 5, 0, 1], vec![KEEP_TIMESTAMP], vec![8, 1, N, N], vec![0, 0, 1]),
            1,
            Bytes::from_static(input),
        )
        .unwrap();
        let outputs: Vec<_> = fine.outcomes().next().unwrap().unwrap().collect();
        assert_eq!((outputs[0].topic(), outputs[0].key().as_deref()), (Some("ab"), Some(&b"KEY"[..])));
        assert_eq!(outputs[0].value().as_deref(), Some(&b"value"[..]));
        assert_eq!(outputs[0].headers().map(|(k, v)| (k.to_owned(), v)).collect::<Vec<_>>(), [("h".to_owned(), None)]);
        // An answer of 0.2.2 addresses its own buffer from byte 0.
        let old = TransformOutput::checked(packed(vec![N, N, N, N, 1, 2, 0, 0], vec![0], vec![], vec![0, 0, 1]), 1);
        let old = old.unwrap();
        assert_eq!(old.outcomes().next().unwrap().unwrap().next().unwrap().value().as_deref(), Some(&b"ab"[..]));
    }

    #[test]
    fn an_input_batch_packs_its_index_into_words() {
        let mut batch = InputBatch::new("orders", 3);
        batch.push(7, 100, Some(b"k"), None, [("h", Some(&b"v"[..])), ("n", None)]).unwrap();
        batch.push(8, 101, None, Some(b"value"), []).unwrap();
        let index = batch.packed_index();
        assert_eq!((index.offsets, index.timestamps), (vec![7, 8], vec![100, 101]));
        assert_eq!(index.records, [0, 1, NONE, NONE, 0, 2, NONE, NONE, 4, 5, 2, 0]);
        assert_eq!(index.headers, [1, 1, 2, 1, 3, 1, NONE, NONE]);
    }

    /// Hostile answers: random words (small numbers, none, and anything) for every list. Each
    /// is refused or accepted without a panic, and what an accepted one yields lies inside its
    /// buffer and the input, and adds up to at most their size.
    #[test]
    fn random_packed_answers_are_refused_or_read_within_their_buffer() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..20_000 {
            let word = |next: &mut dyn FnMut() -> u64| -> u32 {
                let r = next();
                match r % 4 {
                    0 => NONE,
                    1 => u32::try_from(r >> 32).unwrap_or(0),
                    _ => u32::try_from((r >> 8) % 6).unwrap_or(0),
                }
            };
            let len = |next: &mut dyn FnMut() -> u64, most: u64| usize::try_from(next() % most).unwrap_or(0);
            let inputs = len(&mut next, 3);
            let buffer: Vec<u8> = (0..len(&mut next, 8)).map(|_| b'a').collect();
            let records: Vec<u32> = (0..len(&mut next, 3) * OUTPUT_WORDS).map(|_| word(&mut next)).collect();
            let timestamps = vec![0; records.len() / OUTPUT_WORDS];
            let headers: Vec<u32> = (0..len(&mut next, 3) * HEADER_WORDS).map(|_| word(&mut next)).collect();
            let outcomes: Vec<u32> = (0..inputs * OUTCOME_WORDS)
                .enumerate()
                .map(
                    |(i, _)| {
                        if i % OUTCOME_WORDS == 0 {
                            u32::try_from(next() % 3).unwrap_or(0)
                        } else {
                            word(&mut next)
                        }
                    },
                )
                .collect();
            let size = buffer.len();
            let answer = wit::PackedOutputBatch { buffer, records, timestamps, headers, outcomes };
            // Half of them answer a call whose input the spans may point into (0.2.3).
            let input = Bytes::from(vec![b'b'; len(&mut next, 8) * usize::from(next() % 2 == 0)]);
            let size = size + input.len();
            let Ok(out) = TransformOutput::checked_over(answer, inputs, input) else { continue };
            accepted += 1;
            let mut bytes = 0;
            for outcome in out.outcomes() {
                let Ok(outputs) = outcome else { continue };
                for o in outputs {
                    bytes += o.topic().map_or(0, str::len) + o.key().map_or(0, |k| k.len());
                    bytes += o.value().map_or(0, |v| v.len());
                    bytes += o.headers().map(|(k, v)| k.len() + v.map_or(0, |v| v.len())).sum::<usize>();
                }
            }
            assert!(bytes <= size, "an accepted answer yielded {bytes} bytes from a {size}-byte buffer");
        }
        assert!(accepted > 100, "the generator should make some answers that pass: {accepted}");
    }
}
