//! `/api/v1/topics/{name}/messages`: the message browser (read records from a partition, or
//! every partition, from an offset, a time, the oldest or the newest, filtered on the broker)
//! and producing records from the console.
//!
//! Browsing a hot topic must never hurt the broker: a browse reads at most
//! [`SCAN_BYTES_MAX`] of stored batches, for at most [`SCAN_TIME_MAX`], answers at most
//! [`LIMIT_MAX`] records and [`ANSWER_BYTES_MAX`] of payload (each key and value cut to
//! [`PREVIEW_BYTES`]), and at most [`BROWSES_MAX`] run at once; the answer says which bound
//! ended it.

use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_broker::service::{Fetch, FetchFrom, Produce};
use weir_registry::validate::DatumDecoder;
use weir_sdk::batch::{decode_batches_within, ConsumedRecord, Record};
use weir_sdk::{Compression, ErrorCode, OffsetSpec};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{body, query, Console};

/// Most records one browse answers.
pub const LIMIT_MAX: usize = 500;
/// Most bytes of stored batches one browse reads.
pub const SCAN_BYTES_MAX: usize = 32 << 20;
/// Longest one browse reads for.
pub const SCAN_TIME_MAX: Duration = Duration::from_secs(3);
/// Most bytes of keys, values and headers one answer carries.
pub const ANSWER_BYTES_MAX: usize = 4 << 20;
/// Most bytes of one key or value shown; the rest is cut (`truncated`).
pub const PREVIEW_BYTES: usize = 64 << 10;
/// Browses one broker runs at once; more are answered 429.
pub const BROWSES_MAX: usize = 4;
/// Longest filter text.
const FILTER_BYTES_MAX: usize = 256;
/// Bytes of stored batches read per fetch while browsing.
const FETCH_BYTES: u32 = 1 << 20;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BrowseQuery {
    /// One partition; every partition when absent.
    pub partition: Option<u32>,
    /// `oldest` (default), `newest`, `offset` or `timestamp`.
    pub start: Option<String>,
    /// With `start=offset`: the first offset read.
    pub offset: Option<i64>,
    /// With `start=timestamp`: ms since the epoch; reading starts at the first record at or after it.
    pub timestamp: Option<i64>,
    /// Records answered: 1 to 500, 50 by default.
    pub limit: Option<usize>,
    /// Only records whose key contains this text.
    pub key: Option<String>,
    /// Only records whose value contains this text.
    pub value: Option<String>,
    /// Only records with a header whose name or value contains this text.
    pub header: Option<String>,
    /// A deployed transform to run over what is read (a consume-time module); its outputs are shown.
    pub module: Option<String>,
}

