//! The fuzz targets' bodies, shared by `cargo fuzz` (`fuzz/fuzz_targets/*.rs`) and by
//! `tests/fuzz_corpus.rs`, which runs them over the committed corpus in `cargo test`.
//!
//! * [`decode`]: raw bytes from a peer through the frame decoder, in both modes, checked
//!   against [`reference_frames`], an independent decoder written from PROTOCOL.md alone (its
//!   varints are read into a `u128` with no length limit, then judged): every frame, every
//!   violation and every "need more bytes" must agree. A decoder that wraps a tenth varint byte
//!   above 1 fails it at once.
//! * [`core()`]: an interleaving of frames from a peer and calls from the application, decoded
//!   from the bytes with `arbitrary`, driving the I/O-free [`Connection`] in both modes. After
//!   every step it checks the bytes the connection *allocated*, counted per thread by
//!   [`counting::CountingAllocator`] (which every binary running this target installs as its
//!   global allocator, or the target panics), against the
//!   documented bound: the data held and queued, 1/64 more for bookkeeping, and a constant per
//!   stream and per control frame. A per-frame or per-buffer overhead on received data (a
//!   buffer and a queue slot per 1-byte frame) breaks it.
//!
//! Both also check what a peer must never be able to break: a decoded frame encodes back to the
//! same frame, the data held stays within the windows and budgets of `Config`, and a failed
//! connection stays failed.

use crate::counting;
use arbitrary::{Arbitrary, Unstructured};
use asynchronous_codec::{Decoder, Encoder};
use bytes::{Bytes, BytesMut};
use libp2p_mplex_halfclose::{
    Codec, Config, ConnectionError, Frame, MAX_FRAME_BODY, Mode, ProtocolViolation, StreamId,
    core::{Connection, INITIAL_WINDOW, MAX_CREDIT},
};

/// Decodes `data` as bytes from a peer (the first byte picks the mode and how the bytes arrive),
/// and checks every outcome against [`reference_frames`]. Every frame decoded must also encode,
/// as its sender would have sent it, to bytes that decode to the same frame.
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
    let mut frames = Vec::new();
    let mut end = None;
    'arrival: for chunk in bytes.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    check_round_trip(mode, frame.clone());
                    frames.push(frame);
                }
                Ok(None) => break,
                // A violation ends the connection: nothing after it is read.
                Err(ConnectionError::ProtocolViolation(v)) => {
                    end = Some(End::Violation(kind_of(&v)));
                    break 'arrival;
                }
                Err(e) => panic!("the decoder failed with {e:?}"),
            }
        }
    }
    let end = end.unwrap_or(if buf.is_empty() {
        End::Done
    } else {
        End::NeedMore
    });
    let (expected, expected_end) = reference_frames(mode, bytes);
    assert_eq!(frames, expected, "frames differ from the reference's");
    assert_eq!(end, expected_end, "the end differs from the reference's");
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

/// How a byte string ends, by the reference or the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to a whole frame.
    Done,
    /// A frame is cut short: more bytes are needed.
    NeedMore,
    /// A protocol violation.
    Violation(ViolationKind),
}

/// A violation the decoder can find, without the text of its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    VarintOverflow,
    VarintNotMinimal,
    FrameTooLarge(u64),
    ExtensionFrameInPlainMode,
    MalformedExtension,
    MalformedResetCode,
}

fn kind_of(v: &ProtocolViolation) -> ViolationKind {
    match v {
        ProtocolViolation::VarintOverflow => ViolationKind::VarintOverflow,
        ProtocolViolation::VarintNotMinimal => ViolationKind::VarintNotMinimal,
        ProtocolViolation::FrameTooLarge { len } => ViolationKind::FrameTooLarge(*len),
        ProtocolViolation::ExtensionFrameInPlainMode => ViolationKind::ExtensionFrameInPlainMode,
        ProtocolViolation::MalformedExtension(_) => ViolationKind::MalformedExtension,
        ProtocolViolation::MalformedResetCode => ViolationKind::MalformedResetCode,
        other => panic!("the decoder reported {other:?}, which only the core can find"),
    }
}

/// A varint as PROTOCOL.md section 2 defines it.
enum RefVarint {
    Value(u64, usize),
    Overflow,
    NotMinimal,
    NeedMore,
}

