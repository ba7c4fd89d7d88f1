//! The driver harness: a task that drives any `StreamMuxer`, in-memory muxer pairs, raw frames
//! for tests that play a peer, and small helpers for tests.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    StreamExt,
    channel::{mpsc, oneshot},
    future::poll_fn,
};
use libp2p_core::muxing::{StreamMuxer, StreamMuxerExt};
use libp2p_mplex_halfclose::{Config, Mode, Muxer};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// `v` as an unsigned varint, as mplex writes numbers.
pub fn varint(v: u64) -> Vec<u8> {
    unsigned_varint::encode::u64(v, &mut unsigned_varint::encode::u64_buffer()).to_vec()
}

/// A multistream-select message: its length, the text, a newline.
pub fn multistream_message(text: &str) -> Vec<u8> {
    let mut out = varint(text.len() as u64 + 1);
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out
}

/// An mplex frame as a peer, the initiator of its streams, writes it (for tests that play a
/// peer with raw bytes).
pub fn peer_frame(num: u64, flag: u64, body: &[u8]) -> Vec<u8> {
    let mut out = varint(num << 3 | flag);
    out.extend(varint(body.len() as u64));
    out.extend_from_slice(body);
    out
}

/// A muxer driven by its own task: open and accept streams from anywhere.
pub struct Driven<S> {
    open_tx: mpsc::UnboundedSender<oneshot::Sender<S>>,
    inbound_rx: mpsc::UnboundedReceiver<S>,
    /// Resolves with the muxer's error when the connection ends.
    pub ended: Option<oneshot::Receiver<String>>,
}

/// Opens streams on a [`Driven`] muxer from anywhere, while another task accepts.
pub struct Opener<S> {
    open_tx: mpsc::UnboundedSender<oneshot::Sender<S>>,
}

impl<S> Opener<S> {
    pub async fn open(&self) -> S {
        let (tx, rx) = oneshot::channel();
        self.open_tx.unbounded_send(tx).expect("driver alive");
        rx.await.expect("driver opened a stream")
    }
}

impl<S: Send + 'static> Driven<S> {
    pub fn opener(&self) -> Opener<S> {
        Opener {
            open_tx: self.open_tx.clone(),
        }
    }

    pub async fn open(&self) -> S {
        let (tx, rx) = oneshot::channel();
        self.open_tx.unbounded_send(tx).expect("driver alive");
        rx.await.expect("driver opened a stream")
    }

    pub async fn accept(&mut self) -> S {
        self.inbound_rx.next().await.expect("driver alive")
    }

    /// The next inbound stream, or `None` once the connection has ended.
    pub async fn try_accept(&mut self) -> Option<S> {
        self.inbound_rx.next().await
    }

    /// The error the connection ended with.
    pub async fn ended(&mut self) -> String {
        self.ended
            .take()
            .expect("ended once")
            .await
            .expect("driver reports its end")
    }
}

/// Spawns a task that polls `muxer` until the connection ends.
pub fn drive<M>(muxer: M) -> Driven<M::Substream>
where
    M: StreamMuxer + Unpin + Send + 'static,
    M::Substream: Send + 'static,
    M::Error: std::fmt::Display,
{
    drive_with(muxer, |_| {})
}

/// What a test can watch of a driven muxer of ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    pub buffered: u64,
    pub max_buffered: u64,
    pub streams: usize,
}

/// Drives one of our muxers and publishes its buffered bytes after every poll.
pub fn drive_observed(
    muxer: Muxer<MemorySocket>,
) -> (
    Driven<libp2p_mplex_halfclose::Stream>,
    tokio::sync::watch::Receiver<Observed>,
) {
    let (tx, rx) = tokio::sync::watch::channel(Observed::default());
    let driven = drive_with(muxer, move |m: &Muxer<MemorySocket>| {
        let buffered = m.buffered_bytes();
        let streams = m.num_streams();
        tx.send_if_modified(|o| {
            let new = Observed {
                buffered,
                max_buffered: o.max_buffered.max(buffered),
                streams,
            };
            let changed = new != *o;
            *o = new;
            changed
        });
    });
    (driven, rx)
}

