//! What the muxer really allocates, measured with a counting allocator: the state of an idle
//! stream, and the memory held while a peer writes flat out to streams nobody reads.
//!
//! This binary holds only these tests and runs them one after another, so that the count is
//! theirs alone.

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_mplex_halfclose::{Config, Mode, core::INITIAL_WINDOW};
use test_support::{counting, driven::*};

#[global_allocator]
static GLOBAL: counting::CountingAllocator = counting::CountingAllocator;

/// The tests of this binary, one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `test` alone in this binary, on a runtime of its own with `workers` threads (0: the
/// current thread), and lets the next test start only once that runtime is gone: a runtime
/// shutting down frees memory, which would otherwise be counted against the next test.
fn alone<F: std::future::Future<Output = ()>>(workers: usize, test: F) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
    .expect("runtime");
    runtime.block_on(test);
    drop(runtime);
}

#[test]
fn an_idle_stream_costs_less_than_one_kib_of_muxer_state() {
    alone(0, async {
        const STREAMS: usize = 2_000;
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
    });
}

#[test]
fn unread_streams_flooded_flat_out_hold_no_more_than_their_windows() {
    alone(2, async {
        const FLOODED: usize = 1_000;
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
    });
}

/// A peer, played with raw frames over TCP on 127.0.0.1 (the kernel holds what is in flight,
/// so the allocator counts only the process), opens `sizes.len()` streams and sends each its
/// frames (of the given body sizes) while nobody reads. Returns the bytes the process allocated
/// for them beyond what it held before the first frame, once every frame was handled.
async fn held_for_unread(mode: Mode, config: Config, sizes: &[Vec<usize>]) -> usize {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut peer_writer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (ours, _) = listener.accept().await.unwrap();
    let ours = tokio_util::compat::TokioAsyncReadCompatExt::compat(ours);
    let mut ours = drive(libp2p_mplex_halfclose::Muxer::new(ours, config, mode));
    // The peer's bytes, made before counting: NewStream for each stream, then its frames, then
    // one more NewStream whose arrival says that everything before it was handled.
    let opens: Vec<u8> = (0..sizes.len() as u64)
        .flat_map(|n| peer_frame(n, 0, b""))
        .collect();
    let mut flood = Vec::new();
    for (n, frames) in sizes.iter().enumerate() {
        for &len in frames {
            flood.extend(peer_frame(n as u64, 2, &vec![0x5a; len]));
        }
    }
    flood.extend(peer_frame(sizes.len() as u64, 0, b""));
    use tokio::io::AsyncWriteExt as _;
    peer_writer.write_all(&opens).await.unwrap();
    let mut unread = Vec::new();
    for _ in sizes {
        unread.push(ours.accept().await);
    }
    counting::start();
    let writer = tokio::spawn(async move {
        peer_writer.write_all(&flood).await.unwrap();
        // Kept, not freed, while the allocator counts.
        (peer_writer, flood)
    });
    let marker = ours.accept().await;
    let held = counting::held().max(0) as usize;
    counting::stop();
    let _peer = writer.await.unwrap();
    drop((marker, unread));
    held
}

/// Frames of `len` bytes filling `total` exactly (the last one shorter).
fn frames_of(len: usize, total: usize) -> Vec<usize> {
    let mut sizes = vec![len; total / len];
    if !total.is_multiple_of(len) {
        sizes.push(total % len);
    }
    sizes
}

