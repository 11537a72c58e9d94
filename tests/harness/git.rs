//! Real git repositories for tests, driven with the `git` command line the
//! way a user would inspect them.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct GitRepo {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl GitRepo {
    /// A repository on branch `main` with one commit holding `files`
    /// (paths may name folders: `.aida/config.toml`).
    pub fn with_files(files: &[(&str, &str)]) -> GitRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("repo");
        std::fs::create_dir(&path).unwrap();
        let repo = GitRepo { _dir: dir, path };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "dev@example.com"]);
        repo.git(&["config", "user.name", "Dev"]);
        for (name, content) in files {
            let file = repo.path.join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, content).unwrap();
        }
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", "initial"]);
        repo
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// Runs git in the repository; panics with its stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.path, args)
    }

    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(&["rev-parse", rev]).trim().to_owned()
    }

    /// A file's content at a revision, or None if it is not there.
    pub fn show(&self, rev: &str, file: &str) -> Option<String> {
        let out = Command::new("git")
            .args(["show", &format!("{rev}:{file}")])
            .current_dir(&self.path)
            .output()
            .expect("git show");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Commits `file` on a new branch `branch` from `main`, without
    /// touching the checkout; returns the commit id.
    pub fn commit_on_branch(&self, branch: &str, file: &str, content: &str) -> String {
        let blob = {
            let mut child = Command::new("git")
                .args(["hash-object", "-w", "--stdin"])
                .current_dir(&self.path)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("git hash-object");
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(content.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let base_tree = self.rev_parse("main^{tree}");
        let listing = self.git(&["ls-tree", &base_tree]);
        let tree_input = format!("{listing}100644 blob {blob}\t{file}\n");
        let tree = {
            let mut child = Command::new("git")
                .args(["mktree"])
                .current_dir(&self.path)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("git mktree");
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(tree_input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let commit = self
            .git(&["commit-tree", &tree, "-p", "main", "-m", "side work"])
            .trim()
            .to_owned();
        self.git(&["branch", branch, &commit]);
        commit
    }

    pub fn branches(&self) -> Vec<String> {
        self.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Paths of the worktrees besides the main one that a run holds: all
    /// but the workers' idle pooled worktrees (`aida-pool-*`, detached).
    pub fn worktrees_in_use(&self) -> Vec<String> {
        self.worktree_list()
            .into_iter()
            .filter(|(path, branch)| {
                let idle_slot = branch.is_none()
                    && Path::new(path)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("aida-pool-"));
                !idle_slot
            })
            .map(|(path, _)| path)
            .collect()
    }

    /// The worktree that has `branch` checked out, if any.
    pub fn worktree_of(&self, branch: &str) -> Option<String> {
        let want = format!("refs/heads/{branch}");
        self.worktree_list()
            .into_iter()
            .find(|(_, b)| b.as_deref() == Some(want.as_str()))
            .map(|(path, _)| path)
    }

    /// Every worktree but the main one, with the branch it has checked out
    /// (`None`: detached), as `git worktree list --porcelain` says.
    fn worktree_list(&self) -> Vec<(String, Option<String>)> {
        let list = self.git(&["worktree", "list", "--porcelain"]);
        list.split("\n\n")
            .filter_map(|block| {
                let mut lines = block.lines();
                let path = lines.next()?.strip_prefix("worktree ")?.to_owned();
                let branch = block
                    .lines()
                    .find_map(|l| l.strip_prefix("branch "))
                    .map(str::to_owned);
                (Path::new(&path) != self.path).then_some((path, branch))
            })
            .collect()
    }
}

pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
