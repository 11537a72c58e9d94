//! Pooled worktrees: a worker resets its worktree of a repository for the
//! next run instead of adding a new one. Whatever a run left (modified,
//! deleted, untracked, ignored and staged files, a nested repository) is
//! never visible to the next, and a worker that dies in the middle of a
//! run or a reset leaves nothing a later run picks up.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aida_worker::worktree::{self, clean_root};
use common::{Ctx, TestRepo};

/// Every file under `dir` but `.git`, with its content.
fn files(dir: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
        .map(Result::unwrap)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read_to_string(e.path()).unwrap_or_default())
        })
        .collect()
}

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Leaves every kind of trace a run can leave in `dir`.
fn leave_traces(dir: &Path) {
    write(dir, "src/a.txt", "changed by the earlier run\n");
    std::fs::remove_file(dir.join("src/b.txt")).unwrap();
    write(dir, "untracked.txt", "earlier run\n");
    write(dir, "new/deep/untracked.txt", "earlier run\n");
    write(dir, "target/debug/build-output", "earlier run\n");
    write(dir, "server.log", "earlier run\n");
    write(dir, "staged.txt", "earlier run\n");
    let wt = git2::Repository::open(dir).unwrap();
    let mut index = wt.index().unwrap();
    index.add_path(Path::new("staged.txt")).unwrap();
    index.write().unwrap();
    // A merge left in progress (a resolver's, an agent's).
    let gitdir = wt.path().to_path_buf();
    std::fs::write(
        gitdir.join("MERGE_HEAD"),
        format!("{}\n", wt.head().unwrap().target().unwrap()),
    )
    .unwrap();
    std::fs::write(gitdir.join("MERGE_MSG"), "Merge\n").unwrap();
    let nested = git2::Repository::init(dir.join("vendor/nested")).unwrap();
    drop(nested);
    write(dir, "vendor/nested/file.txt", "earlier run\n");
}

fn repo() -> TestRepo {
    TestRepo::with_files(&[
        (".gitignore", "target/\n*.log\n"),
        ("src/a.txt", "a\n"),
        ("src/b.txt", "b\n"),
    ])
}

#[test]
fn a_reused_worktree_shows_exactly_the_start_commit_and_no_file_of_the_previous_run() {
    let repo = repo();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();

    let first = repo.run("first", &["true"]);
    let wt =
        worktree::prepare(&first, &first.branch, root, "w", true, &Default::default()).unwrap();
    assert!(!wt.reused, "the first run adds the worktree");
    let pristine = files(&wt.path);
    assert_eq!(
        pristine.keys().collect::<Vec<_>>(),
        [".gitignore", "README.md", "src/a.txt", "src/b.txt"]
    );
    // The run's work is committed on its branch; more is left behind after
    // the commit (an agent's background process, a build's output).
    write(&wt.path, "src/a.txt", "the first run's work\n");
    let committed =
        worktree::commit_changes(&wt, "first", "work", "w", &Default::default()).unwrap();
    assert!(committed.created);
    leave_traces(&wt.path);
    worktree::release(&wt).unwrap();
    // Handed back, it holds no branch: git shows it detached.
    let list = repo.git_worktree_list();
    assert!(list.contains("detached"), "{list}");
    assert!(!list.contains(&first.branch), "{list}");

    let second = repo.run("second", &["true"]);
    let wt2 = worktree::prepare(
        &second,
        &second.branch,
        root,
        "w",
        true,
        &Default::default(),
    )
    .unwrap();
    assert!(wt2.reused, "the second run resets the same worktree");
    assert_eq!(wt2.path, wt.path);
    assert_eq!(
        files(&wt2.path),
        pristine,
        "exactly the start commit's files"
    );
    let git = git2::Repository::open(&wt2.path).unwrap();
    assert_eq!(
        git.head().unwrap().name(),
        Some(format!("refs/heads/{}", second.branch).as_str())
    );
    assert!(
        git.statuses(None).unwrap().is_empty(),
        "the index holds the start commit too"
    );
    assert_eq!(
        git.state(),
        git2::RepositoryState::Clean,
        "no merge in progress"
    );
    // The second run's commit has none of the first's traces.
    write(&wt2.path, "second.txt", "mine\n");
    let second_commit =
        worktree::commit_changes(&wt2, "second", "work", "w", &Default::default()).unwrap();
    let tree = git.find_commit(second_commit.head).unwrap().tree().unwrap();
    let mut paths = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            paths.push(format!("{dir}{}", entry.name().unwrap()));
        }
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    assert_eq!(
        paths,
        [
            ".gitignore",
            "README.md",
            "second.txt",
            "src/a.txt",
            "src/b.txt"
        ]
    );
    assert_eq!(
        repo.file_at(&second_commit.head.to_string(), "src/a.txt")
            .as_deref(),
        Some("a\n")
    );
    // The first run's branch kept its work.
    assert_eq!(
        repo.file_at(&committed.head.to_string(), "src/a.txt")
            .as_deref(),
        Some("the first run's work\n")
    );
    worktree::release(&wt2).unwrap();
}