/// A key, value or header value as the browser shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Payload {
    /// Its whole size in bytes.
    pub size: usize,
    /// The bytes shown, as text, when they are UTF-8.
    pub text: Option<String>,
    /// The bytes shown, base64.
    pub base64: String,
    /// Only the first 64 KiB are shown.
    pub truncated: bool,
    /// In the schema registry's wire format: the schema id it names.
    pub schema_id: Option<u32>,
    /// Decoded with that schema (Avro or JSON Schema), as JSON.
    #[schema(value_type = Object)]
    pub decoded: Option<serde_json::Value>,
    /// Why it did not decode with the schema it names.
    pub decode_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeaderView {
    pub key: String,
    pub value: Option<Payload>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordView {
    pub partition: u32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Payload>,
    pub value: Option<Payload>,
    pub headers: Vec<HeaderView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionPosition {
    pub partition: u32,
    /// Where a browse that goes on would start.
    pub next_offset: i64,
    pub high_watermark: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Browse {
    pub records: Vec<RecordView>,
    /// Records read, matching or not.
    pub scanned_records: u64,
    /// Bytes of stored batches read.
    pub scanned_bytes: u64,
    /// What ended the browse: `limit`, `end` (every partition read to its high watermark),
    /// `scan_bytes`, `time` or `answer_bytes`.
    pub stopped: String,
    pub positions: Vec<PartitionPosition>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHeader {
    pub key: String,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    /// The broker places the record (by key, or its partitioner) when absent.
    pub partition: Option<u32>,
    pub key: Option<String>,
    pub value: Option<String>,
    #[serde(default)]
    pub headers: Vec<NewHeader>,
    /// `text` (default): key, value and header values are UTF-8 text; `base64`: they are
    /// base64 (to republish a record whose bytes are not text).
    pub encoding: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProducedRecord {
    pub partition: u32,
    pub offset: i64,
}

struct Filters {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    header: Option<Vec<u8>>,
}

fn filter(field: &str, text: Option<String>) -> ApiResult<Option<Vec<u8>>> {
    match text {
        Some(t) if t.len() > FILTER_BYTES_MAX => {
            Err(ApiError::field(field, format!("a filter is at most {FILTER_BYTES_MAX} bytes, not {}", t.len())))
        }
        Some(t) if t.is_empty() => Ok(None),
        other => Ok(other.map(String::into_bytes)),
    }
}

fn contains(haystack: Option<&[u8]>, needle: &[u8]) -> bool {
    haystack.is_some_and(|h| memchr::memmem::find(h, needle).is_some())
}

impl Filters {
    fn matches(&self, r: &Record) -> bool {
        self.key.as_ref().is_none_or(|k| contains(r.key.as_deref(), k))
            && self.value.as_ref().is_none_or(|v| contains(r.value.as_deref(), v))
            && self.header.as_ref().is_none_or(|h| {
                r.headers.iter().any(|(k, v)| contains(Some(k.as_bytes()), h) || contains(v.as_deref(), h))
            })
    }
}

/// How a key or value is shown: its first [`PREVIEW_BYTES`], as text when it is UTF-8, and
/// decoded when it names a registered schema.
pub(crate) fn payload(bytes: &[u8], decoder: &mut DatumDecoder<'_>) -> Payload {
    let shown = &bytes[..bytes.len().min(PREVIEW_BYTES)];
    let truncated = shown.len() < bytes.len();
    let text = match std::str::from_utf8(shown) {
        Ok(t) => Some(t.to_owned()),
        // A cut through a character still reads as text up to the cut.
        Err(e) if truncated && e.error_len().is_none() => {
            Some(String::from_utf8_lossy(&shown[..e.valid_up_to()]).into())
        }
        Err(_) => None,
    };
    let (mut schema_id, mut decoded, mut decode_error) = (None, None, None);
    if bytes.len() >= 5 && bytes[0] == 0 && !truncated {
        match decoder.decode(bytes) {
            Some((id, Ok(value))) => (schema_id, decoded) = (Some(id), Some(value)),
            Some((id, Err(e))) => (schema_id, decode_error) = (Some(id), Some(e)),
            // Framed like a registry value only by chance: no schema of that id.
            None => {}
        }
    }
    Payload {
        size: bytes.len(),
        text,
        base64: base64::engine::general_purpose::STANDARD.encode(shown),
        truncated,
        schema_id,
        decoded,
        decode_error,
    }
}

pub(crate) fn view(r: &ConsumedRecord, decoder: &mut DatumDecoder<'_>) -> (RecordView, usize) {
    let shown = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len().min(PREVIEW_BYTES));
    let bytes = shown(&r.record.key)
        + shown(&r.record.value)
        + r.record.headers.iter().map(|(k, v)| k.len() + shown(v)).sum::<usize>();
    let record = RecordView {
        partition: r.partition,
        offset: r.offset,
        timestamp: r.record.timestamp,
        key: r.record.key.as_ref().map(|k| payload(k, decoder)),
        value: r.record.value.as_ref().map(|v| payload(v, decoder)),
        headers: r
            .record
            .headers
            .iter()
            .map(|(k, v)| HeaderView { key: k.clone(), value: v.as_ref().map(|v| payload(v, decoder)) })
            .collect(),
    };
    (record, bytes)
}

/// Keeps the `limit` records a browse answers with, in time order (then partition and
/// offset): the first ones, or the last ones for a browse of the newest.
fn keep(found: &mut Vec<(RecordView, usize)>, limit: usize, newest: bool) {
    found.sort_by_key(|(r, _)| (r.timestamp, r.partition, r.offset));
    if newest && found.len() > limit {
        found.drain(..found.len() - limit);
    }
    found.truncate(limit);
}

/// Where browsing a partition starts and how many records it takes there.
enum Start {
    Oldest,
    Newest,
    Offset(i64),
    Timestamp(i64),
}

/// Reads records of a topic, filtered on the broker, within the bounds above.
#[utoipa::path(get, path = "/api/v1/topics/{name}/messages", params(("name" = String, Path), BrowseQuery),
    tag = "messages", responses((status = 200, body = Browse, description = "OK"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"),
    (status = 404, body = ErrorBody, description = "Not found; the error names what"), (status = 416, body = ErrorBody, description = "Offset out of range"), (status = 429, body = ErrorBody, description = "Too many at once; try again")))]
pub async fn browse(
    State(console): State<Console>,
    Path(name): Path<String>,
    q: Result<Query<BrowseQuery>, QueryRejection>,
) -> ApiResult<Json<Browse>> {
    let Query(q) = query(q)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=LIMIT_MAX).contains(&limit) {
        return Err(ApiError::field("limit", format!("limit must be 1 to {LIMIT_MAX}, not {limit}")));
    }
    let start = match (q.start.as_deref().unwrap_or("oldest"), q.offset, q.timestamp) {
        ("oldest", _, _) => Start::Oldest,
        ("newest", _, _) => Start::Newest,
        ("offset", Some(o), _) => Start::Offset(o),
        ("offset", None, _) => return Err(ApiError::field("offset", "start=offset needs an offset")),
        ("timestamp", _, Some(t)) => Start::Timestamp(t),
        ("timestamp", _, None) => return Err(ApiError::field("timestamp", "start=timestamp needs a timestamp (ms)")),
        (other, _, _) => {
            return Err(ApiError::field(
                "start",
                format!("start must be oldest, newest, offset or timestamp, not {other:?}"),
            ))
        }
    };
    let filters =
        Filters { key: filter("key", q.key)?, value: filter("value", q.value)?, header: filter("header", q.header)? };
    let info = console.broker.describe_topic(&name).map_err(|e| ApiError::from(e).with_field("name"))?;
    let partitions: Vec<_> = match q.partition {
        Some(p) => match info.partitions.iter().find(|i| i.partition == p) {
            Some(info) => vec![info.clone()],
            None => {
                return Err(ApiError::not_found(
                    "unknown_partition",
                    "partition",
                    format!("topic {name:?} has partitions 0 to {}, not {p}", info.partitions.len().saturating_sub(1)),
                ))
            }
        },
        None => info.partitions.clone(),
    };
    let Ok(_permit) = console.browses.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "limit_reached",
            format!("{BROWSES_MAX} browses are running (BROWSES_MAX); try again when one ends"),
        ));
    };
    let began = Instant::now();
    let mut found: Vec<(RecordView, usize)> = Vec::new();
    let mut positions = Vec::new();
    let (mut scanned_records, mut scanned_bytes) = (0u64, 0usize);
    let mut stopped = "end";
    let mut found_bytes = 0usize;
    let newest = matches!(start, Start::Newest);
    for part in &partitions {
        let first = match start {
            Start::Oldest => part.log_start_offset,
            Start::Newest => {
                (part.high_watermark - i64::try_from(limit).unwrap_or(i64::MAX)).max(part.log_start_offset)
            }
            Start::Offset(o) if o < part.log_start_offset || o > part.high_watermark => {
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "offset_out_of_range",
                    format!(
                        "offset {o} is outside partition {}'s records, {} to {}",
                        part.partition, part.log_start_offset, part.high_watermark
                    ),
                )
                .with_field("offset"))
            }
            Start::Offset(o) => o,
            Start::Timestamp(t) => {
                let listed = console.broker.list_offsets(&name, &[(part.partition, OffsetSpec::Timestamp(t))])?;
                match listed.into_iter().next().map(|l| l.found) {
                    Some(Ok((offset, _))) if offset >= 0 => offset,
                    Some(Ok(_)) | None => part.high_watermark,
                    Some(Err(e)) => return Err(e.into()),
                }
            }
        };
        let mut offset = first;
        let mut taken = 0usize;
        while offset < part.high_watermark && taken < limit {
            if scanned_bytes >= SCAN_BYTES_MAX {
                stopped = "scan_bytes";
                break;
            }
            if began.elapsed() >= SCAN_TIME_MAX {
                stopped = "time";
                break;
            }
            let fetch = Fetch {
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: FETCH_BYTES,
                partitions: vec![FetchFrom {
                    topic: name.clone(),
                    partition: part.partition,
                    offset,
                    max_bytes: FETCH_BYTES,
                    module: q.module.clone(),
                }],
                from_replica: false,
            };
            let fetched = console.broker.fetch(fetch).await?.into_iter().next();
            let Some(fetched) = fetched else { break };
            if let Some(e) = fetched.error {
                let field = if e.code == ErrorCode::UnknownModule { "module" } else { "partition" };
                return Err(ApiError::from(e).with_field(field));
            }
            let read = fetched.bytes();
            scanned_bytes += read;
            let bytes: Bytes = match fetched.batches.len() {
                1 => fetched.batches[0].clone(),
                _ => fetched.batches.concat().into(),
            };
            let (topic, partition, from, decompressed_max) =
                (name.clone(), part.partition, offset, console.broker.batch_decompressed_bytes_max());
            let records = tokio::task::spawn_blocking(move || {
                decode_batches_within(&topic, partition, bytes, from, decompressed_max)
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
            let next = fetched.next_offset.or_else(|| records.last().map(|r| r.offset + 1));
            match next {
                Some(next) if next > offset => offset = next,
                // Nothing more below the high watermark (records deleted meanwhile).
                _ => break,
            }
            scanned_records += records.len() as u64;
            let state = console.broker.controller().state();
            let mut decoder = DatumDecoder::new(&state.registry);
            for r in &records {
                if taken == limit {
                    offset = r.offset;
                    break;
                }
                if filters.matches(&r.record) {
                    let (record, bytes) = view(r, &mut decoder);
                    found.push((record, bytes));
                    found_bytes += bytes;
                    taken += 1;
                    // What is held for the answer stays within its bound while reading, too.
                    if found_bytes >= ANSWER_BYTES_MAX {
                        stopped = "answer_bytes";
                        offset = r.offset + 1;
                        break;
                    }
                }
            }
            if read == 0 || stopped == "answer_bytes" {
                break;
            }
        }
        if taken == limit && stopped == "end" {
            stopped = "limit";
        }
        positions.push(PartitionPosition {
            partition: part.partition,
            next_offset: offset,
            high_watermark: part.high_watermark,
        });
        // Across partitions, only the `limit` records the answer can show are kept, so a
        // browse of many partitions holds at most two partitions' worth.
        keep(&mut found, limit, newest);
        found_bytes = found.iter().map(|(_, bytes)| bytes).sum();
        if matches!(stopped, "scan_bytes" | "time" | "answer_bytes") {
            break;
        }
    }
    let mut records = Vec::with_capacity(found.len());
    let mut answer_bytes = 0;
    for (record, bytes) in found {
        if answer_bytes + bytes > ANSWER_BYTES_MAX && !records.is_empty() {
            stopped = "answer_bytes";
            break;
        }
        answer_bytes += bytes;
        records.push(record);
    }
    Ok(Json(Browse {
        records,
        scanned_records,
        scanned_bytes: scanned_bytes as u64,
        stopped: stopped.into(),
        positions,
    }))
}

