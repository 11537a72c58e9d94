//! `git daemon` serving `git://127.0.0.1:PORT/NAME.git` (fetch and push)
//! from the bare repositories below a directory. It can be stopped, to make
//! the host unreachable, and started again on the same port.
//!
//! git daemon cannot report a port it was given 0 for, so a free port is
//! picked first; if another process takes it before the daemon binds, the
//! daemon exits and another port is tried. Readiness is its
//! `Ready to rumble` log line (`--verbose`), printed once it listens.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{git_exec_path, wait_for_log};
use crate::process::Proc;

/// How many ports to try when each is taken before the daemon binds it.
const PORT_ATTEMPTS: u32 = 5;

pub struct GitDaemon {
    pub port: u16,
    root: PathBuf,
    proc: Option<Proc>,
    starts: u32,
    logs: tempfile::TempDir,
}

/// Why a daemon did not start.
enum StartError {
    PortTaken,
    Failed(String),
}

impl GitDaemon {
    /// Serves the repositories below `root`; returns once it listens.
    pub async fn start(root: &Path) -> GitDaemon {
        let mut daemon = GitDaemon {
            port: 0,
            root: root.to_path_buf(),
            proc: None,
            starts: 0,
            logs: tempfile::tempdir().expect("tempdir"),
        };
        for _ in 0..PORT_ATTEMPTS {
            daemon.port = crate::free_port();
            match daemon.spawn().await {
                Ok(()) => return daemon,
                Err(StartError::PortTaken) => continue,
                Err(StartError::Failed(why)) => panic!("git daemon did not start: {why}"),
            }
        }
        panic!("git daemon found no free port in {PORT_ATTEMPTS} attempts");
    }

    /// `git://127.0.0.1:PORT/NAME.git`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Kills the daemon and waits for it: from then on its port refuses
    /// connections, as an unreachable host would.
    pub fn stop(&mut self) {
        let mut proc = self.proc.take().expect("git daemon is not running");
        let _ = proc.child.kill();
        let _ = proc.child.wait();
    }

    /// Starts the daemon again on the same port; returns once it listens.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "git daemon is still running");
        match self.spawn().await {
            Ok(()) => {}
            Err(StartError::PortTaken) => panic!("port {} was taken meanwhile", self.port),
            Err(StartError::Failed(why)) => panic!("git daemon did not restart: {why}"),
        }
    }

    /// The log of the daemon's latest start.
    pub fn log_path(&self) -> PathBuf {
        self.logs.path().join(format!("{}.log", self.name()))
    }

    fn name(&self) -> String {
        format!("git-daemon-{}", self.starts)
    }

    async fn spawn(&mut self) -> Result<(), StartError> {
        self.starts += 1;
        let mut proc = Proc::spawn(&self.name(), self.command(), self.logs.path());
        let ready = |log: &str| log.contains("Ready to rumble").then_some(());
        match wait_for_log("git daemon to listen", &mut proc, ready).await {
            Ok(()) => {
                self.proc = Some(proc);
                Ok(())
            }
            Err(status) => {
                let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
                if log.contains("unable to allocate any listen sockets") {
                    Err(StartError::PortTaken)
                } else {
                    Err(StartError::Failed(format!("exited ({status}): {log}")))
                }
            }
        }
    }

    fn command(&self) -> Command {
        let root = self.root.to_str().expect("utf-8 path");
        let mut cmd = Command::new(git_exec_path().join("git-daemon"));
        cmd.args([
            "--verbose",
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            &format!("--base-path={root}"),
            "--listen=127.0.0.1",
            &format!("--port={}", self.port),
            root,
        ])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::GitDaemon;
    use crate::remote::{BareRepo, try_git};

    #[tokio::test]
    async fn clones_and_pushes_over_git_protocol() {
        let root = tempfile::tempdir().unwrap();
        let repo = BareRepo::create(root.path(), "project", &[("README.md", "over git://\n")]);
        let daemon = GitDaemon::start(root.path()).await;
        let work = tempfile::tempdir().unwrap();

        try_git(work.path(), &["clone", "-q", &daemon.url("project"), "."]).unwrap();
        let readme = std::fs::read_to_string(work.path().join("README.md")).unwrap();
        assert_eq!(readme, "over git://\n");

        std::fs::write(work.path().join("result.txt"), "done\n").unwrap();
        try_git(work.path(), &["checkout", "-q", "-b", "result"]).unwrap();
        try_git(work.path(), &["add", "result.txt"]).unwrap();
        try_git(work.path(), &["commit", "-q", "-m", "result"]).unwrap();
        try_git(work.path(), &["push", "-q", "origin", "result"]).unwrap();
        assert_eq!(repo.show("result", "result.txt").as_deref(), Some("done\n"));
    }

    #[tokio::test]
    async fn a_stopped_daemon_is_unreachable_until_restarted() {
        let root = tempfile::tempdir().unwrap();
        BareRepo::create(root.path(), "project", &[("a.txt", "a\n")]);
        let mut daemon = GitDaemon::start(root.path()).await;
        let url = daemon.url("project");
        let work = tempfile::tempdir().unwrap();

        daemon.stop();
        assert!(!daemon.is_running());
        let err = try_git(work.path(), &["ls-remote", &url]).unwrap_err();
        assert!(err.contains("unable to connect"), "{err}");

        daemon.restart().await;
        assert_eq!(daemon.url("project"), url);
        let refs = try_git(work.path(), &["ls-remote", &url]).unwrap();
        assert!(refs.contains("refs/heads/main"), "{refs}");
    }
}
