//! What a dispatch pass reads to find work for an idle worker, with 10 and
//! with 10,000 tasks queued: the walk from the queue's head it does now
//! (`QueueWalk`, through the index `tasks_queue`) against the full read of
//! every unfinished task it did before (`schedulable_tasks`, still what
//! `GET /api/status` counts from). A pass runs on every wake-up: a task
//! created, a worker freed.
//!
//! `cargo bench -p aida-orchestrator --bench dispatch_scan`

use std::time::{Duration, Instant};

use aida_orchestrator::store::queue::QueueWalk;
use aida_orchestrator::store::{AgentJson, NewSubtask, NewTask, Store};
use aida_tests::bench::{self, Goal, Row};

const SUBTASKS: usize = 4;
/// Idle workers a pass fills: tasks taken from the head.
const TAKE: usize = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!(
        "| tasks queued ({SUBTASKS} subtasks each) | walk to the first {TAKE} (now) | read them all (before) |"
    );
    println!("| --- | --- | --- |");
    let mut walks = Vec::new();
    for tasks in [10, 10_000] {
        let dir = tempfile::tempdir()?;
        let store = Store::connect(&format!("sqlite://{}/bench.db", dir.path().display())).await?;
        fill(&store, tasks).await?;
        let rounds = if tasks > 1000 { 5 } else { 50 };
        let walk = median(rounds, || async {
            let mut walk = QueueWalk::start(&store, Duration::from_secs(300)).await?;
            for _ in 0..TAKE {
                assert!(walk.next().await?.is_some());
            }
            Ok(())
        })
        .await?;
        let scan = median(rounds, || async {
            let all = store.schedulable_tasks().await?;
            assert_eq!(all.len(), tasks);
            Ok(())
        })
        .await?;
        println!("| {tasks} | {walk:?} | {scan:?} |");
        walks.push(walk);
    }
    let ratio = walks[1].as_secs_f64() / walks[0].as_secs_f64();
    println!("\nwalk at 10,000 queued / walk at 10 queued: {ratio:.2}×");
    bench::report(&[Row::ratio(
        "dispatch pass, 10,000 queued vs 10 queued",
        format!("{:.2} ms", walks[1].as_secs_f64() * 1e3),
        format!("{:.2} ms", walks[0].as_secs_f64() * 1e3),
        ratio,
        Goal::None,
    )]);
    Ok(())
}

async fn median<F, Fut>(rounds: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        f().await?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[rounds / 2])
}

async fn fill(store: &Store, tasks: usize) -> anyhow::Result<()> {
    let agent = AgentJson {
        kind: "command".into(),
        command: vec!["true".into()],
        ..Default::default()
    };
    for t in 0..tasks {
        let id = format!("task-{t:05}");
        let subtasks = (0..SUBTASKS)
            .map(|s| NewSubtask {
                name: format!("s{s}"),
                prompt: "p".into(),
                depends_on: if s == 0 { vec![] } else { vec!["s0".into()] },
                agent: agent.clone(),
                branch: format!("aida/{id}/s{s}"),
                ..Default::default()
            })
            .collect();
        let task = NewTask {
            id,
            created_by: "bench".into(),
            repo: "/r".into(),
            base: "main".into(),
            base_commit: "abc".into(),
            description: "d".into(),
            agent: agent.clone(),
            priority: (t % 3) as i32,
            subtasks,
            planner: None,
            approve: "auto".into(),
            max_attempts: 3,
            timeout_secs: 0,
            ..Default::default()
        };
        store.insert_task(&task, chrono::Utc::now()).await?;
    }
    Ok(())
}
