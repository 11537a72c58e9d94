//! The aggregator service: measures what subtasks changed, merges their
//! commits into the task's result branch `aida/<task-id>` and writes task
//! reports. It works on git object databases only: it never touches a
//! working tree and never moves any branch but the result branch.

pub mod diff;
pub mod error;
pub mod merge;
pub mod repo;
pub mod report;
pub mod service;
pub mod stats;

use std::future::Future;

use aida_proto::aggregator::aggregator_server::AggregatorServer;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use error::AggregatorError;
pub use service::AggregatorService;

/// Settings, from defaults overridden by environment variables of the same
/// name in upper case (`AGGREGATOR_LISTEN_ADDR`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Where the gRPC server listens; the binary binds it, tests bind port 0.
    pub aggregator_listen_addr: String,
    /// `METRICS_LISTEN_ADDR`: `/metrics`, `/healthz` and `/readyz`; empty
    /// for none.
    pub metrics_listen_addr: String,
    /// `AIDA_METRICS_TOKEN`: what scrapes must present, when set.
    #[serde(skip)]
    pub metrics_access: aida_core::ops::MetricsAccess,
    /// The credential callers must present (`AIDA_INTERNAL_TOKEN` or mutual
    /// TLS), read by [`Config::from_env`].
    #[serde(skip)]
    pub security: aida_core::grpc::Security,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            aggregator_listen_addr: "127.0.0.1:50053".into(),
            metrics_listen_addr: "127.0.0.1:9103".into(),
            metrics_access: Default::default(),
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
}

/// Serves the aggregator (with health and reflection) on `listener` until
/// `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The aggregator needs nothing but its disk: ready once it serves.
    let probe = aida_core::health::probe(|| async {
        aida_core::health::Report::of([(
            "aggregator".to_owned(),
            aida_core::health::Component::healthy(),
        )])
    });
    let grpc = aida_core::grpc::router(
        &[aida_proto::service_names::AGGREGATOR],
        &config.security,
        probe,
    )
    .await?;
    let stop = tokio_util::sync::CancellationToken::new();
    aida_core::ops::start(
        &config.metrics_listen_addr,
        config.metrics_access.clone(),
        &grpc.health,
        &stop,
    )
    .await?;
    let router = grpc.router.add_service(AggregatorServer::with_interceptor(
        AggregatorService,
        grpc.guard.clone(),
    ));
    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| config.aggregator_listen_addr.clone()),
        "aggregator listening"
    );
    let stopping = stop.clone();
    let served = aida_core::grpc::serve(router, listener, async move {
        shutdown.await;
        stopping.cancel();
    })
    .await;
    stop.cancel();
    served
}

#[cfg(test)]
mod tests {
    #[test]
    fn by_default_the_aggregator_listens_on_loopback() {
        assert_eq!(
            super::Config::default().aggregator_listen_addr,
            "127.0.0.1:50053"
        );
    }
}
