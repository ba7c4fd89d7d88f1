//! [`BufferPool`]: a few large buffers kept for reuse.
//!
//! Data moves through the muxer in buffers of up to a frame: the copy of a write, the body of a
//! received frame. Allocating each anew costs a page fault and a zeroing pass per frame once the
//! allocator hands memory back to the system between frames. The pool keeps a few spent buffers
//! (written to the socket, or read by the application) and hands them out again. The writer and
//! the streams' receive buffers keep their buffers whole (they track how much of the first one
//! is done instead of splitting it), so a buffer comes back with its contents: reading a frame
//! into it again needs no zeroing pass, only the socket's copy.
//!
//! A buffer is reused for received data only if it is exactly the data's size, so that unread
//! data of a stream never keeps a larger buffer alive: what the windows and buffer limits count
//! is what is held. The copy of a write, which leaves as soon as the socket takes it, may take a
//! buffer up to a quarter larger.

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
    /// A copy of `data` (written data, on its way to the socket), in a buffer up to a quarter
    /// larger.
    pub(crate) fn copy(&mut self, data: &[u8]) -> Bytes {
        self.copy_with_slack(data, data.len() / 4)
    }

    /// A copy of `data` (received data) in a buffer of exactly its size.
    pub(crate) fn copy_exact(&mut self, data: &[u8]) -> Bytes {
        self.copy_with_slack(data, 0)
    }

    fn copy_with_slack(&mut self, data: &[u8], slack: usize) -> Bytes {
        if data.len() < MIN_POOLED {
            return Bytes::copy_from_slice(data);
        }
        let Some(mut buf) = self.take_fitting(data.len(), slack) else {
            return Bytes::copy_from_slice(data);
        };
        buf.clear();
        buf.extend_from_slice(data);
        buf.freeze()
    }

    /// A buffer of exactly `len` bytes, to be overwritten: zeroes, or what a reused buffer held.
    pub(crate) fn filled(&mut self, len: usize) -> BytesMut {
        let Some(mut buf) = self.take_fitting(len, 0) else {
            return BytesMut::zeroed(len);
        };
        // Only bytes beyond what the buffer held before need zeroing.
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        buf
    }

    /// A kept buffer with room for `len` bytes and at most `slack` more.
    fn take_fitting(&mut self, len: usize, slack: usize) -> Option<BytesMut> {
        let i = self
            .free
            .iter()
            .position(|b| b.capacity() >= len && b.capacity() - len <= slack)?;
        let buf = self.free.swap_remove(i);
        self.bytes -= buf.capacity();
        Some(buf)
    }

    /// Takes back a buffer nobody else holds, contents and all.
    pub(crate) fn recycle(&mut self, bytes: Bytes) {
        if self.free.len() >= POOL_BUFFERS {
            return;
        }
        let Ok(buf) = bytes.try_into_mut() else {
            return;
        };
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
    fn a_buffer_comes_back_with_its_contents_and_is_read_into_again_without_zeroing() {
        let mut pool = BufferPool::default();
        let frame = pool.copy(&[7u8; 64 * 1024]);
        let address = frame.as_ptr();
        pool.recycle(frame);
        // A write of 60 KiB may take it (a quarter larger at most)...
        let write = pool.copy(&[7u8; 60 * 1024]);
        assert_eq!(write.as_ptr(), address);
        pool.recycle(write);
        // ...received data only a buffer of exactly its size.
        let smaller = pool.filled(60 * 1024);
        assert_ne!(smaller.as_ptr(), address);
        assert_eq!(smaller.capacity(), 60 * 1024);
        let exact = pool.filled(64 * 1024);
        assert_eq!(exact.as_ptr(), address);
        // Not zeroed where it held the write: the socket overwrites it anyway. Only what lies
        // beyond the old contents is zeroed.
        assert!(exact[..60 * 1024].iter().all(|&b| b == 7));
        assert!(exact[60 * 1024..].iter().all(|&b| b == 0));
        pool.recycle(exact.freeze());
        // A copy holds exactly the data copied.
        let copy = pool.copy(&[1u8; 64 * 1024]);
        assert_eq!(&copy[..], &[1u8; 64 * 1024][..]);
        pool.recycle(copy);
        let received = pool.copy_exact(&[2u8; 64 * 1024]);
        assert_eq!(received.as_ptr(), address);
        assert_eq!(&received[..], &[2u8; 64 * 1024][..]);
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
