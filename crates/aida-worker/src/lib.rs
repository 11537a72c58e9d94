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
pub mod pool;
pub mod ports;
pub mod repo_config;
pub mod resolve;
pub mod runner;
pub mod secrets;
pub mod service;
pub mod session;
pub mod setup;
pub mod sparse;
pub mod state;
pub mod verify;
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
    /// `METRICS_LISTEN_ADDR`: `/metrics`, `/healthz` and `/readyz`; port 0
    /// (the default) picks a free one, empty serves none. The orchestrator
    /// is told where (`/api/workers` shows it).
    pub metrics_listen_addr: String,
    /// `METRICS_ADVERTISE_ADDR`: the address Prometheus reaches it at;
    /// the advertised host with the bound port when unset.
    pub metrics_advertise_addr: Option<String>,
    /// `AIDA_METRICS_TOKEN`: what scrapes must present, when set.
    #[serde(skip)]
    pub metrics_access: aida_core::ops::MetricsAccess,
    /// Where worktrees go; `<tmp>/aida-worktrees/<worker_id>` when unset.
    pub worktree_root: Option<PathBuf>,
    /// `WORKTREE_POOL`: keep each repository's worktree between runs and
    /// reset it to the next run's start (only changed files are written),
    /// rather than adding and removing a worktree per run. On by default;
    /// `false` adds a fresh worktree for every run.
    pub worktree_pool: bool,
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
    /// `AIDA_AGENT_ENV`: more of the worker's environment variables that
    /// agents inherit, as a comma-separated list of names or globs
    /// (`MY_TOOL_*`). The base list and each CLI's own variables are always
    /// passed; the worker's own settings (`AIDA_*`, `DATABASE_URL`,
    /// `REDIS_*`) never are.
    pub aida_agent_env: Option<String>,
    /// `AGENT_TIMEOUT_SECS`: the time limit of a run whose spec sets no
    /// `timeout_secs`; every run has one.
    pub agent_timeout_secs: u64,
    /// `LOG_QUOTA_BYTES`: how many bytes of output lines one run may log;
    /// past it one "log truncated" line is logged and the rest dropped.
    pub log_quota_bytes: u64,
    /// `AIDA_REPO_ROOTS`: a comma-separated list of directories; when set,
    /// a run's repository must lie below one of them (after resolving
    /// symlinks and `..`).
    pub aida_repo_roots: Option<String>,
    /// `AIDA_REPO_CACHE`: where the orchestrator keeps its mirrors of
    /// remotes (the same path here as there); with `AIDA_REPO_ROOTS` set,
    /// repositories below it are allowed too.
    pub aida_repo_cache: Option<PathBuf>,
    /// `SETUP_TIMEOUT_SECS`: the time limit of a worktree's set-up command
    /// when neither `.aida/config.toml` nor the task sets one.
    pub setup_timeout_secs: u64,
    /// `AIDA_PORT_LOCK_DIR`: where runs lock the ports they lease, so that
    /// no two runs on the host share one; every worker of a host must use
    /// the same directory. `<tmp>/aida-ports` when unset.
    pub aida_port_lock_dir: Option<PathBuf>,
    /// The internal credential: presented to the orchestrator, required
    /// from callers of this worker's own service. Read by
    /// [`Config::from_env`].
    #[serde(skip)]
    pub security: aida_core::grpc::Security,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            worker_id: hostname(),
            orchestrator_addr: "http://127.0.0.1:50051".into(),
            worker_listen_addr: "127.0.0.1:0".into(),
            worker_advertise_addr: None,
            metrics_listen_addr: "127.0.0.1:0".into(),
            metrics_advertise_addr: None,
            metrics_access: Default::default(),
            worktree_root: None,
            worktree_pool: true,
            claude_path: "claude".into(),
            gemini_path: "gemini".into(),
            codex_path: "codex".into(),
            allow_bypass_permissions: false,
            heartbeat_interval_ms: 3000,
            aida_agent_env: None,
            agent_timeout_secs: agent::DEFAULT_TIMEOUT.as_secs(),
            log_quota_bytes: agent::DEFAULT_LOG_QUOTA_BYTES,
            aida_repo_roots: None,
            aida_repo_cache: None,
            setup_timeout_secs: setup::DEFAULT_TIMEOUT.as_secs(),
            aida_port_lock_dir: None,
            security: Default::default(),
        }
    }
}

