//! The web dashboard in a real browser (Debian's headless Chromium driven
//! over WebDriver), against the real binaries: sign in, create a task of
//! three subtasks with a dependency from the form, watch its graph turn
//! green without reloading, read a subtask's diff, cancel a second task;
//! and as a viewer, no create or cancel controls. A screenshot of each page
//! goes to `target/tmp/dashboard/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, eventually, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

struct Browser {
    driver: Child,
    client: Client,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        eventually("chromedriver to answer", || async {
            reqwest::get(format!("{url}/status"))
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--window-size=1280,800", format!("--user-data-dir={}", profile.path().display())
            ]}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a browser session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            driver,
            client,
            shots,
            _profile: profile,
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Waits for `css` to match an element whose text holds `text`.
    async fn text(&self, css: &str, text: &str) -> String {
        eventually(&format!("{css} to show {text:?}"), || async {
            let found = self.client.find(Locator::Css(css)).await.ok()?;
            let shown = found.text().await.ok()?;
            shown.contains(text).then_some(shown)
        })
        .await
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let found = self.client.find(Locator::Css(css)).await.ok()?;
        found.attr(name).await.ok().flatten()
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        let el = eventually(&format!("{css} to be there"), || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await;
        el.click().await.unwrap();
    }

    async fn sign_in(&self, base: &str, name: &str, password: &str) {
        self.client.goto(&format!("{base}/")).await.unwrap();
        self.text("h1", "Sign in").await;
        self.fill("#login-name", name).await;
        self.fill("#login-password", password).await;
        self.click("#login-submit").await;
        self.text("#who", name).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_creates_follows_diffs_and_cancels_tasks_and_a_viewer_only_looks() {
    let system = System::start_with(Options::workers(2)).await;
    let base = system.url.clone();
    let password = "Dashboard-pass-1!";
    for (name, role) in [("olivia", "operator"), ("victor", "viewer")] {
        let (status, body) = system
            .post(
                "/api/users",
                &json!({"name": name, "role": role, "password": password}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let browser = Browser::start().await;

    browser.sign_in(&base, "olivia", password).await;
    browser.text("h1", "Tasks").await;
    browser.shot("tasks").await;

    // A task of three subtasks, c after a, from the form.
    browser.click("#nav-new").await;
    browser.text("h1", "New task").await;
    browser.fill("#new-repo", repo.path_str()).await;
    browser.fill("#new-description", "three files").await;
    browser
        .fill(
            "#new-agent-argv",
            "sh\n-c\necho \"added by $AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\"",
        )
        .await;
    browser.click("#new-add-subtask").await;
    browser.click("#new-add-subtask").await;
    let rows = browser
        .client
        .find_all(Locator::Css("#new-subtasks .subtask-row"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for (row, (name, after)) in rows.iter().zip([("a", ""), ("b", ""), ("c", "a")]) {
        row.find(Locator::Css("[name=subtask-name]"))
            .await
            .unwrap()
            .send_keys(name)
            .await
            .unwrap();
        row.find(Locator::Css("[name=subtask-prompt]"))
            .await
            .unwrap()
            .send_keys(&format!("write {name}.txt"))
            .await
            .unwrap();
        if !after.is_empty() {
            row.find(Locator::Css("[name=subtask-depends]"))
                .await
                .unwrap()
                .send_keys(after)
                .await
                .unwrap();
        }
    }
    browser.shot("new-task").await;
    browser.click("#new-submit").await;

    // The task page: its graph turns green as the subtasks finish, with no
    // reload.
    browser.text("#task-head h1", "three files").await;
    let task_url = browser.client.current_url().await.unwrap();
    let task_id = task_url.path().trim_start_matches("/tasks/").to_owned();
    for name in ["a", "b", "c"] {
        eventually(&format!("subtask {name} green"), || async {
            let status = browser
                .attr(&format!("#graph [data-subtask={name}]"), "data-status")
                .await?;
            (status == "succeeded").then_some(())
        })
        .await;
    }
    browser.text("#task-head h1", "succeeded").await;
    assert_eq!(
        browser.client.current_url().await.unwrap(),
        task_url,
        "no navigation happened"
    );
    let task = system.get(&format!("/api/tasks/{task_id}")).await.unwrap();
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["subtasks"][2]["depends_on"], json!(["a"]));
    browser.shot("task").await;

    // b's diff shows its added line.
    browser.click("#graph [data-subtask=b]").await;
    browser.text("#subtask h2", "b").await;
    browser.click("#subtask-diff").await;
    browser
        .text("#diff .diff-file[data-path='b.txt']", "added by b")
        .await;
    browser
        .text("#diff .diff-file[data-path='b.txt'] tr.add", "+added by b")
        .await;
    browser.shot("diff").await;
    browser.text("#report", "Report").await;

    // A second task, held at a gate: cancelled from its page.
    let gate = tempfile::tempdir().unwrap();
    let held = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "waits for a gate",
            "agent": sh_agent(&format!("while [ ! -e '{}/open' ]; do sleep 0.05; done", gate.path().display())),
            "subtasks": [{"name": "wait", "prompt": "wait"}]
        }))
        .await;
    browser
        .client
        .goto(&format!("{base}/tasks/{held}"))
        .await
        .unwrap();
    browser.text("#task-head h1", "waits for a gate").await;
    browser.click("#task-actions button.danger").await;
    browser.client.accept_alert().await.unwrap();
    browser.text("#task-head h1", "cancelled").await;
    assert_eq!(
        system.get(&format!("/api/tasks/{held}")).await.unwrap()["status"],
        "cancelled"
    );

    browser
        .client
        .goto(&format!("{base}/workers"))
        .await
        .unwrap();
    browser.text("#workers", "worker-1").await;
    browser.shot("workers").await;

    // A viewer sees, and has nothing to act with.
    browser.click("#sign-out").await;
    browser.sign_in(&base, "victor", password).await;
    assert_eq!(
        browser.attr("#nav-new", "hidden").await.as_deref(),
        Some("true")
    );
    browser
        .client
        .goto(&format!("{base}/tasks/{task_id}"))
        .await
        .unwrap();
    browser.text("#task-head h1", "succeeded").await;
    browser.click("#graph [data-subtask=a]").await;
    browser.text("#subtask h2", "a").await;
    assert!(
        browser
            .client
            .find_all(Locator::Css("button.danger"))
            .await
            .unwrap()
            .is_empty(),
        "a viewer has no cancel buttons"
    );
    browser.client.goto(&format!("{base}/new")).await.unwrap();
    browser.text("h1", "Not found").await;
    browser.shot("viewer").await;
    let viewer_token = system.login("victor", password).await.unwrap();
    let refused = aida_tests::system::client_with(&viewer_token)
        .post(format!("{base}/api/tasks"))
        .json(&json!({"repo": repo.path_str(), "description": "x", "agent": sh_agent("true")}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    browser.client.clone().close().await.unwrap();
}
