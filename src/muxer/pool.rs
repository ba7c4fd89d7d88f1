//! [`BufferPool`]: a few large buffers kept for reuse.
//!
//! Data moves through the muxer in buffers of up to a frame: the copy of a write, the body of a
//! received frame. Allocating each anew costs a page fault and a zeroing pass per frame once the
//! allocator hands memory back to the system between frames. The pool keeps a few spent buffers
//! (written to the socket, or read by the application) and hands them out again, whole even
//! when only their last piece comes back.
//!
//! A buffer is reused only for data of nearly its size (at most a quarter more), so that data
//! held in it (unread data of a stream, say) never keeps a much larger buffer alive: what the
//! windows and buffer limits count is what is held.

use bytes::{Bytes, BytesMut};

/// How many buffers the pool keeps at most: enough for the frames of a grown window in flight.
const POOL_BUFFERS: usize = 16;
/// How many bytes of buffers the pool keeps at most, so that an idle connection holds little.
const POOL_BYTES: usize = 1024 * 1024;
/// Buffers smaller than this are not worth keeping (and copies this small are not worth a
/// pooled buffer).
const MIN_POOLED: usize = 8 * 1024;
/// Buffers larger than this are not kept, so that an idle connection holds little.
const MAX_POOLED: usize = 256 * 1024;

#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Vec<BytesMut>,
    /// The capacity of the buffers in `free`.
    bytes: usize,
}

impl BufferPool {
    /// A copy of `data`.
    pub(crate) fn copy(&mut self, data: &[u8]) -> Bytes {
        if data.len() < MIN_POOLED {
            return Bytes::copy_from_slice(data);
        }
        let Some(mut buf) = self.take_fitting(data.len()) else {
            return Bytes::copy_from_slice(data);
        };
        // Kept buffers are empty (see `recycle`).
        buf.extend_from_slice(data);
        buf.freeze()
    }

    /// A buffer of `len` zeroed bytes, to be overwritten.
    pub(crate) fn filled(&mut self, len: usize) -> BytesMut {
        let Some(mut buf) = self.take_fitting(len) else {
            return BytesMut::zeroed(len);
        };
        buf.resize(len, 0);
        buf
    }

    /// A kept buffer with room for `len` bytes and at most a quarter more.
    fn take_fitting(&mut self, len: usize) -> Option<BytesMut> {
        let i = self
            .free
            .iter()
            .position(|b| b.capacity() >= len && b.capacity() - len <= len / 4)?;
        let buf = self.free.swap_remove(i);
        self.bytes -= buf.capacity();
        Some(buf)
    }

    /// Takes back a buffer nobody else holds. `bytes` may be the last piece of a larger buffer
    /// (what is left of a partly written or partly read frame): the whole buffer comes back.
    pub(crate) fn recycle(&mut self, bytes: Bytes) {
        if self.free.len() >= POOL_BUFFERS {
            return;
        }
        let Ok(mut buf) = bytes.try_into_mut() else {
            return;
        };
        // Free again the part of the buffer in front of this piece. Its old contents no longer
        // count as initialised: a buffer reused for reading is zeroed first (no page faults,
        // though: the memory is the process's already).
        buf.clear();
        let _ = buf.try_reclaim(buf.capacity() + 1);
        let capacity = buf.capacity();
        if (MIN_POOLED..=MAX_POOLED).contains(&capacity) && self.bytes + capacity <= POOL_BYTES {
            self.bytes += capacity;
            self.free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_is_reused_without_reallocating() {
        let mut pool = BufferPool::default();
        let first = pool.copy(&[1u8; 64 * 1024]);
        let address = first.as_ptr();
        pool.recycle(first);
        let second = pool.filled(64 * 1024);
        assert_eq!(second.as_ptr(), address);
        assert_eq!(second.len(), 64 * 1024);
    }

    #[test]
    fn a_buffer_is_not_reused_for_much_smaller_data() {
        let mut pool = BufferPool::default();
        pool.recycle(Bytes::from(vec![0u8; 64 * 1024]));
        let small = pool.copy(&[1u8; 16 * 1024]);
        assert_eq!(pool.free.len(), 1, "the 64 KiB buffer stays in the pool");
        assert!(pool.filled(20 * 1024).capacity() < 64 * 1024);
        assert_eq!(pool.free.len(), 1);
        drop(small);
    }

    #[test]
    fn the_last_piece_of_a_buffer_brings_the_whole_buffer_back() {
        let mut pool = BufferPool::default();
        let mut frame = pool.copy(&[1u8; 64 * 1024]);
        let address = frame.as_ptr();
        let _ = frame.split_to(64 * 1024 - 100); // written or read, and dropped
        pool.recycle(frame);
        assert_eq!(pool.copy(&[2u8; 64 * 1024]).as_ptr(), address);
        // Likewise a larger piece.
        let mut frame = pool.copy(&[3u8; 64 * 1024]);
        let address = frame.as_ptr();
        let _ = frame.split_to(24 * 1024);
        pool.recycle(frame);
        assert_eq!(pool.copy(&[4u8; 64 * 1024]).as_ptr(), address);
    }

    #[test]
    fn shared_small_and_huge_buffers_are_not_kept() {
        let mut pool = BufferPool::default();
        let shared = pool.copy(&[0u8; 64 * 1024]);
        let other = shared.clone();
        pool.recycle(shared);
        pool.recycle(Bytes::copy_from_slice(&[0u8; 100]));
        pool.recycle(Bytes::from(vec![0u8; 2 * MAX_POOLED]));
        assert!(pool.free.is_empty());
        drop(other);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_buffers_and_bytes() {
        let mut pool = BufferPool::default();
        for _ in 0..3 * POOL_BUFFERS {
            pool.recycle(Bytes::from(vec![0u8; MIN_POOLED]));
        }
        assert_eq!(pool.free.len(), POOL_BUFFERS);
        let mut pool = BufferPool::default();
        for _ in 0..3 * POOL_BUFFERS {
            pool.recycle(Bytes::from(vec![0u8; MAX_POOLED]));
        }
        assert_eq!(pool.free.len(), POOL_BYTES / MAX_POOLED);
        assert_eq!(pool.bytes, POOL_BYTES);
        // Taking one out makes room again.
        let _ = pool.filled(MAX_POOLED);
        assert_eq!(pool.bytes, POOL_BYTES - MAX_POOLED);
    }
}
