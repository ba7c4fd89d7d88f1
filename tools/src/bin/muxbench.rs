//! Side-by-side comparison of muxers on one machine, alternating them round by round so that
//! machine drift cancels:
//!
//! ```sh
//! cargo run --release -p tools --bin muxbench                    # the full table
//! cargo run --release -p tools --bin muxbench -- --rounds 3 --mib 64 --json out.json --svg streams.svg
//! cargo run --release -p tools --bin muxbench -- --only "TCP" --muxers "ours,yamux" --threads 1
//! cargo run --release -p tools --bin muxbench -- --links tcp-noise --placement block-on
//! cargo run --release -p tools --bin muxbench -- --only none --long-link --window-svg window.svg
//! ```
//!
//! `--long-link` adds runs over emulated long-distance links (20 ms at 1 Gbit/s, 100 ms at
//! 100 Mbit/s; see `test_support::muxbench::delay_line`): one stream and 64 streams writing flat out, the round trips
//! until the link is 90 % used, the rate over the second half and the fairness between streams;
//! `--long-rounds n` repeats them, `--window-svg` plots our stream's receive window over time.
//!
//! Every muxer is driven through `StreamMuxer` with its default config, on a runtime with 2
//! worker threads, over every link (`--links memory,tcp,tcp-scalar,tcp-noise`, default all):
//! an in-memory pipe (256 KiB); TCP on 127.0.0.1 with nodelay through libp2p-tcp's socket,
//! which forwards vectored writes; the same behind a wrapper that writes one buffer per call
//! (as WebSocket and TLS do); and TCP + noise negotiated as `upgrade(Version::V1)
//! .authenticate(noise)` does (noise writes one buffer per call too, and encrypts in the
//! writing task). "no muxer" is the bare link: the limit a muxer can approach.
//!
//! Placement (`--placement spawned,block-on`, default both): the application side of each
//! measurement (the client) runs in a spawned task, or on the thread that calls `block_on`,
//! as the body of `#[tokio::main]` does. The connections are driven by tasks of their own.
//!
//! Each cell is the median of the rounds; the last column is ours (extension mode) against
//! the best of libp2p-mplex and libp2p-yamux, where above 1 means faster for throughput and
//! below 1 means faster for latency.

use std::fmt::Write as _;

#[global_allocator]
static ALLOCATOR: test_support::counting::CountingAllocator =
    test_support::counting::CountingAllocator;

use test_support::muxbench::{self, Case, Link, Muxer, Placement, Sample, chosen, median, run};

struct Args {
    rounds: usize,
    mib: usize,
    only: Option<String>,
    muxers: Option<String>,
    json: Option<String>,
    svg: Option<String>,
    threads: usize,
    links: Vec<Link>,
    placements: Vec<Placement>,
    /// Rounds of the long-link runs; none without `--long-link`.
    long_rounds: usize,
    window_svg: Option<String>,
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let number =
            |name: &str, default| value(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        Self {
            rounds: number("--rounds", 5),
            mib: number("--mib", 256),
            only: value("--only"),
            muxers: value("--muxers"),
            json: value("--json"),
            svg: value("--svg"),
            threads: number("--threads", 2),
            links: chosen(value("--links"), &Link::ALL, |l| l.flag()),
            placements: chosen(value("--placement"), &Placement::ALL, |p| p.flag()),
            long_rounds: if args.iter().any(|a| a == "--long-link") {
                number("--long-rounds", 1)
            } else {
                0
            },
            window_svg: value("--window-svg"),
        }
    }

    fn selects(&self, muxer: Muxer) -> bool {
        let Some(list) = &self.muxers else {
            return true;
        };
        list.split(',')
            .any(|part| muxer.name().contains(part.trim()))
    }
}

/// One row of the table: a case on a link, with every muxer's median.
struct Row {
    name: String,
    placement: Placement,
    case: Case,
    medians: Vec<Option<Sample>>,
}

