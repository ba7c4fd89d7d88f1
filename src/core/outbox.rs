//! What the connection sends, and in which order.
//!
//! Control frames (NewStream, Reset, CloseRead, WindowUpdate, and the last frames of dropped
//! streams) go first, in the order they were queued. Then the streams with data take turns, one
//! frame each (round-robin), so that a stream writing flat out cannot starve the others. A
//! stream's Close waits in its own queue behind its data.
//!
//! # Flush tracking
//!
//! A stream's flush, close-write and close-read resolve when *that stream's* frames have been
//! flushed to the socket, even while other streams keep the socket busy. One mechanism, in four
//! places, does it:
//!
//! 1. **Numbering** (here): every frame [`Connection::poll_transmit`] hands out gets the next
//!    sequence number, `transmitted_seq`. The stream it belongs to remembers the number of its
//!    last frame (`StreamEntry::last_transmit_seq`, and `last_control_transmit_seq` for its
//!    control frames, which a close-read waits for alone; see `core/stream.rs`).
//! 2. **Marks** (`muxer/writer.rs`): after each batch of frames it encodes, the async layer's
//!    writer records a mark: "the first [`Connection::transmitted`] frames end at byte N of the
//!    outgoing byte stream".
//! 3. **Flush** (`muxer/writer.rs`): when a socket flush completes, every mark whose bytes were
//!    all written before it is covered; the writer reports the frame count of the last one.
//! 4. **Report** (`muxer/socket.rs`, at the start of the next write round, under the `Shared`
//!    lock): [`Connection::on_flushed`] with that count raises `flushed_seq`, and the tasks
//!    waiting in a flush are woken; each asks [`Connection::poll_flushed`], which compares its
//!    stream's last sequence number with `flushed_seq`.
//!
//! So a stream whose frames all left in an early batch is done after the first flush that
//! follows, whatever is queued behind it.

use super::{
    Connection, Event, FlushWait,
    stream::{QueueEnd, Queued, SEND_GATHER_BELOW, SendState, StreamEntry},
};
use crate::{
    error::StreamError,
    frame::{Frame, Mode, StreamId},
};

