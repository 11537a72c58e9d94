//! The real `aida-worker` binary, started as a process with its settings in
//! its environment (as an operator starts it), driven over gRPC with the
//! internal credential. Its orchestrator address is one where nothing
//! listens: `Execute` needs none. What it shows: what agents inherit of the
//! worker's environment, the output limits and the worker's memory under a
//! flood, the default timeout, and that a caller cannot make a run write
//! anywhere but its own branch in a repository under `AIDA_REPO_ROOTS`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aida_core::grpc::Security;
use aida_core::grpc::security::AttachCredential;
use aida_core::ids::TaskId;
use aida_core::secret::SecretString;
use aida_proto::common::{DependencyCommit, LogLine, RunResult, SubtaskRun};
use aida_proto::worker::worker_client::WorkerClient;
use aida_proto::worker::{ExecuteRequest, execution_log};
use common::{TestRepo, cli, command, fakes_dir};
use git2::{Oid, Repository, Signature};
use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// How long a worker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

type Client = WorkerClient<InterceptedService<Channel, AttachCredential>>;

/// A worker process and a client holding its credential.
struct WorkerProcess {
    child: Child,
    client: Client,
    /// Everything the worker logged (stderr, JSON lines).
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts the worker binary with a clean environment: PATH, HOME, a
    /// UTF-8 locale, the internal credential, a dead orchestrator, and `env`.
    async fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token = aida_core::secret::random_hex(32);
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aida-worker"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            // Python (the fakes) would set LC_CTYPE itself in a C locale.
            .env("LANG", "C.UTF-8")
            .env("AIDA_INTERNAL_TOKEN", &token)
            .env("AIDA_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("WORKER_ID", "process-worker")
            .env("ORCHESTRATOR_ADDR", &dead_addr)
            .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
            .env("WORKTREE_ROOT", dir.path().join("worktrees"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start aida-worker");

        // The worker logs the address it bound; read its log as it comes.
        let log = Arc::new(Mutex::new(String::new()));
        let (listening, bound) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && entry["fields"]["message"] == "worker starting"
                {
                    let _ = listening.send(entry["fields"]["listen"].as_str().map(str::to_owned));
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match bound.recv_timeout(START_TIMEOUT) {
            Ok(Some(addr)) => addr,
            other => {
                let _ = child.kill();
                panic!(
                    "the worker did not start ({other:?}):\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let security = Security::with_token(SecretString::from(token));
        Self {
            child,
            client: WorkerClient::with_interceptor(channel, security.credential()),
            log,
            _dir: dir,
        }
    }

    /// Runs `run` to its end: every log line and the result.
    async fn execute(&mut self, run: SubtaskRun) -> (Vec<LogLine>, RunResult) {
        let mut stream = self
            .client
            .execute(ExecuteRequest { run: Some(run) })
            .await
            .unwrap()
            .into_inner();
        let (mut lines, mut result) = (Vec::new(), None);
        while let Some(item) = stream.next().await {
            match item.unwrap().entry {
                Some(execution_log::Entry::Line(line)) => lines.push(line),
                Some(execution_log::Entry::Result(r)) => result = Some(r),
                None => panic!("empty entry"),
            }
        }
        (lines, result.expect("a result at the end"))
    }

    /// `Execute`'s refusal of `run`, which must come before anything runs.
    async fn refused(&mut self, run: SubtaskRun) -> tonic::Status {
        match self.client.execute(ExecuteRequest { run: Some(run) }).await {
            Err(status) => status,
            Ok(_) => panic!("the run was accepted"),
        }
    }

    /// The most memory the process has held, in bytes (VmHWM).
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("----- last lines of the worker's log -----");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A JSON file of `commit`.
fn json_at(repo: &TestRepo, commit: &str, file: &str) -> Value {
    let text = repo
        .file_at(commit, file)
        .unwrap_or_else(|| panic!("{file} is not in {commit}"));
    serde_json::from_str(&text).unwrap()
}

/// The Python interpreter itself, not a shim in front of it.
fn real_python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn names(env: &Value) -> BTreeSet<String> {
    env.as_object().unwrap().keys().cloned().collect()
}

const SECRET_VALUES: &[(&str, &str)] = &[
    ("SECRET_X", "fake-secret-x-value-1234"),
    ("ANTHROPIC_API_KEY", "sk-ant-fake-key-5678"),
    ("OPENAI_API_KEY", "sk-openai-fake-key-9012"),
    ("GEMINI_API_KEY", "gemini-fake-key-3456"),
    ("DATABASE_URL", "sqlite://fake-secret.db"),
    ("REDIS_URL", "redis://:fake-redis-pw@127.0.0.1:1"),
    ("AIDA_JWT_SECRET", "fake-jwt-secret-0123456789abcdef0123"),
    // Another service's setting (the worker must not read AIDA_TLS_* half set).
    ("AIDA_WEBHOOK_SECRETS", "fake-webhook-secret-abcdef"),
];

#[tokio::test]
async fn agents_get_an_allow_listed_environment() {
    let claude = fakes_dir().join("claude").display().to_string();
    let mut env = SECRET_VALUES.to_vec();
    env.extend([
        ("MY_TOOL_HOME", "/opt/my-tool"),
        ("CARGO_HOME", "/not/for/agents"),
        ("AIDA_AGENT_ENV", "MY_*"),
        ("CLAUDE_PATH", claude.as_str()),
    ]);
    let mut worker = WorkerProcess::start(&env).await;
    let repo = TestRepo::with_files(&[(".aida-fake-record", "")]);

    // A command agent dumps what it got: the real interpreter, as a shim
    // (pyenv's) would add variables of its own.
    let python = real_python();
    let mut run = repo.run(
        "dump",
        &[
            python.as_str(),
            "-c",
            "import json, os; json.dump(dict(os.environ), open('env.json', 'w'))",
        ],
    );
    run.env.insert(
        "AIDA_CONTEXT_URL".into(),
        "http://127.0.0.1:1/api/tasks/x/context".into(),
    );
    run.env
        .insert("AIDA_CONTEXT_TOKEN".into(), "ctx-token-7890abcdef".into());
    // Not AIDA's: a run cannot set it.
    run.env
        .insert("LD_PRELOAD".into(), "/nonexistent/preload.so".into());
    let (lines, result) = worker.execute(run.clone()).await;
    assert!(result.success, "{result:?} {lines:?}");
    let got = json_at(&repo, &result.commit, "env.json");
    let expected: BTreeSet<String> = [
        "AIDA_BRANCH",
        "AIDA_CONTEXT_TOKEN",
        "AIDA_CONTEXT_URL",
        "AIDA_PROMPT",
        "AIDA_SUBTASK_NAME",
        "AIDA_TASK_ID",
        "AIDA_WORKTREE",
        "HOME",
        "LANG",
        "MY_TOOL_HOME",
        "PATH",
    ]
    .map(String::from)
    .into();
    assert_eq!(names(&got), expected);
    assert_eq!(got["AIDA_CONTEXT_TOKEN"], "ctx-token-7890abcdef");
    assert_eq!(got["MY_TOOL_HOME"], "/opt/my-tool");
    assert_eq!(got["AIDA_SUBTASK_NAME"], "dump");
    assert_eq!(got["AIDA_PROMPT"], run.prompt.as_str());
    assert!(
        lines.iter().any(|l| l.stream == "aida"
            && l.line.starts_with("agent environment: ")
            && l.line.contains("MY_TOOL_HOME")
            && !l.line.contains("SECRET_X")),
        "the run's log names what the agent got: {lines:?}"
    );

    // Claude Code gets its key too, and nothing of the other CLIs'.
    let run = repo.agent_run("claude", cli("claude-code", &[]), "say hello");
    let (lines, result) = worker.execute(run).await;
    assert!(result.success, "{result:?} {lines:?}");
    let record = json_at(&repo, &result.commit, ".aida-fake-claude.json");
    let got = &record["env"];
    assert_eq!(got["ANTHROPIC_API_KEY"], "sk-ant-fake-key-5678");
    assert_eq!(got["MY_TOOL_HOME"], "/opt/my-tool");
    for absent in [
        "SECRET_X",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "AIDA_INTERNAL_TOKEN",
        "AIDA_JWT_SECRET",
        "AIDA_WEBHOOK_SECRETS",
        "AIDA_AGENT_ENV",
        "CARGO_HOME",
        "RUST_LOG",
        "WORKER_ID",
    ] {
        assert!(got.get(absent).is_none(), "{absent} reached claude");
    }

    // The worker says which variables an agent got, never their values.
    let log = worker.log();
    assert!(
        log.contains("agent environment") && log.contains("ANTHROPIC_API_KEY"),
        "{log}"
    );
    for (name, value) in SECRET_VALUES {
        assert!(!log.contains(value), "the value of {name} was logged");
    }
}

#[tokio::test]
async fn a_flood_without_newlines_is_cut_and_the_worker_stays_small() {
    let mut worker = WorkerProcess::start(&[]).await;
    let repo = TestRepo::new();
    let run = repo.run(
        "flood",
        &[
            "sh",
            "-c",
            "head -c 2000000000 /dev/zero | tr '\\0' x; echo; echo after",
        ],
    );
    let (lines, result) = worker.execute(run).await;
    assert!(result.success, "{result:?}");
    let output: Vec<&LogLine> = lines.iter().filter(|l| l.stream == "stdout").collect();
    assert_eq!(output.len(), 2, "the cut line and the next one");
    let marker = " [line cut at 64 KiB]";
    let cut = &output[0].line;
    assert_eq!(cut.len(), 64 * 1024 + marker.len());
    assert!(cut.ends_with(marker));
    assert!(cut[..64 * 1024].bytes().all(|b| b == b'x'));
    assert_eq!(output[1].line, "after", "reading goes on after the cut");

    let peak = worker.peak_rss();
    eprintln!("worker peak rss: {} MiB", peak / (1024 * 1024));
    assert!(
        peak < 100 * 1024 * 1024,
        "the worker held {} MiB at its peak",
        peak / (1024 * 1024)
    );
}

#[tokio::test]
async fn a_run_past_its_log_quota_is_truncated_once_and_goes_on() {
    let mut worker = WorkerProcess::start(&[("LOG_QUOTA_BYTES", "200000")]).await;
    let repo = TestRepo::new();
    let run = repo.run(
        "chatty",
        &[
            "sh",
            "-c",
            // ~590 KB on stdout, some on stderr, then a side effect.
            "seq 1 100000; seq 1 1000 >&2; echo done > after.txt",
        ],
    );
    let (lines, result) = worker.execute(run).await;
    assert!(result.success, "{result:?}");
    assert_eq!(
        repo.file_at(&result.commit, "after.txt").as_deref(),
        Some("done\n"),
        "the run went on past the quota"
    );

    let notice = "log truncated: this run printed more than 200000 bytes; the rest is not kept";
    let at: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.line.starts_with("log truncated"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "exactly one truncation line");
    assert_eq!(lines[at[0]].stream, "aida");
    assert_eq!(lines[at[0]].line, notice);
    let agent_bytes: usize = lines
        .iter()
        .filter(|l| l.stream == "stdout" || l.stream == "stderr")
        .map(|l| l.line.len())
        .sum();
    assert!(agent_bytes <= 200_000, "{agent_bytes} bytes logged");
    assert!(agent_bytes > 190_000, "the quota was used: {agent_bytes}");
    assert!(
        lines[at[0]..]
            .iter()
            .all(|l| l.stream != "stdout" && l.stream != "stderr"),
        "nothing of the agent's after the truncation line"
    );
    assert!(
        lines[at[0]..].iter().any(|l| l.line == "agent finished"),
        "AIDA's own lines go on"
    );
}

#[tokio::test]
async fn a_run_without_a_timeout_gets_the_workers_default() {
    let mut worker = WorkerProcess::start(&[("AGENT_TIMEOUT_SECS", "1")]).await;
    let repo = TestRepo::new();
    let run = repo.run("sleepy", &["sleep", "600"]);
    assert_eq!(run.agent.as_ref().unwrap().timeout_secs, 0);
    let started = std::time::Instant::now();
    let (_, result) = worker.execute(run).await;
    assert!(!result.success);
    assert_eq!(result.error, "timed out after 1 s");
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Every ref of `repo` and the commit it points to.
fn refs(repo: &Repository) -> BTreeMap<String, Oid> {
    repo.references()
        .unwrap()
        .flatten()
        .filter_map(|r| Some((r.name()?.to_owned(), r.target()?)))
        .collect()
}

/// A commit on `branch` (created from `parent`) adding `file`.
fn commit_on(repo: &Repository, branch: &str, parent: Oid, file: &str) -> Oid {
    let parent = repo.find_commit(parent).unwrap();
    let mut tree = repo.treebuilder(Some(&parent.tree().unwrap())).unwrap();
    let blob = repo.blob(format!("{file}\n").as_bytes()).unwrap();
    tree.insert(file, blob, 0o100644).unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let sig = Signature::now("test", "test@example.com").unwrap();
    repo.commit(
        Some(&format!("refs/heads/{branch}")),
        &sig,
        &sig,
        file,
        &tree,
        &[&parent],
    )
    .unwrap()
}

#[tokio::test]
async fn execute_writes_only_the_branch_it_derives_itself() {
    let mut worker = WorkerProcess::start(&[]).await;
    let repo = TestRepo::new();
    let git = repo.repo();
    let other_task = TaskId::new();
    let other_branch = format!("aida/{other_task}/x");
    let other_head = commit_on(&git, &other_branch, repo.base, "other.txt");
    let side = commit_on(&git, "side", repo.base, "side.txt");

    let write = |name: &str| {
        vec![
            "sh".to_owned(),
            "-c".into(),
            format!("echo {name} > {name}.txt"),
        ]
    };
    let cases = [
        ("to-main", "main".to_owned(), vec![]),
        ("to-other", other_branch.clone(), vec![]),
        ("to-head", "HEAD".to_owned(), vec![]),
        (
            "dep-main",
            String::new(),
            vec![DependencyCommit {
                subtask: "dep".into(),
                branch: "main".into(),
                commit: side.to_string(),
            }],
        ),
    ];
    for (subtask, branch, dependencies) in cases {
        let before = refs(&git);
        let mut run = repo.run(subtask, &[]);
        run.agent = Some(aida_proto::common::AgentSpec {
            command: write(subtask),
            ..command(&[])
        });
        run.branch = branch.clone();
        run.dependencies = dependencies.clone();
        let own = format!("refs/heads/aida/{}/{subtask}", run.task_id);
        let (lines, result) = worker.execute(run).await;
        assert!(result.success, "{subtask}: {result:?} {lines:?}");
        assert_eq!(result.branch, own.trim_start_matches("refs/heads/"));
        let mut after = refs(&git);
        let head = after.remove(&own).expect("the run's own branch");
        assert_eq!(after, before, "{subtask} ({branch:?}) touched another ref");
        assert_eq!(head.to_string(), result.commit);
        let file = format!("{subtask}.txt");
        assert_eq!(
            repo.file_at(&result.commit, &file),
            Some(format!("{subtask}\n"))
        );
        if !dependencies.is_empty() {
            assert_eq!(
                repo.file_at(&result.commit, "side.txt").as_deref(),
                Some("side.txt\n"),
                "the dependency's commit, not the branch it names"
            );
        }
    }
    assert_eq!(repo.main_head(), repo.base);
    assert_eq!(
        git.refname_to_id(&format!("refs/heads/{other_branch}"))
            .unwrap(),
        other_head
    );

    // What names a ref rather than a commit is refused before anything runs.
    let before = refs(&git);
    let mut by_branch = repo.run("dep-by-name", &["true"]);
    by_branch.dependencies = vec![DependencyCommit {
        subtask: "dep".into(),
        branch: "side".into(),
        commit: String::new(),
    }];
    let status = worker.refused(by_branch).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let mut base_by_name = repo.run("base-by-name", &["true"]);
    base_by_name.base_commit = "main".into();
    assert_eq!(
        worker.refused(base_by_name).await.code(),
        tonic::Code::InvalidArgument
    );
    // A read-only run is AIDA's planner or nothing.
    let mut read_only = repo.run("planner", &["true"]);
    read_only.read_only = true;
    let status = worker.refused(read_only).await;
    assert!(status.message().contains("_plan"), "{status:?}");
    assert_eq!(refs(&git), before);
}

/// Every path below `dir` (`.git` included), with its size and mtime.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.path().to_path_buf(),
                (meta.len(), meta.modified().unwrap()),
            )
        })
        .collect()
}

#[tokio::test]
async fn repositories_outside_the_roots_are_refused_and_left_alone() {
    let roots = tempfile::tempdir().unwrap();
    let allowed_root = roots.path().join("repos");
    std::fs::create_dir(&allowed_root).unwrap();
    let other_root = roots.path().join("more-repos");
    std::fs::create_dir(&other_root).unwrap();
    let setting = format!("{},{}", allowed_root.display(), other_root.display());
    let mut worker = WorkerProcess::start(&[("AIDA_REPO_ROOTS", &setting)]).await;

    // Outside: a repository next to the roots.
    let outside = TestRepo::new();
    std::os::unix::fs::symlink(outside.path(), allowed_root.join("link")).unwrap();
    let before = listing(outside.path());
    let outside_path = outside.path().display().to_string();
    // Up from the root to `/`, then down to the outside repository.
    let depth = allowed_root.canonicalize().unwrap().components().count() - 1;
    let dotdot = format!(
        "{}/{}{}",
        allowed_root.display(),
        "../".repeat(depth),
        outside
            .path()
            .canonicalize()
            .unwrap()
            .strip_prefix("/")
            .unwrap()
            .display()
    );
    let symlinked = allowed_root.join("link").display().to_string();
    let missing = allowed_root.join("nope").display().to_string();
    // Its name starts with the root's, but it is not below it.
    let sibling = format!("{}-evil", allowed_root.display());
    copy_repo(outside.path(), Path::new(&sibling));
    let sibling_before = listing(Path::new(&sibling));
    for repo_path in [&outside_path, &dotdot, &symlinked, &missing, &sibling] {
        let mut run = outside.run("escape", &["sh", "-c", "echo x > x.txt"]);
        run.repo = repo_path.clone();
        let status = worker.refused(run).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{repo_path}");
        assert_eq!(
            status.message(),
            "repository is not under the worker's AIDA_REPO_ROOTS",
            "{repo_path}: the same answer whatever the reason"
        );
    }
    assert_eq!(listing(outside.path()), before, "nothing created outside");
    assert_eq!(listing(Path::new(&sibling)), sibling_before);

    // Inside either root (also through `..` that stays inside): it runs.
    for root in [&allowed_root, &other_root] {
        let inside = root.join("project");
        let made = TestRepo::new();
        let mut run = made.run("inside", &["sh", "-c", "echo in > in.txt"]);
        // The repository itself lives in the root; the fixture's is a copy.
        copy_repo(made.path(), &inside);
        run.repo = format!(
            "{}/../{}/project",
            root.display(),
            root.file_name().unwrap().to_str().unwrap()
        );
        let (lines, result) = worker.execute(run).await;
        assert!(result.success, "{result:?} {lines:?}");
        let git = Repository::open(&inside).unwrap();
        let commit = git
            .find_commit(Oid::from_str(&result.commit).unwrap())
            .unwrap();
        assert!(commit.tree().unwrap().get_name("in.txt").is_some());
        std::fs::remove_dir_all(&inside).unwrap();
    }
}

/// A full copy of a repository directory (`.git` included).
fn copy_repo(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}
