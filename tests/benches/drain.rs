//! How fast a backlog drains, and whether its depth slows it: one-subtask
//! no-op tasks queued while both workers are drained, then the workers
//! resumed and the first completions timed. Run once with a short queue and
//! once with a deep one, in the same invocation, against the real
//! (release) binaries with 2 workers. `make bench` builds them first.
//!
//! `cargo bench -p aida-tests --bench drain [-- DEEP]` (DEEP: 10000)

use std::time::{Duration, Instant};

use aida_tests::bench::{self, Goal, Row};
use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System};
use futures::StreamExt;
use serde_json::json;

/// Tasks whose completion is timed (fewer when the queue is shorter).
const TIMED: usize = 500;
/// The longest the backlog may go without finishing a task.
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let deep: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let short = drain(10).await;
    let long = drain(deep).await;
    println!("\nDrain rate: one-subtask no-op tasks, 2 workers, release binaries\n");
    println!("| queued | completions timed | tasks/s |");
    println!("| --- | --- | --- |");
    println!("| 10 | {} | {:.1} |", short.0, short.1);
    println!("| {deep} | {} | {:.1} |", long.0, long.1);
    let ratio = long.1 / short.1.max(f64::MIN_POSITIVE);
    println!("\n{deep} queued vs 10 queued: {ratio:.2}×");
    bench::report(&[
        Row::ratio(
            format!("drain rate, {deep} queued vs 10 queued"),
            format!("{:.1} tasks/s", long.1),
            format!("{:.1} tasks/s", short.1),
            ratio,
            Goal::AtLeast(0.8),
        ),
        Row::ratio(
            format!("drain rate, {deep} queued, 2 workers"),
            format!("{:.1} tasks/s", long.1),
            "50 tasks/s",
            long.1 / 50.0,
            Goal::AtLeast(1.0),
        ),
    ]);
}

/// Queues `queued` tasks behind drained workers, resumes them, and returns
/// (completions timed, tasks per second).
async fn drain(queued: usize) -> (usize, f64) {
    let system = System::start_with(Options::workers(2)).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    for w in ["worker-1", "worker-2"] {
        let (status, body) = system
            .post(&format!("/api/workers/{w}/drain"), &json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let body = json!({
        "repo": repo.path_str(),
        "description": "no-op",
        "agent": sh_agent("echo \"$AIDA_TASK_ID\" > done.txt"),
        "subtasks": [{"name": "only", "prompt": "p"}]
    });
    let posted = futures::stream::iter(0..queued)
        .map(|_| {
            let system = &system;
            let body = &body;
            async move {
                let (status, created) = system.post("/api/tasks", body).await;
                assert_eq!(status, 201, "{created}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(posted.len(), queued);
    let after = system.get("/api/status").await.unwrap()["last_event_id"]
        .as_i64()
        .unwrap();
    let timed = TIMED.min(queued);
    // Read straight off the event stream, with a patience of our own (the
    // harness's readers give up after 90 s; a slow drain may take longer).
    let mut events = system.open_sse(&format!("/api/events?after={after}")).await;
    let services = [
        "orchestrator",
        "worker-1",
        "worker-2",
        "aggregator",
        "gateway",
    ];
    let pids = services.map(|s| system.pid(s).unwrap_or_else(|| panic!("no {s}")));
    let cpu_before = pids.map(bench::cpu_seconds);
    let start = Instant::now();
    for w in ["worker-1", "worker-2"] {
        let (status, body) = system
            .post(&format!("/api/workers/{w}/resume"), &json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut ended = 0;
    while ended < timed {
        let ev = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("the backlog stalled")
            .expect("the event stream ended")
            .expect("an SSE event");
        let ev: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
        if ev["kind"] != "task.status" {
            continue;
        }
        match ev["data"]["status"].as_str() {
            Some("succeeded") => ended += 1,
            Some(other @ ("failed" | "conflicted" | "cancelled")) => {
                panic!("a timed task ended {other}: {ev}")
            }
            _ => {}
        }
    }
    let took = start.elapsed().as_secs_f64();
    let cpu: Vec<String> = services
        .iter()
        .zip(pids)
        .zip(cpu_before)
        .map(|((service, pid), before)| {
            let ms = (bench::cpu_seconds(pid) - before) * 1000.0 / timed as f64;
            format!("{service} {ms:.1}")
        })
        .collect();
    println!("CPU ms per task, {queued} queued: {}", cpu.join(", "));
    // How long merges waited for the repository's lock (all these tasks
    // merge into one repository).
    let metrics = reqwest::get(format!("{}/metrics", system.orchestrator_ops_url))
        .await
        .expect("the orchestrator's /metrics")
        .text()
        .await
        .expect("its body");
    let series = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        series("aida_lock_wait_duration_seconds_sum"),
        series("aida_lock_wait_duration_seconds_count"),
    );
    println!(
        "lock wait, {queued} queued: {:.1} ms on average over {count} locks taken",
        sum * 1000.0 / count.max(1.0)
    );
    (timed, timed as f64 / took)
}