impl Row {
    /// Ours (extension) against the best peer measured.
    fn ratio(&self) -> Option<f64> {
        let ours = self.medians[1]?.value;
        let peers = Muxer::ALL
            .iter()
            .zip(&self.medians)
            .filter(|(m, _)| m.is_peer())
            .filter_map(|(_, s)| s.map(|s| s.value));
        let best = if self.case.higher_is_better() {
            peers.fold(f64::NAN, f64::max)
        } else {
            peers.fold(f64::NAN, f64::min)
        };
        best.is_finite().then_some(ours / best)
    }
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    placement: Placement,
    name: String,
    case: Case,
    link: Link,
) -> Row {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Muxer::ALL.len()];
    for round in 0..args.rounds {
        // Rotate the order each round so that no muxer always runs first.
        for offset in 0..Muxer::ALL.len() {
            let i = (round + offset) % Muxer::ALL.len();
            if !args.selects(Muxer::ALL[i]) {
                continue;
            }
            if let Some(sample) = placement.run(runtime, run(case, Muxer::ALL[i], link)) {
                samples[i].push(sample);
            }
        }
    }
    let medians = samples
        .into_iter()
        .map(|s| {
            (!s.is_empty()).then(|| Sample {
                value: median(s.iter().map(|s| s.value).collect()),
                fairness: s[0]
                    .fairness
                    .map(|_| median(s.iter().filter_map(|s| s.fairness).collect())),
            })
        })
        .collect();
    Row {
        name,
        placement,
        case,
        medians,
    }
}

fn print_header() {
    print!("{:<44}", "test");
    for m in Muxer::ALL {
        print!("{:>20}", m.name());
    }
    println!("{:>12}", "ours/best");
}

fn print_row(row: &Row) {
    print!("{:<44}", row.name);
    for sample in &row.medians {
        let cell = match sample {
            None => "–".to_string(),
            Some(Sample {
                value,
                fairness: Some(f),
            }) => format!("{value:.0} ({f:.2})"),
            Some(Sample {
                value,
                fairness: None,
            }) if *value < 100.0 => format!("{value:.1}"),
            Some(Sample {
                value,
                fairness: None,
            }) => format!("{value:.0}"),
        };
        print!("{cell:>20}");
    }
    match row.ratio() {
        Some(r) => println!("{r:>12.2}"),
        None => println!("{:>12}", "–"),
    }
}

fn json(rows: &[Row], sweep: &[Row], args: &Args) -> String {
    let row_json = |row: &Row| {
        let mut out = format!(
            "{{\"test\":{:?},\"placement\":{:?},\"unit\":{:?},\"results\":{{",
            row.name,
            row.placement.flag(),
            row.case.unit()
        );
        let cells: Vec<String> = Muxer::ALL
            .iter()
            .zip(&row.medians)
            .filter_map(|(m, s)| {
                let s = (*s)?;
                let fairness = s.fairness.map_or("null".to_string(), |f| format!("{f:.3}"));
                Some(format!(
                    "{:?}:{{\"median\":{:.3},\"slowest_over_fastest\":{fairness}}}",
                    m.name(),
                    s.value
                ))
            })
            .collect();
        out += &cells.join(",");
        let ratio = row
            .ratio()
            .map_or("null".to_string(), |r| format!("{r:.3}"));
        let _ = write!(out, "}},\"ours_over_best_peer\":{ratio}}}");
        out
    };
    let tests: Vec<String> = rows.iter().map(row_json).collect();
    let sweep: Vec<String> = sweep.iter().map(row_json).collect();
    format!(
        "{{\"rounds\":{},\"mib\":{},\"tests\":[{}],\"streams_sweep\":[{}]}}\n",
        args.rounds,
        args.mib,
        tests.join(","),
        sweep.join(",")
    )
}

