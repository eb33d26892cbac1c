//! The API's error type: every failure is a status, a snake_case code and a sentence.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use offpath_core::{ErrorInfo, QueueError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// Seconds a client should wait before retrying after a 503.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The `Retry-After` of a `429 too_many_jobs`: time for some of the caller's jobs to
/// finish.
pub(crate) const ADMISSION_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    error: ErrorInfo,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The body is not declared as JSON.
    #[error("send the body as JSON with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is larger than the limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The job would not fit the job store.
    #[error("the job is too large to store: {0}")]
    JobTooLarge(String),
    /// The body is not valid JSON.
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body's shape is wrong (fields outside `input`).
    #[error("{0}")]
    InvalidRequest(String),
    /// The webhook URL is refused.
    #[error("{0}")]
    InvalidWebhook(String),
    /// The task is not one offpath runs.
    #[error("{0}")]
    UnknownTask(String),
    /// The input breaks the task's schema.
    #[error("{0}")]
    InvalidInput(String),
    /// The Idempotency-Key header is malformed.
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    /// The key was used before with another request body.
    #[error(
        "this Idempotency-Key was used for a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// No such job for this caller.
    #[error("no job with this id")]
    JobNotFound,
    /// No such upload for this caller.
    #[error(
        "upload {0} does not exist; get one from POST /uploads and PUT the document to its url (uploads are kept a day)"
    )]
    UploadNotFound(String),
    /// The upload is larger than a document may be.
    #[error("the document is larger than 10 MiB")]
    UploadTooLarge,
    /// A signed URL that does not hold.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The job's task makes no result file.
    #[error("this job has no result file; its output is in GET /jobs/{{id}}")]
    NoResult,
    /// The job has not succeeded.
    #[error("the job is {0}; its result exists once it has succeeded")]
    ResultNotReady(offpath_core::JobStatus),
    /// The job already finished.
    #[error("the job is already {0} and can no longer be cancelled")]
    AlreadyFinished(offpath_core::JobStatus),
    /// A listing cursor this API did not give the caller.
    #[error("{0}")]
    InvalidCursor(String),
    /// The owner has as many unfinished jobs as a caller may.
    #[error(
        "you have {0} or more unfinished jobs, the most one caller may have; retry after {after} seconds, as jobs finish",
        after = ADMISSION_RETRY_AFTER.as_secs()
    )]
    TooManyJobs(u64),
    /// No such route.
    #[error("no such route; see /openapi.json")]
    RouteNotFound,
    /// The route exists, the method does not.
    #[error("method not allowed on this route; see /openapi.json")]
    MethodNotAllowed,
    /// DynamoDB or SQS cannot be reached; nothing was lost, retry.
    #[error("the job backend is unavailable; retry after {} seconds", RETRY_AFTER.as_secs())]
    Unavailable(String),
    /// A bug or misconfiguration.
    #[error("internal error; the request id in the logs has the details")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) | ApiError::JobTooLarge(_) | ApiError::UploadTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UploadNotFound(_) | ApiError::NoResult => StatusCode::NOT_FOUND,
            ApiError::ResultNotReady(_) => StatusCode::CONFLICT,
            ApiError::MalformedJson(_)
            | ApiError::InvalidRequest(_)
            | ApiError::InvalidWebhook(_)
            | ApiError::UnknownTask(_)
            | ApiError::InvalidInput(_)
            | ApiError::InvalidIdempotencyKey(_)
            | ApiError::InvalidCursor(_) => StatusCode::BAD_REQUEST,
            ApiError::TooManyJobs(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::JobNotFound | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::AlreadyFinished(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::JobTooLarge(_) => "job_too_large",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidWebhook(_) => "invalid_webhook",
            ApiError::UnknownTask(_) => "unknown_task",
            ApiError::InvalidInput(_) => "invalid_input",
            ApiError::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::JobNotFound => "job_not_found",
            ApiError::UploadNotFound(_) => "upload_not_found",
            ApiError::UploadTooLarge => "upload_too_large",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NoResult => "no_result",
            ApiError::ResultNotReady(_) => "result_not_ready",
            ApiError::AlreadyFinished(_) => "job_finished",
            ApiError::InvalidCursor(_) => "invalid_cursor",
            ApiError::TooManyJobs(_) => "too_many_jobs",
            ApiError::RouteNotFound => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Unavailable(detail) => tracing::warn!(%detail, "backend unavailable"),
            ApiError::Internal(detail) => tracing::error!(%detail, "internal error"),
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorInfo::new(self.code(), self.to_string()),
        };
        let mut response = (status, Json(body)).into_response();
        let retry_after = match status {
            StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER),
            StatusCode::TOO_MANY_REQUESTS => Some(ADMISSION_RETRY_AFTER),
            _ => None,
        };
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::JobNotFound,
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            StoreError::TooLarge(detail) => ApiError::JobTooLarge(detail),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Unavailable(detail) => ApiError::Unavailable(detail),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
