//! The git side of a run: computes the start commit (base plus dependency
//! commits), points the subtask's branch at it, adds a worktree on that
//! branch, commits what the agent left and removes the worktree again. A
//! follow-up run instead continues the branch where the subtask's last run
//! left it, after checking that nothing else moved it.
//!
//! It touches the subtask's branch, the objects database and the
//! repository's worktree metadata; never the base branch, the main working
//! tree or its index. Everything here is blocking: callers run it on
//! `spawn_blocking`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aida_core::sparse::SparsePaths;
use aida_proto::common::SubtaskRun;
use git2::{
    Commit, ErrorCode, IndexAddOption, Oid, Repository, Signature, Status, StatusOptions,
    WorktreeAddOptions, WorktreePruneOptions,
};
use nix::fcntl::{Flock, FlockArg};

use crate::pool::{self, Slot, Taken};

/// Metadata of another worktree is only pruned once it is this old, so a
/// worktree that a concurrent worker is creating right now is left alone.
const STALE_METADATA_AGE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    #[error("cannot open repository {repo}: {source}")]
    OpenRepo { repo: String, source: git2::Error },
    #[error("cannot resolve {what} {rev:?} to a commit: {source}")]
    Resolve {
        what: String,
        rev: String,
        source: git2::Error,
    },
    #[error("dependency {dependency} conflicts with the work it is merged onto in: {}", files.join(", "))]
    DependencyConflict {
        dependency: String,
        files: Vec<String>,
    },
    #[error("branch {0:?} is not a valid branch name")]
    InvalidBranch(String),
    #[error("branch {0} is checked out in the main working tree; it cannot be reset")]
    BranchIsHead(String),
    #[error("branch {0} is checked out in the main working tree; a follow-up cannot work on it")]
    FollowUpOnHead(String),
    #[error("branch {0} does not exist: a follow-up continues the subtask's earlier work")]
    FollowUpNoBranch(String),
    #[error("branch {branch} moved: its tip is {tip}, the follow-up expected {expected}")]
    BranchMoved {
        branch: String,
        tip: Oid,
        expected: String,
    },
    #[error("{what}: {source}")]
    Git { what: String, source: git2::Error },
    #[error("{what}: {detail}")]
    GitCli { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Held while a worktree is added or removed. libgit2 reads every worktree's
/// metadata when adding one and mistakes a half-written entry of another
/// worker's worktree for "branch already checked out"; workers sharing a
/// repository therefore take turns through this file lock, across processes.
fn lock_metadata(repo: &Repository) -> Result<Flock<std::fs::File>, WorktreeError> {
    let path = repo.commondir().join("aida-worktrees.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io(format!("locking {}", path.display()))(errno.into()))
}

impl WorktreeError {
    /// Trying again cannot help: the follow-up's branch is gone or moved.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            WorktreeError::FollowUpNoBranch(_) | WorktreeError::BranchMoved { .. }
        )
    }
}

pub(crate) fn git(what: impl Into<String>) -> impl FnOnce(git2::Error) -> WorktreeError {
    let what = what.into();
    move |source| WorktreeError::Git { what, source }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorktreeError {
    let what = what.into();
    move |source| WorktreeError::Io { what, source }
}

/// Runs a git operation again when another process holds a lock it needs:
/// workers on one host share the repository's refs and worktree metadata.
pub(crate) fn retry_locked<T>(
    mut op: impl FnMut() -> Result<T, git2::Error>,
) -> Result<T, git2::Error> {
    let mut delay = Duration::from_millis(20);
    for _ in 0..6 {
        match op() {
            Err(e) if e.code() == ErrorCode::Locked => {
                tracing::debug!(error = %e, "git lock busy, retrying");
                std::thread::sleep(delay);
                delay *= 2;
            }
            other => return other,
        }
    }
    op()
}

/// Who commits: the worker, with a fixed address so commits are easy to spot.
fn signature(worker_id: &str) -> Result<Signature<'static>, WorktreeError> {
    Signature::now(&format!("AIDA worker {worker_id}"), "worker@aida.local")
        .map_err(git("building the commit signature"))
}

