//! `GET /health`: the backend answers, and how deep the queue is.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    let depth = state.queue.depth().await?;
    Ok(Json(json!({
        "status": "ok",
        "queue": { "visible": depth.visible, "in_flight": depth.in_flight },
    })))
}