fn decode_field(field: &str, text: Option<String>, base64: bool) -> ApiResult<Option<Bytes>> {
    match text {
        None => Ok(None),
        Some(t) if base64 => base64::engine::general_purpose::STANDARD
            .decode(t.as_bytes())
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| ApiError::field(field, format!("{field} is not base64: {e}"))),
        Some(t) => Ok(Some(Bytes::from(t))),
    }
}

/// Produces one record (acks=all: answered once it is stored on every in-sync replica).
#[utoipa::path(post, path = "/api/v1/topics/{name}/messages", params(("name" = String, Path)), request_body = NewRecord,
    tag = "messages", responses((status = 201, body = ProducedRecord, description = "Created"), (status = 400, body = ErrorBody, description = "Bad input; the error names the field"),
    (status = 404, body = ErrorBody, description = "Not found; the error names what"), (status = 413, body = ErrorBody, description = "Too large; the error names the limit")))]
pub async fn produce(
    State(console): State<Console>,
    Path(name): Path<String>,
    new: Result<Json<NewRecord>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ProducedRecord>)> {
    let Json(new) = body(new)?;
    let base64 = match new.encoding.as_deref().unwrap_or("text") {
        "text" => false,
        "base64" => true,
        other => return Err(ApiError::field("encoding", format!("encoding must be text or base64, not {other:?}"))),
    };
    let mut headers = Vec::with_capacity(new.headers.len());
    for (i, h) in new.headers.into_iter().enumerate() {
        headers.push((h.key, decode_field(&format!("headers[{i}].value"), h.value, base64)?));
    }
    let record = Record {
        key: decode_field("key", new.key, base64)?,
        value: decode_field("value", new.value, base64)?,
        headers,
        timestamp: weir_sdk::now_ms(),
    };
    let batch = weir_sdk::batch::encode_batch(&[record], Compression::None)?;
    let request = Produce { topic: name, partitions: vec![(new.partition, batch)], acks_all: true };
    let produced = console.broker.produce_enqueue(request).await.map_err(|e| match e.code {
        ErrorCode::UnknownTopic => ApiError::from(e).with_field("name"),
        _ => ApiError::from(e),
    })?;
    let produced = produced.await.into_iter().next();
    match produced {
        Some(p) => match p.base_offset {
            Ok(offset) => Ok((StatusCode::CREATED, Json(ProducedRecord { partition: p.partition, offset }))),
            Err(e) => {
                let field = match e.code {
                    ErrorCode::UnknownPartition => "partition",
                    ErrorCode::MessageTooLarge => "value",
                    _ => "value",
                };
                Err(ApiError::from(e).with_field(field))
            }
        },
        None => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the produce answered nothing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &str, headers: &[(&str, &str)]) -> Record {
        Record {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: headers.iter().map(|(k, v)| (k.to_string(), Some(Bytes::copy_from_slice(v.as_bytes())))).collect(),
            timestamp: 0,
        }
    }

    #[test]
    fn filters_match_substrings_of_key_value_and_headers() {
        let r = record("user-42", r#"{"level":"error"}"#, &[("trace", "abc123")]);
        let f = |key: Option<&str>, value: Option<&str>, header: Option<&str>| Filters {
            key: key.map(|s| s.as_bytes().to_vec()),
            value: value.map(|s| s.as_bytes().to_vec()),
            header: header.map(|s| s.as_bytes().to_vec()),
        };
        let cases = [
            (f(None, None, None), true),
            (f(Some("42"), None, None), true),
            (f(Some("43"), None, None), false),
            (f(None, Some("\"error\""), None), true),
            (f(None, Some("warn"), None), false),
            (f(None, None, Some("trace")), true),
            (f(None, None, Some("c12")), true),
            (f(None, None, Some("span")), false),
            (f(Some("user"), Some("level"), Some("abc")), true),
            (f(Some("user"), Some("level"), Some("xyz")), false),
        ];
        for (i, (filters, expected)) in cases.into_iter().enumerate() {
            assert_eq!(filters.matches(&r), expected, "case {i}");
        }
        let keyless = Record { key: None, ..r };
        assert!(!f(Some("user"), None, None).matches(&keyless));
    }

    #[test]
    fn a_payload_is_shown_as_text_when_it_is_utf8_and_cut_at_the_preview_size() {
        let registry = weir_registry::state::RegistryState::default();
        let mut decoder = DatumDecoder::new(&registry);
        let p = payload(b"<script>alert(1)</script>", &mut decoder);
        assert_eq!(p.text.as_deref(), Some("<script>alert(1)</script>"));
        assert!(!p.truncated);
        let binary = payload(&[0xff, 0xfe, 0x00], &mut decoder);
        assert_eq!(binary.text, None);
        assert_eq!(binary.base64, "//4A");
        let big = "é".repeat(PREVIEW_BYTES);
        let cut = payload(big.as_bytes(), &mut decoder);
        assert!(cut.truncated);
        assert_eq!(cut.size, big.len());
        assert_eq!(cut.text.as_deref().map(str::len), Some(PREVIEW_BYTES));
        // Framed like a schema registry value, but the id names nothing registered.
        let framed = payload(&[0, 0, 0, 0, 7, 1, 2], &mut decoder);
        assert_eq!((framed.schema_id, framed.decode_error), (None, None));
    }
}
