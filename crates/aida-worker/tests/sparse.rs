//! Sparse worktrees: a subtask that declares its directories gets a
//! worktree holding only them (git's cone mode: plus the files directly in
//! the root and in their parents). Its commit keeps every file it left out
//! exactly as it was, git itself sees a clean worktree, and the worktree is
//! removed afterwards like any other.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use aida_core::sparse::SparsePaths;
use aida_worker::worktree;
use common::{Ctx, TestRepo};
use git2::Oid;

fn repo() -> TestRepo {
    TestRepo::with_files(&[
        ("Cargo.toml", "[workspace]\n"),
        ("src/lib.rs", "// parent of src/api\n"),
        ("src/api/handler.rs", "fn handler() {}\n"),
        ("src/api/routes/mod.rs", "mod routes;\n"),
        ("src/web/page.rs", "fn page() {}\n"),
        ("docs/guide.md", "# Guide\n"),
    ])
}

/// Every file under `dir` but `.git`, relative to it.
fn files(dir: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
        .map(Result::unwrap)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Every file of `commit` with its blob id.
fn tree_of(repo: &TestRepo, commit: Oid) -> Vec<(String, Oid)> {
    let repo = repo.repo();
    let tree = repo.find_commit(commit).unwrap().tree().unwrap();
    let mut files = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            files.push((format!("{dir}{}", entry.name().unwrap()), entry.id()));
        }
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    files
}

#[test]
fn a_sparse_worktree_holds_only_the_declared_directories_and_commits_the_whole_tree() {
    let repo = repo();
    let root = tempfile::tempdir().unwrap();
    let run = repo.run("api", &["true"]);
    let paths = SparsePaths::parse(&["src/api/"]).unwrap();
    // With the pool on: a sparse run never takes the pooled worktree.
    let wt = worktree::prepare(&run, &run.branch, root.path(), "w", true, &paths).unwrap();
    assert!(wt.sparse && wt.slot.is_none());

    assert_eq!(
        files(&wt.path),
        BTreeSet::from(
            [
                "Cargo.toml",
                "README.md",
                "src/api/handler.rs",
                "src/api/routes/mod.rs",
                "src/lib.rs",
            ]
            .map(String::from)
        ),
        "the declared directory, the root's files and its parent's files; nothing of src/web or docs"
    );
    // git itself sees nothing changed or deleted.
    assert_eq!(git(&wt.path, &["status", "--porcelain"]), "");
    assert_eq!(
        git(&wt.path, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        run.branch
    );

    // The agent edits, adds and deletes inside its directories.
    std::fs::write(wt.path.join("src/api/handler.rs"), "fn handler() { 1 }\n").unwrap();
    std::fs::write(wt.path.join("src/api/new.rs"), "fn new() {}\n").unwrap();
    std::fs::remove_file(wt.path.join("src/api/routes/mod.rs")).unwrap();
    // A file it writes outside them is its work too; what the set-up made
    // is left out, as in any worktree.
    std::fs::create_dir_all(wt.path.join("docs")).unwrap();
    std::fs::write(wt.path.join("docs/api.md"), "# API\n").unwrap();
    std::fs::write(wt.path.join("src/api/generated.rs"), "// set-up\n").unwrap();
    let setup_made = BTreeSet::from(["src/api/generated.rs".to_owned()]);
    let committed =
        worktree::commit_changes(&wt, "api", "change the api", "w", &setup_made).unwrap();
    assert!(committed.created);

    let before: Vec<(String, Oid)> = tree_of(&repo, repo.base);
    let after: Vec<(String, Oid)> = tree_of(&repo, committed.head);
    let changed: BTreeSet<&str> = before
        .iter()
        .filter(|f| !after.contains(f))
        .chain(after.iter().filter(|f| !before.contains(f)))
        .map(|(path, _)| path.as_str())
        .collect();
    assert_eq!(
        changed,
        BTreeSet::from([
            "docs/api.md",
            "src/api/handler.rs",
            "src/api/new.rs",
            "src/api/routes/mod.rs"
        ]),
        "only the agent's changes; every file left out of the worktree kept as it was"
    );
    assert_eq!(
        repo.file_at(&committed.head.to_string(), "src/web/page.rs")
            .as_deref(),
        Some("fn page() {}\n")
    );
    assert_eq!(
        git(&wt.path, &["status", "--porcelain"]),
        "?? src/api/generated.rs\n",
        "committed and clean but for what the set-up made"
    );

    worktree::release(&wt).unwrap();
    assert!(!wt.path.exists());
    let list = repo.git_worktree_list();
    assert_eq!(list.matches("worktree ").count(), 1, "{list}");
    assert!(
        !repo.path().join(".git/worktrees").join(&wt.name).exists(),
        "its metadata (with its sparse-checkout settings) is gone"
    );
    // The main working tree is untouched: still a full checkout, clean.
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "");
    assert!(repo.path().join("docs/guide.md").exists());
}

