//! The reader and writer against scripted sockets: random frames, random short reads and
//! writes, sockets with and without vectored writes. The reference is the codec's whole-buffer
//! `Encoder` and `Decoder`.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use asynchronous_codec::{Decoder, Encoder};
use bytes::{Bytes, BytesMut};
use futures::{AsyncRead, AsyncWrite, task::noop_waker_ref};
use proptest::prelude::*;

use super::{pool::BufferPool, reader::FrameReader, writer::FrameWriter};
use crate::{
    codec::Codec,
    error::{ConnectionError, ProtocolViolation},
    frame::{Frame, Mode, StreamId},
};

/// A socket that hands out or takes bytes in the sizes of a script, now and then `Pending`.
struct ScriptedSocket {
    input: Vec<u8>,
    read_pos: usize,
    output: Vec<u8>,
    sizes: Vec<usize>,
    next: usize,
    vectored: bool,
    /// How many bytes each write took.
    writes: Vec<usize>,
}

impl ScriptedSocket {
    fn new(input: Vec<u8>, sizes: Vec<usize>, vectored: bool) -> Self {
        Self {
            input,
            read_pos: 0,
            output: Vec::new(),
            sizes,
            next: 0,
            vectored,
            writes: Vec::new(),
        }
    }

    /// The next size of the script; `None` means `Pending` this time.
    fn next_size(&mut self) -> Option<usize> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        (size != 0).then_some(size)
    }
}

impl AsyncRead for ScriptedSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let Some(size) = self.next_size() else {
            return Poll::Pending;
        };
        let n = size.min(buf.len()).min(self.input.len() - self.read_pos);
        buf[..n].copy_from_slice(&self.input[self.read_pos..self.read_pos + n]);
        self.read_pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for ScriptedSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(size) = self.next_size() else {
            return Poll::Pending;
        };
        let n = size.min(buf.len());
        self.output.extend_from_slice(&buf[..n]);
        self.writes.push(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.vectored {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return self.poll_write(cx, first);
        }
        let Some(mut size) = self.next_size() else {
            return Poll::Pending;
        };
        let mut n = 0;
        for b in bufs {
            let take = size.min(b.len());
            self.output.extend_from_slice(&b[..take]);
            n += take;
            size -= take;
        }
        self.writes.push(n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn encode_all(mode: Mode, frames: &[Frame]) -> Vec<u8> {
    let mut codec = Codec::new(mode);
    let mut out = BytesMut::new();
    for frame in frames {
        codec.encode(frame.clone(), &mut out).unwrap();
    }
    out.to_vec()
}

fn decode_all(mode: Mode, bytes: &[u8]) -> Vec<Frame> {
    let mut codec = Codec::new(mode);
    let mut buf = BytesMut::from(bytes);
    std::iter::from_fn(|| codec.decode(&mut buf).unwrap()).collect()
}

/// Reads every frame through a `FrameReader`; also returns how the connection ended.
fn read_all(mode: Mode, bytes: Vec<u8>, sizes: Vec<usize>) -> (Vec<Frame>, ConnectionError) {
    let mut socket = ScriptedSocket::new(bytes, sizes, true);
    let mut reader = FrameReader::new(Codec::new(mode));
    let mut pool = BufferPool::default();
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut frames = Vec::new();
    // Each round reads at least one byte or one script step; the bound ends a broken reader.
    for _ in 0..10_000_000 {
        while let Some(frame) = reader.next_frame(&mut pool).unwrap() {
            frames.push(frame);
        }
        if reader.is_eof() {
            return (frames, reader.finish());
        }
        if let Poll::Ready(result) = reader.poll_fill(&mut socket, &mut cx) {
            result.unwrap();
        }
    }
    panic!("the reader did not reach the end of its input");
}

/// Writes `frames` (in batches of `batch`) through a `FrameWriter`; returns the bytes sent.
fn write_all(
    mode: Mode,
    frames: &[Frame],
    batch: usize,
    sizes: Vec<usize>,
    vectored: bool,
) -> Vec<u8> {
    let mut socket = ScriptedSocket::new(Vec::new(), sizes, vectored);
    let mut writer = FrameWriter::new(Codec::new(mode));
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut pushed = 0;
    let mut flushed = 0;
    for _ in 0..10_000_000 {
        if pushed == frames.len() && writer.is_empty() && flushed == pushed as u64 {
            return socket.output;
        }
        if writer.has_room() && pushed < frames.len() {
            let end = (pushed + batch).min(frames.len());
            for frame in &frames[pushed..end] {
                writer.push(frame.clone());
            }
            pushed = end;
            writer.mark(pushed as u64);
        }
        let progress = writer.poll_write_out(&mut socket, &mut cx).unwrap();
        if let Some(frames) = progress.flushed_frames {
            assert!(
                frames > flushed && frames <= pushed as u64,
                "flushes move forward"
            );
            flushed = frames;
        }
    }
    panic!("the writer did not drain");
}

fn arb_id() -> impl Strategy<Value = StreamId> {
    (0u64..1000, any::<bool>()).prop_map(|(n, local)| {
        if local {
            StreamId::local(n)
        } else {
            StreamId::remote(n)
        }
    })
}

/// Bodies of every size class the reader and writer treat apart: tiny, below the copy and
/// direct limits, above them, and now and then up to the 1 MiB maximum.
fn arb_body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => 0usize..100,
        3 => 100usize..20_000,
        2 => 20_000usize..200_000,
        1 => 200_000usize..=crate::frame::MAX_FRAME_BODY,
    ]
    .prop_flat_map(|len| {
        any::<u8>().prop_map(move |seed| {
            Bytes::from(
                (0..len)
                    .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                    .collect::<Vec<u8>>(),
            )
        })
    })
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => (arb_id(), arb_body()).prop_map(|(id, data)| Frame::Data { id, data }),
        1 => (0u64..1000, arb_body()).prop_map(|(n, name)| Frame::NewStream { id: StreamId::local(n), name }),
        1 => arb_id().prop_map(|id| Frame::Close { id }),
        1 => (arb_id(), any::<u64>()).prop_map(|(id, code)| Frame::Reset { id, code }),
        1 => (arb_id(), 1u64..).prop_map(|(id, credit)| Frame::WindowUpdate { id, credit }),
    ]
}

