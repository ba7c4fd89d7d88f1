//! The async layer: [`Muxer`], the `StreamMuxer` face of a connection, and what it is made of.
//! One file per decision:
//!
//! | module | its one job |
//! |---|---|
//! | `shared` | the state the muxer and its streams share (the core, the buffer pool, every waker) and who is woken on what the core reports |
//! | `driver` | when the task polling the muxer drives the connection, and what a drive does |
//! | `socket` | the socket, its state, and the one write round that moves frames from the core to it |
//! | `handle` | a stream's calls on the connection, and the send policy: who writes what a stream queued, and when |
//! | `reader`, `writer`, `pool` | bytes to frames, frames to bytes (with per-stream flush marks), and reused buffers |
//!
//! Two locks, taken in the order socket, then `Shared`. The socket's lock is held by whoever
//! writes or reads the socket (the driver, or a stream's task that pumps an idle socket, which
//! only ever `try_lock`s it); `Shared` is never held across I/O.

mod driver;
pub(crate) mod handle;
mod pool;
mod reader;
mod shared;
mod socket;
mod writer;

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::muxing::{StreamMuxer, StreamMuxerEvent};
use parking_lot::Mutex;

use crate::{
    codec::Codec,
    config::Config,
    core::Connection,
    error::ConnectionError,
    frame::{Mode, StreamId},
    stream::Stream,
};
use driver::Driver;
use handle::StreamHandle;
use reader::FrameReader;
use shared::{Shared, store};
use socket::{Pump, Socket, SocketState};
use writer::FrameWriter;

/// Numbers connections in this process for their tracing span, from 1.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// A multiplexed connection. Implements [`StreamMuxer`]; its streams are [`Stream`]s.
///
/// The `StreamMuxer` methods drive the connection (`poll` is enough to make progress). A stream
/// that queues frames sends them from its own task when the socket is free, and otherwise wakes
/// the task that polls the muxer.
///
/// # Errors
///
/// The `StreamMuxer` methods fail with a [`ConnectionError`] once the connection has ended:
/// [`ConnectionError::ProtocolViolation`] when the peer broke the protocol,
/// [`ConnectionError::Io`] when the transport failed, [`ConnectionError::Closed`] when the peer
/// closed the connection or after `poll_close`. Every stream then fails with the same cause.
/// `poll_inbound` still hands out the streams that arrived before the end.
pub struct Muxer<C> {
    socket: Arc<Mutex<Socket<C>>>,
    reader: FrameReader,
    shared: Arc<Mutex<Shared>>,
    driver: Driver,
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
        let driver = Driver::new();
        let connection = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("mplex_halfclose", connection, ?mode);
        Self {
            socket: Arc::new(Mutex::new(Socket::new(
                socket,
                FrameWriter::new(Codec::new(mode)),
            ))),
            reader: FrameReader::new(Codec::new(mode)),
            shared: Arc::new(Mutex::new(Shared::new(
                Connection::new(mode, config),
                driver.waker().clone(),
                span.clone(),
            ))),
            driver,
            mode,
            span,
        }
    }

    /// Drives the connection (see `driver`): `Ready` with the connection's error once it has
    /// ended, otherwise `Pending`.
    fn poll_drive(&mut self, cx: &mut Context<'_>, for_inbound: bool) -> Poll<ConnectionError> {
        self.driver.poll_drive(
            &self.socket,
            &mut self.reader,
            &self.shared,
            &self.span,
            for_inbound,
            cx,
        )
    }

    /// The connection's tracing span.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn new_stream(&self, id: StreamId) -> Stream {
        let socket: Arc<dyn Pump> = self.socket.clone();
        let handle = StreamHandle::new(id, self.shared.clone(), Arc::downgrade(&socket));
        Stream::new(handle, self.mode)
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
        if failed.is_pending() && this.driver.inbound_unchanged() {
            return Poll::Pending;
        }
        let mut shared = this.shared.lock();
        // Streams that arrived before the connection ended are still handed out.
        if let Some(id) = shared.core.accept() {
            drop(shared);
            this.driver.inbound_taken();
            tracing::debug!(parent: &this.span, stream = %id, "inbound stream");
            return Poll::Ready(Ok(this.new_stream(id)));
        }
        if let Poll::Ready(e) = failed {
            return Poll::Ready(Err(e));
        }
        store(&mut shared.inbound, cx.waker());
        this.driver.inbound_looked();
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
        let mut socket = this.socket.lock();
        // The connection's cause is `Closed`, also when a stream's task found the socket failed
        // since the last drive: `poll_close` reports that failure, the streams the close.
        if matches!(socket.state, SocketState::Open | SocketState::Failed(_)) {
            tracing::debug!(parent: &this.span, "closing the connection");
            let mut shared = this.shared.lock();
            shared.core.close(ConnectionError::Closed);
            shared.dispatch_events();
        }
        let _entered = this.span.enter();
        let closed = socket.poll_close(&this.shared, cx);
        this.driver.keep_awake_unless_open(&socket);
        closed
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
    }
}

#[cfg(test)]
mod tests;
