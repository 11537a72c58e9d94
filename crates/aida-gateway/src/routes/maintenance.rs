//! `POST /api/admin/gc`: removes the events and `aida/<task>/*` branches of
//! tasks that ended long ago (admins).

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::{Extension, Json};

use aida_proto::orchestrator as orch;

use crate::api::{ErrorBody, GcReport, GcRequest};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// Removes what tasks that ended long ago left behind: their events and
/// their `aida/<task>/*` branches. A task that has not ended, and a branch
/// whose pull request is open (or cannot be checked), are kept.
#[utoipa::path(
    post,
    path = "/api/admin/gc",
    tag = "system",
    security(("bearer" = [])),
    request_body = GcRequest,
    responses(
        (status = 200, body = GcReport),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn collect_garbage(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<GcRequest>, JsonRejection>,
) -> Result<Json<GcReport>, ApiError> {
    let Json(body) = body?;
    let older_than_secs = match body.older_than.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(raw) => {
            let age = humantime::parse_duration(raw).map_err(|e| {
                ApiError::InvalidArgument(format!(
                    "older_than {raw:?} is not a duration such as 30d or 12h: {e}"
                ))
            })?;
            if age.as_secs() == 0 {
                return Err(ApiError::InvalidArgument(
                    "older_than must be at least one second".into(),
                ));
            }
            age.as_secs()
        }
    };
    let report = state
        .orchestrator()
        .collect_garbage(orch::CollectGarbageRequest {
            older_than_secs,
            dry_run: body.dry_run,
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner();
    Ok(Json(report.into()))
}
