//! [`Muxer`]: the thin async layer that owns the socket and drives the core.

use std::{
    collections::{HashMap, VecDeque},
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use asynchronous_codec::{Decoder, Encoder};

use bytes::BytesMut;
use futures::{AsyncRead, AsyncWrite};
use libp2p_core::muxing::{StreamMuxer, StreamMuxerEvent};
use parking_lot::Mutex;

use crate::{
    Config,
    codec::Codec,
    core::{Connection, Event},
    error::{ConnectionError, ProtocolViolation},
    frame::{Mode, StreamId},
    stream::Stream,
};

/// How many bytes one read from the socket asks for.
const READ_CHUNK: usize = 64 * 1024;
/// The size of a fresh read buffer. Received Data frames are split off it without copying and
/// keep their part of it alive until the application has read them; a new block is taken only
/// when the current one is full and still shared.
const READ_BLOCK: usize = 256 * 1024;
/// How many encoded bytes are gathered before they are written to the socket.
const WRITE_BATCH: usize = 256 * 1024;
/// How many rounds of reading and writing one `poll` does before it yields to other tasks.
const MAX_ROUNDS_PER_POLL: usize = 64;

/// The wakers of one stream: read and write kept apart so that the two halves of a split stream,
/// polled from different tasks, never steal each other's wake-up.
#[derive(Debug, Default)]
struct StreamWakers {
    read: Option<Waker>,
    write: Option<Waker>,
}

/// State shared by the muxer and its streams, behind one short-held lock. Never held across I/O.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) core: Connection,
    wakers: HashMap<StreamId, StreamWakers>,
    /// Tasks waiting in a stream's flush (or close) for the socket flush.
    flush_waiters: Vec<Waker>,
    /// The task that drives the connection (the one calling the `StreamMuxer` methods).
    driver: Option<Waker>,
    inbound: Option<Waker>,
    outbound: Option<Waker>,
}

impl Shared {
    fn new(core: Connection) -> Self {
        Self {
            core,
            wakers: HashMap::new(),
            flush_waiters: Vec::new(),
            driver: None,
            inbound: None,
            outbound: None,
        }
    }

