//! A task's shared context: a small key–value store with history that the
//! agents of a task read and write (through the gateway, with the URL and
//! token the worker puts in their environment) and that the report shows.

use std::sync::Arc;

use aida_core::event::{Channel, kind};
use aida_core::proto::common::ContextEntry;
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

/// A fresh secret for a new task's agents.
pub fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    pub async fn put_context(
        self: &Arc<Self>,
        task_id: &str,
        key: &str,
        value: &str,
        token: &str,
        author: &str,
    ) -> Result<ContextEntry> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(OrchestratorError::invalid(format!(
                "context value of {key:?} is {} bytes; the limit is {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        let expected = self
            .store
            .context_token(task_id)
            .await?
            .ok_or_else(|| OrchestratorError::task_not_found(&task_id))?;
        // Both sides are short hex strings of our own making; a plain
        // comparison leaks nothing an attacker could use over the network
        // that the length check would not.
        if token.is_empty() || token != expected {
            return Err(OrchestratorError::Unauthenticated(
                "writing a task's context needs its token (AIDA_CONTEXT_TOKEN) as a bearer token"
                    .into(),
            ));
        }
        let author = if author.trim().is_empty() {
            "agent"
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
        assert_eq!(new_token().len(), 48);
        assert_ne!(new_token(), new_token());
    }
}
