//! The orchestrator's one error type, and how it reaches clients.

use aida_core::ids::IdError;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The request is wrong; the message says how, for the user.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something with this name or id exists already (a user, a webhook
    /// delivery).
    #[error("{0}")]
    AlreadyExists(String),
    /// No valid credential: a wrong password, an unknown or revoked token.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid caller asked for more than their role allows.
    #[error("{0}")]
    PermissionDenied(String),
    /// A part the orchestrator relies on (the aggregator) is down; `part`
    /// names it to the caller.
    #[error("{message}")]
    Unavailable { part: &'static str, message: String },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

impl OrchestratorError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    /// The aggregator failed or did not answer.
    pub fn aggregator_unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            part: "aggregator",
            message: message.into(),
        }
    }

    pub fn task_not_found(id: &impl std::fmt::Display) -> Self {
        Self::NotFound(format!("task {id} not found"))
    }
}

impl From<IdError> for OrchestratorError {
    fn from(e: IdError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

/// Whether a database error is a UNIQUE or PRIMARY KEY violation: the row
/// exists already.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

impl From<sqlx::Error> for OrchestratorError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unexpected(anyhow::Error::new(e).context("database error"))
    }
}

impl From<OrchestratorError> for tonic::Status {
    fn from(e: OrchestratorError) -> Self {
        match e {
            OrchestratorError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            OrchestratorError::NotFound(m) => tonic::Status::not_found(m),
            OrchestratorError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            OrchestratorError::AlreadyExists(m) => tonic::Status::already_exists(m),
            OrchestratorError::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            OrchestratorError::PermissionDenied(m) => tonic::Status::permission_denied(m),
            OrchestratorError::Unavailable { part, message } => {
                aida_core::grpc::unavailable(part, message)
            }
            OrchestratorError::Unexpected(e) => {
                // The detail is for operators, not for clients.
                tracing::error!(error = ?e, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
