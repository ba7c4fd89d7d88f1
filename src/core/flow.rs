//! Window accounting for the extension's per-stream flow control.
//!
//! Each direction of each stream starts with [`INITIAL_WINDOW`] bytes of credit. The receiver
//! grants more with WindowUpdate frames as the application reads. The window grows (doubles)
//! when it is what limits the stream, so that one stream alone can fill a long, fast link, and
//! never beyond the configured per-stream maximum or the connection-wide budget.
//!
//! "What limits the stream" is judged against the round-trip time, which the window measures
//! itself: a grant sent to a sender that had no credit left is answered by data one round trip
//! later. If the reader then drains that data in less than a round trip, the stream spends
//! most of its time waiting for credit: the window is too small for the link. On a link whose
//! round trip is short next to the time a window takes to drain (a local pipe), the window
//! stays small and keeps the data in cache: growing it there made transfers 20–40 % slower.

/// Credit each direction of each stream has when it opens, fixed by the protocol.
pub const INITIAL_WINDOW: u64 = 256 * 1024;

/// The largest credit a sender may hold on one stream; a WindowUpdate that would go beyond it is a
/// protocol violation.
pub const MAX_CREDIT: u64 = u32::MAX as u64;

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
    /// Since the last grant, data arrived that left the sender with a quarter window or less.
    sender_ran_low: bool,
    /// Since the last grant, the reader found the buffer empty and had to wait for data.
    reader_waited: bool,
    /// The last data used up the sender's credit: it waits for a grant.
    sender_blocked: bool,
    /// A grant made to a blocked sender: the next data arrives one round trip after it.
    rtt_probe: Option<Instant>,
    /// The latest round-trip time measured that way, and when that data arrived.
    rtt: Option<Duration>,
    answered_at: Option<Instant>,
}

/// A decision of [`RecvWindow::on_consumed`]: how much credit to send, and by how much the
/// window grew (which the connection charges to its budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) struct Grant {
    pub(crate) credit: u64,
    pub(crate) growth: u64,
}

impl RecvWindow {
    pub(crate) fn new() -> Self {
        Self {
            remaining: INITIAL_WINDOW,
            size: INITIAL_WINDOW,
            consumed: 0,
            sender_ran_low: false,
            reader_waited: false,
            sender_blocked: false,
            answered_at: None,
            rtt_probe: None,
            rtt: None,
        }
    }

    /// The window size (what this stream charges to the connection's budget).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Takes `len` bytes of credit for data arriving now; `Err(credit)` if the peer had too
    /// little. `now` is asked only when this data answers a grant (it times the round trip).
    pub(crate) fn on_data(&mut self, len: u64, now: impl FnOnce() -> Instant) -> Result<(), u64> {
        match self.remaining.checked_sub(len) {
            Some(rest) => {
                self.remaining = rest;
                self.sender_ran_low |= rest <= self.size / 4;
                self.sender_blocked = rest == 0;
                if let Some(granted) = self.rtt_probe.take() {
                    let now = now();
                    self.rtt = Some(now.saturating_duration_since(granted));
                    self.answered_at = Some(now);
                }
                Ok(())
            }
            None => Err(self.remaining),
        }
    }

    /// The reader found nothing to read: it waits for the sender.
    pub(crate) fn on_reader_blocked(&mut self) {
        self.reader_waited = true;
    }

