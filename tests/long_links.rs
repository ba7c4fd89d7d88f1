//! One stream over a long, fast link, on virtual time: two I/O-free cores back to back across a
//! simulated link, with nothing real in between, so that every run is the same.
//!
//! The link is what the emulator was: each direction is paced to a rate, every frame
//! waits half the round trip on top, and a queue of about one bandwidth-delay product sits in
//! front of it, as on a router; when the queue is full, the sender's socket takes nothing (as a
//! TCP socket would). The sender writes as fast as its credit lets it; the reader reads all that
//! arrives, or at a set pace, or nothing.
//!
//! For a grid of round trips (1 to 300 ms) and rates (10 Mbit/s to 10 Gbit/s) one stream must
//! reach 90 % of the rate the link allows within 20 round trips and hold it, where the
//! bandwidth-delay product fits in the largest window (16 MiB by default), and otherwise the
//! rate that window allows. A slow reader keeps a small window, a stalled one its first, and no
//! window passes the maximum.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use libp2p_mplex_halfclose::{
    Config, Frame, Mode, StreamId,
    core::{Connection, INITIAL_WINDOW, ReadOutcome, WriteOutcome},
};

const CHUNK: usize = 64 * 1024;
const SENDER: usize = 0;
const RECEIVER: usize = 1;

/// One direction of the link.
struct Direction {
    /// Bytes per second.
    rate: f64,
    one_way: Duration,
    /// How many bytes may wait to be sent.
    capacity: usize,
    queued: usize,
    busy_until: Instant,
}

enum Event {
    /// A frame reaches side `to`.
    Arrive { to: usize, frame: Frame },
    /// `size` bytes left the queue of side `from`'s direction.
    Departed { from: usize, size: usize },
    /// The paced reader may read again.
    ReadTick,
}

struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// How the receiving application reads.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// Everything, as soon as it arrives.
    Fast,
    /// At most this many bytes per second.
    Paced(f64),
    /// Nothing.
    Stalled,
}

/// What a run saw.
struct Run {
    /// Bytes read by the receiving application in each round trip.
    per_round_trip: Vec<u64>,
    /// The receive window after each round trip.
    windows: Vec<u64>,
}

struct Sim {
    start: Instant,
    now: Instant,
    cores: [Connection; 2],
    links: [Direction; 2],
    events: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    ids: [StreamId; 2],
    reader: Reader,
    allowance: f64,
    read_total: u64,
    payload: Bytes,
}

/// Bytes a frame takes on the wire (its body and about four bytes of head).
fn wire_size(frame: &Frame) -> usize {
    match frame {
        Frame::Data { data, .. } => data.len() + 4,
        Frame::NewStream { name, .. } => name.len() + 4,
        _ => 8,
    }
}

