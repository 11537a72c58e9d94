//! The web dashboard in a real browser (Debian's headless Chromium driven
//! over WebDriver), against the real binaries: sign in, create a task of
//! three subtasks with a dependency from the form, watch its graph turn
//! green without reloading, read a subtask's diff, cancel a second task;
//! and as a viewer, no create or cancel controls. A screenshot of each page
//! goes to `target/tmp/dashboard/`.

use aida_tests::browser::Browser;
use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, eventually};
use fantoccini::Locator;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_creates_follows_diffs_and_cancels_tasks_and_a_viewer_only_looks() {
    let system = System::start_with(Options::workers(2)).await;
    let base = system.url.clone();
    let password = "Dashboard-pass-1!";
    for (name, role) in [("olivia", "operator"), ("victor", "viewer")] {
        system.add_user(name, role, password).await;
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
    // c works in one directory only: its worktree is a sparse checkout.
    for (row, (name, after, paths)) in
        rows.iter()
            .zip([("a", "", ""), ("b", "", ""), ("c", "a", "docs, ")])
    {
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
        if !paths.is_empty() {
            row.find(Locator::Css("[name=subtask-paths]"))
                .await
                .unwrap()
                .send_keys(paths)
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
    assert_eq!(task["subtasks"][2]["paths"], json!(["docs"]));
    assert_eq!(
        repo.show(task["result_branch"].as_str().unwrap(), "c.txt")
            .as_deref(),
        Some("added by c\n")
    );
    browser.shot("task").await;
    browser.click("#graph [data-subtask=c]").await;
    browser.text("#subtask h2", "c").await;
    browser.text("#subtask dl", "Paths").await;
    browser.text("#subtask dl", "docs").await;

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

/// Whether the page is wider than the window: a phone would scroll sideways.
async fn overflows(browser: &Browser) -> bool {
    let wider = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    wider == json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_live_a_plan_is_approved_from_its_page_a_long_log_streams_and_a_phone_fits() {
    let system = System::start_with(Options::workers(1)).await;
    let base = system.url.clone();
    let password = "Dashboard-pass-2!";
    system.add_user("paula", "operator", password).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let browser = Browser::start().await;
    browser.sign_in(&base, "paula", password).await;
    browser.text("#task-rows", "No tasks.").await;

    // The list takes in a task created elsewhere, and follows it to its
    // end, without a reload.
    let quick = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "made by the API",
            "agent": sh_agent("echo ok > ok.txt"),
            "subtasks": [{"name": "one", "prompt": "p"}]
        }))
        .await;
    let row = format!("#task-rows tr[data-task='{quick}']");
    browser.text(&row, "made by the API").await;
    eventually("the row to turn succeeded", || async {
        let status = browser
            .attr(&format!("{row} .badge"), "data-status")
            .await?;
        (status == "succeeded").then_some(())
    })
    .await;
    // The status filter hides it; the list was never reloaded.
    let select = browser
        .client
        .find(Locator::Css("#filter-status"))
        .await
        .unwrap();
    select.select_by_value("failed").await.unwrap();
    browser.text("#task-rows", "No tasks.").await;
    select.select_by_value("succeeded").await.unwrap();
    browser.text(&row, "made by the API").await;

    // A plan made by an agent, held for approval: shown, then approved on
    // the task's page.
    browser.click("#nav-new").await;
    browser.fill("#new-repo", repo.path_str()).await;
    browser.fill("#new-description", "planned work").await;
    let plan = r#"{"subtasks": [{"name": "docs", "prompt": "write docs"}, {"name": "code", "prompt": "write code", "depends_on": ["docs"]}]}"#;
    browser
        .fill(
            "#new-agent-argv",
            &format!(
                "sh\n-c\nif [ \"$AIDA_SUBTASK_NAME\" = _plan ]; then echo '{plan}'; else echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\"; fi"
            ),
        )
        .await;
    browser.click("#new-plan").await;
    browser.click("#new-plan-manual").await;
    browser.click("#new-submit").await;
    browser.text("#task-head h1", "awaiting approval").await;
    let planned = browser.client.current_url().await.unwrap();
    let planned = planned.path().trim_start_matches("/tasks/").to_owned();
    for name in ["docs", "code"] {
        let status = browser
            .attr(&format!("#graph [data-subtask={name}]"), "data-status")
            .await;
        assert_eq!(
            status.as_deref(),
            Some("pending"),
            "{name} is shown, not run"
        );
    }
    browser.shot("plan").await;
    let approve = browser
        .client
        .find(Locator::XPath(
            "//div[@id='task-actions']/button[text()='Approve the plan']",
        ))
        .await
        .unwrap();
    approve.click().await.unwrap();
    browser.text("#task-head h1", "succeeded").await;
    let task = system.get(&format!("/api/tasks/{planned}")).await.unwrap();
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["subtasks"][1]["depends_on"], json!(["docs"]));

    // 100,000 log lines: all of them arrive, the page follows the tail,
    // and it answers clicks while they stream.
    let loud = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "a loud job",
            "agent": sh_agent("if [ \"$AIDA_SUBTASK_NAME\" = loud ]; then seq 1 100000; else echo quiet; fi"),
            "subtasks": [{"name": "loud", "prompt": "p"}, {"name": "quiet", "prompt": "p"}]
        }))
        .await;
    browser
        .client
        .goto(&format!("{base}/tasks/{loud}"))
        .await
        .unwrap();
    eventually("the log to stream", || async {
        let count = browser.text("#log-count", "lines").await;
        (count != "0 lines").then_some(())
    })
    .await;
    browser.click("#graph [data-subtask=quiet]").await;
    browser.text("#subtask h2", "quiet").await;
    browser.click("#graph [data-subtask=loud]").await;
    browser.text("#subtask h2", "loud").await;
    // Every line arrived (AIDA adds a few of its own: the command, its exit).
    eventually("the page to hold all 100,000 lines", || async {
        let count = browser.text("#log-count", "lines").await;
        let n: u64 = count
            .split_whitespace()
            .next()?
            .replace(',', "")
            .parse()
            .ok()?;
        (n >= 100_000).then_some(())
    })
    .await;
    let last = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#log .log-rows > div')].some((l) => l.textContent === '100000');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(last, json!(true), "the last line is in view");
    let rows = browser
        .client
        .execute(
            "return document.querySelectorAll('#log .log-rows > div').length;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        rows.as_u64().is_some_and(|n| (1..1000).contains(&n)),
        "only the lines in view are drawn, not {rows}"
    );
    browser.shot("long-log").await;

    // A phone's width: nothing wider than the screen.
    browser.client.set_window_size(390, 844).await.unwrap();
    for (path, ready, shot) in [
        ("/".to_owned(), "#task-rows", "phone-tasks"),
        (format!("/tasks/{planned}"), "#graph", "phone-task"),
        ("/new".to_owned(), "#new-task", "phone-new"),
        ("/workers".to_owned(), "#workers", "phone-workers"),
    ] {
        browser.client.goto(&format!("{base}{path}")).await.unwrap();
        browser.text(ready, "").await;
        assert!(!overflows(&browser).await, "{path} is wider than a phone");
        browser.shot(shot).await;
    }
    browser.client.clone().close().await.unwrap();
}
