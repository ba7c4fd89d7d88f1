//! [`Driver`]: when the task that polls the muxer drives the connection, and what one drive does.
//!
//! Every `StreamMuxer` method drives: rounds of feeding the frames read to the core, a write
//! round on the [`Socket`] and a read from it, until none of them has anything left to do or
//! the drive has run [`MAX_ROUNDS_PER_POLL`] rounds. A drive runs only when something woke the
//! driver since the last one ([`DriverWaker`]): the socket, a stream that queued frames or made
//! room to read, or `poll_close`. A swarm connection polls the muxer two or three times per
//! wake-up, so a drive with nothing to do must cost no more than an atomic swap.
//!
//! The driver also knows whether a drive has happened since `poll_inbound` last found nothing,
//! because inbound streams only arrive in drives.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures::{AsyncRead, AsyncWrite};
use parking_lot::Mutex;

use super::{
    reader::FrameReader,
    shared::Shared,
    socket::{Socket, SocketState},
};
use crate::error::ConnectionError;

/// How many rounds of reading and writing one drive does before it yields to other tasks.
const MAX_ROUNDS_PER_POLL: usize = 64;

/// The waker the driver hands to the socket and to its streams. It notes that the connection
/// has work before it wakes the driving task, so that a drive with nothing to do costs one atomic
/// swap.
#[derive(Debug)]
struct DriverWaker {
    /// Something happened since the last drive: the socket became ready, or a stream queued
    /// frames or made room to read.
    woken: AtomicBool,
    /// The driving task. Kept, not taken, on a wake: a swarm connection polls the muxer two or
    /// three times per wake-up, and re-registering each time was a measurable share of a
    /// request's cost.
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

/// How a drive's rounds ended.
enum Drive {
    /// Nothing more to do until a wake-up.
    Idle,
    /// There may be more, but the drive gave other tasks a turn.
    Yield,
}

/// The driver's side of the muxer: its waker, the task it wakes, and the drive count. See the
/// module docs.
#[derive(Debug)]
pub(crate) struct Driver {
    shared_waker: Arc<DriverWaker>,
    /// `shared_waker` as a `Waker`: handed to the socket, and through [`Shared`] to streams.
    waker: Waker,
    /// The task last registered in `shared_waker`.
    task: Option<Waker>,
    /// How many drives did work so far.
    drives: u64,
    /// After `poll_inbound` found nothing and registered `task` for inbound streams: the drive
    /// count then. Cleared when the driving task changes.
    inbound_seen: Option<u64>,
}

impl Driver {
    pub(crate) fn new() -> Self {
        let shared_waker = Arc::new(DriverWaker {
            // The first drive always runs.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Self {
            waker: Waker::from(shared_waker.clone()),
            shared_waker,
            task: None,
            drives: 0,
            inbound_seen: None,
        }
    }

    /// The waker that wakes the driver: for [`Shared::new`].
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Drives the connection: sends queued frames, flushes, reads and handles frames, and on a
    /// failure ends the connection (see [`end_connection`]). `Ready` with the connection's error
    /// once it has ended; otherwise `Pending`. `for_inbound`: the caller looks for inbound
    /// streams after the drive (`poll_inbound`).
    pub(crate) fn poll_drive<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        socket: &Mutex<Socket<C>>,
        reader: &mut FrameReader,
        shared: &Mutex<Shared>,
        span: &tracing::Span,
        for_inbound: bool,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionError> {
        self.register(cx.waker());
        // Every source of work wakes the driver, and a socket that is not open always has work
        // (see `keep_awake_unless_open`): nothing did since the last drive, so the socket is
        // open and idle, and no lock is taken.
        if !self.shared_waker.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut socket = socket.lock();
        let result = match socket.state {
            SocketState::Closed => Poll::Ready(
                shared
                    .lock()
                    .core
                    .closed()
                    .cloned()
                    .unwrap_or(ConnectionError::Closed),
            ),
            // Open, closing, or a failed write to turn into the connection's end.
            _ => {
                // Only a drive that does work enters the span.
                let _entered = span.enter();
                let cx = &mut Context::from_waker(&self.waker);
                self.drives += 1;
                match drive_rounds(&mut socket, reader, shared, for_inbound, cx) {
                    Ok(Drive::Idle) => Poll::Pending,
                    Ok(Drive::Yield) => {
                        // Give other tasks a turn, but come back.
                        self.waker.wake_by_ref();
                        Poll::Pending
                    }
                    Err(e) => Poll::Ready(end_connection(&mut socket, shared, span, e)),
                }
            }
        };
        self.keep_awake_unless_open(&socket);
        result
    }

    /// A socket that is closing, closed or failed has work for every drive (sending what is
    /// left, or reporting the end): the driver stays marked as woken, so that the check at the
    /// top of [`Driver::poll_drive`] never skips it. Called by whoever changes the socket's
    /// state on the muxer's task, with the socket locked.
    pub(crate) fn keep_awake_unless_open<C>(&self, socket: &Socket<C>) {
        if !matches!(socket.state, SocketState::Open) {
            self.shared_waker.woken.store(true, Ordering::Release);
        }
    }

    /// Whether `poll_inbound` may skip looking for inbound streams: it found none last time,
    /// with this task registered, and no drive has run since.
    pub(crate) fn inbound_unchanged(&self) -> bool {
        self.inbound_seen == Some(self.drives)
    }

    /// `poll_inbound` found nothing and registered its task.
    pub(crate) fn inbound_looked(&mut self) {
        self.inbound_seen = Some(self.drives);
    }

    /// `poll_inbound` handed out a stream: the next call looks again.
    pub(crate) fn inbound_taken(&mut self) {
        self.inbound_seen = None;
    }

    fn register(&mut self, waker: &Waker) {
        if !self.task.as_ref().is_some_and(|task| task.will_wake(waker)) {
            self.task = Some(waker.clone());
            *self.shared_waker.task.lock() = self.task.clone();
            // `poll_inbound` registers the new task too.
            self.inbound_seen = None;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The waker of the task that drove the muxer, which the socket and streams may outlive.
        self.shared_waker.task.lock().take();
    }
}

/// Ends the connection with `error`: the socket is closed for good, the core fails every
/// stream, and every waiting task is woken. Returns the connection's error (the first one, if
/// it had ended already).
fn end_connection<C>(
    socket: &mut Socket<C>,
    shared: &Mutex<Shared>,
    span: &tracing::Span,
    error: ConnectionError,
) -> ConnectionError {
    match &error {
        // Once per connection at most: the connection ends here. An operator wants to see a
        // peer that breaks the protocol; a peer that goes away is routine.
        ConnectionError::ProtocolViolation(violation) => tracing::warn!(
            parent: span,
            %violation,
            "peer violated the protocol; closing the connection"
        ),
        _ => tracing::debug!(parent: span, %error, "connection failed"),
    }
    socket.state = SocketState::Closed;
    let mut shared = shared.lock();
    shared.core.close(error.clone());
    shared.dispatch_events();
    shared.core.closed().cloned().unwrap_or(error)
}

/// Rounds of: a write round on the socket, in which the frames read so far are fed to the core
/// under the [`Shared`] lock; then a read from the socket. Another round follows only when it
/// has something to do: bytes were read, a flush is to be reported, or the socket took bytes
/// while more wait. Every other change wakes the driver.
fn drive_rounds<C: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut Socket<C>,
    reader: &mut FrameReader,
    shared: &Mutex<Shared>,
    for_inbound: bool,
    cx: &mut Context<'_>,
) -> Result<Drive, ConnectionError> {
    let reading = matches!(socket.state, SocketState::Open);
    let mut flushed = None;
    if for_inbound {
        // The task looks for inbound streams after this drive: a stream the drive accepts need
        // not wake it.
        shared.lock().inbound = None;
    }
    for _ in 0..MAX_ROUNDS_PER_POLL {
        let round = socket.write_round(
            shared,
            flushed.take(),
            |shared| Ok(reading && feed_frames(reader, shared)?),
            cx,
        )?;
        // A flush moved something: its report is taken in the next round.
        flushed = round.progress.flushed_frames;
        let read = if round.value {
            let polled = if reader.is_eof() {
                // Every complete frame was handled and no more bytes will come.
                Err(reader.finish())
            } else {
                match reader.poll_fill(&mut socket.io, cx) {
                    Poll::Ready(Ok(())) => Ok(true),
                    Poll::Ready(Err(e)) => Err(e.into()),
                    Poll::Pending => Ok(false),
                }
            };
            match polled {
                Ok(read) => read,
                Err(e) => {
                    // What this round flushed did leave: the flushes and closes waiting on it
                    // succeed.
                    if let Some(frames) = flushed {
                        shared.lock().on_flushed(frames);
                    }
                    return Err(e);
                }
            }
        } else {
            false
        };
        let socket_took_more =
            round.progress.moved && (round.more_to_send || !socket.writer.is_empty());
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