/// A worktree ready for the agent.
#[derive(Debug, Clone)]
pub struct PreparedWorktree {
    /// The repository the worktree belongs to.
    pub repo: PathBuf,
    /// Name of the worktree's metadata under `.git/worktrees/`.
    pub name: String,
    pub path: PathBuf,
    /// The subtask's branch (without `refs/heads/`), checked out here.
    pub branch: String,
    /// Base commit plus merged dependencies (a follow-up: the branch's
    /// tip): what the agent starts from.
    pub start_commit: Oid,
    /// The pool slot this worktree is, when the worker reuses worktrees.
    pub slot: Option<Slot>,
    /// Whether an earlier run's worktree was reset for this one rather
    /// than a new one added.
    pub reused: bool,
    /// A sparse checkout of the run's declared directories (see
    /// [`crate::sparse`]): what it left out is kept, not deleted.
    pub sparse: bool,
}

/// The worktree's metadata name, unique per task, subtask and attempt so
/// that retries never collide with a leftover of an earlier attempt.
pub fn worktree_name(run: &SubtaskRun) -> String {
    format!("{}-{}-{}", run.task_id, run.subtask, run.attempt)
}

/// Computes the start commit, resets `branch` to it and adds a worktree for
/// it under `root`; with `pool`, the worker's slot for the repository is
/// reset instead when it has one (see [`crate::pool`]). With `paths`, the
/// worktree is a sparse checkout of those directories instead, never
/// pooled (see [`crate::sparse`]). A follow-up (`run.continue_from` set) instead checks
/// that `branch` exists with its tip at `continue_from` (or on top of it:
/// an earlier attempt's partial work, which is reset away) and adds the
/// worktree there: no dependency merge.
pub fn prepare(
    run: &SubtaskRun,
    branch: &str,
    root: &Path,
    worker_id: &str,
    pool: bool,
    paths: &SparsePaths,
) -> Result<PreparedWorktree, WorktreeError> {
    let repo = Repository::open(&run.repo).map_err(|source| WorktreeError::OpenRepo {
        repo: run.repo.clone(),
        source,
    })?;
    let refname = format!("refs/heads/{branch}");
    if !git2::Reference::is_valid_name(&refname) {
        return Err(WorktreeError::InvalidBranch(branch.to_owned()));
    }
    let follow_up = !run.continue_from.is_empty();
    let start = if follow_up {
        resolve(&repo, "continue_from", &run.continue_from)?
    } else {
        start_commit(&repo, run, worker_id)?
    };

    let name = worktree_name(run);
    let path = root.join(&name);
    std::fs::create_dir_all(root)
        .map_err(io(format!("creating worktree root {}", root.display())))?;
    // libgit2 creates `.git/worktrees` exclusively; two workers adding their
    // first worktree at once would race on it.
    std::fs::create_dir_all(repo.commondir().join("worktrees"))
        .map_err(io("creating the repository's worktrees directory"))?;
    let _lock = lock_metadata(&repo)?;
    clear_leftovers(&repo, &name, &path, &refname)?;

    let is_head = repo
        .head()
        .ok()
        .and_then(|h| h.name().map(str::to_owned))
        .is_some_and(|h| h == refname);
    if is_head && follow_up {
        return Err(WorktreeError::FollowUpOnHead(branch.to_owned()));
    }
    if is_head {
        return Err(WorktreeError::BranchIsHead(branch.to_owned()));
    }
    let reference = if follow_up {
        // Read under the metadata lock, after the leftovers are gone: the
        // branch is checked out nowhere else now.
        let reference = match repo.find_reference(&refname) {
            Ok(reference) => reference,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(WorktreeError::FollowUpNoBranch(branch.to_owned()));
            }
            Err(e) => return Err(git(format!("reading branch {branch}"))(e)),
        };
        let tip = reference
            .peel_to_commit()
            .map_err(git(format!("reading branch {branch}")))?
            .id();
        if tip == start {
            reference
        } else if repo.graph_descendant_of(tip, start).unwrap_or(false) {
            // An earlier attempt of this follow-up left partial work on top
            // of where it starts: a retry starts over, as any retry does.
            drop(reference);
            start_branch(&repo, &refname, start, run).map_err(git(format!(
                "resetting branch {branch} to the follow-up's start"
            )))?
        } else {
            return Err(WorktreeError::BranchMoved {
                branch: branch.to_owned(),
                tip,
                expected: run.continue_from.clone(),
            });
        }
    } else {
        start_branch(&repo, &refname, start, run)
            .map_err(git(format!("pointing branch {branch} at the start commit")))?
    };

    let sparse = !paths.is_empty();
    if sparse {
        crate::sparse::add_worktree(&repo, &path, branch, paths)?;
    } else if pool {
        let slot = Slot::of(root, &repo);
        let taken = pool::take(&repo, &slot, &reference, start)?;
        return Ok(PreparedWorktree {
            repo: PathBuf::from(&run.repo),
            name: slot.name.clone(),
            path: slot.path.clone(),
            branch: branch.to_owned(),
            start_commit: start,
            reused: taken == Taken::Reset,
            slot: Some(slot),
            sparse,
        });
    } else {
        let mut opts = WorktreeAddOptions::new();
        // Locked for as long as the run lasts, so neither another worker's
        // stale-metadata sweep nor a user's `git worktree prune` removes it.
        opts.lock(true).reference(Some(&reference));
        retry_locked(|| repo.worktree(&name, &path, Some(&opts)))
            .map_err(git(format!("adding worktree {}", path.display())))?;
    }
    Ok(PreparedWorktree {
        repo: PathBuf::from(&run.repo),
        name,
        path,
        branch: branch.to_owned(),
        start_commit: start,
        slot: None,
        reused: false,
        sparse,
    })
}

