//! Kafka's default key partitioner, so that a key lands on the same partition whichever client
//! (Weir's or a Kafka one) produced it.

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a keyed record.
pub fn partition_for_key(key: &[u8], partition_count: u32) -> u32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) as u32) % partition_count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expected: i32) {
        assert_eq!(murmur2(input), expected, "murmur2({:?})", String::from_utf8_lossy(input));
    }

    // Vectors from Kafka's UtilsTest.testMurmur2.
    #[test]
    fn matches_kafka() {
        check(b"21", -973932308);
        check(b"foobar", -790332482);
        check(b"a-little-bit-long-string", -985981536);
        check(b"a-little-bit-longer-string", -1486304829);
        check(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971);
        check(b"abc", 479470107);
    }

    #[test]
    fn partition_is_in_range() {
        for i in 0..1000u32 {
            assert!(partition_for_key(&i.to_be_bytes(), 7) < 7);
        }
    }
}
