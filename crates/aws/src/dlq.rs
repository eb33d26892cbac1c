//! What SQS adds to the dead-letter operations of [`offpath_core::DeadLetters`]: a
//! message move task, which moves every message back without reading them.

use aws_sdk_sqs::Client;
use offpath_core::QueueError;

use crate::sqs::{queue_arn, sqs_error};

/// Asks SQS to move every message of the queue at `dlq_url` back to the queue at
/// `queue_url` (StartMessageMoveTask); returns the task's handle. Endpoints without
/// the API (moto) answer an error; callers then move messages one by one.
pub async fn start_move_task(
    client: &Client,
    dlq_url: &str,
    queue_url: &str,
) -> Result<String, QueueError> {
    let source = queue_arn(client, dlq_url).await?;
    let destination = queue_arn(client, queue_url).await?;
    let output = client
        .start_message_move_task()
        .source_arn(source)
        .destination_arn(destination)
        .send()
        .await
        .map_err(sqs_error)?;
    Ok(output.task_handle().unwrap_or_default().to_owned())
}
