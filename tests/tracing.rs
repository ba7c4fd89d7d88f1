//! What the muxer logs through `tracing`: every event inside the connection's span
//! (`mplex_halfclose{connection=N mode=..}`), stream events with the stream's id, frames at
//! trace, stream resets at debug, protocol violations at warn, and nothing at info or above on a
//! healthy connection.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use futures::{AsyncReadExt, AsyncWriteExt, future::poll_fn};
use libp2p_core::muxing::StreamMuxerExt;
use libp2p_mplex_halfclose::{Config, Mode, Muxer};
use test_support::driven::*;
use tokio::io::AsyncWriteExt as _;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tracing_subscriber::fmt::MakeWriter;

/// The formatted log lines, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs `f` on a single-threaded runtime with every event of this crate captured at trace
/// level; returns the lines, as `LEVEL span{fields}: target: message fields`.
fn logged<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) -> Vec<String> {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .without_time()
        .with_env_filter("libp2p_mplex_halfclose=trace")
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f());
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_string).collect()
}

fn level(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

/// The connection id of the span a line was logged in.
fn connection(line: &str) -> Option<&str> {
    let rest = line.split_once("mplex_halfclose{connection=")?.1;
    rest.split([' ', '}']).next()
}

#[test]
fn a_healthy_connection_logs_frames_at_trace_and_names_connection_and_stream() {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let seen = ids.clone();
    let lines = logged(|| async move {
        let (a, b) = memory_pair(Mode::Extension, Config::default());
        let (client, mut server) = (drive(a), drive(b));
        // A request with close-write, its answer, then a reset of a second stream.
        let mut stream = client.open().await;
        stream.write_all(b"request").await.unwrap();
        stream.close_write().await.unwrap();
        let mut inbound = within(server.accept()).await;
        let mut request = Vec::new();
        inbound.read_to_end(&mut request).await.unwrap();
        inbound.write_all(b"answer").await.unwrap();
        inbound.close_write().await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");

        let mut doomed = client.open().await;
        doomed.write_all(b"x").await.unwrap();
        doomed.flush().await.unwrap();
        let mut doomed_inbound = within(server.accept()).await;
        seen.lock()
            .unwrap()
            .extend([doomed.id(), doomed_inbound.id()]);
        doomed.reset();
        let mut rest = Vec::new();
        let read = within(doomed_inbound.read_to_end(&mut rest)).await;
        assert_eq!(
            read.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionReset
        );
    });
    assert!(!lines.is_empty(), "nothing was logged");

    // Every event names its connection, and the two ends are two connections.
    for line in &lines {
        assert!(
            connection(line).is_some(),
            "an event outside the connection span: {line}"
        );
    }
    let mut connections: Vec<_> = lines.iter().filter_map(|l| connection(l)).collect();
    connections.sort();
    connections.dedup();
    assert_eq!(connections.len(), 2, "{connections:?}");

    // Frames at trace, both ways.
    let frames: Vec<_> = lines
        .iter()
        .filter(|l| l.contains(" frame frame="))
        .collect();
    assert!(
        frames.iter().any(|l| l.contains("send frame")),
        "{lines:#?}"
    );
    assert!(
        frames.iter().any(|l| l.contains("received frame")),
        "{lines:#?}"
    );
    assert!(frames.iter().all(|l| level(l) == "TRACE"), "{frames:#?}");

    // Stream events carry the stream's id: the reset on both ends, at debug.
    let reset = lines
        .iter()
        .find(|l| l.contains("resetting the stream"))
        .expect("the local reset is logged");
    assert_eq!(level(reset), "DEBUG");
    let (local, remote) = {
        let ids = ids.lock().unwrap();
        (format!("stream={}", ids[0]), format!("stream={}", ids[1]))
    };
    assert!(reset.contains(&local), "{reset}");
    let by_peer = lines
        .iter()
        .find(|l| l.contains("stream reset by peer"))
        .expect("the peer's reset is logged");
    assert_eq!(level(by_peer), "DEBUG");
    assert!(by_peer.contains(&remote), "{by_peer}");
    assert_ne!(connection(reset), connection(by_peer));

    // A healthy connection says nothing at info or above.
    let loud: Vec<_> = lines
        .iter()
        .filter(|l| !matches!(level(l), "TRACE" | "DEBUG"))
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
}

#[test]
fn a_protocol_violation_is_logged_once_at_warn_with_its_connection() {
    let lines = logged(|| async {
        let (ours, mut raw) = tokio::io::duplex(64 * 1024);
        let mut muxer = Muxer::new(ours.compat(), Config::default(), Mode::PlainMplex);
        // Flag 7 does not exist in plain mplex.
        raw.write_all(&peer_frame(0, 7, &[2, 5])).await.unwrap();
        let error = within(poll_fn(|cx| muxer.poll_unpin(cx))).await;
        assert!(error.is_err());
        drop(raw);
    });
    let warnings: Vec<_> = lines.iter().filter(|l| level(l) == "WARN").collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    let warning = warnings[0];
    assert!(warning.contains("peer violated the protocol"), "{warning}");
    assert!(warning.contains("mode=PlainMplex"), "{warning}");
    assert!(connection(warning).is_some(), "{warning}");
    assert!(
        !lines
            .iter()
            .any(|l| level(l) == "ERROR" || level(l) == "INFO"),
        "{lines:#?}"
    );
}
