//! Every blocked call wakes on every event that decides its outcome.
//!
//! The peer is played with raw frames over an in-memory pipe, so that it can stop reading (the
//! socket fills) and still send. Each cell of the matrix blocks one call of ours, checks that it
//! is pending, lets one event happen, and then waits for the call to end with the documented
//! result. A missed wake-up leaves the call pending and the cell fails after 10 s; a call that
//! the event does not decide is checked to be still pending once the event was handled, and is
//! then ended by a Reset, which must wake it.
//!
//! | blocked call (on) | peer Reset | peer CloseRead | peer Close | connection error | muxer dropped |
//! |---|---|---|---|---|---|
//! | read (no data) | `ConnectionReset`, code | waits | `Ok(0)` | `InvalidData` | `ConnectionAborted` |
//! | write (credit) | `ConnectionReset`, code | `BrokenPipe`, code | waits | `InvalidData` | `ConnectionAborted` |
//! | write (full socket) | `ConnectionReset`, code | `BrokenPipe`, code | waits | `InvalidData` | `ConnectionAborted` |
//! | flush (full socket) | `ConnectionReset`, code | `BrokenPipe`, code | waits | `InvalidData` | `ConnectionAborted` |
//! | close_write (full socket) | `ConnectionReset`, code | `Ok` | waits | `InvalidData` | `ConnectionAborted` |
//! | close_read (full socket) | `ConnectionReset`, code | waits | `Ok` | `InvalidData` | `ConnectionAborted` |
//!
//! Plain mplex has no credit, no CloseRead and nothing to send on close_read (it completes at
//! once), so its matrix has the read, full-socket write, flush and close_write rows, without the
//! CloseRead column. Reset codes are 0 in plain mplex.

use std::{
    future::Future,
    io::{self, ErrorKind},
    pin::Pin,
    task::Poll,
    time::Duration,
};

use futures::{
    AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt, channel::mpsc, future::poll_fn, poll,
};
use libp2p_core::muxing::StreamMuxerExt;
use libp2p_mplex_halfclose::{Config, Mode, Muxer, Stream, StreamError};
use test_support::driven::{peer_frame, varint};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, WriteHalf};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// What blocks the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blocked {
    ReadNoData,
    WriteCredit,
    WriteFullSocket,
    FlushFullSocket,
    CloseWriteFullSocket,
    CloseReadFullSocket,
}

/// What the peer does while the call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerEvent {
    Reset,
    CloseRead,
    Close,
    ConnectionError,
    MuxerDropped,
}

/// How the call must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Error(ErrorKind, Option<u64>),
    /// The event does not decide the call: it keeps waiting.
    Waits,
}

const CODE: u64 = 9;

fn expected(mode: Mode, blocked: Blocked, event: PeerEvent) -> Outcome {
    use Blocked::*;
    use PeerEvent::*;
    let code = if mode == Mode::Extension { CODE } else { 0 };
    match (event, blocked) {
        (Reset, _) => Outcome::Error(ErrorKind::ConnectionReset, Some(code)),
        (CloseRead, ReadNoData | CloseReadFullSocket) => Outcome::Waits,
        (CloseRead, CloseWriteFullSocket) => Outcome::Ok,
        (CloseRead, _) => Outcome::Error(ErrorKind::BrokenPipe, Some(code)),
        (Close, ReadNoData | CloseReadFullSocket) => Outcome::Ok,
        (Close, _) => Outcome::Waits,
        (ConnectionError, _) => Outcome::Error(ErrorKind::InvalidData, None),
        (MuxerDropped, _) => Outcome::Error(ErrorKind::ConnectionAborted, None),
    }
}

/// Our muxer on one end of a pipe, driven by its own task; the peer's raw end on the other.
struct Connection {
    mode: Mode,
    /// The peer's writing half; its reading half is drained by a task, or never read.
    peer: WriteHalf<DuplexStream>,
    driver: tokio::task::JoinHandle<()>,
    inbound: mpsc::UnboundedReceiver<Stream>,
    /// Streams the peer opened to mark a point in its frames (kept: a drop would send a frame).
    marks: Vec<Stream>,
}

