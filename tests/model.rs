//! Two I/O-free cores back to back, driven at random and checked against a small model.
//!
//! Each seed drives two [`Connection`]s joined by byte pipes in both directions: the bytes are
//! encoded with the real codec and delivered in random pieces. Both sides open, accept, write,
//! read (in random sizes), close writing, close reading, reset and drop streams in a random
//! interleaving, and the frames they queue are taken and delivered at random moments. Then both
//! sides read everything, and finally drop everything. Checked:
//!
//! * honest peers never see a protocol violation;
//! * every byte a side reads is the next byte its peer wrote on that stream: in order, once;
//! * a direction whose writer closed it cleanly, with nobody resetting or stopping it, is read
//!   whole and then ends with EOF;
//! * once the writer has ended its direction in any way (close, reset, drop) or the reader has,
//!   a read no longer waits;
//! * a stream reset by its reader, or by its writer before the writer closed, reads as reset
//!   on the reader's side once all has arrived;
//! * once both sides dropped every stream, neither core keeps a stream or a buffered byte.
//!
//! Windows that went negative, or any other broken count, panic on the spot (debug build).
//! `MODEL_SEED=n cargo test --test model` replays one seed (`MODEL_SEEDS=n` runs n seeds).

use std::collections::HashMap;

use asynchronous_codec::{Decoder, Encoder};
use bytes::BytesMut;
use libp2p_mplex_halfclose::{
    Codec, Config, Mode, StreamError, StreamId,
    core::{Connection, ReadOutcome, WriteOutcome},
};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// A stream as the model knows it: side 0 or 1 opened it, with this number.
type Key = (usize, u64);

fn key(side: usize, id: StreamId) -> Key {
    if id.opener().is_local() {
        (side, id.num())
    } else {
        (1 - side, id.num())
    }
}

/// One direction of one stream: what its writer wrote, how far its reader read, and how it ended.
#[derive(Debug, Default)]
struct Direction {
    written: Vec<u8>,
    read: usize,
    /// The writer closed writing (FIN), with everything before it written.
    closed_cleanly: bool,
    /// The writer reset the stream, dropped it with this direction open, or was stopped.
    aborted: bool,
    /// The reader closed reading, reset or dropped the stream.
    reader_gone: bool,
    /// The writer reset the stream before closing this direction.
    writer_reset: bool,
    /// The reader reset the stream while the writer had neither reset nor dropped it (else the
    /// reader's reset may find the stream reset already, and do nothing).
    reader_reset: bool,
    /// The writer reset or dropped the stream.
    writer_gone: bool,
    eof_seen: bool,
}

struct Side {
    conn: Connection,
    held: Vec<StreamId>,
    /// Bytes encoded by this side, not yet delivered to the other.
    outgoing: BytesMut,
    /// Bytes delivered from the other side, not yet decoded.
    incoming: BytesMut,
    codec: Codec,
}

struct Pair {
    sides: [Side; 2],
    /// `(stream, writer side)` → the direction from that writer.
    directions: HashMap<(Key, usize), Direction>,
    rng: StdRng,
}

