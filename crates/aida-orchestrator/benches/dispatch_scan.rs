//! What a dispatch pass reads to find work for an idle worker, with 10 and
//! with 10,000 tasks queued: the walk from the queue's head it does now
//! (`QueueWalk`, through the index `tasks_queue`) against the full read of
//! every unfinished task it did before (`schedulable_tasks`, still what
//! `GET /api/status` counts from). A pass runs on every wake-up: a task
//! created, a worker freed.
//!
//! `cargo bench -p aida-orchestrator --bench dispatch_scan` measures with
//! criterion: group `dispatch_scan`, `walk/10`, `walk/10000`, `read_all/10`
//! and `read_all/10000` (criterion's options after `--`, e.g.
//! `--measurement-time 3`; the full reads take 10 samples). Then it prints
//! one table of criterion's medians and hands its headline row (the walk at
//! 10,000 queued against the walk at 10) to `make bench`'s table. Those
//! medians are read back from the `estimates.json` criterion wrote in this
//! run (`aida_tests::bench::criterion_estimates`), so the row is
//! criterion's figure; when criterion measured nothing (`cargo test
//! --benches` runs each routine once, a filter left a benchmark out) there
//! is no row.

use std::time::{Duration, SystemTime};

use aida_orchestrator::store::queue::QueueWalk;
use aida_orchestrator::store::{AgentJson, NewSubtask, NewTask, Store};
use aida_tests::bench::{self, Goal, Row};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group};

const GROUP: &str = "dispatch_scan";
/// Tasks queued: a quiet queue and a deep one.
const QUEUED: [usize; 2] = [10, 10_000];
const SUBTASKS: usize = 4;
/// Idle workers a pass fills: tasks taken from the head.
const TAKE: usize = 2;

fn dispatch_scan(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    // The stores' pools are dropped inside the runtime they were made in.
    let _inside = runtime.enter();
    let stores: Vec<_> = QUEUED
        .into_iter()
        .map(|tasks| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = runtime
                .block_on(filled(&dir, tasks))
                .expect("a store with the queue filled");
            (tasks, store, dir)
        })
        .collect();
    let mut group = c.benchmark_group(GROUP);
    for (tasks, store, _) in &stores {
        group.bench_with_input(BenchmarkId::new("walk", tasks), store, |b, store| {
            b.to_async(&runtime).iter(|| async {
                let mut walk = QueueWalk::start(store, Duration::from_secs(300))
                    .await
                    .expect("starting the walk");
                for _ in 0..TAKE {
                    let task = walk.next().await.expect("walking the queue");
                    assert!(task.is_some(), "the queue ran dry");
                }
            });
        });
    }
    // The full read takes most of a second at 10,000 queued: criterion's
    // fewest samples for it, as many iterations in each (`--sample-size`
    // does not change these).
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (tasks, store, _) in &stores {
        group.bench_with_input(BenchmarkId::new("read_all", tasks), store, |b, store| {
            b.to_async(&runtime).iter(|| async {
                let all = store.schedulable_tasks().await.expect("reading the tasks");
                assert_eq!(all.len(), *tasks);
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = dispatch_scan
}

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    if let Err(why) = report(started) {
        println!("\nno summary row: {why}");
    }
}

/// The table of criterion's medians and the headline row, from the
/// estimates criterion wrote since `started`.
fn report(started: SystemTime) -> Result<(), String> {
    let median = |function: &str, tasks: usize| {
        bench::criterion_estimates(&format!("{GROUP}/{function}/{tasks}"), started)
            .map(|e| e.median.duration())
    };
    let mut walks = Vec::new();
    let mut lines = Vec::new();
    for tasks in QUEUED {
        let (walk, scan) = (median("walk", tasks)?, median("read_all", tasks)?);
        lines.push(format!("| {tasks} | {walk:?} | {scan:?} |"));
        walks.push(walk);
    }
    println!(
        "\n| tasks queued ({SUBTASKS} subtasks each) | walk to the first {TAKE} (now) | read them all (before) |"
    );
    println!("| --- | --- | --- |");
    for line in lines {
        println!("{line}");
    }
    let (few, many) = (walks[0], walks[1]);
    let ratio = many.as_secs_f64() / few.as_secs_f64();
    println!("\nmedians, criterion's; walk at 10,000 queued / walk at 10 queued: {ratio:.2}×");
    bench::report(&[Row::ratio(
        "dispatch pass, 10,000 queued vs 10 queued",
        format!("{:.2} ms", many.as_secs_f64() * 1e3),
        format!("{:.2} ms", few.as_secs_f64() * 1e3),
        ratio,
        Goal::None,
    )]);
    Ok(())
}

/// A store in `dir` with `tasks` tasks queued, of [`SUBTASKS`] subtasks each.
async fn filled(dir: &tempfile::TempDir, tasks: usize) -> anyhow::Result<Store> {
    let store = Store::connect(&format!("sqlite://{}/bench.db", dir.path().display())).await?;
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
    Ok(store)
}
