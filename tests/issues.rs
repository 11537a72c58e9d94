//! Work that starts on GitHub: a signed `issues` webhook with AIDA's label
//! on a mapped repository starts a task planned by an agent from the
//! issue, delivered as a pull request that closes the issue, with AIDA's
//! comments on the issue; a review of that pull request goes back to the
//! agent. GitHub's API is the fake (tests/servers/fake_provider.py); the
//! repository is served by a real git server.

use aida_tests::{Hosting, Options, System, eventually, github_signature, subtask};
use serde_json::{Value, json};

/// The planner and the subtasks' agent in one script: as AIDA's planner
/// (`_plan`) it answers with a plan of one subtask; as that subtask it
/// writes what its prompt asks for, or what a follow-up says.
const AGENT: &str = r#"
if [ "$AIDA_SUBTASK_NAME" = "_plan" ]; then
  printf '%s\n' '{"subtasks": [{"name": "greeting", "prompt": "write hello.txt"}]}'
elif [ -n "$AIDA_FOLLOW_UP" ]; then
  printf '%s\n' "$AIDA_FOLLOW_UP" > review.txt
else
  echo hello > hello.txt
fi
"#;

fn github_config(hosting: &Hosting, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("github.toml");
    let planner = json!(["sh", "-c", AGENT]).to_string();
    std::fs::write(
        &path,
        format!(
            "[[repository]]\n\
             name = \"acme/shop\"\n\
             remote = \"{}\"\n\
             label = \"aida\"\n\
             planner = {{ kind = \"command\", command = {planner} }}\n\
             review_follow_ups = true\n",
            hosting.http_url("shop")
        ),
    )
    .unwrap();
    path
}

struct Hook<'a> {
    system: &'a System,
    secret: String,
}

