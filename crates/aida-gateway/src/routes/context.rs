//! A task's shared context: `GET /api/tasks/{id}/context`,
//! `GET /api/tasks/{id}/context/{key}` and `PUT /api/tasks/{id}/context/{key}`,
//! for users (reading needs viewer, writing operator) and for the task's
//! agents, whose token (`AIDA_CONTEXT_TOKEN`) works for their own task only.

use aida_proto::orchestrator as orch;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};

use crate::api::{ContextEntry, ContextHistoryQuery, ContextList, ErrorBody, PutContext};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

fn task_and_key(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path((id, key)) = path?;
    Ok((aida_core::ids::TaskId::parse(&id)?.to_string(), key))
}

/// The latest value of each key (every value with `?history=true`).
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/context",
    tag = "context",
    security(("bearer" = []), ("context_token" = [])),
    params(("id" = String, Path, description = "task id"), ContextHistoryQuery),
    responses(
        (status = 200, body = ContextList),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn list_context(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ContextHistoryQuery>, QueryRejection>,
) -> Result<Json<ContextList>, ApiError> {
    let id = super::tasks::task_id(path)?;
    let Query(query) = query?;
    let entries = state
        .orchestrator()
        .list_context(orch::ListContextRequest {
            task_id: id.to_string(),
            history: query.history,
        })
        .await?
        .into_inner()
        .entries;
    Ok(Json(ContextList {
        context: entries.into_iter().map(Into::into).collect(),
    }))
}

/// A key's latest value (all its values with `?history=true`).
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/context/{key}",
    tag = "context",
    security(("bearer" = []), ("context_token" = [])),
    params(("id" = String, Path, description = "task id"), ("key" = String, Path), ContextHistoryQuery),
    responses(
        (status = 200, description = "the latest entry, or `{\"context\": [...]}` with history", body = ContextEntry),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get_context(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<ContextHistoryQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (task_id, key) = task_and_key(path)?;
    let Query(query) = query?;
    let entries: Vec<ContextEntry> = state
        .orchestrator()
        .get_context(orch::GetContextRequest {
            task_id,
            key,
            history: query.history,
        })
        .await?
        .into_inner()
        .entries
        .into_iter()
        .map(Into::into)
        .collect();
    let body = if query.history {
        serde_json::to_value(ContextList { context: entries })
    } else {
        serde_json::to_value(entries.last())
    };
    Ok(Json(body.map_err(|e| ApiError::Internal(e.into()))?))
}

/// Writes a new value of a key; older values stay in the history.
#[utoipa::path(
    put,
    path = "/api/tasks/{id}/context/{key}",
    tag = "context",
    params(("id" = String, Path, description = "task id"), ("key" = String, Path)),
    request_body = PutContext,
    security(("bearer" = []), ("context_token" = [])),
    responses(
        (status = 200, body = ContextEntry),
        (status = 400, body = ErrorBody),
        (status = 401, description = "no or a wrong token", body = ErrorBody),
        (status = 403, description = "a viewer, or an agent of another task", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn put_context(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<PutContext>, JsonRejection>,
) -> Result<Json<ContextEntry>, ApiError> {
    let (task_id, key) = task_and_key(path)?;
    let Json(body) = body?;
    let entry = state
        .orchestrator()
        .put_context(orch::PutContextRequest {
            task_id,
            key,
            value: body.value,
            token: principal
                .context_token()
                .map(|t| aida_core::secret::ExposeSecret::expose_secret(t).to_owned())
                .unwrap_or_default(),
            author: body.author.unwrap_or_default(),
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner();
    Ok(Json(entry.into()))
}
