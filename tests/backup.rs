//! Backups of the orchestrator's database with the real `aida` binary: taken
//! online while tasks run and write events, restored into a new database,
//! and served by a second orchestrator; a corrupt backup is refused.

use std::path::Path;
use std::process::{Command, Output};

use aida_tests::process::bin;
use aida_tests::standalone::Standalone;
use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, System, eventually};
use serde_json::{Value, json};

/// Runs the real `aida` binary with `args`, without inheriting a
/// DATABASE_URL.
fn aida(args: &[&str]) -> Output {
    Command::new(bin("aida"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("running aida")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "aida failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("aida --json prints JSON")
}

/// What a restored orchestrator must serve exactly as the original did.
fn essentials(task: &Value) -> Value {
    let subtasks: Vec<Value> = task["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            json!({
                "name": s["name"], "status": s["status"], "branch": s["branch"],
                "commit": s["commit"], "worker": s["worker"], "attempts": s["attempts"],
                "depends_on": s["depends_on"],
            })
        })
        .collect();
    json!({
        "id": task["id"], "status": task["status"], "repo": task["repo"],
        "base_commit": task["base_commit"], "description": task["description"],
        "result_commit": task["result_commit"], "subtasks": subtasks,
    })
}

/// A task's whole stored history, page by page.
async fn events(http: &reqwest::Client, base: &str, task: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e["id"].as_i64().unwrap());
        let page: Value = http
            .get(format!(
                "{base}/api/tasks/{task}/events?after={after}&limit=1000"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = page["events"].as_array().unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page.iter().cloned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_tasks_run_is_served_by_a_second_orchestrator() {
    let system = System::start(2).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("go");
    let gate_str = gate.to_str().unwrap();

    // A task that is finished when the backup is taken.
    let done = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "agent": sh_agent("echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\""),
            "subtasks": [{"name": "one", "prompt": "p"},
                         {"name": "two", "prompt": "p", "depends_on": ["one"]}]
        }))
        .await;
    assert_eq!(system.wait_finished(&done).await["status"], "succeeded");

    // One running, waiting for the gate, with a subtask pending behind it.
    let waiting = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "subtasks": [
                {"name": "wait", "prompt": "p", "agent": sh_agent(&format!(
                    "echo waiting; while [ ! -e '{gate_str}' ]; do sleep 0.05; done; echo go > go.txt"))},
                {"name": "after", "prompt": "p", "depends_on": ["wait"],
                 "agent": sh_agent("echo after > after.txt")}
            ]
        }))
        .await;
    // One writing log events all the time, so the backup is taken under
    // writes.
    let chatty = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "subtasks": [{"name": "chat", "prompt": "p", "agent": sh_agent(&format!(
                "i=0; while [ ! -e '{gate_str}' ]; do i=$((i+1)); echo \"line $i\"; sleep 0.02; done"))}]
        }))
        .await;
    eventually("both agents to be running", || async {
        let w = events(&system.http, &system.url, &waiting).await;
        let c = events(&system.http, &system.url, &chatty).await;
        let printed = |evs: &[Value], line: &str| evs.iter().any(|e| e["data"]["line"] == line);
        (printed(&w, "waiting") && printed(&c, "line 20")).then_some(())
    })
    .await;
    let stable_before = essentials(&system.get(&format!("/api/tasks/{waiting}")).await.unwrap());

    // The backup, online, with the real binary.
    let backups = tempfile::tempdir().unwrap();
    let backup_file = backups.path().join("aida-backup.db");
    let database_url = format!("sqlite://{}/aida.db", system.dir.path().display());
    let made = stdout_json(&aida(&[
        "admin",
        "backup",
        "--database-url",
        &database_url,
        "--out",
        backup_file.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(made["action"], "backup");
    assert_eq!(made["path"], backup_file.to_str().unwrap());
    assert_eq!(made["tasks"], 3, "{made:#}");
    assert_eq!(made["subtasks"], 5, "{made:#}");
    assert!(made["bytes"].as_u64().unwrap() > 0);
    // Without --force an existing backup is not overwritten.
    let again = aida(&[
        "admin",
        "backup",
        "--database-url",
        &database_url,
        "--out",
        backup_file.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("pass --force"));

    // The waiting task cannot have moved while the backup was taken.
    let waiting_snapshot = system.get(&format!("/api/tasks/{waiting}")).await.unwrap();
    assert_eq!(essentials(&waiting_snapshot), stable_before);
    assert_eq!(waiting_snapshot["status"], "running");
    let waiting_events = events(&system.http, &system.url, &waiting).await;
    let done_task = system.get(&format!("/api/tasks/{done}")).await.unwrap();
    let done_events = events(&system.http, &system.url, &done).await;

    // The live system moves on past the backup.
    std::fs::write(&gate, "").unwrap();
    for id in [&waiting, &chatty] {
        assert_eq!(system.wait_finished(id).await["status"], "succeeded");
    }
    let chatty_live_events = events(&system.http, &system.url, &chatty).await;

    // Restore into a new database and start a second orchestrator on it.
    let restored_dir = tempfile::tempdir().unwrap();
    let restored_db = restored_dir.path().join("data/restored.db");
    let restored_url = format!("sqlite://{}", restored_db.display());
    let restored = stdout_json(&aida(&[
        "admin",
        "restore",
        "--from",
        backup_file.to_str().unwrap(),
        "--database-url",
        &restored_url,
        "--json",
    ]));
    assert_eq!(restored["action"], "restored");
    assert_eq!(
        (
            &restored["tasks"],
            &restored["events"],
            &restored["last_event_id"]
        ),
        (&made["tasks"], &made["events"], &made["last_event_id"])
    );
    // Restoring over it again needs --force.
    let over = aida(&[
        "admin",
        "restore",
        "--from",
        backup_file.to_str().unwrap(),
        "--database-url",
        &restored_url,
    ]);
    assert_eq!(over.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&over.stderr).contains("pass --force"));

    // No worker ever connects to this one. A running attempt keeps the
    // lease it had at backup time (renewed every 3 s, 15 s long), so it is
    // served as running for at least 12 s after the backup, far longer
    // than restoring takes; later it would go back to pending, as it should.
    let second = Standalone::start(
        "restored",
        &restored_url,
        system.dir.path(),
        &[],
        &system.secrets,
    )
    .await;
    let listed = second.get("/api/tasks").await.unwrap();
    let mut ids: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![done.as_str(), waiting.as_str(), chatty.as_str()];
    expected.sort();
    assert_eq!(ids, expected);

    // The finished task and the waiting one are served as they were.
    let served_done = second.get(&format!("/api/tasks/{done}")).await.unwrap();
    assert_eq!(essentials(&served_done), essentials(&done_task));
    assert_eq!(events(&second.http, &second.url, &done).await, done_events);
    let served_waiting = second.get(&format!("/api/tasks/{waiting}")).await.unwrap();
    assert_eq!(essentials(&served_waiting), essentials(&waiting_snapshot));
    assert_eq!(
        served_waiting["subtasks"][1]["status"], "pending",
        "{served_waiting:#}"
    );
    let served_waiting_events = events(&second.http, &second.url, &waiting).await;
    assert!(
        served_waiting_events.starts_with(&waiting_events),
        "the restored history is the history at backup time"
    );

    // The chatty task is a consistent cut: a prefix of its live history,
    // the agent caught mid-run.
    let served_chatty = second.get(&format!("/api/tasks/{chatty}")).await.unwrap();
    assert_eq!(served_chatty["status"], "running", "{served_chatty:#}");
    assert_eq!(served_chatty["subtasks"][0]["status"], "running");
    let served_chatty_events = events(&second.http, &second.url, &chatty).await;
    let lines = served_chatty_events
        .iter()
        .filter(|e| e["kind"] == "log.line")
        .count();
    assert!(lines >= 20, "{lines} log lines were in the backup");
    assert!(
        chatty_live_events.starts_with(&served_chatty_events),
        "the restored history of the chatty task is a prefix of the live one"
    );
    assert!(chatty_live_events.len() > served_chatty_events.len());
    let last_id = served_chatty_events.last().unwrap()["id"].as_i64().unwrap();
    assert!(last_id <= made["last_event_id"].as_i64().unwrap());
}

#[tokio::test]
async fn restoring_a_corrupt_backup_fails_clearly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, b"not a database at all\n".repeat(500)).unwrap();
    let target_dir = dir.path().join("target");
    let target = target_dir.join("aida.db");
    let out = aida(&[
        "admin",
        "restore",
        "--from",
        garbage.to_str().unwrap(),
        "--database-url",
        &format!("sqlite://{}", target.display()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is not a usable AIDA backup",
            garbage.display()
        )) && stderr.contains("file is not a database"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(!target.exists());
    let left: Vec<_> = std::fs::read_dir(&target_dir)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The backup itself is untouched.
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        b"not a database at all\n".repeat(500)
    );
    assert!(Path::new(&garbage).exists());
}