impl Pair {
    fn new(mode: Mode, seed: u64) -> Self {
        let side = || Side {
            conn: Connection::new(mode, Config::default()),
            held: Vec::new(),
            outgoing: BytesMut::new(),
            incoming: BytesMut::new(),
            codec: Codec::new(mode),
        };
        Self {
            sides: [side(), side()],
            directions: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn dir(&mut self, key: Key, writer: usize) -> &mut Direction {
        self.directions.entry((key, writer)).or_default()
    }

    fn pick(&mut self, side: usize) -> Option<StreamId> {
        let held = &self.sides[side].held;
        (!held.is_empty()).then(|| held[self.rng.gen_range(0..held.len())])
    }

    /// One random step.
    fn step(&mut self) {
        let side = self.rng.gen_range(0..2);
        match self.rng.gen_range(0..100) {
            0..8 => {
                if let Ok(Some(id)) = self.sides[side].conn.open_stream() {
                    self.sides[side].held.push(id);
                }
            }
            8..14 => self.accept(side),
            14..34 => {
                if let Some(id) = self.pick(side) {
                    let len = self.rng.gen_range(0..6000);
                    self.write(side, id, len);
                }
            }
            34..54 => {
                if let Some(id) = self.pick(side) {
                    let max = self.rng.gen_range(1..5000);
                    self.read(side, id, max);
                }
            }
            54..60 => {
                if let Some(id) = self.pick(side)
                    && self.sides[side].conn.close_write(id).is_ok()
                {
                    let d = self.dir(key(side, id), side);
                    if !d.aborted {
                        d.closed_cleanly = true;
                    }
                }
            }
            60..63 => {
                if let Some(id) = self.pick(side) {
                    let code = self.rng.gen_range(0..4);
                    if self.sides[side].conn.close_read(id, code).is_ok() {
                        self.reader_gone(side, id);
                    }
                }
            }
            63..65 => {
                if let Some(id) = self.pick(side) {
                    let _ = self.sides[side].conn.reset(id, 3);
                    self.reset(side, id);
                }
            }
            65..69 => {
                if let Some(id) = self.pick(side) {
                    self.drop_stream(side, id);
                }
            }
            69..85 => {
                let frames = self.rng.gen_range(1..8);
                self.transmit(side, frames);
            }
            _ => {
                let len = self.rng.gen_range(1..3000);
                self.deliver(side, len);
            }
        }
    }

    fn accept(&mut self, side: usize) {
        if let Some(id) = self.sides[side].conn.accept() {
            self.sides[side].held.push(id);
        }
    }

    fn write(&mut self, side: usize, id: StreamId, len: usize) {
        let k = key(side, id);
        let start = self.dir(k, side).written.len();
        let data: Vec<u8> = (start..start + len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[1] ^ k.1 as u8)
            .collect();
        if let Ok(WriteOutcome::Written(n)) = self.sides[side].conn.write(id, &data) {
            let d = self.dir(k, side);
            assert!(!d.closed_cleanly, "a write after close_write was taken");
            d.written.extend_from_slice(&data[..n]);
        }
    }

    /// Reads once: `Some(true)` for data, `Some(false)` for EOF or an error, `None` when the
    /// read waits.
    fn read(&mut self, side: usize, id: StreamId, max: usize) -> Option<bool> {
        let k = key(side, id);
        let mut buf = vec![0u8; max];
        let outcome = self.sides[side].conn.read_into(id, &mut buf, drop);
        let d = self.dir(k, 1 - side);
        match outcome {
            Ok(ReadOutcome::Data(n)) => {
                assert!(!d.eof_seen, "{k:?}: data after EOF");
                let expected = &d.written[d.read..d.read + n.min(d.written.len() - d.read)];
                assert_eq!(
                    &buf[..n],
                    expected,
                    "{k:?}: read bytes {}.. are not the next ones written",
                    d.read
                );
                d.read += n;
                Some(true)
            }
            Ok(ReadOutcome::Eof) => {
                if d.closed_cleanly && !d.aborted && !d.reader_gone {
                    assert_eq!(d.read, d.written.len(), "{k:?}: EOF before all data");
                }
                d.eof_seen = true;
                Some(false)
            }
            Ok(ReadOutcome::Blocked) => None,
            Err(_) => Some(false),
        }
    }

    fn reader_gone(&mut self, side: usize, id: StreamId) {
        let k = key(side, id);
        self.dir(k, 1 - side).reader_gone = true;
    }

    fn reset(&mut self, side: usize, id: StreamId) {
        let k = key(side, id);
        let mine = self.dir(k, side);
        if !mine.closed_cleanly {
            mine.writer_reset = true;
        }
        mine.aborted = true;
        mine.writer_gone = true;
        let theirs = self.dir(k, 1 - side);
        if !theirs.writer_gone {
            theirs.reader_reset = true;
        }
        self.dir(k, 1 - side).reader_gone = true;
        self.dir(k, 1 - side).aborted = true;
    }

    fn drop_stream(&mut self, side: usize, id: StreamId) {
        let k = key(side, id);
        self.sides[side].held.retain(|h| *h != id);
        self.sides[side].conn.drop_stream(id);
        // Its writing ends (Close, Reset or nothing if already closed) and it reads no more.
        let mine = self.dir(k, side);
        mine.writer_gone = true;
        if !mine.closed_cleanly {
            // A drop with writing open sends Close if the peer had finished, Reset otherwise:
            // either way the direction ends, not necessarily with all its data.
            mine.aborted = true;
        }
        self.dir(k, 1 - side).reader_gone = true;
    }

    /// Takes up to `frames` frames from `side`'s core into its outgoing bytes.
    fn transmit(&mut self, side: usize, frames: usize) {
        let s = &mut self.sides[side];
        for _ in 0..frames {
            let Some(frame) = s.conn.poll_transmit() else {
                break;
            };
            s.codec.encode(frame, &mut s.outgoing).expect("encode");
        }
        s.conn.on_flushed(s.conn.transmitted());
        while s.conn.poll_event().is_some() {}
    }

    /// Moves up to `len` bytes from `side` to the other side and feeds the frames they complete.
    /// Returns whether anything moved.
    fn deliver(&mut self, side: usize, len: usize) -> bool {
        let n = len.min(self.sides[side].outgoing.len());
        let piece = self.sides[side].outgoing.split_to(n);
        let to = &mut self.sides[1 - side];
        to.incoming.extend_from_slice(&piece);
        let mut fed = false;
        while to.conn.wants_frames() {
            match to.codec.decode(&mut to.incoming) {
                Ok(Some(frame)) => {
                    to.conn
                        .handle_frame(frame)
                        .expect("honest peers never violate the protocol");
                    fed = true;
                }
                Ok(None) => break,
                Err(e) => panic!("honest peers send valid frames: {e}"),
            }
        }
        while to.conn.poll_event().is_some() {}
        n > 0 || fed
    }

    /// Reads every held stream, accepts, sends and delivers until nothing moves.
    fn quiesce(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for side in 0..2 {
                while let Some(id) = self.sides[side].conn.accept() {
                    self.sides[side].held.push(id);
                    moved = true;
                }
                for id in self.sides[side].held.clone() {
                    while self.read(side, id, 1 << 16) == Some(true) {
                        moved = true;
                    }
                }
                let before = self.sides[side].outgoing.len();
                self.transmit(side, usize::MAX);
                moved |= self.sides[side].outgoing.len() != before;
                moved |= self.deliver(side, usize::MAX);
            }
            if !moved {
                return;
            }
        }
        panic!("the pair did not come to rest");
    }

    /// Returns how many cleanly closed directions were checked read whole, and how many reset
    /// ones checked reading as reset.
    fn check_at_rest(&mut self) -> (usize, usize) {
        let (mut whole, mut resets) = (0, 0);
        for side in 0..2 {
            for id in self.sides[side].held.clone() {
                let k = key(side, id);
                let Some(d) = self.directions.get(&(k, 1 - side)) else {
                    continue;
                };
                let ended = d.closed_cleanly || d.aborted || d.reader_gone;
                if ended {
                    assert!(
                        self.read(side, id, 1).is_some(),
                        "{:?} side {side}: the read still waits although the direction ended",
                        k
                    );
                }
                let d = &self.directions[&(k, 1 - side)];
                if d.writer_reset || d.reader_reset {
                    // A reset by the reader, or by the writer before its close, ends reading
                    // with the reset, whatever was buffered.
                    let outcome = self.sides[side].conn.read_into(id, &mut [0u8; 1], drop);
                    assert!(
                        matches!(outcome, Err(StreamError::Reset { .. })),
                        "{k:?} side {side}: a reset stream reads {outcome:?}"
                    );
                    resets += 1;
                }
                let d = &self.directions[&(k, 1 - side)];
                if d.closed_cleanly && !d.aborted && !d.reader_gone {
                    assert_eq!(
                        d.read,
                        d.written.len(),
                        "{k:?}: a cleanly closed direction was not read whole"
                    );
                    assert!(d.eof_seen, "{k:?}: no EOF after a clean close");
                    whole += 1;
                }
            }
        }
        (whole, resets)
    }

    fn drop_all(&mut self) {
        for _ in 0..100 {
            for side in 0..2 {
                while let Some(id) = self.sides[side].conn.accept() {
                    self.sides[side].held.push(id);
                }
                for id in std::mem::take(&mut self.sides[side].held) {
                    self.sides[side].conn.drop_stream(id);
                }
            }
            self.quiesce();
            if self.sides.iter().all(|s| s.held.is_empty()) {
                break;
            }
        }
        for (side, s) in self.sides.iter().enumerate() {
            assert_eq!(s.conn.num_streams(), 0, "side {side} keeps streams");
            assert_eq!(s.conn.buffered_bytes(), 0, "side {side} keeps data");
            assert!(s.outgoing.is_empty() && s.incoming.is_empty());
        }
    }
}

/// Runs one seed; returns the bytes read, the clean directions checked whole and the reset ones
/// checked reading as reset.
fn run(mode: Mode, seed: u64) -> (usize, usize, usize) {
    let mut pair = Pair::new(mode, seed);
    let steps = pair.rng.gen_range(20..400);
    for _ in 0..steps {
        pair.step();
    }
    pair.quiesce();
    let (whole, resets) = pair.check_at_rest();
    let read = pair.directions.values().map(|d| d.read).sum();
    pair.drop_all();
    (read, whole, resets)
}

#[test]
fn two_cores_agree_with_the_model_for_every_seed() {
    let seeds: Vec<u64> = match std::env::var("MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("MODEL_SEED is a number")],
        Err(_) => {
            let n = std::env::var("MODEL_SEEDS").map_or(2000, |n| n.parse().expect("a number"));
            (0..n).collect()
        }
    };
    let (mut read, mut whole, mut resets) = (0, 0, 0);
    let many = seeds.len() > 100;
    for seed in seeds {
        for mode in [Mode::Extension, Mode::PlainMplex] {
            match std::panic::catch_unwind(|| run(mode, seed)) {
                Ok((r, w, x)) => {
                    read += r;
                    whole += w;
                    resets += x;
                }
                Err(_) => panic!(
                    "seed {seed} ({mode:?}) failed; replay: MODEL_SEED={seed} cargo test --test model"
                ),
            }
        }
    }
    println!(
        "{read} bytes read, {whole} cleanly closed directions read whole, {resets} reset ones read as reset"
    );
    if many {
        // The random walks do reach the cases the checks are about.
        assert!(
            read > 10_000_000 && whole > 1000 && resets > 100,
            "{read} bytes, {whole} clean, {resets} reset"
        );
    }
}