/// Points the branch at the start commit, creating it or resetting it.
fn start_branch<'r>(
    repo: &'r Repository,
    refname: &str,
    start: Oid,
    run: &SubtaskRun,
) -> Result<git2::Reference<'r>, git2::Error> {
    retry_locked(|| {
        repo.reference(
            refname,
            start,
            true,
            &format!("aida: start {} attempt {}", run.subtask, run.attempt),
        )
    })
}

/// The base commit with every dependency commit merged in, in order.
/// Dependencies count by commit id only; their `branch` is never read.
fn start_commit(
    repo: &Repository,
    run: &SubtaskRun,
    worker_id: &str,
) -> Result<Oid, WorktreeError> {
    let mut start = resolve(repo, "base commit", &run.base_commit)?;
    for dep in &run.dependencies {
        let dep_commit = resolve(repo, &format!("dependency {}", dep.subtask), &dep.commit)?;
        if dep_commit == start
            || repo
                .graph_descendant_of(start, dep_commit)
                .map_err(git("comparing commits"))?
        {
            continue; // already contained
        }
        if repo
            .graph_descendant_of(dep_commit, start)
            .map_err(git("comparing commits"))?
        {
            start = dep_commit; // fast-forward
            continue;
        }
        start = merge(repo, start, dep_commit, &dep.subtask, worker_id)?;
    }
    Ok(start)
}

/// The commit a full object id names. Never a revision expression: a name
/// (`main`, `HEAD@{1}`, `:/text`) is not accepted from a caller.
fn resolve(repo: &Repository, what: &str, id: &str) -> Result<Oid, WorktreeError> {
    let resolve_err = |source| WorktreeError::Resolve {
        what: what.to_owned(),
        rev: id.to_owned(),
        source,
    };
    let full = matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !full {
        return Err(resolve_err(git2::Error::from_str("not a full commit id")));
    }
    Oid::from_str(id)
        .and_then(|oid| repo.find_object(oid, None))
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(resolve_err)
}

