//! In-process adapters for a local run with no AWS, no Docker and no emulator:
//! [`MemoryStore`] behaves like the DynamoDB `JobStore` (every condition fails exactly
//! when DynamoDB's would) and [`MemoryQueue`] like SQS (visibility timeout, receive
//! counts, long polling, redrive to a dead-letter queue, change-visibility). Both are
//! safe to share between tasks and bounded in memory. The conformance suite in
//! `tests/conformance` runs against them and against the AWS adapters.

mod queue;
mod store;

pub use queue::{MemoryQueue, QueueOptions};
pub use store::MemoryStore;