#[test]
fn a_retry_after_a_crash_replaces_the_leftover_sparse_worktree() {
    let repo = repo();
    let root = tempfile::tempdir().unwrap();
    let run = repo.run("api", &["true"]);
    let paths = SparsePaths::parse(&["docs"]).unwrap();
    let first = worktree::prepare(&run, &run.branch, root.path(), "w", false, &paths).unwrap();
    std::fs::write(first.path.join("docs/half-done.md"), "crashed here\n").unwrap();
    // The worker died: nothing released. The next attempt of the same run
    // starts over from the start commit.
    let again = worktree::prepare(&run, &run.branch, root.path(), "w", false, &paths).unwrap();
    assert_eq!(again.path, first.path);
    assert_eq!(
        files(&again.path),
        BTreeSet::from(["Cargo.toml", "README.md", "docs/guide.md"].map(String::from))
    );
    worktree::release(&again).unwrap();
    assert_eq!(repo.git_worktree_list().matches("worktree ").count(), 1);
}

#[tokio::test]
async fn a_run_with_paths_works_in_them_and_bad_paths_are_refused() {
    let repo = repo();
    let ctx = Ctx::new();
    let mut run = repo.run(
        "web",
        &[
            "sh",
            "-c",
            "find . -path ./.git -prune -o -type f ! -name seen.txt -print | sort > src/web/seen.txt",
        ],
    );
    run.paths = vec!["src/web".into()];
    let (result, _) = ctx.execute(run.clone()).await;
    assert!(result.success, "{}", result.error);
    let seen = repo.file_at(&result.commit, "src/web/seen.txt").unwrap();
    assert_eq!(
        seen, "./Cargo.toml\n./README.md\n./src/lib.rs\n./src/web/page.rs\n",
        "the agent saw only its directory"
    );
    assert!(repo.file_at(&result.commit, "src/api/handler.rs").is_some());
    assert!(repo.file_at(&result.commit, "docs/guide.md").is_some());
    assert!(
        !ctx.ctx
            .worktree_root
            .join(worktree::worktree_name(&run))
            .exists()
    );

    for (paths, why) in [
        (vec!["../outside"], "\"..\""),
        (vec!["src/*"], "pattern"),
        (vec!["--help"], "pattern"),
    ] {
        let mut bad = repo.run("bad", &["true"]);
        bad.paths = paths.into_iter().map(String::from).collect();
        let err = aida_worker::executor::validate(&bad, &ctx.ctx).unwrap_err();
        assert!(err.contains(why), "{err}");
    }
    let mut read_only = repo.run("bad", &["true"]);
    read_only.read_only = true;
    read_only.subtask = "_plan".into();
    read_only.paths = vec!["src".into()];
    let err = aida_worker::executor::validate(&read_only, &ctx.ctx).unwrap_err();
    assert!(err.contains("paths"), "{err}");
}
