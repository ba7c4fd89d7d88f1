//! [`Stream`]: one multiplexed stream, `AsyncRead + AsyncWrite` with half-close. It translates
//! the I/O traits and the half-close calls into calls on its connection; when what they queue
//! is sent is decided in `muxer::handle`.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite, future::poll_fn};

#[cfg(doc)]
use crate::error::StreamError;
use crate::{
    frame::{Mode, StreamId},
    muxer::handle::StreamHandle,
};

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
    handle: StreamHandle,
    mode: Mode,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.handle.id())
            .field("mode", &self.mode)
            .finish()
    }
}

impl Stream {
    pub(crate) fn new(handle: StreamHandle, mode: Mode) -> Self {
        Self { handle, mode }
    }

    /// The stream's id on this connection.
    pub fn id(&self) -> StreamId {
        self.handle.id()
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
        self.handle.receive_window()
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
        self.handle.poll_close_write(cx)
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
        self.handle.poll_close_read(cx, code)
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
        self.handle.reset(code)
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
        self.handle.poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.handle.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.poll_close_write(cx)
    }
}
