//! Window accounting for the extension's per-stream flow control.
//!
//! Each direction of each stream starts with [`INITIAL_WINDOW`] bytes of credit. The receiver
//! grants more with WindowUpdate frames as the application reads. The window grows (doubles) when
//! the reader keeps up, so that one stream alone can fill a fast link, and never beyond the
//! configured per-stream maximum or the connection-wide budget.

/// Credit each direction of each stream has when it opens, fixed by the protocol.
pub const INITIAL_WINDOW: u64 = 256 * 1024;

/// The largest credit a sender may hold on one stream; a WindowUpdate that would go beyond it is a
/// protocol violation.
pub const MAX_CREDIT: u64 = u32::MAX as u64;

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
        }
    }

    /// The window size (what this stream charges to the connection's budget).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Takes `len` bytes of credit for arriving data; `Err(credit)` if the peer had too little.
    pub(crate) fn on_data(&mut self, len: u64) -> Result<(), u64> {
        match self.remaining.checked_sub(len) {
            Some(rest) => {
                self.remaining = rest;
                self.sender_ran_low |= rest <= self.size / 4;
                Ok(())
            }
            None => Err(self.remaining),
        }
    }

    /// The reader found nothing to read: it waits for the sender.
    pub(crate) fn on_reader_blocked(&mut self) {
        self.reader_waited = true;
    }

    /// The application consumed `len` bytes.
    ///
    /// Grants credit once half a window has been consumed. The window doubles, bounded by
    /// `max_size` and by `budget` (the growth the connection can still afford), when it is what
    /// limits the stream: since the last grant the sender ran low on credit *and* the reader
    /// found the buffer empty and waited. A slow reader on a fast link always finds data, so
    /// its window stays small; a fast reader on a long link makes it grow.
    pub(crate) fn on_consumed(&mut self, len: u64, max_size: u64, budget: u64) -> Option<Grant> {
        self.consumed += len;
        if self.consumed < self.size / 2 {
            return None;
        }
        let growth = if self.sender_ran_low && self.reader_waited {
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
        // The peer has sent half the window; the reader consumes it.
        w.on_data(INITIAL_WINDOW / 2).unwrap();
        w.on_reader_blocked();
        assert_eq!(
            w.on_consumed(INITIAL_WINDOW / 2 - 1, u64::MAX, u64::MAX),
            None
        );
        let grant = w.on_consumed(1, u64::MAX, u64::MAX).unwrap();
        // The reader waited, but the sender still held half its credit: the window is not what
        // limits it.
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
    fn a_slow_reader_never_grows_the_window() {
        let mut w = RecvWindow::new();
        w.on_data(INITIAL_WINDOW).unwrap();
        // The sender ran out of credit, but the reader always found data: it is the bottleneck.
        let grant = w.on_consumed(INITIAL_WINDOW / 2, u64::MAX, u64::MAX);
        assert_eq!(
            grant,
            Some(Grant {
                credit: INITIAL_WINDOW / 2,
                growth: 0
            })
        );
    }

    #[test]
    fn window_doubles_when_the_reader_keeps_up_up_to_the_maximum() {
        let mut w = RecvWindow::new();
        let max = 4 * INITIAL_WINDOW;
        // The sender uses its whole window, the reader drains it and waits: each grant doubles.
        w.on_data(INITIAL_WINDOW).unwrap();
        w.on_reader_blocked();
        let g = w.on_consumed(INITIAL_WINDOW, max, u64::MAX).unwrap();
        assert_eq!(
            g,
            Grant {
                credit: 2 * INITIAL_WINDOW,
                growth: INITIAL_WINDOW
            }
        );
        w.on_data(2 * INITIAL_WINDOW).unwrap();
        w.on_reader_blocked();
        let g = w.on_consumed(2 * INITIAL_WINDOW, max, u64::MAX).unwrap();
        assert_eq!(g.growth, 2 * INITIAL_WINDOW);
        w.on_data(4 * INITIAL_WINDOW).unwrap();
        w.on_reader_blocked();
        let g = w.on_consumed(4 * INITIAL_WINDOW, max, u64::MAX).unwrap();
        assert_eq!(
            g,
            Grant {
                credit: 4 * INITIAL_WINDOW,
                growth: 0
            }
        );
        assert_eq!(w.size(), max);
        assert_eq!(w.on_data(4 * INITIAL_WINDOW + 1), Err(4 * INITIAL_WINDOW));
    }

    #[test]
    fn growth_is_limited_by_the_connection_budget() {
        let mut w = RecvWindow::new();
        w.on_data(INITIAL_WINDOW).unwrap();
        w.on_reader_blocked();
        let g = w.on_consumed(INITIAL_WINDOW, u64::MAX, 1000).unwrap();
        assert_eq!(
            g,
            Grant {
                credit: INITIAL_WINDOW + 1000,
                growth: 1000
            }
        );
    }
}
