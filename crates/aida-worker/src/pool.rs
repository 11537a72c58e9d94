//! Worktrees kept between runs. Adding a worktree checks out every file of
//! the repository, which on a big repository costs seconds; a worker keeps
//! one worktree per repository instead (a *slot*, `<root>/aida-pool-<key>`)
//! and resets it to the next run's start commit, which touches only the
//! files that differ.
//!
//! Runs stay isolated: a reset overwrites modified files and removes every
//! untracked and ignored file, and then checks that the working tree holds
//! exactly the start commit; a slot that fails the check is thrown away
//! and added afresh. A slot is only reused when its last run handed it back
//! ([`release`]): taking it removes the slot's `idle` marker first, so a
//! worker that dies during a run or in the middle of a reset leaves a slot
//! without a marker, and that slot is discarded, never reset.
//!
//! Between runs a slot's HEAD is detached, so it holds no branch: a
//! follow-up on another worker, delivery and `gc` are free to move or
//! delete the branch. The slot stays locked in git's metadata, so neither
//! another worker's stale-metadata sweep nor `git worktree prune` removes
//! it.

use std::path::{Path, PathBuf};

use git2::{
    ObjectType, Oid, Repository, StatusOptions, WorktreeAddOptions, build::CheckoutBuilder,
};

use crate::worktree::{WorktreeError, git, io, remove_worktree, retry_locked};

/// What every slot's name starts with, in the root and in git's metadata.
const PREFIX: &str = "aida-pool-";
/// The key's length in hex digits.
const KEY_LEN: usize = 16;

/// One repository's reusable worktree under one worker's root.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The name of its metadata under `.git/worktrees/`, also its
    /// directory's name.
    pub name: String,
    pub path: PathBuf,
    /// Present only while the slot is idle and clean enough to reset.
    marker: PathBuf,
}

impl Slot {
    /// The slot of `repo` under `root`: the same for every run of this
    /// worker on this repository, different for every other root.
    pub fn of(root: &Path, repo: &Repository) -> Slot {
        let root_key = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        let repo_key = repo
            .commondir()
            .canonicalize()
            .unwrap_or_else(|_| repo.commondir().to_path_buf());
        let key = format!("{}\0{}", root_key.display(), repo_key.display());
        // A content hash, only to make a short stable name.
        let key = Oid::hash_object(ObjectType::Blob, key.as_bytes())
            .map(|oid| oid.to_string())
            .unwrap_or_default();
        let name = format!("{PREFIX}{}", &key[..KEY_LEN.min(key.len())]);
        Slot {
            path: root.join(&name),
            marker: root.join(format!("{name}.idle")),
            name,
        }
    }

    /// The slot whose directory is `path`, when its name is a slot's.
    pub fn at(path: &Path) -> Option<Slot> {
        let name = path.file_name()?.to_str()?;
        if !is_slot_name(name) {
            return None;
        }
        Some(Slot {
            name: name.to_owned(),
            path: path.to_path_buf(),
            marker: path.with_file_name(format!("{name}.idle")),
        })
    }

    /// Whether the slot's last run handed it back.
    pub fn is_idle(&self) -> bool {
        self.marker.is_file()
    }
}

/// Whether a name under the root is a slot's: `aida-pool-` and 16 hex
/// digits.
pub fn is_slot_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|key| key.len() == KEY_LEN && key.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether a file name under the root is a slot's idle marker.
pub fn is_marker_name(name: &str) -> bool {
    name.strip_suffix(".idle").is_some_and(is_slot_name)
}

/// How [`take`] got the slot ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// An idle slot reset to the start commit.
    Reset,
    /// A new worktree: there was no idle slot, or its reset failed.
    Added,
}

