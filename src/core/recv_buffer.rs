//! [`RecvBuffer`]: one stream's received data, held in memory the size of the data.
//!
//! A peer is allowed a number of *bytes* (its credit, a connection's budget), so what the
//! buffer keeps for those bytes must cost bytes too, however the peer cuts them into frames:
//!
//! * A frame body is kept as it came (the reader gives every body a buffer of exactly its size),
//!   unless it is small ([`GATHER_BELOW`]) and data is already waiting: then it is copied behind
//!   that data into a gathering buffer of at most [`GATHER_CAPACITY`] bytes. A flood of 1-byte
//!   frames costs a byte each, not a buffer and a queue slot each. A gathering buffer joins the
//!   queue once full, as it is; one cut short by a large frame is copied to its exact size.
//!   Plain mplex does not gather: its limit counts frames (`set_max_buffer_size`), so each
//!   frame stays its own buffer, and their number is bounded by that limit.
//! * The buffer counts what it **holds**: the unread bytes, plus the read part of the buffer
//!   being read, which stays allocated until all of it is read. The window grants credit for
//!   what is released ([`RecvBuffer::held`] going down), not for what is read, so that the
//!   bytes held never exceed the window, whatever the frame sizes and the reads.
//!
//! Beyond the bytes held, a stream with data waiting costs at most its gathering buffer
//! ([`GATHER_CAPACITY`]) and one queue slot (32 bytes, twice that while the queue's storage
//! doubles) per kept buffer. Kept buffers are at least [`GATHER_CAPACITY`] bytes, except a
//! gathering buffer cut short, which needs a large frame behind it: at most two buffers per
//! 8 KiB held. That is 1/128 of the bytes held, plus 8 KiB. A stream with nothing to read
//! holds nothing.

use std::collections::VecDeque;

use bytes::Bytes;

/// Frames smaller than this are gathered behind data that waits.
pub(crate) const GATHER_BELOW: usize = 16 * 1024;
/// The size of a full gathering buffer.
pub(crate) const GATHER_CAPACITY: usize = 8 * 1024;

/// A stream's received data; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct RecvBuffer {
    /// Kept buffers, in order: frame bodies and full (or exact-sized) gathered buffers. Each
    /// is unread but for the first `front_read` bytes of the first one.
    chunks: VecDeque<Bytes>,
    front_read: usize,
    /// Small frames gathered behind `chunks`, read from `gather_read` on (only once `chunks`
    /// is empty).
    gather: Vec<u8>,
    gather_read: usize,
    /// Bytes not yet read.
    unread: usize,
    /// Bytes kept alive: `unread`, plus the read part of the first chunk and of `gather`.
    held: usize,
}

impl RecvBuffer {
    /// Bytes not yet read.
    pub(crate) fn unread(&self) -> usize {
        self.unread
    }

    /// Bytes kept alive for this stream's data (see the module docs).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// How many buffers hold the data: in plain mplex, which does not gather, the number of
    /// frames not yet read to their end.
    pub(crate) fn frames(&self) -> usize {
        self.chunks.len() + usize::from(!self.gather.is_empty())
    }

    /// Adds a received frame body behind the data already there; small ones are gathered when
    /// `gather_small` (extension mode).
    pub(crate) fn push(&mut self, data: Bytes, gather_small: bool) {
        let len = data.len();
        if len == 0 {
            return;
        }
        let waiting = self.unread > 0;
        self.unread += len;
        self.held += len;
        if gather_small && waiting && len < GATHER_BELOW {
            self.gather(&data);
        } else {
            self.seal_gathered();
            self.chunks.push_back(data);
        }
    }

