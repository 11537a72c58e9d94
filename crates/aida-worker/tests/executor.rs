//! The executor against real repositories and real agent processes.

mod common;

use std::time::{Duration, Instant};

use aida_worker::ExecContext;
use common::{Ctx, TestRepo, dependency, has_line};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn agent_work_is_committed_on_the_subtask_branch() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let run = repo.run(
        "write-out",
        &[
            "sh",
            "-c",
            r#"cat > stdin.txt; printf '%s' "$AIDA_PROMPT" > env.txt; echo hi > out.txt; rm README.md; echo "$AIDA_SUBTASK_NAME on $AIDA_BRANCH"; echo oops >&2; echo done"#,
        ],
    );
    let (result, lines) = ctx.execute(run.clone()).await;

    assert!(result.success, "{result:?}");
    assert_eq!(result.exit_code, 0);
    assert_eq!(result.branch, run.branch);
    assert_eq!(result.start_commit, repo.base.to_string());
    assert_ne!(result.commit, result.start_commit);

    let git = repo.repo();
    let head = git
        .refname_to_id(&format!("refs/heads/{}", run.branch))
        .unwrap();
    assert_eq!(head.to_string(), result.commit);
    let commit = git.find_commit(head).unwrap();
    assert_eq!(commit.parent_id(0).unwrap(), repo.base);
    assert_eq!(
        commit.message().unwrap(),
        "aida: write-out\n\ndo write-out\n"
    );
    assert_eq!(commit.author().name().unwrap(), "AIDA worker test-worker");
    assert_eq!(commit.author().email().unwrap(), "worker@aida.local");

    assert_eq!(
        repo.file_at(&result.commit, "out.txt").as_deref(),
        Some("hi\n")
    );
    assert_eq!(
        repo.file_at(&result.commit, "stdin.txt").as_deref(),
        Some(run.prompt.as_str())
    );
    assert_eq!(
        repo.file_at(&result.commit, "env.txt").as_deref(),
        Some(run.prompt.as_str())
    );
    assert_eq!(
        repo.file_at(&result.commit, "README.md"),
        None,
        "deletion is committed"
    );

    assert!(has_line(&lines, "stdout", "done"), "{lines:?}");
    assert!(has_line(&lines, "stderr", "oops"), "{lines:?}");
    assert!(has_line(
        &lines,
        "stdout",
        &format!("write-out on {}", run.branch)
    ));
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "aida" && l.line.starts_with("worktree ready at"))
    );
    assert!(has_line(
        &lines,
        "aida",
        &format!("committed {}", result.commit)
    ));

    ctx.assert_released(&run);
    assert_eq!(repo.main_head(), repo.base, "base branch unchanged");
    assert!(
        git.statuses(None).unwrap().is_empty(),
        "main working tree untouched"
    );
}

#[tokio::test]
async fn nothing_changed_reports_the_start_commit_and_agent_commits_are_kept() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let (result, _) = ctx.execute(repo.run("noop", &["true"])).await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.commit, repo.base.to_string());

    // An agent that commits part of its work itself: the rest goes on top.
    let run = repo.run(
        "self-commit",
        &[
            "sh",
            "-c",
            "echo one > one.txt && git add one.txt && git -c user.name=a -c user.email=a@b commit -qm mine && echo two > two.txt",
        ],
    );
    let (result, _) = ctx.execute(run).await;
    assert!(result.success, "{result:?}");
    let git = repo.repo();
    let head = git.find_commit(result.commit.parse().unwrap()).unwrap();
    assert!(head.message().unwrap().starts_with("aida: self-commit"));
    assert_eq!(head.parent(0).unwrap().message().unwrap().trim(), "mine");
    assert_eq!(head.parent(0).unwrap().parent_id(0).unwrap(), repo.base);
    assert!(repo.file_at(&result.commit, "one.txt").is_some());
    assert!(repo.file_at(&result.commit, "two.txt").is_some());
}

