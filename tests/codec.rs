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
        // About the connection: stream 0, side 0; header 0<<3|7 = 7, op 2<<1 = 4, op 3<<1 = 6.
        (Frame::Ping { nonce: 300 }, vec![7, 3, 4, 0xac, 0x02]),
        (Frame::Pong { nonce: 0 }, vec![7, 2, 6, 0]),
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

/// What a varint is, judged by the spec alone (PROTOCOL.md section 2: unsigned LEB128, at most 10
/// bytes, the value within 64 bits, minimal). An independent reference: it reads into a `u128`
/// with no length limit, and only then applies the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReferenceVarint {
    Value(u64),
    Overflow,
    NotMinimal,
    /// No verdict yet: some continuation could still be valid.
    NeedMore,
}

fn reference_varint(bytes: &[u8]) -> ReferenceVarint {
    let mut value: u128 = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if i == 10 {
            return ReferenceVarint::Overflow; // an eleventh byte
        }
        value |= u128::from(byte & 0x7f) << (7 * i);
        if value > u128::from(u64::MAX) {
            return ReferenceVarint::Overflow; // no continuation can bring it back
        }
        if byte & 0x80 == 0 {
            return if byte == 0 && i > 0 {
                ReferenceVarint::NotMinimal
            } else {
                ReferenceVarint::Value(value as u64)
            };
        }
    }
    if bytes.len() >= 10 {
        ReferenceVarint::Overflow // ten bytes, all continuing
    } else {
        ReferenceVarint::NeedMore
    }
}

/// The (stream number, flag) of a frame decoded in plain-mplex mode.
fn header_of(frame: &Frame) -> u64 {
    let (id, flag) = match frame {
        Frame::NewStream { id, .. } => (*id, 0),
        Frame::Data { id, .. } => (*id, 1),
        Frame::Close { id } => (*id, 3),
        Frame::Reset { id, .. } => (*id, 5),
        other => panic!("not a plain-mplex frame: {other:?}"),
    };
    // The initiator's variant of a flag is one above the receiver's; stream 0 is NewStream.
    let flag = match (flag, id.opener()) {
        (0, _) => 0,
        (f, libp2p_mplex_halfclose::Opener::Remote) => f + 1,
        (f, libp2p_mplex_halfclose::Opener::Local) => f,
    };
    id.num() << 3 | flag
}

/// Decodes `varint` as a frame header (followed by an empty body) and as a frame length
/// (behind the header of a NewStream), and checks both against the reference.
fn check_varint_against_reference(varint: &[u8]) {
    let expected = reference_varint(varint);
    // A complete header is followed by an empty body's length; a cut-off one by nothing.
    let length: &[u8] = if expected == ReferenceVarint::NeedMore {
        &[]
    } else {
        &[0]
    };
    let as_header = decode_one(Mode::PlainMplex, &[varint, length].concat());
    match expected {
        ReferenceVarint::Value(v) if v & 7 == 7 => assert_eq!(
            violation(as_header),
            ProtocolViolation::ExtensionFrameInPlainMode,
            "{varint:02x?}"
        ),
        ReferenceVarint::Value(v) => {
            let frame = as_header.unwrap().expect("a whole frame");
            assert_eq!(header_of(&frame), v, "header {varint:02x?}");
        }
        ReferenceVarint::Overflow => assert_eq!(
            violation(as_header),
            ProtocolViolation::VarintOverflow,
            "header {varint:02x?}"
        ),
        ReferenceVarint::NotMinimal => assert_eq!(
            violation(as_header),
            ProtocolViolation::VarintNotMinimal,
            "header {varint:02x?}"
        ),
        ReferenceVarint::NeedMore => {
            assert_eq!(as_header.unwrap(), None, "header {varint:02x?}")
        }
    }
    let as_length = decode_one(Mode::PlainMplex, &[&[8], varint].concat());
    match expected {
        ReferenceVarint::Value(len) if len > MAX_FRAME_BODY as u64 => assert_eq!(
            violation(as_length),
            ProtocolViolation::FrameTooLarge { len },
            "length {varint:02x?}"
        ),
        ReferenceVarint::Value(len) => {
            if len > 0 {
                assert_eq!(
                    as_length.unwrap(),
                    None,
                    "length {varint:02x?}: body missing"
                );
            }
            let body = vec![b'n'; len as usize];
            let whole = decode_one(Mode::PlainMplex, &[&[8], varint, &body].concat());
            assert_eq!(
                whole.unwrap(),
                Some(Frame::NewStream {
                    id: StreamId::remote(1),
                    name: Bytes::from(body)
                }),
                "length {varint:02x?}"
            );
        }
        ReferenceVarint::Overflow => assert_eq!(
            violation(as_length),
            ProtocolViolation::VarintOverflow,
            "length {varint:02x?}"
        ),
        ReferenceVarint::NotMinimal => assert_eq!(
            violation(as_length),
            ProtocolViolation::VarintNotMinimal,
            "length {varint:02x?}"
        ),
        ReferenceVarint::NeedMore => {
            assert_eq!(as_length.unwrap(), None, "length {varint:02x?}")
        }
    }
}

#[test]
fn the_reported_overflows_are_refused_not_wrapped() {
    // 2^64 + 2^63 - 1 as a header: unsigned-varint 0.8 read it as 2^63 - 1.
    let header = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert_eq!(
        violation(decode_one(Mode::Extension, &[&header[..], &[0]].concat())),
        ProtocolViolation::VarintOverflow
    );
    // A length of 2^64: read as 0, the bytes behind it became the next frames. Here they would
    // open stream 0 had the length been taken for 0.
    let length = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02];
    let smuggled = [&[0x0a][..], &length, &[0, 0]].concat();
    for mode in [Mode::PlainMplex, Mode::Extension] {
        assert_eq!(
            violation(decode_one(mode, &smuggled)),
            ProtocolViolation::VarintOverflow
        );
    }
    // The largest values that fit are accepted: 2^64 - 1 (ten bytes, the last one 1).
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(reference_varint(&max), ReferenceVarint::Value(u64::MAX));
    check_varint_against_reference(&max);
}

#[test]
fn every_ten_and_eleven_byte_edge_case_decodes_as_the_reference_says() {
    // Every varint of 1 to 11 bytes whose continuation bytes are 0x80 (no payload bits) or
    // 0xff (all payload bits), ending in each of the 256 byte values (those with the
    // continuation bit are cut-off varints): 524,032 inputs, every length and tenth byte.
    let mut checked = 0;
    for len in 0..=10usize {
        for pattern in 0..(1u32 << len) {
            let mut varint: Vec<u8> = (0..len)
                .map(|i| if pattern >> i & 1 == 1 { 0xff } else { 0x80 })
                .collect();
            varint.push(0);
            for last in 0..=255u8 {
                *varint.last_mut().unwrap() = last;
                check_varint_against_reference(&varint);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 256 * ((1 << 11) - 1));
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
            any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
            (arb_id(), 4u64..1000).prop_map(|(id, op)| Frame::UnknownExtension { id, op }),
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
    fn random_varints_decode_as_the_reference_says(
        varint in proptest::collection::vec(
            prop_oneof![any::<u8>(), Just(0x80u8), Just(0xffu8), 0u8..4],
            1..13,
        )
    ) {
        // Up to the first byte without the continuation bit: one varint, nothing behind it.
        let end = varint.iter().position(|b| b & 0x80 == 0).map_or(varint.len(), |i| i + 1);
        check_varint_against_reference(&varint[..end]);
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