    /// Wakes whoever waits on what the core reported.
    pub(crate) fn dispatch_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Readable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id).and_then(|w| w.read.take()) {
                        w.wake();
                    }
                }
                Event::Writable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id).and_then(|w| w.write.take()) {
                        w.wake();
                    }
                }
                Event::InboundReady => wake(&mut self.inbound),
                Event::StreamSlotFree => wake(&mut self.outbound),
                Event::ConnectionClosed => {
                    for wakers in self.wakers.values_mut() {
                        wake(&mut wakers.read);
                        wake(&mut wakers.write);
                    }
                    for w in self.flush_waiters.drain(..) {
                        w.wake();
                    }
                    wake(&mut self.inbound);
                    wake(&mut self.outbound);
                    wake(&mut self.driver);
                }
            }
        }
    }

    pub(crate) fn register_read(&mut self, id: StreamId, waker: &Waker) {
        store(&mut self.wakers.entry(id).or_default().read, waker);
    }

    pub(crate) fn register_write(&mut self, id: StreamId, waker: &Waker) {
        store(&mut self.wakers.entry(id).or_default().write, waker);
    }

    pub(crate) fn register_flush(&mut self, waker: &Waker) {
        if !self.flush_waiters.iter().any(|w| w.will_wake(waker)) {
            self.flush_waiters.push(waker.clone());
        }
    }

    pub(crate) fn forget_stream(&mut self, id: StreamId) {
        self.wakers.remove(&id);
    }

    /// Runs an application call on the core, then wakes whoever it concerns: the driver if the
    /// call queued the first frame to send or let a paused connection read again, and the tasks
    /// waiting on what the core reported.
    pub(crate) fn stream_call<T>(&mut self, call: impl FnOnce(&mut Connection) -> T) -> T {
        let had_transmit = self.core.has_transmit();
        let was_reading = self.core.wants_frames();
        let result = call(&mut self.core);
        let queued = !had_transmit && self.core.has_transmit();
        let resumed = !was_reading && self.core.wants_frames();
        if queued || resumed {
            self.wake_driver();
        }
        self.dispatch_events();
        result
    }

    /// Wakes the driver so it sends what the application queued or reads again.
    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = &self.driver {
            w.wake_by_ref();
        }
    }

    fn on_flushed(&mut self, frames: u64) {
        self.core.on_flushed(frames);
        for w in self.flush_waiters.drain(..) {
            w.wake();
        }
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

fn store(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// Where the socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketState {
    Open,
    /// `poll_close` was called: sending what is queued, then closing the socket.
    Closing,
    /// The socket is closed or failed.
    Closed,
}

/// A multiplexed connection. Implements [`StreamMuxer`]; its streams are [`Stream`]s.
///
/// All socket I/O happens in the `StreamMuxer` methods (`poll` is enough to make progress);
/// streams only change shared state and wake the task that polls the muxer.
pub struct Muxer<C> {
    socket: C,
    codec: Codec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Bytes encoded into `write_buf` so far, and bytes the socket accepted so far.
    encoded_bytes: u64,
    written_bytes: u64,
    /// After each batch of encoding: how many frames the core had handed out, and where their
    /// bytes end in the outgoing byte stream. A flush covers the batches whose bytes were all
    /// written, so a stream's flush completes even while other streams keep the buffer full.
    encoded_marks: VecDeque<(u64, u64)>,
    /// Bytes were written since the last flush.
    needs_flush: bool,
    /// The peer closed its side of the socket.
    read_eof: bool,
    socket_state: SocketState,
    shared: Arc<Mutex<Shared>>,
    mode: Mode,
}

impl<C> std::fmt::Debug for Muxer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a socket on which `mode` was negotiated. Usually obtained through the [`Config`]
    /// connection upgrade instead.
    pub fn new(socket: C, config: Config, mode: Mode) -> Self {
        Self {
            socket,
            codec: Codec::new(mode),
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            encoded_bytes: 0,
            written_bytes: 0,
            encoded_marks: VecDeque::new(),
            needs_flush: false,
            read_eof: false,
            socket_state: SocketState::Open,
            shared: Arc::new(Mutex::new(Shared::new(Connection::new(mode, config)))),
            mode,
        }
    }

    /// The protocol this connection speaks.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How many streams exist on this connection (open, half-closed, or not yet dropped).
    pub fn num_streams(&self) -> usize {
        self.shared.lock().core.num_streams()
    }

    /// Bytes received and not yet read by the application, over all streams.
    pub fn buffered_bytes(&self) -> u64 {
        self.shared.lock().core.buffered_bytes()
    }

    /// Ends the connection with `error`, waking every stream.
    fn fail(&mut self, error: ConnectionError) -> ConnectionError {
        tracing::debug!(%error, "connection failed");
        self.socket_state = SocketState::Closed;
        let mut shared = self.shared.lock();
        shared.core.close(error.clone());
        shared.dispatch_events();
        shared.core.closed().cloned().unwrap_or(error)
    }

    /// Moves queued frames into the write buffer.
    fn encode_outgoing(&mut self) -> Result<bool, ConnectionError> {
        if self.write_buf.len() >= WRITE_BATCH {
            return Ok(false);
        }
        let mut shared = self.shared.lock();
        let before = self.write_buf.len();
        while self.write_buf.len() < WRITE_BATCH {
            let Some(frame) = shared.core.poll_transmit() else {
                break;
            };
            self.codec.encode(frame, &mut self.write_buf)?;
        }
        let encoded = self.write_buf.len() - before;
        if encoded == 0 {
            return Ok(false);
        }
        self.encoded_bytes += encoded as u64;
        self.encoded_marks
            .push_back((shared.core.transmitted(), self.encoded_bytes));
        shared.dispatch_events();
        Ok(true)
    }

    /// Writes the write buffer to the socket, then flushes what was written (also when the
    /// socket took only part of the buffer); true if anything moved.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnectionError> {
        let mut progress = false;
        while !self.write_buf.is_empty() {
            match Pin::new(&mut self.socket).poll_write(cx, &self.write_buf) {
                Poll::Ready(Ok(0)) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Poll::Ready(Ok(n)) => {
                    let _ = self.write_buf.split_to(n);
                    self.written_bytes += n as u64;
                    self.needs_flush = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => break,
            }
        }
        if self.needs_flush {
            match Pin::new(&mut self.socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    self.on_flushed();
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// Everything written so far is flushed: tell the core which frames that covers.
    fn on_flushed(&mut self) {
        let mut frames = None;
        while let Some(&(count, end)) = self.encoded_marks.front() {
            if end > self.written_bytes {
                break;
            }
            frames = Some(count);
            self.encoded_marks.pop_front();
        }
        if let Some(frames) = frames {
            self.shared.lock().on_flushed(frames);
        }
    }

    /// Feeds the complete frames in the read buffer to the core while it wants them.
    /// Returns whether any frame was handled and whether the core wants more.
    fn handle_buffered_frames(&mut self) -> Result<(bool, bool), ConnectionError> {
        let mut shared = self.shared.lock();
        let mut handled = false;
        while shared.core.wants_frames() {
            let Some(frame) = self.codec.decode(&mut self.read_buf)? else {
                return Ok((handled, true));
            };
            tracing::trace!(?frame, "received frame");
            handled = true;
            let result = shared.core.handle_frame(frame);
            shared.dispatch_events();
            result?;
        }
        Ok((handled, false))
    }

    /// Makes room for one read: reuses the read block once every frame taken from it has been
    /// released, else moves the partial frame at its end into a fresh block.
    fn prepare_read_space(&mut self) {
        let spare = self.read_buf.capacity() - self.read_buf.len();
        if spare >= READ_CHUNK || self.read_buf.try_reclaim(READ_CHUNK) {
            return;
        }
        let mut fresh = BytesMut::with_capacity(READ_BLOCK.max(self.read_buf.len() + READ_CHUNK));
        fresh.extend_from_slice(&self.read_buf);
        self.read_buf = fresh;
    }

    /// Handles buffered frames, then reads once from the socket; true if anything moved.
    fn poll_read_in(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnectionError> {
        let (handled, wants_more) = self.handle_buffered_frames()?;
        if !wants_more {
            return Ok(handled);
        }
        if self.read_eof {
            // Every complete frame was handled and no more bytes will come.
            return Err(if self.read_buf.is_empty() {
                ConnectionError::Closed
            } else {
                ProtocolViolation::TruncatedFrame.into()
            });
        }
        self.prepare_read_space();
        let start = self.read_buf.len();
        self.read_buf.resize(start + READ_CHUNK, 0);
        let read = Pin::new(&mut self.socket).poll_read(cx, &mut self.read_buf[start..]);
        let n = match read {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => {
                self.read_buf.truncate(start);
                return Err(e.into());
            }
            Poll::Pending => {
                self.read_buf.truncate(start);
                return Ok(handled);
            }
        };
        self.read_buf.truncate(start + n);
        self.read_eof = n == 0;
        Ok(true)
    }

    /// Drives the connection: sends queued frames, flushes, reads and handles frames.
    /// `Ready(Err)` once the connection has failed; otherwise `Pending`.
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<ConnectionError> {
        {
            let mut shared = self.shared.lock();
            store(&mut shared.driver, cx.waker());
            if self.socket_state == SocketState::Closed {
                return Poll::Ready(
                    shared
                        .core
                        .closed()
                        .cloned()
                        .unwrap_or(ConnectionError::Closed),
                );
            }
        }
        for _ in 0..MAX_ROUNDS_PER_POLL {
            let round = (|| {
                let encoded = self.encode_outgoing()?;
                let written = self.poll_write_out(cx)?;
                let read = if self.socket_state == SocketState::Open {
                    self.poll_read_in(cx)?
                } else {
                    false
                };
                Ok::<bool, ConnectionError>(encoded || written || read)
            })();
            match round {
                Ok(true) => continue,
                Ok(false) => return Poll::Pending,
                Err(e) => return Poll::Ready(self.fail(e)),
            }
        }
        // Yield to other tasks, but come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn new_stream(&self, id: StreamId) -> Stream {
        Stream::new(id, self.shared.clone(), self.mode)
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = Stream;
    type Error = ConnectionError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let failed = this.poll_drive(cx);
        let mut shared = this.shared.lock();
        // Streams that arrived before the connection ended are still handed out.
        if let Some(id) = shared.core.accept() {
            drop(shared);
            tracing::debug!(stream = %id, "inbound stream");
            return Poll::Ready(Ok(this.new_stream(id)));
        }
        if let Poll::Ready(e) = failed {
            return Poll::Ready(Err(e));
        }
        store(&mut shared.inbound, cx.waker());
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let opened = {
            let mut shared = this.shared.lock();
            match shared.core.open_stream() {
                Ok(Some(id)) => Ok(Some(id)),
                Ok(None) => {
                    store(&mut shared.outbound, cx.waker());
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        };
        // Send the NewStream frame (and anything else) right away.
        if let Poll::Ready(e) = this.poll_drive(cx) {
            return Poll::Ready(Err(e));
        }
        match opened {
            Ok(Some(id)) => {
                tracing::debug!(stream = %id, "outbound stream");
                Poll::Ready(Ok(this.new_stream(id)))
            }
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        if this.socket_state == SocketState::Open {
            this.socket_state = SocketState::Closing;
            let mut shared = this.shared.lock();
            shared.core.close(ConnectionError::Closed);
            shared.dispatch_events();
        }
        if this.socket_state == SocketState::Closing {
            loop {
                match this.encode_outgoing().and_then(|_| this.poll_write_out(cx)) {
                    Ok(_)
                        if this.write_buf.is_empty() && !this.shared.lock().core.has_transmit() =>
                    {
                        break;
                    }
                    Ok(true) => continue,
                    Ok(false) => return Poll::Pending,
                    Err(e) => {
                        this.socket_state = SocketState::Closed;
                        return Poll::Ready(Err(e));
                    }
                }
            }
            match Pin::new(&mut this.socket).poll_close(cx) {
                Poll::Ready(result) => {
                    this.socket_state = SocketState::Closed;
                    result?;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        match self.get_mut().poll_drive(cx) {
            Poll::Ready(e) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<C> Drop for Muxer<C> {
    fn drop(&mut self) {
        // Streams outlive the muxer only to learn that the connection is gone.
        let mut shared = self.shared.lock();
        shared.core.close(ConnectionError::Closed);
        shared.dispatch_events();
        shared.driver = None;
    }
}
