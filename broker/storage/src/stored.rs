//! How a record batch is kept as a value of the `log` keyspace.
//!
//! A batch is stored as its records section, either as it is or, when that saves space,
//! compressed as one LZ4 block, behind the batch's 61-byte header. The two are told apart by
//! length: the header declares the batch's length, and only a compressed section is shorter.
//! Values written before compression existed are all of the first kind and read as they
//! always did.
//!
//! The header and section together are the `log` keyspace's value, unless the section is
//! long enough to go to a segment file ([`crate::segments`]): then the value is the header with
//! its magic byte set to [`SEGMENT_MAGIC`], followed by the segment id, position and length of
//! the section (the *pointer value*, [`POINTER_BYTES`] long). The magic byte lies outside the
//! batch's CRC, and [`unpack`] puts the real one back, so readers get the batch as appended.
//!
//! Weir compresses, not fjall: fjall's journal and blob files would compress every value twice
//! (journal, then blob file at flush), including batches a producer compressed already and
//! values that do not shrink. Here a batch is compressed at most once, in the producing
//! connection's task rather than on the log writer's thread, and only when its producer left
//! it uncompressed and a sample of it shrinks. The header stays as it is, so the writer stamps
//! the offset and leader epoch into it, and retention, truncation and recovery read it, without
//! decompressing anything.

use std::cell::RefCell;
use std::io::Read;

use bytes::Bytes;
use weir_sdk::batch::{BatchHeader, BATCH_HEADER_BYTES};
use weir_sdk::pool::{BufferPool, Pooled};
use weir_sdk::{ErrorCode, WireError};

use crate::segments::{Located, Segments};

/// Where a batch header keeps its magic byte (2, RecordBatch v2).
const MAGIC_OFFSET: usize = 16;
const BATCH_MAGIC: u8 = 2;
/// The magic byte of a pointer value: its batch's section is in a segment file.
pub const SEGMENT_MAGIC: u8 = 0x80 | BATCH_MAGIC;
/// Length of a pointer value: the header, then segment id (u64), position (u64) and section
/// length (u32), big-endian.
pub const POINTER_BYTES: usize = BATCH_HEADER_BYTES + 20;

/// Records sections shorter than this are stored as they are: too small to pay for a call.
const PACK_MIN_BYTES: usize = 1024;
/// A thread keeps a scratch buffer up to this size between batches; a larger one (a rare large
/// batch) is given back after use rather than held by every runtime thread.
const SCRATCH_KEPT_MAX: usize = 4 << 20;
/// At most what LZ4 can expand one byte of a block to: a stored value that claims more is
/// damaged, and is refused before anything is allocated for it.
const LZ4_RATIO_MAX: usize = 255;
/// Inflated batches are written into buffers that come back to [`INFLATED`] when the last
/// `Bytes` of a batch is dropped (a fetch answer has been sent): at most `INFLATED_KEPT` bytes
/// of them are kept, each up to `INFLATED_KEPT_BYTES`, so a fetch does not map, fault in and
/// unmap a fresh buffer for every stored batch.
const INFLATED_KEPT: usize = 16 << 20;
const INFLATED_KEPT_BYTES: usize = 2 << 20;
/// How much of a records section is compressed first to decide whether to compress the rest.
const SAMPLE_BYTES: usize = 16 * 1024;
/// A value is stored compressed only if that saves at least 1/8 of its records section (and
/// the sample must save as much), so incompressible batches cost one sample, not a full pass.
fn worth_it(input: usize) -> usize {
    input - input / 8
}

/// A batch ready for the log writer: the batch itself (its header is stamped from it) and,
/// when it is stored compressed, its records section as an LZ4 block.
pub struct Packed {
    pub batch: Bytes,
    records: Option<Vec<u8>>,
}

impl Packed {
    /// A batch stored as it is.
    pub fn raw(batch: Bytes) -> Self {
        Self { batch, records: None }
    }

