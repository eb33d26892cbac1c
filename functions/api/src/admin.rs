//! The operators' routes: queue figures and the minutes' activity
//! (`GET /admin/queues`), and the jobs queue's dead letters: list
//! (`GET /admin/dead-letters`), redrive (`POST /admin/dead-letters/redrive`) and purge
//! (`POST /admin/dead-letters/purge`). Every one answers `403` to a caller who is not
//! an operator (see `operators.rs`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use http::HeaderMap;
use offpath_core::activity::minute_of;
use offpath_core::{
    DeadLetter, DeadLetters, ErrorInfo, JobQueue, JobStatus, MinuteActivity, QueueDepth, Selection,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::operators::Operator;
use crate::{ApiError, AppState};

/// Minutes of activity `GET /admin/queues` returns unless asked otherwise.
const DEFAULT_MINUTES: usize = 15;
/// Most minutes of activity one request may ask for.
const MAX_MINUTES: usize = 60;
/// Dead letters `GET /admin/dead-letters` reads unless asked otherwise.
const DEFAULT_LETTERS: usize = 50;
/// Most dead letters one listing reads.
const MAX_LETTERS: usize = 100;
/// Dead letters a redrive reads at a time.
const REDRIVE_BATCH: usize = 100;

/// One queue's depth.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueFigures {
    /// `jobs`, `jobs_dlq`, `webhooks` or `webhooks_dlq`.
    pub name: String,
    /// Messages waiting (approximate).
    pub visible: u64,
    /// Messages received and not yet deleted: running jobs, retries waiting out their
    /// backoff (approximate).
    pub in_flight: u64,
    /// Messages sent with a delay not yet passed (approximate).
    pub delayed: u64,
}

/// The answer of `GET /admin/queues`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuesView {
    /// The queues this deployment knows, jobs queue first.
    pub queues: Vec<QueueFigures>,
    /// The last minutes' totals, oldest first (minutes without activity left out):
    /// throughput and queue wait.
    pub activity: Vec<MinuteActivity>,
    /// When the figures were read (RFC 3339).
    pub at: String,
}

/// The query of `GET /admin/queues`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct QueuesParams {
    /// Minutes of activity, 1 to 60 (default 15).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 60)]
    minutes: Option<String>,
}

/// `GET /admin/queues`.
#[utoipa::path(
    get,
    path = "/admin/queues",
    operation_id = "adminQueues",
    summary = "Queue depths and the last minutes' throughput and queue wait (operators)",
    params(QueuesParams),
    responses(
        (status = 200, description = "The figures.", body = QueuesView),
        (status = 400, description = "A bad or unknown parameter.", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 403, description = "The caller is not an operator.", body = ErrorBody),
        (status = 503, description = "Backend unavailable.", body = ErrorBody),
    )
)]
pub(crate) async fn queues(
    State(state): State<AppState>,
    _: Operator,
    params: Result<Query<QueuesParams>, QueryRejection>,
) -> Result<Json<QueuesView>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let minutes = whole_number(
        "minutes",
        params.minutes.as_deref(),
        DEFAULT_MINUTES,
        MAX_MINUTES,
    )?;
    let named: [(&str, Option<&Arc<dyn JobQueue>>); 4] = [
        ("jobs", Some(&state.queue)),
        ("jobs_dlq", state.dlq.as_ref()),
        ("webhooks", Some(&state.webhooks)),
        ("webhooks_dlq", state.webhooks_dlq.as_ref()),
    ];
    let mut queues = Vec::new();
    for (name, queue) in named {
        let Some(queue) = queue else { continue };
        let QueueDepth {
            visible,
            in_flight,
            delayed,
        } = queue.depth().await?;
        queues.push(QueueFigures {
            name: name.to_owned(),
            visible,
            in_flight,
            delayed,
        });
    }
    let now = state.clock.now_epoch_ms();
    let activity = state.store.activity(minute_of(now), minutes as u32).await?;
    Ok(Json(QueuesView {
        queues,
        activity,
        at: offpath_core::job::rfc3339(now),
    }))
}

