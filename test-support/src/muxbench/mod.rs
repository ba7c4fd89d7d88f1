//! The muxbench harness: the muxers, links and measurements shared by `tools/src/bin/muxbench.rs`
//! and the criterion benches (`benches/muxers.rs`).

pub mod delay_line;

use std::{sync::Arc, time::Instant};

use futures::{AsyncReadExt, AsyncWriteExt, future};
use libp2p_core::{
    muxing::{StreamMuxerBox, SubstreamBox},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
};
use libp2p_mplex_halfclose::{Config, EXTENSION_PROTOCOL, MPLEX_PROTOCOL};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::{
    counting,
    driven::{self, drive_while_held},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Muxer {
    None,
    OursExtension,
    OursPlain,
    LibMplex,
    Yamux,
}

impl Muxer {
    pub const ALL: [Muxer; 5] = [
        Muxer::None,
        Muxer::OursExtension,
        Muxer::OursPlain,
        Muxer::LibMplex,
        Muxer::Yamux,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Muxer::None => "no muxer",
            Muxer::OursExtension => "ours (extension)",
            Muxer::OursPlain => "ours (plain mplex)",
            Muxer::LibMplex => "libp2p-mplex 0.44",
            Muxer::Yamux => "libp2p-yamux 0.48",
        }
    }

    pub fn is_peer(self) -> bool {
        matches!(self, Muxer::LibMplex | Muxer::Yamux)
    }
}

/// What carries a connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// tokio's in-memory duplex pipe, 256 KiB each way.
    Memory,
    /// TCP on 127.0.0.1 with nodelay, through libp2p-tcp's socket type (which forwards
    /// vectored writes).
    Tcp,
    /// The same TCP socket behind a wrapper that writes one buffer per call, as most socket
    /// wrappers do (WebSocket, TLS, noise's own output).
    TcpScalarWrites,
    /// TCP, then noise negotiated by multistream-select and run as `Transport::upgrade(Version::V1)
    /// .authenticate(noise::Config::new)` builds it: what a libp2p node's muxer writes to.
    TcpNoise,
}

impl Link {
    pub const ALL: [Link; 4] = [
        Link::Memory,
        Link::Tcp,
        Link::TcpScalarWrites,
        Link::TcpNoise,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Link::Memory => "memory pipe",
            Link::Tcp => "TCP",
            Link::TcpScalarWrites => "TCP, scalar writes",
            Link::TcpNoise => "TCP + noise",
        }
    }

    /// The name `--links` takes.
    pub fn flag(self) -> &'static str {
        match self {
            Link::Memory => "memory",
            Link::Tcp => "tcp",
            Link::TcpScalarWrites => "tcp-scalar",
            Link::TcpNoise => "tcp-noise",
        }
    }
}

/// Where the application code (the client side of a measurement) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In a task spawned on the runtime, beside the connections' tasks.
    Spawned,
    /// On the thread that calls `block_on`, as the body of `#[tokio::main]` does: every wake-up
    /// of the application crosses threads.
    BlockOn,
}

impl Placement {
    pub const ALL: [Placement; 2] = [Placement::Spawned, Placement::BlockOn];

    /// The name `--placement` takes.
    pub fn flag(self) -> &'static str {
        match self {
            Placement::Spawned => "spawned",
            Placement::BlockOn => "block-on",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Placement::Spawned => "application in a spawned task",
            Placement::BlockOn => "application on the block_on thread",
        }
    }

    /// Runs `measurement` to its end, placed as `self` says.
    pub fn run<T: Send + 'static>(
        self,
        runtime: &tokio::runtime::Runtime,
        measurement: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match self {
            Placement::Spawned => runtime
                .block_on(runtime.spawn(measurement))
                .expect("measurement task"),
            Placement::BlockOn => runtime.block_on(measurement),
        }
    }
}

/// The items of `all` named (by `flag`) in a comma-separated `choice`, or all of them: what a
/// tool's `--links` or `--placement` selects. Panics on a name that is not one of them.
pub fn chosen<T: Copy>(
    choice: Option<String>,
    all: &[T],
    flag: impl Fn(T) -> &'static str,
) -> Vec<T> {
    let Some(choice) = choice else {
        return all.to_vec();
    };
    let names: Vec<&str> = choice.split(',').map(str::trim).collect();
    for name in &names {
        assert!(
            all.iter().any(|&item| flag(item) == *name),
            "unknown choice {name:?}; one of {:?}",
            all.iter().map(|&item| flag(item)).collect::<Vec<_>>()
        );
    }
    all.iter()
        .copied()
        .filter(|&item| names.contains(&flag(item)))
        .collect()
}

