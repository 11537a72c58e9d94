//! Signing in: `POST /api/auth/login` (password, with lockout), `POST
//! /api/auth/refresh` (a new access token; refresh tokens rotate), `POST
//! /api/auth/logout` and `GET /api/auth/me`. The orchestrator checks
//! passwords and keeps sessions; the gateway signs the access tokens.

use aida_core::auth::Role;
use aida_proto::auth as pb;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::api::{ErrorBody, Login, Me, RefreshRequest, TokenPair, UserInfo};
use crate::auth::{Principal, Via, client_ip};
use crate::error::ApiError;
use crate::state::AppState;

/// Logins and refreshes from one address are limited on their own.
fn check_login_rate(state: &AppState, request: &Request) -> Result<String, ApiError> {
    let ip = client_ip(request);
    if let Some(ip) = ip {
        state
            .limits()
            .check_login(ip)
            .map_err(ApiError::TooManyRequests)?;
    }
    Ok(ip.map(|ip| ip.to_string()).unwrap_or_default())
}

async fn json_body<T: serde::de::DeserializeOwned>(request: Request) -> Result<T, ApiError> {
    let result: Result<Json<T>, JsonRejection> =
        <Json<T> as axum::extract::FromRequest<()>>::from_request(request, &()).await;
    Ok(result?.0)
}

/// The answer to a login or refresh: a new access token for the session.
fn token_pair(state: &AppState, session: pb::Session) -> Result<TokenPair, ApiError> {
    let keys = state.jwt().ok_or_else(|| {
        ApiError::FailedPrecondition(
            "signing in is off: this gateway runs with AIDA_AUTH=off".into(),
        )
    })?;
    let user = session
        .user
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a session without its user")))?;
    let role: Role = user
        .role
        .parse()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored role: {e}")))?;
    let access_token = keys
        .issue(&user.name, role, &session.session_id)
        .map_err(ApiError::Internal)?;
    Ok(TokenPair {
        access_token,
        refresh_token: session.refresh_token,
        token_type: "Bearer".into(),
        expires_in: keys.ttl().as_secs(),
        user: UserInfo {
            name: user.name,
            role: user.role,
        },
    })
}

/// Signs in with a password. After `AIDA_MAX_FAILED_LOGINS` (5) wrong
/// passwords in a row the account is locked for `AIDA_LOCKOUT_SECS`, and
/// the answer stays the same as for a wrong password.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, body = TokenPair),
        (status = 400, body = ErrorBody),
        (status = 401, description = "wrong username or password, or a locked account", body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<TokenPair>, ApiError> {
    let client_addr = check_login_rate(&state, &request)?;
    let body: Login = json_body(request).await?;
    let session = state
        .auth()
        .login(pb::LoginRequest {
            username: body.username,
            password: body.password,
            client_addr,
        })
        .await?
        .into_inner();
    Ok(Json(token_pair(&state, session)?))
}

/// Trades a refresh token for a new access token and a new refresh token.
/// A refresh token used a second time ends the whole session.
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<TokenPair>, ApiError> {
    let client_addr = check_login_rate(&state, &request)?;
    let body: RefreshRequest = json_body(request).await?;
    let session = state
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: body.refresh_token,
            client_addr,
        })
        .await?
        .into_inner();
    Ok(Json(token_pair(&state, session)?))
}

/// Ends the session of the access token used (its refresh tokens stop
/// working; the access token itself expires within minutes).
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "the session ended"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<StatusCode, ApiError> {
    let Via::Jwt { session_id } = &principal.via else {
        return Err(ApiError::InvalidArgument(
            "only a login session can log out; API tokens are revoked with DELETE /api/tokens/{id}"
                .into(),
        ));
    };
    state
        .auth()
        .logout(pb::LogoutRequest {
            refresh_token: String::new(),
            session_id: session_id.clone(),
            actor: Some(principal.actor()),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the credential acts for.
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody))
)]
pub async fn me(Extension(principal): Extension<Principal>) -> Json<Me> {
    Json(Me {
        name: principal.username.clone(),
        role: principal
            .role
            .map(|r| r.label().to_owned())
            .unwrap_or_default(),
        via: principal.via_label(),
    })
}
