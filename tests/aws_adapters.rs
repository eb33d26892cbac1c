//! The port properties (the test kit's conformance suite) against the DynamoDB and
//! SQS adapters on an AWS-protocol endpoint (moto, or LocalStack).

use std::sync::Arc;

use offpath_core::{BlobStore, JobQueue, JobStore};
use offpath_testkit::{Backend, Stack, fast_queue};

async fn store() -> Arc<dyn JobStore> {
    Stack::moto(fast_queue()).await.ports.store
}

async fn queues() -> (Arc<dyn JobQueue>, Arc<dyn JobQueue>) {
    let stack = Stack::moto(fast_queue()).await;
    (stack.ports.queue.clone(), stack.dlq().clone())
}

async fn blobs() -> Arc<dyn BlobStore> {
    Stack::moto(fast_queue()).await.ports.blobs
}

offpath_testkit::conformance_suite!(store: store(), queues: queues(), blobs: blobs());

/// Random sequences of transitions agree with the specification at every step (the
/// named properties above are examples of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_agree_with_the_specification() {
    let stack = Stack::new(Backend::Moto, fast_queue()).await;
    offpath_testkit::property::transitions_agree_with_the_specification(stack).await;
}

/// Presigned URLs work with a plain HTTP client: bytes PUT to the upload URL are the
/// blob's bytes, and the download URL serves them back unchanged.
#[tokio::test]
async fn presigned_urls_round_trip_bytes() {
    let blobs = blobs().await;
    let key = format!("uploads/presigned/{}", uuid::Uuid::new_v4());
    let bytes: Vec<u8> = "naïve café 🚀\n".repeat(5_000).into_bytes();
    let valid = std::time::Duration::from_secs(300);
    let http = reqwest::Client::new();

    let upload = blobs
        .upload_url(&key, valid)
        .await
        .unwrap()
        .expect("S3 presigns");
    let put = http
        .put(&upload.url)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "PUT: {}", put.status());
    assert_eq!(blobs.get(&key).await.unwrap(), bytes);

    let download = blobs
        .download_url(&key, valid)
        .await
        .unwrap()
        .expect("S3 presigns");
    let got = http.get(&download.url).send().await.unwrap();
    assert!(got.status().is_success(), "GET: {}", got.status());
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for url in [upload, download] {
        assert!((now + 280..=now + 300).contains(&url.expires_at_epoch_s));
    }
}
