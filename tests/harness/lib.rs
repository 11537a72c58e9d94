//! The end-to-end harness: starts AIDA's real binaries on free ports with a
//! real `redis-server`, makes real git repositories, and talks to the
//! system the way a user does (REST, SSE, gRPC through grpcurl, Redis).
//!
//! The binaries must be built first (`make test` does it): the harness
//! looks for them next to the test executable, in `target/<profile>/`.

pub mod bench;
pub mod browser;
pub mod git;
pub mod otlp;
pub mod process;
pub mod redis_server;
pub mod remote;
pub mod standalone;
pub mod system;
pub mod terminal;
pub mod tls;

pub use git::GitRepo;
pub use redis_server::RedisServer;
pub use remote::{BareRepo, FakeProvider, GitDaemon, GitHttpServer, Hosting, github_signature};
pub use system::{Options, System};

use std::time::Duration;

/// How long any readiness wait or task may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Polls `check` until it returns `Some`, failing the test with `what` at the
/// deadline. Used for readiness: each poll asks the real system.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The subtask named `name` in a task's JSON; panics if there is none.
pub fn subtask<'a>(task: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    task["subtasks"]
        .as_array()
        .and_then(|subtasks| subtasks.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no subtask {name:?} in {task:#}"))
}

/// GETs `base` + `path` and returns the JSON body of a 2xx answer.
pub async fn get_json(
    http: &reqwest::Client,
    base: &str,
    path: &str,
) -> Result<serde_json::Value, String> {
    let resp = http
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("GET {path}: {}", resp.status()));
    }
    resp.json().await.map_err(|e| e.to_string())
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}
