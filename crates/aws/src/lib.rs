//! offpath's AWS adapters: [`DynamoStore`] implements `JobStore` on DynamoDB,
//! [`SqsQueue`] implements `JobQueue` on SQS, [`S3Blobs`] implements `BlobStore` on S3,
//! and [`provision`] creates the table, queues and bucket the way `template.yaml`
//! declares them.
//!
//! Endpoints, region and credentials come from the standard AWS configuration
//! (`AWS_REGION`, `AWS_ENDPOINT_URL`, profiles, ...), so the same code talks to AWS,
//! LocalStack or moto.

mod dynamo;
mod expression;
mod item;
pub mod s3;
mod sdk;
mod sqs;

pub mod config;
pub mod dlq;
pub mod lambda;
pub mod provision;
pub mod secrets;

pub use config::{API_CALL_TIMEOUT, ConfigError, Settings, load_sdk_config, within_api_deadline};
pub use dynamo::DynamoStore;
pub use item::{INDEXES, Index};
pub use s3::S3Blobs;
pub use sqs::SqsQueue;

/// The DynamoDB item offpath writes for `job` (benchmarks time a bare PutItem of it).
pub fn job_item(
    job: &offpath_core::Job,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    item::to_item(job)
}
