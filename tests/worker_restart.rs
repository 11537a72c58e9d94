//! A worker killed mid-run leaves its worktree behind; the worker that comes
//! back with the same WORKER_ID removes it before taking work. The subtask's
//! branch stays.

use std::process::Command;

use aida_tests::process::Proc;
use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, System, eventually};
use serde_json::json;

fn kill9(target: &str) {
    let status = Command::new("kill")
        .args(["-KILL", "--", target])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {target}");
}

/// Gone, or a zombie nobody reaped yet: either way it runs no more.
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_back_with_the_same_id_removes_the_worktree_it_left() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("agent.pid");
    let first_run = scratch.path().join("first-run");
    // The first run hangs until killed; a later attempt (if the orchestrator
    // retries) finishes at once.
    let script = format!(
        "if [ -e '{first}' ]; then echo again; exit 0; fi; touch '{first}'; \
         echo $$ > '{pid}'; echo started; exec sleep 600",
        first = first_run.display(),
        pid = pid_file.display()
    );
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "subtasks": [{"name": "work", "prompt": "p", "agent": sh_agent(&script)}]
        }))
        .await;
    let agent_pid: u32 = eventually("the agent to start", || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;

    let root = system.dir.path().join("worktrees").join("worker-1");
    let branch = format!("aida/{task_id}/work");
    let worktree = std::path::PathBuf::from(
        repo.worktree_of(&branch)
            .expect("a worktree has the run's branch"),
    );
    assert!(worktree.starts_with(&root), "{}", worktree.display());
    assert!(worktree.join(".git").is_file(), "the run's worktree exists");
    let listed = repo.git(&["worktree", "list", "--porcelain"]);
    assert!(
        listed.contains(worktree.to_str().unwrap()) && listed.contains("locked"),
        "{listed}"
    );

    // The worker dies hard, and its agent (a process group of its own) too.
    let worker_pid = system.pid("worker-1").unwrap();
    kill9(&worker_pid.to_string());
    kill9(&format!("-{agent_pid}"));
    eventually("the worker and its agent to be dead", || async {
        (dead(worker_pid) && dead(agent_pid)).then_some(())
    })
    .await;
    // What it left: the directory and the repository's worktree entry.
    assert!(worktree.exists());
    assert!(
        repo.worktrees_in_use()
            .contains(&worktree.display().to_string())
    );

    // The same worker comes back.
    let cmd = system.worker_command("worker-1");
    let again = Proc::spawn("worker-1-again", cmd, system.dir.path());

    let log = eventually("the returning worker to log the cleanup", || async {
        let log = std::fs::read_to_string(&again.log).ok()?;
        log.contains("removed a worktree left by an earlier run")
            .then_some(log)
    })
    .await;
    assert!(
        log.contains(worktree.to_str().unwrap()),
        "the log names the path: {log}"
    );
    assert!(!worktree.exists(), "the directory is gone");
    assert!(
        !repo
            .git(&["worktree", "list", "--porcelain"])
            .contains(worktree.to_str().unwrap()),
        "git forgot the worktree"
    );
    assert!(
        repo.branches().contains(&branch),
        "the subtask branch stays: {:?}",
        repo.branches()
    );
    drop(again);
}
