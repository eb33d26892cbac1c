//! `GET /jobs`: the caller's jobs, newest first, a page at a time. The cursor is the
//! position of the page's last job, signed for the caller with the deployment's key:
//! it cannot be forged or used by another owner (either is a `400`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use offpath_core::{JobStatus, JobView, ListPosition, ListQuery, TaskName};
use offpath_webhooks::WebhookKeys;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// Jobs on a page when the request sets no `limit`.
pub(crate) const DEFAULT_LIMIT: usize = 20;
/// Most jobs on a page.
pub(crate) const MAX_LIMIT: usize = 100;
/// What the cursor's tag is for (keeps it apart from other uses of the key).
const PURPOSE: &str = "list cursor";

/// The query of `GET /jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    status: Option<String>,
    task: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page of the caller's jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The jobs, newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `<position>.<tag>`, both base64url: the position as JSON, the tag over it for the
/// owner.
pub(crate) fn encode_cursor(keys: &WebhookKeys, owner: &str, position: &ListPosition) -> String {
    let data = serde_json::to_vec(position).expect("a position serialises");
    let tag = keys.tag(PURPOSE, owner, &data);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&data),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The position a cursor holds, if it was made for `owner` by this deployment.
pub(crate) fn decode_cursor(
    keys: &WebhookKeys,
    owner: &str,
    cursor: &str,
) -> Result<ListPosition, ApiError> {
    let invalid = || {
        ApiError::InvalidCursor(
            "cursor: not a cursor this API gave you; pass next_cursor from your previous page"
                .into(),
        )
    };
    let (data, tag) = cursor.split_once('.').ok_or_else(invalid)?;
    let data = URL_SAFE_NO_PAD.decode(data).map_err(|_| invalid())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    if !keys.verify_tag(PURPOSE, owner, &data, &tag) {
        return Err(invalid());
    }
    serde_json::from_slice(&data).map_err(|_| invalid())
}

impl ListParams {
    fn status(&self) -> Result<Option<JobStatus>, ApiError> {
        self.status
            .as_deref()
            .map(|s| {
                s.parse().map_err(|_| {
                    ApiError::InvalidRequest(format!(
                        "status: must be one of queued, running, succeeded, failed, cancelled (got {:?})",
                        s.chars().take(32).collect::<String>()
                    ))
                })
            })
            .transpose()
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.as_deref() {
            None => Ok(DEFAULT_LIMIT),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::InvalidRequest(format!(
                        "limit: must be a whole number from 1 to {MAX_LIMIT}"
                    ))
                }),
        }
    }
}

/// `GET /jobs`.
#[utoipa::path(
    get,
    path = "/jobs",
    operation_id = "listJobs",
    summary = "List your jobs",
    description = "The caller's jobs, newest first. A page examines at most 1,000 jobs: with filters it may hold fewer than limit jobs and still have a next_cursor.",
    params(
        ("status" = Option<JobStatus>, Query, nullable = false, description = "Only jobs with this status."),
        ("task" = Option<String>, Query, nullable = false, description = "Only jobs of this task."),
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 100,
         description = "Most jobs on the page (default 20)."),
        ("cursor" = Option<String>, Query, nullable = false,
         description = "next_cursor of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of jobs.", body = JobList),
        (status = 400, description = "A bad filter or limit, an unknown parameter, or a cursor this API did not give the caller.", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 503, description = "Backend unavailable.", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Principal(owner): Principal,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let status = params.status()?;
    let limit = params.limit()?;
    let task: Option<TaskName> = params
        .task
        .as_deref()
        .map(|name| {
            state
                .tasks
                .get(name)
                .map(|task| task.name().clone())
                .map_err(|e| ApiError::UnknownTask(format!("task: {e}")))
        })
        .transpose()?;
    let after = params
        .cursor
        .as_deref()
        .map(|cursor| decode_cursor(&state.webhook_keys, &owner, cursor))
        .transpose()?;
    let query = ListQuery {
        owner: &owner,
        status,
        task: task.as_ref(),
        limit,
        after,
    };
    let page = state.store.list(&query).await?;
    Ok(Json(JobList {
        jobs: page.jobs.iter().map(|job| job.view()).collect(),
        next_cursor: page
            .next
            .map(|position| encode_cursor(&state.webhook_keys, &owner, &position)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_hold_only_for_their_owner_and_key() {
        let keys = WebhookKeys::new(&"k".repeat(32), None).unwrap();
        let position = ListPosition {
            created_at_epoch_ms: 7,
            id: offpath_core::JobId::random(),
        };
        let cursor = encode_cursor(&keys, "alice", &position);
        assert_eq!(decode_cursor(&keys, "alice", &cursor).unwrap(), position);
        assert!(decode_cursor(&keys, "bob", &cursor).is_err());
        let other = WebhookKeys::new(&"o".repeat(32), None).unwrap();
        assert!(decode_cursor(&other, "alice", &cursor).is_err());
        let (data, tag) = cursor.split_once('.').unwrap();
        let mut forged: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(data).unwrap()).unwrap();
        forged["created_at_epoch_ms"] = 8.into();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap())
        );
        assert!(decode_cursor(&keys, "alice", &forged).is_err());
        for junk in ["", ".", "abc", "a.b", &format!("{data}.")] {
            assert!(decode_cursor(&keys, "alice", junk).is_err(), "{junk:?}");
        }
        // Through a key rotation, cursors made under the old key still hold.
        let rotated = WebhookKeys::new(&"n".repeat(32), Some(&"k".repeat(32))).unwrap();
        assert_eq!(decode_cursor(&rotated, "alice", &cursor).unwrap(), position);
    }
}
