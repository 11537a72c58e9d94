//! The resolver agent: when a subtask's branch conflicts at the merge and
//! the task gives `resolve`, a worker checks out the result so far, starts
//! the merge of that branch (conflict markers in the files, both parents
//! known) and runs the resolver with a prompt holding both sides' prompts,
//! summaries and diffs. The worker accepts its work only if no marker is
//! left (and the task's verify command, when given, passes), and commits a
//! merge with both parents; the merge then takes that commit for the
//! branch. A resolver that fails its attempts leaves the branch out, as
//! without one. Conflicts are taken one at a time, in merge order: each
//! resolution changes the result the next one is made on.

use std::collections::HashMap;
use std::sync::Arc;

use aida_core::event::{Channel, kind};
use aida_core::proto::aggregator::MergeResponse;
use aida_core::proto::common::{
    AgentSpec, ResolveRun, ResolveSpec, RunResult, Subtask, SubtaskRun, Task, TaskStatus,
};
use git2::{Oid, Repository};
use serde_json::json;

use crate::engine::Engine;
use crate::error::{OrchestratorError, Result};
use crate::lifecycle::final_verdict;
use crate::store::{NewEvent, ResolutionJson, SubtaskOutcome};

/// The pseudo-subtask whose attempts are the resolver's runs; a subtask can
/// never have this name (subtask names cannot start with `_`).
pub const RESOLVER: &str = "_resolve";

const DEFAULT_ATTEMPTS: u32 = 2;
const MAX_ATTEMPTS: u32 = 5;
/// The most of one side's diff a prompt holds.
const DIFF_CHARS: usize = 12_000;

/// Checks a task's `resolve`: an agent (the task's when it gives none)
/// and a number of attempts.
pub fn check_spec(
    spec: Option<ResolveSpec>,
    task_agent: Option<&AgentSpec>,
) -> Result<Option<ResolveSpec>> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let agent = spec
        .agent
        .filter(|a| !a.kind.is_empty() || !a.command.is_empty())
        .or_else(|| task_agent.cloned())
        .ok_or_else(|| {
            OrchestratorError::invalid(
                "\"resolve.agent\" is required when the task gives no agent of its own",
            )
        })?;
    let max_attempts = match spec.max_attempts {
        0 => DEFAULT_ATTEMPTS,
        n if n > MAX_ATTEMPTS => {
            return Err(OrchestratorError::invalid(format!(
                "\"resolve.max_attempts\" is at most {MAX_ATTEMPTS}"
            )));
        }
        n => n,
    };
    Ok(Some(ResolveSpec {
        agent: Some(agent),
        max_attempts,
    }))
}

/// The resolver's merge commit for subtask `name`, when it resolved one;
/// "" otherwise.
pub(crate) fn resolution_of(task: &Task, name: &str) -> String {
    task.resolutions
        .iter()
        .find(|r| r.subtask == name && r.status == "resolved")
        .map(|r| r.commit.clone())
        .unwrap_or_default()
}

/// The conflict the resolver works on now, if any.
pub(crate) fn current(task: &Task) -> Option<&aida_core::proto::common::Resolution> {
    task.resolutions.iter().find(|r| r.status == "running")
}

/// Subtask `name`'s commit ("" when it has none).
fn commit_of(task: &Task, name: &str) -> String {
    task.subtasks
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.commit.clone())
        .unwrap_or_default()
}

/// What a worker needs for the resolver's run on the current conflict.
pub(crate) fn resolver_run(
    task: &Task,
    st: &Subtask,
    attempt: u32,
    mut env: HashMap<String, String>,
) -> SubtaskRun {
    let r = current(task).cloned().unwrap_or_default();
    let theirs = commit_of(task, &r.subtask);
    env.insert("AIDA_RESOLVE_SUBTASK".into(), r.subtask.clone());
    env.insert("AIDA_CONFLICT_FILES".into(), r.files.join("\n"));
    SubtaskRun {
        traceparent: task.traceparent.clone(),
        task_id: task.id.clone(),
        subtask: st.name.clone(),
        attempt,
        repo: task.repo.clone(),
        base_commit: r.onto.clone(),
        branch: String::new(),
        dependencies: Vec::new(),
        // Written for this conflict when it was handed over.
        prompt: st.prompt.clone(),
        agent: crate::scheduler::current_agent(st).cloned(),
        env,
        read_only: false,
        continue_from: String::new(),
        resume_session: String::new(),
        setup: task.setup.clone(),
        verify: task.verify.clone(),
        resolve: Some(ResolveRun {
            subtask: r.subtask,
            theirs,
            files: r.files,
        }),
        // The resolver works across the conflicting files, wherever they are.
        paths: Vec::new(),
    }
}

