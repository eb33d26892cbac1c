//! `JobStore` on DynamoDB: one table, `pk` = job id; every state change is one
//! conditional write whose condition is a named constant below.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use offpath_core::{
    DEAD_LETTERED, ErrorInfo, Job, JobId, JobStatus, JobStore, Lease, NewJob, StoreError,
};
use serde_json::Value;

use crate::item::{Item, attr, error_value, from_item, n, s, to_item};

/// No job with this id exists.
const ABSENT: &str = "attribute_not_exists(#pk)";
/// Nobody holds the job: queued, or running under an expired lease.
const UNHELD: &str = "#status = :queued OR (#status = :running AND #lease_until_epoch_ms < :now)";
/// The caller holds the job's lease.
const HELD: &str = "#status = :running AND #lease_owner = :token";
/// The caller holds the lease and nobody asked to cancel.
const HELD_NOT_CANCELLED: &str =
    "#status = :running AND #lease_owner = :token AND #cancel_requested = :false";
/// The job failed on its last receive and its message went to the dead-letter queue.
const REVIVABLE: &str = "#status = :failed AND #error.#code = :dead_lettered";
/// The job is not terminal (a scan filter).
const UNFINISHED: &str = "#status IN (:queued, :running)";
/// The job waits in the queue.
const QUEUED: &str = "#status = :queued";
/// The job is running.
const RUNNING: &str = "#status = :running";
/// The job waits in the queue and was never claimed.
const UNSTARTED: &str = "#status = :queued AND #attempts = :zero";

const CLAIM: &str = "SET #status = :running, #lease_owner = :token, #lease_until_epoch_ms = :until, \
     #attempts = #attempts + :one, #started_at_epoch_ms = if_not_exists(#started_at_epoch_ms, :now), \
     #version = #version + :one";
const COMPLETE: &str = "SET #status = :succeeded, #output = :output, #finished_at_epoch_ms = :now, \
     #version = #version + :one REMOVE #lease_owner, #lease_until_epoch_ms";
const FAIL: &str = "SET #status = :failed, #error = :error, #finished_at_epoch_ms = :now, \
     #version = #version + :one REMOVE #lease_owner, #lease_until_epoch_ms";
const RELEASE: &str =
    "SET #status = :queued, #version = #version + :one REMOVE #lease_owner, #lease_until_epoch_ms";
const CANCELLED: &str = "SET #status = :cancelled, #finished_at_epoch_ms = :now, \
     #version = #version + :one REMOVE #lease_owner, #lease_until_epoch_ms";
const REVIVE: &str =
    "SET #status = :queued, #version = #version + :one REMOVE #error, #finished_at_epoch_ms";
const REQUEST_CANCEL: &str = "SET #cancel_requested = :true, #version = #version + :one";

