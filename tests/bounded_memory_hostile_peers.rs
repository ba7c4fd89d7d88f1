//! Hostile peers over real TCP on 127.0.0.1. The peer does multistream-select by hand, then sends
//! one kind of abuse; our side negotiates as a node does (multistream-select, then the `Config`
//! upgrade) and runs the muxer. For each case: the expected outcome (the named violation, or the
//! frames ignored and the connection still working), no panic, and the memory the process held
//! while the case ran, measured with a counting allocator, far below what the abuse asks for.
//!
//! The cases run one after another in one test, so that the allocator counts only them.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt as _, future::poll_fn};
use libp2p_core::{
    muxing::StreamMuxerExt,
    upgrade::{InboundConnectionUpgrade, Negotiated},
};
use libp2p_mplex_halfclose::{
    Config, ConnectionError, EXTENSION_PROTOCOL, MPLEX_PROTOCOL, Mode, Muxer, ProtocolViolation,
};
use test_support::{
    counting,
    driven::{multistream_message, peer_frame as frame, varint, within},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

#[global_allocator]
static ALLOCATOR: counting::CountingAllocator = counting::CountingAllocator;

const MIB: usize = 1 << 20;

type OurMuxer = Muxer<Negotiated<Compat<TcpStream>>>;

/// A TCP connection: the raw peer, and our muxer after a real negotiation of `mode`.
async fn connect(mode: Mode) -> (TcpStream, OurMuxer) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let ours = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        let protocols = [EXTENSION_PROTOCOL, MPLEX_PROTOCOL];
        let (protocol, negotiated) =
            multistream_select::listener_select_proto(socket.compat(), protocols)
                .await
                .expect("negotiation");
        Config::default()
            .upgrade_inbound(negotiated, protocol)
            .await
            .expect("upgrade")
    });
    let mut peer = TcpStream::connect(addr).await.expect("connect");
    let protocol = match mode {
        Mode::Extension => EXTENSION_PROTOCOL,
        Mode::PlainMplex => MPLEX_PROTOCOL,
    };
    let hello = [
        multistream_message("/multistream/1.0.0"),
        multistream_message(protocol),
    ]
    .concat();
    peer.write_all(&hello).await.expect("negotiate");
    let mut answer = vec![0u8; hello.len()];
    peer.read_exact(&mut answer)
        .await
        .expect("negotiation answer");
    assert_eq!(answer, hello, "the listener confirms the protocol");
    let muxer = within(ours).await.expect("our side");
    assert_eq!(muxer.mode(), mode);
    (peer, muxer)
}

