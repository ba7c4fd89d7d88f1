//! Bad input from the peer ends the connection with a protocol violation naming the cause,
//! without panicking; frames for unknown streams are discarded. The peer here is raw bytes.

use std::io::ErrorKind;

use futures::{AsyncReadExt, future::poll_fn};
use libp2p_core::muxing::StreamMuxerExt;
use libp2p_mplex_halfclose::{
    Config, ConnectionError, Mode, Muxer, ProtocolViolation, StreamError,
};
use test_support::driven::{peer_frame as frame, *};
use tokio::io::AsyncWriteExt;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Feeds `bytes` to one of our muxers and returns the error its `poll` ends with.
async fn feed(mode: Mode, bytes: Vec<u8>) -> ConnectionError {
    let (ours, mut raw) = tokio::io::duplex(4 * 1024 * 1024);
    let mut muxer = Muxer::new(ours.compat(), Config::default(), mode);
    let writer = tokio::spawn(async move {
        let _ = raw.write_all(&bytes).await;
        raw // keep the pipe open: the error must come from the bytes, not from EOF
    });
    let error = within(poll_fn(|cx| muxer.poll_unpin(cx)))
        .await
        .unwrap_err();
    drop(writer);
    error
}

fn violation(e: ConnectionError) -> ProtocolViolation {
    match e {
        ConnectionError::ProtocolViolation(v) => v,
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}

#[tokio::test]
async fn a_varint_longer_than_ten_bytes_ends_the_connection() {
    for mode in both_modes() {
        let e = violation(feed(mode, vec![0xff; 11]).await);
        assert_eq!(e, ProtocolViolation::VarintOverflow);
    }
}

#[tokio::test]
async fn a_length_of_100_mib_ends_the_connection_before_the_body() {
    for mode in both_modes() {
        let mut bytes = varint(2); // stream 0, MessageInitiator
        bytes.extend(varint(100 << 20));
        let e = violation(feed(mode, bytes).await);
        assert_eq!(e, ProtocolViolation::FrameTooLarge { len: 100 << 20 });
    }
}

#[tokio::test]
async fn flag_seven_on_plain_mplex_ends_the_connection() {
    let e = violation(feed(Mode::PlainMplex, frame(0, 7, &[2, 5])).await);
    assert_eq!(e, ProtocolViolation::ExtensionFrameInPlainMode);
}

#[tokio::test]
async fn new_stream_for_a_live_id_ends_the_connection() {
    for mode in both_modes() {
        let bytes = [frame(3, 0, b"3"), frame(3, 0, b"3")].concat();
        let e = violation(feed(mode, bytes).await);
        assert!(
            matches!(e, ProtocolViolation::NewStreamForLiveId(id) if id.num() == 3),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn data_beyond_the_granted_credit_ends_the_connection() {
    let body = vec![0u8; 256 * 1024 + 1];
    let bytes = [frame(0, 0, b"0"), frame(0, 2, &body)].concat();
    let e = violation(feed(Mode::Extension, bytes).await);
    assert!(
        matches!(
            e,
            ProtocolViolation::CreditExceeded {
                credit: 262_144,
                len: 262_145,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_window_update_that_overflows_ends_the_connection() {
    // WindowUpdate from the initiator: op 1 << 1 | 1 = 3, credit 2^32.
    let mut body = vec![3];
    body.extend(varint(1 << 32));
    let bytes = [frame(0, 0, b"0"), frame(0, 7, &body)].concat();
    let e = violation(feed(Mode::Extension, bytes).await);
    assert!(matches!(e, ProtocolViolation::WindowOverflow(_)), "{e:?}");
}

#[tokio::test]
async fn a_flood_of_refused_streams_cuts_the_peer_off() {
    let mut bytes = Vec::new();
    for num in 0..100_000u64 {
        bytes.extend(frame(num, 0, b""));
    }
    let e = violation(feed(Mode::PlainMplex, bytes).await);
    assert!(
        matches!(e, ProtocolViolation::TooManyRefusedStreams(_)),
        "{e:?}"
    );
}

#[tokio::test]
async fn frames_for_streams_never_opened_are_discarded() {
    for mode in both_modes() {
        let (ours, mut raw) = tokio::io::duplex(64 * 1024);
        let mut muxer = Muxer::new(ours.compat(), Config::default(), mode);
        // Data, Close and Reset for ids never opened, by either side; then a real stream.
        let mut bytes = Vec::new();
        for flag in 1..=6 {
            bytes.extend(frame(42, flag, if flag <= 2 { b"junk" } else { b"" }));
        }
        bytes.extend(frame(0, 0, b"0"));
        bytes.extend(frame(0, 2, b"real"));
        bytes.extend(frame(0, 4, b""));
        raw.write_all(&bytes).await.unwrap();
        let mut stream = within(poll_fn(|cx| muxer.poll_inbound_unpin(cx)))
            .await
            .unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.map(|_| got)
        });
        let drive = poll_fn(|cx| muxer.poll_unpin(cx));
        tokio::select! {
            got = reader => assert_eq!(got.unwrap().unwrap(), b"real"),
            e = drive => panic!("connection failed: {e:?}"),
        }
    }
}

#[tokio::test]
async fn a_violation_fails_open_streams_with_invalid_data() {
    let (ours, mut raw) = tokio::io::duplex(64 * 1024);
    let muxer = Muxer::new(ours.compat(), Config::default(), Mode::PlainMplex);
    let mut driven = drive(muxer);
    raw.write_all(&frame(0, 0, b"0")).await.unwrap();
    let mut stream = driven.accept().await;
    raw.write_all(&frame(1, 7, b"")).await.unwrap();
    let err = within(stream.read(&mut [0u8; 8])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(driven.ended().await.contains("extension frame"));
}

/// A socket with failures injected: every write fails (`writes_fail`), or every write is taken
/// whole; reads wait forever, or fail with a reset once `reads_reset` is set.
#[derive(Default)]
struct InjectedFailures {
    writes_fail: bool,
    reads_reset: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl futures::AsyncRead for InjectedFailures {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.reads_reset.load(std::sync::atomic::Ordering::Relaxed) {
            std::task::Poll::Ready(Err(ErrorKind::ConnectionReset.into()))
        } else {
            std::task::Poll::Pending
        }
    }
}

impl futures::AsyncWrite for InjectedFailures {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(if self.writes_fail {
            Err(std::io::Error::other("injected write failure"))
        } else {
            Ok(buf.len())
        })
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A stream's flush writes from its own task and the socket fails there; the first muxer call
/// after it decides the connection's cause: `poll` reports the transport's error to everyone,
/// `poll_close` reports it once and the connection ends as closed.
#[test]
fn a_write_failing_in_a_streams_task_ends_the_connection_with_one_cause() {
    use futures::{AsyncWrite, task::noop_waker_ref};
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };
    let cx = &mut Context::from_waker(noop_waker_ref());
    for mode in both_modes() {
        for close_first in [false, true] {
            let failing_writes = InjectedFailures {
                writes_fail: true,
                ..InjectedFailures::default()
            };
            let mut muxer = Muxer::new(failing_writes, Config::default(), mode);
            let Poll::Ready(Ok(mut s)) = muxer.poll_outbound_unpin(cx) else {
                panic!("{mode:?}: opening needs no write");
            };
            assert!(matches!(
                Pin::new(&mut s).poll_write(cx, b"hello"),
                Poll::Ready(Ok(5))
            ));
            // The flush pumps the idle socket from this task; the write fails there and the
            // flush waits for the driver to end the connection.
            assert!(Pin::new(&mut s).poll_flush(cx).is_pending());
            let expected = if close_first {
                let Poll::Ready(Err(ConnectionError::Io(e))) = muxer.poll_close_unpin(cx) else {
                    panic!("{mode:?}: poll_close reports the failed write");
                };
                assert!(e.to_string().contains("injected write failure"));
                ConnectionError::Closed.to_string()
            } else {
                let Poll::Ready(Err(e @ ConnectionError::Io(_))) = muxer.poll_unpin(cx) else {
                    panic!("{mode:?}: poll reports the failed write");
                };
                assert!(e.to_string().contains("injected write failure"));
                e.to_string()
            };
            // Every stream and every later call report the same cause.
            let Poll::Ready(Err(flush)) = Pin::new(&mut s).poll_flush(cx) else {
                panic!("{mode:?}: the waiting flush ends");
            };
            let Some(StreamError::Connection(cause)) = StreamError::from_io(&flush) else {
                panic!("{mode:?}: the flush fails with the connection's error: {flush}");
            };
            assert_eq!(
                cause.to_string(),
                expected,
                "{mode:?}, close first: {close_first}"
            );
            let Poll::Ready(Err(later)) = muxer.poll_unpin(cx) else {
                panic!("{mode:?}: the connection has ended");
            };
            assert_eq!(
                later.to_string(),
                expected,
                "{mode:?}, close first: {close_first}"
            );
            assert!(matches!(muxer.poll_close_unpin(cx), Poll::Ready(Ok(()))));
        }
    }
}

#[tokio::test]
async fn the_transport_dying_fails_every_stream_promptly() {
    let (ours, mut raw) = tokio::io::duplex(64 * 1024);
    let mut driven = drive(Muxer::new(
        ours.compat(),
        Config::default(),
        Mode::Extension,
    ));
    raw.write_all(&[frame(0, 0, b"0"), frame(1, 0, b"1")].concat())
        .await
        .unwrap();
    let mut a = driven.accept().await;
    let mut b = driven.accept().await;
    drop(raw);
    for s in [&mut a, &mut b] {
        let err = within(s.read(&mut [0u8; 8])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionAborted, "{err}");
    }
}

#[tokio::test]
async fn dropping_the_muxer_ends_live_streams_with_an_error() {
    let (ours, mut raw) = tokio::io::duplex(64 * 1024);
    let mut muxer = Muxer::new(ours.compat(), Config::default(), Mode::Extension);
    raw.write_all(&frame(0, 0, b"0")).await.unwrap();
    let mut stream = within(poll_fn(|cx| muxer.poll_inbound_unpin(cx)))
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    let mut read = stream.read(&mut buf);
    assert!(
        futures::poll!(&mut read).is_pending(),
        "nothing to read yet: the reader waits"
    );
    drop(muxer);
    let err = within(read).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted);
    // The socket went with the muxer, though the stream is still held: the peer sees the end.
    let mut rest = Vec::new();
    assert_eq!(
        within(tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut rest))
            .await
            .unwrap(),
        0
    );
    drop(stream);
}

#[tokio::test]
async fn poll_close_flushes_what_was_queued_and_closes_the_socket() {
    let (a, b) = memory_pair(Mode::Extension, Config::default());
    let (mut a, b) = (a, drive(b));
    let mut b = b;
    let mut s = within(poll_fn(|cx| a.poll_outbound_unpin(cx)))
        .await
        .unwrap();
    futures::AsyncWriteExt::write_all(&mut s, b"queued before close")
        .await
        .unwrap();
    let cx = &mut std::task::Context::from_waker(futures::task::noop_waker_ref());
    // A drive sends what was queued and leaves nothing to do: `poll_close` has no wake-up to
    // ride on.
    assert!(a.poll_unpin(cx).is_pending());
    within(poll_fn(|cx| a.poll_close_unpin(cx))).await.unwrap();
    // From then on every `StreamMuxer` call reports the end at once, with no wake-up needed.
    for _ in 0..2 {
        assert!(matches!(
            a.poll_unpin(cx),
            std::task::Poll::Ready(Err(ConnectionError::Closed))
        ));
        assert!(matches!(
            a.poll_inbound_unpin(cx),
            std::task::Poll::Ready(Err(ConnectionError::Closed))
        ));
        assert!(matches!(
            a.poll_close_unpin(cx),
            std::task::Poll::Ready(Ok(()))
        ));
    }
    let mut peer = b.accept().await;
    let mut got = vec![0u8; 19];
    peer.read_exact(&mut got).await.unwrap();
    assert_eq!(got, b"queued before close");
    // The socket is closed: the peer's connection ends.
    assert!(b.ended().await.contains("closed"));
}

#[tokio::test]
async fn the_transport_dying_mid_transfer_fails_every_stream_and_poll_close_completes() {
    for mode in both_modes() {
        let (ours, mut raw) = tokio::io::duplex(64 * 1024);
        let mut muxer = Muxer::new(ours.compat(), Config::default(), mode);
        raw.write_all(&frame(0, 0, b"0")).await.unwrap();
        let mut reading = within(poll_fn(|cx| muxer.poll_inbound_unpin(cx)))
            .await
            .unwrap();
        let mut writing = within(poll_fn(|cx| muxer.poll_outbound_unpin(cx)))
            .await
            .unwrap();
        // We send flat out on one stream and wait to read on another; the connection's task
        // drives until the transport fails, then closes the muxer.
        let writer = tokio::spawn(async move {
            let chunk = vec![1u8; 64 * 1024];
            loop {
                if let Err(e) = futures::AsyncWriteExt::write_all(&mut writing, &chunk).await {
                    return e;
                }
            }
        });
        let reader = tokio::spawn(async move { reading.read(&mut [0u8; 8]).await });
        let connection = tokio::spawn(async move {
            let failure = poll_fn(|cx| muxer.poll_unpin(cx)).await;
            let closed = poll_fn(|cx| muxer.poll_close_unpin(cx)).await;
            (failure, closed)
        });
        // The peer takes 100 KiB of the transfer, then its end of the transport is gone.
        let mut taken = vec![0u8; 100 * 1024];
        tokio::io::AsyncReadExt::read_exact(&mut raw, &mut taken)
            .await
            .unwrap();
        drop(raw);
        let (failure, closed) = within(connection).await.unwrap();
        assert!(failure.is_err(), "{mode:?}: the connection reports its end");
        let _ = closed; // completes, whatever it reports about a dead socket
        let written = within(writer).await.unwrap();
        // Not BrokenPipe or ConnectionReset: on a stream those mean stopped or reset.
        assert_eq!(
            written.kind(),
            ErrorKind::ConnectionAborted,
            "{mode:?}: {written}"
        );
        let read = within(reader).await.unwrap().unwrap_err();
        assert_eq!(
            read.kind(),
            ErrorKind::ConnectionAborted,
            "{mode:?}: {read}"
        );
    }
}

/// The driver writes and flushes a stream's data and Close, and the read in the same round
/// fails (the peer reset the connection after reading everything): the close succeeded, since
/// its Close left and was flushed, and only later calls see the connection's end.
#[test]
fn a_close_flushed_in_the_round_whose_read_fails_succeeds() {
    use futures::{AsyncWrite, task::noop_waker_ref};
    use std::{
        pin::Pin,
        sync::{Arc, atomic::AtomicBool},
        task::{Context, Poll},
    };
    let cx = &mut Context::from_waker(noop_waker_ref());
    for mode in both_modes() {
        let reads_reset = Arc::new(AtomicBool::new(false));
        let socket = InjectedFailures {
            reads_reset: reads_reset.clone(),
            ..InjectedFailures::default()
        };
        let mut muxer = Muxer::new(socket, Config::default(), mode);
        let Poll::Ready(Ok(mut s)) = muxer.poll_outbound_unpin(cx) else {
            panic!("{mode:?}: opening needs no write");
        };
        // More than a stream's task sends itself: the driver writes it, and the Close behind.
        let data = vec![7u8; 64 * 1024];
        assert!(matches!(
            Pin::new(&mut s).poll_write(cx, &data),
            Poll::Ready(Ok(n)) if n == data.len()
        ));
        assert!(Pin::new(&mut s).poll_close(cx).is_pending(), "{mode:?}");
        reads_reset.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            matches!(muxer.poll_unpin(cx), Poll::Ready(Err(_))),
            "{mode:?}: the reset ends the connection"
        );
        assert!(
            matches!(Pin::new(&mut s).poll_close(cx), Poll::Ready(Ok(()))),
            "{mode:?}: the Close was flushed before the reset"
        );
        let mut later = s;
        assert!(
            matches!(
                Pin::new(&mut later).poll_write(cx, b"x"),
                Poll::Ready(Err(_))
            ),
            "{mode:?}: a write after the end fails"
        );
    }
}
