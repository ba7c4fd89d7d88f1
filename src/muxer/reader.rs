//! [`FrameReader`]: frames from the socket, each in memory of exactly its own size.
//!
//! Bytes are read into one fixed buffer that is reused for the life of the connection. A frame
//! that arrives whole in it is copied out into a buffer of its own, of exactly its size, so that
//! unread data of one stream never keeps a larger block alive (the windows and buffer limits
//! count bytes, and a stream's buffer holds those bytes and no spare room: see
//! `core::recv_buffer`). The body of a large frame is read straight into its own buffer
//! instead: after such a frame the next read asks only for a head, so that large bodies skip
//! the fixed buffer. A body buffer grows as the body arrives, never on the peer's word alone
//! (at most 64 KiB, or as much again as arrived, ahead of it), and ends exactly the body's
//! size: a 65,537-byte body is held in 65,537 bytes, not in a doubled 128 KiB.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::AsyncRead;

use super::pool::BufferPool;
use crate::{
    codec::{Codec, FrameHead},
    error::{ConnectionError, ProtocolViolation},
    frame::Frame,
};

/// The fixed read buffer: room for a small frame whole, and for many small frames per read.
const READ_BUFFER: usize = 64 * 1024;
/// Bodies at least this long are read into their own buffer.
const DIRECT_BODY: usize = 16 * 1024;
/// A read that asks for the head of a frame after a large one (two varints fit in 20 bytes;
/// the rest starts the body).
const HEAD_READ: usize = 64;
/// The first size of a direct body buffer, and its least growth: it is never more than this, or
/// than what arrived, ahead of the body.
const BODY_STEP: usize = 64 * 1024;

/// A large frame whose body is being read into its own buffer.
#[derive(Debug)]
struct PendingBody {
    head: FrameHead,
    /// Initialised up to its length (bytes of an earlier use, or zeros); filled up to `filled`.
    /// Its capacity is its length: it ends exactly the body's size.
    body: Vec<u8>,
    filled: usize,
}

#[derive(Debug)]
pub(crate) struct FrameReader {
    codec: Codec,
    buf: Box<[u8]>,
    /// The unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    pending: Option<PendingBody>,
    /// The last frame was read directly: the next is likely large too.
    head_reads: bool,
    eof: bool,
}

impl FrameReader {
    pub(crate) fn new(codec: Codec) -> Self {
        Self {
            codec,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            pending: None,
            head_reads: false,
            eof: false,
        }
    }

    /// The next complete frame among the bytes read so far.
    /// Buffers for bodies come from `pool`.
    pub(crate) fn next_frame(
        &mut self,
        pool: &mut BufferPool,
    ) -> Result<Option<Frame>, ProtocolViolation> {
        if let Some(pending) = &self.pending {
            if pending.filled < pending.head.body_len {
                return Ok(None);
            }
            let PendingBody { head, body, .. } = self.pending.take().expect("checked above");
            self.head_reads = true;
            debug_assert_eq!(body.capacity(), head.body_len, "exactly the body's size");
            return self.codec.decode_body(head, Bytes::from(body)).map(Some);
        }
        let available = &self.buf[self.start..self.end];
        let Some(head) = self.codec.decode_head(available)? else {
            return Ok(None);
        };
        if available.len() >= head.frame_len() {
            let body = &available[head.head_len..head.frame_len()];
            let body = pool.copy_exact(body);
            self.start += head.frame_len();
            self.head_reads = false;
            return self.codec.decode_body(head, body).map(Some);
        }
        if head.body_len < DIRECT_BODY {
            // The rest of a small frame: read in full again.
            self.head_reads = false;
        } else {
            let arrived = &available[head.head_len..];
            let mut body = Vec::from(pool.filled(head.body_len.min(BODY_STEP)));
            body[..arrived.len()].copy_from_slice(arrived);
            self.pending = Some(PendingBody {
                head,
                filled: arrived.len(),
                body,
            });
            self.start = self.end;
        }
        Ok(None)
    }

    /// Reads once from the socket into the frame being assembled. `Ready(Ok(()))` when bytes
    /// arrived (or the socket ended: see [`FrameReader::finish`]).
    pub(crate) fn poll_fill<S: AsyncRead + Unpin>(
        &mut self,
        socket: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.eof {
            return Poll::Ready(Ok(()));
        }
        let target = match &mut self.pending {
            Some(pending) => {
                if pending.filled == pending.body.len() {
                    // Grow by as much as arrived (at least 64 KiB): few reallocations, and the
                    // last one ends at the body's size.
                    let step = pending.filled.max(BODY_STEP);
                    let step = (pending.head.body_len - pending.filled).min(step);
                    pending.body.reserve_exact(step);
                    pending.body.resize(pending.filled + step, 0);
                }
                &mut pending.body[pending.filled..]
            }
            None => {
                self.make_room();
                let limit = if self.head_reads {
                    (self.start + HEAD_READ).max(self.end + 1)
                } else {
                    READ_BUFFER
                };
                &mut self.buf[self.end..limit.min(READ_BUFFER)]
            }
        };
        debug_assert!(!target.is_empty(), "room for the frame being assembled");
        let n = match Pin::new(socket).poll_read(cx, target) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        self.eof = n == 0;
        match &mut self.pending {
            Some(pending) => pending.filled += n,
            None => self.end += n,
        }
        Poll::Ready(Ok(()))
    }

    /// Whether the socket ended. Once every complete frame is taken, the connection is over:
    /// [`FrameReader::finish`] says how.
    pub(crate) fn is_eof(&self) -> bool {
        self.eof
    }

    /// How the connection ended: cleanly at a frame boundary, or in the middle of a frame.
    pub(crate) fn finish(&self) -> ConnectionError {
        if self.pending.is_none() && self.start == self.end {
            ConnectionError::Closed
        } else {
            ProtocolViolation::TruncatedFrame.into()
        }
    }

    /// Moves the unconsumed bytes to the front when the free space at the end is too small for
    /// the rest of a small frame.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == READ_BUFFER || READ_BUFFER - self.start < DIRECT_BODY + 20 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}
