//! Diffs for review, against what `git diff` says of the same commits.

mod common;

use std::process::Command;

use aida_aggregator::AggregatorError;
use aida_aggregator::diff::diff;
use common::{Fixture, SHARED};

fn git_diff(f: &Fixture, from: &str, to: &str, path: Option<&str>) -> String {
    let mut cmd = Command::new("git");
    cmd.args(["-c", "core.abbrev=7", "diff", "--find-renames", from, to])
        .current_dir(f.path());
    if let Some(path) = path {
        cmd.args(["--", path]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// git and libgit2 score a rename's similarity each their own way (here
/// 95% and 98%): the one line that may differ.
fn without_score(patch: &str) -> String {
    patch
        .lines()
        .filter(|l| !l.starts_with("similarity index "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn a_diff_is_what_git_diff_says_with_renames_and_binary_files() {
    let f = Fixture::new();
    let long = "line\n".repeat(40);
    let start = f.commit(
        Some(f.base),
        "work/start",
        &[
            ("old/name.txt", Some(&long)),
            ("image.bin", Some("\0\x01\x02")),
        ],
    );
    let end = f.commit(
        Some(start),
        "work/end",
        &[
            (
                "shared.txt",
                Some(&SHARED.replace("three", "three\nthree and a half")),
            ),
            ("old/name.txt", None),
            ("new/name.txt", Some(&format!("{long}one more\n"))),
            ("image.bin", Some("\0\x01\x03\x04")),
            ("README.md", None),
            ("added.txt", Some("new\n")),
        ],
    );
    let (from, to) = (start.to_string(), end.to_string());
    let d = diff(f.path(), &from, &to, "").unwrap();
    assert_eq!(
        without_score(&d.patch),
        without_score(&git_diff(&f, &from, &to, None))
    );
    assert!(d.patch.contains("similarity index "));
    assert!(!d.truncated);

    let file = |path: &str| d.files.iter().find(|x| x.path == path).unwrap();
    let renamed = file("new/name.txt");
    assert_eq!(
        (
            renamed.status.as_str(),
            renamed.old_path.as_str(),
            renamed.additions
        ),
        ("renamed", "old/name.txt", 1)
    );
    let binary = file("image.bin");
    assert!(binary.binary && binary.hunks.is_empty(), "{binary:?}");
    assert_eq!(file("README.md").status, "deleted");
    assert_eq!(file("added.txt").status, "added");
    let shared = file("shared.txt");
    assert_eq!((shared.additions, shared.deletions), (1, 0));
    let added: Vec<&str> = shared.hunks[0]
        .lines
        .iter()
        .filter(|l| l.origin == "+")
        .map(|l| l.content.as_str())
        .collect();
    assert_eq!(added, ["three and a half"]);
    assert!(
        shared.hunks[0].header.starts_with("@@ -1,5 +1,6 @@"),
        "{:?}",
        shared.hunks[0]
    );

    // One file, by its path.
    let one = diff(f.path(), &from, &to, "shared.txt").unwrap();
    assert_eq!(one.files.len(), 1);
    assert_eq!(one.patch, git_diff(&f, &from, &to, Some("shared.txt")));
    // A renamed file, asked for by its old path, is the rename.
    let renamed = diff(f.path(), &from, &to, "old/name.txt").unwrap();
    assert_eq!(renamed.files.len(), 1);
    assert_eq!(renamed.files[0].status, "renamed");
    assert!(
        renamed
            .patch
            .contains("rename from old/name.txt\nrename to new/name.txt\n")
    );
    let err = diff(f.path(), &from, &to, "nope.txt").unwrap_err();
    assert!(matches!(err, AggregatorError::InvalidArgument(_)), "{err}");
}
