//! Kafka RecordBatch v2, the one batch format of Weir.
//!
//! The broker only reads the fixed 61-byte batch header ([`BatchHeader`]) and checks the CRC; it
//! stores and serves the bytes as they came. Clients build and read whole batches with the
//! `kafka-protocol` crate ([`encode_batch`], [`decode_batches`]).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KafkaCompression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, WireError};

/// Size of the RecordBatch v2 header up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;
const LENGTH_FIELD_END: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const CRC_COVERED_FROM: usize = 21;

/// The fields of a batch header the broker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes of the whole batch, including the 12 bytes of offset and length.
    pub total_bytes: usize,
    /// The leader epoch of the broker that appended the batch (-1 from a producer).
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Number of offsets the batch occupies.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Parses the header of the batch at the start of `buf`, checking its length and magic
    /// against what is present. Does not check the CRC; see [`validate_batch`].
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let header = Self::parse_head(buf)?;
        if header.total_bytes > buf.len() {
            return Err(corrupt(format!(
                "record batch declares {} bytes but only {} are present",
                header.total_bytes,
                buf.len()
            )));
        }
        Ok(header)
    }

    /// Parses the 61-byte header at the start of `buf` without asking for the records after it
    /// (a stored batch whose records section is kept compressed has fewer bytes than its header
    /// declares). Checks the magic and the header's own fields, not the length.
    pub fn parse_head(buf: &[u8]) -> Result<Self, WireError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(corrupt(format!(
                "record batch of {} bytes is shorter than the {BATCH_HEADER_BYTES}-byte v2 header",
                buf.len()
            )));
        }
        let batch_length = be_i32(buf, 8);
        if batch_length < (BATCH_HEADER_BYTES - LENGTH_FIELD_END) as i32 {
            return Err(corrupt(format!("record batch length field {batch_length} is smaller than the v2 header")));
        }
        let total_bytes = LENGTH_FIELD_END + batch_length as usize;
        let magic = buf[MAGIC_OFFSET];
        if magic != 2 {
            return Err(corrupt(format!("record batch magic is {magic}; only magic 2 (RecordBatch v2) is accepted")));
        }
        let header = Self {
            base_offset: be_i64(buf, 0),
            total_bytes,
            partition_leader_epoch: be_i32(buf, 12),
            attributes: i16::from_be_bytes([buf[21], buf[22]]),
            last_offset_delta: be_i32(buf, 23),
            first_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: i16::from_be_bytes([buf[51], buf[52]]),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        };
        if header.last_offset_delta < 0
            || header.record_count < 0
            || header.record_count > header.last_offset_delta.saturating_add(1)
        {
            return Err(corrupt(format!(
                "record batch has record count {} and last offset delta {}",
                header.record_count, header.last_offset_delta
            )));
        }
        Ok(header)
    }
}

/// Parses the batch at the start of `buf` and checks its CRC-32C.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, WireError> {
    let header = BatchHeader::parse(buf)?;
    let stored = u32::from_be_bytes([buf[CRC_OFFSET], buf[CRC_OFFSET + 1], buf[CRC_OFFSET + 2], buf[CRC_OFFSET + 3]]);
    let computed = crc32c::crc32c(&buf[CRC_COVERED_FROM..header.total_bytes]);
    if stored != computed {
        return Err(corrupt(format!(
            "record batch CRC-32C mismatch: batch says {stored:#010x}, bytes give {computed:#010x}"
        )));
    }
    Ok(header)
}

/// Splits a buffer of back-to-back batches, validating each.
pub fn split_batches(mut buf: &[u8]) -> Result<Vec<(BatchHeader, &[u8])>, WireError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let header = validate_batch(buf)?;
        let (batch, rest) = buf.split_at(header.total_bytes);
        out.push((header, batch));
        buf = rest;
    }
    Ok(out)
}

/// Overwrites the base offset of an encoded batch (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the leader epoch a broker appends the batch in (outside the CRC, as the base
/// offset is). The caller has parsed the batch, so it holds a whole header.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

fn corrupt(message: String) -> WireError {
    WireError::new(ErrorCode::CorruptBatch, message)
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

// ---- client side: records in, batches out, and back -------------------------------------------

/// Batch compression, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Self::None,
            "gzip" => Self::Gzip,
            "snappy" => Self::Snappy,
            "lz4" => Self::Lz4,
            "zstd" => Self::Zstd,
            other => return Err(format!("unknown compression {other:?}; expected none, gzip, snappy, lz4 or zstd")),
        })
    }
}

