//! `aida-orchestrator`: reads its configuration from the environment and
//! serves until SIGTERM.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aida_core::telemetry::init("orchestrator");
    let config = aida_orchestrator::Config::from_env()
        .context("reading the orchestrator's configuration")?;
    let listener = tokio::net::TcpListener::bind(&config.orchestrator_listen_addr)
        .await
        .with_context(|| format!("binding {}", config.orchestrator_listen_addr))?;
    let served = aida_orchestrator::run(config, listener, aida_core::shutdown::signal()).await;
    aida_core::telemetry::shutdown().await;
    served
}