impl Connection {
    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        if let Some(frame) = self.control.pop_front() {
            self.control_transmitted_seq += 1;
            self.transmitted_seq += 1;
            match &frame {
                Frame::Data { data, .. } => self.release_data(data.len()),
                _ => self.control_frames -= 1,
            }
            match frame.stream_id() {
                Some(id) => {
                    if let Some(entry) = self.streams.get_mut(&id) {
                        entry.last_transmit_seq = self.transmitted_seq;
                        entry.last_control_transmit_seq = self.transmitted_seq;
                        self.forget_if_drained(id);
                    }
                }
                None => {
                    if let Frame::Ping { nonce } = frame {
                        let now = self.clock();
                        self.round_trip.on_ping_sent(nonce, now());
                    }
                }
            }
            return Some(frame);
        }
        while let Some(id) = self.ready.pop_front() {
            let Some(entry) = self.streams.get_mut(&id) else {
                continue; // dropped: its frames moved to the control queue
            };
            entry.scheduled = false;
            let Some(next) = entry.send_queue.pop(self.config.split_send_size) else {
                continue; // reset or stopped since it was scheduled
            };
            if !entry.send_queue.is_empty() {
                entry.scheduled = true;
                self.ready.push_back(id);
            }
            self.transmitted_seq += 1;
            entry.last_transmit_seq = self.transmitted_seq;
            let frame = match next {
                Queued::Data(data) => {
                    self.release_data(data.len());
                    Frame::Data { id, data }
                }
                Queued::End(QueueEnd::Close) => Frame::Close { id },
                // Only a dropped stream queues its Reset (see `drop_stream`).
                Queued::End(QueueEnd::Reset | QueueEnd::CloseThenReset) => {
                    Frame::Reset { id, code: 0 }
                }
            };
            self.forget_if_drained(id);
            return Some(frame);
        }
        None
    }

    /// Bytes of stream data waiting to be sent.
    pub fn queued_bytes(&self) -> usize {
        self.outbox_data
    }

    /// Whether frames may wait in [`Connection::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.control.is_empty() || !self.ready.is_empty()
    }

    /// How many frames [`Connection::poll_transmit`] has handed out so far. The async layer
    /// notes this count after encoding frames, and passes it to [`Connection::on_flushed`] once
    /// their bytes are flushed.
    pub fn transmitted(&self) -> u64 {
        self.transmitted_seq
    }

    /// The first `count` frames handed out by `poll_transmit` are written and flushed: a stream
    /// whose frames are all among them is flushed.
    pub fn on_flushed(&mut self, count: u64) {
        self.flushed_seq = self.flushed_seq.max(count.min(self.transmitted_seq));
    }

    /// Whether everything queued on the stream so far has been flushed to the socket.
    pub fn is_flushed(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_none_or(|entry| {
            entry.send_queue.is_empty()
                && entry.last_control_seq <= self.control_transmitted_seq
                && entry.last_transmit_seq <= self.flushed_seq
        })
    }

    /// Whether the stream's control frames (its NewStream, CloseRead, ...) have been flushed.
    fn is_control_flushed(&self, entry: &StreamEntry) -> bool {
        entry.last_control_seq <= self.control_transmitted_seq
            && entry.last_control_transmit_seq <= self.flushed_seq
    }

    /// How a call waiting for the socket ends, if it does now: `None` while it still waits.
    /// Every event that can change the answer wakes the waiting task (the async layer wakes a
    /// stream's flush waiter on its [`Event::Readable`] and [`Event::Writable`], on every
    /// flush, and on [`Event::ConnectionClosed`]):
    ///
    /// | waiting in | ends with `Ok` when | ends with an error when |
    /// |---|---|---|
    /// | [`FlushWait::Flush`] | everything written is flushed; after our close-write, also once the peer stopped reading | the stream is reset (`Reset`) or, before our close-write, the peer stopped reading (`Stopped`): unsent data is dropped; the connection ends first |
    /// | [`FlushWait::CloseWrite`] | the Close is flushed, or the peer stopped reading (the direction is finished either way) | the stream is reset; the connection ends first |
    /// | [`FlushWait::CloseRead`] | the CloseRead is flushed, the peer closed its write side (nothing more comes), or the mode is plain mplex (nothing is sent) | the stream is reset; the connection ends first |
    ///
    /// A peer's Close leaves a waiting flush or close-write as it is (it concerns the other
    /// direction), and a peer's CloseRead a waiting close-read.
    pub fn poll_flushed(&self, id: StreamId, wait: FlushWait) -> Option<Result<(), StreamError>> {
        let Some(entry) = self.streams.get(&id) else {
            return Some(Err(self.stale_stream_error()));
        };
        let flushed = match wait {
            FlushWait::Flush => match entry.send {
                // After our close, nothing the peer will read is left once it stopped reading.
                SendState::Closed if entry.peer_stopped => true,
                SendState::Open | SendState::Closed => self.is_flushed(id),
                stopped_or_reset => return stopped_or_reset.write_error().map(Err),
            },
            FlushWait::CloseWrite => match entry.send {
                SendState::Reset {
                    close_flushed: true,
                    ..
                } => true,
                SendState::Reset { .. } => return entry.send.reset_error().map(Err),
                SendState::Stopped { .. } => true,
                SendState::Closed if entry.peer_stopped => true,
                SendState::Open | SendState::Closed => self.is_flushed(id),
            },
            FlushWait::CloseRead => match entry.recv.reset_error() {
                Some(reset) => return Some(Err(reset)),
                None => {
                    self.mode == Mode::PlainMplex
                        || entry.peer_closed
                        || self.is_control_flushed(entry)
                }
            },
        };
        if flushed {
            return Some(Ok(()));
        }
        self.closed
            .as_ref()
            .map(|e| Err(StreamError::Connection(e.clone())))
    }

    /// Queues a frame ahead of all stream data.
    pub(super) fn queue_control(&mut self, frame: Frame) {
        match &frame {
            Frame::Data { data, .. } => self.outbox_data += data.len(),
            _ => self.control_frames += 1,
        }
        self.control_queued_seq += 1;
        if let Some(entry) = frame.stream_id().and_then(|id| self.streams.get_mut(&id)) {
            entry.last_control_seq = self.control_queued_seq;
        }
        tracing::trace!(?frame, "queue control frame");
        self.control.push_back(frame);
    }

    /// Whether a stream may queue more data now: while the connection's send buffer has room,
    /// and always one frame, so that streams writing flat out cannot shut another one out (the
    /// buffer may overshoot by at most one frame per stream).
    pub(super) fn may_queue(&self, queued: usize) -> bool {
        queued == 0 || self.outbox_data < self.config.send_buffer_size
    }

    /// Queues data written on a stream behind its earlier data.
    /// Small writes are gathered (see [`SEND_GATHER_BELOW`]); larger ones are queued as the
    /// copy `copy` makes.
    pub(super) fn queue_data(
        &mut self,
        id: StreamId,
        data: &[u8],
        copy: impl FnOnce(&[u8]) -> bytes::Bytes,
    ) {
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        self.outbox_data += data.len();
        if data.len() < SEND_GATHER_BELOW {
            entry.send_queue.push_small(data);
        } else {
            entry.send_queue.push(copy(data));
        }
        self.schedule(id);
    }

    /// Queues the stream's Close (or a dropped stream's Reset) behind its data.
    pub(super) fn queue_end(&mut self, id: StreamId, end: QueueEnd) {
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        entry.send_queue.push_end(end);
        self.schedule(id);
    }

    /// Drops the stream's unsent data, after a stop (its Close stays), or everything it had to
    /// send, after a reset.
    pub(super) fn discard_unsent(&mut self, id: StreamId, reset: bool) {
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        let dropped = if reset {
            entry.send_queue.discard_all()
        } else {
            entry.send_queue.discard_data()
        };
        self.release_data(dropped);
        self.forget_if_drained(id);
    }

    /// Forgets a dropped stream once it has nothing left to hand to the socket: no queued
    /// data or final frame, no control frame waiting.
    pub(super) fn forget_if_drained(&mut self, id: StreamId) {
        let Some(entry) = self.streams.get(&id) else {
            return;
        };
        if entry.dropped
            && entry.send_queue.is_empty()
            && entry.last_control_seq <= self.control_transmitted_seq
        {
            let entry = self.streams.remove(&id).expect("looked up above");
            self.forget(id, &entry);
        }
    }

    fn schedule(&mut self, id: StreamId) {
        if let Some(entry) = self.streams.get_mut(&id)
            && !entry.scheduled
        {
            entry.scheduled = true;
            self.ready.push_back(id);
        }
    }

    /// `len` bytes of data left the send buffer: wake the writers that may queue again.
    pub(super) fn release_data(&mut self, len: usize) {
        self.outbox_data -= len;
        if self.blocked_writers.is_empty() {
            return;
        }
        let mut blocked = std::mem::take(&mut self.blocked_writers);
        let mut woken = Vec::new();
        blocked.retain(|id| {
            let ready = self
                .streams
                .get(id)
                .is_none_or(|e| self.may_queue(e.send_queue.bytes()));
            if ready {
                woken.push(*id);
            }
            !ready
        });
        self.blocked_writers = blocked;
        self.events.extend(woken.into_iter().map(Event::Writable));
    }
}
