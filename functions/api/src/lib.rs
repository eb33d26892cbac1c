//! The offpath HTTP API as an axum [`Router`]: the same router runs under
//! `lambda_http` in AWS (see `main.rs`) and over TCP in `offpath dev`.
//!
//! Routes: `POST /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}`, `GET /health`,
//! `GET /openapi.json`. Errors are `{"error":{"code","message"}}`.

mod auth;
mod error;
mod health;
mod jobs;
pub mod openapi;
mod submit;

pub use auth::{Auth, Principal};
pub use error::ApiError;
pub use submit::SubmitLimits;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use offpath_core::{Clock, JobQueue, JobStore, Ports, Registry, SystemClock};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Job records.
    pub store: Arc<dyn JobStore>,
    /// The jobs queue.
    pub queue: Arc<dyn JobQueue>,
    /// The tasks jobs may ask for.
    pub tasks: Arc<Registry>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// How callers are authenticated.
    pub auth: Arc<Auth>,
    /// Size and TTL limits.
    pub limits: SubmitLimits,
}

impl AppState {
    /// State over the store and jobs queue of `ports`, accepting jobs of `tasks`, with
    /// the system clock and default limits.
    pub fn new(ports: &Ports, tasks: Arc<Registry>, auth: Auth) -> Self {
        AppState {
            store: Arc::clone(&ports.store),
            queue: Arc::clone(&ports.queue),
            tasks,
            clock: Arc::new(SystemClock),
            auth: Arc::new(auth),
            limits: SubmitLimits::default(),
        }
    }
}

/// The API router. Its OpenAPI document is generated here, once, from the types and
/// the state's tasks and limits.
pub fn app(state: AppState) -> Router {
    let document = openapi::Served::new(&openapi::document(&state.tasks, &state.limits));
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
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::Extension(document))
        .with_state(state)
}
