//! Interop with js-libp2p: our muxer against `@libp2p/mplex` (js-libp2p 2.10) over TCP + noise,
//! the Node.js peer in `tests/interop/js/peer.mjs` started as a child process on 127.0.0.1.
//!
//! Each test makes one connection, once with us dialing and once with the js peer dialing. On
//! it both sides run their cases at the same time, each against protocols the other serves
//! (echo, observe, reset; the file header of `peer.mjs` describes them):
//! - echo with close-write on each side: 1 MiB, 100 concurrent streams, 16 MiB, all checked byte
//!   for byte, opened by us and by the js peer;
//! - resets both ways, seen as `ConnectionReset` here and as `StreamResetError` there;
//! - our close-read and our drop rules against a peer that speaks only plain mplex: what the js
//!   peer's reader and writer saw on each stream.
//!
//! Needs Node.js 20 or newer. `.ci/run` installs the js side with `npm ci`; when
//! `tests/interop/js/node_modules` is missing the test runs `npm ci` itself. Without Node the
//! test fails and says so.

use std::{
    collections::HashMap,
    io::{self, ErrorKind},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use futures::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt, channel::mpsc, future,
};
use libp2p::{
    Multiaddr, PeerId, Transport,
    core::{
        Endpoint,
        multiaddr::Protocol,
        muxing::StreamMuxerBox,
        transport::{DialOpts, ListenerId, PortUse, TransportEvent},
        upgrade::Version,
    },
    identity, noise, tcp,
};
use libp2p_mplex_halfclose::{Config, Mode, Muxer, Stream, StreamError};
use test_support::driven::*;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

