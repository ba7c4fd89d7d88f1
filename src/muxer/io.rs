//! [`Io`]: the socket and the frames on their way to it, behind a lock of their own.
//!
//! The driver (the task polling the muxer) reads and writes through it. A stream that has just
//! queued frames (data, a close, a window update) sends them itself, from its own task, when the
//! socket is idle: this saves the hop to the driver's task on every request and answer. Only a
//! free, idle socket is used (`try_lock`, nothing waiting to be written or flushed): a stream
//! never waits for the lock, and when the socket cannot take everything, or is busy, the driver
//! is woken to carry on. Locks are
//! always taken in the order `Io`, then [`Shared`]; a stream releases `Shared` before it tries
//! `Io`.

use std::task::Context;

use futures::AsyncWrite;
use parking_lot::Mutex;

use super::{
    Shared,
    writer::{FrameWriter, WriteProgress},
};
use crate::error::ConnectionError;

/// The socket and its writer.
#[derive(Debug)]
pub(crate) struct Io<C> {
    pub(crate) socket: C,
    pub(crate) writer: FrameWriter,
    /// A write by a stream's task failed: the driver ends the connection with this error.
    pub(crate) failed: Option<ConnectionError>,
    /// The connection is closing or closed: only the driver writes.
    pub(crate) closed: bool,
}

impl<C: AsyncWrite + Unpin> Io<C> {
    pub(crate) fn new(socket: C, writer: FrameWriter) -> Self {
        Self {
            socket,
            writer,
            failed: None,
            closed: false,
        }
    }

    /// Moves frames the core has queued into the writer; true if there were any. The caller
    /// holds the [`Shared`] lock.
    pub(crate) fn encode_outgoing(&mut self, shared: &mut Shared) -> bool {
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

    /// Writes encoded frames to the socket and flushes. The flush it reports is the caller's to
    /// pass to [`Shared::on_flushed`].
    pub(crate) fn poll_write_out(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Result<WriteProgress, ConnectionError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        Ok(self.writer.poll_write_out(&mut self.socket, cx)?)
    }

    /// Encodes and writes until the queue or the socket is exhausted, taking the [`Shared`]
    /// lock once per pass, never across I/O.
    pub(crate) fn poll_send(
        &mut self,
        shared: &Mutex<Shared>,
        cx: &mut Context<'_>,
    ) -> Result<(), ConnectionError> {
        let mut flushed = None;
        loop {
            let encoded = {
                let mut shared = shared.lock();
                if let Some(frames) = flushed.take() {
                    shared.on_flushed(frames);
                }
                self.encode_outgoing(&mut shared)
            };
            let progress = self.poll_write_out(cx)?;
            // A flush moved something, so its report is taken on the next pass.
            flushed = progress.flushed_frames;
            if !encoded && !progress.moved {
                return Ok(());
            }
        }
    }
}

/// What a stream needs of the socket without knowing its type.
pub(crate) trait Pump: Send + Sync {
    /// Sends what the core has queued, from the calling task, if the socket is free; otherwise,
    /// or when the socket cannot take it all, wakes the driver.
    fn pump(&self, shared: &Mutex<Shared>, cx: &mut Context<'_>);
}

impl<C: AsyncWrite + Unpin + Send> Pump for Mutex<Io<C>> {
    fn pump(&self, shared: &Mutex<Shared>, cx: &mut Context<'_>) {
        let Some(mut io) = self.try_lock() else {
            // The driver is at the socket; it sends what was queued before it lets go.
            shared.lock().wake_driver();
            return;
        };
        // Only an idle socket: once it backs up, the driver alone waits on it (a socket keeps
        // one waker, and streams taking turns at it would keep replacing the driver's).
        if io.closed || io.failed.is_some() || !io.writer.is_idle() {
            shared.lock().wake_driver();
            return;
        }
        let result = io.poll_send(shared, cx);
        let done = match result {
            Ok(()) => io.writer.is_idle(),
            Err(e) => {
                io.failed = Some(e);
                false
            }
        };
        drop(io);
        let mut shared = shared.lock();
        // What the socket did not take (its waker is this task's) and what was queued since
        // belong to the driver.
        if !done || shared.core.has_transmit() {
            shared.wake_driver();
        }
    }
}
