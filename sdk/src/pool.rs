//! Large buffers kept for the next use. A fresh buffer of a megabyte comes from the OS as pages
//! that fault in and are zeroed on first write (about 3% of a broker taking 1 MiB produce
//! frames); a kept one is written over. Used for frames joined from QUIC chunks
//! (`client::read_frame_body`, broker and clients) and for batches the broker inflates or reads
//! from segment files to answer a fetch.

use std::sync::Mutex;

/// Buffers of at most `largest` bytes each, `bytes` in all, shared by a process's threads.
pub struct BufferPool {
    kept: Mutex<Vec<Vec<u8>>>,
    bytes: usize,
    largest: usize,
}

impl BufferPool {
    pub const fn new(bytes: usize, largest: usize) -> Self {
        Self { kept: Mutex::new(Vec::new()), bytes, largest }
    }

    /// An empty buffer with room for `len` bytes: a kept one if one [`fits`], else a new one.
    pub fn take(&'static self, len: usize) -> Pooled {
        self.take_kept(len).unwrap_or_else(|| Pooled { buffer: Vec::with_capacity(len), pool: self })
    }

    /// A kept buffer with room for `len` bytes if one [`fits`]; never a new one, so asking
    /// for a length that is only claimed (a frame's declared length) allocates nothing.
    pub fn take_kept(&'static self, len: usize) -> Option<Pooled> {
        let mut buffer = self.kept(len)?;
        buffer.clear();
        Some(Pooled { buffer, pool: self })
    }

    /// A buffer of exactly `len` bytes whose contents are unspecified: zeros where it is new,
    /// or where a kept buffer grows past its earlier length, and an earlier use's bytes
    /// elsewhere. Only for a caller that overwrites every byte it hands on and drops the
    /// buffer unread when it cannot (a disk read into it): it saves zero-filling bytes that
    /// are written over at once.
    pub fn take_filled(&'static self, len: usize) -> Pooled {
        let mut buffer = self.kept(len).unwrap_or_else(|| Vec::with_capacity(len));
        buffer.resize(len, 0);
        Pooled { buffer, pool: self }
    }

    /// A kept buffer that [`fits`] `len` bytes, as it was given back.
    fn kept(&'static self, len: usize) -> Option<Vec<u8>> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let at = kept.iter().position(|b| fits(b.capacity(), len))?;
        Some(kept.swap_remove(at))
    }
}

/// Whether a kept buffer of `capacity` bytes is used for `len` bytes: neither too small
/// (growing it would copy) nor more than twice `len` (what is written into it, a frame's
/// records or a fetched batch, may be held long after, and would hold all of the buffer).
pub fn fits(capacity: usize, len: usize) -> bool {
    (len..=len.saturating_mul(2)).contains(&capacity)
}

/// A buffer from a [`BufferPool`]; it goes back to it when dropped (as the owner of a
/// `Bytes`, when the last `Bytes` of it is).
pub struct Pooled {
    buffer: Vec<u8>,
    pool: &'static BufferPool,
}

impl Pooled {
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        if buffer.capacity() <= self.pool.largest {
            let mut kept = self.pool.kept.lock().unwrap_or_else(|e| e.into_inner());
            let held: usize = kept.iter().map(Vec::capacity).sum();
            if held + buffer.capacity() <= self.pool.bytes {
                kept.push(buffer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_kept_buffer_is_used_only_when_it_fits() {
        // (kept buffer's capacity, length asked for, used)
        let cases = [
            (100, 100, true),
            (200, 100, true),
            (201, 100, false), // more than twice: what is held long would hold all of it
            (99, 100, false),  // too small: growing it would copy
            (0, 0, true),
        ];
        for (capacity, len, used) in cases {
            assert_eq!(fits(capacity, len), used, "capacity {capacity}, length {len}");
        }
    }

    #[test]
    fn a_buffer_used_again_holds_only_its_new_bytes() {
        static POOL: BufferPool = BufferPool::new(2 << 20, 1 << 20);
        // Larger, smaller, then between: the later ones may take the earlier buffers.
        for (len, byte) in [(300_000, 7u8), (200_000, 9), (250_000, 3)] {
            let mut pooled = POOL.take(len);
            pooled.buffer().extend_from_slice(&vec![byte; len]);
            let bytes = Bytes::from_owner(pooled);
            assert_eq!(bytes.len(), len);
            assert!(bytes.iter().all(|&b| b == byte), "{len} bytes hold bytes of an earlier use");
        }
    }

    #[test]
    fn take_filled_gives_exactly_the_length_and_take_kept_an_empty_buffer_after_it() {
        static POOL: BufferPool = BufferPool::new(2 << 20, 1 << 20);
        for len in [5000, 3000, 4000, 6000, 0] {
            let mut filled = POOL.take_filled(len);
            assert_eq!(filled.buffer().len(), len);
            filled.buffer().fill(7);
        }
        let mut kept = POOL.take_kept(5000).expect("a kept buffer fits 5000 bytes");
        assert!(kept.buffer().is_empty(), "take_kept never hands on an earlier use's bytes");
    }

    #[test]
    fn take_kept_gives_only_a_kept_buffer_that_fits() {
        static POOL: BufferPool = BufferPool::new(2 << 20, 1 << 20);
        assert!(POOL.take_kept(1000).is_none(), "an empty pool allocates nothing");
        drop(POOL.take(1000));
        assert!(POOL.take_kept(3000).is_none(), "too small for 3000 bytes");
        assert!(POOL.take_kept(400).is_none(), "more than twice 400 bytes");
        let mut kept = POOL.take_kept(600).expect("the kept buffer fits 600 bytes");
        assert!(kept.buffer().is_empty() && kept.buffer().capacity() >= 1000);
        assert!(POOL.take_kept(600).is_none(), "the one kept buffer is out");
    }

    #[test]
    fn the_pool_keeps_at_most_its_bytes_and_no_buffer_over_its_largest() {
        static POOL: BufferPool = BufferPool::new(250, 1000);
        let taken: Vec<Pooled> = [100, 100, 100, 5000].into_iter().map(|len| POOL.take(len)).collect();
        drop(taken);
        let kept = POOL.kept.lock().unwrap();
        assert_eq!(kept.len(), 2, "two of 100 bytes fit in 250, a third does not");
        assert!(kept.iter().all(|b| b.capacity() <= 1000));
    }
}
