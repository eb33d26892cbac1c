//! `/jobs` handlers.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use offpath_core::idempotency::validate_key;
use offpath_core::outbox::publish_or_log;
use offpath_core::store;
use offpath_core::{Job, JobId, JobView, StoreError};

use crate::auth::Principal;
use crate::error::ErrorBody;
use crate::submit::{SubmitRequest, SubmitRequestSchema, Submitted, submit as submit_job};
use crate::wait::{WaitQuery, preferred_wait};
use crate::{ApiError, AppState};

/// `POST /jobs`.
#[utoipa::path(
    post,
    path = "/jobs",
    operation_id = "submitJob",
    summary = "Submit a job",
    description = "Validates the job, records it queued and enqueues it; answers at once. Wait for the result with GET /jobs/{id}?wait=20, a webhook, or Prefer: wait=N on this request.",
    params(
        ("Prefer" = Option<String>, Header, nullable = false,
         description = "wait=N (RFC 7240): hold the answer up to N seconds (at most 20) for the job to end; 200 with the finished job if it does, else the usual 202. The job goes through the queue either way."),
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
         description = "1-255 printable ASCII characters. Same key and body: the same job (header Idempotent-Replayed: true). Same key, other body: 422.",
         min_length = 1, max_length = 255, pattern = r"^[\x20-\x7E]+$"),
    ),
    request_body(content = SubmitRequestSchema, content_type = "application/json"),
    responses(
        (status = 200, description = "Prefer: wait=N and the job ended within N seconds.", body = JobView,
         headers(("Preference-Applied" = String, description = "wait=N"))),
        (status = 202, description = "Accepted; the job is queued (or this is a replay).", body = JobView,
         headers(("Location" = String, description = "/jobs/{id}"),
                 ("Idempotent-Replayed" = String, description = "true on a replay"))),
        (status = 400, description = "Malformed JSON, unknown task, schema violation, bad Idempotency-Key, or a webhook URL that is refused (not https, a private, loopback or link-local address).", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 404, description = "The input names an upload the caller does not have.", body = ErrorBody),
        (status = 413, description = "Body, job or uploaded document too large.", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json.", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body.", body = ErrorBody),
        (status = 429, description = "The caller has as many unfinished jobs as one caller may (OFFPATH_MAX_UNFINISHED_PER_OWNER); nothing was created. Retry after the Retry-After header.", body = ErrorBody,
         headers(("Retry-After" = String, description = "seconds"))),
        (status = 503, description = "Backend unavailable; retry after the Retry-After header.", body = ErrorBody),
    )
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Principal(owner): Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(state.limits.max_body_bytes),
        _ => ApiError::MalformedJson(rejection.body_text()),
    })?;
    let mut keys = headers.get_all("idempotency-key").iter();
    let key = match keys.next() {
        None => None,
        Some(_) if keys.next().is_some() => {
            return Err(ApiError::InvalidIdempotencyKey(
                "send one Idempotency-Key header, not several".into(),
            ));
        }
        Some(raw) => Some(
            validate_key(raw.as_bytes())
                .map_err(|e| ApiError::InvalidIdempotencyKey(e.to_string()))?,
        ),
    };
    let request = SubmitRequest::parse(&body, &state.limits, &state.tasks)?;
    let (mut job, replayed) = match submit_job(&state, &owner, key, request).await? {
        Submitted::Created(job) => (job, false),
        Submitted::Replayed(job) => (job, true),
    };
    let wait = preferred_wait(&headers);
    if let Some(wait) = wait
        && !job.status.is_terminal()
    {
        // The job exists and is queued: a failed wait still answers its 202, so a
        // client without a key does not submit it again.
        match state.store.wait_terminal(job.id, wait).await {
            Ok(Some(current)) => job = current,
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(job_id = %job.id, error = %err, "waiting for the job failed; answering 202")
            }
        }
    }
    let status = match wait {
        Some(_) if job.status.is_terminal() => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    let mut response = (status, Json(job.view())).into_response();
    if let Some(wait) = wait {
        let applied = HeaderValue::try_from(format!("wait={}", wait.as_secs()))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        response.headers_mut().insert("preference-applied", applied);
    }
    let location = HeaderValue::try_from(format!("/jobs/{}", job.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    response.headers_mut().insert(header::LOCATION, location);
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The `{id}` of a job route. A segment that is not a job id, including one that is
/// not UTF-8 once decoded, answers the same 404 as an unknown id.
pub(crate) struct JobIdParam(pub(crate) JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobIdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::JobNotFound)?;
        id.parse()
            .map(JobIdParam)
            .map_err(|_| ApiError::JobNotFound)
    }
}

/// `GET /jobs/{id}`.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    operation_id = "getJob",
    summary = "Read a job",
    params(
        ("id" = String, Path, description = "Job id (UUID)."),
        ("wait" = Option<u32>, Query, nullable = false, minimum = 0, maximum = 20,
         description = "Long-poll: answer as soon as the job ends, or after this many seconds (0-20) with the job as it is then."),
        ("include" = Option<String>, Query, nullable = false,
         description = "input: include the job's input in the answer."),
    ),
    responses(
        (status = 200, description = "The job.", body = JobView),
        (status = 400, description = "wait is not a whole number from 0 to 20, or include is not input.", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 404, description = "No such job for this caller.", body = ErrorBody),
        (status = 503, description = "Backend unavailable.", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Principal(owner): Principal,
    JobIdParam(id): JobIdParam,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let wait = query.wait()?;
    let include_input = query.include_input()?;
    let mut job = owned_job(&state, &owner, id).await?;
    if !wait.is_zero()
        && !job.status.is_terminal()
        && let Some(current) = state.store.wait_terminal(id, wait).await?
    {
        job = current;
    }
    let mut view = job.view();
    if include_input {
        view.input = Some(job.input);
    }
    Ok(Json(view).into_response())
}

/// `DELETE /jobs/{id}`: cancels a queued job, requests the cancel of a running one.
#[utoipa::path(
    delete,
    path = "/jobs/{id}",
    operation_id = "cancelJob",
    summary = "Cancel a job",
    description = "A queued job ends cancelled; a running job gets cancel_requested and ends cancelled, its result discarded.",
    params(("id" = String, Path, description = "Job id (UUID).")),
    responses(
        (status = 200, description = "The job.", body = JobView),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 404, description = "No such job for this caller.", body = ErrorBody),
        (status = 409, description = "The job already finished.", body = ErrorBody),
        (status = 503, description = "Backend unavailable.", body = ErrorBody),
    )
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Principal(owner): Principal,
    JobIdParam(id): JobIdParam,
) -> Result<Response, ApiError> {
    let job = owned_job(&state, &owner, id).await?;
    match store::cancel(state.store.as_ref(), job.id, state.clock.now_epoch_ms()).await {
        Ok(job) => {
            tracing::info!(job_id = %job.id, status = %job.status, "cancel requested");
            publish_or_log(state.store.as_ref(), state.webhooks.as_ref(), &job).await;
            Ok(Json(job.view()).into_response())
        }
        Err(StoreError::Conflict(current)) => Err(ApiError::AlreadyFinished(current.status)),
        Err(err) => Err(err.into()),
    }
}

/// The job with this id if the caller owns it; 404 otherwise, so ids of other
/// owners' jobs are indistinguishable from absent ones.
pub(crate) async fn owned_job(state: &AppState, owner: &str, id: JobId) -> Result<Job, ApiError> {
    match state.store.get(id).await? {
        Some(job) if job.owner == owner => Ok(job),
        _ => Err(ApiError::JobNotFound),
    }
}

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}
