//! Worktree set-up from `.aida/config.toml` and the task's settings, and
//! the ports each run leases, against real repositories, real set-up
//! processes and the fake CLIs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use aida_proto::common::{LogLine, WorktreeSetup};
use aida_worker::ports::PortLease;
use common::{Ctx, TestRepo, cli, has_line};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;

fn setup(command: &[&str]) -> WorktreeSetup {
    WorktreeSetup {
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn lines_of<'a>(lines: &'a [LogLine], stream: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.line.as_str())
        .collect()
}

#[tokio::test]
async fn the_repositorys_setup_runs_before_the_agent_and_its_files_stay_out_of_the_commit() {
    let repo = TestRepo::with_files(&[
        (".gitignore", "*.log\n"),
        (
            ".aida/config.toml",
            r#"
setup = ["sh", "-c", "echo installing for $AIDA_SUBTASK_NAME; echo warning >&2; mkdir -p deps && echo lib > deps/lib.txt; echo $NODE_ENV > setup-env.txt; echo cache > build.log"]
setup_timeout_secs = 30
[env]
NODE_ENV = "development"
"#,
        ),
    ]);
    let ctx = Ctx::new();
    let run = repo.run(
        "with-setup",
        &[
            "sh",
            "-c",
            "cat deps/lib.txt setup-env.txt > seen.txt; echo $NODE_ENV > agent-env.txt; echo more >> deps/lib.txt",
        ],
    );
    let (result, lines) = ctx.execute(run.clone()).await;
    assert!(result.success, "{result:?} {lines:?}");
    // Both pipes, each in order (not with each other).
    let mut setup_lines = lines_of(&lines, "setup");
    setup_lines.sort_unstable();
    assert_eq!(setup_lines, ["installing for with-setup", "warning"]);
    assert!(
        has_line(&lines, "aida", "read .aida/config.toml"),
        "{lines:?}"
    );
    assert!(
        has_line(
            &lines,
            "aida",
            "running set-up command: sh -c echo installing for $AIDA_SUBTASK_NAME; echo warning >&2; mkdir -p deps && echo lib > deps/lib.txt; echo $NODE_ENV > setup-env.txt; echo cache > build.log"
        ),
        "{lines:?}"
    );
    assert!(
        has_line(
            &lines,
            "aida",
            "leaving 2 untracked files the set-up command created out of the commit: deps/lib.txt, setup-env.txt"
        ),
        "{lines:?}"
    );
    let setup_env = lines
        .iter()
        .find(|l| l.line.starts_with("set-up environment: "))
        .expect("the set-up environment is logged");
    assert!(setup_env.line.contains("NODE_ENV"), "{setup_env:?}");
    assert!(setup_env.line.contains("AIDA_WORKTREE"), "{setup_env:?}");
    // The set-up ran first, in the worktree; the agent got its env.
    assert_eq!(
        repo.file_at(&result.commit, "seen.txt").as_deref(),
        Some("lib\ndevelopment\n")
    );
    assert_eq!(
        repo.file_at(&result.commit, "agent-env.txt").as_deref(),
        Some("development\n")
    );
    // What the set-up created stays out, even when the agent changed it.
    for left_out in ["deps/lib.txt", "setup-env.txt", "build.log"] {
        assert_eq!(repo.file_at(&result.commit, left_out), None, "{left_out}");
    }
    ctx.assert_released(&run);
}

#[tokio::test]
async fn the_tasks_setup_overrides_the_repository_config_field_by_field() {
    let repo = TestRepo::with_files(&[(
        ".aida/config.toml",
        "setup = [\"false\"]\n[env]\nA = \"repo\"\nB = \"repo\"\n",
    )]);
    let ctx = Ctx::new();
    let mut run = repo.run(
        "override",
        &["sh", "-c", "echo \"$A $B $NPM_TOKEN\" > agent.txt"],
    );
    let mut task = setup(&["sh", "-c", "echo \"set-up sees $A $B $NPM_TOKEN\""]);
    task.env.insert("B".into(), "task".into());
    task.env
        .insert("NPM_TOKEN".into(), "npm-secret-123456".into());
    run.setup = Some(task);
    let (result, lines) = ctx.execute(run).await;
    assert!(result.success, "{result:?} {lines:?}");
    // The task's command replaced `false`; its env merged over the repo's;
    // a secret in it is masked like any other.
    assert_eq!(lines_of(&lines, "setup"), ["set-up sees repo task ***"]);
    assert_eq!(
        repo.file_at(&result.commit, "agent.txt").as_deref(),
        Some("repo task npm-secret-123456\n")
    );
    for line in &lines {
        assert!(!line.line.contains("npm-secret-123456"), "{line:?}");
    }
}