    /// Decides how `batch` is stored: compressed when its producer did not compress it and
    /// compression saves at least an eighth of its records section.
    pub fn new(header: &BatchHeader, batch: Bytes) -> Self {
        let records = batch.get(BATCH_HEADER_BYTES..header.total_bytes.min(batch.len())).unwrap_or_default();
        let producer_compressed = header.attributes & 0x07 != 0;
        if producer_compressed || records.len() < PACK_MIN_BYTES {
            return Self::raw(batch);
        }
        let packed = SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            let sample = &records[..records.len().min(SAMPLE_BYTES)];
            if sample.len() < records.len() && compress_into(sample, worth_it(sample.len()), scratch).is_none() {
                return None;
            }
            let packed = compress_into(records, worth_it(records.len()), scratch).map(<[u8]>::to_vec);
            if scratch.len() > SCRATCH_KEPT_MAX {
                *scratch = Vec::new();
            }
            packed
        });
        Self { records: packed, batch }
    }

    /// The batch's header as appended (the writer stamps its first bytes).
    pub fn header_bytes(&self) -> &[u8] {
        &self.batch[..BATCH_HEADER_BYTES]
    }

    /// The stored records section: what follows the header in a value or a segment.
    pub fn section(&self) -> &[u8] {
        match &self.records {
            Some(records) => records,
            None => &self.batch[BATCH_HEADER_BYTES..],
        }
    }

    /// Bytes of the stored batch (header and stored section).
    pub fn stored_len(&self) -> usize {
        match &self.records {
            Some(records) => BATCH_HEADER_BYTES + records.len(),
            None => self.batch.len(),
        }
    }

    /// The stored value with `head` (the batch's first bytes, stamped) in front.
    pub fn reader<'a>(&'a self, head: &'a [u8]) -> impl Read + 'a {
        let (header_rest, records): (&[u8], &[u8]) = match &self.records {
            Some(records) => (&self.batch[head.len()..BATCH_HEADER_BYTES], records),
            None => (&self.batch[head.len()..], &[]),
        };
        head.chain(header_rest).chain(records)
    }
}

thread_local! {
    /// Where compression writes before the result is known to be worth keeping: grown once per
    /// thread, never zero-filled again.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `input` as one LZ4 block into `scratch` if the block is at most `limit` bytes.
fn compress_into<'s>(input: &[u8], limit: usize, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]> {
    if scratch.len() < limit {
        scratch.resize(limit, 0);
    }
    // LZ4 stops and reports 0 (an error here) when the output would not fit in `limit`.
    let written = lz4::block::compress_to_buffer(input, None, false, &mut scratch[..limit]).ok()?;
    Some(&scratch[..written])
}

/// The pointer value of a batch whose stamped header is `head` and whose section is `at`.
pub fn pointer_value(head: &[u8], at: Located) -> [u8; POINTER_BYTES] {
    let mut value = [0u8; POINTER_BYTES];
    value[..BATCH_HEADER_BYTES].copy_from_slice(&head[..BATCH_HEADER_BYTES]);
    value[MAGIC_OFFSET] = SEGMENT_MAGIC;
    value[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + 8].copy_from_slice(&at.segment.to_be_bytes());
    value[BATCH_HEADER_BYTES + 8..BATCH_HEADER_BYTES + 16].copy_from_slice(&at.position.to_be_bytes());
    value[BATCH_HEADER_BYTES + 16..].copy_from_slice(&at.len.to_be_bytes());
    value
}

/// Where a pointer value's section is; `None` for a value that holds its batch.
pub fn located(value: &[u8]) -> Option<Located> {
    if value.len() != POINTER_BYTES || value[MAGIC_OFFSET] != SEGMENT_MAGIC {
        return None;
    }
    let at = &value[BATCH_HEADER_BYTES..];
    Some(Located {
        segment: u64::from_be_bytes(at[..8].try_into().ok()?),
        position: u64::from_be_bytes(at[8..16].try_into().ok()?),
        len: u32::from_be_bytes(at[16..].try_into().ok()?),
    })
}