/// Checks the resolver's reported commit: a merge whose parents are the
/// result it was given and the conflicting subtask's commit.
pub(crate) async fn check_claim(
    task: &Task,
    result: &RunResult,
) -> std::result::Result<(), String> {
    if !result.success {
        return Ok(());
    }
    let Some(r) = current(task) else {
        return Err("the resolver has no conflict to resolve".into());
    };
    let theirs = commit_of(task, &r.subtask);
    let (repo, commit, onto) = (task.repo.clone(), result.commit.clone(), r.onto.clone());
    tokio::task::spawn_blocking(move || {
        let repo = Repository::open(&repo).map_err(|e| e.message().to_owned())?;
        let parents: Vec<String> = Oid::from_str(&commit)
            .and_then(|id| repo.find_commit(id))
            .map(|c| c.parent_ids().map(|p| p.to_string()).collect())
            .map_err(|_| format!("{commit:?} is not a commit of the repository"))?;
        if parents == [onto, theirs] {
            Ok(())
        } else {
            Err(
                "a resolution is a merge of the conflicting commit into the result it was given"
                    .into(),
            )
        }
    })
    .await
    .unwrap_or_else(|e| Err(format!("checking the resolution failed: {e}")))
}

impl Engine {
    /// After a merge: hands the first conflicting branch in merge order
    /// that the resolver has not given up on to it. True when a run was
    /// queued (or is under way): the task waits for it.
    pub(crate) async fn start_resolving(
        &self,
        task_id: &str,
        merged: &MergeResponse,
    ) -> Result<bool> {
        let task = self.task(task_id).await?;
        let Some(spec) = task.resolve.as_ref() else {
            return Ok(false);
        };
        if task.resolver.is_none() || final_verdict(&task).0 == TaskStatus::Failed {
            return Ok(false);
        }
        let mut resolutions = self.store.resolutions(task_id).await?;
        for (i, o) in merged.outcomes.iter().enumerate() {
            if o.merged {
                continue;
            }
            let entry = match resolutions.iter().position(|r| r.subtask == o.subtask) {
                Some(k) if resolutions[k].status == "refused" => continue,
                Some(k) if resolutions[k].status == "running" => {
                    self.wake.notify_one();
                    return Ok(true);
                }
                // Made on a result that has changed since: again, on this one.
                Some(k) => k,
                None => {
                    resolutions.push(ResolutionJson {
                        subtask: o.subtask.clone(),
                        ..Default::default()
                    });
                    resolutions.len() - 1
                }
            };
            let Some(theirs) = task.subtasks.iter().find(|s| s.name == o.subtask) else {
                continue;
            };
            let ours: Vec<&Subtask> = merged.outcomes[..i]
                .iter()
                .filter(|p| p.merged)
                .filter_map(|p| task.subtasks.iter().find(|s| s.name == p.subtask))
                .collect();
            let prompt = resolver_prompt(&task, theirs, &ours, &o.conflict_files).await;
            let r = &mut resolutions[entry];
            r.status = "running".into();
            r.files = o.conflict_files.clone();
            r.theirs = theirs.commit.clone();
            r.onto = o.head.clone();
            r.commit.clear();
            r.error.clear();
            r.attempts = 0;
            r.agent = spec
                .agent
                .as_ref()
                .map(|a| a.kind.clone())
                .unwrap_or_default();
            tracing::info!(task_id, subtask = %o.subtask, files = ?o.conflict_files, "handing a conflict to the resolver");
            if !self
                .store
                .record_resolutions(task_id, &resolutions, true, Some(&prompt))
                .await?
            {
                return Ok(false);
            }
            self.wake.notify_one();
            return Ok(true);
        }
        Ok(false)
    }

