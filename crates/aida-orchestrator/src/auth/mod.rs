//! The `aida.auth.Auth` gRPC service: logins with lockout, sessions whose
//! refresh tokens rotate (a reused one revokes the session), API tokens,
//! agents' context tokens, users, webhook deliveries and the audit trail.
//! Every decision here is audited; no secret is ever logged or returned
//! twice.

pub mod password;

use std::collections::HashMap;
use std::time::Duration;

use aida_core::auth::{Role, Username};
use aida_core::proto::auth::auth_server::Auth;
use aida_core::proto::auth::{
    ApiToken, AuditEntry, AuthenticateRequest, ClaimWebhookDeliveryRequest,
    ClaimWebhookDeliveryResponse, CreateApiTokenRequest, CreateUserRequest, CreatedApiToken,
    DeleteUserRequest, ListApiTokensRequest, ListApiTokensResponse, ListAuditRequest,
    ListAuditResponse, ListUsersRequest, ListUsersResponse, LoginRequest, LogoutRequest,
    LogoutResponse, Principal, RefreshRequest, RevokeApiTokenRequest, Session, UpdateUserRequest,
    User,
};
use aida_core::proto::common::Actor;
use aida_core::secret::ExposeSecret;
use aida_core::time::to_proto;
use aida_core::token::{self, TokenKind};
use chrono::Utc;
use tonic::{Request, Response, Status};

use crate::audit::{Audit, AuditLine, Outcome};
use crate::error::{OrchestratorError, Result};
use crate::store::{ApiTokenRow, AuditFilter, AuditRow, Store, UserChange, UserRow};

/// The one answer to every failed login, whatever failed: an unknown name,
/// a wrong password, a locked or disabled account.
const LOGIN_REFUSED: &str = "invalid username or password";
/// The one answer to every refused token.
const TOKEN_REFUSED: &str = "invalid, expired or revoked token";
const MAX_TOKEN_DAYS: u32 = 3650;
const DEFAULT_TOKEN_DAYS: u32 = 90;

/// Knobs from the configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// How long wrong passwords lock an account.
    pub lockout: Duration,
    /// Wrong passwords in a row that lock it.
    pub max_failed_logins: u32,
    /// How long a session lasts without logging in again.
    pub session_ttl: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            lockout: Duration::from_secs(900),
            max_failed_logins: 5,
            session_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

pub struct AuthService {
    store: Store,
    audit: Audit,
    settings: AuthSettings,
    /// When each API token was last audited as used, from each address, and
    /// how often it was used since: a script polling with a token makes one
    /// audit line a minute (with the count), not one a request.
    token_uses: std::sync::Mutex<HashMap<(String, String), TokenUses>>,
}

/// Uses of one API token from one address since its last audit line.
struct TokenUses {
    audited_at: std::time::Instant,
    since: u64,
}

/// How often a token's use from one address is written down.
const TOKEN_USE_AUDIT_EVERY: Duration = Duration::from_secs(60);

impl AuthService {
    pub fn new(store: Store, audit: Audit, settings: AuthSettings) -> Self {
        AuthService {
            store,
            audit,
            settings,
            token_uses: Default::default(),
        }
    }
}

fn user_proto(row: &UserRow) -> User {
    User {
        name: row.name.clone(),
        role: row.role.clone(),
        disabled: row.disabled,
        created_at: Some(to_proto(row.created_at)),
        updated_at: Some(to_proto(row.updated_at)),
        last_login_at: row.last_login_at.map(to_proto),
        locked_until: row
            .locked_until
            .filter(|until| *until > Utc::now())
            .map(to_proto),
        created_by: row.created_by.clone(),
    }
}

fn token_proto(row: &ApiTokenRow) -> ApiToken {
    ApiToken {
        id: row.id.clone(),
        name: row.name.clone(),
        role: row.role.clone(),
        owner: row.owner.clone(),
        created_at: Some(to_proto(row.created_at)),
        expires_at: Some(to_proto(row.expires_at)),
        last_used_at: row.last_used_at.map(to_proto),
        revoked_at: row.revoked_at.map(to_proto),
    }
}