/// Makes the slot a worktree of `start` with `reference` checked out.
/// Called with the repository's worktree metadata lock held and the branch
/// already pointing at `start`.
pub fn take(
    repo: &Repository,
    slot: &Slot,
    reference: &git2::Reference<'_>,
    start: Oid,
) -> Result<Taken, WorktreeError> {
    let idle = slot.is_idle();
    // From here until `release` the slot is not idle: a crash anywhere in
    // between leaves it to be discarded.
    if idle {
        std::fs::remove_file(&slot.marker)
            .map_err(io(format!("taking worktree slot {}", slot.path.display())))?;
    }
    if idle
        && repo
            .find_worktree(&slot.name)
            .is_ok_and(|wt| wt.validate().is_ok())
    {
        let refname = reference.name().unwrap_or_default();
        match reset(&slot.path, start, refname) {
            Ok(()) => return Ok(Taken::Reset),
            Err(e) => {
                tracing::warn!(slot = %slot.path.display(), error = %e, "cannot reset a pooled worktree; adding it afresh");
            }
        }
    }
    discard(repo, slot)?;
    let mut opts = WorktreeAddOptions::new();
    opts.lock(true).reference(Some(reference));
    retry_locked(|| repo.worktree(&slot.name, &slot.path, Some(&opts)))
        .map_err(git(format!("adding worktree {}", slot.path.display())))?;
    Ok(Taken::Added)
}

/// Brings the slot's working tree and index to `start`, with only the files
/// that differ written, every untracked and ignored file removed, and
/// `refname` checked out; then checks that nothing else is left.
fn reset(path: &Path, start: Oid, refname: &str) -> Result<(), WorktreeError> {
    let wt = Repository::open(path).map_err(|source| WorktreeError::OpenRepo {
        repo: path.display().to_string(),
        source,
    })?;
    let commit = wt
        .find_commit(start)
        .map_err(git("reading the start commit"))?;
    // A merge, revert or cherry-pick the last run left in progress.
    wt.cleanup_state()
        .map_err(git(format!("clearing {}'s merge state", path.display())))?;
    let mut checkout = CheckoutBuilder::new();
    checkout
        .force()
        .remove_untracked(true)
        .remove_ignored(true)
        .recreate_missing(true);
    wt.checkout_tree(commit.as_object(), Some(&mut checkout))
        .map_err(git(format!("resetting {} to {start}", path.display())))?;
    retry_locked(|| wt.set_head(refname))
        .map_err(git(format!("checking out {refname} in {}", path.display())))?;
    // Nothing of the previous run may be left: not a modified file, not an
    // untracked or ignored one (git leaves nested repositories alone).
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .include_ignored(true)
        .recurse_untracked_dirs(false)
        .exclude_submodules(true);
    let statuses = wt
        .statuses(Some(&mut opts))
        .map_err(git("checking the reset worktree"))?;
    if let Some(left) = statuses.iter().next() {
        return Err(WorktreeError::Git {
            what: format!("resetting {}", path.display()),
            source: git2::Error::from_str(&format!(
                "{} is left over after the reset",
                left.path().unwrap_or("a path")
            )),
        });
    }
    Ok(())
}

/// Hands the slot back after a run: HEAD detached at the branch's tip, so
/// the slot holds no branch, and the idle marker written last.
pub fn release(slot: &Slot) -> Result<(), WorktreeError> {
    let wt = Repository::open(&slot.path).map_err(|source| WorktreeError::OpenRepo {
        repo: slot.path.display().to_string(),
        source,
    })?;
    let head = wt
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(git("reading the worktree's HEAD"))?
        .id();
    retry_locked(|| wt.set_head_detached(head))
        .map_err(git(format!("detaching HEAD in {}", slot.path.display())))?;
    std::fs::write(&slot.marker, b"idle\n").map_err(io(format!(
        "handing back worktree slot {}",
        slot.path.display()
    )))
}

/// Removes the slot entirely: its marker, git's metadata of it and its
/// directory.
pub fn discard(repo: &Repository, slot: &Slot) -> Result<(), WorktreeError> {
    match std::fs::remove_file(&slot.marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(format!("removing {}", slot.marker.display()))(e));
        }
        _ => {}
    }
    if let Ok(wt) = repo.find_worktree(&slot.name) {
        let _ = wt.unlock();
        remove_worktree(&wt)?;
    }
    if slot.path.exists() {
        std::fs::remove_dir_all(&slot.path).map_err(io(format!(
            "removing worktree slot {}",
            slot.path.display()
        )))?;
    }
    Ok(())
}
