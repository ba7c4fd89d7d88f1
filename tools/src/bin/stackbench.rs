//! Muxers in a real node's stack: two swarms over TCP + noise (`Transport::upgrade(V1)
//! .authenticate(noise).multiplex(..)`), with `libp2p-stream` and `libp2p-request-response`
//! (cbor), one muxer at a time, alternating them round by round:
//!
//! ```sh
//! cargo run --release -p tools --bin stackbench                   # every workload, both placements
//! cargo run --release -p tools --bin stackbench -- --rounds 3 --mib 64 --placement block-on
//! cargo run --release -p tools --bin stackbench -- --only "request-response" --muxers "ours,yamux"
//! cargo run --release -p tools --bin stackbench -- --serve-js   # the Rust side of js/bench
//! ```
//!
//! Workloads (64 B requests and answers):
//! - **stream request/response**: `libp2p-stream`, a new stream per request: open, write, close
//!   writing, read the answer to EOF; median and p99 of 2000.
//! - **request-response**: the request-response behaviour (cbor), one request at a time; median
//!   and p99 of 2000.
//! - **request-response, 64 in flight**: 20,000 requests, 64 outstanding at any time: requests per
//!   second, and the process's CPU time (user + system, both swarms) per request.
//! - **1 stream** / **64 streams**: `--mib` MiB (default 256) written over one stream, or split
//!   over 64 at once, to a reader that reads to EOF; MiB/s, and for 64 the slowest stream's time
//!   over the fastest's.
//! - **open+close**: open a stream, write 1 byte, close writing, read the peer's EOF, one
//!   stream at a time (libp2p-stream drops an inbound stream while the previous one waits to be
//!   taken); µs per stream.
//!
//! Placement (`--placement spawned,block-on`): where the client's application code runs. For
//! the `libp2p-stream` workloads the client swarm is polled in a spawned task and the code that
//! uses the streams runs in a spawned task or on the `block_on` thread; for request-response the
//! swarm loop is the application (as in rust-libp2p's examples) and runs there itself. The
//! connections' tasks are the swarms' own, on the runtime's 2 worker threads.
//!
//! The last column is ours (extension mode) over the best of yamux and libp2p-mplex: above 1 is
//! faster for rates, below 1 faster for times and CPU. A reference row gives one noise channel
//! without a muxer (what one-stream bulk can approach).

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, future};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport,
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade::Version},
    multiaddr::Protocol,
    noise,
    request_response::{self, ProtocolSupport},
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp,
};
use test_support::muxbench::{self, Link, Placement, chosen, median, percentile};

const ECHO: StreamProtocol = StreamProtocol::new("/stackbench/echo/1.0.0");
const SINK: StreamProtocol = StreamProtocol::new("/stackbench/sink/1.0.0");
const BULK: StreamProtocol = StreamProtocol::new("/stackbench/bulk/1.0.0");
/// `--serve-js` only: the client writes a length (8 bytes, big-endian) and closes writing; the
/// server writes that many bytes and closes (the JS benchmark's download).
const SOURCE: StreamProtocol = StreamProtocol::new("/stackbench/source/1.0.0");
const REQUEST_RESPONSE: StreamProtocol = StreamProtocol::new("/stackbench/rr/1.0.0");
const CHUNK: usize = 64 * 1024;
const REQUEST: [u8; 64] = [7; 64];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Muxer {
    Ours,
    Yamux,
    LibMplex,
}

impl Muxer {
    const ALL: [Muxer; 3] = [Muxer::Ours, Muxer::Yamux, Muxer::LibMplex];

    fn name(self) -> &'static str {
        match self {
            Muxer::Ours => "ours (extension)",
            Muxer::Yamux => "libp2p-yamux 0.48",
            Muxer::LibMplex => "libp2p-mplex 0.44",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    StreamRequestResponse,
    RequestResponse,
    RequestResponseInFlight,
    OneStream,
    SixtyFourStreams,
    OpenClose,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::StreamRequestResponse,
        Workload::RequestResponse,
        Workload::RequestResponseInFlight,
        Workload::OneStream,
        Workload::SixtyFourStreams,
        Workload::OpenClose,
    ];

