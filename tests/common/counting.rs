//! A counting global allocator for the tests, examples and benches that measure memory. Install
//! it in the binary with `#[global_allocator] static A: CountingAllocator = CountingAllocator;`.
//! It counts only between [`start`] and [`stop`]; while it does not, it costs one relaxed load
//! of a flag that does not change, so timed code runs as with the system allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicBool, AtomicIsize, Ordering},
};

/// The system allocator, counting the bytes it holds.
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static HELD: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        let now = HELD.fetch_add(delta, Ordering::Relaxed) + delta;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts counting from zero: from now on [`held`] is the bytes allocated minus the bytes freed,
/// and [`peak`] the highest it has been.
pub fn start() {
    COUNTING.store(false, Ordering::Relaxed);
    HELD.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
}

/// Stops counting; [`held`] and [`peak`] keep their values.
pub fn stop() {
    COUNTING.store(false, Ordering::Relaxed);
}

/// Bytes allocated minus bytes freed since [`start`] (negative if more was freed).
pub fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

/// The highest [`held`] since [`start`].
pub fn peak() -> isize {
    PEAK.load(Ordering::Relaxed)
}