/// Merges `theirs` into `ours` in memory and records a merge commit that no
/// ref points to yet.
fn merge(
    repo: &Repository,
    ours: Oid,
    theirs: Oid,
    dependency: &str,
    worker_id: &str,
) -> Result<Oid, WorktreeError> {
    let ours_c = repo.find_commit(ours).map_err(git("reading a commit"))?;
    let theirs_c = repo.find_commit(theirs).map_err(git("reading a commit"))?;
    let mut index = repo
        .merge_commits(&ours_c, &theirs_c, None)
        .map_err(git(format!("merging dependency {dependency}")))?;
    if index.has_conflicts() {
        let mut files: Vec<String> = index
            .conflicts()
            .map_err(git("listing conflicts"))?
            .filter_map(Result::ok)
            .filter_map(|c| c.our.or(c.their).or(c.ancestor))
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        files.sort();
        files.dedup();
        return Err(WorktreeError::DependencyConflict {
            dependency: dependency.to_owned(),
            files,
        });
    }
    let tree_id = index
        .write_tree_to(repo)
        .map_err(git("writing the merged tree"))?;
    let tree = repo.find_tree(tree_id).map_err(git("reading a tree"))?;
    let sig = signature(worker_id)?;
    repo.commit(
        None,
        &sig,
        &sig,
        &format!("aida: merge dependency {dependency}"),
        &tree,
        &[&ours_c, &theirs_c],
    )
    .map_err(git(format!(
        "committing the merge of dependency {dependency}"
    )))
}

/// Removes what an earlier run may have left: a worktree with our name,
/// worktrees that still hold our branch (an earlier attempt of this subtask
/// on a worker that died), and metadata of worktrees whose directory is gone.
fn clear_leftovers(
    repo: &Repository,
    name: &str,
    path: &Path,
    refname: &str,
) -> Result<(), WorktreeError> {
    let names = repo.worktrees().map_err(git("listing worktrees"))?;
    for other in names.iter().flatten() {
        let meta = repo.commondir().join("worktrees").join(other);
        let old = std::fs::metadata(&meta)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_METADATA_AGE);
        let Ok(wt) = repo.find_worktree(other) else {
            // Half-written metadata (a crash mid-add) blocks every later
            // add, see `lock_metadata`.
            if old {
                tracing::warn!(worktree = other, "removing broken worktree metadata");
                let _ = std::fs::remove_dir_all(&meta);
            }
            continue;
        };
        let holds_branch = std::fs::read_to_string(meta.join("HEAD"))
            .is_ok_and(|head| head.trim() == format!("ref: {refname}"));
        if other == name || holds_branch {
            tracing::warn!(worktree = other, "removing a leftover worktree");
            remove_worktree(&wt)?;
            continue;
        }
        if old && wt.validate().is_err() && wt.is_prunable(None).unwrap_or(false) {
            tracing::info!(worktree = other, "pruning stale worktree metadata");
            let _ = retry_locked(|| wt.prune(None));
        }
    }
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(io(format!(
            "removing stale worktree directory {}",
            path.display()
        )))?;
    }
    Ok(())
}

/// Deletes a worktree's directory and its metadata; the branch stays.
pub(crate) fn remove_worktree(wt: &git2::Worktree) -> Result<(), WorktreeError> {
    let dir = wt.path().to_path_buf();
    let mut opts = WorktreePruneOptions::new();
    opts.valid(true).locked(true).working_tree(true);
    retry_locked(|| wt.prune(Some(&mut opts)))
        .map_err(git(format!("removing worktree {}", dir.display())))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(io(format!("removing worktree directory {}", dir.display())))?;
    }
    Ok(())
}

/// What [`commit_changes`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Head of the branch after the run.
    pub head: Oid,
    /// Whether the worker made a commit (false when nothing was left over).
    pub created: bool,
}

/// The files in the worktree that git does not track and does not ignore,
/// relative to it: what a set-up command created, when called right after
/// it.
pub fn untracked_files(wt: &PreparedWorktree) -> Result<BTreeSet<String>, WorktreeError> {
    let repo = Repository::open(&wt.path).map_err(|source| WorktreeError::OpenRepo {
        repo: wt.path.display().to_string(),
        source,
    })?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(git("listing untracked files"))?;
    Ok(statuses
        .iter()
        .filter(|e| e.status().contains(Status::WT_NEW))
        .filter_map(|e| e.path().map(str::to_owned))
        .collect())
}

