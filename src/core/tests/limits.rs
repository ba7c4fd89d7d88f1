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
