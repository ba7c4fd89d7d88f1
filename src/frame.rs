//! Frames as the rest of the crate sees them: no varints, no flag numbers.
//!
//! The wire layout lives in [`crate::codec`] and in `PROTOCOL.md`.

use std::fmt;

use bytes::Bytes;

/// Largest frame body that may be sent or received (1 MiB), as in the mplex spec.
pub const MAX_FRAME_BODY: usize = 1024 * 1024;

/// Largest stream number: a frame header holds it in 61 bits, beside the 3-bit flag.
pub const MAX_STREAM_NUM: u64 = (1 << 61) - 1;

/// Credit each direction of each stream has when it opens, fixed by the protocol (extension
/// mode).
pub const INITIAL_WINDOW: u64 = 256 * 1024;

/// The largest credit a sender may hold on one stream; a WindowUpdate that would go beyond it is a
/// protocol violation (extension mode).
pub const MAX_CREDIT: u64 = u32::MAX as u64;

/// Which side of the connection opened a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Opener {
    /// We opened the stream (we are its initiator).
    Local,
    /// The peer opened the stream (we are its receiver).
    Remote,
}

impl Opener {
    /// Whether this side opened the stream.
    pub fn is_local(self) -> bool {
        self == Opener::Local
    }
}

/// A stream identifier as seen from this side of the connection.
///
/// mplex numbers streams per opener, so the number alone is ambiguous: stream 3 opened by us and
/// stream 3 opened by the peer are different streams. Carrying the opener in the type keeps the two
/// namespaces apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    num: u64,
    opener: Opener,
}

impl StreamId {
    /// A stream we opened.
    pub fn local(num: u64) -> Self {
        Self {
            num,
            opener: Opener::Local,
        }
    }

    /// A stream the peer opened.
    pub fn remote(num: u64) -> Self {
        Self {
            num,
            opener: Opener::Remote,
        }
    }

    /// The stream number carried on the wire.
    pub fn num(self) -> u64 {
        self.num
    }

    /// Who opened the stream.
    pub fn opener(self) -> Opener {
        self.opener
    }

    /// The same stream as the peer sees it (the opener flips).
    pub fn as_seen_by_peer(self) -> Self {
        let opener = match self.opener {
            Opener::Local => Opener::Remote,
            Opener::Remote => Opener::Local,
        };
        Self {
            num: self.num,
            opener,
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.opener {
            Opener::Local => write!(f, "{}/local", self.num),
            Opener::Remote => write!(f, "{}/remote", self.num),
        }
    }
}

/// One frame, decoded. Stream ids are relative to the side that holds the frame: a frame we send
/// names streams as we see them, a frame we received has already been translated to our view.
///
/// Its `Debug` form shows a body's length and its first bytes, not all of it: frames are
/// logged at trace level, and a peer's 1 MiB body must not become a 4 MB log line.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// mplex flag 0: open a stream. The name is informative only.
    NewStream {
        /// The new stream; always opened by the frame's sender.
        id: StreamId,
        /// The stream name (we send the number in decimal).
        name: Bytes,
    },
    /// mplex flags 1/2: stream data.
    Data {
        /// The stream.
        id: StreamId,
        /// The payload, at most [`MAX_FRAME_BODY`] bytes.
        data: Bytes,
    },
    /// mplex flags 3/4: close-write (FIN). The sender writes no more on this stream.
    Close {
        /// The stream.
        id: StreamId,
    },
    /// mplex flags 5/6: reset both directions. The code is only sent in extension mode.
    Reset {
        /// The stream.
        id: StreamId,
        /// Application error code; 0 when none was given.
        code: u64,
    },
    /// Extension op 0: close-read (stop-sending). The sender reads no more on this stream.
    CloseRead {
        /// The stream.
        id: StreamId,
        /// Application error code; 0 when none was given.
        code: u64,
    },
    /// Extension op 1: the sender may receive `credit` more bytes on this stream.
    WindowUpdate {
        /// The stream.
        id: StreamId,
        /// Additional credit in bytes, never 0.
        credit: u64,
    },
    /// Extension op 2: the sender asks for a [`Frame::Pong`] with the same nonce (it times the
    /// connection's round trip). About the connection, not a stream.
    Ping {
        /// Any value; the Pong carries it back.
        nonce: u64,
    },
    /// Extension op 3: the answer to a [`Frame::Ping`].
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// An extension op this version does not know; receivers ignore it.
    UnknownExtension {
        /// The stream.
        id: StreamId,
        /// The op number.
        op: u64,
    },
}

