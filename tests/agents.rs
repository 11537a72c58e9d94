//! Agents as the orchestrator sees them: which worker can run which agent
//! kind, and what a subtask learns from the subtasks it depends on.

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtask_whose_agent_no_worker_can_run_says_so_then_fails() {
    // The worker finds no codex CLI; the orchestrator waits 3 s for one.
    let options = Options::workers(1)
        .orchestrator_env("AGENT_WAIT_SECS", "3")
        .worker_env("CODEX_PATH", "/nonexistent/codex");
    let system = System::start_with(options).await;
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    let body = json!({
        "repo": repo.path_str(),
        "agent": sh_agent("echo fine > fine.txt"),
        "subtasks": [
            {"name": "fine", "prompt": "p"},
            {"name": "needs-codex", "prompt": "p", "agent": {"kind": "codex-cli"}},
            {"name": "after", "prompt": "p", "depends_on": ["needs-codex"]}
        ]
    });
    let task_id = system.create_task(&body).await;

    // While it waits, its status says why.
    let waiting = eventually("the subtask to say it has no worker", || async {
        let task = system.get(&format!("/api/tasks/{task_id}")).await.ok()?;
        let st = task["subtasks"][1].clone();
        (st["status"] == "pending" && st["error"].is_string()).then_some(st)
    })
    .await;
    let reason = waiting["error"].as_str().unwrap();
    assert!(
        reason.contains("no connected worker can run agent kind \"codex-cli\""),
        "{reason}"
    );
    assert!(
        reason.contains("command"),
        "names what the workers can run: {reason}"
    );

    // Then it fails, and so does the task; the rest is not stuck either.
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "failed", "{task:#}");
    let st = |n: &str| aida_tests::subtask(&task, n).clone();
    assert_eq!(st("fine")["status"], "succeeded");
    assert_eq!(st("needs-codex")["status"], "failed");
    assert!(
        st("needs-codex")["error"]
            .as_str()
            .unwrap()
            .contains("for 3s")
    );
    assert_eq!(st("after")["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_subtask_is_told_what_its_dependencies_did() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    let body = json!({
        "repo": repo.path_str(),
        "subtasks": [
            {"name": "api", "prompt": "write the api",
             "agent": sh_agent("mkdir -p src && echo api > src/api.rs && echo 'Added the API in src/api.rs'")},
            // Keeps the prompt it was given, to look at.
            {"name": "client", "prompt": "write the client", "depends_on": ["api"],
             "agent": sh_agent("cat > prompt.txt")}
        ]
    });
    let task_id = system.create_task(&body).await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let prompt = repo
        .show(task["result_branch"].as_str().unwrap(), "prompt.txt")
        .expect("prompt.txt");
    assert!(prompt.starts_with("write the client\n"), "{prompt}");
    assert!(prompt.contains("### api\n"), "{prompt}");
    assert!(prompt.contains("Files changed: src/api.rs\n"), "{prompt}");
    // A command agent's summary is the last line it printed.
    assert_eq!(
        task["subtasks"][0]["summary"],
        "Added the API in src/api.rs"
    );
    assert!(
        prompt.contains("Summary: Added the API in src/api.rs\n"),
        "{prompt}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_share_a_task_context_through_the_api_with_their_token() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    // The writer puts two versions of a key; the reader, which depends on
    // it, reads the latest. curl is the agent's own tool: the worker only
    // hands it AIDA_CONTEXT_URL and AIDA_CONTEXT_TOKEN, a token of its
    // attempt's own. The writer also keeps its token in a file, so the test
    // can check that it dies with the attempt.
    let put = |value: &str| {
        format!(
            "curl -sf -X PUT -H \"Authorization: Bearer $AIDA_CONTEXT_TOKEN\" -H 'content-type: application/json' \
             -d '{{\"value\": \"{value}\", \"author\": \"writer\"}}' \"$AIDA_CONTEXT_URL/api-url\" > /dev/null"
        )
    };
    let body = json!({
        "repo": repo.path_str(),
        "subtasks": [
            {"name": "writer", "prompt": "p", "agent": sh_agent(&format!(
                "{} && {} && printf %s \"$AIDA_CONTEXT_TOKEN\" > token.txt",
                put("http://old"),
                put("http://api:3000")
            ))},
            {"name": "reader", "prompt": "p", "depends_on": ["writer"],
             "agent": sh_agent("curl -sf -H \"Authorization: Bearer $AIDA_CONTEXT_TOKEN\" \"$AIDA_CONTEXT_URL/api-url\" > seen.json")}
        ]
    });
    let task_id = system.create_task(&body).await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");

    // The reader saw the latest value.
    let seen: serde_json::Value = serde_json::from_str(
        &repo
            .show(task["result_branch"].as_str().unwrap(), "seen.json")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (seen["value"].as_str(), seen["version"].as_u64()),
        (Some("http://api:3000"), Some(2))
    );
    // The task shows the latest value of each key; the history keeps both.
    assert_eq!(task["context"][0]["key"], "api-url");
    assert_eq!(task["context"][0]["author"], "writer");
    let history = system
        .get(&format!(
            "/api/tasks/{task_id}/context/api-url?history=true"
        ))
        .await
        .unwrap();
    let values: Vec<&str> = history["context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["http://old", "http://api:3000"]);
    // The report includes it.
    let report = system.report(&task_id).await;
    assert!(
        report.contains("**api-url** (v2, by writer): http://api:3000"),
        "{report}"
    );

    // Without a token, with a made-up one, or with the writer's once its
    // attempt is over, nobody writes; a viewer reads but may not write.
    let url = format!("{}/api/tasks/{task_id}/context/api-url", system.url);
    let spent = repo
        .show(task["result_branch"].as_str().unwrap(), "token.txt")
        .expect("the writer's token");
    assert!(spent.starts_with("aida_ctx_"), "{spent}");
    let made_up = format!("aida_ctx_{}_{}", "0".repeat(16), "1".repeat(64));
    for client in [
        reqwest::Client::new(),
        aida_tests::system::client_with(&made_up),
        aida_tests::system::client_with(&spent),
    ] {
        let resp = client
            .put(&url)
            .json(&json!({"value": "evil"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    let viewer = system.user("vera", "viewer").await;
    let resp = viewer.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = viewer
        .put(&url)
        .json(&json!({"value": "evil"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let latest = system
        .get(&format!("/api/tasks/{task_id}/context/api-url"))
        .await
        .unwrap();
    assert_eq!(latest["value"], "http://api:3000");
    // An operator writes, and is named as the author.
    let operator = system.user("olga", "operator").await;
    let resp = operator
        .put(&url)
        .json(&json!({"value": "http://api:4000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let entry: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (entry["author"].as_str(), entry["version"].as_u64()),
        (Some("olga"), Some(3))
    );
    // Bad keys and unknown ones.
    let resp = system
        .http
        .get(format!("{}/api/tasks/{task_id}/context/nope", system.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

/// A system whose worker runs the fake CLIs of `tests/fakes`.
async fn with_fake_clis(workers: usize) -> System {
    let fakes = concat!(env!("CARGO_MANIFEST_DIR"), "/fakes");
    System::start_with(
        Options::workers(workers)
            .worker_env("CLAUDE_PATH", &format!("{fakes}/claude"))
            .worker_env("GEMINI_PATH", &format!("{fakes}/gemini"))
            .worker_env("CODEX_PATH", &format!("{fakes}/codex")),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_mixing_claude_gemini_and_codex_merges_each_ones_work_with_costs() {
    let system = with_fake_clis(2).await;
    let workers = system.get("/api/workers").await.unwrap();
    let kinds = workers["workers"][0]["agent_kinds"].to_string();
    for kind in ["command", "claude-code", "gemini-cli", "codex-cli"] {
        assert!(
            kinds.contains(kind),
            "the worker advertises {kind}: {kinds}"
        );
    }
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let body = json!({
        "repo": repo.path_str(),
        "subtasks": [
            {"name": "claude-part", "prompt": "write claude.txt: from claude\nturns 3\ncost 0.25\nsay Wrote claude.txt",
             "agent": {"kind": "claude-code", "model": "sonnet", "max_turns": 5}},
            {"name": "gemini-part", "prompt": "write gemini.txt: from gemini\nsay Wrote gemini.txt",
             "agent": {"kind": "gemini-cli", "approval_mode": "auto_edit"}},
            {"name": "codex-part", "prompt": "write codex.txt: from codex\nsay Wrote codex.txt",
             "agent": {"kind": "codex-cli"}}
        ]
    });
    let task_id = system.create_task(&body).await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let result = task["result_branch"].as_str().unwrap();
    for (file, content) in [
        ("claude.txt", "from claude"),
        ("gemini.txt", "from gemini"),
        ("codex.txt", "from codex"),
    ] {
        assert_eq!(
            repo.show(result, file).as_deref().map(str::trim),
            Some(content),
            "{file}"
        );
    }

    let st = |n: &str| aida_tests::subtask(&task, n).clone();
    let claude = st("claude-part");
    assert_eq!(claude["usage"]["turns"], 3, "{claude:#}");
    assert_eq!(claude["usage"]["cost_usd"], 0.25);
    assert!(claude["usage"]["session_id"].is_string());
    assert!(
        claude["summary"]
            .as_str()
            .unwrap()
            .contains("Wrote claude.txt")
    );
    assert!(st("gemini-part")["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(st("codex-part")["usage"]["output_tokens"].as_u64().unwrap() > 0);
    // The task sums its subtasks' usage.
    let sum = |field: &str| -> u64 {
        task["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["usage"][field].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        task["usage"]["input_tokens"].as_u64(),
        Some(sum("input_tokens"))
    );
    assert_eq!(
        task["usage"]["output_tokens"].as_u64(),
        Some(sum("output_tokens"))
    );
    assert_eq!(task["usage"]["cost_usd"], 0.25);
    // The report shows them too.
    let report = system.report(&task_id).await;
    assert!(
        report.contains("## Agent usage") && report.contains("$0.2500"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtask_past_its_timeout_is_killed_and_fails_with_the_reason() {
    let system = with_fake_clis(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let body = json!({
        "repo": repo.path_str(),
        "subtasks": [{"name": "slow", "prompt": "sleep 300", "agent": {"kind": "claude-code", "timeout_secs": 1}}]
    });
    let task_id = system.create_task(&body).await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "failed");
    let slow = &task["subtasks"][0];
    assert_eq!(slow["status"], "failed");
    assert!(
        slow["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1 s"),
        "{slow:#}"
    );
    // The fake's child `sleep` (its own process) is gone too.
    let events = system
        .get(&format!("/api/tasks/{task_id}/events"))
        .await
        .unwrap();
    let pid = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["data"]["line"].as_str())
        .find_map(|l| {
            l.split("child sleep pid ")
                .nth(1)
                .map(|p| p.trim().to_owned())
        })
        .expect("the fake logs its child's pid");
    eventually("the agent's child process to be gone", || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
}

/// A planner (a command agent here) that answers with `plan`.
fn planner(plan: &serde_json::Value) -> serde_json::Value {
    sh_agent(&format!(
        "echo 'Here is my plan:'; cat <<'EOF'\n{plan:#}\nEOF"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_splits_the_task_and_its_plan_runs() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let plan = json!({"subtasks": [
        {"name": "api", "prompt": "write the api"},
        {"name": "client", "prompt": "write the client", "depends_on": ["api"]}
    ]});
    let body = json!({
        "repo": repo.path_str(),
        "description": "Build an API and its client",
        "agent": sh_agent("echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\""),
        "plan": {"agent": planner(&plan)}
    });
    let (status, created) = system.post("/api/tasks", &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "planning");
    assert_eq!(created["subtasks"], json!([]));
    let task_id = created["id"].as_str().unwrap();
    let task = system.wait_finished(task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["planner"]["status"], "succeeded");
    let names: Vec<&str> = task["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "client"]);
    assert_eq!(task["subtasks"][1]["depends_on"], json!(["api"]));
    let result = task["result_branch"].as_str().unwrap();
    assert_eq!(repo.show(result, "api.txt").as_deref(), Some("api\n"));
    assert_eq!(repo.show(result, "client.txt").as_deref(), Some("client\n"));
    // The planner worked read-only: no branch of its own.
    assert!(
        !repo.branches().iter().any(|b| b.contains("_plan")),
        "{:?}",
        repo.branches()
    );
    let events = system
        .get(&format!("/api/tasks/{task_id}/events"))
        .await
        .unwrap();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "task.planned")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_plan_fails_the_task_with_the_reason() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    for (plan, reason) in [
        (
            json!({"subtasks": [{"name": "a", "prompt": "p", "depends_on": ["b"]}, {"name": "b", "prompt": "p", "depends_on": ["a"]}]}),
            "the plan is invalid: dependency cycle among subtasks: a, b",
        ),
        (
            json!({"subtasks": [{"name": "a", "prompt": "p", "depends_on": ["ghost"]}]}),
            "the plan is invalid: subtask \"a\" depends on unknown subtask \"ghost\"",
        ),
    ] {
        let body = json!({
            "repo": repo.path_str(),
            "description": "d",
            "agent": sh_agent("true"),
            "plan": {"agent": planner(&plan)}
        });
        let task_id = system.create_task(&body).await;
        let task = system.wait_finished(&task_id).await;
        assert_eq!(task["status"], "failed", "{task:#}");
        assert_eq!(task["error"], reason);
        assert_eq!(
            task["subtasks"],
            json!([]),
            "nothing of an invalid plan is stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manually_approved_plan_waits_for_approval() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let plan = json!({"subtasks": [{"name": "only", "prompt": "do it"}]});
    let body = json!({
        "repo": repo.path_str(),
        "description": "d",
        "agent": sh_agent("echo done > done.txt"),
        "plan": {"agent": planner(&plan), "approve": "manual"}
    });
    let task_id = system.create_task(&body).await;
    // The plan is visible and held.
    let held = eventually("the plan to wait for approval", || async {
        let t = system.get(&format!("/api/tasks/{task_id}")).await.ok()?;
        (t["status"] == "awaiting_approval").then_some(t)
    })
    .await;
    assert_eq!(held["subtasks"][0]["name"], "only");
    assert_eq!(held["subtasks"][0]["status"], "pending");
    assert_eq!(held["subtasks"][0]["attempts"], 0);
    let (status, approved) = system
        .post(&format!("/api/tasks/{task_id}/approve"), &json!({}))
        .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "queued");
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(
        repo.show(task["result_branch"].as_str().unwrap(), "done.txt")
            .as_deref(),
        Some("done\n")
    );
    // A finished task cannot be approved again.
    let (status, error) = system
        .post(&format!("/api/tasks/{task_id}/approve"), &json!({}))
        .await;
    assert_eq!(status, 409, "{error}");
}
