//! The offpath HTTP API as an axum [`Router`]: the same router runs under
//! `lambda_http` in AWS (see `main.rs`) and over TCP in `offpath dev`.
//!
//! Routes: `POST /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}`, `GET /health`,
//! `GET /openapi.json`. Errors are `{"error":{"code","message"}}`.

mod auth;
mod error;
mod health;
mod jobs;
mod submit;

pub use auth::{Auth, Principal};
pub use error::ApiError;
pub use submit::SubmitLimits;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use offpath_core::{Clock, JobQueue, JobStore, SystemClock};

/// The OpenAPI 3 document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Job records.
    pub store: Arc<dyn JobStore>,
    /// The jobs queue.
    pub queue: Arc<dyn JobQueue>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// How callers are authenticated.
    pub auth: Arc<Auth>,
    /// Size and TTL limits.
    pub limits: SubmitLimits,
}

impl AppState {
    /// State over the given ports with the system clock and default limits.
    pub fn new(store: Arc<dyn JobStore>, queue: Arc<dyn JobQueue>, auth: Auth) -> Self {
        AppState {
            store,
            queue,
            clock: Arc::new(SystemClock),
            auth: Arc::new(auth),
            limits: SubmitLimits::default(),
        }
    }
}

/// The API router.
pub fn app(state: AppState) -> Router {
    let jobs = Router::new()
        .route("/jobs", axum::routing::post(jobs::submit))
        .route("/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes));
    Router::new()
        .merge(jobs)
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

async fn openapi() -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}