impl Frame {
    /// The same frame with its stream id as the other side names it: a frame we send, as the
    /// peer decodes it, and back.
    pub fn as_seen_by_peer(mut self) -> Self {
        if let Some(id) = self.stream_id_mut() {
            *id = id.as_seen_by_peer();
        }
        self
    }

    /// The stream the frame is about; `None` for a frame about the connection (Ping, Pong).
    pub fn stream_id(&self) -> Option<StreamId> {
        match self {
            Frame::NewStream { id, .. }
            | Frame::Data { id, .. }
            | Frame::Close { id }
            | Frame::Reset { id, .. }
            | Frame::CloseRead { id, .. }
            | Frame::WindowUpdate { id, .. }
            | Frame::UnknownExtension { id, .. } => Some(*id),
            Frame::Ping { .. } | Frame::Pong { .. } => None,
        }
    }

    fn stream_id_mut(&mut self) -> Option<&mut StreamId> {
        match self {
            Frame::NewStream { id, .. }
            | Frame::Data { id, .. }
            | Frame::Close { id }
            | Frame::Reset { id, .. }
            | Frame::CloseRead { id, .. }
            | Frame::WindowUpdate { id, .. }
            | Frame::UnknownExtension { id, .. } => Some(id),
            Frame::Ping { .. } | Frame::Pong { .. } => None,
        }
    }
}

/// At most this many bytes of a body appear in a frame's `Debug` form.
const DEBUG_BODY_BYTES: usize = 16;

/// A body in a frame's `Debug` form: its length and its first bytes.
struct BodyDebug<'a>(&'a Bytes);

impl fmt::Debug for BodyDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(DEBUG_BODY_BYTES)];
        write!(
            f,
            "{} bytes {:?}",
            self.0.len(),
            Bytes::copy_from_slice(shown)
        )?;
        if self.0.len() > DEBUG_BODY_BYTES {
            write!(f, "..")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::NewStream { id, name } => f
                .debug_struct("NewStream")
                .field("id", id)
                .field("name", &BodyDebug(name))
                .finish(),
            Frame::Data { id, data } => f
                .debug_struct("Data")
                .field("id", id)
                .field("data", &BodyDebug(data))
                .finish(),
            Frame::Close { id } => f.debug_struct("Close").field("id", id).finish(),
            Frame::Reset { id, code } => f
                .debug_struct("Reset")
                .field("id", id)
                .field("code", code)
                .finish(),
            Frame::CloseRead { id, code } => f
                .debug_struct("CloseRead")
                .field("id", id)
                .field("code", code)
                .finish(),
            Frame::WindowUpdate { id, credit } => f
                .debug_struct("WindowUpdate")
                .field("id", id)
                .field("credit", credit)
                .finish(),
            Frame::Ping { nonce } => f.debug_struct("Ping").field("nonce", nonce).finish(),
            Frame::Pong { nonce } => f.debug_struct("Pong").field("nonce", nonce).finish(),
            Frame::UnknownExtension { id, op } => f
                .debug_struct("UnknownExtension")
                .field("id", id)
                .field("op", op)
                .finish(),
        }
    }
}

/// Which protocol a connection speaks, decided by multistream-select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `/mplex-halfclose/1.0.0`: mplex framing plus close-read, window updates and reset codes.
    Extension,
    /// `/mplex/6.7.0`: plain mplex, byte for byte compatible with every mplex peer.
    PlainMplex,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_debug_form_shows_a_large_body_by_its_length() {
        let frame = Frame::Data {
            id: StreamId::local(3),
            data: Bytes::from(vec![b'a'; 1 << 20]),
        };
        let shown = format!("{frame:?}");
        assert!(shown.len() < 200, "{shown}");
        assert!(shown.contains("1048576 bytes"), "{shown}");
        let small = Frame::NewStream {
            id: StreamId::remote(1),
            name: Bytes::from_static(b"1"),
        };
        assert_eq!(
            format!("{small:?}"),
            r#"NewStream { id: StreamId { num: 1, opener: Remote }, name: 1 bytes b"1" }"#
        );
    }
}