pub trait Socket: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static {}
impl<T: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static> Socket for T {}

/// A socket that writes one buffer per call: `poll_write_vectored` is left to the trait's
/// default, which writes the first non-empty buffer.
pub struct ScalarWrites<T>(pub T);

impl<T: futures::AsyncRead + Unpin> futures::AsyncRead for ScalarWrites<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: futures::AsyncWrite + Unpin> futures::AsyncWrite for ScalarWrites<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_close(cx)
    }
}

async fn tcp_pair() -> (libp2p::tcp::tokio::TcpStream, libp2p::tcp::tokio::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (a, b) = future::join(TcpStream::connect(addr), listener.accept()).await;
    let (a, (b, _)) = (a.expect("connect"), b.expect("accept"));
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    // libp2p-tcp's socket type, as a libp2p node has it (it forwards vectored writes, which
    // tokio-util's `Compat` does not).
    (
        libp2p::tcp::tokio::TcpStream(a),
        libp2p::tcp::tokio::TcpStream(b),
    )
}

/// Noise over `a` (dialer) and `b` (listener), negotiated with multistream-select V1 first, as
/// `Transport::upgrade(Version::V1).authenticate(..)` does.
async fn noise_pair<C: Socket>(a: C, b: C) -> (Box<dyn Socket>, Box<dyn Socket>) {
    use libp2p::noise;
    use multistream_select::{Version, dialer_select_proto, listener_select_proto};

    let keys = (
        libp2p::identity::Keypair::generate_ed25519(),
        libp2p::identity::Keypair::generate_ed25519(),
    );
    let dialer = async {
        let (protocol, io) = dialer_select_proto(a, ["/noise"], Version::V1)
            .await
            .expect("negotiate noise");
        noise::Config::new(&keys.0)
            .expect("noise config")
            .upgrade_outbound(io, protocol)
            .await
            .expect("noise handshake")
    };
    let listener = async {
        let (protocol, io) = listener_select_proto(b, ["/noise"])
            .await
            .expect("negotiate noise");
        noise::Config::new(&keys.1)
            .expect("noise config")
            .upgrade_inbound(io, protocol)
            .await
            .expect("noise handshake")
    };
    let ((_, a), (_, b)) = future::join(dialer, listener).await;
    (Box::new(a), Box::new(b))
}

pub fn sockets(link: Link) -> future::BoxFuture<'static, (Box<dyn Socket>, Box<dyn Socket>)> {
    Box::pin(async move {
        let pair: (Box<dyn Socket>, Box<dyn Socket>) = match link {
            Link::Memory => {
                let (a, b) = tokio::io::duplex(256 * 1024);
                (Box::new(a.compat()), Box::new(b.compat()))
            }
            Link::Tcp => {
                let (a, b) = tcp_pair().await;
                (Box::new(a), Box::new(b))
            }
            Link::TcpScalarWrites => {
                let (a, b) = tcp_pair().await;
                (Box::new(ScalarWrites(a)), Box::new(ScalarWrites(b)))
            }
            Link::TcpNoise => {
                let (a, b) = tcp_pair().await;
                noise_pair(a, b).await
            }
        };
        pair
    })
}

/// Upgrades both ends of a connection with the same muxer config, as the transport would.
macro_rules! upgrade {
    ($config:expr, $protocol:expr, $a:expr, $b:expr) => {{
        let config = $config;
        let (x, y) = future::join(
            config.clone().upgrade_outbound($a, $protocol),
            config.upgrade_inbound($b, $protocol),
        )
        .await;
        (
            StreamMuxerBox::new(x.expect("outbound upgrade")),
            StreamMuxerBox::new(y.expect("inbound upgrade")),
        )
    }};
}

/// A connection of `kind` over `link`, each side driven by its own task.
pub async fn connection(
    kind: Muxer,
    link: Link,
) -> (
    Arc<driven::Driven<SubstreamBox>>,
    driven::Driven<SubstreamBox>,
) {
    let (a, b) = sockets(link).await;
    let (a, b) = match kind {
        Muxer::OursExtension => upgrade!(Config::default(), EXTENSION_PROTOCOL, a, b),
        Muxer::OursPlain => upgrade!(Config::default(), MPLEX_PROTOCOL, a, b),
        Muxer::LibMplex => upgrade!(libp2p_mplex::Config::default(), "/mplex/6.7.0", a, b),
        Muxer::Yamux => upgrade!(libp2p_yamux::Config::default(), "/yamux/1.0.0", a, b),
        Muxer::None => unreachable!("no muxer has no streams"),
    };
    (Arc::new(drive_while_held(a)), drive_while_held(b))
}

