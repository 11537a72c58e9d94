//! Nothing a worker reports is taken on trust: a reported commit must be on
//! the subtask's branch and descend from where the subtask started (the
//! task's base commit and every dependency's commit). A worker that lies,
//! or anyone holding the internal credential who forges a report, cannot
//! point the merge at foreign history.

use git2::{Oid, Repository};

/// What the report claims, and what it must agree with.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub repo: &'a str,
    /// `aida/<task>/<subtask>`.
    pub branch: &'a str,
    pub base_commit: &'a str,
    /// The commits of the subtask's dependencies, merged into its start.
    pub dependencies: Vec<&'a str>,
    /// Where the worker says it started; empty if it did not say.
    pub start_commit: &'a str,
    pub commit: &'a str,
}

/// `Ok` if the claim holds, else why not (for the worker and the log).
/// Blocking (git2).
pub fn check(claim: &Claim<'_>) -> Result<(), String> {
    let repo = Repository::open(claim.repo).map_err(|e| {
        format!(
            "cannot open {} to check the result: {}",
            claim.repo,
            e.message()
        )
    })?;
    let oid = |what: &str, hex: &str| {
        Oid::from_str(hex)
            .ok()
            .filter(|oid| repo.find_commit(*oid).is_ok())
            .ok_or_else(|| format!("{what} {hex:?} is not a commit of the repository"))
    };
    let commit = oid("the reported commit", claim.commit)?;
    let base = oid("the task's base commit", claim.base_commit)?;
    let within = |ancestor: Oid, descendant: Oid| {
        ancestor == descendant
            || repo
                .graph_descendant_of(descendant, ancestor)
                .unwrap_or(false)
    };

    let tip = repo
        .find_reference(&format!("refs/heads/{}", claim.branch))
        .ok()
        .and_then(|r| r.peel_to_commit().ok())
        .map(|c| c.id())
        .ok_or_else(|| format!("branch {} does not exist", claim.branch))?;
    if !within(commit, tip) {
        return Err(format!(
            "commit {commit} is not on branch {} (its tip is {tip})",
            claim.branch
        ));
    }
    if !within(base, commit) {
        return Err(format!(
            "commit {commit} does not descend from the task's base commit {base}"
        ));
    }
    for dep in &claim.dependencies {
        let dep = oid("a dependency's commit", dep)?;
        if !within(dep, commit) {
            return Err(format!(
                "commit {commit} does not contain the dependency commit {dep}"
            ));
        }
    }
    if !claim.start_commit.is_empty() {
        let start = oid("the reported start commit", claim.start_commit)?;
        if !within(base, start) || !within(start, commit) {
            return Err(format!(
                "start commit {start} is not between the base commit {base} and commit {commit}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_on(repo: &Repository, parent: Option<Oid>, file: &str) -> Oid {
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let mut index = git2::Index::new().unwrap();
        let blob = repo.blob(file.as_bytes()).unwrap();
        index
            .add(&git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: 0,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: file.as_bytes().to_vec(),
            })
            .unwrap();
        let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
        let parents: Vec<git2::Commit> = parent
            .iter()
            .map(|p| repo.find_commit(*p).unwrap())
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(None, &sig, &sig, file, &tree, &parents)
            .unwrap()
    }

    #[test]
    fn only_commits_on_the_branch_above_the_base_pass() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let base = commit_on(&repo, None, "base");
        let work = commit_on(&repo, Some(base), "work");
        let elsewhere = commit_on(&repo, None, "unrelated");
        let sibling = commit_on(&repo, Some(base), "sibling");
        repo.reference("refs/heads/aida/t/a", work, true, "")
            .unwrap();
        repo.reference("refs/heads/other", sibling, true, "")
            .unwrap();
        let path = dir.path().to_str().unwrap().to_owned();
        let (w, b, e, s) = (
            work.to_string(),
            base.to_string(),
            elsewhere.to_string(),
            sibling.to_string(),
        );
        let (w, b, e, s) = (w.as_str(), b.as_str(), e.as_str(), s.as_str());
        let claim = |commit| Claim {
            repo: &path,
            branch: "aida/t/a",
            base_commit: b,
            dependencies: vec![],
            start_commit: b,
            commit,
        };
        assert_eq!(check(&claim(w)), Ok(()));
        assert!(check(&claim(s)).unwrap_err().contains("not on branch"));
        assert!(check(&claim(e)).unwrap_err().contains("not on branch"));
        assert!(check(&claim("0123")).unwrap_err().contains("not a commit"));
        let mut off_base = claim(w);
        off_base.base_commit = e;
        assert!(check(&off_base).unwrap_err().contains("base commit"));
        let mut missing_dep = claim(w);
        missing_dep.dependencies = vec![s];
        assert!(check(&missing_dep).unwrap_err().contains("dependency"));
        let mut no_branch = claim(w);
        no_branch.branch = "aida/t/none";
        assert!(check(&no_branch).unwrap_err().contains("does not exist"));
    }
}
