//! The gateway: AIDA's REST API (JSON, Server-Sent Events, OpenAPI) in front
//! of the orchestrator. It holds no state of its own: every request becomes
//! one gRPC call to the orchestrator, and the DTOs in [`api`] are shared with
//! the `aida` CLI.

pub mod api;
pub mod error;
pub mod openapi;
pub mod routes;
pub mod state;

use std::future::Future;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use state::AppState;

use routes::{context, events, system, tasks};

/// Settings, from defaults overridden by environment variables named after
/// the fields in upper case (`GATEWAY_LISTEN_ADDR`, `ORCHESTRATOR_ADDR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Where the REST API listens.
    pub gateway_listen_addr: String,
    /// The orchestrator's gRPC address: `host:port` or `http://host:port`.
    pub orchestrator_addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gateway_listen_addr: "0.0.0.0:8080".to_owned(),
            orchestrator_addr: "http://127.0.0.1:50051".to_owned(),
        }
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        aida_core::config::from_env().context("reading the gateway configuration")
    }
}

/// Every route, ready to serve or to drive with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/tasks",
            post(tasks::create_task).get(tasks::list_tasks),
        )
        .route("/api/orchestrate", post(tasks::orchestrate))
        .route("/api/tasks/{id}", get(tasks::get_task))
        .route("/api/tasks/{id}/cancel", post(tasks::cancel_task))
        .route("/api/tasks/{id}/approve", post(tasks::approve_task))
        .route(
            "/api/tasks/{id}/subtasks/{name}/cancel",
            post(tasks::cancel_subtask),
        )
        .route("/api/tasks/{id}/report", get(tasks::get_report))
        .route("/api/tasks/{id}/events", get(tasks::list_events))
        .route("/api/tasks/{id}/context", get(context::list_context))
        .route(
            "/api/tasks/{id}/context/{key}",
            get(context::get_context).put(context::put_context),
        )
        .route("/api/events", get(events::follow_events))
        .route("/api/workers", get(system::list_workers))
        .route("/api/locks", get(system::list_locks))
        .route("/api/health", get(system::health))
        .route("/api/openapi.json", get(system::openapi))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the REST API on `listener` until `shutdown` resolves; then open
/// event streams end and in-flight requests finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = AppState::connect_lazy(&config.orchestrator_addr)?;
    let addr = listener
        .local_addr()
        .context("reading the listener address")?;
    tracing::info!(%addr, orchestrator = %config.orchestrator_addr, "gateway listening");
    let closing = state.clone();
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.begin_shutdown();
        })
        .await
        .context("gateway server failed")?;
    tracing::info!("gateway stopped");
    Ok(())
}