#[test]
fn unread_data_costs_its_bytes_whatever_the_frame_sizes() {
    alone(2, async {
        let window = INITIAL_WINDOW as usize;
        // The documented overhead of a stream with unread data: 1/128 of it in buffer bookkeeping,
        // plus an 8 KiB gathering buffer; and a little for the connection (the tasks' wake-ups).
        let bound =
            |data: usize, streams: usize| data + data / 128 + streams * 8 * 1024 + 16 * 1024;
        let mut rng_state = 0x9e37_79b9_u64;
        let mut random = |max: usize| {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            1 + (rng_state % max as u64) as usize
        };
        let mut random_sizes = Vec::new();
        let mut left = window;
        while left > 0 {
            let len = random(70_000).min(left);
            random_sizes.push(len);
            left -= len;
        }
        let cases: Vec<(&str, Mode, Vec<Vec<usize>>)> = vec![
            // 262,144 frames of one byte: each used to cost a buffer and a queue slot (8.6 MB).
            ("1-byte frames", Mode::Extension, vec![vec![1; window]]),
            // 65,537-byte bodies used to sit in 128 KiB buffers (1.75x the window).
            (
                "65,537-byte frames, 16 streams",
                Mode::Extension,
                vec![frames_of(65_537, window); 16],
            ),
            ("random sizes", Mode::Extension, vec![random_sizes]),
            // Alternating tiny and large frames: the most buffers per byte that gathering leaves.
            (
                "1 byte and 16 KiB, alternating",
                Mode::Extension,
                vec![
                    std::iter::repeat([1, 16 * 1024])
                        .flatten()
                        .take(2 * (window / (16 * 1024 + 1)))
                        .collect(),
                ],
            ),
            // Plain mplex has no window: 1 MiB frames up to its per-stream limit of 32 frames.
            ("1 MiB frames", Mode::PlainMplex, vec![vec![1 << 20; 8]]),
            (
                "65,537-byte frames",
                Mode::PlainMplex,
                vec![vec![65_537; 30]],
            ),
        ];
        for (name, mode, sizes) in cases {
            let data: usize = sizes.iter().flatten().sum();
            let held = within(held_for_unread(mode, Config::default(), &sizes)).await;
            println!("{name} ({mode:?}): {data} bytes unread, {held} bytes held");
            assert!(
                held <= bound(data, sizes.len()),
                "{name}: {held} bytes held for {data} bytes of data"
            );
        }
    });
}

#[test]
fn write_then_drop_against_a_peer_that_never_reads_waits_within_the_send_bound() {
    alone(0, async {
        use futures::task::{Context, noop_waker_ref};
        use libp2p_core::muxing::StreamMuxerExt;
        use std::task::Poll;

        for mode in both_modes() {
            let config = Config::default();
            // The documented bound (`Config::set_send_buffer_size`): the send buffer plus one frame
            // per stream, beside the 256 KiB being written to the socket; here also the pipe's own
            // 64 KiB and each stream's state (under 1 KiB, see the test above).
            let (streams, frame) = (128, 64 * 1024);
            let send_bound = 128 * 1024 + streams * frame + 256 * 1024 + frame;
            let bound = send_bound + 64 * 1024 + streams * 1024;
            let (ours, _peer_never_reads) = tokio::io::duplex(64 * 1024);
            let ours = tokio_util::compat::TokioAsyncReadCompatExt::compat(ours);
            let mut muxer = libp2p_mplex_halfclose::Muxer::new(ours, config, mode);
            let mut cx = Context::from_waker(noop_waker_ref());
            let chunk = vec![7u8; frame];
            counting::start();
            let mut opened = 0;
            // 1,000 times: open a stream, write 64 KiB, drop it. All of it used to be held.
            let waited = loop {
                if opened == 1000 {
                    break false;
                }
                // Drive the connection: everything that can reach the pipe does. (A fresh
                // cooperative budget first: tokio's pipe answers `Pending` once it is spent.)
                tokio::task::yield_now().await;
                for _ in 0..4 {
                    assert!(
                        muxer.poll_unpin(&mut cx).is_pending(),
                        "the connection fails"
                    );
                }
                let mut stream = match muxer.poll_outbound_unpin(&mut cx) {
                    Poll::Ready(stream) => stream.expect("open"),
                    Poll::Pending => break true,
                };
                let written =
                    std::future::Future::poll(std::pin::pin!(stream.write(&chunk)), &mut cx);
                assert!(
                    matches!(written, Poll::Ready(Ok(n)) if n == frame),
                    "a new stream may always queue one frame: {written:?}"
                );
                drop(stream);
                opened += 1;
            };
            let peak = counting::peak().max(0) as usize;
            counting::stop();
            println!("{mode:?}: {opened} streams opened before opening waited; peak {peak} bytes");
            assert!(
                waited,
                "{mode:?}: 1,000 streams of 64 KiB taken by a peer that reads nothing"
            );
            // At the stream limit, plus the few whose data went into the writer and the pipe.
            let in_flight = (256 + 64) * 1024 / frame + 1;
            assert!(
                opened <= streams + in_flight,
                "{mode:?}: {opened} dropped streams, beyond the stream limit"
            );
            assert!(peak <= bound, "{mode:?}: peak {peak} bytes, bound {bound}");
        }
    });
}

