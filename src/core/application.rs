//! Calls from the application: opening, reading, writing, closing either direction, resetting
//! and dropping streams, and closing the connection.

use bytes::Bytes;

use super::{
    Connection, Event, INITIAL_WINDOW, ReadOutcome, WriteOutcome,
    stream::{QueueEnd, RecvState, SendState, StreamEntry},
};
use crate::{
    error::{ConnectionError, StreamError},
    frame::{Frame, MAX_STREAM_NUM, Mode, StreamId},
};

impl Connection {
    /// Opens an outbound stream. `Ok(None)` while the stream limit is reached; an
    /// [`Event::StreamSlotFree`] follows when a stream ends.
    ///
    /// # Errors
    ///
    /// The connection's error once it has ended;
    /// [`ConnectionError::StreamNumbersExhausted`] after 2^61 streams (numbers are never
    /// reused).
    pub fn open_stream(&mut self) -> Result<Option<StreamId>, ConnectionError> {
        self.check_open()?;
        if self.streams.len() >= self.config.max_num_streams {
            return Ok(None);
        }
        // A header holds 61 bits of stream number; numbers are never reused.
        if self.next_local_num > MAX_STREAM_NUM {
            return Err(ConnectionError::StreamNumbersExhausted);
        }
        let id = StreamId::local(self.next_local_num);
        self.next_local_num += 1;
        // Announced with its first frame (see `announce`).
        self.insert_stream(id, false);
        Ok(Some(id))
    }

    /// Queues the NewStream of a stream we opened, if the peer does not know of it yet.
    ///
    /// [`Connection::open_stream`] sends nothing: a stream is announced with its first frame (a
    /// write, a close of either direction, or a read that has to wait), as yamux does, or by this
    /// call (the async layer makes it on a flush). A request then reaches the peer as one piece
    /// (NewStream, Data, Close), which saves the peer a wake-up. A stream reset or dropped before
    /// it is announced is never sent at all.
    pub fn announce(&mut self, id: StreamId) {
        if let Some(entry) = self.streams.get_mut(&id)
            && !entry.announced
        {
            entry.announced = true;
            let name = Bytes::from(id.num().to_string());
            self.queue_control(Frame::NewStream { id, name });
        }
    }

    /// The next inbound stream, if one waits.
    pub fn accept(&mut self) -> Option<StreamId> {
        self.inbound.pop_front()
    }

    /// Reads up to `max` bytes from a stream, as one piece of a received frame.
    ///
    /// # Errors
    ///
    /// [`StreamError::Reset`] once the stream was reset; [`StreamError::Connection`] once the
    /// connection has ended (or for an id it no longer serves). After the peer's Close, or our
    /// close-read, the outcome is [`ReadOutcome::Eof`] instead.
    pub fn read(&mut self, id: StreamId, max: usize) -> Result<ReadOutcome, StreamError> {
        let max = max.max(1);
        self.read_with(id, |entry| {
            entry.received.take(max).map(|chunk| {
                let len = chunk.len();
                (chunk, len)
            })
        })
    }

    /// Copies as much received data as fits into `buf` (across frames), and hands every received
    /// buffer it empties to `spent`, whole, for reuse.
    ///
    /// # Errors
    ///
    /// As [`Connection::read`].
    pub fn read_into(
        &mut self,
        id: StreamId,
        buf: &mut [u8],
        spent: impl FnMut(Bytes),
    ) -> Result<ReadOutcome<usize>, StreamError> {
        if buf.is_empty() {
            return Ok(ReadOutcome::Data(0));
        }
        self.read_with(id, |entry| {
            let len = entry.received.take_into(buf, spent);
            (len > 0).then_some((len, len))
        })
    }