/// Stages everything in the worktree (deletions and untracked files too,
/// .gitignore respected) but the untracked files in `leave_out`, and
/// commits it on the branch if anything changed. Commits the agent made
/// itself stay; the leftovers go on top.
pub fn commit_changes(
    wt: &PreparedWorktree,
    subtask: &str,
    prompt: &str,
    worker_id: &str,
    leave_out: &BTreeSet<String>,
) -> Result<Committed, WorktreeError> {
    let repo = Repository::open(&wt.path).map_err(|source| WorktreeError::OpenRepo {
        repo: wt.path.display().to_string(),
        source,
    })?;
    let mut index = repo.index().map_err(git("opening the worktree index"))?;
    // Only files not in the index are left out: one the agent staged or
    // committed itself is its work.
    let left_out: BTreeSet<&str> = leave_out
        .iter()
        .map(String::as_str)
        .filter(|p| index.get_path(Path::new(p), 0).is_none())
        .collect();
    if wt.sparse {
        stage_sparse(&repo, &mut index, &left_out)?;
    } else {
        // Positive: skip the file.
        let mut skip = |path: &Path, _: &[u8]| -> i32 {
            i32::from(path.to_str().is_some_and(|p| left_out.contains(p)))
        };
        let callback: Option<&mut git2::IndexMatchedPath<'_>> = if left_out.is_empty() {
            None
        } else {
            Some(&mut skip)
        };
        index
            .add_all(["*"], IndexAddOption::DEFAULT, callback)
            .map_err(git("staging the agent's changes"))?;
        index
            .update_all(["*"], None)
            .map_err(git("staging the agent's deletions"))?;
    }
    retry_locked(|| index.write()).map_err(git("writing the worktree index"))?;
    let tree_id = index.write_tree().map_err(git("writing the tree"))?;

    let branch_ref = format!("refs/heads/{}", wt.branch);
    let head: Commit<'_> = repo
        .find_reference(&branch_ref)
        .and_then(|r| r.peel_to_commit())
        .map_err(git(format!("reading branch {}", wt.branch)))?;
    if head.tree_id() == tree_id {
        return Ok(Committed {
            head: head.id(),
            created: false,
        });
    }
    let tree = repo.find_tree(tree_id).map_err(git("reading a tree"))?;
    let sig = signature(worker_id)?;
    let first_line = prompt.lines().next().unwrap_or("").trim();
    let message = format!("aida: {subtask}\n\n{first_line}\n");
    let oid =
        retry_locked(|| repo.commit(Some(&branch_ref), &sig, &sig, &message, &tree, &[&head]))
            .map_err(git(format!("committing on branch {}", wt.branch)))?;
    Ok(Committed {
        head: oid,
        created: true,
    })
}

/// Stages a sparse worktree's changes as `add_all` and `update_all` would,
/// but from one status pass: the files git left out of it (skip-worktree)
/// are absent by design, not deleted, and stay as they are unless the
/// agent wrote one back. (libgit2's `add_all` treats each of them as a
/// deletion and looks up its attributes, which costs seconds on a big
/// repository.)
fn stage_sparse(
    repo: &Repository,
    index: &mut git2::Index,
    left_out: &BTreeSet<&str>,
) -> Result<(), WorktreeError> {
    let mut opts = StatusOptions::new();
    opts.show(git2::StatusShow::Workdir)
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(git("listing the agent's changes"))?;
    for entry in statuses.iter() {
        let Some(path) = entry.path() else {
            continue;
        };
        let status = entry.status();
        if status.contains(Status::CONFLICTED) {
            // As `add_all` does: what the worktree holds resolves it.
            let file = Path::new(path);
            let staged = if repo.workdir().is_some_and(|dir| dir.join(file).exists()) {
                index.add_path(file)
            } else {
                index.remove_path(file)
            };
            staged.map_err(git(format!("staging {path}")))?;
        } else if status.contains(Status::WT_DELETED) {
            let left_out_by_git = index.get_path(Path::new(path), 0).is_some_and(|e| {
                git2::IndexEntryExtendedFlag::from_bits_truncate(e.flags_extended)
                    .is_skip_worktree()
            });
            if !left_out_by_git {
                index
                    .remove_path(Path::new(path))
                    .map_err(git(format!("staging the deletion of {path}")))?;
            }
        } else if status.contains(Status::WT_NEW) && left_out.contains(path) {
            continue;
        } else if path.ends_with('/') {
            // An untracked repository inside the worktree: not the run's
            // files to record.
            tracing::warn!(path, "left out of the commit: a nested repository");
        } else if status.intersects(Status::WT_NEW | Status::WT_MODIFIED | Status::WT_TYPECHANGE) {
            index
                .add_path(Path::new(path))
                .map_err(git(format!("staging {path}")))?;
        }
    }
    Ok(())
}

