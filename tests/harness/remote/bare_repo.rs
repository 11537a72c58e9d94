//! Bare repositories the test git servers serve, made and read with the
//! plain `git` CLI. Every git run here is isolated from the machine: no
//! system or global config (so no credential helper, no URL rewriting), no
//! terminal prompt, a fixed committer.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The committer of every commit the harness makes.
const USER_NAME: &str = "Remote Tester";
const USER_EMAIL: &str = "remote-tester@example.com";

/// `git` run in `dir`, isolated from system and global config and from the
/// environment of whoever runs the tests, never prompting.
pub fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(["-c", &format!("user.name={USER_NAME}")])
        .args(["-c", &format!("user.email={USER_EMAIL}")])
        .args(["-c", "init.defaultBranch=main"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_CONFIG_PARAMETERS");
    cmd
}

/// Runs [`git_command`]: its stdout, or its stderr when it fails (for
/// runs expected to fail, such as a clone with a wrong token).
pub fn try_git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = git_command(dir).args(args).output().expect("running git");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    try_git(dir, args).unwrap_or_else(|e| panic!("git {args:?} in {}: {e}", dir.display()))
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating a directory");
        }
        std::fs::write(&path, content).expect("writing a file");
    }
}

/// A bare repository `NAME.git` below a servers' root directory.
pub struct BareRepo {
    /// `NAME`, as the servers' `url(NAME)` take it.
    pub name: String,
    /// `ROOT/NAME.git`.
    pub path: PathBuf,
}

impl BareRepo {
    /// Creates `root/NAME.git` with one commit on `main` holding `files`
    /// (paths may have directories).
    pub fn create(root: &Path, name: &str, files: &[(&str, &str)]) -> BareRepo {
        let path = root.join(format!("{name}.git"));
        let path_str = path.to_str().expect("utf-8 path");
        git(root, &["init", "-q", "--bare", "-b", "main", path_str]);
        let scratch = tempfile::tempdir().expect("tempdir");
        git(scratch.path(), &["init", "-q", "-b", "main", "."]);
        write_files(scratch.path(), files);
        git(scratch.path(), &["add", "-A"]);
        git(scratch.path(), &["commit", "-q", "-m", "initial"]);
        git(scratch.path(), &["push", "-q", path_str, "main"]);
        BareRepo {
            name: name.to_owned(),
            path,
        }
    }

    /// Commits `files` on `branch` from a scratch clone and pushes it, as
    /// someone else pushing to the remote would; a new branch starts from
    /// `main`. Returns the new commit.
    pub fn push_commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let scratch = tempfile::tempdir().expect("tempdir");
        let work = scratch.path();
        git(work, &["clone", "-q", self.path_str(), "."]);
        let start = if self.head(branch).is_some() {
            format!("origin/{branch}")
        } else {
            "origin/main".to_owned()
        };
        git(work, &["checkout", "-q", "-B", branch, &start]);
        write_files(work, files);
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(work, &["push", "-q", "origin", branch]);
        git(work, &["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// Runs git in the bare repository; panics with its stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.path, args)
    }

    /// The commit `branch` points at, or None if there is no such branch.
    pub fn head(&self, branch: &str) -> Option<String> {
        let rev = format!("refs/heads/{branch}^{{commit}}");
        try_git(&self.path, &["rev-parse", "--verify", "-q", &rev])
            .ok()
            .map(|out| out.trim().to_owned())
    }

    /// `file`'s content on `branch`, or None if either is missing.
    pub fn show(&self, branch: &str, file: &str) -> Option<String> {
        try_git(
            &self.path,
            &["show", &format!("refs/heads/{branch}:{file}")],
        )
        .ok()
    }

    /// The repository's branches, sorted.
    pub fn branches(&self) -> Vec<String> {
        self.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The subjects of `branch`'s commits, newest first.
    pub fn subjects(&self, branch: &str) -> Vec<String> {
        self.git(&["log", "--format=%s", &format!("refs/heads/{branch}")])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }
}

#[cfg(test)]
mod tests {
    use super::BareRepo;

    #[test]
    fn creates_and_reads_a_bare_repository() {
        let root = tempfile::tempdir().unwrap();
        let repo = BareRepo::create(
            root.path(),
            "demo",
            &[("README.md", "hi\n"), ("src/a.rs", "fn a() {}\n")],
        );
        assert!(repo.path.ends_with("demo.git"));
        assert_eq!(
            repo.git(&["rev-parse", "--is-bare-repository"]).trim(),
            "true"
        );
        assert_eq!(repo.branches(), ["main"]);
        assert_eq!(
            repo.show("main", "src/a.rs").as_deref(),
            Some("fn a() {}\n")
        );
        assert_eq!(repo.show("main", "missing"), None);
        assert_eq!(repo.head("nope"), None);
    }

    #[test]
    fn pushes_commits_to_existing_and_new_branches() {
        let root = tempfile::tempdir().unwrap();
        let repo = BareRepo::create(root.path(), "demo", &[("a.txt", "1\n")]);
        let first = repo.head("main").unwrap();

        let on_main = repo.push_commit("main", &[("a.txt", "2\n")], "someone else");
        assert_eq!(repo.head("main").as_deref(), Some(on_main.as_str()));
        assert_eq!(repo.show("main", "a.txt").as_deref(), Some("2\n"));
        assert_eq!(repo.subjects("main"), ["someone else", "initial"]);

        let side = repo.push_commit("side", &[("b.txt", "b\n")], "side work");
        assert_ne!(side, first);
        assert_eq!(repo.branches(), ["main", "side"]);
        assert_eq!(repo.show("side", "a.txt").as_deref(), Some("2\n"));
        assert_eq!(repo.show("side", "b.txt").as_deref(), Some("b\n"));
    }
}
