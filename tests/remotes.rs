//! Tasks on remote repositories, against real git servers on this machine
//! (smart HTTP with a token, and `git daemon`) and a fake of GitHub's API:
//! the mirror, delivery (push, pull request), what goes wrong with a
//! remote, a push the remote rejects, and follow-ups.

use aida_tests::remote::hosting::{BOT, LOCKED};
use aida_tests::system::sh_agent;
use aida_tests::{Hosting, Options, System, eventually, subtask};
use serde_json::{Value, json};

/// Writes `$AIDA_SUBTASK_NAME.txt`: each subtask its own file.
fn own_file_agent() -> Value {
    sh_agent("echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\"")
}

async fn events(system: &System, task_id: &str) -> Vec<Value> {
    system
        .get(&format!("/api/tasks/{task_id}/events?limit=1000"))
        .await
        .expect("events")["events"]
        .as_array()
        .expect("a list")
        .clone()
}

fn event<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {events:#?}"))
}

/// No log, task, event or report holds a secret of the hosting.
async fn assert_no_secret_anywhere(system: &System, hosting: &Hosting) {
    let mut texts: Vec<(String, String)> = system.captured_logs();
    let tasks = system.get("/api/tasks?limit=100").await.expect("tasks");
    texts.push(("tasks".into(), tasks.to_string()));
    for task in tasks["tasks"].as_array().unwrap() {
        let id = task["id"].as_str().unwrap();
        texts.push((
            format!("events of {id}"),
            json!(events(system, id).await).to_string(),
        ));
    }
    texts.push((
        "provider requests".into(),
        json!(hosting.provider.requests().await).to_string(),
    ));
    for secret in hosting.secrets() {
        for (name, text) in &texts {
            assert!(!text.contains(&secret), "{name} holds a token");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_an_https_remote_is_pushed_and_opens_a_pull_request_and_the_mirror_is_reused() {
    let hosting = Hosting::start().await;
    let remote = hosting.repo("shop", &[("README.md", "shop\n")]);
    let system = System::start_with(hosting.configure(Options::workers(2))).await;
    let url = hosting.http_url("shop");
    let main_before = remote.head("main");

    let created = system
        .post(
            "/api/tasks",
            &json!({
                "repo": url,
                "base": "main",
                "description": "Add a and b\n\nTwo files.",
                "agent": own_file_agent(),
                "subtasks": [
                    {"name": "a", "prompt": "write a"},
                    {"name": "b", "prompt": "write b", "depends_on": ["a"]}
                ],
                "deliver": {"pull_request": {"title": "Add a and b"}}
            }),
        )
        .await;
    assert_eq!(created.0, 201, "{}", created.1);
    assert_eq!(created.1["remote"], url);
    let first_id = created.1["id"].as_str().unwrap().to_owned();
    let task = system.wait_finished(&first_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");

    // The result branch is on the remote, at the merged commit.
    let branch = format!("aida/{first_id}/result");
    assert_eq!(
        remote.head(&branch).as_deref(),
        task["result_commit"].as_str()
    );
    assert_eq!(remote.show(&branch, "a.txt").as_deref(), Some("a\n"));
    assert_eq!(remote.show(&branch, "b.txt").as_deref(), Some("b\n"));
    assert_eq!(remote.head("main"), main_before, "main untouched");
    let delivery = &task["delivery"];
    assert_eq!(delivery["status"], "opened", "{delivery:#}");
    assert_eq!(delivery["branch"], branch);
    let number = delivery["pull_request_number"].as_u64().expect("a number");
    let pr_url = delivery["pull_request_url"].as_str().unwrap();
    assert!(
        pr_url.ends_with(&format!("/acme/shop/pull/{number}")),
        "{pr_url}"
    );

    // The pull request was asked for with the report as its body.
    let requests = hosting.provider.requests().await;
    let opened = requests
        .iter()
        .find(|r| r["method"] == "POST" && r["path"] == "/repos/acme/shop/pulls")
        .expect("a pull request call");
    assert_eq!(opened["status"], 201);
    assert_eq!(opened["auth"]["matched"], true);
    assert_eq!(opened["body"]["head"], branch);
    assert_eq!(opened["body"]["base"], "main");
    assert_eq!(opened["body"]["title"], "Add a and b");
    let body = opened["body"]["body"].as_str().unwrap();
    let report = system.report(&first_id).await;
    let first_line = report.lines().next().unwrap();
    assert!(body.contains(first_line), "the body is the report: {body}");
    assert!(body.contains(&first_id), "{body}");
    // Every call to the host carried AIDA's token: the http log names its user.
    let git_requests = hosting.http.requests();
    assert!(!git_requests.is_empty());
    assert!(
        git_requests
            .iter()
            .any(|r| r["user"] == BOT && r["status"] == 200)
    );

    let first_events = events(&system, &first_id).await;
    assert_eq!(
        event(&first_events, "task.created")["data"]["mirror"],
        "cloned"
    );
    let delivered = event(&first_events, "task.delivered");
    assert_eq!(delivered["data"]["pull_request_number"], number);

    // Someone pushes to main; the next task starts from there, on the same
    // mirror, fetched rather than cloned again.
    let moved = remote.push_commit("main", &[("news.txt", "new\n")], "news");
    let second_id = system
        .create_task(&json!({
            "repo": url,
            "description": "one more",
            "agent": own_file_agent(),
            "subtasks": [{"name": "c", "prompt": "write c"}],
            "deliver": {"push": true}
        }))
        .await;
    let second = system.wait_finished(&second_id).await;
    assert_eq!(second["status"], "succeeded", "{second:#}");
    assert_eq!(
        second["base_commit"], moved,
        "started from the remote's latest main"
    );
    assert_eq!(second["base"], "main", "the remote's default branch");
    assert_eq!(second["repo"], task["repo"], "the same mirror");
    assert_eq!(hosting.mirrors().len(), 1, "one mirror for the remote");
    let second_events = events(&system, &second_id).await;
    assert_eq!(
        event(&second_events, "task.created")["data"]["mirror"],
        "fetched"
    );
    let second_branch = format!("aida/{second_id}/result");
    assert_eq!(
        remote.show(&second_branch, "news.txt").as_deref(),
        Some("new\n")
    );
    assert_eq!(remote.show(&second_branch, "c.txt").as_deref(), Some("c\n"));
    assert_eq!(second["delivery"]["status"], "pushed");
    // Only the first asked for a pull request.
    let pulls = hosting
        .provider
        .requests()
        .await
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/repos/acme/shop/pulls")
        .count();
    assert_eq!(pulls, 1);

    assert_no_secret_anywhere(&system, &hosting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_remote_is_refused_at_creation_with_a_clear_message_and_nothing_left_behind() {
    let mut hosting = Hosting::start().await;
    hosting.repo("locked", &[("README.md", "locked\n")]);
    hosting.repo("shop", &[("README.md", "shop\n")]);
    hosting.repo("far", &[("README.md", "far\n")]);
    let system = System::start_with(hosting.configure(Options::workers(1))).await;
    let attempt = |repo: String, base: Option<&str>| {
        let mut body = json!({
            "repo": repo,
            "description": "d",
            "agent": own_file_agent(),
            "deliver": {"push": true}
        });
        if let Some(base) = base {
            body["base"] = json!(base);
        }
        body
    };
    hosting.daemon.stop();
    let cases = [
        (
            attempt(hosting.http_url("locked"), None),
            "refused AIDA's credentials".to_owned(),
        ),
        (
            attempt(hosting.git_url("far"), None),
            "cannot reach git://".to_owned(),
        ),
        (
            attempt(hosting.http_url("shop"), Some("nope")),
            "base branch \"nope\" does not exist on http://".to_owned(),
        ),
        (
            attempt(
                hosting
                    .http
                    .url_with_credentials("acme/shop", BOT, &hosting.token),
                None,
            ),
            "credentials do not belong in a URL".to_owned(),
        ),
        (
            attempt("https://github.com/elsewhere/shop.git".into(), None),
            "matches none of AIDA_ALLOWED_REMOTES".to_owned(),
        ),
        (
            attempt("ftp://127.0.0.1/acme/shop.git".into(), None),
            "use https://".to_owned(),
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = system.post("/api/tasks", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(&expected), "{body}: {message}");
        for secret in hosting.secrets() {
            assert!(!message.contains(&secret), "{message}");
        }
    }
    // A push to a remote is a remote's business: a local path cannot ask.
    let local = aida_tests::GitRepo::with_files(&[("a", "a")]);
    let (status, answer) = system
        .post("/api/tasks", &attempt(local.path_str().to_owned(), None))
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"deliver\" needs a task on a remote"),
        "{answer}"
    );

    // Nothing was stored, and no half-made mirror is left: only the one of
    // the remote that answered (for the missing base branch).
    let tasks = system.get("/api/tasks").await.unwrap();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 0);
    let mirrors = hosting.mirrors();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    assert!(mirrors[0].ends_with("acme/shop.git"), "{mirrors:?}");
    let leftovers: Vec<_> = walkdir(hosting.cache_path())
        .into_iter()
        .filter(|p| p.contains(".clone-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!LOCKED.is_empty());
    assert_no_secret_anywhere(&system, &hosting).await;
}

fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(entry.path().display().to_string());
        if entry.path().is_dir() {
            out.extend(walkdir(&entry.path()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_remote_rejects_because_its_branch_moved_is_reported_and_nothing_is_forced() {
    let hosting = Hosting::start().await;
    let remote = hosting.repo("shop", &[("README.md", "shop\n")]);
    let system = System::start_with(hosting.configure(Options::workers(1))).await;
    let task_id = system
        .create_task(&json!({
            "repo": hosting.git_url("shop"),
            "description": "one file",
            "agent": sh_agent("echo \"${AIDA_FOLLOW_UP:-first}\" > work.txt"),
            "subtasks": [{"name": "work", "prompt": "write work.txt"}],
            "deliver": {"push": true}
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let branch = format!("aida/{task_id}/result");
    assert_eq!(remote.show(&branch, "work.txt").as_deref(), Some("first\n"));

    // A colleague pushes onto AIDA's branch; then the work is followed up,
    // and AIDA's new result would replace their commit.
    let theirs = remote.push_commit(&branch, &[("theirs.txt", "mine\n")], "their fix");
    let (status, answer) = system
        .post(
            &format!("/api/tasks/{task_id}/subtasks/work/follow-up"),
            &json!({"prompt": "second"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let task = eventually("the follow-up to end", || async {
        let task = system.get(&format!("/api/tasks/{task_id}")).await.ok()?;
        (task["status"] == "failed").then_some(task)
    })
    .await;
    let error = task["error"].as_str().unwrap();
    assert!(error.contains("rejected the push"), "{error}");
    assert!(error.contains("AIDA forces nothing"), "{error}");
    assert_eq!(task["delivery"]["status"], "failed");
    // Their commit is still there; AIDA's result stays in the mirror.
    assert_eq!(remote.head(&branch).as_deref(), Some(theirs.as_str()));
    assert_eq!(
        remote.show(&branch, "theirs.txt").as_deref(),
        Some("mine\n")
    );
    assert_eq!(subtask(&task, "work")["status"], "succeeded");
    let events = events(&system, &task_id).await;
    assert!(events.iter().any(|e| e["kind"] == "task.delivery_failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_resumes_the_agents_session_on_its_branch_and_is_merged_and_delivered_again() {
    let hosting = Hosting::start().await;
    // The fakes record what they were run with when this marker is there.
    let remote = hosting.repo(
        "shop",
        &[("README.md", "shop\n"), (".aida-fake-record", "")],
    );
    let fakes = concat!(env!("CARGO_MANIFEST_DIR"), "/fakes");
    let options = hosting
        .configure(Options::workers(1))
        .worker_env("CLAUDE_PATH", &format!("{fakes}/claude"));
    let system = System::start_with(options).await;
    let task_id = system
        .create_task(&json!({
            "repo": hosting.http_url("shop"),
            "description": "greeting",
            "agent": {"kind": "claude-code"},
            "subtasks": [{"name": "greet", "prompt": "write hello.txt: hello"}],
            "deliver": {"pull_request": {"title": "Greeting"}}
        }))
        .await;
    let first = system.wait_finished(&task_id).await;
    assert_eq!(first["status"], "succeeded", "{first:#}");
    let session = subtask(&first, "greet")["usage"]["session_id"]
        .as_str()
        .expect("the agent's session")
        .to_owned();
    let first_commit = subtask(&first, "greet")["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    let number = first["delivery"]["pull_request_number"].as_u64().unwrap();

    // Only an ended task takes a follow-up, on a subtask it has.
    let path = format!("/api/tasks/{task_id}/subtasks/greet/follow-up");
    let (status, answer) = system
        .post(
            &format!("/api/tasks/{task_id}/subtasks/nope/follow-up"),
            &json!({"prompt": "x"}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = system.post(&path, &json!({"prompt": "  "})).await;
    assert_eq!(status, 400, "{answer}");

    let (status, answer) = system
        .post(&path, &json!({"prompt": "write bye.txt: bye"}))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "running");
    let (status, answer) = system.post(&path, &json!({"prompt": "again"})).await;
    assert_eq!(status, 409, "a running task takes no follow-up: {answer}");

    let second = system.wait_finished(&task_id).await;
    assert_eq!(second["status"], "succeeded", "{second:#}");
    let greet = subtask(&second, "greet");
    assert_eq!(greet["follow_ups"], json!(["write bye.txt: bye"]));
    let commit = greet["commit"].as_str().unwrap();
    assert_ne!(commit, first_commit);

    // The same branch, on top of the earlier work, in the resumed session.
    let branch = format!("aida/{task_id}/greet");
    let mirror = second["repo"].as_str().unwrap();
    let parent = git_in(mirror, &["rev-parse", &format!("{commit}^")]);
    assert_eq!(parent.trim(), first_commit);
    let record: Value = serde_json::from_str(&git_in(
        mirror,
        &["show", &format!("{commit}:.aida-fake-claude.json")],
    ))
    .unwrap();
    let argv: Vec<&str> = record["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        argv.contains(&format!("--resume={session}").as_str()),
        "{argv:?}"
    );
    assert_eq!(git_in(mirror, &["rev-parse", &branch]).trim(), commit);

    // Merged and delivered again: the result on the remote has both files,
    // and the pull request is the same one.
    let result = format!("aida/{task_id}/result");
    assert_eq!(
        remote.head(&result).as_deref(),
        second["result_commit"].as_str()
    );
    assert_eq!(
        remote.show(&result, "hello.txt").as_deref(),
        Some("hello\n")
    );
    assert_eq!(remote.show(&result, "bye.txt").as_deref(), Some("bye\n"));
    assert_eq!(second["delivery"]["pull_request_number"], number);
    let events = events(&system, &task_id).await;
    let follow_up = event(&events, "subtask.follow_up");
    assert_eq!(follow_up["data"]["by"], "admin");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "task.delivered")
            .count(),
        2
    );
}

fn git_in(dir: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_gitlab_host_opens_a_draft_merge_request_through_gitlabs_api() {
    let hosting = Hosting::start().await;
    let remote = hosting.repo("shop", &[("README.md", "shop\n")]);
    // A second host, self-hosted GitLab: its git over HTTP with the same
    // token, its API at /api/v4 of the fake.
    let gitlab =
        aida_tests::GitHttpServer::start(hosting.root.path(), "oauth2", &hosting.token).await;
    let gitlab_host = format!("127.0.0.1:{}", gitlab.port);
    let options = Options::workers(1)
        .orchestrator_env(
            "AIDA_ALLOWED_REMOTES",
            &format!("http://{gitlab_host}/acme/*"),
        )
        .orchestrator_env(
            "AIDA_GIT_CREDENTIALS",
            &format!("http://oauth2:{}@{gitlab_host}", hosting.token),
        )
        .orchestrator_env(
            "AIDA_GIT_PROVIDERS",
            &format!("{gitlab_host}=gitlab@{}", hosting.provider.gitlab_api_url()),
        )
        .orchestrator_env("AIDA_REPO_CACHE", hosting.cache_path().to_str().unwrap())
        .worker_env("AIDA_REPO_CACHE", hosting.cache_path().to_str().unwrap());
    let system = System::start_with(options).await;
    let task_id = system
        .create_task(&json!({
            "repo": gitlab.url("acme/shop"),
            "description": "Add a\n\nwith details",
            "agent": own_file_agent(),
            "subtasks": [{"name": "a", "prompt": "write a"}],
            "deliver": {"pull_request": {"draft": true, "closes": [3]}}
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let branch = format!("aida/{task_id}/result");
    assert_eq!(remote.show(&branch, "a.txt").as_deref(), Some("a\n"));
    let requests = hosting.provider.requests().await;
    let opened = requests
        .iter()
        .find(|r| {
            r["method"] == "POST" && r["path"] == "/api/v4/projects/acme%2Fshop/merge_requests"
        })
        .unwrap_or_else(|| panic!("a merge request call in {requests:#?}"));
    assert_eq!(opened["status"], 201, "{opened:#}");
    assert_eq!(opened["auth"]["matched"], true);
    assert_eq!(opened["body"]["source_branch"], branch);
    assert_eq!(opened["body"]["target_branch"], "main");
    assert_eq!(
        opened["body"]["title"], "Draft: Add a",
        "GitLab marks drafts by the title"
    );
    assert!(
        opened["body"]["description"]
            .as_str()
            .unwrap()
            .starts_with("Closes #3\n"),
        "{opened:#}"
    );
    let url = task["delivery"]["pull_request_url"].as_str().unwrap();
    assert!(url.contains("/acme/shop/-/merge_requests/"), "{url}");
    assert_no_secret_anywhere(&system, &hosting).await;
}
