//! The authentication layer: who calls (a [`Principal`](crate::Principal), from
//! [`crate::Auth`]) and whether they operate (an [`Operator`], from
//! [`crate::Operators`]), stored in the request for the handlers' extractors.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::operators::Operator;
use crate::{ApiError, AppState};

/// Middleware: authenticates the caller and stores the [`Principal`](crate::Principal)
/// in the request.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let principal = state.auth.principal(&parts)?;
    if state.operators.includes(&state.auth, &principal, &parts) {
        parts.extensions.insert(Operator);
    }
    parts.extensions.insert(principal);
    Ok(next.run(Request::from_parts(parts, body)).await)
}
