//! The JSON documents of signing in, users, API tokens, the audit trail and
//! webhooks.

use aida_proto::auth as pb;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{non_empty, timestamp};

/// `POST /api/auth/login`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

// The password never prints.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `POST /api/auth/refresh`, and optionally `POST /api/auth/logout`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshRequest { .. }")
    }
}

/// A signed-in session: a short-lived access token (a JWT) and the refresh
/// token that gets the next one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token is valid for.
    pub expires_in: u64,
    pub user: UserInfo,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("expires_in", &self.expires_in)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    pub name: String,
    pub role: String,
}

/// `GET /api/auth/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub name: String,
    pub role: String,
    /// `jwt`, `api_token:<id>`, `context_token` or `auth_off`.
    pub via: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    pub role: String,
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_at: Option<DateTime<Utc>>,
    /// Set while wrong passwords keep the account locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
}

impl From<pb::User> for User {
    fn from(u: pb::User) -> Self {
        User {
            name: u.name,
            role: u.role,
            disabled: u.disabled,
            created_at: timestamp(u.created_at),
            created_by: non_empty(u.created_by),
            last_login_at: timestamp(u.last_login_at),
            locked_until: timestamp(u.locked_until),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<User>,
}

/// `POST /api/users`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// At least 12 characters with upper- and lowercase letters, a digit
    /// and a symbol.
    pub password: String,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// `PATCH /api/users/{name}`: what to change.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A new password also lifts a lockout and ends the user's sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

impl std::fmt::Debug for UpdateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateUser")
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub role: String,
    /// The user it belongs to.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<pb::ApiToken> for ApiToken {
    fn from(t: pb::ApiToken) -> Self {
        ApiToken {
            id: t.id,
            name: t.name,
            role: t.role,
            owner: t.owner,
            created_at: timestamp(t.created_at),
            expires_at: timestamp(t.expires_at),
            last_used_at: timestamp(t.last_used_at),
            revoked_at: timestamp(t.revoked_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiTokenList {
    pub tokens: Vec<ApiToken>,
}

/// `POST /api/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    pub name: String,
    /// `viewer`, `operator`, `admin` or `system`; at most the creator's.
    pub role: String,
    /// 1 to 3650; 90 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
}

/// A new API token: `token` is shown this once and stored only as a hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiToken {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Its `id`, name, role, owner and times.
    #[serde(flatten)]
    pub info: ApiToken,
}

impl std::fmt::Debug for CreatedApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTokensQuery {
    /// Revoked and expired tokens too.
    #[serde(default)]
    pub all: bool,
}

/// One audit line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// Who: a user's name, `system`, or the name someone tried to log in
    /// as.
    pub user: String,
    pub role: String,
    pub client_addr: String,
    /// What, e.g. `auth.login`, `token.create`, `task.create`.
    pub action: String,
    /// On what, e.g. `user:alice`, `task:0193…`.
    pub object: String,
    /// `ok`, `denied` or `error`.
    pub result: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<pb::AuditEntry> for AuditEntry {
    fn from(e: pb::AuditEntry) -> Self {
        AuditEntry {
            id: e.id,
            at: timestamp(e.at),
            user: e.username,
            role: e.role,
            client_addr: e.client_addr,
            action: e.action,
            object: e.object,
            result: e.result,
            detail: serde_json::from_str(&e.detail_json).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this user's lines.
    pub user: Option<String>,
    /// Only this action (`auth.login`), or a family (`auth.`).
    pub action: Option<String>,
    /// Only lines at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// At most this many lines (100 by default, 1000 at most).
    pub limit: Option<u32>,
}

/// A webhook event AIDA's own way (`X-Signature`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEvent {
    /// Processed at most once.
    pub id: String,
    /// `task.create` or `task.external_status`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A task body for `task.create`; an [`ExternalStatus`] for
    /// `task.external_status`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A status reported from outside about a task (a CI result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalStatus {
    pub task_id: String,
    /// `pending`, `success`, `failure` or `error`.
    pub state: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub url: String,
    /// What reports it (`ci/build`).
    #[serde(default)]
    pub context: String,
}

/// What a webhook did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookOutcome {
    /// The event id as processed.
    pub id: String,
    /// `task_created`, `status_recorded`, `pong` or `ignored`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
