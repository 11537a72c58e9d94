//! Reviewing the work and watching the system: a subtask's and a result's
//! diff as `git diff` gives them (renames and binary files as such), and
//! `aida status` for an operator (a stopped worker offline, the queue).

use std::process::Command;

use aida_tests::process::bin;
use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, eventually, subtask};
use serde_json::{Value, json};

/// `git diff` as a reviewer runs it, without the rename's similarity score
/// (git and libgit2 score it each their own way).
fn git_diff(repo: &GitRepo, from: &str, to: &str) -> String {
    let out = repo.git(&["-c", "core.abbrev=7", "diff", "--find-renames", from, to]);
    without_score(&out)
}

fn without_score(patch: &str) -> String {
    patch
        .lines()
        .filter(|l| !l.starts_with("similarity index "))
        .map(|l| format!("{l}\n"))
        .collect()
}

async fn diff_text(system: &System, query: &str) -> (u16, String) {
    let resp = system
        .http
        .get(format!("{}{query}", system.url))
        .header("accept", "text/x-diff")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn diff_json(system: &System, query: &str) -> Value {
    let resp = system
        .http
        .get(format!("{}{query}", system.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffs_of_subtasks_and_of_the_result_are_what_git_diff_says() {
    let system = System::start_with(Options::workers(2)).await;
    let long = "a line of the old file\n".repeat(30);
    let repo = GitRepo::with_files(&[
        ("notes.txt", "one\ntwo\n"),
        ("old.txt", &long),
        ("logo.bin", "\u{0}\u{1}\u{2}"),
    ]);
    let agent = sh_agent(
        r#"case "$AIDA_SUBTASK_NAME" in
  edit) printf 'one\ntwo\nthree\n' > notes.txt ;;
  move) git mv old.txt new.txt && echo 'one more' >> new.txt && printf '\000\001\003\004' > logo.bin ;;
esac"#,
    );
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "an edit, a rename and a binary change",
            "agent": agent,
            "subtasks": [{"name": "edit", "prompt": "add a line"}, {"name": "move", "prompt": "rename"}]
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");

    for name in ["edit", "move"] {
        let st = subtask(&task, name);
        let (from, to) = (
            st["start_commit"].as_str().unwrap(),
            st["commit"].as_str().unwrap(),
        );
        let (status, patch) = diff_text(
            &system,
            &format!("/api/tasks/{task_id}/diff?subtask={name}"),
        )
        .await;
        assert_eq!(status, 200, "{patch}");
        assert_eq!(without_score(&patch), git_diff(&repo, from, to), "{name}");
    }
    let (status, patch) = diff_text(&system, &format!("/api/tasks/{task_id}/diff")).await;
    assert_eq!(status, 200);
    let (base, result) = (
        task["base_commit"].as_str().unwrap(),
        task["result_commit"].as_str().unwrap(),
    );
    assert_eq!(without_score(&patch), git_diff(&repo, base, result));
    assert!(patch.contains("+three\n"), "{patch}");

    // As JSON: a rename is a rename, a binary file is binary.
    let files =
        diff_json(&system, &format!("/api/tasks/{task_id}/diff?subtask=move")).await["files"]
            .clone();
    let file = |path: &str| {
        files
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("{path} in {files:#}"))
    };
    let renamed = file("new.txt");
    assert_eq!(
        (
            &renamed["status"],
            &renamed["old_path"],
            &renamed["additions"]
        ),
        (&json!("renamed"), &json!("old.txt"), &json!(1))
    );
    let binary = file("logo.bin");
    assert_eq!(
        (&binary["binary"], &binary["hunks"]),
        (&json!(true), &json!([]))
    );
    // One file at a time.
    let one = diff_json(
        &system,
        &format!("/api/tasks/{task_id}/diff?path=notes.txt"),
    )
    .await;
    assert_eq!(one["files"].as_array().unwrap().len(), 1);
    let added: Vec<&Value> = one["files"][0]["hunks"][0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["origin"] == "+")
        .collect();
    assert_eq!(added, [&json!({"origin": "+", "content": "three"})]);

    // What cannot be shown says why.
    for (query, code) in [
        (format!("/api/tasks/{task_id}/diff?subtask=nope"), 404),
        (format!("/api/tasks/{task_id}/diff?path=nope.txt"), 400),
        (format!("/api/tasks/{task_id}/diff?colour=yes"), 400),
        (format!("/api/tasks/{task_id}/diff?subtask=_verify"), 400),
    ] {
        let (status, body) = diff_text(&system, &query).await;
        assert_eq!(status, code, "{query}: {body}");
        assert!(body.contains("\"message\""), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aida_status_shows_a_stopped_worker_offline_and_the_queue() {
    let mut system = System::start_with(Options::workers(2)).await;
    let status = system.terminate("worker-2").await;
    assert!(status.success(), "worker-2 exited with {status}");
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let gate = tempfile::tempdir().unwrap();
    let gate = gate.path().join("open");
    // One worker is left: it runs one subtask, held at a gate, and the
    // other two wait.
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "three slow parts",
            "priority": 5,
            "agent": sh_agent(&format!("while [ ! -e '{}' ]; do sleep 0.05; done; echo $AIDA_SUBTASK_NAME > $AIDA_SUBTASK_NAME.txt", gate.display())),
            "subtasks": [{"name": "a", "prompt": "a"}, {"name": "b", "prompt": "b"}, {"name": "c", "prompt": "c"}]
        }))
        .await;
    eventually("a subtask running", || async {
        let task = system.get(&format!("/api/tasks/{task_id}")).await.ok()?;
        task["subtasks"]
            .as_array()?
            .iter()
            .any(|s| s["status"] == "running")
            .then_some(())
    })
    .await;

    let aida = |args: &[&str]| {
        let out = Command::new(bin("aida"))
            .arg("--url")
            .arg(&system.url)
            .args(args)
            .env("AIDA_TOKEN", &system.admin_token)
            .env_remove("AIDA_URL")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, json_out) = aida(&["status", "--json"]);
    assert!(ok, "{json_out}");
    let status: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(status["health"]["status"], "healthy", "{status}");
    let state = |id: &str| {
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["worker_id"] == id)
            .map(|w| w["state"].clone())
    };
    assert_eq!(state("worker-2"), Some(json!("offline")), "{status:#}");
    assert_eq!(state("worker-1"), Some(json!("busy")), "{status:#}");
    assert_eq!(
        status["queue"],
        json!([{"priority": 5, "pending": 2, "tasks": 1}])
    );
    assert_eq!(status["active"][0]["id"], task_id.as_str());
    assert_eq!(status["active"][0]["running"], 1);

    let (ok, text) = aida(&["status"]);
    assert!(ok, "{text}");
    let worker_2 = text
        .lines()
        .find(|l| l.contains("worker-2"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(worker_2.contains("offline"), "{text}");
    assert!(
        text.contains("priority   5: 2 subtask(s) waiting in 1 task(s)"),
        "{text}"
    );

    std::fs::write(&gate, "").unwrap();
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let (_, json_out) = aida(&["status", "--json"]);
    let status: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(status["queue"], json!([]));
    assert_eq!(status["active"], json!([]));
}
