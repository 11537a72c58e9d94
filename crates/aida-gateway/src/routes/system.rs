//! Endpoints about the system rather than one task: workers, health and the
//! OpenAPI document.

use std::time::Duration;

use aida_proto::orchestrator as orch;
use aida_proto::service_names;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use utoipa::OpenApi;

use crate::api::{ErrorBody, Health, LockList, SystemStatus, Worker, WorkerList};
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

/// 200 when the orchestrator's gRPC health check answers SERVING, else 503.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "system",
    responses(
        (status = 200, description = "the orchestrator is serving", body = Health),
        (status = 503, description = "the orchestrator is not serving or unreachable", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let request = HealthCheckRequest {
        service: service_names::ORCHESTRATOR.to_owned(),
    };
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, state.health().check(request)).await;
    let orchestrator = match answer {
        Ok(Ok(response)) => match response.into_inner().status() {
            ServingStatus::Serving => "serving",
            ServingStatus::NotServing => "not_serving",
            ServingStatus::ServiceUnknown => "service_unknown",
            ServingStatus::Unknown => "unknown",
        },
        Ok(Err(status)) if status.code() == tonic::Code::Unavailable => "unreachable",
        Ok(Err(status)) => {
            tracing::warn!(code = ?status.code(), detail = %status.message(), "orchestrator health check failed");
            "error"
        }
        Err(_) => "timeout",
    };
    let (code, status) = if orchestrator == "serving" {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    };
    let body = Health {
        status: status.to_owned(),
        orchestrator: orchestrator.to_owned(),
    };
    (code, Json(body))
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
    let (_, Json(health)) = self::health(State(state.clone())).await;
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
