//! Bodies declared larger than a route accepts are refused (`413`), but read first, up
//! to [`DRAIN_LIMIT`]: a server that answers and closes while the client is still
//! sending makes the client's next write fail (a reset), and the client never sees
//! the `413`. API Gateway buffers bodies itself; this is for `offpath dev`.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_LENGTH;

use crate::ApiError;

/// Most bytes of an oversized body read before it is refused; beyond this the
/// connection is closed at once.
pub(crate) const DRAIN_LIMIT: usize = 1024 * 1024;

/// Middleware for routes that accept `limit` bytes: a body whose `Content-Length` is
/// over it is read (and dropped), then refused with `413 payload_too_large`.
pub(crate) async fn drain_oversized(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let oversized = declared.is_some_and(|n| n > limit && n <= DRAIN_LIMIT);
    if !oversized {
        return next.run(request).await;
    }
    let _ = axum::body::to_bytes(request.into_body(), DRAIN_LIMIT).await;
    ApiError::PayloadTooLarge(limit).into_response()
}