const MULTISTREAM: &str = "/multistream/1.0.0";
const ECHO: &str = "/echo/1.0.0";
const OBSERVE: &str = "/observe/1.0.0";
const RESET: &str = "/reset/1.0.0";
/// The js peer writes this pattern on /observe; its readers check that writers send `SENT_SEED`.
const JS_SEED: u8 = 7;
const SENT_SEED: u8 = 3;
/// Everything one test does, Node's start-up included, ends well within this: alone, a run
/// with the TypeScript package takes about 8 seconds, but the file's nine tests share two cores
/// with their Node.js peers, and under a loaded CI machine the slowest came within reach of
/// the 20 seconds this once was (one run in about 30 timed out, and its connection's teardown
/// then looked like a failure of its own).
const TEST_BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_dial_js_libp2p_2() {
    we_dial_the_js_peer(JsLine::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_libp2p_2_dials_us() {
    the_js_peer_dials_us(JsLine::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_dial_js_libp2p_3() {
    we_dial_the_js_peer(JsLine::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_libp2p_3_dials_us() {
    the_js_peer_dials_us(JsLine::V3).await;
}

/// This repository's TypeScript package (`js/`) in js-libp2p 3.x: the extension between two
/// implementations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_dial_the_typescript_extension() {
    we_dial_the_js_peer_with(JsLine::V3, Peer::TypeScriptExtension).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_extension_dials_us() {
    the_js_peer_dials_us_with(JsLine::V3, Peer::TypeScriptExtension).await;
}

/// What the js peer offers, and so what the connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// `@libp2p/mplex` only: we fall back to plain mplex.
    PlainMplex,
    /// The TypeScript package: `/mplex-halfclose/1.0.0`.
    TypeScriptExtension,
}

impl Peer {
    fn args(self) -> &'static [&'static str] {
        match self {
            Peer::PlainMplex => &[],
            Peer::TypeScriptExtension => &["--muxers", "halfclose"],
        }
    }
}

/// js-libp2p 3.x's mplex closes the connection when the other side opens more than 5 streams
/// a second (`the_js_libp2p_3_mplex_closes_a_connection_that_opens_streams_fast` pins it); the
/// runs below open 100 at once, so they raise that rate.
const UNLIMITED_NEW_STREAMS: [&str; 2] = ["--new-stream-rate", "1000000"];

async fn we_dial_the_js_peer(line: JsLine) {
    we_dial_the_js_peer_with(line, Peer::PlainMplex).await;
}

async fn we_dial_the_js_peer_with(line: JsLine, peer: Peer) {
    if peer == Peer::TypeScriptExtension {
        test_support::node::built_js_package();
    }
    let mut js = JsPeer::start(
        line,
        &[&["listen"][..], &UNLIMITED_NEW_STREAMS, peer.args()].concat(),
    )
    .await;
    let line = js.next_line().await;
    let addr: Multiaddr = line
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("js peer: expected its address, got {line:?}"))
        .parse()
        .expect("js peer's address");
    let (mut transport, _) = our_transport();
    let dial = transport
        .dial(
            addr,
            DialOpts {
                role: Endpoint::Dialer,
                port_use: PortUse::New,
            },
        )
        .expect("dial");
    let (_, muxer) = tokio::time::timeout(TEST_BOUND, dial)
        .await
        .expect("connected in time")
        .expect("connection to the js peer");
    tokio::time::timeout(TEST_BOUND, exercise(muxer, js, "inbound", peer))
        .await
        .expect("interop run ended in time");
}

async fn the_js_peer_dials_us(line: JsLine) {
    the_js_peer_dials_us_with(line, Peer::PlainMplex).await;
}

async fn the_js_peer_dials_us_with(line: JsLine, peer: Peer) {
    if peer == Peer::TypeScriptExtension {
        test_support::node::built_js_package();
    }
    let (mut transport, peer_id) = our_transport();
    transport
        .listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let TransportEvent::NewAddress { listen_addr, .. } = transport.select_next_some().await {
            break listen_addr.with(Protocol::P2p(peer_id));
        }
    };
    let addr = addr.to_string();
    let js = JsPeer::start(
        line,
        &[&["dial", &addr][..], &UNLIMITED_NEW_STREAMS, peer.args()].concat(),
    )
    .await;
    let accept = async {
        loop {
            if let TransportEvent::Incoming { upgrade, .. } = transport.select_next_some().await {
                return upgrade.await;
            }
        }
    };
    let (_, muxer) = tokio::time::timeout(TEST_BOUND, accept)
        .await
        .expect("js peer connected in time")
        .expect("connection from the js peer");
    tokio::time::timeout(TEST_BOUND, exercise(muxer, js, "outbound", peer))
        .await
        .expect("interop run ended in time");
}

// --- mixed networks: our node next to yamux, against js peers that offer yamux too ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_to_yamux_we_keep_yamux_with_js_libp2p_2() {
    mixed_network_cells(JsLine::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_to_yamux_we_keep_yamux_with_js_libp2p_3() {
    mixed_network_cells(JsLine::V3).await;
}

/// Our recommended composition (`Config::default().preferred_over(yamux)`) against a js peer
/// that offers yamux and mplex in either order, or mplex alone, dialing and dialed: the muxer
/// both sides agreed on, and echoes both ways on it.
async fn mixed_network_cells(line: JsLine) {
    // The js peer's muxers in its order; what we get when we dial, and when it dials us.
    let cells = [
        ("yamux,mplex", "/yamux/1.0.0", "/yamux/1.0.0"),
        // It dials preferring mplex: its choice. Dialed, it accepts what we prefer.
        ("mplex,yamux", "/yamux/1.0.0", "/mplex/6.7.0"),
        ("mplex", "/mplex/6.7.0", "/mplex/6.7.0"),
    ];
    for (muxers, we_dial, it_dials) in cells {
        for (we_are_dialer, expected) in [(true, we_dial), (false, it_dials)] {
            let cell = format!("{line:?}, js offers {muxers}, we dial: {we_are_dialer}");
            tokio::time::timeout(
                TEST_BOUND,
                mixed_network_cell(line, muxers, we_are_dialer, expected, &cell),
            )
            .await
            .unwrap_or_else(|_| panic!("{cell}: ended in time"));
        }
    }
}

async fn mixed_network_cell(
    line: JsLine,
    muxers: &str,
    we_are_dialer: bool,
    expected: &str,
    cell: &str,
) {
    // Not the 16 MiB echo: over yamux, js-libp2p 3.x (@chainsafe/libp2p-yamux 8) sends frames as
    // large as the window it was granted, and rust-libp2p's yamux refuses any over 1 MiB and
    // closes the connection ("frame body is too large"), which a large, fast transfer between
    // the two muxers can reach. That is between those two yamux implementations; see the README.
    let options = [
        &["--muxers", muxers, "--cases", "small-echo"][..],
        &UNLIMITED_NEW_STREAMS,
    ]
    .concat();
    let (mut transport, peer_id) = next_to_yamux_transport();
    let (ours, mut js) = if we_are_dialer {
        let mut js = JsPeer::start(line, &[&["listen"][..], &options].concat()).await;
        let line = js.next_line().await;
        let addr: Multiaddr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("js peer: expected its address, got {line:?}"))
            .parse()
            .expect("js peer's address");
        let dial = transport
            .dial(
                addr,
                DialOpts {
                    role: Endpoint::Dialer,
                    port_use: PortUse::New,
                },
            )
            .expect("dial");
        (dial.await.expect("connection to the js peer").1, js)
    } else {
        transport
            .listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let TransportEvent::NewAddress { listen_addr, .. } =
                transport.select_next_some().await
            {
                break listen_addr.with(Protocol::P2p(peer_id)).to_string();
            }
        };
        let js = JsPeer::start(line, &[&["dial", &addr][..], &options].concat()).await;
        let accept = async {
            loop {
                if let TransportEvent::Incoming { upgrade, .. } = transport.select_next_some().await
                {
                    return upgrade.await;
                }
            }
        };
        (accept.await.expect("connection from the js peer").1, js)
    };
    let (protocol, muxer) = ours;
    assert_eq!(protocol, expected, "{cell}: our side");
    assert_eq!(
        js.report("connection").await["muxer"],
        expected,
        "{cell}: the js side"
    );
    // Echoes both ways on that muxer: ours through the js peer's /echo, its own through ours.
    let mut driven = drive(muxer);
    let opener = driven.opener();
    let ended = driven.ended.take().expect("the end of the connection");
    let cell_name = cell.to_string();
    tokio::spawn(async move {
        if let Ok(why) = ended.await {
            eprintln!("{cell_name}: our connection ended: {why}");
        }
    });
    let server = tokio::spawn(async move {
        loop {
            let mut stream = driven.accept().await;
            tokio::spawn(async move {
                if accept_protocol(&mut stream, &[ECHO]).await.is_ok() {
                    let mut data = Vec::new();
                    stream.read_to_end(&mut data).await.expect("echo read");
                    stream.write_all(&data).await.expect("echo write");
                    stream.close().await.expect("echo close");
                }
            });
        }
    });
    let mut stream = opener.open().await;
    select_protocol(&mut stream, ECHO)
        .await
        .expect("our echo stream");
    let data = pattern(1024 * 1024, 21);
    let (mut r, mut w) = stream.split();
    let writer = async {
        w.write_all(&data).await.expect("our echo: write");
        w.close().await.expect("our echo: close-write");
    };
    let mut back = Vec::new();
    let ((), read) = future::join(writer, r.read_to_end(&mut back)).await;
    read.expect("our echo: read");
    assert!(back == data, "{cell}: our echo came back whole");
    let report = js.report("js-echo").await;
    assert_eq!(report["ok"], "true", "{cell}: {report:?}");
    assert_eq!(js.report("js-echo-100").await["ok"], "true", "{cell}");
    server.abort();
}

/// TCP + noise + our muxer next to yamux, as the README recommends; each connection says
/// which protocol it runs.
/// A transport whose connections say which muxer protocol they run.
type LabelledTransport = libp2p::core::transport::Boxed<(PeerId, (&'static str, StreamMuxerBox))>;

fn next_to_yamux_transport() -> (LabelledTransport, PeerId) {
    let key = identity::Keypair::generate_ed25519();
    let peer_id = key.public().to_peer_id();
    let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(&key).unwrap())
        .multiplex(
            Config::default()
                .set_max_num_streams(512)
                .clone()
                .preferred_over(libp2p::yamux::Config::default()),
        )
        .map(|(peer, muxer), _| {
            let protocol = match &muxer {
                future::Either::Left(ours) if ours.mode() == Mode::Extension => {
                    "/mplex-halfclose/1.0.0"
                }
                future::Either::Left(_) => "/mplex/6.7.0",
                future::Either::Right(_) => "/yamux/1.0.0",
            };
            (peer, (protocol, StreamMuxerBox::new(muxer)))
        })
        .boxed();
    (transport, peer_id)
}

// --- behaviour that differs between the js-libp2p lines ---

/// js-libp2p 3.x's mplex gives up a connection on which the other side opens more than
/// `disconnectThreshold` (5) streams in a second: it aborts its streams, says so in its log,
/// and serves the connection no more, but leaves it open (our streams get no Reset and wait).
/// 2.x did so only once its stream limit was reached. A node on plain mplex that opens 20
/// streams at once keeps a 2.x peer and loses a 3.x one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_libp2p_3_mplex_gives_up_a_connection_that_opens_streams_fast() {
    for line in [JsLine::V2, JsLine::V3] {
        let (mut js, mut log) =
            // The muxer's logger is named after its connection (`libp2p:tcp:connection:...`).
            JsPeer::start_logging(line, &["listen", "--cases", "echo"], "libp2p:*").await;
        let text = js.next_line().await;
        let addr: Multiaddr = text
            .strip_prefix("listening ")
            .expect("the js peer's address")
            .parse()
            .expect("a multiaddr");
        let (mut transport, _) = our_transport();
        let dial = transport
            .dial(
                addr,
                DialOpts {
                    role: Endpoint::Dialer,
                    port_use: PortUse::New,
                },
            )
            .expect("dial");
        let (_, muxer) = dial.await.expect("connection");
        let driven = drive(muxer);
        let opener = driven.opener();
        let echoes = tokio::spawn(async move {
            let opener = &opener;
            future::join_all((0..20u8).map(|i| async move {
                let mut stream = opener.open().await;
                select_protocol(&mut stream, ECHO).await?;
                stream.write_all(&[i; 100]).await?;
                stream.close_write().await?;
                let mut back = Vec::new();
                stream.read_to_end(&mut back).await?;
                io::Result::Ok(back == [i; 100])
            }))
            .await
        });
        match line {
            JsLine::V2 => {
                let results = tokio::time::timeout(TEST_BOUND, echoes)
                    .await
                    .expect("the echoes ended in time")
                    .expect("echo task");
                assert!(results.iter().all(|r| matches!(r, Ok(true))), "{results:?}");
            }
            JsLine::V3 => {
                let said = async {
                    while let Some(text) = log.next_line().await.expect("the js peer's stderr") {
                        if text.contains("rate limit hit when opening too many new streams") {
                            return text;
                        }
                    }
                    panic!("the js peer exited without giving up the connection")
                };
                let said = tokio::time::timeout(TEST_BOUND, said)
                    .await
                    .expect("the js peer gave up the connection in time");
                assert!(said.contains("closing remote connection"), "{said}");
                echoes.abort();
            }
        }
        drop(driven);
    }
}

type Socket = libp2p::core::upgrade::Negotiated<
    noise::Output<libp2p::core::upgrade::Negotiated<tcp::tokio::TcpStream>>,
>;

/// TCP + noise + our muxer, as a node builds it. Both sides run a burst of 100 streams at the
/// same time, beside the other cases' streams: more than the default limit of 128 open streams
/// (inbound and outbound together, as libp2p-mplex counts them), beyond which a NewStream is
/// answered with Reset. The limit is raised so that every case runs concurrently.
fn our_transport() -> (
    libp2p::core::transport::Boxed<(PeerId, Muxer<Socket>)>,
    PeerId,
) {
    let key = identity::Keypair::generate_ed25519();
    let peer_id = key.public().to_peer_id();
    let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(&key).unwrap())
        .multiplex(Config::default().set_max_num_streams(512).clone())
        .map(|output, _| output) // keeps our muxer type (`Multiplexed::boxed` would box it)
        .boxed();
    (transport, peer_id)
}

