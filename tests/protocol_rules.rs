//! The edges of PROTOCOL.md that an implementer has to get right, one test per rule, each named
//! by the rule and its section. They drive the I/O-free core with frames decoded from the bytes
//! a peer would send, and check the bytes it answers with, so that they test the wire and not
//! only our types.

use asynchronous_codec::{Decoder, Encoder};
use bytes::BytesMut;
use libp2p_mplex_halfclose::{
    Codec, Config, ConnectionError, Mode, ProtocolViolation, StreamId,
    core::{Connection, INITIAL_WINDOW, WriteOutcome},
};

fn varint(v: u64) -> Vec<u8> {
    unsigned_varint::encode::u64(v, &mut unsigned_varint::encode::u64_buffer()).to_vec()
}

/// A frame as the peer writes it: `uvarint(num << 3 | flag) uvarint(len) body`.
fn wire(num: u64, flag: u64, body: &[u8]) -> Vec<u8> {
    [
        varint(num << 3 | flag),
        varint(body.len() as u64),
        body.to_vec(),
    ]
    .concat()
}

/// Decodes the peer's bytes and hands every frame to `conn`; the first error, if any.
fn receive(conn: &mut Connection, bytes: &[u8]) -> Result<(), ConnectionError> {
    let mut buf = BytesMut::from(bytes);
    let mut codec = Codec::new(conn.mode());
    while let Some(frame) = codec.decode(&mut buf)? {
        conn.handle_frame(frame)?;
    }
    assert!(buf.is_empty(), "whole frames only");
    Ok(())
}

/// The bytes `conn` sends now.
fn sent(conn: &mut Connection) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut codec = Codec::new(conn.mode());
    while let Some(frame) = conn.poll_transmit() {
        codec.encode(frame, &mut out).unwrap();
    }
    conn.on_flushed(conn.transmitted());
    out.to_vec()
}

