//! The orchestrator service: validates and stores tasks, splits them into
//! subtasks with dependencies, assigns ready subtasks to connected workers,
//! records every event (and publishes it on Redis), and has the aggregator
//! merge and report once a task's subtasks have ended.
//!
//! Map: `planning` (request -> validated task), `store` (SQLite),
//! `events` (event log and Redis outbox), `scheduler` (workers and
//! assignment), `lifecycle` (results, cancellation, merge, report),
//! `service` (the gRPC surface).

use std::future::Future;
use std::time::Duration;

use aida_core::proto::aggregator::aggregator_client::AggregatorClient;
use aida_core::proto::auth::auth_server::AuthServer;
use aida_core::proto::orchestrator::orchestrator_server::OrchestratorServer;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod audit;
pub mod auth;
pub mod candidates;
pub mod context;
mod delivery;
pub mod engine;
pub mod error;
pub mod events;
mod external;
mod follow_up;
pub mod github;
pub mod health;
mod intake;
mod lifecycle;
mod measure;
mod merge;
pub mod monitor;
pub mod planning;
pub mod prediction;
pub mod remotes;
pub mod repos;
pub mod resolution;
pub mod retention;
pub mod review;
mod scheduler;
pub mod service;
pub mod store;
pub mod verification;
mod verify;
pub mod workflows;

