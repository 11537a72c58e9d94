//! `aida dev`: the whole system in one process for a laptop: aggregator,
//! orchestrator (SQLite), N workers and the gateway, each a real gRPC or
//! HTTP server on its usual port, talking to the others over loopback as
//! they would in the pod. Without `REDIS_URL` events stay in-process.
//!
//! One command, no set-up, and still safe on a shared network: everything
//! listens on 127.0.0.1 unless told otherwise, sign-in stays on, and the
//! secrets, the first admin and an admin token are made on the first run
//! (see [`setup`]).

pub mod setup;

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
    #[arg(long, default_value = "127.0.0.1:8080", env = "GATEWAY_LISTEN_ADDR")]
    pub gateway_addr: String,
    /// Where the orchestrator's gRPC service listens.
    #[arg(
        long,
        default_value = "127.0.0.1:50051",
        env = "ORCHESTRATOR_LISTEN_ADDR"
    )]
    pub orchestrator_addr: String,
    /// Where the aggregator's gRPC service listens.
    #[arg(
        long,
        default_value = "127.0.0.1:50053",
        env = "AGGREGATOR_LISTEN_ADDR"
    )]
    pub aggregator_addr: String,
    /// The orchestrator's database; its directory also holds the secrets
    /// `aida dev` makes.
    #[arg(long, default_value = "sqlite://data/aida.db", env = "DATABASE_URL")]
    pub database_url: String,
    /// Publish events on this Redis too (optional here).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// The directories (comma-separated) whose repositories tasks may use;
    /// your home directory and the temporary directory by default.
    #[arg(long, env = "AIDA_REPO_ROOTS", value_name = "DIRS")]
    pub repo_roots: Option<String>,
}

async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for the {what} on {addr} (is another AIDA running?)")
    })
}

/// The URL a local client dials for a listener bound to `addr`: loopback
/// for a wildcard address, the address itself otherwise.
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// A service's settings from the environment over its defaults.
fn from_env<T>() -> anyhow::Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    aida_core::config::from_env()
}

impl DevArgs {
    pub async fn run(self, _global: &Global) -> anyhow::Result<ExitCode> {
        aida_core::telemetry::init("dev");
        anyhow::ensure!(self.workers >= 1, "--workers must be at least 1");
        let data_dir = setup::data_dir(&self.database_url)?;
        // Bind everything first: a busy port fails before anything starts.
        let aggregator = bind("aggregator", &self.aggregator_addr).await?;
        let orchestrator = bind("orchestrator", &self.orchestrator_addr).await?;
        let gateway = bind("gateway", &self.gateway_addr).await?;
        let aggregator_url = local_url(aggregator.local_addr()?);
        let orchestrator_url = local_url(orchestrator.local_addr()?);
        let gateway_url = local_url(gateway.local_addr()?);

        let secrets = setup::secrets(&data_dir)?;
        let access = setup::admin_access(&data_dir, &self.database_url).await?;
        let repo_roots = self
            .repo_roots
            .clone()
            .filter(|roots| !roots.trim().is_empty())
            .unwrap_or_else(setup::default_repo_roots);

        let security = aida_core::grpc::Security::with_token(secrets.internal_token);
        let stop = CancellationToken::new();
        let mut services: JoinSet<(String, anyhow::Result<()>)> = JoinSet::new();
        let mut spawn = |name: String,
                         service: std::pin::Pin<
            Box<dyn Future<Output = anyhow::Result<()>> + Send>,
        >| {
            services.spawn(async move { (name, service.await) });
        };

        // Each service's settings from the environment, as the binaries
        // read them (limits, timeouts, ...); what `aida dev` runs itself
        // (addresses, the database, secrets, roots) is set here and wins.
        let mut aggregator_config: aida_aggregator::Config = from_env()?;
        aggregator_config.aggregator_listen_addr = self.aggregator_addr.clone();
        aggregator_config.security = security.clone();
        // One process: the gateway's /metrics shows every service's.
        aggregator_config.metrics_listen_addr = String::new();
        spawn(
            "aggregator".into(),
            Box::pin(aida_aggregator::run(
                aggregator_config,
                aggregator,
                stop.clone().cancelled_owned(),
            )),
        );
        let orchestrator_config = aida_orchestrator::Config {
            orchestrator_listen_addr: self.orchestrator_addr.clone(),
            metrics_listen_addr: String::new(),
            database_url: self.database_url.clone(),
            aggregator_addr: aggregator_url,
            redis_url: self.redis_url.clone(),
            redis_addr: None,
            redis_password: aida_core::secret::from_env("REDIS_PASSWORD")?,
            alert_webhook_url: aida_core::secret::from_env("AIDA_ALERT_WEBHOOK_URL")?,
            public_api_url: gateway_url.clone(),
            repo_roots: Some(repo_roots.clone()),
            security: security.clone(),
            ..from_env()?
        };
        // Workers make worktrees in the orchestrator's mirrors of remotes.
        let repo_cache = orchestrator_config
            .repo_cache
            .clone()
            .unwrap_or_else(|| data_dir.join("remotes"));
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
                worker_advertise_addr: None,
                metrics_listen_addr: String::new(),
                // Each dev worker its own root beside this instance's data,
                // whatever WORKTREE_ROOT says: two `aida dev` on one machine
                // (same worker ids) must never clean up each other's runs.
                worktree_root: Some(data_dir.join("worktrees").join(&worker_id)),
                aida_repo_roots: Some(repo_roots.clone()),
                aida_repo_cache: Some(repo_cache.clone()),
                security: security.clone(),
                ..from_env()?
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
            security: security.clone(),
            secrets: aida_gateway::Secrets {
                jwt_secret: Some(secrets.jwt_secret),
                webhook_secrets: aida_gateway::Secrets::from_env()?.webhook_secrets,
            },
            ..from_env()?
        };
        spawn(
            "gateway".into(),
            Box::pin(aida_gateway::run(
                gateway_config,
                gateway,
                stop.clone().cancelled_owned(),
            )),
        );