/// Sends `bytes` and returns the error our muxer ends with (the peer's side stays open, so the
/// error comes from the bytes, not from the end of the connection).
async fn violation_after(mode: Mode, bytes: Vec<u8>) -> ProtocolViolation {
    let (mut peer, mut muxer) = connect(mode).await;
    let writer = tokio::spawn(async move {
        let _ = peer.write_all(&bytes).await;
        peer
    });
    let error = within(poll_fn(|cx| muxer.poll_unpin(cx)))
        .await
        .unwrap_err();
    drop(writer);
    match error {
        ConnectionError::ProtocolViolation(v) => v,
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}

/// After `bytes`, the peer opens stream 0 and sends "ok" with a close: the connection still
/// works, and the stream delivers exactly that.
async fn still_works_after(mode: Mode, bytes: Vec<u8>, pace: Option<Duration>) {
    let (mut peer, mut muxer) = connect(mode).await;
    let proof = [frame(0, 0, b"0"), frame(0, 2, b"ok"), frame(0, 4, b"")].concat();
    let all = [bytes, proof].concat();
    let writer = tokio::spawn(async move {
        match pace {
            // A trickle: one byte at a time, each after a pause.
            Some(pause) => {
                for byte in all {
                    peer.write_all(&[byte]).await.expect("trickle");
                    tokio::time::sleep(pause).await;
                }
            }
            None => peer.write_all(&all).await.expect("write"),
        }
        peer
    });
    let mut stream = within(poll_fn(|cx| muxer.poll_inbound_unpin(cx)))
        .await
        .expect("the peer's stream");
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.map(|_| got)
    });
    let drive = poll_fn(|cx| muxer.poll_unpin(cx));
    tokio::select! {
        got = reader => assert_eq!(got.unwrap().unwrap(), b"ok"),
        e = drive => panic!("connection failed: {e:?}"),
    }
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_fail_cleanly_within_bounded_memory() {
    // One case: its name, what it may make the process hold at most, and the case.
    async fn case(name: &str, bound: usize, run: impl std::future::Future<Output = ()>) {
        counting::start();
        within(run).await;
        let grown = counting::peak().max(0) as usize;
        println!("{name}: peak {grown} bytes above the start");
        assert!(grown < bound, "{name}: held {grown} bytes, bound {bound}");
    }
    for mode in [Mode::Extension, Mode::PlainMplex] {
        case("a varint longer than 10 bytes", MIB, async {
            let v = violation_after(mode, vec![0xff; 11]).await;
            assert_eq!(v, ProtocolViolation::VarintOverflow);
        })
        .await;
        case("a length of 2^64 (tenth varint byte above 1)", MIB, async {
            // Read as 0 by a decoder that drops the high bits, the bytes behind it would be
            // taken for frames: here a NewStream that must never be seen.
            let mut bytes = varint(2);
            bytes.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02]);
            bytes.extend(frame(7, 0, b"7"));
            let v = violation_after(mode, bytes).await;
            assert_eq!(v, ProtocolViolation::VarintOverflow);
        })
        .await;
        case("a length of 100 MiB", MIB, async {
            let mut bytes = varint(2);
            bytes.extend(varint(100 << 20));
            bytes.extend(vec![0u8; 64 * 1024]); // the start of such a body
            let v = violation_after(mode, bytes).await;
            assert_eq!(v, ProtocolViolation::FrameTooLarge { len: 100 << 20 });
        })
        .await;
        case("NewStream for an id already open", MIB, async {
            let bytes = [frame(3, 0, b"3"), frame(3, 0, b"3")].concat();
            let v = violation_after(mode, bytes).await;
            assert!(matches!(v, ProtocolViolation::NewStreamForLiveId(id) if id.num() == 3));
        })
        .await;
        case("100,000 NewStream frames in a burst", 4 * MIB, async {
            let bytes: Vec<u8> = (0..100_000u64).flat_map(|n| frame(n, 0, b"")).collect();
            let v = violation_after(mode, bytes).await;
            assert!(
                matches!(v, ProtocolViolation::TooManyRefusedStreams(_)),
                "{v:?}"
            );
        })
        .await;
        case("Data, Close and Reset for ids never opened", MIB, async {
            let bytes: Vec<u8> = (1..=6)
                .flat_map(|flag| frame(42, flag, if flag <= 2 { b"junk" } else { b"" }))
                .collect();
            still_works_after(mode, bytes, None).await;
        })
        .await;
        case("a trickle of one byte every 2 ms", MIB, async {
            still_works_after(mode, frame(9, 2, b"x"), Some(Duration::from_millis(2))).await;
        })
        .await;
    }
    case("flag 7 on a plain-mplex connection", MIB, async {
        let v = violation_after(Mode::PlainMplex, frame(0, 7, &[2, 5])).await;
        assert_eq!(v, ProtocolViolation::ExtensionFrameInPlainMode);
    })
    .await;
    case("an unknown extension op is ignored", MIB, async {
        // Op 9 from the initiator: (9 << 1) | 1.
        still_works_after(Mode::Extension, frame(5, 7, &[19]), None).await;
    })
    .await;
    case("data beyond the granted credit", 2 * MIB, async {
        let bytes = [frame(0, 0, b"0"), frame(0, 2, &vec![0u8; 256 * 1024 + 1])].concat();
        let v = violation_after(Mode::Extension, bytes).await;
        assert!(
            matches!(v, ProtocolViolation::CreditExceeded { len: 262_145, .. }),
            "{v:?}"
        );
    })
    .await;
    case("a WindowUpdate that overflows the window", MIB, async {
        let mut body = vec![3];
        body.extend(varint(1 << 32));
        let bytes = [frame(0, 0, b"0"), frame(0, 7, &body)].concat();
        let v = violation_after(Mode::Extension, bytes).await;
        assert!(matches!(v, ProtocolViolation::WindowOverflow(_)), "{v:?}");
    })
    .await;
    for mode in [Mode::Extension, Mode::PlainMplex] {
        case("a peer that never reads while we write", 8 * MIB, async {
            let (_peer, muxer) = connect(mode).await;
            let ours = test_support::driven::drive(muxer);
            let mut stream = ours.open().await;
            // 64 MiB cannot all go anywhere while the peer reads nothing: the write waits
            // (flow control, then the socket), holding a bounded amount.
            let chunk = vec![7u8; 64 * 1024];
            let write_all = async {
                for _ in 0..1024 {
                    stream.write_all(&chunk).await.expect("write");
                }
            };
            let waited = tokio::time::timeout(Duration::from_secs(2), write_all).await;
            assert!(waited.is_err(), "64 MiB were taken although nobody reads");
        })
        .await;
    }
}
