//! Frames from a peer and application calls through the I/O-free core (see `test_support::fuzz_targets`).
#![no_main]

use test_support::fuzz_targets as targets;

#[global_allocator]
static ALLOCATOR: test_support::counting::CountingAllocator =
    test_support::counting::CountingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::core(data));
