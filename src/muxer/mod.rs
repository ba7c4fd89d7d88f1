//! [`Muxer`]: the thin async layer that owns the socket and drives the core.

mod io;
mod pool;
mod reader;
mod writer;

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::muxing::{StreamMuxer, StreamMuxerEvent};
use parking_lot::Mutex;

use crate::{
    Config,
    codec::Codec,
    core::{Connection, Event, StreamMap},
    error::ConnectionError,
    frame::{Mode, StreamId},
    stream::Stream,
};
use io::Io;
pub(crate) use io::Pump;
use pool::BufferPool;
use reader::FrameReader;
use writer::FrameWriter;

/// How many rounds of reading and writing one `poll` does before it yields to other tasks.
const MAX_ROUNDS_PER_POLL: usize = 64;

/// The wakers of one stream: read and write kept apart so that the two halves of a split stream,
/// polled from different tasks, never steal each other's wake-up. `flush` is the task waiting
/// in a flush, a close-write or a close-read (all on the write half, or on the whole stream).
#[derive(Debug, Default)]
struct StreamWakers {
    read: Option<Waker>,
    write: Option<Waker>,
    flush: Option<Waker>,
    /// Listed in [`Shared::flushing`].
    flushing: bool,
}

/// State shared by the muxer and its streams, behind one short-held lock. Never held across I/O.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) core: Connection,
    /// Spent buffers for the next writes and received bodies.
    pub(crate) pool: BufferPool,
    wakers: StreamMap<StreamWakers>,
    /// Streams whose `flush` waker waits for the socket flush (some may have been woken since).
    flushing: Vec<StreamId>,
    /// Wakes the task that drives the connection (the one calling the `StreamMuxer` methods);
    /// `None` once the muxer is gone.
    driver: Option<Waker>,
    inbound: Option<Waker>,
    outbound: Option<Waker>,
    /// The connection's span (`mplex_halfclose{connection=N mode=..}`): entered by every call
    /// into the core, so that what the core logs names its connection.
    pub(crate) span: tracing::Span,
}

impl Shared {
    fn new(core: Connection, driver: Waker, span: tracing::Span) -> Self {
        Self {
            span,
            core,
            pool: BufferPool::default(),
            wakers: StreamMap::default(),
            flushing: Vec::new(),
            driver: Some(driver),
            inbound: None,
            outbound: None,
        }
    }

