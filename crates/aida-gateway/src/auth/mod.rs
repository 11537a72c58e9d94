//! Who is asking and what they may do. Every route declares one
//! [`Permission`] in the route table (`routes::table`); [`gate`] runs before
//! its handler: it authenticates the bearer token (an access JWT checked
//! here, or an API or context token the orchestrator resolves), applies the
//! per-user rate limit, checks the permission against the role, and hands
//! the handler a [`Principal`].

pub mod jwt;

use std::net::{IpAddr, SocketAddr};

use aida_core::auth::Role;
use aida_core::secret::SecretString;
use aida_core::token::TokenKind;
use aida_proto::auth as pb;
use aida_proto::common::Actor;
use axum::RequestExt;
use axum::extract::{ConnectInfo, RawPathParams, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Anyone: health, signing in, and metrics (whose handler asks for
    /// AIDA_METRICS_TOKEN when one is set).
    Public,
    /// A signed webhook; the handler checks the signature.
    Signed,
    /// Anyone signed in: who am I, log out.
    Authenticated,
    /// Read tasks, reports, events.
    TaskRead,
    /// Create tasks.
    TaskCreate,
    /// Approve and cancel tasks and subtasks.
    TaskControl,
    /// Read a task's shared context (also its agents, with their token).
    ContextRead,
    /// Write a task's shared context (also its agents, with their token).
    ContextWrite,
    /// Read workers, locks and the API document.
    SystemRead,
    /// Manage workers.
    WorkerAdmin,
    /// Manage users.
    UserAdmin,
    /// Manage API tokens.
    TokenAdmin,
    /// Read the audit trail.
    AuditRead,
    /// Remove what ended tasks left behind (`gc`).
    Maintenance,
}

impl Permission {
    /// The seed's permission matrix: viewer reads; operator also creates,
    /// approves, cancels and writes context; admin also manages users,
    /// tokens and workers, reads the audit trail and collects garbage; system (webhooks and
    /// AIDA's own callers) works with tasks.
    pub fn allowed_for(self, role: Role) -> bool {
        use Permission::*;
        match self {
            Public | Signed | Authenticated => true,
            TaskRead | ContextRead | SystemRead => true,
            TaskCreate | TaskControl | ContextWrite => {
                matches!(role, Role::Operator | Role::Admin | Role::System)
            }
            WorkerAdmin | UserAdmin | TokenAdmin | AuditRead | Maintenance => role == Role::Admin,
        }
    }

    /// Whether requests without a bearer token reach the handler.
    pub fn is_open(self) -> bool {
        matches!(self, Permission::Public | Permission::Signed)
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    Jwt {
        session_id: String,
    },
    ApiToken {
        id: String,
    },
    /// An agent's token: it reads and writes its own task's context only.
    ContextToken {
        task_id: String,
        token: SecretString,
    },
    /// `AIDA_AUTH=off` on a loopback gateway.
    AuthOff,
    /// A webhook with a valid signature.
    Webhook,
}

/// Who a request acts for, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub username: String,
    /// `None` for an agent's context token: it has no role, only its task.
    pub role: Option<Role>,
    pub via: Via,
    pub client_addr: String,
}

impl Principal {
    /// The actor the orchestrator records.
    pub fn actor(&self) -> Actor {
        Actor {
            username: self.username.clone(),
            role: self.role.map(|r| r.label().to_owned()).unwrap_or_default(),
            client_addr: self.client_addr.clone(),
            via: self.via_label(),
        }
    }

    pub fn via_label(&self) -> String {
        match &self.via {
            Via::Jwt { .. } => "jwt".into(),
            Via::ApiToken { id } => format!("api_token:{id}"),
            Via::ContextToken { .. } => "context_token".into(),
            Via::AuthOff => "auth_off".into(),
            Via::Webhook => "webhook".into(),
        }
    }

    /// The agent's token, when this is one: the orchestrator checks it
    /// again when it writes.
    pub fn context_token(&self) -> Option<&SecretString> {
        match &self.via {
            Via::ContextToken { token, .. } => Some(token),
            _ => None,
        }
    }

    /// Whether this principal may use a route needing `permission`, on the
    /// task `task_id` named in its path (if any).
    pub fn may(&self, permission: Permission, task_id: Option<&str>) -> bool {
        match (&self.via, self.role) {
            (Via::ContextToken { task_id: own, .. }, _) => {
                matches!(
                    permission,
                    Permission::ContextRead | Permission::ContextWrite
                ) && task_id == Some(own.as_str())
            }
            (_, Some(role)) => permission.allowed_for(role),
            (_, None) => false,
        }
    }
}

/// The client's address, as the listener saw it.
pub fn client_ip(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The state [`gate`] runs with: the app and the route's permission.
#[derive(Clone)]
pub struct GateState {
    pub app: AppState,
    pub permission: Permission,
}

/// Runs before every route's handler (see the module docs).
pub async fn gate(State(gate): State<GateState>, request: Request, next: Next) -> Response {
    match admit(&gate, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

async fn admit(gate: &GateState, mut request: Request) -> Result<Request, ApiError> {
    let app = &gate.app;
    let ip = client_ip(&request);
    let client_addr = ip.map(|ip| ip.to_string()).unwrap_or_default();
    if gate.permission.is_open() {
        return Ok(request);
    }
    let principal = match app.auth_off() {
        true => Principal {
            username: "local".into(),
            role: Some(Role::Admin),
            via: Via::AuthOff,
            client_addr,
        },
        false => authenticate(app, request.headers(), client_addr).await?,
    };
    // Agents poll with context tokens: their rate is the client address's.
    if principal.role.is_some() {
        app.limits()
            .check_user(&principal.username)
            .map_err(ApiError::TooManyRequests)?;
    }
    let task_id = match request.extract_parts::<RawPathParams>().await {
        Ok(params) => params
            .iter()
            .find(|(name, _)| *name == "id")
            .map(|(_, value)| value.to_owned()),
        Err(_) => None,
    };
    if !principal.may(gate.permission, task_id.as_deref()) {
        let denied = ApiError::PermissionDenied(match principal.role {
            Some(role) => format!("a {role} may not do this (it needs {:?})", gate.permission),
            None => "an agent's token reads and writes its own task's context only".into(),
        });
        app.audit_denied(&principal, request.method().as_str(), request.uri().path());
        return Err(denied);
    }
    request.extensions_mut().insert(principal);
    Ok(request)
}

/// Resolves the bearer token: a JWT here, API and context tokens by the
/// orchestrator (so a revoked token is refused at once).
async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    client_addr: String,
) -> Result<Principal, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::Unauthenticated(
            "sign in: send Authorization: Bearer <token> (an access token from POST /api/auth/login, or an API token)"
                .into(),
        ));
    };
    match TokenKind::of(token) {
        Some(TokenKind::Api) | Some(TokenKind::Context) => {
            let principal = app
                .auth()
                .authenticate(pb::AuthenticateRequest {
                    token: token.to_owned(),
                    client_addr: client_addr.clone(),
                })
                .await
                .map_err(|status| match status.code() {
                    tonic::Code::Unauthenticated => {
                        ApiError::Unauthenticated(status.message().into())
                    }
                    _ => ApiError::from(status),
                })?
                .into_inner();
            let via = match principal.kind.as_str() {
                "context_token" => Via::ContextToken {
                    task_id: principal.task_id.clone(),
                    token: SecretString::from(token.to_owned()),
                },
                _ => Via::ApiToken {
                    id: principal.token_id.clone(),
                },
            };
            let role = match &via {
                Via::ContextToken { .. } => None,
                _ => Some(principal.role.parse::<Role>().map_err(|_| {
                    ApiError::Unauthenticated("the token's role is unknown".into())
                })?),
            };
            Ok(Principal {
                username: principal.username,
                role,
                via,
                client_addr,
            })
        }
        Some(TokenKind::Refresh) => Err(ApiError::Unauthenticated(
            "a refresh token only buys a new access token: POST /api/auth/refresh".into(),
        )),
        None => {
            let keys = app.jwt().ok_or_else(|| {
                ApiError::Unauthenticated("access tokens are not accepted here".into())
            })?;
            match keys.verify(token) {
                Ok(verified) => Ok(Principal {
                    username: verified.username.to_string(),
                    role: Some(verified.role),
                    via: Via::Jwt {
                        session_id: verified.session_id,
                    },
                    client_addr,
                }),
                Err(error) => {
                    app.audit_refused_jwt(&client_addr, &error);
                    Err(ApiError::Unauthenticated(error.to_string()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_token_reaches_its_own_tasks_context_only() {
        let agent = Principal {
            username: "agent:api".into(),
            role: None,
            via: Via::ContextToken {
                task_id: "t1".into(),
                token: SecretString::from("aida_ctx_x_y"),
            },
            client_addr: String::new(),
        };
        assert!(agent.may(Permission::ContextRead, Some("t1")));
        assert!(agent.may(Permission::ContextWrite, Some("t1")));
        assert!(!agent.may(Permission::ContextWrite, Some("t2")));
        assert!(!agent.may(Permission::ContextRead, None));
        assert!(!agent.may(Permission::TaskRead, Some("t1")));
        assert!(!agent.may(Permission::Authenticated, Some("t1")));
        assert_eq!(agent.actor().role, "");
        assert!(!format!("{agent:?}").contains("aida_ctx_x_y"));
    }
}
