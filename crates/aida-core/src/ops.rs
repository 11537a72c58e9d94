//! The operations port every service but the gateway serves beside its gRPC
//! port (`METRICS_LISTEN_ADDR`), and the gateway serves on its own:
//! - `GET /metrics`: Prometheus text; with `AIDA_METRICS_TOKEN` set, only
//!   for `Authorization: Bearer <token>`;
//! - `GET /healthz`: 200 while the process answers;
//! - `GET /readyz`: the service's [`Report`](crate::health::Report), 200
//!   unless unhealthy, 503 then.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::health::{Health, Status};
use crate::secret::SecretString;

/// Who may scrape `/metrics`: anyone who reaches the port, or holders of
/// `AIDA_METRICS_TOKEN` (or `_FILE`).
/// Debug prints the token as `[REDACTED]` (a `SecretString`).
#[derive(Clone, Debug, Default)]
pub struct MetricsAccess {
    token: Option<SecretString>,
}

impl MetricsAccess {
    /// `AIDA_METRICS_TOKEN` or `AIDA_METRICS_TOKEN_FILE`, when set.
    pub fn from_env() -> anyhow::Result<Self> {
        let token = crate::secret::from_env("AIDA_METRICS_TOKEN")?;
        if let Some(token) = &token {
            crate::secret::require_len("AIDA_METRICS_TOKEN", token, 16)?;
        }
        Ok(MetricsAccess { token })
    }

    pub fn with_token(token: SecretString) -> Self {
        MetricsAccess { token: Some(token) }
    }

    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request with these headers may scrape.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        bool::from(presented.as_bytes().ct_eq(token.expose_secret().as_bytes()))
    }
}

/// `GET /metrics` for a router whose state gives the access rule.
pub async fn metrics(access: MetricsAccess, headers: HeaderMap) -> Response {
    if !access.allows(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "error": {
                    "code": "unauthenticated",
                    "message": "/metrics needs the metrics token (Authorization: Bearer AIDA_METRICS_TOKEN)",
                }
            })),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// `GET /readyz`: the report, 503 when unhealthy.
pub async fn readyz(health: &Health) -> Response {
    let report = health.check().await;
    let code = if report.status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(report)).into_response()
}

/// `GET /healthz`.
pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "alive" })).into_response()
}

#[derive(Clone)]
struct OpsState {
    health: Health,
    access: MetricsAccess,
}

/// The operations routes of a service.
pub fn router(health: Health, access: MetricsAccess) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<OpsState>, headers: HeaderMap| metrics(s.access, headers)),
        )
        .route("/healthz", get(healthz))
        .route(
            "/readyz",
            get(|State(s): State<OpsState>| async move { readyz(&s.health).await }),
        )
        .with_state(OpsState { health, access })
}

/// Binds the operations port; `None` when `addr` is empty (off, as when
/// `aida dev` serves every service's metrics on the gateway).
pub async fn bind(addr: &str) -> anyhow::Result<Option<TcpListener>> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding METRICS_LISTEN_ADDR {addr}"))?;
    Ok(Some(listener))
}

/// What a service does at start for operations: binds `addr` (unless
/// empty) and serves `/metrics`, `/healthz` and `/readyz` there, and keeps
/// `health` (gRPC health included) current, all until `stop`. The bound
/// address, when there is one.
pub async fn start(
    addr: &str,
    access: MetricsAccess,
    health: &Health,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    crate::metrics::install();
    let bound = match bind(addr).await? {
        Some(listener) => Some(spawn(
            listener,
            health.clone(),
            access,
            stop.clone().cancelled_owned(),
        )?),
        None => None,
    };
    tokio::spawn(health.clone().run(stop.clone()));
    Ok(bound)
}

/// Serves the operations routes on `listener` until `shutdown`, in the
/// background; the bound address.
pub fn spawn(
    listener: TcpListener,
    health: Health,
    access: MetricsAccess,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    let addr = listener
        .local_addr()
        .context("reading the metrics address")?;
    let app = router(health, access);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the operations server failed");
        }
    });
    tracing::info!(%addr, "metrics and health on /metrics, /healthz, /readyz");
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_token_is_compared_whole() {
        let open = MetricsAccess::default();
        assert!(open.allows(&HeaderMap::new()));
        let closed = MetricsAccess::with_token(SecretString::from("0123456789abcdef"));
        let mut headers = HeaderMap::new();
        assert!(!closed.allows(&headers));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcde".parse().unwrap(),
        );
        assert!(!closed.allows(&headers));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef".parse().unwrap(),
        );
        assert!(closed.allows(&headers));
        assert!(!format!("{closed:?}").contains("0123"));
    }
}
