//! [`Socket`]: the connection's socket, the frames on their way to it, and where the socket is
//! in its life, behind a lock of their own. It is the one owner of the socket's state, and
//! [`Socket::write_round`] the one place that moves frames from the core to the socket.
//!
//! Two kinds of task write through it. The driver (the task polling the muxer, see `driver`)
//! runs write rounds in every drive, between its reads. A stream's task runs them through
//! [`Pump`] right after it queued frames, but only on a free, idle socket (`try_lock`, nothing
//! waiting to be written or flushed): a stream never waits for the lock, and when the socket
//! cannot take everything, or is busy, the driver is woken to carry on (who sends when is
//! decided in `handle`). Locks are always taken in the order `Socket`, then [`Shared`]; a
//! stream releases `Shared` before it tries `Socket`.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::AsyncWrite;
use parking_lot::Mutex;

use super::{
    shared::Shared,
    writer::{FrameWriter, WriteProgress},
};
use crate::error::ConnectionError;

/// What one [`Socket::write_round`] did.
pub(crate) struct WriteRound<T> {
    /// What the round's `under_lock` returned.
    pub(crate) value: T,
    /// Frames were taken from the core.
    pub(crate) encoded: bool,
    /// The core still has frames waiting (the writer was full).
    pub(crate) more_to_send: bool,
    /// What the socket did; a flush it completed is the next round's to report.
    pub(crate) progress: WriteProgress,
}

/// Where the socket is in its life. Whenever it is not `Open`, the driver stays marked as woken
/// (`Driver::keep_awake_unless_open`), so that a drive with nothing to do can skip the lock.
#[derive(Debug, Clone)]
pub(crate) enum SocketState {
    /// Reading and writing.
    Open,
    /// `poll_close` was called: what is queued is sent, then the socket is closed; nothing is
    /// read.
    Closing,
    /// Closed by us, or ended by the peer or the transport; the connection's error, if any, is
    /// the core's.
    Closed,
    /// A write from a stream's task failed: the driver ends the connection with this error.
    Failed(ConnectionError),
}

/// The socket and its writer. See the module docs.
#[derive(Debug)]
pub(crate) struct Socket<C> {
    pub(crate) io: C,
    pub(crate) writer: FrameWriter,
    pub(crate) state: SocketState,
}

impl<C: AsyncWrite + Unpin> Socket<C> {
    pub(crate) fn new(io: C, writer: FrameWriter) -> Self {
        Self {
            io,
            writer,
            state: SocketState::Open,
        }
    }

    /// One write round. Under the [`Shared`] lock: reports the flush of the previous round
    /// (`flushed`), runs `under_lock` (the driver feeds the frames it read there), and takes
    /// the frames the core queued; then, without the lock, writes them and flushes.
    pub(crate) fn write_round<T>(
        &mut self,
        shared: &Mutex<Shared>,
        flushed: Option<u64>,
        under_lock: impl FnOnce(&mut Shared) -> Result<T, ConnectionError>,
        cx: &mut Context<'_>,
    ) -> Result<WriteRound<T>, ConnectionError> {
        let (value, encoded, more_to_send) = {
            let mut shared = shared.lock();
            if let Some(frames) = flushed {
                shared.on_flushed(frames);
            }
            let value = under_lock(&mut shared)?;
            let encoded = self.encode_outgoing(&mut shared);
            (value, encoded, shared.core.has_transmit())
        };
        if let SocketState::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let progress = self.writer.poll_write_out(&mut self.io, cx)?;
        Ok(WriteRound {
            value,
            encoded,
            more_to_send,
            progress,
        })
    }

    /// Write rounds until nothing more is taken from the core or by the socket (a flush the
    /// socket completed is reported by the round after it).
    pub(crate) fn send_queued(
        &mut self,
        shared: &Mutex<Shared>,
        cx: &mut Context<'_>,
    ) -> Result<(), ConnectionError> {
        let mut flushed = None;
        loop {
            let round = self.write_round(shared, flushed.take(), |_| Ok(()), cx)?;
            flushed = round.progress.flushed_frames;
            if !round.encoded && !round.progress.moved {
                return Ok(());
            }
        }
    }

    /// `poll_close`: sends what is queued, then closes the socket. A socket that failed in a
    /// stream's task reports that failure, once, and is closed.
    pub(crate) fn poll_close(
        &mut self,
        shared: &Mutex<Shared>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ConnectionError>> {
        if let SocketState::Failed(e) = &self.state {
            let e = e.clone();
            self.state = SocketState::Closed;
            return Poll::Ready(Err(e));
        }
        if matches!(self.state, SocketState::Open) {
            self.state = SocketState::Closing;
        }
        if matches!(self.state, SocketState::Closing) {
            if let Err(e) = self.send_queued(shared, cx) {
                self.state = SocketState::Closed;
                return Poll::Ready(Err(e));
            }
            if !self.writer.is_empty() {
                return Poll::Pending;
            }
            match Pin::new(&mut self.io).poll_close(cx) {
                Poll::Ready(result) => {
                    self.state = SocketState::Closed;
                    result?;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Moves frames the core has queued into the writer; true if there were any. The caller
    /// holds the [`Shared`] lock.
    fn encode_outgoing(&mut self, shared: &mut Shared) -> bool {
        // Spent bodies go back to the pool on every pass, also while the writer is full.
        for spent in self.writer.take_spent() {
            shared.pool.recycle(spent);
        }
        let was_reading = shared.core.wants_frames();
        let mut any = false;
        while self.writer.has_room() {
            let Some(frame) = shared.core.poll_transmit() else {
                break;
            };
            tracing::trace!(parent: &shared.span, ?frame, "send frame");
            self.writer.push(frame);
            any = true;
        }
        if any {
            self.writer.mark(shared.core.transmitted());
            shared.dispatch_events();
            // Answers to the peer that left the queue may let the connection read again
            // (`Connection::wants_frames`): the driver reads, whichever task sent them.
            if !was_reading && shared.core.wants_frames() {
                shared.wake_driver();
            }
        }
        any
    }
}

/// What a stream's task needs of the socket without knowing its type.
pub(crate) trait Pump: Send + Sync {
    /// Sends what the core has queued, from the calling task, if the socket is free and idle;
    /// otherwise, or when the socket cannot take it all, wakes the driver.
    fn pump(&self, shared: &Mutex<Shared>, cx: &mut Context<'_>);
}

impl<C: AsyncWrite + Unpin + Send> Pump for Mutex<Socket<C>> {
    fn pump(&self, shared: &Mutex<Shared>, cx: &mut Context<'_>) {
        let Some(mut socket) = self.try_lock() else {
            // The driver is at the socket; it sends what was queued before it lets go.
            shared.lock().wake_driver();
            return;
        };
        // Only an idle socket: once it backs up, the driver alone waits on it (a socket keeps
        // one waker, and streams taking turns at it would keep replacing the driver's).
        if !matches!(socket.state, SocketState::Open) || !socket.writer.is_idle() {
            shared.lock().wake_driver();
            return;
        }
        let done = match socket.send_queued(shared, cx) {
            Ok(()) => socket.writer.is_idle(),
            Err(e) => {
                socket.state = SocketState::Failed(e);
                false
            }
        };
        drop(socket);
        let mut shared = shared.lock();
        // What the socket did not take (its waker is this task's) and what was queued since
        // belong to the driver.
        if !done || shared.core.has_transmit() {
            shared.wake_driver();
        }
    }
}
