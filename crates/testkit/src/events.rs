//! Lambda events built from the real AWS events in `tests/fixtures`.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use lambda_runtime::{Context, LambdaEvent};

/// A Lambda SQS event built from the real AWS event in `tests/fixtures/sqs_event.json`,
/// one record per (body, receive count), with message ids `msg-0`, `msg-1`, ...
pub fn sqs_event(records: &[(String, u32)]) -> LambdaEvent<SqsEvent> {
    let fixture: SqsEvent =
        serde_json::from_str(include_str!("../../../tests/fixtures/sqs_event.json"))
            .expect("the fixture parses");
    let template: SqsMessage = fixture.records[0].clone();
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
    LambdaEvent::new(event, Context::default())
}
