//! What seeing conflicts coming adds to a subtask's completion on a big
//! repository (50,000 files): when a subtask succeeds, its commit is merged
//! in memory with every other succeeded branch of the task
//! (`merge::trial_merge`). Held against the rest of a completion there:
//! the worker's commit of the agent's work in its worktree (the same git2
//! calls as `aida-worker`'s `commit_changes`: stage all, stage deletions,
//! write the tree, commit) and the aggregator's diff stats. And next to
//! plain git doing the same trial merges (`git merge-tree --write-tree`).
//!
//! `cargo bench -p aida-aggregator --bench trial_merge` (FILES=50000,
//! OTHERS=7, ROUNDS=5 to change the shape)

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aida_aggregator::{merge, stats};
use aida_core::ids::TaskId;
use aida_proto::aggregator::MergeItem;
use git2::{IndexAddOption, Oid, Repository, Signature};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let files = env("FILES", 50_000);
    let others = env("OTHERS", 7);
    let rounds = env("ROUNDS", 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let t = Instant::now();
    let repo = Repository::init(path).unwrap();
    let sig = Signature::now("bench", "bench@example.invalid").unwrap();
    // 50,000 files in 500 folders, checked out: the worker commits from a
    // real working tree.
    for i in 0..files {
        let d = path.join(format!("src/m{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(
            d.join(format!("f{i}.rs")),
            format!("// file {i}\npub fn f{i}() -> u32 {{\n    {i}\n}}\n"),
        )
        .unwrap();
    }
    let base = commit_all(&repo, &sig, &[]);
    println!(
        "repository of {files} files ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // The task's other succeeded branches: each changed two files of its
    // own; the last one also rewrote the file the measured subtask edits.
    let mut items = Vec::new();
    for k in 0..others {
        let mut changes = vec![
            (
                format!("src/m{:03}/f{}.rs", k * 7, k * 700),
                format!("// other {k}\n"),
            ),
            (
                format!("src/m{:03}/f{}.rs", k * 7 + 3, k * 700 + 300),
                format!("// other {k}\n"),
            ),
        ];
        if k + 1 == others {
            changes.push(("src/m499/f49999.rs".into(), "// theirs\n".into()));
        }
        let id = commit_on(&repo, &sig, base, &changes);
        items.push(MergeItem {
            subtask: format!("o{k}"),
            branch: format!("other-{k}"),
            commit: id.to_string(),
            resolution: String::new(),
        });
    }
    let task = TaskId::new();

    let (mut completion, mut trial, mut git_floor) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // The worker's commit of the agent's work, and the diff stats.
        let head = repo.head().unwrap().peel_to_commit().unwrap().id();
        std::fs::write(
            path.join("src/m499/f49999.rs"),
            format!("// ours, round {round}\n"),
        )
        .unwrap();
        std::fs::write(path.join(format!("src/m250/new{round}.rs")), "// new\n").unwrap();
        let t = Instant::now();
        let commit = commit_all(&repo, &sig, &[head]);
        let changed = stats::diff_stats(path, &head.to_string(), &commit.to_string()).unwrap();
        completion.push(t.elapsed());
        assert_eq!(changed.files_changed, 2);

        let subject = MergeItem {
            subtask: "s".into(),
            branch: "s".into(),
            commit: commit.to_string(),
            resolution: String::new(),
        };
        let t = Instant::now();
        let found = merge::trial_merge(path, &task, &subject, &items).unwrap();
        trial.push(t.elapsed());
        assert_eq!(found.len(), 1, "the last other branch conflicts");

        let t = Instant::now();
        let mut conflicts = 0;
        for item in &items {
            let out = Command::new("git")
                .args(["merge-tree", "--write-tree", &subject.commit, &item.commit])
                .current_dir(path)
                .output()
                .unwrap();
            conflicts += usize::from(out.status.code() == Some(1));
        }
        git_floor.push(t.elapsed());
        assert_eq!(conflicts, 1);
    }
    let (completion, trial, git_floor) = (median(completion), median(trial), median(git_floor));
    println!("medians of {rounds} rounds, {others} other succeeded branches:");
    println!(
        "  completion (commit in a {files}-file worktree + diff stats): {:>8.1} ms",
        ms(completion)
    );
    println!(
        "  trial merges, AIDA (in memory):                             {:>8.1} ms",
        ms(trial)
    );
    println!(
        "  trial merges, plain git (git merge-tree --write-tree):      {:>8.1} ms",
        ms(git_floor)
    );
    println!(
        "  trial merges add {:.1}% to the completion; AIDA / git = {:.2}",
        100.0 * trial.as_secs_f64() / completion.as_secs_f64(),
        trial.as_secs_f64() / git_floor.as_secs_f64()
    );
}

/// Stages everything in the working tree and commits it on HEAD, as the
/// worker does.
fn commit_all(repo: &Repository, sig: &Signature<'_>, parents: &[Oid]) -> Oid {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let parents: Vec<git2::Commit<'_>> = parents
        .iter()
        .map(|p| repo.find_commit(*p).unwrap())
        .collect();
    let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
    repo.commit(Some("HEAD"), sig, sig, "work", &tree, &parents)
        .unwrap()
}

/// A commit on `base` with `changes` written, made in the object database.
fn commit_on(
    repo: &Repository,
    sig: &Signature<'_>,
    base: Oid,
    changes: &[(String, String)],
) -> Oid {
    let base = repo.find_commit(base).unwrap();
    let mut index = git2::Index::new().unwrap();
    index.read_tree(&base.tree().unwrap()).unwrap();
    for (file, text) in changes {
        let blob = repo.blob(text.as_bytes()).unwrap();
        let mut entry = index.get_path(Path::new(file), 0).unwrap();
        entry.id = blob;
        entry.file_size = text.len() as u32;
        index.add(&entry).unwrap();
    }
    let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
    repo.commit(None, sig, sig, "other", &tree, &[&base])
        .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
