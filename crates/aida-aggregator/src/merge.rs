//! Merging subtask commits into a task's result branch, in memory: the
//! merges happen in the object database (no working tree, no index file),
//! and the only ref written is the result branch, once, at the end, so a
//! crash leaves either the old branch or the complete new one.
//!
//! Merges are deterministic: the same inputs give the same merge commits
//! (their time is the merged item's), so a rebuilt result has the same
//! history, and a resolver's merge commit made on a prefix of it still
//! sits on that prefix. Trial merges (`trial_merge`) write nothing.

use std::collections::BTreeSet;
use std::path::Path;

use aida_core::ids::{SubtaskName, TaskId};
use aida_proto::aggregator::{MergeItem, MergeOutcome, MergeResponse};
use aida_proto::common::Conflict;
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
        let resolution = if item.resolution.is_empty() {
            None
        } else {
            let field = format!("items[{i}].resolution");
            let r = repo::commit(&repo, &field, &item.resolution)?;
            if r.parent_count() != 2 || r.parent_id(1)? != commit.id() {
                return Err(AggregatorError::InvalidArgument(format!(
                    "{field} is not a merge of items[{i}].commit into the result"
                )));
            }
            Some(r)
        };
        resolved.push((name, commit, resolution));
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

    let mut head = base;
    let mut outcomes = Vec::with_capacity(resolved.len());
    for (name, commit, resolution) in resolved {
        let (next, outcome) = merge_one(&repo, head, &name, commit, resolution)?;
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

/// Merges `item` into `head`; returns the new head and the outcome. On a
/// conflict, a `resolution` made on `head` (it contains it) is taken
/// instead; one made on another result is stale and changes nothing.
fn merge_one<'r>(
    repo: &'r Repository,
    head: Commit<'r>,
    name: &SubtaskName,
    item: Commit<'r>,
    resolution: Option<Commit<'r>>,
) -> Result<(Commit<'r>, MergeOutcome), AggregatorError> {
    let merged = |conflict_files: Vec<String>| MergeOutcome {
        subtask: name.to_string(),
        merged: conflict_files.is_empty(),
        conflict_files,
        ..Default::default()
    };
    if contains(repo, head.id(), item.id())? {
        return Ok((head, merged(Vec::new())));
    }
    if contains(repo, item.id(), head.id())? {
        return Ok((item, merged(Vec::new())));
    }
    let mut index = repo.merge_commits(&head, &item, None)?;
    if !index.has_conflicts() {
        let tree = repo.find_tree(index.write_tree_to(repo)?)?;
        // The merged item's time: the same merge gives the same commit.
        let when = item.committer().when();
        let signature = Signature::new(COMMITTER_NAME, COMMITTER_EMAIL, &when)?;
        let message = format!("aida: merge {name}");
        let id = repo.commit(
            None,
            &signature,
            &signature,
            &message,
            &tree,
            &[&head, &item],
        )?;
        return Ok((repo.find_commit(id)?, merged(Vec::new())));
    }
    let files = conflict_files(&index)?;
    if let Some(resolution) = resolution
        && contains(repo, resolution.id(), head.id())?
    {
        let outcome = MergeOutcome {
            resolved: true,
            ..merged(Vec::new())
        };
        return Ok((resolution, outcome));
    }
    Ok((head, merged(files)))
}

/// The files a merge's index holds in conflict, sorted.
fn conflict_files(index: &git2::Index) -> Result<Vec<String>, git2::Error> {
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
    Ok(files.into_iter().collect())
}

/// Trial-merges `subject` with each of `others` in memory, writing nothing:
/// the others it conflicts with, and the files. Branches where one contains
/// the other never conflict.
#[instrument(skip_all, fields(task_id = %task_id, subject = %subject.subtask, others = others.len()))]
pub fn trial_merge(
    repo_path: &Path,
    task_id: &TaskId,
    subject: &MergeItem,
    others: &[MergeItem],
) -> Result<Vec<Conflict>, AggregatorError> {
    let repo = repo::open(repo_path)?;
    // Merged blobs land in memory and go with `repo`: the repository is
    // left exactly as it was.
    repo.odb()?.add_new_mempack_backend(1000)?;
    SubtaskName::parse(&subject.subtask)?;
    let ours = repo::commit(&repo, "subject.commit", &subject.commit)?;
    let mut found = Vec::new();
    for (i, other) in others.iter().enumerate() {
        SubtaskName::parse(&other.subtask)?;
        let theirs = repo::commit(&repo, &format!("others[{i}].commit"), &other.commit)?;
        if contains(&repo, ours.id(), theirs.id())? || contains(&repo, theirs.id(), ours.id())? {
            continue;
        }
        let index = repo.merge_commits(&ours, &theirs, None)?;
        if index.has_conflicts() {
            found.push(Conflict {
                subtask: other.subtask.clone(),
                files: conflict_files(&index)?,
            });
        }
    }
    Ok(found)
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
