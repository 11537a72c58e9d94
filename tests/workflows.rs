//! Workflows: reusable task templates with steps, a parallel group and a
//! fallback agent, stored through the API or kept in the repository's
//! `.aida/workflows/`, run with parameters through the API and `aida run`.

use std::process::Command;

use aida_tests::process::bin;
use aida_tests::{GitRepo, Options, System, subtask};
use serde_json::{Value, json};

/// `prepare`, then `left` and `right` in parallel, then `finish`. `left`'s
/// own agent always fails; its fallback writes the file.
const BUILD: &str = r#"
name = "build"
description = "Build {{feature}}"
max_attempts = 2
agent = { kind = "command", command = ["sh", "-c", "echo \"$AIDA_PROMPT\" > \"$AIDA_SUBTASK_NAME.txt\""] }

[params.feature]
description = "what to build"
required = true

[[steps]]
name = "prepare"
prompt = "prepare {{feature}}"

[[steps]]
parallel = [
  { name = "left", prompt = "left of {{feature}}", agent = { kind = "command", command = ["sh", "-c", "echo the first agent gives up; exit 1"] }, fallback = { kind = "command", command = ["sh", "-c", "echo fallback > left.txt"] } },
  { name = "right", prompt = "right of {{feature}}" },
]

[[steps]]
name = "finish"
prompt = "finish {{feature}}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_with_a_parallel_group_and_a_fallback_succeeds_when_the_fallback_finishes_the_step()
 {
    let system =
        System::start_with(Options::workers(2).orchestrator_env("RETRY_BACKOFF_MS", "50")).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);

    let (status, stored) = system
        .post("/api/workflows", &json!({"source": BUILD}))
        .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["steps"], json!(["prepare", "left|right", "finish"]));
    assert_eq!(stored["params"][0]["name"], "feature");

    // Run by the CLI, as a user would.
    let out = Command::new(bin("aida"))
        .args([
            "--url",
            &system.url,
            "run",
            "build",
            "--repo",
            repo.path_str(),
        ])
        .args(["--param", "feature=search", "--json"])
        .env("AIDA_TOKEN", &system.admin_token)
        .env("HOME", system.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["workflow"], "build");
    assert_eq!(created["description"], "Build search");
    let task_id = created["id"].as_str().unwrap();
    let task = system.wait_finished(task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");

    // The group ran after `prepare`, `finish` after both.
    assert_eq!(subtask(&task, "left")["depends_on"], json!(["prepare"]));
    assert_eq!(subtask(&task, "right")["depends_on"], json!(["prepare"]));
    assert_eq!(
        subtask(&task, "finish")["depends_on"],
        json!(["left", "right"])
    );
    // The first agent used its two attempts; the fallback finished.
    let left = subtask(&task, "left");
    assert_eq!(left["on_fallback"], true);
    let history = left["history"].as_array().unwrap();
    let statuses: Vec<&str> = history
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "failed", "succeeded"], "{left:#}");
    let result = task["result_branch"].as_str().unwrap();
    assert_eq!(repo.show(result, "left.txt").as_deref(), Some("fallback\n"));
    let right = repo.show(result, "right.txt").unwrap();
    assert!(
        right.starts_with("right of search\n"),
        "the parameter is filled in: {right}"
    );
    assert!(repo.show(result, "finish.txt").is_some());
    let events = system
        .get(&format!("/api/tasks/{task_id}/events?limit=1000"))
        .await
        .unwrap();
    let fallback = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "subtask.fallback")
        .expect("a fallback event");
    assert_eq!(fallback["subtask"], "left");
    assert_eq!(fallback["data"]["after_attempts"], 2);

    // A missing parameter is named; nothing is created.
    let (status, answer) = system
        .post(
            "/api/workflows/build/run",
            &json!({"repo": repo.path_str(), "params": {"colour": "red"}}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no parameter \"colour\""),
        "{answer}"
    );
    let (status, answer) = system
        .post(
            "/api/workflows",
            &json!({"source": "name = \"x\"\nsteps = 3"}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = system
        .post("/api/workflows/nope/run", &json!({"repo": repo.path_str()}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repositorys_own_workflow_is_listed_and_runs() {
    let system = System::start_with(Options::workers(1)).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    std::fs::create_dir_all(repo.path.join(".aida/workflows")).unwrap();
    std::fs::write(
        repo.path.join(".aida/workflows/docs.toml"),
        "name = \"docs\"\n\
         agent = { kind = \"command\", command = [\"sh\", \"-c\", \"echo \\\"$AIDA_PROMPT\\\" > DOCS.md\"] }\n\
         [[steps]]\nname = \"write\"\nprompt = \"document it\"\n",
    )
    .unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "workflow"]);

    let query = format!("/api/workflows?repo={}", repo.path_str());
    let listed = system.get(&query).await.unwrap();
    let docs = listed["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "docs")
        .expect("the repository's workflow");
    assert_eq!(docs["origin"], ".aida/workflows/docs.toml");

    let (status, task) = system
        .post("/api/workflows/docs/run", &json!({"repo": repo.path_str()}))
        .await;
    assert_eq!(status, 201, "{task}");
    let task = system.wait_finished(task["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let result = task["result_branch"].as_str().unwrap();
    assert_eq!(
        repo.show(result, "DOCS.md").as_deref(),
        Some("document it\n")
    );
}
