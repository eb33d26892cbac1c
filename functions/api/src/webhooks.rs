//! `GET /webhooks/secret`: the caller's webhook signing secret.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ErrorBody;

/// The caller's webhook secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookSecret {
    /// `whsec_` + base64: verify deliveries with it (Standard Webhooks). Derived from
    /// the deployment's key and the caller; it changes when the key is rotated.
    secret: String,
}

/// `GET /webhooks/secret`.
#[utoipa::path(
    get,
    path = "/webhooks/secret",
    operation_id = "getWebhookSecret",
    summary = "Read the caller's webhook signing secret",
    description = "Deliveries to the caller's webhooks carry webhook-id, webhook-timestamp and webhook-signature (v1, HMAC-SHA256 of id.timestamp.body under this secret), as the Standard Webhooks libraries verify. While the deployment's key is rotated, a second signature under the previous secret is included.",
    responses(
        (status = 200, description = "The secret.", body = WebhookSecret),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
    )
)]
pub(crate) async fn secret(State(state): State<AppState>, Principal(owner): Principal) -> Response {
    let body = WebhookSecret {
        secret: state.webhook_keys.secret(&owner),
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
