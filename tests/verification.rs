//! Verification of the merged result: a semantic conflict (two subtasks
//! that each pass alone and fail together) is caught, the subtask that
//! broke the result is found by bisecting over the merge's prefixes, and
//! the result is rebuilt without it or the task fails, as asked.

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, subtask};
use serde_json::{Value, json};

/// `a` adds a caller of `greet`; `b` renames `greet` to `salute` where it
/// is defined and used. Each is fine alone; together `extra.sh` calls a
/// function that is gone.
const AGENT: &str = r#"
case "$AIDA_SUBTASK_NAME" in
  a) printf 'greet again\n' > extra.sh ;;
  b) sed -i 's/greet/salute/g' lib.sh main.sh ;;
esac
"#;

const CHECK: &str = r#"set -e
. ./lib.sh
. ./main.sh
for f in extra*.sh; do
  if [ -e "$f" ]; then . "./$f"; fi
done
echo checked
"#;

fn repo() -> GitRepo {
    GitRepo::with_files(&[
        ("lib.sh", "greet() { echo \"hello $1\"; }\n"),
        ("main.sh", "greet world\n"),
        ("check.sh", CHECK),
    ])
}

async fn events_of(system: &System, task_id: &str, kind: &str) -> Vec<Value> {
    system
        .get(&format!("/api/tasks/{task_id}/events?limit=1000"))
        .await
        .unwrap()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semantic_conflict_is_caught_its_cause_named_and_left_out() {
    let system = System::start_with(Options::workers(2)).await;
    let repo = repo();
    let body = |on_failure: &str| {
        json!({
            "repo": repo.path_str(),
            "description": "two changes that break together",
            "agent": sh_agent(AGENT),
            "subtasks": [{"name": "a", "prompt": "add a caller"}, {"name": "b", "prompt": "rename greet"}],
            "verify": {"command": ["sh", "check.sh"], "on": "both", "on_failure": on_failure}
        })
    };

    // Left out: the result is rebuilt without `b` and passes.
    let task_id = system.create_task(&body("exclude")).await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "conflicted", "{task:#}");
    let v = &task["verification"];
    assert_eq!(v["status"], "passed", "{v:#}");
    assert_eq!(v["broken_by"], json!(["b"]));
    assert_eq!(v["excluded"], json!(["b"]));
    // The whole result, the first prefix, then the result without b.
    assert_eq!(v["runs"], 3, "{v:#}");
    assert!(
        task["error"]
            .as_str()
            .unwrap()
            .contains("left out after verification: b"),
        "{task:#}"
    );
    // Each subtask passed the check on its own branch.
    assert_eq!(subtask(&task, "a")["status"], "succeeded");
    assert_eq!(subtask(&task, "b")["status"], "succeeded");
    assert_eq!(subtask(&task, "b")["merged"], false);
    let result = task["result_branch"].as_str().unwrap();
    assert_eq!(
        repo.show(result, "extra.sh").as_deref(),
        Some("greet again\n")
    );
    assert!(repo.show(result, "lib.sh").unwrap().contains("greet()"));
    // The runs are the verifier's attempts, and events say each.
    assert_eq!(task["verifier"]["history"].as_array().unwrap().len(), 3);
    let finished = events_of(&system, &task_id, "verify.finished").await;
    let passed: Vec<bool> = finished
        .iter()
        .map(|e| e["data"]["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passed, [false, true, true]);
    assert_eq!(
        events_of(&system, &task_id, "verify.started").await.len(),
        3
    );
    let report = system.report(&task_id).await;
    assert!(report.contains("## Verification"), "{report}");
    assert!(report.contains("Left out of the result: b."), "{report}");

    // Failed: the task says why and does not succeed.
    let task_id = system.create_task(&body("fail")).await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "failed", "{task:#}");
    assert_eq!(task["verification"]["broken_by"], json!(["b"]));
    let error = task["error"].as_str().unwrap();
    assert!(
        error.contains("verification failed: the result fails it once b is merged"),
        "{error}"
    );
    assert!(
        task["verification"]["output_tail"]
            .as_str()
            .unwrap()
            .contains("greet"),
        "the end of the check's output: {task:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bisection_finds_the_eleventh_of_sixteen_subtasks_in_five_runs() {
    let system = System::start_with(Options::workers(2)).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let subtasks: Vec<Value> = (1..=16)
        .map(|i| json!({"name": format!("s{i:02}"), "prompt": format!("part {i}")}))
        .collect();
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "sixteen parts, one broken",
            "agent": sh_agent(
                "if [ \"$AIDA_SUBTASK_NAME\" = s11 ]; then echo broken; else echo fine; fi > \"$AIDA_SUBTASK_NAME.txt\""
            ),
            "subtasks": subtasks,
            "verify": {
                "command": ["sh", "-c", "for f in s*.txt; do if [ \"$(cat \"$f\")\" = broken ]; then echo \"$f is broken\"; exit 1; fi; done"],
                "timeout_secs": 60
            }
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "failed", "{task:#}");
    let v = &task["verification"];
    assert_eq!(v["broken_by"], json!(["s11"]), "{v:#}");
    assert_eq!(v["runs"], 5, "ceil(log2(16)) + 1: {v:#}");
    assert!(
        v["output_tail"]
            .as_str()
            .unwrap()
            .contains("s11.txt is broken"),
        "{v:#}"
    );
    let labels: Vec<String> = events_of(&system, &task_id, "verify.started")
        .await
        .iter()
        .map(|e| e["data"]["label"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(labels.len(), 5, "{labels:#?}");
    assert_eq!(labels[0], "the merged result");
    assert!(labels[1].starts_with("the first 8 of 16"), "{labels:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_verify_is_refused_and_a_hanging_one_fails_at_its_timeout() {
    let system = System::start_with(Options::workers(1)).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    for (verify, why) in [
        (json!({"command": []}), "argv"),
        (
            json!({"command": ["make"], "timeout_secs": 0}),
            "at least 1",
        ),
        (json!({"command": ["make"], "on": "merged"}), "verify.on"),
        (
            json!({"command": ["make"], "on_failure": "retry"}),
            "verify.on_failure",
        ),
        (json!({"command": "make test"}), "verify"),
    ] {
        let (status, answer) = system
            .post(
                "/api/tasks",
                &json!({"repo": repo.path_str(), "description": "d", "agent": sh_agent("true"), "verify": verify}),
            )
            .await;
        assert_eq!(status, 400, "{verify}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{verify}: {message}");
    }
    assert!(
        system.get("/api/tasks").await.unwrap()["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "a check that hangs",
            "agent": sh_agent("echo x > x.txt"),
            "verify": {"command": ["sleep", "60"], "timeout_secs": 1}
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "failed", "{task:#}");
    let tail = task["verification"]["output_tail"].as_str().unwrap();
    assert!(tail.contains("timed out after 1 s"), "{tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_config_gives_the_check_when_the_task_does_not() {
    let system = System::start_with(Options::workers(2)).await;
    let config =
        "setup = []\n[verify]\ncommand = [\"sh\", \"check.sh\"]\non_failure = \"exclude\"\n";
    let repo = GitRepo::with_files(&[
        ("lib.sh", "greet() { echo \"hello $1\"; }\n"),
        ("main.sh", "greet world\n"),
        ("check.sh", CHECK),
        (".aida/config.toml", config),
    ]);
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "two changes that break together",
            "agent": sh_agent(AGENT),
            "subtasks": [{"name": "a", "prompt": "add a caller"}, {"name": "b", "prompt": "rename greet"}]
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(
        task["verify"],
        json!({"command": ["sh", "check.sh"], "on": "result", "on_failure": "exclude"})
    );
    assert_eq!(task["status"], "conflicted", "{task:#}");
    assert_eq!(task["verification"]["broken_by"], json!(["b"]));

    // A bad section is refused when the task is created, naming the file.
    let bad = GitRepo::with_files(&[(".aida/config.toml", "[verify]\ncommand = []\n")]);
    let (status, answer) = system
        .post(
            "/api/tasks",
            &json!({"repo": bad.path_str(), "description": "d", "agent": sh_agent("true")}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(".aida/config.toml") && message.contains("argv"),
        "{message}"
    );
}
