//! The AIDA worker: runs one subtask at a time in its own git worktree on
//! its own branch, streams the agent's output, commits what it left and
//! reports branch and commit. It serves the `aida.worker.Worker` gRPC
//! service and keeps a session open with the orchestrator.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod agent;
pub mod error;
pub mod executor;
pub mod runner;
pub mod secrets;
pub mod service;
pub mod session;
pub mod state;
pub mod worktree;
pub mod worktree_include;

pub use agent::AgentConfig;
pub use executor::{ExecContext, run_subtask};

/// The worker's settings; each field is overridden by the environment
/// variable of the same name in upper case (`WORKER_ID`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Names this worker to the orchestrator and in its commits; the only
    /// setting that differs between workers on one host.
    pub worker_id: String,
    /// `http://host:port` or `host:port`.
    pub orchestrator_addr: String,
    /// Port 0 by default so several workers on one host never collide.
    pub worker_listen_addr: String,
    /// The address the orchestrator is told for this worker's own gRPC
    /// service; `127.0.0.1:<bound port>` when unset.
    pub worker_advertise_addr: Option<String>,
    /// Where worktrees go; `<tmp>/aida-worktrees/<worker_id>` when unset.
    pub worktree_root: Option<PathBuf>,
    /// The Claude Code executable: a path, or a name looked up on `PATH`.
    pub claude_path: String,
    /// The Gemini CLI executable.
    pub gemini_path: String,
    /// The Codex CLI executable.
    pub codex_path: String,
    /// Lets subtasks run claude-code with `bypassPermissions` (and
    /// gemini-cli with `yolo`): only for workers isolated from anything
    /// that matters.
    pub allow_bypass_permissions: bool,
    /// `HEARTBEAT_INTERVAL_MS`: how often a running attempt's lease is
    /// renewed; keep it well under the orchestrator's LEASE_TIMEOUT_SECS.
    pub heartbeat_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            worker_id: hostname(),
            orchestrator_addr: "http://127.0.0.1:50051".into(),
            worker_listen_addr: "0.0.0.0:0".into(),
            worker_advertise_addr: None,
            worktree_root: None,
            claude_path: "claude".into(),
            gemini_path: "gemini".into(),
            codex_path: "codex".into(),
            allow_bypass_permissions: false,
            heartbeat_interval_ms: 3000,
        }
    }
}

impl Config {
    /// The worktree root, defaulting per worker so workers never share one.
    pub fn worktree_root(&self) -> PathBuf {
        self.worktree_root.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("aida-worktrees")
                .join(path_component(&self.worker_id))
        })
    }

    /// Where the agent CLIs are and what they may do.
    pub fn agent_config(&self) -> AgentConfig {
        AgentConfig {
            claude_path: self.claude_path.clone(),
            gemini_path: self.gemini_path.clone(),
            codex_path: self.codex_path.clone(),
            allow_bypass_permissions: self.allow_bypass_permissions,
        }
    }
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// A worker id made safe as one path component.
fn path_component(raw: &str) -> String {
    let safe: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        "worker".into()
    } else {
        safe
    }
}

/// Serves the Worker gRPC service on `listener` and keeps the orchestrator
/// session going, until `shutdown` resolves. A running agent is cancelled on
/// shutdown and its worktree removed before this returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.worker_id.trim().is_empty() {
        anyhow::bail!("worker_id must not be empty");
    }
    let local = listener.local_addr().context("reading the bound address")?;
    let address = config
        .worker_advertise_addr
        .clone()
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| format!("127.0.0.1:{}", local.port()));
    let endpoint = aida_core::config::grpc_endpoint(&config.orchestrator_addr);
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .with_context(|| format!("invalid orchestrator address {endpoint:?}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_lazy();

    let stop = CancellationToken::new();
    let agents = config.agent_config();
    let agent_kinds: Arc<[String]> = agents.available_kinds().into();
    let secrets = secrets::SecretMask::from_env();
    let runner = runner::Runner {
        state: Arc::new(state::WorkerState::new(
            config.worker_id.clone(),
            stop.clone(),
        )),
        ctx: Arc::new(ExecContext {
            worker_id: config.worker_id.clone(),
            worktree_root: config.worktree_root(),
            agents,
            secrets: Arc::new(secrets),
        }),
        agent_kinds,
        tracker: TaskTracker::new(),
    };
    tracing::info!(
        worker_id = %config.worker_id,
        listen = %local,
        advertise = %address,
        orchestrator = %endpoint,
        worktree_root = %runner.ctx.worktree_root.display(),
        agent_kinds = ?runner.agent_kinds,
        masked_secrets = runner.ctx.secrets.len(),
        allow_bypass_permissions = runner.ctx.agents.allow_bypass_permissions,
        "worker starting"
    );

    // A worker that died mid-run (same id, same root) left its worktree
    // behind; clear it before taking work. The orchestrator decides what
    // becomes of that subtask.
    let root = runner.ctx.worktree_root.clone();
    let cleaned = tokio::task::spawn_blocking(move || worktree::clean_root(&root))
        .await
        .context("cleaning the worktree root")??;
    if !cleaned.is_empty() {
        tracing::info!(
            worker_id = %config.worker_id,
            removed = cleaned.len(),
            "cleaned up worktrees left by an earlier run"
        );
    }

    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
    }
    let session = tokio::spawn(session::run(
        channel,
        session::Registration {
            worker_id: config.worker_id.clone(),
            address,
            hostname: hostname(),
            heartbeat_every: std::time::Duration::from_millis(
                config.heartbeat_interval_ms.max(100),
            ),
        },
        runner.clone(),
        stop.clone(),
    ));

    let grpc = aida_core::grpc::router(aida_proto::service_names::WORKER).await?;
    let router = grpc
        .router
        .add_service(aida_proto::worker::worker_server::WorkerServer::new(
            service::WorkerService::new(runner.clone()),
        ));
    let served = aida_core::grpc::serve(router, listener, stop.clone().cancelled_owned()).await;
    // Whatever ended serving, stop everything else too.
    stop.cancel();
    runner.tracker.close();
    runner.tracker.wait().await;
    let _ = session.await;
    tracing::info!("worker stopped");
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_each_worker_its_own_worktree_root() {
        let config = Config {
            worker_id: "w/1 x".into(),
            ..Config::default()
        };
        assert_eq!(config.worker_listen_addr, "0.0.0.0:0");
        assert_eq!(
            config.worktree_root(),
            std::env::temp_dir().join("aida-worktrees").join("w_1_x")
        );
        assert!(!Config::default().worker_id.is_empty());
    }
}
