//! Accepting a job: validation, the idempotent create, the enqueue and its repair.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Duration;

use offpath_core::blob::{MAX_UPLOAD_BYTES, upload_key};
use offpath_core::idempotency::{job_id_for_key, request_hash};
use offpath_core::json::error_message;
use offpath_core::queue::message_group;
use offpath_core::{
    EventKind, InputError, Job, JobId, JobMessage, JobStatus, JsonText, NewJob, Registry, Source,
    StoreError, TaskName, Transition, Webhook, metrics,
};
use serde::Deserialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::error::RETRY_AFTER;
use crate::strict_json;
use crate::{ApiError, AppState};

/// Limits on submissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitLimits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a job is kept when the request sets no `ttl_seconds`.
    pub default_ttl: Duration,
    /// Smallest accepted `ttl_seconds`.
    pub min_ttl: Duration,
    /// Largest accepted `ttl_seconds`.
    pub max_ttl: Duration,
    /// A replay of a job still queued (never claimed) after this long re-sends its
    /// message, once per message lifetime, repairing a job whose first enqueue failed.
    /// Younger jobs are left alone, so racing duplicates do not flood the queue. It
    /// equals the `Retry-After` of a 503, so a client that waits as told before its
    /// retry always repairs its job.
    pub requeue_after: Duration,
    /// Most unfinished (queued or running) jobs one owner may have; above it a submit
    /// answers `429 too_many_jobs` and creates nothing. `None`: no bound.
    pub max_unfinished_per_owner: Option<u64>,
}

/// The default bound on one owner's unfinished jobs: generous for a team, a brake on a
/// runaway client.
pub const DEFAULT_MAX_UNFINISHED_PER_OWNER: u64 = 10_000;

/// A limit setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct LimitError {
    name: &'static str,
    value: String,
    reason: &'static str,
}

impl SubmitLimits {
    /// The default limits with `OFFPATH_MAX_UNFINISHED_PER_OWNER` from the environment
    /// (a whole number of jobs, or `none` for no bound).
    pub fn from_env() -> Result<Self, LimitError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, LimitError> {
        const NAME: &str = "OFFPATH_MAX_UNFINISHED_PER_OWNER";
        let bound = match lookup(NAME) {
            None => Some(DEFAULT_MAX_UNFINISHED_PER_OWNER),
            Some(value) if value.trim() == "none" => None,
            Some(value) => Some(value.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or(
                LimitError {
                    name: NAME,
                    value,
                    reason: "expected a whole number of jobs above 0, or none",
                },
            )?),
        };
        Ok(SubmitLimits {
            max_unfinished_per_owner: bound,
            ..SubmitLimits::default()
        })
    }
}

impl Default for SubmitLimits {
    fn default() -> Self {
        SubmitLimits {
            max_body_bytes: 64 * 1024,
            default_ttl: Duration::from_secs(7 * 24 * 3600),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            requeue_after: RETRY_AFTER,
            max_unfinished_per_owner: Some(DEFAULT_MAX_UNFINISHED_PER_OWNER),
        }
    }
}

/// The body of `POST /jobs`, as sent. In the OpenAPI document each task gets a variant
/// of it whose `task` is the task's name and whose `input` is its input schema.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitBody {
    /// The task to run.
    task: String,
    /// The task's input.
    #[schema(value_type = Object)]
    input: JsonText,
    /// How long the job is kept, in seconds.
    #[serde(default)]
    #[schema(value_type = Option<Ttl>, nullable = false)]
    ttl_seconds: Option<u64>,
    /// Where the job's events are POSTed.
    #[serde(default)]
    #[schema(value_type = Option<WebhookUrl>, nullable = false)]
    webhook: Option<String>,
    /// Which events go to the webhook.
    #[serde(default)]
    #[schema(value_type = Option<WebhookEvents>, nullable = false)]
    webhook_events: Option<Vec<EventKind>>,
}

