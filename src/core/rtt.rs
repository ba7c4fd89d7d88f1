//! The connection's round-trip time, measured with Ping and Pong (extension mode).
//!
//! The receive windows grow when a stream consumes a whole window in less than two round trips
//! (see `flow`), so they need the round trip of the link, which nothing else in the protocol
//! shows. A Ping goes out with the connection's first credit grant, so that the time is known by
//! the time a window can grow, and again with a grant once the last measurement is
//! [`PING_INTERVAL`] old. One Ping at most is in flight; a Pong that does not answer it is
//! ignored.

use std::time::{Duration, Instant};

/// How old a measurement may get before the next grant carries a new Ping.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(10);

/// The round-trip time and the Ping in flight.
#[derive(Debug, Default)]
pub(crate) struct RoundTrip {
    /// The latest measurement.
    latest: Option<Duration>,
    /// The Ping in flight: its nonce, and when it was handed to the socket (`None` while it is
    /// still queued).
    in_flight: Option<(u64, Option<Instant>)>,
    /// When the last Ping was handed to the socket.
    last_sent: Option<Instant>,
    next_nonce: u64,
}

impl RoundTrip {
    /// The latest round-trip time measured, if any.
    pub(crate) fn get(&self) -> Option<Duration> {
        self.latest
    }

    /// The nonce of a Ping to queue now, if one is due: none in flight, and no measurement yet
    /// or the last Ping sent [`PING_INTERVAL`] ago.
    pub(crate) fn ping_due(&mut self, now: Instant) -> Option<u64> {
        if self.in_flight.is_some() {
            return None;
        }
        let due = self
            .last_sent
            .is_none_or(|sent| now.saturating_duration_since(sent) >= PING_INTERVAL);
        if !due {
            return None;
        }
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.in_flight = Some((nonce, None));
        Some(nonce)
    }

    /// The Ping `nonce` left for the socket at `now`.
    pub(crate) fn on_ping_sent(&mut self, nonce: u64, now: Instant) {
        if let Some((in_flight, sent @ None)) = &mut self.in_flight
            && *in_flight == nonce
        {
            *sent = Some(now);
            self.last_sent = Some(now);
        }
    }

    /// A Pong arrived at `now`; returns whether it answered the Ping in flight.
    pub(crate) fn on_pong(&mut self, nonce: u64, now: Instant) -> bool {
        match self.in_flight {
            Some((in_flight, Some(sent))) if in_flight == nonce => {
                self.latest = Some(now.saturating_duration_since(sent));
                self.in_flight = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pong_times_the_ping_it_answers_and_others_are_ignored() {
        let mut rtt = RoundTrip::default();
        let start = Instant::now();
        let nonce = rtt.ping_due(start).unwrap();
        // One Ping at a time.
        assert_eq!(rtt.ping_due(start), None);
        // Not yet sent: a Pong cannot answer it.
        assert!(!rtt.on_pong(nonce, start));
        rtt.on_ping_sent(nonce, start + Duration::from_millis(1));
        assert!(!rtt.on_pong(nonce + 1, start + Duration::from_millis(5)));
        assert!(rtt.on_pong(nonce, start + Duration::from_millis(21)));
        assert_eq!(rtt.get(), Some(Duration::from_millis(20)));
        // A second Pong for the same nonce changes nothing.
        assert!(!rtt.on_pong(nonce, start + Duration::from_secs(1)));
        assert_eq!(rtt.get(), Some(Duration::from_millis(20)));
        // The next Ping waits for the interval.
        assert_eq!(rtt.ping_due(start + Duration::from_secs(5)), None);
        assert!(
            rtt.ping_due(start + PING_INTERVAL + Duration::from_millis(1))
                .is_some()
        );
    }
}
