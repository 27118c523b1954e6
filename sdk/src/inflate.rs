//! Bounded decompression of record batch payloads. Every codec streams its output and stops at
//! a limit, and snappy's claimed lengths are checked before anything is allocated, so a batch
//! of a few KiB that inflates (or claims to inflate) to gigabytes is refused, never held.

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::records::Compression;

/// A batch payload that inflates past the limit, or does not decompress at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("the {codec} payload inflates past {limit} bytes, the broker's batch_decompressed_bytes_max")]
    TooLarge { codec: &'static str, limit: usize },
    #[error("the {codec} payload does not decompress: {why}")]
    Corrupt { codec: &'static str, why: String },
}

fn codec(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "uncompressed",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// The payload decompressed, if it stays within `limit` bytes.
pub fn inflate(compressed: &Bytes, compression: Compression, limit: usize) -> Result<Bytes, InflateError> {
    // Uncompressed record data is itself: no copy.
    if compression == Compression::None {
        return match compressed.len() > limit {
            true => Err(InflateError::TooLarge { codec: codec(compression), limit }),
            false => Ok(compressed.clone()),
        };
    }
    let mut out = Vec::new();
    run(compressed, compression, limit, |reader| reader.read_to_end(&mut out).map(|_| ()))?;
    Ok(Bytes::from(out))
}

/// How many bytes the payload inflates to, if no more than `limit`; nothing is kept.
pub fn inflated_len(compressed: &Bytes, compression: Compression, limit: usize) -> Result<usize, InflateError> {
    let mut count = 0u64;
    run(compressed, compression, limit, |reader| {
        count = std::io::copy(reader, &mut std::io::sink())?;
        Ok(())
    })?;
    Ok(usize::try_from(count).unwrap_or(usize::MAX))
}

/// Streams the decompressed payload through `consume`, reading at most `limit + 1` bytes, so
/// that reaching `limit + 1` proves the payload is too large.
fn run(
    compressed: &Bytes,
    compression: Compression,
    limit: usize,
    consume: impl FnOnce(&mut dyn Read) -> std::io::Result<()>,
) -> Result<(), InflateError> {
    let name = codec(compression);
    let corrupt = |e: std::io::Error| InflateError::Corrupt { codec: name, why: e.to_string() };
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut counted = Counted { inner: None, read: 0 };
    match compression {
        Compression::None => counted.inner = Some(Box::new(compressed.clone().reader())),
        Compression::Gzip => counted.inner = Some(Box::new(flate2::read::GzDecoder::new(compressed.clone().reader()))),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(compressed.clone().reader()).map_err(corrupt)?;
            // A frame names the window its decoder must hold: a claim, capped by the limit.
            decoder.window_log_max(window_log_for(limit)).map_err(corrupt)?;
            counted.inner = Some(Box::new(decoder))
        }
        Compression::Lz4 => {
            counted.inner = Some(Box::new(lz4::Decoder::new(compressed.clone().reader()).map_err(corrupt)?))
        }
        Compression::Snappy => counted.inner = Some(Box::new(snappy(compressed, limit)?.reader())),
    }
    consume(&mut (&mut counted).take(cap)).map_err(corrupt)?;
    if counted.read > limit as u64 {
        return Err(InflateError::TooLarge { codec: name, limit });
    }
    Ok(())
}

/// The largest zstd window (a power of two) a frame may ask its decoder to hold: the smallest
/// that holds `limit` bytes, but at least 8 MiB (what producers' compressors use at their usual
/// levels, whatever the batch size) and at most zstd's own 128 MiB. A frame asking for more
/// is refused before the decoder allocates the window.
fn window_log_for(limit: usize) -> u32 {
    let log = usize::BITS - limit.saturating_sub(1).leading_zeros();
    log.clamp(23, 27)
}

/// A reader that counts what it hands out.
struct Counted<'a> {
    inner: Option<Box<dyn Read + 'a>>,
    read: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match &mut self.inner {
            Some(inner) => inner.read(buf)?,
            None => 0,
        };
        self.read += n as u64;
        Ok(n)
    }
}

