//! [`StreamHandle`]: a stream's calls on the connection, and the send policy: who writes what a
//! stream queued to the socket, and when.
//!
//! Every call locks [`Shared`], runs on the core ([`Shared::stream_call`]), and then decides
//! who sends the frames the call queued:
//!
//! - **The driver** (the task polling the muxer) by default: it is woken, and its next drive
//!   writes, gathering the frames of many streams into one write and taking turns between them.
//! - **The stream's own task** when the call waits for the socket or for the peer (a flush, a
//!   close-write, a close-read, a read that found nothing) and at most
//!   [`SEND_FROM_STREAM_LIMIT`] bytes of data wait: it pumps the socket itself through
//!   [`Pump`], if the socket is free and idle, which saves a wake-up of the driver's task on
//!   every request and answer. A socket that is busy or backs up is left to the driver.
//! - **Nobody yet** for a small write on a connection's only stream: as in a buffered writer,
//!   it waits for what the task does next (its flush, close or waiting read sends it, in one
//!   piece with what follows; so does the connection's next send). More than
//!   [`SEND_FROM_STREAM_LIMIT`] bytes waiting, or other streams on the connection, wake the
//!   driver at once.
//!
//! A reset or a drop has no task context: the driver sends what it queued.

use std::{
    io,
    sync::{Arc, Weak},
    task::{Context, Poll},
};

use parking_lot::{Mutex, MutexGuard};

use super::{shared::Shared, socket::Pump};
use crate::{
    core::{Connection, FlushWait, ReadOutcome, WriteOutcome},
    error::StreamError,
    frame::StreamId,
};

/// A stream's task sends queued frames itself only while at most this many bytes of data wait:
/// bulk data goes through the driver, which takes turns between streams.
const SEND_FROM_STREAM_LIMIT: usize = 16 * 1024;

/// One stream's access to its connection. See the module docs. Dropping it drops the stream
/// in the core (which sends what the drop rules say).
pub(crate) struct StreamHandle {
    id: StreamId,
    shared: Arc<Mutex<Shared>>,
    /// The connection's socket. Weak: the socket goes with the muxer, also while streams are
    /// still held.
    socket: Weak<dyn Pump>,
}

impl StreamHandle {
    pub(crate) fn new(id: StreamId, shared: Arc<Mutex<Shared>>, socket: Weak<dyn Pump>) -> Self {
        Self { id, shared, socket }
    }

    pub(crate) fn id(&self) -> StreamId {
        self.id
    }

    /// Reads received data into `buf`; `Ok(0)` at EOF.
    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let id = self.id;
        let mut shared = self.shared.lock();
        let result = match shared
            .stream_call(|core, pool| core.read_into(id, buf, |spent| pool.recycle(spent)))
        {
            Ok(ReadOutcome::Data(len)) => Poll::Ready(Ok(len)),
            Ok(ReadOutcome::Eof) => Poll::Ready(Ok(0)),
            Ok(ReadOutcome::Blocked) => {
                shared.register_read(id, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        };
        // A read may have granted the peer more credit.
        self.send_queued(shared, Some(cx));
        result
    }

    /// Queues data from `buf`, as much as the stream's credit and the connection's budget take.
    pub(crate) fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let id = self.id;
        let mut shared = self.shared.lock();
        let result = match shared
            .stream_call(|core, pool| core.write_with(id, buf, |data| pool.copy(data)))
        {
            Ok(WriteOutcome::Written(n)) => Poll::Ready(Ok(n)),
            Ok(WriteOutcome::Blocked) => {
                shared.register_write(id, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        };
        // The small-write rule (module docs). Measured: 8 streams opening and closing at once
        // over TCP took 0.71 of libp2p-mplex's time when each sent its own frames, 0.58 with
        // the driver gathering them; a request on the only stream sent by the driver's task
        // costs a round of that task.
        if shared.core.queued_bytes() > SEND_FROM_STREAM_LIMIT || shared.core.num_streams() > 1 {
            shared.wake_driver();
        }
        result
    }

    /// Resolves once everything written so far is flushed to the socket. A flush also makes a
    /// stream we opened known to the peer, even before its first frame.
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_call_flushed(cx, FlushWait::Flush, |core, id| {
            core.announce(id);
            Ok(())
        })
    }

    /// Queues Close behind the data and resolves once it is flushed (or the peer stopped
    /// reading).
    pub(crate) fn poll_close_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_call_flushed(cx, FlushWait::CloseWrite, |core, id| core.close_write(id))
    }

    /// Stops reading, queues CloseRead with `code`, and resolves once it is flushed (or the
    /// peer's Close says nothing more comes).
    pub(crate) fn poll_close_read(&self, cx: &mut Context<'_>, code: u64) -> Poll<io::Result<()>> {
        self.poll_call_flushed(cx, FlushWait::CloseRead, |core, id| {
            core.close_read(id, code)
        })
    }

    /// Resets the stream; the driver sends the Reset.
    pub(crate) fn reset(&self, code: u64) {
        let id = self.id;
        let mut shared = self.shared.lock();
        // Resetting a stream that is already reset, or whose connection is gone, has nothing
        // left to do.
        let _ = shared.stream_call(|core, _| core.reset(id, code));
        self.send_queued(shared, None);
    }

    /// The stream's receive window; `None` once the connection has ended.
    pub(crate) fn receive_window(&self) -> Option<u64> {
        let shared = self.shared.lock();
        if shared.core.closed().is_some() {
            return None;
        }
        shared.core.receive_window(self.id)
    }

    /// Sends the frames waiting in the core: from this task (`cx`) when little waits, else
    /// through the driver. See the module docs.
    fn send_queued(&self, mut shared: MutexGuard<'_, Shared>, cx: Option<&mut Context<'_>>) {
        if !shared.core.has_transmit() {
            return;
        }
        match cx {
            Some(cx) if shared.core.queued_bytes() <= SEND_FROM_STREAM_LIMIT => {
                // `Shared` is released before the socket is tried (lock order: socket, then
                // `Shared`).
                drop(shared);
                if let Some(socket) = self.socket.upgrade() {
                    socket.pump(&self.shared, cx);
                }
            }
            _ => shared.wake_driver(),
        }
    }

    /// Runs an application call on the core, then waits for what it queued to reach the
    /// socket, as `wait` says (see `Connection::poll_flushed`: the call also ends as soon as a
    /// reset, a stop, the peer's Close or the connection's end decides it). What waits is sent
    /// from this task when the socket is free.
    fn poll_call_flushed(
        &self,
        cx: &mut Context<'_>,
        wait: FlushWait,
        call: impl FnOnce(&mut Connection, StreamId) -> Result<(), StreamError>,
    ) -> Poll<io::Result<()>> {
        let id = self.id;
        let mut shared = self.shared.lock();
        if let Err(e) = shared.stream_call(|core, _| call(core, id)) {
            return Poll::Ready(Err(e.into()));
        }
        if shared.core.has_transmit() {
            // Send first, then wait: a flush by this very call must not wake this task.
            self.send_queued(shared, Some(cx));
            shared = self.shared.lock();
        }
        match shared.core.poll_flushed(id, wait) {
            Some(outcome) => Poll::Ready(outcome.map_err(io::Error::from)),
            None => {
                shared.register_flush(id, cx.waker());
                shared.wake_driver();
                Poll::Pending
            }
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let id = self.id;
        let mut shared = self.shared.lock();
        shared.stream_call(|core, _| core.drop_stream(id));
        shared.forget_stream(id);
        self.send_queued(shared, None);
    }
}
