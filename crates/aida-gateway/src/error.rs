//! The gateway's one error type: every handler returns it, and it renders
//! as `{"error": {"code", "message"}}` with the matching HTTP status. Errors
//! from the orchestrator keep their message when it is meant for the user
//! (invalid argument, not found, conflicts); anything else is logged and
//! answered with a generic message.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or the orchestrator rejected its content.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request does not fit the current state (cancelling a finished
    /// task, for example).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A write that needs a token came without the right one.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("orchestrator unavailable")]
    Unavailable,
    #[error("the orchestrator did not answer in time")]
    DeadlineExceeded,
    /// Details are logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::FailedPrecondition(_) => StatusCode::CONFLICT,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "invalid_argument",
            ApiError::NotFound(_) => "not_found",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::FailedPrecondition(_) => "failed_precondition",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Unavailable => "unavailable",
            ApiError::DeadlineExceeded => "deadline_exceeded",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::InvalidArgument => ApiError::InvalidArgument(message),
            tonic::Code::NotFound => ApiError::NotFound(message),
            tonic::Code::AlreadyExists => ApiError::AlreadyExists(message),
            tonic::Code::FailedPrecondition => ApiError::FailedPrecondition(message),
            tonic::Code::Unauthenticated => ApiError::Unauthenticated(message),
            tonic::Code::Unavailable => {
                tracing::warn!(detail = %message, "orchestrator unavailable");
                ApiError::Unavailable
            }
            tonic::Code::DeadlineExceeded => ApiError::DeadlineExceeded,
            _ => ApiError::Internal(aida_core::grpc::status_context(
                status,
                "orchestrator call failed",
            )),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // body_text names the problem: the missing or unknown field, the
        // wrong type, the syntax error and where it is.
        ApiError::InvalidArgument(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidArgument(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::InvalidArgument(rejection.body_text())
    }
}

impl From<aida_core::ids::IdError> for ApiError {
    fn from(err: aida_core::ids::IdError) -> Self {
        ApiError::InvalidArgument(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self {
            tracing::error!(error = format!("{err:#}"), "request failed");
        }
        (self.status(), Json(self.body())).into_response()
    }
}