    /// A read: `take` takes data from the stream's buffer and says how many bytes it took; the
    /// rest (state, flow control, pausing) is the same for every way of reading.
    fn read_with<T>(
        &mut self,
        id: StreamId,
        take: impl FnOnce(&mut StreamEntry) -> Option<(T, usize)>,
    ) -> Result<ReadOutcome<T>, StreamError> {
        let mode = self.mode;
        let connection_open = self.closed.is_none();
        let now = self.clock();
        // Growth may use what the budget leaves once every stream that may still open has its
        // initial window: windows never sum to more than `max(budget, limit × 256 KiB)`,
        // whichever streams grew first (as yamux reserves its streams' initial credit).
        let reserved = (self
            .config
            .max_num_streams
            .saturating_sub(self.streams.len()) as u64)
            .saturating_mul(INITIAL_WINDOW);
        let growth_budget = self
            .config
            .max_connection_buffer
            .saturating_sub(self.window_total)
            .saturating_sub(reserved);
        let Some(entry) = self.streams.get_mut(&id) else {
            return Err(self.stale_stream_error());
        };
        let recv = entry.recv;
        if let Some(reset) = recv.reset_error() {
            return Err(reset);
        }
        if recv == RecvState::Stopped {
            return Ok(ReadOutcome::Eof);
        }
        // Data that arrived before the connection ended is still delivered.
        let held_before = entry.received.held();
        let frames_before = entry.received.frames();
        let Some((data, len)) = take(entry) else {
            return match recv {
                RecvState::Open if connection_open => {
                    // The peer must know of the stream to send what this read waits for.
                    self.announce(id);
                    Ok(ReadOutcome::Blocked)
                }
                RecvState::Open => Err(self.stale_stream_error()),
                _ => Ok(ReadOutcome::Eof),
            };
        };
        // Credit goes back for the memory released, not for the bytes read: the read part of
        // a buffer stays held until all of it is read (see `recv_buffer`).
        let released = (held_before - entry.received.held()) as u64;
        let frames_released = (frames_before - entry.received.frames()) as u64;
        let grant = if mode == Mode::Extension && recv == RecvState::Open && connection_open {
            entry.recv_window.on_consumed(
                released,
                self.config.max_stream_window,
                growth_budget,
                self.round_trip.get(),
                now,
            )
        } else {
            None
        };
        self.buffered_total -= len as u64;
        self.buffered_frames -= frames_released;
        if let Some(grant) = grant {
            if grant.growth > 0 {
                let window = self.streams.get(&id).map(|e| e.recv_window.size());
                tracing::debug!(stream = %id, growth = grant.growth, window, "receive window grows");
            }
            self.window_total += grant.growth;
            self.queue_control(Frame::WindowUpdate {
                id,
                credit: grant.credit,
            });
            // The windows need the round trip: a Ping goes with a grant when one is due.
            if let Some(nonce) = self.round_trip.ping_due(grant.at) {
                self.queue_control(Frame::Ping { nonce });
            }
        }
        self.settle_window(id);
        self.resume_reading_if_drained();
        Ok(ReadOutcome::Data(data))
    }

    /// Queues up to `buf.len()` bytes on a stream (at most one frame's worth).
    ///
    /// # Errors
    ///
    /// [`StreamError::WriteClosed`] after our close-write; [`StreamError::Stopped`] once the
    /// peer stopped reading; [`StreamError::Reset`] once the stream was reset;
    /// [`StreamError::Connection`] once the connection has ended.
    pub fn write(&mut self, id: StreamId, buf: &[u8]) -> Result<WriteOutcome, StreamError> {
        self.write_with(id, buf, Bytes::copy_from_slice)
    }