/// A line chart of throughput against the number of streams, one line per muxer.
fn svg(sweep: &[(usize, Row)]) -> String {
    let (width, height, left, bottom, top, right) = (800.0, 440.0, 70.0, 50.0, 40.0, 190.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    // The no-muxer baseline (one plain pipe) is in the table; here it would flatten the rest.
    let muxed = |m: usize| Muxer::ALL[m] != Muxer::None;
    let top_value = sweep
        .iter()
        .flat_map(|(_, row)| {
            row.medians
                .iter()
                .enumerate()
                .filter(|(m, _)| muxed(*m))
                .filter_map(|(_, s)| s.map(|s| s.value))
        })
        .fold(1.0, f64::max);
    let step = 10f64.powf(top_value.log10().floor()) / 2.0;
    let max = (top_value / step).ceil() * step;
    let n = sweep.len().max(2) as f64 - 1.0;
    let x = |i: usize| left + plot_w * i as f64 / n;
    let y = |v: f64| top + plot_h * (1.0 - v / max);
    let colours = ["#999999", "#d62728", "#ff7f0e", "#2ca02c", "#1f77b4"];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">Throughput over a 256 KiB memory pipe against the number of streams (MiB/s, median)</text>\n",
        width / 2.0
    );
    let ticks = (max / step).round() as usize;
    for tick in 0..=ticks {
        let v = step * tick as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" x2=\"{right_edge}\" y1=\"{line_y}\" y2=\"{line_y}\" stroke=\"#dddddd\"/><text x=\"{label_x}\" y=\"{label_y}\" text-anchor=\"end\">{v:.0}</text>",
            right_edge = left + plot_w,
            line_y = y(v),
            label_x = left - 6.0,
            label_y = y(v) + 4.0
        );
    }
    for (i, (streams, _)) in sweep.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{streams}</text>",
            x(i),
            top + plot_h + 18.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">streams at once</text>",
        left + plot_w / 2.0,
        height - 8.0
    );
    for (m, muxer) in Muxer::ALL.iter().enumerate().filter(|(m, _)| muxed(*m)) {
        let points: Vec<String> = sweep
            .iter()
            .enumerate()
            .filter_map(|(i, (_, row))| {
                row.medians[m].map(|s| format!("{:.1},{:.1}", x(i), y(s.value)))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            colours[m],
            points.join(" ")
        );
        let ly = top + 20.0 * m.saturating_sub(1) as f64 + 10.0;
        let _ = writeln!(
            out,
            "<line x1=\"{0}\" x2=\"{1}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{2}\" stroke-width=\"3\"/><text x=\"{3}\" y=\"{4}\">{5}</text>",
            left + plot_w + 15.0,
            left + plot_w + 35.0,
            colours[m],
            left + plot_w + 40.0,
            ly + 4.0,
            muxer.name()
        );
    }
    out + "</svg>\n"
}

/// The emulated long links: round trip, rate, and how many round trips a run lasts.
const LONG_LINKS: [(u64, f64, usize); 2] = [(20, 1e9, 100), (100, 100e6, 40)];