#[test]
fn a_worker_that_dies_mid_run_or_mid_reset_leaves_nothing_a_later_run_picks_up() {
    let repo = repo();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let first = repo.run("first", &["true"]);
    let wt =
        worktree::prepare(&first, &first.branch, root, "w", true, &Default::default()).unwrap();
    worktree::release(&wt).unwrap();

    // The next run takes the slot and dies before handing it back: in the
    // middle of its reset or of its agent's work, traces are on disk.
    let second = repo.run("second", &["true"]);
    let taken = worktree::prepare(
        &second,
        &second.branch,
        root,
        "w",
        true,
        &Default::default(),
    )
    .unwrap();
    assert!(taken.reused);
    leave_traces(&taken.path);

    // Without a restart, the next run on this worker does not reset that
    // slot: it adds a fresh worktree.
    let third = repo.run("third", &["true"]);
    let wt3 =
        worktree::prepare(&third, &third.branch, root, "w", true, &Default::default()).unwrap();
    assert!(
        !wt3.reused,
        "a slot that was not handed back is never reset"
    );
    assert_eq!(
        files(&wt3.path).keys().collect::<Vec<_>>(),
        [".gitignore", "README.md", "src/a.txt", "src/b.txt"]
    );

    // With a restart, the start-up cleanup removes it, metadata and all.
    leave_traces(&wt3.path);
    let cleaned = clean_root(root).unwrap();
    assert_eq!(
        cleaned.iter().map(|c| c.path.as_path()).collect::<Vec<_>>(),
        [wt3.path.as_path()]
    );
    assert!(!wt3.path.exists());
    assert!(repo.repo().worktrees().unwrap().is_empty());
    let fourth = repo.run("fourth", &["true"]);
    let wt4 = worktree::prepare(
        &fourth,
        &fourth.branch,
        root,
        "w",
        true,
        &Default::default(),
    )
    .unwrap();
    assert!(!wt4.reused);
    assert_eq!(
        files(&wt4.path).keys().collect::<Vec<_>>(),
        [".gitignore", "README.md", "src/a.txt", "src/b.txt"]
    );

    // An idle slot survives a restart and is reused after it.
    worktree::release(&wt4).unwrap();
    assert!(clean_root(root).unwrap().is_empty());
    let fifth = repo.run("fifth", &["true"]);
    assert!(
        worktree::prepare(&fifth, &fifth.branch, root, "w", true, &Default::default())
            .unwrap()
            .reused
    );
}

#[tokio::test]
async fn runs_through_the_executor_reuse_one_worktree_and_leave_their_branch_free() {
    let repo = repo();
    let ctx = Ctx::new();
    let first = repo.run(
        "first",
        &["sh", "-c", "echo one > one.txt; echo junk > server.log"],
    );
    let (result, lines) = ctx.execute(first.clone()).await;
    assert!(result.success, "{}", result.error);
    assert!(common::has_line(
        &lines,
        "aida",
        &format!(
            "worktree ready at {}, starting from {}",
            ctx.ctx
                .worktree_root
                .join(aida_worker::pool::Slot::of(&ctx.ctx.worktree_root, &repo.repo()).name)
                .display(),
            repo.base
        )
    ));
    let second = repo.run("second", &["sh", "-c", "ls -A > seen.txt"]);
    let (result, lines) = ctx.execute(second).await;
    assert!(result.success, "{}", result.error);
    assert!(
        lines
            .iter()
            .any(|l| l.line.starts_with("worktree ready at") && l.line.contains("(reused, reset)")),
        "{lines:?}"
    );
    assert_eq!(
        repo.file_at(&result.commit, "seen.txt").as_deref(),
        Some(".git\n.gitignore\nREADME.md\nseen.txt\nsrc\n"),
        "the second agent saw none of the first run's files"
    );
    // Neither branch is checked out anywhere: a follow-up elsewhere, a push
    // or a gc may move them.
    let list = repo.git_worktree_list();
    assert!(!list.contains("branch refs/heads/aida/"), "{list}");
}
