//! `aida tui` in a real terminal (tmux): it shows a running task, follows
//! its subtask's log, cancels it with a key after a confirmation, and
//! leaves the terminal as it found it.

use aida_tests::system::sh_agent;
use aida_tests::terminal::{Tmux, tui_command};
use aida_tests::{GitRepo, Options, System, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tui_follows_a_log_cancels_a_task_and_restores_the_terminal() {
    let system = System::start_with(Options::workers(1)).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "a long-running job",
            "agent": sh_agent("i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done"),
            "subtasks": [{"name": "ticker", "prompt": "tick forever"}]
        }))
        .await;
    let command = format!(
        "{}; echo TUI-EXITED; stty -a; echo STTY-SHOWN; sleep 60",
        tui_command(&system, "")
    );
    let tmux = Tmux::new(&command);
    let short = &task_id[..8];
    tmux.shows(short).await;
    tmux.shows("running").await;

    // Into the subtasks: the log follows the ticker's output.
    tmux.keys(&["Tab"]);
    tmux.shows("Log of ticker").await;
    tmux.shows("tick ").await;
    let before = tmux.screen();
    let last_tick = |screen: &str| {
        screen
            .lines()
            .filter_map(|l| l.split("tick ").nth(1))
            .filter_map(|n| n.split_whitespace().next()?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
    };
    let first = last_tick(&before);
    eventually("the log to move on", || async {
        (last_tick(&tmux.screen()) > first).then_some(())
    })
    .await;

    // Help, then cancel the task: nothing happens before `y`.
    tmux.keys(&["?"]);
    tmux.shows("this help").await;
    tmux.keys(&["Escape"]);
    tmux.keys(&["Tab"]);
    tmux.keys(&["c"]);
    tmux.shows(&format!("Cancel task {short}? y to confirm"))
        .await;
    let task = system.get(&format!("/api/tasks/{task_id}")).await.unwrap();
    assert_eq!(task["status"], "running");
    tmux.keys(&["y"]);
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "cancelled", "{task:#}");
    tmux.shows("cancelled").await;

    // q: the terminal is back in cooked mode, off the alternate screen.
    tmux.keys(&["q"]);
    // `stty -a` has printed once its marker shows.
    let screen = tmux.shows("STTY-SHOWN").await;
    assert!(
        screen.split_whitespace().any(|w| w == "icanon"),
        "the terminal is left in raw mode:\n{screen}"
    );
    assert!(
        screen.split_whitespace().any(|w| w == "echo"),
        "echo is left off:\n{screen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_line_log_reaches_the_tui_and_keys_still_work() {
    let system = System::start_with(Options::workers(1)).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "a loud job",
            "agent": sh_agent("seq 1 100000"),
            "subtasks": [{"name": "loud", "prompt": "print"}]
        }))
        .await;
    let tmux = Tmux::new(&tui_command(&system, &format!("--task {task_id}")));
    tmux.shows("a loud job").await;
    tmux.keys(&["Tab"]);
    tmux.shows("Log of loud").await;
    // Keys are taken while the lines pour in.
    tmux.keys(&["?"]);
    tmux.shows("this help").await;
    tmux.keys(&["Escape"]);
    // Every line arrived (AIDA adds a few of its own: the command, its exit).
    let screen = eventually("the TUI to count all 100,000 lines", || async {
        let screen = tmux.screen();
        let count: u64 = screen
            .split("Log of loud (")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        (count >= 100_000).then_some(screen)
    })
    .await;
    assert!(
        screen
            .lines()
            .any(|l| l.split('│').any(|cell| cell.trim() == "100000")),
        "the last line is on screen:\n{screen}"
    );
}