#[tokio::test]
async fn dependencies_are_merged_into_the_start_commit() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let run_a = repo.run("a", &["sh", "-c", "echo from-a > a.txt"]);
    let (a, _) = ctx.execute(run_a.clone()).await;
    assert!(a.success, "{a:?}");
    let run_c = repo.run("c", &["sh", "-c", "echo from-c > c.txt"]);
    let (c, _) = ctx.execute(run_c.clone()).await;
    assert!(c.success, "{c:?}");

    // Only A: a fast-forward, B starts right at A's commit.
    let mut run_b = repo.run("b", &["sh", "-c", "cat a.txt > seen.txt"]);
    run_b.dependencies = vec![dependency(&run_a, &a)];
    let (b, _) = ctx.execute(run_b).await;
    assert!(b.success, "{b:?}");
    assert_eq!(b.start_commit, a.commit);
    assert_eq!(
        repo.file_at(&b.commit, "seen.txt").as_deref(),
        Some("from-a\n")
    );

    // A and C diverge: C is merged with a merge commit; A listed twice is
    // skipped the second time.
    let mut run_d = repo.run("d", &["sh", "-c", "cat a.txt c.txt > seen.txt"]);
    run_d.dependencies = vec![
        dependency(&run_a, &a),
        dependency(&run_c, &c),
        dependency(&run_a, &a),
    ];
    let (d, _) = ctx.execute(run_d).await;
    assert!(d.success, "{d:?}");
    assert_eq!(
        repo.file_at(&d.commit, "seen.txt").as_deref(),
        Some("from-a\nfrom-c\n")
    );
    let git = repo.repo();
    let start = git.find_commit(d.start_commit.parse().unwrap()).unwrap();
    assert_eq!(start.message().unwrap(), "aida: merge dependency c");
    assert_eq!(
        start
            .parent_ids()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        vec![a.commit.clone(), c.commit.clone()]
    );
    assert_eq!(repo.main_head(), repo.base);
}

#[tokio::test]
async fn conflicting_dependencies_fail_naming_dependency_and_files() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let run_x = repo.run("x", &["sh", "-c", "echo x > README.md"]);
    let (x, _) = ctx.execute(run_x.clone()).await;
    let run_y = repo.run("y", &["sh", "-c", "echo y > README.md"]);
    let (y, _) = ctx.execute(run_y.clone()).await;
    assert!(x.success && y.success);

    let mut run = repo.run("z", &["sh", "-c", "echo should-not-run > ran.txt"]);
    run.dependencies = vec![dependency(&run_x, &x), dependency(&run_y, &y)];
    let (result, _) = ctx.execute(run.clone()).await;
    assert!(!result.success);
    assert!(result.error.contains("dependency y"), "{}", result.error);
    assert!(result.error.contains("README.md"), "{}", result.error);
    ctx.assert_released(&run);
}

#[tokio::test]
async fn failing_agents_give_clear_errors() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();

    let run = repo.run("fails", &["sh", "-c", "echo partial > p.txt; exit 3"]);
    let (result, _) = ctx.execute(run.clone()).await;
    assert!(!result.success);
    assert_eq!(result.exit_code, 3);
    assert!(
        result.error.contains("agent exited with code 3"),
        "{}",
        result.error
    );
    // Partial work is kept on the branch for inspection.
    assert_eq!(
        repo.file_at(&result.commit, "p.txt").as_deref(),
        Some("partial\n")
    );
    ctx.assert_released(&run);

    let run = repo.run("missing", &["/nonexistent/aida-agent-xyz", "--flag"]);
    let (result, _) = ctx.execute(run.clone()).await;
    assert!(!result.success);
    assert!(
        result
            .error
            .contains("cannot start agent program \"/nonexistent/aida-agent-xyz\""),
        "{}",
        result.error
    );
    ctx.assert_released(&run);

    let mut run = repo.run("empty", &[]);
    let (result, _) = ctx.execute(run.clone()).await;
    assert!(!result.success);
    assert!(
        result.error.contains("non-empty command"),
        "{}",
        result.error
    );

    run.agent.as_mut().unwrap().kind = "no-such-kind".into();
    let (result, _) = ctx.execute(run).await;
    assert!(!result.success);
    assert!(
        result.error.contains("\"no-such-kind\""),
        "{}",
        result.error
    );
}

