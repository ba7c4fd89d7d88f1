//! A perf tool in the spirit of libp2p's perf protocol: a server and a client over TCP + noise,
//! with our muxer (or yamux or libp2p-mplex for comparison). The client measures the latency of a
//! small request/response, then uploads and downloads the given number of bytes, with a progress
//! bar on a terminal.
//!
//! ```sh
//! cargo run --release --example perf -- --local                        # server and client here
//! cargo run --release --example perf -- --server --listen /ip4/127.0.0.1/tcp/4001
//! cargo run --release --example perf -- --client /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo... \
//!     --upload 1G --download 1G --muxer yamux
//! ```
//!
//! Options: `--muxer ours|yamux|mplex` (default ours; both sides must agree), `--upload N` and
//! `--download N` in bytes (suffixes K, M, G: powers of 1024; default 256M each),
//! `--requests N` for the latency measurement (default 1000).
//!
//! The perf protocol (`/mplex-halfclose-perf/1.0.0`): the client sends the number of bytes it
//! wants back (8 bytes, big endian), then its upload, and closes writing; the server reads to
//! EOF, sends the requested bytes and closes. Without close-write the upload would need a length
//! prefix: this is what half-close is for.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport,
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade::Version},
    multiaddr::Protocol,
    noise,
    swarm::SwarmEvent,
    tcp,
};
use libp2p_mplex_halfclose::{EXTENSION_PROTOCOL, MPLEX_PROTOCOL, Mode};

const PERF: StreamProtocol = StreamProtocol::new("/mplex-halfclose-perf/1.0.0");
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq)]
enum MuxerChoice {
    Ours,
    Yamux,
    Mplex,
}

struct Args {
    server: bool,
    local: bool,
    listen: Multiaddr,
    client: Option<Multiaddr>,
    muxer: MuxerChoice,
    upload: u64,
    download: u64,
    requests: usize,
}

fn parse_size(text: &str) -> u64 {
    let (digits, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&text[..i], text[i..].to_ascii_uppercase()),
        None => (text, String::new()),
    };
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        other => panic!("unknown size unit {other:?}"),
    };
    digits.parse::<u64>().expect("a size") << shift
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let flag = |name: &str| args.iter().any(|a| a == name);
        Self {
            server: flag("--server"),
            local: flag("--local"),
            listen: value("--listen")
                .unwrap_or_else(|| "/ip4/127.0.0.1/tcp/0".into())
                .parse()
                .expect("--listen: a multiaddr"),
            client: value("--client").map(|a| a.parse().expect("--client: a multiaddr")),
            muxer: match value("--muxer").as_deref() {
                None | Some("ours") => MuxerChoice::Ours,
                Some("yamux") => MuxerChoice::Yamux,
                Some("mplex") => MuxerChoice::Mplex,
                Some(other) => panic!("--muxer: ours, yamux or mplex, not {other}"),
            },
            upload: value("--upload").map_or(256 << 20, |v| parse_size(&v)),
            download: value("--download").map_or(256 << 20, |v| parse_size(&v)),
            requests: value("--requests").map_or(1000, |v| v.parse().expect("--requests")),
        }
    }
}

/// A swarm over TCP + noise with the chosen muxer; `negotiated` records the muxer protocol of
/// each connection.
fn swarm(
    muxer: MuxerChoice,
    negotiated: Arc<Mutex<Option<&'static str>>>,
) -> Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(move |key| {
            let noise = noise::Config::new(key)?;
            let authenticated = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .upgrade(Version::V1)
                .authenticate(noise);
            let record = move |protocol| *negotiated.lock().unwrap() = Some(protocol);
            let transport: Boxed<(PeerId, StreamMuxerBox)> = match muxer {
                MuxerChoice::Ours => authenticated
                    .multiplex(libp2p_mplex_halfclose::Config::default())
                    .map(move |(peer, m), _| {
                        record(match m.mode() {
                            Mode::Extension => EXTENSION_PROTOCOL,
                            Mode::PlainMplex => MPLEX_PROTOCOL,
                        });
                        (peer, StreamMuxerBox::new(m))
                    })
                    .boxed(),
                MuxerChoice::Yamux => authenticated
                    .multiplex(libp2p::yamux::Config::default())
                    .map(move |(peer, m), _| {
                        record("/yamux/1.0.0");
                        (peer, StreamMuxerBox::new(m))
                    })
                    .boxed(),
                MuxerChoice::Mplex => authenticated
                    .multiplex(libp2p_mplex::Config::default())
                    .map(move |(peer, m), _| {
                        record("/mplex/6.7.0 (libp2p-mplex)");
                        (peer, StreamMuxerBox::new(m))
                    })
                    .boxed(),
            };
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
        })
        .expect("transport")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Writes `len` bytes, advancing `bar` if given.