/// Runs both sides' cases on one connection; `js_direction` is how the js peer sees it.
async fn exercise(muxer: Muxer<Socket>, mut js: JsPeer, js_direction: &str, peer: Peer) {
    let connection = js.report("connection").await;
    match peer {
        // The js peer offers only /mplex/6.7.0: we fall back to plain mplex.
        Peer::PlainMplex => {
            assert_eq!(muxer.mode(), Mode::PlainMplex);
            assert_eq!(connection["muxer"], "/mplex/6.7.0");
        }
        Peer::TypeScriptExtension => {
            assert_eq!(muxer.mode(), Mode::Extension);
            assert_eq!(connection["muxer"], "/mplex-halfclose/1.0.0");
        }
    }
    assert_eq!(connection["direction"], js_direction);

    let mut driven = drive(muxer);
    let opener = driven.opener();
    let (observed_tx, mut observed) = mpsc::unbounded();
    let server = tokio::spawn(async move {
        while let Some(stream) = driven.try_accept().await {
            tokio::spawn(serve(stream, observed_tx.clone()));
        }
        // Only a failure gets here (the test aborts this task when it is done): say why, since
        // the cases then wait for reports that never come.
        eprintln!("interop: our connection ended: {}", driven.ended().await);
    });

    // Our cases, while the js peer runs its own against us.
    eprintln!("interop ({js_direction}): echo");
    echo_cases(&opener).await;
    eprintln!("interop ({js_direction}): resets");
    reset_cases(&opener, &mut js, peer).await;
    match peer {
        Peer::PlainMplex => {
            eprintln!("interop ({js_direction}): close-read");
            close_read_case(&opener, &mut js, peer).await;
            eprintln!("interop ({js_direction}): drop rules");
            drop_rule_cases(&opener, &mut js, peer).await;
        }
        Peer::TypeScriptExtension => {
            eprintln!("interop ({js_direction}): close-read on the wire");
            close_read_case(&opener, &mut js, peer).await;
            eprintln!("interop ({js_direction}): drop rules (extension)");
            drop_rule_cases(&opener, &mut js, peer).await;
            eprintln!("interop ({js_direction}): a stalled stream beside a busy one");
            stalled_beside_busy(&opener, &mut js).await;
        }
    }
    eprintln!("interop ({js_direction}): the js peer's cases");

    // The js peer's cases, as it saw them and as we saw them.
    for case in ["js-echo", "js-echo-16m"] {
        let report = js.report(case).await;
        assert_eq!(report["ok"], "true", "{report:?}");
    }
    let many = js.report("js-echo-100").await;
    assert_eq!(many["ok"], "true", "{many:?}");
    assert_eq!(many["streams"], "100", "{many:?}");
    assert_eq!(js.report("js-resets").await["resetSent"], "true");
    let resets = observed_case(&mut observed, "js-resets").await;
    assert_eq!(
        resets.read_end,
        Err(ErrorKind::ConnectionReset),
        "{resets:?}"
    );
    let reset_by_us = js.report("js-sees-rust-reset").await;
    assert_eq!(
        reset_by_us["readEnd"], "StreamResetError",
        "{reset_by_us:?}"
    );
    if peer == Peer::TypeScriptExtension {
        // Our reset's code reached the js stream.
        assert_eq!(
            reset_by_us.get("resetCode").map(String::as_str),
            Some("5"),
            "{reset_by_us:?}"
        );
        // The js peer closed reading with code 9 while we wrote: our write failed BrokenPipe
        // with the code, and we still read its side to the end.
        assert_eq!(js.report("js-closes-read").await["ok"], "true");
        let stopped = observed_case(&mut observed, "js-closes-read").await;
        assert_eq!(
            stopped.write_end,
            Some((ErrorKind::BrokenPipe, Some(9))),
            "{stopped:?}"
        );
        assert_eq!(stopped.read_end, Ok(0), "{stopped:?}");
    }
    if !js.done {
        assert_eq!(js.next_line().await, "done");
    }
    assert!(js.failures.is_empty(), "js peer: {:?}", js.failures);
    server.abort();
}

