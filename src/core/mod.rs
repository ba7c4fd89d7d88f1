//! The I/O-free protocol core: a connection state machine.
//!
//! [`Connection`] is fed decoded frames ([`Connection::handle_frame`]) and application calls
//! (`open_stream`, `read`, `write`, `close_write`, `close_read`, `reset`, `drop_stream`). It hands
//! back frames to send ([`Connection::poll_transmit`]) and events for the async layer
//! ([`Connection::poll_event`]). It owns no socket and no waker, so every transition can be
//! tested by calling it directly. It reads the clock only when a window times a round trip (once
//! per window's worth of data at most); tests fix the time with [`Connection::set_time`].

mod flow;
mod incoming;
mod outbox;
mod stream;

use std::{
    collections::{HashMap, VecDeque},
    time::Instant,
};

use bytes::Bytes;

pub use flow::{INITIAL_WINDOW, MAX_CREDIT};
use stream::{RecvState, SendState, StreamEntry};

use crate::{
    config::Config,
    error::{ConnectionError, StreamError},
    frame::{Frame, Mode, Opener, StreamId},
};

/// What the async layer must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A stream may have become readable (data, EOF, reset or connection failure).
    Readable(StreamId),
    /// A stream may have become writable (credit, buffer space, stop, reset or failure).
    Writable(StreamId),
    /// An inbound stream waits in [`Connection::accept`].
    InboundReady,
    /// A stream ended, so [`Connection::open_stream`] may succeed again.
    StreamSlotFree,
    /// The connection failed or closed; every stream should be woken.
    ConnectionClosed,
}

/// The outcome of [`Connection::read`] (data as `Bytes`) and [`Connection::read_into`] (the
/// number of bytes copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome<T = Bytes> {
    /// Data, at most the requested length.
    Data(T),
    /// The peer finished writing (or we closed reading) and everything was read.
    Eof,
    /// Nothing yet; an [`Event::Readable`] follows when that changes.
    Blocked,
}

/// The outcome of [`Connection::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// This many bytes were queued (at least 1).
    Written(usize),
    /// No credit or no buffer space; an [`Event::Writable`] follows when that changes.
    Blocked,
}

/// Maps keyed by stream id. foldhash is several times faster than SipHash on these small keys;
/// its random per-map seed keeps a peer, which picks the numbers of the streams it opens, from
/// precomputing collisions (and the stream limit bounds every map anyway).
pub(crate) type StreamMap<V> = HashMap<StreamId, V, foldhash::fast::RandomState>;

/// How many streams the peer may open in a row beyond the limit before it is cut off.
const MIN_REFUSED_STREAMS_LIMIT: u64 = 256;

/// The connection state machine. See the module docs.
#[derive(Debug)]
pub struct Connection {
    mode: Mode,
    config: Config,
    streams: StreamMap<StreamEntry>,
    next_local_num: u64,
    /// Inbound streams not yet taken by [`Connection::accept`].
    inbound: VecDeque<StreamId>,
    /// Frames sent ahead of stream data, in order (see the `outbox` module).
    control: VecDeque<Frame>,
    /// Streams with data or a Close to send, in turn.
    ready: VecDeque<StreamId>,
    /// Bytes of data queued to send, in stream queues and in `control`.
    outbox_data: usize,
    /// Frames in `control` other than Data (mostly answers to the peer; they bound reading).
    control_frames: usize,
    /// Control frames queued so far, and taken by `poll_transmit` so far.
    control_queued_seq: u64,
    control_transmitted_seq: u64,
    /// Frames taken by `poll_transmit` so far.
    transmitted_seq: u64,
    /// Frames the async layer has written and flushed.
    flushed_seq: u64,
    /// Streams waiting for send buffer space to write.
    blocked_writers: Vec<StreamId>,
    events: VecDeque<Event>,
    /// Bytes buffered for reading across all streams.
    buffered_total: u64,
    /// Sum of the receive windows of all streams (extension mode).
    window_total: u64,
    /// Plain mplex with [`MaxBufferBehaviour::Block`]: the stream whose full buffer stops reading.
    blocking_stream: Option<StreamId>,
    refused_in_a_row: u64,
    closed: Option<ConnectionError>,
    /// The time fixed by [`Connection::set_time`]; the system clock when `None`.
    fixed_time: Option<Instant>,
}

impl Connection {
    /// A new connection speaking `mode`.
    pub fn new(mode: Mode, config: Config) -> Self {
        Self {
            mode,
            config,
            streams: StreamMap::default(),
            next_local_num: 0,
            inbound: VecDeque::new(),
            control: VecDeque::new(),
            ready: VecDeque::new(),
            outbox_data: 0,
            control_frames: 0,
            control_queued_seq: 0,
            control_transmitted_seq: 0,
            transmitted_seq: 0,
            flushed_seq: 0,
            blocked_writers: Vec::new(),
            events: VecDeque::new(),
            buffered_total: 0,
            window_total: 0,
            blocking_stream: None,
            refused_in_a_row: 0,
            closed: None,
            fixed_time: None,
        }
    }

    /// Fixes the time the core sees from now on, instead of the system clock (for tests and
    /// simulations of a link's round trip).
    pub fn set_time(&mut self, now: Instant) {
        self.fixed_time = Some(now);
    }

    /// The time, for windows that time a round trip: asked for only when needed, since reading
    /// the clock on every frame and call was a measurable share of a request's cost.
    fn clock(&self) -> impl Fn() -> Instant + use<> {
        let fixed = self.fixed_time;
        move || fixed.unwrap_or_else(Instant::now)
    }

