//! Error types, one per layer, and their mapping to [`std::io::Error`].

use std::io;

use crate::frame::StreamId;

/// A specific way in which the peer broke the protocol. The connection is closed when one occurs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A varint (header, length or an extension field) had more than 10 bytes or overflowed 64 bits.
    #[error("varint longer than 10 bytes or above 2^64-1")]
    VarintOverflow,
    /// A varint was not minimally encoded.
    #[error("varint not minimally encoded")]
    VarintNotMinimal,
    /// A frame announced a body over 1 MiB.
    #[error("frame body of {len} bytes exceeds the 1 MiB limit")]
    FrameTooLarge {
        /// The announced length.
        len: u64,
    },
    /// An extension frame (flag 7) arrived on a connection that negotiated plain mplex.
    #[error("extension frame (flag 7) on a plain-mplex connection")]
    ExtensionFrameInPlainMode,
    /// An extension frame's body could not be parsed.
    #[error("malformed extension frame: {0}")]
    MalformedExtension(&'static str),
    /// A reset code in an extension-mode Reset body could not be parsed.
    #[error("malformed reset code in Reset frame")]
    MalformedResetCode,
    /// The peer opened a stream with an id that is still live.
    #[error("NewStream for stream {0}, which is still open")]
    NewStreamForLiveId(StreamId),
    /// The peer sent more data on a stream than the credit we granted.
    #[error("{len} bytes of data on stream {stream} with only {credit} bytes of credit")]
    CreditExceeded {
        /// The stream.
        stream: StreamId,
        /// The credit the peer had.
        credit: u64,
        /// The length of the offending Data frame.
        len: u64,
    },
    /// A WindowUpdate pushed the send credit of a stream above 2^32-1 bytes.
    #[error("window update overflows the send window of stream {0}")]
    WindowOverflow(StreamId),
    /// The peer kept opening streams beyond the configured limit after we refused them.
    #[error("peer opened {0} streams in a row beyond the stream limit")]
    TooManyRefusedStreams(u64),
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    TruncatedFrame,
}

/// Why a connection failed. Returned by the [`crate::Muxer`]'s `StreamMuxer` methods.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer broke the protocol; the connection was closed.
    #[error("protocol violation by the peer: {0}")]
    ProtocolViolation(#[from] ProtocolViolation),
    /// Reading from or writing to the underlying socket failed.
    #[error("I/O error on the underlying connection: {0}")]
    Io(std::sync::Arc<io::Error>),
    /// The connection was closed (by `poll_close`, by dropping the muxer, or by the peer at a
    /// frame boundary).
    #[error("connection closed")]
    Closed,
    /// Opening a stream failed: all 2^61 stream numbers have been used on this connection
    /// (a number is never used twice). The connection's other streams go on.
    #[error("all 2^61 stream numbers of this connection have been used")]
    StreamNumbersExhausted,
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io(std::sync::Arc::new(e))
    }
}

impl From<ConnectionError> for io::Error {
    fn from(e: ConnectionError) -> Self {
        let kind = match &e {
            ConnectionError::ProtocolViolation(_) => io::ErrorKind::InvalidData,
            ConnectionError::Io(inner) => inner.kind(),
            ConnectionError::Closed => io::ErrorKind::ConnectionAborted,
            ConnectionError::StreamNumbersExhausted => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Why an operation on one stream failed. Stream I/O returns it inside an [`io::Error`]; use
/// [`StreamError::from_io`] to get it back, for example to read an error code.
///
/// | variant | `io::ErrorKind` |
/// |---|---|
/// | [`StreamError::WriteClosed`] | `BrokenPipe` |
/// | [`StreamError::Stopped`] | `BrokenPipe` |
/// | [`StreamError::Reset`] | `ConnectionReset` |
/// | [`StreamError::Connection`] | that of the connection error |
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// We closed the write side ourselves (close_write) and then tried to write.
    #[error("write side of the stream is closed")]
    WriteClosed,
    /// The peer closed its read side (close-read / stop-sending): it reads no more.
    #[error("the peer stopped reading the stream (code {code})")]
    Stopped {
        /// The error code the peer gave; 0 when none.
        code: u64,
    },
    /// The stream was reset, by us or by the peer.
    #[error("stream reset by the {} (code {code})", if *.by_peer { "peer" } else { "local side" })]
    Reset {
        /// The error code; 0 when none (always 0 in plain-mplex mode).
        code: u64,
        /// Whether the peer sent the reset.
        by_peer: bool,
    },
    /// The whole connection failed or was closed.
    #[error("connection failed: {0}")]
    Connection(#[from] ConnectionError),
}

impl StreamError {
    /// The `StreamError` inside an `io::Error` returned by stream I/O, if it has one.
    pub fn from_io(error: &io::Error) -> Option<&StreamError> {
        error.get_ref()?.downcast_ref::<StreamError>()
    }

    /// The application error code carried by a reset or a stop, if any.
    pub fn code(&self) -> Option<u64> {
        match self {
            StreamError::Stopped { code } | StreamError::Reset { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The `io::ErrorKind` this error maps to.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            StreamError::WriteClosed | StreamError::Stopped { .. } => io::ErrorKind::BrokenPipe,
            StreamError::Reset { .. } => io::ErrorKind::ConnectionReset,
            StreamError::Connection(ConnectionError::ProtocolViolation(_)) => {
                io::ErrorKind::InvalidData
            }
            // On a stream, BrokenPipe and ConnectionReset mean the stream was stopped or reset:
            // the transport's own broken pipe or reset is the connection's abort.
            StreamError::Connection(ConnectionError::Io(e)) => match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                    io::ErrorKind::ConnectionAborted
                }
                kind => kind,
            },
            StreamError::Connection(ConnectionError::Closed) => io::ErrorKind::ConnectionAborted,
            StreamError::Connection(ConnectionError::StreamNumbersExhausted) => {
                io::ErrorKind::Other
            }
        }
    }
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> Self {
        io::Error::new(e.kind(), e)
    }
}