/// Spawns a task that polls `muxer` until the connection ends, calling `observe` after each poll.
pub fn drive_with<M>(muxer: M, observe: impl FnMut(&M) + Send + 'static) -> Driven<M::Substream>
where
    M: StreamMuxer + Unpin + Send + 'static,
    M::Substream: Send + 'static,
    M::Error: std::fmt::Display,
{
    spawn_driver(muxer, observe, false)
}

/// Like [`drive`], but the task also ends, dropping the muxer and so closing its socket, once
/// the [`Driven`] and every [`Opener`] are dropped: for benchmarks that make one connection per
/// measurement and must not keep them all open.
pub fn drive_while_held<M>(muxer: M) -> Driven<M::Substream>
where
    M: StreamMuxer + Unpin + Send + 'static,
    M::Substream: Send + 'static,
    M::Error: std::fmt::Display,
{
    spawn_driver(muxer, |_| {}, true)
}

/// How many [`drive_while_held`] drivers are still running (closing, or not yet released).
static HELD_DRIVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits until every [`drive_while_held`] driver has ended: a measurement of memory must not
/// count what connections of earlier measurements free while they close. Yields between looks;
/// gives up after 100,000 of them.
pub async fn held_drivers_ended() {
    for _ in 0..100_000 {
        if HELD_DRIVERS.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
}

fn spawn_driver<M>(
    mut muxer: M,
    mut observe: impl FnMut(&M) + Send + 'static,
    end_when_released: bool,
) -> Driven<M::Substream>
where
    M: StreamMuxer + Unpin + Send + 'static,
    M::Substream: Send + 'static,
    M::Error: std::fmt::Display,
{
    let (open_tx, mut open_rx) = mpsc::unbounded::<oneshot::Sender<M::Substream>>();
    let (inbound_tx, inbound_rx) = mpsc::unbounded();
    let (ended_tx, ended_rx) = oneshot::channel();
    if end_when_released {
        HELD_DRIVERS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
    tokio::spawn(async move {
        let mut pending_open = None;
        let mut released = false;
        let error = poll_fn(|cx: &mut Context<'_>| {
            if !released {
                let result = poll_once(
                    &mut muxer,
                    cx,
                    &mut pending_open,
                    &mut open_rx,
                    &inbound_tx,
                    end_when_released,
                );
                observe(&muxer);
                match result {
                    Poll::Ready(e) if e == RELEASED => released = true,
                    other => return other,
                }
            }
            // Closed, not just dropped: frames the streams queued still go out (libp2p-mplex
            // drops them with the muxer).
            match muxer.poll_close_unpin(cx) {
                Poll::Ready(_) => Poll::Ready(RELEASED.to_string()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        drop(muxer);
        if end_when_released {
            HELD_DRIVERS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        let _ = ended_tx.send(error);
    });
    Driven {
        open_tx,
        inbound_rx,
        ended: Some(ended_rx),
    }
}

type OpenRequest<S> = oneshot::Sender<S>;

/// How a [`drive_while_held`] driver ends once its handles are gone.
const RELEASED: &str = "released";

fn poll_once<M>(
    muxer: &mut M,
    cx: &mut Context<'_>,
    pending_open: &mut Option<OpenRequest<M::Substream>>,
    open_rx: &mut mpsc::UnboundedReceiver<OpenRequest<M::Substream>>,
    inbound_tx: &mpsc::UnboundedSender<M::Substream>,
    end_when_released: bool,
) -> Poll<String>
where
    M: StreamMuxer + Unpin,
    M::Error: std::fmt::Display,
{
    loop {
        // Inbound first: streams that arrived before the connection ended are still handed out.
        match muxer.poll_inbound_unpin(cx) {
            Poll::Ready(Ok(s)) => {
                let _ = inbound_tx.unbounded_send(s);
                continue;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(e.to_string()),
            Poll::Pending => {}
        }
        if let Poll::Ready(Err(e)) = muxer.poll_unpin(cx) {
            return Poll::Ready(e.to_string());
        }
        if pending_open.is_none() {
            match open_rx.poll_next_unpin(cx) {
                Poll::Ready(Some(req)) => *pending_open = Some(req),
                Poll::Ready(None) if end_when_released => {
                    return Poll::Ready(RELEASED.to_string());
                }
                _ => {}
            }
        }
        if let Some(req) = pending_open.take() {
            match muxer.poll_outbound_unpin(cx) {
                Poll::Ready(Ok(s)) => {
                    let _ = req.send(s);
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(e.to_string()),
                Poll::Pending => *pending_open = Some(req),
            }
        }
        return Poll::Pending;
    }
}

pub type MemorySocket = Compat<tokio::io::DuplexStream>;

/// Two of our muxers over an in-memory pipe.
pub fn memory_pair(mode: Mode, config: Config) -> (Muxer<MemorySocket>, Muxer<MemorySocket>) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    (
        Muxer::new(a.compat(), config.clone(), mode),
        Muxer::new(b.compat(), config, mode),
    )
}

pub fn driven_pair(
    mode: Mode,
    config: Config,
) -> (
    Driven<libp2p_mplex_halfclose::Stream>,
    Driven<libp2p_mplex_halfclose::Stream>,
) {
    let (a, b) = memory_pair(mode, config);
    (drive(a), drive(b))
}

/// Deterministic pseudo-random bytes for transfer checks.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// A generous bound so that a hung test fails instead of running forever.
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test did not hang")
}

/// Runs `case` on a fresh pair of driven muxers (a memory pipe, the default config) for each
/// mode of `modes`, each run within the hang bound of [`within`]. `case` gets the mode, the
/// side that opens and the side that accepts.
pub async fn on_a_pair_in<F, Fut>(modes: impl IntoIterator<Item = Mode>, mut case: F)
where
    F: FnMut(
        Mode,
        Driven<libp2p_mplex_halfclose::Stream>,
        Driven<libp2p_mplex_halfclose::Stream>,
    ) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for mode in modes {
        let (a, b) = driven_pair(mode, Config::default());
        within(case(mode, a, b)).await;
    }
}

pub fn both_modes() -> [Mode; 2] {
    [Mode::Extension, Mode::PlainMplex]
}

/// Pins for use with `poll_fn`.
pub fn pinned<T: Unpin>(t: &mut T) -> Pin<&mut T> {
    Pin::new(t)
}