/// A message in the jobs queue's dead-letter queue, with its job's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    /// The message id.
    pub message_id: String,
    /// Receives so far (in the jobs queue and the dead-letter queue).
    pub receive_count: u32,
    /// When the message was first sent (RFC 3339).
    pub sent_at: String,
    /// The job it names; absent when the body is not a job message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<String>, format = Uuid, nullable = false)]
    pub job_id: Option<offpath_core::JobId>,
    /// The job's task, if the job exists.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false)]
    pub task: Option<String>,
    /// The job's status, if the job exists.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false)]
    pub status: Option<JobStatus>,
    /// The job's error; or why there is no job (`not_a_job_message`, `job_not_found`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false)]
    pub error: Option<ErrorInfo>,
}

/// The answer of `GET /admin/dead-letters`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    /// The messages read (SQS returns them in no particular order).
    pub letters: Vec<DeadLetterView>,
    /// The dead-letter queue's approximate depth: more than `letters` when the
    /// listing stopped at its limit.
    pub depth: u64,
}

/// The query of `GET /admin/dead-letters`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LettersParams {
    /// Most messages to read, 1 to 100 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// Query parameter `name`: `default` when absent, else a whole number from 1 to `max`
/// (a `400` naming the parameter otherwise).
fn whole_number(
    name: &str,
    text: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!("{name}: must be a whole number from 1 to {max}"))
        })
}

/// The jobs queue's dead letters, or a `503` naming the missing setting.
fn dead_letters(state: &AppState) -> Result<DeadLetters, ApiError> {
    let dlq = state.dlq.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "this deployment has no dead-letter queue configured (OFFPATH_DLQ_URL)".into(),
        )
    })?;
    Ok(DeadLetters::new(Arc::clone(dlq), Arc::clone(&state.queue)))
}

/// `GET /admin/dead-letters`.
#[utoipa::path(
    get,
    path = "/admin/dead-letters",
    operation_id = "adminListDeadLetters",
    summary = "The jobs queue's dead letters with their jobs' errors (operators)",
    description = "Queues have no peek: the messages are read and made visible again at once, so a worker of the dead-letter queue (there is none in offpath) could miss them for that moment.",
    params(LettersParams),
    responses(
        (status = 200, description = "The messages.", body = DeadLetterList),
        (status = 400, description = "A bad or unknown parameter.", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 403, description = "The caller is not an operator.", body = ErrorBody),
        (status = 503, description = "Backend unavailable, or no dead-letter queue configured.", body = ErrorBody),
    )
)]
pub(crate) async fn list_letters(
    State(state): State<AppState>,
    _: Operator,
    params: Result<Query<LettersParams>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = whole_number(
        "limit",
        params.limit.as_deref(),
        DEFAULT_LETTERS,
        MAX_LETTERS,
    )?;
    let dlq = dead_letters(&state)?;
    let taken = dlq.take(limit).await?;
    dlq.release(&taken).await?;
    let depth = dlq.depth().await?;
    let mut letters = Vec::with_capacity(taken.len());
    for letter in &taken {
        letters.push(view(&state, letter).await?);
    }
    Ok(Json(DeadLetterList {
        letters,
        depth: depth.visible + depth.in_flight,
    }))
}

async fn view(state: &AppState, letter: &DeadLetter) -> Result<DeadLetterView, ApiError> {
    let mut view = DeadLetterView {
        message_id: letter.message_id.clone(),
        receive_count: letter.receive_count,
        sent_at: offpath_core::job::rfc3339(letter.sent_at_epoch_ms),
        job_id: letter.job_id(),
        task: None,
        status: None,
        error: None,
    };
    let Some(id) = letter.job_id() else {
        view.error = Some(ErrorInfo::new(
            "not_a_job_message",
            "the message body is not a job message",
        ));
        return Ok(view);
    };
    match state.store.get(id).await? {
        None => {
            view.error = Some(ErrorInfo::new(
                "job_not_found",
                "the job does not exist (it may have expired)",
            ))
        }
        Some(job) => {
            view.task = Some(job.task.to_string());
            view.status = Some(job.status);
            view.error = job.error;
        }
    }
    Ok(view)
}

/// The body of `POST /admin/dead-letters/redrive`: `ids` or `all`, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedriveRequest {
    /// Message ids or job ids to redrive (1 to 100).
    #[serde(default)]
    ids: Option<Vec<String>>,
    /// Redrive every message (those arriving meanwhile included).
    #[serde(default)]
    all: Option<bool>,
}

/// What a redrive did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RedriveResult {
    /// Message ids moved back, each after its job went back to `queued`.
    pub moved: Vec<String>,
    /// Messages left in the dead-letter queue, and why.
    pub skipped: Vec<Skipped>,
}