fn audit_proto(row: AuditRow) -> AuditEntry {
    AuditEntry {
        id: row.id,
        at: Some(to_proto(row.at)),
        username: row.username,
        role: row.role,
        client_addr: row.client_addr,
        action: row.action,
        object: row.object,
        result: row.result,
        detail_json: row.detail,
    }
}

fn parse_role(raw: &str) -> Result<Role> {
    raw.parse::<Role>()
        .map_err(|e| OrchestratorError::invalid(e.to_string()))
}

/// A person's role: admin, operator or viewer.
fn parse_user_role(raw: &str) -> Result<Role> {
    let role = parse_role(raw)?;
    if !role.is_user_role() {
        return Err(OrchestratorError::invalid(
            "a user's role is admin, operator or viewer (\"system\" is for webhooks and services)",
        ));
    }
    Ok(role)
}

fn parse_username(raw: &str) -> Result<Username> {
    Username::parse(raw.trim()).map_err(|e| OrchestratorError::invalid(e.to_string()))
}

/// Hashing is slow on purpose: off the async runtime.
async fn hash_password(password: String) -> Result<String> {
    let hashed = tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| anyhow::anyhow!("hashing task failed: {e}"))??;
    Ok(hashed)
}

async fn verify_password(password: String, phc: Option<String>) -> Result<bool> {
    Ok(tokio::task::spawn_blocking(move || match phc {
        Some(phc) => password::verify(&password, &phc),
        None => {
            password::verify_decoy(&password);
            false
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("password check failed: {e}"))?)
}

impl AuthService {
    async fn login(&self, req: LoginRequest) -> Result<Session> {
        let now = Utc::now();
        let name = req.username.trim().to_owned();
        let line = |action: &str| AuditLine {
            client_addr: req.client_addr.clone(),
            ..AuditLine::new(None, action, format!("user:{name}"))
        };
        let user = match Username::parse(&name) {
            Ok(_) => self.store.user(&name).await?,
            Err(_) => None,
        };
        // Always verify, so an unknown name or a locked account takes as
        // long as a wrong password.
        let matches =
            verify_password(req.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
        let Some(user) = user else {
            self.audit
                .record(
                    AuditLine {
                        username: name.clone(),
                        role: String::new(),
                        ..line("auth.login")
                    }
                    .denied("unknown user"),
                )
                .await;
            return Err(OrchestratorError::Unauthenticated(LOGIN_REFUSED.into()));
        };
        let as_user = |l: AuditLine| AuditLine {
            username: user.name.clone(),
            role: user.role.clone(),
            ..l
        };
        if user.disabled {
            self.audit
                .record(as_user(line("auth.login")).denied("account disabled"))
                .await;
            return Err(OrchestratorError::Unauthenticated(LOGIN_REFUSED.into()));
        }
        if let Some(until) = user.locked_until.filter(|until| *until > now) {
            self.audit
                .record(
                    as_user(line("auth.login"))
                        .denied("account locked")
                        .with("locked_until", until),
                )
                .await;
            return Err(OrchestratorError::Unauthenticated(LOGIN_REFUSED.into()));
        }
        if !matches {
            let lock_until = now
                + chrono::Duration::from_std(self.settings.lockout)
                    .map_err(|e| anyhow::anyhow!("lockout duration: {e}"))?;
            let locked = self
                .store
                .note_failed_login(&user.name, self.settings.max_failed_logins, lock_until)
                .await?;
            self.audit
                .record(as_user(line("auth.login")).denied("wrong password"))
                .await;
            if locked {
                tracing::warn!(username = %user.name, until = %lock_until, "account locked after wrong passwords");
                self.audit
                    .record(
                        as_user(line("auth.lockout"))
                            .outcome(Outcome::Ok)
                            .with("failed_logins", self.settings.max_failed_logins)
                            .with("locked_until", lock_until),
                    )
                    .await;
            }
            return Err(OrchestratorError::Unauthenticated(LOGIN_REFUSED.into()));
        }
        self.store.note_login(&user.name, now).await?;
        let session = self.open_session(&user).await?;
        self.audit
            .record(as_user(line("auth.login")).with("session", &session.session_id))
            .await;
        Ok(session)
    }

    async fn open_session(&self, user: &UserRow) -> Result<Session> {
        let now = Utc::now();
        let expires = now
            + chrono::Duration::from_std(self.settings.session_ttl)
                .map_err(|e| anyhow::anyhow!("session ttl: {e}"))?;
        let session_id = uuid::Uuid::now_v7().to_string();
        let refresh = token::generate(TokenKind::Refresh);
        self.store
            .create_session(
                &session_id,
                &user.name,
                (&refresh.id, &refresh.secret_hash),
                now,
                expires,
            )
            .await?;
        Ok(Session {
            user: Some(user_proto(user)),
            session_id,
            refresh_token: refresh.token.expose_secret().to_owned(),
            refresh_expires_at: Some(to_proto(expires)),
        })
    }

    async fn refresh(&self, req: RefreshRequest) -> Result<Session> {
        let now = Utc::now();
        let refused = || OrchestratorError::Unauthenticated(TOKEN_REFUSED.into());
        let line = |username: &str, action: &str, object: String| AuditLine {
            username: username.to_owned(),
            role: String::new(),
            client_addr: req.client_addr.clone(),
            ..AuditLine::new(None, action, object)
        };
        let Some((id, secret)) = token::parse(TokenKind::Refresh, &req.refresh_token) else {
            self.audit
                .record(
                    line("", "auth.refresh", "session:?".into()).denied("malformed refresh token"),
                )
                .await;
            return Err(refused());
        };
        let row = match self.store.refresh_token(id).await? {
            Some(row) if token::verify(secret, &row.secret_hash) => row,
            _ => {
                self.audit
                    .record(
                        line("", "auth.refresh", "session:?".into())
                            .denied("unknown refresh token"),
                    )
                    .await;
                return Err(refused());
            }
        };
        let object = format!("session:{}", row.session_id);
        if row.revoked_at.is_some() || row.expires_at <= now {
            self.audit
                .record(line(&row.username, "auth.refresh", object).denied("session ended"))
                .await;
            return Err(refused());
        }
        if row.used_at.is_some() {
            let line = line(&row.username, "auth.refresh_reuse", object);
            return self
                .reused(
                    &row,
                    line.denied("a refresh token was used twice; the session is revoked"),
                )
                .await;
        }
        let user = match self.store.user(&row.username).await? {
            Some(user) if !user.disabled => user,
            _ => {
                self.store
                    .revoke_session(&row.session_id, "user gone or disabled", now)
                    .await?;
                self.audit
                    .record(
                        line(&row.username, "auth.refresh", object)
                            .denied("user deleted or disabled"),
                    )
                    .await;
                return Err(refused());
            }
        };
        let next = token::generate(TokenKind::Refresh);
        if !self
            .store
            .rotate_refresh_token(&row.id, &row.session_id, (&next.id, &next.secret_hash), now)
            .await?
        {
            let line = line(&row.username, "auth.refresh_reuse", object);
            return self
                .reused(
                    &row,
                    line.denied("a refresh token was used twice at once; the session is revoked"),
                )
                .await;
        }
        self.audit
            .record(AuditLine {
                role: user.role.clone(),
                ..line(&user.name, "auth.refresh", object)
            })
            .await;
        Ok(Session {
            user: Some(user_proto(&user)),
            session_id: row.session_id,
            refresh_token: next.token.expose_secret().to_owned(),
            refresh_expires_at: Some(to_proto(row.expires_at)),
        })
    }

    /// A refresh token came back after it was traded: one of its two
    /// holders is not its owner, so the session ends for both.
    async fn reused(&self, row: &crate::store::RefreshRow, line: AuditLine) -> Result<Session> {
        self.store
            .revoke_session(&row.session_id, "refresh token reused", Utc::now())
            .await?;
        tracing::warn!(username = %row.username, session = %row.session_id, "refresh token reused, session revoked");
        self.audit.record(line).await;
        Err(OrchestratorError::Unauthenticated(TOKEN_REFUSED.into()))
    }

    async fn logout(&self, req: LogoutRequest) -> Result<()> {
        let session_id = if !req.session_id.trim().is_empty() {
            req.session_id.trim().to_owned()
        } else {
            let Some((id, secret)) = token::parse(TokenKind::Refresh, &req.refresh_token) else {
                return Err(OrchestratorError::invalid(
                    "logging out needs the session's refresh token or id",
                ));
            };
            match self.store.refresh_token(id).await? {
                Some(row) if token::verify(secret, &row.secret_hash) => row.session_id,
                _ => return Err(OrchestratorError::Unauthenticated(TOKEN_REFUSED.into())),
            }
        };
        let ended = self
            .store
            .revoke_session(&session_id, "logout", Utc::now())
            .await?;
        self.audit
            .record(
                AuditLine::new(
                    req.actor.as_ref(),
                    "auth.logout",
                    format!("session:{session_id}"),
                )
                .with("was_open", ended.is_some()),
            )
            .await;
        Ok(())
    }

    async fn authenticate(&self, req: AuthenticateRequest) -> Result<Principal> {
        match TokenKind::of(req.token.trim()) {
            Some(TokenKind::Api) => self.authenticate_api_token(req).await,
            Some(TokenKind::Context) => self.authenticate_context_token(&req.token).await,
            _ => Err(OrchestratorError::Unauthenticated(TOKEN_REFUSED.into())),
        }
    }

    async fn authenticate_api_token(&self, req: AuthenticateRequest) -> Result<Principal> {
        let now = Utc::now();
        let refused = || OrchestratorError::Unauthenticated(TOKEN_REFUSED.into());
        let line = |row: Option<&ApiTokenRow>, id: &str| AuditLine {
            username: row.map(|r| r.owner.clone()).unwrap_or_default(),
            role: row.map(|r| r.role.clone()).unwrap_or_default(),
            client_addr: req.client_addr.clone(),
            ..AuditLine::new(None, "token.use", format!("token:{id}"))
        };
        let Some((id, secret)) = token::parse(TokenKind::Api, &req.token) else {
            self.audit
                .record(line(None, "?").denied("malformed API token"))
                .await;
            return Err(refused());
        };
        let row = self.store.api_token(id).await?;
        let why = match &row {
            None => Some("unknown token"),
            Some(row) if !token::verify(secret, &row.secret_hash) => Some("wrong secret"),
            Some(row) if row.revoked_at.is_some() => Some("revoked"),
            Some(row) if row.expires_at <= now => Some("expired"),
            Some(row) if row.owner_disabled => Some("owner disabled"),
            Some(row) => match (parse_role(&row.owner_role), parse_role(&row.role)) {
                (Ok(owner), Ok(role)) if owner.covers(role) => None,
                _ => Some("its role is above its owner's now"),
            },
        };
        if let Some(why) = why {
            self.audit.record(line(row.as_ref(), id).denied(why)).await;
            return Err(refused());
        }
        let row = row.expect("checked above");
        if let Some(uses) = self.note_token_use(id, &req.client_addr) {
            self.store.touch_api_token(id, now).await?;
            self.audit
                .record(
                    line(Some(&row), id)
                        .with("name", &row.name)
                        .with("uses_since_last_line", uses),
                )
                .await;
        }
        Ok(Principal {
            username: row.owner,
            role: row.role,
            kind: "api_token".into(),
            token_id: row.id,
            task_id: String::new(),
            subtask: String::new(),
        })
    }

    /// Counts a use of token `id` from `client_addr`; returns the uses to
    /// write down when it is time for an audit line (the first use from an
    /// address, then at most one line a minute).
    fn note_token_use(&self, id: &str, client_addr: &str) -> Option<u64> {
        let mut uses = self.token_uses.lock().unwrap_or_else(|e| e.into_inner());
        let key = (id.to_owned(), client_addr.to_owned());
        let now = std::time::Instant::now();
        match uses.get_mut(&key) {
            Some(entry) if now.duration_since(entry.audited_at) < TOKEN_USE_AUDIT_EVERY => {
                entry.since += 1;
                None
            }
            Some(entry) => {
                let count = entry.since + 1;
                *entry = TokenUses {
                    audited_at: now,
                    since: 0,
                };
                Some(count)
            }
            None => {
                // Forget entries gone quiet, so the map follows the tokens
                // in use rather than every one ever seen.
                uses.retain(|_, e| now.duration_since(e.audited_at) < TOKEN_USE_AUDIT_EVERY * 10);
                uses.insert(
                    key,
                    TokenUses {
                        audited_at: now,
                        since: 0,
                    },
                );
                Some(1)
            }
        }
    }

    /// Context tokens are not audited per use (agents poll with them);
    /// they die with their attempt.
    async fn authenticate_context_token(&self, token: &str) -> Result<Principal> {
        let refused = || OrchestratorError::Unauthenticated(TOKEN_REFUSED.into());
        let (id, secret) = token::parse(TokenKind::Context, token).ok_or_else(refused)?;
        match self.store.context_token(id).await? {
            Some(row) if token::verify(secret, &row.secret_hash) && row.live => Ok(Principal {
                username: format!("agent:{}", row.subtask),
                role: String::new(),
                kind: "context_token".into(),
                token_id: id.to_owned(),
                task_id: row.task_id,
                subtask: row.subtask,
            }),
            _ => Err(refused()),
        }
    }

    async fn create_user(&self, req: CreateUserRequest) -> Result<User> {
        let row = create_user(
            &self.store,
            &self.audit,
            &req.name,
            &req.role,
            &req.password,
            req.actor.as_ref(),
        )
        .await?;
        Ok(user_proto(&row))
    }

    async fn update_user(&self, req: UpdateUserRequest) -> Result<User> {
        let mut line = AuditLine::new(
            req.actor.as_ref(),
            "user.update",
            format!("user:{}", req.name.trim()),
        );
        if let Some(role) = &req.role {
            line = line.with("role", role);
        }
        if let Some(disabled) = req.disabled {
            line = line.with("disabled", disabled);
        }
        if req.password.is_some() {
            line = line.with("password", "changed");
        }
        let outcome = async {
            let name = parse_username(&req.name)?;
            let existing = self
                .store
                .user(name.as_str())
                .await?
                .ok_or_else(|| OrchestratorError::NotFound(format!("user {name} not found")))?;
            let role = req.role.as_deref().map(parse_user_role).transpose()?;
            let demoted = role.is_some_and(|r| r != Role::Admin);
            let disabling = req.disabled == Some(true);
            if existing.role == Role::Admin.label()
                && (demoted || disabling)
                && self.store.other_enabled_admins(name.as_str()).await? == 0
            {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "{name} is the last admin who can log in: make another admin first"
                )));
            }
            let password_hash = match &req.password {
                Some(p) => {
                    password::check_policy(p).map_err(OrchestratorError::InvalidArgument)?;
                    Some(hash_password(p.clone()).await?)
                }
                None => None,
            };
            let change = UserChange {
                role: role.map(|r| r.label().to_owned()),
                password_hash,
                disabled: req.disabled,
            };
            let now = Utc::now();
            let row = self
                .store
                .update_user(name.as_str(), &change, now)
                .await?
                .ok_or_else(|| OrchestratorError::NotFound(format!("user {name} not found")))?;
            // A new password or a disabled account ends the sessions that
            // were opened before.
            if change.password_hash.is_some() || disabling {
                self.store
                    .revoke_user_sessions(
                        name.as_str(),
                        "password changed or account disabled",
                        now,
                    )
                    .await?;
            }
            Ok(row)
        }
        .await;
        self.audit
            .outcome(line, outcome.map(|row| user_proto(&row)))
            .await
    }

    async fn delete_user(&self, req: DeleteUserRequest) -> Result<User> {
        let line = AuditLine::new(
            req.actor.as_ref(),
            "user.delete",
            format!("user:{}", req.name.trim()),
        );
        let outcome = async {
            let name = parse_username(&req.name)?;
            let existing = self
                .store
                .user(name.as_str())
                .await?
                .ok_or_else(|| OrchestratorError::NotFound(format!("user {name} not found")))?;
            if existing.role == Role::Admin.label()
                && self.store.other_enabled_admins(name.as_str()).await? == 0
            {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "{name} is the last admin who can log in: make another admin first"
                )));
            }
            self.store
                .delete_user(name.as_str())
                .await?
                .ok_or_else(|| OrchestratorError::NotFound(format!("user {name} not found")))
        }
        .await;
        self.audit
            .outcome(line, outcome.map(|row| user_proto(&row)))
            .await
    }

    async fn create_api_token(&self, req: CreateApiTokenRequest) -> Result<CreatedApiToken> {
        let (row, secret) = create_api_token(
            &self.store,
            &self.audit,
            &req.name,
            &req.role,
            req.expires_in_days,
            req.actor.as_ref(),
        )
        .await?;
        Ok(CreatedApiToken {
            token: Some(token_proto(&row)),
            secret: secret.expose_secret().to_owned(),
        })
    }

    async fn revoke_api_token(&self, req: RevokeApiTokenRequest) -> Result<ApiToken> {
        let id = req.id.trim().to_owned();
        let line = AuditLine::new(req.actor.as_ref(), "token.revoke", format!("token:{id}"));
        let outcome = async {
            self.store
                .revoke_api_token(&id, Utc::now())
                .await?
                .ok_or_else(|| OrchestratorError::NotFound(format!("API token {id:?} not found")))
        }
        .await;
        self.audit
            .outcome(line, outcome.map(|row| token_proto(&row)))
            .await
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<Session>, Status> {
        Ok(Response::new(
            AuthService::login(self, request.into_inner()).await?,
        ))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Result<Response<Session>, Status> {
        Ok(Response::new(
            AuthService::refresh(self, request.into_inner()).await?,
        ))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        AuthService::logout(self, request.into_inner()).await?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<Principal>, Status> {
        Ok(Response::new(
            AuthService::authenticate(self, request.into_inner()).await?,
        ))
    }

    async fn list_users(
        &self,
        _: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let users = self
            .store
            .list_users()
            .await?
            .iter()
            .map(user_proto)
            .collect();
        Ok(Response::new(ListUsersResponse { users }))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        Ok(Response::new(
            AuthService::create_user(self, request.into_inner()).await?,
        ))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        Ok(Response::new(
            AuthService::update_user(self, request.into_inner()).await?,
        ))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<User>, Status> {
        Ok(Response::new(
            AuthService::delete_user(self, request.into_inner()).await?,
        ))
    }

    async fn create_api_token(
        &self,
        request: Request<CreateApiTokenRequest>,
    ) -> Result<Response<CreatedApiToken>, Status> {
        Ok(Response::new(
            AuthService::create_api_token(self, request.into_inner()).await?,
        ))
    }

    async fn list_api_tokens(
        &self,
        request: Request<ListApiTokensRequest>,
    ) -> Result<Response<ListApiTokensResponse>, Status> {
        let tokens = self
            .store
            .list_api_tokens(request.get_ref().all, Utc::now())
            .await?
            .iter()
            .map(token_proto)
            .collect();
        Ok(Response::new(ListApiTokensResponse { tokens }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<RevokeApiTokenRequest>,
    ) -> Result<Response<ApiToken>, Status> {
        Ok(Response::new(
            AuthService::revoke_api_token(self, request.into_inner()).await?,
        ))
    }

    async fn record_audit(
        &self,
        request: Request<AuditEntry>,
    ) -> Result<Response<AuditEntry>, Status> {
        let entry = request.into_inner();
        if entry.action.trim().is_empty() {
            return Err(Status::invalid_argument("an audit entry needs an action"));
        }
        let outcome = match entry.result.as_str() {
            "" | "ok" => Outcome::Ok,
            "denied" => Outcome::Denied,
            "error" => Outcome::Error,
            other => {
                return Err(Status::invalid_argument(format!(
                    "result must be ok, denied or error, got {other:?}"
                )));
            }
        };
        let detail = match entry.detail_json.trim() {
            "" => serde_json::json!({}),
            raw => serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .filter(serde_json::Value::is_object)
                .ok_or_else(|| Status::invalid_argument("detail_json must be a JSON object"))?,
        };
        let line = AuditLine {
            username: entry.username,
            role: entry.role,
            client_addr: entry.client_addr,
            action: entry.action,
            object: entry.object,
            outcome,
            detail,
        };
        self.audit.record(line.clone()).await;
        Ok(Response::new(AuditEntry {
            action: line.action,
            ..Default::default()
        }))
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let req = request.into_inner();
        // What was audited before this call is in the answer.
        self.audit.flush().await;
        let non_empty = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let filter = AuditFilter {
            username: non_empty(req.username),
            action: non_empty(req.action),
            since: req.since.as_ref().and_then(aida_core::time::from_proto),
            limit: match req.limit {
                0 => 100,
                n => n.min(1000),
            },
        };
        let entries = self
            .store
            .list_audit(&filter)
            .await?
            .into_iter()
            .map(audit_proto)
            .collect();
        Ok(Response::new(ListAuditResponse { entries }))
    }

    async fn claim_webhook_delivery(
        &self,
        request: Request<ClaimWebhookDeliveryRequest>,
    ) -> Result<Response<ClaimWebhookDeliveryResponse>, Status> {
        let req = request.into_inner();
        let id = delivery_key(&req.source, &req.id)?;
        self.store
            .claim_webhook_delivery(&id, &req.event_type, Utc::now())
            .await?;
        Ok(Response::new(ClaimWebhookDeliveryResponse {}))
    }
}

/// Creates a user: a valid name, a person's role, a password that meets
/// the policy (hashed with argon2id). Audited. Also what `aida admin
/// create-user` runs, directly on the database.
pub async fn create_user(
    store: &Store,
    audit: &Audit,
    name: &str,
    role: &str,
    password: &str,
    actor: Option<&Actor>,
) -> Result<UserRow> {
    let line = AuditLine::new(actor, "user.create", format!("user:{}", name.trim()))
        .with("role", role.trim());
    let outcome = async {
        let name = parse_username(name)?;
        let role = parse_user_role(role)?;
        password::check_policy(password).map_err(OrchestratorError::InvalidArgument)?;
        let hash = hash_password(password.to_owned()).await?;
        let by = actor
            .map(|a| a.username.clone())
            .unwrap_or_else(|| "internal".into());
        store
            .insert_user(name.as_str(), role.label(), &hash, &by, Utc::now())
            .await
    }
    .await;
    let outcome = audit.outcome(line, outcome).await;
    // Rare and often the last thing a CLI process does: written now.
    audit.flush().await;
    outcome
}

/// Gives a user a new password (which must meet the policy), lifts a
/// lockout and ends their sessions. Audited. What `aida admin
/// reset-password` runs, directly on the database.
pub async fn reset_password(
    store: &Store,
    audit: &Audit,
    name: &str,
    password: &str,
    actor: Option<&Actor>,
) -> Result<UserRow> {
    let line = AuditLine::new(
        actor,
        "user.reset_password",
        format!("user:{}", name.trim()),
    );
    let outcome = async {
        let name = parse_username(name)?;
        password::check_policy(password).map_err(OrchestratorError::InvalidArgument)?;
        let hash = hash_password(password.to_owned()).await?;
        let now = Utc::now();
        let change = UserChange {
            password_hash: Some(hash),
            ..Default::default()
        };
        let row = store
            .update_user(name.as_str(), &change, now)
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(format!("user {name} not found")))?;
        store
            .revoke_user_sessions(name.as_str(), "password reset", now)
            .await?;
        Ok(row)
    }
    .await;
    let outcome = audit.outcome(line, outcome).await;
    // Rare and often the last thing a CLI process does: written now.
    audit.flush().await;
    outcome
}

/// Creates an API token for `actor` (its owner, a user) with `role`, at
/// most the owner's; valid `days` days (90 when 0). Audited. The secret is
/// returned once and stored only as a hash. Also what `aida dev` runs to
/// make its admin token.
pub async fn create_api_token(
    store: &Store,
    audit: &Audit,
    name: &str,
    role: &str,
    days: u32,
    actor: Option<&Actor>,
) -> Result<(ApiTokenRow, aida_core::secret::SecretString)> {
    let line = AuditLine::new(actor, "token.create", "token:?")
        .with("name", name.trim())
        .with("role", role.trim());
    let outcome = async {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(OrchestratorError::invalid(
                "a token's \"name\" is 1 to 100 printable characters",
            ));
        }
        let role = parse_role(role)?;
        let days = match days {
            0 => DEFAULT_TOKEN_DAYS,
            d if d > MAX_TOKEN_DAYS => {
                return Err(OrchestratorError::invalid(format!(
                    "\"expires_in_days\" is at most {MAX_TOKEN_DAYS}"
                )));
            }
            d => d,
        };
        let owner_name = actor.map(|a| a.username.as_str()).unwrap_or_default();
        let owner = store.user(owner_name).await?.ok_or_else(|| {
            OrchestratorError::FailedPrecondition(
                "API tokens belong to a user: log in as one to create them".into(),
            )
        })?;
        let owner_role = parse_role(&owner.role)?;
        if !owner_role.covers(role) {
            return Err(OrchestratorError::PermissionDenied(format!(
                "a {owner_role} cannot create a token with role {role}"
            )));
        }
        let now = Utc::now();
        let made = token::generate(TokenKind::Api);
        let row = store
            .insert_api_token(
                &made.id,
                name,
                role.label(),
                &owner.name,
                &made.secret_hash,
                now,
                now + chrono::Duration::days(i64::from(days)),
            )
            .await?;
        Ok((row, made.token))
    }
    .await;
    let line = match &outcome {
        Ok((row, _)) => AuditLine {
            object: format!("token:{}", row.id),
            ..line
        },
        Err(_) => line,
    };
    let outcome = audit.outcome(line, outcome).await;
    // Rare and often the last thing a CLI process does: written now.
    audit.flush().await;
    outcome
}

/// The stored key of a webhook delivery: its source and id.
pub fn delivery_key(source: &str, id: &str) -> Result<String> {
    let (source, id) = (source.trim(), id.trim());
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(OrchestratorError::invalid(
            "a webhook event id is 1 to 200 printable characters",
        ));
    }
    Ok(format!(
        "{}:{id}",
        if source.is_empty() { "aida" } else { source }
    ))
}

/// The actor a request names, or AIDA's own internal caller.
pub fn actor_or_internal(actor: Option<Actor>) -> Actor {
    actor
        .filter(|a| !a.username.is_empty())
        .unwrap_or_else(|| Actor {
            username: "internal".into(),
            role: Role::System.label().into(),
            client_addr: String::new(),
            via: "internal".into(),
        })
}
