//! Test fixtures: real git repositories in temporary folders, built with
//! git2 directly in the object database (like the workers' commits, minus
//! the worktrees).

#![allow(dead_code)]

use std::path::Path;

use aida_proto::aggregator::MergeItem;
use git2::{Index, IndexEntry, IndexTime, Oid, Repository, Signature};
use tempfile::TempDir;

pub struct Fixture {
    pub dir: TempDir,
    pub repo: Repository,
    /// The first commit, on `main`.
    pub base: Oid,
}

pub const SHARED: &str = "one\ntwo\nthree\nfour\nfive\n";

impl Fixture {
    /// A repository whose `main` holds `README.md` and `shared.txt`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head("main");
        let repo = Repository::init_opts(dir.path(), &opts).unwrap();
        let mut fixture = Fixture {
            dir,
            repo,
            base: Oid::zero(),
        };
        fixture.base = fixture.commit(
            None,
            "main",
            &[("README.md", Some("hello\n")), ("shared.txt", Some(SHARED))],
        );
        fixture
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Commits on top of `parent` (or as a root commit) with `files`
    /// written (`Some`) or removed (`None`), and points `branch` at it.
    pub fn commit(&self, parent: Option<Oid>, branch: &str, files: &[(&str, Option<&str>)]) -> Oid {
        let repo = &self.repo;
        let parent = parent.map(|p| repo.find_commit(p).unwrap());
        let mut index = Index::new().unwrap();
        if let Some(parent) = &parent {
            index.read_tree(&parent.tree().unwrap()).unwrap();
        }
        for (path, content) in files {
            match content {
                Some(content) => {
                    let blob = repo.blob(content.as_bytes()).unwrap();
                    index.add(&entry(path, blob, content.len())).unwrap();
                }
                None => index.remove_path(Path::new(path)).unwrap(),
            }
        }
        let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
        let sig = Signature::now("Test Agent", "agent@example.invalid").unwrap();
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = repo
            .commit(
                None,
                &sig,
                &sig,
                &format!("work on {branch}"),
                &tree,
                &parents,
            )
            .unwrap();
        repo.reference(&format!("refs/heads/{branch}"), id, true, "test")
            .unwrap();
        id
    }

    /// The content of `path` in `commit`, if the file exists there.
    pub fn read(&self, commit: &str, path: &str) -> Option<String> {
        let commit = self
            .repo
            .find_commit(Oid::from_str(commit).unwrap())
            .unwrap();
        let entry = commit.tree().unwrap().get_path(Path::new(path)).ok()?;
        let blob = self.repo.find_blob(entry.id()).unwrap();
        Some(String::from_utf8(blob.content().to_vec()).unwrap())
    }

    pub fn branch_target(&self, branch: &str) -> Option<Oid> {
        self.repo
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()
            .and_then(|r| r.target())
    }

    pub fn tree_of(&self, commit: &str) -> Oid {
        self.repo
            .find_commit(Oid::from_str(commit).unwrap())
            .unwrap()
            .tree_id()
    }

    /// Names in the working directory: the aggregator must never write any.
    pub fn workdir_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

pub fn item(subtask: &str, commit: Oid) -> MergeItem {
    MergeItem {
        subtask: subtask.to_owned(),
        branch: format!("work/{subtask}"),
        commit: commit.to_string(),
        ..Default::default()
    }
}

fn entry(path: &str, id: Oid, size: usize) -> IndexEntry {
    IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: size as u32,
        id,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}
