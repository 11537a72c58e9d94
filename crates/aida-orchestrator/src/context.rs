//! A task's shared context: a small key–value store with history that the
//! agents of a task read and write (through the gateway, with the URL and
//! token the worker puts in their environment) and that the report shows.

use std::sync::Arc;

use aida_core::auth::Role;
use aida_core::event::{Channel, kind};
use aida_core::proto::common::{Actor, ContextEntry};
use aida_core::token::{self, TokenKind};
use chrono::Utc;
use serde_json::json;

use crate::engine::Engine;
use crate::error::{OrchestratorError, Result};
use crate::store::NewEvent;

pub const MAX_KEY_LEN: usize = 128;
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Keys are path segments of the REST API: keep them plain.
fn check_key(key: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(plain) {
        return Err(OrchestratorError::invalid(format!(
            "context key {key:?} must be 1 to {MAX_KEY_LEN} characters of letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

impl Engine {
    pub async fn list_context(&self, task_id: &str, history: bool) -> Result<Vec<ContextEntry>> {
        self.task(task_id).await?;
        self.store.context(task_id, None, history).await
    }

    pub async fn get_context(
        &self,
        task_id: &str,
        key: &str,
        history: bool,
    ) -> Result<Vec<ContextEntry>> {
        check_key(key)?;
        self.task(task_id).await?;
        let entries = self.store.context(task_id, Some(key), history).await?;
        if entries.is_empty() {
            return Err(OrchestratorError::NotFound(format!(
                "task {task_id} has no context key {key:?}"
            )));
        }
        Ok(entries)
    }

    /// Writes a value. The writer is an agent with its attempt's context
    /// token (checked here, in constant time, against its stored hash), or
    /// a user the gateway authenticated (`actor`, operator or above).
    pub async fn put_context(
        self: &Arc<Self>,
        task_id: &str,
        key: &str,
        value: &str,
        token: &str,
        author: &str,
        actor: Option<&Actor>,
    ) -> Result<ContextEntry> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(OrchestratorError::invalid(format!(
                "context value of {key:?} is {} bytes; the limit is {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        self.task(task_id).await?;
        let writer = self.context_writer(task_id, token, actor).await?;
        let author = if author.trim().is_empty() {
            writer.as_str()
        } else {
            author.trim()
        };
        let entry = self
            .store
            .put_context(task_id, key, value, author, Utc::now())
            .await?;
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::CONTEXT_UPDATED,
                task_id: Some(task_id.to_owned()),
                subtask: None,
                worker_id: None,
                data: json!({ "key": entry.key, "version": entry.version, "author": entry.author }),
            })
            .await?;
        Ok(entry)
    }
}

impl Engine {
    /// Who may write: the subtask whose live context token this is, or a
    /// user allowed to write context.
    async fn context_writer(
        &self,
        task_id: &str,
        token: &str,
        actor: Option<&Actor>,
    ) -> Result<String> {
        let refused = || {
            OrchestratorError::Unauthenticated(
                "writing a task's context needs its agent's token (AIDA_CONTEXT_TOKEN) or an operator's credentials"
                    .into(),
            )
        };
        if !token.is_empty() {
            let (id, secret) = token::parse(TokenKind::Context, token).ok_or_else(refused)?;
            return match self.store.context_token(id).await? {
                Some(row)
                    if token::verify(secret, &row.secret_hash)
                        && row.live
                        && row.task_id == task_id =>
                {
                    Ok(row.subtask)
                }
                _ => Err(refused()),
            };
        }
        match actor.map(|a| (a.username.as_str(), a.role.parse::<Role>())) {
            Some((name, Ok(Role::Operator | Role::Admin | Role::System))) if !name.is_empty() => {
                Ok(name.to_owned())
            }
            _ => Err(refused()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_path_segments() {
        for good in ["api-url", "schema.version", "a_b", "X1"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "a b", "ä", &"k".repeat(129)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