/// Echo with close-write on our side: one 1 MiB stream, 100 at once, one of 16 MiB.
async fn echo_cases(opener: &Opener<Stream>) {
    assert_eq!(echo(opener, 1024 * 1024, 11).await, Ok(()));
    let many = future::join_all((0..100).map(|i| echo(opener, 64 * 1024 + i, i as u8))).await;
    assert!(many.iter().all(Result::is_ok), "{many:?}");
    assert_eq!(echo(opener, 16 * 1024 * 1024, 13).await, Ok(()));
}

/// Writes `len` bytes, closes writing, reads the echo to EOF: Ok if it is the same bytes.
async fn echo(opener: &Opener<Stream>, len: usize, seed: u8) -> Result<(), String> {
    let mut stream = open(opener, ECHO).await;
    let data = pattern(len, seed);
    let (mut reader, mut writer) = (&mut stream).split();
    let write = async {
        writer.write_all(&data).await?;
        writer.close().await // close-write
    };
    let mut echoed = Vec::new();
    let (written, read) = future::join(write, reader.read_to_end(&mut echoed)).await;
    written.map_err(|e| format!("write: {e}"))?;
    read.map_err(|e| format!("read: {e}"))?;
    if echoed != data {
        return Err(format!(
            "{len} bytes sent, {} different bytes back",
            echoed.len()
        ));
    }
    Ok(())
}

