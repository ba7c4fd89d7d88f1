//! [`Stream`]: one multiplexed stream, `AsyncRead + AsyncWrite` with half-close.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite, future::poll_fn};
use parking_lot::{Mutex, MutexGuard};

use crate::{
    core::{Connection, FlushWait, ReadOutcome, WriteOutcome},
    error::StreamError,
    frame::{Mode, StreamId},
    muxer::{Pump, Shared},
};

/// A stream sends queued frames from its own task only while at most this many bytes of data
/// wait: bulk data goes through the driver, which takes turns between streams.
const SEND_FROM_STREAM_LIMIT: usize = 16 * 1024;

/// One stream of a [`crate::Muxer`].
///
/// Reading and writing are independent directions, each closed on its own:
///
/// | call | we send | our side afterwards | the peer sees |
/// |---|---|---|---|
/// | [`close_write`](Stream::close_write) / `poll_close` | Close (after all data) | writes fail `BrokenPipe` | all data, then EOF |
/// | [`close_read`](Stream::close_read) | CloseRead (extension mode) | reads give EOF, unread data dropped | writes fail `BrokenPipe` |
/// | [`reset`](Stream::reset) | Reset | reads and writes fail `ConnectionReset` | the same |
///
/// Dropping the stream sends what the drop rules in the crate docs say.
///
/// # Errors
///
/// Reads and writes fail with an `io::Error` whose inner error is a [`StreamError`]:
/// - a read: `ConnectionReset` once the stream was reset (data still unread is dropped), or the
///   connection's error. After the peer closed its write side, or after
///   [`close_read`](Stream::close_read), reads return `Ok(0)` instead.
/// - a write: `BrokenPipe` after our close-write ([`StreamError::WriteClosed`]) or once the
///   peer stopped reading ([`StreamError::Stopped`], with its code); `ConnectionReset` once the
///   stream was reset; or the connection's error.
/// - a flush: as a write (`ConnectionReset` once the stream was reset, `BrokenPipe` once the
///   peer stopped reading, or the connection's error), also while it waits for the socket.
///
/// Every call that waits ends as soon as an event decides it: a read, a write, a flush, a
/// close-write or a close-read waiting for data, credit or the socket wakes on the peer's Reset,
/// on the peer's CloseRead (writes, flushes and closes), on the peer's Close (reads and
/// close-reads), on a protocol violation or transport failure, and when the muxer is dropped.
/// `tests/wakeups.rs` checks every cell of that table.
///
/// The connection's errors are `InvalidData` (the peer violated the protocol),
/// `ConnectionAborted` (the connection closed, or its transport broke or was reset) or the
/// transport's own kind. The crate docs have the whole table.
pub struct Stream {
    id: StreamId,
    shared: Arc<Mutex<Shared>>,
    /// The connection's socket, for sending what this stream queues. Weak: the socket goes
    /// with the muxer, also while streams are still held.
    io: Weak<dyn Pump>,
    mode: Mode,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("mode", &self.mode)
            .finish()
    }
}

impl Stream {
    pub(crate) fn new(
        id: StreamId,
        shared: Arc<Mutex<Shared>>,
        io: Weak<dyn Pump>,
        mode: Mode,
    ) -> Self {
        Self {
            id,
            shared,
            io,
            mode,
        }
    }

    /// The stream's id on this connection.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The protocol the connection speaks: whether close-read reaches the peer.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The stream's receive window: how much the peer may send before this side reads
    /// (extension mode). It starts at 256 KiB and doubles when the stream consumed half of it in
    /// under two round trips, twice in a row, up to [`Config::set_max_stream_window`]. `None` in
    /// plain-mplex mode, which has no window, and once the connection has ended.
    ///
    /// [`Config::set_max_stream_window`]: crate::Config::set_max_stream_window
    pub fn receive_window(&self) -> Option<u64> {
        if self.mode == Mode::PlainMplex {
            return None;
        }
        let shared = self.shared.lock();
        if shared.core.closed().is_some() {
            return None;
        }
        shared.core.receive_window(self.id)
    }

