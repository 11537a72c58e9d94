//! Task endpoints: create, list, show, cancel, report and stored events.
//! Each forwards to one orchestrator call; the gateway checks only syntax.

use aida_core::ids::TaskId;
use aida_proto::orchestrator as orch;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::api::{
    CreateTask, ErrorBody, Event, EventList, FollowUp, ListEventsQuery, ListTasksQuery, Task,
    TaskList,
};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// The task id of a path, parsed: a malformed id never reaches the
/// orchestrator.
pub(crate) fn task_id(path: Result<Path<String>, PathRejection>) -> Result<TaskId, ApiError> {
    let Path(raw) = path?;
    Ok(TaskId::parse(&raw)?)
}

/// The `Idempotency-Key` header, "" when absent.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(String::new()),
        Some(key) => key.to_str().map(str::to_owned).map_err(|_| {
            ApiError::InvalidArgument("the Idempotency-Key header must be plain text".into())
        }),
    }
}

/// Creates a task; its subtasks start as workers free up.
#[utoipa::path(
    post,
    path = "/api/tasks",
    tag = "tasks",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "the same key always yields the same task")),
    request_body = CreateTask,
    responses(
        (status = 201, description = "the task was stored", body = Task),
        (status = 400, description = "malformed body, or the orchestrator rejected it", body = ErrorBody),
        (status = 503, description = "the orchestrator is unreachable", body = ErrorBody),
    )
)]
pub async fn create_task(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Json<CreateTask>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    if body.verify.as_ref().and_then(|v| v.timeout_secs) == Some(0) {
        return Err(ApiError::InvalidArgument(
            "\"verify.timeout_secs\" is at least 1 (leave it out for the default, 900)".into(),
        ));
    }
    let mut request = orch::CreateTaskRequest::from(body);
    request.actor = Some(principal.actor());
    // The same key always answers with the same task, never a second one.
    request.idempotency_key = idempotency_key(&headers)?;
    let task: Task = state
        .orchestrator()
        .create_task(request)
        .await?
        .into_inner()
        .into();
    tracing::info!(task_id = %task.id, subtasks = task.subtasks.len(), "task created");
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/tasks/{}", task.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(task)).into_response())
}

/// The same as `POST /api/tasks`, under the name the design uses.
#[utoipa::path(
    post,
    path = "/api/orchestrate",
    tag = "tasks",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "the same key always yields the same task")),
    request_body = CreateTask,
    responses(
        (status = 201, description = "the task was stored", body = Task),
        (status = 400, description = "malformed body, or the orchestrator rejected it", body = ErrorBody),
        (status = 503, description = "the orchestrator is unreachable", body = ErrorBody),
    )
)]
pub async fn orchestrate(
    state: State<AppState>,
    principal: Extension<Principal>,
    headers: HeaderMap,
    body: Result<Json<CreateTask>, JsonRejection>,
) -> Result<Response, ApiError> {
    create_task(state, principal, headers, body).await
}

/// Lists tasks, newest first.
#[utoipa::path(
    get,
    path = "/api/tasks",
    tag = "tasks",
    security(("bearer" = [])),
    params(ListTasksQuery),
    responses(
        (status = 200, body = TaskList),
        (status = 400, body = ErrorBody),
    )
)]
pub async fn list_tasks(
    State(state): State<AppState>,
    query: Result<Query<ListTasksQuery>, QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    let Query(query) = query?;
    let response = state
        .orchestrator()
        .list_tasks(orch::ListTasksRequest {
            limit: query.limit.unwrap_or(0),
        })
        .await?
        .into_inner();
    Ok(Json(TaskList {
        tasks: response.tasks.into_iter().map(Into::into).collect(),
    }))
}

