//! Window accounting for the extension's per-stream flow control.
//!
//! Each direction of each stream starts with [`INITIAL_WINDOW`] bytes of credit. The receiver
//! grants more with WindowUpdate frames as the application consumes data (as the memory holding
//! it is released), once half the window is consumed.
//!
//! **How the window grows.** A stream that consumes half its window in less than two round trips
//! of the connection, twice in a row, is held back by its window, not by its reader or its
//! link: the window doubles, up to the configured maximum and within the connection's budget.
//! It so settles between four and eight bandwidth-delay products of what the stream actually
//! moves: a stream on a long fast link grows to fill it (a doubling every round trip or so), a
//! slow reader keeps a window of its own pace (its consumption takes longer), and a stream
//! nobody reads never grows (it consumes nothing). The round trip is measured with Ping and Pong
//! (see `rtt`); until it is known, windows keep their size. A peer that delays its Pongs looks
//! far away and so can make a slow reader's window grow: the connection's budget, from which
//! growth is taken after every stream that may still open has its initial window (see
//! `Connection::read_with`), is what bounds memory, not this rule. This is the rule of QUIC
//! implementations and of yamux, asked twice in a row, so that a reader that drains its whole
//! buffer in one burst after a pause does not count as fast.

pub use crate::frame::{INITIAL_WINDOW, MAX_CREDIT};

/// Credit goes back once half the window, or this much, has been consumed, whichever is less:
/// a large window is refilled in steps, so that a sender on a long link never waits for half
/// of it to come back (a stream then needs a window of its bandwidth-delay product plus one
/// step, not twice that product).
pub(crate) const GRANT_STEP: u64 = 1024 * 1024;

use std::time::{Duration, Instant};

/// The receive side's view of one stream's window.
#[derive(Debug, Clone)]
pub(crate) struct RecvWindow {
    /// Bytes the peer may still send before it runs out of credit.
    remaining: u64,
    /// The current window size: the credit the peer holds when the reader has caught up.
    size: u64,
    /// Bytes the application has consumed that have not been granted back yet.
    consumed: u64,
    /// When the half window being timed began to be consumed (the grant that ended the last
    /// one), and how much has been consumed since.
    timed_from: Option<Instant>,
    consumed_since: u64,
    /// The last half window was consumed in less than two round trips.
    last_half_fast: bool,
}

/// A decision of [`RecvWindow::on_consumed`]: how much credit to send, by how much the window
/// grew (which the connection charges to its budget), and when (the connection times its Pings
/// from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) struct Grant {
    pub(crate) credit: u64,
    pub(crate) growth: u64,
    pub(crate) at: Instant,
}

impl RecvWindow {
    pub(crate) fn new() -> Self {
        Self {
            remaining: INITIAL_WINDOW,
            size: INITIAL_WINDOW,
            consumed: 0,
            timed_from: None,
            consumed_since: 0,
            last_half_fast: false,
        }
    }

    /// The window size (what this stream charges to the connection's budget).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Takes `len` bytes of credit for data arriving now; `Err(credit)` if the peer had too
    /// little.
    pub(crate) fn on_data(&mut self, len: u64) -> Result<(), u64> {
        match self.remaining.checked_sub(len) {
            Some(rest) => {
                self.remaining = rest;
                Ok(())
            }
            None => Err(self.remaining),
        }
    }