/// A reset from us reaches the js reader; a reset from the js peer reaches ours.
async fn reset_cases(opener: &Opener<Stream>, js: &mut JsPeer, peer: Peer) {
    let codes = peer == Peer::TypeScriptExtension;
    // The js peer reads until something ends its stream, writing nothing.
    let mut stream = open(opener, OBSERVE).await;
    stream.write_all(b"rust-resets 0\n").await.unwrap();
    stream.write_all(&pattern(4096, SENT_SEED)).await.unwrap();
    stream.flush().await.unwrap();
    assert_eq!(read_all(&mut stream).await, Ok(0)); // its Close: it is reading now
    stream.reset_with_code(77);
    let seen = js.report("rust-resets").await;
    assert_eq!(seen["readEnd"], "StreamResetError", "{seen:?}");
    if codes {
        assert_eq!(
            seen.get("resetCode").map(String::as_str),
            Some("77"),
            "{seen:?}"
        );
    }

    // The js peer resets after our first line: our read and then our write fail as reset.
    let mut stream = open(opener, RESET).await;
    stream
        .write_all(b"js-resets-our-stream 78\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let read = stream.read_to_end(&mut sink).await.unwrap_err();
    assert_eq!(read.kind(), ErrorKind::ConnectionReset);
    // The extension carries the js peer's code; plain mplex has none.
    let code = StreamError::from_io(&read).and_then(StreamError::code);
    assert_eq!(code, Some(if codes { 78 } else { 0 }), "{read:?}");
    let write = stream.write_all(b"more").await.map_err(|e| e.kind());
    assert_eq!(write, Err(ErrorKind::ConnectionReset));
    assert_eq!(js.report("js-resets-our-stream").await["resetSent"], "true");
}

/// Our close-read while the js peer writes. Plain mplex cannot carry it: it acts here only, our
/// reads end at once, what the peer still writes is dropped, and its writing goes on to the
/// end. The extension carries it: the js writer stops early with `StreamStoppedError` and our
/// code. Either way our writing goes on undisturbed.
async fn close_read_case(opener: &Opener<Stream>, js: &mut JsPeer, peer: Peer) {
    let sent_by_js: u64 = match peer {
        Peer::PlainMplex => 4 * 1024 * 1024,
        Peer::TypeScriptExtension => 64 * 1024 * 1024,
    };
    let mut stream = open(opener, OBSERVE).await;
    stream
        .write_all(format!("rust-closes-read {sent_by_js}\n").as_bytes())
        .await
        .unwrap();
    let mut first = vec![0; 1000];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(first, pattern(1000, JS_SEED));
    stream.close_read_with_code(42).await.unwrap();
    assert_eq!(
        stream.read(&mut [0; 64]).await.unwrap(),
        0,
        "EOF after close_read"
    );
    stream.write_all(&pattern(65536, SENT_SEED)).await.unwrap();
    stream.close_write().await.unwrap();

    let seen = js.report("rust-closes-read").await;
    assert_eq!(
        (&*seen["received"], &*seen["intact"], &*seen["readEnd"]),
        ("65536", "true", "eof"),
        "{seen:?}"
    );
    let sent: u64 = seen["sent"].parse().unwrap();
    let write_end = (
        &*seen["writeEnd"],
        seen.get("writeCode").map(String::as_str),
    );
    match peer {
        Peer::PlainMplex => {
            assert_eq!(
                (sent, write_end),
                (sent_by_js, ("closed", None)),
                "{seen:?}"
            )
        }
        Peer::TypeScriptExtension => {
            assert_eq!(write_end, ("StreamStoppedError", Some("42")), "{seen:?}");
            assert!(sent < sent_by_js, "the js writer stopped early: {seen:?}");
        }
    }
}

/// A stream nobody reads holds the js writer at its window while 16 MiB echo beside it; then
/// everything it wrote arrives intact.
async fn stalled_beside_busy(opener: &Opener<Stream>, js: &mut JsPeer) {
    let stalled_len = 4 * 1024 * 1024;
    let mut stalled = open(opener, OBSERVE).await;
    stalled
        .write_all(format!("stalled {stalled_len}\n").as_bytes())
        .await
        .unwrap();
    stalled.flush().await.unwrap();
    assert_eq!(echo(opener, 16 * 1024 * 1024, 17).await, Ok(()));
    let mut from_js = Vec::new();
    stalled.read_to_end(&mut from_js).await.unwrap();
    assert_eq!(from_js.len(), stalled_len);
    assert!(
        from_js == pattern(stalled_len, JS_SEED),
        "the stalled stream's data is intact"
    );
    stalled.close_write().await.unwrap();
    let seen = js.report("stalled").await;
    assert_eq!(
        (&*seen["writeEnd"], &*seen["readEnd"]),
        ("closed", "eof"),
        "{seen:?}"
    );
}

/// Our drop rules, as the js peer's reader and writer see them: Reset with both directions
/// open, Close with only writing open; with only reading open, Reset in plain-mplex mode (which
/// cannot say close-read) and CloseRead with the extension.
async fn drop_rule_cases(opener: &Opener<Stream>, js: &mut JsPeer, peer: Peer) {
    // Both directions open: Reset.
    let mut stream = open(opener, OBSERVE).await;
    stream.write_all(b"rust-drops-open -1\n").await.unwrap();
    stream.read_exact(&mut [0; 1024]).await.unwrap(); // the js peer is writing
    drop(stream);
    let seen = js.report("rust-drops-open").await;
    assert_eq!(
        (&*seen["readEnd"], &*seen["writeEnd"]),
        ("StreamResetError", "StreamResetError"),
        "{seen:?}"
    );

    // We read to EOF and leave writing open: Close, and everything written arrives.
    let mut stream = open(opener, OBSERVE).await;
    stream
        .write_all(b"rust-drops-after-eof 1000\n")
        .await
        .unwrap();
    let mut from_js = Vec::new();
    stream.read_to_end(&mut from_js).await.unwrap();
    assert_eq!(from_js, pattern(1000, JS_SEED));
    stream.write_all(&pattern(65536, SENT_SEED)).await.unwrap();
    drop(stream);
    let seen = js.report("rust-drops-after-eof").await;
    assert_eq!(
        (&*seen["received"], &*seen["intact"], &*seen["readEnd"]),
        ("65536", "true", "eof"),
        "{seen:?}"
    );
    assert_eq!(seen["writeEnd"], "closed", "{seen:?}");

    // Writing closed, reading open (or closed: only locally in plain mplex, which cannot say
    // it): what stops the js writer is a Reset in plain mplex, the CloseRead (code 0) with the
    // extension.
    let (stopped_by, code) = match peer {
        Peer::PlainMplex => ("StreamResetError", None),
        Peer::TypeScriptExtension => ("StreamStoppedError", Some("0")),
    };
    for (case, close_read) in [
        ("rust-drops-half-closed", false),
        ("rust-drops-after-close-read", true),
    ] {
        let mut stream = open(opener, OBSERVE).await;
        stream
            .write_all(format!("{case} -1\n").as_bytes())
            .await
            .unwrap();
        stream.close_write().await.unwrap();
        stream.read_exact(&mut [0; 1024]).await.unwrap(); // the js peer is writing
        if close_read {
            stream.close_read().await.unwrap();
        }
        drop(stream);
        let seen = js.report(case).await;
        assert_eq!(
            (&*seen["received"], &*seen["readEnd"], &*seen["writeEnd"]),
            ("0", "eof", stopped_by),
            "{case}: {seen:?}"
        );
        assert_eq!(
            seen.get("writeCode").map(String::as_str),
            code,
            "{case}: {seen:?}"
        );
    }
}

/// Reads to EOF: the byte count, or the error's kind.
async fn read_all(stream: &mut Stream) -> Result<usize, ErrorKind> {
    let mut sink = Vec::new();
    stream.read_to_end(&mut sink).await.map_err(|e| e.kind())
}

// --- our side of the js peer's cases ---

/// What our /observe handler saw on one stream.
#[derive(Debug)]
struct Observed {
    case: String,
    read_end: Result<usize, ErrorKind>,
    /// For a count of -1 (write until the peer stops us): how writing ended, with the code.
    write_end: Option<(ErrorKind, Option<u64>)>,
}

async fn observed_case(observed: &mut mpsc::UnboundedReceiver<Observed>, case: &str) -> Observed {
    loop {
        let next = observed.next().await.expect("our server is running");
        if next.case == case {
            return next;
        }
    }
}

/// Serves one stream the js peer opened: the same three protocols as `peer.mjs`.
async fn serve(mut stream: Stream, observed: mpsc::UnboundedSender<Observed>) {
    let Ok(protocol) = accept_protocol(&mut stream, &[ECHO, OBSERVE, RESET]).await else {
        return;
    };
    match protocol {
        ECHO => {
            let mut buf = vec![0; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => stream.write_all(&buf[..n]).await.expect("echo write"),
                    Err(e) => panic!("echo read: {e}"),
                }
            }
            stream.close_write().await.expect("echo close");
        }
        OBSERVE => {
            let first = read_line(&mut stream).await.expect("observe: first line");
            let (case, count) = first.split_once(' ').expect("observe: `<case> <count>`");
            let count: i64 = count.parse().expect("observe: a count");
            let write_end = if count < 0 {
                // Until the peer stops us (bounded: 1 GiB).
                let chunk = pattern(64 * 1024, JS_SEED);
                let mut ended = None;
                for _ in 0..16 * 1024 {
                    if let Err(e) = stream.write_all(&chunk).await {
                        let code = StreamError::from_io(&e).and_then(StreamError::code);
                        ended = Some((e.kind(), code));
                        break;
                    }
                }
                ended
            } else {
                stream
                    .write_all(&pattern(count as usize, JS_SEED))
                    .await
                    .expect("observe write");
                stream.close_write().await.expect("observe close");
                None
            };
            let read_end = read_all(&mut stream).await;
            let _ = observed.unbounded_send(Observed {
                case: case.to_string(),
                read_end,
                write_end,
            });
        }
        RESET => {
            read_line(&mut stream).await.expect("reset: first line");
            // The code reaches peers with the extension; plain mplex carries none.
            stream.reset_with_code(5);
        }
        _ => unreachable!("accept_protocol returns one of ours"),
    }
}