/// Read or write sizes: mostly small to middling, some large, some `Pending` (0).
fn arb_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![1 => Just(0usize), 3 => 1usize..64, 3 => 64usize..70_000, 1 => 70_000usize..2_000_000],
        1..20,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_reader_yields_the_frames_of_the_byte_stream_whatever_the_chunking(
        frames in proptest::collection::vec(arb_frame(), 0..12),
        sizes in arb_sizes().prop_filter("some bytes arrive", |s| s.iter().any(|&n| n > 0)),
    ) {
        let bytes = encode_all(Mode::Extension, &frames);
        let expected = decode_all(Mode::Extension, &bytes);
        let (got, end) = read_all(Mode::Extension, bytes, sizes);
        prop_assert_eq!(got, expected);
        prop_assert!(matches!(end, ConnectionError::Closed));
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_a_truncated_frame(
        frames in proptest::collection::vec(arb_frame(), 1..6),
        cut in 1usize..2_000_000,
        sizes in arb_sizes().prop_filter("some bytes arrive", |s| s.iter().any(|&n| n > 0)),
    ) {
        let mut bytes = encode_all(Mode::Extension, &frames);
        // Cut strictly inside the last frame (every frame has at least 2 bytes).
        let last_len = encode_all(Mode::Extension, &frames[frames.len() - 1..]).len();
        bytes.truncate(bytes.len() - 1 - cut % (last_len - 1));
        let whole = decode_all(Mode::Extension, &bytes);
        let (got, end) = read_all(Mode::Extension, bytes, sizes);
        prop_assert_eq!(got, whole);
        prop_assert!(matches!(
            end,
            ConnectionError::ProtocolViolation(ProtocolViolation::TruncatedFrame)
        ));
    }

    #[test]
    fn the_writer_sends_exactly_the_encoded_frames_whatever_the_socket_takes(
        frames in proptest::collection::vec(arb_frame(), 0..12),
        batch in 1usize..5,
        sizes in arb_sizes().prop_filter("some bytes go out", |s| s.iter().any(|&n| n > 0)),
        vectored in any::<bool>(),
    ) {
        let expected = encode_all(Mode::Extension, &frames);
        let got = write_all(Mode::Extension, &frames, batch, sizes, vectored);
        prop_assert!(got == expected, "{} bytes sent, {} expected", got.len(), expected.len());
    }
}

