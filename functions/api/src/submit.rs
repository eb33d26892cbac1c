//! Accepting a job: validation, the idempotent create, the enqueue and its repair.

use std::collections::BTreeSet;
use std::time::Duration;

use offpath_core::blob::{MAX_UPLOAD_BYTES, upload_key};
use offpath_core::idempotency::{job_id_for_key, request_hash};
use offpath_core::queue::message_group;
use offpath_core::{
    EventKind, Job, JobId, JobMessage, JobStatus, NewJob, Registry, Source, StoreError, TaskName,
    Webhook, metrics,
};
use serde_json::Value;

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

/// A validated `POST /jobs` body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SubmitRequest {
    task: TaskName,
    /// The upload the input names, if any: it must exist, be the caller's and fit.
    upload: Option<String>,
    input: Value,
    ttl_seconds: Option<u64>,
    /// The webhook asked for: its URL (checked against the policy at submit) and events.
    webhook: Option<(String, BTreeSet<EventKind>)>,
}

const FIELDS: [&str; 5] = ["task", "input", "ttl_seconds", "webhook", "webhook_events"];

impl SubmitRequest {
    /// Parses and validates a body against the registered tasks.
    pub(crate) fn parse(
        body: &[u8],
        limits: &SubmitLimits,
        tasks: &Registry,
    ) -> Result<Self, ApiError> {
        let value: Value =
            strict_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(ApiError::InvalidRequest(
                "the body must be a JSON object with task and input".into(),
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            let unknown: String = unknown.chars().take(64).collect();
            return Err(ApiError::InvalidRequest(format!(
                "{unknown}: unknown field; expected task, input and optionally ttl_seconds, webhook and webhook_events"
            )));
        }
        let task = match fields.get("task") {
            None | Some(Value::Null) => {
                return Err(ApiError::InvalidRequest("task: is required".into()));
            }
            Some(Value::String(name)) => tasks
                .get(name)
                .map_err(|e| ApiError::UnknownTask(e.to_string()))?,
            Some(_) => return Err(ApiError::InvalidRequest("task: must be a string".into())),
        };
        let input = fields.get("input").cloned().unwrap_or(Value::Null);
        if input.is_null() {
            return Err(ApiError::InvalidInput("input: is required".into()));
        }
        let prepared = task
            .prepare(&input)
            .map_err(|e| ApiError::InvalidInput(e.to_string()))?;
        let upload = match task.source(&prepared) {
            Some(Source::Upload(upload)) => Some(upload),
            _ => None,
        };
        let task = task.name().clone();
        let ttl_seconds = match fields.get("ttl_seconds") {
            None | Some(Value::Null) => None,
            Some(ttl) => {
                let (min, max) = (limits.min_ttl.as_secs(), limits.max_ttl.as_secs());
                let seconds = ttl.as_u64().filter(|s| (min..=max).contains(s));
                Some(seconds.ok_or_else(|| {
                    ApiError::InvalidRequest(format!(
                        "ttl_seconds: must be a whole number from {min} to {max}"
                    ))
                })?)
            }
        };
        Ok(SubmitRequest {
            task,
            upload,
            input,
            ttl_seconds,
            webhook: parse_webhook(&fields)?,
        })
    }
}

/// The `webhook` and `webhook_events` fields: a URL and a non-empty subset of
/// started, progress and completed (default completed).
fn parse_webhook(
    fields: &serde_json::Map<String, Value>,
) -> Result<Option<(String, BTreeSet<EventKind>)>, ApiError> {
    let url = match fields.get("webhook") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => Some(url.clone()),
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "webhook: must be a URL string".into(),
            ));
        }
    };
    let events = match fields.get("webhook_events") {
        None | Some(Value::Null) => None,
        Some(Value::Array(names)) if !names.is_empty() => Some(
            names
                .iter()
                .map(|name| {
                    name.as_str()
                        .ok_or_else(|| "an event name must be a string".to_owned())
                        .and_then(|n| n.parse::<EventKind>().map_err(|e| e.to_string()))
                })
                .collect::<Result<BTreeSet<_>, _>>()
                .map_err(|e| ApiError::InvalidRequest(format!("webhook_events: {e}")))?,
        ),
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "webhook_events: must be a non-empty array of started, progress and completed"
                    .into(),
            ));
        }
    };
    match (url, events) {
        (None, Some(_)) => Err(ApiError::InvalidRequest(
            "webhook_events: needs a webhook URL".into(),
        )),
        (None, None) => Ok(None),
        (Some(url), events) => Ok(Some((
            url,
            events.unwrap_or_else(|| [EventKind::Completed].into()),
        ))),
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
                    && let Err(cleanup) = state.store.delete_unstarted(job.id).await
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
        if let Err(err) = state.store.record_resend(existing.id, now).await {
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
