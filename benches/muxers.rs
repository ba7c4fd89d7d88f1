//! Criterion benchmarks: our muxer in both modes against libp2p-mplex, libp2p-yamux and no muxer,
//! over an in-memory pipe and TCP on 127.0.0.1, for each test of muxbench (`tools/src/bin/muxbench.rs`):
//! throughput with 1 and 64 streams, request/response latency, the stream open rate, and the
//! memory an idle stream costs (in bytes, counted by the allocator, not timed).
//!
//! `cargo bench` (HTML report and plots under `target/criterion/report`). For one table with
//! ratios, measured in one process round by round, run `cargo run --release -p tools --bin muxbench`.

use std::time::Duration;

use criterion::{
    Criterion, Throughput, criterion_group, criterion_main,
    measurement::{Measurement, ValueFormatter},
};
use test_support::muxbench::{self, Link, Muxer};

#[global_allocator]
static ALLOCATOR: test_support::counting::CountingAllocator =
    test_support::counting::CountingAllocator;

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
                                muxbench::throughput(muxer, link, streams, TOTAL / streams),
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
                        muxbench::request_response_latencies(muxer, link, iters as usize),
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
                    let sample = in_task(&runtime, muxbench::open_close(muxer, link, streams));
                    Duration::from_secs_f64(sample.value * iters as f64 / 1e6)
                })
            });
        }
        group.finish();
    }
}

/// Streams held open per connection for the memory measurement (within every muxer's default
/// stream limit of 128).
const IDLE_STREAMS: usize = 100;

/// Memory per idle stream, both ends together, for each muxer: criterion's report of bytes
/// (see [`AllocatedBytes`]).
fn idle_stream_memory(c: &mut Criterion<AllocatedBytes>) {
    let runtime = runtime();
    let mut group = c.benchmark_group("memory per idle stream/memory pipe");
    group.sample_size(10);
    for muxer in Muxer::ALL.into_iter().filter(|m| *m != Muxer::None) {
        group.bench_function(muxer.name(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let sample = in_task(
                            &runtime,
                            muxbench::idle_stream_memory(muxer, Link::Memory, IDLE_STREAMS),
                        );
                        sample.value
                    })
                    .sum::<f64>()
            })
        });
    }
    group.finish();
}

/// A criterion measurement in bytes: the values come from the benchmark's own count
/// (`muxbench::idle_stream_memory`, with the counting global allocator), so `start` and `end`
/// measure nothing. Criterion still plans its iterations by wall time.
struct AllocatedBytes;

impl Measurement for AllocatedBytes {
    type Intermediate = ();
    type Value = f64;

    fn start(&self) {}

    fn end(&self, _: ()) -> f64 {
        0.0
    }

    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }

    fn zero(&self) -> f64 {
        0.0
    }

    fn to_f64(&self, value: &f64) -> f64 {
        *value
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &BytesFormatter
    }
}

struct BytesFormatter;

impl ValueFormatter for BytesFormatter {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "B"
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per = match throughput {
            Throughput::Bytes(n)
            | Throughput::BytesDecimal(n)
            | Throughput::Elements(n)
            | Throughput::Bits(n) => *n as f64,
        };
        for value in values {
            *value /= per.max(1.0);
        }
        "B/element"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "B"
    }
}

criterion_group!(benches, throughput, request_response, open_close);
criterion_group! {
    name = memory;
    config = Criterion::default().with_measurement(AllocatedBytes);
    targets = idle_stream_memory
}
criterion_main!(benches, memory);