/// Sends 32 Data frames of 64 KiB, one per round, to a socket that takes all it is offered;
/// returns how many writes that took and whether the writer ended up copying bodies.
fn writes_for_large_frames(vectored: bool) -> (usize, bool) {
    let frames: Vec<Frame> = (0..32)
        .map(|i| Frame::Data {
            id: StreamId::local(1),
            data: Bytes::from(vec![i as u8; 64 * 1024]),
        })
        .collect();
    let mut socket = ScriptedSocket::new(Vec::new(), vec![usize::MAX], vectored);
    let mut writer = FrameWriter::new(Codec::new(Mode::Extension));
    let mut cx = Context::from_waker(noop_waker_ref());
    for (i, frame) in frames.iter().enumerate() {
        writer.push(frame.clone());
        writer.mark(i as u64 + 1);
        writer.poll_write_out(&mut socket, &mut cx).unwrap();
        assert!(writer.is_empty(), "the socket takes everything");
    }
    assert_eq!(socket.output, encode_all(Mode::Extension, &frames));
    assert!(
        writer.staging_capacity() <= 64 * 1024,
        "a drained writer keeps {} bytes",
        writer.staging_capacity()
    );
    (socket.writes.len(), writer.copies_bodies())
}

#[test]
fn a_socket_without_vectored_writes_gets_whole_frames_once_it_showed_it() {
    // Each frame is a head and a 64 KiB body. Taken one buffer at a time, that would be 64
    // writes, every other one a few bytes of head (on TCP, a tiny segment the peer wakes up
    // for). The first two frames show the socket's kind; from then on, one write per frame.
    let (writes, copies) = writes_for_large_frames(false);
    assert!(copies);
    assert_eq!(writes, 2 * 2 + 30);
    // A socket with vectored writes takes head and body in one write, never copied.
    let (writes, copies) = writes_for_large_frames(true);
    assert!(!copies);
    assert_eq!(writes, 32);
}

