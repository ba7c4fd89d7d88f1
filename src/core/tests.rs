//! The core driven without any runtime: two connections back to back, frames carried through the
//! real codec so that stream ids are translated exactly as on the wire.

use asynchronous_codec::{Decoder, Encoder};
use bytes::BytesMut;

use super::*;
use crate::{Codec, error::StreamError};
use crate::{config::MaxBufferBehaviour, error::ProtocolViolation};

/// Two cores wired back to back. `a` is the dialer by convention (it opens streams).
struct Pair {
    a: Connection,
    b: Connection,
    mode: Mode,
}

impl Pair {
    fn new(mode: Mode) -> Self {
        Self::with_config(mode, Config::default())
    }

    fn with_config(mode: Mode, config: Config) -> Self {
        Self {
            a: Connection::new(mode, config.clone()),
            b: Connection::new(mode, config),
            mode,
        }
    }

    /// Moves every queued frame across, both ways, until both outboxes are empty.
    fn deliver(&mut self) {
        loop {
            let ab = carry(&mut self.a, &mut self.b, self.mode);
            let ba = carry(&mut self.b, &mut self.a, self.mode);
            if !ab && !ba {
                break;
            }
        }
        self.a.on_flushed(self.a.transmitted());
        self.b.on_flushed(self.b.transmitted());
    }

    /// Opens a stream on `a` and accepts it on `b`; returns (a's id, b's id).
    fn open(&mut self) -> (StreamId, StreamId) {
        let a_id = self.a.open_stream().unwrap().unwrap();
        self.deliver();
        let b_id = self.b.accept().expect("inbound stream");
        assert_eq!(b_id, a_id.as_seen_by_peer());
        (a_id, b_id)
    }
}

/// Encodes `from`'s frames and decodes them into `to`; true if any frame moved.
fn carry(from: &mut Connection, to: &mut Connection, mode: Mode) -> bool {
    let mut buf = BytesMut::new();
    let mut moved = false;
    while let Some(frame) = from.poll_transmit() {
        Codec::new(mode).encode(frame, &mut buf).unwrap();
        moved = true;
    }
    let mut decoder = Codec::new(mode);
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        to.handle_frame(frame).unwrap();
    }
    moved
}

fn read_all(conn: &mut Connection, id: StreamId) -> (Vec<u8>, Result<ReadOutcome, StreamError>) {
    let mut out = Vec::new();
    loop {
        match conn.read(id, usize::MAX) {
            Ok(ReadOutcome::Data(d)) => out.extend_from_slice(&d),
            other => return (out, other),
        }
    }
}

fn write_all(conn: &mut Connection, id: StreamId, mut data: &[u8]) {
    while !data.is_empty() {
        match conn.write(id, data).unwrap() {
            WriteOutcome::Written(n) => data = &data[n..],
            WriteOutcome::Blocked => panic!("write blocked with {} bytes left", data.len()),
        }
    }
}

fn drain_events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn both_modes() -> [Mode; 2] {
    [Mode::Extension, Mode::PlainMplex]
}

#[test]
fn close_write_delivers_all_data_then_eof_and_the_other_direction_still_flows() {
    for mode in both_modes() {
        let mut p = Pair::new(mode);
        let (a, b) = p.open();
        write_all(&mut p.a, a, b"request");
        p.a.close_write(a).unwrap();
        p.deliver();
        let (data, end) = read_all(&mut p.b, b);
        assert_eq!(data, b"request");
        assert!(matches!(end, Ok(ReadOutcome::Eof)));
        // The reply still flows after the request side closed.
        write_all(&mut p.b, b, b"response");
        p.b.close_write(b).unwrap();
        p.deliver();
        let (data, end) = read_all(&mut p.a, a);
        assert_eq!(data, b"response");
        assert!(matches!(end, Ok(ReadOutcome::Eof)));
    }
}

#[test]
fn write_after_close_write_is_broken_pipe_and_close_write_is_idempotent() {
    for mode in both_modes() {
        let mut p = Pair::new(mode);
        let (a, _) = p.open();
        p.a.close_write(a).unwrap();
        p.a.close_write(a).unwrap();
        let err = p.a.write(a, b"x").unwrap_err();
        assert!(matches!(err, StreamError::WriteClosed));
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        // Only one Close went out.
        let frames: Vec<_> = std::iter::from_fn(|| p.a.poll_transmit()).collect();
        let closes = frames
            .iter()
            .filter(|f| matches!(f, Frame::Close { .. }))
            .count();
        assert_eq!(closes, 1);
    }
}

