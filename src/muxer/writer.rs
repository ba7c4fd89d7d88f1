//! [`FrameWriter`]: frames on their way to the socket.
//!
//! Heads and small frames are gathered in one staging buffer; the body of a large Data frame is
//! queued as its own segment and handed to the socket as it is (vectored write), never copied.
//!
//! A socket without real vectored writes (noise's output, WebSocket, TLS: the default
//! `poll_write_vectored` writes the first buffer only) would take each large frame as two
//! writes, its few bytes of head and then its body: two system calls and, on TCP, a tiny
//! segment the peer wakes up for. Once the socket has shown that twice, the writer copies
//! bodies behind their heads too (as libp2p-mplex and yamux copy every frame), so that each
//! write carries whole frames.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use futures::AsyncWrite;

use crate::{codec::Codec, frame::Frame};

/// How many encoded bytes may wait for the socket before the driver stops taking frames.
const WRITE_BATCH: usize = 256 * 1024;
/// Data bodies up to this size are copied into the staging buffer with their head.
const COPY_LIMIT: usize = 8 * 1024;
/// The most slices handed to one vectored write.
const MAX_SLICES: usize = 64;
/// A drained staging buffer larger than this is let go rather than kept for the connection's
/// life.
const STAGING_KEEP: usize = 64 * 1024;
/// How many writes that took exactly their first buffer of several show a socket without
/// vectored writes.
const SCALAR_EVIDENCE: u8 = 2;

/// What one [`FrameWriter::poll_write_out`] achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteProgress {
    /// Bytes went to the socket or a flush completed.
    pub(crate) moved: bool,
    /// A flush completed that covers the first this-many frames the core handed out.
    pub(crate) flushed_frames: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct FrameWriter {
    codec: Codec,
    /// Encoded bytes ahead of `staging`, in order. The first `front_written` bytes of the
    /// first segment went to the socket already; a segment leaves whole, for reuse.
    segments: VecDeque<Bytes>,
    front_written: usize,
    staging: BytesMut,
    /// Bytes in `segments` and `staging`.
    queued: usize,
    /// Bytes encoded so far, and bytes the socket accepted so far.
    encoded_bytes: u64,
    written_bytes: u64,
    /// After each batch: how many frames the core had handed out, and where their bytes end in
    /// the outgoing byte stream (flush tracking: see the `core::outbox` module docs).
    marks: VecDeque<(u64, u64)>,
    needs_flush: bool,
    /// Bodies the socket has taken (or that were copied into `staging`), for the buffer pool.
    spent: Vec<Bytes>,
    /// Writes in a row that took exactly the first of several buffers; at
    /// [`SCALAR_EVIDENCE`], bodies are copied into `staging`.
    scalar_writes_seen: u8,
}

impl FrameWriter {
    pub(crate) fn new(codec: Codec) -> Self {
        Self {
            codec,
            segments: VecDeque::new(),
            front_written: 0,
            staging: BytesMut::new(),
            queued: 0,
            encoded_bytes: 0,
            written_bytes: 0,
            marks: VecDeque::new(),
            needs_flush: false,
            spent: Vec::new(),
            scalar_writes_seen: 0,
        }
    }

    /// Whether the socket showed it writes one buffer at a time, so bodies are copied behind
    /// their heads.
    pub(crate) fn copies_bodies(&self) -> bool {
        self.scalar_writes_seen >= SCALAR_EVIDENCE
    }

    /// The capacity the writer keeps for encoding, whatever is queued.
    #[cfg(test)]
    pub(crate) fn staging_capacity(&self) -> usize {
        self.staging.capacity()
    }

    /// Whether more frames may be encoded now.
    pub(crate) fn has_room(&self) -> bool {
        self.queued < WRITE_BATCH
    }

    /// Whether every encoded byte went to the socket.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Whether every encoded byte went to the socket and was flushed.
    pub(crate) fn is_idle(&self) -> bool {
        self.queued == 0 && !self.needs_flush
    }

    /// Encodes one frame behind those already queued.
    pub(crate) fn push(&mut self, frame: Frame) {
        let before = self.staging.len();
        let body = self
            .codec
            .encode_split(frame, &mut self.staging, COPY_LIMIT);
        let mut added = self.staging.len() - before;
        if let Some(body) = body {
            added += body.len();
            if self.copies_bodies() {
                self.staging.extend_from_slice(&body);
                self.spent.push(body);
            } else {
                self.segments.push_back(self.staging.split().freeze());
                self.segments.push_back(body);
            }
        }
        self.queued += added;
        self.encoded_bytes += added as u64;
    }

    /// The frames pushed so far are the first `frames` the core handed out.
    pub(crate) fn mark(&mut self, frames: u64) {
        self.marks.push_back((frames, self.encoded_bytes));
    }

    /// Writes what is queued to the socket, then flushes what was written (also when the socket
    /// took only part of it).
    pub(crate) fn poll_write_out<S: AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
        cx: &mut Context<'_>,
    ) -> io::Result<WriteProgress> {
        let mut progress = WriteProgress::default();
        while self.queued > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, segment) in self.segments.iter().take(MAX_SLICES - 1).enumerate() {
                let start = if i == 0 { self.front_written } else { 0 };
                slices[count] = IoSlice::new(&segment[start..]);
                count += 1;
            }
            if !self.staging.is_empty() {
                slices[count] = IoSlice::new(&self.staging);
                count += 1;
            }
            match Pin::new(&mut *socket).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    if count > 1 && !self.copies_bodies() {
                        self.scalar_writes_seen = if n == slices[0].len() {
                            self.scalar_writes_seen + 1
                        } else {
                            0
                        };
                    }
                    self.advance(n);
                    self.needs_flush = true;
                    progress.moved = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if self.needs_flush {
            match Pin::new(&mut *socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    progress.moved = true;
                    progress.flushed_frames = self.flushed_frames();
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// `n` bytes from the front went to the socket.
    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        self.written_bytes += n as u64;
        while n > 0 {
            match self.segments.front() {
                Some(front) if front.len() - self.front_written <= n => {
                    n -= front.len() - self.front_written;
                    self.front_written = 0;
                    let done = self.segments.pop_front().expect("front exists");
                    self.spent.push(done);
                }
                Some(_) => {
                    self.front_written += n;
                    n = 0;
                }
                None => {
                    self.staging.advance(n);
                    n = 0;
                    if self.staging.is_empty() && self.staging.capacity() > STAGING_KEEP {
                        self.staging = BytesMut::new();
                    }
                }
            }
        }
    }

    /// The segments the socket has taken since the last call.
    pub(crate) fn take_spent(&mut self) -> std::vec::Drain<'_, Bytes> {
        self.spent.drain(..)
    }

    /// Everything written so far is flushed: how many frames that covers, if it covers more.
    fn flushed_frames(&mut self) -> Option<u64> {
        let mut frames = None;
        while let Some(&(count, end)) = self.marks.front() {
            if end > self.written_bytes {
                break;
            }
            frames = Some(count);
            self.marks.pop_front();
        }
        frames
    }
}
