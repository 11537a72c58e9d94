//! Merging subtask commits into a task's result branch, in memory: the
//! merges happen in the object database (no working tree, no index file),
//! and the only ref written is the result branch, once, at the end, so a
//! crash leaves either the old branch or the complete new one.
//!
//! Merges are deterministic: the same inputs give the same merge commits
//! (their time is the merged item's), so a rebuilt result has the same
//! history, and a resolver's merge commit made on a prefix of it still
//! sits on that prefix. Trial merges (`trial_merge`) write nothing.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
///
/// Most pairs of subtasks change different files, and on a big repository
/// a whole merge costs a walk of every path of three trees. So the paths
/// each side changed since their merge base are compared first (tree diffs
/// skip unchanged folders): disjoint sides merge cleanly; a path both
/// sides modified is merged as a file; anything else (a deletion, a rename,
/// a file against a folder, several merge bases) takes the whole merge.
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
    let mut changes = ChangeCache::default();
    let mut found = Vec::new();
    for (i, other) in others.iter().enumerate() {
        SubtaskName::parse(&other.subtask)?;
        let theirs = repo::commit(&repo, &format!("others[{i}].commit"), &other.commit)?;
        if contains(&repo, ours.id(), theirs.id())? || contains(&repo, theirs.id(), ours.id())? {
            continue;
        }
        let files = match quick_conflicts(&repo, &mut changes, &ours, &theirs)? {
            Some(files) => files,
            None => {
                let index = repo.merge_commits(&ours, &theirs, None)?;
                if index.has_conflicts() {
                    conflict_files(&index)?
                } else {
                    Vec::new()
                }
            }
        };
        if !files.is_empty() {
            found.push(Conflict {
                subtask: other.subtask.clone(),
                files,
            });
        }
    }
    Ok(found)
}

/// One side's change of a path: its entry (blob id and mode) before and
/// after; `None` where the path does not exist.
type Change = (Option<(Oid, u32)>, Option<(Oid, u32)>);

/// The files a side changed, by path.
type Paths = BTreeMap<String, Change>;

/// What each commit changed since a merge base, computed once per pair.
#[derive(Default)]
struct ChangeCache(HashMap<(Oid, Oid), Paths>);

impl ChangeCache {
    fn get(
        &mut self,
        repo: &Repository,
        base: &Commit<'_>,
        commit: &Commit<'_>,
    ) -> Result<&Paths, git2::Error> {
        match self.0.entry((base.id(), commit.id())) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let mut changed = Paths::new();
                changed_paths(
                    repo,
                    Some(&base.tree()?),
                    Some(&commit.tree()?),
                    "",
                    &mut changed,
                )?;
                Ok(e.insert(changed))
            }
        }
    }
}

/// Adds to `out` every file that differs between `old` and `new` (either
/// may be absent), below `prefix`. Folders whose tree ids are equal are
/// skipped without being read: on a big repository this touches only the
/// folders a change went through (libgit2's tree diff reads every folder).
fn changed_paths(
    repo: &Repository,
    old: Option<&git2::Tree<'_>>,
    new: Option<&git2::Tree<'_>>,
    prefix: &str,
    out: &mut Paths,
) -> Result<(), git2::Error> {
    let entries = |t: Option<&git2::Tree<'_>>| {
        t.map(|t| {
            t.iter()
                .map(|e| {
                    let name = String::from_utf8_lossy(e.name_bytes()).into_owned();
                    (
                        name,
                        (
                            e.id(),
                            e.filemode() as u32,
                            e.kind() == Some(git2::ObjectType::Tree),
                        ),
                    )
                })
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default()
    };
    let (before, after) = (entries(old), entries(new));
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for name in names {
        let (b, a) = (before.get(name), after.get(name));
        if b == a {
            continue;
        }
        let path = format!("{prefix}{name}");
        let tree = |e: Option<&(Oid, u32, bool)>| -> Result<Option<git2::Tree<'_>>, git2::Error> {
            match e {
                Some((id, _, true)) => Ok(Some(repo.find_tree(*id)?)),
                _ => Ok(None),
            }
        };
        let blob = |e: Option<&(Oid, u32, bool)>| e.filter(|e| !e.2).map(|e| (e.0, e.1));
        let (bt, at) = (tree(b)?, tree(a)?);
        if bt.is_some() || at.is_some() {
            changed_paths(repo, bt.as_ref(), at.as_ref(), &format!("{path}/"), out)?;
        }
        if blob(b).is_some() || blob(a).is_some() {
            out.insert(path, (blob(b), blob(a)));
        }
    }
    Ok(())
}

/// The files in conflict when `ours` and `theirs` merge, found from the
/// paths each changed; `None` when only the whole merge can tell.
fn quick_conflicts(
    repo: &Repository,
    changes: &mut ChangeCache,
    ours: &Commit<'_>,
    theirs: &Commit<'_>,
) -> Result<Option<Vec<String>>, git2::Error> {
    let bases = repo.merge_bases(ours.id(), theirs.id())?;
    let [base] = bases.iter().copied().collect::<Vec<_>>()[..] else {
        return Ok(None);
    };
    let base = repo.find_commit(base)?;
    let mine = changes.get(repo, &base, ours)?.clone();
    let other = changes.get(repo, &base, theirs)?;
    // A file on one side where the other has a folder.
    let under = |a: &Paths, b: &Paths| {
        a.keys().any(|p| {
            let dir = format!("{p}/");
            b.range(dir.clone()..)
                .next()
                .is_some_and(|(q, _)| q.starts_with(&dir))
        })
    };
    if under(&mine, other) || under(other, &mine) {
        return Ok(None);
    }
    let mut files = Vec::new();
    for (path, (base_entry, my_entry)) in &mine {
        let Some((_, their_entry)) = other.get(path) else {
            continue;
        };
        if my_entry == their_entry {
            continue;
        }
        // Both sides modified the file: merge it as a file.
        let (Some(ancestor), Some(mine_now), Some(theirs_now)) =
            (base_entry, my_entry, their_entry)
        else {
            return Ok(None);
        };
        let file = |(id, mode): (Oid, u32)| index_entry(path, id, mode);
        let merged = repo.merge_file_from_index(
            &file(*ancestor),
            &file(*mine_now),
            &file(*theirs_now),
            None,
        )?;
        if !merged.is_automergeable() {
            files.push(path.clone());
        }
    }
    Ok(Some(files))
}

fn index_entry(path: &str, id: Oid, mode: u32) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
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
