//! An orchestrator and its gateway alone, on a database the test chooses and
//! without Redis or workers: a second orchestrator started on a restored
//! backup, say.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::free_port;
use crate::process::{Proc, bin};

pub struct Standalone {
    /// The gateway's base URL.
    pub url: String,
    pub orchestrator_addr: String,
    pub http: reqwest::Client,
    _procs: Vec<Proc>,
}

impl Standalone {
    /// Starts `aida-orchestrator` on `database_url` (plus `orchestrator_env`)
    /// and `aida-gateway` in front of it, logging to `log_dir` as
    /// `<name>-orchestrator.log` and `<name>-gateway.log`; returns once the
    /// gateway reports the orchestrator healthy.
    pub async fn start(
        name: &str,
        database_url: &str,
        log_dir: &Path,
        orchestrator_env: &[(&str, &str)],
    ) -> Standalone {
        let (orch_port, gw_port) = (free_port(), free_port());
        let orchestrator_addr = format!("127.0.0.1:{orch_port}");
        let url = format!("http://127.0.0.1:{gw_port}");
        let mut procs = Vec::new();

        let mut cmd = Command::new(bin("aida-orchestrator"));
        cmd.env_remove("REDIS_URL")
            .env_remove("REDIS_ADDR")
            .env("ORCHESTRATOR_LISTEN_ADDR", &orchestrator_addr)
            .env("DATABASE_URL", database_url)
            // Nothing listens there: no task of a restored database merges
            // without workers anyway.
            .env(
                "AGGREGATOR_ADDR",
                format!("http://127.0.0.1:{}", free_port()),
            )
            .env("PUBLIC_API_URL", &url)
            .envs(orchestrator_env.iter().copied());
        procs.push(Proc::spawn(&format!("{name}-orchestrator"), cmd, log_dir));

        let mut cmd = Command::new(bin("aida-gateway"));
        cmd.env("GATEWAY_LISTEN_ADDR", format!("127.0.0.1:{gw_port}"))
            .env("ORCHESTRATOR_ADDR", &orchestrator_addr);
        procs.push(Proc::spawn(&format!("{name}-gateway"), cmd, log_dir));

        let standalone = Standalone {
            url,
            orchestrator_addr,
            http: reqwest::Client::new(),
            _procs: procs,
        };
        crate::eventually(
            "the standalone gateway to report the orchestrator healthy",
            || async {
                let resp = standalone
                    .http
                    .get(format!("{}/api/health", standalone.url))
                    .send()
                    .await
                    .ok()?;
                resp.status().is_success().then_some(())
            },
        )
        .await;
        standalone
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        crate::get_json(&self.http, &self.url, path).await
    }
}