const CHUNK: usize = 64 * 1024;

pub async fn send(mut w: Box<dyn futures::AsyncWrite + Unpin + Send>, bytes: usize) {
    let chunk = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        w.write_all(&chunk[..n]).await.expect("write");
        left -= n;
    }
    w.close().await.expect("close");
}

pub async fn receive(mut r: Box<dyn futures::AsyncRead + Unpin + Send>) -> usize {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        match r.read(&mut buf).await.expect("read") {
            0 => return total,
            n => total += n,
        }
    }
}

/// What one case measures, and which way is better.
#[derive(Debug, Clone, Copy)]
pub enum Case {
    /// `streams` streams at once, each carrying `bytes_each` one way: MiB/s, and the ratio of
    /// the slowest stream's completion time to the fastest's.
    Throughput { streams: usize, bytes_each: usize },
    /// Open a stream, send 64 B, close writing, read the 64 B answer to EOF: µs, median.
    RequestResponse { requests: usize },
    /// The same, its 99th percentile: the tail a busy node sees.
    RequestResponseP99 { requests: usize },
    /// Open a stream, send 1 byte, close it from both sides, 8 streams at a time: µs per stream.
    /// (The byte is there because yamux announces a stream with its first data: a stream
    /// closed before any data never reaches the listener.)
    OpenClose { streams: usize },
    /// Open `streams` streams, send one byte on each and read it on the other side, keep them
    /// all open: bytes allocated per stream, both ends together (muxer state and buffers).
    IdleStreamMemory { streams: usize },
}

impl Case {
    pub fn higher_is_better(self) -> bool {
        matches!(self, Case::Throughput { .. })
    }

    pub fn unit(self) -> &'static str {
        match self {
            Case::Throughput { .. } => "MiB/s",
            Case::RequestResponse { .. }
            | Case::RequestResponseP99 { .. }
            | Case::OpenClose { .. } => "µs",
            Case::IdleStreamMemory { .. } => "B",
        }
    }
}

/// One measurement: the value and, for many streams, the slowest/fastest ratio.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub value: f64,
    pub fairness: Option<f64>,
}

pub async fn run(case: Case, kind: Muxer, link: Link) -> Option<Sample> {
    match case {
        Case::Throughput {
            streams,
            bytes_each,
        } => Some(throughput(kind, link, streams, bytes_each).await),
        Case::RequestResponse { requests } => Some(request_response(kind, link, requests).await),
        Case::RequestResponseP99 { requests } => {
            let latencies = request_response_latencies(kind, link, requests).await;
            Some(Sample {
                value: percentile(latencies, 0.99),
                fairness: None,
            })
        }
        Case::OpenClose { streams } if kind != Muxer::None => {
            Some(open_close(kind, link, streams).await)
        }
        Case::OpenClose { .. } => None,
        Case::IdleStreamMemory { streams } if kind != Muxer::None => {
            Some(idle_stream_memory(kind, link, streams).await)
        }
        Case::IdleStreamMemory { .. } => None,
    }
}

/// See [`Case::IdleStreamMemory`].
pub async fn idle_stream_memory(kind: Muxer, link: Link, streams: usize) -> Sample {
    // Connections of earlier measurements free their memory as they close: not in this count.
    driven::held_drivers_ended().await;
    let (client, mut server) = connection(kind, link).await;
    let mut held = Vec::with_capacity(2 * streams);
    counting::start();
    for _ in 0..streams {
        let mut s = client.open().await;
        s.write_all(&[1]).await.expect("write");
        s.flush().await.expect("flush");
        let mut peer = server.accept().await;
        let mut byte = [0u8];
        peer.read_exact(&mut byte).await.expect("read");
        held.push(s);
        held.push(peer);
    }
    counting::stop();
    let bytes = counting::held();
    drop(held);
    Sample {
        value: bytes as f64 / streams as f64,
        fairness: None,
    }
}