/// Moves every frame `from` queued to `to`, as the wire would (ids as the peer sees them).
fn carry(
    from: &mut libp2p_mplex_halfclose::core::Connection,
    to: &mut libp2p_mplex_halfclose::core::Connection,
) -> bool {
    let mut moved = false;
    while let Some(frame) = from.poll_transmit() {
        to.handle_frame(frame.as_seen_by_peer())
            .expect("a valid frame");
        moved = true;
    }
    from.on_flushed(from.transmitted());
    moved
}

#[test]
fn one_mebibyte_frames_in_a_grown_window_cost_their_bytes() {
    use libp2p_mplex_halfclose::core::{Connection, ReadOutcome, WriteOutcome};

    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut config = Config::default();
    config.set_split_send_size(1 << 20);
    let (mut a, mut b) = (
        Connection::new(Mode::Extension, config.clone()),
        Connection::new(Mode::Extension, config),
    );
    let id = a.open_stream().unwrap().unwrap();
    a.announce(id);
    carry(&mut a, &mut b);
    let peer_id = b.accept().unwrap();
    // Grow the window as a long link does (10 ms each way on the core's clock, the reader
    // taking everything at once) until it is the 16 MiB maximum.
    let chunk = vec![1u8; 1 << 20];
    let mut sink = vec![0u8; 1 << 20];
    let mut now = std::time::Instant::now();
    for _ in 0..100 {
        now += std::time::Duration::from_millis(10);
        b.set_time(now);
        while let WriteOutcome::Written(_) = a.write(id, &chunk).unwrap() {
            carry(&mut a, &mut b);
        }
        while let ReadOutcome::Data(_) = b.read_into(peer_id, &mut sink, drop).unwrap() {}
        now += std::time::Duration::from_millis(10);
        a.set_time(now);
        carry(&mut b, &mut a);
    }
    // Now nobody reads: the writer fills the grown window with 1 MiB frames.
    counting::start();
    let mut sent = 0;
    while let WriteOutcome::Written(n) = a.write(id, &chunk).unwrap() {
        sent += n;
        carry(&mut a, &mut b);
    }
    let held = counting::held().max(0) as usize;
    counting::stop();
    let window = b.buffered_bytes() as usize;
    println!("{sent} bytes sent in 1 MiB frames, {window} unread, {held} bytes held");
    assert!(window >= 15 << 20, "the window grew: {window}");
    assert!(
        held <= window + window / 128 + 8 * 1024,
        "{held} bytes held for {window} bytes unread"
    );
}

#[test]
fn one_byte_writes_against_a_peer_that_never_reads_cost_their_bytes() {
    alone(0, async {
        use futures::task::{Context, noop_waker_ref};
        use libp2p_core::muxing::StreamMuxerExt;
        use std::task::Poll;

        for mode in both_modes() {
            let (ours, _peer_never_reads) = tokio::io::duplex(64 * 1024);
            let ours = tokio_util::compat::TokioAsyncReadCompatExt::compat(ours);
            let mut muxer = libp2p_mplex_halfclose::Muxer::new(ours, Config::default(), mode);
            let mut cx = Context::from_waker(noop_waker_ref());
            let Poll::Ready(Ok(mut stream)) = muxer.poll_outbound_unpin(&mut cx) else {
                panic!("open");
            };
            counting::start();
            let mut written = 0usize;
            // Bounded: the send buffer, the writer and the pipe take well under 1 MB.
            while written < 4 << 20 {
                if written.is_multiple_of(1024) {
                    tokio::task::yield_now().await; // a fresh cooperative budget for the pipe
                }
                let write = std::future::Future::poll(std::pin::pin!(stream.write(b"x")), &mut cx);
                match write {
                    Poll::Ready(Ok(1)) => written += 1,
                    Poll::Pending => break,
                    other => panic!("{other:?}"),
                }
                if written.is_multiple_of(1024) {
                    let _ = muxer.poll_unpin(&mut cx);
                }
            }
            let peak = counting::peak().max(0) as usize;
            counting::stop();
            // The send bound: 128 KiB waiting, and 256 KiB being written (small frames are copied
            // with their heads into a buffer that may double: 512 KiB); and the pipe, whose own
            // buffer may double too.
            let bound = (128 + 512 + 128) * 1024;
            println!(
                "{mode:?}: {written} one-byte writes taken before writing waited; peak {peak}"
            );
            assert!(written < 4 << 20, "{mode:?}: writing never waited");
            assert!(peak <= bound, "{mode:?}: peak {peak} bytes, bound {bound}");
            drop(stream);
        }
    });
}

