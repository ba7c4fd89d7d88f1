//! A transport that answers at random with `Pending`, short reads and short writes never changes
//! the data the muxer delivers, in both modes: every stream's bytes arrive whole, in order, once,
//! and half-closes and answers still work. Seeded; `CHAOS_SEED=n` replays one seed.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, future};
use libp2p_mplex_halfclose::{Config, Mode, Muxer};
use rand::{Rng, SeedableRng, rngs::StdRng};
use test_support::driven::*;

/// Wraps a socket: each call may return `Pending` (after waking its caller, as a socket whose
/// readiness comes back at once would), and reads and writes move at most a random number of
/// bytes; vectored writes take one slice at most.
struct Chaotic<S> {
    inner: S,
    rng: Arc<Mutex<StdRng>>,
}

impl<S> Chaotic<S> {
    /// `Some(limit)` to go on with at most `limit` bytes, `None` for a `Pending`.
    fn roll(&self, cx: &mut Context<'_>, len: usize) -> Option<usize> {
        let mut rng = self.rng.lock().unwrap();
        if rng.gen_ratio(1, 4) {
            cx.waker().wake_by_ref();
            return None;
        }
        Some(if rng.gen_bool(0.5) {
            rng.gen_range(1..=len.clamp(1, 7))
        } else {
            rng.gen_range(1..=len.max(1))
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Chaotic<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let Some(limit) = self.roll(cx, buf.len()) else {
            return Poll::Pending;
        };
        let limit = limit.min(buf.len());
        Pin::new(&mut self.inner).poll_read(cx, &mut buf[..limit])
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Chaotic<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(limit) = self.roll(cx, buf.len()) else {
            return Poll::Pending;
        };
        let limit = limit.min(buf.len());
        Pin::new(&mut self.inner).poll_write(cx, &buf[..limit])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.roll(cx, 1).is_none() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Streams each sending a patterned request of a seeded size, closing writing, and reading the
/// peer's answer (the request reversed) to EOF.
async fn exchange(mode: Mode, seed: u64) {
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
    let (a, b) = tokio::io::duplex(64 * 1024);
    let wrap = |s| Chaotic {
        inner: tokio_util::compat::TokioAsyncReadCompatExt::compat(s),
        rng: rng.clone(),
    };
    let (a, b) = (wrap(a), wrap(b));
    let (a, mut b) = (
        drive(Muxer::new(a, Config::default(), mode)),
        drive(Muxer::new(b, Config::default(), mode)),
    );
    let sizes: Vec<usize> = {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        (0..12)
            .map(|_| match rng.gen_range(0..3) {
                0 => rng.gen_range(0..64),
                1 => rng.gen_range(0..20_000),
                _ => rng.gen_range(0..600_000),
            })
            .collect()
    };
    let streams = sizes.len();
    let server = tokio::spawn(async move {
        let mut answers = Vec::new();
        for _ in 0..streams {
            let mut s = b.accept().await;
            answers.push(tokio::spawn(async move {
                let mut request = Vec::new();
                s.read_to_end(&mut request).await.expect("request");
                request.reverse();
                s.write_all(&request).await.expect("answer");
                s.close().await.expect("close answer");
            }));
        }
        for answer in answers {
            answer.await.expect("answer task");
        }
    });
    let clients = sizes.iter().enumerate().map(|(i, &size)| {
        let request = pattern(size, i as u8);
        let a = &a;
        async move {
            let mut s = a.open().await;
            s.write_all(&request).await.expect("request");
            s.close().await.expect("close request");
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.expect("answer");
            let mut expected = request;
            expected.reverse();
            assert!(
                answer == expected,
                "seed {seed}, {mode:?}, stream {i}: {} bytes back, {} expected",
                answer.len(),
                expected.len()
            );
        }
    });
    future::join_all(clients).await;
    server.await.expect("server");
}

#[tokio::test]
async fn random_pending_and_short_reads_and_writes_never_change_the_data() {
    let seeds: Vec<u64> = match std::env::var("CHAOS_SEED") {
        Ok(seed) => vec![seed.parse().expect("CHAOS_SEED is a number")],
        Err(_) => (0..32).collect(),
    };
    for seed in seeds {
        for mode in both_modes() {
            within(exchange(mode, seed)).await;
        }
    }
}
