//! Opening repositories and resolving commit ids from requests, with
//! errors that tell the caller which input was wrong; and the per-repository
//! lock that serializes merges inside this process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use git2::{Commit, ErrorCode, Repository};

use crate::error::AggregatorError;

/// Opens the repository at exactly `path` (no search in parent folders, so
/// a typo never lands in an enclosing repository).
pub fn open(path: &Path) -> Result<Repository, AggregatorError> {
    let shown = path.display().to_string();
    if path.as_os_str().is_empty() {
        return Err(AggregatorError::InvalidArgument("repo is required".into()));
    }
    if !path.is_absolute() {
        return Err(AggregatorError::InvalidArgument(format!(
            "repo path {shown:?} must be absolute"
        )));
    }
    if !path.exists() {
        return Err(AggregatorError::RepoNotFound(shown));
    }
    let flags = git2::RepositoryOpenFlags::NO_SEARCH;
    Repository::open_ext(path, flags, std::iter::empty::<&std::ffi::OsStr>()).map_err(|e| {
        if e.code() == ErrorCode::NotFound {
            AggregatorError::NotARepo(shown)
        } else {
            AggregatorError::Git(e)
        }
    })
}

/// Resolves a full or abbreviated hexadecimal commit id. `field` names the
/// request field in error messages. Symbolic names (`HEAD`, branches) are
/// refused: callers record commits, and a moving name would make a merge
/// depend on when it runs.
pub fn commit<'r>(
    repo: &'r Repository,
    field: &str,
    id: &str,
) -> Result<Commit<'r>, AggregatorError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(AggregatorError::InvalidArgument(format!(
            "{field} is required"
        )));
    }
    if id.len() < 4 || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(AggregatorError::InvalidArgument(format!(
            "{field} {id:?} is not a commit id (4 to 64 hexadecimal digits)"
        )));
    }
    let object = repo.revparse_single(id).map_err(|e| match e.code() {
        ErrorCode::NotFound => AggregatorError::CommitNotFound {
            field: field.to_owned(),
            commit: id.to_owned(),
        },
        ErrorCode::Ambiguous => AggregatorError::InvalidArgument(format!(
            "{field} {id:?} is ambiguous, give more digits"
        )),
        _ => AggregatorError::Git(e),
    })?;
    object.peel_to_commit().map_err(|_| {
        AggregatorError::InvalidArgument(format!("{field} {id:?} does not name a commit"))
    })
}

/// The lock every merge into `repo` holds. Keyed by the canonical common
/// git directory, so a repository reached through a worktree or a symlink
/// shares its lock.
pub fn merge_lock(repo: &Repository) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let dir = repo.commondir();
    let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(key).or_default().clone()
}
