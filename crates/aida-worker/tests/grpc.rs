//! The Worker gRPC service over a real port, with the worker's whole `run`
//! (its orchestrator session dials an address where nothing listens).

mod common;

use aida_core::grpc::Security;
use aida_core::grpc::security::AttachCredential;
use aida_core::secret::SecretString;
use aida_proto::common::{LogLine, RunResult};
use aida_proto::worker::worker_client::WorkerClient;
use aida_proto::worker::{ExecuteRequest, ExecutionLog, StatusRequest, StopRequest, execution_log};
use aida_worker::Config;
use common::TestRepo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

struct TestWorker {
    client: WorkerClient<InterceptedService<Channel, AttachCredential>>,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _root: tempfile::TempDir,
}

async fn spawn_worker() -> TestWorker {
    let root = tempfile::tempdir().unwrap();
    // An orchestrator address that refuses connections.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let security = Security::with_token(SecretString::from(aida_core::secret::random_hex(32)));
    let config = Config {
        worker_id: "grpc-worker".into(),
        orchestrator_addr: dead_addr.to_string(),
        worker_listen_addr: "127.0.0.1:0".into(),
        worker_advertise_addr: None,
        worktree_root: Some(root.path().join("wt")),
        claude_path: common::fakes_dir().join("claude").display().to_string(),
        gemini_path: "/nonexistent/gemini".into(),
        codex_path: "no-such-codex-aida".into(),
        security: security.clone(),
        ..Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(aida_worker::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = WorkerClient::with_interceptor(channel, security.credential());
    TestWorker {
        client,
        stop,
        handle,
        _root: root,
    }
}

async fn collect(mut stream: tonic::Streaming<ExecutionLog>) -> (Vec<LogLine>, Option<RunResult>) {
    let (mut lines, mut result) = (Vec::new(), None);
    while let Some(item) = stream.next().await {
        match item.unwrap().entry {
            Some(execution_log::Entry::Line(line)) => {
                assert!(result.is_none(), "lines after the result");
                lines.push(line)
            }
            Some(execution_log::Entry::Result(r)) => result = Some(r),
            None => panic!("empty entry"),
        }
    }
    (lines, result)
}

#[tokio::test]
async fn execute_streams_lines_and_result_and_status_answers() {
    let repo = TestRepo::new();
    let mut w = spawn_worker().await;

    let status = w
        .client
        .get_status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.worker_id, "grpc-worker");
    assert_eq!(status.state, "idle");
    // claude points at the fake; the other CLIs are nowhere to be found.
    assert_eq!(status.agent_kinds, vec!["command", "claude-code"]);
    assert_eq!(status.completed, 0);
    assert!(!status.connected, "no orchestrator is listening");

    let run = repo.run("hello", &["sh", "-c", "echo hello; echo world > w.txt"]);
    let stream = w
        .client
        .execute(ExecuteRequest {
            run: Some(run.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let (lines, result) = collect(stream).await;
    let result = result.expect("a result at the end");
    assert!(result.success, "{result:?}");
    assert_eq!(result.branch, run.branch);
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "stdout" && l.line == "hello"),
        "{lines:?}"
    );
    assert_eq!(
        repo.file_at(&result.commit, "w.txt").as_deref(),
        Some("world\n")
    );

    let status = w
        .client
        .get_status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, "idle");
    assert_eq!(status.completed, 1);

    let err = w
        .client
        .execute(ExecuteRequest { run: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut bad = run.clone();
    bad.repo.clear();
    let err = w
        .client
        .execute(ExecuteRequest { run: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("repo"), "{}", err.message());

    w.stop.send(()).unwrap();
    w.handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn busy_worker_refuses_and_stop_cancels() {
    let repo = TestRepo::new();
    let mut w = spawn_worker().await;

    let slow = repo.run("slow", &["sh", "-c", "echo started; sleep 1000"]);
    let mut stream = w
        .client
        .execute(ExecuteRequest {
            run: Some(slow.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    // Wait until the agent really runs.
    loop {
        let item = stream.next().await.expect("stream open").unwrap();
        if let Some(execution_log::Entry::Line(line)) = item.entry
            && line.line == "started"
        {
            break;
        }
    }

    let status = w
        .client
        .get_status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, "busy");
    assert_eq!(status.task_id, slow.task_id);
    assert_eq!(status.subtask, "slow");

    let other = repo.run("other", &["true"]);
    let err = w
        .client
        .execute(ExecuteRequest {
            run: Some(other.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let stopped = w
        .client
        .stop(StopRequest {
            task_id: other.task_id,
            subtask: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stopped.stopped, "a different subtask is not stopped");
    let stopped = w
        .client
        .stop(StopRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.stopped);

    let (_, result) = collect(stream).await;
    let result = result.expect("a result at the end");
    assert!(!result.success);
    assert_eq!(result.error, "cancelled");

    w.stop.send(()).unwrap();
    w.handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_cancels_a_running_agent_and_hands_its_worktree_back() {
    let repo = TestRepo::new();
    let mut w = spawn_worker().await;
    let slow = repo.run("slow", &["sh", "-c", "echo started; sleep 1000"]);
    let mut stream = w
        .client
        .execute(ExecuteRequest { run: Some(slow) })
        .await
        .unwrap()
        .into_inner();
    stream.next().await.expect("first line").unwrap();
    w.stop.send(()).unwrap();
    w.handle.await.unwrap().unwrap();
    // Only the worker's pooled worktree is left, and it holds no branch.
    let git = repo.repo();
    let names = git.worktrees().unwrap();
    assert_eq!(names.len(), 1);
    assert!(aida_worker::pool::is_slot_name(names.get(0).unwrap()));
    let list = repo.git_worktree_list();
    assert!(!list.contains("branch refs/heads/aida/"), "{list}");
}