#[tokio::test]
async fn a_failing_setup_fails_the_attempt_with_its_output_and_the_agent_does_not_run() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let mut run = repo.run("failing-setup", &["sh", "-c", "echo ran > ran.txt"]);
    run.setup = Some(setup(&[
        "sh",
        "-c",
        "echo created > junk.txt; echo step one; echo 'npm ERR! boom'; exit 7",
    ]));
    let (result, lines) = ctx.execute(run.clone()).await;
    assert!(!result.success);
    assert!(!result.permanent, "a set-up failure may be transient");
    assert_eq!(
        result.error,
        "set-up command \"sh -c echo created > junk.txt; echo step one; echo 'npm ERR! boom'; exit 7\" exited with code 7: step one\nnpm ERR! boom"
    );
    assert!(
        has_line(&lines, "aida", &format!("set-up failed: {}", result.error)),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.line.starts_with("starting ")),
        "the agent never started: {lines:?}"
    );
    assert_eq!(result.commit, result.start_commit, "nothing committed");
    let git = repo.repo();
    let tip = git
        .refname_to_id(&format!("refs/heads/{}", run.branch))
        .unwrap();
    assert_eq!(tip, repo.base);
    ctx.assert_released(&run);

    // A program that is not there will not appear on a retry.
    run.setup = Some(setup(&["/nonexistent/aida-setup-xyz"]));
    let (result, _) = ctx.execute(run).await;
    assert!(result.permanent, "{result:?}");
    assert!(
        result
            .error
            .starts_with("cannot start set-up command \"/nonexistent/aida-setup-xyz\": "),
        "{}",
        result.error
    );
}

/// Alive and not a zombie.
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
async fn a_setup_past_its_timeout_is_killed_with_its_process_group() {
    let repo = TestRepo::new();
    let ctx = Ctx::new();
    let mut run = repo.run("slow-setup", &["sh", "-c", "echo ran > ran.txt"]);
    let mut task = setup(&["sh", "-c", "sleep 1000 & echo child=$!; wait"]);
    task.timeout_secs = 1;
    run.setup = Some(task);
    let started = Instant::now();
    let (result, lines) = ctx.execute(run).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!result.success && !result.permanent, "{result:?}");
    let child: i32 = lines
        .iter()
        .find_map(|l| l.line.strip_prefix("child="))
        .expect("the set-up's child pid")
        .parse()
        .unwrap();
    assert_eq!(
        result.error,
        format!(
            "set-up command \"sh -c sleep 1000 & echo child=$!; wait\" timed out after 1 s: child={child}"
        )
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(child) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(child), "the set-up's child {child} survived");
    assert_eq!(repo.file_at(&result.commit, "ran.txt"), None);
}

#[tokio::test]
async fn invalid_settings_fail_permanently_with_a_clear_message() {
    let repo = TestRepo::with_files(&[(".aida/config.toml", "ports = 1\nsetpu = [\"x\"]\n")]);
    let ctx = Ctx::new();
    let run = repo.run("bad-config", &["sh", "-c", "echo ran > ran.txt"]);
    let (result, _) = ctx.execute(run).await;
    assert!(!result.success && result.permanent, "{result:?}");
    assert!(
        result
            .error
            .starts_with("invalid .aida/config.toml: line 2: unknown field `setpu`"),
        "{}",
        result.error
    );
    assert_eq!(result.commit, result.start_commit);

    let repo = TestRepo::new();
    for (name, value, expected) in [
        ("PATH", "/tmp", "setup.env: \"PATH\" may not be changed"),
        (
            "AIDA_PORT_0",
            "1",
            "setup.env: \"AIDA_PORT_0\": AIDA_* variables are set by AIDA only",
        ),
        (
            "A=B",
            "1",
            "setup.env: \"A=B\" is not a plain variable name (letters, digits and _, not starting with a digit)",
        ),
    ] {
        let mut run = repo.run("bad-env", &["true"]);
        let mut task = setup(&[]);
        task.env.insert(name.into(), value.into());
        run.setup = Some(task);
        let (result, _) = ctx.execute(run).await;
        assert!(result.permanent, "{name}: {result:?}");
        assert_eq!(result.error, expected);
    }
    let mut run = repo.run("many-ports", &["true"]);
    run.setup = Some(WorktreeSetup {
        ports: 17,
        ..Default::default()
    });
    let (result, _) = ctx.execute(run).await;
    assert!(result.permanent);
    assert_eq!(
        result.error,
        "setup.ports: 17 asked for, at most 16 allowed"
    );
}