        tell_where_the_secrets_are(&data_dir, &secrets.made, &access, &gateway_url).await;
        eprintln!(
            "AIDA is running: REST {gateway_url} (try {gateway_url}/api/health), orchestrator {orchestrator_url}, {} workers, database {}, repositories under {repo_roots}. Ctrl-C stops it.",
            self.workers,
            aida_core::secret::redact_url(&self.database_url)
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

/// Says where the secrets, the admin's password and the admin token are
/// (never what they are), and registers the token for the CLI.
async fn tell_where_the_secrets_are(
    data_dir: &std::path::Path,
    made: &[std::path::PathBuf],
    access: &setup::AdminAccess,
    gateway_url: &str,
) {
    for path in made {
        eprintln!("aida dev: made {} (readable by you only)", path.display());
    }
    if let Some(path) = &access.new_admin_password {
        eprintln!(
            "aida dev: created user admin; its password is in {}",
            path.display()
        );
    }
    let Some(token) = &access.token else {
        eprintln!(
            "aida dev: no enabled admin to own an API token: make one with `aida admin create-user NAME --role admin`, then `aida login --url {gateway_url}`"
        );
        return;
    };
    let made = if token.made { "a new" } else { "the" };
    eprintln!(
        "aida dev: {made} admin API token (of {}) is in {}",
        token.username,
        token.path.display()
    );
    match setup::register(gateway_url, token).await {
        Ok(setup::Registration::Saved(file)) => eprintln!(
            "aida dev: the aida CLI on this machine uses it for {gateway_url} (registered in {})",
            file.display()
        ),
        Ok(setup::Registration::KeptLogin(user)) => eprintln!(
            "aida dev: the aida CLI stays logged in to {gateway_url} as {user}; `aida logout` to use the admin token instead"
        ),
        Err(err) => eprintln!(
            "aida dev: could not register the token for the CLI ({err:#}); send it with AIDA_TOKEN=$(cat {})",
            token.path.display()
        ),
    }
    let internal = data_dir.join(setup::INTERNAL_TOKEN_FILE);
    if std::env::var_os(aida_core::grpc::security::TOKEN_VAR).is_none() && internal.exists() {
        eprintln!(
            "aida dev: grpcurl needs -H \"authorization: Bearer $(cat {})\"",
            internal.display()
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_dial_loopback_for_a_wildcard_address() {
        let url = |s: &str| local_url(s.parse().unwrap());
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080");
        assert_eq!(url("127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(url("10.1.2.3:9000"), "http://10.1.2.3:9000");
    }
}
