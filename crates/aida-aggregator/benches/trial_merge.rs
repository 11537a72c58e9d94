//! What seeing conflicts coming adds to a subtask's completion on a big
//! repository (50,000 files): when a subtask succeeds, its commit is merged
//! in memory with every other succeeded branch of the task
//! (`merge::trial_merge`). Held against the rest of a completion there:
//! the worker's commit of the agent's work in its worktree (the same git2
//! calls as `aida-worker`'s `commit_changes`: stage all, stage deletions,
//! write the tree, commit) and the aggregator's diff stats. And next to
//! plain git doing the same trial merges (`git merge-tree --write-tree`).
//!
//! `cargo bench -p aida-aggregator --bench trial_merge` measures with
//! criterion (group `trial_merge`: `completion/<files>`, `aida/<files>`,
//! `git/<files>`), 10 samples by default since a completion on 50,000
//! files takes a third of a second (`-- --sample-size 20` for more;
//! criterion's other options likewise). `FILES=50000` and `OTHERS=7`
//! change the shape. Then it prints criterion's medians, read back from the
//! `estimates.json` it wrote in this run
//! (`aida_tests::bench::criterion_estimates`), with the share trial merges
//! add to a completion and AIDA's time over git's; nothing when criterion
//! measured nothing (`cargo test --benches` runs each routine once).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use aida_aggregator::{merge, stats};
use aida_core::ids::TaskId;
use aida_proto::aggregator::MergeItem;
use aida_tests::bench;
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, criterion_group};
use git2::{IndexAddOption, Oid, Repository, Signature};

const GROUP: &str = "trial_merge";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn files() -> usize {
    env("FILES", 50_000).max(2)
}

fn others() -> usize {
    env("OTHERS", 7).max(1)
}

/// The path of file `i` of the repository.
fn file(i: usize) -> String {
    format!("src/m{:03}/f{i}.rs", i / 100)
}

fn trial_merge(c: &mut Criterion) {
    let (files, others) = (files(), others());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let t = Instant::now();
    let repo = Repository::init(path).unwrap();
    let sig = Signature::now("bench", "bench@example.invalid").unwrap();
    // 50,000 files in 500 folders, checked out: the worker commits from a
    // real working tree.
    for i in 0..files {
        if i % 100 == 0 {
            std::fs::create_dir_all(path.join(file(i)).parent().unwrap()).unwrap();
        }
        std::fs::write(
            path.join(file(i)),
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
    let last = file(files - 1);
    let mut items = Vec::new();
    for k in 0..others {
        let mut changes = vec![
            (file(k * 700 % (files - 1)), format!("// other {k}\n")),
            (
                file((k * 700 + 300) % (files - 1)),
                format!("// other {k}\n"),
            ),
        ];
        if k + 1 == others {
            changes.push((last.clone(), "// theirs\n".into()));
        }
        let id = commit_on(&repo, &sig, base, &changes);
        items.push(MergeItem {
            subtask: format!("o{k}"),
            branch: format!("other-{k}"),
            commit: id.to_string(),
            resolution: String::new(),
        });
    }
    // The measured subtask's commit: it edited the file the last other
    // branch rewrote.
    std::fs::write(path.join(&last), "// ours\n").unwrap();
    let subject = MergeItem {
        subtask: "s".into(),
        branch: "s".into(),
        commit: commit_all(&repo, &sig, &[base]).to_string(),
        resolution: String::new(),
    };
    let task = TaskId::new();

    let mut group = c.benchmark_group(GROUP);
    // Completions of a third of a second: as many in every sample.
    group.sampling_mode(SamplingMode::Flat);

    // The worker's commit of the agent's work, and the diff stats; writing
    // the work is not timed.
    let mut round = 0;
    group.bench_function(BenchmarkId::new("completion", files), |b| {
        b.iter_batched(
            || {
                round += 1;
                std::fs::write(path.join(&last), format!("// ours, round {round}\n")).unwrap();
                std::fs::write(path.join(format!("src/new{round}.rs")), "// new\n").unwrap();
                repo.head().unwrap().peel_to_commit().unwrap().id()
            },
            |head| {
                let commit = commit_all(&repo, &sig, &[head]);
                let changed =
                    stats::diff_stats(path, &head.to_string(), &commit.to_string()).unwrap();
                assert_eq!(changed.files_changed, 2);
            },
            BatchSize::PerIteration,
        );
    });

    group.bench_function(BenchmarkId::new("aida", files), |b| {
        b.iter(|| {
            let found = merge::trial_merge(path, &task, &subject, &items).unwrap();
            assert_eq!(found.len(), 1, "the last other branch conflicts");
        });
    });

    group.bench_function(BenchmarkId::new("git", files), |b| {
        b.iter(|| {
            let mut conflicts = 0;
            for item in &items {
                let out = Command::new("git")
                    .args(["merge-tree", "--write-tree", &subject.commit, &item.commit])
                    .current_dir(path)
                    .output()
                    .unwrap();
                conflicts += usize::from(out.status.code() == Some(1));
            }
            assert_eq!(conflicts, 1, "the last other branch conflicts");
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Criterion's fewest; `--sample-size` overrides it.
    config = Criterion::default().sample_size(10).without_plots();
    targets = trial_merge
}

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    if let Err(why) = report(started) {
        println!("\nno comparison: {why}");
    }
}

/// Criterion's medians of this run (since `started`), side by side.
fn report(started: SystemTime) -> Result<(), String> {
    let (files, others) = (files(), others());
    let median = |function: &str| {
        bench::criterion_estimates(&format!("{GROUP}/{function}/{files}"), started)
            .map(|e| e.median.duration())
    };
    let (completion, trial, git) = (median("completion")?, median("aida")?, median("git")?);
    println!("\nmedians, criterion's, {others} other succeeded branches:");
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
        ms(git)
    );
    println!(
        "  trial merges add {:.1}% to the completion; AIDA / git = {:.2}",
        100.0 * trial.as_secs_f64() / completion.as_secs_f64(),
        trial.as_secs_f64() / git.as_secs_f64()
    );
    Ok(())
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
