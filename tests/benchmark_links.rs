//! The links muxbench measures over are what they claim to be: every link (memory pipe, TCP,
//! TCP with scalar writes, TCP + noise after its handshake) carries bytes both ways intact, and
//! the scalar-writes link hands the socket one buffer per write (a benchmark row named after it
//! would otherwise measure vectored TCP again).

use std::{
    io::IoSlice,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncReadExt, AsyncWrite, AsyncWriteExt, future::poll_fn};
use test_support::muxbench::{Link, ScalarWrites, sockets};

#[tokio::test]
async fn every_benchmark_link_carries_a_mebibyte_each_way_intact() {
    for link in Link::ALL {
        let (mut a, mut b) = sockets(link).await;
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        for direction in 0..2 {
            let (from, to) = if direction == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let write = async {
                from.write_all(&data).await.expect("write");
                from.flush().await.expect("flush");
            };
            let mut got = vec![0u8; data.len()];
            let read = async { to.read_exact(&mut got).await.expect("read") };
            futures::join!(write, read);
            assert!(got == data, "{}: the bytes arrive as written", link.name());
        }
    }
}

/// Counts the buffers each vectored write is given and takes all of them.
#[derive(Default)]
struct Recorder {
    written: Vec<u8>,
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut n = 0;
        for buf in bufs {
            self.written.extend_from_slice(buf);
            n += buf.len();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl futures::AsyncRead for Recorder {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(0))
    }
}

#[tokio::test]
async fn the_scalar_writes_socket_takes_one_buffer_per_vectored_write() {
    let mut socket = ScalarWrites(Recorder::default());
    let bufs = [IoSlice::new(b"head"), IoSlice::new(b"body")];
    let n = poll_fn(|cx| Pin::new(&mut socket).poll_write_vectored(cx, &bufs))
        .await
        .expect("write");
    assert_eq!(n, 4, "only the first buffer is written");
    assert_eq!(socket.0.written, b"head");
    // The wrapped socket alone takes both: the wrapper is what makes the difference.
    let mut bare = Recorder::default();
    let n = poll_fn(|cx| Pin::new(&mut bare).poll_write_vectored(cx, &bufs))
        .await
        .expect("write");
    assert_eq!(n, 8);
}
