//! The fuzz targets (`fuzz/`, run with `cargo fuzz`) over their committed corpus: every input
//! the fuzzer kept for its coverage, and every input that once crashed a target, runs in
//! `cargo test` too.

use test_support::fuzz_targets as targets;

// The core target counts what the connection allocates, per thread.
#[global_allocator]
static ALLOCATOR: test_support::counting::CountingAllocator =
    test_support::counting::CountingAllocator;

use std::path::Path;

/// Runs `target` on every file of `fuzz/seeds/<name>`; returns how many there were.
fn run_corpus(name: &str, target: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(name);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    inputs.sort();
    for path in &inputs {
        let data = std::fs::read(path).expect("corpus file");
        let result = std::panic::catch_unwind(|| target(&data));
        assert!(result.is_ok(), "{name} fails on {}", path.display());
    }
    inputs.len()
}

#[test]
fn the_decoder_survives_its_fuzz_corpus() {
    assert!(
        run_corpus("decode", targets::decode) > 100,
        "a corpus worth the name"
    );
}

#[test]
fn the_core_survives_its_fuzz_corpus() {
    assert!(
        run_corpus("core", targets::core) > 100,
        "a corpus worth the name"
    );
}