    /// [`Connection::write`], with `copy` making the owned copy of the bytes taken (so that the
    /// caller can supply the buffer). Writes under 8 KiB are copied behind the stream's other
    /// small writes instead, and leave with them as one frame.
    ///
    /// # Errors
    ///
    /// As [`Connection::write`].
    pub fn write_with(
        &mut self,
        id: StreamId,
        buf: &[u8],
        copy: impl FnOnce(&[u8]) -> Bytes,
    ) -> Result<WriteOutcome, StreamError> {
        let mode = self.mode;
        let split = self.config.split_send_size;
        let entry = self.live_entry(id)?;
        if let Some(error) = entry.send.write_error() {
            return Err(error);
        }
        if buf.is_empty() {
            return Ok(WriteOutcome::Written(0));
        }
        let credit = match mode {
            Mode::Extension => usize::try_from(entry.send_credit).unwrap_or(usize::MAX),
            Mode::PlainMplex => usize::MAX,
        };
        if credit == 0 {
            // A WindowUpdate wakes the writer (see `on_window_update`).
            return Ok(WriteOutcome::Blocked);
        }
        let len = buf.len().min(split).min(credit);
        let queued = entry.send_queue.bytes();
        if !self.may_queue(queued) {
            if !self.blocked_writers.contains(&id) {
                self.blocked_writers.push(id);
            }
            return Ok(WriteOutcome::Blocked);
        }
        if let Some(entry) = self.streams.get_mut(&id)
            && mode == Mode::Extension
        {
            entry.send_credit -= len as u64;
        }
        self.announce(id);
        self.queue_data(id, &buf[..len], copy);
        Ok(WriteOutcome::Written(len))
    }

    /// Closes our write direction (FIN). Idempotent; fine after the peer stopped reading.
    ///
    /// A repeated call changes nothing and succeeds, also once the connection has ended: the
    /// async layer repeats it on every poll of a close, and whether the Close made it out is
    /// for [`Connection::poll_flushed`] to say (a Close flushed before the connection ended
    /// succeeded).
    ///
    /// # Errors
    ///
    /// [`StreamError::Reset`] on a reset stream; [`StreamError::Connection`] once the connection
    /// has ended, for a stream not yet closed for writing.
    pub fn close_write(&mut self, id: StreamId) -> Result<(), StreamError> {
        // Repeated: also once the connection ended, or the peer reset the stream after our
        // Close was flushed (the close did its work; `poll_flushed` says the same).
        if self.streams.get(&id).is_some_and(|entry| {
            matches!(
                entry.send,
                SendState::Closed
                    | SendState::Reset {
                        close_flushed: true,
                        ..
                    }
            )
        }) {
            return Ok(());
        }
        let entry = self.live_entry(id)?;
        match entry.send {
            SendState::Open => {
                tracing::trace!(stream = %id, "closed for writing");
                entry.send = SendState::Closed;
                self.announce(id);
                self.queue_end(id, QueueEnd::Close);
                Ok(())
            }
            state => state.reset_error().map_or(Ok(()), Err),
        }
    }

    /// Closes our read direction (stop-sending). Unread data is dropped and later reads give EOF.
    /// In extension mode the peer is told with CloseRead (carrying `code`); in plain-mplex mode
    /// nothing can be sent and the data that still arrives is discarded. Idempotent: a repeated
    /// call succeeds, also once the connection has ended (as for [`Connection::close_write`]).
    ///
    /// # Errors
    ///
    /// [`StreamError::Reset`] on a reset stream; [`StreamError::Connection`] once the connection
    /// has ended, for a stream not yet closed for reading.
    pub fn close_read(&mut self, id: StreamId, code: u64) -> Result<(), StreamError> {
        if self
            .streams
            .get(&id)
            .is_some_and(|entry| entry.recv == RecvState::Stopped)
        {
            return Ok(());
        }
        let mode = self.mode;
        let entry = self.live_entry(id)?;
        let recv = entry.recv;
        if let Some(reset) = recv.reset_error() {
            return Err(reset);
        }
        if recv == RecvState::Stopped {
            return Ok(());
        }
        tracing::trace!(stream = %id, code, "closed for reading");
        entry.recv = RecvState::Stopped;
        self.discard_received(id);
        if mode == Mode::Extension && recv == RecvState::Open {
            self.announce(id);
            self.queue_control(Frame::CloseRead { id, code });
        }
        self.resume_reading_if_drained();
        Ok(())
    }

