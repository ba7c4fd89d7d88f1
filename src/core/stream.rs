//! One stream: the state of each direction and its receive buffer.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::error::StreamError;

use super::{
    flow::{INITIAL_WINDOW, RecvWindow},
    recv_buffer::{RecvBuffer, extend_gathering},
};

/// Our sending direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendState {
    /// We may write.
    Open,
    /// We sent Close (FIN) after `close_write` or a drop.
    Closed,
    /// The peer sent CloseRead; we answered with Close. Writes fail with the peer's code.
    Stopped { code: u64 },
    /// The stream was reset; writes fail with `ConnectionReset`. `close_flushed`: our Close
    /// had been flushed before the reset, so the close-write that sent it succeeded, whenever
    /// its task looks again.
    Reset {
        code: u64,
        by_peer: bool,
        close_flushed: bool,
    },
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

impl SendState {
    /// Why a write fails in this state; `None` while the direction is open.
    pub(crate) fn write_error(self) -> Option<StreamError> {
        match self {
            SendState::Open => None,
            SendState::Closed => Some(StreamError::WriteClosed),
            SendState::Stopped { code } => Some(StreamError::Stopped { code }),
            SendState::Reset { code, by_peer, .. } => Some(StreamError::Reset { code, by_peer }),
        }
    }

    /// The stream's reset, if it was reset.
    pub(crate) fn reset_error(self) -> Option<StreamError> {
        match self {
            SendState::Reset { code, by_peer, .. } => Some(StreamError::Reset { code, by_peer }),
            _ => None,
        }
    }
}

impl RecvState {
    /// The stream's reset, if it was reset (and the peer had not finished first).
    pub(crate) fn reset_error(self) -> Option<StreamError> {
        match self {
            RecvState::Reset { code, by_peer } => Some(StreamError::Reset { code, by_peer }),
            _ => None,
        }
    }
}

/// Everything the core keeps for one stream.
#[derive(Debug)]
pub(crate) struct StreamEntry {
    pub(crate) send: SendState,
    pub(crate) recv: RecvState,
    /// Received data not yet read.
    pub(crate) received: RecvBuffer,
    /// Extension mode: the credit we granted the peer.
    pub(crate) recv_window: RecvWindow,
    /// Extension mode: the credit the peer granted us.
    pub(crate) send_credit: u64,
    /// Data and Close waiting for their turn to be sent.
    pub(crate) send_queue: SendQueue,
    /// Whether the stream is in the connection's round-robin of streams with frames to send.
    pub(crate) scheduled: bool,
    /// Sequence number of the last control frame (NewStream, CloseRead, ...) queued for it.
    pub(crate) last_control_seq: u64,
    /// Sequence number of the last frame of this stream handed to the socket, and of the last
    /// of its control frames (flush tracking: see the `core::outbox` module docs).
    pub(crate) last_transmit_seq: u64,
    pub(crate) last_control_transmit_seq: u64,
    /// The peer sent Close (whatever our receive direction was by then): it writes no more.
    pub(crate) peer_closed: bool,
    /// The peer sent CloseRead (whatever our send direction was by then): it reads no more.
    pub(crate) peer_stopped: bool,
    /// Whether the peer knows of the stream: always for inbound streams; for a stream we open,
    /// once its NewStream is queued (with the stream's first frame, see `Connection::announce`).
    pub(crate) announced: bool,
    /// The application dropped its handle; the stream stays (and keeps its slot under the
    /// stream limit) only until its last frames are handed to the socket.
    pub(crate) dropped: bool,
    /// Extension mode: the receive window counts against the connection's budget (until
    /// receiving is over and drained: see `Connection::settle_window`).
    pub(crate) window_counted: bool,
}

impl StreamEntry {
    pub(crate) fn new(announced: bool) -> Self {
        Self {
            send: SendState::Open,
            recv: RecvState::Open,
            received: RecvBuffer::default(),
            recv_window: RecvWindow::new(),
            send_credit: INITIAL_WINDOW,
            send_queue: SendQueue::default(),
            scheduled: false,
            last_control_seq: 0,
            last_transmit_seq: 0,
            last_control_transmit_seq: 0,
            peer_closed: false,
            peer_stopped: false,
            announced,
            dropped: false,
            window_counted: true,
        }
    }
}

/// Writes smaller than this are copied behind the stream's other small writes that wait, and
/// leave with them as one frame: a writer of 1-byte writes costs a byte per write, not a buffer
/// and a queue slot each (a peer that does not read must not turn the send buffer's bytes into
/// thirty times as much memory).
pub(crate) const SEND_GATHER_BELOW: usize = 8 * 1024;