/// One stream, then 64, writing flat out over each long link, for every muxer, alternating.
fn long_links(runtime: &tokio::runtime::Runtime, args: &Args) {
    println!(
        "\nlong links (emulated in process: a queue of one bandwidth-delay product, paced, then half the round trip each way);\n\
         medians of {} rounds. Round trips until one carried 90% of the link rate; the rate over the run's second half;\n\
         64 streams: their rate, and the stream that moved most over the one that moved least\n",
        args.long_rounds
    );
    println!(
        "{:<22}{:<22}{:>18}{:>16}{:>18}{:>12}",
        "link", "muxer", "1 stream: to 90%", "2nd half", "64 streams", "fairness"
    );
    let muxers = [
        Muxer::None,
        Muxer::OursExtension,
        Muxer::LibMplex,
        Muxer::Yamux,
    ];
    for (rtt_ms, rate, round_trips) in LONG_LINKS {
        let rtt = std::time::Duration::from_millis(rtt_ms);
        let mut one: Vec<Vec<muxbench::LongLinkSample>> = vec![Vec::new(); muxers.len()];
        let mut many: Vec<Vec<muxbench::LongLinkSample>> = vec![Vec::new(); muxers.len()];
        for round in 0..args.long_rounds {
            for offset in 0..muxers.len() {
                let i = (round + offset) % muxers.len();
                if !args.selects(muxers[i]) {
                    continue;
                }
                let task = runtime.spawn(muxbench::long_link(muxers[i], rtt, rate, 1, round_trips));
                one[i].push(runtime.block_on(task).expect("long link"));
                if muxers[i] != Muxer::None {
                    let task =
                        runtime.spawn(muxbench::long_link(muxers[i], rtt, rate, 64, round_trips));
                    many[i].push(runtime.block_on(task).expect("long link"));
                }
            }
        }
        let link = format!("{rtt_ms} ms, {:.0} Mbit/s", rate / 1e6);
        for (i, muxer) in muxers.iter().enumerate() {
            if one[i].is_empty() {
                continue;
            }
            let to_90 = median(
                one[i]
                    .iter()
                    .map(|s| s.round_trips_to_90.map_or(f64::INFINITY, |n| n as f64))
                    .collect(),
            );
            let to_90 = if to_90.is_finite() {
                format!("{to_90:.0} RTT")
            } else {
                "never".to_string()
            };
            let half = median(one[i].iter().map(|s| s.second_half).collect());
            let (many_rate, fairness) = if many[i].is_empty() {
                ("–".to_string(), "–".to_string())
            } else {
                (
                    format!(
                        "{:.1}%",
                        100.0 * median(many[i].iter().map(|s| s.second_half).collect())
                    ),
                    format!(
                        "{:.2}",
                        median(many[i].iter().filter_map(|s| s.fairness).collect())
                    ),
                )
            };
            println!(
                "{:<22}{:<22}{:>18}{:>15.1}%{:>18}{:>12}",
                if i == 0 { link.as_str() } else { "" },
                muxer.name(),
                to_90,
                100.0 * half,
                many_rate,
                fairness
            );
        }
    }
    if let Some(path) = &args.window_svg {
        let traces: Vec<(String, Vec<(f64, u64)>)> = LONG_LINKS
            .iter()
            .map(|&(rtt_ms, rate, round_trips)| {
                let rtt = std::time::Duration::from_millis(rtt_ms);
                let task = runtime.spawn(muxbench::window_over_time(rtt, rate, round_trips));
                let points = runtime.block_on(task).expect("window trace");
                (format!("{rtt_ms} ms, {:.0} Mbit/s", rate / 1e6), points)
            })
            .collect();
        for (name, points) in &traces {
            let last = points.last().map_or(0, |p| p.1);
            println!(
                "window, {name}: {} steps, {} KiB at the end",
                points.len(),
                last / 1024
            );
        }
        std::fs::write(path, window_svg(&traces)).expect("write the SVG");
        println!("window plot written to {path}");
    }
}

