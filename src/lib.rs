//! An [mplex](https://github.com/libp2p/specs/tree/master/mplex) stream muxer for rust-libp2p
//! whose streams close each direction on its own.
//!
//! # Half-close, and why it matters
//!
//! A libp2p stream carries two byte streams, one each way. *Half-closing* ends one of them and
//! leaves the other open, as TCP's `shutdown(SHUT_WR)` and QUIC's FIN and STOP_SENDING do.
//! rust-libp2p's mplex and yamux can close only the write side, or drop the whole stream. This
//! muxer closes either side on its own, and tells the peer:
//!
//! * **close-write (FIN)**: [`Stream::close_write`] (or `AsyncWriteExt::close`) says that no more
//!   data comes. The peer reads everything, then EOF, and can still answer. So a request needs
//!   no length prefix: write it, close writing, read the reply to its end.
//! * **close-read (stop-sending)**: [`Stream::close_read`] tells the peer to stop writing: its
//!   writes fail with `BrokenPipe`, while our writes keep flowing. A reader that has enough (a
//!   download it no longer wants, a subscription it leaves) stops the writer without killing the
//!   stream and losing the answer it is still sending.
//! * **reset**: [`Stream::reset`] aborts both directions (`ConnectionReset` on both sides), with
//!   an optional code.
//!
//! On the wire it speaks mplex (`/mplex/6.7.0`) byte for byte, plus an extension negotiated
//! under its own id, [`EXTENSION_PROTOCOL`] (`/mplex-halfclose/1.0.0`; the wire format is in
//! `PROTOCOL.md`), that carries close-read, per-stream flow control and reset codes. With peers
//! that only know mplex it falls back to plain mplex (tested against rust's libp2p-mplex and
//! js-libp2p's `@libp2p/mplex`), so it can replace `libp2p_mplex::Config` in an existing node.
//!
//! # A complete example
//!
//! Two swarms on 127.0.0.1 over TCP + noise with this muxer, and a request/response with no
//! length prefix through [`libp2p-stream`](https://docs.rs/libp2p-stream). A swarm stream's
//! `close` is our close-write.
//!
//! ```
//! use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
//! use libp2p::{StreamProtocol, Swarm, swarm::SwarmEvent};
//!
//! const GREET: StreamProtocol = StreamProtocol::new("/greet/1.0.0");
//!
//! fn swarm() -> Result<Swarm<libp2p_stream::Behaviour>, Box<dyn std::error::Error>> {
//!     Ok(libp2p::SwarmBuilder::with_new_identity()
//!         .with_tokio()
//!         .with_tcp(
//!             libp2p::tcp::Config::default(),
//!             libp2p::noise::Config::new,
//!             libp2p_mplex_halfclose::Config::default,
//!         )?
//!         .with_behaviour(|_| libp2p_stream::Behaviour::new())?
//!         .build())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (mut server, mut client) = (swarm()?, swarm()?);
//! server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
//! let address = loop {
//!     if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
//!         break address;
//!     }
//! };
//! let server_id = *server.local_peer_id();
//!
//! // The server reads each request to its end, answers, and closes its side.
//! let mut requests = server.behaviour().new_control().accept(GREET)?;
//! tokio::spawn(async move {
//!     while let Some((_, mut stream)) = requests.next().await {
//!         let mut name = String::new();
//!         stream.read_to_string(&mut name).await.unwrap();
//!         stream.write_all(format!("hello, {name}").as_bytes()).await.unwrap();
//!         stream.close().await.unwrap();
//!     }
//! });
//! tokio::spawn(async move { loop { server.select_next_some().await; } });
//!
//! client.dial(address)?;
//! while !matches!(client.select_next_some().await, SwarmEvent::ConnectionEstablished { .. }) {}
//! let mut control = client.behaviour().new_control();
//! tokio::spawn(async move { loop { client.select_next_some().await; } });
//!
//! let mut stream = control.open_stream(server_id, GREET).await?;
//! stream.write_all(b"half-close").await?;
//! stream.close().await?; // close-write: the server reads EOF after "half-close"
//! let mut reply = String::new();
//! stream.read_to_string(&mut reply).await?;
//! assert_eq!(reply, "hello, half-close");
//! # Ok(()) }
//! ```
//!
//! Next to yamux, use `|| libp2p_mplex_halfclose::Config::default().preferred_over(libp2p::yamux::Config::default())`
//! in place of the muxer above ([`Config::preferred_over`]): the extension with peers that have
//! it, yamux with every peer that has yamux, plain mplex only with peers that have nothing else.
//! (The tuple `(Config::default, yamux::Config::default)` would settle on plain mplex with a
//! peer that has mplex and yamux.) On a hand-built transport:
//! `transport.upgrade(Version::V1).authenticate(noise).multiplex(libp2p_mplex_halfclose::Config::new())`.
//! `cargo run --release --example demo` runs a longer walk-through, close-read included.
//!
//! # Half-close on the stream type
//!
//! [`Muxer`] implements `StreamMuxer`; its streams are [`Stream`]s, with each direction's close
//! as a method. Here `client`, `second` and `third` are streams we opened, and `accepted` hands
//! out each of them, as `server`, on the peer's side (two muxers over an in-memory pipe, each
//! polled by its own task; the setup is in the source of this example):
//!
//! ```
//! # use std::task::Poll;
//! # use futures::{StreamExt, channel::mpsc, future::poll_fn};
//! # use libp2p_core::muxing::StreamMuxerExt;
//! # use libp2p_mplex_halfclose::{Config, Mode, Muxer, Stream};
//! # use tokio_util::compat::TokioAsyncReadCompatExt;
//! # /// Polls `muxer` on its own task; the streams the peer opens come out of the channel.
//! # fn drive<C>(mut muxer: Muxer<C>) -> mpsc::UnboundedReceiver<Stream>
//! # where C: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static {
//! #     let (inbound, streams) = mpsc::unbounded();
//! #     tokio::spawn(poll_fn(move |cx| {
//! #         while let Poll::Ready(Ok(stream)) = muxer.poll_inbound_unpin(cx) {
//! #             let _ = inbound.unbounded_send(stream);
//! #         }
//! #         muxer.poll_unpin(cx).map(|_| ())
//! #     }));
//! #     streams
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! # let (a, b) = tokio::io::duplex(1 << 20);
//! # let mut ours = Muxer::new(a.compat(), Config::default(), Mode::Extension);
//! # let theirs = Muxer::new(b.compat(), Config::default(), Mode::Extension);
//! # let mut client = poll_fn(|cx| ours.poll_outbound_unpin(cx)).await.unwrap();
//! # let mut second = poll_fn(|cx| ours.poll_outbound_unpin(cx)).await.unwrap();
//! # let mut third = poll_fn(|cx| ours.poll_outbound_unpin(cx)).await.unwrap();
//! # let _ours = drive(ours);
//! # let mut accepted = drive(theirs);
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! use std::io::ErrorKind;
//!
//! // close-write: the peer reads the request, then EOF, and answers on the open direction.
//! client.write_all(b"ping").await?;
//! client.close_write().await?;
//! let mut server = accepted.next().await.unwrap();
//! let mut request = Vec::new();
//! server.read_to_end(&mut request).await?;
//! assert_eq!(request, b"ping");
//! server.write_all(b"pong").await?;
//! server.close_write().await?;
//! let mut reply = Vec::new();
//! client.read_to_end(&mut reply).await?;
//! assert_eq!(reply, b"pong");
//!
//! // close-read: the reader stops the writer; the writer's next writes fail with BrokenPipe,
//! // and the reader's own direction still works.
//! second.write_all(b"more than the peer wants").await?;
//! second.flush().await?;
//! let mut server = accepted.next().await.unwrap();
//! server.close_read().await?;
//! let stopped = loop {
//!     if let Err(e) = second.write_all(&[0; 1024]).await {
//!         break e;
//!     }
//! };
//! assert_eq!(stopped.kind(), ErrorKind::BrokenPipe);
//! server.write_all(b"still here").await?;
//! server.close_write().await?;
//! let mut last_words = String::new();
//! second.read_to_string(&mut last_words).await?;
//! assert_eq!(last_words, "still here");
//!
//! // reset: both directions fail, on both sides.
//! third.write_all(b"never mind").await?;
//! third.flush().await?;
//! let mut server = accepted.next().await.unwrap();
//! server.reset();
//! let reset = third.read(&mut [0; 16]).await.unwrap_err();
//! assert_eq!(reset.kind(), ErrorKind::ConnectionReset);
//! # Ok(()) }
//! ```
//!
//! # Drop rules
//!
//! Dropping a [`Stream`] without closing it sends what the directions still open call for, as
//! rust-libp2p's mplex and yamux do, so existing protocol code keeps its meaning:
//!
//! | our write side | our read side | on drop we send | the peer sees |
//! |---|---|---|---|
//! | closed | finished (peer sent Close, or we closed reading) | nothing | — |
//! | open | finished | Close | all data written, then EOF |
//! | open | open | Reset | `ConnectionReset` |
//! | closed | open | CloseRead in extension mode; Reset in plain-mplex mode | writes fail with `BrokenPipe`; `ConnectionReset` |
//!
//! In plain-mplex mode a local [`Stream::close_read`] sends nothing (mplex has no such frame),
//! so for the drop rules the read side counts as open until the peer closes. Swarm users hold
//! `libp2p_swarm::Stream`, which hides our type: for them closing writing and dropping the
//! stream is the close-read.
//!
//! ```
//! # use std::task::Poll;
//! # use futures::{StreamExt, channel::mpsc, future::poll_fn};
//! # use libp2p_core::muxing::StreamMuxerExt;
//! # use libp2p_mplex_halfclose::{Config, Mode, Muxer, Stream};
//! # use tokio_util::compat::TokioAsyncReadCompatExt;
//! # fn drive<C>(mut muxer: Muxer<C>) -> mpsc::UnboundedReceiver<Stream>
//! # where C: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static {
//! #     let (inbound, streams) = mpsc::unbounded();
//! #     tokio::spawn(poll_fn(move |cx| {
//! #         while let Poll::Ready(Ok(stream)) = muxer.poll_inbound_unpin(cx) {
//! #             let _ = inbound.unbounded_send(stream);
//! #         }
//! #         muxer.poll_unpin(cx).map(|_| ())
//! #     }));
//! #     streams
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! # let (a, b) = tokio::io::duplex(1 << 20);
//! # let mut ours = Muxer::new(a.compat(), Config::default(), Mode::Extension);
//! # let theirs = Muxer::new(b.compat(), Config::default(), Mode::Extension);
//! # let mut client = poll_fn(|cx| ours.poll_outbound_unpin(cx)).await.unwrap();
//! # let _ours = drive(ours);
//! # let mut accepted = drive(theirs);
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! use std::io::ErrorKind;
//!
//! // The server answers and drops the stream without reading the rest of the upload: its write
//! // side is closed and its read side open, so the drop sends CloseRead.
//! client.write_all(b"an upload the server will not read").await?;
//! client.flush().await?;
//! let mut server = accepted.next().await.unwrap();
//! server.write_all(b"no, thanks").await?;
//! server.close_write().await?;
//! drop(server);
//! let mut answer = String::new();
//! client.read_to_string(&mut answer).await?; // the answer arrives whole
//! assert_eq!(answer, "no, thanks");
//! let stopped = loop {
//!     if let Err(e) = client.write_all(&[0; 1024]).await {
//!         break e;
//!     }
//! };
//! assert_eq!(stopped.kind(), ErrorKind::BrokenPipe); // stopped, not reset
//! # Ok(()) }
//! ```
//!
//! # Migrating from libp2p-mplex
//!
//! Replace `libp2p_mplex::Config` with [`Config`]: the setters (`set_max_num_streams`,
//! `set_max_buffer_size`, `set_max_buffer_behaviour`, `set_split_send_size`,
//! `set_protocol_name`) and [`MaxBufferBehaviour`] are the same and mean the same in
//! plain-mplex mode. Peers that know only `/mplex/6.7.0` keep working: multistream-select falls
//! back to it. With peers that have the extension, flow control replaces
//! [`MaxBufferBehaviour`] (no head-of-line blocking), and close-read and reset codes reach the
//! peer. Differences to know:
//!
//! * `split_send_size` defaults to 64 KiB (libp2p-mplex: 8 KiB).
//! * A write on a stream closed for writing fails with `BrokenPipe` (libp2p-mplex: `WriteZero`).
//! * A stream we open reaches the peer with its first frame (a write, a close of either
//!   direction, a read that waits, or a flush), as in yamux; libp2p-mplex announces it at once.
//!   multistream-select always writes first, so swarm protocols see no difference; code that
//!   opens a raw stream and waits for the peer to accept it should flush it first. One dropped
//!   or reset before that sends nothing at all.
//! * Writes may be buffered, as in libp2p-mplex and any `BufWriter`: on a connection's only
//!   stream, up to 16 KiB of written data waits for the stream's flush, close or waiting read,
//!   or for anything else the connection sends, so that a request and its close reach the peer
//!   in one piece. More data, or data beside other streams, goes out at once. Flush (or close)
//!   to send now.
//! * [`Config::set_plain_mplex_fallback`]`(false)` refuses peers without the extension;
//!   [`Config::set_max_stream_window`], [`Config::set_max_connection_buffer`] and
//!   [`Config::set_send_buffer_size`] set the extension's limits.
//!
//! # Errors
//!
//! Stream I/O fails with an `io::Error` whose kind says what happened and whose inner error is
//! a [`StreamError`] ([`StreamError::from_io`] gets it back):
//!
//! | kind | meaning |
//! |---|---|
//! | `BrokenPipe` | a write after we closed writing, or after the peer stopped reading ([`StreamError::code`] gives its code) |
//! | `ConnectionReset` | the stream was reset, by us or the peer ([`StreamError::code`] gives the code) |
//! | `InvalidData` | the peer violated the protocol; the connection is closed ([`ProtocolViolation`] names what it did) |
//! | `ConnectionAborted` | the connection closed, or its transport broke or was reset (the transport's error is the source) |
//! | other | the transport's own I/O error |
//!
//! The [`Muxer`]'s `StreamMuxer` methods fail with a [`ConnectionError`], the same cause.
//!
//! # Logging
//!
//! Events go through [`tracing`](https://docs.rs/tracing), inside a span per connection,
//! `mplex_halfclose{connection=N mode=..}`, with `stream=<id>` on stream events: frames at
//! trace, stream lifecycle at trace and debug, a protocol violation at warn (once, as the
//! connection ends), nothing at info on a healthy connection.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod codec;
mod config;
pub mod core;
mod error;
mod frame;
mod muxer;
mod stream;
mod upgrade;

pub use codec::Codec;
pub use config::{Config, EXTENSION_PROTOCOL, MPLEX_PROTOCOL, MaxBufferBehaviour};
pub use error::{ConnectionError, ProtocolViolation, StreamError};
pub use frame::{
    Frame, INITIAL_WINDOW, MAX_CREDIT, MAX_FRAME_BODY, MAX_STREAM_NUM, Mode, Opener, StreamId,
};
pub use muxer::Muxer;
pub use stream::Stream;
pub use upgrade::{PreferredOver, PreferredOverProtocol};
