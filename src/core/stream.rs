//! One stream: the state of each direction and its receive buffer.

use std::collections::VecDeque;

use bytes::Bytes;

use super::flow::{INITIAL_WINDOW, RecvWindow};

/// Our sending direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendState {
    /// We may write.
    Open,
    /// We sent Close (FIN) after `close_write` or a drop.
    Closed,
    /// The peer sent CloseRead; we answered with Close. Writes fail with the peer's code.
    Stopped { code: u64 },
    /// The stream was reset; writes fail with `ConnectionReset`.
    Reset { code: u64, by_peer: bool },
}

/// Our receiving direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvState {
    /// The peer may still send.
    Open,
    /// The peer sent Close; buffered data is still readable, then EOF. A Reset from the peer
    /// after its Close leaves this direction as it is: its data is complete.
    Finished,
    /// We called `close_read`: buffered data was dropped, arriving data is discarded, reads give EOF.
    Stopped,
    /// The stream was reset; buffered data was dropped and reads fail with `ConnectionReset`.
    Reset { code: u64, by_peer: bool },
}

/// Everything the core keeps for one stream.
#[derive(Debug)]
pub(crate) struct StreamEntry {
    pub(crate) send: SendState,
    pub(crate) recv: RecvState,
    /// Received, unread data, in order.
    pub(crate) recv_buf: VecDeque<Bytes>,
    /// Total bytes in `recv_buf`.
    pub(crate) buffered: usize,
    /// Extension mode: the credit we granted the peer.
    pub(crate) recv_window: RecvWindow,
    /// Extension mode: the credit the peer granted us.
    pub(crate) send_credit: u64,
    /// Sequence number of the last frame queued for this stream (for flush).
    pub(crate) last_frame_seq: u64,
}

impl StreamEntry {
    pub(crate) fn new() -> Self {
        Self {
            send: SendState::Open,
            recv: RecvState::Open,
            recv_buf: VecDeque::new(),
            buffered: 0,
            recv_window: RecvWindow::new(),
            send_credit: INITIAL_WINDOW,
            last_frame_seq: 0,
        }
    }

    /// Drops all unread data; returns how many bytes were freed.
    pub(crate) fn discard_buffer(&mut self) -> usize {
        self.recv_buf.clear();
        std::mem::take(&mut self.buffered)
    }

    /// Takes up to `max` bytes from the front of the receive buffer, without copying.
    pub(crate) fn take(&mut self, max: usize) -> Option<Bytes> {
        let front = self.recv_buf.front_mut()?;
        let chunk = if front.len() <= max {
            self.recv_buf.pop_front()?
        } else {
            front.split_to(max)
        };
        self.buffered -= chunk.len();
        Some(chunk)
    }

    pub(crate) fn push(&mut self, data: Bytes) {
        self.buffered += data.len();
        self.recv_buf.push_back(data);
    }
}