impl Hook<'_> {
    /// Sends a GitHub delivery, signed unless `signed` is false.
    async fn send(
        &self,
        event: &str,
        delivery: &str,
        payload: &Value,
        signed: bool,
    ) -> (u16, Value) {
        let body = payload.to_string();
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/webhook", self.system.url))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .body(body.clone());
        if signed {
            request = request.header(
                "x-hub-signature-256",
                github_signature(&self.secret, body.as_bytes()),
            );
        }
        let resp = request.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn labeled(number: u64, label: &str) -> Value {
    json!({
        "action": "labeled",
        "label": {"name": label},
        "issue": {
            "number": number,
            "title": "Greet our users",
            "body": "Please add hello.txt.",
            "html_url": format!("https://github.example/acme/shop/issues/{number}"),
        },
        "repository": {"full_name": "acme/shop"},
        "sender": {"login": "maintainer"}
    })
}

async fn task_count(system: &System) -> usize {
    system.get("/api/tasks").await.unwrap()["tasks"]
        .as_array()
        .unwrap()
        .len()
}

async fn comments(hosting: &Hosting, number: u64) -> Vec<String> {
    hosting
        .provider
        .requests()
        .await
        .into_iter()
        .filter(|r| {
            r["method"] == "POST"
                && r["path"] == format!("/repos/acme/shop/issues/{number}/comments")
                && r["status"] == 201
        })
        .map(|r| r["body"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labeled_issue_starts_a_planned_task_whose_pull_request_closes_it() {
    let hosting = Hosting::start().await;
    let remote = hosting.repo("shop", &[("README.md", "shop\n")]);
    hosting
        .provider
        .seed_issue("acme/shop", 7, "Greet our users", "Please add hello.txt.")
        .await;
    let config_dir = tempfile::tempdir().unwrap();
    let config = github_config(&hosting, config_dir.path());
    let options = hosting
        .configure(Options::workers(1))
        .orchestrator_env("AIDA_GITHUB_CONFIG", config.to_str().unwrap());
    let system = System::start_with(options).await;
    let hook = Hook {
        system: &system,
        secret: system.secrets.webhook_secrets[0].clone(),
    };

    // Unsigned, or signed with another secret: refused, nothing happens.
    let (status, _) = hook
        .send("issues", "d-unsigned", &labeled(7, "aida"), false)
        .await;
    assert_eq!(status, 401);
    let forged = Hook {
        system: &system,
        secret: "not-the-secret".into(),
    };
    let (status, _) = forged
        .send("issues", "d-forged", &labeled(7, "aida"), true)
        .await;
    assert_eq!(status, 401);
    // Another label, or a comment by someone without write access: nothing.
    let (status, answer) = hook
        .send("issues", "d-other", &labeled(7, "bug"), true)
        .await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (202, Some("ignored")),
        "{answer}"
    );
    let stranger = json!({
        "action": "created",
        "issue": labeled(7, "aida")["issue"],
        "comment": {"body": "/aida please", "author_association": "NONE", "user": {"login": "x"}},
        "repository": {"full_name": "acme/shop"}
    });
    let (status, answer) = hook
        .send("issue_comment", "d-stranger", &stranger, true)
        .await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("write access"),
        "{answer}"
    );
    assert_eq!(task_count(&system).await, 0);
    assert!(comments(&hosting, 7).await.is_empty());

    // The label on a mapped repository starts a task, once.
    let (status, answer) = hook.send("issues", "d-1", &labeled(7, "aida"), true).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["outcome"], "task_created");
    let task_id = answer["task_id"].as_str().unwrap().to_owned();
    let (status, answer) = hook.send("issues", "d-1", &labeled(7, "aida"), true).await;
    assert_eq!(status, 409, "a replayed delivery: {answer}");
    assert_eq!(task_count(&system).await, 1);

    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["created_by"], "system");
    assert_eq!(task["origin"]["number"], 7);
    assert_eq!(task["origin"]["repository"], "acme/shop");
    assert_eq!(
        task["planner"]["status"], "succeeded",
        "planned by the agent"
    );
    assert!(
        task["description"]
            .as_str()
            .unwrap()
            .starts_with("Greet our users")
    );
    assert_eq!(subtask(&task, "greeting")["status"], "succeeded");
    let branch = format!("aida/{task_id}/result");
    assert_eq!(
        remote.show(&branch, "hello.txt").as_deref(),
        Some("hello\n")
    );

    // The pull request closes the issue.
    let requests = hosting.provider.requests().await;
    let opened = requests
        .iter()
        .find(|r| r["method"] == "POST" && r["path"] == "/repos/acme/shop/pulls")
        .expect("a pull request");
    assert_eq!(opened["body"]["title"], "Greet our users");
    assert!(
        opened["body"]["body"]
            .as_str()
            .unwrap()
            .starts_with("Closes #7\n"),
        "{opened:#}"
    );
    let pr_url = task["delivery"]["pull_request_url"]
        .as_str()
        .unwrap()
        .to_owned();

    // AIDA said on the issue that it started, and then how it ended.
    let said = eventually("AIDA's two comments on the issue", || async {
        let said = comments(&hosting, 7).await;
        (said.len() >= 2).then_some(said)
    })
    .await;
    assert!(said[0].contains(&task_id), "{said:?}");
    assert!(said[1].contains("finished"), "{said:?}");
    assert!(said[1].contains(&pr_url), "{said:?}");

    // A review of the pull request goes back to the agent as a follow-up.
    let review = json!({
        "action": "submitted",
        "review": {
            "body": "Also say why.",
            "state": "changes_requested",
            "author_association": "MEMBER",
            "user": {"login": "reviewer"}
        },
        "pull_request": {"number": task["delivery"]["pull_request_number"], "head": {"ref": branch}},
        "repository": {"full_name": "acme/shop"}
    });
    let (status, answer) = hook
        .send("pull_request_review", "d-review", &review, true)
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["outcome"], "follow_up", "{answer}");
    let task = eventually("the follow-up to be merged and delivered", || async {
        let task = system.get(&format!("/api/tasks/{task_id}")).await.ok()?;
        (task["status"] == "succeeded"
            && subtask(&task, "greeting")["follow_ups"] == json!(["Also say why."]))
        .then_some(task)
    })
    .await;
    assert_eq!(
        remote.show(&branch, "review.txt").as_deref(),
        Some("Also say why.\n")
    );
    assert_eq!(
        remote.head(&branch).as_deref(),
        task["result_commit"].as_str()
    );

    let audit = system
        .get("/api/audit?action=webhook.github")
        .await
        .unwrap();
    assert!(audit["entries"].as_array().unwrap().len() >= 4, "{audit:#}");
}