    /// Closes the write direction: sends Close behind everything written, and resolves once it
    /// is flushed. The peer reads all the data, then EOF. Later writes fail with `BrokenPipe`.
    /// Idempotent. Once the peer has stopped reading (also while this call waits for the
    /// socket), the direction is finished either way: it resolves at once, and data the peer
    /// would discard is dropped. Same as `AsyncWriteExt::close`.
    ///
    /// # Errors
    ///
    /// `ConnectionReset` if the stream was reset (by either side) before the Close was flushed;
    /// the connection's error (`InvalidData`, `ConnectionAborted` or the transport's kind) if
    /// the connection failed or closed before everything was flushed. The inner error is a
    /// [`StreamError`].
    pub async fn close_write(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_close_write(cx)).await
    }

    /// Poll form of [`Stream::close_write`].
    ///
    /// # Errors
    ///
    /// As [`Stream::close_write`].
    pub fn poll_close_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_call_flushed(cx, FlushWait::CloseWrite, |core, id| core.close_write(id))
    }

    /// Closes the read direction (stop-sending): unread data is dropped, later reads return
    /// `Ok(0)`, data that still arrives is discarded. In extension mode the peer is told: its
    /// writes fail with `BrokenPipe` and it answers with Close. Resolves when the signal is
    /// flushed, or as soon as the peer's Close says that nothing more comes. In plain-mplex mode
    /// nothing can be sent, so this only acts locally and resolves at once (see the drop rules
    /// in the crate docs for what dropping the stream then sends). Idempotent.
    ///
    /// # Errors
    ///
    /// `ConnectionReset` if the stream was reset (by either side); the connection's error
    /// (`InvalidData`, `ConnectionAborted` or the transport's kind) if the connection failed or
    /// closed before the signal was flushed. The inner error is a [`StreamError`].
    pub async fn close_read(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_close_read_with_code(cx, 0)).await
    }

    /// [`Stream::close_read`] with an error code the peer's failed write carries
    /// (see [`StreamError::code`]; extension mode only, plain mplex cannot send it).
    ///
    /// # Errors
    ///
    /// As [`Stream::close_read`].
    pub async fn close_read_with_code(&mut self, code: u64) -> io::Result<()> {
        poll_fn(|cx| self.poll_close_read_with_code(cx, code)).await
    }

    /// Poll form of [`Stream::close_read`].
    ///
    /// # Errors
    ///
    /// As [`Stream::close_read`].
    pub fn poll_close_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_close_read_with_code(cx, 0)
    }

    /// Poll form of [`Stream::close_read_with_code`].
    ///
    /// # Errors
    ///
    /// As [`Stream::close_read`].
    pub fn poll_close_read_with_code(
        &mut self,
        cx: &mut Context<'_>,
        code: u64,
    ) -> Poll<io::Result<()>> {
        self.poll_call_flushed(cx, FlushWait::CloseRead, |core, id| {
            core.close_read(id, code)
        })
    }

    /// Resets the stream: both directions fail with `ConnectionReset` on both sides. Data not
    /// yet sent or read is dropped. A no-op on a stream already reset or on a connection that
    /// has ended; never fails.
    pub fn reset(&mut self) {
        self.reset_with_code(0)
    }

    /// [`Stream::reset`] with an error code the peer can read back (extension mode only; plain
    /// mplex has no room for it: the code is 0, on both sides).
    pub fn reset_with_code(&mut self, code: u64) {
        let id = self.id;
        let mut shared = self.shared.lock();
        // Resetting a stream that is already reset, or whose connection is gone, has nothing
        // left to do.
        let _ = shared.stream_call(|core, _| core.reset(id, code));
        // No task context here: the driver sends the Reset.
        self.send_queued(shared, None);
    }

    /// Sends the frames waiting in the core: from this task when the socket is free and little
    /// waits (a request, an answer, a close: this saves a wake-up of the driver's task), else
    /// through the driver, which shares the socket fairly between streams.
    fn send_queued(&self, mut shared: MutexGuard<'_, Shared>, cx: Option<&mut Context<'_>>) {
        if !shared.core.has_transmit() {
            return;
        }
        match cx {
            Some(cx) if shared.core.queued_bytes() <= SEND_FROM_STREAM_LIMIT => {
                drop(shared);
                if let Some(io) = self.io.upgrade() {
                    io.pump(&self.shared, cx);
                }
            }
            _ => shared.wake_driver(),
        }
    }

    /// Runs an application call on the core (see [`Shared::stream_call`]), then waits for what
    /// it queued to reach the socket, as `wait` says (see `Connection::poll_flushed`: the call
    /// also ends as soon as a reset, a stop, the peer's Close or the connection's end decides
    /// it). What waits is sent from this task when the socket is free.
    fn poll_call_flushed(
        &self,
        cx: &mut Context<'_>,
        wait: FlushWait,
        f: impl FnOnce(&mut Connection, StreamId) -> Result<(), StreamError>,
    ) -> Poll<io::Result<()>> {
        let id = self.id;
        let mut shared = self.shared.lock();
        if let Err(e) = shared.stream_call(|core, _| f(core, id)) {
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

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
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
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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
        // A little data on the only stream waits for what the task does next, as in a buffered
        // writer: its flush, close or waiting read sends it from this task, together with what
        // follows, in one piece (see `poll_call_flushed`); so does the connection's next send.
        // Waking the driver's task for it would cost a round of that task per request. More
        // data, or other streams on the connection, are the driver's at once: it gathers the
        // frames of many streams into one write (8 streams opening and closing at once over TCP
        // took 0.71 of libp2p-mplex's time when each sent its own, 0.58 this way).
        if shared.core.queued_bytes() > SEND_FROM_STREAM_LIMIT || shared.core.num_streams() > 1 {
            shared.wake_driver();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A flush makes a stream we opened known to the peer, even before its first frame.
        self.poll_call_flushed(cx, FlushWait::Flush, |core, id| {
            core.announce(id);
            Ok(())
        })
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_write(cx)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let id = self.id;
        let mut shared = self.shared.lock();
        shared.stream_call(|core, _| core.drop_stream(id));
        shared.forget_stream(id);
        self.send_queued(shared, None);
    }
}