impl From<Compression> for KafkaCompression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::None => KafkaCompression::None,
            Compression::Gzip => KafkaCompression::Gzip,
            Compression::Snappy => KafkaCompression::Snappy,
            Compression::Lz4 => KafkaCompression::Lz4,
            Compression::Zstd => KafkaCompression::Zstd,
        }
    }
}

/// A record as producers send it and consumers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl Record {
    /// The bytes of its key, value, header keys and header values (no framing).
    pub fn payload_len(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len)).sum();
        self.key.as_ref().map_or(0, Bytes::len) + self.value.as_ref().map_or(0, Bytes::len) + headers
    }
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub record: Record,
}

/// A record as `kafka-protocol` encodes it. Without a producer (`-1, -1, -1`) the batch has no
/// idempotence; with one, the batch header carries the producer id, epoch and first sequence.
fn kafka_record(r: &Record, offset: i64, base_offset: i64, producer: (i64, i16, i32)) -> KafkaRecord {
    let (producer_id, producer_epoch, base_sequence) = producer;
    let delta = i32::try_from(offset - base_offset).unwrap_or(i32::MAX);
    KafkaRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset,
        // The encoder takes the batch's base sequence from the first record and wants
        // offset - sequence constant within a batch.
        sequence: base_sequence.wrapping_add(delta),
        timestamp: r.timestamp,
        key: r.key.clone(),
        value: r.value.clone(),
        headers: r.headers.iter().map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone())).collect(),
    }
}

/// Encodes records as one RecordBatch v2 with base offset 0 (the broker assigns the real one).
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Bytes, WireError> {
    encode_with_producer(records, compression, (-1, -1, -1))
}

/// As [`encode_batch`], for an idempotent producer: the batch carries the producer id, epoch
/// and the sequence number of its first record.
pub fn encode_idempotent_batch(
    records: &[Record],
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<Bytes, WireError> {
    encode_with_producer(records, compression, (producer_id, producer_epoch, base_sequence))
}

fn encode_with_producer(
    records: &[Record],
    compression: Compression,
    producer: (i64, i16, i32),
) -> Result<Bytes, WireError> {
    let count = i32::try_from(records.len())
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(format!("a record batch holds 1 to {} records, not {}", i32::MAX, records.len())))?;
    let (min_timestamp, max_timestamp) =
        records.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| (lo.min(r.timestamp), hi.max(r.timestamp)));
    let mut buf = BytesMut::with_capacity(
        BATCH_HEADER_BYTES + records.iter().map(|r| record_body_len(r, 0, 0).saturating_add(20)).sum::<usize>(),
    );
    let (producer_id, producer_epoch, base_sequence) = producer;
    buf.put_i64(0); // base offset: the broker assigns it
    buf.put_i32(0); // batch length, filled in below
    buf.put_i32(-1); // partition leader epoch: the broker stamps it
    buf.put_i8(2); // magic
    buf.put_u32(0); // CRC-32C, filled in below
    buf.put_i16(codec_attribute(compression));
    buf.put_i32(count - 1); // last offset delta
    buf.put_i64(min_timestamp); // first timestamp (the smallest, as kafka-protocol writes it)
    buf.put_i64(max_timestamp);
    buf.put_i64(producer_id);
    buf.put_i16(producer_epoch);
    buf.put_i32(base_sequence);
    buf.put_i32(count);
    let write = |out: &mut BytesMut| -> anyhow::Result<()> {
        for (delta, r) in records.iter().enumerate() {
            let timestamp_delta = r.timestamp.checked_sub(min_timestamp).ok_or_else(|| {
                anyhow::anyhow!("record timestamps {} and {min_timestamp} are too far apart for one batch", r.timestamp)
            })?;
            put_record(out, r, timestamp_delta, i32::try_from(delta)?)?;
        }
        Ok(())
    };
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    match compression {
        Compression::None => write(&mut buf),
        Compression::Gzip => <Gzip as Compressor<BytesMut>>::compress(&mut buf, write),
        Compression::Snappy => <Snappy as Compressor<BytesMut>>::compress(&mut buf, write),
        Compression::Lz4 => <Lz4 as Compressor<BytesMut>>::compress(&mut buf, write),
        Compression::Zstd => <Zstd as Compressor<BytesMut>>::compress(&mut buf, write),
    }
    .map_err(|e| invalid(format!("encoding record batch: {e}")))?;
    let length = i32::try_from(buf.len() - LENGTH_FIELD_END)
        .map_err(|_| invalid(format!("a record batch of {} bytes is over the 2 GiB a batch can say", buf.len())))?;
    buf[8..LENGTH_FIELD_END].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_COVERED_FROM..]);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(buf.freeze())
}

