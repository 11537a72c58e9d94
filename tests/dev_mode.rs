//! The README's run command: `aida dev` runs every service in one process,
//! with SQLite and no Redis, and a task goes through it end to end.

use std::process::Command;

use aida_tests::process::{Proc, bin};
use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, eventually, free_port};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aida_dev_runs_a_task_without_redis_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, orch, agg) = (free_port(), free_port(), free_port());
    let db = dir.path().join("data/aida.db");
    let mut cmd = Command::new(bin("aida"));
    cmd.args(["dev", "--workers", "2"])
        .args(["--gateway-addr", &format!("127.0.0.1:{gw}")])
        .args(["--orchestrator-addr", &format!("127.0.0.1:{orch}")])
        .args(["--aggregator-addr", &format!("127.0.0.1:{agg}")])
        .args(["--database-url", &format!("sqlite://{}", db.display())])
        .env_remove("REDIS_URL")
        .env_remove("REDIS_ADDR");
    let mut dev = Proc::spawn("aida-dev", cmd, dir.path());
    let url = format!("http://127.0.0.1:{gw}");
    let http = reqwest::Client::new();

    eventually("aida dev to have two workers connected", || async {
        let workers: Value = http
            .get(format!("{url}/api/workers"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let idle = workers["workers"]
            .as_array()?
            .iter()
            .filter(|w| w["state"] == "idle")
            .count();
        (idle == 2).then_some(())
    })
    .await;
    assert!(
        db.exists(),
        "the SQLite database is created where DATABASE_URL says"
    );

    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let body = json!({
        "repo": repo.path_str(),
        "description": "two steps",
        "agent": sh_agent("echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\""),
        "subtasks": [{"name": "first", "prompt": "a"}, {"name": "second", "prompt": "b", "depends_on": ["first"]}]
    });
    let created: Value = http
        .post(format!("{url}/api/orchestrate"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("task id").to_owned();
    let task = eventually("the task to finish", || async {
        let t: Value = http
            .get(format!("{url}/api/tasks/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        ["succeeded", "failed", "conflicted"]
            .contains(&t["status"].as_str()?)
            .then_some(t)
    })
    .await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let result = task["result_branch"].as_str().unwrap();
    assert_eq!(repo.show(result, "first.txt").as_deref(), Some("first\n"));
    assert_eq!(repo.show(result, "second.txt").as_deref(), Some("second\n"));

    // SIGTERM (what `podman stop` sends) stops every service and the process.
    let killed = Command::new("kill")
        .args(["-TERM", &dev.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = dev.child.wait().unwrap();
        (status, dev)
    });
    let (status, _dev) = tokio::time::timeout(aida_tests::DEADLINE, status)
        .await
        .expect("aida dev did not stop")
        .unwrap();
    assert!(status.success(), "aida dev exited with {status}");
}