/// Reads the varint at the front of `bytes` into a `u128`, with no limit on its length, then
/// judges it: longer than 10 bytes or above 2^64 - 1 is an overflow (as soon as that is
/// certain), a last byte of 0 after others is not minimal.
fn reference_varint(bytes: &[u8]) -> RefVarint {
    let mut value: u128 = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if i == 10 {
            return RefVarint::Overflow;
        }
        value |= u128::from(byte & 0x7f) << (7 * i);
        if value > u128::from(u64::MAX) {
            return RefVarint::Overflow;
        }
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return RefVarint::NotMinimal;
            }
            return RefVarint::Value(value as u64, i + 1);
        }
    }
    if bytes.len() >= 10 {
        RefVarint::Overflow
    } else {
        RefVarint::NeedMore
    }
}

/// A varint inside a frame body: a body that ends first is malformed.
fn body_varint(body: &[u8], malformed: ViolationKind) -> Result<(u64, usize), ViolationKind> {
    match reference_varint(body) {
        RefVarint::Value(v, n) => Ok((v, n)),
        RefVarint::Overflow => Err(ViolationKind::VarintOverflow),
        RefVarint::NotMinimal => Err(ViolationKind::VarintNotMinimal),
        RefVarint::NeedMore => Err(malformed),
    }
}

