//! Real swarms over TCP + noise on 127.0.0.1, built with `SwarmBuilder`, with streams from
//! `libp2p-stream`: what a rust-libp2p user does.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, future};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, swarm::SwarmEvent, tcp, yamux};
use test_support::driven::*;

const ECHO: StreamProtocol = StreamProtocol::new("/echo/1.0.0");

fn swarm_with_ours() -> Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            libp2p_mplex_halfclose::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn swarm_next_to_yamux() -> Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            || libp2p_mplex_halfclose::Config::default().preferred_over(yamux::Config::default()),
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Starts an echo server swarm (read to EOF, write it back, close) and a client swarm dialing it.
/// Returns the client's control and the server's peer id.
async fn echo_pair(
    mut server: Swarm<libp2p_stream::Behaviour>,
    mut client: Swarm<libp2p_stream::Behaviour>,
) -> (libp2p_stream::Control, PeerId) {
    server
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_peer = *server.local_peer_id();
    let mut incoming = server.behaviour().new_control().accept(ECHO).unwrap();
    tokio::spawn(async move {
        loop {
            server.select_next_some().await;
        }
    });
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                let mut data = Vec::new();
                stream.read_to_end(&mut data).await.unwrap();
                stream.write_all(&data).await.unwrap();
                stream.close().await.unwrap();
            });
        }
    });
    client.dial(addr).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = client.select_next_some().await {
            break;
        }
    }
    let control = client.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    (control, server_peer)
}

async fn echo(control: &mut libp2p_stream::Control, peer: PeerId, data: Vec<u8>) -> Vec<u8> {
    let stream = control.open_stream(peer, ECHO).await.unwrap();
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(&data).await.unwrap();
        // Half-close: the server reads EOF and answers; no length prefix needed.
        w.close().await.unwrap();
    };
    let mut back = Vec::new();
    let ((), read) = future::join(write, r.read_to_end(&mut back)).await;
    read.unwrap();
    back
}

#[tokio::test]
async fn request_response_with_close_write_through_swarm_builder() {
    within(async {
        let (mut control, peer) = echo_pair(swarm_with_ours(), swarm_with_ours()).await;
        assert_eq!(echo(&mut control, peer, b"ping".to_vec()).await, b"ping");
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_streams_through_swarm_builder() {
    within(async {
        let (control, peer) = echo_pair(swarm_with_ours(), swarm_with_ours()).await;
        let tasks: Vec<_> = (0..100u8)
            .map(|i| {
                let mut control = control.clone();
                tokio::spawn(async move {
                    let data = pattern(10_000 + i as usize, i);
                    assert_eq!(echo(&mut control, peer, data.clone()).await, data);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn a_16_mib_transfer_arrives_byte_for_byte() {
    within(async {
        let (mut control, peer) = echo_pair(swarm_with_ours(), swarm_with_ours()).await;
        let data = pattern(16 * 1024 * 1024, 9);
        assert!(echo(&mut control, peer, data.clone()).await == data);
    })
    .await;
}

#[tokio::test]
async fn next_to_yamux_works_in_a_swarm() {
    within(async {
        let (mut control, peer) = echo_pair(swarm_next_to_yamux(), swarm_next_to_yamux()).await;
        assert_eq!(
            echo(&mut control, peer, b"beside".to_vec()).await,
            b"beside"
        );
    })
    .await;
}

#[tokio::test]
async fn a_node_with_ours_next_to_yamux_talks_to_a_node_with_only_yamux() {
    within(async {
        let yamux_only = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let (mut control, peer) = echo_pair(yamux_only, swarm_next_to_yamux()).await;
        assert_eq!(
            echo(&mut control, peer, b"fallback".to_vec()).await,
            b"fallback"
        );
    })
    .await;
}

/// What swarm code can do today for close-read: it holds `libp2p_swarm::Stream`, which has no
/// `close_read`, so it closes writing and drops the stream; in extension mode the drop sends
/// CloseRead. The writer's next write fails with `BrokenPipe` (a stop, not a reset), and what
/// the reader wrote before closing still arrives.
#[tokio::test]
async fn a_swarm_reader_stops_a_writer_by_closing_writing_and_dropping_the_stream() {
    const DOWNLOAD: StreamProtocol = StreamProtocol::new("/download/1.0.0");
    within(async {
        let mut server = swarm_with_ours();
        let mut client = swarm_with_ours();
        server
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr: Multiaddr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                break address;
            }
        };
        let server_peer = *server.local_peer_id();
        let mut downloads = server.behaviour().new_control().accept(DOWNLOAD).unwrap();
        tokio::spawn(async move {
            loop {
                server.select_next_some().await;
            }
        });
        // The server writes a download that would never end, until its reader stops it.
        let writer = tokio::spawn(async move {
            let (_, mut stream) = downloads.next().await.unwrap();
            let chunk = vec![7u8; 16 * 1024];
            let mut sent = 0usize;
            let error = loop {
                if let Err(e) = stream.write_all(&chunk).await {
                    break e;
                }
                sent += chunk.len();
                assert!(sent < 1 << 30, "the writer was never stopped");
            };
            let mut said = Vec::new();
            stream.read_to_end(&mut said).await.unwrap();
            (error, said)
        });
        client.dial(addr).unwrap();
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = client.select_next_some().await {
                break;
            }
        }
        let mut control = client.behaviour().new_control();
        tokio::spawn(async move {
            loop {
                client.select_next_some().await;
            }
        });
        let mut stream = control.open_stream(server_peer, DOWNLOAD).await.unwrap();
        let mut enough = vec![0u8; 256 * 1024];
        stream.read_exact(&mut enough).await.unwrap();
        stream.write_all(b"that is enough").await.unwrap();
        stream.close().await.unwrap(); // close writing...
        drop(stream); // ...then drop: CloseRead
        let (error, said) = writer.await.unwrap();
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
        assert!(
            matches!(
                libp2p_mplex_halfclose::StreamError::from_io(&error),
                Some(libp2p_mplex_halfclose::StreamError::Stopped { .. })
            ),
            "{error:?}"
        );
        assert_eq!(said, b"that is enough");
    })
    .await;
}
