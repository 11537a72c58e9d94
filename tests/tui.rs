//! `aida tui` in a real terminal (tmux): it shows a running task, follows
//! its subtask's log, cancels it with a key after a confirmation, and
//! leaves the terminal as it found it.

use std::process::Command;

use aida_tests::process::bin;
use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, eventually};
use serde_json::json;

struct Tmux {
    session: String,
}

impl Tmux {
    fn new(command: &str) -> Tmux {
        let session = format!("aida-tui-{}", std::process::id());
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "150",
                "-y",
                "40",
                command,
            ])
            .status()
            .expect("tmux");
        assert!(status.success());
        Tmux { session }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn shows(&self, what: &str) -> String {
        eventually(&format!("the screen to show {what:?}"), || async {
            let screen = self.screen();
            screen.contains(what).then_some(screen)
        })
        .await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

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
        "env AIDA_TOKEN={} {} --url {} tui; echo TUI-EXITED; stty -a; sleep 60",
        system.admin_token,
        bin("aida").display(),
        system.url
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
    let screen = tmux.shows("TUI-EXITED").await;
    assert!(
        screen.split_whitespace().any(|w| w == "icanon"),
        "the terminal is left in raw mode:\n{screen}"
    );
    assert!(
        screen.split_whitespace().any(|w| w == "echo"),
        "echo is left off:\n{screen}"
    );
}