impl Connection {
    /// Opens our stream 0; the peer reads and discards everything unless `peer_reads` is false.
    async fn new(mode: Mode, peer_reads: bool) -> (Self, Stream) {
        let (ours, peer) = tokio::io::duplex(8 * 1024);
        let mut muxer = Muxer::new(ours.compat(), Config::default(), mode);
        let stream = poll_fn(|cx| muxer.poll_outbound_unpin(cx))
            .await
            .expect("open");
        let (tx, inbound) = mpsc::unbounded();
        let driver = tokio::spawn(async move {
            poll_fn(|cx| {
                loop {
                    match muxer.poll_inbound_unpin(cx) {
                        Poll::Ready(Ok(s)) => {
                            let _ = tx.unbounded_send(s);
                            continue;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                    if muxer.poll_unpin(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            })
            .await
        });
        let (mut peer_reader, peer) = tokio::io::split(peer);
        if peer_reads {
            tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while matches!(peer_reader.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        } else {
            // Held, never read: the pipe fills.
            std::mem::forget(peer_reader);
        }
        let connection = Self {
            mode,
            peer,
            driver,
            inbound,
            marks: Vec::new(),
        };
        (connection, stream)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.peer.write_all(bytes).await.expect("peer writes");
    }

    /// A frame of the peer about our stream 0 (so with the receiver's flags).
    async fn send_frame(&mut self, flag: u64, body: &[u8]) {
        self.send(&peer_frame(0, flag, body)).await;
    }

    /// Returns once our muxer has handled every frame the peer sent so far: the peer opens a
    /// stream, and it arrives.
    async fn handled(&mut self) {
        let num = 1000 + self.marks.len() as u64;
        self.send(&peer_frame(num, 0, b"")).await;
        let mark = self.inbound.next().await.expect("the mark stream");
        self.marks.push(mark);
    }

    async fn happen(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Reset => {
                let body = if self.mode == Mode::Extension {
                    varint(CODE)
                } else {
                    Vec::new()
                };
                self.send_frame(5, &body).await;
            }
            PeerEvent::CloseRead => {
                self.send_frame(7, &[&[0][..], &varint(CODE)].concat())
                    .await
            }
            PeerEvent::Close => self.send_frame(3, b"").await,
            PeerEvent::ConnectionError => self.send(&[0xff; 11]).await,
            PeerEvent::MuxerDropped => {
                self.driver.abort();
                let _ = (&mut self.driver).await;
            }
        }
    }
}

type Call<'a> = Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'a>>;

/// Sets up `blocked` and returns the connection and the stream it blocks.
async fn block(mode: Mode, blocked: Blocked) -> (Connection, Stream) {
    let peer_reads = matches!(blocked, Blocked::ReadNoData | Blocked::WriteCredit);
    let (mut connection, mut stream) = Connection::new(mode, peer_reads).await;
    match blocked {
        Blocked::ReadNoData => {}
        Blocked::WriteCredit => {
            // The initial window, all of it.
            stream.write_all(&vec![1u8; 256 * 1024]).await.unwrap();
            stream.flush().await.unwrap();
        }
        _ => {
            stream.write_all(b"x").await.unwrap();
            stream.flush().await.unwrap();
            if mode == Mode::Extension {
                // Credit enough that only the socket can stop our writes.
                connection
                    .send_frame(7, &[&[2][..], &varint(1 << 30)].concat())
                    .await;
                connection.handled().await;
            }
            // Write until a write waits even after the driver had its turn: the peer reads
            // nothing, so the pipe, the muxer's writer and then its send buffer are full.
            let chunk = vec![2u8; 64 * 1024];
            let mut filled = false;
            for _ in 0..1000 {
                if stream.write(&chunk).now_or_never().is_some() {
                    continue;
                }
                connection.handled().await;
                if stream.write(&chunk).now_or_never().is_none() {
                    filled = true;
                    break;
                }
            }
            assert!(filled, "{mode:?}: 64 MB went into a socket nobody reads");
        }
    }
    (connection, stream)
}

fn call(stream: &mut Stream, blocked: Blocked) -> Call<'_> {
    match blocked {
        Blocked::ReadNoData => Box::pin(async move {
            let mut buf = [0u8; 16];
            stream.read(&mut buf).await
        }),
        Blocked::WriteCredit | Blocked::WriteFullSocket => {
            Box::pin(async move { stream.write(&[3u8; 1024]).await })
        }
        Blocked::FlushFullSocket => Box::pin(async move { stream.flush().await.map(|()| 0) }),
        Blocked::CloseWriteFullSocket => {
            Box::pin(async move { stream.close_write().await.map(|()| 0) })
        }
        Blocked::CloseReadFullSocket => {
            Box::pin(async move { stream.close_read().await.map(|()| 0) })
        }
    }
}

/// The call's result, or a failure naming the cell if it is not woken.
async fn ended(cell: &str, call: &mut Call<'_>) -> io::Result<usize> {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{cell}: the call was not woken"))
}

fn check(cell: &str, result: io::Result<usize>, outcome: Outcome) {
    match (result, outcome) {
        (Ok(_), Outcome::Ok) => {}
        (Err(e), Outcome::Error(kind, code)) => {
            assert_eq!(e.kind(), kind, "{cell}: {e}");
            if let Some(code) = code {
                let got = StreamError::from_io(&e).and_then(StreamError::code);
                assert_eq!(got, Some(code), "{cell}: code of {e}");
            }
        }
        (result, outcome) => panic!("{cell}: {result:?}, expected {outcome:?}"),
    }
}

async fn run_cell(mode: Mode, blocked: Blocked, event: PeerEvent) {
    let cell = format!("{mode:?}, {blocked:?} then {event:?}");
    let (mut connection, mut stream) = block(mode, blocked).await;
    let mut pending = call(&mut stream, blocked);
    assert!(poll!(&mut pending).is_pending(), "{cell}: not blocked");
    connection.happen(event).await;
    match expected(mode, blocked, event) {
        Outcome::Waits => {
            connection.handled().await;
            assert!(
                poll!(&mut pending).is_pending(),
                "{cell}: ended although the event does not decide it"
            );
            // Still waiting, and still woken: a Reset ends it.
            connection.happen(PeerEvent::Reset).await;
            let result = ended(&cell, &mut pending).await;
            check(&cell, result, expected(mode, blocked, PeerEvent::Reset));
        }
        outcome => {
            let result = ended(&cell, &mut pending).await;
            check(&cell, result, outcome);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_blocked_call_wakes_on_every_event_that_decides_it() {
    let mut cells = 0;
    for mode in [Mode::Extension, Mode::PlainMplex] {
        for blocked in [
            Blocked::ReadNoData,
            Blocked::WriteCredit,
            Blocked::WriteFullSocket,
            Blocked::FlushFullSocket,
            Blocked::CloseWriteFullSocket,
            Blocked::CloseReadFullSocket,
        ] {
            let extension_only =
                matches!(blocked, Blocked::WriteCredit | Blocked::CloseReadFullSocket);
            if mode == Mode::PlainMplex && extension_only {
                continue;
            }
            for event in [
                PeerEvent::Reset,
                PeerEvent::CloseRead,
                PeerEvent::Close,
                PeerEvent::ConnectionError,
                PeerEvent::MuxerDropped,
            ] {
                if mode == Mode::PlainMplex && event == PeerEvent::CloseRead {
                    continue;
                }
                run_cell(mode, blocked, event).await;
                cells += 1;
            }
        }
    }
    assert_eq!(cells, 6 * 5 + 4 * 4);
}

#[tokio::test]
async fn close_read_in_plain_mplex_completes_at_once_even_with_the_socket_full() {
    let (_connection, mut stream) = block(Mode::PlainMplex, Blocked::WriteFullSocket).await;
    let done = stream.close_read().now_or_never();
    assert!(
        matches!(done, Some(Ok(()))),
        "plain mplex sends nothing for close_read: {done:?}"
    );
}