impl Sim {
    fn new(rtt: Duration, bits_per_second: f64, reader: Reader, config: Config) -> Self {
        let start = Instant::now();
        let rate = bits_per_second / 8.0;
        let bdp = (rate * rtt.as_secs_f64()) as usize;
        let direction = || Direction {
            rate,
            one_way: rtt / 2,
            capacity: bdp.max(4 * CHUNK),
            queued: 0,
            busy_until: start,
        };
        let mut sim = Self {
            start,
            now: start,
            cores: [
                Connection::new(Mode::Extension, config.clone()),
                Connection::new(Mode::Extension, config),
            ],
            links: [direction(), direction()],
            events: BinaryHeap::new(),
            seq: 0,
            ids: [StreamId::local(0), StreamId::remote(0)],
            reader,
            allowance: 0.0,
            read_total: 0,
            payload: Bytes::from(vec![7u8; CHUNK]),
        };
        for core in &mut sim.cores {
            core.set_time(start);
        }
        let id = sim.cores[SENDER].open_stream().unwrap().unwrap();
        assert_eq!(id, sim.ids[SENDER]);
        if let Reader::Paced(_) = reader {
            sim.schedule(start, Event::ReadTick);
        }
        sim.write();
        sim.pump(SENDER);
        sim
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// The sender writes until its credit or its send buffer stops it.
    fn write(&mut self) {
        let id = self.ids[SENDER];
        let payload = self.payload.clone();
        for _ in 0..10_000 {
            let written = self.cores[SENDER]
                .write_with(id, &payload, |taken| payload.slice(..taken.len()))
                .unwrap();
            if written == WriteOutcome::Blocked {
                return;
            }
        }
    }

    /// Side `from` hands frames to its direction of the link while its queue has room.
    fn pump(&mut self, from: usize) {
        loop {
            if self.links[from].queued >= self.links[from].capacity {
                return;
            }
            let Some(frame) = self.cores[from].poll_transmit() else {
                return;
            };
            let size = wire_size(&frame);
            let link = &mut self.links[from];
            link.queued += size;
            let departs =
                link.busy_until.max(self.now) + Duration::from_secs_f64(size as f64 / link.rate);
            link.busy_until = departs;
            let arrives = departs + link.one_way;
            self.schedule(departs, Event::Departed { from, size });
            self.schedule(
                arrives,
                Event::Arrive {
                    to: 1 - from,
                    frame: frame.as_seen_by_peer(),
                },
            );
            let core = &mut self.cores[from];
            core.on_flushed(core.transmitted());
        }
    }

    /// The receiving application reads what it may.
    fn read(&mut self) {
        let id = self.ids[RECEIVER];
        let core = &mut self.cores[RECEIVER];
        if core.accept().is_some() {
            // The stream is known now; reads below take it.
        }
        loop {
            let max = match self.reader {
                Reader::Fast => usize::MAX,
                Reader::Paced(_) if self.allowance >= 1.0 => self.allowance as usize,
                _ => return,
            };
            match core.read(id, max) {
                Ok(ReadOutcome::Data(data)) => {
                    self.read_total += data.len() as u64;
                    if let Reader::Paced(_) = self.reader {
                        self.allowance -= data.len() as f64;
                    }
                }
                _ => return,
            }
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse(next)) = self.events.pop() else {
            return false;
        };
        self.now = next.at;
        for core in &mut self.cores {
            core.set_time(next.at);
        }
        match next.event {
            Event::Arrive { to, frame } => {
                self.cores[to].handle_frame(frame).expect("a valid frame");
                if to == RECEIVER {
                    self.read();
                } else {
                    self.write();
                }
                self.pump(to);
            }
            Event::Departed { from, size } => {
                self.links[from].queued -= size;
                if from == SENDER {
                    self.write();
                }
                self.pump(from);
            }
            Event::ReadTick => {
                let Reader::Paced(rate) = self.reader else {
                    unreachable!()
                };
                let tick = Duration::from_micros(500);
                // A token bucket of at most one chunk's worth of burst.
                self.allowance = (self.allowance + rate * tick.as_secs_f64())
                    .min(rate * tick.as_secs_f64() + CHUNK as f64);
                self.read();
                self.pump(RECEIVER);
                self.schedule(self.now + tick, Event::ReadTick);
            }
        }
        true
    }

    /// Runs for `round_trips` periods of `rtt`.
    fn run(mut self, rtt: Duration, round_trips: usize, max_window: u64) -> Run {
        let mut per_round_trip = Vec::new();
        let mut windows = Vec::new();
        let mut read_before = 0;
        for n in 1..=round_trips {
            let until = self.start + rtt * n as u32;
            while self.events.peek().is_some_and(|e| e.0.at <= until) {
                assert!(self.step());
                let window = self.cores[RECEIVER]
                    .receive_window(self.ids[RECEIVER])
                    .unwrap_or(INITIAL_WINDOW);
                assert!(
                    window <= max_window,
                    "the window passed its maximum: {window}"
                );
            }
            per_round_trip.push(self.read_total - read_before);
            read_before = self.read_total;
            windows.push(
                self.cores[RECEIVER]
                    .receive_window(self.ids[RECEIVER])
                    .unwrap_or(INITIAL_WINDOW),
            );
        }
        Run {
            per_round_trip,
            windows,
        }
    }
}

const MIB: u64 = 1 << 20;

#[test]
fn one_stream_fills_long_fast_links_within_twenty_round_trips() {
    let max_window = 16 * MIB;
    let mut report = String::new();
    for rtt_ms in [1u64, 20, 100, 300] {
        for rate in [10e6, 100e6, 1e9, 10e9] {
            let rtt = Duration::from_millis(rtt_ms);
            // Where a 64 KiB frame takes longer to send than a round trip (10 Mbit/s, 1 ms),
            // nothing can arrive faster than a frame: time is counted in frame times there.
            let frame_time = Duration::from_secs_f64(CHUNK as f64 * 8.0 / rate);
            let period = rtt.max(frame_time);
            let round_trips = 40;
            let run = Sim::new(rtt, rate, Reader::Fast, Config::default()).run(
                period,
                round_trips,
                max_window,
            );
            // What the link allows of payload per period (frame heads take 4 bytes in 64 KiB),
            // or what the largest window allows per round trip.
            let link = rate / 8.0 * period.as_secs_f64() * CHUNK as f64 / (CHUNK + 4) as f64;
            let allowed = link.min(max_window as f64 * (period.as_secs_f64() / rtt.as_secs_f64()));
            let reached = run
                .per_round_trip
                .iter()
                .position(|&bytes| bytes as f64 >= 0.9 * allowed)
                .map(|n| n + 1);
            let second_half = &run.per_round_trip[round_trips / 2..];
            let steady =
                second_half.iter().sum::<u64>() as f64 / second_half.len() as f64 / allowed;
            let window = *run.windows.last().unwrap();
            report.push_str(&format!(
                "{rtt_ms:>3} ms {:>6} Mbit/s: 90% after {reached:?} round trips, \
                 steady {:.1}%, window {} KiB\n",
                rate / 1e6,
                steady * 100.0,
                window / 1024
            ));
            let cell = format!("{rtt_ms} ms, {} Mbit/s", rate / 1e6);
            assert!(
                reached.is_some_and(|n| n <= 20),
                "{cell}: 90% after {reached:?} round trips\n{report}"
            );
            assert!(steady >= 0.9, "{cell}: steady {steady:.2}\n{report}");
        }
    }
    println!("{report}");
}

#[test]
fn a_slow_reader_keeps_a_small_window_and_a_stalled_one_its_first() {
    let rtt = Duration::from_millis(100);
    // 1 MB/s on a 1 Gbit/s link: the reader's own bandwidth-delay product is 100 KB. A window
    // grows while half of it takes the reader less than two round trips, so it ends between
    // four and eight of those products: 512 KiB, where the link's would be 16 MiB.
    let slow = Sim::new(rtt, 1e9, Reader::Paced(1e6), Config::default()).run(rtt, 50, 16 * MIB);
    assert_eq!(*slow.windows.last().unwrap(), 2 * INITIAL_WINDOW);
    let second_half: u64 = slow.per_round_trip[25..].iter().sum();
    let pace = second_half as f64 / (25.0 * rtt.as_secs_f64());
    assert!(
        (0.9e6..=1.1e6).contains(&pace),
        "the reader reads at its pace: {pace}"
    );
    // 20 MB/s: a window of its own pace, not the maximum. Its round trip holds 2 MB, so the
    // window ends between 8 and 16 MB: 8 MiB.
    let medium = Sim::new(rtt, 1e9, Reader::Paced(20e6), Config::default()).run(rtt, 60, 16 * MIB);
    let window = *medium.windows.last().unwrap();
    assert_eq!(window, 8 * MIB, "a 20 MB/s reader's window");
    // Nothing read: the window never moves, and the sender stops at it.
    let stalled = Sim::new(rtt, 1e9, Reader::Stalled, Config::default()).run(rtt, 20, 16 * MIB);
    assert!(stalled.windows.iter().all(|&w| w == INITIAL_WINDOW));
    assert_eq!(stalled.per_round_trip.iter().sum::<u64>(), 0);
}

#[test]
fn past_the_largest_window_a_stream_holds_the_rate_it_allows() {
    // 300 ms at 1 Gbit/s needs 37.5 MB; with a largest window of 4 MiB the stream moves
    // 4 MiB per round trip (13.9 MB/s) and holds it.
    let rtt = Duration::from_millis(300);
    let mut config = Config::default();
    config.set_max_stream_window(4 * MIB);
    let run = Sim::new(rtt, 1e9, Reader::Fast, config).run(rtt, 40, 4 * MIB);
    let steady = run.per_round_trip[20..].iter().sum::<u64>() as f64 / 20.0;
    assert!(
        steady >= 0.9 * (4 * MIB) as f64,
        "{steady} bytes per round trip with a 4 MiB window"
    );
    assert_eq!(*run.windows.last().unwrap(), 4 * MIB);
}
