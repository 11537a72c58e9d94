//! API tokens for CI and scripts (admins only): `POST /api/tokens` shows a
//! new token once, `GET /api/tokens` lists them without secrets, `DELETE
//! /api/tokens/{id}` revokes one at once.

use aida_proto::auth as pb;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::api::{
    ApiToken, ApiTokenList, CreateApiToken, CreatedApiToken, ErrorBody, ListTokensQuery,
};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// Creates a token acting as its creator with `role` (at most theirs);
/// `token` is in this answer only.
#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "tokens",
    security(("bearer" = [])),
    request_body = CreateApiToken,
    responses(
        (status = 201, body = CreatedApiToken),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<CreateApiToken>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedApiToken>), ApiError> {
    let Json(body) = body?;
    let created = state
        .auth()
        .create_api_token(pb::CreateApiTokenRequest {
            name: body.name,
            role: body.role,
            expires_in_days: body.expires_in_days.unwrap_or_default(),
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner();
    let info: ApiToken = created
        .token
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a created token without its record")))?
        .into();
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiToken {
            token: created.secret,
            info,
        }),
    ))
}

/// Tokens, newest first, never with their secrets.
#[utoipa::path(
    get,
    path = "/api/tokens",
    tag = "tokens",
    security(("bearer" = [])),
    params(ListTokensQuery),
    responses((status = 200, body = ApiTokenList), (status = 403, body = ErrorBody))
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    query: Result<Query<ListTokensQuery>, QueryRejection>,
) -> Result<Json<ApiTokenList>, ApiError> {
    let Query(query) = query?;
    let tokens = state
        .auth()
        .list_api_tokens(pb::ListApiTokensRequest { all: query.all })
        .await?
        .into_inner()
        .tokens;
    Ok(Json(ApiTokenList {
        tokens: tokens.into_iter().map(Into::into).collect(),
    }))
}

/// Revokes a token: the next request with it is refused.
#[utoipa::path(
    delete,
    path = "/api/tokens/{id}",
    tag = "tokens",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ApiToken), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ApiToken>, ApiError> {
    let Path(id) = path?;
    let token = state
        .auth()
        .revoke_api_token(pb::RevokeApiTokenRequest {
            id,
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner();
    Ok(Json(token.into()))
}