pub async fn throughput(kind: Muxer, link: Link, streams: usize, bytes_each: usize) -> Sample {
    let total = streams * bytes_each;
    let mib = total as f64 / (1 << 20) as f64;
    if kind == Muxer::None {
        let (a, b) = sockets(link).await;
        let start = Instant::now();
        // The writer is the application (it runs where the placement says), the reader the
        // far end, in a task of its own, as with a muxer (on TCP + noise, encrypting and
        // decrypting then run side by side). Timed until the reader has everything.
        let receiver = tokio::spawn(receive(Box::new(b)));
        let (_, got) = future::join(send(Box::new(a), total), async {
            receiver.await.expect("receiver")
        })
        .await;
        assert_eq!(got, total);
        return Sample {
            value: mib / start.elapsed().as_secs_f64(),
            fairness: None,
        };
    }
    let (client, mut server) = connection(kind, link).await;
    let start = Instant::now();
    let receivers = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let s = server.accept().await;
            tasks.push(tokio::spawn(async move {
                (receive(Box::new(s)).await, start.elapsed())
            }));
        }
        let done = future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.expect("receiver"))
            .collect::<Vec<_>>();
        // The connection stays until the senders have seen their closes through.
        (done, server)
    });
    // The senders are the application: they run where the placement says, in this future.
    let senders = future::join_all((0..streams).map(|_| {
        let client = client.clone();
        async move { send(Box::new(client.open().await), bytes_each).await }
    }));
    let (_, received) = future::join(senders, receivers).await;
    let (done, _server) = received.expect("receivers");
    let elapsed = start.elapsed();
    assert!(
        done.iter().all(|(n, _)| *n == bytes_each),
        "every byte arrives"
    );
    let times: Vec<f64> = done.iter().map(|(_, t)| t.as_secs_f64()).collect();
    let fastest = times.iter().copied().fold(f64::MAX, f64::min);
    let slowest = times.iter().copied().fold(0.0, f64::max);
    Sample {
        value: mib / elapsed.as_secs_f64(),
        fairness: (streams > 1).then_some(slowest / fastest),
    }
}

pub async fn request_response(kind: Muxer, link: Link, requests: usize) -> Sample {
    Sample {
        value: median(request_response_latencies(kind, link, requests).await),
        fairness: None,
    }
}

/// The latency of each of `requests` request/responses, in µs.
pub async fn request_response_latencies(kind: Muxer, link: Link, requests: usize) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(requests);
    if kind == Muxer::None {
        // One connection, 64 B each way per round trip (no stream to open or close).
        let (mut a, mut b) = sockets(link).await;
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while b.read_exact(&mut buf).await.is_ok() {
                b.write_all(&buf).await.expect("answer");
                b.flush().await.expect("flush");
            }
        });
        let mut buf = [0u8; 64];
        let request = [1u8; 64];
        for _ in 0..requests {
            let start = Instant::now();
            a.write_all(&request).await.expect("request");
            a.flush().await.expect("flush");
            a.read_exact(&mut buf).await.expect("answer");
            latencies.push(start.elapsed().as_secs_f64() * 1e6);
        }
        drop(a);
        echo.await.expect("echo");
        return latencies;
    }
    let (client, mut server) = connection(kind, link).await;
    let echo = tokio::spawn(async move {
        let mut answers = Vec::with_capacity(requests);
        for _ in 0..requests {
            let mut s = server.accept().await;
            answers.push(tokio::spawn(async move {
                let mut request = Vec::new();
                s.read_to_end(&mut request).await.expect("request");
                s.write_all(&request).await.expect("answer");
                // The client has the answer once the close is sent; the connection may be
                // gone by the time this task hears back.
                let _ = s.close().await;
            }));
        }
        future::join_all(answers).await;
        // The connection goes when the client is done with it (see below).
        server
    });
    let request = [1u8; 64];
    for _ in 0..requests {
        let start = Instant::now();
        let mut s = client.open().await;
        s.write_all(&request).await.expect("request");
        s.close().await.expect("close request");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.expect("answer");
        assert_eq!(answer.len(), 64);
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let _server = echo.await.expect("echo");
    latencies
}