fn violation(result: Result<(), ConnectionError>) -> ProtocolViolation {
    match result {
        Err(ConnectionError::ProtocolViolation(v)) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

fn modes() -> [Mode; 2] {
    [Mode::Extension, Mode::PlainMplex]
}

#[test]
fn section_3_a_newstream_beyond_the_limit_is_refused_with_an_empty_reset_and_then_unknown() {
    for mode in modes() {
        let mut conn = Connection::new(mode, Config::default());
        // The default limit is 128 streams, the peer's and ours together.
        let opens: Vec<u8> = (0..128).flat_map(|n| wire(n, 0, b"")).collect();
        receive(&mut conn, &opens).unwrap();
        assert_eq!(conn.num_streams(), 128);
        receive(&mut conn, &wire(128, 0, b"128")).unwrap();
        // Reset, receiver flag (5), empty body: code 0 in both modes.
        assert_eq!(sent(&mut conn), wire(128, 5, b""), "{mode:?}");
        // The refused stream does not exist: its data is discarded, no answer, no violation.
        receive(&mut conn, &wire(128, 2, b"ignored")).unwrap();
        receive(&mut conn, &wire(128, 4, b"")).unwrap();
        assert_eq!(sent(&mut conn), b"");
        assert_eq!(conn.num_streams(), 128);
        assert_eq!(conn.buffered_bytes(), 0);
        // Our own opening waits too: the limit counts both sides.
        assert_eq!(conn.open_stream().unwrap(), None);
    }
}

#[test]
fn section_3_refusals_in_a_row_beyond_max_256_limit_are_a_violation() {
    for (limit, allowed) in [(4usize, 256u64), (300, 300)] {
        let mut config = Config::default();
        config.set_max_num_streams(limit);
        let mut conn = Connection::new(Mode::Extension, config);
        let mut next = 0;
        let mut open = |conn: &mut Connection| {
            next += 1;
            receive(conn, &wire(next, 0, b""))
        };
        for _ in 0..limit {
            open(&mut conn).unwrap();
        }
        for _ in 0..allowed - 1 {
            open(&mut conn).unwrap();
        }
        // An accepted stream in between starts the count again.
        let first = conn.accept().unwrap();
        conn.drop_stream(first);
        let _ = sent(&mut conn); // the dropped stream's Reset leaves, and its slot with it
        open(&mut conn).unwrap();
        for _ in 0..allowed {
            open(&mut conn).unwrap();
        }
        let v = violation(open(&mut conn));
        assert_eq!(v, ProtocolViolation::TooManyRefusedStreams(allowed + 1));
    }
}

#[test]
fn section_3_a_newstream_for_a_known_number_is_a_violation_and_a_forgotten_one_opens_anew() {
    for mode in modes() {
        // Stream 7 of the peer, done on the wire in both directions, still held by our
        // application.
        let done = || {
            let mut conn = Connection::new(mode, Config::default());
            receive(&mut conn, &wire(7, 0, b"7")).unwrap();
            let stream = conn.accept().unwrap();
            receive(&mut conn, &wire(7, 4, b"")).unwrap();
            conn.close_write(stream).unwrap();
            let _ = sent(&mut conn);
            (conn, stream)
        };
        let (mut conn, _held) = done();
        assert!(matches!(
            violation(receive(&mut conn, &wire(7, 0, b"7"))),
            ProtocolViolation::NewStreamForLiveId(id) if id == StreamId::remote(7)
        ));
        // Once the application lets it go, the receiver forgets it: the number opens anew.
        let (mut conn, stream) = done();
        conn.drop_stream(stream);
        assert_eq!(conn.num_streams(), 0);
        receive(&mut conn, &wire(7, 0, b"7")).unwrap();
        assert_eq!(conn.accept(), Some(StreamId::remote(7)));
    }
}

#[test]
fn section_3_bytes_after_a_reset_code_are_ignored() {
    let mut conn = Connection::new(Mode::Extension, Config::default());
    receive(&mut conn, &wire(1, 0, b"")).unwrap();
    let stream = conn.accept().unwrap();
    let body = [varint(300), b"later versions".to_vec()].concat();
    receive(&mut conn, &wire(1, 6, &body)).unwrap();
    let err = conn.read(stream, 10).unwrap_err();
    assert_eq!(err.code(), Some(300));
    // A body that does not start with a whole varint is malformed, known stream or not.
    for bad in [&[0x80][..], &[0x80, 0x00], &[0xff; 11]] {
        let mut conn = Connection::new(Mode::Extension, Config::default());
        assert_eq!(
            violation(receive(&mut conn, &wire(9, 6, bad))),
            ProtocolViolation::MalformedResetCode
        );
    }
}

#[test]
fn section_4_the_first_varint_after_close_read_is_its_code_and_the_rest_is_ignored() {
    let mut conn = Connection::new(Mode::Extension, Config::default());
    let ours = conn.open_stream().unwrap().unwrap();
    conn.write(ours, b"x").unwrap();
    let _ = sent(&mut conn);
    // Op 0 from the receiver of our stream: op_and_side = 0. Code 77, then bytes of a later
    // version.
    let body = [vec![0], varint(77), vec![1, 2, 3]].concat();
    receive(&mut conn, &wire(0, 7, &body)).unwrap();
    let err = conn.write(ours, b"y").unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (std::io::ErrorKind::BrokenPipe, Some(77))
    );
    // Our answer is a Close, with the initiator's flag (we opened the stream).
    assert_eq!(sent(&mut conn), wire(0, 4, b""));
    // Without a code the code is 0.
    let mut conn = Connection::new(Mode::Extension, Config::default());
    let ours = conn.open_stream().unwrap().unwrap();
    conn.write(ours, b"x").unwrap();
    let _ = sent(&mut conn);
    receive(&mut conn, &wire(0, 7, &[0])).unwrap();
    assert_eq!(conn.write(ours, b"y").unwrap_err().code(), Some(0));
}

#[test]
fn section_4_a_malformed_extension_body_is_a_violation_for_any_stream() {
    // Stream 99 was never opened: the body is still parsed, and refused.
    let cases: [(&[u8], ProtocolViolation); 5] = [
        (&[], ProtocolViolation::MalformedExtension("missing op")),
        (
            &[2],
            ProtocolViolation::MalformedExtension("window update without credit"),
        ),
        (
            &[2, 0],
            ProtocolViolation::MalformedExtension("window update of 0 bytes"),
        ),
        (
            &[0, 0x80],
            ProtocolViolation::MalformedExtension("close-read code"),
        ),
        (&[0x80, 0x00], ProtocolViolation::VarintNotMinimal),
    ];
    for (body, expected) in cases {
        let mut conn = Connection::new(Mode::Extension, Config::default());
        assert_eq!(
            violation(receive(&mut conn, &wire(99, 7, body))),
            expected,
            "{body:?}"
        );
    }
    // An unknown op with a well-formed head is ignored, for any stream.
    let mut conn = Connection::new(Mode::Extension, Config::default());
    receive(&mut conn, &wire(99, 7, &[9 << 1, 1, 2, 3])).unwrap();
    assert!(conn.closed().is_none());
}

#[test]
fn section_5_data_beyond_credit_is_a_violation_in_every_receive_state() {
    // How the receive direction stopped being open: our close-read, the peer's Close, or a
    // reset by us.
    type Stop = fn(&mut Connection, StreamId);
    let states: [(&str, Stop); 3] = [
        ("close-read", |c, s| c.close_read(s, 0).unwrap()),
        ("peer's close", |c, _| receive(c, &wire(0, 4, b"")).unwrap()),
        ("reset", |c, s| c.reset(s, 0).unwrap()),
    ];
    for (state, stop) in states {
        let mut conn = Connection::new(Mode::Extension, Config::default());
        receive(&mut conn, &wire(0, 0, b"")).unwrap();
        let stream = conn.accept().unwrap();
        receive(&mut conn, &wire(0, 2, &[1u8; 1000])).unwrap();
        stop(&mut conn, stream);
        let _ = sent(&mut conn);
        // Within the credit: discarded, no violation (it may have been in flight). What the
        // peer sent before its Close stays readable.
        let held = conn.held_bytes();
        let rest = INITIAL_WINDOW as usize - 1000;
        receive(&mut conn, &wire(0, 2, &vec![2u8; rest]))
            .unwrap_or_else(|e| panic!("{state}: {e}"));
        assert_eq!(conn.held_bytes(), held, "{state}: discarded");
        // One byte more than was ever granted.
        assert!(
            matches!(
                violation(receive(&mut conn, &wire(0, 2, b"!"))),
                ProtocolViolation::CreditExceeded {
                    credit: 0,
                    len: 1,
                    ..
                }
            ),
            "{state}"
        );
    }
}

/// Writes until the stream's credit is used up, sending whenever the send buffer is full.
/// Returns the bytes written and the bytes sent.
fn write_until_out_of_credit(conn: &mut Connection, id: StreamId) -> (u64, Vec<u8>) {
    let (mut written, mut wire_bytes) = (0, Vec::new());
    let chunk = vec![5u8; 64 * 1024];
    loop {
        match conn.write(id, &chunk).unwrap() {
            WriteOutcome::Written(n) => written += n as u64,
            WriteOutcome::Blocked if conn.has_transmit() => wire_bytes.extend(sent(conn)),
            WriteOutcome::Blocked => break,
        }
    }
    wire_bytes.extend(sent(conn));
    (written, wire_bytes)
}

#[test]
fn section_6_the_opener_may_send_a_whole_window_behind_its_newstream_and_names_are_free() {
    let mut opener = Connection::new(Mode::Extension, Config::default());
    let mut receiver = Connection::new(Mode::Extension, Config::default());
    let id = opener.open_stream().unwrap().unwrap();
    // Nothing comes back from the receiver, and the whole window goes out.
    let (written, wire_bytes) = write_until_out_of_credit(&mut opener, id);
    assert_eq!(written, INITIAL_WINDOW);
    receive(&mut receiver, &wire_bytes).unwrap();
    let stream = receiver.accept().unwrap();
    assert_eq!(receiver.buffered_bytes(), INITIAL_WINDOW);
    // A long name costs no credit: a peer's NewStream with a 1,000-byte name, then a whole
    // window of data.
    let mut receiver = Connection::new(Mode::Extension, Config::default());
    let bytes = [
        wire(3, 0, &[b'n'; 1000]),
        wire(3, 2, &vec![1u8; INITIAL_WINDOW as usize]),
    ]
    .concat();
    receive(&mut receiver, &bytes).unwrap();
    assert_eq!(receiver.buffered_bytes(), INITIAL_WINDOW);
    // And the receiver may answer with a whole window at once, before reading anything.
    let answer = receiver.accept().unwrap();
    assert_eq!(
        write_until_out_of_credit(&mut receiver, answer).0,
        INITIAL_WINDOW
    );
    assert_eq!(stream, id.as_seen_by_peer());
}

#[test]
fn section_3_plain_mplex_reset_codes_are_zero_on_both_sides() {
    let mut conn = Connection::new(Mode::PlainMplex, Config::default());
    receive(&mut conn, &wire(2, 0, b"")).unwrap();
    let stream = conn.accept().unwrap();
    conn.reset(stream, 42).unwrap();
    assert_eq!(sent(&mut conn), wire(2, 5, b""));
    assert_eq!(conn.read(stream, 1).unwrap_err().code(), Some(0));
    // A body on a received plain Reset is ignored.
    let mut conn = Connection::new(Mode::PlainMplex, Config::default());
    receive(&mut conn, &wire(2, 0, b"")).unwrap();
    let stream = conn.accept().unwrap();
    receive(&mut conn, &wire(2, 6, &varint(9))).unwrap();
    assert_eq!(conn.read(stream, 1).unwrap_err().code(), Some(0));
}
