//! How long a run waits for its worktree on a big repository (50,000
//! files), held against plain git on the same repository in the same run:
//!
//! - `git worktree add` (and `git worktree remove`): the floor the issue
//!   measures against;
//! - a fresh worktree per run (`WORKTREE_POOL=false`): `prepare` adds one,
//!   `release` removes it;
//! - the pool (the default): the worker's worktree of the repository is
//!   reset to each run's start commit, which differs from the previous
//!   run's in a few files, as consecutive subtasks' do;
//! - a sparse worktree, for a subtask that declares its directories (here
//!   2 of the 500): added with only those, then the agent's one new file
//!   committed (the commit keeps the other 49,800 files) and removed.
//!
//! Each figure is the median of ROUNDS runs.
//!
//! `cargo bench -p aida-worker --bench worktree_start` (FILES=50000,
//! SIZE=4000 bytes per file, ROUNDS=5 to change the shape)

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aida_proto::common::SubtaskRun;
use aida_tests::bench::{self, Goal, Row};
use aida_worker::worktree;
use git2::{IndexAddOption, Oid, Repository, Signature};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let files = env("FILES", 50_000);
    let size = env("SIZE", 4_000);
    let rounds = env("ROUNDS", 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    let root = dir.path().join("worktrees");
    let floor = dir.path().join("git-floor");
    let t = Instant::now();
    let repo = Repository::init(&path).unwrap();
    let sig = Signature::now("bench", "bench@example.invalid").unwrap();
    let filler = "x".repeat(size.saturating_sub(40));
    for i in 0..files {
        let d = path.join(format!("src/m{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(
            d.join(format!("f{i}.rs")),
            format!("// file {i}\n// {filler}\n"),
        )
        .unwrap();
    }
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let base = repo
        .commit(Some("refs/heads/main"), &sig, &sig, "base", &tree, &[])
        .unwrap();
    repo.set_head("refs/heads/main").unwrap();
    // Start commits that differ from the base in three files each, as the
    // starts of consecutive subtasks of a task do.
    let starts: Vec<Oid> = (0..rounds + 1)
        .map(|k| {
            let base_commit = repo.find_commit(base).unwrap();
            let mut update = git2::build::TreeUpdateBuilder::new();
            for j in 0..3 {
                let n = (k * 3 + j) * 997 % files;
                let blob = repo.blob(format!("// start {k}\n").as_bytes()).unwrap();
                update.upsert(
                    format!("src/m{:03}/f{n}.rs", n / 100),
                    blob,
                    git2::FileMode::Blob,
                );
            }
            let tree = update
                .create_updated(&repo, &base_commit.tree().unwrap())
                .unwrap();
            let tree = repo.find_tree(tree).unwrap();
            repo.commit(
                None,
                &sig,
                &sig,
                &format!("start {k}"),
                &tree,
                &[&base_commit],
            )
            .unwrap()
        })
        .collect();
    let mb = files * size / 1_000_000;
    println!(
        "repository of {files} files ({mb} MB) ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let run = |k: usize, attempt: u32| SubtaskRun {
        task_id: aida_core::ids::TaskId::new().to_string(),
        subtask: format!("s{k}"),
        attempt,
        repo: path.display().to_string(),
        base_commit: starts[k].to_string(),
        ..Default::default()
    };

    // Plain git: add and remove a worktree at each start commit.
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    for start in &starts[..rounds] {
        let t = Instant::now();
        git(
            &path,
            &[
                "worktree",
                "add",
                "--quiet",
                "--detach",
                floor.to_str().unwrap(),
                &start.to_string(),
            ],
        );
        add.push(t.elapsed());
        let t = Instant::now();
        git(
            &path,
            &["worktree", "remove", "--force", floor.to_str().unwrap()],
        );
        remove.push(t.elapsed());
    }
    let git_add = median(add);
    let git_remove = median(remove);

    // A fresh worktree per run.
    let (mut prepare, mut release) = (Vec::new(), Vec::new());
    for k in 0..rounds {
        let r = run(k, 1);
        let branch = format!("aida/{}/{}", r.task_id, r.subtask);
        let t = Instant::now();
        let wt =
            worktree::prepare(&r, &branch, &root, "bench", false, &Default::default()).unwrap();
        prepare.push(t.elapsed());
        let t = Instant::now();
        worktree::release(&wt).unwrap();
        release.push(t.elapsed());
    }
    let fresh_prepare = median(prepare);
    let fresh_release = median(release);

    // The pool: the first run adds the worktree, every later one resets it.
    let r = run(rounds, 1);
    let branch = format!("aida/{}/{}", r.task_id, r.subtask);
    let t = Instant::now();
    let wt = worktree::prepare(&r, &branch, &root, "bench", true, &Default::default()).unwrap();
    let pool_first = t.elapsed();
    assert!(!wt.reused);
    worktree::release(&wt).unwrap();
    let (mut reset, mut handback) = (Vec::new(), Vec::new());
    for k in 0..rounds {
        let r = run(k, 1);
        let branch = format!("aida/{}/{}", r.task_id, r.subtask);
        let t = Instant::now();
        let wt = worktree::prepare(&r, &branch, &root, "bench", true, &Default::default()).unwrap();
        reset.push(t.elapsed());
        assert!(wt.reused);
        // The run's agent leaves some work behind.
        std::fs::write(wt.path.join("agent-output.txt"), "work\n").unwrap();
        let t = Instant::now();
        worktree::release(&wt).unwrap();
        handback.push(t.elapsed());
    }
    let pool_reset = median(reset);
    let pool_release = median(handback);

    // A sparse worktree of two directories.
    let paths = aida_core::sparse::SparsePaths::parse(&["src/m000", "src/m001"]).unwrap();
    let (mut sparse_add, mut sparse_commit, mut sparse_remove) =
        (Vec::new(), Vec::new(), Vec::new());
    for k in 0..rounds {
        let r = run(k, 2);
        let branch = format!("aida/{}/{}", r.task_id, r.subtask);
        let t = Instant::now();
        let wt = worktree::prepare(&r, &branch, &root, "bench", true, &paths).unwrap();
        sparse_add.push(t.elapsed());
        assert!(wt.sparse);
        std::fs::write(wt.path.join("src/m000/agent-output.rs"), "work\n").unwrap();
        let t = Instant::now();
        let committed =
            worktree::commit_changes(&wt, &r.subtask, "p", "bench", &Default::default()).unwrap();
        sparse_commit.push(t.elapsed());
        assert!(committed.created);
        let t = Instant::now();
        worktree::release(&wt).unwrap();
        sparse_remove.push(t.elapsed());
    }
    let sparse_prepare = median(sparse_add);
    let sparse_commit = median(sparse_commit);
    let sparse_release = median(sparse_remove);

    println!();
    println!(
        "| worktree for a run, {files} files ({mb} MB), median of {rounds} | ms | vs `git worktree add` |"
    );
    println!("| --- | ---: | ---: |");
    let row = |what: &str, d: Duration| {
        println!(
            "| {what} | {:.0} | {:.2}x |",
            ms(d),
            d.as_secs_f64() / git_add.as_secs_f64()
        );
    };
    row("`git worktree add --detach`", git_add);
    row("`git worktree remove --force`", git_remove);
    row("fresh worktree: prepare", fresh_prepare);
    row("fresh worktree: remove", fresh_release);
    row("pool, first run: prepare (adds)", pool_first);
    row("pool: prepare (reset to the next start)", pool_reset);
    row("pool: hand back", pool_release);
    row("sparse, 2 of 500 directories: prepare", sparse_prepare);
    row("sparse: commit one new file", sparse_commit);
    row("sparse: remove", sparse_release);
    let add = format!("`git worktree add` {:.0} ms", ms(git_add));
    bench::report(&[
        Row::ratio(
            format!("worktree start, {files} files, fresh worktree"),
            format!("{:.0} ms", ms(fresh_prepare)),
            add.clone(),
            fresh_prepare.as_secs_f64() / git_add.as_secs_f64(),
            Goal::AtMost(1.2),
        ),
        Row::ratio(
            format!("worktree start, {files} files, pooled worktree"),
            format!("{:.0} ms", ms(pool_reset)),
            add.clone(),
            pool_reset.as_secs_f64() / git_add.as_secs_f64(),
            Goal::AtMost(1.0),
        ),
        Row::ratio(
            format!("worktree start, {files} files, sparse (2 of 500 directories)"),
            format!("{:.0} ms", ms(sparse_prepare)),
            add.clone(),
            sparse_prepare.as_secs_f64() / git_add.as_secs_f64(),
            Goal::AtMost(1.0),
        ),
    ]);
}