/// What a stream has written and not yet handed to the socket, in order, and the frame that
/// ends it (a Close, or the Reset of a stream dropped with both directions open). The connection
/// takes one frame at a time from each stream in turn.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    chunks: VecDeque<Bytes>,
    /// Small writes gathered behind `chunks` (at most [`SEND_GATHER_BELOW`] bytes), cut into
    /// frames as they leave.
    gather: Vec<u8>,
    /// Bytes in `chunks` and `gather`.
    bytes: usize,
    end: Option<QueueEnd>,
}

/// The frame that follows a [`SendQueue`]'s data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueEnd {
    Close,
    Reset,
    /// A Reset queued behind a Close that still waits (plain mplex, a stream dropped after
    /// `close_write` with its read direction open): the peer keeps the data, then stops.
    CloseThenReset,
}

/// The next frame a [`SendQueue`] yields.
pub(crate) enum Queued {
    Data(Bytes),
    End(QueueEnd),
}

impl SendQueue {
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.gather.is_empty() && self.end.is_none()
    }

    /// How many buffers hold the queued data.
    #[cfg(test)]
    pub(crate) fn buffers(&self) -> usize {
        self.chunks.len() + usize::from(!self.gather.is_empty())
    }

    /// Queues a write as the buffer it is in.
    pub(crate) fn push(&mut self, data: Bytes) {
        self.seal_gathered();
        self.bytes += data.len();
        self.chunks.push_back(data);
    }

    /// Queues a small write by copying it behind the small writes that wait. However small the
    /// frames are (`set_split_send_size`), what waits is gathered in buffers of 8 KiB: the cut
    /// into frames happens as they leave (see [`SendQueue::pop`]).
    pub(crate) fn push_small(&mut self, mut data: &[u8]) {
        let limit = SEND_GATHER_BELOW;
        self.bytes += data.len();
        while !data.is_empty() {
            if self.gather.len() >= limit {
                self.seal_gathered();
            }
            let n = (limit - self.gather.len()).min(data.len());
            extend_gathering(&mut self.gather, &data[..n], limit);
            data = &data[n..];
        }
    }

    /// Moves the gathered writes into the queue as a buffer of exactly their size.
    fn seal_gathered(&mut self) {
        if self.gather.is_empty() {
            return;
        }
        let mut gathered = std::mem::take(&mut self.gather);
        gathered.shrink_to_fit();
        self.chunks.push_back(Bytes::from(gathered));
    }

    /// `end` follows the data already queued (a Reset follows a Close that still waits).
    pub(crate) fn push_end(&mut self, end: QueueEnd) {
        self.end = match (self.end, end) {
            (Some(QueueEnd::Close), QueueEnd::Reset) => Some(QueueEnd::CloseThenReset),
            _ => Some(end),
        };
    }

    /// The next frame: data (at most `frame_limit` bytes of it), then a Close or a Reset
    /// (never `CloseThenReset`, which yields its Close and leaves its Reset).
    pub(crate) fn pop(&mut self, frame_limit: usize) -> Option<Queued> {
        let frame_limit = frame_limit.max(1);
        if let Some(front) = self.chunks.front_mut() {
            // A write is at most one frame; a gathered buffer may hold more.
            let data = if front.len() <= frame_limit {
                self.chunks.pop_front()?
            } else {
                front.split_to(frame_limit)
            };
            self.bytes -= data.len();
            return Some(Queued::Data(data));
        }
        if !self.gather.is_empty() {
            let data = if self.gather.len() <= frame_limit {
                Bytes::from(std::mem::take(&mut self.gather))
            } else {
                let data = Bytes::copy_from_slice(&self.gather[..frame_limit]);
                self.gather.drain(..frame_limit);
                data
            };
            self.bytes -= data.len();
            return Some(Queued::Data(data));
        }
        match self.end.take()? {
            QueueEnd::CloseThenReset => {
                self.end = Some(QueueEnd::Reset);
                Some(Queued::End(QueueEnd::Close))
            }
            end => Some(Queued::End(end)),
        }
    }

    /// Drops the queued data (the peer will not read it); returns how many bytes were dropped.
    /// A queued Close stays.
    pub(crate) fn discard_data(&mut self) -> usize {
        self.chunks.clear();
        self.gather = Vec::new();
        std::mem::take(&mut self.bytes)
    }

    /// Drops everything queued, the final frame too (the stream was reset); returns how many
    /// bytes of data were dropped.
    pub(crate) fn discard_all(&mut self) -> usize {
        self.end = None;
        self.discard_data()
    }
}
