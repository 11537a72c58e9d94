//! What changed between two commits, for people reviewing it: file by file
//! with hunks and lines, and as a unified diff in `git diff`'s format
//! (renames found, binary files named as such). Read-only.

use std::cell::RefCell;
use std::path::Path;

use aida_proto::common::{Diff, DiffFile, DiffHunk, DiffLine};
use git2::{Delta, DiffFindOptions, DiffFormat, DiffOptions, Patch};
use tracing::instrument;

use crate::error::AggregatorError;
use crate::repo;

/// Lines of hunks one answer holds; later files come without their hunks
/// (`hunks_omitted`), to be fetched one path at a time.
const MAX_LINES: usize = 20_000;
/// The longest unified diff one answer holds.
const MAX_PATCH_BYTES: usize = 16 * 1024 * 1024;

/// The change from `from` to `to`, all of it or only `path` (its new or
/// old path).
#[instrument(skip_all, fields(repo = %repo_path.display(), from, to, path))]
pub fn diff(repo_path: &Path, from: &str, to: &str, path: &str) -> Result<Diff, AggregatorError> {
    let repo = repo::open(repo_path)?;
    let old = repo::commit(&repo, "from", from)?;
    let new = repo::commit(&repo, "to", to)?;
    let mut opts = DiffOptions::new();
    let mut diff =
        repo.diff_tree_to_tree(Some(&old.tree()?), Some(&new.tree()?), Some(&mut opts))?;
    diff.find_similar(Some(DiffFindOptions::new().renames(true)))?;
    let wanted = |d: &git2::DiffDelta<'_>| {
        path.is_empty()
            || [d.new_file().path(), d.old_file().path()]
                .into_iter()
                .flatten()
                .any(|p| p == Path::new(path))
    };
    if !path.is_empty() && !diff.deltas().any(|d| wanted(&d)) {
        return Err(AggregatorError::InvalidArgument(format!(
            "path {path:?} did not change between these commits"
        )));
    }

    let mut files = Vec::new();
    let mut lines_left = MAX_LINES;
    let mut truncated = false;
    for (i, delta) in diff.deltas().enumerate() {
        if !wanted(&delta) {
            continue;
        }
        let name = |f: git2::DiffFile<'_>| {
            f.path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let (new_path, old_path) = (name(delta.new_file()), name(delta.old_file()));
        let status = match delta.status() {
            Delta::Added => "added",
            Delta::Deleted => "deleted",
            Delta::Renamed => "renamed",
            Delta::Copied => "copied",
            Delta::Typechange => "typechange",
            _ => "modified",
        };
        let mut file = DiffFile {
            path: if delta.status() == Delta::Deleted {
                old_path.clone()
            } else {
                new_path.clone()
            },
            old_path: if matches!(delta.status(), Delta::Renamed | Delta::Copied) {
                old_path
            } else {
                String::new()
            },
            status: status.into(),
            binary: delta.flags().is_binary(),
            ..Default::default()
        };
        if let Some(patch) = Patch::from_diff(&diff, i)? {
            file.binary = file.binary || patch.delta().flags().is_binary();
            let (_, additions, deletions) = patch.line_stats()?;
            file.additions = u32::try_from(additions).unwrap_or(u32::MAX);
            file.deletions = u32::try_from(deletions).unwrap_or(u32::MAX);
            let size: usize = (0..patch.num_hunks())
                .map(|h| patch.num_lines_in_hunk(h).unwrap_or(0))
                .sum();
            if size > lines_left && path.is_empty() {
                file.hunks_omitted = true;
                truncated = true;
            } else {
                lines_left = lines_left.saturating_sub(size);
                file.hunks = hunks(&patch)?;
            }
        }
        files.push(file);
    }

    let text = RefCell::new(String::new());
    let mut over = false;
    diff.print(DiffFormat::Patch, |delta, _, line| {
        if !wanted(&delta) {
            return true;
        }
        let mut text = text.borrow_mut();
        if text.len() > MAX_PATCH_BYTES {
            over = true;
            return false;
        }
        if matches!(line.origin(), '+' | '-' | ' ') {
            text.push(line.origin());
        }
        text.push_str(&String::from_utf8_lossy(line.content()));
        true
    })
    .or_else(|e| if over { Ok(()) } else { Err(e) })?;
    Ok(Diff {
        from: old.id().to_string(),
        to: new.id().to_string(),
        files,
        patch: text.into_inner(),
        truncated: truncated || over,
    })
}

fn hunks(patch: &Patch<'_>) -> Result<Vec<DiffHunk>, git2::Error> {
    (0..patch.num_hunks())
        .map(|h| {
            let (hunk, count) = patch.hunk(h)?;
            let lines = (0..count)
                .map(|l| {
                    let line = patch.line_in_hunk(h, l)?;
                    let content = String::from_utf8_lossy(line.content());
                    Ok(DiffLine {
                        origin: line.origin().to_string(),
                        content: content.strip_suffix('\n').unwrap_or(&content).to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, git2::Error>>()?;
            Ok(DiffHunk {
                header: String::from_utf8_lossy(hunk.header()).trim_end().to_owned(),
                old_start: hunk.old_start(),
                old_lines: hunk.old_lines(),
                new_start: hunk.new_start(),
                new_lines: hunk.new_lines(),
                lines,
            })
        })
        .collect()
}