/// The ports a line `AIDA_PORTS=a,b,c` names.
fn ports_in(lines: &[LogLine], stream: &str) -> Vec<u16> {
    let line = lines
        .iter()
        .filter(|l| l.stream == stream)
        .find_map(|l| l.line.strip_prefix("AIDA_PORTS="))
        .unwrap_or_else(|| panic!("no AIDA_PORTS on {stream} in {lines:?}"));
    line.split(',').map(|p| p.parse().unwrap()).collect()
}

#[tokio::test]
async fn concurrent_runs_get_disjoint_ports_that_their_agents_see() {
    let repo = TestRepo::new();
    let lock_dir = tempfile::tempdir().unwrap();
    let lock_dir = lock_dir.path().join("ports");
    let rendezvous = tempfile::tempdir().unwrap();
    // Two workers, as two processes would be, sharing the host's lock dir.
    let workers: Vec<Ctx> = (0..2)
        .map(|_| {
            let mut ctx = Ctx::with_fakes();
            ctx.ctx.port_lock_dir = lock_dir.clone();
            ctx
        })
        .collect();
    // The set-up of each run binds its ports (they must be free for it) and
    // waits for the other run's set-up, so both hold their leases at once.
    let wait_for_both = r#"
import os, socket, sys, time
ports = os.environ["AIDA_PORTS"]
for p in ports.split(","):
    socket.socket().bind(("127.0.0.1", int(p)))
print("AIDA_PORTS=" + ports, flush=True)
here = os.environ["RENDEZVOUS"]
open(os.path.join(here, os.environ["AIDA_SUBTASK_NAME"]), "w").close()
deadline = time.time() + 30
while len(os.listdir(here)) < 2:
    if time.time() > deadline:
        sys.exit("the other run never came")
    time.sleep(0.01)
"#;
    let runs: Vec<_> = ["one", "two"]
        .iter()
        .map(|name| {
            let mut run = repo.agent_run(
                name,
                cli("claude-code", &[]),
                "env AIDA_PORTS\nenv AIDA_PORT_0\nenv AIDA_PORT_2\nenv AIDA_PORT_3",
            );
            let mut task = setup(&["python3", "-c", wait_for_both]);
            task.ports = 3;
            task.env
                .insert("RENDEZVOUS".into(), rendezvous.path().display().to_string());
            run.setup = Some(task);
            run
        })
        .collect();
    let results = futures::future::join_all(
        workers
            .iter()
            .zip(runs.iter())
            .map(|(w, r)| w.execute(r.clone())),
    )
    .await;

    let mut all = Vec::new();
    for (result, lines) in &results {
        assert!(result.success, "{result:?} {lines:?}");
        let ports = ports_in(lines, "setup");
        assert_eq!(ports.len(), 3, "{ports:?}");
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        assert!(
            has_line(
                lines,
                "aida",
                &format!("ports reserved: {}", list.join(", "))
            ),
            "{lines:?}"
        );
        // The agent saw the same ports, each by its own name too.
        assert_eq!(ports_in(lines, "agent"), ports);
        assert!(has_line(
            lines,
            "agent",
            &format!("AIDA_PORT_0={}", ports[0])
        ));
        assert!(has_line(
            lines,
            "agent",
            &format!("AIDA_PORT_2={}", ports[2])
        ));
        assert!(has_line(lines, "agent", "AIDA_PORT_3="), "only 3 ports");
        all.extend(ports);
    }
    let mut distinct = all.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "two runs shared a port: {all:?}");

    // The leases ended with their runs: every lock is free again.
    for port in &all {
        let file = std::fs::File::open(lock_dir.join(format!("{port}.lock"))).unwrap();
        assert!(
            Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok(),
            "port {port} is still locked"
        );
    }
    let mode = std::fs::metadata(&lock_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

#[test]
fn a_lease_holds_its_ports_until_it_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    let lease = PortLease::acquire(4, &lock_dir).unwrap();
    let ports = lease.ports().to_vec();
    assert_eq!(ports.len(), 4);
    let other = PortLease::acquire(4, &lock_dir).unwrap();
    assert!(
        other.ports().iter().all(|p| !ports.contains(p)),
        "{ports:?} {:?}",
        other.ports()
    );
    for port in &ports {
        // Free to bind: the lease closed its listener.
        std::net::TcpListener::bind(("127.0.0.1", *port)).unwrap();
        let file = std::fs::File::open(lock_dir.join(format!("{port}.lock"))).unwrap();
        assert!(
            Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err(),
            "port {port} is not locked while leased"
        );
    }
    drop(lease);
    for port in &ports {
        let file = std::fs::File::open(lock_dir.join(format!("{port}.lock"))).unwrap();
        assert!(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok());
    }
    assert!(PortLease::acquire(0, &lock_dir).unwrap().ports().is_empty());
}
