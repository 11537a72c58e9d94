//! The aggregator binary: reads its configuration, binds, serves until
//! Ctrl-C or SIGTERM.

use aida_aggregator::{Config, run};
use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aida_core::telemetry::init("aggregator");
    let config = Config::from_env().context("loading configuration")?;
    let listener = tokio::net::TcpListener::bind(&config.aggregator_listen_addr)
        .await
        .with_context(|| format!("binding {}", config.aggregator_listen_addr))?;
    let served = run(config, listener, aida_core::shutdown::signal()).await;
    aida_core::telemetry::shutdown().await;
    served
}
