//! Start-up cleanup of a worktree root: what a worker killed mid-run left
//! behind goes, branches stay, and nothing that is not ours is touched.

mod common;

use aida_worker::worktree::{self, clean_root, is_run_dir_name};
use common::TestRepo;

#[test]
fn run_directory_names_are_recognised() {
    let task = aida_core::ids::TaskId::new();
    assert!(is_run_dir_name(&format!("{task}-api-1")));
    assert!(is_run_dir_name(&format!("{task}-my-sub-task-12")));
    assert!(is_run_dir_name(&format!("{task}-_plan-1-read-only")));
    for other in [
        "notes".to_owned(),
        format!("{task}"),
        format!("{task}-api"),
        format!("{task}-api-x"),
        format!("{task}--1"),
        "0193zzzz-0000-7000-8000-000000000000-api-1".to_owned(),
    ] {
        assert!(!is_run_dir_name(&other), "{other}");
    }
}

#[test]
fn leftover_worktrees_and_snapshots_are_removed_and_branches_stay() {
    let repo = TestRepo::new();
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path().join("worktrees");

    // A run that never finished: its worktree is locked and registered.
    let run = repo.run("api", &["true"]);
    let wt = worktree::prepare(
        &run,
        &run.branch,
        &root,
        "test-worker",
        false,
        &Default::default(),
    )
    .unwrap();
    std::fs::write(wt.path.join("half-done.txt"), "x").unwrap();
    let git = repo.repo();
    assert!(matches!(
        git.find_worktree(&wt.name).unwrap().is_locked().unwrap(),
        git2::WorktreeLockStatus::Locked(_)
    ));
    // A read-only snapshot and a directory that is not ours.
    let snapshot = root.join(format!("{}-_plan-1-read-only", run.task_id));
    worktree::snapshot(&run.repo, &run.base_commit, &snapshot).unwrap();
    let foreign = root.join("keep-me");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("file"), "mine").unwrap();
    // A worktree whose repository was deleted since.
    let gone = TestRepo::new();
    let gone_run = gone.run("web", &["true"]);
    let gone_wt = worktree::prepare(
        &gone_run,
        &gone_run.branch,
        &root,
        "test-worker",
        false,
        &Default::default(),
    )
    .unwrap();
    drop(gone);

    let mut cleaned = clean_root(&root).unwrap();
    cleaned.sort_by(|a, b| a.path.cmp(&b.path));
    let mut expected = vec![
        (wt.path.clone(), true),
        (snapshot.clone(), false),
        (gone_wt.path.clone(), false),
    ];
    expected.sort();
    assert_eq!(
        cleaned
            .iter()
            .map(|c| (c.path.clone(), c.repo.is_some()))
            .collect::<Vec<_>>(),
        expected
    );

    assert!(!wt.path.exists() && !snapshot.exists() && !gone_wt.path.exists());
    assert_eq!(
        std::fs::read_to_string(foreign.join("file")).unwrap(),
        "mine"
    );
    let git = repo.repo();
    assert!(
        git.worktrees().unwrap().is_empty(),
        "the repository forgot the worktree"
    );
    assert!(
        git.find_branch(&run.branch, git2::BranchType::Local)
            .is_ok(),
        "the subtask branch stays"
    );
    // git itself agrees: no worktree besides the main one.
    let list = std::process::Command::new("git")
        .args(["worktree", "list", "--porcelain"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert_eq!(list.matches("worktree ").count(), 1, "{list}");

    // A second pass finds nothing; a missing root is fine too.
    assert!(clean_root(&root).unwrap().is_empty());
    assert!(
        clean_root(&root_dir.path().join("missing"))
            .unwrap()
            .is_empty()
    );
}