#[test]
fn close_read_in_extension_mode_stops_the_writer_with_broken_pipe_and_its_code() {
    let mut p = Pair::new(Mode::Extension);
    let (a, b) = p.open();
    write_all(&mut p.a, a, b"unread");
    p.deliver();
    p.b.close_read(b, 7).unwrap();
    // Unread data is dropped, reads give EOF.
    assert!(matches!(p.b.read(b, 100), Ok(ReadOutcome::Eof)));
    assert_eq!(p.b.buffered_bytes(), 0);
    p.deliver();
    let err = p.a.write(a, b"more").unwrap_err();
    assert!(matches!(err, StreamError::Stopped { code: 7 }), "{err:?}");
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    // a answered with Close: the direction is finished. The other direction still flows.
    write_all(&mut p.b, b, b"still flowing");
    p.b.close_write(b).unwrap();
    p.deliver();
    let (data, end) = read_all(&mut p.a, a);
    assert_eq!(data, b"still flowing");
    assert!(matches!(end, Ok(ReadOutcome::Eof)));
}

#[test]
fn close_read_answer_is_a_close_frame_from_the_writer() {
    let mut p = Pair::new(Mode::Extension);
    let (_a, b) = p.open();
    p.b.close_read(b, 0).unwrap();
    assert!(matches!(
        p.b.poll_transmit(),
        Some(Frame::CloseRead { code: 0, .. })
    ));
    p.a.handle_frame(Frame::CloseRead {
        id: b.as_seen_by_peer(),
        code: 0,
    })
    .unwrap();
    assert_eq!(
        p.a.poll_transmit(),
        Some(Frame::Close {
            id: b.as_seen_by_peer()
        })
    );
}

#[test]
fn close_read_in_plain_mode_is_local_only() {
    let mut p = Pair::new(Mode::PlainMplex);
    let (a, b) = p.open();
    p.b.close_read(b, 0).unwrap();
    assert!(!p.b.has_transmit(), "plain mplex has no close-read frame");
    write_all(&mut p.a, a, b"discarded");
    p.deliver();
    assert!(matches!(p.b.read(b, 100), Ok(ReadOutcome::Eof)));
    assert_eq!(p.b.buffered_bytes(), 0);
}

