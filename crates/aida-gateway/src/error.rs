//! The gateway's one error type: every handler returns it, and it renders
//! as `{"error": {"code", "message"}}` with the matching HTTP status. Errors
//! from the orchestrator keep their message when it is meant for the user
//! (invalid argument, not found, conflicts); anything else is logged and
//! answered with a generic message.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
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
    /// No credential, or one that is not (or no longer) valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential whose role does not allow this.
    #[error("{0}")]
    PermissionDenied(String),
    /// Over a rate limit; retry after the duration.
    #[error("too many requests: retry in {} s", retry_secs(.0))]
    TooManyRequests(std::time::Duration),
    /// Too many live event streams for one user.
    #[error("{0}")]
    TooManyStreams(String),
    /// The request body is over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A part of AIDA is down: the orchestrator, or one behind it that it
    /// named (the aggregator), with what it said.
    #[error("{part} unavailable{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Unavailable {
        part: String,
        detail: Option<String>,
    },
    #[error("the orchestrator did not answer in time")]
    DeadlineExceeded,
    /// Details are logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The orchestrator cannot be reached.
    pub fn orchestrator_unavailable() -> Self {
        ApiError::Unavailable {
            part: "orchestrator".into(),
            detail: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::FailedPrecondition(_) => StatusCode::CONFLICT,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests(_) | ApiError::TooManyStreams(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
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
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::TooManyRequests(_) | ApiError::TooManyStreams(_) => "too_many_requests",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unavailable { .. } => "unavailable",
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
            tonic::Code::PermissionDenied => ApiError::PermissionDenied(message),
            tonic::Code::Unavailable => match aida_core::grpc::unavailable_part(&status) {
                // The orchestrator answered: a part behind it is down, and
                // its message (ours) says what failed.
                Some(part) => {
                    tracing::warn!(part, detail = %message, "a part behind the orchestrator is unavailable");
                    ApiError::Unavailable {
                        part: part.to_owned(),
                        detail: Some(message),
                    }
                }
                // The orchestrator itself is out of reach; the transport's
                // detail is for the log.
                None => {
                    tracing::warn!(detail = %message, "orchestrator unavailable");
                    ApiError::orchestrator_unavailable()
                }
            },
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
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::PayloadTooLarge(
                "the request body is larger than the limit (AIDA_MAX_BODY_BYTES)".into(),
            );
        }
        // body_text names the problem: the missing or unknown field, the
        // wrong type, the syntax error and where it is.
        ApiError::InvalidArgument(rejection.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::PayloadTooLarge(
                "the request body is larger than the limit (AIDA_MAX_BODY_BYTES)".into(),
            );
        }
        ApiError::InvalidArgument(rejection.body_text())
    }
}

/// Whole seconds to wait, at least one.
fn retry_secs(wait: &std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
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
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::TooManyRequests(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(wait)));
            }
            ApiError::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
