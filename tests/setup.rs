//! Each worktree set up before its agent runs: the repository's
//! `.aida/config.toml` (a set-up command, environment, ports), the task's
//! own `setup` over it, ports no two concurrent runs share, a set-up that
//! fails the attempt with its output, and a sparse worktree for a subtask
//! that declares its directories.

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, subtask};
use serde_json::{Value, json};

const CONFIG: &str = r#"
setup = ["sh", "-c", "echo preparing the worktree; mkdir -p deps && echo built > deps/lib.txt && echo ready > .ready"]
ports = 2

[env]
GREETING = "hi"
"#;

/// Waits (bounded) until both subtasks run at once, then records the ports
/// and the environment it got.
const AGENT: &str = r#"
test -e deps/lib.txt || { echo "set-up did not run first"; exit 9; }
touch "$RENDEZVOUS/$AIDA_SUBTASK_NAME"
i=0
while [ ! -e "$RENDEZVOUS/a" ] || [ ! -e "$RENDEZVOUS/b" ]; do
  i=$((i+1)); [ $i -gt 1200 ] && { echo "the other run never started"; exit 7; }
  sleep 0.05
done
echo "$AIDA_PORTS" > "ports-$AIDA_SUBTASK_NAME.txt"
echo "$AIDA_PORT_0 $AIDA_PORT_1" > "each-$AIDA_SUBTASK_NAME.txt"
echo "$GREETING" > "greeting-$AIDA_SUBTASK_NAME.txt"
echo "agent ran"
"#;

fn repo_with_config() -> GitRepo {
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    std::fs::create_dir(repo.path.join(".aida")).unwrap();
    std::fs::write(repo.path.join(".aida/config.toml"), CONFIG).unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "aida config"]);
    repo
}