/// The batch attributes of a codec (bits 0-2; no timestamp type, transaction or control bit).
fn codec_attribute(compression: Compression) -> i16 {
    match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

fn invalid(message: String) -> WireError {
    WireError::new(ErrorCode::InvalidRequest, message)
}

/// Bytes of a zigzag varint (Kafka's `varint` and `varlong`) of `n`.
fn varint_len(n: i64) -> usize {
    let zigzag = ((n << 1) ^ (n >> 63)) as u64;
    (64 - (zigzag | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut BytesMut, n: i64) {
    put_unsigned_varint(buf, ((n << 1) ^ (n >> 63)) as u64);
}

/// `n` as an unsigned varint, seven bits a byte, lowest first: how records zigzag their
/// fields, and how the flexible Kafka versions write lengths and counts.
pub fn put_unsigned_varint(buf: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        buf.put_u8(n.to_le_bytes()[0] | 0x80);
        n >>= 7;
    }
    buf.put_u8(n.to_le_bytes()[0]);
}

/// A length as a varint; `None` is Kafka's null (-1).
fn bytes_len(b: Option<&[u8]>) -> i64 {
    b.map_or(-1, |b| b.len() as i64)
}

/// Bytes of a record after its length prefix.
fn record_body_len(r: &Record, timestamp_delta: i64, offset_delta: i32) -> usize {
    let field = |b: Option<&[u8]>| varint_len(bytes_len(b)) + b.map_or(0, <[u8]>::len);
    let headers: usize = r.headers.iter().map(|(k, v)| field(Some(k.as_bytes())) + field(v.as_deref())).sum();
    1 + varint_len(timestamp_delta)
        + varint_len(i64::from(offset_delta))
        + field(r.key.as_deref())
        + field(r.value.as_deref())
        + varint_len(r.headers.len() as i64)
        + headers
}

/// Writes one record of a v2 batch straight into the batch buffer.
fn put_record(buf: &mut BytesMut, r: &Record, timestamp_delta: i64, offset_delta: i32) -> anyhow::Result<()> {
    let length = record_body_len(r, timestamp_delta, offset_delta);
    anyhow::ensure!(length <= i32::MAX as usize, "a record of {length} bytes is over the 2 GiB a record can say");
    put_varint(buf, length as i64);
    buf.put_i8(0); // record attributes
    put_varint(buf, timestamp_delta);
    put_varint(buf, i64::from(offset_delta));
    let mut field = |b: Option<&[u8]>| {
        put_varint(buf, bytes_len(b));
        if let Some(b) = b {
            buf.put_slice(b);
        }
    };
    field(r.key.as_deref());
    field(r.value.as_deref());
    put_varint(buf, r.headers.len() as i64);
    for (k, v) in &r.headers {
        put_varint(buf, k.len() as i64);
        buf.put_slice(k.as_bytes());
        put_varint(buf, bytes_len(v.as_deref()));
        if let Some(v) = v {
            buf.put_slice(v);
        }
    }
    Ok(())
}

/// Encodes records that keep offsets of their own (ascending, e.g. records read from a log)
/// as one RecordBatch v2 whose base offset is the first record's.
pub fn encode_batch_at_offsets(records: &[(i64, Record)]) -> Result<Bytes, WireError> {
    let Some(&(base, _)) = records.first() else {
        return Err(WireError::new(ErrorCode::InvalidRequest, "a record batch needs at least one record"));
    };
    let kafka_records: Vec<KafkaRecord> =
        records.iter().map(|(offset, r)| kafka_record(r, *offset, base, (-1, -1, -1))).collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &kafka_records,
        &RecordEncodeOptions { version: 2, compression: Compression::None.into() },
    )
    .map_err(|e| WireError::new(ErrorCode::InvalidRequest, format!("encoding record batch: {e}")))?;
    Ok(buf.freeze())
}

/// Decompressed record data a decoder holds at most for one batch when the caller names no
/// other bound (clients; the broker passes its `batch_decompressed_bytes_max`).
pub const DECOMPRESSED_BATCH_BYTES_DEFAULT: usize = 256 << 20;

/// The codec of a batch (attributes bits 0-2).
fn codec_of(header: &BatchHeader) -> Result<KafkaCompression, WireError> {
    Ok(match header.attributes & 0x07 {
        0 => KafkaCompression::None,
        1 => KafkaCompression::Gzip,
        2 => KafkaCompression::Snappy,
        3 => KafkaCompression::Lz4,
        4 => KafkaCompression::Zstd,
        other => return Err(corrupt(format!("record batch names compression codec {other}, which does not exist"))),
    })
}

/// How many bytes a batch's record data inflates to, counted without keeping them; refused
/// past `limit` (a bomb) or when it does not decompress.
pub fn inflated_batch_len(header: &BatchHeader, batch: &Bytes, limit: usize) -> Result<usize, WireError> {
    let payload = batch.slice(BATCH_HEADER_BYTES.min(header.total_bytes)..header.total_bytes);
    crate::inflate::inflated_len(&payload, codec_of(header)?, limit).map_err(|e| corrupt(e.to_string()))
}

/// Decodes one batch whose header was parsed and CRC checked already ([`validate_batch`],
/// [`split_batches`]) into its records; the CRC is not computed again. Record data is
/// decompressed within `limit` bytes.
pub fn decode_batch_records(batch: Bytes, limit: usize) -> Result<Vec<Record>, WireError> {
    let mut buf = batch;
    let mut out = Vec::new();
    while !buf.is_empty() {
        let set = decode_one(&mut buf, limit)?;
        out.extend(set.records.into_iter().map(|r| Record {
            key: r.key,
            value: r.value,
            headers: r.headers.into_iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect(),
            timestamp: r.timestamp,
        }));
    }
    Ok(out)
}

/// Checks that one batch whose header was parsed and CRC checked already decodes as
/// [`decode_batch_records`] would decode it, without building its records: the same fields,
/// lengths, header keys in UTF-8 and record count, with record data decompressed within
/// `limit` bytes. Returns how many records it holds. The produce path uses it when nothing
/// needs the records themselves (no allocation per record for an uncompressed batch).
pub fn check_batch_records(batch: &Bytes, limit: usize) -> Result<usize, WireError> {
    let header = BatchHeader::parse_head(batch)?;
    if batch.len() < header.total_bytes {
        return Err(corrupt(format!(
            "decoding record batch: {} bytes hold less than the {} the batch declares",
            batch.len(),
            header.total_bytes
        )));
    }
    let section = batch.slice(BATCH_HEADER_BYTES..header.total_bytes);
    let records = crate::inflate::inflate(&section, codec_of(&header)?, limit).map_err(|e| corrupt(e.to_string()))?;
    walk_records(&records, header.record_count).map_err(|why| corrupt(format!("decoding record batch: {why}")))?;
    // A count below zero was refused by `parse_head`.
    Ok(usize::try_from(header.record_count).unwrap_or(0))
}

/// Reads `count` v2 records from `buf` as kafka-protocol's decoder does (a record's bytes past
/// its fields, and bytes past the last record, are not looked at). Every step consumes at
/// least one byte or fails, so the loops end within `buf`'s length whatever the counts claim.
fn walk_records(mut buf: &[u8], count: i32) -> Result<(), String> {
    fn take<'a>(buf: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if buf.len() < n {
            return Err(format!("{what} of {n} bytes runs past the {} left", buf.len()));
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    }
    // Unsigned LEB128 of at most `max_bytes` bytes, bits past 64 dropped, as the decoder reads it.
    fn unsigned(buf: &mut &[u8], max_bytes: u32) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = u64::from(take(buf, 1, "a varint")?[0]);
            value |= (b & 0x7F) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }
    fn varint(buf: &mut &[u8]) -> Result<i32, String> {
        // Five bytes at most, kept to 32 bits (the decoder's u32 drops the rest).
        let zigzag = (unsigned(buf, 5)? & 0xFFFF_FFFF) as u32;
        Ok(((zigzag >> 1) as i32) ^ -((zigzag & 1) as i32))
    }
    fn length(buf: &mut &[u8], what: &str, nullable: bool) -> Result<Option<usize>, String> {
        let len = varint(buf)?;
        match (len, nullable) {
            (-1, true) => Ok(None),
            (len, _) if len >= 0 => Ok(Some(len as usize)),
            (len, _) => Err(format!("negative {what} length {len}")),
        }
    }
    for _ in 0..count {
        let size = length(&mut buf, "record", false)?.unwrap_or(0);
        let mut record = take(&mut buf, size, "a record")?;
        take(&mut record, 1, "record attributes")?;
        unsigned(&mut record, 10)?; // timestamp delta
        varint(&mut record)?; // offset delta
        for what in ["record key", "record value"] {
            if let Some(n) = length(&mut record, what, true)? {
                take(&mut record, n, what)?;
            }
        }
        let headers = varint(&mut record)?;
        if headers < 0 {
            return Err(format!("negative record header count {headers}"));
        }
        for _ in 0..headers {
            let key_len = length(&mut record, "record header key", false)?.unwrap_or(0);
            let key = take(&mut record, key_len, "a record header key")?;
            std::str::from_utf8(key).map_err(|e| format!("record header key is not UTF-8: {e}"))?;
            if let Some(n) = length(&mut record, "record header value", true)? {
                take(&mut record, n, "a record header value")?;
            }
        }
    }
    Ok(())
}

