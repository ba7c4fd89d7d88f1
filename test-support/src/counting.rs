//! A counting global allocator for the tests, examples, benches and fuzz targets that measure
//! memory. Install it in the binary with
//! `#[global_allocator] static A: CountingAllocator = CountingAllocator;`.
//!
//! Two counts: the whole process's, between [`start`] and [`stop`] (for muxers driven by tasks
//! on several threads), and the current thread's, between [`start_this_thread`] and
//! [`stop_this_thread`] (for the I/O-free core, so that other tests of the same binary do not
//! disturb the count). While neither counts, an allocation costs one relaxed load of a flag
//! that does not change and one thread-local read, so timed code runs as with the system
//! allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicBool, AtomicIsize, Ordering},
};

/// The system allocator, counting the bytes it holds.
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static HELD: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    // `const`-initialised and without destructors: reading them allocates nothing, also from
    // inside the allocator.
    static THREAD_COUNTING: Cell<bool> = const { Cell::new(false) };
    static THREAD_HELD: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        let now = HELD.fetch_add(delta, Ordering::Relaxed) + delta;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
    let _ = THREAD_COUNTING.try_with(|on| {
        if on.get() {
            let _ = THREAD_HELD.try_with(|held| held.set(held.get() + delta));
        }
    });
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

/// Starts counting the process from zero: from now on [`held`] is the bytes allocated minus the
/// bytes freed, and [`peak`] the highest it has been.
pub fn start() {
    COUNTING.store(false, Ordering::Relaxed);
    HELD.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
}

/// Stops counting the process; [`held`] and [`peak`] keep their values.
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

/// Starts counting this thread's allocations from zero (see [`held_this_thread`]). Panics if
/// [`CountingAllocator`] is not the global allocator: a count that counts nothing would let
/// every check pass.
pub fn start_this_thread() {
    THREAD_HELD.with(|held| held.set(0));
    THREAD_COUNTING.with(|on| on.set(true));
    let probe = std::hint::black_box(Vec::<u8>::with_capacity(64));
    assert!(
        held_this_thread() >= 64,
        "install counting::CountingAllocator as the global allocator"
    );
    drop(probe);
}

/// Stops counting this thread.
pub fn stop_this_thread() {
    THREAD_COUNTING.with(|on| on.set(false));
}

/// Bytes this thread allocated minus bytes it freed since [`start_this_thread`].
pub fn held_this_thread() -> isize {
    THREAD_HELD.with(Cell::get)
}