pub use engine::Engine;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// `ORCHESTRATOR_LISTEN_ADDR`: where the gRPC service listens.
    pub orchestrator_listen_addr: String,
    /// `METRICS_LISTEN_ADDR`: `/metrics`, `/healthz` and `/readyz`; empty
    /// for none.
    pub metrics_listen_addr: String,
    /// `DATABASE_URL`: an SQLite URL; the file is created if missing.
    pub database_url: String,
    /// `AGGREGATOR_ADDR`: the aggregator's gRPC address.
    pub aggregator_addr: String,
    /// `REDIS_URL` (or the design's `REDIS_ADDR=host:port`): where events
    /// are published. Without either, events are only stored and streamed.
    pub redis_url: Option<String>,
    pub redis_addr: Option<String>,
    /// `LEASE_TIMEOUT_SECS`: how long a running attempt holds its subtask
    /// without a heartbeat before another worker gets it.
    pub lease_timeout_secs: u64,
    /// `RETRY_BACKOFF_MS`: the first retry's delay (doubling, with jitter).
    pub retry_backoff_ms: u64,
    /// `RETRY_BACKOFF_MAX_SECS`: the longest delay between attempts.
    pub retry_backoff_max_secs: u64,
    /// `PRIORITY_AGING_SECS`: waiting this long raises a task's priority by
    /// one.
    pub priority_aging_secs: u64,
    /// `AGGREGATOR_TIMEOUT_SECS`: deadline of each aggregator call.
    pub aggregator_timeout_secs: u64,
    /// `AGENT_WAIT_SECS`: how long a subtask waits for a connected worker
    /// that can run its agent kind before it fails.
    pub agent_wait_secs: u64,
    /// `PUBLIC_API_URL`: the gateway's URL as agents reach it; they read
    /// and write a task's shared context there.
    pub public_api_url: String,
    /// `AIDA_REPO_ROOTS`: the directories (comma-separated) whose
    /// repositories tasks may use. Required.
    #[serde(rename = "aida_repo_roots")]
    pub repo_roots: Option<String>,
    /// `AIDA_TASK_TIMEOUT_SECS`: the wall-clock limit of a task that sets
    /// none.
    #[serde(rename = "aida_task_timeout_secs")]
    pub task_timeout_secs: u32,
    /// `AIDA_LOCKOUT_SECS`: how long wrong passwords lock an account.
    #[serde(rename = "aida_lockout_secs")]
    pub lockout_secs: u64,
    /// `AIDA_MAX_FAILED_LOGINS`: wrong passwords in a row that lock it.
    #[serde(rename = "aida_max_failed_logins")]
    pub max_failed_logins: u32,
    /// `AIDA_SESSION_TTL_SECS`: how long a login's refresh tokens last.
    #[serde(rename = "aida_session_ttl_secs")]
    pub session_ttl_secs: u64,
    /// `AIDA_AUDIT_LOG`: a file the audit trail is appended to (JSON
    /// lines), besides the database.
    #[serde(rename = "aida_audit_log")]
    pub audit_log: Option<std::path::PathBuf>,
    /// `AIDA_ALLOWED_REMOTES`: glob patterns of the remotes tasks may name
    /// (comma-separated); none by default.
    #[serde(rename = "aida_allowed_remotes")]
    pub allowed_remotes: Option<String>,
    /// `AIDA_REPO_CACHE`: where remotes are mirrored; workers must see it
    /// at the same path. `remotes/` beside the database by default.
    #[serde(rename = "aida_repo_cache")]
    pub repo_cache: Option<std::path::PathBuf>,
    /// `AIDA_GIT_PROVIDERS`: hosting APIs beyond github.com and gitlab.com
    /// (`HOST=github@URL`, `HOST=gitlab@URL`, comma-separated).
    #[serde(rename = "aida_git_providers")]
    pub git_providers: Option<String>,
    /// `AIDA_GIT_TIMEOUT_SECS`: the limit of one fetch or push.
    #[serde(rename = "aida_git_timeout_secs")]
    pub git_timeout_secs: u64,
    /// `AIDA_EVENT_RETENTION`: the events of a task that ended longer ago
    /// than this are removed (`30d`, `12h`, ...; `off` keeps them).
    #[serde(rename = "aida_event_retention")]
    pub event_retention: String,
    /// `AIDA_LOG_RETENTION`: the log lines of a task that ended longer ago
    /// than this are compacted to the last 200 of each subtask (`off`
    /// keeps them).
    #[serde(rename = "aida_log_retention")]
    pub log_retention: String,
    /// `AIDA_GITHUB_CONFIG`: a TOML file mapping GitHub repositories to
    /// AIDA (issues that start tasks, reviews that follow up).
    #[serde(rename = "aida_github_config")]
    pub github_config: Option<std::path::PathBuf>,
    /// `AIDA_QUARANTINE_AFTER_FAILURES`: a worker whose runs fail this many
    /// times in a row gets nothing new for `AIDA_QUARANTINE_SECS` (0:
    /// never quarantine).
    #[serde(rename = "aida_quarantine_after_failures")]
    pub quarantine_after_failures: u32,
    #[serde(rename = "aida_quarantine_secs")]
    pub quarantine_secs: u64,
    /// `AIDA_ANOMALY_FACTOR`: a run this many times longer than its agent
    /// kind's average is an anomaly.
    #[serde(rename = "aida_anomaly_factor")]
    pub anomaly_factor: f64,
    /// `AIDA_ALERT_QUEUE_DEPTH`: pending subtasks that raise an alert (0:
    /// none).
    #[serde(rename = "aida_alert_queue_depth")]
    pub alert_queue_depth: u64,
    /// `AIDA_ALERT_ERROR_RATE`: the failing share of the last 20 runs that
    /// raises an alert (0: none).
    #[serde(rename = "aida_alert_error_rate")]
    pub alert_error_rate: f64,
    /// `AIDA_ALERT_REPEAT_SECS`: an alert still active is sent again after
    /// this.
    #[serde(rename = "aida_alert_repeat_secs")]
    pub alert_repeat_secs: u64,
    /// `AIDA_ALERT_WEBHOOK_URL` or `_FILE`: a Slack-compatible incoming
    /// webhook alerts are posted to. Read by [`Config::from_env`].
    #[serde(skip)]
    pub alert_webhook_url: Option<aida_core::secret::SecretString>,
    /// The internal credential: callers must present it, and calls to the
    /// aggregator carry it. Read by [`Config::from_env`].
    #[serde(skip)]
    pub security: aida_core::grpc::Security,
    /// `REDIS_PASSWORD` or `REDIS_PASSWORD_FILE`: Redis's password, when
    /// the URL has none (so the URL itself can be printed).
    #[serde(skip)]
    pub redis_password: Option<aida_core::secret::SecretString>,
    /// `AIDA_METRICS_TOKEN`: what scrapes must present, when set.
    #[serde(skip)]
    pub metrics_access: aida_core::ops::MetricsAccess,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            orchestrator_listen_addr: "127.0.0.1:50051".into(),
            metrics_listen_addr: "127.0.0.1:9101".into(),
            database_url: "sqlite://data/aida.db".into(),
            aggregator_addr: "http://127.0.0.1:50053".into(),
            redis_url: None,
            redis_addr: None,
            lease_timeout_secs: 15,
            retry_backoff_ms: 1000,
            retry_backoff_max_secs: 30,
            priority_aging_secs: 60,
            aggregator_timeout_secs: 120,
            agent_wait_secs: 60,
            public_api_url: "http://127.0.0.1:8080".into(),
            repo_roots: None,
            task_timeout_secs: 24 * 3600,
            lockout_secs: 900,
            max_failed_logins: 5,
            session_ttl_secs: 7 * 24 * 3600,
            audit_log: None,
            allowed_remotes: None,
            repo_cache: None,
            git_providers: None,
            git_timeout_secs: 300,
            event_retention: "30d".into(),
            log_retention: "7d".into(),
            github_config: None,
            quarantine_after_failures: 3,
            quarantine_secs: 300,
            anomaly_factor: 3.0,
            alert_queue_depth: 100,
            alert_error_rate: 0.5,
            alert_repeat_secs: 3600,
            alert_webhook_url: None,
            security: Default::default(),
            redis_password: None,
            metrics_access: Default::default(),
        }
    }
}