/// Decodes the batch at the front of `buf`, whose CRC the caller checked, decompressing its
/// records within `limit` bytes.
fn decode_one(buf: &mut Bytes, limit: usize) -> Result<kafka_protocol::records::RecordSet, WireError> {
    let inflate = |data: &mut Bytes, compression: KafkaCompression| {
        crate::inflate::inflate(data, compression, limit).map_err(anyhow::Error::from)
    };
    RecordBatchDecoder::decode_crc_checked_with_custom_compression(buf, Some(inflate))
        .map_err(|e| corrupt(format!("decoding record batch: {e}")))
}

/// Decodes back-to-back batches into records, keeping those at or after `from_offset`, within
/// [`DECOMPRESSED_BATCH_BYTES_DEFAULT`] of record data per batch.
pub fn decode_batches(
    topic: &str,
    partition: u32,
    bytes: Bytes,
    from_offset: i64,
) -> Result<Vec<ConsumedRecord>, WireError> {
    decode_batches_within(topic, partition, bytes, from_offset, DECOMPRESSED_BATCH_BYTES_DEFAULT)
}

/// As [`decode_batches`], decompressing at most `limit` bytes of record data per batch.
pub fn decode_batches_within(
    topic: &str,
    partition: u32,
    bytes: Bytes,
    from_offset: i64,
    limit: usize,
) -> Result<Vec<ConsumedRecord>, WireError> {
    let mut out = Vec::new();
    let mut buf = bytes;
    while !buf.is_empty() {
        let header = validate_batch(&buf)?;
        let batch = buf.split_to(header.total_bytes);
        out.extend(decode_validated_batch(topic, partition, batch, from_offset, limit)?);
    }
    Ok(out)
}