/// Ends the run's use of the worktree; the branch stays. A pooled
/// worktree is handed back for the next run (or discarded when that
/// fails); any other is removed, directory and metadata.
pub fn release(wt: &PreparedWorktree) -> Result<(), WorktreeError> {
    let repo = Repository::open(&wt.repo).map_err(|source| WorktreeError::OpenRepo {
        repo: wt.repo.display().to_string(),
        source,
    })?;
    let _lock = lock_metadata(&repo)?;
    if let Some(slot) = &wt.slot {
        return match pool::release(slot) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(slot = %slot.path.display(), error = %e, "cannot hand back a pooled worktree; removing it");
                pool::discard(&repo, slot)
            }
        };
    }
    match repo.find_worktree(&wt.name) {
        Ok(found) => remove_worktree(&found),
        Err(_) if wt.path.exists() => std::fs::remove_dir_all(&wt.path).map_err(io(format!(
            "removing worktree directory {}",
            wt.path.display()
        ))),
        Err(_) => Ok(()),
    }
}

/// A read-only run's view of the repository: the files of `commit` written
/// into `dir`, with no `.git` and no branch, so nothing the agent does can
/// reach the repository. The caller removes `dir` afterwards.
pub fn snapshot(repo_path: &str, commit: &str, dir: &Path) -> Result<Oid, WorktreeError> {
    let repo = Repository::open(repo_path).map_err(|source| WorktreeError::OpenRepo {
        repo: repo_path.to_owned(),
        source,
    })?;
    let commit = resolve(&repo, "base commit", commit)?;
    let commit = repo
        .find_commit(commit)
        .map_err(git("reading the base commit"))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| WorktreeError::Io {
            what: format!("removing a stale snapshot at {}", dir.display()),
            source,
        })?;
    }
    std::fs::create_dir_all(dir).map_err(|source| WorktreeError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    // Never the repository's own index: the user's working tree is theirs.
    checkout
        .target_dir(dir)
        .force()
        .recreate_missing(true)
        .update_index(false);
    repo.checkout_tree(commit.as_object(), Some(&mut checkout))
        .map_err(|source| WorktreeError::Git {
            what: format!("writing the files of {} to {}", commit.id(), dir.display()),
            source,
        })?;
    Ok(commit.id())
}

/// Bytes the files under `root` take on disk (allocated blocks, so sparse
/// and small files count as the filesystem counts them); 0 for a missing
/// root. Symbolic links are not followed; unreadable entries are skipped.
pub fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.blocks() * 512)
        .sum()
}

/// A leftover of an earlier run that [`clean_root`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    pub path: PathBuf,
    /// The repository whose worktree it was; `None` for a plain directory
    /// (a read-only snapshot, a half-made worktree, or one whose repository
    /// is gone).
    pub repo: Option<PathBuf>,
}

