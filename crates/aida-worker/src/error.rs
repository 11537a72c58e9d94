//! The worker's errors and how they map to gRPC statuses. Internal details
//! are logged, not sent to the caller.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker is busy with subtask {subtask} of task {task_id}")]
    Busy { task_id: String, subtask: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<WorkerError> for Status {
    fn from(err: WorkerError) -> Self {
        match err {
            WorkerError::Busy { .. } => Status::failed_precondition(err.to_string()),
            WorkerError::InvalidArgument(msg) => Status::invalid_argument(msg),
            WorkerError::Unexpected(e) => {
                tracing::error!(error = ?e, "unexpected worker error");
                Status::internal("internal worker error")
            }
        }
    }
}