async fn read_line(stream: &mut Stream) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let mut byte = [0];
        stream.read_exact(&mut byte).await?;
        if byte[0] == b'\n' {
            return String::from_utf8(line).map_err(|e| io::Error::new(ErrorKind::InvalidData, e));
        }
        line.push(byte[0]);
    }
}

// --- multistream-select on a stream, by hand, so that the test keeps our stream type ---

async fn open(opener: &Opener<Stream>, protocol: &str) -> Stream {
    let mut stream = opener.open().await;
    select_protocol(&mut stream, protocol)
        .await
        .unwrap_or_else(|e| panic!("negotiating {protocol}: {e}"));
    stream
}

async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<String> {
    let mut len = 0u64;
    for shift in (0..63).step_by(7) {
        let mut byte = [0];
        stream.read_exact(&mut byte).await?;
        len |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    if len > 1024 {
        return Err(io::Error::new(ErrorKind::InvalidData, "message too long"));
    }
    let mut text = vec![0; len as usize];
    stream.read_exact(&mut text).await?;
    match text.pop() {
        Some(b'\n') => {
            String::from_utf8(text).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            ErrorKind::InvalidData,
            "message without newline",
        )),
    }
}

/// multistream-select's dialer: proposes `protocol`, fails unless the peer accepts it.
async fn select_protocol<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    protocol: &str,
) -> io::Result<()> {
    stream
        .write_all(
            &[
                multistream_message(MULTISTREAM),
                multistream_message(protocol),
            ]
            .concat(),
        )
        .await?;
    stream.flush().await?;
    for expected in [MULTISTREAM, protocol] {
        let answer = read_message(stream).await?;
        if answer != expected {
            let text = format!("expected {expected}, got {answer}");
            return Err(io::Error::new(ErrorKind::InvalidData, text));
        }
    }
    Ok(())
}

