//! Debug for the messages that carry passwords and tokens: their other
//! fields print as usual, the secrets as `[redacted]`, so a message that
//! ends up in a log or a panic leaks nothing.

use std::fmt;

use crate::auth::{
    AuthenticateRequest, CreateUserRequest, CreatedApiToken, LoginRequest, LogoutRequest,
    RefreshRequest, Session, UpdateUserRequest,
};
use crate::common::SubtaskRun;
use crate::orchestrator::PutContextRequest;

const REDACTED: &str = "[redacted]";

fn redacted(value: &str) -> &'static str {
    if value.is_empty() { "" } else { REDACTED }
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("client_addr", &self.client_addr)
            .finish()
    }
}

impl fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshRequest")
            .field("refresh_token", &redacted(&self.refresh_token))
            .field("client_addr", &self.client_addr)
            .finish()
    }
}

impl fmt::Debug for LogoutRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogoutRequest")
            .field("refresh_token", &redacted(&self.refresh_token))
            .field("session_id", &self.session_id)
            .field("actor", &self.actor)
            .finish()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("session_id", &self.session_id)
            .field("refresh_token", &redacted(&self.refresh_token))
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
}

impl fmt::Debug for AuthenticateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticateRequest")
            .field("token", &redacted(&self.token))
            .field("client_addr", &self.client_addr)
            .finish()
    }
}

impl fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("password", &redacted(&self.password))
            .field("actor", &self.actor)
            .finish()
    }
}

impl fmt::Debug for UpdateUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateUserRequest")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("password", &self.password.as_deref().map(redacted))
            .field("disabled", &self.disabled)
            .field("actor", &self.actor)
            .finish()
    }
}

impl fmt::Debug for CreatedApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedApiToken")
            .field("token", &self.token)
            .field("secret", &redacted(&self.secret))
            .finish()
    }
}

impl fmt::Debug for PutContextRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutContextRequest")
            .field("task_id", &self.task_id)
            .field("key", &self.key)
            .field("value", &self.value)
            .field("token", &redacted(&self.token))
            .field("author", &self.author)
            .field("actor", &self.actor)
            .finish()
    }
}

/// The run's environment holds its context token: names only.
impl fmt::Debug for SubtaskRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut env: Vec<&String> = self.env.keys().collect();
        env.sort();
        f.debug_struct("SubtaskRun")
            .field("task_id", &self.task_id)
            .field("subtask", &self.subtask)
            .field("attempt", &self.attempt)
            .field("repo", &self.repo)
            .field("base_commit", &self.base_commit)
            .field("branch", &self.branch)
            .field("dependencies", &self.dependencies)
            .field("prompt", &self.prompt)
            .field("agent", &self.agent)
            .field("env", &env)
            .field("read_only", &self.read_only)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let login = LoginRequest {
            username: "alice".into(),
            password: "Correct-Horse-9!".into(),
            client_addr: "127.0.0.1".into(),
        };
        let shown = format!("{login:?}");
        assert!(
            shown.contains("alice") && !shown.contains("Correct-Horse"),
            "{shown}"
        );
        let run = SubtaskRun {
            env: [("AIDA_CONTEXT_TOKEN".to_owned(), "aida_ctx_x_y".to_owned())].into(),
            ..Default::default()
        };
        let shown = format!("{run:?}");
        assert!(
            shown.contains("AIDA_CONTEXT_TOKEN") && !shown.contains("aida_ctx_x_y"),
            "{shown}"
        );
    }
}
