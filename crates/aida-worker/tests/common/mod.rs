//! Test helpers: real git repositories in temp directories and subtask runs
//! whose agent is a real process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use aida_core::ids::TaskId;
use aida_proto::common::{AgentSpec, DependencyCommit, LogLine, RunResult, SubtaskRun};
use aida_worker::{AgentConfig, ExecContext};
use git2::{Oid, Repository, Signature};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub base: Oid,
}

impl TestRepo {
    /// A repository with one commit on `main` (README.md).
    pub fn new() -> Self {
        Self::with_files(&[])
    }

    /// A repository with one commit on `main`: README.md and `files`.
    pub fn with_files(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let mut index = repo.index().unwrap();
        for (path, content) in [("README.md", "hello\n")].iter().chain(files) {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
            index.add_path(Path::new(path)).unwrap();
        }
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("test", "test@example.com").unwrap();
        let base = repo
            .commit(Some("refs/heads/main"), &sig, &sig, "initial", &tree, &[])
            .unwrap();
        repo.set_head("refs/heads/main").unwrap();
        Self { dir, base }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn repo(&self) -> Repository {
        Repository::open(self.path()).unwrap()
    }

    /// What `git worktree list --porcelain` says about the repository.
    pub fn git_worktree_list(&self) -> String {
        let out = std::process::Command::new("git")
            .args(["worktree", "list", "--porcelain"])
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn main_head(&self) -> Oid {
        self.repo().refname_to_id("refs/heads/main").unwrap()
    }

    /// The content of `file` in `commit`, if it has it.
    pub fn file_at(&self, commit: &str, file: &str) -> Option<String> {
        let repo = self.repo();
        let commit = repo.find_commit(Oid::from_str(commit).unwrap()).unwrap();
        let entry = commit.tree().unwrap().get_path(Path::new(file)).ok()?;
        let blob = repo.find_blob(entry.id()).unwrap();
        Some(String::from_utf8_lossy(blob.content()).into_owned())
    }

    pub fn run(&self, subtask: &str, argv: &[&str]) -> SubtaskRun {
        let task_id = TaskId::new();
        SubtaskRun {
            task_id: task_id.to_string(),
            subtask: subtask.into(),
            attempt: 1,
            repo: self.path().display().to_string(),
            base_commit: self.base.to_string(),
            branch: format!("aida/{task_id}/{subtask}"),
            dependencies: vec![],
            prompt: format!("do {subtask}\nmore details"),
            agent: Some(command(argv)),
            ..Default::default()
        }
    }

    /// A run of `spec` with `prompt`.
    pub fn agent_run(&self, subtask: &str, spec: AgentSpec, prompt: &str) -> SubtaskRun {
        SubtaskRun {
            prompt: prompt.into(),
            agent: Some(spec),
            ..self.run(subtask, &[])
        }
    }
}

/// The fake CLIs of the repository's test suite.
pub fn fakes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fakes")
        .canonicalize()
        .unwrap()
}

/// Agent settings pointing at the fake CLIs.
pub fn fake_agents() -> AgentConfig {
    let fakes = fakes_dir();
    AgentConfig {
        claude_path: fakes.join("claude").display().to_string(),
        gemini_path: fakes.join("gemini").display().to_string(),
        codex_path: fakes.join("codex").display().to_string(),
        ..AgentConfig::default()
    }
}

/// An agent spec of `kind` with the given options.
pub fn cli(kind: &str, options: &[(&str, &str)]) -> AgentSpec {
    AgentSpec {
        kind: kind.into(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

pub fn command(argv: &[&str]) -> AgentSpec {
    AgentSpec {
        kind: "command".into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn dependency(run: &SubtaskRun, result: &RunResult) -> DependencyCommit {
    DependencyCommit {
        subtask: run.subtask.clone(),
        branch: result.branch.clone(),
        commit: result.commit.clone(),
    }
}

pub struct Ctx {
    pub root: tempfile::TempDir,
    pub ctx: ExecContext,
}

impl Ctx {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let ctx = ExecContext::new("test-worker", root.path().join("worktrees"));
        Self { root, ctx }
    }

    /// A context whose agent CLIs are the fakes.
    pub fn with_fakes() -> Self {
        let mut ctx = Self::new();
        ctx.ctx.agents = fake_agents();
        ctx
    }

    /// Where this worker's runs on `run`'s repository work: its pooled
    /// worktree of that repository.
    pub fn worktree_dir(&self, run: &SubtaskRun) -> PathBuf {
        let repo = Repository::open(&run.repo).unwrap();
        aida_worker::pool::Slot::of(&self.ctx.worktree_root, &repo).path
    }

    /// After `run` ended: no worktree holds its branch and no worktree of
    /// the run is left but the worker's idle pooled one (or none at all).
    pub fn assert_released(&self, run: &SubtaskRun) {
        let slot = aida_worker::pool::Slot::at(&self.worktree_dir(run)).unwrap();
        assert!(
            !slot.path.exists() || slot.is_idle(),
            "the run's worktree was handed back"
        );
        assert!(
            !self
                .ctx
                .worktree_root
                .join(aida_worker::worktree::worktree_name(run))
                .exists()
        );
        let repo = Repository::open(&run.repo).unwrap();
        for name in repo.worktrees().unwrap().iter().flatten() {
            assert!(
                aida_worker::pool::is_slot_name(name),
                "worktree {name} left behind"
            );
        }
        let out = std::process::Command::new("git")
            .args(["worktree", "list", "--porcelain"])
            .current_dir(&run.repo)
            .output()
            .unwrap();
        let list = String::from_utf8(out.stdout).unwrap();
        assert!(
            !list.contains(&format!("branch refs/heads/{}\n", run.branch)),
            "{list}"
        );
    }

    /// Runs `run` to its end and returns its result and every log line.
    pub async fn execute(&self, run: SubtaskRun) -> (RunResult, Vec<LogLine>) {
        let (tx, mut rx) = mpsc::channel(16);
        let ctx = self.ctx.clone();
        let handle = tokio::spawn(async move {
            aida_worker::run_subtask(run, &ctx, tx, CancellationToken::new()).await
        });
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        (handle.await.unwrap(), lines)
    }
}

pub fn has_line(lines: &[LogLine], stream: &str, text: &str) -> bool {
    lines.iter().any(|l| l.stream == stream && l.line == text)
}
