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
                Ok(())
            }
            None => Err(self.remaining),
        }
    }

    /// The application consumed `len` bytes; `still_buffered` bytes are left unread.
    ///
    /// Grants credit once half a window has been consumed. If the reader has drained everything
    /// (it is faster than the sender's credit lets the link be), the window doubles, bounded by
    /// `max_size` and by `budget`, the growth the connection can still afford.
    pub(crate) fn on_consumed(
        &mut self,
        len: u64,
        still_buffered: u64,
        max_size: u64,
        budget: u64,
    ) -> Option<Grant> {
        self.consumed += len;
        if self.consumed < self.size / 2 {
            return None;
        }
        let growth = if still_buffered == 0 {
            self.size
                .min(max_size.saturating_sub(self.size))
                .min(budget)
        } else {
            0
        };
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
        w.on_data(INITIAL_WINDOW).unwrap();
        assert_eq!(
            w.on_consumed(INITIAL_WINDOW / 2 - 1, 1, u64::MAX, u64::MAX),
            None
        );
        let grant = w.on_consumed(1, 1, u64::MAX, u64::MAX).unwrap();
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
    fn window_doubles_when_the_reader_keeps_up_up_to_the_maximum() {
        let mut w = RecvWindow::new();
        let max = 4 * INITIAL_WINDOW;
        w.on_data(INITIAL_WINDOW).unwrap();
        let g = w.on_consumed(INITIAL_WINDOW, 0, max, u64::MAX).unwrap();
        assert_eq!(
            g,
            Grant {
                credit: 2 * INITIAL_WINDOW,
                growth: INITIAL_WINDOW
            }
        );
        w.on_data(2 * INITIAL_WINDOW).unwrap();
        let g = w.on_consumed(2 * INITIAL_WINDOW, 0, max, u64::MAX).unwrap();
        assert_eq!(g.growth, 2 * INITIAL_WINDOW);
        w.on_data(4 * INITIAL_WINDOW).unwrap();
        let g = w.on_consumed(4 * INITIAL_WINDOW, 0, max, u64::MAX).unwrap();
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
        let g = w.on_consumed(INITIAL_WINDOW, 0, u64::MAX, 1000).unwrap();
        assert_eq!(
            g,
            Grant {
                credit: INITIAL_WINDOW + 1000,
                growth: 1000
            }
        );
    }
}