pub async fn open_close(kind: Muxer, link: Link, streams: usize) -> Sample {
    const IN_FLIGHT: usize = 8;
    let (client, mut server) = connection(kind, link).await;
    let acceptor = tokio::spawn(async move {
        let mut closers = Vec::with_capacity(streams);
        for _ in 0..streams {
            let mut s = server.accept().await;
            closers.push(tokio::spawn(async move {
                s.close().await.expect("close");
                let mut byte = Vec::new();
                s.read_to_end(&mut byte).await.expect("EOF");
            }));
        }
        for closer in future::join_all(closers).await {
            closer.expect("closer");
        }
        // The connection goes when the client is done with it (see below).
        server
    });
    let start = Instant::now();
    // The openers are the application: they run where the placement says, in this future.
    let openers = (0..IN_FLIGHT).map(|i| {
        let client = client.clone();
        async move {
            let byte = [1u8];
            let mut eof = [0u8; 1];
            for _ in (i..streams).step_by(IN_FLIGHT) {
                let mut s = client.open().await;
                s.write_all(&byte).await.expect("write");
                s.close().await.expect("close");
                let _ = s.read(&mut eof).await.expect("EOF");
            }
        }
    });
    future::join_all(openers).await;
    let _server = acceptor.await.expect("acceptor");
    Sample {
        value: start.elapsed().as_secs_f64() * 1e6 / streams as f64,
        fairness: None,
    }
}

pub fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Ours (extension mode): `flooded` streams that a peer writes flat out to while nobody reads
/// them, each stuck at its 256 KiB window, then one more stream carrying `bytes`: MiB/s of that
/// stream. With `flooded` 0, the same stream alone.
pub async fn beside_flood(link: Link, flooded: usize, bytes: usize) -> f64 {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (a, b) = sockets(link).await;
    let mut config = Config::default();
    config.set_max_num_streams(flooded + 8);
    let (a, b) = upgrade!(config, EXTENSION_PROTOCOL, a, b);
    let (client, mut server) = (Arc::new(drive_while_held(a)), drive_while_held(b));
    let written = Arc::new(AtomicUsize::new(0));
    let chunk = Arc::new(vec![3u8; CHUNK]);
    let mut unread = Vec::with_capacity(flooded);
    for _ in 0..flooded {
        let mut s = client.open().await;
        let (written, chunk) = (written.clone(), chunk.clone());
        tokio::spawn(async move {
            while s.write_all(&chunk).await.is_ok() {
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        });
        unread.push(server.accept().await);
    }
    // Every flooded stream has used its whole window (256 KiB, four chunks).
    let windows = flooded * libp2p_mplex_halfclose::core::INITIAL_WINDOW as usize;
    while written.load(Ordering::Relaxed) < windows {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    let sender = tokio::spawn({
        let client = client.clone();
        async move { send(Box::new(client.open().await), bytes).await }
    });
    let got = receive(Box::new(server.accept().await)).await;
    let elapsed = start.elapsed();
    sender.await.expect("sender");
    assert_eq!(got, bytes, "every byte arrives");
    drop(unread);
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
}

/// What one run over a long link measured.
#[derive(Debug, Clone)]
pub struct LongLinkSample {
    /// Round trips until a round trip's worth of data arrived at 90 % of the link rate.
    pub round_trips_to_90: Option<usize>,
    /// Over the second half of the run, as a share of the link rate.
    pub second_half: f64,
    /// Over the second half, the stream that moved most against the one that moved least.
    pub fairness: Option<f64>,
}

/// `streams` streams write flat out over an emulated link (`rtt`, `bits_per_second`) for
/// `round_trips` round trips, while the other side reads all it gets.
pub async fn long_link(
    kind: Muxer,
    rtt: std::time::Duration,
    bits_per_second: f64,
    streams: usize,
    round_trips: usize,
) -> LongLinkSample {
    use std::sync::atomic::{AtomicBool, Ordering};

    let duration = rtt * round_trips as u32;
    let (a, b) = delay_line::link(rtt, bits_per_second);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // Each receiver counts what it reads, per round trip.
    let count = move |mut r: Box<dyn futures::AsyncRead + Unpin + Send>| async move {
        let mut bins = vec![0u64; round_trips + 1];
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return bins,
                Ok(n) => {
                    let bin = (start.elapsed().as_secs_f64() / rtt.as_secs_f64()) as usize;
                    bins[bin.min(round_trips)] += n as u64;
                }
            }
        }
    };
    let flat_out = move |mut w: Box<dyn futures::AsyncWrite + Unpin + Send>,
                         stop: Arc<AtomicBool>| async move {
        let chunk = vec![0x5au8; CHUNK];
        while !stop.load(Ordering::Relaxed) {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.close().await;
    };
    let per_stream: Vec<Vec<u64>> = if kind == Muxer::None {
        let writer = tokio::spawn(flat_out(a, stop.clone()));
        let reader = tokio::spawn(count(b));
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        writer.await.expect("writer");
        vec![reader.await.expect("reader")]
    } else {
        let (a, b) = match kind {
            Muxer::OursExtension => upgrade!(Config::default(), EXTENSION_PROTOCOL, a, b),
            Muxer::OursPlain => upgrade!(Config::default(), MPLEX_PROTOCOL, a, b),
            Muxer::LibMplex => upgrade!(libp2p_mplex::Config::default(), "/mplex/6.7.0", a, b),
            Muxer::Yamux => upgrade!(libp2p_yamux::Config::default(), "/yamux/1.0.0", a, b),
            Muxer::None => unreachable!(),
        };
        let (client, mut server) = (Arc::new(drive_while_held(a)), drive_while_held(b));
        // Each stream is read from the moment it arrives, so that what the application reads
        // is what the link carried (a muxer without flow control would otherwise let data
        // pile up on the receiving side, read later at more than the link's rate).
        let acceptor = tokio::spawn(async move {
            let mut readers = Vec::new();
            for _ in 0..streams {
                readers.push(tokio::spawn(count(Box::new(server.accept().await))));
            }
            // The connection stays while the readers read.
            (readers, server)
        });
        let mut writers = Vec::new();
        for _ in 0..streams {
            let stream = client.open().await;
            writers.push(tokio::spawn(flat_out(Box::new(stream), stop.clone())));
        }
        let (readers, _server) = acceptor.await.expect("acceptor");
        tokio::time::sleep(duration.saturating_sub(start.elapsed())).await;
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await.expect("writer");
        }
        future::join_all(readers)
            .await
            .into_iter()
            .map(|r| r.expect("reader"))
            .collect()
    };
    let link_per_round_trip = bits_per_second / 8.0 * rtt.as_secs_f64();
    let total: Vec<u64> = (0..round_trips)
        .map(|i| per_stream.iter().map(|bins| bins[i]).sum())
        .collect();
    let round_trips_to_90 = total
        .iter()
        .position(|&bytes| bytes as f64 >= 0.9 * link_per_round_trip)
        .map(|i| i + 1);
    let half = round_trips / 2;
    let second_half = total[half..].iter().sum::<u64>() as f64
        / ((round_trips - half) as f64 * link_per_round_trip);
    let moved: Vec<u64> = per_stream
        .iter()
        .map(|bins| bins[half..round_trips].iter().sum())
        .collect();
    let fairness = (streams > 1).then(|| {
        let most = moved.iter().copied().max().unwrap_or(0) as f64;
        let least = moved.iter().copied().min().unwrap_or(0).max(1) as f64;
        most / least
    });
    LongLinkSample {
        round_trips_to_90,
        second_half,
        fairness,
    }
}

