//! [`Config`]: limits, buffer behaviour and protocol ids.

use crate::frame::{INITIAL_WINDOW, MAX_CREDIT, MAX_FRAME_BODY};

/// The extension's protocol id, offered first.
pub const EXTENSION_PROTOCOL: &str = "/mplex-halfclose/1.0.0";
/// Plain mplex's protocol id, offered second for compatibility.
pub const MPLEX_PROTOCOL: &str = "/mplex/6.7.0";

/// What to do when a stream's receive buffer is full in plain-mplex mode, where the peer cannot be
/// asked to slow down. Mirrors `libp2p_mplex::MaxBufferBehaviour`. In extension mode flow control
/// keeps buffers within the window and this setting does not apply.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub enum MaxBufferBehaviour {
    /// Reset the stream whose buffer overflowed; other streams go on.
    ResetStream,
    /// Stop reading from the connection until the application drains the full buffer. No data
    /// is lost, but every stream of the connection waits (head-of-line blocking).
    Block,
}

/// Configuration of the muxer, and the connection upgrade that negotiates it.
///
/// Setters mirror `libp2p_mplex::Config`, so migrating is a one-line change:
///
/// ```
/// use libp2p_mplex_halfclose::{Config, MaxBufferBehaviour};
///
/// let mut config = Config::new();
/// config
///     .set_max_num_streams(256)
///     .set_max_buffer_size(64)
///     .set_max_buffer_behaviour(MaxBufferBehaviour::ResetStream)
///     .set_split_send_size(16 * 1024);
/// ```
///
/// As a connection upgrade it offers [`EXTENSION_PROTOCOL`], then (unless
/// [`set_plain_mplex_fallback`](Config::set_plain_mplex_fallback) turned it off) the plain
/// mplex id, and yields a [`Muxer`](crate::Muxer) in the matching [`Mode`](crate::Mode):
///
/// ```
/// use libp2p::{Transport, core::upgrade::Version, identity, noise, tcp};
///
/// let key = identity::Keypair::generate_ed25519();
/// let transport = tcp::tokio::Transport::new(tcp::Config::default())
///     .upgrade(Version::V1)
///     .authenticate(noise::Config::new(&key).unwrap())
///     .multiplex(libp2p_mplex_halfclose::Config::new())
///     .boxed();
/// # let _ = transport;
/// ```
///
/// # Memory
///
/// What one connection may hold, whatever the peer does, with the defaults in brackets. Every
/// figure counts bytes allocated (as a counting allocator sees them), not only payload;
/// `tests/bounded_memory_allocated.rs` measures them.
///
/// | what | bound |
/// |---|---|
/// | unread data, extension mode | each stream its window (256 KiB, growing up to [`set_max_stream_window`](Config::set_max_stream_window) while the sum of windows, with the initial window of every stream that may still open, fits in [`set_max_connection_buffer`](Config::set_max_connection_buffer)): `max(budget, stream limit × 256 KiB)` in all, whichever streams grew first, plus 1/128 of it and 8 KiB per stream with unread data, however the peer cuts its frames |
/// | unread data, plain mplex | [`set_max_buffer_size`](Config::set_max_buffer_size) (32) frames per stream and the connection budget, each exceeded by at most one frame before [`MaxBufferBehaviour`] applies. Frames are kept as they came (the limit counts them), so each counts its length plus 64 bytes against the budget, what keeping it costs: the budget bounds memory however small the frames |
/// | a frame being read | its body (at most 1 MiB), grown as it arrives, beside a 64 KiB read buffer |
/// | written data | [`set_send_buffer_size`](Config::set_send_buffer_size) (128 KiB) plus one frame (at most [`set_split_send_size`](Config::set_split_send_size), 64 KiB) per stream, dropped streams included until their data is sent (writes under 8 KiB are gathered, so they cost their bytes); beside it, 256 KiB being written to the socket, in buffers of up to twice that. Then writers wait, and opening waits at the stream limit |
/// | answers to the peer (Reset, Close, CloseRead, WindowUpdate) | reading stops while more than `1024 + 4 × streams` control frames wait to be sent |
/// | streams | [`set_max_num_streams`](Config::set_max_num_streams) (128), each under 1 KiB of state when idle |
///
/// With the defaults, a peer that never reads, facing an application that writes flat out,
/// leaves at most about 8.5 MiB of written data on one connection; a peer that writes flat out
/// to streams nobody reads fills their 256 KiB windows (32 MiB for 128 streams), and never more
/// than the 64 MiB budget of windows plus 1.5 MiB however they grew.
///
/// # Errors
///
/// The setters never fail; out-of-range values are clamped, as each setter says. The upgrade
/// itself never fails: a peer that offers none of our protocol ids (or only plain mplex, with
/// the fallback off) fails in multistream-select, as a `NegotiationError` in libp2p's upgrade
/// error, before the muxer starts. Under `Version::V1Lazy` (what `SwarmBuilder` uses) the
/// dialer sends its last offer without waiting for the answer: it starts the muxer, may report
/// the connection established, and sees it closed with an I/O error once the peer's refusal
/// arrives. Every muxer behaves so under `V1Lazy`.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) max_num_streams: usize,
    pub(crate) max_buffer_len: usize,
    pub(crate) max_buffer_behaviour: MaxBufferBehaviour,
    pub(crate) split_send_size: usize,
    pub(crate) mplex_protocol: &'static str,
    pub(crate) plain_mplex_fallback: bool,
    pub(crate) max_stream_window: u64,
    pub(crate) max_connection_buffer: u64,
    pub(crate) send_buffer_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_num_streams: 128,
            max_buffer_len: 32,
            max_buffer_behaviour: MaxBufferBehaviour::Block,
            split_send_size: 64 * 1024,
            mplex_protocol: MPLEX_PROTOCOL,
            plain_mplex_fallback: true,
            max_stream_window: 16 * 1024 * 1024,
            max_connection_buffer: 64 * 1024 * 1024,
            send_buffer_size: 128 * 1024,
        }
    }
}

