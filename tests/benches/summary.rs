//! `make bench`'s one table: the headline rows every bench of the run
//! handed over (see `aida_tests::bench`), each a ratio of two figures taken
//! in the same invocation, with its target, and the machine they were
//! measured on.
//!
//! `AIDA_BENCH_SUMMARY=FILE cargo bench -p aida-tests --bench summary`

use aida_tests::bench::{Row, SUMMARY_ENV};

fn main() {
    let Some(path) = std::env::var_os(SUMMARY_ENV) else {
        eprintln!("{SUMMARY_ENV} is not set: nothing to summarize (make bench sets it)");
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let rows: Vec<Row> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();

    println!(
        "\n# AIDA benchmarks, {}: {}\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        machine()
    );
    println!("| figure | AIDA | against | ratio | target | |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for row in &rows {
        let verdict = match row.met() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        println!(
            "| {} | {} | {} | {:.2}× | {} | {verdict} |",
            row.figure,
            row.aida,
            row.against,
            row.ratio,
            row.target()
        );
    }
    if rows.is_empty() {
        println!("| (no bench reported a figure) | | | | | |");
    }
}

/// The machine, as the README names it: CPU model, cores, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gb:.1} GB, Linux {}",
        kernel.trim()
    )
}