    fn gather(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.gather.len() == GATHER_CAPACITY {
                self.seal_gathered();
            }
            let n = (GATHER_CAPACITY - self.gather.len()).min(data.len());
            extend_gathering(&mut self.gather, &data[..n], GATHER_CAPACITY);
            data = &data[n..];
        }
    }

    /// Moves the gathered bytes into the queue, so that what comes next goes behind them. A
    /// full buffer moves as it is; a partly filled one is copied to the size of its unread
    /// bytes (its read part is released), and the gathering buffer is kept for more.
    fn seal_gathered(&mut self) {
        if self.gather.is_empty() {
            return;
        }
        // `gather` is read only once `chunks` is empty.
        debug_assert!(self.gather_read == 0 || self.chunks.is_empty());
        if self.gather.len() == self.gather.capacity() {
            if self.chunks.is_empty() {
                self.front_read = self.gather_read;
            }
            self.chunks
                .push_back(Bytes::from(std::mem::take(&mut self.gather)));
        } else {
            let unread = Bytes::copy_from_slice(&self.gather[self.gather_read..]);
            self.held -= self.gather_read;
            self.chunks.push_back(unread);
            self.gather.clear();
        }
        self.gather_read = 0;
    }

    /// Takes up to `max` bytes from the front, without copying where a kept buffer has them.
    pub(crate) fn take(&mut self, max: usize) -> Option<Bytes> {
        let chunk = if let Some(front) = self.chunks.front() {
            let start = self.front_read;
            if front.len() - start <= max {
                let front = self.chunks.pop_front()?;
                self.front_read = 0;
                self.held -= front.len();
                if start == 0 {
                    front
                } else {
                    front.slice(start..)
                }
            } else {
                self.front_read += max;
                front.slice(start..start + max)
            }
        } else {
            let unread = &self.gather[self.gather_read..];
            if unread.is_empty() {
                return None;
            }
            let n = unread.len().min(max);
            let chunk = Bytes::copy_from_slice(&unread[..n]);
            self.gather_read += n;
            self.release_gathered_if_read();
            chunk
        };
        self.unread -= chunk.len();
        self.release_if_empty();
        Some(chunk)
    }

    /// Copies unread data into `buf`, across buffers, and hands every kept buffer read to its
    /// end to `spent`. Returns how many bytes were copied.
    pub(crate) fn take_into(&mut self, buf: &mut [u8], mut spent: impl FnMut(Bytes)) -> usize {
        let mut copied = 0;
        while copied < buf.len() {
            if let Some(front) = self.chunks.front() {
                let unread = &front[self.front_read..];
                let n = unread.len().min(buf.len() - copied);
                buf[copied..copied + n].copy_from_slice(&unread[..n]);
                copied += n;
                if n == unread.len() {
                    self.front_read = 0;
                    let front = self.chunks.pop_front().expect("front exists");
                    self.held -= front.len();
                    spent(front);
                } else {
                    self.front_read += n;
                }
            } else {
                let unread = &self.gather[self.gather_read..];
                if unread.is_empty() {
                    break;
                }
                let n = unread.len().min(buf.len() - copied);
                buf[copied..copied + n].copy_from_slice(&unread[..n]);
                copied += n;
                self.gather_read += n;
                self.release_gathered_if_read();
            }
        }
        self.unread -= copied;
        self.release_if_empty();
        copied
    }

    /// Drops all data; returns how many unread bytes were dropped.
    pub(crate) fn discard(&mut self) -> usize {
        let unread = self.unread;
        *self = Self::default();
        unread
    }

    fn release_gathered_if_read(&mut self) {
        if self.gather_read == self.gather.len() {
            self.held -= self.gather.len();
            self.gather.clear();
            self.gather_read = 0;
        }
    }

    /// A stream with nothing to read keeps no memory for it.
    fn release_if_empty(&mut self) {
        if self.unread == 0 {
            debug_assert!(self.chunks.is_empty() && self.held == 0);
            self.gather = Vec::new();
        }
    }
}

