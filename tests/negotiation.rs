//! Negotiation by multistream-select over TCP + noise: which protocol each pairing picks, and
//! that plain-mplex mode interoperates with rust's libp2p-mplex in both directions.

use std::io::ErrorKind;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, future};
use libp2p::{
    Multiaddr, PeerId, Transport,
    core::{
        Endpoint,
        muxing::StreamMuxerBox,
        transport::{Boxed, DialOpts, ListenerId, PortUse, TransportEvent},
        upgrade::Version,
    },
    identity, noise, tcp, yamux,
};
use libp2p_mplex_halfclose::{Config, Mode};
use test_support::driven::*;

/// A connection as the tests see it: which muxer ran, in which mode, and the boxed muxer.
struct Conn {
    kind: Kind,
    muxer: StreamMuxerBox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours(Mode),
    LibMplex,
    Yamux,
}

trait Describe {
    fn kind(&self) -> Kind;
}

impl<C> Describe for libp2p_mplex_halfclose::Muxer<C>
where
    C: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    fn kind(&self) -> Kind {
        Kind::Ours(self.mode())
    }
}

impl<C> Describe for libp2p_mplex::Multiplex<C>
where
    C: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    fn kind(&self) -> Kind {
        Kind::LibMplex
    }
}

impl<C> Describe for yamux::Muxer<C> {
    fn kind(&self) -> Kind {
        Kind::Yamux
    }
}

impl<A: Describe, B: Describe> Describe for future::Either<A, B> {
    fn kind(&self) -> Kind {
        match self {
            future::Either::Left(a) => a.kind(),
            future::Either::Right(b) => b.kind(),
        }
    }
}

macro_rules! transport {
    ($mux:expr, $version:expr) => {{
        let key = identity::Keypair::generate_ed25519();
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .upgrade($version)
            .authenticate(noise::Config::new(&key).unwrap())
            .multiplex($mux)
            .map(|(peer, muxer), _| {
                (
                    peer,
                    Conn {
                        kind: muxer.kind(),
                        muxer: StreamMuxerBox::new(muxer),
                    },
                )
            })
            .boxed()
    }};
}

/// Dials `listener` from `dialer` on 127.0.0.1; both sides' outcomes.
async fn connect(
    mut dialer: Boxed<(PeerId, Conn)>,
    mut listener: Boxed<(PeerId, Conn)>,
) -> (Result<Conn, String>, Result<Conn, String>) {
    listener
        .listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr: Multiaddr = loop {
        if let TransportEvent::NewAddress { listen_addr, .. } = listener.select_next_some().await {
            break listen_addr;
        }
    };
    let dial = dialer
        .dial(
            addr,
            DialOpts {
                role: Endpoint::Dialer,
                port_use: PortUse::New,
            },
        )
        .unwrap();
    let accept = async {
        loop {
            if let TransportEvent::Incoming { upgrade, .. } = listener.select_next_some().await {
                return upgrade.await;
            }
        }
    };
    let (d, l) = future::join(dial, accept).await;
    (
        d.map(|(_, c)| c).map_err(|e| format!("{e:?}")),
        l.map(|(_, c)| c).map_err(|e| format!("{e:?}")),
    )
}

fn ours() -> Config {
    Config::default()
}

fn ours_without_fallback() -> Config {
    let mut c = Config::default();
    c.set_plain_mplex_fallback(false);
    c
}

#[tokio::test]
async fn ours_with_ours_picks_the_extension_with_v1_and_v1_lazy() {
    for version in [Version::V1, Version::V1Lazy] {
        let (d, l) = within(connect(
            transport!(ours(), version),
            transport!(ours(), version),
        ))
        .await;
        assert_eq!(d.unwrap().kind, Kind::Ours(Mode::Extension));
        assert_eq!(l.unwrap().kind, Kind::Ours(Mode::Extension));
    }
}

#[tokio::test]
async fn ours_with_libp2p_mplex_picks_plain_mplex_both_ways() {
    let (d, l) = within(connect(
        transport!(ours(), Version::V1),
        transport!(libp2p_mplex::Config::default(), Version::V1),
    ))
    .await;
    assert_eq!(d.unwrap().kind, Kind::Ours(Mode::PlainMplex));
    assert_eq!(l.unwrap().kind, Kind::LibMplex);
    let (d, l) = within(connect(
        transport!(libp2p_mplex::Config::default(), Version::V1),
        transport!(ours(), Version::V1),
    ))
    .await;
    assert_eq!(d.unwrap().kind, Kind::LibMplex);
    assert_eq!(l.unwrap().kind, Kind::Ours(Mode::PlainMplex));
}

#[tokio::test]
async fn without_fallback_a_plain_mplex_peer_is_refused() {
    let (d, _l) = within(connect(
        transport!(ours_without_fallback(), Version::V1),
        transport!(libp2p_mplex::Config::default(), Version::V1),
    ))
    .await;
    let err = d.err().expect("negotiation must fail");
    assert!(
        err.contains("Select(Failed)"),
        "multistream-select found no common muxer: {err}"
    );
}

