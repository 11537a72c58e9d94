//! The aggregator over a real port with a tonic client.

mod common;

use aida_aggregator::{Config, run};
use aida_core::grpc::{AuthChannel, Security};
use aida_core::ids::TaskId;
use aida_core::secret::SecretString;
use aida_proto::aggregator::aggregator_client::AggregatorClient;
use aida_proto::aggregator::{CollectRequest, MergeRequest, ReportRequest};
use aida_proto::common::{Task, TaskStatus};
use common::{Fixture, item};
use tonic::Code;

struct Server {
    addr: String,
    client: AggregatorClient<AuthChannel>,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let security = Security::with_token(SecretString::from(aida_core::secret::random_hex(32)));
        let config = Config {
            security: security.clone(),
            // Tests run side by side: each its own metrics port.
            metrics_listen_addr: "127.0.0.1:0".into(),
            ..Config::default()
        };
        let handle = tokio::spawn(run(config, listener, async {
            let _ = stopped.await;
        }));
        // The listener is bound already, so calls cannot race the server.
        let client = AggregatorClient::new(security.connect_lazy(&addr.to_string()).unwrap());
        Server {
            addr: addr.to_string(),
            client,
            stop,
            handle,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn merge_results_rejects_bad_input_with_clear_statuses() {
    let mut server = Server::start().await;
    let f = Fixture::new();
    let good = |repo: &str, task_id: &str| MergeRequest {
        task_id: task_id.to_owned(),
        repo: repo.to_owned(),
        base_commit: f.base.to_string(),
        items: vec![],
    };
    let task = TaskId::new().to_string();

    let missing = f.path().join("no-such-repo").display().to_string();
    let status = server
        .client
        .merge_results(good(&missing, &task))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("no-such-repo"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("does not exist"),
        "{}",
        status.message()
    );

    let plain_dir = tempfile::tempdir().unwrap();
    let status = server
        .client
        .merge_results(good(&plain_dir.path().display().to_string(), &task))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("not a git repository"),
        "{}",
        status.message()
    );

    let repo = f.path().display().to_string();
    let status = server
        .client
        .merge_results(good(&repo, "not-a-task"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("not-a-task"),
        "{}",
        status.message()
    );

    let status = server
        .client
        .merge_results(good("relative/path", &task))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    server.stop().await;
}

#[tokio::test]
async fn merge_collect_and_report_over_grpc() {
    let mut server = Server::start().await;
    let f = Fixture::new();
    let a = f.commit(Some(f.base), "work/a", &[("a.txt", Some("1\n2\n"))]);
    let b = f.commit(Some(f.base), "work/b", &[("b.txt", Some("3\n"))]);
    let task = TaskId::new();
    let repo = f.path().display().to_string();

    let merged = server
        .client
        .merge_results(MergeRequest {
            task_id: task.to_string(),
            repo: repo.clone(),
            base_commit: f.base.to_string(),
            items: vec![item("a", a), item("b", b)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged.branch, task.result_branch());
    assert!(merged.outcomes.iter().all(|o| o.merged));
    assert_eq!(
        f.branch_target(&merged.branch).unwrap().to_string(),
        merged.commit
    );
    assert_eq!(f.read(&merged.commit, "b.txt").as_deref(), Some("3\n"));

    let stats = server
        .client
        .collect_result(CollectRequest {
            repo: repo.clone(),
            task_id: task.to_string(),
            subtask: "a".into(),
            start_commit: f.base.to_string(),
            commit: a.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(
        (stats.files_changed, stats.insertions, stats.deletions),
        (1, 2, 0)
    );
    assert_eq!(stats.files, ["a.txt"]);

    let report = server
        .client
        .generate_report(ReportRequest {
            task: Some(Task {
                id: task.to_string(),
                status: TaskStatus::Succeeded as i32,
                result_branch: merged.branch.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.task_id, task.to_string());
    assert!(report.markdown.contains("succeeded"));

    let status = server
        .client
        .generate_report(ReportRequest { task: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    server.stop().await;
}

#[tokio::test]
async fn calls_without_the_internal_credential_are_unauthenticated_and_health_stays_open() {
    let server = Server::start().await;
    let addr = server.addr.clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anonymous = AggregatorClient::new(channel.clone());
    let status = anonymous
        .generate_report(ReportRequest { task: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let forged = Security::with_token(SecretString::from(aida_core::secret::random_hex(32)));
    let mut forger = AggregatorClient::new(forged.connect_lazy(&addr).unwrap());
    let status = forger
        .generate_report(ReportRequest { task: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: aida_proto::service_names::AGGREGATOR.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await;
}