#[test]
fn reset_fails_both_sides_with_connection_reset_and_carries_the_code_in_extension_mode() {
    for mode in both_modes() {
        let mut p = Pair::new(mode);
        let (a, b) = p.open();
        write_all(&mut p.b, b, b"dropped by reset");
        p.deliver();
        p.a.reset(a, 42).unwrap();
        p.deliver();
        let expected_code = if mode == Mode::Extension { 42 } else { 0 };
        for (conn, id, by_peer) in [(&mut p.a, a, false), (&mut p.b, b, true)] {
            let read = conn.read(id, 10).unwrap_err();
            let write = conn.write(id, b"x").unwrap_err();
            for err in [read, write] {
                assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
                match err {
                    StreamError::Reset { code, by_peer: b } => {
                        assert_eq!(code, if by_peer { expected_code } else { 42 });
                        assert_eq!(b, by_peer);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(p.a.buffered_bytes(), 0);
    }
}

/// The drop rules, each row: (close write first, remote closed its write, close read first in
/// extension mode) -> the frame the drop sends.
#[test]
fn drop_rules() {
    enum Expect {
        Nothing,
        Close,
        Reset,
        CloseRead,
    }
    let rows = [
        // (mode, we closed writing, peer closed writing, expected)
        (Mode::Extension, true, true, Expect::Nothing),
        (Mode::Extension, false, true, Expect::Close),
        (Mode::Extension, false, false, Expect::Reset),
        (Mode::Extension, true, false, Expect::CloseRead),
        (Mode::PlainMplex, true, true, Expect::Nothing),
        (Mode::PlainMplex, false, true, Expect::Close),
        (Mode::PlainMplex, false, false, Expect::Reset),
        (Mode::PlainMplex, true, false, Expect::Reset),
    ];
    for (mode, we_closed, peer_closed, expect) in rows {
        let mut p = Pair::new(mode);
        let (a, b) = p.open();
        if we_closed {
            p.a.close_write(a).unwrap();
        }
        if peer_closed {
            p.b.close_write(b).unwrap();
        }
        p.deliver();
        p.a.drop_stream(a);
        let frame = p.a.poll_transmit();
        match expect {
            Expect::Nothing => assert_eq!(frame, None),
            Expect::Close => assert_eq!(frame, Some(Frame::Close { id: a })),
            Expect::Reset => assert_eq!(frame, Some(Frame::Reset { id: a, code: 0 })),
            Expect::CloseRead => assert_eq!(frame, Some(Frame::CloseRead { id: a, code: 0 })),
        }
        assert_eq!(p.a.poll_transmit(), None);
        assert_eq!(p.a.num_streams(), 0);
    }
}

#[test]
fn drop_after_local_close_read_in_plain_mode_resets_so_the_peer_stops_sending() {
    let mut p = Pair::new(Mode::PlainMplex);
    let (a, _b) = p.open();
    p.a.close_write(a).unwrap();
    p.a.close_read(a, 0).unwrap();
    p.deliver();
    p.a.drop_stream(a);
    assert_eq!(p.a.poll_transmit(), Some(Frame::Reset { id: a, code: 0 }));
}

#[test]
fn drop_after_close_read_in_extension_mode_sends_nothing_more() {
    let mut p = Pair::new(Mode::Extension);
    let (a, _b) = p.open();
    p.a.close_write(a).unwrap();
    p.a.close_read(a, 0).unwrap();
    p.deliver();
    p.a.drop_stream(a);
    assert_eq!(p.a.poll_transmit(), None);
}

#[test]
fn data_written_before_a_drop_with_close_arrives_in_full() {
    for mode in both_modes() {
        let mut p = Pair::new(mode);
        let (a, b) = p.open();
        p.b.close_write(b).unwrap();
        p.deliver();
        write_all(&mut p.a, a, b"last words");
        p.a.drop_stream(a);
        p.deliver();
        let (data, end) = read_all(&mut p.b, b);
        assert_eq!(data, b"last words");
        assert!(matches!(end, Ok(ReadOutcome::Eof)));
    }
}

#[test]
fn writer_blocks_at_zero_credit_and_resumes_when_the_reader_reads() {
    let mut p = Pair::new(Mode::Extension);
    let (a, b) = p.open();
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0u64;
    while let WriteOutcome::Written(n) = p.a.write(a, &chunk).unwrap() {
        sent += n as u64;
        p.deliver();
    }
    assert_eq!(
        sent, INITIAL_WINDOW,
        "the writer stops exactly at the initial window"
    );
    drain_events(&mut p.a);
    let (data, _) = read_all(&mut p.b, b);
    assert_eq!(data.len() as u64, INITIAL_WINDOW);
    p.deliver();
    assert!(drain_events(&mut p.a).contains(&Event::Writable(a)));
    assert!(matches!(
        p.a.write(a, &chunk).unwrap(),
        WriteOutcome::Written(_)
    ));
}

#[test]
fn data_beyond_credit_is_a_protocol_violation() {
    let mut p = Pair::new(Mode::Extension);
    let (_a, b) = p.open();
    let big = bytes::Bytes::from(vec![0u8; INITIAL_WINDOW as usize]);
    p.b.handle_frame(Frame::Data { id: b, data: big }).unwrap();
    let err = p.b.handle_frame(Frame::Data {
        id: b,
        data: bytes::Bytes::from_static(b"x"),
    });
    assert!(matches!(
        err,
        Err(ConnectionError::ProtocolViolation(
            ProtocolViolation::CreditExceeded {
                credit: 0,
                len: 1,
                ..
            }
        ))
    ));
    // The connection is closed: every stream fails with the cause.
    assert!(p.b.closed().is_some());
}

#[test]
fn new_stream_for_a_live_id_is_a_protocol_violation() {
    let mut p = Pair::new(Mode::PlainMplex);
    let (_a, b) = p.open();
    let err = p.b.handle_frame(Frame::NewStream {
        id: b,
        name: Default::default(),
    });
    assert!(matches!(
        err,
        Err(ConnectionError::ProtocolViolation(ProtocolViolation::NewStreamForLiveId(id))) if id == b
    ));
}

#[test]
fn frames_for_unknown_streams_are_discarded() {
    for mode in both_modes() {
        let mut c = Connection::new(mode, Config::default());
        for id in [StreamId::remote(9), StreamId::local(9)] {
            c.handle_frame(Frame::Data {
                id,
                data: bytes::Bytes::from_static(b"x"),
            })
            .unwrap();
            c.handle_frame(Frame::Close { id }).unwrap();
            c.handle_frame(Frame::Reset { id, code: 0 }).unwrap();
        }
        assert_eq!(c.num_streams(), 0);
        assert_eq!(c.buffered_bytes(), 0);
        assert!(!c.has_transmit());
    }
}

#[test]
fn window_update_overflow_is_a_protocol_violation() {
    let mut p = Pair::new(Mode::Extension);
    let (a, _b) = p.open();
    let err = p.a.handle_frame(Frame::WindowUpdate {
        id: a,
        credit: MAX_CREDIT,
    });
    assert!(matches!(
        err,
        Err(ConnectionError::ProtocolViolation(
            ProtocolViolation::WindowOverflow(_)
        ))
    ));
}

#[test]
fn inbound_streams_beyond_the_limit_are_reset_and_a_persistent_peer_is_cut_off() {
    let mut config = Config::default();
    config.set_max_num_streams(2);
    let mut c = Connection::new(Mode::PlainMplex, config);
    c.handle_frame(Frame::NewStream {
        id: StreamId::remote(0),
        name: Default::default(),
    })
    .unwrap();
    c.handle_frame(Frame::NewStream {
        id: StreamId::remote(1),
        name: Default::default(),
    })
    .unwrap();
    c.handle_frame(Frame::NewStream {
        id: StreamId::remote(2),
        name: Default::default(),
    })
    .unwrap();
    assert_eq!(
        c.poll_transmit(),
        Some(Frame::Reset {
            id: StreamId::remote(2),
            code: 0
        })
    );
    assert_eq!(c.num_streams(), 2);
    let mut result = Ok(());
    for num in 3..1000 {
        result = c.handle_frame(Frame::NewStream {
            id: StreamId::remote(num),
            name: Default::default(),
        });
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(
        result,
        Err(ConnectionError::ProtocolViolation(
            ProtocolViolation::TooManyRefusedStreams(_)
        ))
    ));
}

#[test]
fn outbound_open_waits_at_the_limit_and_a_dropped_stream_frees_a_slot() {
    let mut config = Config::default();
    config.set_max_num_streams(1);
    let mut p = Pair::with_config(Mode::Extension, config);
    let (a, _b) = p.open();
    assert_eq!(p.a.open_stream().unwrap(), None);
    p.a.drop_stream(a);
    assert!(drain_events(&mut p.a).contains(&Event::StreamSlotFree));
    assert!(p.a.open_stream().unwrap().is_some());
}

#[test]
fn plain_mode_reset_stream_behaviour_resets_only_the_overflowing_stream() {
    let mut config = Config::default();
    config
        .set_max_buffer_size(2)
        .set_max_buffer_behaviour(MaxBufferBehaviour::ResetStream);
    let mut p = Pair::with_config(Mode::PlainMplex, config);
    let (a1, b1) = p.open();
    let (a2, b2) = p.open();
    for _ in 0..3 {
        write_all(&mut p.a, a1, b"frame");
        p.deliver();
    }
    write_all(&mut p.a, a2, b"fine");
    p.deliver();
    assert!(matches!(
        p.b.read(b1, 100),
        Err(StreamError::Reset { by_peer: false, .. })
    ));
    assert!(matches!(
        p.a.write(a1, b"x"),
        Err(StreamError::Reset { by_peer: true, .. })
    ));
    assert_eq!(
        p.b.read(b2, 100).unwrap(),
        ReadOutcome::Data(bytes::Bytes::from_static(b"fine"))
    );
}

#[test]
fn plain_mode_block_behaviour_pauses_reading_until_the_buffer_drains() {
    let mut config = Config::default();
    config.set_max_buffer_size(2);
    let mut p = Pair::with_config(Mode::PlainMplex, config);
    let (a, b) = p.open();
    for _ in 0..3 {
        write_all(&mut p.a, a, b"frame");
        p.deliver();
    }
    assert!(!p.b.wants_frames());
    let _ = p.b.read(b, 5).unwrap();
    assert!(p.b.wants_frames());
}

#[test]
fn reads_after_the_connection_closed_return_buffered_data_first() {
    let mut p = Pair::new(Mode::Extension);
    let (a, b) = p.open();
    write_all(&mut p.a, a, b"before the end");
    p.deliver();
    p.b.close(ConnectionError::Closed);
    let (data, end) = read_all(&mut p.b, b);
    assert_eq!(data, b"before the end");
    assert!(matches!(
        end,
        Err(StreamError::Connection(ConnectionError::Closed))
    ));
    assert!(p.b.write(b, b"x").is_err());
}

#[test]
fn on_a_long_link_the_window_grows_while_the_sender_waits_for_credit() {
    let mut p = Pair::new(Mode::Extension);
    let (a, b) = p.open();
    let chunk = vec![1u8; 64 * 1024];
    // 10 ms each way; the application on each side acts at once.
    let one_way = std::time::Duration::from_millis(10);
    let mut now = std::time::Instant::now();
    for _ in 0..100 {
        // The sender uses all its credit (the window is the bottleneck)...
        now += one_way;
        p.b.set_time(now);
        loop {
            while let WriteOutcome::Written(_) = p.a.write(a, &chunk).unwrap() {}
            if !carry(&mut p.a, &mut p.b, p.mode) {
                break; // blocked with nothing in flight: out of credit
            }
            p.a.on_flushed(p.a.transmitted());
        }
        // ...the reader takes everything at once, and its grants travel back.
        let _ = read_all(&mut p.b, b);
        now += one_way;
        p.a.set_time(now);
        carry(&mut p.b, &mut p.a, p.mode);
        p.b.on_flushed(p.b.transmitted());
    }
    let window = p.b.streams.get(&b).unwrap().recv_window.size();
    assert_eq!(window, Config::default().max_stream_window);
}

#[test]
fn the_window_stays_put_when_the_sender_never_runs_short() {
    let mut p = Pair::new(Mode::Extension);
    let (a, b) = p.open();
    let chunk = vec![1u8; 16 * 1024];
    for _ in 0..1000 {
        // Small writes, each read at once: the sender always holds plenty of credit.
        write_all(&mut p.a, a, &chunk);
        p.deliver();
        let _ = read_all(&mut p.b, b);
        p.deliver();
    }
    assert_eq!(
        p.b.streams.get(&b).unwrap().recv_window.size(),
        INITIAL_WINDOW
    );
}

#[test]
fn data_written_before_close_write_survives_the_plain_mode_drop_reset() {
    // Plain mplex: write, close writing, drop without reading. The drop sends Reset after the
    // Close; the receiver still reads every byte, then EOF.
    let mut p = Pair::new(Mode::PlainMplex);
    let (a, b) = p.open();
    write_all(&mut p.a, a, b"every byte");
    p.a.close_write(a).unwrap();
    p.a.drop_stream(a);
    p.deliver();
    let (data, end) = read_all(&mut p.b, b);
    assert_eq!(data, b"every byte");
    assert!(matches!(end, Ok(ReadOutcome::Eof)));
    // Our write side is reset, though: nobody reads there any more.
    assert!(matches!(
        p.b.write(b, b"x"),
        Err(StreamError::Reset { by_peer: true, .. })
    ));
}

#[test]
fn a_local_reset_discards_even_complete_data() {
    let mut p = Pair::new(Mode::Extension);
    let (a, b) = p.open();
    write_all(&mut p.a, a, b"unread");
    p.a.close_write(a).unwrap();
    p.deliver();
    p.b.reset(b, 0).unwrap();
    assert!(matches!(
        p.b.read(b, 100),
        Err(StreamError::Reset { by_peer: false, .. })
    ));
    assert_eq!(p.b.buffered_bytes(), 0);
}

#[test]
fn streams_take_turns_and_a_flat_out_writer_cannot_shut_out_another() {
    let mut p = Pair::new(Mode::Extension);
    let (a1, _) = p.open();
    let (a2, _) = p.open();
    let chunk = vec![0u8; 1024];
    // a1 writes until it may not queue more...
    let mut queued = 0;
    while let WriteOutcome::Written(n) = p.a.write(a1, &chunk).unwrap() {
        queued += n;
    }
    assert!(queued > 0);
    // ...a2 still gets its frame in, and goes out second, not behind all of a1's data.
    assert_eq!(p.a.write(a2, b"me too").unwrap(), WriteOutcome::Written(6));
    let order: Vec<StreamId> = std::iter::from_fn(|| p.a.poll_transmit())
        .filter(|f| matches!(f, Frame::Data { .. }))
        .map(|f| f.stream_id())
        .take(3)
        .collect();
    assert_eq!(order, vec![a1, a2, a1]);
}

#[test]
fn close_waits_behind_the_stream_data_but_not_behind_other_streams() {
    let mut p = Pair::new(Mode::PlainMplex);
    let (a1, _) = p.open();
    let (a2, _) = p.open();
    write_all(&mut p.a, a1, &[1u8; 1000]);
    write_all(&mut p.a, a2, &[2u8; 1000]);
    p.a.close_write(a1).unwrap();
    let frames: Vec<Frame> = std::iter::from_fn(|| p.a.poll_transmit()).collect();
    let close_at = frames
        .iter()
        .position(|f| *f == Frame::Close { id: a1 })
        .unwrap();
    let data_at = frames
        .iter()
        .position(|f| matches!(f, Frame::Data { id, .. } if *id == a1))
        .unwrap();
    assert!(data_at < close_at);
}