#[tokio::test]
async fn ours_with_yamux_only_fails_with_a_negotiation_error() {
    let (d, l) = within(connect(
        transport!(ours(), Version::V1),
        transport!(yamux::Config::default(), Version::V1),
    ))
    .await;
    let err = d.err().expect("dialer must fail");
    assert!(
        err.contains("Select(Failed)"),
        "multistream-select found no common muxer: {err}"
    );
    assert!(l.is_err());
}

#[tokio::test]
async fn the_tuple_with_yamux_prefers_ours_and_still_talks_to_yamux_only_peers() {
    let tuple = || libp2p::core::upgrade::SelectUpgrade::new(ours(), yamux::Config::default());
    let (d, l) = within(connect(
        transport!(tuple(), Version::V1),
        transport!(tuple(), Version::V1),
    ))
    .await;
    assert_eq!(d.unwrap().kind, Kind::Ours(Mode::Extension));
    assert_eq!(l.unwrap().kind, Kind::Ours(Mode::Extension));
    let (d, l) = within(connect(
        transport!(tuple(), Version::V1),
        transport!(yamux::Config::default(), Version::V1),
    ))
    .await;
    assert_eq!(d.unwrap().kind, Kind::Yamux);
    assert_eq!(l.unwrap().kind, Kind::Yamux);
}

/// Echo server on `conn`: reads each stream to EOF, writes it back, closes.
fn spawn_echo(conn: Conn, streams: usize) -> tokio::task::JoinHandle<()> {
    let mut server = drive(conn.muxer);
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let mut s = server.accept().await;
            tasks.push(tokio::spawn(async move {
                let mut data = Vec::new();
                s.read_to_end(&mut data).await.unwrap();
                s.write_all(&data).await.unwrap();
                s.close().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
}

async fn echo_many(client: Conn, streams: usize, len: usize) {
    let client = std::sync::Arc::new(drive(client.muxer));
    let mut tasks = Vec::new();
    for i in 0..streams {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let s = client.open().await;
            let data = pattern(len, i as u8);
            let (mut r, mut w) = s.split();
            let writer = async {
                w.write_all(&data).await.unwrap();
                w.close().await.unwrap();
            };
            let mut back = Vec::new();
            let reader = r.read_to_end(&mut back);
            let ((), read) = future::join(writer, reader).await;
            read.unwrap();
            assert_eq!(back, data, "stream {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn plain_mode_interoperates_with_libp2p_mplex_when_we_dial() {
    within(async {
        let (d, l) = connect(
            transport!(ours(), Version::V1),
            transport!(libp2p_mplex::Config::default(), Version::V1),
        )
        .await;
        let server = spawn_echo(l.unwrap(), 40);
        echo_many(d.unwrap(), 40, 50_000).await;
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn plain_mode_interoperates_with_libp2p_mplex_when_we_listen() {
    within(async {
        let (d, l) = connect(
            transport!(libp2p_mplex::Config::default(), Version::V1),
            transport!(ours(), Version::V1),
        )
        .await;
        let server = spawn_echo(l.unwrap(), 40);
        echo_many(d.unwrap(), 40, 50_000).await;
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_large_transfer_to_libp2p_mplex_arrives_byte_for_byte() {
    within(async {
        let (d, l) = connect(
            transport!(ours(), Version::V1),
            transport!(libp2p_mplex::Config::default(), Version::V1),
        )
        .await;
        let server = spawn_echo(l.unwrap(), 1);
        echo_many(d.unwrap(), 1, 8 * 1024 * 1024).await;
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn our_drop_after_close_write_resets_a_libp2p_mplex_writer() {
    within(async {
        let (d, l) = connect(
            transport!(ours(), Version::V1),
            transport!(libp2p_mplex::Config::default(), Version::V1),
        )
        .await;
        let client = drive(d.unwrap().muxer);
        let mut server = drive(l.unwrap().muxer);
        let mut s = client.open().await;
        s.close().await.unwrap();
        let mut peer = server.accept().await;
        let mut buf = Vec::new();
        peer.read_to_end(&mut buf).await.unwrap();
        drop(s);
        // libp2p-mplex reports writes on a reset stream as BrokenPipe.
        let err = loop {
            if let Err(e) = peer.write_all(&[0u8; 1024]).await {
                break e;
            }
        };
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    })
    .await;
}

#[tokio::test]
async fn a_libp2p_mplex_reset_reaches_our_stream_as_connection_reset() {
    within(async {
        let (d, l) = connect(
            transport!(libp2p_mplex::Config::default(), Version::V1),
            transport!(ours(), Version::V1),
        )
        .await;
        let client = drive(d.unwrap().muxer);
        let mut server = drive(l.unwrap().muxer);
        let mut s = client.open().await;
        s.write_all(b"x").await.unwrap();
        s.flush().await.unwrap();
        let mut peer = server.accept().await;
        let mut one = [0u8; 1];
        peer.read_exact(&mut one).await.unwrap();
        drop(s); // both directions open: libp2p-mplex queues a Reset
        // libp2p-mplex sends queued frames only when it is polled for something; in a swarm
        // the connection task does that all the time. Writing on another stream is such a poll
        // here (and flushes the Reset out of libp2p-mplex's buffer).
        let mut another = client.open().await;
        another.write_all(b"y").await.unwrap();
        another.flush().await.unwrap();
        let err = peer.read(&mut one).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    })
    .await;
}
