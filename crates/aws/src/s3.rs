//! `BlobStore` on S3: presigned PUT and GET URLs for clients, ranged reads, and a
//! multipart upload that concatenates parts in bounded memory.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use offpath_core::{BlobError, BlobStore, SignedUrl};

/// The smallest part S3 takes in a multipart upload (all but the last).
const MULTIPART_BYTES: usize = 8 * 1024 * 1024;

/// S3-backed [`BlobStore`] on one bucket.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
}

impl S3Blobs {
    /// Blobs in `bucket`.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3Blobs {
            client,
            bucket: bucket.into(),
        }
    }

    /// Blobs in `bucket` with a client from the shared AWS configuration. A custom
    /// endpoint (`AWS_ENDPOINT_URL`: moto, LocalStack) is addressed path-style, so
    /// bucket names need no DNS.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        Self::new(client(sdk), bucket)
    }

    /// The object's body from `key`, `range` bytes of it if given.
    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<Vec<u8>, BlobError> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(range) = range {
            if range.end <= range.start {
                return Ok(Vec::new());
            }
            request = request.range(format!("bytes={}-{}", range.start, range.end - 1));
        }
        let output = match request.send().await {
            Ok(output) => output,
            // A range that starts at or past the end reads nothing.
            Err(err) if err.code() == Some("InvalidRange") => return Ok(Vec::new()),
            Err(err) => return Err(s3_error(key, err)),
        };
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| BlobError::Unavailable(format!("reading {key}: {e}")))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn presign(
        &self,
        key: &str,
        valid: Duration,
        put: bool,
    ) -> Result<Option<SignedUrl>, BlobError> {
        let config = PresigningConfig::expires_in(valid)
            .map_err(|e| BlobError::Other(format!("cannot presign for {valid:?}: {e}")))?;
        let presign_error =
            |e: &dyn std::fmt::Display| BlobError::Other(format!("cannot presign {key}: {e}"));
        let request = if put {
            let put = self.client.put_object().bucket(&self.bucket).key(key);
            put.presigned(config).await.map_err(|e| presign_error(&e))?
        } else {
            let get = self.client.get_object().bucket(&self.bucket).key(key);
            get.presigned(config).await.map_err(|e| presign_error(&e))?
        };
        let expires = SystemTime::now() + valid;
        Ok(Some(SignedUrl {
            url: request.uri().to_owned(),
            expires_at_epoch_s: expires
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }))
    }

    /// Uploads `chunk` as part `number` of the multipart upload `upload`.
    async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: i32,
        chunk: Vec<u8>,
    ) -> Result<CompletedPart, BlobError> {
        let output = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .part_number(number)
            .body(ByteStream::from(chunk))
            .send()
            .await
            .map_err(|e| s3_error(key, e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(output.e_tag().map(str::to_owned))
            .build())
    }

    /// Writes `parts` to `key` through the multipart upload `upload`.
    async fn concat_into(
        &self,
        key: &str,
        upload: &str,
        parts: &[String],
    ) -> Result<u64, BlobError> {
        let mut completed = Vec::new();
        let mut buffer = Vec::with_capacity(MULTIPART_BYTES);
        let mut written = 0u64;
        for part in parts {
            let bytes = self.read(part, None).await?;
            written += bytes.len() as u64;
            buffer.extend_from_slice(&bytes);
            if buffer.len() >= MULTIPART_BYTES {
                let number = completed.len() as i32 + 1;
                let chunk = std::mem::replace(&mut buffer, Vec::with_capacity(MULTIPART_BYTES));
                completed.push(self.upload_part(key, upload, number, chunk).await?);
            }
        }
        if !buffer.is_empty() || completed.is_empty() {
            let number = completed.len() as i32 + 1;
            completed.push(self.upload_part(key, upload, number, buffer).await?);
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error(key, e))?;
        Ok(written)
    }
}

/// An S3 client for the shared configuration: path-style addressing on a custom
/// endpoint.
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    let custom_endpoint = sdk.endpoint_url().is_some();
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(custom_endpoint)
        .build();
    Client::from_conf(config)
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| s3_error(key, e))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        self.read(key, None).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BlobError> {
        self.read(key, Some(range)).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(output.content_length().unwrap_or(0).max(0) as u64)),
            Err(err) => match s3_error(key, err) {
                BlobError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn concat(&self, key: &str, parts: &[String]) -> Result<u64, BlobError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(key, e))?;
        let upload = created
            .upload_id()
            .ok_or_else(|| BlobError::Other(format!("no upload id for {key}")))?
            .to_owned();
        let written = self.concat_into(key, &upload, parts).await;
        if written.is_err() {
            // Best effort: the bucket's lifecycle rule aborts what this leaves too.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload)
                .send()
                .await;
        }
        written
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let mut deleted = 0;
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| s3_error(prefix, e))?;
            let keys: Vec<ObjectIdentifier> = page
                .contents()
                .iter()
                .filter_map(|object| object.key())
                .filter_map(|key| ObjectIdentifier::builder().key(key).build().ok())
                .collect();
            if !keys.is_empty() {
                deleted += keys.len();
                let delete = Delete::builder()
                    .set_objects(Some(keys))
                    .quiet(true)
                    .build()
                    .map_err(|e| BlobError::Other(e.to_string()))?;
                self.client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| s3_error(prefix, e))?;
            }
            match page.next_continuation_token() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(deleted),
            }
        }
    }

    async fn upload_url(&self, key: &str, valid: Duration) -> Result<Option<SignedUrl>, BlobError> {
        self.presign(key, valid, true).await
    }

    async fn download_url(
        &self,
        key: &str,
        valid: Duration,
    ) -> Result<Option<SignedUrl>, BlobError> {
        self.presign(key, valid, false).await
    }
}

/// Maps an SDK error: a missing object or bucket is its own kind; connection
/// failures, timeouts, throttling and 5xx are transient; the rest is permanent.
fn s3_error<E>(key: &str, err: SdkError<E, HttpResponse>) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = crate::sdk::describe(&err);
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            BlobError::Unavailable(text)
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let status = service.raw().status();
            match code {
                "NoSuchKey" | "NotFound" => BlobError::NotFound(key.to_owned()),
                _ if status.as_u16() == 404 && code != "NoSuchBucket" => {
                    BlobError::NotFound(key.to_owned())
                }
                "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" => {
                    BlobError::Unavailable(text)
                }
                _ if status.is_server_error() => BlobError::Unavailable(text),
                _ => BlobError::Other(text),
            }
        }
        _ => BlobError::Other(text),
    }
}
