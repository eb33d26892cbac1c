//! Uploads: `POST /uploads` hands the caller a URL to PUT a document to (a presigned
//! S3 URL in AWS; locally this API's own `PUT /uploads/{id}`, authorised by a
//! signature in the URL), and `GET /jobs/{id}/result` hands a document job's result
//! back (a redirect to a presigned S3 URL in AWS; locally the file itself).

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use http::request::Parts;
use http::{StatusCode, header};
use offpath_core::blob::{MAX_UPLOAD_BYTES, owner_digest, result_key, upload_key, uploaded_key};
use offpath_core::{BlobError, JobStatus};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::ErrorBody;
use crate::jobs::{JobIdParam, owned_job};
use crate::{ApiError, AppState};

/// How long an upload URL works.
const UPLOAD_URL_VALID: Duration = Duration::from_secs(15 * 60);
/// How long a result URL works.
const RESULT_URL_VALID: Duration = Duration::from_secs(3600);
/// Bytes of a local result streamed at a time.
const RESULT_SLICE: u64 = 1024 * 1024;

/// Where to PUT a document.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Upload {
    /// The upload's id: name it in a job's input (`{"upload": id}`).
    #[schema(format = Uuid)]
    id: String,
    /// Where to PUT the document (UTF-8 text) with no other credentials.
    url: String,
    /// Always `PUT`.
    method: &'static str,
    /// When the URL stops working (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: String,
    /// Most bytes the document may have.
    max_bytes: u64,
}

/// A local upload's receipt.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Uploaded {
    /// The upload's id.
    #[schema(format = Uuid)]
    id: String,
    /// Bytes stored.
    bytes: u64,
}

/// Signs local upload URLs with a key of this process, so a URL works only against
/// the process that gave it, and only until it expires.
#[derive(Clone)]
pub struct UploadSigner {
    key: [u8; 32],
}

impl Default for UploadSigner {
    fn default() -> Self {
        UploadSigner {
            key: rand::random(),
        }
    }
}

impl std::fmt::Debug for UploadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadSigner(..)")
    }
}

impl UploadSigner {
    /// The MAC of an upload URL's owner digest, upload id and expiry.
    fn mac(&self, owner: &str, id: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("{owner}\n{id}\n{expires}").as_bytes());
        mac
    }

    fn signature(&self, owner: &str, id: &str, expires: u64) -> String {
        hex::encode(self.mac(owner, id, expires).finalize().into_bytes())
    }

    /// Checks a signature in constant time.
    fn verify(&self, owner: &str, id: &str, expires: u64, signature: &str) -> bool {
        hex::decode(signature)
            .is_ok_and(|given| self.mac(owner, id, expires).verify_slice(&given).is_ok())
    }
}

