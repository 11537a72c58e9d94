//! The gateway: AIDA's REST API (JSON, Server-Sent Events, OpenAPI) in front
//! of the orchestrator, and the door every user comes through: it
//! authenticates requests, checks each route's permission, limits rates and
//! body sizes, and verifies webhook signatures. It holds no state of its own
//! beyond those limits: every request becomes gRPC calls to the
//! orchestrator, and the DTOs in [`api`] are shared with the `aida` CLI.
//!
//! Map: `routes` (the route table and handlers), `auth` (tokens, roles,
//! the gate), `limits` (rate and stream limits), `hosts` (host names and
//! CORS), `state`, `error`, `openapi`.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod fanout;
pub mod hosts;
pub mod limits;
pub mod memory;
pub mod openapi;
pub mod routes;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use aida_core::secret::SecretString;
use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use state::AppState;

/// Settings, from defaults overridden by environment variables named after
/// the fields (`GATEWAY_LISTEN_ADDR`, `ORCHESTRATOR_ADDR`, `AIDA_...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Where the REST API listens.
    pub gateway_listen_addr: String,
    /// The orchestrator's gRPC address: `host:port` or `http://host:port`.
    pub orchestrator_addr: String,
    /// `AIDA_AUTH`: `on` (the default), or `off` on a loopback address
    /// only, where every request acts as an admin.
    #[serde(rename = "aida_auth")]
    pub auth: String,
    /// `AIDA_JWT_ISSUER`: the `iss` of access tokens.
    #[serde(rename = "aida_jwt_issuer")]
    pub jwt_issuer: String,
    /// `AIDA_JWT_AUDIENCE`: their `aud`.
    #[serde(rename = "aida_jwt_audience")]
    pub jwt_audience: String,
    /// `AIDA_ACCESS_TOKEN_TTL_SECS`: how long an access token lives.
    #[serde(rename = "aida_access_token_ttl_secs")]
    pub access_token_ttl_secs: u64,
    /// `AIDA_ALLOWED_HOSTS`: the host names requests may name (comma-
    /// separated, `*` for any); the loopback names when listening on
    /// loopback, any otherwise.
    #[serde(rename = "aida_allowed_hosts")]
    pub allowed_hosts: Option<String>,
    /// `AIDA_CORS_ORIGINS`: browser origins allowed cross-origin requests;
    /// none by default.
    #[serde(rename = "aida_cors_origins")]
    pub cors_origins: Option<String>,
    /// `AIDA_RATE_LIMIT_PER_MINUTE`, `AIDA_RATE_LIMIT_BURST`: per user.
    #[serde(rename = "aida_rate_limit_per_minute")]
    pub rate_limit_per_minute: u32,
    #[serde(rename = "aida_rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// `AIDA_CLIENT_RATE_LIMIT_PER_MINUTE`, `..._BURST`: per client
    /// address, signed in or not.
    #[serde(rename = "aida_client_rate_limit_per_minute")]
    pub client_rate_limit_per_minute: u32,
    #[serde(rename = "aida_client_rate_limit_burst")]
    pub client_rate_limit_burst: u32,
    /// `AIDA_LOGIN_RATE_LIMIT_PER_MINUTE`, `..._BURST`: logins and
    /// refreshes per client address.
    #[serde(rename = "aida_login_rate_limit_per_minute")]
    pub login_rate_limit_per_minute: u32,
    #[serde(rename = "aida_login_rate_limit_burst")]
    pub login_rate_limit_burst: u32,
    /// `AIDA_MAX_BODY_BYTES`: larger request bodies get `413`.
    #[serde(rename = "aida_max_body_bytes")]
    pub max_body_bytes: usize,
    /// `AIDA_MAX_SSE_PER_USER`: live event streams one user may hold.
    #[serde(rename = "aida_max_sse_per_user")]
    pub max_sse_per_user: usize,
    /// `AIDA_WEBHOOK_TOLERANCE_SECS`: how far a webhook's timestamp may be
    /// from now.
    #[serde(rename = "aida_webhook_tolerance_secs")]
    pub webhook_tolerance_secs: u64,
    /// The internal credential calls to the orchestrator carry.
    #[serde(skip)]
    pub security: aida_core::grpc::Security,
    /// `AIDA_METRICS_TOKEN`: what scrapes of `/metrics` must present, when
    /// set.
    #[serde(skip)]
    pub metrics_access: aida_core::ops::MetricsAccess,
    /// Secrets, read by [`Config::from_env`]; never printed.
    #[serde(skip)]
    pub secrets: Secrets,
}