/// The frames in `bytes` and how they end, by PROTOCOL.md (sections 2 to 4 and 7) alone.
pub fn reference_frames(mode: Mode, mut bytes: &[u8]) -> (Vec<Frame>, End) {
    let mut frames = Vec::new();
    loop {
        if bytes.is_empty() {
            return (frames, End::Done);
        }
        let (header, header_len) = match reference_varint(bytes) {
            RefVarint::Value(v, n) => (v, n),
            RefVarint::Overflow => return (frames, End::Violation(ViolationKind::VarintOverflow)),
            RefVarint::NotMinimal => {
                return (frames, End::Violation(ViolationKind::VarintNotMinimal));
            }
            RefVarint::NeedMore => return (frames, End::NeedMore),
        };
        let (len, len_len) = match reference_varint(&bytes[header_len..]) {
            RefVarint::Value(v, n) => (v, n),
            RefVarint::Overflow => return (frames, End::Violation(ViolationKind::VarintOverflow)),
            RefVarint::NotMinimal => {
                return (frames, End::Violation(ViolationKind::VarintNotMinimal));
            }
            RefVarint::NeedMore => return (frames, End::NeedMore),
        };
        if len > 1_048_576 {
            return (frames, End::Violation(ViolationKind::FrameTooLarge(len)));
        }
        let start = header_len + len_len;
        let Some(body) = bytes.get(start..start + len as usize) else {
            return (frames, End::NeedMore);
        };
        bytes = &bytes[start + len as usize..];
        let num = header >> 3;
        // Flags 1-6: the even ones are the initiator's (the peer opened the stream, so it is
        // remote to us), the odd ones the receiver's (a stream we opened).
        let id = |initiator: bool| {
            if initiator {
                StreamId::remote(num)
            } else {
                StreamId::local(num)
            }
        };
        let frame = match header & 7 {
            0 => Frame::NewStream {
                id: StreamId::remote(num),
                name: Bytes::copy_from_slice(body),
            },
            flag @ (1 | 2) => Frame::Data {
                id: id(flag == 2),
                data: Bytes::copy_from_slice(body),
            },
            flag @ (3 | 4) => Frame::Close { id: id(flag == 4) },
            flag @ (5 | 6) => {
                let code = match mode {
                    Mode::PlainMplex => 0,
                    Mode::Extension if body.is_empty() => 0,
                    Mode::Extension => match reference_varint(body) {
                        RefVarint::Value(code, _) => code,
                        _ => return (frames, End::Violation(ViolationKind::MalformedResetCode)),
                    },
                };
                Frame::Reset {
                    id: id(flag == 6),
                    code,
                }
            }
            _ => {
                if mode == Mode::PlainMplex {
                    return (
                        frames,
                        End::Violation(ViolationKind::ExtensionFrameInPlainMode),
                    );
                }
                let (op_and_side, used) = match body_varint(body, ViolationKind::MalformedExtension)
                {
                    Ok(v) => v,
                    Err(kind) => return (frames, End::Violation(kind)),
                };
                let rest = &body[used..];
                let id = id(op_and_side & 1 == 1);
                match op_and_side >> 1 {
                    0 if rest.is_empty() => Frame::CloseRead { id, code: 0 },
                    0 => match body_varint(rest, ViolationKind::MalformedExtension) {
                        Ok((code, _)) => Frame::CloseRead { id, code },
                        Err(kind) => return (frames, End::Violation(kind)),
                    },
                    1 => match body_varint(rest, ViolationKind::MalformedExtension) {
                        Ok((0, _)) => {
                            return (frames, End::Violation(ViolationKind::MalformedExtension));
                        }
                        Ok((credit, _)) => Frame::WindowUpdate { id, credit },
                        Err(kind) => return (frames, End::Violation(kind)),
                    },
                    // About the connection: the stream fields are ignored.
                    2 | 3 => match body_varint(rest, ViolationKind::MalformedExtension) {
                        Ok((nonce, _)) if op_and_side >> 1 == 2 => Frame::Ping { nonce },
                        Ok((nonce, _)) => Frame::Pong { nonce },
                        Err(kind) => return (frames, End::Violation(kind)),
                    },
                    op => Frame::UnknownExtension { id, op },
                }
            }
        };
        frames.push(frame);
    }
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
    Ping { nonce: u8 },
    Pong { nonce: u8 },
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
                op: u64::from(op) + 4,
            },
            PeerFrame::Ping { nonce } => Frame::Ping {
                nonce: u64::from(nonce),
            },
            PeerFrame::Pong { nonce } => Frame::Pong {
                nonce: u64::from(nonce),
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

/// Bytes of state per stream beyond its data: its entry in the map (with the map's spare
/// room), its receiving and sending gathering buffers (8 KiB each at most), its queues' storage.
const PER_STREAM: usize = 17 * 1024;
/// Bytes per step that may queue control frames (NewStream, WindowUpdate, CloseRead, Reset):
/// two frames, with the control queue's spare room and a stream name.
const PER_CONTROL_STEP: usize = 512;
/// The connection's own small queues (events, inbound streams, blocked writers).
const PER_CONNECTION: usize = 8 * 1024;

/// Drives one [`Connection`] through the script decoded from `data`. After every step it checks
/// that the data held stays within the documented bound of the windows and budgets, that the
/// bytes *allocated* stay within the data held and queued plus the documented overhead (1/64
/// for bookkeeping, a constant per stream and per control frame: nothing per received frame),
/// and that a failed connection stays failed.
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
    let mut held: Vec<StreamId> = Vec::with_capacity(256);
    let mut buf = vec![0u8; 1 << 16];
    counting::start_this_thread();
    let mut conn = Connection::new(mode, config);
    let pick =
        |held: &[StreamId], i: u8| (!held.is_empty()).then(|| held[usize::from(i) % held.len()]);
    let mut failed = false;
    let mut peak_streams = 0;
    let mut control_steps = 0;
    for step in &script.steps {
        let may_queue_control = !matches!(
            step,
            Step::Peer(
                PeerFrame::Data { .. }
                    | PeerFrame::Close { .. }
                    | PeerFrame::Reset { .. }
                    | PeerFrame::WindowUpdate { .. }
                    | PeerFrame::Unknown { .. }
                    | PeerFrame::Pong { .. }
            ) | Step::Transmit { .. }
                | Step::CloseConnection
        );
        control_steps += usize::from(may_queue_control);
        match step {
            Step::Peer(frame) => {
                let frame = frame.frame();
                // The decoder refuses extension frames in plain mplex (the `decode` target
                // checks it); here they would only end the connection.
                let extension = !matches!(
                    frame,
                    Frame::NewStream { .. }
                        | Frame::Data { .. }
                        | Frame::Close { .. }
                        | Frame::Reset { .. }
                );
                if (mode == Mode::Extension || !extension)
                    && conn.wants_frames()
                    && conn.handle_frame(frame).is_err()
                {
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
        let data_bound = match mode {
            // Every stream may always fill its initial window; growth stays within the budget.
            Mode::Extension => budget.max(conn.num_streams() as u64 * INITIAL_WINDOW),
            // Reading stops (or the stream is reset) once the budget is passed: at most one
            // frame beyond it.
            Mode::PlainMplex => budget + MAX_FRAME_BODY as u64,
        };
        assert!(
            conn.held_bytes() <= data_bound,
            "{} bytes held, bound {data_bound}",
            conn.held_bytes()
        );
        assert!(conn.buffered_bytes() <= conn.held_bytes());
        peak_streams = peak_streams.max(conn.num_streams());
        let data = conn.held_bytes() as usize + conn.queued_bytes();
        let allocated = counting::held_this_thread().max(0) as usize;
        let allowed = data
            + data / 64
            + peak_streams * PER_STREAM
            + control_steps * PER_CONTROL_STEP
            + PER_CONNECTION;
        assert!(
            allocated <= allowed,
            "{allocated} bytes allocated for {data} bytes held and queued \
             ({peak_streams} streams, {control_steps} steps that queue frames): allowed {allowed}"
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
    assert_eq!(conn.held_bytes(), 0, "dropped streams hold no data");
    counting::stop_this_thread();
}