    /// The application consumed `len` bytes. `now` is asked only when a grant is due.
    ///
    /// Grants credit once half a window, or [`GRANT_STEP`], has been consumed. At a grant, once
    /// half a window has been consumed since the last time it was timed: if that took less
    /// than two round trips (`rtt`, when known), and so did the half before it, the window
    /// doubles, bounded by `max_size` and by `budget` (the growth the connection can still
    /// afford); the next half window is timed from there.
    pub(crate) fn on_consumed(
        &mut self,
        len: u64,
        max_size: u64,
        budget: u64,
        rtt: Option<Duration>,
        now: impl FnOnce() -> Instant,
    ) -> Option<Grant> {
        self.consumed += len;
        self.consumed_since += len;
        if self.consumed < (self.size / 2).min(GRANT_STEP) {
            return None;
        }
        let now = now();
        let mut growth = 0;
        match self.timed_from {
            None => {
                self.timed_from = Some(now);
                self.consumed_since = 0;
            }
            Some(from) if self.consumed_since >= self.size / 2 => {
                let elapsed = now.saturating_duration_since(from);
                let fast = rtt.is_some_and(|rtt| elapsed < 2 * rtt);
                if fast && self.last_half_fast {
                    growth = self
                        .size
                        .min(max_size.saturating_sub(self.size))
                        .min(budget);
                }
                self.last_half_fast = fast;
                self.timed_from = Some(now);
                self.consumed_since = 0;
            }
            Some(_) => {}
        }
        self.size += growth;
        let credit = self.consumed + growth;
        self.consumed = 0;
        self.remaining += credit;
        debug_assert!(self.remaining <= MAX_CREDIT);
        Some(Grant {
            credit,
            growth,
            at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 64 * 1024;

    /// A reader that consumes `CHUNK` every `per_chunk`, as fast as data comes (the sender
    /// always has data and credit enough), on a connection with round trip `rtt`. Returns the
    /// window size after `chunks` reads.
    fn consume(
        rtt: Option<Duration>,
        per_chunk: Duration,
        max: u64,
        budget: u64,
        chunks: usize,
    ) -> u64 {
        let mut w = RecvWindow::new();
        let mut budget = budget;
        let mut clock = Instant::now();
        for _ in 0..chunks {
            clock += per_chunk;
            if let Some(grant) = w.on_consumed(CHUNK, max, budget, rtt, || clock) {
                budget -= grant.growth;
            }
        }
        w.size()
    }

    #[test]
    fn data_within_credit_is_accepted_and_beyond_is_refused() {
        let mut w = RecvWindow::new();
        assert_eq!(w.on_data(INITIAL_WINDOW - 1), Ok(()));
        assert_eq!(w.on_data(2), Err(1));
        assert_eq!(w.on_data(1), Ok(()));
        assert_eq!(w.on_data(1), Err(0));
    }

    #[test]
    fn no_grant_before_half_a_window_is_consumed() {
        let mut w = RecvWindow::new();
        let now = Instant::now();
        let rtt = Some(Duration::from_secs(1));
        w.on_data(INITIAL_WINDOW / 2).unwrap();
        assert_eq!(
            w.on_consumed(INITIAL_WINDOW / 2 - 1, u64::MAX, u64::MAX, rtt, || now),
            None
        );
        let grant = w.on_consumed(1, u64::MAX, u64::MAX, rtt, || now).unwrap();
        // The first grant starts timing the window: no growth yet.
        assert_eq!((grant.credit, grant.growth), (INITIAL_WINDOW / 2, 0));
    }

    #[test]
    fn a_window_consumed_within_two_round_trips_doubles_up_to_the_maximum() {
        // 50 ms round trip; 64 KiB every 100 µs (640 MB/s): a window drains far faster.
        let max = 16 * INITIAL_WINDOW;
        let size = consume(
            Some(Duration::from_millis(50)),
            Duration::from_micros(100),
            max,
            u64::MAX,
            10_000,
        );
        assert_eq!(size, max);
    }

    #[test]
    fn a_slow_reader_keeps_its_window() {
        // 50 ms round trip; 64 KiB every 60 ms: half a window takes 120 ms, over two round
        // trips.
        let size = consume(
            Some(Duration::from_millis(50)),
            Duration::from_millis(60),
            u64::MAX,
            u64::MAX,
            1_000,
        );
        assert_eq!(size, INITIAL_WINDOW);
    }

    #[test]
    fn a_reader_settles_at_the_window_its_pace_needs() {
        // 50 ms round trip, 64 KiB every 1 ms (64 MB/s): half a window of W bytes takes
        // W / 128 KiB ms, so it grows while that is under 100 ms: to 16 MiB (128 ms), not beyond.
        let size = consume(
            Some(Duration::from_millis(50)),
            Duration::from_millis(1),
            u64::MAX,
            u64::MAX,
            10_000,
        );
        assert_eq!(size, 16 << 20);
    }

    #[test]
    fn without_a_round_trip_time_the_window_keeps_its_size() {
        let size = consume(None, Duration::from_micros(1), u64::MAX, u64::MAX, 10_000);
        assert_eq!(size, INITIAL_WINDOW);
    }

    #[test]
    fn growth_is_limited_by_the_connection_budget() {
        let size = consume(
            Some(Duration::from_millis(50)),
            Duration::from_micros(100),
            u64::MAX,
            1000,
            10_000,
        );
        assert_eq!(size, INITIAL_WINDOW + 1000);
    }

    #[test]
    fn a_reader_that_drains_its_window_in_one_burst_after_a_pause_does_not_grow_it() {
        let rtt = Some(Duration::from_millis(10));
        let mut w = RecvWindow::new();
        let mut clock = Instant::now();
        for _ in 0..100 {
            // A second of nothing, then the whole window at once.
            clock += Duration::from_secs(1);
            for _ in 0..INITIAL_WINDOW / CHUNK {
                let _ = w.on_consumed(CHUNK, u64::MAX, u64::MAX, rtt, || clock);
            }
        }
        assert_eq!(w.size(), INITIAL_WINDOW);
    }

    #[test]
    fn the_credit_never_exceeds_what_the_protocol_allows() {
        let rtt = Some(Duration::from_secs(1));
        let mut w = RecvWindow::new();
        let clock = Instant::now();
        let chunk = 1 << 20;
        for _ in 0..20_000 {
            let chunk = w.remaining.min(chunk);
            w.on_data(chunk).unwrap();
            let _ = w.on_consumed(chunk, MAX_CREDIT, u64::MAX, rtt, || clock);
            assert!(w.remaining <= MAX_CREDIT && w.size() <= MAX_CREDIT);
        }
        assert_eq!(w.size(), MAX_CREDIT);
    }
}
