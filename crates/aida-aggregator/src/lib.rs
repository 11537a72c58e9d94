//! The aggregator service: measures what subtasks changed, merges their
//! commits into the task's result branch `aida/<task-id>` and writes task
//! reports. It works on git object databases only: it never touches a
//! working tree and never moves any branch but the result branch.

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Where the gRPC server listens; the binary binds it, tests bind port 0.
    pub aggregator_listen_addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            aggregator_listen_addr: "0.0.0.0:50053".into(),
        }
    }
}

/// Serves the aggregator (with health and reflection) on `listener` until
/// `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grpc = aida_core::grpc::router(aida_proto::service_names::AGGREGATOR).await?;
    let router = grpc
        .router
        .add_service(AggregatorServer::new(AggregatorService));
    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| config.aggregator_listen_addr.clone()),
        "aggregator listening"
    );
    aida_core::grpc::serve(router, listener, shutdown).await
}