#[test]
fn plain_mplex_budget_bounds_memory_however_small_the_frames() {
    alone(0, async {
        use futures::task::{Context, noop_waker_ref};
        use libp2p_core::muxing::StreamMuxerExt;
        use libp2p_mplex_halfclose::MaxBufferBehaviour;
        use std::task::Poll;
        use tokio::io::AsyncWrite;

        const BUDGET: usize = 1 << 20;
        for behaviour in [MaxBufferBehaviour::Block, MaxBufferBehaviour::ResetStream] {
            for frame in [1usize, 16, 1024] {
                // The frame limit out of the way: only the byte budget bounds the stream.
                let mut config = Config::default();
                config
                    .set_max_connection_buffer(BUDGET as u64)
                    .set_max_buffer_size(usize::MAX)
                    .set_max_buffer_behaviour(behaviour);
                let (ours, mut peer) = tokio::io::duplex(64 * 1024);
                let ours = tokio_util::compat::TokioAsyncReadCompatExt::compat(ours);
                let mut muxer = libp2p_mplex_halfclose::Muxer::new(ours, config, Mode::PlainMplex);
                // 4 MiB in frames of `frame` bytes on a stream nobody reads.
                let mut flood = peer_frame(0, 0, b"0");
                let body = vec![0x5a; frame];
                while flood.len() < 4 << 20 {
                    flood.extend(peer_frame(0, 2, &body));
                }
                let mut cx = Context::from_waker(noop_waker_ref());
                let mut unread = Vec::new();
                counting::start();
                let mut sent = 0;
                // The peer writes what the pipe takes, the muxer reads what it will, until
                // neither moves: everything went in, or reading paused.
                for _ in 0..1_000_000 {
                    // A fresh cooperative budget for the pipe (tokio's), which otherwise answers
                    // `Pending` after a number of operations in one poll.
                    tokio::task::yield_now().await;
                    let wrote =
                        match std::pin::Pin::new(&mut peer).poll_write(&mut cx, &flood[sent..]) {
                            Poll::Ready(Ok(n)) => n,
                            Poll::Ready(Err(e)) => panic!("{e}"),
                            Poll::Pending => 0,
                        };
                    sent += wrote;
                    let before = muxer.buffered_bytes();
                    let _ = muxer.poll_unpin(&mut cx);
                    while let Poll::Ready(Ok(stream)) = muxer.poll_inbound_unpin(&mut cx) {
                        unread.push(stream);
                    }
                    if wrote == 0 && muxer.buffered_bytes() == before {
                        break;
                    }
                }
                let peak = counting::peak().max(0) as usize;
                counting::stop();
                // The budget counts each frame's bytes and 64 more for keeping it; one frame may
                // go over. Beside it: the pipe (64 KiB, doubling) and the muxer's own buffers.
                let bound = BUDGET + frame + 64 + 128 * 1024 + 64 * 1024;
                println!("{behaviour:?}, {frame}-byte frames: {sent} bytes sent, peak {peak}");
                assert!(
                    peak <= bound,
                    "{behaviour:?}, {frame}-byte frames: peak {peak}, bound {bound}"
                );
                drop(unread);
            }
        }
    });
}
