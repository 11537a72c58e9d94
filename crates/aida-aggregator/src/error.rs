//! The aggregator's one error type and its mapping to gRPC statuses:
//! caller mistakes get a clear message, internal failures are logged and
//! reach clients only as a generic message.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// A request field is missing or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The repository path does not exist.
    #[error("repository {0:?} does not exist")]
    RepoNotFound(String),
    /// The path exists but holds no git repository.
    #[error("{0:?} is not a git repository")]
    NotARepo(String),
    /// A commit the request names is not in the repository.
    #[error("commit {commit:?} ({field}) does not exist in the repository")]
    CommitNotFound { field: String, commit: String },
    /// The repository's state prevents the operation (for example a ref in
    /// the way of the result branch).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Git(#[from] git2::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<aida_core::ids::IdError> for AggregatorError {
    fn from(e: aida_core::ids::IdError) -> Self {
        AggregatorError::InvalidArgument(e.to_string())
    }
}

impl From<AggregatorError> for Status {
    fn from(e: AggregatorError) -> Self {
        match e {
            AggregatorError::InvalidArgument(_) | AggregatorError::NotARepo(_) => {
                Status::invalid_argument(e.to_string())
            }
            AggregatorError::RepoNotFound(_) | AggregatorError::CommitNotFound { .. } => {
                Status::not_found(e.to_string())
            }
            AggregatorError::FailedPrecondition(_) => Status::failed_precondition(e.to_string()),
            AggregatorError::Git(ref err) => {
                tracing::error!(error = %err, code = ?err.code(), class = ?err.class(), "git operation failed");
                Status::internal("internal aggregator error")
            }
            AggregatorError::Internal(ref err) => {
                tracing::error!(error = format!("{err:#}"), "internal aggregator error");
                Status::internal("internal aggregator error")
            }
        }
    }
}
