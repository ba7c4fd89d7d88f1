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
        self.a.announce(a_id);
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
                        // Both sides agree: plain mplex carries no code.
                        assert_eq!(code, expected_code);
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

mod flow;
mod limits;

#[test]
fn an_opened_stream_is_announced_with_its_first_frame_so_a_request_goes_out_in_one_piece() {
    for mode in both_modes() {
        let mut p = Pair::new(mode);
        let a = p.a.open_stream().unwrap().unwrap();
        assert_eq!(p.a.poll_transmit(), None, "opening sends nothing yet");
        write_all(&mut p.a, a, b"request");
        p.a.close_write(a).unwrap();
        let frames: Vec<Frame> = std::iter::from_fn(|| p.a.poll_transmit()).collect();
        assert_eq!(
            frames,
            vec![
                Frame::NewStream {
                    id: a,
                    name: Bytes::from("0")
                },
                Frame::Data {
                    id: a,
                    data: Bytes::from_static(b"request")
                },
                Frame::Close { id: a },
            ]
        );
    }
}

#[test]
fn a_read_that_waits_or_an_explicit_announce_makes_the_stream_known_to_the_peer() {
    for mode in both_modes() {
        let mut p = Pair::new(mode);
        let reader = p.a.open_stream().unwrap().unwrap();
        let flushed = p.a.open_stream().unwrap().unwrap();
        assert!(matches!(p.a.read(reader, 16), Ok(ReadOutcome::Blocked)));
        p.a.announce(flushed);
        p.a.announce(flushed);
        p.deliver();
        let accepted = [p.b.accept(), p.b.accept(), p.b.accept()];
        assert_eq!(
            accepted,
            [
                Some(reader.as_seen_by_peer()),
                Some(flushed.as_seen_by_peer()),
                None
            ]
        );
    }
}

#[test]
fn a_stream_reset_or_dropped_before_its_first_frame_is_never_sent() {
    for mode in both_modes() {
        let mut p = Pair::new(mode);
        let dropped = p.a.open_stream().unwrap().unwrap();
        let reset = p.a.open_stream().unwrap().unwrap();
        p.a.drop_stream(dropped);
        p.a.reset(reset, 7).unwrap();
        let code = if mode == Mode::Extension { 7 } else { 0 };
        assert!(matches!(
            p.a.write(reset, b"x"),
            Err(StreamError::Reset { code: c, by_peer: false }) if c == code
        ));
        assert_eq!(p.a.poll_transmit(), None);
        p.a.drop_stream(reset);
        assert_eq!(p.a.poll_transmit(), None);
        assert_eq!(p.a.num_streams(), 0);
    }
}

#[test]
fn frames_naming_a_stream_we_have_not_announced_are_discarded() {
    let mut p = Pair::new(Mode::Extension);
    let a = p.a.open_stream().unwrap().unwrap();
    // A peer guessing the id of a stream it cannot know of changes nothing...
    for frame in [
        Frame::Data {
            id: a,
            data: Bytes::from_static(b"guess"),
        },
        Frame::CloseRead { id: a, code: 1 },
        Frame::WindowUpdate { id: a, credit: 5 },
        Frame::Close { id: a },
        Frame::Reset { id: a, code: 2 },
    ] {
        p.a.handle_frame(frame).unwrap();
    }
    assert_eq!(p.a.buffered_bytes(), 0);
    // ...and sends nothing back, which would reach the peer ahead of the NewStream.
    assert_eq!(p.a.poll_transmit(), None);
    // The stream works as if the frames had never come.
    write_all(&mut p.a, a, b"hello");
    p.a.close_write(a).unwrap();
    p.deliver();
    let b = p.b.accept().unwrap();
    assert_eq!(read_all(&mut p.b, b).0, b"hello");
    assert!(matches!(p.a.read(a, 16), Ok(ReadOutcome::Blocked)));
}

#[test]
fn read_into_copies_across_frames_and_hands_back_each_received_buffer_whole() {
    let mut p = Pair::new(Mode::Extension);
    let (a, b) = p.open();
    // Two frames (small writes that wait together leave as one).
    write_all(&mut p.a, a, b"hello ");
    p.deliver();
    write_all(&mut p.a, a, b"world");
    p.deliver();
    let mut spent = Vec::new();
    let mut buf = [0u8; 8];
    let read = p.b.read_into(b, &mut buf, |s| spent.push(s)).unwrap();
    assert_eq!(read, ReadOutcome::Data(8));
    assert_eq!(&buf, b"hello wo");
    assert_eq!(spent, [Bytes::from_static(b"hello ")]);
    assert_eq!(p.b.buffered_bytes(), 3);
    let mut rest = [0u8; 8];
    let read = p.b.read_into(b, &mut rest, |s| spent.push(s)).unwrap();
    assert_eq!(read, ReadOutcome::Data(3));
    assert_eq!(&rest[..3], b"rld");
    // "world" arrived behind unread data, so it was gathered (copied) rather than kept as the
    // buffer it came in: nothing to hand back.
    assert_eq!(spent.len(), 1);
    assert_eq!(p.b.buffered_bytes(), 0);
    let read = p.b.read_into(b, &mut rest, |_| {}).unwrap();
    assert_eq!(read, ReadOutcome::Blocked);
    // The other way of reading sees the same state.
    write_all(&mut p.a, a, b"bytes");
    p.a.close_write(a).unwrap();
    p.deliver();
    assert_eq!(
        p.b.read(b, 2).unwrap(),
        ReadOutcome::Data(Bytes::from_static(b"by"))
    );
    let read = p.b.read_into(b, &mut rest, |s| spent.push(s)).unwrap();
    assert_eq!(read, ReadOutcome::Data(3));
    // Read in two pieces, handed back as the one buffer it arrived in.
    assert_eq!(spent[1], Bytes::from_static(b"bytes"));
    assert_eq!(p.b.read(b, 2).unwrap(), ReadOutcome::Eof);
}

