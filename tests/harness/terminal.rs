//! A real terminal for the TUI's tests and benchmarks: a detached tmux
//! session of a fixed size, driven with `send-keys` and read with
//! `capture-pane`.

use std::process::Command;

use crate::process::bin;
use crate::{System, eventually};

/// The shell command that runs `aida tui ARGS` against `system` as its
/// admin.
pub fn tui_command(system: &System, args: &str) -> String {
    format!(
        "env AIDA_TOKEN={} {} --url {} tui {args}",
        system.admin_token,
        bin("aida").display(),
        system.url
    )
}

/// A tmux session running one command; killed on drop.
pub struct Tmux {
    session: String,
}

impl Tmux {
    /// Runs `command` in a new 150×40 session.
    pub fn new(command: &str) -> Tmux {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = format!("aida-tui-{}-{n}", std::process::id());
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

    /// What the pane shows now.
    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends keys, as tmux names them (`Tab`, `Escape`, `y`).
    pub fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the pane shows `what`, and returns the screen.
    pub async fn shows(&self, what: &str) -> String {
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