async fn log_lines(system: &System, task_id: &str) -> Vec<(String, String)> {
    let events = system
        .get(&format!("/api/tasks/{task_id}/events?limit=1000"))
        .await
        .unwrap();
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "log.line")
        .map(|e| {
            (
                e["data"]["stream"].as_str().unwrap_or_default().to_owned(),
                e["data"]["line"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn ports(text: &str) -> Vec<u16> {
    text.trim()
        .split(',')
        .map(|p| p.parse().expect("a port"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worktree_is_set_up_before_its_agent_and_concurrent_runs_get_their_own_ports() {
    let system = System::start_with(Options::workers(2)).await;
    let repo = repo_with_config();
    let rendezvous = tempfile::tempdir().unwrap();
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "two at once",
            "agent": sh_agent(AGENT),
            "subtasks": [{"name": "a", "prompt": "a"}, {"name": "b", "prompt": "b"}],
            "setup": {"env": {"RENDEZVOUS": rendezvous.path().to_str().unwrap()}}
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let result = task["result_branch"].as_str().unwrap();

    // Both ran at once, each with two ports of its own.
    let a = ports(&repo.show(result, "ports-a.txt").unwrap());
    let b = ports(&repo.show(result, "ports-b.txt").unwrap());
    assert_eq!((a.len(), b.len()), (2, 2), "{a:?} {b:?}");
    for port in &a {
        assert!(
            !b.contains(port),
            "runs at once share port {port}: {a:?} {b:?}"
        );
    }
    assert_eq!(
        repo.show(result, "each-a.txt").unwrap().trim(),
        format!("{} {}", a[0], a[1])
    );
    // The repository's environment reached the agents.
    assert_eq!(repo.show(result, "greeting-a.txt").as_deref(), Some("hi\n"));
    // What the set-up made is not the agents' work.
    assert!(repo.show(result, "deps/lib.txt").is_none());
    assert!(repo.show(result, ".ready").is_none());

    // Its output is in the subtask's log, before the agent's.
    let lines = log_lines(&system, &task_id).await;
    let setup = lines
        .iter()
        .position(|(stream, line)| stream == "setup" && line.contains("preparing the worktree"))
        .expect("the set-up's output in the log");
    let agent = lines
        .iter()
        .position(|(_, line)| line.contains("agent ran"))
        .expect("the agent's output");
    assert!(setup < agent, "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_fails_the_attempt_with_its_output_and_the_agent_never_runs() {
    let system = System::start_with(Options::workers(1)).await;
    let repo = repo_with_config();
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "broken set-up",
            "agent": sh_agent("echo agent ran; echo ran > ran.txt"),
            "subtasks": [{"name": "only", "prompt": "p"}],
            "max_attempts": 1,
            // The task's command replaces the repository's.
            "setup": {"command": ["sh", "-c", "echo 'npm ERR! missing: left-pad' >&2; exit 3"]}
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "failed", "{task:#}");
    let only = subtask(&task, "only");
    let error = only["error"].as_str().unwrap();
    assert!(error.contains("exited with code 3"), "{error}");
    assert!(error.contains("npm ERR! missing: left-pad"), "{error}");
    let lines = log_lines(&system, &task_id).await;
    assert!(
        !lines.iter().any(|(_, l)| l.contains("agent ran")),
        "{lines:#?}"
    );

    // A task's set-up is checked when it is created.
    let (status, answer) = system
        .post(
            "/api/tasks",
            &json!({
                "repo": repo.path_str(),
                "description": "d",
                "agent": sh_agent("true"),
                "setup": {"env": {"AIDA_TOKEN": "x"}, "ports": 99}
            }),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let message: &Value = &answer["error"]["message"];
    assert!(message.as_str().unwrap().contains("AIDA_TOKEN"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtask_with_paths_sees_only_them_and_its_result_keeps_every_other_file() {
    let system = System::start_with(Options::workers(2)).await;
    let repo = GitRepo::with_files(&[
        ("README.md", "demo\n"),
        ("api/server.rs", "fn serve() {}\n"),
        ("api/v1/routes.rs", "fn routes() {}\n"),
        ("web/index.html", "<html></html>\n"),
        ("docs/guide.md", "# guide\n"),
    ]);
    // Each agent lists what its worktree holds, then changes a file of its
    // own directory.
    let list = "find . -path ./.git -prune -o -type f -print | sort";
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "two areas",
            "subtasks": [
                {"name": "api", "prompt": "p", "paths": ["api/"], "agent": sh_agent(&format!(
                    "{list} > /tmp/aida-sparse-$$; mv /tmp/aida-sparse-$$ api/seen.txt; echo 'fn serve() {{ 1 }}' > api/server.rs"))},
                {"name": "web", "prompt": "p", "paths": ["web"], "agent": sh_agent(&format!(
                    "{list} > /tmp/aida-sparse-$$; mv /tmp/aida-sparse-$$ web/seen.txt; rm web/index.html"))}
            ]
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(subtask(&task, "api")["paths"], json!(["api"]));
    assert_eq!(subtask(&task, "web")["paths"], json!(["web"]));

    let result = task["result_branch"].as_str().unwrap();
    assert_eq!(
        repo.show(result, "api/seen.txt").as_deref(),
        Some("./README.md\n./api/server.rs\n./api/v1/routes.rs\n")
    );
    assert_eq!(
        repo.show(result, "web/seen.txt").as_deref(),
        Some("./README.md\n./web/index.html\n")
    );
    // Each one's change, and nothing else lost: the files neither worktree
    // held are in the result as they were.
    assert_eq!(
        repo.show(result, "api/server.rs").as_deref(),
        Some("fn serve() { 1 }\n")
    );
    assert_eq!(repo.show(result, "web/index.html"), None);
    assert_eq!(
        repo.show(result, "docs/guide.md").as_deref(),
        Some("# guide\n")
    );
    assert_eq!(
        repo.show(result, "api/v1/routes.rs").as_deref(),
        Some("fn routes() {}\n")
    );
    assert!(
        repo.worktrees_in_use().is_empty(),
        "{:?}",
        repo.worktrees_in_use()
    );

    // Paths are checked when the task is created.
    for (paths, why) in [
        (json!(["../etc"]), "\"..\""),
        (json!(["src/**"]), "pattern"),
        (json!([""]), "empty"),
    ] {
        let (status, answer) = system
            .post(
                "/api/tasks",
                &json!({
                    "repo": repo.path_str(),
                    "description": "d",
                    "agent": sh_agent("true"),
                    "subtasks": [{"name": "x", "prompt": "p", "paths": paths}]
                }),
            )
            .await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("paths") && message.contains(why),
            "{answer}"
        );
    }
}
