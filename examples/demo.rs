//! Two swarms on 127.0.0.1 negotiate `/mplex-halfclose/1.0.0`, exchange a request/response with
//! close-write, and a reader stops a writer with close-read. Run it with
//! `cargo run --release --example demo`.

use std::{
    io::ErrorKind,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, Transport,
    core::{muxing::StreamMuxerBox, upgrade::Version},
    noise,
    swarm::SwarmEvent,
    tcp,
};
use libp2p_mplex_halfclose::{Config, Mode, StreamError};

const REQUEST_RESPONSE: StreamProtocol = StreamProtocol::new("/demo/echo/1.0.0");
const STOP_ME: StreamProtocol = StreamProtocol::new("/demo/stop-me/1.0.0");

type Swarms = Swarm<libp2p_stream::Behaviour>;

/// A swarm over TCP + noise with our muxer, recording which mode each connection negotiated.
fn swarm(name: &'static str, modes: Arc<Mutex<Vec<(&'static str, Mode)>>>) -> Swarms {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            let noise = noise::Config::new(key)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .upgrade(Version::V1)
                    .authenticate(noise)
                    .multiplex(Config::default())
                    .map(move |(peer, muxer), _| {
                        modes.lock().unwrap().push((name, muxer.mode()));
                        (peer, StreamMuxerBox::new(muxer))
                    }),
            )
        })
        .expect("transport")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

fn protocol_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Extension => libp2p_mplex_halfclose::EXTENSION_PROTOCOL,
        Mode::PlainMplex => libp2p_mplex_halfclose::MPLEX_PROTOCOL,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let modes = Arc::new(Mutex::new(Vec::new()));
    let mut server = swarm("server", modes.clone());
    let mut client = swarm("client", modes.clone());

    server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_peer = *server.local_peer_id();
    let mut server_control = server.behaviour().new_control();
    let mut echo_requests = server_control.accept(REQUEST_RESPONSE)?;
    let mut stop_requests = server_control.accept(STOP_ME)?;
    tokio::spawn(async move {
        loop {
            server.select_next_some().await;
        }
    });

    // Server side of the request/response: read the request to EOF, answer, close writing.
    tokio::spawn(async move {
        while let Some((_, mut stream)) = echo_requests.next().await {
            let mut request = Vec::new();
            stream
                .read_to_end(&mut request)
                .await
                .expect("read request");
            let reply = format!("hello, {}!", String::from_utf8_lossy(&request));
            stream
                .write_all(reply.as_bytes())
                .await
                .expect("write reply");
            stream.close().await.expect("close reply");
        }
    });

    // Server side of the second protocol: read 64 KiB, then stop the writer. A swarm user holds
    // `libp2p_swarm::Stream`, so closing writing and dropping the stream is the close-read.
    tokio::spawn(async move {
        while let Some((_, mut stream)) = stop_requests.next().await {
            let mut enough = vec![0u8; 64 * 1024];
            stream.read_exact(&mut enough).await.expect("read 64 KiB");
            stream
                .write_all(b"thanks, that is enough")
                .await
                .expect("write");
            stream.close().await.expect("close writing");
            // Do not read the rest: the peer gets BrokenPipe; our bytes still arrive.
            drop(stream);
        }
    });

    client.dial(addr.clone())?;
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

    println!("1. Connected to {server_peer} at {addr}.");
    for (side, mode) in modes.lock().unwrap().iter() {
        println!(
            "   The {side} negotiated {} ({mode:?} mode).",
            protocol_name(*mode)
        );
    }

    // Request/response with no length prefix: write, close writing, read to EOF.
    let mut stream = control.open_stream(server_peer, REQUEST_RESPONSE).await?;
    stream.write_all(b"half-close").await?;
    stream.close().await?;
    println!("2. Sent the request \"half-close\" and closed our write side (FIN).");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    println!("   The server read up to EOF and answered: \"{reply}\" (then EOF).");

    // A writer that would go on forever is stopped by the reader.
    let mut stream = control.open_stream(server_peer, STOP_ME).await?;
    let chunk = vec![42u8; 16 * 1024];
    let mut sent = 0usize;
    let error = loop {
        match stream.write_all(&chunk).await {
            Ok(()) => sent += chunk.len(),
            Err(e) => break e,
        }
        if sent > 64 * 1024 * 1024 {
            return Err("the writer was never stopped".into());
        }
    };
    let code = StreamError::from_io(&error)
        .and_then(StreamError::code)
        .map_or("none".to_string(), |c| c.to_string());
    println!(
        "3. Wrote {} KiB until the server stopped reading; the next write failed with {:?} \
         (stop code {code}), not a reset.",
        sent / 1024,
        error.kind(),
    );
    assert_eq!(error.kind(), ErrorKind::BrokenPipe);
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    println!("   The other direction still worked: the server said \"{reply}\".");
    println!("Done: close-write and close-read each closed one direction, on the wire.");
    Ok(())
}
