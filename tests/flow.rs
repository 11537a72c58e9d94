//! The whole flow, end to end: REST -> orchestrator -> two workers in git
//! worktrees -> aggregator merge, with events on Redis and over SSE.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, System, eventually};
use futures::StreamExt;
use serde_json::{Value, json};

/// Collects every message published on `aida:events:*`.
async fn subscribe_all(redis_url: &str) -> Arc<Mutex<Vec<(String, Value)>>> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.psubscribe("aida:events:*").await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let payload: String = msg.get_payload().unwrap();
            let event: Value = serde_json::from_str(&payload).expect("redis payload is JSON");
            sink.lock()
                .unwrap()
                .push((msg.get_channel_name().to_owned(), event));
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_subtasks_run_on_two_workers_merge_and_report_a_conflict() {
    let mut system = System::start(0).await;
    // Subscribe before the workers start, to see them connect.
    let redis_events = subscribe_all(&system.redis.url).await;
    system.add_worker("worker-1");
    system.add_worker("worker-2");
    system.wait_workers(2).await;

    let repo = GitRepo::with_files(&[
        ("README.md", "demo\n"),
        ("shared.txt", "line1\nline2\nline3\n"),
    ]);
    let base_before = repo.rev_parse("main");

    let body = json!({
        "repo": repo.path_str(),
        "base": "main",
        "description": "four subtasks",
        "agent": sh_agent("echo default agent"),
        "subtasks": [
            // Independent: a new file. Slow enough that the other worker
            // takes the next subtask meanwhile.
            {"name": "api", "prompt": "write the api", "agent": sh_agent(
                "read -r prompt; echo \"working on api: $prompt\"; sleep 1; echo 'api v1' > api.txt")},
            // Independent: edits line 2 of shared.txt.
            {"name": "style", "prompt": "style it", "agent": sh_agent(
                "echo working on style; sleep 1; printf 'line1\\nline2 styled\\nline3\\n' > shared.txt")},
            // Depends on api, and fails if api's file is not there.
            {"name": "client", "prompt": "use the api", "depends_on": ["api"], "agent": sh_agent(
                "test -f api.txt || { echo 'api.txt missing' >&2; exit 1; }; { cat api.txt; echo client; } > client.txt")},
            // Edits the same line as style: must conflict.
            {"name": "rename", "prompt": "rename it", "agent": sh_agent(
                "printf 'line1\\nline2 renamed\\nline3\\n' > shared.txt")}
        ]
    });
    let task_id = system.create_task(&body).await;
    let task = system.wait_finished(&task_id).await;

    // Final statuses.
    assert_eq!(task["status"], "conflicted", "{task:#}");
    let subtasks = task["subtasks"].as_array().unwrap();
    for st in subtasks {
        assert_eq!(st["status"], "succeeded", "subtask {st:#}");
        assert!(
            st["commit"].is_string() && st["worker"].is_string(),
            "{st:#}"
        );
        assert_eq!(
            st["branch"],
            format!("aida/{task_id}/{}", st["name"].as_str().unwrap())
        );
    }
    let by_name = |n: &str| subtasks.iter().find(|s| s["name"] == n).unwrap().clone();
    assert_eq!(by_name("api")["merged"], true);
    assert_eq!(by_name("client")["merged"], true);
    assert_eq!(by_name("rename")["merged"], false);
    assert_eq!(
        task["conflicts"],
        json!([{"subtask": "rename", "files": ["shared.txt"]}])
    );
    assert_eq!(by_name("api")["stats"]["files"], json!(["api.txt"]));

    // Both workers did work.
    let workers: BTreeSet<&str> = subtasks
        .iter()
        .map(|s| s["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers, BTreeSet::from(["worker-1", "worker-2"]));

    // The merged branch holds the clean work; the conflicting one is left out.
    let result = format!("aida/{task_id}/result");
    assert_eq!(task["result_branch"], result);
    assert_eq!(
        task["result_commit"].as_str().unwrap(),
        repo.rev_parse(&result)
    );
    assert_eq!(repo.show(&result, "api.txt").as_deref(), Some("api v1\n"));
    assert_eq!(
        repo.show(&result, "client.txt").as_deref(),
        Some("api v1\nclient\n")
    );
    assert_eq!(
        repo.show(&result, "shared.txt").as_deref(),
        Some("line1\nline2 styled\nline3\n")
    );
    // The dependent subtask saw its dependency's work on its own branch.
    assert_eq!(
        repo.show(&format!("aida/{task_id}/client"), "api.txt")
            .as_deref(),
        Some("api v1\n")
    );
    // The base branch never changes; no worktree holds a run any more (each
    // worker's pooled worktree stays, detached), branches stay.
    assert_eq!(repo.rev_parse("main"), base_before);
    assert_eq!(repo.show("main", "api.txt"), None);
    assert!(
        repo.worktrees_in_use().is_empty(),
        "worktrees left: {:?}",
        repo.worktrees_in_use()
    );
    for name in ["api", "style", "client", "rename"] {
        assert!(repo.branches().contains(&format!("aida/{task_id}/{name}")));
    }

    // The report names the conflict, in markdown and in JSON.
    let md = system.report(&task_id).await;
    assert!(md.contains("rename") && md.contains("shared.txt"), "{md}");
    let report: Value = system
        .http
        .get(format!("{}/api/tasks/{task_id}/report", system.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["status"], "conflicted", "{report:#}");
    assert!(report.to_string().contains("shared.txt"));

    // Stored history, SSE and Redis carry the same story.
    let stored = system
        .get(&format!("/api/tasks/{task_id}/events"))
        .await
        .unwrap();
    let stored = stored["events"].as_array().unwrap();
    let sse = system
        .read_sse(&format!("/api/events?task={task_id}"))
        .await;
    let sse_ids: Vec<i64> = sse.iter().map(|(id, _)| id.parse().unwrap()).collect();
    let stored_ids: Vec<i64> = stored.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(
        sse_ids, stored_ids,
        "SSE replays the stored history in order"
    );
    assert!(sse_ids.windows(2).all(|w| w[0] < w[1]));
    let last = &sse.last().unwrap().1;
    assert_eq!(
        (last["kind"].as_str(), last["data"]["status"].as_str()),
        (Some("task.status"), Some("conflicted"))
    );

    let kinds: HashSet<&str> = stored.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "task.created",
        "task.status",
        "subtask.status",
        "log.line",
        "task.merged",
    ] {
        assert!(kinds.contains(k), "no {k} event in {kinds:?}");
    }
    assert!(
        stored.iter().any(
            |e| e["kind"] == "log.line" && e["data"]["line"] == "working on api: write the api"
        ),
        "the agent's output (with its prompt from stdin) is in the log events"
    );

    let published = eventually("the task's final event on redis", || async {
        let seen = redis_events.lock().unwrap().clone();
        seen.iter()
            .any(|(_, e)| {
                e["task_id"] == task_id.as_str()
                    && e["kind"] == "task.status"
                    && e["data"]["status"] == "conflicted"
            })
            .then_some(seen)
    })
    .await;
    let channel_of = |kind: &str| {
        published
            .iter()
            .find(|(_, e)| e["kind"] == kind)
            .map(|(c, _)| c.clone())
            .unwrap_or_else(|| panic!("no {kind} on redis"))
    };
    assert_eq!(channel_of("task.created"), "aida:events:task");
    assert_eq!(channel_of("subtask.status"), "aida:events:task");
    assert_eq!(channel_of("log.line"), "aida:events:log");
    assert_eq!(channel_of("worker.connected"), "aida:events:worker");
    let on_redis: Vec<i64> = published
        .iter()
        .filter(|(_, e)| e["task_id"] == task_id.as_str())
        .map(|(_, e)| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        on_redis, stored_ids,
        "every stored event of the task reached redis, in order"
    );

    // The workers' view.
    let workers = system.get("/api/workers").await.unwrap();
    for w in workers["workers"].as_array().unwrap() {
        assert!(w["completed"].as_u64().unwrap() >= 1, "{w:#}");
        assert_eq!(w["state"], "idle");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_subtask_fails_the_task_and_cancels_its_dependents() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    let body = json!({
        "repo": repo.path_str(),
        "agent": sh_agent("echo ok > ok.txt"),
        "subtasks": [
            {"name": "good", "prompt": "ok"},
            {"name": "bad", "prompt": "fail", "agent": sh_agent("echo boom >&2; exit 3")},
            {"name": "after-bad", "prompt": "never runs", "depends_on": ["bad"]}
        ]
    });
    let task_id = system.create_task(&body).await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "failed", "{task:#}");
    let st = |n: &str| aida_tests::subtask(&task, n).clone();
    assert_eq!(st("good")["status"], "succeeded");
    assert_eq!(st("bad")["status"], "failed");
    assert_eq!(st("bad")["exit_code"], 3);
    assert!(
        st("bad")["error"].as_str().unwrap().contains('3'),
        "{:#}",
        st("bad")
    );
    assert_eq!(st("after-bad")["status"], "cancelled");
    assert_eq!(st("after-bad")["attempts"], 0);
    assert!(task["error"].as_str().unwrap().contains("bad"));
    // The good work is still merged.
    assert_eq!(
        repo.show(&format!("aida/{task_id}/result"), "ok.txt")
            .as_deref(),
        Some("ok\n")
    );
    // The failing agent's stderr is in the log.
    let events = system
        .get(&format!("/api/tasks/{task_id}/events"))
        .await
        .unwrap();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["line"] == "boom" && e["data"]["stream"] == "stderr")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_description_without_subtasks_is_split_by_its_list_and_cancel_stops_agents() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    // Split: one subtask per list item; the agent blocks until cancelled.
    let body = json!({
        "repo": repo.path_str(),
        "description": "Two things:\n- Add login\n- Add logout\n",
        "agent": sh_agent("echo $$ > \"$AIDA_WORKTREE/../$AIDA_SUBTASK_NAME.pid\"; echo started; exec sleep 600"),
    });
    let task_id = system.create_task(&body).await;
    let task = system.get(&format!("/api/tasks/{task_id}")).await.unwrap();
    let names: Vec<&str> = task["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add-login", "add-logout"]);

    eventually("the first subtask to run", || async {
        let t = system.get(&format!("/api/tasks/{task_id}")).await.ok()?;
        (t["subtasks"][0]["status"] == "running").then_some(())
    })
    .await;
    // The file exists before its content is written: wait for a pid.
    let pid_file = system.dir.path().join("worktrees/worker-1/add-login.pid");
    let pid: u32 = eventually("the agent to write its pid", || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    let (status, cancelled) = system
        .post(&format!("/api/tasks/{task_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "cancelled");
    for st in task["subtasks"].as_array().unwrap() {
        assert_eq!(st["status"], "cancelled", "{st:#}");
    }
    // The worker stopped the agent (no process left) and handed its worktree
    // back.
    eventually("the cancelled agent's process to be gone", || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
    eventually(
        "the cancelled agent's worktree to be handed back",
        || async { repo.worktrees_in_use().is_empty().then_some(()) },
    )
    .await;
    eventually("the worker to be idle again", || async {
        let w = system.get("/api/workers").await.ok()?;
        (w["workers"][0]["state"] == "idle").then_some(())
    })
    .await;
}
