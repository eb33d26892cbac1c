//! `GET /health`: whether the backend answers, checked at most once per
//! [`HEALTH_TTL`] however many callers ask (a flood of health checks costs the store
//! and queue one call each per interval), and the queue's depth for authenticated
//! callers only.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use http::request::Parts;
use offpath_core::QueueDepth;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// How long one check of the store and queue answers `GET /health`.
pub const HEALTH_TTL: Duration = Duration::from_secs(5);

/// The last check of the backend, shared by every request: the lock makes concurrent
/// callers wait for one check instead of each making their own.
#[derive(Debug, Default)]
pub struct HealthCheck(Mutex<Option<(Instant, Result<QueueDepth, String>)>>);

impl HealthCheck {
    /// The backend's state as last checked, checking again once [`HEALTH_TTL`] passed.
    async fn current(&self, state: &AppState) -> Result<QueueDepth, ApiError> {
        let mut last = self.0.lock().await;
        let fresh = last
            .as_ref()
            .filter(|(at, _)| at.elapsed() < HEALTH_TTL)
            .map(|(_, checked)| checked.clone());
        let checked = match fresh {
            Some(checked) => checked,
            None => {
                let checked = check(state).await;
                *last = Some((Instant::now(), checked.clone()));
                checked
            }
        };
        checked.map_err(ApiError::Unavailable)
    }
}

/// One check: the store answers, and the queue's depth.
async fn check(state: &AppState) -> Result<QueueDepth, String> {
    state.store.ping().await.map_err(|e| e.to_string())?;
    state.queue.depth().await.map_err(|e| e.to_string())
}

/// The answer of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`: an unhealthy backend answers 503.
    status: Status,
    /// The jobs queue's approximate depth; only for authenticated callers.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<QueueView>,
}

/// A healthy backend's status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// The store and the queue answer.
    Ok,
}

/// Messages waiting and in flight.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueueView {
    /// Visible messages (approximate).
    visible: u64,
    /// Received and not yet deleted (approximate).
    in_flight: u64,
}

/// `GET /health`.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    summary = "Backend reachability (and queue depth for authenticated callers)",
    description = "Checked at most once every 5 s. Callers that authenticate (as for /jobs) also get the jobs queue's depth.",
    responses(
        (status = 200, description = "Healthy.", body = Health),
        (status = 503, description = "Backend unavailable.", body = ErrorBody),
    )
)]
pub(crate) async fn health(
    State(state): State<AppState>,
    parts: Parts,
) -> Result<Json<Health>, ApiError> {
    let depth = state.health.current(&state).await?;
    let authenticated = state.auth.principal(&parts).is_ok();
    Ok(Json(Health {
        status: Status::Ok,
        queue: authenticated.then_some(QueueView {
            visible: depth.visible,
            in_flight: depth.in_flight,
        }),
    }))
}
