//! Merging subtask commits into `aida/<task-id>` in real repositories.

mod common;

use aida_aggregator::AggregatorError;
use aida_aggregator::merge::{COMMITTER_EMAIL, COMMITTER_NAME, merge_task, trial_merge};
use aida_core::ids::{SubtaskName, TaskId};
use aida_proto::aggregator::MergeItem;
use common::{Fixture, SHARED, item};
use git2::Oid;

fn commit_of<'f>(f: &'f Fixture, id: &str) -> git2::Commit<'f> {
    f.repo.find_commit(Oid::from_str(id).unwrap()).unwrap()
}

#[test]
fn independent_branches_merge_into_the_result_branch_only() {
    let f = Fixture::new();
    let a = f.commit(Some(f.base), "work/a", &[("a.txt", Some("from a\n"))]);
    let b = f.commit(Some(f.base), "work/b", &[("b.txt", Some("from b\n"))]);
    let task = TaskId::new();

    let res = merge_task(
        f.path(),
        &task,
        &f.base.to_string(),
        &[item("a", a), item("b", b)],
    )
    .unwrap();

    assert_eq!(res.branch, task.result_branch());
    assert_eq!(
        f.branch_target(&res.branch).unwrap().to_string(),
        res.commit
    );
    assert!(
        res.outcomes
            .iter()
            .all(|o| o.merged && o.conflict_files.is_empty())
    );
    assert_eq!(
        res.outcomes
            .iter()
            .map(|o| o.subtask.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(f.read(&res.commit, "a.txt").as_deref(), Some("from a\n"));
    assert_eq!(f.read(&res.commit, "b.txt").as_deref(), Some("from b\n"));
    assert_eq!(f.read(&res.commit, "README.md").as_deref(), Some("hello\n"));

    // a fast-forwards, b needs a real merge commit on top of it.
    let head = commit_of(&f, &res.commit);
    assert_eq!(head.parent_ids().collect::<Vec<_>>(), [a, b]);
    assert_eq!(head.message(), Some("aida: merge b"));
    assert_eq!(head.committer().name(), Some(COMMITTER_NAME));
    assert_eq!(head.committer().email(), Some(COMMITTER_EMAIL));

    // The base branch and the working tree are untouched.
    assert_eq!(f.branch_target("main"), Some(f.base));
    assert_eq!(f.workdir_entries(), [".git"]);
}

#[test]
fn dependent_branch_merges_without_conflict() {
    let f = Fixture::new();
    let a = f.commit(Some(f.base), "work/a", &[("a.txt", Some("from a\n"))]);
    // b started from a's commit and edits the file a created.
    let b = f.commit(Some(a), "work/b", &[("a.txt", Some("from a\nand b\n"))]);
    let c = f.commit(Some(f.base), "work/c", &[("c.txt", Some("from c\n"))]);
    let task = TaskId::new();

    let res = merge_task(
        f.path(),
        &task,
        &f.base.to_string(),
        &[item("a", a), item("b", b), item("c", c)],
    )
    .unwrap();
    assert!(res.outcomes.iter().all(|o| o.merged), "{:?}", res.outcomes);
    assert_eq!(
        f.read(&res.commit, "a.txt").as_deref(),
        Some("from a\nand b\n")
    );
    assert_eq!(f.read(&res.commit, "c.txt").as_deref(), Some("from c\n"));
    // a then b fast-forward; only c needs a merge commit.
    assert_eq!(
        commit_of(&f, &res.commit).parent_ids().collect::<Vec<_>>(),
        [b, c]
    );

    // A commit already in the result (b contains a) is merged with no new commit.
    let res = merge_task(
        f.path(),
        &task,
        &f.base.to_string(),
        &[item("b", b), item("a", a)],
    )
    .unwrap();
    assert!(res.outcomes.iter().all(|o| o.merged));
    assert_eq!(res.commit, b.to_string());
}

#[test]
fn conflicting_branch_is_reported_and_left_out() {
    let f = Fixture::new();
    let a_text = SHARED.replace("two", "two by a");
    let b_text = SHARED.replace("two", "two by b");
    let a = f.commit(Some(f.base), "work/a", &[("shared.txt", Some(&a_text))]);
    let b = f.commit(Some(f.base), "work/b", &[("shared.txt", Some(&b_text))]);
    let c = f.commit(Some(f.base), "work/c", &[("src/c.rs", Some("fn c() {}\n"))]);
    let task = TaskId::new();

    let res = merge_task(
        f.path(),
        &task,
        &f.base.to_string(),
        &[item("a", a), item("b", b), item("c", c)],
    )
    .unwrap();

    let outcome = |name: &str| res.outcomes.iter().find(|o| o.subtask == name).unwrap();
    assert!(outcome("a").merged);
    assert!(!outcome("b").merged);
    assert_eq!(outcome("b").conflict_files, ["shared.txt"]);
    assert!(
        outcome("c").merged,
        "a clean branch after a conflict still merges"
    );
    assert_eq!(f.read(&res.commit, "shared.txt"), Some(a_text));
    assert_eq!(
        f.read(&res.commit, "src/c.rs").as_deref(),
        Some("fn c() {}\n")
    );
    let parents: Vec<Oid> = commit_of(&f, &res.commit).parent_ids().collect();
    assert_eq!(parents, [a, c], "b's commit must not be in the result");
    assert_eq!(f.branch_target("main"), Some(f.base));
}

#[test]
fn rerunning_resets_the_branch_and_gives_the_same_tree() {
    let f = Fixture::new();
    let a = f.commit(Some(f.base), "work/a", &[("a.txt", Some("a\n"))]);
    let b = f.commit(Some(f.base), "work/b", &[("b.txt", Some("b\n"))]);
    let task = TaskId::new();
    let items = [item("a", a), item("b", b)];

    let first = merge_task(f.path(), &task, &f.base.to_string(), &items).unwrap();
    // Someone moves the result branch elsewhere; a re-run must reset it.
    let stray = f.commit(Some(f.base), "work/stray", &[("stray.txt", Some("x\n"))]);
    f.repo
        .reference(&format!("refs/heads/{}", first.branch), stray, true, "test")
        .unwrap();

    let second = merge_task(f.path(), &task, &f.base.to_string(), &items).unwrap();
    assert_eq!(second.outcomes, first.outcomes);
    assert_eq!(f.tree_of(&second.commit), f.tree_of(&first.commit));
    // Deterministic: the same merge commits, whenever it runs.
    assert_eq!(second.commit, first.commit);
    assert_eq!(
        f.branch_target(&second.branch).unwrap().to_string(),
        second.commit
    );
    assert_eq!(f.read(&second.commit, "stray.txt"), None);
}

#[test]
fn no_items_points_the_branch_at_the_base() {
    let f = Fixture::new();
    let task = TaskId::new();
    let res = merge_task(f.path(), &task, &f.base.to_string(), &[]).unwrap();
    assert_eq!(res.commit, f.base.to_string());
    assert!(res.outcomes.is_empty());
}

#[test]
fn bad_inputs_are_rejected_before_anything_is_written() {
    let f = Fixture::new();
    let task = TaskId::new();
    let base = f.base.to_string();
    let a = f.commit(Some(f.base), "work/a", &[("a.txt", Some("a\n"))]);

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = merge_task(f.path(), &task, missing, &[]).unwrap_err();
    assert!(
        matches!(err, AggregatorError::CommitNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(missing));

    let err = merge_task(f.path(), &task, "HEAD", &[]).unwrap_err();
    assert!(
        matches!(err, AggregatorError::InvalidArgument(_)),
        "{err:?}"
    );

    let err = merge_task(
        f.path(),
        &task,
        &base,
        &[item("a", a), item("b", Oid::from_str(missing).unwrap())],
    )
    .unwrap_err();
    assert!(err.to_string().contains("items[1].commit"), "{err}");

    let err = merge_task(f.path(), &task, &base, &[item("bad name", a)]).unwrap_err();
    assert!(
        matches!(err, AggregatorError::InvalidArgument(_)),
        "{err:?}"
    );

    let not_repo = tempfile::tempdir().unwrap();
    let err = merge_task(not_repo.path(), &task, &base, &[]).unwrap_err();
    assert!(matches!(err, AggregatorError::NotARepo(_)), "{err:?}");
    let err = merge_task(&not_repo.path().join("nope"), &task, &base, &[]).unwrap_err();
    assert!(matches!(err, AggregatorError::RepoNotFound(_)), "{err:?}");

    assert_eq!(f.branch_target(&task.result_branch()), None);
}

#[test]
fn a_ref_below_the_result_branch_is_a_clear_precondition_error() {
    let f = Fixture::new();
    let task = TaskId::new();
    let blocker = format!("{}/x", task.result_branch());
    f.commit(Some(f.base), &blocker, &[("x.txt", Some("x\n"))]);

    let err = merge_task(f.path(), &task, &f.base.to_string(), &[]).unwrap_err();
    assert!(
        matches!(err, AggregatorError::FailedPrecondition(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains(&blocker), "{err}");
}

#[test]
fn a_checked_out_result_branch_is_not_moved() {
    let f = Fixture::new();
    let task = TaskId::new();
    let first = merge_task(f.path(), &task, &f.base.to_string(), &[]).unwrap();
    f.repo
        .set_head(&format!("refs/heads/{}", first.branch))
        .unwrap();
    let a = f.commit(Some(f.base), "work/a", &[("a.txt", Some("a\n"))]);

    let err = merge_task(f.path(), &task, &f.base.to_string(), &[item("a", a)]).unwrap_err();
    assert!(
        matches!(err, AggregatorError::FailedPrecondition(_)),
        "{err:?}"
    );
    assert_eq!(f.branch_target(&first.branch), Some(f.base));
}

/// The real layout: workers leave subtask branches `aida/<task>/<name>` in
/// the same repository the result branch goes to, and both must coexist.
#[test]
fn result_branch_coexists_with_subtask_branches() {
    let f = Fixture::new();
    let task = TaskId::new();
    let name = SubtaskName::parse("api").unwrap();
    let a = f.commit(
        Some(f.base),
        &task.subtask_branch(&name),
        &[("a.txt", Some("a\n"))],
    );
    let res = merge_task(f.path(), &task, &f.base.to_string(), &[item("api", a)]).unwrap();
    assert_eq!(res.commit, a.to_string());
}

/// A resolver's merge commit of `theirs` into `onto`, holding `text`.
fn resolution(f: &Fixture, onto: Oid, theirs: Oid, text: &str) -> Oid {
    let single = f.commit(Some(onto), "work/resolved", &[("shared.txt", Some(text))]);
    let tree = f.repo.find_commit(single).unwrap().tree().unwrap();
    let sig = git2::Signature::now("Resolver", "resolver@example.invalid").unwrap();
    let parents = [
        &commit_of(f, &onto.to_string()),
        &commit_of(f, &theirs.to_string()),
    ];
    f.repo
        .commit(None, &sig, &sig, "resolve", &tree, &parents)
        .unwrap()
}

#[test]
fn a_resolution_made_on_the_result_so_far_merges_the_conflicting_branch() {
    let f = Fixture::new();
    let a_text = SHARED.replace("two", "two by a");
    let b_text = SHARED.replace("two", "two by b");
    let a = f.commit(Some(f.base), "work/a", &[("shared.txt", Some(&a_text))]);
    let b = f.commit(Some(f.base), "work/b", &[("shared.txt", Some(&b_text))]);
    let c = f.commit(Some(f.base), "work/c", &[("c.txt", Some("c\n"))]);
    let task = TaskId::new();
    let first = merge_task(
        f.path(),
        &task,
        &f.base.to_string(),
        &[item("a", a), item("b", b), item("c", c)],
    )
    .unwrap();
    assert!(!first.outcomes[1].merged);
    // The result before b: the prefix a resolver works on.
    let onto = Oid::from_str(&first.outcomes[1].head).unwrap();
    let both = SHARED.replace("two", "two by a and b");
    let r = resolution(&f, onto, b, &both);
    let with = |resolution: Oid| MergeItem {
        resolution: resolution.to_string(),
        ..item("b", b)
    };

    let res = merge_task(
        f.path(),
        &task,
        &f.base.to_string(),
        &[item("a", a), with(r), item("c", c)],
    )
    .unwrap();
    assert!(res.outcomes.iter().all(|o| o.merged), "{:?}", res.outcomes);
    assert!(res.outcomes[1].resolved);
    assert_eq!(res.outcomes[1].head, r.to_string());
    assert_eq!(f.read(&res.commit, "shared.txt"), Some(both));
    assert_eq!(f.read(&res.commit, "c.txt").as_deref(), Some("c\n"));

    // Made on another result (here: without a), it is stale: b stays out.
    let elsewhere = resolution(&f, c, b, &b_text);
    let res = merge_task(
        f.path(),
        &task,
        &f.base.to_string(),
        &[item("a", a), with(elsewhere)],
    )
    .unwrap();
    assert!(!res.outcomes[1].merged && !res.outcomes[1].resolved);

    // Not a merge of b at all: refused before anything moves.
    let err = merge_task(
        f.path(),
        &task,
        &f.base.to_string(),
        &[item("a", a), with(c)],
    )
    .unwrap_err();
    assert!(matches!(err, AggregatorError::InvalidArgument(_)), "{err}");
}

#[test]
fn a_trial_merge_names_the_conflicting_branches_and_writes_nothing() {
    let f = Fixture::new();
    let a = f.commit(
        Some(f.base),
        "work/a",
        &[("shared.txt", Some(&SHARED.replace("two", "2a")))],
    );
    let b = f.commit(
        Some(f.base),
        "work/b",
        &[("shared.txt", Some(&SHARED.replace("two", "2b")))],
    );
    let c = f.commit(
        Some(f.base),
        "work/c",
        &[("shared.txt", Some(&SHARED.replace("five", "5c")))],
    );
    let d = f.commit(Some(a), "work/d", &[("d.txt", Some("d\n"))]);
    let refs_before = f.repo.references().unwrap().count();
    let objects = |f: &Fixture| {
        let mut n = 0;
        f.repo
            .odb()
            .unwrap()
            .foreach(|_| {
                n += 1;
                true
            })
            .unwrap();
        n
    };
    let objects_before = objects(&f);

    let task = TaskId::new();
    let found = trial_merge(
        f.path(),
        &task,
        &item("b", b),
        &[item("a", a), item("c", c), item("d", d)],
    )
    .unwrap();
    let names: Vec<(&str, Vec<String>)> = found
        .iter()
        .map(|c| (c.subtask.as_str(), c.files.clone()))
        .collect();
    // c edits another line of the same file; d builds on a, so it conflicts too.
    assert_eq!(
        names,
        [
            ("a", vec!["shared.txt".to_owned()]),
            ("d", vec!["shared.txt".to_owned()])
        ]
    );
    // A branch that contains the other never conflicts.
    assert!(
        trial_merge(f.path(), &task, &item("d", d), &[item("a", a)])
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.repo.references().unwrap().count(), refs_before);
    assert_eq!(
        objects(&f),
        objects_before,
        "a trial merge writes no object"
    );
    assert_eq!(f.workdir_entries(), [".git"]);
}

#[test]
fn a_trial_merge_agrees_with_the_whole_merge_on_renames_and_folders() {
    let f = Fixture::new();
    let task = TaskId::new();
    // A rename on one side and an edit of the same file on the other: the
    // whole merge follows the rename, so this is no conflict.
    let renamed = f.commit(
        Some(f.base),
        "work/renamed",
        &[("shared.txt", None), ("moved.txt", Some(SHARED))],
    );
    let edited = f.commit(
        Some(f.base),
        "work/edited",
        &[("shared.txt", Some(&SHARED.replace("five", "5")))],
    );
    assert!(
        trial_merge(f.path(), &task, &item("e", edited), &[item("r", renamed)])
            .unwrap()
            .is_empty()
    );
    // A file on one side where the other makes a folder of that name.
    let file = f.commit(Some(f.base), "work/file", &[("x", Some("a file\n"))]);
    let folder = f.commit(
        Some(f.base),
        "work/folder",
        &[("x/y", Some("in a folder\n"))],
    );
    let found = trial_merge(f.path(), &task, &item("d", folder), &[item("f", file)]).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    // A deletion against an edit conflicts, as in the whole merge.
    let deleted = f.commit(Some(f.base), "work/deleted", &[("shared.txt", None)]);
    let found = trial_merge(
        f.path(),
        &task,
        &item("e", edited),
        &[item("gone", deleted)],
    )
    .unwrap();
    assert_eq!(found[0].files, ["shared.txt"]);
}
