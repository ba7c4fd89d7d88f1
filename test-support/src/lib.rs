//! Code shared by libp2p-mplex-halfclose's tests, benches, fuzz targets and developer tools.
//! Not published; editing it rebuilds everything that uses it, and nothing is included by path.
//!
//! | module | what | used by |
//! |---|---|---|
//! | [`counting`] | a counting global allocator: bytes allocated, per process or per thread | memory tests, benches, muxbench, soak, fuzz |
//! | [`fuzz_targets`] | the fuzz targets' bodies | `fuzz/`, `tests/fuzz_corpus.rs` |
//! | [`driven`] | a task that drives any `StreamMuxer`; in-memory pairs; raw frames | tests, soak, the muxbench harness |
//! | [`muxbench`] | the muxers, links and measurements compared by muxbench | `tools` (muxbench), `benches/muxers.rs` |
//!
//! The fuzz crate builds it without the `harness` feature (no tokio, no libp2p), which leaves
//! out [`driven`] and [`muxbench`].

pub mod counting;
#[cfg(feature = "harness")]
pub mod driven;
pub mod fuzz_targets;
#[cfg(feature = "harness")]
pub mod muxbench;
pub mod node;