impl Config {
    /// The settings and the internal credential from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut config: Config = aida_core::config::from_env()?;
        config.security = aida_core::grpc::Security::from_env()?;
        config.redis_password = aida_core::secret::from_env("REDIS_PASSWORD")?;
        config.metrics_access = aida_core::ops::MetricsAccess::from_env()?;
        config.alert_webhook_url = aida_core::secret::from_env("AIDA_ALERT_WEBHOOK_URL")?;
        Ok(config)
    }
}

/// The Redis pool's settings: the URL, with `password` when the URL names
/// none.
fn redis_config(
    url: &str,
    password: Option<&aida_core::secret::SecretString>,
) -> anyhow::Result<deadpool_redis::Config> {
    use aida_core::secret::ExposeSecret;
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info().map_err(|e| {
        anyhow::anyhow!(
            "invalid Redis URL {}: {e}",
            aida_core::secret::redact_url(url)
        )
    })?;
    let info = match password {
        Some(password) if info.redis_settings().password().is_none() => {
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose_secret());
            info.set_redis_settings(settings)
        }
        _ => info,
    };
    Ok(deadpool_redis::Config::from_connection_info(info))
}

/// Remotes, when any is allowed: their credentials, the mirror cache and
/// the providers' APIs.
fn remotes_from(config: &Config) -> anyhow::Result<Option<std::sync::Arc<remotes::Remotes>>> {
    let allowed =
        remotes::AllowedRemotes::parse(config.allowed_remotes.as_deref().unwrap_or_default())?;
    if allowed.is_empty() {
        anyhow::ensure!(
            config.github_config.is_none(),
            "AIDA_GITHUB_CONFIG needs AIDA_ALLOWED_REMOTES: the mapped repositories' remotes must be allowed"
        );
        return Ok(None);
    }
    let github = match &config.github_config {
        Some(path) => {
            let github = github::GitHubConfig::load(path)?;
            for repo in &github.repositories {
                let url = remotes::RemoteUrl::parse(&repo.remote)?;
                allowed.check(&url).map_err(|e| {
                    anyhow::anyhow!("AIDA_GITHUB_CONFIG: repository {}: {e}", repo.name)
                })?;
            }
            Some(github)
        }
        None => None,
    };
    let cache = match &config.repo_cache {
        Some(dir) => dir.clone(),
        None => database_dir(&config.database_url)?.join("remotes"),
    };
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("creating AIDA_REPO_CACHE {}", cache.display()))?;
    let cache = cache
        .canonicalize()
        .with_context(|| format!("resolving AIDA_REPO_CACHE {}", cache.display()))?;
    let credentials = remotes::Credentials::from_env()?;
    let providers = remotes::Providers::parse(config.git_providers.as_deref().unwrap_or_default())?;
    tracing::info!(cache = %cache.display(), ?credentials, "remote repositories enabled");
    Ok(Some(std::sync::Arc::new(remotes::Remotes::new(
        allowed,
        credentials,
        cache,
        providers,
        Duration::from_secs(config.git_timeout_secs.max(5)),
        github,
    ))))
}