/// Types that only name a schema of the OpenAPI document, which `openapi::document`
/// fills in from the registry and the limits.
macro_rules! named_schemas {
    ($($(#[$doc:meta])* $name:ident = $component:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) enum $name {}

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                Object::new().into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($component)
            }
        }
    )*};
}

named_schemas! {
    /// The `POST /jobs` body: one variant of [`SubmitBody`] per registered task.
    SubmitRequestSchema = "SubmitRequest";
    /// `ttl_seconds`, bounded by the limits.
    Ttl = "Ttl";
    /// `webhook`.
    WebhookUrl = "WebhookUrl";
    /// `webhook_events`.
    WebhookEvents = "WebhookEvents";
}

/// A validated `POST /jobs` body: its input read into the task's type and written
/// back in that type's form, which is what the job stores and the worker runs.
#[derive(Debug)]
pub(crate) struct SubmitRequest {
    task: TaskName,
    /// The upload the input names, if any: it must exist, be the caller's and fit.
    upload: Option<String>,
    input: JsonText,
    ttl_seconds: Option<u64>,
    /// The webhook asked for: its URL (checked against the policy at submit) and events.
    webhook: Option<(String, BTreeSet<EventKind>)>,
}

impl SubmitRequest {
    /// Parses and validates a body against the registered tasks: the one validation a
    /// job's input gets.
    pub(crate) fn parse(
        body: &[u8],
        limits: &SubmitLimits,
        tasks: &Registry,
    ) -> Result<Self, ApiError> {
        strict_json::check(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let body: SubmitBody =
            serde_path_to_error::deserialize(&mut deserializer).map_err(body_error)?;
        let task = tasks
            .get(&body.task)
            .map_err(|e| ApiError::UnknownTask(e.to_string()))?;
        let invalid = |e: InputError| ApiError::InvalidInput(e.to_string());
        let prepared = task.prepare(&body.input).map_err(invalid)?;
        let upload = match task.source(&prepared) {
            Some(Source::Upload(upload)) => Some(upload),
            _ => None,
        };
        if let Some(ttl) = body.ttl_seconds {
            let (min, max) = (limits.min_ttl.as_secs(), limits.max_ttl.as_secs());
            if !(min..=max).contains(&ttl) {
                return Err(ApiError::InvalidRequest(format!(
                    "ttl_seconds: must be a whole number from {min} to {max}"
                )));
            }
        }
        let webhook = match (body.webhook, body.webhook_events) {
            (None, Some(_)) => {
                return Err(ApiError::InvalidRequest(
                    "webhook_events: needs a webhook URL".into(),
                ));
            }
            (Some(_), Some(events)) if events.is_empty() => {
                return Err(ApiError::InvalidRequest(
                    "webhook_events: must be a non-empty array of started, progress and completed"
                        .into(),
                ));
            }
            (url, events) => url.map(|url| {
                let events =
                    events.map_or_else(|| [EventKind::Completed].into(), BTreeSet::from_iter);
                (url, events)
            }),
        };
        Ok(SubmitRequest {
            task: task.name().clone(),
            upload,
            input: task.write(&prepared).map_err(invalid)?,
            ttl_seconds: body.ttl_seconds,
            webhook,
        })
    }
}

/// The error for a body that is not a [`SubmitBody`], naming the field: a missing
/// input is `invalid_input`, the rest of the envelope `invalid_request`, text that is
/// not JSON `malformed_json`.
fn body_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::MalformedJson(inner.to_string());
    }
    let message = error_message(&inner);
    if path != "." {
        return ApiError::InvalidRequest(format!("{path}: {message}"));
    }
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    match missing {
        Some("input") => ApiError::InvalidInput("input: is required".into()),
        Some(field) => ApiError::InvalidRequest(format!("{field}: is required")),
        None if message.starts_with("unknown field") => ApiError::InvalidRequest(message),
        None => {
            ApiError::InvalidRequest("the body must be a JSON object with task and input".into())
        }
    }
}

