//! Users, sessions and their refresh tokens, API tokens, agents' context
//! tokens and webhook deliveries. Only hashes of secrets are stored; the
//! rules (password policy, lockout, who may do what) live in `crate::auth`.

use super::Store;
use crate::error::{OrchestratorError, Result, is_unique_violation};
use chrono::{DateTime, Utc};

/// A user as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub disabled: bool,
    pub failed_logins: i64,
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub created_by: String,
}

/// What may change about a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub role: Option<String>,
    pub password_hash: Option<String>,
    pub disabled: Option<bool>,
}

/// A refresh token with its session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    pub id: String,
    pub session_id: String,
    pub secret_hash: String,
    pub used_at: Option<DateTime<Utc>>,
    pub username: String,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// An API token with what its owner is now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiTokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub owner: String,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub owner_role: String,
    pub owner_disabled: bool,
}

/// An agent's context token and whether its attempt still runs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContextTokenRow {
    pub task_id: String,
    pub subtask: String,
    pub attempt: i64,
    pub secret_hash: String,
    /// The attempt is the subtask's current one and it is running.
    pub live: bool,
}

const API_TOKEN_SELECT: &str =
    "SELECT t.id, t.name, t.role, t.owner, t.secret_hash, t.created_at, t.expires_at,
        t.last_used_at, t.revoked_at, u.role AS owner_role, u.disabled AS owner_disabled
     FROM api_tokens t JOIN users u ON u.name = t.owner";

impl Store {
    // --- users ---

