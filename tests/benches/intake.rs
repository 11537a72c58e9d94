//! Task intake: how many `POST /api/tasks` AIDA takes per second (each one
//! durably stored before its `201`), from one connection and from 16, with
//! the latency of each request; and Celery's submission rate (the peer in
//! `../shared/bench/celery`), run in the same invocation so the figure is
//! a ratio. No workers: intake alone is measured.
//!
//! `cargo bench -p aida-tests --bench intake [-- N]` (N: 3000 requests per
//! row; AIDA_PEERS for another directory of peer scripts than `../shared/bench`)

use std::time::{Duration, Instant};

use aida_tests::bench::{self, Goal};
use aida_tests::{GitRepo, Options, System};
use futures::StreamExt;
use serde_json::json;

struct Row {
    what: String,
    clients: String,
    requests: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// CPU µs per request: gateway, orchestrator, this client.
    cpu_us: [f64; 3],
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Posts `n` tasks, `connections` at a time, and times each request.
async fn post_many(system: &System, body: &serde_json::Value, n: usize, connections: usize) -> Row {
    // One client per connection, so each keeps its own connection alive.
    let clients: Vec<reqwest::Client> = (0..connections)
        .map(|_| aida_tests::system::client_with(&system.admin_token))
        .collect();
    let url = format!("{}/api/tasks", system.url);
    let pids = [
        system.pid("gateway").expect("gateway"),
        system.pid("orchestrator").expect("orchestrator"),
        std::process::id(),
    ];
    let cpu_before = pids.map(bench::cpu_seconds);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..n)
        .map(|i| {
            let client = clients[i % connections].clone();
            let url = &url;
            async move {
                let t = Instant::now();
                let resp = client.post(url).json(body).send().await.expect("POST");
                let status = resp.status();
                let _ = resp.bytes().await;
                assert_eq!(status.as_u16(), 201);
                t.elapsed()
            }
        })
        .buffer_unordered(connections)
        .collect()
        .await;
    let took = start.elapsed();
    let cpu = [0, 1, 2].map(|i| (bench::cpu_seconds(pids[i]) - cpu_before[i]) * 1e6 / n as f64);
    latencies.sort();
    Row {
        what: format!("AIDA `POST /api/tasks`, {connections} connection(s)"),
        clients: if connections == 1 {
            "1 connection".to_owned()
        } else {
            format!("{connections} connections")
        },
        requests: n,
        per_second: n as f64 / took.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        cpu_us: cpu,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3000);
    let system = System::start_with(Options::workers(0)).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let body = json!({
        "repo": repo.path_str(),
        "description": "intake",
        "agent": {"kind": "command", "command": ["true"]},
        "subtasks": [{"name": "only", "prompt": "p"}]
    });
    // Warm up: connections, caches, the database file.
    post_many(&system, &body, 200, 16).await;
    let one = post_many(&system, &body, n, 1).await;
    let sixteen = post_many(&system, &body, n, 16).await;
    drop(system);
    let peer = bench::celery_submissions(n);

    println!("\nTask intake, no workers, release binaries\n");
    println!(
        "| client | requests | per s | p50 ms | p99 ms | CPU µs per request: gateway / orchestrator / client | vs Celery submissions |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in [&one, &sixteen] {
        let ratio = peer
            .as_ref()
            .map(|c| format!("{:.2}×", row.per_second / c))
            .unwrap_or_else(|_| "n/a".into());
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.0} / {:.0} / {:.0} | {ratio} |",
            row.what,
            row.requests,
            row.per_second,
            row.p50.as_secs_f64() * 1000.0,
            row.p99.as_secs_f64() * 1000.0,
            row.cpu_us[0],
            row.cpu_us[1],
            row.cpu_us[2],
        );
    }
    match &peer {
        Ok(rate) => {
            println!("| Celery 5 + Redis `delay()`, 1 client | {n} | {rate:.0} | | | | 1.00× |")
        }
        Err(why) => println!("\nCelery not measured: {why}"),
    }
    let mut rows = Vec::new();
    if let Ok(rate) = peer {
        for row in [&one, &sixteen] {
            rows.push(bench::Row::ratio(
                format!("intake, {}", row.clients),
                format!("{:.0} tasks/s", row.per_second),
                format!("Celery {rate:.0} submissions/s"),
                row.per_second / rate,
                Goal::AtLeast(2.0),
            ));
        }
    }
    rows.push(bench::Row::ratio(
        format!("intake p99, {}", sixteen.clients),
        format!("{:.1} ms", sixteen.p99.as_secs_f64() * 1000.0),
        "50 ms",
        sixteen.p99.as_secs_f64() * 1000.0 / 50.0,
        Goal::AtMost(1.0),
    ));
    bench::report(&rows);
}