#[tokio::test]
async fn retrying_an_attempt_resets_the_branch() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let mut run = repo.run("retry", &["sh", "-c", "echo first > f.txt"]);
    let (first, _) = ctx.execute(run.clone()).await;
    assert!(first.success);
    // A worker that died mid-run left attempt 2's worktree on the branch.
    run.attempt = 2;
    let leftover = aida_worker::worktree::prepare(
        &run,
        &run.branch,
        &ctx.ctx.worktree_root,
        "dead",
        false,
        &Default::default(),
    )
    .unwrap();
    assert!(leftover.path.exists());
    run.attempt = 3;
    run.agent = Some(common::command(&["sh", "-c", "echo second > s.txt"]));
    let (second, _) = ctx.execute(run.clone()).await;
    assert!(second.success, "{second:?}");
    assert_eq!(repo.file_at(&second.commit, "f.txt"), None);
    assert!(repo.file_at(&second.commit, "s.txt").is_some());
    assert!(
        !leftover.path.exists(),
        "the dead attempt's worktree is cleared"
    );
    ctx.assert_released(&run);
}

/// Alive and not a zombie (an orphan may wait a moment to be reaped).
fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .chars()
        .next();
    !matches!(state, Some('Z') | Some('X') | None)
}

#[tokio::test]
async fn cancelling_kills_the_whole_process_group() {
    let repo = TestRepo::new();
    let test_ctx = Ctx::new();
    let ctx: ExecContext = test_ctx.ctx.clone();
    let run = repo.run(
        "slow",
        &[
            "sh",
            "-c",
            "sleep 1000 & echo child=$!; echo shell=$$; wait",
        ],
    );
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let handle = {
        let (ctx, cancel, run) = (ctx.clone(), cancel.clone(), run.clone());
        tokio::spawn(async move { aida_worker::run_subtask(run, &ctx, tx, cancel).await })
    };

    let (mut child, mut shell) = (None, None);
    while child.is_none() || shell.is_none() {
        let line = rx.recv().await.expect("agent output before it ends");
        if let Some(pid) = line.line.strip_prefix("child=") {
            child = Some(pid.parse::<i32>().unwrap());
        }
        if let Some(pid) = line.line.strip_prefix("shell=") {
            shell = Some(pid.parse::<i32>().unwrap());
        }
    }
    let (child, shell) = (child.unwrap(), shell.unwrap());
    assert!(alive(child) && alive(shell));

    cancel.cancel();
    while rx.recv().await.is_some() {}
    let result = handle.await.unwrap();
    assert!(!result.success);
    assert_eq!(result.error, "cancelled");

    let deadline = Instant::now() + Duration::from_secs(5);
    while (alive(child) || alive(shell)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(shell), "agent process {shell} survived cancellation");
    assert!(
        !alive(child),
        "background child {child} survived cancellation"
    );
    assert!(
        aida_worker::pool::Slot::of(&ctx.worktree_root, &repo.repo()).is_idle(),
        "the cancelled run handed its worktree back"
    );
}

#[tokio::test]
async fn concurrent_runs_on_one_repository_do_not_interfere() {
    let repo = TestRepo::new();
    // Separate roots, as separate workers have.
    let workers: Vec<Ctx> = (0..4).map(|_| Ctx::new()).collect();
    let runs: Vec<_> = (0..4)
        .map(|i| {
            repo.run(
                &format!("par{i}"),
                &["sh", "-c", &format!("echo {i} > f{i}.txt")],
            )
        })
        .collect();
    let results = futures::future::join_all(
        workers
            .iter()
            .zip(runs.iter())
            .map(|(w, r)| w.execute(r.clone())),
    )
    .await;
    for (i, (result, _)) in results.iter().enumerate() {
        assert!(result.success, "{result:?}");
        assert_eq!(
            repo.file_at(&result.commit, &format!("f{i}.txt")),
            Some(format!("{i}\n"))
        );
        assert_eq!(
            repo.file_at(&result.commit, &format!("f{}.txt", (i + 1) % 4)),
            None
        );
    }
    for (worker, run) in workers.iter().zip(&runs) {
        worker.assert_released(run);
    }
}

