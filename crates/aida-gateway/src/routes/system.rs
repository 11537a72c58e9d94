//! Endpoints about the system rather than one task: workers, health and the
//! OpenAPI document.

use std::time::Duration;

use aida_core::health::{Component, Report, Status, timed};
use aida_proto::orchestrator as orch;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use utoipa::OpenApi;

use crate::api::{ComponentHealth, ErrorBody, Health, LockList, SystemStatus, Worker, WorkerList};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::AppState;

/// A health probe must answer even if the orchestrator hangs.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// Connected and recently seen workers.
#[utoipa::path(
    get,
    path = "/api/workers",
    tag = "workers",
    security(("bearer" = [])),
    responses(
        (status = 200, body = WorkerList),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn list_workers(State(state): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    let response = state
        .orchestrator()
        .list_workers(orch::ListWorkersRequest {})
        .await?
        .into_inner();
    Ok(Json(WorkerList {
        workers: response.workers.into_iter().map(Into::into).collect(),
    }))
}

/// Drains a worker: it finishes what it runs and is given nothing new until
/// resumed, so it can be stopped without losing work.
#[utoipa::path(
    post,
    path = "/api/workers/{id}/drain",
    tag = "workers",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "worker id")),
    responses(
        (status = 200, body = Worker),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn drain_worker(
    state: State<AppState>,
    principal: Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Worker>, ApiError> {
    set_drain(state, principal, path, true).await
}

/// Lets a drained worker take work again.
#[utoipa::path(
    post,
    path = "/api/workers/{id}/resume",
    tag = "workers",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "worker id")),
    responses(
        (status = 200, body = Worker),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn resume_worker(
    state: State<AppState>,
    principal: Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Worker>, ApiError> {
    set_drain(state, principal, path, false).await
}

async fn set_drain(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    drain: bool,
) -> Result<Json<Worker>, ApiError> {
    let Path(worker_id) = path?;
    let worker = state
        .orchestrator()
        .set_worker_drain(orch::SetWorkerDrainRequest {
            worker_id,
            drain,
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner();
    Ok(Json(worker.into()))
}

/// Locks held right now: a merge holds its repository's lock.
#[utoipa::path(
    get,
    path = "/api/locks",
    tag = "system",
    security(("bearer" = [])),
    responses(
        (status = 200, body = LockList),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn list_locks(State(state): State<AppState>) -> Result<Json<LockList>, ApiError> {
    let response = state
        .orchestrator()
        .list_locks(orch::ListLocksRequest {})
        .await?
        .into_inner();
    Ok(Json(LockList {
        locks: response.locks.into_iter().map(Into::into).collect(),
    }))
}

/// The system's health: the orchestrator's answer (with its latency) and
/// the parts it checks (database, Redis, aggregator, workers). 200 while
/// work can go on (`healthy`, `degraded`), 503 when it cannot.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "system",
    responses(
        (status = 200, description = "healthy, or degraded: a part is down and work goes on", body = Health),
        (status = 503, description = "unhealthy: the orchestrator or its database is down", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let health = system_health(&state).await;
    let code = if health.status == Status::Unhealthy.as_str() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(health))
}

/// The report behind `/api/health` and the gateway's `/readyz`.
pub async fn system_health(state: &AppState) -> Health {
    let mut components: Vec<(String, Component)> = Vec::new();
    let mut parts = Vec::new();
    let orchestrator = timed(HEALTH_TIMEOUT, Status::Unhealthy, async {
        let report = state
            .orchestrator()
            .get_health(orch::HealthRequest {})
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable => format!("unreachable: {}", status.message()),
                code => format!("{code:?}: {}", status.message()),
            })?
            .into_inner();
        parts = report.components;
        Ok(())
    })
    .await;
    components.push(("orchestrator".into(), orchestrator));
    components.extend(parts.into_iter().map(|c| {
        (
            c.name,
            Component {
                status: Status::parse(&c.status),
                latency_ms: c.latency_ms,
                detail: (!c.detail.is_empty()).then_some(c.detail),
            },
        )
    }));
    let report = Report::of(components);
    metrics::gauge!(aida_core::metrics::names::UP).set(if report.status == Status::Unhealthy {
        0.0
    } else {
        1.0
    });
    Health {
        status: report.status.as_str().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        checked_at: chrono::Utc::now(),
        components: report
            .components
            .into_iter()
            .map(|(name, c)| {
                (
                    name,
                    ComponentHealth {
                        status: c.status.as_str().to_owned(),
                        latency_ms: c.latency_ms,
                        detail: c.detail,
                    },
                )
            })
            .collect(),
    }
}

/// Prometheus text: the gateway's metrics (`aida_http_*`, SSE, webhooks)
/// and its process's. With `AIDA_METRICS_TOKEN` set, only for
/// `Authorization: Bearer <token>`.
pub async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    aida_core::ops::metrics(state.metrics_access().clone(), headers).await
}

/// 200 while the gateway answers.
pub async fn healthz() -> axum::response::Response {
    aida_core::ops::healthz().await
}

/// 200 while requests can be served (the orchestrator answers), 503 when
/// not; the body is `/api/health`'s.
pub async fn readyz(state: State<AppState>) -> (StatusCode, Json<Health>) {
    health(state).await
}

/// The system at a glance, for `aida status`: health, workers, the queue
/// by priority, the tasks under way and the last failures.
#[utoipa::path(
    get,
    path = "/api/status",
    tag = "system",
    security(("bearer" = [])),
    responses(
        (status = 200, body = SystemStatus),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn status(State(state): State<AppState>) -> Result<Json<SystemStatus>, ApiError> {
    let health = system_health(&state).await;
    let workers = state
        .orchestrator()
        .list_workers(orch::ListWorkersRequest {})
        .await?
        .into_inner();
    let status = state
        .orchestrator()
        .get_system_status(orch::SystemStatusRequest {})
        .await?
        .into_inner();
    Ok(Json(SystemStatus {
        health,
        workers: workers.workers.into_iter().map(Into::into).collect(),
        queue: status.queue.into_iter().map(Into::into).collect(),
        active: status.active.into_iter().map(Into::into).collect(),
        failures: status.failures.into_iter().map(Into::into).collect(),
        last_event_id: status.last_event_id,
    }))
}

/// This API's OpenAPI 3 document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "system",
    security(("bearer" = [])),
    responses((status = 200, description = "the OpenAPI document", body = Object))
)]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