/// One task with its subtasks.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    tag = "tasks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "task id (a UUID)")),
    responses(
        (status = 200, body = Task),
        (status = 400, description = "the id is not a UUID", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get_task(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Task>, ApiError> {
    let id = task_id(path)?;
    let task = state
        .orchestrator()
        .get_task(orch::GetTaskRequest {
            task_id: id.to_string(),
        })
        .await?
        .into_inner();
    Ok(Json(task.into()))
}

/// Cancels one subtask, and the subtasks that depend on it; the rest of the
/// task goes on.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/subtasks/{name}/cancel",
    tag = "tasks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "task id (a UUID)"), ("name" = String, Path, description = "subtask name")),
    responses(
        (status = 200, description = "the task as it is after cancelling the subtask", body = Task),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the subtask or its task already ended", body = ErrorBody),
    )
)]
pub async fn cancel_subtask(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Task>, ApiError> {
    let Path((id, name)) = path?;
    let id = TaskId::parse(&id)?;
    let task: Task = state
        .orchestrator()
        .stop_subtask(orch::StopSubtaskRequest {
            task_id: id.to_string(),
            subtask: name.clone(),
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner()
        .into();
    tracing::info!(task_id = %id, subtask = %name, "subtask cancelled");
    Ok(Json(task))
}

/// Runs an ended subtask's agent again on its own branch with a new
/// instruction (resuming its session where the CLI can); the task then
/// merges and delivers again.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/subtasks/{name}/follow-up",
    tag = "tasks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "task id (a UUID)"), ("name" = String, Path, description = "subtask name")),
    request_body = FollowUp,
    responses(
        (status = 202, description = "the follow-up is queued; the task runs again", body = Task),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the task has not ended, or the subtask has no work to build on", body = ErrorBody),
    )
)]
pub async fn follow_up(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<FollowUp>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path((id, name)) = path?;
    let id = TaskId::parse(&id)?;
    let Json(body) = body?;
    let task: Task = state
        .orchestrator()
        .follow_up(orch::FollowUpRequest {
            task_id: id.to_string(),
            subtask: name.clone(),
            prompt: body.prompt,
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner()
        .into();
    tracing::info!(task_id = %id, subtask = %name, "follow-up queued");
    Ok((StatusCode::ACCEPTED, Json(task)).into_response())
}

/// Lets a task whose plan waits for approval run.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/approve",
    tag = "tasks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "task id (a UUID)")),
    responses(
        (status = 200, description = "the task, queued to run its plan", body = Task),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the task has no plan waiting for approval", body = ErrorBody),
    )
)]
pub async fn approve_task(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Task>, ApiError> {
    let id = task_id(path)?;
    let task: Task = state
        .orchestrator()
        .approve_task(orch::ApproveTaskRequest {
            task_id: id.to_string(),
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner()
        .into();
    tracing::info!(task_id = %id, "plan approved");
    Ok(Json(task))
}

/// Cancels a task: running subtasks are stopped, pending ones never start.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/cancel",
    tag = "tasks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "task id (a UUID)")),
    responses(
        (status = 200, description = "the task as it is after cancelling", body = Task),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the task already finished", body = ErrorBody),
    )
)]
pub async fn cancel_task(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Task>, ApiError> {
    let id = task_id(path)?;
    let task: Task = state
        .orchestrator()
        .cancel_task(orch::CancelTaskRequest {
            task_id: id.to_string(),
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner()
        .into();
    tracing::info!(task_id = %id, status = task.status.label(), "task cancelled");
    Ok(Json(task))
}

/// The task's report: markdown, or with `Accept: application/json` the same
/// report as a JSON document.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/report",
    tag = "tasks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "task id (a UUID)")),
    responses(
        (status = 200, description = "the report", content(
            (String = "text/markdown"),
            (Object = "application/json"),
        )),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = task_id(path)?;
    let report = state
        .orchestrator()
        .get_report(orch::GetReportRequest {
            task_id: id.to_string(),
        })
        .await?
        .into_inner();
    if wants_json(&headers) {
        let document: serde_json::Value = serde_json::from_str(&report.json).map_err(|err| {
            ApiError::Internal(
                anyhow::Error::new(err).context("the orchestrator's report json is invalid"),
            )
        })?;
        return Ok(Json(document).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        report.markdown,
    )
        .into_response())
}

/// Query of `GET /api/tasks/{id}/diff`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// A subtask (or best-of-N candidate): what it changed from where it
    /// started. Without it: the task's result against its base.
    pub subtask: Option<String>,
    /// Only this file.
    pub path: Option<String>,
}

/// What a subtask changed, or the task's result against its base: a
/// unified diff (`text/x-diff`, as `git diff` prints it), or file by file
/// with hunks and lines (`Accept: application/json`). A large diff comes
/// with its later files' hunks left out: ask for them one `path` at a time.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/diff",
    tag = "tasks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "task id (a UUID)"), DiffQuery),
    responses(
        (status = 200, description = "the diff", content(
            (String = "text/x-diff"),
            (crate::api::Diff = "application/json"),
        )),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "no commit to show yet", body = ErrorBody),
    )
)]
pub async fn get_diff(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<axum::extract::Query<DiffQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = task_id(path)?;
    let axum::extract::Query(query) =
        query.map_err(|e| ApiError::InvalidArgument(e.body_text()))?;
    let subtask = query.subtask.unwrap_or_default();
    if !subtask.is_empty() {
        // A candidate's name is a subtask name too.
        aida_core::ids::SubtaskName::parse(&subtask)?;
    }
    let diff = state
        .orchestrator()
        .get_diff(orch::GetDiffRequest {
            task_id: id.to_string(),
            subtask,
            path: query.path.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if wants_json(&headers) {
        return Ok(Json(crate::api::Diff::from(diff)).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")],
        diff.patch,
    )
        .into_response())
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim() == "application/json")
        })
}

/// The task's stored event history, oldest first.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/events",
    tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "task id (a UUID)"), ListEventsQuery),
    responses(
        (status = 200, body = EventList),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn list_events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListEventsQuery>, QueryRejection>,
) -> Result<Json<EventList>, ApiError> {
    let id = task_id(path)?;
    let Query(query) = query?;
    let response = state
        .orchestrator()
        .list_events(orch::ListEventsRequest {
            task_id: id.to_string(),
            after_event_id: query.after.unwrap_or(0),
            limit: query.limit.unwrap_or(0),
        })
        .await?
        .into_inner();
    let events = response
        .events
        .into_iter()
        .map(Event::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            ApiError::Internal(err.context("the orchestrator sent an unreadable event"))
        })?;
    Ok(Json(EventList { events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_json_is_recognised_among_several_types() {
        let mut headers = HeaderMap::new();
        assert!(!wants_json(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html, application/json;q=0.9"),
        );
        assert!(wants_json(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/markdown"));
        assert!(!wants_json(&headers));
    }
}