    /// The application consumed `len` bytes. `now` is asked only for a grant to a blocked
    /// sender (which times the round trip).
    ///
    /// Grants credit once half a window has been consumed. The window doubles, bounded by
    /// `max_size` and by `budget` (the growth the connection can still afford), when it is what
    /// limits the stream: the sender used up its credit and waits, the reader found the buffer
    /// empty and waited, *and* the data that answered the last such grant drained in less than
    /// a round trip. A slow reader always finds data, so its window stays small; a local pipe
    /// drains a window in longer than its round trip, so its window stays small too; a fast
    /// reader on a long link makes it grow.
    pub(crate) fn on_consumed(
        &mut self,
        len: u64,
        max_size: u64,
        budget: u64,
        now: impl FnOnce() -> Instant,
    ) -> Option<Grant> {
        self.consumed += len;
        if self.consumed < self.size / 2 {
            return None;
        }
        let mut waiting_dominates = false;
        if self.sender_blocked {
            let now = now();
            waiting_dominates = match (self.answered_at, self.rtt) {
                (Some(answered), Some(rtt)) => now.saturating_duration_since(answered) < rtt,
                _ => false,
            };
            // This grant is what the sender waits for: its answer times the round trip.
            self.rtt_probe = Some(now);
            self.answered_at = None;
            self.sender_blocked = false;
        }
        let growth = if self.sender_ran_low && self.reader_waited && waiting_dominates {
            self.size
                .min(max_size.saturating_sub(self.size))
                .min(budget)
        } else {
            0
        };
        self.sender_ran_low = false;
        self.reader_waited = false;
        self.size += growth;
        let credit = self.consumed + growth;
        self.consumed = 0;
        self.remaining += credit;
        Some(Grant { credit, growth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a transfer: the sender sends all its credit as soon as a grant reaches it, the
    /// data arrives one round trip `rtt` after the grant, and the reader drains 64 KiB every
    /// `per_chunk`. Returns the window size after `steps` reads.
    fn simulate(rtt: Duration, per_chunk: Duration, max: u64, budget: u64, steps: usize) -> u64 {
        const CHUNK: u64 = 64 * 1024;
        let mut w = RecvWindow::new();
        let start = Instant::now();
        let mut clock = start;
        let mut in_flight = std::collections::VecDeque::from([(start + rtt / 2, INITIAL_WINDOW)]);
        let mut buffered = 0;
        let mut budget = budget;
        for _ in 0..steps {
            if buffered == 0 {
                w.on_reader_blocked();
                let (at, n) = in_flight.pop_front().expect("credit is never withheld");
                clock = clock.max(at);
                w.on_data(n, || at).unwrap();
                buffered += n;
            }
            let n = buffered.min(CHUNK);
            clock += per_chunk;
            // Data that arrived while the reader was busy.
            while let Some(&(at, more)) = in_flight.front() {
                if at > clock {
                    break;
                }
                in_flight.pop_front();
                w.on_data(more, || at).unwrap();
                buffered += more;
            }
            buffered -= n;
            if let Some(grant) = w.on_consumed(n, max, budget, || clock) {
                budget -= grant.growth;
                in_flight.push_back((clock + rtt, grant.credit));
            }
        }
        w.size()
    }

    #[test]
    fn data_within_credit_is_accepted_and_beyond_is_refused() {
        let mut w = RecvWindow::new();
        let now = Instant::now();
        assert_eq!(w.on_data(INITIAL_WINDOW - 1, || now), Ok(()));
        assert_eq!(w.on_data(2, || now), Err(1));
        assert_eq!(w.on_data(1, || now), Ok(()));
        assert_eq!(w.on_data(1, || now), Err(0));
    }

    #[test]
    fn no_grant_before_half_a_window_is_consumed() {
        let mut w = RecvWindow::new();
        let now = Instant::now();
        w.on_data(INITIAL_WINDOW / 2, || now).unwrap();
        w.on_reader_blocked();
        assert_eq!(
            w.on_consumed(INITIAL_WINDOW / 2 - 1, u64::MAX, u64::MAX, || now),
            None
        );
        let grant = w.on_consumed(1, u64::MAX, u64::MAX, || now).unwrap();
        // The sender still held half its credit: the window is not what limits it.
        assert_eq!(
            grant,
            Grant {
                credit: INITIAL_WINDOW / 2,
                growth: 0
            }
        );
        assert_eq!(w.size(), INITIAL_WINDOW);
    }

    #[test]
    fn on_a_long_link_the_window_doubles_up_to_the_maximum() {
        // 50 ms round trip, a reader draining 64 KiB in 10 µs: the window is the bottleneck.
        let max = 16 * INITIAL_WINDOW;
        let size = simulate(
            Duration::from_millis(50),
            Duration::from_micros(10),
            max,
            u64::MAX,
            5_000,
        );
        assert_eq!(size, max);
    }

    #[test]
    fn on_a_local_pipe_the_window_stays_small() {
        // 20 µs round trip, 16 µs per 64 KiB (4 GB/s): the pipe sets the pace, not the window.
        let size = simulate(
            Duration::from_micros(20),
            Duration::from_micros(16),
            u64::MAX,
            u64::MAX,
            5_000,
        );
        assert_eq!(size, INITIAL_WINDOW);
    }

    #[test]
    fn a_slow_reader_never_grows_the_window() {
        // 50 ms round trip, but 64 KiB take the reader 100 ms: the reader is the bottleneck.
        let size = simulate(
            Duration::from_millis(50),
            Duration::from_millis(100),
            u64::MAX,
            u64::MAX,
            1_000,
        );
        assert_eq!(size, INITIAL_WINDOW);
    }

    #[test]
    fn growth_is_limited_by_the_connection_budget() {
        let size = simulate(
            Duration::from_millis(50),
            Duration::from_micros(10),
            u64::MAX,
            1000,
            5_000,
        );
        assert_eq!(size, INITIAL_WINDOW + 1000);
    }
}
