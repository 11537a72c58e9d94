//! `GET /api/audit` (admins only): the audit trail, newest first, filtered
//! by user, action and time.

use aida_proto::auth as pb;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use crate::api::{AuditList, AuditQuery, ErrorBody};
use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn list_audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    let Query(query) = query?;
    let entries = state
        .auth()
        .list_audit(pb::ListAuditRequest {
            username: query.user.unwrap_or_default(),
            action: query.action.unwrap_or_default(),
            since: query.since.map(aida_core::time::to_proto),
            limit: query.limit.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .entries;
    Ok(Json(AuditList {
        entries: entries.into_iter().map(Into::into).collect(),
    }))
}
