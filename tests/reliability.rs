//! Nothing lost: real processes are killed (`kill -9`) in the middle of
//! work, and tasks still end right, with every result applied exactly once.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, eventually, subtask};
use serde_json::{Value, json};

/// Stops a leftover agent process of a killed worker (it runs in its own
/// process group and outlives its worker, as a real agent would).
fn kill_pid_in(file: &Path) {
    if let Ok(pid) = std::fs::read_to_string(file) {
        let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_subtask_goes_to_another_worker_after_its_lease_expires() {
    let mut system =
        System::start_with(Options::workers(2).orchestrator_env("LEASE_TIMEOUT_SECS", "3")).await;
    let shared = tempfile::tempdir().unwrap();
    let shared_path = shared.path().display().to_string();
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    // The first attempt hangs (until the test is over); a later one works.
    let agent = format!(
        "if mkdir '{shared_path}/first' 2>/dev/null; then echo $$ > '{shared_path}/pid'; exec sleep 600; fi; echo done > out.txt"
    );
    let task_id = system
        .create_task(&json!({"repo": repo.path_str(), "subtasks": [{"name": "job", "prompt": "p", "agent": sh_agent(&agent)}]}))
        .await;
    let first_worker = eventually("the first attempt to run", || async {
        let t = system.get(&format!("/api/tasks/{task_id}")).await.ok()?;
        let st = subtask(&t, "job");
        (st["status"] == "running" && Path::new(&format!("{shared_path}/pid")).exists())
            .then(|| st["worker"].as_str().unwrap().to_owned())
    })
    .await;

    let killed_at = Instant::now();
    system.kill9(&first_worker);
    let task = system.wait_finished(&task_id).await;
    let recovery = killed_at.elapsed();
    kill_pid_in(&shared.path().join("pid"));
    assert_eq!(task["status"], "succeeded", "{task:#}");
    eprintln!("recovery after kill -9 of a worker: {recovery:?} (lease 3 s)");

    let st = subtask(&task, "job");
    let history: Vec<(&str, &str)> = st["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["worker"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    let other = if first_worker == "worker-1" {
        "worker-2"
    } else {
        "worker-1"
    };
    assert_eq!(
        history,
        [(first_worker.as_str(), "lost"), (other, "succeeded")],
        "{st:#}"
    );
    assert!(
        st["history"][0]["error"]
            .as_str()
            .unwrap()
            .contains("heartbeats")
    );
    assert_eq!(
        repo.show(task["result_branch"].as_str().unwrap(), "out.txt")
            .as_deref(),
        Some("done\n")
    );

    // The dead worker's report comes late (as if it came back): its epoch is
    // gone, so it is refused and changes nothing.
    let late = json!({
        "workerId": first_worker, "taskId": task_id, "subtask": "job", "attempt": 1,
        "result": {"success": false, "error": "late and wrong"}
    });
    let header = format!("authorization: Bearer {}", system.secrets.internal_token);
    let out = Command::new("grpcurl")
        .args([
            "-plaintext",
            "-H",
            &header,
            "-d",
            &late.to_string(),
            &system.orchestrator_addr,
            "aida.orchestrator.Orchestrator/CompleteTask",
        ])
        .output()
        .expect("grpcurl");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_ne!(answer["accepted"], true, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not running attempt 1"),
        "{answer}"
    );
    let after = system.get(&format!("/api/tasks/{task_id}")).await.unwrap();
    assert_eq!(after["status"], "succeeded");
    assert_eq!(subtask(&after, "job")["history"], st["history"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_orchestrator_restarts_and_every_result_is_merged_exactly_once() {
    let mut system = System::start(3).await;
    let shared = tempfile::tempdir().unwrap();
    let go = shared.path().join("go");
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    // Each agent waits for the go file, so all three run across the crash.
    let agent = |name: &str| {
        sh_agent(&format!(
            "touch '{dir}/{name}.started'; while [ ! -f '{go}' ]; do sleep 0.1; done; echo {name} > {name}.txt",
            dir = shared.path().display(),
            go = go.display()
        ))
    };
    let task_id = system
        .create_task(&json!({"repo": repo.path_str(), "subtasks": [
            {"name": "a", "prompt": "p", "agent": agent("a")},
            {"name": "b", "prompt": "p", "agent": agent("b")},
            {"name": "c", "prompt": "p", "agent": agent("c")}
        ]}))
        .await;
    eventually("three agents to run", || async {
        ["a", "b", "c"]
            .iter()
            .all(|n| shared.path().join(format!("{n}.started")).exists())
            .then_some(())
    })
    .await;

    system.kill9("orchestrator");
    let killed_at = Instant::now();
    system.restart_orchestrator().await;
    let back_at = killed_at.elapsed();
    std::fs::write(&go, "").unwrap();
    let task = system.wait_finished(&task_id).await;
    eprintln!(
        "orchestrator back {back_at:?} after kill -9; task done {:?} after",
        killed_at.elapsed()
    );
    assert_eq!(task["status"], "succeeded", "{task:#}");

    // One attempt each, each merged once: one merge commit per subtask
    // that needed one, no more.
    for name in ["a", "b", "c"] {
        let st = subtask(&task, name);
        assert_eq!(st["attempts"], 1, "{st:#}");
        assert_eq!(st["merged"], true);
    }
    let result = task["result_branch"].as_str().unwrap();
    for name in ["a", "b", "c"] {
        assert_eq!(
            repo.show(result, &format!("{name}.txt")),
            Some(format!("{name}\n"))
        );
    }
    let merges = repo.git(&[
        "rev-list",
        "--merges",
        "--count",
        &format!("main..{result}"),
    ]);
    assert!(
        merges.trim().parse::<u32>().unwrap() <= 2,
        "at most one merge commit per non-first subtask: {merges}"
    );
    let events = system
        .get(&format!("/api/tasks/{task_id}/events"))
        .await
        .unwrap();
    let mut succeeded = BTreeMap::new();
    for e in events["events"].as_array().unwrap() {
        if e["kind"] == "subtask.status" && e["data"]["status"] == "succeeded" {
            *succeeded
                .entry(e["subtask"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(
        succeeded,
        BTreeMap::from([("a".into(), 1), ("b".into(), 1), ("c".into(), 1)])
    );
    let merged = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "task.merged")
        .count();
    assert_eq!(merged, 1, "the task was merged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_subtasks_are_retried_with_backoff_up_to_the_maximum() {
    let system =
        System::start_with(Options::workers(1).orchestrator_env("RETRY_BACKOFF_MS", "300")).await;
    let shared = tempfile::tempdir().unwrap();
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let counter = |name: &str| shared.path().join(name).display().to_string();
    // Fails on its first two runs, then succeeds.
    let flaky = format!(
        "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{c}'; [ $n -ge 3 ] || {{ echo \"try $n failed\" >&2; exit 1; }}; echo ok > ok.txt",
        c = counter("flaky")
    );
    let task_id = system
        .create_task(&json!({"repo": repo.path_str(), "subtasks": [
            {"name": "flaky", "prompt": "p", "agent": sh_agent(&flaky)},
            {"name": "broken", "prompt": "p", "agent": sh_agent("exit 7")},
            {"name": "missing", "prompt": "p", "agent": {"kind": "command", "command": ["/nonexistent/agent"]}}
        ]}))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "failed", "{task:#}");

    let flaky = subtask(&task, "flaky");
    assert_eq!(flaky["status"], "succeeded", "{flaky:#}");
    assert_eq!(flaky["attempts"], 3);
    let statuses: Vec<&str> = flaky["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "failed", "succeeded"]);

    let broken = subtask(&task, "broken");
    assert_eq!(broken["status"], "failed");
    assert_eq!(broken["attempts"], 3, "tried up to the maximum: {broken:#}");
    // Backoff: each retry started at least half the base delay (jitter) after
    // the previous attempt ended, the second wait longer than the first's
    // lower bound doubled.
    let history = broken["history"].as_array().unwrap();
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    for pair in history.windows(2) {
        let gap = time(&pair[1]["started_at"]) - time(&pair[0]["finished_at"]);
        assert!(
            gap.num_milliseconds() >= 150,
            "no backoff between attempts: {gap}"
        );
    }
    let second_gap = time(&history[2]["started_at"]) - time(&history[1]["finished_at"]);
    assert!(
        second_gap.num_milliseconds() >= 300,
        "the backoff grows: {second_gap}"
    );

    // A missing program cannot appear by trying again: one attempt only.
    let missing = subtask(&task, "missing");
    assert_eq!(missing["status"], "failed");
    assert_eq!(missing["attempts"], 1, "{missing:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_tasks_with_repeated_idempotency_keys_are_all_accounted_for() {
    let system = System::start(3).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let body = |i: usize| {
        json!({"repo": repo.path_str(), "subtasks": [{"name": "t", "prompt": format!("task {i}"),
               "agent": sh_agent(&format!("echo {i} > out-{i}.txt"))}]})
    };
    // 200 requests: 150 without a key, and 25 keys sent twice each.
    let requests = (0..200).map(|i| {
        let http = system.http.clone();
        let url = format!("{}/api/tasks", system.url);
        let key = (i >= 150).then(|| format!("key-{}", (i - 150) / 2));
        let body = body(if i >= 150 { 150 + (i - 150) / 2 } else { i });
        async move {
            let mut req = http.post(url).json(&body);
            if let Some(key) = &key {
                req = req.header("Idempotency-Key", key);
            }
            let resp = req.send().await.expect("POST");
            let status = resp.status().as_u16();
            let task: Value = resp.json().await.expect("JSON");
            (key, status, task["id"].as_str().map(str::to_owned))
        }
    });
    let answers = futures::future::join_all(requests).await;
    let mut ids = HashSet::new();
    let mut by_key: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for (key, status, id) in answers {
        assert_eq!(status, 201);
        let id = id.expect("every request got a task");
        ids.insert(id.clone());
        if let Some(key) = key {
            by_key.entry(key).or_default().insert(id);
        }
    }
    assert_eq!(ids.len(), 175, "150 unkeyed tasks and one per key");
    assert!(
        by_key.values().all(|ids| ids.len() == 1),
        "a key never made two tasks: {by_key:?}"
    );

    let listed = system.get("/api/tasks?limit=1000").await.unwrap();
    let stored: HashSet<String> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, ids, "exactly the tasks answered are stored");
    for id in &ids {
        let task = system.wait_finished(id).await;
        assert_eq!(task["status"], "succeeded", "{task:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_one_subtask_stops_its_agent_while_the_rest_goes_on() {
    let system = System::start(2).await;
    let shared = tempfile::tempdir().unwrap();
    let pid_file = shared.path().join("slow.pid");
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let task_id = system
        .create_task(&json!({"repo": repo.path_str(), "subtasks": [
            {"name": "slow", "prompt": "p", "agent": sh_agent(&format!("echo $$ > '{}'; exec sleep 600", pid_file.display()))},
            {"name": "after-slow", "prompt": "p", "depends_on": ["slow"], "agent": sh_agent("true")},
            {"name": "quick", "prompt": "p", "agent": sh_agent("echo quick > quick.txt")}
        ]}))
        .await;
    // The file exists before its content is written: wait for a pid.
    let pid: u32 = eventually("the slow agent to run", || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;

    let asked = Instant::now();
    let (status, task) = system
        .post(
            &format!("/api/tasks/{task_id}/subtasks/slow/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(subtask(&task, "slow")["status"], "cancelled");
    eventually("the cancelled agent's process to be gone", || async {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
    eprintln!("agent gone {:?} after the cancel request", asked.elapsed());
    eventually("its worktree to be handed back", || async {
        repo.worktrees_in_use().is_empty().then_some(())
    })
    .await;

    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "cancelled", "{task:#}");
    assert_eq!(task["error"], "subtasks cancelled: slow, after-slow");
    assert_eq!(subtask(&task, "after-slow")["status"], "cancelled");
    assert_eq!(subtask(&task, "quick")["status"], "succeeded");
    // What was done is still merged.
    assert_eq!(
        repo.show(task["result_branch"].as_str().unwrap(), "quick.txt")
            .as_deref(),
        Some("quick\n")
    );
    // Cancelling it again changes nothing; a finished subtask cannot be.
    let (status, _) = system
        .post(
            &format!("/api/tasks/{task_id}/subtasks/quick/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_deadline_stops_with_the_reason() {
    let system = System::start(1).await;
    let shared = tempfile::tempdir().unwrap();
    let pid_file = shared.path().join("agent.pid");
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let task_id = system
        .create_task(&json!({"repo": repo.path_str(), "timeout_secs": 2, "subtasks": [
            {"name": "forever", "prompt": "p", "agent": sh_agent(&format!("echo $$ > '{}'; exec sleep 600", pid_file.display()))},
            {"name": "never", "prompt": "p", "depends_on": ["forever"], "agent": sh_agent("true")}
        ]}))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "failed", "{task:#}");
    assert_eq!(task["error"], "the task timed out after 2s");
    for name in ["forever", "never"] {
        assert_eq!(subtask(&task, name)["status"], "cancelled");
    }
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .expect("the agent wrote its pid before the timeout");
    eventually("the agent's process to be gone", || async {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_subtasks_start_by_priority_and_first_come_within_one() {
    let system = System::start(1).await;
    let shared = tempfile::tempdir().unwrap();
    let gate = shared.path().join("gate");
    let order = shared.path().join("order");
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    // The one worker is busy until the gate opens; meanwhile tasks queue up.
    let blocker = system
        .create_task(&json!({"repo": repo.path_str(), "subtasks": [{"name": "block", "prompt": "p",
            "agent": sh_agent(&format!("while [ ! -f '{}' ]; do sleep 0.05; done", gate.display()))}]}))
        .await;
    eventually("the blocker to run", || async {
        let t = system.get(&format!("/api/tasks/{blocker}")).await.ok()?;
        (t["status"] == "running").then_some(())
    })
    .await;
    let record = |label: &str| sh_agent(&format!("echo {label} >> '{}'", order.display()));
    for (label, priority) in [
        ("low-1", 0),
        ("high-1", 5),
        ("low-2", 0),
        ("high-2", 5),
        ("mid", 2),
    ] {
        system
            .create_task(&json!({"repo": repo.path_str(), "priority": priority,
                "subtasks": [{"name": "run", "prompt": "p", "agent": record(label)}]}))
            .await;
    }
    std::fs::write(&gate, "").unwrap();
    eventually("every queued task to run", || async {
        let done = std::fs::read_to_string(&order).ok()?;
        (done.lines().count() == 5).then_some(())
    })
    .await;
    let ran: Vec<String> = std::fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ran, ["high-1", "high-2", "mid", "low-1", "low-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_with_sigterm_hands_its_subtask_back() {
    let mut system = System::start(2).await;
    let shared = tempfile::tempdir().unwrap();
    let shared_path = shared.path().display().to_string();
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let agent = format!(
        "if mkdir '{shared_path}/first' 2>/dev/null; then echo $$ > '{shared_path}/pid'; exec sleep 600; fi; echo done > out.txt"
    );
    let task_id = system
        .create_task(&json!({"repo": repo.path_str(), "subtasks": [{"name": "job", "prompt": "p", "agent": sh_agent(&agent)}]}))
        .await;
    let first_worker = eventually("the first attempt to run", || async {
        let t = system.get(&format!("/api/tasks/{task_id}")).await.ok()?;
        let st = subtask(&t, "job");
        (st["status"] == "running" && Path::new(&format!("{shared_path}/pid")).exists())
            .then(|| st["worker"].as_str().unwrap().to_owned())
    })
    .await;
    let pid = std::fs::read_to_string(shared.path().join("pid"))
        .unwrap()
        .trim()
        .to_owned();

    // SIGTERM, as `podman stop` sends: the worker stops its agent, reports,
    // and exits cleanly; the subtask is handed back, not left to its lease.
    let status = system.terminate(&first_worker).await;
    assert!(status.success(), "{first_worker} exited with {status}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the agent stopped with its worker"
    );
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let history = subtask(&task, "job")["history"].as_array().unwrap().clone();
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0]["worker"], first_worker.as_str());
    assert_eq!(
        history[0]["status"], "failed",
        "handed back, not lost: {history:#?}"
    );
    assert_eq!(
        history[0]["error"],
        format!("worker {first_worker} shut down while running it")
    );
    assert_eq!(history[1]["status"], "succeeded");
}
