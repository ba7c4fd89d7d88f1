//! Criterion benchmarks: our muxer in both modes against libp2p-mplex, libp2p-yamux and no muxer,
//! over an in-memory pipe and TCP on 127.0.0.1, for each test of `examples/muxbench`:
//! throughput with 1 and 64 streams, request/response latency, and the stream open rate.
//!
//! `cargo bench` (HTML report and plots under `target/criterion/report`). For one table with
//! ratios, measured in one process round by round, run `cargo run --release --example muxbench`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../examples/muxbench/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use harness::{Link, Muxer};

const LINKS: [(Link, &str); 2] = [(Link::Memory, "memory pipe"), (Link::Tcp, "TCP")];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `f` in a task of `runtime`, as application code runs (not on the thread that waits).
fn in_task<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    f: impl Future<Output = T> + Send + 'static,
) -> T {
    runtime.block_on(runtime.spawn(f)).expect("benchmark task")
}

fn throughput(c: &mut Criterion) {
    let runtime = runtime();
    const TOTAL: usize = 32 << 20;
    for (link, link_name) in LINKS {
        for streams in [1, 64] {
            let streams_name = if streams == 1 {
                "1 stream".to_string()
            } else {
                format!("{streams} streams")
            };
            let mut group = c.benchmark_group(format!("throughput/{streams_name}/{link_name}"));
            group.throughput(Throughput::Bytes(TOTAL as u64));
            group.sample_size(10);
            for muxer in Muxer::ALL {
                group.bench_function(muxer.name(), |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let mib = TOTAL as f64 / (1 << 20) as f64;
                            let sample = in_task(
                                &runtime,
                                harness::throughput(muxer, link, streams, TOTAL / streams),
                            );
                            total += Duration::from_secs_f64(mib / sample.value);
                        }
                        total
                    })
                });
            }
            group.finish();
        }
    }
}

fn request_response(c: &mut Criterion) {
    let runtime = runtime();
    for (link, link_name) in LINKS {
        let mut group = c.benchmark_group(format!("request_response/{link_name}"));
        for muxer in Muxer::ALL {
            group.bench_function(muxer.name(), |b| {
                b.iter_custom(|iters| {
                    let latencies = in_task(
                        &runtime,
                        harness::request_response_latencies(muxer, link, iters as usize),
                    );
                    Duration::from_secs_f64(latencies.iter().sum::<f64>() / 1e6)
                })
            });
        }
        group.finish();
    }
}

fn open_close(c: &mut Criterion) {
    let runtime = runtime();
    for (link, link_name) in LINKS {
        let mut group = c.benchmark_group(format!("open_close/{link_name}"));
        group.throughput(Throughput::Elements(1));
        for muxer in Muxer::ALL.into_iter().filter(|m| *m != Muxer::None) {
            group.bench_function(muxer.name(), |b| {
                b.iter_custom(|iters| {
                    let streams = iters.max(8) as usize;
                    let sample = in_task(&runtime, harness::open_close(muxer, link, streams));
                    Duration::from_secs_f64(sample.value * iters as f64 / 1e6)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, throughput, request_response, open_close);
criterion_main!(benches);
