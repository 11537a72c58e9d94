//! One subtask run from start to end: validate it, prepare the worktree
//! (copying what `.worktreeinclude` lists, reserving the run's ports and
//! running the set-up command of `.aida/config.toml` or the task), run the
//! agent, commit what it left, remove the worktree. Both the gRPC `Execute`
//! call and the orchestrator's assignments come through here, and every
//! log line, the summary and the error leave it with secrets masked.
//!
//! What a caller can make a run touch is fixed here: the branch is always
//! `aida/<task>/<subtask>`, derived from the validated ids (the request's
//! `branch` is ignored); the base, the dependencies and a follow-up's
//! `continue_from` are used by commit id only; a read-only run is only
//! AIDA's planner and writes only below the worktree root; with
//! `AIDA_REPO_ROOTS` set, the repository must lie below one of the roots.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aida_core::ids::{SubtaskName, TaskId};
use aida_core::sparse::SparsePaths;
use aida_proto::common::{LogLine, RunResult, SubtaskRun};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, Agent, AgentConfig, AgentError, Invocation};
use crate::ports::{self, PortLease};
use crate::repo_config::{self, SetupPlan};
use crate::secrets::SecretMask;
use crate::setup::{self, SetupRun};
use crate::worktree::{self, PreparedWorktree};
use crate::worktree_include;

/// Lines buffered between a run and the masking of its log (each up to
/// 64 KiB).
const MASK_BUFFER: usize = 64;

/// The read-only runs there are: AIDA's planner, the verification of
/// a merged result, the judges of best of N (the orchestrator's `PLANNER` and `VERIFIER`; this crate
/// cannot depend on the orchestrator). A subtask can never have these
/// names, since subtask names cannot start with `_`.
pub const PLANNER: &str = "_plan";
pub const VERIFIER: &str = "_verify";
/// The judges of best-of-N subtasks, read-only: `_judge.<subtask>`.
pub const JUDGE_PREFIX: &str = "_judge.";
/// The resolver of a conflict at the merge: not read-only, it works on a
/// branch of its own per conflict, `aida/<task>/_resolve-<subtask>`.
pub const RESOLVER: &str = "_resolve";

/// The one answer for a repository outside the roots, whatever the reason
/// (outside, missing, unreadable): it must not tell a caller anything about
/// the host's files.
pub const REPO_OUTSIDE_ROOTS: &str = "repository is not under the worker's AIDA_REPO_ROOTS";

/// What every run on this worker shares.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// Names the commits the worker makes.
    pub worker_id: String,
    /// Worktrees are created below this directory, one per run.
    pub worktree_root: PathBuf,
    /// Whether a repository's worktree is kept and reset for the next run
    /// (see [`crate::pool`]) rather than removed.
    pub pool_worktrees: bool,
    /// Where the agent CLIs are and what they may do.
    pub agents: AgentConfig,
    /// Secret values masked in everything a run reports.
    pub secrets: Arc<SecretMask>,
    /// Canonical directories repositories must lie under; empty: any.
    pub repo_roots: Vec<PathBuf>,
    /// The set-up command's limit when neither the repository nor the task
    /// sets one.
    pub setup_timeout: Duration,
    /// Where port leases are locked; shared by every worker of the host.
    pub port_lock_dir: PathBuf,
}

impl ExecContext {
    /// Default agent settings, no secrets to mask, no repository roots,
    /// the default set-up timeout and port lock directory.
    pub fn new(worker_id: impl Into<String>, worktree_root: impl Into<PathBuf>) -> Self {
        Self {
            worker_id: worker_id.into(),
            worktree_root: worktree_root.into(),
            pool_worktrees: true,
            agents: AgentConfig::default(),
            secrets: Arc::default(),
            repo_roots: Vec::new(),
            setup_timeout: setup::DEFAULT_TIMEOUT,
            port_lock_dir: ports::default_lock_dir(),
        }
    }
}

/// A run's fields checked once, at the start.
struct Validated {
    task_id: TaskId,
    /// A valid subtask name, or [`PLANNER`] for a read-only run.
    subtask: String,
    /// `aida/<task>/<subtask>`; empty for a read-only run.
    branch: String,
    agent: Agent,
    /// The repository, canonical when roots are configured.
    repo: String,
    /// Directories the worktree holds; empty: all of it.
    paths: SparsePaths,
}

