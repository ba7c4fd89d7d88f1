//! Protocol violations, stream limits, buffer limits and the end of a connection.

use super::*;

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
fn outbound_open_waits_at_the_limit_and_a_dropped_stream_frees_its_slot_once_its_last_frame_left() {
    let mut config = Config::default();
    config.set_max_num_streams(1);
    let mut p = Pair::with_config(Mode::Extension, config);
    let (a, _b) = p.open();
    assert_eq!(p.a.open_stream().unwrap(), None);
    // Dropped with both directions open: its Reset waits to be sent, and the stream with it.
    p.a.drop_stream(a);
    assert!(!drain_events(&mut p.a).contains(&Event::StreamSlotFree));
    assert_eq!(p.a.open_stream().unwrap(), None);
    assert_eq!(p.a.num_streams(), 1);
    assert!(matches!(
        p.a.poll_transmit(),
        Some(Frame::Reset { id, code: 0 }) if id == a
    ));
    assert!(drain_events(&mut p.a).contains(&Event::StreamSlotFree));
    assert_eq!(p.a.num_streams(), 0);
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
fn the_last_stream_number_is_used_and_then_opening_fails_instead_of_wrapping() {
    let mut p = Pair::new(Mode::Extension);
    p.a.next_local_num = crate::frame::MAX_STREAM_NUM;
    let last = p.a.open_stream().unwrap().unwrap();
    assert_eq!(last.num(), crate::frame::MAX_STREAM_NUM);
    // Its frames name it exactly on the wire: the peer sees the same number.
    write_all(&mut p.a, last, b"last");
    p.deliver();
    let peer = p.b.accept().unwrap();
    assert_eq!(peer, last.as_seen_by_peer());
    assert_eq!(read_all(&mut p.b, peer).0, b"last");
    assert!(matches!(
        p.a.open_stream(),
        Err(ConnectionError::StreamNumbersExhausted)
    ));
    // The connection's other streams go on.
    write_all(&mut p.a, last, b" more");
    p.deliver();
    assert_eq!(read_all(&mut p.b, peer).0, b" more");
}

#[test]
fn limits_at_the_edge_of_their_types_do_not_overflow() {
    let mut config = Config::default();
    config
        .set_max_num_streams(usize::MAX)
        .set_max_buffer_size(usize::MAX)
        .set_max_connection_buffer(u64::MAX)
        .set_send_buffer_size(usize::MAX)
        .set_max_stream_window(u64::MAX);
    for mode in both_modes() {
        let mut p = Pair::with_config(mode, config.clone());
        assert!(p.a.wants_frames());
        let (a, b) = p.open();
        write_all(&mut p.a, a, &[1u8; 100_000]);
        p.deliver();
        assert_eq!(read_all(&mut p.b, b).0.len(), 100_000);
    }
}

#[test]
fn one_byte_frames_are_cut_as_they_leave_not_kept_one_buffer_each() {
    let mut config = Config::default();
    config.set_split_send_size(1);
    let mut p = Pair::with_config(Mode::PlainMplex, config);
    let (a, b) = p.open();
    for byte in 0..100u8 {
        assert_eq!(p.a.write(a, &[byte]).unwrap(), WriteOutcome::Written(1));
    }
    // 100 writes wait as one gathered buffer...
    assert_eq!(p.a.streams.get(&a).unwrap().send_queue.buffers(), 1);
    // ...and leave as 100 frames of one byte.
    let mut frames = 0;
    while let Some(frame) = p.a.poll_transmit() {
        if let Frame::Data { data, .. } = &frame {
            assert_eq!(data.len(), 1);
            frames += 1;
        }
        p.b.handle_frame(frame.as_seen_by_peer()).unwrap();
    }
    assert_eq!(frames, 100);
    assert_eq!(read_all(&mut p.b, b).0, (0..100u8).collect::<Vec<_>>());
}

#[test]
fn a_plain_mplex_core_refuses_extension_frames_fed_to_it_directly() {
    for frame in [
        Frame::Ping { nonce: 1 },
        Frame::Pong { nonce: 1 },
        Frame::WindowUpdate {
            id: StreamId::local(0),
            credit: 1,
        },
    ] {
        let mut conn = Connection::new(Mode::PlainMplex, Config::default());
        assert!(matches!(
            conn.handle_frame(frame),
            Err(ConnectionError::ProtocolViolation(
                ProtocolViolation::ExtensionFrameInPlainMode
            ))
        ));
        // Nothing to send: plain mplex has no answer for them.
        assert_eq!(conn.poll_transmit(), None);
    }
}

#[test]
fn a_ping_is_answered_with_its_nonce_and_pongs_time_the_round_trip() {
    let mut p = Pair::new(Mode::Extension);
    let (a, b) = p.open();
    let start = std::time::Instant::now();
    p.a.set_time(start);
    p.b.set_time(start);
    // Half a window read: b grants credit, and a Ping goes with its first grant.
    write_all(&mut p.a, a, &vec![1u8; INITIAL_WINDOW as usize / 2]);
    p.deliver();
    let _ = read_all(&mut p.b, b);
    let sent: Vec<Frame> = std::iter::from_fn(|| p.b.poll_transmit()).collect();
    assert!(matches!(
        sent.as_slice(),
        [Frame::WindowUpdate { .. }, Frame::Ping { nonce: 0 }]
    ));
    // The Pong comes back 30 ms later.
    for frame in sent {
        p.a.handle_frame(frame.as_seen_by_peer()).unwrap();
    }
    assert_eq!(p.a.poll_transmit(), Some(Frame::Pong { nonce: 0 }));
    p.b.set_time(start + std::time::Duration::from_millis(30));
    p.b.handle_frame(Frame::Pong { nonce: 0 }).unwrap();
    assert_eq!(
        p.b.round_trip.get(),
        Some(std::time::Duration::from_millis(30))
    );
}