/// The directory of an SQLite database URL.
fn database_dir(database_url: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(database_url)
        .with_context(|| format!("invalid DATABASE_URL {database_url:?}"))?;
    Ok(options
        .get_filename()
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from(".")))
}

/// A retention setting: a duration (`30d`, `12h`), or `off`/`0` for none.
fn retention_setting(name: &str, raw: &str) -> anyhow::Result<Option<Duration>> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("off") || raw == "0" {
        return Ok(None);
    }
    humantime::parse_duration(raw)
        .map(Some)
        .with_context(|| format!("{name}={raw:?} is not a duration such as 30d or 12h, nor off"))
}

/// The monitor's settings, checked.
fn monitor_settings(config: &Config) -> anyhow::Result<monitor::MonitorSettings> {
    use aida_core::secret::ExposeSecret;
    if let Some(url) = &config.alert_webhook_url {
        let parsed = reqwest::Url::parse(url.expose_secret().trim())
            .map_err(|_| anyhow::anyhow!("AIDA_ALERT_WEBHOOK_URL is not a URL"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "https" | "http"),
            "AIDA_ALERT_WEBHOOK_URL must be an http(s) URL (a Slack-compatible incoming webhook)"
        );
    }
    anyhow::ensure!(
        config.anomaly_factor.is_finite() && config.anomaly_factor >= 1.0,
        "AIDA_ANOMALY_FACTOR must be at least 1"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&config.alert_error_rate),
        "AIDA_ALERT_ERROR_RATE is a share of runs, from 0 to 1"
    );
    Ok(monitor::MonitorSettings {
        quarantine_after: config.quarantine_after_failures,
        quarantine_for: Duration::from_secs(config.quarantine_secs.max(1)),
        anomaly_factor: config.anomaly_factor,
        queue_alert: config.alert_queue_depth,
        error_rate_alert: config.alert_error_rate,
        alert_repeat: Duration::from_secs(config.alert_repeat_secs.max(1)),
        webhook: config.alert_webhook_url.clone(),
    })
}

