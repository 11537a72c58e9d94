//! Users (admins only): `GET/POST /api/users`, `PATCH/DELETE
//! /api/users/{name}`. The orchestrator enforces the password policy and
//! keeps at least one admin who can log in.

use aida_proto::auth as pb;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::api::{CreateUser, ErrorBody, UpdateUser, User, UserList};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = UserList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn list_users(State(state): State<AppState>) -> Result<Json<UserList>, ApiError> {
    let users = state
        .auth()
        .list_users(pb::ListUsersRequest {})
        .await?
        .into_inner()
        .users;
    Ok(Json(UserList {
        users: users.into_iter().map(Into::into).collect(),
    }))
}

/// Creates a user; the password must have at least 12 characters with
/// upper- and lowercase letters, a digit and a symbol.
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    security(("bearer" = [])),
    request_body = CreateUser,
    responses(
        (status = 201, body = User),
        (status = 400, description = "a bad name or role, or a password that breaks the policy (the rules it breaks are named)", body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let Json(body) = body?;
    let user = state
        .auth()
        .create_user(pb::CreateUserRequest {
            name: body.name,
            role: body.role,
            password: body.password,
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Changes a user's role, password or disabled flag.
#[utoipa::path(
    patch,
    path = "/api/users/{name}",
    tag = "users",
    security(("bearer" = [])),
    params(("name" = String, Path)),
    request_body = UpdateUser,
    responses(
        (status = 200, body = User),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "it would leave no admin who can log in", body = ErrorBody),
    )
)]
pub async fn update_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<UpdateUser>, JsonRejection>,
) -> Result<Json<User>, ApiError> {
    let Path(name) = path?;
    let Json(body) = body?;
    if body.role.is_none() && body.password.is_none() && body.disabled.is_none() {
        return Err(ApiError::InvalidArgument(
            "nothing to change: give \"role\", \"password\" or \"disabled\"".into(),
        ));
    }
    let user = state
        .auth()
        .update_user(pb::UpdateUserRequest {
            name,
            role: body.role,
            password: body.password,
            disabled: body.disabled,
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner();
    Ok(Json(user.into()))
}

/// Deletes a user; their sessions and API tokens stop working at once.
#[utoipa::path(
    delete,
    path = "/api/users/{name}",
    tag = "users",
    security(("bearer" = [])),
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "the deleted user", body = User),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the last admin who can log in", body = ErrorBody),
    )
)]
pub async fn delete_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<User>, ApiError> {
    let Path(name) = path?;
    let user = state
        .auth()
        .delete_user(pb::DeleteUserRequest {
            name,
            actor: Some(principal.actor()),
        })
        .await?
        .into_inner();
    Ok(Json(user.into()))
}