    /// Wakes whoever waits on what the core reported. A stream's flush waiter is woken with its
    /// reader and its writer: a reset, a stop or the peer's Close can decide how a flush or a
    /// close ends (see `Connection::poll_flushed`).
    pub(crate) fn dispatch_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Readable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id) {
                        wake(&mut w.read);
                        wake(&mut w.flush);
                    }
                }
                Event::Writable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id) {
                        wake(&mut w.write);
                        wake(&mut w.flush);
                    }
                }
                Event::InboundReady => wake(&mut self.inbound),
                Event::StreamSlotFree => wake(&mut self.outbound),
                Event::ConnectionClosed => {
                    for wakers in self.wakers.values_mut() {
                        wake(&mut wakers.read);
                        wake(&mut wakers.write);
                        wake(&mut wakers.flush);
                        wakers.flushing = false;
                    }
                    self.flushing.clear();
                    wake(&mut self.inbound);
                    wake(&mut self.outbound);
                    self.wake_driver();
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

    pub(crate) fn register_flush(&mut self, id: StreamId, waker: &Waker) {
        let wakers = self.wakers.entry(id).or_default();
        if !wakers.flushing {
            wakers.flushing = true;
            self.flushing.push(id);
        }
        store(&mut wakers.flush, waker);
    }

    pub(crate) fn forget_stream(&mut self, id: StreamId) {
        if self.wakers.remove(&id).is_some_and(|w| w.flushing) {
            self.flushing.retain(|f| *f != id);
        }
    }

    /// Runs an application call on the core, then wakes whoever it concerns: the driver if the
    /// call let a paused connection read again, and the tasks waiting on what the core reported.
    /// Frames the call queued are the caller's to send (see `Stream::send_queued`).
    pub(crate) fn stream_call<T>(
        &mut self,
        call: impl FnOnce(&mut Connection, &mut BufferPool) -> T,
    ) -> T {
        let was_reading = self.core.wants_frames();
        let result = {
            // Borrowed, not cloned: this runs on every read and write.
            let _entered = self.span.enter();
            call(&mut self.core, &mut self.pool)
        };
        if !was_reading && self.core.wants_frames() {
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

    pub(crate) fn on_flushed(&mut self, frames: u64) {
        self.core.on_flushed(frames);
        for id in self.flushing.drain(..) {
            if let Some(w) = self.wakers.get_mut(&id) {
                w.flushing = false;
                wake(&mut w.flush);
            }
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

/// The waker the driver hands to the socket and to its streams. It notes that the connection
/// has work before it wakes the driving task, so that a drive with nothing to do costs one atomic
/// swap: a swarm connection calls `poll_inbound`, `poll_outbound` and `poll` on every wake-up,
/// and each of them drives the connection.
#[derive(Debug, Default)]
struct DriverWaker {
    /// Something happened since the last drive: the socket became ready, or a stream queued
    /// frames or made room to read.
    woken: AtomicBool,
    /// The driving task. Kept, not taken, on a wake: a swarm connection polls the muxer two or
    /// three times per wake-up, and re-registering each time was a measurable share of a
    /// request's cost (see `Muxer::poll_drive`).
    task: Mutex<Option<Waker>>,
}

impl Wake for DriverWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock() {
            task.wake_by_ref();
        }
    }
}

/// How a drive ended.
enum Drive {
    /// Nothing more to do until a wake-up.
    Idle,
    /// There may be more, but the drive gave other tasks a turn.
    Yield,
}

/// Rounds of: under the [`Shared`] lock, report the last flush, feed the frames read to the core
/// and take the frames it queued; then, without that lock, write, flush and read the socket.
/// Another round follows only when it has something to do: bytes were read, a flush is to be
/// reported, or the socket took bytes while more wait. Every other change wakes the driver.
fn drive_rounds<C: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<C>,
    reader: &mut FrameReader,
    shared: &Mutex<Shared>,
    reading: bool,
    for_inbound: bool,
    cx: &mut Context<'_>,
) -> Result<Drive, ConnectionError> {
    let mut flushed = None;
    if for_inbound {
        // The task looks for inbound streams after this drive: a stream the drive accepts need
        // not wake it.
        shared.lock().inbound = None;
    }
    for _ in 0..MAX_ROUNDS_PER_POLL {
        let (wants_frames, more_to_send) = {
            let mut shared = shared.lock();
            if let Some(frames) = flushed.take() {
                shared.on_flushed(frames);
            }
            let wants_frames = reading && feed_frames(reader, &mut shared)?;
            io.encode_outgoing(&mut shared);
            (wants_frames, shared.core.has_transmit())
        };
        let progress = io.poll_write_out(cx)?;
        // A flush moved something: its report is taken in the next round.
        flushed = progress.flushed_frames;
        let read = if wants_frames {
            if reader.is_eof() {
                // Every complete frame was handled and no more bytes will come.
                return Err(reader.finish());
            }
            match reader.poll_fill(&mut io.socket, cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => false,
            }
        } else {
            false
        };
        let socket_took_more = progress.moved && (more_to_send || !io.writer.is_empty());
        if !(read || flushed.is_some() || socket_took_more) {
            return Ok(Drive::Idle);
        }
    }
    if let Some(frames) = flushed {
        shared.lock().on_flushed(frames);
    }
    Ok(Drive::Yield)
}

/// Feeds the complete frames read so far to the core while it wants them. Returns whether the
/// core wants more.
fn feed_frames(reader: &mut FrameReader, shared: &mut Shared) -> Result<bool, ConnectionError> {
    while shared.core.wants_frames() {
        let Some(frame) = reader.next_frame(&mut shared.pool)? else {
            return Ok(true);
        };
        tracing::trace!(?frame, "received frame");
        let result = shared.core.handle_frame(frame);
        shared.dispatch_events();
        result?;
    }
    Ok(false)
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

/// Numbers connections in this process for their tracing span, from 1.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// A multiplexed connection. Implements [`StreamMuxer`]; its streams are [`Stream`]s.
///
/// The `StreamMuxer` methods drive the connection (`poll` is enough to make progress). A stream
/// that queues frames sends them from its own task when the socket is free, and otherwise wakes
/// the task that polls the muxer (see the `io` module).
///
/// # Errors
///
/// The `StreamMuxer` methods fail with a [`ConnectionError`] once the connection has ended:
/// [`ConnectionError::ProtocolViolation`] when the peer broke the protocol,
/// [`ConnectionError::Io`] when the transport failed, [`ConnectionError::Closed`] when the peer
/// closed the connection or after `poll_close`. Every stream then fails with the same cause.
/// `poll_inbound` still hands out the streams that arrived before the end.
pub struct Muxer<C> {
    io: Arc<Mutex<Io<C>>>,
    reader: FrameReader,
    socket_state: SocketState,
    shared: Arc<Mutex<Shared>>,
    driver: Arc<DriverWaker>,
    /// `driver` as a `Waker`, for the socket.
    driver_waker: Waker,
    /// The task last registered in `driver`.
    driver_task: Option<Waker>,
    /// How many drives ran so far.
    drives: u64,
    /// After `poll_inbound` found nothing and registered `driver_task` for inbound streams: the
    /// drive count then. Cleared when the driving task changes.
    inbound_seen: Option<u64>,
    mode: Mode,
    /// The connection's span, entered while the muxer is polled.
    span: tracing::Span,
}

impl<C> std::fmt::Debug for Muxer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<C> Muxer<C> {
    /// The protocol this connection speaks.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How many streams exist on this connection: held by the application, or dropped with
    /// frames still to send. This is what the stream limit counts.
    pub fn num_streams(&self) -> usize {
        self.shared.lock().core.num_streams()
    }

    /// Bytes received and not yet read by the application, over all streams.
    pub fn buffered_bytes(&self) -> u64 {
        self.shared.lock().core.buffered_bytes()
    }
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps a socket on which `mode` was negotiated. Usually obtained through the [`Config`]
    /// connection upgrade instead.
    pub fn new(socket: C, config: Config, mode: Mode) -> Self {
        let driver = Arc::new(DriverWaker {
            // The first drive always runs.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        let driver_waker = Waker::from(driver.clone());
        let connection = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("mplex_halfclose", connection, ?mode);
        Self {
            io: Arc::new(Mutex::new(Io::new(
                socket,
                FrameWriter::new(Codec::new(mode)),
            ))),
            reader: FrameReader::new(Codec::new(mode)),
            socket_state: SocketState::Open,
            shared: Arc::new(Mutex::new(Shared::new(
                Connection::new(mode, config),
                driver_waker.clone(),
                span.clone(),
            ))),
            driver,
            driver_waker,
            driver_task: None,
            drives: 0,
            inbound_seen: None,
            mode,
            span,
        }
    }

    /// Ends the connection with `error`, waking every stream.
    fn fail(&mut self, error: ConnectionError) -> ConnectionError {
        match &error {
            // Once per connection at most: the connection ends here. An operator wants to see a
            // peer that breaks the protocol; a peer that goes away is routine.
            ConnectionError::ProtocolViolation(violation) => tracing::warn!(
                parent: &self.span,
                %violation,
                "peer violated the protocol; closing the connection"
            ),
            _ => tracing::debug!(parent: &self.span, %error, "connection failed"),
        }
        self.socket_state = SocketState::Closed;
        self.io.lock().closed = true;
        let mut shared = self.shared.lock();
        shared.core.close(error.clone());
        shared.dispatch_events();
        shared.core.closed().cloned().unwrap_or(error)
    }

    /// Drives the connection: sends queued frames, flushes, reads and handles frames.
    /// `Ready(Err)` once the connection has failed; otherwise `Pending`.
    /// `for_inbound`: the caller looks for inbound streams after the drive (`poll_inbound`).
    fn poll_drive(&mut self, cx: &mut Context<'_>, for_inbound: bool) -> Poll<ConnectionError> {
        if !self
            .driver_task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()))
        {
            self.driver_task = Some(cx.waker().clone());
            *self.driver.task.lock() = self.driver_task.clone();
            // `poll_inbound` registers the new task too.
            self.inbound_seen = None;
        }
        match self.socket_state {
            SocketState::Closed => {
                let shared = self.shared.lock();
                return Poll::Ready(
                    shared
                        .core
                        .closed()
                        .cloned()
                        .unwrap_or(ConnectionError::Closed),
                );
            }
            // Every source of work wakes `driver`; nothing did since the last drive.
            SocketState::Open if !self.driver.woken.swap(false, Ordering::AcqRel) => {
                return Poll::Pending;
            }
            _ => {}
        }
        // Past the early returns: only a drive that does work enters the span.
        let span = self.span.clone();
        let _entered = span.enter();
        let waker = self.driver_waker.clone();
        let cx = &mut Context::from_waker(&waker);
        let reading = self.socket_state == SocketState::Open;
        self.drives += 1;
        let drive = drive_rounds(
            &mut self.io.lock(),
            &mut self.reader,
            &self.shared,
            reading,
            for_inbound,
            cx,
        );
        match drive {
            Ok(Drive::Idle) => Poll::Pending,
            Ok(Drive::Yield) => {
                // Give other tasks a turn, but come back.
                waker.wake_by_ref();
                Poll::Pending
            }
            Err(e) => Poll::Ready(self.fail(e)),
        }
    }

    /// The connection's tracing span.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn new_stream(&self, id: StreamId) -> Stream {
        let io: Arc<dyn Pump> = self.io.clone();
        Stream::new(id, self.shared.clone(), Arc::downgrade(&io), self.mode)
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Substream = Stream;
    type Error = ConnectionError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let failed = this.poll_drive(cx, true);
        // Inbound streams arrive only in drives: with none since this task last looked, and its
        // waker still registered, there is nothing to take.
        if failed.is_pending() && this.inbound_seen == Some(this.drives) {
            return Poll::Pending;
        }
        let mut shared = this.shared.lock();
        // Streams that arrived before the connection ended are still handed out.
        if let Some(id) = shared.core.accept() {
            drop(shared);
            this.inbound_seen = None;
            tracing::debug!(parent: &this.span, stream = %id, "inbound stream");
            return Poll::Ready(Ok(this.new_stream(id)));
        }
        if let Poll::Ready(e) = failed {
            return Poll::Ready(Err(e));
        }
        store(&mut shared.inbound, cx.waker());
        this.inbound_seen = Some(this.drives);
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
        if let Poll::Ready(e) = this.poll_drive(cx, false) {
            return Poll::Ready(Err(e));
        }
        match opened {
            Ok(Some(id)) => {
                tracing::debug!(parent: &this.span, stream = %id, "outbound stream");
                Poll::Ready(Ok(this.new_stream(id)))
            }
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        let span = this.span.clone();
        let _entered = span.enter();
        if this.socket_state == SocketState::Open {
            tracing::debug!("closing the connection");
            this.socket_state = SocketState::Closing;
            this.io.lock().closed = true;
            let mut shared = this.shared.lock();
            shared.core.close(ConnectionError::Closed);
            shared.dispatch_events();
        }
        if this.socket_state == SocketState::Closing {
            let mut io = this.io.lock();
            if let Err(e) = io.poll_send(&this.shared, cx) {
                this.socket_state = SocketState::Closed;
                return Poll::Ready(Err(e));
            }
            if !io.writer.is_empty() {
                return Poll::Pending;
            }
            drop(io);
            let closed = Pin::new(&mut this.io.lock().socket).poll_close(cx);
            match closed {
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
        match self.get_mut().poll_drive(cx, false) {
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
        // The waker of the task that drove the muxer, which the socket may outlive.
        self.driver.task.lock().take();
    }
}

#[cfg(test)]
mod tests;
