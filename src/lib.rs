//! An [mplex](https://github.com/libp2p/specs/tree/master/mplex) stream muxer for rust-libp2p
//! whose streams close each direction on its own.
//!
//! libp2p streams are full-duplex, but a plain mplex or yamux stream can only close its write
//! side or be dropped. This muxer adds what TCP and QUIC have:
//!
//! * **close-write (FIN)**: [`Stream::close_write`] (or `AsyncWriteExt::close`) tells the peer
//!   that no more data comes. The peer reads everything, then EOF, and can still answer. A
//!   request/response needs no length prefix: write the request, close writing, read the reply.
//! * **close-read (stop-sending)**: [`Stream::close_read`] tells the peer to stop writing: its
//!   writes fail with `BrokenPipe`, while the other direction keeps flowing. A reader can stop a
//!   writer without killing the stream.
//! * **reset**: [`Stream::reset`] aborts both directions (`ConnectionReset` on both sides).
//!
//! On the wire it speaks mplex, byte for byte, plus an extension negotiated under its own id
//! (`/mplex-halfclose/1.0.0`, see `PROTOCOL.md`) that carries close-read, per-stream flow
//! control and reset codes. With peers that only know `/mplex/6.7.0` it falls back to plain
//! mplex, so it can replace `libp2p_mplex::Config` in an existing node.
//!
//! # Using it in a swarm
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let swarm = libp2p::SwarmBuilder::with_new_identity()
//!     .with_tokio()
//!     .with_tcp(
//!         libp2p::tcp::Config::default(),
//!         libp2p::noise::Config::new,
//!         libp2p_mplex_halfclose::Config::default,
//!     )?
//!     .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)?
//!     .build();
//! # let _ = swarm; Ok(()) }
//! ```
//!
//! Or next to yamux, preferring ours: `(libp2p_mplex_halfclose::Config::default,
//! libp2p::yamux::Config::default)`. On a hand-built transport:
//! `transport.upgrade(Version::V1).authenticate(noise).multiplex(libp2p_mplex_halfclose::Config::new())`.
//!
//! # Half-close on the stream type
//!
//! ```
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! use libp2p_mplex_halfclose::Stream;
//!
//! /// Sends a request without a length prefix and reads the whole reply.
//! async fn request(stream: &mut Stream, body: &[u8]) -> std::io::Result<Vec<u8>> {
//!     stream.write_all(body).await?;
//!     stream.close_write().await?; // the peer now reads EOF after the body
//!     let mut reply = Vec::new();
//!     stream.read_to_end(&mut reply).await?;
//!     Ok(reply)
//! }
//! ```
//!
//! # Drop rules
//!
//! Swarm users hold `libp2p_swarm::Stream`, which hides our type; for them dropping the stream is
//! the way to close reading. Dropping a [`Stream`] sends, as rust-libp2p's mplex and yamux do:
//!
//! | our write side | our read side | on drop we send |
//! |---|---|---|
//! | closed | finished (peer sent Close, or we closed reading) | nothing |
//! | open | finished | Close: everything written still arrives |
//! | open | open | Reset |
//! | closed | open | CloseRead in extension mode (the peer's writes fail with `BrokenPipe`); Reset in plain-mplex mode |
//!
//! In plain-mplex mode a local [`Stream::close_read`] sends nothing, so for the drop rules the
//! read side counts as open until the peer closes.
//!
//! # Sending
//!
//! Writes may be buffered, as in libp2p-mplex and any `BufWriter`: on a connection's only
//! stream, up to 16 KiB of written data waits for the stream's flush, close or waiting read, or
//! for anything else the connection sends, so that a request and its close reach the peer in one
//! piece. More data, or data beside other streams, goes out at once. Flush (or close) to send
//! now.
//!
//! A stream we open is announced to the peer with its first frame (a write, a close of either
//! direction, a read that waits, or a flush), as yamux does; one dropped or reset before that
//! sends nothing at all.
//!
//! # Errors
//!
//! Stream I/O fails with an `io::Error` whose kind says what happened and whose inner error is
//! a [`StreamError`]: `BrokenPipe` means we closed writing or the peer stopped reading,
//! `ConnectionReset` means the stream was reset (with [`StreamError::code`] for its code), and
//! other kinds mean the connection failed ([`ConnectionError`]): `InvalidData` for a protocol
//! violation, `ConnectionAborted` for a closed connection or a transport that broke or was reset
//! (its error is the source), or the transport's own kind for other I/O failures.

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
pub use frame::{Frame, MAX_FRAME_BODY, Mode, Opener, StreamId};
pub use muxer::Muxer;
pub use stream::Stream;
