//! The codec on its own: every flag and op round-trips, each malformed input gives its named
//! error, and random frames survive random chunking of the byte stream.

use asynchronous_codec::{Decoder, Encoder};
use bytes::{Bytes, BytesMut};
use libp2p_mplex_halfclose::{
    Codec, ConnectionError, Frame, MAX_FRAME_BODY, Mode, ProtocolViolation, StreamId,
};
use proptest::prelude::*;

fn encode(mode: Mode, frame: Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    Codec::new(mode).encode(frame, &mut buf).unwrap();
    buf
}

fn decode_one(mode: Mode, bytes: &[u8]) -> Result<Option<Frame>, ConnectionError> {
    Codec::new(mode).decode(&mut BytesMut::from(bytes))
}

fn violation(result: Result<Option<Frame>, ConnectionError>) -> ProtocolViolation {
    match result {
        Err(ConnectionError::ProtocolViolation(v)) => v,
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}

#[test]
fn mplex_flags_are_byte_for_byte_the_spec() {
    let mode = Mode::PlainMplex;
    let local = StreamId::local(5);
    let remote = StreamId::remote(5);
    // header = 5 << 3 | flag = 40 + flag
    let cases: Vec<(Frame, Vec<u8>)> = vec![
        (
            Frame::NewStream {
                id: local,
                name: Bytes::from_static(b"5"),
            },
            vec![40, 1, b'5'],
        ),
        (
            Frame::Data {
                id: remote,
                data: Bytes::from_static(b"hi"),
            },
            vec![41, 2, b'h', b'i'],
        ),
        (
            Frame::Data {
                id: local,
                data: Bytes::from_static(b"hi"),
            },
            vec![42, 2, b'h', b'i'],
        ),
        (Frame::Close { id: remote }, vec![43, 0]),
        (Frame::Close { id: local }, vec![44, 0]),
        (
            Frame::Reset {
                id: remote,
                code: 0,
            },
            vec![45, 0],
        ),
        (Frame::Reset { id: local, code: 0 }, vec![46, 0]),
    ];
    for (frame, bytes) in cases {
        assert_eq!(&encode(mode, frame.clone())[..], &bytes[..], "{frame:?}");
        assert_eq!(
            decode_one(mode, &bytes).unwrap(),
            Some(frame.as_seen_by_peer())
        );
    }
}

#[test]
fn extension_ops_have_the_documented_layout() {
    let mode = Mode::Extension;
    let local = StreamId::local(2);
    let remote = StreamId::remote(2);
    let cases: Vec<(Frame, Vec<u8>)> = vec![
        // header 2<<3|7 = 23, len, op<<1|initiator, payload
        (Frame::CloseRead { id: local, code: 0 }, vec![23, 1, 1]),
        (
            Frame::CloseRead {
                id: remote,
                code: 9,
            },
            vec![23, 2, 0, 9],
        ),
        (
            Frame::WindowUpdate {
                id: local,
                credit: 300,
            },
            vec![23, 3, 3, 0xac, 0x02],
        ),
        (
            Frame::WindowUpdate {
                id: remote,
                credit: 1,
            },
            vec![23, 2, 2, 1],
        ),
        (
            Frame::Reset {
                id: local,
                code: 300,
            },
            vec![22, 2, 0xac, 0x02],
        ),
        (
            Frame::UnknownExtension { id: remote, op: 5 },
            vec![23, 1, 10],
        ),
    ];
    for (frame, bytes) in cases {
        assert_eq!(&encode(mode, frame.clone())[..], &bytes[..], "{frame:?}");
        assert_eq!(
            decode_one(mode, &bytes).unwrap(),
            Some(frame.as_seen_by_peer())
        );
    }
}

#[test]
fn plain_mode_never_puts_a_code_in_reset_and_ignores_one_it_receives() {
    assert_eq!(
        &encode(
            Mode::PlainMplex,
            Frame::Reset {
                id: StreamId::local(1),
                code: 7
            }
        )[..],
        &[14, 0]
    );
    let frame = decode_one(Mode::PlainMplex, &[14, 1, 7]).unwrap();
    assert_eq!(
        frame,
        Some(Frame::Reset {
            id: StreamId::remote(1),
            code: 0
        })
    );
}

#[test]
fn an_optional_code_may_be_absent_and_trailing_bytes_of_known_ops_are_ignored() {
    assert_eq!(
        decode_one(Mode::Extension, &[14, 0]).unwrap(),
        Some(Frame::Reset {
            id: StreamId::remote(1),
            code: 0
        })
    );
    assert_eq!(
        decode_one(Mode::Extension, &[15, 3, 1, 3, 99]).unwrap(),
        Some(Frame::CloseRead {
            id: StreamId::remote(1),
            code: 3
        })
    );
}

#[test]
fn varint_longer_than_ten_bytes_is_rejected() {
    let bytes = [0xffu8; 11];
    assert_eq!(
        violation(decode_one(Mode::PlainMplex, &bytes)),
        ProtocolViolation::VarintOverflow
    );
}

#[test]
fn non_minimal_varint_is_rejected() {
    assert_eq!(
        violation(decode_one(Mode::PlainMplex, &[0x80, 0x00, 0])),
        ProtocolViolation::VarintNotMinimal
    );
}

#[test]
fn body_over_one_mebibyte_is_rejected_before_it_arrives() {
    let mut bytes = vec![8u8];
    let len = (MAX_FRAME_BODY + 1) as u64;
    bytes.extend_from_slice(unsigned_varint::encode::u64(
        len,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
    assert_eq!(
        violation(decode_one(Mode::PlainMplex, &bytes)),
        ProtocolViolation::FrameTooLarge { len }
    );
    // 100 MiB, as a hostile peer would claim.
    let mut bytes = vec![8u8];
    bytes.extend_from_slice(unsigned_varint::encode::u64(
        100 << 20,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(Codec::new(Mode::Extension).decode(&mut buf).is_err());
    assert!(buf.capacity() < 1024, "no allocation of the claimed length");
}

#[test]
fn a_body_of_exactly_one_mebibyte_is_accepted() {
    let data = Bytes::from(vec![3u8; MAX_FRAME_BODY]);
    let buf = encode(
        Mode::PlainMplex,
        Frame::Data {
            id: StreamId::local(0),
            data: data.clone(),
        },
    );
    let frame = decode_one(Mode::PlainMplex, &buf).unwrap();
    assert_eq!(
        frame,
        Some(Frame::Data {
            id: StreamId::remote(0),
            data
        })
    );
}

#[test]
fn flag_seven_on_a_plain_mplex_connection_is_rejected() {
    assert_eq!(
        violation(decode_one(Mode::PlainMplex, &[7, 1, 1])),
        ProtocolViolation::ExtensionFrameInPlainMode
    );
}

#[test]
fn malformed_extension_bodies_are_rejected() {
    let cases: [&[u8]; 4] = [
        &[7, 0],          // no op
        &[7, 1, 2],       // window update without credit
        &[7, 2, 2, 0],    // window update of 0
        &[7, 2, 0, 0x80], // truncated code
    ];
    for bytes in cases {
        let v = violation(decode_one(Mode::Extension, bytes));
        assert!(
            matches!(v, ProtocolViolation::MalformedExtension(_)),
            "{bytes:?}: {v:?}"
        );
    }
    assert_eq!(
        violation(decode_one(Mode::Extension, &[6, 1, 0x80])),
        ProtocolViolation::MalformedResetCode
    );
}

#[test]
fn a_truncated_frame_at_end_of_stream_is_an_error() {
    let mut buf = BytesMut::from(&[10u8, 5, 1, 2][..]);
    let mut codec = Codec::new(Mode::PlainMplex);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(ConnectionError::ProtocolViolation(
            ProtocolViolation::TruncatedFrame
        ))
    ));
}

fn arb_id() -> impl Strategy<Value = StreamId> {
    (0u64..(1 << 40), any::<bool>()).prop_map(|(n, local)| {
        if local {
            StreamId::local(n)
        } else {
            StreamId::remote(n)
        }
    })
}

fn arb_frame(mode: Mode) -> impl Strategy<Value = Frame> {
    let data = proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Bytes::from);
    let plain = prop_oneof![
        (0u64..(1 << 40), data.clone()).prop_map(|(n, name)| Frame::NewStream {
            id: StreamId::local(n),
            name
        }),
        (arb_id(), data).prop_map(|(id, data)| Frame::Data { id, data }),
        arb_id().prop_map(|id| Frame::Close { id }),
        arb_id().prop_map(|id| Frame::Reset { id, code: 0 }),
    ];
    match mode {
        Mode::PlainMplex => plain.boxed(),
        Mode::Extension => prop_oneof![
            plain,
            (arb_id(), any::<u64>()).prop_map(|(id, code)| Frame::Reset { id, code }),
            (arb_id(), any::<u64>()).prop_map(|(id, code)| Frame::CloseRead { id, code }),
            (arb_id(), 1u64..).prop_map(|(id, credit)| Frame::WindowUpdate { id, credit }),
            (arb_id(), 2u64..1000).prop_map(|(id, op)| Frame::UnknownExtension { id, op }),
        ]
        .boxed(),
    }
}

fn arb_case() -> impl Strategy<Value = (Mode, Vec<Frame>, Vec<usize>)> {
    prop_oneof![Just(Mode::PlainMplex), Just(Mode::Extension)].prop_flat_map(|mode| {
        (
            Just(mode),
            proptest::collection::vec(arb_frame(mode), 1..30),
            proptest::collection::vec(1usize..700, 1..50),
        )
    })
}

proptest! {
    #[test]
    fn random_frames_survive_random_chunking((mode, frames, chunks) in arb_case()) {
        let mut wire = BytesMut::new();
        let mut encoder = Codec::new(mode);
        for frame in &frames {
            encoder.encode(frame.clone(), &mut wire).unwrap();
        }
        let mut decoder = Codec::new(mode);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut wire = wire.freeze();
        let mut sizes = chunks.iter().cycle();
        while !wire.is_empty() {
            let n = (*sizes.next().unwrap()).min(wire.len());
            buf.extend_from_slice(&wire.split_to(n));
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert!(buf.is_empty());
        let expected: Vec<Frame> = frames.into_iter().map(Frame::as_seen_by_peer).collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        for mode in [Mode::PlainMplex, Mode::Extension] {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut codec = Codec::new(mode);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }
}