impl Config {
    /// The default configuration: both protocols offered, 128 streams, windows growing to 16 MiB
    /// per stream within 64 MiB per connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most streams, inbound and outbound together, open at once on one connection
    /// (default 128, as libp2p-mplex; at least 1). A dropped stream counts until its last frames have been
    /// handed to the socket. Beyond it, inbound streams are reset (code 0) and `poll_outbound`
    /// waits for a stream to end. A peer that opens more than `max(256, limit)` streams in a row
    /// that we refuse is cut off ([`ProtocolViolation::TooManyRefusedStreams`]).
    ///
    /// [`ProtocolViolation::TooManyRefusedStreams`]: crate::ProtocolViolation::TooManyRefusedStreams
    pub fn set_max_num_streams(&mut self, max: usize) -> &mut Self {
        self.max_num_streams = max.max(1);
        self
    }

    /// Plain-mplex mode: the most data frames buffered per stream before
    /// [`MaxBufferBehaviour`] applies (default 32, as libp2p-mplex; at least 1).
    pub fn set_max_buffer_size(&mut self, max: usize) -> &mut Self {
        self.max_buffer_len = max.max(1);
        self
    }

    /// Plain-mplex mode: what to do when a stream's buffer is full (default
    /// [`MaxBufferBehaviour::Block`], as libp2p-mplex).
    pub fn set_max_buffer_behaviour(&mut self, behaviour: MaxBufferBehaviour) -> &mut Self {
        self.max_buffer_behaviour = behaviour;
        self
    }

    /// The largest Data frame we send (default 64 KiB; at least 1 byte, at most 1 MiB, the
    /// protocol's limit).
    pub fn set_split_send_size(&mut self, size: usize) -> &mut Self {
        self.split_send_size = size.clamp(1, MAX_FRAME_BODY);
        self
    }

    /// The protocol id used for plain mplex (default `/mplex/6.7.0`). The extension's id is fixed.
    pub fn set_protocol_name(&mut self, protocol_name: &'static str) -> &mut Self {
        self.mplex_protocol = protocol_name;
        self
    }

    /// Whether to offer and accept plain mplex when the peer lacks the extension (default true).
    /// With `false` only `/mplex-halfclose/1.0.0` is negotiated.
    pub fn set_plain_mplex_fallback(&mut self, enabled: bool) -> &mut Self {
        self.plain_mplex_fallback = enabled;
        self
    }

    /// Extension mode: the largest receive window one stream may grow to (default 16 MiB, at
    /// least the protocol's initial 256 KiB, at most 2³² − 1).
    ///
    /// A stream moves at most one window per round trip, so its rate is capped at this over the
    /// round trip: one stream needs about its link's bandwidth-delay product plus 1 MiB. The
    /// default, as yamux's, fills 100 ms at 1 Gbit/s (12.5 MB) and 20 ms at 5 Gbit/s, and on a
    /// 300 ms link moves 56 MB/s per stream. A window grows only while the stream consumes
    /// half of it in under two round trips, twice in a row (PROTOCOL.md §6): a slow reader
    /// keeps a window of its pace (if the peer answers Pings promptly: one that delays its
    /// Pongs looks far away), and a stream nobody reads keeps 256 KiB, so a larger maximum
    /// costs memory only where a stream uses it, and never beyond
    /// [`set_max_connection_buffer`](Config::set_max_connection_buffer).
    pub fn set_max_stream_window(&mut self, bytes: u64) -> &mut Self {
        self.max_stream_window = bytes.clamp(INITIAL_WINDOW, MAX_CREDIT);
        self
    }

    /// The receive buffer budget of one connection (default 64 MiB). In extension mode windows
    /// only grow while the sum of all streams' windows, plus the initial 256 KiB of every
    /// stream that may still open under [`set_max_num_streams`](Config::set_max_num_streams),
    /// fits in it; each stream always has the initial 256 KiB, so the bound is
    /// `max(budget, stream limit × 256 KiB)`, whichever streams grew first. In plain-mplex mode
    /// exceeding it triggers the [`MaxBufferBehaviour`] on the stream that received the data;
    /// there each buffered frame counts 64 bytes more than its length (see the memory table).
    pub fn set_max_connection_buffer(&mut self, bytes: u64) -> &mut Self {
        self.max_connection_buffer = bytes;
        self
    }

    /// How many bytes of written data may wait in the muxer for their turn at the socket before
    /// writers wait (default 128 KiB per connection). Each stream may always queue one frame, so
    /// that streams writing flat out cannot shut another one out: the bound is this plus one
    /// frame per stream, a dropped stream counting (and keeping its slot under the stream
    /// limit) until its data is sent. Beside it, up to 256 KiB of encoded frames are being
    /// written to the socket. More keeps
    /// data longer away from the socket and out of cache (256 KiB: a single stream on a memory
    /// pipe about 15 % slower); less means more task switches per byte.
    pub fn set_send_buffer_size(&mut self, bytes: usize) -> &mut Self {
        self.send_buffer_size = bytes.max(1);
        self
    }
}