/// Bytes the batch of a stored value takes, wherever its section is.
pub fn stored_len(value: &[u8]) -> usize {
    located(value).map_or(value.len(), |at| BATCH_HEADER_BYTES + at.len as usize)
}

/// The header of a stored value, without reading or decompressing its records.
pub fn header(value: &[u8]) -> Result<BatchHeader, WireError> {
    if let Some(at) = located(value) {
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(&value[..BATCH_HEADER_BYTES]);
        head[MAGIC_OFFSET] = BATCH_MAGIC;
        let header = BatchHeader::parse_head(&head)?;
        if BATCH_HEADER_BYTES + at.len as usize > header.total_bytes {
            return Err(corrupt(format!(
                "stored batch's section of {} bytes in segment {} is longer than the {} its batch declares",
                at.len, at.segment, header.total_bytes
            )));
        }
        return Ok(header);
    }
    let header = BatchHeader::parse_head(value)?;
    if value.len() > header.total_bytes {
        return Err(corrupt(format!(
            "stored value of {} bytes is longer than the {} its batch declares",
            value.len(),
            header.total_bytes
        )));
    }
    Ok(header)
}

/// The batch a stored value holds, as it was appended (its CRC is not checked here); a pointer
/// value's section is read from `segments`.
pub fn unpack(value: Bytes, segments: &Segments) -> Result<Bytes, WireError> {
    let header = header(&value)?;
    let value = match located(&value) {
        None => value,
        Some(at) => {
            let section_len = at.len as usize;
            let unreadable = |e: std::io::Error| {
                corrupt(format!("stored batch's {} bytes at {} of segment {}: {e}", at.len, at.position, at.segment))
            };
            // As appended: the header, its magic put back, and the section read in behind it,
            // into a pooled buffer.
            let mut head = [0u8; BATCH_HEADER_BYTES];
            head.copy_from_slice(&value[..BATCH_HEADER_BYTES]);
            head[MAGIC_OFFSET] = BATCH_MAGIC;
            let read = segments.read_batch(at, &head, &INFLATED).map_err(unreadable)?;
            if BATCH_HEADER_BYTES + section_len == header.total_bytes {
                return Ok(read);
            }
            // A compressed section: inflated below into another pooled buffer.
            read
        }
    };
    if value.len() == header.total_bytes {
        return Ok(value);
    }
    let records_len = header.total_bytes - BATCH_HEADER_BYTES;
    let compressed_len = value.len().saturating_sub(BATCH_HEADER_BYTES);
    if records_len > compressed_len.saturating_mul(LZ4_RATIO_MAX) {
        return Err(corrupt(format!(
            "stored batch declares {} bytes, more than {compressed_len} compressed bytes can hold",
            header.total_bytes
        )));
    }
    let records_len_i32 = i32::try_from(records_len)
        .map_err(|_| corrupt(format!("stored batch declares {} bytes", header.total_bytes)))?;
    // The batch is bounded by what the broker accepted when it was produced.
    let mut inflated = batch_buffer(header.total_bytes);
    let batch = inflated.buffer();
    batch[..BATCH_HEADER_BYTES].copy_from_slice(&value[..BATCH_HEADER_BYTES]);
    let written = lz4::block::decompress_to_buffer(
        &value[BATCH_HEADER_BYTES..],
        Some(records_len_i32),
        &mut batch[BATCH_HEADER_BYTES..],
    )
    .map_err(|e| corrupt(format!("stored batch of {} bytes does not decompress: {e}", header.total_bytes)))?;
    if written != records_len {
        return Err(corrupt(format!(
            "stored batch decompresses to {} bytes of records, its header declares {records_len}",
            written
        )));
    }
    Ok(Bytes::from_owner(inflated))
}