/// DynamoDB-backed [`JobStore`].
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    /// A store on `table` with a client from the shared AWS configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), table)
    }

    fn key(id: JobId) -> Item {
        Item::from([(attr::PK.to_owned(), s(id.to_string()))])
    }

    /// One conditional update; `values` are the call's own `:placeholders`.
    async fn update(
        &self,
        id: JobId,
        condition: &str,
        update: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Job, StoreError> {
        let (names, values) = placeholders(&[condition, update], values);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .condition_expression(condition)
            .update_expression(update)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => decode(output.attributes().cloned().unwrap_or_default()),
            Err(SdkError::ServiceError(err))
                if matches!(
                    err.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                let item = match err.err() {
                    UpdateItemError::ConditionalCheckFailedException(e) => e.item().cloned(),
                    _ => None,
                };
                self.conflict(id, item).await
            }
            Err(err) => Err(sdk_error(err)),
        }
    }

    /// The typed conflict for a failed condition: the current record, read
    /// consistently when the error did not carry it.
    async fn conflict(&self, id: JobId, item: Option<Item>) -> Result<Job, StoreError> {
        let current = match item.filter(|i| !i.is_empty()) {
            Some(item) => Some(decode(item)?),
            None => self.get(id).await?,
        };
        match current {
            Some(job) => Err(StoreError::Conflict(Box::new(job))),
            None => Err(StoreError::NotFound),
        }
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create(&self, new: &NewJob) -> Result<Job, StoreError> {
        let job = Job::from_new(new.clone());
        let (names, _) = placeholders(&[ABSENT], vec![]);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&job)))
            .condition_expression(ABSENT)
            .set_expression_attribute_names(Some(names))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(job),
            Err(SdkError::ServiceError(err))
                if matches!(err.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let item = match err.err() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item().cloned(),
                    _ => None,
                };
                self.conflict(job.id, item).await
            }
            Err(err) => Err(sdk_error(err)),
        }
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        output.item().cloned().map(decode).transpose()
    }

    async fn claim(&self, id: JobId, lease: &Lease, now_epoch_ms: u64) -> Result<Job, StoreError> {
        let values = vec![
            (":token", s(&lease.token)),
            (":until", n(lease.until_epoch_ms)),
            (":now", n(now_epoch_ms)),
        ];
        self.update(id, UNHELD, CLAIM, values).await
    }

    async fn complete(
        &self,
        id: JobId,
        lease_token: &str,
        output: &Value,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError> {
        let values = vec![
            (":token", s(lease_token)),
            (":output", s(output.to_string())),
            (":now", n(now_epoch_ms)),
        ];
        self.update(id, HELD_NOT_CANCELLED, COMPLETE, values).await
    }

    async fn fail(
        &self,
        id: JobId,
        lease_token: &str,
        error: &ErrorInfo,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError> {
        let values = vec![
            (":token", s(lease_token)),
            (":error", error_value(error)),
            (":now", n(now_epoch_ms)),
        ];
        self.update(id, HELD_NOT_CANCELLED, FAIL, values).await
    }

    async fn release(&self, id: JobId, lease_token: &str) -> Result<Job, StoreError> {
        self.update(id, HELD, RELEASE, vec![(":token", s(lease_token))])
            .await
    }

    async fn finish_cancelled(
        &self,
        id: JobId,
        lease_token: &str,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError> {
        let values = vec![(":token", s(lease_token)), (":now", n(now_epoch_ms))];
        self.update(id, HELD, CANCELLED, values).await
    }

    async fn abandon(
        &self,
        id: JobId,
        error: &ErrorInfo,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError> {
        let values = vec![(":error", error_value(error)), (":now", n(now_epoch_ms))];
        self.update(id, UNHELD, FAIL, values).await
    }

    async fn cancel_queued(&self, id: JobId, now_epoch_ms: u64) -> Result<Job, StoreError> {
        self.update(id, QUEUED, CANCELLED, vec![(":now", n(now_epoch_ms))])
            .await
    }

    async fn request_cancel(&self, id: JobId) -> Result<Job, StoreError> {
        self.update(id, RUNNING, REQUEST_CANCEL, vec![]).await
    }

    async fn revive(&self, id: JobId) -> Result<Job, StoreError> {
        let values = vec![(":dead_lettered", s(DEAD_LETTERED))];
        self.update(id, REVIVABLE, REVIVE, values).await
    }

    async fn delete_unstarted(&self, id: JobId) -> Result<(), StoreError> {
        let (names, values) = placeholders(&[UNSTARTED], vec![]);
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .condition_expression(UNSTARTED)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(err))
                if matches!(
                    err.err(),
                    DeleteItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                let item = match err.err() {
                    DeleteItemError::ConditionalCheckFailedException(e) => e.item().cloned(),
                    _ => None,
                };
                self.conflict(id, item).await.map(|_| ())
            }
            Err(err) => Err(sdk_error(err)),
        }
    }

    /// A filtered, strongly consistent Scan: it reads the whole table, so run the
    /// sweep every few minutes, not per request.
    async fn unfinished(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let (names, values) = placeholders(&[UNFINISHED], vec![]);
        let mut jobs = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(UNFINISHED)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in page.items() {
                if jobs.len() == limit {
                    return Ok(jobs);
                }
                jobs.push(decode(item.clone())?);
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(jobs),
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_error)
    }
}

fn decode(item: Item) -> Result<Job, StoreError> {
    from_item(&item).map_err(|e| StoreError::Other(e.to_string()))
}

/// The `#name` and `:value` maps for expressions. Every `#token` names the attribute
/// of the same name; `:token`s take the call's values or the shared constants. Only
/// placeholders the expressions use are sent (DynamoDB rejects unused ones).
fn placeholders(
    expressions: &[&str],
    call_values: Vec<(&str, AttributeValue)>,
) -> (HashMap<String, String>, HashMap<String, AttributeValue>) {
    let mut values: HashMap<String, AttributeValue> = JobStatus::ALL
        .into_iter()
        .map(|status| (format!(":{status}"), s(status.as_str())))
        .chain([
            (":one".to_owned(), n(1)),
            (":zero".to_owned(), n(0)),
            (":true".to_owned(), AttributeValue::Bool(true)),
            (":false".to_owned(), AttributeValue::Bool(false)),
        ])
        .collect();
    values.extend(call_values.into_iter().map(|(k, v)| (k.to_owned(), v)));

    let mut used_names = HashMap::new();
    let mut used_values = HashMap::new();
    for expression in expressions {
        for token in tokens(expression, '#') {
            used_names.insert(format!("#{token}"), token.to_owned());
        }
        for token in tokens(expression, ':') {
            let key = format!(":{token}");
            let value = values
                .get(&key)
                .unwrap_or_else(|| panic!("expression uses {key} but no value was given"));
            used_values.insert(key, value.clone());
        }
    }
    (used_names, used_values)
}

fn tokens(expression: &str, sigil: char) -> impl Iterator<Item = &str> {
    expression.split(sigil).skip(1).map(|rest| {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

/// Maps an SDK error: connection failures, timeouts, throttling and 5xx are
/// transient; a too-large item is its own kind; the rest is permanent.
pub(crate) fn sdk_error<E>(err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = crate::sdk::describe(&err);
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(text)
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let message = service.err().message().unwrap_or_default();
            match code {
                "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "ThrottlingException"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "TransactionConflictException" => StoreError::Unavailable(text),
                "ValidationException" if message.contains("size") => {
                    StoreError::TooLarge(message.to_owned())
                }
                _ if service.raw().status().is_server_error() => StoreError::Unavailable(text),
                _ => StoreError::Other(text),
            }
        }
        _ => StoreError::Other(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_send_only_what_expressions_use() {
        let (names, values) = placeholders(&[HELD, RELEASE], vec![(":token", s("t"))]);
        let mut names: Vec<_> = names.into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "#lease_owner",
                "#lease_until_epoch_ms",
                "#status",
                "#version"
            ]
        );
        let mut values: Vec<_> = values.into_keys().collect();
        values.sort();
        assert_eq!(values, [":one", ":queued", ":running", ":token"]);
    }
}
