//! What the muxer really allocates, measured with a counting allocator: the state of an idle
//! stream, and the memory held while a peer writes flat out to streams nobody reads.
//!
//! This binary holds only these tests and runs them one after another, so that the count is
//! theirs alone.

mod common;

use common::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_mplex_halfclose::{Config, Mode, core::INITIAL_WINDOW};

#[global_allocator]
static GLOBAL: counting::CountingAllocator = counting::CountingAllocator;

/// The tests of this binary, one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn an_idle_stream_costs_less_than_one_kib_of_muxer_state() {
    const STREAMS: usize = 2_000;
    let _serial = ONE_AT_A_TIME.lock().await;
    for mode in both_modes() {
        within(async {
            let mut config = Config::default();
            config.set_max_num_streams(STREAMS + 1);
            let (a, mut b) = driven_pair(mode, config);
            // Warm up: one stream each way, so that buffers and maps that exist per connection
            // are there before counting.
            let mut warm = a.open().await;
            warm.write_all(b"warm").await.unwrap();
            warm.flush().await.unwrap();
            let mut warm_peer = b.accept().await;
            let mut buf = [0u8; 4];
            warm_peer.read_exact(&mut buf).await.unwrap();
            let mut opened = Vec::with_capacity(STREAMS);
            let mut accepted = Vec::with_capacity(STREAMS);
            counting::start();
            for _ in 0..STREAMS {
                let mut s = a.open().await;
                s.flush().await.unwrap(); // the NewStream is out
                opened.push(s);
                accepted.push(b.accept().await);
            }
            let per_stream = counting::held().max(0) as usize / STREAMS;
            // Both ends of each stream are counted: the muxer state on each side, the handles,
            // and the maps' growth.
            println!("{mode:?}: {per_stream} bytes per idle stream, both ends together");
            assert!(
                per_stream < 2 * 1024,
                "{per_stream} bytes for both ends of an idle stream"
            );
            drop((opened, accepted, warm, warm_peer));
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_flooded_flat_out_hold_no_more_than_their_windows() {
    const FLOODED: usize = 1_000;
    let _serial = ONE_AT_A_TIME.lock().await;
    within(async {
        let mut config = Config::default();
        config.set_max_num_streams(FLOODED + 10);
        let (a, b) = memory_pair(Mode::Extension, config);
        let a = drive(a);
        let (mut b, mut observed) = drive_observed(b);
        let chunk = std::sync::Arc::new(vec![9u8; 64 * 1024]);
        counting::start();
        // A peer writes flat out to 1,000 streams that nobody reads...
        let mut writers = Vec::new();
        let mut unread = Vec::new();
        for _ in 0..FLOODED {
            let mut s = a.open().await;
            let chunk = chunk.clone();
            writers.push(tokio::spawn(async move {
                loop {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            }));
            unread.push(b.accept().await);
        }
        let windows = FLOODED as u64 * INITIAL_WINDOW;
        observed.wait_for(|o| o.buffered == windows).await.unwrap();
        // What the process holds beyond where it started: the unread data, which is exactly the
        // windows, plus a bounded overhead (frame buffers in flight, task and stream state).
        // Nothing grows with the amount the peer tries to send.
        let held = counting::held().max(0) as u64;
        println!("{windows} bytes of windows; the process holds {held} bytes more");
        assert!(
            held <= windows + windows / 20,
            "{held} bytes held for {windows} bytes of windows"
        );
        // ...and one more stream still carries 16 MiB, every byte.
        let data = pattern(16 * 1024 * 1024, 5);
        let expected = data.clone();
        let mut extra = a.open().await;
        let sender = tokio::spawn(async move {
            extra.write_all(&data).await.unwrap();
            extra.close_write().await.unwrap();
        });
        let mut extra_peer = b.accept().await;
        let mut got = Vec::new();
        extra_peer.read_to_end(&mut got).await.unwrap();
        sender.await.unwrap();
        assert!(got == expected, "the extra stream's data arrives whole");
        // The extra stream's window is all it adds.
        let max_buffered = observed.borrow().max_buffered;
        assert!(max_buffered <= windows + 16 * 1024 * 1024, "{max_buffered}");
        for w in writers {
            w.abort();
        }
    })
    .await;
}
