//! The `aida` command line against a running system: create a task with
//! flags, watch it to the end, and read it back with show, list, report and
//! workers.

use std::process::{Command, Output};

use aida_tests::process::bin;
use aida_tests::{GitRepo, System};
use serde_json::Value;

fn aida(system: &System, args: &[&str]) -> Output {
    Command::new(bin("aida"))
        .arg("--url")
        .arg(&system.url)
        .args(args)
        .output()
        .expect("run aida")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "aida failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("aida --json prints JSON on stdout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_watches_and_reports_a_task() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);

    let created = aida(
        &system,
        &[
            "task",
            "create",
            "--json",
            "--repo",
            repo.path_str(),
            "--description",
            "cli demo",
            "--subtask",
            "a=write a",
            "--subtask",
            "b=write b",
            "--depends",
            "b=a",
            "--",
            "sh",
            "-c",
            "cat > \"$AIDA_SUBTASK_NAME.txt\"",
        ],
    );
    let task = stdout_json(&created);
    let id = task["id"].as_str().expect("id").to_owned();

    // watch follows the live events and exits 0 once the task succeeded.
    let watched = aida(&system, &["watch", &id]);
    let lines = String::from_utf8_lossy(&watched.stdout);
    assert!(
        watched.status.success(),
        "watch: {lines}\n{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    assert!(
        lines.contains("task.created") && lines.contains("subtask.status"),
        "{lines}"
    );

    let shown = stdout_json(&aida(&system, &["task", "show", &id, "--json"]));
    assert_eq!(shown["status"], "succeeded", "{shown:#}");
    // The prompt arrived on stdin and became the file's content.
    let result = shown["result_branch"].as_str().unwrap();
    assert_eq!(repo.show(result, "a.txt").as_deref(), Some("write a"));
    // b depends on a: its prompt goes on with what a did.
    let b = repo.show(result, "b.txt").unwrap();
    assert!(
        b.starts_with("write b\n\n---\n") && b.contains("### a\n"),
        "{b}"
    );

    let listed = stdout_json(&aida(&system, &["task", "list", "--json"]));
    assert!(listed.to_string().contains(&id), "{listed}");

    let report = aida(&system, &["task", "report", &id]);
    assert!(report.status.success());
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.starts_with(&format!("# AIDA task {id}: succeeded")),
        "{report}"
    );
    for subtask in [
        "| a | succeeded | worker-1 |",
        "| b | succeeded | worker-1 |",
    ] {
        assert!(
            report.contains(subtask),
            "{subtask:?} missing from {report}"
        );
    }
    assert!(report.contains("No conflicts."), "{report}");

    let workers = stdout_json(&aida(&system, &["workers", "--json"]));
    assert!(workers.to_string().contains("worker-1"), "{workers}");

    // A failing request: a message on stderr, nothing on stdout, exit 1.
    let bad = aida(&system, &["task", "show", "not-a-task"]);
    assert!(!bad.status.success());
    assert!(bad.stdout.is_empty());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not-a-task"));
}