/// Kafka's snappy: xerial framing (a magic header, then length-prefixed raw blocks), or one raw
/// block. Each block says how long it inflates to; that claim is checked against what is left
/// of `limit` before the block is decompressed.
fn snappy(compressed: &Bytes, limit: usize) -> Result<Bytes, InflateError> {
    const MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let corrupt = |why: String| InflateError::Corrupt { codec: "snappy", why };
    let too_large = InflateError::TooLarge { codec: "snappy", limit };
    let mut out = Vec::new();
    let block = |raw: &[u8], out: &mut Vec<u8>| -> Result<(), InflateError> {
        let claimed = snap::raw::decompress_len(raw).map_err(|e| corrupt(e.to_string()))?;
        if claimed > limit.saturating_sub(out.len()) {
            return Err(too_large.clone());
        }
        let start = out.len();
        out.resize(start + claimed, 0);
        snap::raw::Decoder::new().decompress(raw, &mut out[start..]).map_err(|e| corrupt(e.to_string()))?;
        Ok(())
    };
    let Some(mut rest) = compressed.strip_prefix(MAGIC.as_slice()) else {
        block(compressed, &mut out)?;
        return Ok(Bytes::from(out));
    };
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(corrupt("a block length is cut short".into()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        let raw =
            tail.get(..len).ok_or_else(|| corrupt(format!("a block claims {len} bytes; {} are left", tail.len())))?;
        block(raw, &mut out)?;
        rest = &tail[len..];
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zstd_of(data: &[u8]) -> Bytes {
        Bytes::from(zstd::encode_all(data, 3).unwrap())
    }

    #[test]
    fn each_codec_inflates_within_the_limit_and_stops_past_it() {
        let data = vec![7u8; 100_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gzip = Bytes::from(gz.finish().unwrap());
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz.write_all(&data).unwrap();
        let lz4 = Bytes::from(lz.finish().0);
        let snappy_raw = Bytes::from(snap::raw::Encoder::new().compress_vec(&data).unwrap());
        for (compression, payload) in [
            (Compression::Gzip, gzip),
            (Compression::Zstd, zstd_of(&data)),
            (Compression::Lz4, lz4),
            (Compression::Snappy, snappy_raw),
            (Compression::None, Bytes::from(data.clone())),
        ] {
            assert_eq!(inflate(&payload, compression, 100_000).unwrap(), data, "{compression:?}");
            assert_eq!(inflated_len(&payload, compression, 100_000).unwrap(), 100_000, "{compression:?}");
            let err = inflated_len(&payload, compression, 99_999).unwrap_err();
            assert!(matches!(err, InflateError::TooLarge { limit: 99_999, .. }), "{compression:?}: {err}");
        }
    }

    #[test]
    fn a_zstd_frame_asking_for_a_window_past_the_limit_is_refused() {
        // Streamed without a known size, the frame names a 128 MiB window for 1 KiB of data;
        // at a 1 MiB limit the cap is 8 MiB.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.set_parameter(zstd::zstd_safe::CParameter::WindowLog(27)).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(&[1u8; 1024]).unwrap();
        let frame = Bytes::from(encoder.finish().unwrap());
        assert_eq!(inflate(&frame, Compression::Zstd, 256 << 20).unwrap().len(), 1024);
        let refused = inflate(&frame, Compression::Zstd, 1 << 20).unwrap_err();
        assert!(matches!(refused, InflateError::Corrupt { codec: "zstd", .. }), "{refused}");
        assert_eq!(window_log_for(1 << 20), 23, "never below 8 MiB");
        assert_eq!(window_log_for((16 << 20) + 1), 25);
        assert_eq!(window_log_for(64 << 20), 26);
        assert_eq!(window_log_for(1 << 30), 27, "never above zstd's own maximum");
    }

    #[test]
    fn a_bomb_is_refused_without_being_held() {
        // 64 MiB of zeros in a few KiB; refused at 1 MiB, counted through a sink.
        let bomb = zstd_of(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        assert!(matches!(inflate(&bomb, Compression::Zstd, 1 << 20), Err(InflateError::TooLarge { .. })));
        // A snappy block claiming 3.75 GiB is refused from its header alone.
        let claim = Bytes::from_static(&[0x80, 0x80, 0x80, 0x80, 0x0f, 0x00]);
        assert!(matches!(inflate(&claim, Compression::Snappy, 1 << 20), Err(InflateError::TooLarge { .. })));
        assert!(matches!(
            inflate(&Bytes::from_static(b"not zstd"), Compression::Zstd, 1 << 20),
            Err(InflateError::Corrupt { .. })
        ));
    }
}
