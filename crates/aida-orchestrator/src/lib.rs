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
use aida_core::proto::orchestrator::orchestrator_server::OrchestratorServer;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod context;
pub mod engine;
pub mod error;
pub mod events;
mod lifecycle;
pub mod planning;
mod scheduler;
pub mod service;
pub mod store;

pub use engine::Engine;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// `ORCHESTRATOR_LISTEN_ADDR`: where the gRPC service listens.
    pub orchestrator_listen_addr: String,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            orchestrator_listen_addr: "0.0.0.0:50051".into(),
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
        }
    }
}

/// Serves the orchestrator on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = store::Store::connect(&config.database_url).await?;
    let events = events::EventLog::new(store.clone());
    let aggregator_channel = tonic::transport::Endpoint::from_shared(
        aida_core::config::grpc_endpoint(&config.aggregator_addr),
    )
    .with_context(|| format!("invalid AGGREGATOR_ADDR {:?}", config.aggregator_addr))?
    .connect_timeout(Duration::from_secs(5))
    .connect_lazy();
    let settings = engine::Settings {
        lease_timeout: Duration::from_secs(config.lease_timeout_secs.max(1)),
        retry_base: Duration::from_millis(config.retry_backoff_ms),
        retry_max: Duration::from_secs(config.retry_backoff_max_secs),
        priority_aging: Duration::from_secs(config.priority_aging_secs.max(1)),
        aggregator_timeout: Duration::from_secs(config.aggregator_timeout_secs),
        agent_wait: Duration::from_secs(config.agent_wait_secs),
        public_api_url: config.public_api_url.trim_end_matches('/').to_owned(),
    };
    let stop = CancellationToken::new();
    let engine = Engine::new(
        store,
        events.clone(),
        AggregatorClient::new(aggregator_channel),
        settings,
        stop.clone(),
    );

    if let Some(url) =
        aida_core::config::redis_url(config.redis_url.as_deref(), config.redis_addr.as_deref())
    {
        let pool = deadpool_redis::Config::from_url(url.clone())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .with_context(|| format!("invalid Redis URL {url:?}"))?;
        tracing::info!(redis = %url, "publishing events to redis");
        tokio::spawn(events.clone().run_publisher(pool, stop.clone()));
    } else {
        tracing::info!("no REDIS_URL: events are stored and streamed in-process only");
    }

    engine.recover().await?;
    tokio::spawn(std::sync::Arc::clone(&engine).run_dispatcher(stop.clone()));
    tokio::spawn(std::sync::Arc::clone(&engine).run_reaper(stop.clone()));

    let grpc = aida_core::grpc::router(aida_core::proto::service_names::ORCHESTRATOR).await?;
    let router =
        grpc.router
            .add_service(OrchestratorServer::new(service::OrchestratorService::new(
                engine,
            )));
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
    result
}