/// Serves the orchestrator on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.security.require()?;
    let repo_roots = repos::RepoRoots::parse(config.repo_roots.as_deref().unwrap_or_default())?;
    let store = store::Store::connect(&config.database_url).await?;
    let events = events::EventLog::new(store.clone());
    let audit = audit::Audit::new(store.clone(), config.audit_log.as_deref())?;
    let remotes = remotes_from(&config)?;
    let aggregator_channel = config
        .security
        .connect_lazy(&config.aggregator_addr)
        .with_context(|| format!("invalid AGGREGATOR_ADDR {:?}", config.aggregator_addr))?;
    let redis_url =
        aida_core::config::redis_url(config.redis_url.as_deref(), config.redis_addr.as_deref());
    let retention = retention::Retention {
        events: retention_setting("AIDA_EVENT_RETENTION", &config.event_retention)?,
        logs: retention_setting("AIDA_LOG_RETENTION", &config.log_retention)?,
        outbox: redis_url.is_some(),
    };
    let settings = engine::Settings {
        lease_timeout: Duration::from_secs(config.lease_timeout_secs.max(1)),
        retry_base: Duration::from_millis(config.retry_backoff_ms),
        retry_max: Duration::from_secs(config.retry_backoff_max_secs),
        priority_aging: Duration::from_secs(config.priority_aging_secs.max(1)),
        aggregator_timeout: Duration::from_secs(config.aggregator_timeout_secs),
        agent_wait: Duration::from_secs(config.agent_wait_secs),
        public_api_url: config.public_api_url.trim_end_matches('/').to_owned(),
        policy: planning::TaskPolicy {
            repo_roots,
            default_timeout_secs: config.task_timeout_secs,
        },
        retention,
        monitor: monitor_settings(&config)?,
    };
    let auth_settings = auth::AuthSettings {
        lockout: Duration::from_secs(config.lockout_secs.max(1)),
        max_failed_logins: config.max_failed_logins.max(1),
        session_ttl: Duration::from_secs(config.session_ttl_secs.max(60)),
    };
    let stop = CancellationToken::new();
    let engine = Engine::new(
        store.clone(),
        events.clone(),
        audit.clone(),
        remotes,
        AggregatorClient::new(aggregator_channel.clone()),
        settings,
        stop.clone(),
    );

    let redis = match redis_url {
        Some(url) => {
            let pool = redis_config(&url, config.redis_password.as_ref())?
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .with_context(|| {
                    format!("invalid Redis URL {}", aida_core::secret::redact_url(&url))
                })?;
            tracing::info!(redis = %aida_core::secret::redact_url(&url), "publishing events to redis");
            tokio::spawn(events.clone().run_publisher(pool.clone(), stop.clone()));
            Some(pool)
        }
        None => {
            tracing::info!("no REDIS_URL: events are stored and streamed in-process only");
            None
        }
    };

    engine.recover().await?;
    tokio::spawn(std::sync::Arc::clone(&engine).run_dispatcher(stop.clone()));
    tokio::spawn(std::sync::Arc::clone(&engine).run_reaper(stop.clone()));
    tokio::spawn(std::sync::Arc::clone(&engine).run_retention(stop.clone()));
    tokio::spawn(std::sync::Arc::clone(&engine).run_monitor(stop.clone()));
    tokio::spawn(measure::run_gauges(
        std::sync::Arc::clone(&engine),
        stop.clone(),
    ));

    let probe = health::probe(
        std::sync::Arc::clone(&engine),
        health::Parts {
            redis,
            aggregator: aggregator_channel,
        },
    );
    let grpc = aida_core::grpc::router(
        &[
            aida_core::proto::service_names::ORCHESTRATOR,
            aida_core::proto::service_names::AUTH,
        ],
        &config.security,
        probe,
    )
    .await?;
    aida_core::ops::start(
        &config.metrics_listen_addr,
        config.metrics_access.clone(),
        &grpc.health,
        &stop,
    )
    .await?;
    let router = grpc
        .router
        .add_service(OrchestratorServer::with_interceptor(
            service::OrchestratorService::new(engine, grpc.health.clone()),
            grpc.guard.clone(),
        ))
        .add_service(AuthServer::with_interceptor(
            auth::AuthService::new(store, audit.clone(), auth_settings),
            grpc.guard.clone(),
        ));
    tracing::info!(addr = %listener.local_addr()?, "orchestrator listening");
    let stopper = stop.clone();
    let result = aida_core::grpc::serve(router, listener, async move {
        shutdown.await;
        // Ends the workers' assignment streams and progress followers too,
        // so the server can stop.
        stopper.cancel();
    })
    .await;
    stop.cancel();
    // The audit lines of the last requests are on disk before we go.
    audit.flush().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_the_orchestrator_listens_on_loopback_and_allows_no_repository() {
        let config = Config::default();
        assert_eq!(config.orchestrator_listen_addr, "127.0.0.1:50051");
        assert!(config.repo_roots.is_none());
        assert!(config.redis_password.is_none());
    }

    #[test]
    fn a_redis_password_given_apart_joins_a_url_without_one() {
        use aida_core::secret::SecretString;
        let password = SecretString::from("s3cret");
        let with = redis_config("redis://127.0.0.1:6379", Some(&password)).unwrap();
        let info: redis::ConnectionInfo = with.connection.unwrap().into();
        assert_eq!(info.redis_settings().password(), Some("s3cret"));
        let own = redis_config("redis://:own@127.0.0.1:6379", Some(&password)).unwrap();
        let info: redis::ConnectionInfo = own.connection.unwrap().into();
        assert_eq!(
            info.redis_settings().password(),
            Some("own"),
            "the URL's own wins"
        );
    }
}