/// multistream-select's listener: answers `na` to anything but `supported`.
async fn accept_protocol<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    supported: &[&'static str],
) -> io::Result<&'static str> {
    if read_message(stream).await? != MULTISTREAM {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "no multistream header",
        ));
    }
    stream.write_all(&multistream_message(MULTISTREAM)).await?;
    loop {
        let proposed = read_message(stream).await?;
        if let Some(protocol) = supported.iter().find(|p| **p == proposed) {
            stream.write_all(&multistream_message(protocol)).await?;
            stream.flush().await?;
            return Ok(protocol);
        }
        stream.write_all(&multistream_message("na")).await?;
        stream.flush().await?;
    }
}

// --- the Node.js child ---

/// The js peer: its stdout lines, and the reports not yet asked for.
struct JsPeer {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    pending: Vec<HashMap<String, String>>,
    /// Reports of the js peer's own failures (a server that failed), checked at the end.
    failures: Vec<HashMap<String, String>>,
    /// The peer printed `done`: its own cases finished.
    done: bool,
}

impl JsPeer {
    async fn start(line: JsLine, args: &[&str]) -> JsPeer {
        Self::spawn(line, args, None).0
    }

    /// Starts the peer with js-libp2p's debug log of `namespaces` on (the `DEBUG` variable of
    /// the `debug` package), and returns its stderr's lines.
    async fn start_logging(
        line: JsLine,
        args: &[&str],
        namespaces: &str,
    ) -> (JsPeer, Lines<BufReader<tokio::process::ChildStderr>>) {
        let (peer, stderr) = Self::spawn(line, args, Some(namespaces));
        (peer, stderr.expect("piped stderr"))
    }

