//! `GET /health`: the backend answers, and how deep the queue is.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// The answer of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`: an unhealthy backend answers 503.
    status: Status,
    /// The jobs queue's approximate depth.
    queue: QueueView,
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
    summary = "Backend reachability and queue depth",
    responses(
        (status = 200, description = "Healthy.", body = Health),
        (status = 503, description = "Backend unavailable.", body = ErrorBody),
    )
)]
pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.store.ping().await?;
    let depth = state.queue.depth().await?;
    Ok(Json(Health {
        status: Status::Ok,
        queue: QueueView {
            visible: depth.visible,
            in_flight: depth.in_flight,
        },
    }))
}
