//! A soak run: many connections × many streams over TCP on 127.0.0.1 for a while, with random
//! half-closes, stops and resets, checking every byte that should arrive, and printing memory and
//! throughput every few seconds so that a flat line can be seen.
//!
//! ```sh
//! cargo run --release -p tools --bin soak                                # 3 minutes, 16 × 32
//! cargo run --release -p tools --bin soak -- --secs 600 --connections 32 --streams 64 --plain
//! ```
//!
//! Each client task loops: open a stream, write a patterned request of a random size, and then
//! one of: close writing and read the echo to EOF, checking it byte for byte (80 %); reset in the
//! middle (10 %); or close reading after a few bytes of the echo, so that the server's writes
//! fail with `BrokenPipe` in extension mode (10 %). Servers read each request whole and echo it. Any wrong byte,
//! or an error where none may happen, ends the run with a failure.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_core::muxing::StreamMuxerBox;
use libp2p_mplex_halfclose::{Config, Mode, Muxer};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: test_support::counting::CountingAllocator =
    test_support::counting::CountingAllocator;

#[derive(Default)]
struct Stats {
    bytes: AtomicU64,
    clean: AtomicU64,
    resets: AtomicU64,
    stops: AtomicU64,
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn connection(mode: Mode) -> (StreamMuxerBox, StreamMuxerBox) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (a, b) = futures::future::join(TcpStream::connect(addr), listener.accept()).await;
    let (a, (b, _)) = (a.expect("connect"), b.expect("accept"));
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    (
        StreamMuxerBox::new(Muxer::new(
            libp2p::tcp::tokio::TcpStream(a),
            Config::default(),
            mode,
        )),
        StreamMuxerBox::new(Muxer::new(
            libp2p::tcp::tokio::TcpStream(b),
            Config::default(),
            mode,
        )),
    )
}

/// One client loop on a connection until `stop`.
async fn client(
    conn: Arc<test_support::driven::Driven<libp2p_core::muxing::SubstreamBox>>,
    seed: u64,
    mode: Mode,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let len = match rng.gen_range(0..10) {
            0..5 => rng.gen_range(0..1024),
            5..9 => rng.gen_range(1024..64 * 1024),
            _ => rng.gen_range(64 * 1024..1024 * 1024),
        };
        let request = test_support::driven::pattern(len, rng.r#gen());
        let mut s = conn.open().await;
        match rng.gen_range(0..10) {
            0 => {
                // Reset in the middle of the request.
                let _ = s.write_all(&request[..len / 2]).await;
                drop(s);
                stats.resets.fetch_add(1, Ordering::Relaxed);
            }
            1 if mode == Mode::Extension && len > 16 => {
                // Send it all, then stop reading after a few bytes of the echo.
                s.write_all(&request).await.expect("request");
                s.close().await.expect("close request");
                let mut head = [0u8; 16];
                s.read_exact(&mut head).await.expect("echo head");
                assert_eq!(head, request[..16], "echo head");
                // Closing reading is the drop of a stream whose writing is closed.
                drop(s);
                stats.stops.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                s.write_all(&request).await.expect("request");
                s.close().await.expect("close request");
                let mut echo = Vec::with_capacity(len);
                s.read_to_end(&mut echo).await.expect("echo");
                assert!(echo == request, "echo of {len} bytes differs");
                stats.clean.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(2 * len as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Echoes every inbound stream; resets and stops from the client are expected.
async fn server(mut conn: test_support::driven::Driven<libp2p_core::muxing::SubstreamBox>) {
    loop {
        let mut s = conn.accept().await;
        tokio::spawn(async move {
            // The whole request first: echoing while the client still writes would fill both
            // windows and wait forever, as it would over a bare TCP socket.
            let mut request = Vec::new();
            if s.read_to_end(&mut request).await.is_err() {
                return; // the client reset
            }
            if s.write_all(&request).await.is_ok() {
                // Fails if the client stopped reading.
                let _ = s.close().await;
            }
        });
    }
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    // The heap figures count from here.
    test_support::counting::start();
    let secs = arg("--secs", 180);
    let connections = arg("--connections", 16) as usize;
    let streams = arg("--streams", 32) as usize;
    let mode = if std::env::args().any(|a| a == "--plain") {
        Mode::PlainMplex
    } else {
        Mode::Extension
    };
    println!(
        "soak: {connections} connections × {streams} concurrent streams, {mode:?}, {secs} s, TCP on 127.0.0.1"
    );
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..connections {
        let (a, b) = connection(mode).await;
        let a = Arc::new(test_support::driven::drive(a));
        tokio::spawn(server(test_support::driven::drive(b)));
        for s in 0..streams {
            clients.push(tokio::spawn(client(
                a.clone(),
                (c * streams + s) as u64,
                mode,
                stats.clone(),
                stop.clone(),
            )));
        }
    }
    let start = Instant::now();
    let mut last_bytes = 0;
    let mut held = Vec::new();
    println!(
        "{:>6} {:>12} {:>10} {:>8} {:>8} {:>12}",
        "s", "MiB/s", "requests", "resets", "stops", "heap MiB"
    );
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let bytes = stats.bytes.load(Ordering::Relaxed);
        let heap = test_support::counting::held() as f64 / (1 << 20) as f64;
        held.push(heap);
        println!(
            "{:>6} {:>12.0} {:>10} {:>8} {:>8} {:>12.1}",
            start.elapsed().as_secs(),
            (bytes - last_bytes) as f64 / 5.0 / (1 << 20) as f64,
            stats.clean.load(Ordering::Relaxed),
            stats.resets.load(Ordering::Relaxed),
            stats.stops.load(Ordering::Relaxed),
            heap
        );
        last_bytes = bytes;
        if clients.iter().any(|c| c.is_finished()) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failed = false;
    for client in clients {
        if let Err(e) = client.await {
            eprintln!("a client failed: {e}");
            failed = true;
        }
    }
    let (first, last) = (held.first().copied(), held.last().copied());
    println!(
        "done: {} requests checked byte for byte, {} resets, {} stops; heap {:.1} MiB after the first interval, {:.1} MiB at the end",
        stats.clean.load(Ordering::Relaxed),
        stats.resets.load(Ordering::Relaxed),
        stats.stops.load(Ordering::Relaxed),
        first.unwrap_or(0.0),
        last.unwrap_or(0.0)
    );
    if failed {
        std::process::exit(1);
    }
}
