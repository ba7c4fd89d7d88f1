//! Memory stays within the configured bounds while a peer writes as fast as it can to a reader
//! that does not read, in both modes.

use std::io::ErrorKind;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_mplex_halfclose::{Config, MaxBufferBehaviour, Mode, core::INITIAL_WINDOW};
use test_support::driven::*;

#[tokio::test]
async fn extension_mode_buffers_at_most_the_window_for_a_reader_that_never_reads() {
    within(async {
        let (a, b) = memory_pair(Mode::Extension, Config::default());
        let a = drive(a);
        let (mut b, mut observed) = drive_observed(b);
        let mut writer = a.open().await;
        let flat_out = tokio::spawn(async move {
            let chunk = vec![1u8; 64 * 1024];
            loop {
                writer.write_all(&chunk).await.unwrap();
            }
        });
        let _never_read = b.accept().await;
        observed
            .wait_for(|o| o.buffered == INITIAL_WINDOW)
            .await
            .unwrap();
        // A round trip on another stream: everything the writer sent before it has been handled.
        let mut ping = a.open().await;
        ping.write_all(b"ping").await.unwrap();
        ping.close().await.unwrap();
        let mut pong = b.accept().await;
        let mut got = Vec::new();
        pong.read_to_end(&mut got).await.unwrap();
        pong.write_all(b"pong").await.unwrap();
        pong.close().await.unwrap();
        let mut back = Vec::new();
        ping.read_to_end(&mut back).await.unwrap();
        assert_eq!(
            (got.as_slice(), back.as_slice()),
            (&b"ping"[..], &b"pong"[..])
        );
        // The window of the unread stream, plus the 4 bytes of "ping" before they were read.
        assert!(
            observed.borrow().max_buffered <= INITIAL_WINDOW + 4,
            "{:?}",
            *observed.borrow()
        );
        assert!(observed.borrow().buffered >= INITIAL_WINDOW);
        assert!(!flat_out.is_finished(), "the writer waits for credit");
        flat_out.abort();
    })
    .await;
}

fn plain_config(behaviour: MaxBufferBehaviour) -> Config {
    let mut config = Config::default();
    config
        .set_max_buffer_size(4)
        .set_split_send_size(16 * 1024)
        .set_max_buffer_behaviour(behaviour);
    config
}

/// The most a plain-mplex stream buffers: one frame over the limit of 4.
const PLAIN_BOUND: u64 = 5 * 16 * 1024;

#[tokio::test]
async fn plain_mode_block_stops_reading_at_the_buffer_limit_and_loses_nothing() {
    within(async {
        let (a, b) = memory_pair(Mode::PlainMplex, plain_config(MaxBufferBehaviour::Block));
        let a = drive(a);
        let (mut b, mut observed) = drive_observed(b);
        let data = pattern(4 * 1024 * 1024, 3);
        let expected = data.clone();
        let mut writer = a.open().await;
        let flat_out = tokio::spawn(async move {
            writer.write_all(&data).await.unwrap();
            writer.close().await.unwrap();
        });
        let mut reader = b.accept().await;
        observed
            .wait_for(|o| o.buffered > 4 * 16 * 1024)
            .await
            .unwrap();
        assert!(
            !flat_out.is_finished(),
            "4 MiB cannot fit while reading is paused"
        );
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert!(got == expected, "every byte arrives, in order");
        flat_out.await.unwrap();
        assert!(
            observed.borrow().max_buffered <= PLAIN_BOUND,
            "{:?}",
            *observed.borrow()
        );
    })
    .await;
}