impl Config {
    /// The settings and the internal credential from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut config: Config = aida_core::config::from_env()?;
        config.security = aida_core::grpc::Security::from_env()?;
        config.metrics_access = aida_core::ops::MetricsAccess::from_env()?;
        Ok(config)
    }

    /// The worktree root, defaulting per worker so workers never share one.
    pub fn worktree_root(&self) -> PathBuf {
        self.worktree_root.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("aida-worktrees")
                .join(path_component(&self.worker_id))
        })
    }

    /// Where the agent CLIs are and what they may do.
    pub fn agent_config(&self) -> anyhow::Result<AgentConfig> {
        if self.agent_timeout_secs == 0 {
            anyhow::bail!(
                "AGENT_TIMEOUT_SECS must be at least 1: a run without a time limit would hold the worker forever"
            );
        }
        Ok(AgentConfig {
            claude_path: self.claude_path.clone(),
            gemini_path: self.gemini_path.clone(),
            codex_path: self.codex_path.clone(),
            allow_bypass_permissions: self.allow_bypass_permissions,
            env: agent::AgentEnv::new(self.aida_agent_env.as_deref().unwrap_or(""))?,
            default_timeout: std::time::Duration::from_secs(self.agent_timeout_secs),
            log_quota_bytes: self.log_quota_bytes,
        })
    }

    /// The set-up command's default limit.
    pub fn setup_timeout(&self) -> anyhow::Result<std::time::Duration> {
        if self.setup_timeout_secs == 0 {
            anyhow::bail!(
                "SETUP_TIMEOUT_SECS must be at least 1: a set-up command without a time limit would hold the worker forever"
            );
        }
        Ok(std::time::Duration::from_secs(self.setup_timeout_secs))
    }

    /// Where port leases are locked.
    pub fn port_lock_dir(&self) -> PathBuf {
        self.aida_port_lock_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(ports::default_lock_dir)
    }

    /// The repository roots, canonical; empty when `AIDA_REPO_ROOTS` is
    /// unset. A root that does not exist is a mistake worth stopping for.
    /// The mirror cache counts as a root (it is made if missing: the
    /// orchestrator may not have mirrored anything yet).
    pub fn repo_roots(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut roots: Vec<PathBuf> = self
            .aida_repo_roots
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|root| {
                std::fs::canonicalize(root)
                    .with_context(|| format!("AIDA_REPO_ROOTS: cannot resolve {root:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        if let Some(cache) = self
            .aida_repo_cache
            .as_ref()
            .filter(|c| !c.as_os_str().is_empty())
            && !roots.is_empty()
        {
            std::fs::create_dir_all(cache)
                .with_context(|| format!("AIDA_REPO_CACHE: cannot create {}", cache.display()))?;
            roots.push(
                std::fs::canonicalize(cache).with_context(|| {
                    format!("AIDA_REPO_CACHE: cannot resolve {}", cache.display())
                })?,
            );
        }
        Ok(roots)
    }
}

/// The host part of an advertised `host:port`.
fn advertised_host(address: &str) -> &str {
    address
        .rsplit_once(':')
        .map(|(host, _)| host)
        .unwrap_or(address)
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
    config.security.require()?;
    let endpoint = aida_core::config::grpc_endpoint(&config.orchestrator_addr);
    let channel = config
        .security
        .connect_lazy(&config.orchestrator_addr)
        .with_context(|| format!("invalid orchestrator address {endpoint:?}"))?;

    let stop = CancellationToken::new();
    let agents = config.agent_config()?;
    let repo_roots = config.repo_roots()?;
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
            pool_worktrees: config.worktree_pool,
            agents,
            secrets: Arc::new(secrets),
            repo_roots,
            setup_timeout: config.setup_timeout()?,
            port_lock_dir: config.port_lock_dir(),
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
        agent_env = ?runner.ctx.agents.env.extra_patterns(),
        agent_timeout_secs = runner.ctx.agents.default_timeout.as_secs(),
        log_quota_bytes = runner.ctx.agents.log_quota_bytes,
        repo_roots = ?runner.ctx.repo_roots,
        setup_timeout_secs = runner.ctx.setup_timeout.as_secs(),
        port_lock_dir = %runner.ctx.port_lock_dir.display(),
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
    // Ready while registered with the orchestrator: without the session
    // it is given nothing and cannot report what it runs.
    let probe = {
        let state = Arc::clone(&runner.state);
        aida_core::health::probe(move || {
            let connected = state.connected();
            async move {
                let session = if connected {
                    aida_core::health::Component::healthy()
                } else {
                    aida_core::health::Component::with_detail(
                        aida_core::health::Status::Unhealthy,
                        "not registered with the orchestrator",
                    )
                };
                aida_core::health::Report::of([("orchestrator_session".to_owned(), session)])
            }
        })
    };
    let grpc = aida_core::grpc::router(
        &[aida_proto::service_names::WORKER],
        &config.security,
        probe,
    )
    .await?;
    let metrics_bound = aida_core::ops::start(
        &config.metrics_listen_addr,
        config.metrics_access.clone(),
        &grpc.health,
        &stop,
    )
    .await?;
    let metrics_address = match (&config.metrics_advertise_addr, metrics_bound) {
        (Some(advertised), _) if !advertised.trim().is_empty() => advertised.trim().to_owned(),
        (_, Some(bound)) => format!("{}:{}", advertised_host(&address), bound.port()),
        _ => String::new(),
    };
    {
        // gRPC health follows the session at once, not at the next check.
        let (state, health, stop) = (Arc::clone(&runner.state), grpc.health.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = state.connection_changed() => health.poke(),
                }
            }
        });
    }
    let session = tokio::spawn(session::run(
        channel,
        session::Registration {
            worker_id: config.worker_id.clone(),
            address,
            hostname: hostname(),
            metrics_address,
            heartbeat_every: std::time::Duration::from_millis(
                config.heartbeat_interval_ms.max(100),
            ),
        },
        runner.clone(),
        stop.clone(),
    ));

    let router = grpc.router.add_service(
        aida_proto::worker::worker_server::WorkerServer::with_interceptor(
            service::WorkerService::new(runner.clone()),
            grpc.guard.clone(),
        ),
    );
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
        assert_eq!(config.worker_listen_addr, "127.0.0.1:0");
        assert_eq!(
            config.worktree_root(),
            std::env::temp_dir().join("aida-worktrees").join("w_1_x")
        );
        assert!(!Config::default().worker_id.is_empty());
        assert_eq!(
            config.port_lock_dir(),
            std::env::temp_dir().join("aida-ports")
        );
        assert_eq!(config.setup_timeout().unwrap().as_secs(), 600);
        let no_limit = Config {
            setup_timeout_secs: 0,
            ..Config::default()
        };
        assert!(no_limit.setup_timeout().is_err());
    }
}
