//! Bounded growth: the retention sweep compacts the logs of tasks that
//! ended and then removes their events; `aida admin gc` removes the events
//! and `aida/<task>/*` branches of tasks that ended long ago. Neither ever
//! touches a task that is still running, and gc keeps a branch whose pull
//! request is open.

use std::process::Command;
use std::time::Duration;

use aida_tests::git::git_in;
use aida_tests::process::bin;
use aida_tests::system::{Options, client_with, sh_agent};
use aida_tests::{GitRepo, Hosting, System, eventually};
use serde_json::{Value, json};

/// The stdout lines of `events`, in order.
fn printed(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "log.line" && e["data"]["stream"] == "stdout")
        .map(|e| e["data"]["line"].as_str().unwrap().to_owned())
        .collect()
}

/// The `aida/<task>/*` branches of task `id` in the repository at `dir`.
fn branches_of(dir: &std::path::Path, id: &str) -> Vec<String> {
    git_in(
        dir,
        &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
    )
    .lines()
    .filter(|b| b.starts_with(&format!("aida/{id}/")))
    .map(str::to_owned)
    .collect()
}

/// A task on `repo` whose agent prints `lines` lines, then waits for
/// `gate` to exist if one is given.
fn chatty(repo: &str, lines: usize, gate: Option<&std::path::Path>) -> Value {
    let wait = gate.map_or(String::new(), |g| {
        format!("; while [ ! -e '{}' ]; do sleep 0.05; done", g.display())
    });
    json!({
        "repo": repo,
        "subtasks": [{
            "name": "talk",
            "prompt": "p",
            "agent": sh_agent(&format!("for i in $(seq 1 {lines}); do echo \"line $i\"; done{wait}; echo done > done.txt"))
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_compacts_ended_tasks_logs_then_removes_their_events_and_spares_a_running_task() {
    let system = System::start_with(
        Options::workers(2)
            .orchestrator_env("AIDA_LOG_RETENTION", "1s")
            .orchestrator_env("AIDA_EVENT_RETENTION", "6s"),
    )
    .await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let scratch = tempfile::tempdir().unwrap();
    let gate = scratch.path().join("go");
    let running = system
        .create_task(&chatty(repo.path_str(), 500, Some(&gate)))
        .await;
    let ended = system
        .create_task(&chatty(repo.path_str(), 500, None))
        .await;
    let task = system.wait_finished(&ended).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let full = system.event_history(&ended).await;
    assert_eq!(printed(&full).len(), 500);

    // A second after it ended, its log is compacted to the last 200 lines
    // (of every stream); every other event stays.
    let compacted = eventually("the ended task's log to be compacted", || async {
        let events = system.event_history(&ended).await;
        (printed(&events).len() < 500).then_some(events)
    })
    .await;
    let log_ids = |events: &[Value]| -> Vec<i64> {
        events
            .iter()
            .filter(|e| e["kind"] == "log.line")
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let full_log = log_ids(&full);
    assert_eq!(
        log_ids(&compacted),
        full_log[full_log.len() - 200..],
        "the last 200 lines stay"
    );
    assert_eq!(
        printed(&compacted).last().map(String::as_str),
        Some("line 500")
    );
    let others = |events: &[Value]| -> Vec<i64> {
        events
            .iter()
            .filter(|e| e["kind"] != "log.line")
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(others(&compacted), others(&full), "only log lines go");

    // Past AIDA_EVENT_RETENTION its events are gone; the task is not.
    eventually("the ended task's events to expire", || async {
        system.event_history(&ended).await.is_empty().then_some(())
    })
    .await;
    let task = system.get(&format!("/api/tasks/{ended}")).await.unwrap();
    assert_eq!(task["status"], "succeeded");

    // The running task lost nothing, though it started first.
    let live = system.event_history(&running).await;
    assert_eq!(printed(&live).len(), 500, "a running task keeps its log");
    std::fs::write(&gate, "").unwrap();
    let task = system.wait_finished(&running).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_old_tasks_branches_and_events_and_keeps_running_tasks_and_open_pull_requests() {
    let hosting = Hosting::start().await;
    hosting.repo("shop", &[("README.md", "shop\n")]);
    let system = System::start_with(
        hosting
            .configure(Options::workers(2))
            .orchestrator_env("AIDA_EVENT_RETENTION", "off")
            .orchestrator_env("AIDA_LOG_RETENTION", "off"),
    )
    .await;
    let url = hosting.http_url("shop");
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let scratch = tempfile::tempdir().unwrap();
    let gate = scratch.path().join("go");

    // Two delivered tasks with a pull request each; one of them gets closed.
    let mut delivered = Vec::new();
    for name in ["open", "closed"] {
        let mut body = chatty(&url, 3, None);
        body["description"] = json!(format!("the {name} one"));
        body["deliver"] = json!({"pull_request": {"title": name}});
        let id = system.create_task(&body).await;
        let task = system.wait_finished(&id).await;
        assert_eq!(task["delivery"]["status"], "opened", "{task:#}");
        delivered.push((id, task));
    }
    let [(open_id, open_task), (closed_id, closed_task)] = delivered.try_into().unwrap();
    let closed_number = closed_task["delivery"]["pull_request_number"]
        .as_u64()
        .unwrap();
    let closed = client_with(&hosting.token)
        .patch(format!(
            "{}/repos/acme/shop/pulls/{closed_number}",
            hosting.provider.github_api_url()
        ))
        .header("User-Agent", "aida-tests")
        .json(&json!({"state": "closed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    // A local task that ended, and one still running.
    let local = system.create_task(&chatty(repo.path_str(), 3, None)).await;
    system.wait_finished(&local).await;
    let running = system
        .create_task(&chatty(repo.path_str(), 3, Some(&gate)))
        .await;
    eventually("the running task's agent to start", || async {
        let events = system.event_history(&running).await;
        (printed(&events).len() == 3).then_some(())
    })
    .await;
    let mirror = std::path::PathBuf::from(open_task["repo"].as_str().unwrap());
    let local_repo = repo.path.clone();
    let ours = |dir: &std::path::Path, id: &str| branches_of(dir, id);
    let (mirror, repo) = (mirror.as_path(), local_repo.as_path());
    assert_eq!(ours(mirror, &open_id).len(), 2);
    assert_eq!(ours(mirror, &closed_id).len(), 2);
    assert_eq!(ours(repo, &local).len(), 2);
    assert_eq!(ours(repo, &running).len(), 1);

    // gc works on tasks that ended at least a second ago: these did.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A dry run says what would go and removes nothing.
    let (status, dry) = system
        .post(
            "/api/admin/gc",
            &json!({"older_than": "1s", "dry_run": true}),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    let removed = |report: &Value| -> Vec<String> {
        let mut names: Vec<String> = report["branches_removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["branch"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let mut expected: Vec<String> = ours(mirror, &closed_id)
        .into_iter()
        .chain(ours(repo, &local))
        .collect();
    expected.sort();
    assert_eq!(removed(&dry), expected, "{dry:#}");
    let open_number = open_task["delivery"]["pull_request_number"]
        .as_u64()
        .unwrap();
    for kept in dry["branches_kept"].as_array().unwrap() {
        assert_eq!(kept["task_id"], open_id.as_str(), "{kept}");
        assert_eq!(
            kept["reason"],
            format!("pull request #{open_number} is open")
        );
    }
    assert_eq!(dry["branches_kept"].as_array().unwrap().len(), 2);
    assert!(dry["events_removed"].as_u64().unwrap() > 0);
    assert_eq!(ours(repo, &local).len(), 2, "a dry run removes nothing");
    assert!(!system.event_history(&local).await.is_empty());

    // The real thing, from the command line.
    let out = Command::new(bin("aida"))
        .args([
            "--url",
            &system.url,
            "admin",
            "gc",
            "--older-than",
            "1s",
            "--json",
        ])
        .env("AIDA_TOKEN", &system.admin_token)
        .env("HOME", scratch.path())
        .env("XDG_CONFIG_HOME", scratch.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(removed(&report), expected, "{report:#}");
    assert!(ours(mirror, &closed_id).is_empty());
    assert!(ours(repo, &local).is_empty());
    assert_eq!(
        ours(mirror, &open_id).len(),
        2,
        "an open pull request's branches stay"
    );
    assert_eq!(
        ours(repo, &running).len(),
        1,
        "a running task's branch stays"
    );
    assert!(system.event_history(&local).await.is_empty());
    assert!(system.event_history(&closed_id).await.is_empty());
    assert_eq!(printed(&system.event_history(&running).await).len(), 3);
    // The tasks themselves stay, with their reports.
    let task = system.get(&format!("/api/tasks/{local}")).await.unwrap();
    assert_eq!(task["status"], "succeeded");

    // Bad input is refused with the reason; only admins may collect.
    let (status, body) = system
        .post("/api/admin/gc", &json!({"older_than": "soon"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_argument");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("soon"),
        "{body}"
    );

    let operator = system.user("olga", "operator").await;
    let denied = operator
        .post(format!("{}/api/admin/gc", system.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);

    std::fs::write(&gate, "").unwrap();
    system.wait_finished(&running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_reports_the_disk_its_worktrees_take() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    // Connected, the worker has reported its (empty) root.
    let worker = eventually("the worker to report", || async {
        let workers = system.get("/api/workers").await.ok()?;
        workers["workers"]
            .as_array()?
            .iter()
            .find(|w| w["state"] == "idle")
            .cloned()
    })
    .await;
    assert!(
        worker["disk_usage_bytes"].as_u64().unwrap() < 1_000_000,
        "{worker}"
    );

    // A run leaves its worktree (with a 3 MB file) in the worker's pool.
    let task = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "subtasks": [{"name": "big", "prompt": "p", "agent": sh_agent(
                "head -c 3000000 /dev/urandom > blob.bin"
            )}]
        }))
        .await;
    assert_eq!(system.wait_finished(&task).await["status"], "succeeded");
    let reported = eventually("the worker to report its usage after the run", || async {
        let workers = system.get("/api/workers").await.ok()?;
        let bytes = workers["workers"][0]["disk_usage_bytes"].as_u64()?;
        (bytes >= 3_000_000).then_some(bytes)
    })
    .await;
    assert!(
        reported < 50_000_000,
        "{reported} bytes for a 3 MB worktree"
    );
}
