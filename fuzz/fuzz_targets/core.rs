//! Frames from a peer and application calls through the I/O-free core (see `fuzz/targets.rs`).
#![no_main]

#[path = "../targets.rs"]
mod targets;

#[global_allocator]
static ALLOCATOR: targets::counting::CountingAllocator = targets::counting::CountingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::core(data));
