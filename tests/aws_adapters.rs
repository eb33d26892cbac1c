//! The port properties (the test kit's conformance suite) against the DynamoDB and
//! SQS adapters on an AWS-protocol endpoint (moto, or LocalStack).

use std::sync::Arc;

use offpath_core::{JobQueue, JobStore};
use offpath_testkit::{Stack, fast_queue};

async fn store() -> Arc<dyn JobStore> {
    Stack::moto(fast_queue()).await.ports.store
}

async fn queues() -> (Arc<dyn JobQueue>, Arc<dyn JobQueue>) {
    let stack = Stack::moto(fast_queue()).await;
    (stack.ports.queue.clone(), stack.dlq().clone())
}

offpath_testkit::conformance_suite!(store: store(), queues: queues());