    pub async fn user(&self, name: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>> {
        Ok(sqlx::query_as("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Stores a new user; `AlreadyExists` if the name is taken.
    pub async fn insert_user(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<UserRow> {
        sqlx::query_as(
            "INSERT INTO users (name, role, password_hash, created_at, updated_at, created_by)
             VALUES ($1, $2, $3, $4, $4, $5) RETURNING *",
        )
        .bind(name)
        .bind(role)
        .bind(password_hash)
        .bind(now)
        .bind(created_by)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                OrchestratorError::AlreadyExists(format!("user {name:?} already exists"))
            } else {
                e.into()
            }
        })
    }

    /// Applies `change`; a new password also lifts a lockout. `None` if
    /// there is no such user.
    pub async fn update_user(
        &self,
        name: &str,
        change: &UserChange,
        now: DateTime<Utc>,
    ) -> Result<Option<UserRow>> {
        let new_password = change.password_hash.is_some();
        Ok(sqlx::query_as(
            "UPDATE users SET
                 role = COALESCE($2, role),
                 password_hash = COALESCE($3, password_hash),
                 disabled = COALESCE($4, disabled),
                 failed_logins = CASE WHEN $5 THEN 0 ELSE failed_logins END,
                 locked_until = CASE WHEN $5 THEN NULL ELSE locked_until END,
                 updated_at = $6
             WHERE name = $1 RETURNING *",
        )
        .bind(name)
        .bind(&change.role)
        .bind(&change.password_hash)
        .bind(change.disabled)
        .bind(new_password)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes a user; their sessions and API tokens go with them.
    pub async fn delete_user(&self, name: &str) -> Result<Option<UserRow>> {
        Ok(
            sqlx::query_as("DELETE FROM users WHERE name = $1 RETURNING *")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Admins who can still log in, `except` one.
    pub async fn other_enabled_admins(&self, except: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0 AND name <> $1",
        )
        .bind(except)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Counts a wrong password. At `threshold` wrong ones in a row the
    /// account is locked until `lock_until` and the count starts again.
    /// Returns whether this attempt locked it.
    pub async fn note_failed_login(
        &self,
        name: &str,
        threshold: u32,
        lock_until: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let failed: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET failed_logins = failed_logins + 1 WHERE name = $1 RETURNING failed_logins",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let locked = failed.is_some_and(|n| n >= i64::from(threshold.max(1)));
        if locked {
            sqlx::query("UPDATE users SET failed_logins = 0, locked_until = $2 WHERE name = $1")
                .bind(name)
                .bind(lock_until)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(locked)
    }

    /// A successful login: the count of wrong passwords starts again.
    pub async fn note_login(&self, name: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = $2 WHERE name = $1",
        )
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // --- sessions and refresh tokens ---

    /// Opens a session with its first refresh token.
    pub async fn create_session(
        &self,
        session_id: &str,
        username: &str,
        refresh: (&str, &str),
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, username, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(session_id)
        .bind(username)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (id, session_id, secret_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(refresh.0)
        .bind(session_id)
        .bind(refresh.1)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn refresh_token(&self, id: &str) -> Result<Option<RefreshRow>> {
        Ok(sqlx::query_as(
            "SELECT r.id, r.session_id, r.secret_hash, r.used_at, s.username, s.expires_at, s.revoked_at
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Trades refresh token `old` for `new` in the same session. False when
    /// `old` was used meanwhile (a race with its thief, or its owner).
    pub async fn rotate_refresh_token(
        &self,
        old: &str,
        session_id: &str,
        new: (&str, &str),
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let used =
            sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
                .bind(old)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        if used.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (id, session_id, secret_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(new.0)
        .bind(session_id)
        .bind(new.1)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a session; its refresh tokens stop working. Returns the
    /// session's user if it was open.
    pub async fn revoke_session(
        &self,
        session_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3
             WHERE id = $1 AND revoked_at IS NULL RETURNING username",
        )
        .bind(session_id)
        .bind(now)
        .bind(reason)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Ends every open session of a user.
    pub async fn revoke_user_sessions(
        &self,
        username: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE username = $1 AND revoked_at IS NULL",
        )
        .bind(username)
        .bind(now)
        .bind(reason)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    // --- API tokens ---

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_api_token(
        &self,
        id: &str,
        name: &str,
        role: &str,
        owner: &str,
        secret_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<ApiTokenRow> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, owner, secret_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(name)
        .bind(role)
        .bind(owner)
        .bind(secret_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        self.api_token(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("api token {id} vanished after insert").into())
    }

    pub async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRow>> {
        Ok(
            sqlx::query_as(&format!("{API_TOKEN_SELECT} WHERE t.id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Tokens, newest first; without `all`, only those still usable.
    pub async fn list_api_tokens(&self, all: bool, now: DateTime<Utc>) -> Result<Vec<ApiTokenRow>> {
        Ok(sqlx::query_as(&format!(
            "{API_TOKEN_SELECT} WHERE $1 OR (t.revoked_at IS NULL AND t.expires_at > $2)
             ORDER BY t.created_at DESC, t.id"
        ))
        .bind(all)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn touch_api_token(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes a token (again is harmless); `None` if there is no such one.
    pub async fn revoke_api_token(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiTokenRow>> {
        sqlx::query("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.api_token(id).await
    }

    // --- context tokens ---

    pub async fn context_token(&self, id: &str) -> Result<Option<ContextTokenRow>> {
        Ok(sqlx::query_as(
            "SELECT c.task_id, c.subtask, c.attempt, c.secret_hash,
                 COALESCE(s.status = 'running' AND s.attempts = c.attempt, 0) AS live
             FROM context_tokens c
             LEFT JOIN subtasks s ON s.task_id = c.task_id AND s.name = c.subtask
             WHERE c.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    // --- webhook deliveries ---

    /// Records a delivery; `AlreadyExists` if it was seen before.
    pub async fn claim_webhook_delivery(
        &self,
        id: &str,
        event_type: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        claim_delivery(&self.pool, id, event_type, now).await
    }

    /// Forgets a delivery whose effect could not be recorded, so that the
    /// sender's retry is processed.
    pub async fn unclaim_webhook_delivery(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Inserts a delivery id, in a transaction of the caller's or not.
pub(super) async fn claim_delivery<'e, E>(
    executor: E,
    id: &str,
    event_type: &str,
    now: DateTime<Utc>,
) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query("INSERT INTO webhook_deliveries (id, event_type, received_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(event_type)
        .bind(now)
        .execute(executor)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                OrchestratorError::AlreadyExists(format!(
                    "webhook event {id:?} was already processed"
                ))
            } else {
                e.into()
            }
        })?;
    Ok(())
}

/// Stores an attempt's context token, in the caller's transaction.
pub(super) async fn insert_context_token<'e, E>(
    executor: E,
    id: &str,
    task_id: &str,
    subtask: &str,
    attempt: u32,
    secret_hash: &str,
    now: DateTime<Utc>,
) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO context_tokens (id, task_id, subtask, attempt, secret_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(task_id)
    .bind(subtask)
    .bind(attempt)
    .bind(secret_hash)
    .bind(now)
    .execute(executor)
    .await?;
    Ok(())
}
