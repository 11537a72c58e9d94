//! A 100,000-line log streamed to the three readers a team uses, in one
//! run against the real (release) binaries:
//! - the raw SSE stream (`GET /api/events?task={id}`), the floor;
//! - the dashboard's task page in headless Chromium;
//! - `aida tui` in tmux.
//!
//! For each: the seconds from the task's creation until its last line is
//! shown, and how responsive the reader stayed meanwhile (the page: the
//! longest a timer waited for the main thread; the TUI: the longest from a
//! key to its effect on screen). Run with `make bench` (which builds the
//! release binaries first).

use std::time::{Duration, Instant};

use aida_tests::browser::Browser;
use aida_tests::system::sh_agent;
use aida_tests::terminal::{Tmux, tui_command};
use aida_tests::{GitRepo, Options, System};
use serde_json::json;

const LINES: u32 = 100_000;
const PATIENCE: Duration = Duration::from_secs(300);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let system = System::start_with(Options::workers(1)).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let password = "Log-stream-pass-1!";
    system.add_user("reader", "operator", password).await;
    let loud = || async {
        system
            .create_task(&json!({
                "repo": repo.path_str(),
                "description": "a loud job",
                "agent": sh_agent(&format!("seq 1 {LINES}")),
                "subtasks": [{"name": "loud", "prompt": "print"}]
            }))
            .await
    };
    let last = LINES.to_string();

    // The floor: the same events read straight off the SSE stream.
    let start = Instant::now();
    let id = loud().await;
    let events = system
        .read_sse_until(&format!("/api/events?task={id}"), |ev| {
            ev["data"]["line"].as_str() == Some(&last)
        })
        .await;
    let sse = start.elapsed();
    let log_events = events.iter().filter(|e| e["kind"] == "log.line").count();
    system.wait_finished(&id).await;

    // The dashboard's task page.
    let browser = Browser::start().await;
    browser.sign_in(&system.url, "reader", password).await;
    let start = Instant::now();
    let id = loud().await;
    browser
        .client
        .goto(&format!("{}/tasks/{id}", system.url))
        .await
        .unwrap();
    let mut worst_lag = 0f64;
    let page = loop {
        // How long a timer set now waits for the page's main thread: what
        // a click would wait.
        let lag = browser
            .client
            .execute_async(
                "const done = arguments[0]; const t = performance.now(); setTimeout(() => done(performance.now() - t), 0);",
                vec![],
            )
            .await
            .unwrap();
        worst_lag = worst_lag.max(lag.as_f64().unwrap_or(0.0));
        let shown = browser
            .client
            .execute(
                "return [...document.querySelectorAll('#log > div:not(.log-space), #log .log-rows > div')].some((l) => l.textContent === arguments[0]);",
                vec![json!(last)],
            )
            .await
            .unwrap();
        if shown == json!(true) {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the page never showed line {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let held = browser
        .client
        .execute(
            "return document.querySelector('#log-count')?.textContent ?? String(document.querySelector('#log').childElementCount);",
            vec![],
        )
        .await
        .unwrap();
    browser.shot("log-100k").await;
    system.wait_finished(&id).await;

    // The TUI.
    let start = Instant::now();
    let id = loud().await;
    let tmux = Tmux::new(&tui_command(&system, &format!("--task {id}")));
    tmux.shows("a loud job").await;
    tmux.keys(&["Tab"]);
    let mut worst_key = Duration::ZERO;
    let tui = loop {
        let key = Instant::now();
        tmux.keys(&["?"]);
        tmux.shows("this help").await;
        worst_key = worst_key.max(key.elapsed());
        tmux.keys(&["Escape"]);
        let screen = tmux.screen();
        if screen
            .lines()
            .any(|l| l.split('│').any(|cell| cell.trim() == last))
        {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the TUI never showed line {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    println!("\n{LINES} log lines, one subtask (`seq 1 {LINES}`), release binaries, 1 worker\n");
    println!("| reader | last line shown | vs raw SSE | responsiveness meanwhile |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| raw SSE stream | {:.2} s | 1.00 | ({log_events} log events read) |",
        sse.as_secs_f64()
    );
    println!(
        "| dashboard page | {:.2} s | {:.2} | worst timer wait {:.0} ms; lines held: {held} |",
        page.as_secs_f64(),
        page.as_secs_f64() / sse.as_secs_f64(),
        worst_lag
    );
    println!(
        "| aida tui | {:.2} s | {:.2} | worst key to screen {:.0} ms |",
        tui.as_secs_f64(),
        tui.as_secs_f64() / sse.as_secs_f64(),
        worst_key.as_secs_f64() * 1000.0
    );
}
