//! Bytes from a peer through the frame decoder (see `fuzz/targets.rs`).
#![no_main]

#[path = "../targets.rs"]
mod targets;

#[global_allocator]
static ALLOCATOR: targets::counting::CountingAllocator = targets::counting::CountingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::decode(data));
