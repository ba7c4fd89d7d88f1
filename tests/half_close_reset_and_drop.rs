//! Half-close, reset and drop semantics on the concrete `Stream`, two muxers over a memory pipe,
//! in both modes.

use std::io::ErrorKind;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_mplex_halfclose::{Config, Mode, StreamError};
use test_support::driven::*;

async fn read_to_end(s: &mut libp2p_mplex_halfclose::Stream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(buf)
}

#[tokio::test]
async fn request_response_with_close_write_in_both_modes() {
    on_a_pair_in(both_modes(), |mode, a, mut b| async move {
        let server = tokio::spawn(async move {
            let mut s = b.accept().await;
            assert_eq!(s.mode(), mode);
            let request = read_to_end(&mut s).await.unwrap();
            s.write_all(&[b"echo: ", &request[..]].concat())
                .await
                .unwrap();
            s.close_write().await.unwrap();
        });
        let mut s = a.open().await;
        s.write_all(b"hello").await.unwrap();
        s.close_write().await.unwrap();
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"echo: hello");
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn close_read_stops_the_remote_writer_with_broken_pipe_while_the_other_direction_flows() {
    on_a_pair_in([Mode::Extension], |_, a, mut b| async move {
        let mut writer = a.open().await;
        writer.write_all(b"first").await.unwrap();
        writer.flush().await.unwrap();
        let mut reader = b.accept().await;
        let mut first = [0u8; 5];
        reader.read_exact(&mut first).await.unwrap();
        reader.close_read_with_code(99).await.unwrap();
        // Later reads on the closed side are EOF.
        assert_eq!(reader.read(&mut [0u8; 8]).await.unwrap(), 0);
        // The writer keeps writing until the stop arrives, then fails with BrokenPipe, code 99.
        let chunk = vec![0u8; 1024];
        let err = loop {
            if let Err(e) = writer.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
        assert!(matches!(
            StreamError::from_io(&err),
            Some(StreamError::Stopped { code: 99 })
        ));
        // The reverse direction still works: the stopped reader writes, the writer reads.
        reader.write_all(b"reply still flows").await.unwrap();
        reader.close_write().await.unwrap();
        assert_eq!(
            read_to_end(&mut writer).await.unwrap(),
            b"reply still flows"
        );
        // The writer answered with Close: close_write is a no-op that succeeds.
        writer.close_write().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn close_read_in_plain_mode_is_local() {
    on_a_pair_in([Mode::PlainMplex], |_, a, mut b| async move {
        let mut writer = a.open().await;
        writer.write_all(b"x").await.unwrap();
        writer.flush().await.unwrap();
        let mut reader = b.accept().await;
        reader.close_read().await.unwrap();
        assert_eq!(reader.read(&mut [0u8; 8]).await.unwrap(), 0);
        // The writer is not told; its writes are discarded by the reader.
        writer.write_all(b"discarded").await.unwrap();
        writer.close_write().await.unwrap();
        reader.write_all(b"back").await.unwrap();
        reader.close_write().await.unwrap();
        assert_eq!(read_to_end(&mut writer).await.unwrap(), b"back");
    })
    .await;
}

#[tokio::test]
async fn reset_fails_reads_and_writes_on_both_sides_with_connection_reset() {
    on_a_pair_in(both_modes(), |mode, a, mut b| async move {
        let mut s = a.open().await;
        s.write_all(b"x").await.unwrap();
        s.flush().await.unwrap();
        let mut peer = b.accept().await;
        let mut one = [0u8; 1];
        peer.read_exact(&mut one).await.unwrap();
        s.reset_with_code(5);
        let err = peer.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
        let code = StreamError::from_io(&err).and_then(StreamError::code);
        assert_eq!(code, Some(if mode == Mode::Extension { 5 } else { 0 }));
        assert_eq!(
            peer.write(b"y").await.unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );
        // Our side reports the code the peer saw: plain mplex cannot carry one.
        for err in [
            s.read(&mut [0u8; 8]).await.unwrap_err(),
            s.write(b"y").await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::ConnectionReset);
            let local = StreamError::from_io(&err).and_then(StreamError::code);
            assert_eq!(local, code, "{mode:?}: local and peer codes agree");
        }
    })
    .await;
}

#[tokio::test]
async fn write_after_close_write_is_broken_pipe_and_read_after_close_still_reads() {
    on_a_pair_in(both_modes(), |_, a, mut b| async move {
        let mut s = a.open().await;
        s.close().await.unwrap();
        s.close().await.unwrap();
        let err = s.write(b"late").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
        let mut peer = b.accept().await;
        assert_eq!(read_to_end(&mut peer).await.unwrap(), b"");
        peer.write_all(b"read after close").await.unwrap();
        peer.close().await.unwrap();
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"read after close");
    })
    .await;
}

#[tokio::test]
async fn close_implies_flush_for_a_large_write() {
    on_a_pair_in(both_modes(), |_, a, mut b| async move {
        let data = pattern(3 * 1024 * 1024 + 17, 1);
        let expected = data.clone();
        let mut s = a.open().await;
        let reader = tokio::spawn(async move {
            let mut peer = b.accept().await;
            read_to_end(&mut peer).await.unwrap()
        });
        s.write_all(&data).await.unwrap();
        s.close().await.unwrap();
        drop(s);
        assert_eq!(reader.await.unwrap(), expected);
    })
    .await;
}

#[tokio::test]
async fn drop_with_both_sides_open_resets_the_peer() {
    on_a_pair_in(both_modes(), |_, a, mut b| async move {
        let mut s = a.open().await;
        s.write_all(b"x").await.unwrap();
        s.flush().await.unwrap();
        let mut peer = b.accept().await;
        drop(s);
        let mut buf = [0u8; 8];
        // The byte written before the drop may or may not be read before the reset lands;
        // the reset must surface.
        let err = loop {
            match peer.read(&mut buf).await {
                Ok(n) => assert!(n > 0, "a reset stream must not look like a clean EOF"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    })
    .await;
}

#[tokio::test]
async fn drop_after_the_peer_finished_sends_close_and_every_byte_arrives() {
    on_a_pair_in(both_modes(), |_, a, mut b| async move {
        let mut s = a.open().await;
        s.write_all(b"ping").await.unwrap();
        s.flush().await.unwrap();
        let mut peer = b.accept().await;
        peer.close_write().await.unwrap();
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"");
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        let data = pattern(1024 * 1024, 2);
        s.write_all(&data).await.unwrap();
        drop(s);
        let got = reader.await.unwrap();
        assert_eq!(&got[..4], b"ping");
        assert_eq!(&got[4..], &data[..]);
    })
    .await;
}

#[tokio::test]
async fn drop_after_close_write_stops_the_peer_writer() {
    on_a_pair_in(both_modes(), |mode, a, mut b| async move {
        let mut s = a.open().await;
        s.close_write().await.unwrap();
        let mut peer = b.accept().await;
        drop(s);
        let chunk = vec![0u8; 4096];
        let err = loop {
            if let Err(e) = peer.write_all(&chunk).await {
                break e;
            }
        };
        let expected = match mode {
            Mode::Extension => ErrorKind::BrokenPipe,
            Mode::PlainMplex => ErrorKind::ConnectionReset,
        };
        assert_eq!(err.kind(), expected);
    })
    .await;
}

#[tokio::test]
async fn both_sides_closed_then_dropped_sends_nothing_and_frees_the_stream() {
    within(async {
        let (a, b) = memory_pair(Mode::Extension, Config::default());
        let (a, mut b) = (drive(a), drive(b));
        let mut s = a.open().await;
        // The Close is the stream's first frame: it announces the stream.
        s.close_write().await.unwrap();
        let mut peer = b.accept().await;
        peer.close_write().await.unwrap();
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"");
        assert_eq!(read_to_end(&mut peer).await.unwrap(), b"");
        drop(s);
        // The peer saw a clean end in both directions, not a reset.
        assert_eq!(peer.read(&mut [0u8; 1]).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_streams_carry_their_own_data() {
    on_a_pair_in(both_modes(), |_, a, mut b| async move {
        let server = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..100 {
                let mut s = b.accept().await;
                tasks.push(tokio::spawn(async move {
                    let data = read_to_end(&mut s).await.unwrap();
                    s.write_all(&data).await.unwrap();
                    s.close_write().await.unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let a = std::sync::Arc::new(a);
        let mut clients = Vec::new();
        for i in 0..100u8 {
            let a = a.clone();
            clients.push(tokio::spawn(async move {
                let mut s = a.open().await;
                let data = pattern(20_000 + i as usize * 100, i);
                s.write_all(&data).await.unwrap();
                s.close_write().await.unwrap();
                assert_eq!(read_to_end(&mut s).await.unwrap(), data);
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_stalled_reader_does_not_block_other_streams_in_extension_mode() {
    on_a_pair_in([Mode::Extension], |_, a, mut b| async move {
        // One stream whose reader never reads.
        let mut stalled = a.open().await;
        let _stalled_peer = {
            stalled.write_all(b"s").await.unwrap();
            stalled.flush().await.unwrap();
            b.accept().await
        };
        let filler = tokio::spawn(async move {
            // Writes until its credit is gone, then waits forever (never read).
            let _ = stalled.write_all(&vec![0u8; 4 * 1024 * 1024]).await;
        });
        // 50 other streams each move 1 MiB through.
        let server = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..50 {
                let mut s = b.accept().await;
                tasks.push(tokio::spawn(async move {
                    read_to_end(&mut s).await.unwrap().len()
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total
        });
        let a = std::sync::Arc::new(a);
        let mut clients = Vec::new();
        for i in 0..50u8 {
            let a = a.clone();
            clients.push(tokio::spawn(async move {
                let mut s = a.open().await;
                s.write_all(&pattern(1024 * 1024, i)).await.unwrap();
                s.close_write().await.unwrap();
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        assert_eq!(server.await.unwrap(), 50 * 1024 * 1024);
        assert!(
            !filler.is_finished(),
            "the stalled stream is held at its window"
        );
        filler.abort();
    })
    .await;
}

#[tokio::test]
async fn close_completes_while_another_stream_keeps_the_connection_busy() {
    on_a_pair_in(both_modes(), |_, a, mut b| async move {
        let mut busy = a.open().await;
        let flat_out = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            while busy.write_all(&chunk).await.is_ok() {}
        });
        let mut busy_peer = b.accept().await;
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            while busy_peer.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        // The socket never runs dry while `busy` writes, yet this close must complete.
        let mut quiet = a.open().await;
        quiet.write_all(b"short and sweet").await.unwrap();
        quiet.close().await.unwrap();
        let mut quiet_peer = b.accept().await;
        assert_eq!(
            read_to_end(&mut quiet_peer).await.unwrap(),
            b"short and sweet"
        );
        flat_out.abort();
        drain.abort();
    })
    .await;
}

#[tokio::test]
async fn a_flush_or_a_waiting_read_makes_a_new_stream_known_before_anything_is_written() {
    on_a_pair_in(both_modes(), |_, a, mut b| async move {
        // The peer writes first on this one: our read waits and announces the stream.
        let mut reader = a.open().await;
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 5];
            reader.read_exact(&mut buf).await.unwrap();
            buf
        });
        let mut peer = b.accept().await;
        peer.write_all(b"first").await.unwrap();
        peer.close_write().await.unwrap();
        assert_eq!(&read.await.unwrap(), b"first");
        // A flush announces a stream that has nothing to say yet.
        let mut flushed = a.open().await;
        flushed.flush().await.unwrap();
        let mut peer = b.accept().await;
        flushed.write_all(b"later").await.unwrap();
        flushed.close_write().await.unwrap();
        assert_eq!(read_to_end(&mut peer).await.unwrap(), b"later");
    })
    .await;
}

#[tokio::test]
async fn a_small_write_goes_out_with_the_writers_waiting_read_or_flush_without_a_close() {
    on_a_pair_in(both_modes(), |_, a, mut b| async move {
        let server = tokio::spawn(async move {
            let mut s = b.accept().await;
            for _ in 0..2 {
                let mut request = [0u8; 4];
                s.read_exact(&mut request).await.unwrap();
                s.write_all(&request).await.unwrap();
                s.flush().await.unwrap();
            }
            // Ends cleanly: our EOF after theirs.
            assert!(read_to_end(&mut s).await.unwrap().is_empty());
            s.close_write().await.unwrap();
        });
        let mut s = a.open().await;
        // No flush, no close: the read that waits for the answer sends the request.
        s.write_all(b"ping").await.unwrap();
        let mut answer = [0u8; 4];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ping");
        // A flush sends it too, before any read.
        s.write_all(b"pong").await.unwrap();
        s.flush().await.unwrap();
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong");
        s.close_write().await.unwrap();
        assert!(read_to_end(&mut s).await.unwrap().is_empty());
        server.await.unwrap();
    })
    .await;
}