/// Ours, one stream writing flat out over an emulated link: the receiving stream's window
/// after every read that changed it, as (seconds since the start, bytes).
pub async fn window_over_time(
    rtt: std::time::Duration,
    bits_per_second: f64,
    round_trips: usize,
) -> Vec<(f64, u64)> {
    use libp2p_mplex_halfclose::{Mode, Muxer as Ours};

    let (a, b) = delay_line::link(rtt, bits_per_second);
    let (client, mut server) = (
        drive_while_held(Ours::new(a, Config::default(), Mode::Extension)),
        drive_while_held(Ours::new(b, Config::default(), Mode::Extension)),
    );
    let duration = rtt * round_trips as u32;
    let mut writer = client.open().await;
    let sender = tokio::spawn(async move {
        let chunk = vec![0x5au8; CHUNK];
        let start = Instant::now();
        while start.elapsed() < duration {
            writer.write_all(&chunk).await.expect("write");
        }
        writer.close().await.expect("close");
    });
    let mut reader = server.accept().await;
    let start = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut points = vec![(0.0, reader.receive_window().unwrap_or(0))];
    while reader.read(&mut buf).await.expect("read") > 0 {
        let window = reader.receive_window().unwrap_or(0);
        if points.last().is_some_and(|&(_, w)| w != window) {
            points.push((start.elapsed().as_secs_f64(), window));
        }
    }
    points.push((
        start.elapsed().as_secs_f64(),
        points.last().map_or(0, |p| p.1),
    ));
    sender.await.expect("sender");
    points
}
