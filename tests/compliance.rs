//! The cases rust-libp2p checks every muxer with (its unpublished muxer test harness), written
//! against our `StreamMuxer`: close implies flush, read after close, the dialer can receive.
//!
//! As in that harness, one task does everything: it polls both muxers (`poll_outbound` or
//! `poll_inbound` until the stream is there, then only `poll`) and both protocol futures, so a
//! lost wake-up or a muxer that needs a task of its own shows as a hang. Each case runs with
//! either side dialing, in both modes.

use std::{
    future::Future,
    task::{Context, Poll},
};

use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, future::BoxFuture};
use libp2p_core::muxing::StreamMuxerExt;
use libp2p_mplex_halfclose::{Config, Muxer, Stream};
use test_support::driven::*;

type Protocol = fn(Stream) -> BoxFuture<'static, ()>;

/// One side: its muxer, and its protocol once its stream is there.
struct Side<'m> {
    muxer: &'m mut Muxer<MemorySocket>,
    dials: bool,
    start: Protocol,
    running: Option<BoxFuture<'static, ()>>,
    done: bool,
}

impl Side<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) {
        if self.running.is_none() && !self.done {
            let stream = if self.dials {
                self.muxer.poll_outbound_unpin(cx)
            } else {
                self.muxer.poll_inbound_unpin(cx)
            };
            if let Poll::Ready(stream) = stream {
                self.running = Some((self.start)(stream.expect("stream")));
            }
        }
        if let Poll::Ready(Err(e)) = self.muxer.poll_unpin(cx) {
            panic!("connection failed: {e}");
        }
        if let Some(protocol) = &mut self.running
            && protocol.as_mut().poll(cx).is_ready()
        {
            self.running = None;
            self.done = true;
        }
    }
}

/// Runs `dialer_protocol` on a stream `dialer` opens and `listener_protocol` on the stream
/// `listener` accepts, in one task, until both are done.
fn run<'a>(
    dialer: &'a mut Muxer<MemorySocket>,
    listener: &'a mut Muxer<MemorySocket>,
    dialer_protocol: Protocol,
    listener_protocol: Protocol,
) -> impl Future<Output = ()> + 'a {
    let mut sides = [
        Side {
            muxer: dialer,
            dials: true,
            start: dialer_protocol,
            running: None,
            done: false,
        },
        Side {
            muxer: listener,
            dials: false,
            start: listener_protocol,
            running: None,
            done: false,
        },
    ];
    futures::future::poll_fn(move |cx| {
        for side in &mut sides {
            side.poll(cx);
        }
        if sides.iter().all(|s| s.done) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Runs the case with each side dialing once, on one connection, in both modes.
async fn run_both_ways(first: Protocol, second: Protocol) {
    for mode in both_modes() {
        let (mut a, mut b) = memory_pair(mode, Config::default());
        within(run(&mut a, &mut b, first, second)).await;
        within(run(&mut b, &mut a, first, second)).await;
    }
}

#[tokio::test]
async fn close_implies_flush() {
    run_both_ways(
        |mut s| {
            async move {
                s.write_all(b"PING").await.unwrap();
                s.close().await.unwrap();
            }
            .boxed()
        },
        |mut s| {
            async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                assert_eq!(buf, b"PING");
            }
            .boxed()
        },
    )
    .await;
}

#[tokio::test]
async fn read_after_close() {
    run_both_ways(
        |mut s| {
            async move {
                s.write_all(b"PING").await.unwrap();
                s.close().await.unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                assert_eq!(buf, b"PONG");
            }
            .boxed()
        },
        |mut s| {
            async move {
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"PING");
                s.write_all(b"PONG").await.unwrap();
                s.close().await.unwrap();
            }
            .boxed()
        },
    )
    .await;
}

#[tokio::test]
async fn dialer_can_receive() {
    // The dialer opens the stream and first reads: its waiting read announces the stream.
    run_both_ways(
        |mut s| {
            async move {
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"hello");
                s.close().await.unwrap();
            }
            .boxed()
        },
        |mut s| {
            async move {
                s.write_all(b"hello").await.unwrap();
                s.close().await.unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty());
            }
            .boxed()
        },
    )
    .await;
}

#[tokio::test]
async fn a_large_message_then_close_arrives_whole() {
    // Close implies flush also for more than the socket and the send buffer hold at once.
    run_both_ways(
        |mut s| {
            async move {
                s.write_all(&pattern(3 << 20, 9)).await.unwrap();
                s.close().await.unwrap();
            }
            .boxed()
        },
        |mut s| {
            async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                assert!(buf == pattern(3 << 20, 9), "{} bytes", buf.len());
            }
            .boxed()
        },
    )
    .await;
}
