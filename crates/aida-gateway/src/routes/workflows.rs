//! Workflow endpoints: store, list, show, delete and run reusable task
//! templates. Each forwards to one orchestrator call.

use aida_proto::orchestrator as orch;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::api::{
    ErrorBody, PutWorkflow, RunWorkflow, Task, Workflow, WorkflowList, WorkflowQuery,
};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// Stored workflows, and a repository's own when `repo` is given.
#[utoipa::path(
    get,
    path = "/api/workflows",
    tag = "workflows",
    security(("bearer" = [])),
    params(WorkflowQuery),
    responses(
        (status = 200, body = WorkflowList),
        (status = 400, body = ErrorBody),
    )
)]
pub async fn list_workflows(
    State(state): State<AppState>,
    query: Result<Query<WorkflowQuery>, QueryRejection>,
) -> Result<Json<WorkflowList>, ApiError> {
    let Query(query) = query?;
    let list = state
        .orchestrator()
        .list_workflows(orch::ListWorkflowsRequest {
            repo: query.repo.unwrap_or_default(),
            base: query.base.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Json(WorkflowList {
        workflows: list.workflows.into_iter().map(Into::into).collect(),
    }))
}

/// Stores a workflow (or replaces the stored one of its name).
#[utoipa::path(
    post,
    path = "/api/workflows",
    tag = "workflows",
    security(("bearer" = [])),
    request_body = PutWorkflow,
    responses(
        (status = 201, description = "stored", body = Workflow),
        (status = 400, description = "not a valid workflow; the message says why", body = ErrorBody),
    )
)]
pub async fn put_workflow(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<PutWorkflow>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let workflow: Workflow = state
        .orchestrator()
        .put_workflow(orch::PutWorkflowRequest {
            source: body.source,
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner()
        .into();
    Ok((StatusCode::CREATED, Json(workflow)).into_response())
}

/// One workflow: the repository's own when `repo` is given and it has one
/// of that name, else the stored one.
#[utoipa::path(
    get,
    path = "/api/workflows/{name}",
    tag = "workflows",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "workflow name"), WorkflowQuery),
    responses(
        (status = 200, body = Workflow),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get_workflow(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WorkflowQuery>, QueryRejection>,
) -> Result<Json<Workflow>, ApiError> {
    let Path(name) = path?;
    let Query(query) = query?;
    let workflow = state
        .orchestrator()
        .get_workflow(orch::GetWorkflowRequest {
            name,
            repo: query.repo.unwrap_or_default(),
            base: query.base.unwrap_or_default(),
            actor: None,
        })
        .await?
        .into_inner();
    Ok(Json(workflow.into()))
}

/// Deletes a stored workflow.
#[utoipa::path(
    delete,
    path = "/api/workflows/{name}",
    tag = "workflows",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "workflow name")),
    responses(
        (status = 200, description = "the workflow as it was", body = Workflow),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn delete_workflow(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Workflow>, ApiError> {
    let Path(name) = path?;
    let workflow = state
        .orchestrator()
        .delete_workflow(orch::GetWorkflowRequest {
            name,
            repo: String::new(),
            base: String::new(),
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner();
    Ok(Json(workflow.into()))
}

/// Runs a workflow: its steps become a task's subtasks.
#[utoipa::path(
    post,
    path = "/api/workflows/{name}/run",
    tag = "workflows",
    security(("bearer" = [])),
    params(
        ("name" = String, Path, description = "workflow name"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key always yields the same task"),
    ),
    request_body = RunWorkflow,
    responses(
        (status = 201, description = "the task was created", body = Task),
        (status = 400, description = "a parameter is missing or unknown, or the task is invalid", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn run_workflow(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<RunWorkflow>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    let Json(body) = body?;
    let mut request = orch::RunWorkflowRequest::from(body);
    request.name = name;
    request.actor = Some(principal.actor());
    request.idempotency_key = super::tasks::idempotency_key(&headers)?;
    let task: Task = state
        .orchestrator()
        .run_workflow(request)
        .await?
        .into_inner()
        .into();
    tracing::info!(task_id = %task.id, workflow = ?task.workflow, "workflow run");
    Ok((StatusCode::CREATED, Json(task)).into_response())
}
