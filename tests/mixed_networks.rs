//! A node that adds this muxer is never worse off with any peer: real swarms over TCP + noise on
//! 127.0.0.1, built with `SwarmBuilder`, our recommended composition
//! (`Config::default().preferred_over(yamux::Config::default())`) against every kind of peer
//! people run, dialing and dialed. Every cell checks the muxer protocol both sides agreed on
//! (recorded by a wrapper around each side's upgrade) and carries an echo with close-write.
//!
//! The rule: the extension with peers that have it; yamux with every peer that has yamux,
//! whatever else it has; plain mplex only with peers that have nothing else. Where the peer
//! dials and prefers mplex, multistream-select gives it mplex: the dialer's order decides.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, future};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm,
    core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
    noise,
    swarm::SwarmEvent,
    tcp, yamux,
};
use test_support::driven::*;

const ECHO: StreamProtocol = StreamProtocol::new("/echo/1.0.0");
const EXTENSION: &str = "/mplex-halfclose/1.0.0";
const MPLEX: &str = "/mplex/6.7.0";
const YAMUX: &str = "/yamux/1.0.0";

/// The muxer protocols a node's connections were upgraded with.
type Log = Arc<Mutex<Vec<String>>>;

/// An upgrade that notes which of its protocols multistream-select picked.
#[derive(Clone)]
struct Recorded<U> {
    inner: U,
    log: Log,
}

impl<U: UpgradeInfo> UpgradeInfo for Recorded<U> {
    type Info = U::Info;
    type InfoIter = U::InfoIter;

    fn protocol_info(&self) -> Self::InfoIter {
        self.inner.protocol_info()
    }
}

impl<C, U> InboundConnectionUpgrade<C> for Recorded<U>
where
    U: InboundConnectionUpgrade<C>,
    U::Info: AsRef<str>,
{
    type Output = U::Output;
    type Error = U::Error;
    type Future = U::Future;

    fn upgrade_inbound(self, socket: C, protocol: Self::Info) -> Self::Future {
        self.log.lock().unwrap().push(protocol.as_ref().to_string());
        self.inner.upgrade_inbound(socket, protocol)
    }
}

impl<C, U> OutboundConnectionUpgrade<C> for Recorded<U>
where
    U: OutboundConnectionUpgrade<C>,
    U::Info: AsRef<str>,
{
    type Output = U::Output;
    type Error = U::Error;
    type Future = U::Future;

    fn upgrade_outbound(self, socket: C, protocol: Self::Info) -> Self::Future {
        self.log.lock().unwrap().push(protocol.as_ref().to_string());
        self.inner.upgrade_outbound(socket, protocol)
    }
}

/// The muxers a node may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// Ours, as the README recommends next to yamux.
    Recommended,
    YamuxOnly,
    LibMplexOnly,
    MplexThenYamux,
    YamuxThenMplex,
    /// Ours alone (`Config::default`): the extension, then plain mplex.
    OursAlone,
    /// Ours with `set_plain_mplex_fallback(false)`.
    OursWithoutFallback,
    /// The tuple `(Config::default, yamux::Config::default)`, which the README used to show.
    OursThenYamuxTuple,
}

/// A swarm with `muxer` (a constructor for `with_tcp`), an echo behaviour, and a log of the
/// muxer protocols it negotiated.
macro_rules! swarm {
    ($log:expr, $muxer:expr) => {{
        let log = $log.clone();
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                move || Recorded { inner: $muxer, log },
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }};
}

fn build(node: Node, log: &Log) -> Swarm<libp2p_stream::Behaviour> {
    use libp2p::core::upgrade::SelectUpgrade;
    use libp2p_mplex_halfclose::Config;
    match node {
        Node::Recommended => swarm!(
            log,
            Config::default().preferred_over(yamux::Config::default())
        ),
        Node::YamuxOnly => swarm!(log, yamux::Config::default()),
        Node::LibMplexOnly => swarm!(log, libp2p_mplex::Config::default()),
        Node::MplexThenYamux => swarm!(
            log,
            SelectUpgrade::new(libp2p_mplex::Config::default(), yamux::Config::default())
        ),
        Node::YamuxThenMplex => swarm!(
            log,
            SelectUpgrade::new(yamux::Config::default(), libp2p_mplex::Config::default())
        ),
        Node::OursAlone => swarm!(log, Config::default()),
        Node::OursWithoutFallback => swarm!(log, {
            let mut config = Config::default();
            config.set_plain_mplex_fallback(false);
            config
        }),
        Node::OursThenYamuxTuple => swarm!(
            log,
            SelectUpgrade::new(Config::default(), yamux::Config::default())
        ),
    }
}