/// A close polled again after the connection ended: the async layer repeats the call on every
/// poll, and the outcome is the flush's. A Close flushed before the end succeeded (a peer that
/// read it and then dropped the connection made such closes fail, about 1 time in 100 over TCP);
/// one still queued when the connection ended failed.
#[test]
fn a_repeated_close_after_the_connection_ended_reports_whether_the_close_was_flushed() {
    for mode in [Mode::Extension, Mode::PlainMplex] {
        let mut p = Pair::new(mode);
        let (flushed, _) = p.open();
        let (queued, _) = p.open();
        p.a.close_write(flushed).unwrap();
        p.deliver();
        p.a.close_write(queued).unwrap();
        p.a.close(ConnectionError::Closed);

        assert!(p.a.close_write(flushed).is_ok(), "{mode:?}");
        assert!(
            matches!(
                p.a.poll_flushed(flushed, FlushWait::CloseWrite),
                Some(Ok(()))
            ),
            "{mode:?}: its Close left before the end"
        );
        assert!(p.a.close_write(queued).is_ok(), "{mode:?}");
        assert!(
            matches!(
                p.a.poll_flushed(queued, FlushWait::CloseWrite),
                Some(Err(StreamError::Connection(ConnectionError::Closed)))
            ),
            "{mode:?}: its Close never left"
        );
    }
}

/// A close-write whose Close was flushed succeeds even when the peer resets the stream before
/// the closing task looks again (the peer read everything, then gave up); one whose Close had
/// not left fails as reset.
#[test]
fn a_close_write_flushed_before_the_peers_reset_succeeds() {
    for mode in [Mode::Extension, Mode::PlainMplex] {
        let mut p = Pair::new(mode);
        let (flushed, flushed_b) = p.open();
        let (queued, queued_b) = p.open();
        p.a.close_write(flushed).unwrap();
        p.deliver();
        p.b.reset(flushed_b, 3).unwrap();
        p.a.close_write(queued).unwrap();
        // The peer resets the second stream before a's Close for it was sent.
        p.b.reset(queued_b, 4).unwrap();
        // Only b's frames move: a's second Close stays queued, never sent.
        carry(&mut p.b, &mut p.a, mode);
        // The closing task calls again when it is woken, then asks whether its Close left.
        assert!(p.a.close_write(flushed).is_ok(), "{mode:?}");
        assert!(
            matches!(
                p.a.close_write(queued),
                Err(StreamError::Reset { by_peer: true, .. })
            ),
            "{mode:?}"
        );
        assert!(
            matches!(
                p.a.poll_flushed(flushed, FlushWait::CloseWrite),
                Some(Ok(()))
            ),
            "{mode:?}: its Close left before the reset"
        );
        let outcome = p.a.poll_flushed(queued, FlushWait::CloseWrite);
        assert!(
            matches!(outcome, Some(Err(StreamError::Reset { by_peer: true, .. }))),
            "{mode:?}: its Close never left: {outcome:?}"
        );
    }
}

/// The same for close-read, and a first close of either direction after the end still fails.
#[test]
fn a_repeated_close_read_after_the_connection_ended_succeeds_and_a_first_one_fails() {
    let mut p = Pair::new(Mode::Extension);
    let (stopped, _) = p.open();
    let (open, _) = p.open();
    p.a.close_read(stopped, 7).unwrap();
    p.deliver();
    p.a.close(ConnectionError::Closed);
    assert!(p.a.close_read(stopped, 7).is_ok());
    assert!(matches!(
        p.a.poll_flushed(stopped, FlushWait::CloseRead),
        Some(Ok(()))
    ));
    assert!(matches!(
        p.a.close_read(open, 7),
        Err(StreamError::Connection(ConnectionError::Closed))
    ));
    assert!(matches!(
        p.a.close_write(open),
        Err(StreamError::Connection(ConnectionError::Closed))
    ));
}
