//! The `aida-gateway` binary: reads its configuration from the environment,
//! binds and serves the REST API until Ctrl-C or SIGTERM.

use anyhow::Context;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aida_core::telemetry::init("gateway");
    let config = aida_gateway::Config::from_env()?;
    let listener = TcpListener::bind(&config.gateway_listen_addr)
        .await
        .with_context(|| format!("binding {}", config.gateway_listen_addr))?;
    let served = aida_gateway::run(config, listener, aida_core::shutdown::signal()).await;
    aida_core::telemetry::shutdown().await;
    served
}