    fn spawn(
        line: JsLine,
        args: &[&str],
        debug: Option<&str>,
    ) -> (
        JsPeer,
        Option<Lines<BufReader<tokio::process::ChildStderr>>>,
    ) {
        let dir = line.dir();
        let node = line.node();
        let mut command = Command::new(node);
        command
            .arg("peer.mjs")
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped()) // the peer exits when this closes
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        match debug {
            Some(namespaces) => command.env("DEBUG", namespaces).stderr(Stdio::piped()),
            None => command.stderr(Stdio::inherit()),
        };
        let mut child = command.spawn().expect("start node");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child
            .stderr
            .take()
            .map(|stderr| BufReader::new(stderr).lines());
        let peer = JsPeer {
            _child: child,
            lines: BufReader::new(stdout).lines(),
            pending: Vec::new(),
            failures: Vec::new(),
            done: false,
        };
        (peer, stderr)
    }

    /// The next line the peer prints.
    async fn raw_line(&mut self) -> String {
        tokio::time::timeout(TEST_BOUND, self.lines.next_line())
            .await
            .expect("js peer said something in time")
            .expect("js peer's stdout")
            .expect("js peer exited early (its stderr is above)")
    }

    /// The next line that is not a report.
    async fn next_line(&mut self) -> String {
        loop {
            let line = self.raw_line().await;
            match parse_report(&line) {
                Some(report) => self.keep(report),
                None => return line,
            }
        }
    }

    /// The js peer's report on `case`.
    async fn report(&mut self, case: &str) -> HashMap<String, String> {
        loop {
            if let Some(at) = self.pending.iter().position(|r| r["case"] == case) {
                return self.pending.remove(at);
            }
            let line = self.raw_line().await;
            match parse_report(&line) {
                Some(report) => self.keep(report),
                None if line == "done" => self.done = true,
                None => panic!("js peer: unexpected line {line:?} while waiting for {case}"),
            }
        }
    }

    fn keep(&mut self, report: HashMap<String, String>) {
        if report["case"] == "echo-server-failed" {
            self.failures.push(report);
        } else {
            self.pending.push(report);
        }
    }
}

/// `report case=name key=value ...` as a map.
fn parse_report(line: &str) -> Option<HashMap<String, String>> {
    let fields = line.strip_prefix("report ")?;
    let report: HashMap<_, _> = fields
        .split(' ')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(
        report.contains_key("case"),
        "js peer: report without a case: {line}"
    );
    Some(report)
}

/// A line of js-libp2p, with the Node.js it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsLine {
    /// js-libp2p 2.10 (`tests/interop/js`), Node.js 20+: the line most deployed nodes run.
    V2,
    /// js-libp2p 3.x (`tests/interop/js3`), Node.js 22+: the current line.
    V3,
}

impl JsLine {
    fn dir(self) -> PathBuf {
        let name = match self {
            JsLine::V2 => "tests/interop/js",
            JsLine::V3 => "tests/interop/js3",
        };
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
    }

    fn node_major(self) -> u32 {
        match self {
            JsLine::V2 => 20,
            JsLine::V3 => 22,
        }
    }

    /// The `node` to run this line's peer with, its packages installed (see
    /// [`test_support::node::node`]).
    fn node(self) -> PathBuf {
        test_support::node::node(self.node_major(), &self.dir())
    }
}