/// `dialer` dials `listener`, the listener echoes one stream (read to EOF, write back, close),
/// and the dialer checks the echo. Returns the protocol each side recorded.
async fn connect_and_echo(dialer: Node, listener: Node) -> (String, String) {
    let (dialer_log, listener_log) = (Log::default(), Log::default());
    let mut server = build(listener, &listener_log);
    let mut client = build(dialer, &dialer_log);
    server
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_peer: PeerId = *server.local_peer_id();
    let mut incoming = server.behaviour().new_control().accept(ECHO).unwrap();
    let server_task = tokio::spawn(async move {
        loop {
            server.select_next_some().await;
        }
    });
    let echo_task = tokio::spawn(async move {
        if let Some((_, mut stream)) = incoming.next().await {
            let mut data = Vec::new();
            stream.read_to_end(&mut data).await.unwrap();
            stream.write_all(&data).await.unwrap();
            stream.close().await.unwrap();
        }
    });
    client.dial(addr).unwrap();
    loop {
        match client.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => break,
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                panic!("{dialer:?} dialing {listener:?}: {error}")
            }
            _ => {}
        }
    }
    let mut control = client.behaviour().new_control();
    let client_task = tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    let data = pattern(64 * 1024, 7);
    let stream = control.open_stream(server_peer, ECHO).await.unwrap();
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(&data).await.unwrap();
        w.close().await.unwrap(); // close-write: the echo needs no length prefix
    };
    let mut back = Vec::new();
    let ((), read) = future::join(write, r.read_to_end(&mut back)).await;
    read.unwrap();
    assert!(back == data, "{dialer:?} dialing {listener:?}: the echo");
    echo_task.await.unwrap();
    server_task.abort();
    client_task.abort();
    let dialer_side = dialer_log.lock().unwrap().clone();
    let listener_side = listener_log.lock().unwrap().clone();
    assert_eq!(dialer_side.len(), 1, "{dialer_side:?}");
    assert_eq!(listener_side.len(), 1, "{listener_side:?}");
    (dialer_side[0].clone(), listener_side[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recommended_composition_negotiates_by_the_rule_with_every_peer() {
    // Peer, then the protocol when we dial it, and when it dials us.
    let matrix = [
        (Node::Recommended, EXTENSION, EXTENSION),
        (Node::YamuxOnly, YAMUX, YAMUX),
        (Node::LibMplexOnly, MPLEX, MPLEX),
        // It dials us preferring mplex: its choice.
        (Node::MplexThenYamux, YAMUX, MPLEX),
        (Node::YamuxThenMplex, YAMUX, YAMUX),
        (Node::OursAlone, EXTENSION, EXTENSION),
        (Node::OursWithoutFallback, EXTENSION, EXTENSION),
    ];
    let mut report = String::new();
    for (peer, we_dial, it_dials) in matrix {
        for (dialer, listener, expected) in [
            (Node::Recommended, peer, we_dial),
            (peer, Node::Recommended, it_dials),
        ] {
            let (d, l) = within(connect_and_echo(dialer, listener)).await;
            report.push_str(&format!("{dialer:?} -> {listener:?}: {d} / {l}\n"));
            assert_eq!(d, l, "both sides agree\n{report}");
            assert_eq!(d, expected, "{dialer:?} dialing {listener:?}\n{report}");
        }
    }
    println!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tuple_with_yamux_trades_a_peers_yamux_for_plain_mplex() {
    // Why the README does not recommend it: dialing a peer that has mplex and yamux, the tuple
    // offers plain mplex before yamux.
    let (d, l) = within(connect_and_echo(
        Node::OursThenYamuxTuple,
        Node::MplexThenYamux,
    ))
    .await;
    assert_eq!((d.as_str(), l.as_str()), (MPLEX, MPLEX));
    let (d, _) = within(connect_and_echo(Node::Recommended, Node::MplexThenYamux)).await;
    assert_eq!(d, YAMUX);
}
