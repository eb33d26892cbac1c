//! The offpath HTTP API as an axum [`Router`]: the same router runs under
//! `lambda_http` in AWS (see `main.rs`) and over TCP in `offpath dev`.
//!
//! Routes: `POST /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}`,
//! `GET /jobs/{id}/result`, `POST /uploads`, `PUT /uploads/{id}` (local blob storage),
//! `GET /health`, `GET /openapi.json`. Errors are `{"error":{"code","message"}}`.

mod auth;
mod error;
mod health;
mod jobs;
pub mod openapi;
mod submit;
mod uploads;

pub use auth::{Auth, Principal};
pub use error::ApiError;
pub use submit::SubmitLimits;
pub use uploads::UploadSigner;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use offpath_core::blob::MAX_UPLOAD_BYTES;
use offpath_core::{BlobStore, Clock, JobQueue, JobStore, Ports, Registry, SystemClock};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Job records.
    pub store: Arc<dyn JobStore>,
    /// The jobs queue.
    pub queue: Arc<dyn JobQueue>,
    /// Uploads and results.
    pub blobs: Arc<dyn BlobStore>,
    /// Signs the upload URLs this API serves itself (local blob storage).
    pub uploads: Arc<UploadSigner>,
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
            blobs: Arc::clone(&ports.blobs),
            uploads: Arc::default(),
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
        .route("/jobs/{id}/result", get(uploads::result))
        .route("/uploads", axum::routing::post(uploads::create))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes));
    // Authorised by the signature in its URL, and the one route that takes documents.
    let upload = Router::new()
        .route("/uploads/{id}", axum::routing::put(uploads::put))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES as usize));
    Router::new()
        .merge(jobs)
        .merge(upload)
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::Extension(document))
        .with_state(state)
}