    /// The rows a workload's measurement fills: name, unit, and whether higher is better.
    fn rows(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Workload::StreamRequestResponse => &[
                ("stream request/response", "µs", false),
                ("stream request/response p99", "µs", false),
            ],
            Workload::RequestResponse => &[
                ("request-response", "µs", false),
                ("request-response p99", "µs", false),
            ],
            Workload::RequestResponseInFlight => &[
                ("request-response, 64 in flight", "req/s", true),
                ("  CPU per request", "µs", false),
            ],
            Workload::OneStream => &[("1 stream", "MiB/s", true)],
            Workload::SixtyFourStreams => &[("64 streams", "MiB/s", true)],
            Workload::OpenClose => &[("open+close", "µs", false)],
        }
    }
}

struct Args {
    rounds: usize,
    mib: usize,
    only: Option<String>,
    muxers: Option<String>,
    placements: Vec<Placement>,
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
        let number =
            |name: &str, default| value(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        Self {
            rounds: number("--rounds", 5),
            mib: number("--mib", 256),
            only: value("--only"),
            muxers: value("--muxers"),
            placements: chosen(value("--placement"), &Placement::ALL, |p| p.flag()),
        }
    }

    fn selects_muxer(&self, muxer: Muxer) -> bool {
        self.muxers.as_ref().is_none_or(|list| {
            list.split(',')
                .any(|part| muxer.name().contains(part.trim()))
        })
    }

    fn selects_workload(&self, workload: Workload) -> bool {
        self.only.as_ref().is_none_or(|o| {
            workload
                .rows()
                .iter()
                .any(|(name, ..)| name.contains(o.as_str()))
        })
    }
}

#[derive(NetworkBehaviour)]
struct Node {
    stream: libp2p_stream::Behaviour,
    rr: request_response::cbor::Behaviour<Vec<u8>, Vec<u8>>,
}

/// A swarm over TCP + noise with `muxer`, as a node builds it.
fn swarm(muxer: Muxer) -> Swarm<Node> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(move |key| {
            let authenticated = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key)?);
            let transport: Boxed<(PeerId, StreamMuxerBox)> = match muxer {
                Muxer::Ours => authenticated
                    .multiplex(libp2p_mplex_halfclose::Config::default())
                    .map(|(peer, m), _| (peer, StreamMuxerBox::new(m)))
                    .boxed(),
                Muxer::Yamux => authenticated
                    .multiplex(libp2p::yamux::Config::default())
                    .map(|(peer, m), _| (peer, StreamMuxerBox::new(m)))
                    .boxed(),
                Muxer::LibMplex => authenticated
                    .multiplex(libp2p_mplex::Config::default())
                    .map(|(peer, m), _| (peer, StreamMuxerBox::new(m)))
                    .boxed(),
            };
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
        })
        .expect("transport")
        .with_behaviour(|_| Node {
            stream: libp2p_stream::Behaviour::new(),
            rr: request_response::cbor::Behaviour::new(
                [(REQUEST_RESPONSE, ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Starts a server with `muxer`: echo, sink and source over `libp2p-stream`, echo over
/// request-response; with `report_failures`, it prints why a connection failed. Returns its
/// address with its peer id.
async fn server(muxer: Muxer, report_failures: bool) -> Multiaddr {
    let mut server = swarm(muxer);
    server
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("address"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let mut control = server.behaviour().stream.new_control();
    let mut echo = control.accept(ECHO).expect("echo protocol");
    tokio::spawn(async move {
        while let Some((_, mut stream)) = echo.next().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                if stream.read_to_end(&mut request).await.is_ok()
                    && stream.write_all(&request).await.is_ok()
                {
                    let _ = stream.close().await;
                }
            });
        }
    });
    let mut sink = control.accept(SINK).expect("sink protocol");
    tokio::spawn(async move {
        while let Some((_, mut stream)) = sink.next().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = stream.close().await;
            });
        }
    });
    // Bulk streams start with a byte from the server, once its task has the stream: the client
    // opens the next only then (libp2p-stream drops an inbound stream while the previous one
    // is not yet taken).
    let mut bulk = control.accept(BULK).expect("bulk protocol");
    tokio::spawn(async move {
        while let Some((_, mut stream)) = bulk.next().await {
            tokio::spawn(async move {
                if stream.write_all(&[1]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; CHUNK];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = stream.close().await;
            });
        }
    });
    let mut source = control.accept(SOURCE).expect("source protocol");
    tokio::spawn(async move {
        while let Some((_, mut stream)) = source.next().await {
            tokio::spawn(async move {
                let mut length = [0u8; 8];
                if stream.read_exact(&mut length).await.is_err() {
                    return;
                }
                let chunk = vec![1u8; CHUNK];
                let mut left = u64::from_be_bytes(length);
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = stream.close().await;
            });
        }
    });
    let peer = *server.local_peer_id();
    tokio::spawn(async move {
        loop {
            match server.select_next_some().await {
                SwarmEvent::Behaviour(NodeEvent::Rr(request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                })) => {
                    let _ = server.behaviour_mut().rr.send_response(channel, request);
                }
                SwarmEvent::ConnectionClosed {
                    cause: Some(cause), ..
                } if report_failures => {
                    eprintln!("{}: a connection failed: {cause}", muxer.name());
                }
                _ => {}
            }
        }
    });
    addr.with(Protocol::P2p(peer))
}

