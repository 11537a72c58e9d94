//! One subtask run from start to end: validate it, prepare the worktree, run
//! the agent, commit what it left, remove the worktree. Both the gRPC
//! `Execute` call and the orchestrator's assignments come through here.

use std::path::PathBuf;
use std::sync::Arc;

use aida_core::ids::{SubtaskName, TaskId};
use aida_proto::common::{LogLine, RunResult, SubtaskRun};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, Agent, AgentError, Invocation};
use crate::worktree::{self, PreparedWorktree};

/// What every run on this worker shares.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// Names the commits the worker makes.
    pub worker_id: String,
    /// Worktrees are created below this directory, one per run.
    pub worktree_root: PathBuf,
}

/// A run's fields checked once, at the start.
struct Validated {
    task_id: TaskId,
    subtask: SubtaskName,
    branch: String,
    agent: Agent,
}

/// Why a `SubtaskRun` cannot be run at all: the caller's mistake.
pub fn validate(run: &SubtaskRun) -> Result<(), String> {
    validate_run(run).map(|_| ())
}

fn validate_run(run: &SubtaskRun) -> Result<Validated, String> {
    if run.task_id.is_empty() {
        return Err("task_id is required".into());
    }
    if run.subtask.is_empty() {
        return Err("subtask is required".into());
    }
    if run.repo.is_empty() {
        return Err("repo is required".into());
    }
    if run.base_commit.is_empty() {
        return Err("base_commit is required".into());
    }
    let task_id = TaskId::parse(&run.task_id).map_err(|e| e.to_string())?;
    let subtask = SubtaskName::parse(&run.subtask).map_err(|e| e.to_string())?;
    let agent = match &run.agent {
        Some(spec) => Agent::from_spec(spec).map_err(|e| e.to_string())?,
        None => return Err("agent is required".into()),
    };
    let branch = if run.branch.is_empty() {
        task_id.subtask_branch(&subtask)
    } else {
        run.branch.clone()
    };
    Ok(Validated {
        task_id,
        subtask,
        branch,
        agent,
    })
}

fn failure(error: impl Into<String>) -> RunResult {
    RunResult {
        success: false,
        error: error.into(),
        ..Default::default()
    }
}

async fn note(logs: &mpsc::Sender<LogLine>, line: impl Into<String>) {
    let _ = logs.send(agent::log_line("aida", line)).await;
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, worktree::WorktreeError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("git task failed: {e}")),
    }
}

/// Runs one subtask and reports how it went; never panics on bad input and
/// always removes its worktree. Whatever the agent left is committed even
/// when it failed or was cancelled, so partial work can be inspected on the
/// branch (a retry resets the branch anyway).
#[tracing::instrument(skip_all, fields(task_id = %run.task_id, subtask = %run.subtask, attempt = run.attempt))]
pub async fn run_subtask(
    run: SubtaskRun,
    ctx: &ExecContext,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> RunResult {
    let v = match validate_run(&run) {
        Ok(v) => v,
        Err(e) => return failure(e),
    };
    if cancel.is_cancelled() {
        return failure("cancelled");
    }
    let run = Arc::new(run);
    let prepared = {
        let (run, branch, root, worker_id) = (
            run.clone(),
            v.branch.clone(),
            ctx.worktree_root.clone(),
            ctx.worker_id.clone(),
        );
        blocking(move || worktree::prepare(&run, &branch, &root, &worker_id)).await
    };
    let wt = match prepared {
        Ok(wt) => wt,
        Err(e) => {
            tracing::warn!(error = %e, "cannot prepare worktree");
            note(&logs, format!("cannot prepare worktree: {e}")).await;
            return RunResult {
                branch: v.branch,
                ..failure(e)
            };
        }
    };
    note(
        &logs,
        format!(
            "worktree ready at {}, starting from {}",
            wt.path.display(),
            wt.start_commit
        ),
    )
    .await;

    let mut result = run_in_worktree(&run, &v, &wt, ctx, &logs, cancel).await;

    let removed = {
        let wt = wt.clone();
        blocking(move || worktree::remove(&wt)).await
    };
    if let Err(e) = removed {
        tracing::warn!(error = %e, "cannot remove worktree");
        note(&logs, format!("cannot remove worktree: {e}")).await;
        if result.success {
            result.success = false;
            result.error = format!("cannot remove worktree: {e}");
        }
    }
    tracing::info!(success = result.success, error = %result.error, commit = %result.commit, "subtask run finished");
    result
}

async fn run_in_worktree(
    run: &Arc<SubtaskRun>,
    v: &Validated,
    wt: &PreparedWorktree,
    ctx: &ExecContext,
    logs: &mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> RunResult {
    let inv = Invocation {
        prompt: run.prompt.clone(),
        task_id: v.task_id.to_string(),
        subtask: v.subtask.to_string(),
        branch: wt.branch.clone(),
        worktree: wt.path.clone(),
    };
    let outcome = v.agent.run(&inv, logs.clone(), cancel).await;
    match &outcome {
        Ok(_) => note(logs, "agent finished").await,
        Err(e) => note(logs, format!("agent failed: {e}")).await,
    }

    let committed = {
        let (wt, subtask, prompt, worker_id) = (
            wt.clone(),
            run.subtask.clone(),
            run.prompt.clone(),
            ctx.worker_id.clone(),
        );
        blocking(move || worktree::commit_changes(&wt, &subtask, &prompt, &worker_id)).await
    };
    let mut result = RunResult {
        branch: wt.branch.clone(),
        start_commit: wt.start_commit.to_string(),
        commit: wt.start_commit.to_string(),
        ..Default::default()
    };
    match committed {
        Ok(c) => {
            result.commit = c.head.to_string();
            if c.created {
                note(logs, format!("committed {}", c.head)).await;
            } else {
                note(logs, "nothing to commit").await;
            }
        }
        Err(e) => {
            note(logs, format!("cannot commit the agent's work: {e}")).await;
            result.error = format!("cannot commit the agent's work: {e}");
        }
    }
    match outcome {
        Ok(out) => {
            result.exit_code = out.exit_code;
            result.summary = out.summary;
            result.success = result.error.is_empty();
        }
        Err(e) => {
            result.exit_code = e.exit_code().unwrap_or(-1);
            result.success = false;
            result.error = match (&e, result.error.is_empty()) {
                (AgentError::Cancelled, _) | (_, true) => e.to_string(),
                (_, false) => format!("{e}; {}", result.error),
            };
        }
    }
    result
}