/// Why a `SubtaskRun` cannot be run on this worker at all: the caller's
/// mistake (or a setting this worker refuses).
pub fn validate(run: &SubtaskRun, ctx: &ExecContext) -> Result<(), String> {
    validate_run(run, ctx).map(|_| ())
}

fn validate_run(run: &SubtaskRun, ctx: &ExecContext) -> Result<Validated, String> {
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
    // A read-only run has no branch and runs in a snapshot named after the
    // task, so only AIDA's own planner and verifier may be one.
    let (subtask, branch) = if run.read_only {
        let judge = run
            .subtask
            .strip_prefix(JUDGE_PREFIX)
            .is_some_and(|name| SubtaskName::parse(name).is_ok());
        if run.subtask != PLANNER && run.subtask != VERIFIER && !judge {
            return Err(format!(
                "a read-only run must be AIDA's planner ({PLANNER:?}), verifier ({VERIFIER:?}) or a judge ({JUDGE_PREFIX:?}<subtask>), not {:?}",
                run.subtask
            ));
        }
        (run.subtask.clone(), String::new())
    } else if run.subtask == RESOLVER || run.resolve.is_some() {
        let Some(resolve) = run.resolve.as_ref().filter(|_| run.subtask == RESOLVER) else {
            return Err(format!(
                "a resolver's run is AIDA's {RESOLVER:?} with what to resolve"
            ));
        };
        let name = SubtaskName::parse(&resolve.subtask).map_err(|e| e.to_string())?;
        if !is_object_id(&resolve.theirs) {
            return Err("resolve.theirs must be a full commit id".into());
        }
        if !run.continue_from.is_empty() || !run.dependencies.is_empty() {
            return Err("a resolver's run starts from the result it is given only".into());
        }
        (
            run.subtask.clone(),
            format!("aida/{task_id}/{RESOLVER}-{name}"),
        )
    } else {
        // Whatever branch the caller named, the run writes only its own.
        let name = SubtaskName::parse(&run.subtask).map_err(|e| e.to_string())?;
        (name.to_string(), task_id.subtask_branch(&name))
    };
    if !is_object_id(&run.base_commit) {
        return Err("base_commit must be a full commit id".into());
    }
    if !run.continue_from.is_empty() {
        if run.read_only {
            return Err("a read-only run cannot continue a branch (continue_from)".into());
        }
        if !is_object_id(&run.continue_from) {
            return Err("continue_from must be a full commit id".into());
        }
    }
    if let Some(setup) = &run.setup {
        repo_config::validate_task_setup(setup)?;
    }
    for dep in &run.dependencies {
        // By commit id only: a dependency's branch may have moved since,
        // and a name could point anywhere.
        if !is_object_id(&dep.commit) {
            return Err(format!(
                "dependency {:?} must name a full commit id",
                dep.subtask
            ));
        }
    }
    let paths = SparsePaths::parse(&run.paths).map_err(|e| e.to_string())?;
    if !paths.is_empty() && (run.read_only || run.resolve.is_some()) {
        return Err(
            "paths are for a subtask's own worktree, not a read-only or resolver run".into(),
        );
    }
    let repo = repo_under_roots(&run.repo, &ctx.repo_roots)?;
    let agent = match &run.agent {
        Some(spec) => Agent::from_spec(spec, &run.prompt, run.resume_session.trim(), &ctx.agents)
            .map_err(|e| e.to_string())?,
        None => return Err("agent is required".into()),
    };
    Ok(Validated {
        task_id,
        subtask,
        branch,
        agent,
        repo,
        paths,
    })
}

