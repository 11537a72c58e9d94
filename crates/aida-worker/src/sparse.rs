//! A sparse worktree: only the directories a subtask declared are written
//! (git's sparse checkout in cone mode), so a run on a big repository starts
//! in the time its part takes. libgit2 can neither add a worktree without
//! checking out every file nor keep a sparse checkout, so this is the one
//! place the worker calls the `git` command line: `worktree add
//! --no-checkout`, `sparse-checkout set --cone --stdin` (the directories on
//! its standard input, never as arguments) and `read-tree -mu HEAD`.
//!
//! The files left out stay in the index, marked skip-worktree: git shows
//! them neither as deleted nor as changed, and [`crate::worktree::commit_changes`]
//! keeps them as they are, so the commit holds the whole tree.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use aida_core::sparse::SparsePaths;
use git2::Repository;

use crate::worktree::WorktreeError;

/// Adds the worktree `path` on `branch` (an existing local branch, already
/// at the run's start commit) holding only `paths`; locked, as every run's
/// worktree is, for as long as the run lasts. The caller holds the
/// repository's worktree metadata lock and removed any leftover first.
pub fn add_worktree(
    repo: &Repository,
    path: &Path,
    branch: &str,
    paths: &SparsePaths,
) -> Result<(), WorktreeError> {
    // git runs in the repository's own directory: the path must not
    // depend on where the worker runs.
    let path = &std::path::absolute(path)
        .map_err(|e| failed("adding a sparse worktree", format!("its path: {e}")))?;
    let path_arg = path
        .to_str()
        .ok_or_else(|| failed("adding a sparse worktree", "its path is not UTF-8".into()))?;
    git(
        repo.commondir(),
        "adding a sparse worktree",
        &[
            "worktree",
            "add",
            "--no-checkout",
            "--lock",
            "--",
            path_arg,
            branch,
        ],
        None,
    )?;
    git(
        path,
        "choosing the worktree's directories",
        &[
            "sparse-checkout",
            "set",
            "--cone",
            "--no-sparse-index",
            "--stdin",
        ],
        Some(&paths.to_stdin()),
    )?;
    git(
        path,
        "checking out the worktree's directories",
        &["read-tree", "-mu", "HEAD"],
        None,
    )?;
    Ok(())
}

fn failed(what: &str, detail: String) -> WorktreeError {
    WorktreeError::GitCli {
        what: what.to_owned(),
        detail,
    }
}

/// `git <args>` in `dir`, with `stdin` written to it. No hook runs and no
/// file-system monitor is started, whatever the repository configures;
/// nothing of the worker's environment can point git at another
/// repository, and git never prompts.
fn git(dir: &Path, what: &str, args: &[&str], stdin: Option<&str>) -> Result<(), WorktreeError> {
    let mut child = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
        ])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_COMMON_DIR")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(what, format!("cannot run git: {e}")))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .map_err(|e| failed(what, format!("writing to git: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(what, format!("waiting for git: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = stderr
        .trim()
        .lines()
        .last()
        .unwrap_or("no message")
        .to_owned();
    Err(failed(what, format!("git {}: {detail}", out.status)))
}
