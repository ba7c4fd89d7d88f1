//! Credit, windows and the order in which frames leave.

use super::*;

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
        .filter_map(|f| f.stream_id())
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

#[test]
fn credit_comes_back_for_memory_released_not_for_bytes_read() {
    // One frame fills the whole window; reading most of it releases nothing (the frame's
    // buffer stays allocated until all of it is read), so no credit may go back yet: the
    // sender would fill a second window beside the first.
    let mut config = Config::default();
    config.set_split_send_size(INITIAL_WINDOW as usize);
    let mut p = Pair::with_config(Mode::Extension, config);
    let (a, b) = p.open();
    write_all(&mut p.a, a, &vec![3u8; INITIAL_WINDOW as usize]);
    p.deliver();
    let mut buf = vec![0u8; INITIAL_WINDOW as usize - 1];
    assert_eq!(
        p.b.read_into(b, &mut buf, drop).unwrap(),
        ReadOutcome::Data(buf.len())
    );
    p.deliver();
    assert_eq!(
        p.a.write(a, b"x").unwrap(),
        WriteOutcome::Blocked,
        "no credit while the frame is held"
    );
    // The last byte releases the frame: the whole window comes back.
    assert_eq!(
        p.b.read_into(b, &mut buf, drop).unwrap(),
        ReadOutcome::Data(1)
    );
    p.deliver();
    assert_eq!(
        p.a.write(a, &buf).unwrap(),
        WriteOutcome::Written(buf.len())
    );
}

/// Grows the window of stream `a` -> `b` as a long link does (10 ms each way, the reader taking
/// everything at once), for `rounds` round trips.
fn grow_over_a_long_link(
    p: &mut Pair,
    a: StreamId,
    b: StreamId,
    now: &mut std::time::Instant,
    rounds: usize,
) {
    let chunk = vec![1u8; 64 * 1024];
    let one_way = std::time::Duration::from_millis(10);
    for _ in 0..rounds {
        *now += one_way;
        p.b.set_time(*now);
        loop {
            while let WriteOutcome::Written(_) = p.a.write(a, &chunk).unwrap() {}
            if !carry(&mut p.a, &mut p.b, p.mode) {
                break;
            }
            p.a.on_flushed(p.a.transmitted());
        }
        let _ = read_all(&mut p.b, b);
        *now += one_way;
        p.a.set_time(*now);
        carry(&mut p.b, &mut p.a, p.mode);
        p.b.on_flushed(p.b.transmitted());
    }
}

#[test]
fn windows_that_grew_first_leave_room_for_every_stream_that_may_still_open() {
    // A budget of 16 MiB, 32 streams at most (8 MiB of initial windows), windows up to 8 MiB.
    const MIB: u64 = 1 << 20;
    let mut config = Config::default();
    config
        .set_max_connection_buffer(16 * MIB)
        .set_max_num_streams(32)
        .set_max_stream_window(8 * MIB);
    let mut p = Pair::with_config(Mode::Extension, config);
    let mut now = std::time::Instant::now();
    // Two streams grow as far as they may...
    let mut grown = Vec::new();
    for _ in 0..2 {
        let (a, b) = p.open();
        grow_over_a_long_link(&mut p, a, b, &mut now, 100);
        grown.push(b);
    }
    let windows: u64 = grown.iter().map(|b| p.b.receive_window(*b).unwrap()).sum();
    assert!(windows > 2 * INITIAL_WINDOW, "they grew: {windows}");
    // ...then the peer opens every stream it may and fills every window, and nobody reads.
    let chunk = vec![2u8; 64 * 1024];
    let mut all = Vec::new();
    for _ in 0..30 {
        all.push(p.open());
    }
    for &(a, _) in &all {
        while let WriteOutcome::Written(_) = p.a.write(a, &chunk).unwrap() {
            p.deliver();
        }
    }
    assert_eq!(p.b.num_streams(), 32);
    let bound = (16 * MIB).max(32 * INITIAL_WINDOW);
    let total: u64 = grown
        .iter()
        .chain(all.iter().map(|(_, b)| b))
        .map(|b| p.b.receive_window(*b).unwrap())
        .sum();
    assert!(total <= bound, "windows sum to {total}, bound {bound}");
    assert!(p.b.held_bytes() <= bound, "{} bytes held", p.b.held_bytes());
}

#[test]
fn a_stream_whose_receiving_is_over_and_drained_gives_its_window_back_while_it_still_sends() {
    // 4 streams at most, a budget of 5 initial windows: 4 are reserved, 1 is left to grow by.
    let mut config = Config::default();
    config
        .set_max_connection_buffer(5 * INITIAL_WINDOW)
        .set_max_num_streams(4)
        .set_max_stream_window(64 * INITIAL_WINDOW);
    let mut p = Pair::with_config(Mode::Extension, config);
    let mut now = std::time::Instant::now();
    let (a1, b1) = p.open();
    grow_over_a_long_link(&mut p, a1, b1, &mut now, 100);
    assert_eq!(p.b.receive_window(b1), Some(2 * INITIAL_WINDOW));
    // The peer finishes sending on the first stream, which stays open for b's writes.
    p.a.close_write(a1).unwrap();
    p.deliver();
    let (_, end) = read_all(&mut p.b, b1);
    assert!(matches!(end, Ok(ReadOutcome::Eof)));
    assert_eq!(
        p.b.write(b1, b"still sending").unwrap(),
        WriteOutcome::Written(13)
    );
    // A second stream may grow into the first one's two windows (it doubles, then grows by the
    // one window left); before, the budget stayed spent and it could not grow at all.
    let (a2, b2) = p.open();
    grow_over_a_long_link(&mut p, a2, b2, &mut now, 100);
    assert_eq!(p.b.receive_window(b2), Some(3 * INITIAL_WINDOW));
}
