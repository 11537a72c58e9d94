//! The `aida` binary against a real gateway on a real port. No orchestrator
//! runs here, so these cover what a user sees when something is wrong: the
//! API's error message on stderr and a non-zero exit.

use std::process::Output;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Gateway {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    /// A gateway whose orchestrator address has nothing listening.
    async fn start() -> Gateway {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let orchestrator_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = aida_gateway::Config {
            gateway_listen_addr: addr.to_string(),
            orchestrator_addr,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(aida_gateway::run(config, listener, async {
            let _ = stopped.await;
        }));
        Gateway {
            url: format!("http://{addr}"),
            stop: Some(stop),
            server: Some(server),
        }
    }

    async fn aida(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_aida"))
            .args(args)
            .env("AIDA_URL", &self.url)
            .output()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.server.take().unwrap().await.unwrap().unwrap();
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn api_errors_are_shown_with_their_message_and_fail() {
    let gateway = Gateway::start().await;

    let output = gateway.aida(&["task", "list"]).await;
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "no data on stdout");
    assert!(
        stderr(&output).contains("orchestrator unavailable"),
        "{}",
        stderr(&output)
    );

    let output = gateway.aida(&["task", "show", "not-a-uuid"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("\"not-a-uuid\" is not a valid task id"),
        "{}",
        stderr(&output)
    );

    let output = gateway
        .aida(&[
            "task",
            "create",
            "--repo",
            "/r",
            "--description",
            "d",
            "--",
            "true",
        ])
        .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("HTTP 503"), "{}", stderr(&output));

    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_gateway_is_named() {
    let gateway = Gateway::start().await;
    let url = gateway.url.clone();
    gateway.stop().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aida"))
        .args(["workers", "--url", &url])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!("cannot reach the gateway at {url}")),
        "{}",
        stderr(&output)
    );
}
