//! `.worktreeinclude` never follows a symlink: not in the repository it
//! copies from (a listed file, a directory on the way, the list itself),
//! not in the worktree it copies to (a committed `conf -> /etc`). Real
//! repositories, real symlinks pointing outside, real runs.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use aida_proto::common::LogLine;
use common::{Ctx, TestRepo};
use git2::{Oid, Signature};

/// Every path below `dir` with its content (directories: empty).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let content = if e.file_type().is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (e.path().to_path_buf(), content)
        })
        .collect()
}

fn notes(lines: &[LogLine]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == "aida" && l.line.starts_with(".worktreeinclude: "))
        .map(|l| l.line.trim_start_matches(".worktreeinclude: "))
        .collect()
}

/// Lists what the agent finds in its worktree (besides the repository's
/// own files) into seen.txt, which is committed.
const LIST_WORKTREE: &str = "find . -path ./.git -prune -o -type f -print -o -type l -print | grep -v -e '^./README.md$' -e '^./.gitignore$' -e '^./seen.txt$' | sort > seen.txt";

#[tokio::test]
async fn symlinks_in_the_repository_are_never_read_through() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("id_rsa"), "PRIVATE KEY\n").unwrap();
    std::fs::write(outside.path().join("x.pem"), "PEM\n").unwrap();
    let repo =
        TestRepo::with_files(&[(".gitignore", ".env\nlinked.env\nsecrets/\nlinkdir\ndeep\n")]);
    let root = repo.path();
    std::fs::write(root.join(".env"), "API_URL=x\n").unwrap();
    // A listed file that is a symlink to a file outside.
    symlink(outside.path().join("id_rsa"), root.join("linked.env")).unwrap();
    // A symlinked directory on the way to a listed path.
    symlink(outside.path(), root.join("linkdir")).unwrap();
    // A glob matching a real file and a symlink beside it.
    std::fs::create_dir(root.join("secrets")).unwrap();
    std::fs::write(root.join("secrets/dev.key"), "dev\n").unwrap();
    symlink(outside.path().join("id_rsa"), root.join("secrets/evil.key")).unwrap();
    // A symlinked directory that `**` would otherwise descend into.
    symlink(outside.path(), root.join("deep")).unwrap();
    std::fs::write(
        root.join(".worktreeinclude"),
        ".env\nlinked.env\nlinkdir/id_rsa\nlinkdir\nsecrets/*.key\n**/*.pem\n",
    )
    .unwrap();
    let outside_before = snapshot(outside.path());

    let ctx = Ctx::new();
    let (result, lines) = ctx
        .execute(repo.run("include", &["sh", "-c", LIST_WORKTREE]))
        .await;
    assert!(result.success, "{result:?} {lines:?}");
    assert_eq!(
        repo.file_at(&result.commit, "seen.txt").as_deref(),
        Some("./.env\n./secrets/dev.key\n"),
        "only the real files were copied"
    );
    assert!(
        common::has_line(
            &lines,
            "aida",
            "copied from .worktreeinclude: .env, secrets/dev.key"
        ),
        "{lines:?}"
    );
    let notes = notes(&lines);
    for skipped in ["linked.env", "linkdir", "secrets/evil.key"] {
        assert!(
            notes.contains(
                &format!("{skipped} skipped: it is a symlink, and symlinks are never followed")
                    .as_str()
            ),
            "{skipped} is said to be skipped: {notes:?}"
        );
    }
    assert_eq!(snapshot(outside.path()), outside_before);
}

#[tokio::test]
async fn a_symlinked_list_is_not_read() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("list"), ".env\n").unwrap();
    let repo = TestRepo::with_files(&[(".gitignore", ".env\n.worktreeinclude\n")]);
    std::fs::write(repo.path().join(".env"), "API_URL=x\n").unwrap();
    symlink(
        outside.path().join("list"),
        repo.path().join(".worktreeinclude"),
    )
    .unwrap();

    let ctx = Ctx::new();
    let (result, lines) = ctx
        .execute(repo.run("include", &["sh", "-c", LIST_WORKTREE]))
        .await;
    assert!(result.success, "{result:?} {lines:?}");
    assert_eq!(
        repo.file_at(&result.commit, "seen.txt").as_deref(),
        Some("")
    );
    assert_eq!(
        notes(&lines),
        [".worktreeinclude is a symlink; not read, nothing copied"]
    );
}

/// A commit on top of `parent` that adds symlinks (path, target).
fn commit_symlinks(repo: &TestRepo, parent: Oid, links: &[(&str, &Path)]) -> Oid {
    let git = repo.repo();
    let parent = git.find_commit(parent).unwrap();
    let mut tree = git.treebuilder(Some(&parent.tree().unwrap())).unwrap();
    for (path, target) in links {
        let blob = git.blob(target.as_os_str().as_encoded_bytes()).unwrap();
        tree.insert(path, blob, 0o120000).unwrap();
    }
    let tree = git.find_tree(tree.write().unwrap()).unwrap();
    let sig = Signature::now("test", "test@example.com").unwrap();
    git.commit(None, &sig, &sig, "links", &tree, &[&parent])
        .unwrap()
}

#[tokio::test]
async fn nothing_is_written_through_a_symlink_in_the_worktree() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("target.env"), "untouched\n").unwrap();
    let repo = TestRepo::with_files(&[(".gitignore", "conf/local.toml\nsettings.env\n.env\n")]);
    let root = repo.path();
    // The main working tree has real files where the run's commit has
    // symlinks pointing outside: `conf -> outside`, `settings.env ->
    // outside/target.env`.
    std::fs::create_dir(root.join("conf")).unwrap();
    std::fs::write(root.join("conf/local.toml"), "local = true\n").unwrap();
    std::fs::write(root.join("settings.env"), "FROM_REPO=1\n").unwrap();
    std::fs::write(root.join(".env"), "API_URL=x\n").unwrap();
    std::fs::write(
        root.join(".worktreeinclude"),
        "conf/local.toml\nsettings.env\n.env\n",
    )
    .unwrap();
    let with_links = commit_symlinks(
        &repo,
        repo.base,
        &[
            ("conf", outside.path()),
            ("settings.env", &outside.path().join("target.env")),
        ],
    );
    let outside_before = snapshot(outside.path());

    let ctx = Ctx::new();
    let mut run = repo.run("include", &["sh", "-c", "cat .env > seen.txt"]);
    run.base_commit = with_links.to_string();
    let (result, lines) = ctx.execute(run).await;
    assert!(result.success, "{result:?} {lines:?}");
    assert_eq!(
        repo.file_at(&result.commit, "seen.txt").as_deref(),
        Some("API_URL=x\n"),
        "the file without a symlink on its way was copied"
    );
    assert_eq!(
        snapshot(outside.path()),
        outside_before,
        "nothing was written outside the worktree"
    );
    let notes = notes(&lines);
    assert!(
        notes.contains(&"conf/local.toml not written: conf in the worktree is a symlink, and nothing is written through one"),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"settings.env not written: settings.env in the worktree is a symlink, and nothing is written through one"),
        "{notes:?}"
    );
    // The committed symlinks are still what they were.
    let git = repo.repo();
    let commit = git
        .find_commit(Oid::from_str(&result.commit).unwrap())
        .unwrap();
    let tree = commit.tree().unwrap();
    assert_eq!(tree.get_name("conf").unwrap().filemode(), 0o120000);
    assert_eq!(tree.get_name("settings.env").unwrap().filemode(), 0o120000);
}
