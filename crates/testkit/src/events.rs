//! Batches and Lambda events built from the real AWS event in `tests/fixtures`.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use offpath_core::QueueMessage;

/// The real AWS event in `tests/fixtures/sqs_event.json`.
fn fixture() -> SqsEvent {
    serde_json::from_str(include_str!("../../../tests/fixtures/sqs_event.json"))
        .expect("the fixture parses")
}

/// A batch as a Lambda `main` reads it from an SQS event built from the fixture: one
/// message per (body, receive count), message ids `msg-0`, `msg-1`, ...
pub fn fixture_batch(records: &[(String, u32)]) -> Vec<QueueMessage> {
    let template = fixture().records[0].clone();
    let mut event = SqsEvent::default();
    event.records = records
        .iter()
        .enumerate()
        .map(|(i, (body, receive_count))| {
            let mut record = template.clone();
            record.message_id = Some(format!("msg-{i}"));
            record.receipt_handle = Some(format!("receipt-{i}"));
            record.body = Some(body.clone());
            record
                .attributes
                .insert("ApproximateReceiveCount".into(), receive_count.to_string());
            record
        })
        .collect();
    offpath_aws::lambda::queue_messages(&event).expect("fixture records are named")
}

/// The SQS event the event source mapping of `queue_arn` would hand a function for
/// `messages`: what the tests feed the real Lambda bootstraps.
pub fn sqs_event(queue_arn: &str, messages: &[QueueMessage]) -> SqsEvent {
    let region = queue_arn.split(':').nth(3).unwrap_or_default().to_owned();
    let template = fixture().records[0].clone();
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = Some(m.message_id.clone());
            record.receipt_handle = Some(m.receipt_handle.clone());
            record.body = Some(m.body.clone());
            record.attributes = [
                ("ApproximateReceiveCount", m.receive_count.to_string()),
                ("SentTimestamp", m.sent_at_epoch_ms.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(m.group.clone().map(|g| ("MessageGroupId".to_owned(), g)))
            .collect();
            record.event_source = template.event_source.clone();
            record.event_source_arn = Some(queue_arn.to_owned());
            record.aws_region = Some(region.clone());
            record
        })
        .collect();
    event
}