/// Decodes one batch whose CRC the caller has checked ([`split_batches`]) into its records at
/// or after `from_offset`, decompressing at most `limit` bytes of record data.
pub fn decode_validated_batch(
    topic: &str,
    partition: u32,
    mut batch: Bytes,
    from_offset: i64,
    limit: usize,
) -> Result<Vec<ConsumedRecord>, WireError> {
    let set = decode_one(&mut batch, limit)?;
    Ok(set
        .records
        .into_iter()
        .filter(|r| r.offset >= from_offset)
        .map(|r| ConsumedRecord {
            topic: topic.to_owned(),
            partition,
            offset: r.offset,
            record: Record {
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect(),
                timestamp: r.timestamp,
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded stand-in for a fuzzer, run with the tests: batches of every codec with their
    /// compressed record data mutated and the CRC made valid again (so the decompressors, not
    /// the CRC check, meet the damage) never panic the decoders and never inflate past the
    /// limit. Prints its seed so a failure can be replayed (`WEIR_FUZZ_SEED`).
    #[test]
    fn compressed_batches_with_damaged_record_data_never_panic_the_decoders() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("WEIR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xb0b);
        eprintln!("batch decoder property test seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let records: Vec<Record> = (0..50)
            .map(|i| Record {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; 200])),
                ..Record::default()
            })
            .collect();
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let valid = encode_batch(&records, compression).unwrap().to_vec();
            for _ in 0..2_000 {
                let mut input = valid.clone();
                for _ in 0..rng.gen_range(1..6) {
                    let at = rng.gen_range(BATCH_HEADER_BYTES..input.len());
                    input[at] = rng.gen();
                }
                let crc = crc32c::crc32c(&input[CRC_COVERED_FROM..]);
                input[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
                let input = Bytes::from(input);
                let header = validate_batch(&input).expect("the header and CRC are intact");
                if let Ok(n) = inflated_batch_len(&header, &input, 64 << 10) {
                    assert!(n <= 64 << 10);
                }
                let decoded = decode_batch_records(input.clone(), 64 << 10);
                let checked = check_batch_records(&input, 64 << 10);
                assert_eq!(
                    checked.as_ref().ok(),
                    decoded.as_ref().ok().map(Vec::len).as_ref(),
                    "{compression:?}: the check and the decoder agree ({checked:?})"
                );
                let _ = decode_batches_within("t", 0, input, 0, 64 << 10);
            }
        }
    }

    /// The record check agrees with the decoder on uncompressed batches damaged anywhere in
    /// their records (lengths, counts, varints, header keys that are not UTF-8), and on the
    /// batch's record count: whatever one accepts, the other does, with the same count.
    #[test]
    fn the_record_check_accepts_exactly_what_the_decoder_decodes() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("WEIR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xc4ec);
        eprintln!("record check property test seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Timestamps 0: the decoder adds a record's delta to the batch's first timestamp.
        let records: Vec<Record> = (0..20)
            .map(|i| Record {
                key: (i % 3 != 0).then(|| Bytes::from(format!("k{i}"))),
                value: (i % 5 != 0).then(|| Bytes::from(vec![b'v'; i * 7])),
                headers: (0..i % 3).map(|h| (format!("h{h}é"), (h % 2 == 0).then(|| Bytes::from("x")))).collect(),
                timestamp: 0,
            })
            .collect();
        let valid = encode_batch(&records, Compression::None).unwrap().to_vec();
        assert_eq!(check_batch_records(&Bytes::from(valid.clone()), 1 << 20).unwrap(), 20);
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut input = valid.clone();
            if round % 10 == 0 {
                let count: i32 = rng.gen_range(0..40);
                input[57..61].copy_from_slice(&count.to_be_bytes());
            }
            for _ in 0..rng.gen_range(0..4) {
                let at = rng.gen_range(BATCH_HEADER_BYTES..input.len());
                input[at] = match rng.gen_range(0..4) {
                    0 => 0xFF,
                    1 => 0x01,
                    _ => rng.gen(),
                };
            }
            let input = Bytes::from(input);
            let decoded = decode_batch_records(input.clone(), 1 << 20);
            let checked = check_batch_records(&input, 1 << 20);
            assert_eq!(
                checked.as_ref().ok(),
                decoded.as_ref().ok().map(Vec::len).as_ref(),
                "round {round}: {checked:?} against {:?}",
                decoded.as_ref().map(Vec::len)
            );
            match checked {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::CorruptBatch);
                    refused += 1;
                }
            }
        }
        assert!(accepted > 1_000 && refused > 1_000, "both outcomes are exercised: {accepted} / {refused}");
        let cut = Bytes::from(valid[..valid.len() - 1].to_vec());
        assert!(check_batch_records(&cut, 1 << 20).is_err(), "shorter than the batch declares");
        assert!(check_batch_records(&Bytes::from(valid), 100).is_err(), "record data past the limit");
    }

    fn sample(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![i as u8; i * 10])),
                headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
                timestamp: 1_700_000_000_000 + i as i64,
            })
            .collect()
    }

    #[test]
    fn encoded_batch_validates_and_decodes_at_assigned_offset() {
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let records = sample(5);
            let mut batch = encode_batch(&records, compression).unwrap().to_vec();
            let header = validate_batch(&batch).unwrap();
            assert_eq!(header.record_count, 5);
            assert_eq!(header.total_bytes, batch.len());
            set_base_offset(&mut batch, 100);
            validate_batch(&batch).unwrap();
            let decoded = decode_batches("t", 0, Bytes::from(batch), 102).unwrap();
            assert_eq!(decoded.len(), 3);
            assert_eq!(decoded[0].offset, 102);
            assert_eq!(decoded[0].record, records[2]);
        }
    }

    /// The batch as `kafka-protocol`'s encoder writes it, which the direct encoder replaced.
    fn encode_via_kafka_protocol(records: &[Record], compression: Compression, producer: (i64, i16, i32)) -> Vec<u8> {
        let kafka_records: Vec<KafkaRecord> =
            records.iter().enumerate().map(|(i, r)| kafka_record(r, i as i64, 0, producer)).collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &kafka_records,
            &RecordEncodeOptions { version: 2, compression: compression.into() },
        )
        .unwrap();
        buf.to_vec()
    }

    /// The encoder writes records straight into the batch buffer; it must write the very
    /// bytes `kafka-protocol` writes, for every codec and for records with and without keys,
    /// values and headers, timestamps out of order, sizes across varint boundaries and an
    /// idempotent producer's header fields.
    #[test]
    fn direct_encoding_writes_the_bytes_kafka_protocol_writes() {
        let sizes = [0usize, 1, 63, 64, 127, 128, 8191, 8192, 20_000];
        let mut records: Vec<Record> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| Record {
                key: (i % 3 != 0).then(|| Bytes::from(vec![b'k'; *n % 200])),
                value: (i % 4 != 1).then(|| Bytes::from(vec![(i * 7) as u8; *n])),
                headers: (0..i % 3)
                    .map(|h| (format!("h{h}"), (h % 2 == 0).then(|| Bytes::from(vec![b'v'; *n % 300]))))
                    .collect(),
                timestamp: 1_700_000_000_000 + [5i64, -3, 0, 900_000, -64, 64][i % 6],
            })
            .collect();
        records.extend(sample(70));
        let shapes: [&[Record]; 3] = [&records[..1], &records[..9], &records];
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            for (n, shape) in shapes.iter().enumerate() {
                for producer in [(-1, -1, -1), (4242, 3, i32::MAX - 2)] {
                    let direct = encode_with_producer(shape, compression, producer).unwrap();
                    assert_eq!(
                        direct.to_vec(),
                        encode_via_kafka_protocol(shape, compression, producer),
                        "{compression:?}, shape {n}, producer {producer:?}"
                    );
                    let header = validate_batch(&direct).unwrap();
                    assert_eq!(header.record_count as usize, shape.len());
                    assert_eq!(decode_batch_records(direct, usize::MAX).unwrap(), shape.to_vec());
                }
            }
        }
        let err = encode_batch(&[], Compression::None).unwrap_err();
        assert!(err.message.contains("1 to"), "{err}");
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut batch = encode_batch(&sample(3), Compression::None).unwrap().to_vec();
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        let err = validate_batch(&batch).unwrap_err();
        assert_eq!(err.code, ErrorCode::CorruptBatch);
        assert!(err.message.contains("CRC-32C"), "{err}");
        // The decoders that take bytes from outside check it before decoding, since the
        // record decoder itself no longer does (it runs on batches checked already).
        for err in [
            split_batches(&batch).map(|_| ()).unwrap_err(),
            decode_batches("t", 0, Bytes::from(batch.clone()), 0).map(|_| ()).unwrap_err(),
        ] {
            assert_eq!(err.code, ErrorCode::CorruptBatch);
            assert!(err.message.contains("CRC-32C"), "{err}");
        }
    }

    #[test]
    fn truncated_and_garbage_batches_are_rejected() {
        let batch = encode_batch(&sample(3), Compression::None).unwrap();
        let err = validate_batch(&batch[..batch.len() - 1]).unwrap_err();
        assert!(err.message.contains("declares"), "{err}");
        let err = validate_batch(&[7u8; 80]).unwrap_err();
        assert_eq!(err.code, ErrorCode::CorruptBatch);
        let err = validate_batch(&[0u8; 10]).unwrap_err();
        assert!(err.message.contains("shorter"), "{err}");
    }
}