/// A message a redrive left in place.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Skipped {
    /// The message id.
    pub message_id: String,
    /// Why it stays.
    pub reason: String,
}

/// Parses a JSON request body of type `T` (strictly: no duplicate or unknown keys).
fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    if !crate::jobs::is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|e| ApiError::MalformedJson(e.body_text()))?;
    let value = crate::strict_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

/// `POST /admin/dead-letters/redrive`.
#[utoipa::path(
    post,
    path = "/admin/dead-letters/redrive",
    operation_id = "adminRedrive",
    summary = "Put dead-lettered jobs back to queued and their messages in the jobs queue (operators)",
    description = "One job at a time: the job is revived, then its message moves (sent, then deleted here). Stopped anywhere, no message moved without its job revived.",
    request_body(content = RedriveRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What moved and what stayed.", body = RedriveResult),
        (status = 400, description = "Neither or both of ids and all, no ids, too many ids, or malformed JSON.", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 403, description = "The caller is not an operator.", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json.", body = ErrorBody),
        (status = 503, description = "Backend unavailable (messages moved so far stay moved), or no dead-letter queue configured.", body = ErrorBody),
    )
)]
pub(crate) async fn redrive(
    State(state): State<AppState>,
    _: Operator,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RedriveResult>, ApiError> {
    let request: RedriveRequest = json_body(&headers, body)?;
    let ids = match (request.ids, request.all) {
        (Some(ids), None) if (1..=MAX_LETTERS).contains(&ids.len()) => Some(ids),
        (None, Some(true)) => None,
        (Some(_), None) => {
            return Err(ApiError::InvalidRequest(format!(
                "ids: name 1 to {MAX_LETTERS} message or job ids"
            )));
        }
        _ => {
            return Err(ApiError::InvalidRequest(
                "send {\"ids\": [...]} or {\"all\": true}".into(),
            ));
        }
    };
    let selection = ids.as_deref().map_or(Selection::All, Selection::Ids);
    let done = dead_letters(&state)?
        .redrive_jobs(state.store.as_ref(), selection, REDRIVE_BATCH)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(RedriveResult {
        moved: done.moved.into_iter().map(|l| l.message_id).collect(),
        skipped: done
            .skipped
            .into_iter()
            .map(|(l, reason)| Skipped {
                message_id: l.message_id,
                reason: reason.to_owned(),
            })
            .collect(),
    }))
}

/// The body of `POST /admin/dead-letters/purge`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// Must be `purge`: the messages are gone for good.
    confirm: String,
}

/// `POST /admin/dead-letters/purge`.
#[utoipa::path(
    post,
    path = "/admin/dead-letters/purge",
    operation_id = "adminPurge",
    summary = "Delete every message in the jobs queue's dead-letter queue (operators)",
    description = "The jobs stay failed (dead_lettered). SQS allows one purge per queue a minute.",
    request_body(content = PurgeRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Purged."),
        (status = 400, description = "confirm is not \"purge\", or malformed JSON.", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 403, description = "The caller is not an operator.", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json.", body = ErrorBody),
        (status = 503, description = "Backend unavailable (or purged less than a minute ago), or no dead-letter queue configured.", body = ErrorBody),
    )
)]
pub(crate) async fn purge(
    State(state): State<AppState>,
    _: Operator,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<http::StatusCode, ApiError> {
    let request: PurgeRequest = json_body(&headers, body)?;
    if request.confirm != "purge" {
        return Err(ApiError::InvalidRequest(
            "confirm: must be \"purge\" (the messages are gone for good)".into(),
        ));
    }
    dead_letters(&state)?
        .purge()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// Who the caller is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    /// The owner the caller's jobs belong to.
    pub owner: String,
    /// Whether the caller may use the admin routes.
    pub operator: bool,
}

/// `GET /me`.
#[utoipa::path(
    get,
    path = "/me",
    operation_id = "me",
    summary = "The caller's owner id and whether they are an operator",
    responses(
        (status = 200, description = "The caller.", body = Me),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
    )
)]
pub(crate) async fn me(
    crate::auth::Principal(owner): crate::auth::Principal,
    operator: Option<axum::Extension<Operator>>,
) -> Json<Me> {
    Json(Me {
        owner,
        operator: operator.is_some(),
    })
}