    /// The protocol this connection speaks.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How many streams exist (open, half-closed, or reset but not yet dropped).
    pub fn num_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes received and not yet read, over all streams.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered_total
    }

    /// Why the connection ended, if it did.
    pub fn closed(&self) -> Option<&ConnectionError> {
        self.closed.as_ref()
    }

    // ---------------------------------------------------------------- output to the async layer

    /// The next event for the async layer.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the async layer should read more frames from the peer. False while a plain-mplex
    /// stream's full buffer blocks the connection, or while too many answers to the peer wait to
    /// be sent (a peer that does not read must not make us queue without bound).
    pub fn wants_frames(&self) -> bool {
        self.closed.is_none()
            && self.blocking_stream.is_none()
            && self.control_frames < self.control_frame_limit()
    }

    fn control_frame_limit(&self) -> usize {
        1024 + 4 * self.config.max_num_streams
    }

    // ---------------------------------------------------------------- application calls

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
            entry.take(max).map(|chunk| {
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
            let len = entry.take_into(buf, spent);
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
        let len = len as u64;
        let grant = if mode == Mode::Extension && recv == RecvState::Open && connection_open {
            let budget = self
                .config
                .max_connection_buffer
                .saturating_sub(self.window_total);
            entry
                .recv_window
                .on_consumed(len, self.config.max_stream_window, budget, now)
        } else {
            None
        };
        self.buffered_total -= len;
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
        if self.blocking_stream == Some(id) {
            self.unblock_if_drained(id);
        }
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
        let freed = entry.discard_buffer() as u64;
        self.buffered_total -= freed;
        if mode == Mode::Extension && recv == RecvState::Open {
            self.announce(id);
            self.queue_control(Frame::CloseRead { id, code });
        }
        if self.blocking_stream == Some(id) {
            self.blocking_stream = None;
        }
        Ok(())
    }

    /// Resets the stream in both directions. A no-op on a stream already reset.
    ///
    /// # Errors
    ///
    /// [`StreamError::Connection`] once the connection has ended (nothing is left to reset).
    pub fn reset(&mut self, id: StreamId, code: u64) -> Result<(), StreamError> {
        self.live_entry(id)?;
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

    // ---------------------------------------------------------------- helpers

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

    fn check_open(&self) -> Result<(), ConnectionError> {
        match &self.closed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn live_entry(&mut self, id: StreamId) -> Result<&mut StreamEntry, StreamError> {
        if let Some(e) = &self.closed {
            return Err(StreamError::Connection(e.clone()));
        }
        // The connection is open here, and every stream in the map has a handle until it is
        // dropped; a missing entry can only be a stale id.
        self.streams
            .get_mut(&id)
            .ok_or(StreamError::Connection(ConnectionError::Closed))
    }

    /// The error for a stream the connection no longer serves. A handle exists for every stream
    /// in the map, and the entry lives until the handle is dropped, so this is only reached once
    /// the connection has ended.
    fn stale_stream_error(&self) -> StreamError {
        StreamError::Connection(self.closed.clone().unwrap_or(ConnectionError::Closed))
    }

    fn insert_stream(&mut self, id: StreamId, announced: bool) {
        let entry = StreamEntry::new(announced);
        if self.mode == Mode::Extension {
            self.window_total += entry.recv_window.size();
        }
        self.streams.insert(id, entry);
    }

    /// Releases the connection-wide accounting of a stream leaving the map.
    fn forget(&mut self, id: StreamId, entry: &StreamEntry) {
        self.buffered_total -= entry.buffered as u64;
        if self.mode == Mode::Extension {
            self.window_total -= entry.recv_window.size();
        }
        if self.blocking_stream == Some(id) {
            self.blocking_stream = None;
        }
        self.blocked_writers.retain(|w| *w != id);
        self.inbound.retain(|i| *i != id);
        if self.streams.len() + 1 == self.config.max_num_streams {
            self.events.push_back(Event::StreamSlotFree);
        }
    }

    fn reset_stream(&mut self, id: StreamId, code: u64, by_peer: bool) {
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        if matches!(entry.send, SendState::Reset { .. }) {
            return;
        }
        entry.send = SendState::Reset { code, by_peer };
        let announced = entry.announced;
        // A peer that closed its write side before resetting has sent all its data: keep it.
        if !(by_peer && entry.recv == RecvState::Finished) {
            entry.recv = RecvState::Reset { code, by_peer };
            let freed = entry.discard_buffer() as u64;
            self.buffered_total -= freed;
            if self.blocking_stream == Some(id) {
                self.blocking_stream = None;
            }
        }
        self.discard_unsent(id);
        self.events.push_back(Event::Readable(id));
        self.events.push_back(Event::Writable(id));
        if !by_peer && announced {
            let code = if self.mode == Mode::Extension {
                code
            } else {
                0
            };
            self.queue_control(Frame::Reset { id, code });
        }
    }

    fn unblock_if_drained(&mut self, id: StreamId) {
        let Some(entry) = self.streams.get(&id) else {
            self.blocking_stream = None;
            return;
        };
        if entry.recv_buf.len() <= self.config.max_buffer_len
            && self.buffered_total <= self.config.max_connection_buffer
        {
            self.blocking_stream = None;
        }
    }
}

impl Opener {
    /// Whether this side opened the stream.
    pub fn is_local(self) -> bool {
        self == Opener::Local
    }
}

#[cfg(test)]
mod tests;