/// The gateway's secrets.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `AIDA_JWT_SECRET` or `AIDA_JWT_SECRET_FILE`: signs access tokens.
    pub jwt_secret: Option<SecretString>,
    /// `AIDA_WEBHOOK_SECRETS` or `_FILE`: comma-separated; any one signs a
    /// valid webhook (several while one is rotated out).
    pub webhook_secrets: Vec<SecretString>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gateway_listen_addr: "127.0.0.1:8080".to_owned(),
            orchestrator_addr: "http://127.0.0.1:50051".to_owned(),
            auth: "on".to_owned(),
            jwt_issuer: "aida".to_owned(),
            jwt_audience: "aida-api".to_owned(),
            access_token_ttl_secs: 900,
            allowed_hosts: None,
            cors_origins: None,
            // A person or a script of theirs needs far less; CI submitting
            // a batch of tasks needs bursts.
            rate_limit_per_minute: 6000,
            rate_limit_burst: 1000,
            client_rate_limit_per_minute: 12000,
            client_rate_limit_burst: 2000,
            login_rate_limit_per_minute: 30,
            login_rate_limit_burst: 10,
            max_body_bytes: 1024 * 1024,
            max_sse_per_user: 16,
            webhook_tolerance_secs: 300,
            security: Default::default(),
            metrics_access: Default::default(),
            secrets: Secrets::default(),
        }
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let mut config: Config =
            aida_core::config::from_env().context("reading the gateway configuration")?;
        config.security = aida_core::grpc::Security::from_env()?;
        config.secrets = Secrets::from_env()?;
        config.metrics_access = aida_core::ops::MetricsAccess::from_env()?;
        Ok(config)
    }
}

impl Secrets {
    /// `AIDA_JWT_SECRET` and `AIDA_WEBHOOK_SECRETS` (or their `_FILE`s).
    pub fn from_env() -> anyhow::Result<Self> {
        use aida_core::secret::ExposeSecret;
        let webhook_secrets = aida_core::secret::from_env("AIDA_WEBHOOK_SECRETS")?
            .map(|list| {
                list.expose_secret()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| SecretString::from(s.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Secrets {
            jwt_secret: aida_core::secret::from_env("AIDA_JWT_SECRET")?,
            webhook_secrets,
        })
    }
}

/// Every route behind its gate, with the layers every request passes:
/// tracing, CORS (when configured), the host check, the per-address rate
/// limit and the body limit. Ready to serve, or to drive with
/// `tower::ServiceExt::oneshot`.
pub fn app(state: AppState, cors_origins: Option<&str>) -> anyhow::Result<Router> {
    let mut router = routes::router(&state)
        .layer(DefaultBodyLimit::max(state.max_body_bytes()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_clients,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            hosts::check_host,
        ));
    if let Some(cors) = hosts::cors(cors_origins)? {
        router = router.layer(cors);
    }
    aida_core::metrics::install();
    Ok(router
        .layer(axum::middleware::from_fn(count_requests))
        .layer(TraceLayer::new_for_http().make_span_with(http_span))
        .with_state(state))
}

/// The span of one request: a child of the caller's trace when it sent a
/// `traceparent`, named by its route template (never the raw path).
fn http_span(request: &http::Request<axum::body::Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or("unmatched");
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        trace_id = tracing::field::Empty,
    );
    aida_core::telemetry::adopt_headers(&span, request.headers());
    span
}

/// `aida_http_requests_total{method, status, route}` and
/// `aida_http_request_duration_seconds{method, route}`: the route is the
/// template (`/api/tasks/{id}`), `unmatched` for paths no route has, so
/// the label set stays bounded.
async fn count_requests(request: Request, next: Next) -> Response {
    use aida_core::metrics::names;
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = match *request.method() {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let start = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::HTTP_REQUESTS, "method" => method, "status" => status, "route" => route.clone())
        .increment(1);
    metrics::histogram!(names::HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// The per-address rate limit, before anything else is done for a request.
async fn limit_clients(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(ip) = auth::client_ip(&request)
        && let Err(wait) = state.limits().check_client(ip)
    {
        return ApiError::TooManyRequests(wait).into_response();
    }
    next.run(request).await
}

/// Serves the REST API on `listener` until `shutdown` resolves; then open
/// event streams end and in-flight requests finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.security.require()?;
    let addr = listener
        .local_addr()
        .context("reading the listener address")?;
    let state = AppState::from_config(&config, addr)?;
    let router = app(state.clone(), config.cors_origins.as_deref())?;
    tracing::info!(
        %addr,
        orchestrator = %config.orchestrator_addr,
        auth = if state.auth_off() { "off" } else { "on" },
        webhooks = !state.webhook_secrets().is_empty(),
        "gateway listening"
    );
    // Idle rate-limit buckets are dropped now and then.
    let pruning = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                state.limits().forget_idle();
            }
        })
    };
    let closing = state.clone();
    // TCP_NODELAY: a response's head and body go out at once, never held
    // for the client's delayed ACK (40 ms per request on a kept-alive
    // connection otherwise).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        closing.begin_shutdown();
    })
    .await
    .context("gateway server failed");
    pruning.abort();
    served?;
    tracing::info!("gateway stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_the_gateway_listens_on_loopback_with_auth_on_and_no_secret() {
        let config = Config::default();
        assert_eq!(config.gateway_listen_addr, "127.0.0.1:8080");
        assert_eq!(config.auth, "on");
        assert!(config.secrets.jwt_secret.is_none());
        assert!(config.secrets.webhook_secrets.is_empty());
    }
}
