//! An emulated long-distance link, in process: each direction is a queue of about one
//! bandwidth-delay product (as on a router), drained at a set rate, and every byte then waits
//! half the round trip before it reaches the other end. When the queue is full the writer waits,
//! as a TCP socket's would.
//!
//! Each direction is two tasks: the pacer takes bytes from the queue no faster than the rate and
//! stamps each chunk with the time it reaches the far end; the deliverer hands the chunks over
//! at that time. tokio's timers have a resolution of a millisecond, so the pacing is exact on
//! average and bursts by at most a millisecond's worth.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    sync::mpsc,
    time::Instant,
};
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::Socket;

/// How many bytes the pacer takes at a time.
const PACER_CHUNK: usize = 16 * 1024;
/// The far end's socket buffer.
const RECEIVE_BUFFER: usize = 4 << 20;

/// A link with round trip `rtt` and `bits_per_second` each way: the two ends.
pub fn link(rtt: Duration, bits_per_second: f64) -> (Box<dyn Socket>, Box<dyn Socket>) {
    let rate = bits_per_second / 8.0;
    let queue = ((rate * rtt.as_secs_f64()) as usize).max(64 * 1024);
    let (a_writes, a_to_b) = tokio::io::duplex(queue);
    let (b_writes, b_to_a) = tokio::io::duplex(queue);
    let (a_reads, b_to_a_out) = tokio::io::duplex(RECEIVE_BUFFER);
    let (b_reads, a_to_b_out) = tokio::io::duplex(RECEIVE_BUFFER);
    direction(a_to_b, a_to_b_out, rate, rtt / 2);
    direction(b_to_a, b_to_a_out, rate, rtt / 2);
    let a = tokio::io::join(read_half(a_reads), write_half(a_writes));
    let b = tokio::io::join(read_half(b_reads), write_half(b_writes));
    (Box::new(a.compat()), Box::new(b.compat()))
}

fn read_half(end: DuplexStream) -> tokio::io::ReadHalf<DuplexStream> {
    tokio::io::split(end).0
}

fn write_half(end: DuplexStream) -> tokio::io::WriteHalf<DuplexStream> {
    tokio::io::split(end).1
}

/// Moves bytes from `queue` to `out` at `rate` bytes per second, each `one_way` late.
fn direction(mut queue: DuplexStream, mut out: DuplexStream, rate: f64, one_way: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut busy_until = Instant::now();
        let mut buf = vec![0u8; PACER_CHUNK];
        loop {
            // The link is busy sending what it took last: take more when that is nearly done.
            let now = Instant::now();
            if busy_until > now + Duration::from_millis(1) {
                tokio::time::sleep_until(busy_until - Duration::from_millis(1)).await;
            }
            let n = match queue.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Woken late by the timer, the link catches up (what was queued went on being
            // sent meanwhile); idle for longer, it starts again from now.
            let now = Instant::now();
            let from = if busy_until + Duration::from_millis(2) < now {
                now
            } else {
                busy_until
            };
            busy_until = from + Duration::from_secs_f64(n as f64 / rate);
            if tx.send((busy_until + one_way, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if out.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = out.shutdown().await;
    });
}
