//! Remote git hosting for tests of AIDA working on remote repositories:
//!
//! - [`GitHttpServer`]: smart HTTP (`git http-backend` behind
//!   `tests/servers/git_http.py`) with basic auth, as `https://` hosting
//!   with a token;
//! - [`GitDaemon`]: `git daemon`, for `git://` URLs, which can be stopped to
//!   make the host unreachable;
//! - [`FakeProvider`]: a fake of GitHub's REST API and GitLab's REST API v4
//!   (`tests/servers/fake_provider.py`) for pull and merge requests and
//!   comments, recording every request;
//! - [`BareRepo`]: the bare repositories those servers serve, made and read
//!   with the plain `git` CLI, isolated from the machine's git config;
//! - [`github_signature`]: GitHub's webhook signature header value.
//!
//! Every server is a child process killed when its handle drops, logging to
//! a file printed when a test fails; readiness is a line in that log, never
//! a fixed sleep.

mod bare_repo;
mod fake_provider;
mod git_daemon;
mod git_http;
pub mod hosting;
mod signature;

pub use bare_repo::{BareRepo, git_command, try_git};
pub use fake_provider::FakeProvider;
pub use git_daemon::GitDaemon;
pub use git_http::GitHttpServer;
pub use hosting::Hosting;
pub use signature::{GITHUB_SIGNATURE_HEADER, github_signature};

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

use crate::process::Proc;

/// Where the test servers' scripts live (`tests/servers`).
pub fn servers_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/servers"))
}

/// git's exec path, where `git-daemon` and `git-http-backend` live. They
/// are started directly: `git daemon` would run `git-daemon` as a child of
/// its own, which killing `git` would leave behind.
pub(crate) fn git_exec_path() -> &'static Path {
    static EXEC_PATH: OnceLock<PathBuf> = OnceLock::new();
    EXEC_PATH.get_or_init(|| {
        let out = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path");
        assert!(out.status.success(), "git --exec-path failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Polls `proc`'s log until `find` sees what it waits for, or the process
/// exits first (then its exit status).
pub(crate) async fn wait_for_log<T>(
    what: &str,
    proc: &mut Proc,
    find: impl Fn(&str) -> Option<T>,
) -> Result<T, ExitStatus> {
    let log = proc.log.clone();
    crate::eventually(what, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let seen = match find(&text) {
            Some(found) => Some(Ok(found)),
            None => proc.child.try_wait().ok().flatten().map(Err),
        };
        std::future::ready(seen)
    })
    .await
}

/// The port a server announced with `listening on <port>`.
fn announced_port(log: &str) -> Option<u16> {
    log.lines()
        .find_map(|line| line.strip_prefix("listening on ")?.trim().parse().ok())
}

/// Starts `tests/servers/<script>` with `args` and `env` (secrets go there,
/// never in argv), logging to `log_dir/<name>.log`; returns once it has
/// announced its port.
pub(crate) async fn start_script(
    name: &str,
    script: &str,
    args: &[&Path],
    env: &[(&str, &str)],
    log_dir: &Path,
) -> (Proc, u16) {
    let mut cmd = Command::new("python3");
    cmd.arg(servers_dir().join(script))
        .args(args)
        .envs(env.iter().copied())
        .env("PYTHONUNBUFFERED", "1");
    let mut proc = Proc::spawn(name, cmd, log_dir);
    match wait_for_log(&format!("{name} to listen"), &mut proc, announced_port).await {
        Ok(port) => (proc, port),
        Err(status) => panic!("{name} exited ({status}) before listening"),
    }
}

#[cfg(test)]
mod tests {
    use super::announced_port;

    #[test]
    fn reads_the_announced_port() {
        assert_eq!(announced_port("listening on 4242\nGET /\n"), Some(4242));
        assert_eq!(announced_port("Traceback...\n"), None);
    }
}
