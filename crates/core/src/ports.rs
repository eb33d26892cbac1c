//! The ports of one deployment, bundled: what `offpath dev`, the Lambda functions,
//! the benchmarks and the tests hand to the API and the worker.

use std::sync::Arc;

use crate::blob::BlobStore;
use crate::queue::JobQueue;
use crate::store::JobStore;

/// A job store, the jobs queue, the webhooks queue, blob storage and, where the caller
/// manages them, the queues' dead-letter queues.
#[derive(Clone)]
pub struct Ports {
    /// Job records.
    pub store: Arc<dyn JobStore>,
    /// The jobs queue.
    pub queue: Arc<dyn JobQueue>,
    /// Uploads, document parts and results.
    pub blobs: Arc<dyn BlobStore>,
    /// The jobs queue's dead-letter queue, where known.
    pub dlq: Option<Arc<dyn JobQueue>>,
    /// The webhooks queue: one message per webhook event to deliver.
    pub webhooks: Arc<dyn JobQueue>,
    /// The webhooks queue's dead-letter queue, where known.
    pub webhooks_dlq: Option<Arc<dyn JobQueue>>,
}

impl Ports {
    /// The same ports with the store replaced (e.g. wrapped in a layer).
    pub fn with_store(&self, store: Arc<dyn JobStore>) -> Self {
        Ports {
            store,
            ..self.clone()
        }
    }

    /// The same ports with the jobs queue replaced (e.g. wrapped in a layer).
    pub fn with_queue(&self, queue: Arc<dyn JobQueue>) -> Self {
        Ports {
            queue,
            ..self.clone()
        }
    }
}