/// Whether a directory name is one this worker makes under its root:
/// `<task-id>-<subtask>-<attempt>`, optionally `-read-only`. Anything else
/// under the root is left alone, so a root pointed at the wrong place never
/// loses a user's files.
pub fn is_run_dir_name(name: &str) -> bool {
    let (Some(task), Some(rest)) = (name.get(..36), name.get(36..)) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('-') else {
        return false;
    };
    let rest = rest.strip_suffix("-read-only").unwrap_or(rest);
    let Some((subtask, attempt)) = rest.rsplit_once('-') else {
        return false;
    };
    aida_core::ids::TaskId::parse(task).is_ok()
        && !subtask.is_empty()
        && !attempt.is_empty()
        && attempt.bytes().all(|b| b.is_ascii_digit())
}

/// Removes what runs of an earlier process left under `root`: a worker
/// killed mid-run leaves its worktree (locked, registered in the
/// repository) and read-only snapshots behind; a pooled worktree that was
/// not handed back goes too, an idle one stays for the next run. A git worktree is unlocked,
/// its metadata pruned from the repository and its directory deleted; the
/// subtask's branch stays. Call it before taking work, with nothing running.
///
/// A leftover that cannot be removed is logged and skipped: it must not keep
/// the worker from starting. Only an unreadable root is an error.
pub fn clean_root(root: &Path) -> Result<Vec<Cleaned>, WorktreeError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("reading worktree root {}", root.display()))(e)),
    };
    let mut cleaned = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("reading worktree root {}", root.display())))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        if !is_dir && pool::is_marker_name(name) {
            // A slot's idle marker whose slot is gone means nothing.
            if !path.with_extension("").is_dir() {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let slot = pool::Slot::at(&path);
        if slot.as_ref().is_some_and(|slot| is_dir && slot.is_idle()) {
            tracing::debug!(path = %path.display(), "an idle pooled worktree, kept for the next run");
            continue;
        }
        // A slot that is not idle was in use, or being reset, when its
        // worker died: it is never reused.
        if !is_dir || !(is_run_dir_name(name) || slot.is_some()) {
            tracing::debug!(path = %path.display(), "not a worktree of this worker, left alone");
            continue;
        }
        match clean_one(&path) {
            Ok(repo) => {
                tracing::info!(
                    path = %path.display(),
                    repo = repo.as_ref().map(|r| r.display().to_string()),
                    "removed a worktree left by an earlier run"
                );
                cleaned.push(Cleaned { path, repo });
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover worktree");
            }
        }
    }
    Ok(cleaned)
}

/// Removes one leftover directory; returns its repository if it was a git
/// worktree whose repository still exists.
fn clean_one(path: &Path) -> Result<Option<PathBuf>, WorktreeError> {
    let repo = leftover_repository(path);
    if let Some((repo, name)) = &repo {
        let _lock = lock_metadata(repo)?;
        // Only metadata that points at this very directory is ours to prune.
        let ours = repo.find_worktree(name).ok().filter(|wt| {
            match (wt.path().canonicalize(), path.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
        });
        if let Some(wt) = ours {
            // Locked while its run lasted; that run is over.
            let _ = wt.unlock();
            remove_worktree(&wt)?;
        }
    }
    if path.exists() {
        std::fs::remove_dir_all(path)
            .map_err(io(format!("removing directory {}", path.display())))?;
    }
    Ok(repo.map(|(repo, _)| {
        repo.workdir()
            .unwrap_or_else(|| repo.commondir())
            .to_path_buf()
    }))
}

/// The repository and worktree name a worktree directory belongs to, read
/// from its `.git` file (`gitdir: <repo>/.git/worktrees/<name>`); `None`
/// when it is not a worktree or its repository is gone.
fn leftover_repository(path: &Path) -> Option<(Repository, String)> {
    let dotgit = std::fs::read_to_string(path.join(".git")).ok()?;
    let gitdir = Path::new(dotgit.trim().strip_prefix("gitdir:")?.trim());
    let gitdir = if gitdir.is_absolute() {
        gitdir.to_path_buf()
    } else {
        path.join(gitdir)
    };
    let name = gitdir.file_name()?.to_str()?.to_owned();
    // `<repo>/.git/worktrees/<name>` -> `<repo>/.git`.
    let commondir = gitdir.parent()?.parent()?;
    let repo = Repository::open(commondir).ok()?;
    Some((repo, name))
}
