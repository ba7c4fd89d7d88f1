//! [`Shared`]: the state the muxer and its streams share, behind one short-held lock: the
//! I/O-free core, the buffer pool, and every waker of the connection. Every call into the core
//! goes through [`Shared::stream_call`] (from a stream) or the driver's rounds, and then
//! [`Shared::dispatch_events`] wakes whoever the core's events concern. The lock is never held
//! across I/O.

use std::task::Waker;

use super::pool::BufferPool;
use crate::{
    core::{Connection, Event, StreamMap},
    frame::StreamId,
};

/// The wakers of one stream: read and write kept apart so that the two halves of a split stream,
/// polled from different tasks, never steal each other's wake-up. `flush` is the task waiting
/// in a flush, a close-write or a close-read (all on the write half, or on the whole stream).
#[derive(Debug, Default)]
struct StreamWakers {
    read: Option<Waker>,
    write: Option<Waker>,
    flush: Option<Waker>,
    /// Listed in [`Shared::flushing`].
    flushing: bool,
}

/// State shared by the muxer and its streams, behind one short-held lock. Never held across I/O.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) core: Connection,
    /// Spent buffers for the next writes and received bodies.
    pub(crate) pool: BufferPool,
    wakers: StreamMap<StreamWakers>,
    /// Streams whose `flush` waker waits for the socket flush (some may have been woken since).
    flushing: Vec<StreamId>,
    /// Wakes the task that drives the connection (the one calling the `StreamMuxer` methods);
    /// `None` once the muxer is gone.
    pub(crate) driver: Option<Waker>,
    /// The task waiting in `poll_inbound` and in `poll_outbound` (at the stream limit).
    pub(crate) inbound: Option<Waker>,
    pub(crate) outbound: Option<Waker>,
    /// The connection's span (`mplex_halfclose{connection=N mode=..}`): entered by every call
    /// into the core, so that what the core logs names its connection.
    pub(crate) span: tracing::Span,
}

impl Shared {
    pub(crate) fn new(core: Connection, driver: Waker, span: tracing::Span) -> Self {
        Self {
            span,
            core,
            pool: BufferPool::default(),
            wakers: StreamMap::default(),
            flushing: Vec::new(),
            driver: Some(driver),
            inbound: None,
            outbound: None,
        }
    }

    /// Wakes whoever waits on what the core reported. A stream's flush waiter is woken with its
    /// reader and its writer: a reset, a stop or the peer's Close can decide how a flush or a
    /// close ends (see `Connection::poll_flushed`).
    pub(crate) fn dispatch_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Readable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id) {
                        wake(&mut w.read);
                        wake(&mut w.flush);
                    }
                }
                Event::Writable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id) {
                        wake(&mut w.write);
                        wake(&mut w.flush);
                    }
                }
                Event::InboundReady => wake(&mut self.inbound),
                Event::StreamSlotFree => wake(&mut self.outbound),
                Event::ConnectionClosed => {
                    for wakers in self.wakers.values_mut() {
                        wake(&mut wakers.read);
                        wake(&mut wakers.write);
                        wake(&mut wakers.flush);
                        wakers.flushing = false;
                    }
                    self.flushing.clear();
                    wake(&mut self.inbound);
                    wake(&mut self.outbound);
                    self.wake_driver();
                }
            }
        }
    }

    pub(crate) fn register_read(&mut self, id: StreamId, waker: &Waker) {
        store(&mut self.wakers.entry(id).or_default().read, waker);
    }

    pub(crate) fn register_write(&mut self, id: StreamId, waker: &Waker) {
        store(&mut self.wakers.entry(id).or_default().write, waker);
    }

    pub(crate) fn register_flush(&mut self, id: StreamId, waker: &Waker) {
        let wakers = self.wakers.entry(id).or_default();
        if !wakers.flushing {
            wakers.flushing = true;
            self.flushing.push(id);
        }
        store(&mut wakers.flush, waker);
    }

    pub(crate) fn forget_stream(&mut self, id: StreamId) {
        if self.wakers.remove(&id).is_some_and(|w| w.flushing) {
            self.flushing.retain(|f| *f != id);
        }
    }

    /// Runs an application call on the core, then wakes whoever it concerns: the driver if the
    /// call let a paused connection read again, and the tasks waiting on what the core reported.
    /// Frames the call queued are the caller's to send (see `handle`).
    pub(crate) fn stream_call<T>(
        &mut self,
        call: impl FnOnce(&mut Connection, &mut BufferPool) -> T,
    ) -> T {
        let was_reading = self.core.wants_frames();
        let result = {
            // Borrowed, not cloned: this runs on every read and write.
            let _entered = self.span.enter();
            call(&mut self.core, &mut self.pool)
        };
        if !was_reading && self.core.wants_frames() {
            self.wake_driver();
        }
        self.dispatch_events();
        result
    }

    /// Wakes the driver so it sends what the application queued or reads again.
    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = &self.driver {
            w.wake_by_ref();
        }
    }

    pub(crate) fn on_flushed(&mut self, frames: u64) {
        self.core.on_flushed(frames);
        for id in self.flushing.drain(..) {
            if let Some(w) = self.wakers.get_mut(&id) {
                w.flushing = false;
                wake(&mut w.flush);
            }
        }
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

pub(crate) fn store(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}