/// What a submission did.
#[derive(Debug)]
pub(crate) enum Submitted {
    /// A new job.
    Created(Job),
    /// The job an earlier request with the same key and body created.
    Replayed(Job),
}

/// Creates the job (idempotently with a key) and enqueues it.
///
/// If the enqueue fails the caller gets a 503 and nothing is left half-done: a job
/// without a key is deleted again (the client cannot name it to repair it); a job with
/// a key stays queued, and the client's retry with the same key re-sends its message.
pub(crate) async fn submit(
    state: &AppState,
    owner: &str,
    key: Option<&str>,
    request: SubmitRequest,
) -> Result<Submitted, ApiError> {
    if let Some(upload) = &request.upload {
        match state.blobs.size(&upload_key(owner, upload)).await? {
            None => return Err(ApiError::UploadNotFound(upload.clone())),
            Some(bytes) if bytes > MAX_UPLOAD_BYTES => return Err(ApiError::UploadTooLarge),
            Some(_) => {}
        }
    }
    let webhook = match request.webhook {
        Some((url, events)) => {
            let checked = state
                .webhook_policy
                .check(&url)
                .await
                .map_err(|refused| ApiError::InvalidWebhook(refused.to_string()))?;
            Some(Webhook::new(checked.to_string(), events))
        }
        None => None,
    };
    let now = state.clock.now_epoch_ms();
    let ttl = request
        .ttl_seconds
        .unwrap_or(state.limits.default_ttl.as_secs());
    let new = NewJob {
        id: key.map_or_else(JobId::random, |key| job_id_for_key(owner, key)),
        owner: owner.to_owned(),
        request_hash: request_hash(
            request.task.as_str(),
            &request.input,
            request.ttl_seconds,
            webhook.as_ref(),
        ),
        task: request.task,
        input: request.input,
        idempotency_key: key.map(str::to_owned),
        created_at_epoch_ms: now,
        expires_at_epoch_s: now / 1000 + ttl,
        webhook,
    };
    if let Some(bound) = state.limits.max_unfinished_per_owner {
        let unfinished = state
            .store
            .unfinished_estimate(owner, new.id, bound)
            .await?;
        if unfinished >= bound {
            // A replay of a job that exists is still answered; nothing new is made.
            if key.is_some()
                && let Some(existing) = state.store.get(new.id).await?
            {
                return replay(state, &new, existing, now).await;
            }
            tracing::info!(
                owner,
                unfinished,
                bound,
                "submit refused: too many unfinished jobs"
            );
            return Err(ApiError::TooManyJobs(bound));
        }
    }
    match state.store.create(&new).await {
        Ok(job) => {
            let group = message_group(&job.owner);
            if let Err(err) = state.queue.send(&JobMessage::new(job.id), &group).await {
                if key.is_none()
                    && let Err(cleanup) = state.store.apply(job.id, &Transition::Withdraw).await
                {
                    tracing::warn!(job_id = %job.id, error = %cleanup,
                            "enqueue failed and the job could not be removed; the sweep re-enqueues it");
                }
                return Err(err.into());
            }
            tracing::info!(job_id = %job.id, task = %job.task, "job submitted");
            metrics::count(metrics::JOBS_SUBMITTED);
            Ok(Submitted::Created(job))
        }
        Err(StoreError::Conflict(existing)) => replay(state, &new, *existing, now).await,
        Err(err) => Err(err.into()),
    }
}

