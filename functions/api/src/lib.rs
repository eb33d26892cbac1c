//! The offpath HTTP API as an axum [`Router`]: the same router runs under
//! `lambda_http` in AWS (see `main.rs`) and over TCP in `offpath dev`.
//!
//! Routes: `POST /jobs`, `GET /jobs/{id}` (long-poll with `?wait=`), `DELETE /jobs/{id}`,
//! `GET /jobs/{id}/result`, `POST /uploads`, `PUT /uploads/{id}` (local blob storage),
//! `GET /webhooks/secret`, `GET /me`, `GET /health`, `GET /openapi.json`; for operators
//! `GET /admin/queues`, `GET /admin/dead-letters`, `POST /admin/dead-letters/redrive`
//! and `POST /admin/dead-letters/purge`; the console's page and assets under
//! `/console`. Errors are `{"error":{"code","message"}}`.

mod admin;
mod auth;
mod authenticate;
mod console;
mod error;
mod health;
mod jobs;
mod listing;
pub mod openapi;
mod operators;
mod oversized;
mod strict_json;
mod submit;
mod uploads;
mod wait;
mod webhooks;

pub use admin::{DeadLetterList, DeadLetterView, Me, QueueFigures, QueuesView, RedriveResult};
pub use auth::{Auth, Principal};
pub use error::ApiError;
pub use health::{HEALTH_TTL, HealthCheck};
pub use listing::JobList;
pub use operators::{InvalidOperators, Operators};
pub use submit::{DEFAULT_MAX_UNFINISHED_PER_OWNER, LimitError, SubmitLimits};
pub use uploads::UploadSigner;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use offpath_core::blob::MAX_UPLOAD_BYTES;
use offpath_core::{BlobStore, Clock, JobQueue, JobStore, Ports, Registry, SystemClock};
use offpath_webhooks::{UrlPolicy, WebhookKeys};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Job records.
    pub store: Arc<dyn JobStore>,
    /// The jobs queue.
    pub queue: Arc<dyn JobQueue>,
    /// The webhooks queue (events of jobs cancelled here).
    pub webhooks: Arc<dyn JobQueue>,
    /// The jobs queue's dead-letter queue, where known (the admin routes).
    pub dlq: Option<Arc<dyn JobQueue>>,
    /// The webhooks queue's dead-letter queue, where known (its depth).
    pub webhooks_dlq: Option<Arc<dyn JobQueue>>,
    /// Derives each owner's webhook signing secret.
    pub webhook_keys: Arc<WebhookKeys>,
    /// Which webhook URLs are accepted.
    pub webhook_policy: UrlPolicy,
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
    /// Who may use the admin routes.
    pub operators: Arc<Operators>,
    /// Size and TTL limits.
    pub limits: SubmitLimits,
    /// The last check of the backend `GET /health` answers from.
    pub health: Arc<HealthCheck>,
}

impl AppState {
    /// State over the store and queues of `ports`, accepting jobs of `tasks`, with the
    /// system clock, default limits, a random webhook key and the strict URL policy
    /// (see [`Self::with_webhooks`]).
    pub fn new(ports: &Ports, tasks: Arc<Registry>, auth: Auth) -> Self {
        let key = WebhookKeys::generate();
        AppState {
            store: Arc::clone(&ports.store),
            queue: Arc::clone(&ports.queue),
            webhooks: Arc::clone(&ports.webhooks),
            dlq: ports.dlq.clone(),
            webhooks_dlq: ports.webhooks_dlq.clone(),
            webhook_keys: Arc::new(
                WebhookKeys::new(&key, None).expect("a generated key is long enough"),
            ),
            webhook_policy: UrlPolicy::default(),
            blobs: Arc::clone(&ports.blobs),
            uploads: Arc::default(),
            tasks,
            clock: Arc::new(SystemClock),
            auth: Arc::new(auth),
            operators: Arc::default(),
            limits: SubmitLimits::default(),
            health: Arc::default(),
        }
    }

    /// The same state signing webhooks with `keys` (the deliverer's) and accepting the
    /// URLs `policy` accepts.
    pub fn with_webhooks(mut self, keys: WebhookKeys, policy: UrlPolicy) -> Self {
        self.webhook_keys = Arc::new(keys);
        self.webhook_policy = policy;
        self
    }

    /// The same state with `operators` allowed the admin routes.
    pub fn with_operators(mut self, operators: Operators) -> Self {
        self.operators = Arc::new(operators);
        self
    }
}

/// The API router. Its OpenAPI document is generated here, once, from the types and
/// the state's tasks and limits.
pub fn app(state: AppState) -> Router {
    let document = openapi::Served::new(&openapi::document(&state.tasks, &state.limits));
    let jobs = Router::new()
        .route(
            "/jobs",
            axum::routing::post(jobs::submit).get(listing::list),
        )
        .route("/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/jobs/{id}/result", get(uploads::result))
        .route("/uploads", axum::routing::post(uploads::create))
        .route("/webhooks/secret", get(webhooks::secret))
        .route("/me", get(admin::me))
        .route("/admin/queues", get(admin::queues))
        .route("/admin/dead-letters", get(admin::list_letters))
        .route(
            "/admin/dead-letters/redrive",
            axum::routing::post(admin::redrive),
        )
        .route(
            "/admin/dead-letters/purge",
            axum::routing::post(admin::purge),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate::authenticate,
        ))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.limits.max_body_bytes,
            oversized::drain_oversized,
        ));
    // Authorised by the signature in its URL, and the one route that takes documents.
    let upload = Router::new()
        .route("/uploads/{id}", axum::routing::put(uploads::put))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES as usize));
    Router::new()
        .merge(jobs)
        .merge(upload)
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(console::routes())
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::Extension(document))
        .with_state(state)
}
