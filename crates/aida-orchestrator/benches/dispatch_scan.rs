//! How long the dispatcher's scan of schedulable tasks takes: it runs on
//! every wake-up (a task created, a worker freed) and every two seconds.
//!
//! `cargo bench -p aida-orchestrator --bench dispatch_scan`

use std::time::Instant;

use aida_orchestrator::store::{AgentJson, NewSubtask, NewTask, Store};

const TASKS: usize = 300;
const SUBTASKS: usize = 4;
const SCANS: u32 = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::connect(&format!("sqlite://{}/bench.db", dir.path().display())).await?;
    let agent = AgentJson {
        kind: "command".into(),
        command: vec!["true".into()],
        ..Default::default()
    };
    for t in 0..TASKS {
        let id = format!("task-{t:04}");
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
    let start = Instant::now();
    for _ in 0..SCANS {
        let tasks = store.schedulable_tasks().await?;
        assert_eq!(tasks.len(), TASKS);
        assert_eq!(tasks[0].subtasks.len(), SUBTASKS);
    }
    let per_scan = start.elapsed() / SCANS;
    println!("schedulable_tasks: {TASKS} tasks x {SUBTASKS} subtasks: {per_scan:?} per scan");
    Ok(())
}