/// A step chart of one stream's receive window against time, one line per link.
fn window_svg(traces: &[(String, Vec<(f64, u64)>)]) -> String {
    let (width, height, left, bottom, top, right) = (800.0, 400.0, 70.0, 50.0, 40.0, 200.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max_t = traces
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.0))
        .fold(0.1, f64::max);
    let max_w = traces
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1 as f64 / (1 << 20) as f64))
        .fold(1.0, f64::max)
        .ceil();
    let x = |t: f64| left + plot_w * t / max_t;
    let y = |w: f64| top + plot_h * (1.0 - w / max_w);
    let colours = ["#d62728", "#1f77b4"];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">One stream's receive window over emulated long links (MiB)</text>\n",
        width / 2.0
    );
    for tick in 0..=(max_w as usize) {
        let w = tick as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{1}\" y2=\"{1}\" stroke=\"#dddddd\"/><text x=\"{2}\" y=\"{3}\" text-anchor=\"end\">{w:.0}</text>",
            left + plot_w,
            y(w),
            left - 6.0,
            y(w) + 4.0
        );
    }
    for tick in 0..=4 {
        let t = max_t * tick as f64 / 4.0;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{t:.1} s</text>",
            x(t),
            top + plot_h + 18.0
        );
    }
    for (i, (name, points)) in traces.iter().enumerate() {
        let mut path = Vec::new();
        let mut last = None;
        for &(t, w) in points {
            let w = w as f64 / (1 << 20) as f64;
            if let Some(previous) = last {
                path.push(format!("{:.1},{:.1}", x(t), y(previous)));
            }
            path.push(format!("{:.1},{:.1}", x(t), y(w)));
            last = Some(w);
        }
        let colour = colours[i % colours.len()];
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        let ly = top + 20.0 * i as f64 + 10.0;
        let _ = writeln!(
            out,
            "<line x1=\"{0}\" x2=\"{1}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"3\"/><text x=\"{2}\" y=\"{3}\">{name}</text>",
            left + plot_w + 15.0,
            left + plot_w + 35.0,
            left + plot_w + 40.0,
            ly + 4.0
        );
    }
    out + "</svg>\n"
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("runtime");
    let mib = args.mib << 20;
    let cases = [
        (
            "1 stream",
            Case::Throughput {
                streams: 1,
                bytes_each: mib,
            },
        ),
        (
            "64 streams",
            Case::Throughput {
                streams: 64,
                bytes_each: (mib / 64).max(1),
            },
        ),
        ("request/response", Case::RequestResponse { requests: 2000 }),
        (
            "request/response p99",
            Case::RequestResponseP99 { requests: 2000 },
        ),
        ("open+close", Case::OpenClose { streams: 4000 }),
    ];
    println!(
        "medians of {} alternating rounds; MiB/s (slowest/fastest stream), µs or bytes; last column: ours (extension) / best peer",
        args.rounds
    );
    let mut rows = Vec::new();
    for placement in Placement::ALL {
        if !args.placements.contains(&placement) {
            continue;
        }
        println!("\n{}", placement.title());
        print_header();
        for (case_name, case) in cases {
            for link in Link::ALL {
                let name = format!("{case_name}, {}", link.name());
                if !args.links.contains(&link)
                    || args.only.as_deref().is_some_and(|o| !name.contains(o))
                {
                    continue;
                }
                let row = measure(&runtime, &args, placement, name, case, link);
                print_row(&row);
                rows.push(row);
            }
        }
    }
    let idle = "memory per idle stream, both ends";
    if args.only.as_deref().is_none_or(|o| idle.contains(o)) {
        println!();
        print_header();
        let case = Case::IdleStreamMemory { streams: 100 };
        let row = measure(
            &runtime,
            &args,
            Placement::Spawned,
            idle.to_string(),
            case,
            Link::Memory,
        );
        print_row(&row);
        rows.push(row);
    }
    if args.only.as_deref().is_none_or(|o| "flood".contains(o)) {
        const FLOODED: usize = 1000;
        let mut alone = Vec::new();
        let mut beside = Vec::new();
        for _ in 0..args.rounds {
            for flooded in [0, FLOODED] {
                let task = runtime.spawn(muxbench::beside_flood(Link::Memory, flooded, mib));
                let rate = runtime.block_on(task).expect("measurement task");
                if flooded == 0 {
                    alone.push(rate)
                } else {
                    beside.push(rate)
                }
            }
        }
        let (alone, beside) = (median(alone), median(beside));
        println!(
            "\nflood: 1 stream beside {FLOODED} streams flooded and never read (ours, extension, memory pipe): \
             {beside:.0} MiB/s; alone: {alone:.0} MiB/s; ratio {:.2}",
            beside / alone
        );
    }
    if args.long_rounds > 0 {
        long_links(&runtime, &args);
    }
    let mut sweep = Vec::new();
    if args.svg.is_some() || args.json.is_some() {
        println!(
            "\nthroughput against the number of streams, memory pipe, {} MiB in all:",
            args.mib
        );
        for streams in [1, 2, 4, 8, 16, 32, 64, 100] {
            let case = Case::Throughput {
                streams,
                bytes_each: (mib / streams).max(1),
            };
            let row = measure(
                &runtime,
                &args,
                Placement::Spawned,
                format!("{streams} streams"),
                case,
                Link::Memory,
            );
            print_row(&row);
            sweep.push((streams, row));
        }
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&sweep)).expect("write the SVG");
        println!("\nplot written to {path}");
    }
    if let Some(path) = &args.json {
        let sweep_rows: Vec<Row> = sweep.into_iter().map(|(_, row)| row).collect();
        std::fs::write(path, json(&rows, &sweep_rows, &args)).expect("write the JSON");
        println!("results written to {path}");
    }
}