/// Buffers of inflated batches waiting to be used again (see [`INFLATED_KEPT`]).
static INFLATED: BufferPool = BufferPool::new(INFLATED_KEPT, INFLATED_KEPT_BYTES);

/// A buffer of `len` bytes for a batch, a kept one when one fits (its bytes are overwritten:
/// the header is copied and LZ4 or the segment read fills the rest, or the batch is refused).
fn batch_buffer(len: usize) -> Pooled {
    let mut pooled = INFLATED.take(len);
    pooled.buffer().resize(len, 0);
    pooled
}

fn corrupt(message: String) -> WireError {
    WireError::new(ErrorCode::CorruptBatch, message)
}

/// `n` bytes that do not compress (xorshift64), the same for the same seed: test data.
#[cfg(test)]
pub(crate) fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::Appender;
    use weir_sdk::batch::{encode_batch, validate_batch, Compression, Record};

    fn batch(values: impl Iterator<Item = Vec<u8>>, compression: Compression) -> (BatchHeader, Bytes) {
        let records: Vec<Record> =
            values.map(|v| Record { value: Some(Bytes::from(v)), timestamp: 1, ..Record::default() }).collect();
        let bytes = encode_batch(&records, compression).unwrap();
        (validate_batch(&bytes).unwrap(), bytes)
    }

    /// An empty segments folder that lives as long as the test.
    fn segments() -> (tempfile::TempDir, Segments) {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path(), crate::segments::Options::default()).unwrap();
        (dir, segments)
    }

    /// `packed` stored as the writer stores a large batch: its section appended to a segment,
    /// a pointer value in the log.
    fn stored_in_segment(packed: &Packed, appender: &mut Appender, segments: &Segments) -> Bytes {
        let at = Located {
            segment: appender.id(),
            position: appender.position(0),
            len: u32::try_from(packed.section().len()).unwrap(),
        };
        appender.write(&[packed.section()], segments).unwrap();
        Bytes::copy_from_slice(&pointer_value(packed.header_bytes(), at))
    }

    fn stored(packed: &Packed) -> Bytes {
        let mut out = Vec::new();
        packed.reader(&packed.batch[..16]).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), packed.stored_len());
        Bytes::from(out)
    }

    #[test]
    fn each_kind_of_batch_is_stored_as_the_table_says_and_reads_back_byte_for_byte() {
        // (what, batch, stored compressed)
        let cases = [
            ("repeated values", batch((0..64).map(|_| vec![b'a'; 1024]), Compression::None), true),
            ("random values", batch((0..64).map(|i| random(1024, i)), Compression::None), false),
            (
                "compressible first 16 KiB, random after: the sample says yes, the whole says no",
                batch((0..64).map(|i| if i < 4 { vec![b'a'; 1024] } else { random(1024, i) }), Compression::None),
                false,
            ),
            ("compressed by its producer", batch((0..64).map(|_| vec![b'a'; 1024]), Compression::Lz4), false),
            ("records section under 1 KiB", batch((0..4).map(|_| vec![b'a'; 100]), Compression::None), false),
        ];
        let (_dir, segments) = segments();
        let mut appender = Appender::next(None, &segments).unwrap();
        for (what, (head, bytes), compressed) in cases {
            let packed = Packed::new(&head, bytes.clone());
            let value = stored(&packed);
            assert_eq!(value.len() < bytes.len(), compressed, "{what}: {} of {} bytes", value.len(), bytes.len());
            assert_eq!(header(&value).unwrap(), head, "{what}: the header reads without decompressing");
            assert_eq!(stored_len(&value), packed.stored_len(), "{what}");
            assert_eq!(unpack(value, &segments).unwrap(), bytes, "{what}");
            // The same batch with its section in a segment file.
            let pointer = stored_in_segment(&packed, &mut appender, &segments);
            assert_eq!(pointer.len(), POINTER_BYTES, "{what}");
            assert_eq!(header(&pointer).unwrap(), head, "{what}: a pointer value's header reads as the batch's");
            assert_eq!(stored_len(&pointer), packed.stored_len(), "{what}");
            assert_eq!(unpack(pointer, &segments).unwrap(), bytes, "{what}: read back from the segment");
        }
    }

    #[test]
    fn a_batch_inflated_into_a_used_buffer_holds_only_its_own_bytes() {
        let (long_head, long) = batch((0..256).map(|_| vec![b'a'; 1024]), Compression::None);
        let (short_head, short) = batch((0..8).map(|_| vec![b'b'; 1000]), Compression::None);
        let (_dir, segments) = segments();
        for _ in 0..3 {
            let first = unpack(stored(&Packed::new(&long_head, long.clone())), &segments).unwrap();
            assert_eq!(first, long);
            drop(first);
            // Most likely in the buffer `first` used, which held longer, different bytes.
            let second = unpack(stored(&Packed::new(&short_head, short.clone())), &segments).unwrap();
            assert_eq!(second, short);
            let slice = second.slice(BATCH_HEADER_BYTES..);
            drop(second);
            assert_eq!(slice, short.slice(BATCH_HEADER_BYTES..), "a slice keeps its buffer out of the pool");
        }
    }

    #[test]
    fn a_damaged_value_is_reported_not_misread() {
        let (h, bytes) = batch((0..64).map(|_| vec![b'a'; 1024]), Compression::None);
        let value = stored(&Packed::new(&h, bytes.clone()));
        // (what, value)
        let longer = [bytes.as_ref(), b"x"].concat();
        let torn_raw = bytes.slice(..bytes.len() - 10);
        let torn_packed = value.slice(..value.len() - 3);
        let mut flipped = value.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xFF;
        let mut claims_more = value[..BATCH_HEADER_BYTES].to_vec();
        claims_more[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        claims_more.extend_from_slice(&value[BATCH_HEADER_BYTES..]);
        let cases: [(&str, Bytes); 5] = [
            ("longer than its header declares", Bytes::from(longer)),
            ("a raw value torn short", torn_raw),
            ("a compressed value torn short", torn_packed),
            ("a compressed value with a changed byte", Bytes::from(flipped)),
            ("a header claiming 2 GiB over a small block", Bytes::from(claims_more)),
        ];
        let (_dir, segments) = segments();
        let mut appender = Appender::next(None, &segments).unwrap();
        let pointer = stored_in_segment(&Packed::new(&h, bytes.clone()), &mut appender, &segments);
        let at = located(&pointer).unwrap();
        let with = |at: Located| Bytes::copy_from_slice(&pointer_value(&pointer, at));
        let mut pointer_flipped = bytes.to_vec();
        pointer_flipped[BATCH_HEADER_BYTES + 100] ^= 0xFF;
        let packed_flipped = Packed::raw(Bytes::from(pointer_flipped));
        let pointer_to_flipped = stored_in_segment(&packed_flipped, &mut appender, &segments);
        let pointer_cases: [(&str, Bytes); 5] = [
            ("a section longer than its header declares", with(Located { len: at.len + 1, ..at })),
            ("a section past the segment's end", with(Located { position: at.position + 1_000_000, ..at })),
            ("a section in a segment that is gone", with(Located { segment: at.segment + 7, ..at })),
            ("a section shorter than its batch (read as compressed)", with(Located { len: at.len - 10, ..at })),
            ("a section with a changed byte", pointer_to_flipped),
        ];
        for (what, value) in cases.into_iter().chain(pointer_cases) {
            // Either the value does not unpack, or what it unpacks to fails the CRC.
            let outcome = unpack(value, &segments).and_then(|b| validate_batch(&b).map(|_| b));
            let err = outcome.expect_err(what);
            assert_eq!(err.code, ErrorCode::CorruptBatch, "{what}: {}", err.message);
        }
    }
}