/// A full hexadecimal object id (SHA-1 or SHA-256), not a name or an
/// abbreviation git would resolve.
fn is_object_id(rev: &str) -> bool {
    matches!(rev.len(), 40 | 64) && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `repo` canonicalized (symlinks and `..` resolved) when `roots` are set,
/// and refused with one generic answer unless it lies below one of them.
/// Without roots, `repo` as it is.
fn repo_under_roots(repo: &str, roots: &[PathBuf]) -> Result<String, String> {
    if roots.is_empty() {
        return Ok(repo.to_owned());
    }
    let Ok(canonical) = Path::new(repo).canonicalize() else {
        return Err(REPO_OUTSIDE_ROOTS.into());
    };
    if !roots.iter().any(|root| canonical.starts_with(root)) {
        return Err(REPO_OUTSIDE_ROOTS.into());
    }
    canonical
        .into_os_string()
        .into_string()
        .map_err(|_| REPO_OUTSIDE_ROOTS.to_owned())
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

async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
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
    // Every line passes the mask on its way out; the masking task ends once
    // the run dropped its sender, so all lines are out before the result.
    // The run's own environment may carry secrets too (the context token).
    let secrets = Arc::new(
        ctx.secrets.merged(&SecretMask::from_vars(
            run.env
                .iter()
                .chain(run.setup.iter().flat_map(|s| s.env.iter()))
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )),
    );
    let (masked_tx, mut masked_rx) = mpsc::channel::<LogLine>(MASK_BUFFER);
    let masking = {
        let secrets = Arc::clone(&secrets);
        tokio::spawn(async move {
            while let Some(mut line) = masked_rx.recv().await {
                secrets.mask_in_place(&mut line.line);
                // Once nobody listens this fails at once: draining goes on,
                // so the run never blocks on a full channel.
                let _ = logs.send(line).await;
            }
        })
    };
    let agent = run
        .agent
        .as_ref()
        .map(|a| a.kind.clone())
        .unwrap_or_else(|| "command".into());
    let started = std::time::Instant::now();
    let mut result = run_masked(run, ctx, masked_tx, cancel).await;
    let status = if result.success {
        "succeeded"
    } else {
        "failed"
    };
    metrics::counter!(aida_core::metrics::names::AGENT_RUNS, "agent" => agent.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(aida_core::metrics::names::AGENT_RUN_DURATION, "agent" => agent)
        .record(started.elapsed().as_secs_f64());
    let _ = masking.await;
    secrets.mask_in_place(&mut result.error);
    secrets.mask_in_place(&mut result.summary);
    secrets.mask_in_place(&mut result.output);
    result
}

async fn run_masked(
    run: SubtaskRun,
    ctx: &ExecContext,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> RunResult {
    let v = match validate_run(&run, ctx) {
        // Bad input stays bad: no retry.
        Err(e) => {
            return RunResult {
                permanent: true,
                ..failure(e)
            };
        }
        Ok(v) => v,
    };
    if cancel.is_cancelled() {
        return failure("cancelled");
    }
    // From here on the repository is the checked, canonical path.
    let run = SubtaskRun {
        repo: v.repo.clone(),
        ..run
    };
    if run.read_only {
        return run_read_only(&run, &v, ctx, &logs, cancel).await;
    }
    let run = Arc::new(run);
    let preparing = std::time::Instant::now();
    let prepared = {
        let (run, branch, root, worker_id, pool, paths) = (
            run.clone(),
            v.branch.clone(),
            ctx.worktree_root.clone(),
            ctx.worker_id.clone(),
            ctx.pool_worktrees,
            v.paths.clone(),
        );
        tokio::task::spawn_blocking(move || {
            worktree::prepare(&run, &branch, &root, &worker_id, pool, &paths)
                .map_err(|e| (e.to_string(), e.is_permanent()))
        })
        .await
        .unwrap_or_else(|e| Err((format!("git task failed: {e}"), false)))
    };
    let wt = match prepared {
        Ok(wt) => {
            metrics::histogram!(aida_core::metrics::names::WORKTREE_PREPARE_DURATION,
                "mode" => if wt.reused { "reused" } else { "fresh" })
            .record(preparing.elapsed().as_secs_f64());
            wt
        }
        Err((e, permanent)) => {
            tracing::warn!(error = %e, "cannot prepare worktree");
            note(&logs, format!("cannot prepare worktree: {e}")).await;
            return RunResult {
                branch: v.branch,
                permanent,
                ..failure(e)
            };
        }
    };
    if run.continue_from.is_empty() {
        note(
            &logs,
            format!(
                "worktree ready at {}{}, starting from {}",
                wt.path.display(),
                if wt.reused { " (reused, reset)" } else { "" },
                wt.start_commit
            ),
        )
        .await;
    } else {
        note(
            &logs,
            format!(
                "worktree ready at {}, continuing branch {} from {} (a follow-up)",
                wt.path.display(),
                wt.branch,
                wt.start_commit
            ),
        )
        .await;
    }

    let mut result = run_in_worktree(&run, &v, &wt, ctx, &logs, cancel).await;

    let removed = {
        let wt = wt.clone();
        blocking(move || worktree::release(&wt)).await
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

/// A read-only run (the planner): the agent works in a snapshot of the base
/// commit and its answer comes back in `output`; nothing is committed.
async fn run_read_only(
    run: &SubtaskRun,
    v: &Validated,
    ctx: &ExecContext,
    logs: &mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> RunResult {
    let dir = ctx.worktree_root.join(format!(
        "{}-{}-{}-read-only",
        run.task_id, run.subtask, run.attempt
    ));
    let snapshot = {
        let (repo, commit, dir) = (run.repo.clone(), run.base_commit.clone(), dir.clone());
        blocking(move || worktree::snapshot(&repo, &commit, &dir)).await
    };
    let start = match snapshot {
        Ok(start) => start,
        Err(e) => {
            note(logs, format!("cannot prepare a read-only snapshot: {e}")).await;
            return failure(e);
        }
    };
    note(
        logs,
        format!("read-only snapshot of {start} at {}", dir.display()),
    )
    .await;
    let inv = Invocation {
        prompt: run.prompt.clone(),
        task_id: v.task_id.to_string(),
        subtask: v.subtask.clone(),
        branch: String::new(),
        worktree: dir.clone(),
        env: run
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        setup_env: Vec::new(),
    };
    if v.subtask == VERIFIER {
        let spec = run.verify.clone().unwrap_or_default();
        let ran = if spec.command.is_empty() {
            Err("a verification run needs its verify command".to_owned())
        } else {
            crate::verify::run(&spec, &inv, ctx, logs, cancel)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot remove a read-only snapshot");
        }
        return RunResult {
            success: ran.is_ok(),
            error: ran.err().unwrap_or_default(),
            start_commit: start.to_string(),
            commit: start.to_string(),
            ..Default::default()
        };
    }
    note(
        logs,
        format!("starting {} agent (read-only)", v.agent.kind.name()),
    )
    .await;
    let out = v.agent.run(&inv, logs.clone(), cancel).await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot remove a read-only snapshot");
    }
    RunResult {
        success: out.error.is_none(),
        permanent: out.error.as_ref().is_some_and(AgentError::is_permanent),
        error: out.error.map(|e| e.to_string()).unwrap_or_default(),
        start_commit: start.to_string(),
        commit: start.to_string(),
        exit_code: out.exit_code,
        summary: out.summary,
        output: out.output,
        usage: (out.usage != Default::default()).then_some(out.usage),
        ..Default::default()
    }
}

async fn run_in_worktree(
    run: &Arc<SubtaskRun>,
    v: &Validated,
    wt: &PreparedWorktree,
    ctx: &ExecContext,
    logs: &mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> RunResult {
    let included = {
        let (repo, path) = (wt.repo.clone(), wt.path.clone());
        blocking(move || worktree_include::copy_included(&repo, &path)).await
    };
    match included {
        Ok(included) => {
            if !included.copied.is_empty() {
                note(
                    logs,
                    format!(
                        "copied from {}: {}",
                        worktree_include::FILE_NAME,
                        included.copied.join(", ")
                    ),
                )
                .await;
            }
            for skipped in included.skipped {
                note(logs, format!("{}: {skipped}", worktree_include::FILE_NAME)).await;
            }
        }
        Err(e) => {
            let error = format!(
                "cannot copy the files {} lists: {e}",
                worktree_include::FILE_NAME
            );
            note(logs, error.clone()).await;
            return worktree_failure(wt, error, false);
        }
    }

    // Held until the run ends: the agent may listen on its ports.
    let set_up = match set_up(run, v, wt, ctx, logs, cancel.clone()).await {
        Ok(set_up) => set_up,
        Err(result) => return result,
    };
    if let Some(resolve) = &run.resolve {
        let started = {
            let (wt, theirs) = (wt.clone(), resolve.theirs.clone());
            blocking(move || crate::resolve::start_merge(&wt, &theirs)).await
        };
        match started {
            Ok(files) if files.is_empty() => {
                note(
                    logs,
                    format!("{} merges without conflict here", resolve.subtask),
                )
                .await;
            }
            Ok(files) => {
                let files = files.join(", ");
                note(
                    logs,
                    format!("merging {}: conflicts in {files}", resolve.subtask),
                )
                .await;
            }
            Err(e) => {
                note(logs, e.clone()).await;
                return worktree_failure(wt, e, false);
            }
        }
    }
    let inv = invocation(run, v, wt, set_up.env.clone());
    note(
        logs,
        format!(
            "starting {} agent: {}",
            v.agent.kind.name(),
            v.agent.display(&run.prompt)
        ),
    )
    .await;
    let cancel_verify = cancel.clone();
    let out = v.agent.run(&inv, logs.clone(), cancel).await;
    match &out.error {
        None => note(logs, "agent finished").await,
        Some(e) => note(logs, format!("agent failed: {e}")).await,
    }

    let committed = {
        let (wt, subtask, prompt, worker_id, leave_out) = (
            wt.clone(),
            run.subtask.clone(),
            run.prompt.clone(),
            ctx.worker_id.clone(),
            set_up.created.clone(),
        );
        match run.resolve.clone() {
            // Only what a resolver that succeeded left is looked at.
            Some(_) if out.error.is_some() => Ok(worktree::Committed {
                head: wt.start_commit,
                created: false,
            }),
            Some(resolve) => blocking(move || {
                crate::resolve::commit_resolution(
                    &wt,
                    &resolve.theirs,
                    &resolve.subtask,
                    &worker_id,
                    &leave_out,
                )
                .map(|head| worktree::Committed {
                    head,
                    created: true,
                })
            })
            .await
            .map_err(|e| format!("the resolution is refused: {e}")),
            None => blocking(move || {
                worktree::commit_changes(&wt, &subtask, &prompt, &worker_id, &leave_out)
            })
            .await
            .map_err(|e| format!("cannot commit the agent's work: {e}")),
        }
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
            note(logs, e.clone()).await;
            result.error = e;
        }
    }
    result.exit_code = out.exit_code;
    result.summary = out.summary;
    if out.usage != Default::default() {
        result.usage = Some(out.usage);
    }
    // The subtask's own branch is checked before it is merged: only work
    // that was committed, after an agent that succeeded.
    // A resolution is checked whatever `on` says: it is new code no
    // subtask's check has seen.
    let spec = if run.resolve.is_some() {
        run.verify.as_ref().filter(|s| !s.command.is_empty())
    } else {
        crate::verify::on_subtasks(run.verify.as_ref())
    };
    if out.error.is_none()
        && result.error.is_empty()
        && let Some(spec) = spec
    {
        let inv = invocation(run, v, wt, set_up.env.clone());
        if let Err(e) = crate::verify::run(spec, &inv, ctx, logs, cancel_verify).await {
            result.error = format!("verification failed: {e}");
        }
    }
    match out.error {
        None => result.success = result.error.is_empty(),
        Some(e) => {
            result.success = false;
            result.permanent = e.is_permanent();
            result.error = match (&e, result.error.is_empty()) {
                (AgentError::Cancelled, _) | (_, true) => e.to_string(),
                (_, false) => format!("{e}; {}", result.error),
            };
        }
    }
    result
}

/// A failure inside the prepared worktree, before the agent ran: nothing
/// was committed.
fn worktree_failure(wt: &PreparedWorktree, error: String, permanent: bool) -> RunResult {
    RunResult {
        branch: wt.branch.clone(),
        start_commit: wt.start_commit.to_string(),
        commit: wt.start_commit.to_string(),
        exit_code: -1,
        permanent,
        ..failure(error)
    }
}

/// What the agent (and the set-up command) is told about the run.
fn invocation(
    run: &SubtaskRun,
    v: &Validated,
    wt: &PreparedWorktree,
    setup_env: Vec<(String, String)>,
) -> Invocation {
    Invocation {
        prompt: run.prompt.clone(),
        task_id: v.task_id.to_string(),
        subtask: v.subtask.clone(),
        branch: wt.branch.clone(),
        worktree: wt.path.clone(),
        env: run
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        setup_env,
    }
}

/// What the worktree's set-up gave the run.
struct SetUp {
    /// The run's ports, claimed until this is dropped.
    _ports: PortLease,
    /// For the agent: the set-up env and the ports' variables.
    env: Vec<(String, String)>,
    /// Untracked files the set-up command left: never committed.
    created: BTreeSet<String>,
}

/// Reads `.aida/config.toml`, lays the task's settings over it, claims the
/// ports and runs the set-up command. A failure comes back as the run's
/// result.
async fn set_up(
    run: &SubtaskRun,
    v: &Validated,
    wt: &PreparedWorktree,
    ctx: &ExecContext,
    logs: &mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> Result<SetUp, RunResult> {
    let loaded = {
        let path = wt.path.clone();
        blocking(move || repo_config::load(&path)).await
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            note(logs, e.clone()).await;
            // The file is part of the start commit: a retry reads it again.
            return Err(worktree_failure(wt, e, true));
        }
    };
    if config.is_some() {
        note(logs, format!("read {}", repo_config::CONFIG_PATH)).await;
    }
    let plan = SetupPlan::merge(config, run.setup.as_ref());

    let ports = if plan.ports == 0 {
        PortLease::none()
    } else {
        let (count, dir) = (plan.ports, ctx.port_lock_dir.clone());
        match blocking(move || PortLease::acquire(count, &dir)).await {
            Ok(lease) => lease,
            Err(e) => {
                let error = format!("cannot reserve {count} ports: {e}");
                note(logs, error.clone()).await;
                return Err(worktree_failure(wt, error, false));
            }
        }
    };
    if !ports.ports().is_empty() {
        let list: Vec<String> = ports.ports().iter().map(u16::to_string).collect();
        note(logs, format!("ports reserved: {}", list.join(", "))).await;
    }
    let env: Vec<(String, String)> = plan.env.into_iter().chain(ports.env()).collect();

    let mut created = BTreeSet::new();
    if !plan.command.is_empty() {
        let command = setup::display(&plan.command);
        note(logs, format!("running set-up command: {command}")).await;
        let inv = invocation(run, v, wt, env.clone());
        let ran = setup::run(
            SetupRun {
                what: setup::WHAT,
                stream: setup::STREAM,
                command: &plan.command,
                inv: &inv,
                allow: &ctx.agents.env,
                timeout: plan.timeout.unwrap_or(ctx.setup_timeout),
                log_quota_bytes: ctx.agents.log_quota_bytes,
            },
            logs.clone(),
            cancel,
        )
        .await;
        if let Err(e) = ran {
            note(logs, format!("set-up failed: {e}")).await;
            return Err(worktree_failure(wt, e.to_string(), e.is_permanent()));
        }
        note(logs, "set-up command finished").await;
        let untracked = {
            let wt = wt.clone();
            blocking(move || worktree::untracked_files(&wt)).await
        };
        created = match untracked {
            Ok(files) => files,
            Err(e) => {
                let error = format!("cannot list the files the set-up command created: {e}");
                note(logs, error.clone()).await;
                return Err(worktree_failure(wt, error, false));
            }
        };
        if !created.is_empty() {
            note(
                logs,
                format!(
                    "leaving {} untracked files the set-up command created out of the commit: {}",
                    created.len(),
                    sample(&created, 10)
                ),
            )
            .await;
        }
    }
    Ok(SetUp {
        _ports: ports,
        env,
        created,
    })
}

/// The first `n` of `items`, and how many more there are.
fn sample(items: &BTreeSet<String>, n: usize) -> String {
    let mut shown: Vec<&str> = items.iter().take(n).map(String::as_str).collect();
    let more = items.len().saturating_sub(n);
    let more = format!("and {more} more");
    if items.len() > n {
        shown.push(&more);
    }
    shown.join(", ")
}
