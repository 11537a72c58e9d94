//! What every handler shares: the gRPC clients to the orchestrator, the
//! keys and limits requests are checked with, and a signal that the server
//! is shutting down, so endless SSE streams end and graceful shutdown does
//! not wait on them forever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aida_core::grpc::AuthChannel;
use aida_core::secret::SecretString;
use aida_proto::auth::auth_client::AuthClient;
use aida_proto::orchestrator::orchestrator_client::OrchestratorClient;
use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::Config;
use crate::auth::Principal;
use crate::auth::jwt::{JwtError, JwtKeys};
use crate::fanout::Hub;
use crate::hosts::AllowedHosts;
use crate::limits::{Limits, Rate};

#[derive(Clone)]
pub struct AppState {
    channel: AuthChannel,
    /// The one subscription to the orchestrator's events.
    events: Hub,
    shared: Arc<Shared>,
    /// Flips to true when the server starts shutting down.
    closing: watch::Receiver<bool>,
    close: Arc<watch::Sender<bool>>,
}

/// Built once from the configuration.
struct Shared {
    /// `None` only with `AIDA_AUTH=off`.
    jwt: Option<JwtKeys>,
    limits: Limits,
    hosts: AllowedHosts,
    webhook_secrets: Vec<SecretString>,
    webhook_tolerance: Duration,
    max_body_bytes: usize,
    metrics_access: aida_core::ops::MetricsAccess,
}

impl AppState {
    /// Checks the configuration for a gateway bound to `bound` and connects
    /// to the orchestrator on first use, so the gateway starts (and answers
    /// health checks with 503) while the orchestrator is still coming up.
    pub fn from_config(config: &Config, bound: SocketAddr) -> anyhow::Result<Self> {
        let auth_off = match config.auth.trim() {
            "" | "on" => false,
            "off" => true,
            other => bail!("AIDA_AUTH must be \"on\" or \"off\", got {other:?}"),
        };
        let jwt = if auth_off {
            if !bound.ip().is_loopback() {
                bail!(
                    "AIDA_AUTH=off is accepted only on a loopback address, and the gateway listens on {bound}: \
                     anyone who reaches it could run commands on the workers"
                );
            }
            tracing::warn!(%bound, "AIDA_AUTH=off: every request acts as an admin; only for a single-user machine");
            None
        } else {
            let secret = config.secrets.jwt_secret.as_ref().context(
                "AIDA_JWT_SECRET (or AIDA_JWT_SECRET_FILE) is not set: the gateway signs access tokens with it \
                 (at least 32 bytes, e.g. `openssl rand -hex 32`)",
            )?;
            aida_core::secret::require_len("AIDA_JWT_SECRET", secret, 32)?;
            Some(JwtKeys::new(
                secret,
                &config.jwt_issuer,
                &config.jwt_audience,
                Duration::from_secs(config.access_token_ttl_secs.max(30)),
            ))
        };
        let hosts = AllowedHosts::new(config.allowed_hosts.as_deref(), bound);
        let limits = Limits::new(
            Rate {
                per_minute: config.rate_limit_per_minute,
                burst: config.rate_limit_burst,
            },
            Rate {
                per_minute: config.client_rate_limit_per_minute,
                burst: config.client_rate_limit_burst,
            },
            Rate {
                per_minute: config.login_rate_limit_per_minute,
                burst: config.login_rate_limit_burst,
            },
            config.max_sse_per_user,
        );
        let channel = config
            .security
            .connect_lazy(&config.orchestrator_addr)
            .with_context(|| {
                format!(
                    "invalid orchestrator address {:?}",
                    config.orchestrator_addr
                )
            })?;
        let (close, closing) = watch::channel(false);
        Ok(AppState {
            events: Hub::new(channel.clone(), closing.clone()),
            channel,
            shared: Arc::new(Shared {
                jwt,
                limits,
                hosts,
                webhook_secrets: config.secrets.webhook_secrets.clone(),
                webhook_tolerance: Duration::from_secs(config.webhook_tolerance_secs),
                max_body_bytes: config.max_body_bytes,
                metrics_access: config.metrics_access.clone(),
            }),
            closing,
            close: Arc::new(close),
        })
    }

    pub fn orchestrator(&self) -> OrchestratorClient<AuthChannel> {
        OrchestratorClient::new(self.channel.clone())
    }

    /// Live events, shared by every SSE client.
    pub fn events(&self) -> &Hub {
        &self.events
    }

    pub fn auth(&self) -> AuthClient<AuthChannel> {
        AuthClient::new(self.channel.clone())
    }

    /// Who may scrape `/metrics`.
    pub fn metrics_access(&self) -> &aida_core::ops::MetricsAccess {
        &self.shared.metrics_access
    }

    /// The access-token keys; `None` with `AIDA_AUTH=off`.
    pub fn jwt(&self) -> Option<&JwtKeys> {
        self.shared.jwt.as_ref()
    }

    pub fn auth_off(&self) -> bool {
        self.shared.jwt.is_none()
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    pub fn hosts(&self) -> &AllowedHosts {
        &self.shared.hosts
    }

    pub fn webhook_secrets(&self) -> &[SecretString] {
        &self.shared.webhook_secrets
    }

    pub fn webhook_tolerance(&self) -> Duration {
        self.shared.webhook_tolerance
    }

    pub fn max_body_bytes(&self) -> usize {
        self.shared.max_body_bytes
    }

    /// Writes an audit line without holding up the response; a line that
    /// cannot be written is logged.
    pub fn audit(&self, entry: aida_proto::auth::AuditEntry) {
        let mut client = self.auth();
        tokio::spawn(async move {
            if let Err(status) = client.record_audit(entry).await {
                tracing::warn!(code = ?status.code(), error = %status.message(), "cannot write an audit line");
            }
        });
    }

    /// Audits a request refused for its principal's role.
    pub fn audit_denied(&self, principal: &Principal, method: &str, path: &str) {
        self.audit(aida_proto::auth::AuditEntry {
            username: principal.username.clone(),
            role: principal
                .role
                .map(|r| r.label().to_owned())
                .unwrap_or_default(),
            client_addr: principal.client_addr.clone(),
            action: "authz.denied".into(),
            object: format!("{method} {path}"),
            result: "denied".into(),
            detail_json: serde_json::json!({ "via": principal.via_label() }).to_string(),
            ..Default::default()
        });
    }

    /// Audits an access token that did not verify (never the token).
    pub fn audit_refused_jwt(&self, client_addr: &str, error: &JwtError) {
        let reason = match error {
            JwtError::Expired => "expired".to_owned(),
            JwtError::Invalid(why) => why.clone(),
        };
        self.audit(aida_proto::auth::AuditEntry {
            username: String::new(),
            client_addr: client_addr.to_owned(),
            action: "auth.access_token".into(),
            object: "jwt".into(),
            result: "denied".into(),
            detail_json: serde_json::json!({ "reason": reason }).to_string(),
            ..Default::default()
        });
    }

    /// Ends open event streams; called when graceful shutdown begins.
    pub fn begin_shutdown(&self) {
        let _ = self.close.send(true);
    }

    /// Resolves once [`AppState::begin_shutdown`] was called.
    pub async fn closed(&self) {
        let mut closing = self.closing.clone();
        let _ = closing.wait_for(|closing| *closing).await;
    }
}