/// Appends `data` to a gathering buffer that never grows past `limit`: its room doubles (few
/// reallocations) but is never more than needed once it would pass the limit, so that it holds
/// at most twice its bytes, and exactly `limit` bytes when full.
pub(crate) fn extend_gathering(buffer: &mut Vec<u8>, data: &[u8], limit: usize) {
    let needed = buffer.len() + data.len();
    debug_assert!(needed <= limit);
    if needed > buffer.capacity() {
        let target = (2 * buffer.capacity()).max(needed).min(limit);
        buffer.reserve_exact(target - buffer.len());
    }
    buffer.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(buffer: &mut RecvBuffer, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = buffer.take_into(&mut buf, drop);
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Bytes the kept buffers take, capacity included (the gathering buffer's spare room too).
    fn allocated(buffer: &RecvBuffer) -> usize {
        buffer.chunks.iter().map(Bytes::len).sum::<usize>() + buffer.gather.capacity()
    }

    #[test]
    fn one_byte_frames_are_gathered_into_full_buffers() {
        let mut buffer = RecvBuffer::default();
        for i in 0..100_000u32 {
            buffer.push(Bytes::from(vec![i as u8]), true);
        }
        assert_eq!(buffer.unread(), 100_000);
        assert_eq!(buffer.held(), 100_000);
        // The first frame stays as it came; the rest fill 8 KiB buffers.
        assert_eq!(buffer.frames(), 1 + 99_999usize.div_ceil(GATHER_CAPACITY));
        assert!(allocated(&buffer) <= 100_000 + GATHER_CAPACITY);
        let data = read_all(&mut buffer, 1000);
        assert!(data.iter().enumerate().all(|(i, &b)| b == i as u8));
        assert_eq!(
            (buffer.unread(), buffer.held(), allocated(&buffer)),
            (0, 0, 0)
        );
    }

    #[test]
    fn order_is_kept_across_gathered_and_whole_frames() {
        let mut buffer = RecvBuffer::default();
        let mut expected = Vec::new();
        let mut next = 0u8;
        for len in [1, 5, 20_000, 3, 8191, 2, 16_384, 16_383, 1, 7, 100_000, 4] {
            let frame: Vec<u8> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            expected.extend_from_slice(&frame);
            buffer.push(Bytes::from(frame), true);
        }
        assert_eq!(read_all(&mut buffer, 777), expected);
    }

    #[test]
    fn held_counts_the_read_part_of_a_buffer_until_it_is_released() {
        let mut buffer = RecvBuffer::default();
        buffer.push(Bytes::from(vec![1u8; 65_537]), true);
        let mut buf = vec![0u8; 65_536];
        assert_eq!(buffer.take_into(&mut buf, drop), 65_536);
        // One byte unread, but the whole frame is still held.
        assert_eq!((buffer.unread(), buffer.held()), (1, 65_537));
        let mut released = Vec::new();
        assert_eq!(buffer.take_into(&mut buf, |b| released.push(b.len())), 1);
        assert_eq!((buffer.unread(), buffer.held()), (0, 0));
        assert_eq!(released, [65_537]);
    }

    #[test]
    fn a_gathering_buffer_cut_short_keeps_only_its_unread_bytes() {
        let mut buffer = RecvBuffer::default();
        buffer.push(Bytes::from(vec![1u8; 10]), true);
        for _ in 0..100 {
            buffer.push(Bytes::from(vec![2u8; 1]), true);
        }
        // Read the first frame and half of what was gathered behind it.
        let mut buf = vec![0u8; 60];
        assert_eq!(buffer.take_into(&mut buf, drop), 60);
        assert_eq!(buffer.held(), 100);
        // A large frame cuts the gathering short: its 50 unread bytes are kept, exactly.
        buffer.push(Bytes::from(vec![3u8; 20_000]), true);
        assert_eq!(buffer.held(), 50 + 20_000);
        assert_eq!(buffer.frames(), 2);
        let data = read_all(&mut buffer, 4096);
        assert_eq!(data, [vec![2u8; 50], vec![3u8; 20_000]].concat());
    }

    #[test]
    fn plain_mode_keeps_every_frame_as_it_came() {
        let mut buffer = RecvBuffer::default();
        for _ in 0..10 {
            buffer.push(Bytes::from_static(b"x"), false);
        }
        assert_eq!(buffer.frames(), 10);
        assert_eq!(buffer.take(100).as_deref(), Some(&b"x"[..]));
        assert_eq!(buffer.frames(), 9);
    }

    #[test]
    fn take_slices_kept_buffers_and_copies_gathered_bytes() {
        let mut buffer = RecvBuffer::default();
        buffer.push(Bytes::from_static(b"hello"), true);
        buffer.push(Bytes::from_static(b" world"), true);
        assert_eq!(buffer.take(3).as_deref(), Some(&b"hel"[..]));
        assert_eq!(buffer.take(100).as_deref(), Some(&b"lo"[..]));
        assert_eq!(buffer.take(100).as_deref(), Some(&b" world"[..]));
        assert_eq!(buffer.take(100), None);
        assert_eq!(buffer.discard(), 0);
    }
}