    /// A resolver's run ended: the conflict is resolved, tried again, or
    /// given up on; then the merge goes on. False when the report was
    /// stale.
    pub(crate) async fn resolution_ended(
        self: &Arc<Self>,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        result: RunResult,
    ) -> Result<bool> {
        let passed = result.success;
        let outcome = SubtaskOutcome::of_run(&result, "the resolver failed");
        if !self
            .end_run(task_id, RESOLVER, worker_id, attempt, &outcome)
            .await?
        {
            return Ok(false);
        }
        let task = self.task(task_id).await?;
        let max = task
            .resolve
            .as_ref()
            .map(|s| s.max_attempts)
            .unwrap_or(DEFAULT_ATTEMPTS);
        let mut resolutions = self.store.resolutions(task_id).await?;
        let Some(r) = resolutions.iter_mut().find(|r| r.status == "running") else {
            return Ok(true);
        };
        r.attempts += 1;
        if passed {
            r.status = "resolved".into();
            r.commit = result.commit.clone();
            r.error.clear();
        } else {
            r.error = outcome.error.clone();
            if r.attempts < max {
                tracing::warn!(task_id, subtask = %r.subtask, attempt = r.attempts, error = %r.error, "the resolver's run was refused; trying again");
                self.store
                    .record_resolutions(task_id, &resolutions, true, None)
                    .await?;
                self.wake.notify_one();
                return Ok(true);
            }
            r.status = "refused".into();
        }
        let r = r.clone();
        if !self
            .store
            .record_resolutions(task_id, &resolutions, false, None)
            .await?
        {
            return Ok(true);
        }
        tracing::info!(task_id, subtask = %r.subtask, resolved = passed, attempts = r.attempts, "resolver finished");
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::CONFLICT_RESOLVED,
                task_id: Some(task_id.to_owned()),
                subtask: Some(r.subtask.clone()),
                worker_id: Some(worker_id.to_owned()),
                data: json!({
                    "resolved": passed,
                    "files": r.files,
                    "commit": (!r.commit.is_empty()).then_some(&r.commit),
                    "onto": r.onto,
                    "agent": r.agent,
                    "attempts": r.attempts,
                    "error": (!r.error.is_empty()).then_some(&r.error),
                }),
            })
            .await?;
        self.merge_and_finish(task_id).await?;
        Ok(true)
    }
}

/// What the resolver is told: the conflicting files, then each side's
/// prompt, summary and diff of those files.
async fn resolver_prompt(
    task: &Task,
    theirs: &Subtask,
    ours: &[&Subtask],
    files: &[String],
) -> String {
    let mut out = format!(
        "Resolve a merge conflict. This working tree holds the result of the task so far, with the merge of subtask \"{}\" in progress: the files below hold conflict markers (<<<<<<<, =======, >>>>>>>). Edit them so that the intent of both sides is kept, and remove every marker. Leave your changes in the working tree: AIDA stages them and commits the merge, with both parents.\n\nConflicting files:\n",
        theirs.name
    );
    for f in files {
        out.push_str(&format!("- {f}\n"));
    }
    out.push_str(&format!("\nThe task: {}\n", task.description.trim()));
    let mut sides: Vec<(&str, &Subtask)> = vec![("being merged (theirs)", theirs)];
    // On our side, what touched the conflicting files.
    sides.extend(
        ours.iter()
            .filter(|s| {
                s.stats
                    .as_ref()
                    .is_none_or(|st| st.files.iter().any(|f| files.contains(f)))
            })
            .map(|s| ("already in the result (ours)", *s)),
    );
    for (side, s) in sides {
        out.push_str(&format!(
            "\n## Subtask \"{}\", {side}\n\nPrompt:\n{}\n",
            s.name,
            s.prompt.trim()
        ));
        let summary = s.summary.trim();
        if !summary.is_empty() {
            out.push_str(&format!("\nSummary:\n{summary}\n"));
        }
        let diff = diff_of(&task.repo, &s.start_commit, &s.commit, files).await;
        if !diff.is_empty() {
            out.push_str(&format!(
                "\nIts diff of the conflicting files:\n```diff\n{diff}```\n"
            ));
        }
    }
    out
}

/// The patch from `from` to `to` limited to `files` (all when empty), cut
/// at `DIFF_CHARS`.
pub(crate) async fn diff_of(repo: &str, from: &str, to: &str, files: &[String]) -> String {
    let (repo, from, to, files) = (
        repo.to_owned(),
        from.to_owned(),
        to.to_owned(),
        files.to_vec(),
    );
    tokio::task::spawn_blocking(move || -> std::result::Result<String, git2::Error> {
        let repo = Repository::open(&repo)?;
        let tree = |id: &str| -> std::result::Result<git2::Tree<'_>, git2::Error> {
            repo.find_commit(Oid::from_str(id)?)?.tree()
        };
        let (old, new) = (tree(&from)?, tree(&to)?);
        let mut opts = git2::DiffOptions::new();
        for f in &files {
            opts.pathspec(f);
        }
        opts.disable_pathspec_match(true);
        let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut opts))?;
        let mut text = String::new();
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            if text.len() >= DIFF_CHARS {
                return false;
            }
            if matches!(line.origin(), '+' | '-' | ' ') {
                text.push(line.origin());
            }
            text.push_str(&String::from_utf8_lossy(line.content()));
            true
        })
        .or_else(|e| {
            if text.len() >= DIFF_CHARS {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        Ok(text)
    })
    .await
    .ok()
    .and_then(|r| r.ok())
    .unwrap_or_default()
}