#[tokio::test]
async fn plain_mode_reset_stream_resets_the_overflowing_stream_within_the_bound() {
    within(async {
        let (a, b) = memory_pair(
            Mode::PlainMplex,
            plain_config(MaxBufferBehaviour::ResetStream),
        );
        let a = drive(a);
        let (mut b, observed) = drive_observed(b);
        let mut writer = a.open().await;
        let flat_out = tokio::spawn(async move {
            let chunk = vec![2u8; 16 * 1024];
            loop {
                if let Err(e) = writer.write_all(&chunk).await {
                    return e;
                }
            }
        });
        let mut reader = b.accept().await;
        let err = flat_out.await.unwrap();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
        assert_eq!(
            reader.read(&mut [0u8; 1]).await.unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );
        assert!(
            observed.borrow().max_buffered <= PLAIN_BOUND,
            "{:?}",
            *observed.borrow()
        );
        assert_eq!(
            observed.borrow().buffered,
            0,
            "a reset stream's buffer is freed"
        );
    })
    .await;
}

#[tokio::test]
async fn plain_mode_close_read_on_the_blocking_stream_lets_the_connection_read_again() {
    within(async {
        let (a, b) = memory_pair(Mode::PlainMplex, plain_config(MaxBufferBehaviour::Block));
        let a = drive(a);
        let (mut b, mut observed) = drive_observed(b);
        let mut flood = a.open().await;
        let flooder = tokio::spawn(async move {
            let chunk = vec![0u8; 16 * 1024];
            // Ends when the far side drops the stream (Reset) after closing reading.
            while flood.write_all(&chunk).await.is_ok() {}
        });
        let mut blocked = b.accept().await;
        observed
            .wait_for(|o| o.buffered > 4 * 16 * 1024)
            .await
            .unwrap();
        // Reading is paused: another stream's data waits behind the full buffer...
        let mut other = a.open().await;
        let behind = tokio::spawn(async move {
            other.write_all(b"behind the block").await.unwrap();
            other.close().await.unwrap(); // completes once the pipe drains
        });
        // ...until the application gives up on the full stream.
        blocked.close_read().await.unwrap();
        let mut peer = b.accept().await;
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"behind the block");
        behind.await.unwrap();
        drop(blocked);
        flooder.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn plain_mode_block_resumes_when_a_read_of_another_stream_brings_the_connection_under_budget()
{
    within(async {
        let mut config = Config::default();
        config
            .set_max_connection_buffer(128 * 1024)
            .set_max_buffer_behaviour(MaxBufferBehaviour::Block);
        let (a, b) = memory_pair(Mode::PlainMplex, config);
        let a = drive(a);
        let (mut b, mut observed) = drive_observed(b);
        // Stream A receives 100 KiB, then B does: the connection goes over its budget on B's
        // data, and reading pauses, blocked on B.
        let mut a_writer = a.open().await;
        a_writer.write_all(&pattern(100 * 1024, 1)).await.unwrap();
        a_writer.flush().await.unwrap();
        let mut a_reader = b.accept().await;
        observed
            .wait_for(|o| o.buffered == 100 * 1024)
            .await
            .unwrap();
        let mut b_writer = a.open().await;
        let b_sender = tokio::spawn(async move {
            b_writer.write_all(&pattern(100 * 1024, 2)).await.unwrap();
            b_writer.close().await.unwrap();
            b_writer
        });
        let mut b_reader = b.accept().await;
        observed
            .wait_for(|o| o.buffered > 128 * 1024)
            .await
            .unwrap();
        // C is opened behind the pause.
        let mut c_writer = a.open().await;
        c_writer.write_all(b"c").await.unwrap();
        c_writer.close().await.unwrap();
        // 1 KiB of B, then all of A: what is left is under the budget, and B is within its
        // frame limit, so reading must resume although the blocking stream is still B.
        let mut one_kib = vec![0u8; 1024];
        b_reader.read_exact(&mut one_kib).await.unwrap();
        let mut all_of_a = vec![0u8; 100 * 1024];
        a_reader.read_exact(&mut all_of_a).await.unwrap();
        assert!(all_of_a == pattern(100 * 1024, 1));
        let mut c_reader = b.accept().await;
        let mut got = Vec::new();
        c_reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"c");
        // B's data is whole as well.
        let mut rest = Vec::new();
        b_reader.read_to_end(&mut rest).await.unwrap();
        assert!([one_kib, rest].concat() == pattern(100 * 1024, 2));
        b_sender.await.unwrap();
    })
    .await;
}