async fn send(w: &mut (impl AsyncWrite + Unpin), len: u64, bar: Option<&ProgressBar>) {
    let chunk = vec![0x5au8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        w.write_all(&chunk[..n]).await.expect("write");
        left -= n as u64;
        if let Some(bar) = bar {
            bar.inc(n as u64);
        }
    }
}

/// Reads to EOF, advancing `bar` if given; returns the bytes read.
async fn receive(r: &mut (impl AsyncRead + Unpin), bar: Option<&ProgressBar>) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        match r.read(&mut buf).await.expect("read") {
            0 => return total,
            n => {
                total += n as u64;
                if let Some(bar) = bar {
                    bar.inc(n as u64);
                }
            }
        }
    }
}

/// Serves the perf protocol on every stream.
async fn serve(mut control: libp2p_stream::Control) {
    let mut incoming = control.accept(PERF).expect("accept the perf protocol");
    while let Some((_, mut stream)) = incoming.next().await {
        tokio::spawn(async move {
            let mut wanted = [0u8; 8];
            if stream.read_exact(&mut wanted).await.is_err() {
                return;
            }
            receive(&mut stream, None).await;
            send(&mut stream, u64::from_be_bytes(wanted), None).await;
            let _ = stream.close().await;
        });
    }
}

/// One perf exchange: returns the time it took.
async fn exchange(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    upload: u64,
    download: u64,
    bar: Option<&ProgressBar>,
) -> Duration {
    let start = Instant::now();
    let mut stream = control
        .open_stream(peer, PERF)
        .await
        .expect("open a stream");
    stream
        .write_all(&download.to_be_bytes())
        .await
        .expect("write");
    send(&mut stream, upload, bar).await;
    stream.close().await.expect("close writing");
    let got = receive(&mut stream, bar).await;
    assert_eq!(got, download, "the server sends what was asked");
    start.elapsed()
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

async fn run_client(args: &Args, addr: Multiaddr) {
    let peer = match addr.iter().last() {
        Some(Protocol::P2p(peer)) => peer,
        _ => panic!("--client needs the server's address ending in /p2p/<peer id>"),
    };
    let negotiated = Arc::new(Mutex::new(None));
    let mut client = swarm(args.muxer, negotiated.clone());
    client.dial(addr.clone()).expect("dial");
    loop {
        match client.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => break,
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
            _ => {}
        }
    }
    let mut control = client.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    println!(
        "connected to {addr} with {}",
        negotiated.lock().unwrap().unwrap_or("?")
    );

    let mut latencies = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        latencies.push(exchange(&mut control, peer, 64, 64, None).await);
    }
    latencies.sort();
    if !latencies.is_empty() {
        println!(
            "request/response (64 B each way, one stream each): median {:.1} µs, p99 {:.1} µs over {} requests",
            latencies[latencies.len() / 2].as_secs_f64() * 1e6,
            latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)].as_secs_f64() * 1e6,
            latencies.len()
        );
    }
    for (what, up, down) in [("upload", args.upload, 0), ("download", 0, args.download)] {
        if up + down == 0 {
            continue;
        }
        let progress = bar(up + down, what);
        let took = exchange(&mut control, peer, up, down, Some(&progress)).await;
        progress.finish_and_clear();
        println!(
            "{what}: {} MiB in {:.2} s, {:.0} MiB/s",
            (up + down) >> 20,
            took.as_secs_f64(),
            (up + down) as f64 / (1 << 20) as f64 / took.as_secs_f64()
        );
    }
}

/// Starts a server; returns its address with its peer id.
async fn start_server(args: &Args) -> Multiaddr {
    let mut server = swarm(args.muxer, Arc::new(Mutex::new(None)));
    server.listen_on(args.listen.clone()).expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let addr = addr.with(Protocol::P2p(*server.local_peer_id()));
    tokio::spawn(serve(server.behaviour().new_control()));
    tokio::spawn(async move {
        loop {
            server.select_next_some().await;
        }
    });
    addr
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.server {
        let addr = start_server(&args).await;
        println!("perf server ({:?}) listening on {addr}", args.muxer);
        std::future::pending::<()>().await;
    } else if let Some(addr) = args.client.clone() {
        run_client(&args, addr).await;
    } else if args.local {
        let addr = start_server(&args).await;
        run_client(&args, addr).await;
    } else {
        eprintln!("use --local, --server [--listen ADDR] or --client ADDR (see the file's docs)");
        std::process::exit(2);
    }
}
