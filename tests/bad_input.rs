//! Bad requests get a 400 with a JSON error naming the problem, and nothing
//! is stored or created.

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, System};
use serde_json::{Value, json};

fn task(repo: &str, subtasks: Value) -> Value {
    json!({"repo": repo, "description": "d", "agent": sh_agent("true"), "subtasks": subtasks})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tasks_are_rejected_with_a_reason_and_nothing_is_created() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    let not_git = tempfile::tempdir().unwrap();
    let r = repo.path_str();
    let branches_before = repo.branches();

    let mut with_bad_base = task(r, json!([{"name": "a", "prompt": "p"}]));
    with_bad_base["base"] = json!("no-such-branch");

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown dependency",
            task(
                r,
                json!([{"name": "a", "prompt": "p", "depends_on": ["ghost"]}]),
            ),
            "ghost",
        ),
        (
            "duplicate names",
            task(
                r,
                json!([{"name": "a", "prompt": "p"}, {"name": "a", "prompt": "q"}]),
            ),
            "duplicate subtask name \"a\"",
        ),
        (
            "cycle",
            task(
                r,
                json!([{"name": "a", "prompt": "p", "depends_on": ["b"]}, {"name": "b", "prompt": "q", "depends_on": ["a"]}]),
            ),
            "cycle",
        ),
        (
            "not a git repository",
            task(
                not_git.path().to_str().unwrap(),
                json!([{"name": "a", "prompt": "p"}]),
            ),
            "is not a git repository",
        ),
        ("missing base branch", with_bad_base, "no-such-branch"),
        (
            "name with a slash",
            task(r, json!([{"name": "a/b", "prompt": "p"}])),
            "a/b",
        ),
        (
            "name with a space",
            task(r, json!([{"name": "a b", "prompt": "p"}])),
            "a b",
        ),
        (
            "name with ..",
            task(r, json!([{"name": "a..b", "prompt": "p"}])),
            "a..b",
        ),
        (
            "no agent",
            json!({"repo": r, "subtasks": [{"name": "a", "prompt": "p"}]}),
            "agent",
        ),
        (
            "no description and no subtasks",
            json!({"repo": r, "agent": sh_agent("true")}),
            "description",
        ),
        (
            "empty command",
            json!({"repo": r, "description": "d", "agent": {"kind": "command", "command": []}}),
            "command",
        ),
        (
            "unknown field",
            json!({"repo": r, "description": "d", "agent": sh_agent("true"), "colour": "red"}),
            "colour",
        ),
        (
            "wrong type",
            json!({"repo": r, "description": "d", "agent": sh_agent("true"), "priority": "high"}),
            "priority",
        ),
    ];
    for (what, body, needle) in cases {
        let (status, error) = system.post("/api/tasks", &body).await;
        assert_eq!(status, 400, "{what}: {error}");
        let message = error["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no JSON error in {error}"));
        assert!(
            message.contains(needle),
            "{what}: {message:?} should name {needle:?}"
        );
    }

    // Malformed JSON is a JSON error too.
    let resp = system
        .http
        .post(format!("{}/api/tasks", system.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let error: Value = resp.json().await.unwrap();
    assert!(error["error"]["message"].is_string(), "{error}");

    // A task id that is not one, and one that does not exist.
    let (status, error) = system
        .post("/api/tasks/not-a-task/cancel", &json!({}))
        .await;
    assert_eq!(status, 400, "{error}");
    let missing = "01900000-0000-7000-8000-000000000000";
    assert_eq!(
        system
            .http
            .get(format!("{}/api/tasks/{missing}", system.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );

    // Nothing was stored, no branch was made.
    let tasks = system.get("/api/tasks").await.unwrap();
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(0), "{tasks}");
    assert_eq!(repo.branches(), branches_before);
}
