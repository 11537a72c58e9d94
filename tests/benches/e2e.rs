//! End to end against plain git. N no-op `command` subtasks (each writes
//! one file) are posted over REST in tasks of at most 64, as
//! `../shared/bench/aida-e2e.py` does, and timed from the first `POST` to
//! the last task's end (read from the event stream, not polled); the merged
//! files are counted. `git-floor.sh N 2` (plain git doing the same
//! orchestration, two at a time) runs in the same invocation, so each row
//! is a ratio. Also each service's resident memory while idle. Real release
//! binaries, 2 workers.
//!
//! `cargo bench -p aida-tests --bench e2e [-- N ...]` (16 256 1024)

use std::time::Instant;

use aida_tests::bench::{self, Goal, Row};
use aida_tests::{GitRepo, Options, System};
use futures::StreamExt;
use serde_json::{Value, json};

const WORKERS: usize = 2;
/// Subtasks per task, as the peer script posts them.
const CHUNK: usize = 64;
const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "conflicted"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![16, 256, 1024];
    }
    let system = System::start_with(
        Options::workers(WORKERS)
            .gateway_env("AIDA_RATE_LIMIT_BURST", "100000")
            .gateway_env("AIDA_CLIENT_RATE_LIMIT_BURST", "100000"),
    )
    .await;
    let idle = idle_memory(&system).await;

    let mut runs = Vec::new();
    for &n in &sizes {
        // The floor first, so neither run warms the other's caches.
        let floor = bench::git_floor(n, WORKERS);
        let aida = orchestrate(&system, n).await;
        runs.push((n, aida, floor));
    }
    drop(system);

    println!("\nEnd to end: N no-op subtasks, {WORKERS} workers, release binaries\n");
    println!("| N | AIDA s | per subtask ms | git floor ({WORKERS} at a time) s | vs floor |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let mut rows = Vec::new();
    for (n, aida, floor) in &runs {
        let per = aida / *n as f64 * 1000.0;
        match floor {
            Ok(floor) => {
                println!(
                    "| {n} | {aida:.2} | {per:.1} | {floor:.2} | {:.2}× |",
                    aida / floor
                );
                rows.push(Row::ratio(
                    format!("end to end, {n} subtasks"),
                    format!("{aida:.2} s"),
                    format!("git floor {floor:.2} s"),
                    aida / floor,
                    Goal::None,
                ));
            }
            Err(why) => println!("| {n} | {aida:.2} | {per:.1} | not measured: {why} | |"),
        }
    }
    if let (Some((n0, a0, _)), Some((n1, a1, _))) = (runs.first(), runs.last())
        && n1 > n0
    {
        let (first, last) = (a0 / *n0 as f64, a1 / *n1 as f64);
        println!(
            "\nper-subtask cost, N = {n1} vs N = {n0}: {:.2}×",
            last / first
        );
        rows.push(Row::ratio(
            format!("per-subtask cost, N = {n1} vs N = {n0}"),
            format!("{:.1} ms", last * 1000.0),
            format!("{:.1} ms", first * 1000.0),
            last / first,
            Goal::AtMost(1.2),
        ));
    }

    println!("\nIdle resident memory\n");
    println!("| service | MB | of which its own (anonymous) |");
    println!("| --- | ---: | ---: |");
    for (service, mb, own) in &idle {
        println!("| {service} | {mb:.1} | {own:.1} |");
        rows.push(Row::ratio(
            format!("idle memory, {service}"),
            format!("{mb:.1} MB ({own:.1} MB its own)"),
            "15 MB",
            mb / 15.0,
            Goal::AtMost(1.0),
        ));
    }
    bench::report(&rows);
}

/// Each service's resident memory once it settled, before any work, and
/// the part of it that is its own (not its executable's pages).
async fn idle_memory(system: &System) -> Vec<(String, f64, f64)> {
    let mut services = vec!["gateway".to_owned(), "orchestrator".to_owned()];
    services.extend((1..=WORKERS).map(|i| format!("worker-{i}")));
    services.push("aggregator".to_owned());
    let mut idle = Vec::new();
    for service in services {
        let pid = system
            .pid(&service)
            .unwrap_or_else(|| panic!("no {service} process"));
        let rss = bench::settled_rss_mb(pid).await;
        idle.push((service, rss, bench::anonymous_mb(pid)));
    }
    idle
}

/// Seconds from the first `POST` of `n` subtasks to their tasks' last end.
async fn orchestrate(system: &System, n: usize) -> f64 {
    let repo = GitRepo::with_files(&[("README.md", "bench\n")]);
    let after = system.get("/api/status").await.unwrap()["last_event_id"]
        .as_i64()
        .unwrap();
    // Subscribed before the first POST: no end can be missed.
    let mut events = system.open_sse(&format!("/api/events?after={after}")).await;
    let start = Instant::now();
    let mut tasks = std::collections::HashSet::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(CHUNK) {
        let subtasks: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"name": format!("s{i}"), "prompt": "p"}))
            .collect();
        let id = system
            .create_task(&json!({
                "repo": repo.path_str(),
                "description": "bench",
                "agent": {"kind": "command", "command": ["sh", "-c", "echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\""]},
                "subtasks": subtasks,
            }))
            .await;
        tasks.insert(id);
    }
    let mut open = tasks.clone();
    while !open.is_empty() {
        let event = events
            .next()
            .await
            .expect("the event stream ended early")
            .expect("an SSE event");
        let data: Value = serde_json::from_str(&event.data).expect("SSE data is JSON");
        if data["kind"] == "task.status"
            && TERMINAL.contains(&data["data"]["status"].as_str().unwrap_or_default())
            && let Some(task) = data["task_id"].as_str()
        {
            open.remove(task);
        }
    }
    let took = start.elapsed().as_secs_f64();
    let merged: usize = tasks
        .iter()
        .map(|t| {
            repo.git(&["ls-tree", "--name-only", &format!("aida/{t}/result")])
                .lines()
                .filter(|f| f.ends_with(".txt"))
                .count()
        })
        .sum();
    assert_eq!(merged, n, "every subtask's file merged");
    took
}