/// The `Host` a request came to, for URLs back to this API.
pub(crate) struct Host(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Host {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Host(
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// `POST /uploads`.
#[utoipa::path(
    post,
    path = "/uploads",
    operation_id = "createUpload",
    summary = "Get a URL to upload a document to",
    description = "PUT the document (UTF-8 text, at most 10 MiB) to `url` within 15 minutes, then submit an `embed_document` job with `{\"upload\": id}`. Uploads are the caller's own and are kept a day.",
    responses(
        (status = 201, description = "Where to PUT the document.", body = Upload),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 503, description = "Backend unavailable.", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Principal(owner): Principal,
    Host(host): Host,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let key = upload_key(&owner, &id);
    let signed = state.blobs.upload_url(&key, UPLOAD_URL_VALID).await?;
    let (url, expires_at) = match signed {
        Some(signed) => (signed.url, signed.expires_at_epoch_s),
        None => {
            let expires = state.clock.now_epoch_ms() / 1000 + UPLOAD_URL_VALID.as_secs();
            let digest = owner_digest(&owner);
            let signature = state.uploads.signature(&digest, &id, expires);
            let base = host.map(|h| format!("http://{h}")).unwrap_or_default();
            let url = format!(
                "{base}/uploads/{id}?owner={digest}&expires={expires}&signature={signature}"
            );
            (url, expires)
        }
    };
    let upload = Upload {
        id,
        url,
        method: "PUT",
        expires_at: offpath_core::job::rfc3339(expires_at * 1000),
        max_bytes: MAX_UPLOAD_BYTES,
    };
    Ok((StatusCode::CREATED, Json(upload)).into_response())
}

/// The signature of a local upload URL.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Signed {
    /// The uploader's digest.
    owner: String,
    /// Epoch seconds the URL works until.
    expires: u64,
    /// HMAC-SHA256 of the three, hex.
    signature: String,
}

/// `PUT /uploads/{id}`: the local backend's upload URL.
#[utoipa::path(
    put,
    path = "/uploads/{id}",
    operation_id = "putUpload",
    summary = "Upload a document (local backend)",
    description = "The URL `POST /uploads` gives when the backend is local (in AWS it is a presigned S3 URL instead). The body is the document, at most 10 MiB.",
    params(("id" = String, Path, description = "The upload id."), Signed),
    request_body(content = String, content_type = "text/plain"),
    responses(
        (status = 200, description = "Stored.", body = Uploaded),
        (status = 403, description = "The URL's signature is wrong or expired.", body = ErrorBody),
        (status = 413, description = "The document is larger than 10 MiB.", body = ErrorBody),
        (status = 503, description = "Backend unavailable.", body = ErrorBody),
    )
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<Signed>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(signed)) = query else {
        return Err(ApiError::Forbidden("the upload URL is not signed"));
    };
    let now = state.clock.now_epoch_ms() / 1000;
    if !state
        .uploads
        .verify(&signed.owner, &id, signed.expires, &signed.signature)
    {
        return Err(ApiError::Forbidden("the upload URL's signature is wrong"));
    }
    if signed.expires < now {
        return Err(ApiError::Forbidden(
            "the upload URL has expired; ask POST /uploads for another",
        ));
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::UploadTooLarge,
        _ => ApiError::InvalidRequest(rejection.body_text()),
    })?;
    let bytes = body.len() as u64;
    let key = uploaded_key(&signed.owner, &id);
    state.blobs.put(&key, body.to_vec()).await?;
    Ok(Json(Uploaded { id, bytes }).into_response())
}

/// `GET /jobs/{id}/result`.
#[utoipa::path(
    get,
    path = "/jobs/{id}/result",
    operation_id = "getJobResult",
    summary = "A document job's result",
    description = "JSON Lines, one `{index, start, end, embedding}` per chunk. In AWS the answer redirects (307) to a presigned S3 URL.",
    params(("id" = String, Path, description = "Job id (UUID).")),
    responses(
        (status = 200, description = "The result.", content_type = "application/jsonl", body = String),
        (status = 307, description = "Where the result is (a presigned URL, valid an hour)."),
        (status = 401, description = "Missing or invalid credentials.", body = ErrorBody),
        (status = 404, description = "No such job for this caller, or the job has no result.", body = ErrorBody),
        (status = 409, description = "The job has not succeeded (yet).", body = ErrorBody),
        (status = 503, description = "Backend unavailable.", body = ErrorBody),
    )
)]
pub(crate) async fn result(
    State(state): State<AppState>,
    Principal(owner): Principal,
    JobIdParam(id): JobIdParam,
) -> Result<Response, ApiError> {
    let job = owned_job(&state, &owner, id).await?;
    let in_parts = state
        .tasks
        .get(job.task.as_str())
        .is_ok_and(|task| task.runs_in_parts());
    if !in_parts {
        return Err(ApiError::NoResult);
    }
    if job.status != JobStatus::Succeeded {
        return Err(ApiError::ResultNotReady(job.status));
    }
    let key = result_key(id);
    if let Some(signed) = state.blobs.download_url(&key, RESULT_URL_VALID).await? {
        return Ok(Redirect::temporary(&signed.url).into_response());
    }
    let size = state.blobs.size(&key).await?.ok_or(ApiError::NoResult)?;
    let blobs = state.blobs.clone();
    let slices =
        futures::stream::iter((0..size).step_by(RESULT_SLICE as usize)).then(move |start| {
            let (blobs, key) = (blobs.clone(), key.clone());
            async move {
                blobs
                    .get_range(&key, start..(start + RESULT_SLICE).min(size))
                    .await
                    .map(Bytes::from)
                    .map_err(std::io::Error::other)
            }
        });
    Ok((
        [
            (header::CONTENT_TYPE, "application/jsonl".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(slices),
    )
        .into_response())
}

impl From<BlobError> for ApiError {
    fn from(err: BlobError) -> Self {
        match err {
            BlobError::Unavailable(detail) => ApiError::Unavailable(detail),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
