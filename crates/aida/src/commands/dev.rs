//! `aida dev`: the whole system in one process for a laptop: aggregator,
//! orchestrator (SQLite), N workers and the gateway, each a real gRPC or
//! HTTP server on its usual port, talking to the others over loopback as
//! they would in the pod. Without `REDIS_URL` events stay in-process.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Global;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// How many workers to run.
    #[arg(long, default_value_t = 2, env = "AIDA_DEV_WORKERS")]
    pub workers: usize,
    /// Where the REST API listens.
    #[arg(long, default_value = "0.0.0.0:8080", env = "GATEWAY_LISTEN_ADDR")]
    pub gateway_addr: String,
    /// Where the orchestrator's gRPC service listens.
    #[arg(
        long,
        default_value = "0.0.0.0:50051",
        env = "ORCHESTRATOR_LISTEN_ADDR"
    )]
    pub orchestrator_addr: String,
    /// Where the aggregator's gRPC service listens.
    #[arg(long, default_value = "0.0.0.0:50053", env = "AGGREGATOR_LISTEN_ADDR")]
    pub aggregator_addr: String,
    /// The orchestrator's database.
    #[arg(long, default_value = "sqlite://data/aida.db", env = "DATABASE_URL")]
    pub database_url: String,
    /// Publish events on this Redis too (optional here).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
}

async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for the {what} on {addr} (is another AIDA running?)")
    })
}

/// The address a local client dials for a listener bound to `addr`.
fn loopback(addr: SocketAddr) -> String {
    format!("http://127.0.0.1:{}", addr.port())
}

impl DevArgs {
    pub async fn run(self, _global: &Global) -> anyhow::Result<ExitCode> {
        aida_core::telemetry::init();
        anyhow::ensure!(self.workers >= 1, "--workers must be at least 1");
        // Bind everything first: a busy port fails before anything starts.
        let aggregator = bind("aggregator", &self.aggregator_addr).await?;
        let orchestrator = bind("orchestrator", &self.orchestrator_addr).await?;
        let gateway = bind("gateway", &self.gateway_addr).await?;
        let aggregator_url = loopback(aggregator.local_addr()?);
        let orchestrator_url = loopback(orchestrator.local_addr()?);
        let gateway_url = loopback(gateway.local_addr()?);

        let stop = CancellationToken::new();
        let mut services: JoinSet<(String, anyhow::Result<()>)> = JoinSet::new();
        let mut spawn = |name: String,
                         service: std::pin::Pin<
            Box<dyn Future<Output = anyhow::Result<()>> + Send>,
        >| {
            services.spawn(async move { (name, service.await) });
        };

        spawn(
            "aggregator".into(),
            Box::pin(aida_aggregator::run(
                aida_aggregator::Config {
                    aggregator_listen_addr: self.aggregator_addr.clone(),
                },
                aggregator,
                stop.clone().cancelled_owned(),
            )),
        );
        let orchestrator_config = aida_orchestrator::Config {
            orchestrator_listen_addr: self.orchestrator_addr.clone(),
            database_url: self.database_url.clone(),
            aggregator_addr: aggregator_url,
            redis_url: self.redis_url.clone(),
            ..Default::default()
        };
        spawn(
            "orchestrator".into(),
            Box::pin(aida_orchestrator::run(
                orchestrator_config,
                orchestrator,
                stop.clone().cancelled_owned(),
            )),
        );
        for i in 1..=self.workers {
            let worker_id = format!("dev-worker-{i}");
            let config = aida_worker::Config {
                worker_id: worker_id.clone(),
                orchestrator_addr: orchestrator_url.clone(),
                worker_listen_addr: "127.0.0.1:0".into(),
                ..Default::default()
            };
            let listener = bind("worker", &config.worker_listen_addr).await?;
            spawn(
                worker_id,
                Box::pin(aida_worker::run(
                    config,
                    listener,
                    stop.clone().cancelled_owned(),
                )),
            );
        }
        let gateway_config = aida_gateway::Config {
            gateway_listen_addr: self.gateway_addr.clone(),
            orchestrator_addr: orchestrator_url.clone(),
        };
        spawn(
            "gateway".into(),
            Box::pin(aida_gateway::run(
                gateway_config,
                gateway,
                stop.clone().cancelled_owned(),
            )),
        );

        eprintln!(
            "AIDA is running: REST {gateway_url} (try {gateway_url}/api/health), orchestrator {orchestrator_url}, {} workers, database {}. Ctrl-C stops it.",
            self.workers, self.database_url
        );

        let mut failed = false;
        tokio::select! {
            _ = aida_core::shutdown::signal() => {}
            Some(joined) = services.join_next() => {
                // A service that ends on its own is a failure: stop the rest.
                failed = true;
                report(joined);
            }
        }
        stop.cancel();
        while let Some(joined) = services.join_next().await {
            failed |= report(joined);
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// Logs how a service ended; true if it failed.
fn report(joined: Result<(String, anyhow::Result<()>), tokio::task::JoinError>) -> bool {
    match joined {
        Ok((_, Ok(()))) => false,
        Ok((name, Err(e))) => {
            eprintln!("aida dev: {name} failed: {e:#}");
            true
        }
        Err(e) => {
            eprintln!("aida dev: a service panicked: {e}");
            true
        }
    }
}
