//! What a subtask changed: a tree-to-tree diff between the commit its
//! worktree started from and the commit it finished at. Read-only.

use std::collections::BTreeSet;
use std::path::Path;

use aida_proto::common::DiffStats;
use git2::{DiffFindOptions, Repository};
use tracing::instrument;

use crate::error::AggregatorError;
use crate::repo;

/// Files changed, lines inserted and deleted, and the changed paths
/// (sorted) between `start_commit` and `commit`. Renames count as one file.
#[instrument(skip_all, fields(repo = %repo_path.display(), start_commit, commit))]
pub fn diff_stats(
    repo_path: &Path,
    start_commit: &str,
    commit: &str,
) -> Result<DiffStats, AggregatorError> {
    let repo = repo::open(repo_path)?;
    let start = repo::commit(&repo, "start_commit", start_commit)?;
    let end = repo::commit(&repo, "commit", commit)?;
    let (old, new) = (start.tree()?, end.tree()?);
    stats_between(&repo, &old, &new)
}

fn stats_between(
    repo: &Repository,
    old: &git2::Tree<'_>,
    new: &git2::Tree<'_>,
) -> Result<DiffStats, AggregatorError> {
    let mut diff = repo.diff_tree_to_tree(Some(old), Some(new), None)?;
    diff.find_similar(Some(DiffFindOptions::new().renames(true)))?;
    let stats = diff.stats()?;
    let files: BTreeSet<String> = diff
        .deltas()
        .filter_map(|d| {
            d.new_file()
                .path()
                .or_else(|| d.old_file().path())
                .map(|p| p.to_string_lossy().into_owned())
        })
        .collect();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(DiffStats {
        files_changed: count(stats.files_changed()),
        insertions: count(stats.insertions()),
        deletions: count(stats.deletions()),
        files: files.into_iter().collect(),
    })
}
