//! The fuzz targets' bodies, shared by `cargo fuzz` (`fuzz/fuzz_targets/*.rs`) and by
//! `tests/fuzz_corpus.rs`, which runs them over the committed corpus in `cargo test`.
//!
//! * [`decode`]: raw bytes from a peer through the frame decoder, in both modes.
//! * [`core`]: an interleaving of frames from a peer and calls from the application, decoded
//!   from the bytes with `arbitrary`, driving the I/O-free [`Connection`] in both modes.
//!
//! Both check, beyond "no panic", what a peer must never be able to break: a decoded frame
//! encodes back to the same frame, and the bytes a connection buffers stay within the bound its
//! `Config` documents.

#![allow(dead_code)]

use arbitrary::{Arbitrary, Unstructured};
use asynchronous_codec::{Decoder, Encoder};
use bytes::{Bytes, BytesMut};
use libp2p_mplex_halfclose::{
    Codec, Config, Frame, MAX_FRAME_BODY, Mode, StreamId,
    core::{Connection, INITIAL_WINDOW, MAX_CREDIT},
};

/// Decodes `data` as bytes from a peer (the first byte picks the mode and how the bytes arrive).
/// Every frame decoded must encode, as its sender would have sent it, to bytes that decode to the
/// same frame.
pub fn decode(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let mode = if first & 1 == 0 {
        Mode::Extension
    } else {
        Mode::PlainMplex
    };
    // The bytes arrive in pieces of this size, as from a socket.
    let piece = usize::from(first >> 1).max(1);
    let mut codec = Codec::new(mode);
    let mut buf = BytesMut::new();
    for chunk in bytes.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => check_round_trip(mode, frame),
                Ok(None) => break,
                // A violation ends the connection: nothing after it is read.
                Err(_) => return,
            }
        }
    }
}

fn check_round_trip(mode: Mode, received: Frame) {
    assert!(
        !matches!(&received, Frame::Data { data, .. } if data.len() > MAX_FRAME_BODY),
        "a body beyond the frame limit was accepted"
    );
    let as_sent = received.clone().as_seen_by_peer();
    let mut codec = Codec::new(mode);
    let mut bytes = BytesMut::new();
    codec.encode(as_sent, &mut bytes).expect("encoding");
    let again = codec
        .decode(&mut bytes)
        .expect("a frame we encode decodes")
        .expect("whole");
    assert_eq!(again, received, "decode, encode, decode changed the frame");
    assert!(bytes.is_empty(), "the encoding holds one frame");
}

/// A frame from the peer, on a small space of stream numbers so that frames meet live streams.
#[derive(Arbitrary, Debug)]
enum PeerFrame {
    NewStream { num: u8 },
    Data { num: u8, ours: bool, len: u16 },
    Close { num: u8, ours: bool },
    Reset { num: u8, ours: bool, code: u8 },
    CloseRead { num: u8, ours: bool, code: u8 },
    WindowUpdate { num: u8, ours: bool, credit: u32 },
    Unknown { num: u8, ours: bool, op: u8 },
}

impl PeerFrame {
    fn frame(&self) -> Frame {
        // Ids as we see them: a stream the peer opened is remote, one we opened is local.
        let id = |num: u8, ours: bool| {
            if ours {
                StreamId::local(u64::from(num))
            } else {
                StreamId::remote(u64::from(num))
            }
        };
        match *self {
            PeerFrame::NewStream { num } => Frame::NewStream {
                id: StreamId::remote(u64::from(num)),
                name: Bytes::new(),
            },
            PeerFrame::Data { num, ours, len } => Frame::Data {
                id: id(num, ours),
                data: Bytes::from(vec![0x5a; usize::from(len)]),
            },
            PeerFrame::Close { num, ours } => Frame::Close { id: id(num, ours) },
            PeerFrame::Reset { num, ours, code } => Frame::Reset {
                id: id(num, ours),
                code: u64::from(code),
            },
            PeerFrame::CloseRead { num, ours, code } => Frame::CloseRead {
                id: id(num, ours),
                code: u64::from(code),
            },
            PeerFrame::WindowUpdate { num, ours, credit } => Frame::WindowUpdate {
                id: id(num, ours),
                credit: u64::from(credit).clamp(1, MAX_CREDIT),
            },
            PeerFrame::Unknown { num, ours, op } => Frame::UnknownExtension {
                id: id(num, ours),
                op: u64::from(op) + 2,
            },
        }
    }
}

