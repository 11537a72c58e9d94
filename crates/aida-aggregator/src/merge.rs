//! Merging subtask commits into a task's result branch, in memory: the
//! merges happen in the object database (no working tree, no index file),
//! and the only ref written is the result branch, once, at the end, so a
//! crash leaves either the old branch or the complete new one.

use std::collections::BTreeSet;
use std::path::Path;

use aida_core::ids::{SubtaskName, TaskId};
use aida_proto::aggregator::{MergeItem, MergeOutcome, MergeResponse};
use git2::{Commit, Oid, Repository, Signature};
use tracing::instrument;

use crate::error::AggregatorError;
use crate::repo;

/// Who the merge commits are made by.
pub const COMMITTER_NAME: &str = "AIDA aggregator";
pub const COMMITTER_EMAIL: &str = "aggregator@aida.local";

/// Creates or force-resets the task's result branch to `base_commit`, then
/// merges each item's commit into it in the given (dependency) order. An
/// item whose merge conflicts is left out and reported with its files; the
/// items merged cleanly stay merged. Holds the repository's merge lock for
/// the whole computation.
#[instrument(skip_all, fields(task_id = %task_id, repo = %repo_path.display(), items = items.len()))]
pub fn merge_task(
    repo_path: &Path,
    task_id: &TaskId,
    base_commit: &str,
    items: &[MergeItem],
) -> Result<MergeResponse, AggregatorError> {
    let repo = repo::open(repo_path)?;
    let base = repo::commit(&repo, "base_commit", base_commit)?;
    // Validate every item before touching anything, so a bad request fails
    // as a whole rather than halfway.
    let mut resolved = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = SubtaskName::parse(&item.subtask)?;
        let commit = repo::commit(&repo, &format!("items[{i}].commit"), &item.commit)?;
        resolved.push((name, commit));
    }

    let lock = repo::merge_lock(&repo);
    let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());

    let branch = task_id.result_branch();
    let refname = format!("refs/heads/{branch}");
    if branch_checked_out(&repo, &refname)? {
        return Err(AggregatorError::FailedPrecondition(format!(
            "branch {branch} is checked out in a working tree; the aggregator only moves branches nobody has checked out"
        )));
    }

    let signature = Signature::now(COMMITTER_NAME, COMMITTER_EMAIL)?;
    let mut head = base;
    let mut outcomes = Vec::with_capacity(resolved.len());
    for (name, commit) in resolved {
        let (next, outcome) = merge_one(&repo, &signature, head, &name, commit)?;
        tracing::info!(
            subtask = %name,
            merged = outcome.merged,
            conflict_files = outcome.conflict_files.len(),
            "subtask merge outcome"
        );
        head = next;
        outcomes.push(MergeOutcome {
            head: head.id().to_string(),
            ..outcome
        });
    }

    let head_id = head.id();
    repo.reference(&refname, head_id, true, "aida: merge subtask results")
        .map_err(|e| ref_write_error(&repo, &branch, e))?;
    tracing::info!(branch = %branch, commit = %head_id, "result branch updated");
    Ok(MergeResponse {
        branch,
        commit: head_id.to_string(),
        outcomes,
    })
}

/// Merges `item` into `head`; returns the new head and the outcome.
fn merge_one<'r>(
    repo: &'r Repository,
    signature: &Signature<'_>,
    head: Commit<'r>,
    name: &SubtaskName,
    item: Commit<'r>,
) -> Result<(Commit<'r>, MergeOutcome), AggregatorError> {
    let merged = |conflict_files: Vec<String>| MergeOutcome {
        subtask: name.to_string(),
        merged: conflict_files.is_empty(),
        conflict_files,
        head: String::new(),
    };
    if contains(repo, head.id(), item.id())? {
        return Ok((head, merged(Vec::new())));
    }
    if contains(repo, item.id(), head.id())? {
        return Ok((item, merged(Vec::new())));
    }
    let mut index = repo.merge_commits(&head, &item, None)?;
    if index.has_conflicts() {
        let mut files = BTreeSet::new();
        for conflict in index.conflicts()? {
            let conflict = conflict?;
            for entry in [conflict.ancestor, conflict.our, conflict.their]
                .into_iter()
                .flatten()
            {
                files.insert(String::from_utf8_lossy(&entry.path).into_owned());
            }
        }
        return Ok((head, merged(files.into_iter().collect())));
    }
    let tree = repo.find_tree(index.write_tree_to(repo)?)?;
    let message = format!("aida: merge {name}");
    let id = repo.commit(None, signature, signature, &message, &tree, &[&head, &item])?;
    Ok((repo.find_commit(id)?, merged(Vec::new())))
}

/// Whether `commit` is `ancestor` or one of its descendants.
fn contains(repo: &Repository, commit: Oid, ancestor: Oid) -> Result<bool, git2::Error> {
    Ok(commit == ancestor || repo.graph_descendant_of(commit, ancestor)?)
}

/// Whether the main working tree or a linked worktree has `refname` checked
/// out: resetting it would leave that working tree out of step.
fn branch_checked_out(repo: &Repository, refname: &str) -> Result<bool, AggregatorError> {
    let head_is = |r: &Repository| {
        r.find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().map(|t| t == refname))
            .unwrap_or(false)
    };
    if head_is(repo) {
        return Ok(true);
    }
    for name in repo.worktrees()?.iter().flatten() {
        let Ok(worktree) = repo.find_worktree(name) else {
            continue;
        };
        // A worktree whose folder is gone cannot be opened; it has nothing
        // checked out that could fall out of step.
        if let Ok(wt_repo) = Repository::open_from_worktree(&worktree)
            && head_is(&wt_repo)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Explains the one ref failure a caller can fix: git cannot have both a
/// branch `a/b` and branches below `a/b/`.
fn ref_write_error(repo: &Repository, branch: &str, err: git2::Error) -> AggregatorError {
    let below = repo
        .references_glob(&format!("refs/heads/{branch}/*"))
        .ok()
        .and_then(|mut refs| refs.next())
        .and_then(|r| r.ok())
        .and_then(|r| r.name().map(str::to_owned));
    match below {
        Some(existing) => AggregatorError::FailedPrecondition(format!(
            "cannot create branch {branch}: ref {existing} exists, and git cannot keep a branch and branches below it"
        )),
        None => AggregatorError::Git(err),
    }
}
