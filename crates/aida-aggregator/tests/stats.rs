//! Diff stats of a subtask's change in a real repository.

mod common;

use aida_aggregator::stats::diff_stats;
use common::{Fixture, SHARED};

#[test]
fn counts_files_insertions_and_deletions() {
    let f = Fixture::new();
    // Two lines of shared.txt rewritten, a three-line file added, the
    // one-line README removed.
    let edited = SHARED.replace("two", "TWO").replace("four", "FOUR");
    let c = f.commit(
        Some(f.base),
        "work/a",
        &[
            ("shared.txt", Some(&edited)),
            ("src/new.rs", Some("a\nb\nc\n")),
            ("README.md", None),
        ],
    );

    let stats = diff_stats(f.path(), &f.base.to_string(), &c.to_string()).unwrap();
    assert_eq!(stats.files_changed, 3);
    assert_eq!(stats.insertions, 2 + 3);
    assert_eq!(stats.deletions, 2 + 1);
    assert_eq!(stats.files, ["README.md", "shared.txt", "src/new.rs"]);
}

#[test]
fn equal_commits_change_nothing() {
    let f = Fixture::new();
    let base = f.base.to_string();
    let stats = diff_stats(f.path(), &base, &base).unwrap();
    assert_eq!(
        (stats.files_changed, stats.insertions, stats.deletions),
        (0, 0, 0)
    );
    assert!(stats.files.is_empty());
}

#[test]
fn abbreviated_ids_resolve() {
    let f = Fixture::new();
    let c = f.commit(Some(f.base), "work/a", &[("x.txt", Some("x\n"))]);
    let stats = diff_stats(f.path(), &f.base.to_string()[..10], &c.to_string()[..12]).unwrap();
    assert_eq!(stats.files, ["x.txt"]);
    assert_eq!(stats.insertions, 1);
}