/// One step: a frame from the peer, or a call of the application on a stream it holds (picked
/// by index among the held ones).
#[derive(Arbitrary, Debug)]
enum Step {
    Peer(PeerFrame),
    Open,
    Accept,
    Write {
        stream: u8,
        len: u16,
    },
    Read {
        stream: u8,
        max: u16,
    },
    CloseWrite {
        stream: u8,
    },
    CloseRead {
        stream: u8,
        code: u8,
    },
    Reset {
        stream: u8,
        code: u8,
    },
    Drop {
        stream: u8,
    },
    /// The async layer takes up to this many frames to send, and reports them flushed.
    Transmit {
        frames: u8,
    },
    CloseConnection,
}

#[derive(Arbitrary, Debug)]
struct Script {
    plain_mplex: bool,
    max_streams: u8,
    steps: Vec<Step>,
}

/// Drives one [`Connection`] through the script decoded from `data`. Checks after every step
/// that the buffered bytes stay within the documented bound and that a failed connection stays
/// failed.
pub fn core(data: &[u8]) {
    let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mode = if script.plain_mplex {
        Mode::PlainMplex
    } else {
        Mode::Extension
    };
    let mut config = Config::new();
    config
        .set_max_num_streams(usize::from(script.max_streams).max(1))
        .set_max_connection_buffer(4 * INITIAL_WINDOW);
    let budget = 4 * INITIAL_WINDOW;
    let mut conn = Connection::new(mode, config);
    let mut held: Vec<StreamId> = Vec::new();
    let pick =
        |held: &[StreamId], i: u8| (!held.is_empty()).then(|| held[usize::from(i) % held.len()]);
    let mut failed = false;
    let mut buf = vec![0u8; 1 << 16];
    for step in &script.steps {
        match step {
            Step::Peer(frame) => {
                if conn.wants_frames() && conn.handle_frame(frame.frame()).is_err() {
                    failed = true;
                }
            }
            Step::Open => {
                if let Ok(Some(id)) = conn.open_stream() {
                    held.push(id);
                }
            }
            Step::Accept => {
                if let Some(id) = conn.accept() {
                    held.push(id);
                }
            }
            Step::Write { stream, len } => {
                if let Some(id) = pick(&held, *stream) {
                    let len = usize::from(*len).min(buf.len());
                    let _ = conn.write(id, &buf[..len]);
                }
            }
            Step::Read { stream, max } => {
                if let Some(id) = pick(&held, *stream) {
                    let max = usize::from(*max).max(1).min(buf.len());
                    let _ = conn.read_into(id, &mut buf[..max], drop);
                }
            }
            Step::CloseWrite { stream } => {
                if let Some(id) = pick(&held, *stream) {
                    let _ = conn.close_write(id);
                }
            }
            Step::CloseRead { stream, code } => {
                if let Some(id) = pick(&held, *stream) {
                    let _ = conn.close_read(id, u64::from(*code));
                }
            }
            Step::Reset { stream, code } => {
                if let Some(id) = pick(&held, *stream) {
                    let _ = conn.reset(id, u64::from(*code));
                }
            }
            Step::Drop { stream } => {
                if let Some(id) = pick(&held, *stream) {
                    held.retain(|h| *h != id);
                    conn.drop_stream(id);
                }
            }
            Step::Transmit { frames } => {
                for _ in 0..*frames {
                    if conn.poll_transmit().is_none() {
                        break;
                    }
                }
                conn.on_flushed(conn.transmitted());
            }
            Step::CloseConnection => {
                conn.close(libp2p_mplex_halfclose::ConnectionError::Closed);
                failed = true;
            }
        }
        while conn.poll_event().is_some() {}
        if failed {
            assert!(conn.closed().is_some(), "a failed connection stays failed");
            assert!(!conn.wants_frames(), "a failed connection reads no more");
        }
        let bound = match mode {
            // Every stream may always fill its initial window; growth stays within the budget.
            Mode::Extension => budget.max(conn.num_streams() as u64 * INITIAL_WINDOW),
            // Reading stops (or the stream is reset) once the budget is passed: at most one
            // frame beyond it.
            Mode::PlainMplex => budget + MAX_FRAME_BODY as u64,
        };
        assert!(
            conn.buffered_bytes() <= bound,
            "{} bytes buffered, bound {bound}",
            conn.buffered_bytes()
        );
    }
    // Once every stream is dropped, nothing is left buffered.
    for id in held.drain(..) {
        conn.drop_stream(id);
    }
    while let Some(id) = conn.accept() {
        conn.drop_stream(id);
    }
    assert_eq!(conn.buffered_bytes(), 0, "dropped streams hold no data");
}