#[test]
fn a_body_over_one_mebibyte_is_refused_from_its_head_alone() {
    // Head of a Data frame announcing 1 MiB + 1 byte, and nothing of the body.
    let mut head = BytesMut::new();
    head.extend_from_slice(&[2]); // stream 0, MessageInitiator
    head.extend_from_slice(unsigned_varint::encode::u64(
        (crate::frame::MAX_FRAME_BODY + 1) as u64,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
    let mut socket = ScriptedSocket::new(head.to_vec(), vec![usize::MAX], true);
    let mut reader = FrameReader::new(Codec::new(Mode::PlainMplex));
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(reader.poll_fill(&mut socket, &mut cx).is_ready());
    assert!(matches!(
        reader.next_frame(&mut BufferPool::default()),
        Err(ProtocolViolation::FrameTooLarge { .. })
    ));
}

/// A socket with nothing to read and room for everything, that counts its reads and keeps the
/// read waker for the test.
#[derive(Default, Clone)]
struct IdleSocket {
    reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    read_waker: std::sync::Arc<parking_lot::Mutex<Option<std::task::Waker>>>,
    /// Bytes the next read returns, put there by the test.
    incoming: std::sync::Arc<parking_lot::Mutex<Vec<u8>>>,
}

impl AsyncRead for IdleSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut incoming = self.incoming.lock();
        if !incoming.is_empty() {
            let n = incoming.len().min(buf.len());
            buf[..n].copy_from_slice(&incoming[..n]);
            incoming.drain(..n);
            return Poll::Ready(Ok(n));
        }
        *self.read_waker.lock() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for IdleSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn polls_with_nothing_new_skip_the_socket_and_every_wake_up_source_brings_a_drive() {
    use libp2p_core::muxing::StreamMuxer;
    let socket = IdleSocket::default();
    let reads = || socket.reads.load(std::sync::atomic::Ordering::Relaxed);
    let mut muxer = super::Muxer::new(socket.clone(), crate::Config::default(), Mode::Extension);
    let mut cx = Context::from_waker(noop_waker_ref());
    fn poll(muxer: &mut super::Muxer<IdleSocket>) {
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(Pin::new(&mut *muxer).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut *muxer).poll_inbound(&mut cx).is_pending());
    }
    poll(&mut muxer);
    assert_eq!(reads(), 1);
    // A swarm calls several methods per wake-up; with nothing new they leave the socket alone.
    poll(&mut muxer);
    poll(&mut muxer);
    assert_eq!(reads(), 1);
    // The socket became readable: the next poll reads.
    socket.read_waker.lock().take().expect("registered").wake();
    poll(&mut muxer);
    assert_eq!(reads(), 2);
    // A stream that cannot send by itself (no task context: a drop) wakes the driver.
    let stream = match Pin::new(&mut muxer).poll_outbound(&mut cx) {
        Poll::Ready(Ok(s)) => s,
        other => panic!("outbound stream: {other:?}"),
    };
    poll(&mut muxer);
    assert_eq!(reads(), 2, "opening a stream sends nothing yet");
    let mut stream = stream;
    stream.reset();
    drop(stream);
    poll(&mut muxer);
    assert_eq!(reads(), 2, "a stream never announced sends nothing");
    let mut stream = match Pin::new(&mut muxer).poll_outbound(&mut cx) {
        Poll::Ready(Ok(s)) => s,
        other => panic!("outbound stream: {other:?}"),
    };
    // A small write waits for the task's flush, close or read, as in a buffered writer...
    assert!(
        Pin::new(&mut stream)
            .poll_write(&mut cx, b"queued")
            .is_ready()
    );
    poll(&mut muxer);
    assert_eq!(reads(), 2, "a small write alone brings no drive");
    // ...and a stream dropped with data queued hands it to the driver.
    drop(stream);
    poll(&mut muxer);
    let after_drop = reads();
    assert!(after_drop > 2, "the drop brought a drive");
    // More than a little data is the driver's to send at once.
    let mut stream = match Pin::new(&mut muxer).poll_outbound(&mut cx) {
        Poll::Ready(Ok(s)) => s,
        other => panic!("outbound stream: {other:?}"),
    };
    assert!(
        Pin::new(&mut stream)
            .poll_write(&mut cx, &[7; 64 * 1024])
            .is_ready()
    );
    poll(&mut muxer);
    let after_bulk = reads();
    assert!(after_bulk > after_drop, "the bulk write brought a drive");
    // With another stream open, a small write is the driver's at once too.
    let mut second = match Pin::new(&mut muxer).poll_outbound(&mut cx) {
        Poll::Ready(Ok(s)) => s,
        other => panic!("outbound stream: {other:?}"),
    };
    assert!(Pin::new(&mut second).poll_write(&mut cx, b"x").is_ready());
    poll(&mut muxer);
    assert!(
        reads() > after_bulk,
        "a small write beside another stream brought a drive"
    );
    drop(stream);
}

#[test]
fn an_inbound_stream_read_by_another_call_is_handed_out_by_the_next_poll_inbound() {
    use libp2p_core::muxing::StreamMuxer;
    let socket = IdleSocket::default();
    let mut muxer = super::Muxer::new(socket.clone(), crate::Config::default(), Mode::Extension);
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(Pin::new(&mut muxer).poll_inbound(&mut cx).is_pending());
    assert!(Pin::new(&mut muxer).poll_inbound(&mut cx).is_pending());
    // The peer opens its stream 0 (NewStream, empty name); `poll` is the call that reads it.
    socket.incoming.lock().extend_from_slice(&[0, 0]);
    socket.read_waker.lock().take().expect("registered").wake();
    assert!(Pin::new(&mut muxer).poll(&mut cx).is_pending());
    match Pin::new(&mut muxer).poll_inbound(&mut cx) {
        Poll::Ready(Ok(stream)) => assert_eq!(stream.id(), StreamId::remote(0)),
        other => panic!("the inbound stream: {other:?}"),
    }
    assert!(Pin::new(&mut muxer).poll_inbound(&mut cx).is_pending());
}