/// A client swarm connected to `addr`.
async fn connected_client(muxer: Muxer, addr: &Multiaddr) -> (Swarm<Node>, PeerId) {
    let Some(Protocol::P2p(peer)) = addr.iter().last() else {
        unreachable!("server addresses end in their peer id")
    };
    let mut client = swarm(muxer);
    client.dial(addr.clone()).expect("dial");
    loop {
        match client.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => return (client, peer),
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
            _ => {}
        }
    }
}

/// Process CPU time (user + system), all threads.
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` writes into the zeroed struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

type Values = Vec<f64>;

/// One measurement of `workload` with `muxer`: a value per row of the workload, and for 64
/// streams the fairness.
async fn measure(
    workload: Workload,
    muxer: Muxer,
    addr: Multiaddr,
    mib: usize,
) -> (Values, Option<f64>) {
    let (mut client, peer) = connected_client(muxer, &addr).await;
    match workload {
        Workload::RequestResponse => {
            let mut latencies = Vec::with_capacity(2000);
            for _ in 0..2000 {
                let start = Instant::now();
                client
                    .behaviour_mut()
                    .rr
                    .send_request(&peer, REQUEST.to_vec());
                next_response(&mut client).await;
                latencies.push(start.elapsed().as_secs_f64() * 1e6);
            }
            (
                vec![median(latencies.clone()), percentile(latencies, 0.99)],
                None,
            )
        }
        Workload::RequestResponseInFlight => {
            const REQUESTS: usize = 20_000;
            const IN_FLIGHT: usize = 64;
            let (start, cpu) = (Instant::now(), cpu_time());
            for _ in 0..IN_FLIGHT {
                client
                    .behaviour_mut()
                    .rr
                    .send_request(&peer, REQUEST.to_vec());
            }
            let mut sent = IN_FLIGHT;
            for _ in 0..REQUESTS {
                next_response(&mut client).await;
                if sent < REQUESTS {
                    client
                        .behaviour_mut()
                        .rr
                        .send_request(&peer, REQUEST.to_vec());
                    sent += 1;
                }
            }
            let (elapsed, cpu) = (start.elapsed(), cpu_time() - cpu);
            (
                vec![
                    REQUESTS as f64 / elapsed.as_secs_f64(),
                    cpu.as_secs_f64() * 1e6 / REQUESTS as f64,
                ],
                None,
            )
        }
        _ => {
            let mut control = client.behaviour().stream.new_control();
            let swarm_task = tokio::spawn(async move {
                loop {
                    client.select_next_some().await;
                }
            });
            let result = streams(workload, &mut control, peer, mib << 20).await;
            swarm_task.abort();
            result
        }
    }
}

/// Polls the client swarm until a response arrives.
async fn next_response(client: &mut Swarm<Node>) {
    loop {
        match client.select_next_some().await {
            SwarmEvent::Behaviour(NodeEvent::Rr(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => {
                assert_eq!(response.len(), REQUEST.len(), "the echo is the request");
                return;
            }
            SwarmEvent::Behaviour(NodeEvent::Rr(request_response::Event::OutboundFailure {
                error,
                ..
            })) => panic!("request failed: {error}"),
            SwarmEvent::ConnectionClosed { cause, .. } => panic!("connection closed: {cause:?}"),
            _ => {}
        }
    }
}

/// The `libp2p-stream` workloads.
async fn streams(
    workload: Workload,
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    bytes: usize,
) -> (Values, Option<f64>) {
    match workload {
        Workload::StreamRequestResponse => {
            let mut latencies = Vec::with_capacity(2000);
            let mut answer = Vec::with_capacity(REQUEST.len());
            for _ in 0..2000 {
                let start = Instant::now();
                let mut s = control.open_stream(peer, ECHO).await.expect("open");
                s.write_all(&REQUEST).await.expect("request");
                s.close().await.expect("close writing");
                answer.clear();
                s.read_to_end(&mut answer).await.expect("answer");
                assert_eq!(answer.len(), REQUEST.len(), "the echo is the request");
                latencies.push(start.elapsed().as_secs_f64() * 1e6);
            }
            (
                vec![median(latencies.clone()), percentile(latencies, 0.99)],
                None,
            )
        }
        Workload::OneStream | Workload::SixtyFourStreams => {
            let streams = if workload == Workload::OneStream {
                1
            } else {
                64
            };
            let each = bytes / streams;
            // Opened one after the other, each taken by the server before the next (its byte
            // says so): libp2p-stream drops an inbound stream while the previous one waits.
            let mut opened = Vec::with_capacity(streams);
            for _ in 0..streams {
                opened.push(open_bulk(control, peer).await);
            }
            let start = Instant::now();
            let senders = opened.into_iter().map(|mut s| async move {
                let chunk = vec![0x5au8; CHUNK];
                let mut left = each;
                while left > 0 {
                    let n = left.min(CHUNK);
                    s.write_all(&chunk[..n]).await.expect("write");
                    left -= n;
                }
                s.close().await.expect("close writing");
                // The server closes once it has read everything.
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.expect("EOF");
                start.elapsed().as_secs_f64()
            });
            let times = future::join_all(senders).await;
            let elapsed = start.elapsed().as_secs_f64();
            let fastest = times.iter().copied().fold(f64::MAX, f64::min);
            let slowest = times.iter().copied().fold(0.0, f64::max);
            let rate = (each * streams) as f64 / (1 << 20) as f64 / elapsed;
            (vec![rate], (streams > 1).then_some(slowest / fastest))
        }
        Workload::OpenClose => {
            // One at a time: libp2p-stream drops an inbound stream while the previous one
            // waits to be taken.
            const STREAMS: usize = 2000;
            let start = Instant::now();
            let mut eof = Vec::new();
            for _ in 0..STREAMS {
                let mut s = control.open_stream(peer, SINK).await.expect("open");
                s.write_all(&[1]).await.expect("write");
                s.close().await.expect("close writing");
                s.read_to_end(&mut eof).await.expect("EOF");
            }
            (
                vec![start.elapsed().as_secs_f64() * 1e6 / STREAMS as f64],
                None,
            )
        }
        _ => unreachable!("request-response workloads poll the swarm themselves"),
    }
}

/// A bulk stream the server has taken (see `server`).
async fn open_bulk(control: &mut libp2p_stream::Control, peer: PeerId) -> libp2p::Stream {
    let mut s = control.open_stream(peer, BULK).await.expect("open");
    s.read_exact(&mut [0u8])
        .await
        .expect("the server takes the stream");
    s
}

/// `--serve-js`: the Rust side of the TypeScript package's benchmark (`js/bench/bench.ts
/// --peers ...`): one server per muxer (echo, sink and source over `libp2p-stream`), their addresses
/// printed as `<muxer>=<multiaddr>`, served until stdin closes.
fn serve_js(runtime: &tokio::runtime::Runtime) {
    let addrs: Vec<String> = Muxer::ALL
        .into_iter()
        .map(|m| {
            let key = match m {
                Muxer::Ours => "ours",
                Muxer::Yamux => "yamux",
                Muxer::LibMplex => "mplex",
            };
            format!("{key}={}", runtime.block_on(server(m, true)))
        })
        .collect();
    println!("{}", addrs.join(","));
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::args().any(|a| a == "--serve-js") {
        serve_js(&runtime);
        return;
    }
    let muxers: Vec<Muxer> = Muxer::ALL
        .into_iter()
        .filter(|&m| args.selects_muxer(m))
        .collect();
    let servers: Vec<Multiaddr> = muxers
        .iter()
        .map(|&m| runtime.block_on(server(m, false)))
        .collect();
    println!(
        "two swarms over TCP + noise on 127.0.0.1, medians of {} alternating rounds; last column: ours / best peer",
        args.rounds
    );
    for placement in args.placements.iter().copied() {
        println!("\n{}", placement.title());
        print!("{:<36}{:>7}", "workload", "unit");
        for m in &muxers {
            print!("{:>20}", m.name());
        }
        println!("{:>12}", "ours/best");
        for workload in Workload::ALL {
            if !args.selects_workload(workload) {
                continue;
            }
            // samples[muxer][row]
            let mut samples = vec![vec![Vec::new(); workload.rows().len()]; muxers.len()];
            let mut fairness = vec![Vec::new(); muxers.len()];
            for round in 0..args.rounds {
                for offset in 0..muxers.len() {
                    let i = (round + offset) % muxers.len();
                    let future =
                        Box::pin(measure(workload, muxers[i], servers[i].clone(), args.mib));
                    let (values, fair) = placement.run(&runtime, future);
                    for (row, value) in values.into_iter().enumerate() {
                        samples[i][row].push(value);
                    }
                    fairness[i].extend(fair);
                }
            }
            for (row, &(name, unit, higher_is_better)) in workload.rows().iter().enumerate() {
                print!("{name:<36}{unit:>7}");
                let medians: Vec<f64> = samples.iter().map(|s| median(s[row].clone())).collect();
                for (i, value) in medians.iter().enumerate() {
                    let cell = match fairness[i].is_empty() {
                        true if *value < 100.0 => format!("{value:.1}"),
                        true => format!("{value:.0}"),
                        false => format!("{value:.0} ({:.2})", median(fairness[i].clone())),
                    };
                    print!("{cell:>20}");
                }
                let ours = muxers
                    .iter()
                    .position(|&m| m == Muxer::Ours)
                    .map(|i| medians[i]);
                let peers = muxers
                    .iter()
                    .zip(&medians)
                    .filter(|(m, _)| **m != Muxer::Ours)
                    .map(|(_, v)| *v);
                let best = if higher_is_better {
                    peers.fold(f64::NAN, f64::max)
                } else {
                    peers.fold(f64::NAN, f64::min)
                };
                match ours {
                    Some(ours) if best.is_finite() => println!("{:>12.2}", ours / best),
                    _ => println!("{:>12}", "–"),
                }
            }
        }
    }
    if args.only.as_deref().is_none_or(|o| "noise".contains(o)) {
        let bytes = args.mib << 20;
        let rates: Vec<f64> = (0..args.rounds)
            .map(|_| {
                let task = runtime.spawn(muxbench::throughput(
                    muxbench::Muxer::None,
                    Link::TcpNoise,
                    1,
                    bytes,
                ));
                runtime.block_on(task).expect("measurement task").value
            })
            .collect();
        println!(
            "\nreference: one noise channel over TCP, no muxer: {:.0} MiB/s",
            median(rates)
        );
    }
}
