//! Calls from the application: opening, reading, writing, closing either direction, resetting
//! and dropping streams, and closing the connection.

use bytes::Bytes;

use super::{
    Connection, Event, ReadOutcome, WriteOutcome,
    stream::{RecvState, SendState, StreamEntry},
};
use crate::{
    error::{ConnectionError, StreamError},
    frame::{Frame, Mode, StreamId},
};

impl Connection {
    /// Opens an outbound stream. `Ok(None)` while the stream limit is reached; an
    /// [`Event::StreamSlotFree`] follows when a stream ends.
    ///
    /// # Errors
    ///
    /// The connection's error once it has ended.
    pub fn open_stream(&mut self) -> Result<Option<StreamId>, ConnectionError> {
        self.check_open()?;
        if self.streams.len() >= self.config.max_num_streams {
            return Ok(None);
        }
        let id = StreamId::local(self.next_local_num);
        // 2^61 streams cannot be opened in practice; saturating keeps the id unique until then.
        self.next_local_num = self.next_local_num.saturating_add(1);
        // Announced with its first frame (see `announce`).
        self.insert_stream(id, false);
        Ok(Some(id))
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
        let Some(entry) = self.streams.get_mut(&id) else {
            return Err(self.stale_stream_error());
        };
        let recv = entry.recv;
        if let RecvState::Reset { code, by_peer } = recv {
            return Err(StreamError::Reset { code, by_peer });
        }
        if recv == RecvState::Stopped {
            return Ok(ReadOutcome::Eof);
        }
        // Data that arrived before the connection ended is still delivered.
        let held_before = entry.received.held();
        let Some((data, len)) = take(entry) else {
            return match recv {
                RecvState::Open if connection_open => {
                    entry.recv_window.on_reader_blocked();
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
        let grant = if mode == Mode::Extension && recv == RecvState::Open && connection_open {
            let budget = self
                .config
                .max_connection_buffer
                .saturating_sub(self.window_total);
            entry
                .recv_window
                .on_consumed(released, self.config.max_stream_window, budget, now)
        } else {
            None
        };
        self.buffered_total -= len as u64;
        if let Some(grant) = grant {
            if grant.growth > 0 {
                tracing::debug!(stream = %id, growth = grant.growth, "receive window grows");
            }
            self.window_total += grant.growth;
            self.queue_control(Frame::WindowUpdate {
                id,
                credit: grant.credit,
            });
        }
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
    /// caller can supply the buffer).
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
        match entry.send {
            SendState::Open => {}
            SendState::Closed => return Err(StreamError::WriteClosed),
            SendState::Stopped { code } => return Err(StreamError::Stopped { code }),
            SendState::Reset { code, by_peer } => return Err(StreamError::Reset { code, by_peer }),
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
        self.queue_data(id, copy(&buf[..len]));
        Ok(WriteOutcome::Written(len))
    }

    /// Closes our write direction (FIN). Idempotent; fine after the peer stopped reading.
    ///
    /// # Errors
    ///
    /// [`StreamError::Reset`] on a reset stream; [`StreamError::Connection`] once the connection
    /// has ended.
    pub fn close_write(&mut self, id: StreamId) -> Result<(), StreamError> {
        let entry = self.live_entry(id)?;
        match entry.send {
            SendState::Open => {
                tracing::trace!(stream = %id, "closed for writing");
                entry.send = SendState::Closed;
                self.announce(id);
                self.queue_close(id);
                Ok(())
            }
            SendState::Closed | SendState::Stopped { .. } => Ok(()),
            SendState::Reset { code, by_peer } => Err(StreamError::Reset { code, by_peer }),
        }
    }

    /// Closes our read direction (stop-sending). Unread data is dropped and later reads give EOF.
    /// In extension mode the peer is told with CloseRead (carrying `code`); in plain-mplex mode
    /// nothing can be sent and the data that still arrives is discarded. Idempotent.
    ///
    /// # Errors
    ///
    /// [`StreamError::Reset`] on a reset stream; [`StreamError::Connection`] once the connection
    /// has ended.
    pub fn close_read(&mut self, id: StreamId, code: u64) -> Result<(), StreamError> {
        let mode = self.mode;
        let entry = self.live_entry(id)?;
        let recv = entry.recv;
        match recv {
            RecvState::Stopped => return Ok(()),
            RecvState::Reset { code, by_peer } => return Err(StreamError::Reset { code, by_peer }),
            RecvState::Open | RecvState::Finished => {}
        }
        tracing::trace!(stream = %id, code, "closed for reading");
        entry.recv = RecvState::Stopped;
        let freed = entry.received.discard() as u64;
        self.buffered_total -= freed;
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
    /// drop rules in the crate docs) and forget the stream.
    pub fn drop_stream(&mut self, id: StreamId) {
        let Some(mut entry) = self.streams.remove(&id) else {
            return;
        };
        self.forget(id, &entry);
        if self.closed.is_some() || !entry.announced {
            self.outbox_data -= entry.send_queue.discard_data();
            return;
        }
        // What was written before the drop still goes out, before anything the drop adds.
        self.flush_queue_of_dropped(id, &mut entry);
        if matches!(entry.send, SendState::Reset { .. }) {
            return;
        }
        let (send, recv) = (entry.send, entry.recv);
        let write_open = send == SendState::Open;
        let read_open = match (self.mode, recv) {
            (_, RecvState::Open) => true,
            // Plain mplex could not tell the peer we stopped reading, so it still sends.
            (Mode::PlainMplex, RecvState::Stopped) => true,
            _ => false,
        };
        let frame = match (write_open, read_open) {
            (true, true) => Frame::Reset { id, code: 0 },
            (true, false) => Frame::Close { id },
            (false, true) => match self.mode {
                Mode::Extension => Frame::CloseRead { id, code: 0 },
                Mode::PlainMplex => Frame::Reset { id, code: 0 },
            },
            (false, false) => {
                tracing::trace!(stream = %id, "dropped, both directions finished");
                return;
            }
        };
        match frame {
            Frame::Close { .. } => tracing::trace!(stream = %id, "dropped: closing for writing"),
            _ => tracing::debug!(stream = %id, ?frame, "dropped with a direction open"),
        }
        self.queue_control(frame);
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