    /// Resets the stream in both directions with `code`. In plain-mplex mode the code is 0 on
    /// both sides, since the wire has no room for it. A no-op on a stream already reset.
    ///
    /// # Errors
    ///
    /// [`StreamError::Connection`] once the connection has ended (nothing is left to reset).
    pub fn reset(&mut self, id: StreamId, code: u64) -> Result<(), StreamError> {
        self.live_entry(id)?;
        // Plain mplex has no room for a code: the peer sees 0, and so do we.
        let code = match self.mode {
            Mode::Extension => code,
            Mode::PlainMplex => 0,
        };
        tracing::debug!(stream = %id, code, "resetting the stream");
        self.reset_stream(id, code, false);
        Ok(())
    }

    /// The application no longer holds the stream: tell the peer what it needs to know (see the
    /// drop rules in the crate docs), behind what was written before the drop.
    ///
    /// The stream is forgotten once it has nothing left to hand to the socket. Until then it
    /// stays, and keeps its slot under the stream limit, so that a peer that does not read
    /// cannot make us hold the data of ever more dropped streams: opening waits instead.
    pub fn drop_stream(&mut self, id: StreamId) {
        let mode = self.mode;
        let connection_open = self.closed.is_none();
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        entry.dropped = true;
        let (send, recv, announced) = (entry.send, entry.recv, entry.announced);
        if matches!(recv, RecvState::Open | RecvState::Finished) {
            entry.recv = RecvState::Stopped;
        }
        // Nobody reads it any more.
        self.discard_received(id);
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        if !connection_open || !announced {
            // The peer never heard of it, or nothing will be sent any more.
            let dropped = entry.send_queue.discard_all();
            self.release_data(dropped);
            let entry = self.streams.remove(&id).expect("looked up above");
            self.forget(id, &entry);
            return;
        }
        let write_open = send == SendState::Open;
        let read_open = match (mode, recv) {
            (_, RecvState::Open) => true,
            // Plain mplex could not tell the peer we stopped reading, so it still sends.
            (Mode::PlainMplex, RecvState::Stopped) => true,
            _ => false,
        };
        match (send, write_open, read_open) {
            (SendState::Reset { .. }, ..) | (_, false, false) => {
                tracing::trace!(stream = %id, "dropped, both directions finished");
            }
            (_, true, true) => {
                tracing::debug!(stream = %id, "dropped with both directions open: reset");
                self.set_send(
                    id,
                    SendState::Reset {
                        code: 0,
                        by_peer: false,
                        close_flushed: false,
                    },
                );
                self.queue_end(id, QueueEnd::Reset);
            }
            (_, true, false) => {
                tracing::trace!(stream = %id, "dropped: closing for writing");
                self.set_send(id, SendState::Closed);
                self.queue_end(id, QueueEnd::Close);
            }
            (_, false, true) => match mode {
                Mode::Extension => {
                    tracing::debug!(stream = %id, "dropped with the read direction open: close-read");
                    self.queue_control(Frame::CloseRead { id, code: 0 });
                }
                Mode::PlainMplex => {
                    // Behind our Close if it still waits: the peer keeps what we wrote.
                    tracing::debug!(stream = %id, "dropped with the read direction open: reset");
                    self.queue_end(id, QueueEnd::Reset);
                }
            },
        }
        self.forget_if_drained(id);
    }

    fn set_send(&mut self, id: StreamId, state: SendState) {
        if let Some(entry) = self.streams.get_mut(&id) {
            entry.send = state;
        }
    }

    /// Ends the connection: every stream fails with `error` from now on.
    pub fn close(&mut self, error: ConnectionError) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(error);
        self.blocked_writers.clear();
        self.events.push_back(Event::ConnectionClosed);
    }
}
