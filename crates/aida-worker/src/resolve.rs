//! The resolver's run, on the worker's side: the worktree starts at the
//! result so far and the merge of the conflicting subtask's commit is
//! started in it as `git merge` would (conflict markers in the files,
//! `MERGE_HEAD` set, both parents known); after the agent, its work is
//! accepted only with no conflict left in the index and no marker left in
//! any file it changed, and is committed as a merge with both parents.

use std::collections::BTreeSet;
use std::path::Path;

use git2::build::CheckoutBuilder;
use git2::{IndexAddOption, MergeOptions, Oid, Repository, Signature};

use crate::worktree::PreparedWorktree;

/// Starts merging `theirs` into the worktree's start: the files in conflict
/// (they hold markers), or none when it merges cleanly.
pub fn start_merge(wt: &PreparedWorktree, theirs: &str) -> Result<Vec<String>, String> {
    let repo = Repository::open(&wt.path).map_err(|e| format!("cannot open the worktree: {e}"))?;
    let id = Oid::from_str(theirs).map_err(|e| format!("bad commit {theirs:?}: {e}"))?;
    let annotated = repo
        .find_annotated_commit(id)
        .map_err(|e| format!("cannot find commit {theirs}: {e}"))?;
    let mut checkout = CheckoutBuilder::new();
    checkout.allow_conflicts(true).conflict_style_merge(true);
    repo.merge(
        &[&annotated],
        Some(&mut MergeOptions::new()),
        Some(&mut checkout),
    )
    .map_err(|e| format!("cannot start the merge of {theirs}: {e}"))?;
    let index = repo
        .index()
        .map_err(|e| format!("cannot read the index: {e}"))?;
    let mut files = BTreeSet::new();
    for conflict in index
        .conflicts()
        .map_err(|e| format!("cannot read the conflicts: {e}"))?
    {
        let conflict = conflict.map_err(|e| format!("cannot read a conflict: {e}"))?;
        for entry in [conflict.ancestor, conflict.our, conflict.their]
            .into_iter()
            .flatten()
        {
            files.insert(String::from_utf8_lossy(&entry.path).into_owned());
        }
    }
    Ok(files.into_iter().collect())
}

/// Commits what the resolver left as the merge of `theirs` into the
/// worktree's start, on the worktree's branch; refused (with why) while a
/// conflict or a marker is left. Files in `leave_out` (the set-up
/// command's) are not committed.
pub fn commit_resolution(
    wt: &PreparedWorktree,
    theirs: &str,
    subtask: &str,
    worker_id: &str,
    leave_out: &BTreeSet<String>,
) -> Result<Oid, String> {
    let repo = Repository::open(&wt.path).map_err(|e| format!("cannot open the worktree: {e}"))?;
    let git = |what: &'static str| move |e: git2::Error| format!("{what}: {e}");
    let mut index = repo.index().map_err(git("cannot read the index"))?;
    let mut skip = |path: &Path, _: &[u8]| -> i32 {
        i32::from(path.to_str().is_some_and(|p| leave_out.contains(p)))
    };
    index
        .add_all(["*"], IndexAddOption::DEFAULT, Some(&mut skip))
        .map_err(git("cannot stage the resolution"))?;
    index
        .update_all(["*"], None)
        .map_err(git("cannot stage the resolution's deletions"))?;
    if index.has_conflicts() {
        return Err("the index still holds conflicts".into());
    }
    index.write().map_err(git("cannot write the index"))?;
    let tree = repo
        .find_tree(index.write_tree().map_err(git("cannot write the tree"))?)
        .map_err(git("cannot read the tree"))?;
    let ours = repo
        .find_commit(wt.start_commit)
        .map_err(git("cannot read the result so far"))?;
    let theirs = repo
        .find_commit(Oid::from_str(theirs).map_err(git("bad commit"))?)
        .map_err(git("cannot read the conflicting commit"))?;
    let marked = files_with_markers(
        &repo,
        &ours.tree().map_err(git("cannot read a tree"))?,
        &tree,
    )
    .map_err(git("cannot read the resolution"))?;
    if !marked.is_empty() {
        return Err(format!(
            "conflict markers are left in {}",
            marked.join(", ")
        ));
    }
    let sig = Signature::now(&format!("AIDA worker {worker_id}"), "worker@aida.local")
        .map_err(git("cannot build the commit signature"))?;
    let message = format!("aida: merge {subtask}, conflicts resolved by the resolver agent\n");
    // The agent may have committed on the branch itself: the merge is made
    // from the parents it must have, and the branch set to it.
    let id = repo
        .commit(None, &sig, &sig, &message, &tree, &[&ours, &theirs])
        .map_err(git("cannot commit the resolution"))?;
    repo.reference(
        &format!("refs/heads/{}", wt.branch),
        id,
        true,
        "aida: resolution",
    )
    .map_err(git("cannot move the branch"))?;
    repo.cleanup_state().map_err(git("cannot end the merge"))?;
    Ok(id)
}

/// Text files changed from `old` to `new` with a line that is a conflict
/// marker (git's rule: seven `<`, `=` or `>`, then a space or the end of
/// the line).
fn files_with_markers(
    repo: &Repository,
    old: &git2::Tree<'_>,
    new: &git2::Tree<'_>,
) -> Result<Vec<String>, git2::Error> {
    let diff = repo.diff_tree_to_tree(Some(old), Some(new), None)?;
    let mut marked = Vec::new();
    for delta in diff.deltas() {
        let file = delta.new_file();
        if file.id().is_zero() {
            continue;
        }
        let blob = repo.find_blob(file.id())?;
        if blob.is_binary() {
            continue;
        }
        if has_marker(blob.content()) {
            let path = file
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            marked.push(path);
        }
    }
    Ok(marked)
}

fn has_marker(content: &[u8]) -> bool {
    content.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        [b"<<<<<<<", b"=======", b">>>>>>>"].iter().any(|m| {
            line.strip_prefix(&m[..])
                .is_some_and(|rest| rest.is_empty() || rest[0] == b' ')
        })
    })
}

#[cfg(test)]
mod tests {
    use super::has_marker;

    #[test]
    fn markers_are_found_by_git_rule() {
        assert!(has_marker(b"a\n<<<<<<< HEAD\nb\n"));
        assert!(has_marker(b"a\n=======\r\nb"));
        assert!(has_marker(b">>>>>>> theirs"));
        assert!(!has_marker(b"a\n========\nb\n"));
        assert!(!has_marker(b"x <<<<<<< y\n"));
        assert!(!has_marker(b"<<<<<<<<\n"));
    }
}