/// Answers a request whose idempotency key names `existing`: the same job if the body
/// is the same (re-sending its message if it has waited queued a while), else `422`.
async fn replay(
    state: &AppState,
    new: &NewJob,
    existing: Job,
    now: u64,
) -> Result<Submitted, ApiError> {
    if existing.owner != new.owner || existing.request_hash != new.request_hash {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let age_ms = now.saturating_sub(existing.created_at_epoch_ms);
    // Once per message lifetime (the job's own due time says when a re-sent message may
    // be gone): a replay repairs a failed first enqueue, and a client retrying in a
    // loop does not fill the queue with copies.
    if existing.status == JobStatus::Queued
        && existing.attempts == 0
        && existing.queued_due_at() <= now
        && age_ms >= state.limits.requeue_after.as_millis() as u64
    {
        let group = message_group(&existing.owner);
        state
            .queue
            .send(&JobMessage::new(existing.id), &group)
            .await?;
        tracing::info!(job_id = %existing.id, "replay re-enqueued a queued job");
        if let Err(err) = state
            .store
            .apply(existing.id, &Transition::RecordResend { now_epoch_ms: now })
            .await
        {
            tracing::warn!(job_id = %existing.id, error = %err, "could not record the re-send");
        }
    }
    Ok(Submitted::Replayed(existing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<SubmitRequest, ApiError> {
        SubmitRequest::parse(
            body.as_bytes(),
            &SubmitLimits::default(),
            &offpath_tasks::registry(),
        )
    }

    #[test]
    fn the_admission_bound_is_read_from_its_setting() {
        let limits = |value: Option<&str>| {
            SubmitLimits::from_lookup(|_| value.map(str::to_owned))
                .map(|l| l.max_unfinished_per_owner)
        };
        assert_eq!(
            limits(None).unwrap(),
            Some(DEFAULT_MAX_UNFINISHED_PER_OWNER)
        );
        assert_eq!(limits(Some("25")).unwrap(), Some(25));
        assert_eq!(limits(Some("none")).unwrap(), None);
        for bad in ["0", "-1", "lots", ""] {
            let err = limits(Some(bad)).unwrap_err().to_string();
            assert!(
                err.starts_with("OFFPATH_MAX_UNFINISHED_PER_OWNER="),
                "{err}"
            );
        }
    }

    #[test]
    fn bodies_are_validated_with_named_fields() {
        assert!(parse(r#"{"task":"embed","input":{"texts":["hi"]}}"#).is_ok());
        let cases = [
            ("{", "malformed_json"),
            ("[]", "invalid_request"),
            (r#"{"input":{}}"#, "invalid_request"),
            (r#"{"task":7,"input":{}}"#, "invalid_request"),
            (r#"{"task":"dance","input":{}}"#, "unknown_task"),
            (r#"{"task":"embed"}"#, "invalid_input"),
            (
                r#"{"task":"embed","input":{"texts":"hi"}}"#,
                "invalid_input",
            ),
            (
                r#"{"task":"embed","input":{"texts":["a"]},"extra":1}"#,
                "invalid_request",
            ),
            (
                r#"{"task":"embed","input":{"texts":["a"]},"ttl_seconds":5}"#,
                "invalid_request",
            ),
            (
                r#"{"task":"embed","input":{"texts":["a"]},"ttl_seconds":-1}"#,
                "invalid_request",
            ),
            (
                r#"{"task":"embed","input":{"texts":["a"]},"webhook":7}"#,
                "invalid_request",
            ),
            (
                r#"{"task":"embed","input":{"texts":["a"]},"webhook_events":["completed"]}"#,
                "invalid_request",
            ),
            (
                r#"{"task":"embed","input":{"texts":["a"]},"webhook":"https://example.com","webhook_events":[]}"#,
                "invalid_request",
            ),
            (
                r#"{"task":"embed","input":{"texts":["a"]},"webhook":"https://example.com","webhook_events":["finished"]}"#,
                "invalid_request",
            ),
        ];
        for (body, code) in cases {
            let err = parse(body).unwrap_err();
            assert_eq!(err.code(), code, "{body}: {err}");
        }
        let err = parse(r#"{"task":"embed","input":{"texts":[1]}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input.texts[0]: invalid type: integer `1`, expected a string"
        );
    }
}
