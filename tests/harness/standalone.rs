//! An orchestrator and its gateway alone, on a database the test chooses and
//! without Redis or workers: a second orchestrator started on a restored
//! backup, say. It uses the secrets of the system whose database it got,
//! and logs in as that system's admin.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::free_port;
use crate::process::{Proc, bin};
use crate::system::{ADMIN, Secrets, client_with, repo_roots};

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
        secrets: &Secrets,
    ) -> Standalone {
        let (orch_port, gw_port) = (free_port(), free_port());
        let orchestrator_addr = format!("127.0.0.1:{orch_port}");
        let url = format!("http://127.0.0.1:{gw_port}");
        let mut procs = Vec::new();

        let mut cmd = Command::new(bin("aida-orchestrator"));
        cmd.env_remove("REDIS_URL")
            .env_remove("REDIS_ADDR")
            .env("ORCHESTRATOR_LISTEN_ADDR", &orchestrator_addr)
            .env("METRICS_LISTEN_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", database_url)
            // Nothing listens there: no task of a restored database merges
            // without workers anyway.
            .env(
                "AGGREGATOR_ADDR",
                format!("http://127.0.0.1:{}", free_port()),
            )
            .env("PUBLIC_API_URL", &url)
            .env("AIDA_INTERNAL_TOKEN", &secrets.internal_token)
            .env("AIDA_REPO_ROOTS", repo_roots())
            .envs(orchestrator_env.iter().copied());
        procs.push(Proc::spawn(&format!("{name}-orchestrator"), cmd, log_dir));

        let mut cmd = Command::new(bin("aida-gateway"));
        cmd.env("GATEWAY_LISTEN_ADDR", format!("127.0.0.1:{gw_port}"))
            .env("ORCHESTRATOR_ADDR", &orchestrator_addr)
            .env("AIDA_INTERNAL_TOKEN", &secrets.internal_token)
            .env("AIDA_JWT_SECRET", &secrets.jwt_secret)
            .env("AIDA_ACCESS_TOKEN_TTL_SECS", "3600");
        procs.push(Proc::spawn(&format!("{name}-gateway"), cmd, log_dir));

        let mut standalone = Standalone {
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
        // The admin came with the database.
        let resp = reqwest::Client::new()
            .post(format!("{}/api/auth/login", standalone.url))
            .json(&serde_json::json!({ "username": ADMIN, "password": secrets.admin_password }))
            .send()
            .await
            .expect("login");
        let body: Value = resp.json().await.expect("login answer");
        let token = body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("the admin cannot log in: {body}"));
        standalone.http = client_with(token);
        standalone
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        crate::get_json(&self.http, &self.url, path).await
    }
}
