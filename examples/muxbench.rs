//! Side-by-side throughput of muxers on one machine, alternating round by round so that drift
//! cancels: `cargo run --release --example muxbench [-- --rounds N --mib N]`.
//!
//! Every muxer is driven through `StreamMuxer`, with its default config, over an in-memory pipe
//! (256 KiB) and over TCP on 127.0.0.1 with nodelay, no security.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::drive;
use futures::{AsyncReadExt, AsyncWriteExt, future};
use libp2p_core::{
    muxing::StreamMuxerBox,
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
};
use libp2p_mplex_halfclose::{Config, EXTENSION_PROTOCOL, MPLEX_PROTOCOL};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Muxer {
    None,
    OursExtension,
    OursPlain,
    LibMplex,
    Yamux,
}

impl Muxer {
    const ALL: [Muxer; 5] = [
        Muxer::None,
        Muxer::OursExtension,
        Muxer::OursPlain,
        Muxer::LibMplex,
        Muxer::Yamux,
    ];

    fn name(self) -> &'static str {
        match self {
            Muxer::None => "no muxer",
            Muxer::OursExtension => "ours (extension)",
            Muxer::OursPlain => "ours (plain mplex)",
            Muxer::LibMplex => "libp2p-mplex 0.44",
            Muxer::Yamux => "libp2p-yamux 0.48",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Memory,
    Tcp,
}

trait Socket: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static {}
impl<T: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static> Socket for T {}

async fn sockets(link: Link) -> (Box<dyn Socket>, Box<dyn Socket>) {
    match link {
        Link::Memory => {
            let (a, b) = tokio::io::duplex(256 * 1024);
            (Box::new(a.compat()), Box::new(b.compat()))
        }
        Link::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (a, b) = future::join(TcpStream::connect(addr), listener.accept()).await;
            let (a, (b, _)) = (a.unwrap(), b.unwrap());
            a.set_nodelay(true).unwrap();
            b.set_nodelay(true).unwrap();
            (Box::new(a.compat()), Box::new(b.compat()))
        }
    }
}

async fn muxers(
    kind: Muxer,
    a: Box<dyn Socket>,
    b: Box<dyn Socket>,
) -> (StreamMuxerBox, StreamMuxerBox) {
    match kind {
        Muxer::OursExtension | Muxer::OursPlain => {
            let info = if kind == Muxer::OursExtension {
                EXTENSION_PROTOCOL
            } else {
                MPLEX_PROTOCOL
            };
            let config = Config::default();
            let (x, y) = future::join(
                config.clone().upgrade_outbound(a, info),
                config.upgrade_inbound(b, info),
            )
            .await;
            (
                StreamMuxerBox::new(x.unwrap()),
                StreamMuxerBox::new(y.unwrap()),
            )
        }
        Muxer::LibMplex => {
            let c = libp2p_mplex::Config::default();
            let (x, y) = future::join(
                c.clone().upgrade_outbound(a, "/mplex/6.7.0"),
                c.upgrade_inbound(b, "/mplex/6.7.0"),
            )
            .await;
            (
                StreamMuxerBox::new(x.unwrap()),
                StreamMuxerBox::new(y.unwrap()),
            )
        }
        Muxer::Yamux => {
            let c = libp2p_yamux::Config::default();
            let (x, y) = future::join(
                c.clone().upgrade_outbound(a, "/yamux/1.0.0"),
                c.upgrade_inbound(b, "/yamux/1.0.0"),
            )
            .await;
            (
                StreamMuxerBox::new(x.unwrap()),
                StreamMuxerBox::new(y.unwrap()),
            )
        }
        Muxer::None => unreachable!("no muxer has no streams"),
    }
}

const CHUNK: usize = 64 * 1024;

async fn send(mut w: impl futures::AsyncWrite + Unpin, bytes: usize) {
    let chunk = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        w.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    w.close().await.unwrap();
}

async fn receive(mut r: impl futures::AsyncRead + Unpin) -> usize {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        match r.read(&mut buf).await.unwrap() {
            0 => return total,
            n => total += n,
        }
    }
}

/// `streams` streams each carrying `bytes_each` from one side to the other; returns the total
/// time and the slowest/fastest stream completion ratio.
async fn transfer(kind: Muxer, link: Link, streams: usize, bytes_each: usize) -> (Duration, f64) {
    let (a, b) = sockets(link).await;
    if kind == Muxer::None {
        let start = Instant::now();
        let (_, got) = future::join(send(a, bytes_each * streams), receive(b)).await;
        assert_eq!(got, bytes_each * streams);
        return (start.elapsed(), 1.0);
    }
    let (a, b) = muxers(kind, a, b).await;
    let client = std::sync::Arc::new(drive(a));
    let mut server = drive(b);
    let start = Instant::now();
    let receivers = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let s = server.accept().await;
            tasks.push(tokio::spawn(async move {
                let n = receive(s).await;
                (n, start.elapsed())
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for _ in 0..streams {
        let client = client.clone();
        tokio::spawn(async move {
            let s = client.open().await;
            send(s, bytes_each).await;
        });
    }
    let done = receivers.await.unwrap();
    let elapsed = start.elapsed();
    assert!(done.iter().all(|(n, _)| *n == bytes_each));
    let times: Vec<f64> = done.iter().map(|(_, t)| t.as_secs_f64()).collect();
    let fastest = times.iter().cloned().fold(f64::MAX, f64::min);
    let slowest = times.iter().cloned().fold(0.0, f64::max);
    (elapsed, slowest / fastest)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn text_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn main() {
    let only = text_arg("--only");
    let muxers_arg = text_arg("--muxers");
    let rounds = arg("--rounds", 5);
    let mib = arg("--mib", 256);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tests: [(&str, Link, usize, usize); 4] = [
        ("1 stream, memory pipe", Link::Memory, 1, mib << 20),
        ("1 stream, TCP", Link::Tcp, 1, mib << 20),
        ("64 streams, memory pipe", Link::Memory, 64, 4 << 20),
        ("64 streams, TCP", Link::Tcp, 64, 4 << 20),
    ];
    println!("medians of {rounds} alternating rounds, MiB/s (slowest/fastest stream)\n");
    print!("{:<26}", "test");
    for m in Muxer::ALL {
        print!("{:>22}", m.name());
    }
    println!("{:>16}", "ours/best peer");
    for (name, link, streams, bytes_each) in tests {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let mut rates = vec![Vec::new(); Muxer::ALL.len()];
        let mut fairness = vec![Vec::new(); Muxer::ALL.len()];
        for _ in 0..rounds {
            for (i, m) in Muxer::ALL.iter().enumerate() {
                if muxers_arg.as_deref().is_some_and(|o| !m.name().contains(o)) {
                    rates[i].push(f64::NAN);
                    fairness[i].push(f64::NAN);
                    continue;
                }
                let (t, fair) = runtime.block_on(transfer(*m, link, streams, bytes_each));
                rates[i].push((streams * bytes_each) as f64 / (1 << 20) as f64 / t.as_secs_f64());
                fairness[i].push(fair);
            }
        }
        let med: Vec<f64> = rates.into_iter().map(median).collect();
        let fair: Vec<f64> = fairness.into_iter().map(median).collect();
        print!("{name:<26}");
        for (r, f) in med.iter().zip(&fair) {
            if streams > 1 {
                print!("{:>22}", format!("{r:.0} ({f:.2})"));
            } else {
                print!("{r:>22.0}");
            }
        }
        let best_peer = med[3].max(med[4]);
        println!("{:>16.2}", med[1] / best_peer);
    }
}
