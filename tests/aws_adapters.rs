//! The port properties (tests/conformance) against the DynamoDB and SQS adapters on
//! an AWS-protocol endpoint (moto, or LocalStack).

#[macro_use]
mod conformance;
mod support;

use std::sync::Arc;

use offpath_core::{JobQueue, JobStore};
use support::{fast_queue, stack};

async fn store() -> Arc<dyn JobStore> {
    stack(fast_queue()).await.store
}

async fn queues() -> (Arc<dyn JobQueue>, Arc<dyn JobQueue>) {
    let stack = stack(fast_queue()).await;
    (stack.queue, stack.dlq)
}

conformance_suite!(store: store(), queues: queues());
