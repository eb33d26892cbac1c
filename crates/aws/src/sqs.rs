//! `JobQueue` on SQS.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName,
    QueueAttributeName,
};
use offpath_core::{JobMessage, JobQueue, QueueDepth, QueueError, QueueMessage};

/// SQS-backed [`JobQueue`].
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    arn: String,
}

impl SqsQueue {
    /// Connects to the queue at `url`, reading its ARN (which also proves the URL).
    pub async fn connect(client: Client, url: impl Into<String>) -> Result<Self, QueueError> {
        let url = url.into();
        let arn = queue_arn(&client, &url).await?;
        Ok(SqsQueue { client, url, arn })
    }

    /// Connects with a client from the shared AWS configuration.
    pub async fn from_sdk(
        sdk: &aws_config::SdkConfig,
        url: impl Into<String>,
    ) -> Result<Self, QueueError> {
        Self::connect(Client::new(sdk), url).await
    }

    async fn attributes(
        &self,
        names: &[QueueAttributeName],
    ) -> Result<std::collections::HashMap<QueueAttributeName, String>, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(output.attributes().cloned().unwrap_or_default())
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    /// `group` becomes the message's `MessageGroupId`: on a standard queue, SQS fair
    /// queues use it to keep one group's backlog from delaying the others.
    async fn send(&self, message: &JobMessage, group: &str) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(message.to_body())
            .message_group_id(group)
            .send()
            .await
            .map(|_| ())
            .map_err(sqs_error)
    }

    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(output
            .messages()
            .iter()
            .map(|m| QueueMessage {
                message_id: m.message_id().unwrap_or_default().to_owned(),
                receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
                receive_count: system_attribute(
                    m,
                    MessageSystemAttributeName::ApproximateReceiveCount,
                ) as u32,
                sent_at_epoch_ms: system_attribute(m, MessageSystemAttributeName::SentTimestamp),
                group: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned(),
            })
            .collect())
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map(|_| ())
            .map_err(sqs_error)
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(timeout.as_secs().min(43_200) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(sqs_error)
    }

    async fn change_visibility_all(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let visibility = timeout.as_secs().min(43_200) as i32;
        for chunk in receipt_handles.chunks(10) {
            let entries = chunk.iter().enumerate().map(|(i, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .visibility_timeout(visibility)
                    .build()
                    .expect("id and receipt handle are set")
            });
            let output = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries.collect()))
                .send()
                .await
                .map_err(sqs_error)?;
            if let Some(failed) = output.failed().first() {
                return Err(QueueError::Unavailable(format!(
                    "{} of {} visibility changes failed, the first: {} {}",
                    output.failed().len(),
                    chunk.len(),
                    failed.code(),
                    failed.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let attributes = self
            .attributes(&[
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ])
            .await?;
        let count = |name| {
            attributes
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    async fn purge(&self) -> Result<(), QueueError> {
        self.client
            .purge_queue()
            .queue_url(&self.url)
            .send()
            .await
            .map(|_| ())
            .map_err(sqs_error)
    }

    async fn max_receive_count(&self) -> Result<Option<u32>, QueueError> {
        let attributes = self
            .attributes(&[QueueAttributeName::RedrivePolicy])
            .await?;
        let Some(policy) = attributes.get(&QueueAttributeName::RedrivePolicy) else {
            return Ok(None);
        };
        let policy: serde_json::Value = serde_json::from_str(policy)
            .map_err(|e| QueueError::Other(format!("RedrivePolicy is not JSON: {e}")))?;
        // SQS reports the count as a number or as a string depending on who set it.
        let count = match &policy["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        count
            .map(|c| Some(c as u32))
            .ok_or_else(|| QueueError::Other("RedrivePolicy has no maxReceiveCount".into()))
    }

    fn arn(&self) -> &str {
        &self.arn
    }
}

/// The ARN of the queue at `url` (reading it also proves the URL).
pub(crate) async fn queue_arn(client: &Client, url: &str) -> Result<String, QueueError> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(sqs_error)?;
    output
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| QueueError::Other(format!("queue {url} reported no QueueArn")))
}

/// A numeric system attribute of a received message (counts, timestamps); 0 if absent.
pub(crate) fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> u64 {
    message
        .attributes()
        .and_then(|a| a.get(&name))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Maps an SDK error: connection failures, timeouts, throttling and 5xx are
/// transient; an invalid receipt handle is its own kind.
pub(crate) fn sqs_error<E>(err: SdkError<E, HttpResponse>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = crate::sdk::describe(&err);
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            QueueError::Unavailable(text)
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let stale_receipt = code == "ReceiptHandleIsInvalid"
                || code.ends_with("MessageNotInflight")
                || (code == "InvalidParameterValue"
                    && text.to_ascii_lowercase().contains("receipt"));
            if stale_receipt {
                return QueueError::StaleReceipt(text);
            }
            match code {
                "ThrottlingException"
                | "RequestThrottled"
                | "AWS.SimpleQueueService.RequestThrottled"
                | "ServiceUnavailable"
                | "InternalError"
                | "KmsThrottled" => QueueError::Unavailable(text),
                _ if service.raw().status().is_server_error() => QueueError::Unavailable(text),
                _ => QueueError::Other(text),
            }
        }
        _ => QueueError::Other(text),
    }
}