#[tokio::test]
async fn a_command_agents_summary_is_its_last_line() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let run = repo.run(
        "summary",
        &["sh", "-c", "echo first; echo 'Added the API'; echo"],
    );
    let (result, _) = ctx.execute(run).await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.summary, "Added the API");
}

#[tokio::test]
async fn a_read_only_run_answers_from_a_snapshot_and_changes_nothing() {
    let repo = TestRepo::with_files(&[("src/lib.rs", "pub fn api() {}\n")]);
    let ctx = Ctx::new();
    // The user's own uncommitted work in the main working tree.
    std::fs::write(repo.path().join("README.md"), "edited by the user\n").unwrap();
    let status_before = repo.repo().statuses(None).unwrap().len();
    let branches_before = repo.repo().branches(None).unwrap().count();

    let mut run = repo.run(
        "_plan",
        &[
            "sh",
            "-c",
            // Reads the snapshot, tries to change it, prints a multi-line answer.
            r#"test -f src/lib.rs && test ! -d .git && echo scribble > src/lib.rs && printf '{"subtasks": [\n  {"name": "api", "prompt": "p"}\n]}\n'"#,
        ],
    );
    run.read_only = true;
    run.branch.clear();
    let (result, lines) = ctx.execute(run.clone()).await;

    assert!(result.success, "{result:?} {lines:?}");
    assert_eq!(
        result.output,
        "{\"subtasks\": [\n  {\"name\": \"api\", \"prompt\": \"p\"}\n]}\n"
    );
    assert_eq!(result.start_commit, repo.base.to_string());
    // Nothing reached the repository: no branch, no worktree, no commit,
    // the user's index and working tree as they were, the snapshot gone.
    let git = repo.repo();
    assert_eq!(git.branches(None).unwrap().count(), branches_before);
    assert_eq!(git.worktrees().unwrap().len(), 0);
    assert_eq!(repo.main_head(), repo.base);
    assert_eq!(git.statuses(None).unwrap().len(), status_before);
    assert_eq!(
        std::fs::read_to_string(repo.path().join("README.md")).unwrap(),
        "edited by the user\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join("src/lib.rs")).unwrap(),
        "pub fn api() {}\n"
    );
    assert_eq!(
        std::fs::read_dir(&ctx.ctx.worktree_root).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn a_follow_up_commits_on_top_of_the_previous_commit_on_the_same_branch() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let run_dep = repo.run("dep", &["sh", "-c", "echo dep > dep.txt"]);
    let (dep, _) = ctx.execute(run_dep.clone()).await;
    assert!(dep.success, "{dep:?}");
    let first_run = repo.run("api", &["sh", "-c", "echo one > one.txt"]);
    let (first, _) = ctx.execute(first_run.clone()).await;
    assert!(first.success, "{first:?}");

    // The same subtask again, told to continue: the branch keeps its work,
    // and dependencies are not merged in again.
    let follow_up = aida_proto::common::SubtaskRun {
        attempt: 2,
        prompt: "now add two".into(),
        continue_from: first.commit.clone(),
        dependencies: vec![dependency(&run_dep, &dep)],
        agent: Some(common::command(&[
            "sh",
            "-c",
            "cat one.txt > seen.txt; test -e dep.txt && echo merged >> seen.txt; echo two > two.txt",
        ])),
        ..first_run.clone()
    };
    let (second, lines) = ctx.execute(follow_up.clone()).await;
    assert!(second.success, "{second:?} {lines:?}");
    assert_eq!(second.branch, first_run.branch);
    assert_eq!(second.start_commit, first.commit);
    assert!(
        has_line(
            &lines,
            "aida",
            &format!(
                "worktree ready at {}, continuing branch {} from {} (a follow-up)",
                ctx.worktree_dir(&follow_up).display(),
                first_run.branch,
                first.commit
            )
        ),
        "{lines:?}"
    );
    let git = repo.repo();
    let tip = git
        .refname_to_id(&format!("refs/heads/{}", first_run.branch))
        .unwrap();
    assert_eq!(tip.to_string(), second.commit);
    let commit = git.find_commit(tip).unwrap();
    assert_eq!(commit.parent_ids().count(), 1);
    assert_eq!(commit.parent_id(0).unwrap().to_string(), first.commit);
    assert_eq!(commit.message().unwrap(), "aida: api\n\nnow add two\n");
    assert_eq!(
        repo.file_at(&second.commit, "seen.txt").as_deref(),
        Some("one\n"),
        "started from the first run's work, without the dependency"
    );
    assert!(repo.file_at(&second.commit, "one.txt").is_some());
    assert!(repo.file_at(&second.commit, "two.txt").is_some());
    ctx.assert_released(&follow_up);
    assert_eq!(repo.main_head(), repo.base);
}

#[tokio::test]
async fn a_follow_up_retry_starts_over_and_a_moved_or_missing_branch_is_refused() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let first_run = repo.run("api", &["sh", "-c", "echo one > one.txt"]);
    let (first, _) = ctx.execute(first_run.clone()).await;
    assert!(first.success, "{first:?}");
    let agent = common::command(&["sh", "-c", "echo ran > ran.txt"]);

    // A retry of a follow-up whose earlier attempt left partial work on top
    // of where it starts: the branch is reset to the start, as for any retry.
    let retried = aida_proto::common::SubtaskRun {
        attempt: 2,
        continue_from: repo.base.to_string(),
        agent: Some(agent.clone()),
        ..first_run.clone()
    };
    let (result, lines) = ctx.execute(retried.clone()).await;
    assert!(result.success, "{result:?} {lines:?}");
    let git = repo.repo();
    let commit = git
        .find_commit(git2::Oid::from_str(&result.commit).unwrap())
        .unwrap();
    assert_eq!(
        commit.parent_id(0).unwrap(),
        repo.base,
        "started over from the base"
    );
    assert!(repo.file_at(&result.commit, "one.txt").is_none());

    // Someone pointed the branch elsewhere (not on top of the start): it is
    // left alone and the follow-up refused.
    let sig = git2::Signature::now("someone", "someone@example.com").unwrap();
    let base = git.find_commit(repo.base).unwrap();
    let elsewhere = git
        .commit(
            None,
            &sig,
            &sig,
            "elsewhere",
            &base.tree().unwrap(),
            &[&base],
        )
        .unwrap();
    git.reference(
        &format!("refs/heads/{}", first_run.branch),
        elsewhere,
        true,
        "someone moved it",
    )
    .unwrap();
    let moved = aida_proto::common::SubtaskRun {
        attempt: 3,
        continue_from: result.commit.clone(),
        agent: Some(agent.clone()),
        ..first_run.clone()
    };
    let (refused, _) = ctx.execute(moved.clone()).await;
    assert!(!refused.success && refused.permanent, "{refused:?}");
    assert_eq!(
        refused.error,
        format!(
            "branch {} moved: its tip is {}, the follow-up expected {}",
            first_run.branch, elsewhere, result.commit
        )
    );
    let tip = git
        .refname_to_id(&format!("refs/heads/{}", first_run.branch))
        .unwrap();
    assert_eq!(tip, elsewhere, "the branch is left alone");
    ctx.assert_released(&moved);

    // A subtask that never ran has no branch to continue.
    let never_ran = aida_proto::common::SubtaskRun {
        continue_from: repo.base.to_string(),
        ..repo.run("other", &["true"])
    };
    let (result, _) = ctx.execute(never_ran.clone()).await;
    assert!(result.permanent, "{result:?}");
    assert_eq!(
        result.error,
        format!(
            "branch {} does not exist: a follow-up continues the subtask's earlier work",
            never_ran.branch
        )
    );
    assert!(
        git.find_reference(&format!("refs/heads/{}", never_ran.branch))
            .is_err()
    );

    // Only a full commit id is accepted.
    for bad in ["main", "HEAD", &first.commit[..12]] {
        let run = aida_proto::common::SubtaskRun {
            continue_from: bad.to_owned(),
            ..first_run.clone()
        };
        let (result, _) = ctx.execute(run).await;
        assert!(result.permanent, "{bad}: {result:?}");
        assert_eq!(result.error, "continue_from must be a full commit id");
    }
}
