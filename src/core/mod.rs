//! The I/O-free protocol core: a connection state machine.
//!
//! [`Connection`] is fed decoded frames ([`Connection::handle_frame`]) and application calls
//! (`open_stream`, `read`, `write`, `close_write`, `close_read`, `reset`, `drop_stream`). It hands
//! back frames to send ([`Connection::poll_transmit`]) and events for the async layer
//! ([`Connection::poll_event`]). It owns no socket and no waker, so every transition can be
//! tested by calling it directly. It reads the clock only when a window times a round trip (once
//! per window's worth of data at most); tests fix the time with [`Connection::set_time`].

mod application;
mod flow;
mod incoming;
mod outbox;
mod recv_buffer;
mod rtt;
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
    frame::{Frame, Mode, StreamId},
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

/// A call that waits until what it queued has been flushed to the socket (see
/// [`Connection::poll_flushed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushWait {
    /// A flush: everything written on the stream so far.
    Flush,
    /// A close of the write direction: its data and its Close.
    CloseWrite,
    /// A close of the read direction: its CloseRead.
    CloseRead,
}

/// Maps keyed by stream id. foldhash is several times faster than SipHash on these small keys;
/// its random per-map seed keeps a peer, which picks the numbers of the streams it opens, from
/// precomputing collisions (and the stream limit bounds every map anyway).
pub(crate) type StreamMap<V> = HashMap<StreamId, V, foldhash::fast::RandomState>;

/// Plain mplex keeps every frame as it came (its limit counts frames), which costs a queue slot
/// and an allocation beside the bytes: each buffered frame counts this much more than its length
/// against the connection's budget, so that the budget bounds memory however small the frames.
pub(crate) const PLAIN_FRAME_COST: u64 = 64;

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
    /// Frames taken by `poll_transmit` so far, and of those the async layer has written and
    /// flushed (flush tracking: see the `outbox` module docs).
    transmitted_seq: u64,
    flushed_seq: u64,
    /// Streams waiting for send buffer space to write.
    blocked_writers: Vec<StreamId>,
    events: VecDeque<Event>,
    /// Bytes buffered for reading across all streams.
    buffered_total: u64,
    /// Buffers holding them (in plain mplex, which keeps frames as they came: frames).
    buffered_frames: u64,
    /// Sum of the receive windows of all streams (extension mode).
    window_total: u64,
    /// The round-trip time, for the windows (extension mode).
    round_trip: rtt::RoundTrip,
    /// Plain mplex with [`MaxBufferBehaviour::Block`](crate::config::MaxBufferBehaviour::Block): the stream
    /// whose full buffer stops reading.
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
            buffered_frames: 0,
            window_total: 0,
            round_trip: rtt::RoundTrip::default(),
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

    /// How many streams exist: open, half-closed, reset but not yet dropped, or dropped with
    /// frames still to hand to the socket. This is what the stream limit counts.
    pub fn num_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes received and not yet read, over all streams.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered_total
    }

    /// A stream's receive window: the credit its peer holds when the reader has caught up
    /// (extension mode; it grows for a stream that its window holds back, see `Config`).
    /// `None` for a stream the connection does not know.
    pub fn receive_window(&self, id: StreamId) -> Option<u64> {
        self.streams.get(&id).map(|entry| entry.recv_window.size())
    }

    /// Bytes kept for received data, over all streams: the unread bytes, plus the read part of
    /// each stream's buffer being read, which stays allocated until all of it is read. This is
    /// what the windows bound (credit goes back as it is released); the memory allocated for it
    /// is at most 1/128 more, plus 8 KiB per stream with unread data (see `Config`'s memory
    /// table).
    pub fn held_bytes(&self) -> u64 {
        self.streams
            .values()
            .map(|entry| entry.received.held() as u64)
            .sum()
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
        self.config
            .max_num_streams
            .saturating_mul(4)
            .saturating_add(1024)
    }

    // ---------------------------------------------------------------- helpers

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

    /// Drops what a stream received and did not read, and its share of the connection's
    /// accounting.
    fn discard_received(&mut self, id: StreamId) {
        if let Some(entry) = self.streams.get_mut(&id) {
            self.buffered_frames -= entry.received.frames() as u64;
            self.buffered_total -= entry.received.discard() as u64;
        }
        self.settle_window(id);
    }

    /// A stream whose receiving is over (the peer's Close, close-read or reset) and that holds
    /// nothing it received will be granted nothing more: its window stops counting against the
    /// budget, so that a half-closed stream that only sends does not keep other streams'
    /// windows from growing.
    fn settle_window(&mut self, id: StreamId) {
        if self.mode != Mode::Extension {
            return;
        }
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        if entry.window_counted && entry.recv != RecvState::Open && entry.received.held() == 0 {
            entry.window_counted = false;
            self.window_total -= entry.recv_window.size();
        }
    }

    /// What the connection's buffered frames count against its budget in plain mplex: their
    /// bytes, and [`PLAIN_FRAME_COST`] for keeping each.
    fn plain_buffer_cost(&self) -> u64 {
        self.buffered_total + PLAIN_FRAME_COST * self.buffered_frames
    }

    /// Releases the connection-wide accounting of a stream leaving the map.
    fn forget(&mut self, id: StreamId, entry: &StreamEntry) {
        self.buffered_total -= entry.received.unread() as u64;
        self.buffered_frames -= entry.received.frames() as u64;
        if self.mode == Mode::Extension && entry.window_counted {
            self.window_total -= entry.recv_window.size();
        }
        self.resume_reading_if_drained();
        self.blocked_writers.retain(|w| *w != id);
        self.inbound.retain(|i| *i != id);
        if self.streams.len() + 1 == self.config.max_num_streams {
            self.events.push_back(Event::StreamSlotFree);
        }
    }

    fn reset_stream(&mut self, id: StreamId, code: u64, by_peer: bool) {
        // A Close already flushed has done its work: a reset after it does not undo the
        // close-write that sent it (its task may look only after the reset arrived).
        let close_flushed = self
            .streams
            .get(&id)
            .is_some_and(|e| e.send == SendState::Closed)
            && self.is_flushed(id);
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        if matches!(entry.send, SendState::Reset { .. }) {
            return;
        }
        entry.send = SendState::Reset {
            code,
            by_peer,
            close_flushed,
        };
        let announced = entry.announced;
        // A peer that closed its write side before resetting has sent all its data: keep it.
        if !(by_peer && entry.recv == RecvState::Finished) {
            entry.recv = RecvState::Reset { code, by_peer };
            self.discard_received(id);
            self.resume_reading_if_drained();
        }
        self.discard_unsent(id, true);
        self.events.push_back(Event::Readable(id));
        self.events.push_back(Event::Writable(id));
        if !by_peer && announced {
            // The code is 0 in plain-mplex mode (see `Connection::reset`).
            self.queue_control(Frame::Reset { id, code });
        }
    }

    /// Plain mplex with [`MaxBufferBehaviour::Block`]: ends the pause once what caused it is
    /// gone (the blocking stream back within its frame limit, the connection within its budget),
    /// whichever call removed it: a read of any stream, a close-read, a reset or a drop.
    ///
    /// [`MaxBufferBehaviour::Block`]: crate::MaxBufferBehaviour::Block
    fn resume_reading_if_drained(&mut self) {
        let Some(id) = self.blocking_stream else {
            return;
        };
        let frames = self.streams.get(&id).map_or(0, |e| e.received.frames());
        if frames <= self.config.max_buffer_len
            && self.plain_buffer_cost() <= self.config.max_connection_buffer
        {
            self.blocking_stream = None;
        }
    }
}

#[cfg(test)]
mod tests;
