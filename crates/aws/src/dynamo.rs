//! `JobStore` on DynamoDB: one table, `pk` = job id; every state change is one
//! conditional write whose condition is a named constant below.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure, Select,
};
use offpath_core::activity::{ACTIVITY_RETENTION_MS, MINUTE_MS};
use offpath_core::index::{DUE_SHARDS, MAX_RETRY_DELAY, OWNER_SLICES, RESEND_AFTER};
use offpath_core::{
    Activity, DEAD_LETTERED, DuePage, ErrorInfo, EventKind, Job, JobId, JobPage, JobStatus,
    JobStore, LIST_EXAMINE_LIMIT, Lease, ListPosition, ListQuery, MinuteActivity, NewJob, PartsEnd,
    Settle, StoreError,
};
use serde_json::Value;

use crate::item::{
    DUE_INDEX, Index, Item, OUTBOX_INDEX, OWNER_INDEX, OWNER_UNFINISHED_INDEX, attr, error_value,
    from_item, kinds, n, owner_slice, part_lease, s, to_item,
};

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
/// The job's finish time is as the caller read it (absent: not finished).
const FINISHED_AT: &str = "#finished_at_epoch_ms = :finished";
const NOT_FINISHED: &str = "attribute_not_exists(#finished_at_epoch_ms)";
/// Running, its webhook wants progress, and no progress event since `:since`.
const PROGRESS_DUE: &str = "#status = :running AND #webhook_gone = :false \
     AND contains(#webhook_events, :progress) \
     AND (attribute_not_exists(#webhook_progress_at_epoch_ms) OR #webhook_progress_at_epoch_ms <= :since)";
/// The job has a webhook.
const HAS_WEBHOOK: &str = "attribute_exists(#webhook_url)";
/// The job waits in the queue.
const QUEUED: &str = "#status = :queued";
/// The job is running.
const RUNNING: &str = "#status = :running";
/// The job waits in the queue and was never claimed.
const UNSTARTED: &str = "#status = :queued AND #attempts = :zero";

// Index keys (see `item::attr`): a claim moves the job's `due` entry to its lease's
// end and makes its `started` event due; a finish removes its `due` and
// `owner_unfinished` entries and makes its completion event due; the outbox entry goes
// when the outbox is sent.
const CLAIM: &str = "SET #status = :running, #lease_owner = :token, #lease_until_epoch_ms = :until, \
     #attempts = #attempts + :one, #started_at_epoch_ms = if_not_exists(#started_at_epoch_ms, :now), \
     #due_at_epoch_ms = :until, #outbox_at_epoch_ms = :now, #version = #version + :one";
/// A heartbeat: the lease, and with it the job's `due` entry, ends later.
const EXTEND: &str = "SET #lease_until_epoch_ms = :until, #due_at_epoch_ms = :until, \
     #version = #version + :one";
const COMPLETE: &str = "SET #status = :succeeded, #output = :output, #finished_at_epoch_ms = :now, \
     #outbox_at_epoch_ms = :now, #version = #version + :one \
     REMOVE #lease_owner, #lease_until_epoch_ms, #due_shard, #due_at_epoch_ms, #owner_slice";
const FAIL: &str = "SET #status = :failed, #error = :error, #finished_at_epoch_ms = :now, \
     #outbox_at_epoch_ms = :now, #version = #version + :one \
     REMOVE #lease_owner, #lease_until_epoch_ms, #due_shard, #due_at_epoch_ms, #owner_slice";
/// Due, as [`Job::unfinished_due_at`] says of a queued job that ran before: from its
/// first start.
/// Back in the queue after a claim: due as [`Job::queued_due_at`] says (`:due`).
const REQUEUED: &str = "#requeued_at_epoch_ms = :now, #due_at_epoch_ms = :due";
const RELEASE: &str = "SET #status = :queued, #version = #version + :one, \
     #requeued_at_epoch_ms = :now, #due_at_epoch_ms = :due \
     REMOVE #lease_owner, #lease_until_epoch_ms";
/// A repair sent the message again: due once that message has expired (`:due`).
const RESENT: &str =
    "SET #resent_at_epoch_ms = :now, #due_at_epoch_ms = :due, #version = #version + :one";
const CANCELLED: &str = "SET #status = :cancelled, #finished_at_epoch_ms = :now, \
     #outbox_at_epoch_ms = :now, #version = #version + :one \
     REMOVE #lease_owner, #lease_until_epoch_ms, #due_shard, #due_at_epoch_ms, #owner_slice";
/// A revived job is unfinished again: back in `due` and `owner_unfinished`.
const REVIVE_SET: &str =
    "#version = #version + :one, #due_shard = :due_shard, #owner_slice = :owner_slice";
const REQUEST_CANCEL: &str = "SET #cancel_requested = :true, #version = #version + :one";
/// Events sent of a job not finished: nothing is due until it finishes.
const EVENTS_SENT: &str = "DELETE #webhook_unsent :kinds SET #version = #version + :one \
     REMOVE #outbox_at_epoch_ms";
/// Events sent of a finished job: its outbox is empty (what is left can no longer
/// happen), so it leaves the outbox index.
const LAST_EVENTS_SENT: &str = "DELETE #webhook_unsent :kinds SET #version = #version + :one \
     REMOVE #outbox_shard, #outbox_at_epoch_ms";
const PROGRESS_SENT: &str = "SET #webhook_progress_at_epoch_ms = :now, #version = #version + :one";
const WEBHOOK_GONE: &str = "SET #webhook_gone = :true, #version = #version + :one \
     REMOVE #webhook_unsent, #outbox_shard, #outbox_at_epoch_ms";

// Jobs that run in parts. `#part` names the part's key in the part maps, `:part` is its
// number.

/// The job runs in parts, no cancel requested, and the part exists, is not settled and
/// is held by no live lease.
const PART_CLAIMABLE: &str = "#status = :running AND #cancel_requested = :false \
     AND #parts_total > :part AND NOT contains(#parts_settled, :part) \
     AND (attribute_not_exists(#part_leases.#part) OR #part_leases.#part.#until < :now)";
/// The caller holds the part's lease.
const PART_HELD: &str = "#status = :running AND #part_leases.#part.#token = :token";
/// The part exists and is not settled.
const PART_UNSETTLED: &str = "#parts_total > :part AND NOT contains(#parts_settled, :part)";
/// No live lease holds the part.
const PART_UNHELD: &str =
    "(attribute_not_exists(#part_leases.#part) OR #part_leases.#part.#until < :now)";
/// Every part of the job is settled (no set yet: none is).
const PARTS_SETTLED: &str = "#status = :running AND attribute_exists(#parts_settled) \
     AND size(#parts_settled) = #parts_total";
/// Every part is settled and nobody asked to cancel.
const PARTS_SETTLED_NOT_CANCELLED: &str = "#status = :running AND attribute_exists(#parts_settled) \
     AND size(#parts_settled) = #parts_total AND #cancel_requested = :false";
/// The record is as it was read.
const UNCHANGED: &str = "#version = :version";

// A job in parts is due for the sweep from its parts' last activity.
const FAN_OUT: &str = "SET #parts_total = :parts, #chunks_total = :chunks, #chunks_done = :zero, \
     #parts_dead = :empty, #part_leases = :empty, #part_attempts = :empty, \
     #parts_touched_at_epoch_ms = :now, #due_at_epoch_ms = :now, #version = #version + :one \
     REMOVE #lease_owner, #lease_until_epoch_ms";
const CLAIM_PART: &str = "SET #part_leases.#part = :lease, \
     #part_attempts.#part = if_not_exists(#part_attempts.#part, :zero) + :one, \
     #parts_touched_at_epoch_ms = :now, #due_at_epoch_ms = :now, #version = #version + :one";
const EXTEND_PART: &str = "SET #part_leases.#part.#until = :until, \
     #parts_touched_at_epoch_ms = :now, #due_at_epoch_ms = :now, #version = #version + :one";
const RELEASE_PART: &str = "SET #version = #version + :one REMOVE #part_leases.#part";
const PART_DONE: &str = "ADD #parts_settled :parts_set, #chunks_done :chunks \
     SET #parts_touched_at_epoch_ms = :now, #due_at_epoch_ms = :now, #version = #version + :one \
     REMOVE #part_leases.#part";
const PART_DEAD: &str = "ADD #parts_settled :parts_set SET #parts_dead.#part = :error_text, \
     #parts_touched_at_epoch_ms = :now, #due_at_epoch_ms = :now, #version = #version + :one \
     REMOVE #part_leases.#part";
const PART_SKIPPED: &str = "ADD #parts_settled :parts_set \
     SET #parts_touched_at_epoch_ms = :now, #due_at_epoch_ms = :now, #version = #version + :one \
     REMOVE #part_leases.#part";

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
        self.update_named(id, condition, update, &[], values).await
    }

    /// One conditional update where some `#names` stand for other attribute names
    /// (`#part` for a part's key in the part maps).
    async fn update_named(
        &self,
        id: JobId,
        condition: &str,
        update: &str,
        names: &[(&str, String)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Job, StoreError> {
        let (names, values) = placeholders(&[condition, update], names, values);
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

    /// Reads the records of `ids`; returns them and how many items came back.
    async fn batch_get(
        &self,
        ids: &[JobId],
        consistent: bool,
    ) -> Result<(HashMap<JobId, Job>, usize), StoreError> {
        let keys: Vec<Item> = ids.iter().map(|id| Self::key(*id)).collect();
        let items = self.batch_get_items(keys, consistent).await?;
        let read = items.len();
        let jobs = items
            .into_iter()
            .map(|item| decode(item).map(|job| (job.id, job)))
            .collect::<Result<_, _>>()?;
        Ok((jobs, read))
    }

    /// Reads the items of `keys` (100 per request, retrying what DynamoDB leaves
    /// unprocessed).
    async fn batch_get_items(
        &self,
        keys: Vec<Item>,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        for chunk in keys.chunks(100) {
            let keys = chunk.to_vec();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(consistent)
                    .build()
                    .map_err(|e| StoreError::Other(e.to_string()))?,
            );
            let mut pause = Duration::from_millis(20);
            while let Some(keys) = request.take() {
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                items.extend(
                    output
                        .responses()
                        .and_then(|r| r.get(&self.table))
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
                request = output
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
                if request.is_some() {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
        Ok(items)
    }

    /// The key of one shard of a minute's activity (`activity#<minute epoch ms>#<shard>`:
    /// never a job id).
    fn activity_key(minute_epoch_ms: u64, shard: u32) -> Item {
        Item::from([(
            attr::PK.to_owned(),
            s(format!("activity#{minute_epoch_ms}#{shard}")),
        )])
    }

    /// Up to `limit` entries of `owner`'s listing index, newest first, after `start`:
    /// (id, creation time) each, and where the query stopped if it did.
    async fn owner_page(
        &self,
        owner: &str,
        start: Option<Item>,
        limit: usize,
    ) -> Result<(Vec<(JobId, u64)>, Option<Item>), StoreError> {
        let condition = format!("#{} = :owner", attr::OWNER);
        let (names, values) = placeholders(&[&condition], &[], vec![(":owner", s(owner))]);
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OWNER_INDEX.name)
            .key_condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(false)
            .limit(limit.max(1) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(sdk_error)?;
        let entries = output
            .items()
            .iter()
            .map(|item| {
                let created = match item.get(attr::CREATED_AT) {
                    Some(AttributeValue::N(v)) => v.parse().ok(),
                    _ => None,
                };
                let created = created.ok_or_else(|| {
                    StoreError::Other("listing entry without a creation time".into())
                })?;
                Ok((item_id(item)?, created))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let last = output
            .last_evaluated_key()
            .filter(|k| !k.is_empty())
            .cloned();
        Ok((entries, last))
    }

    /// Counts the entries of one slice of `owner`'s unfinished jobs, stopping at `cap`.
    async fn count_slice(&self, owner: &str, slice: u32, cap: u64) -> Result<u64, StoreError> {
        let condition = format!("#{} = :slice", attr::OWNER_SLICE);
        let (names, values) = placeholders(
            &[&condition],
            &[],
            vec![(":slice", s(owner_slice(owner, slice)))],
        );
        let mut count = 0;
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OWNER_UNFINISHED_INDEX.name)
                .key_condition_expression(&condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .select(Select::Count)
                .limit((cap - count).min(i32::MAX as u64) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            count += output.count() as u64;
            match output.last_evaluated_key().filter(|k| !k.is_empty()) {
                Some(key) if count < cap => start = Some(key.clone()),
                _ => return Ok(count),
            }
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
        let (names, _) = placeholders(&[ABSENT], &[], vec![]);
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

    async fn extend_lease(&self, id: JobId, lease: &Lease) -> Result<Job, StoreError> {
        let values = vec![
            (":token", s(&lease.token)),
            (":until", n(lease.until_epoch_ms)),
        ];
        self.update(id, HELD, EXTEND, values).await
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

    async fn release(&self, id: JobId, lease_token: &str, now: u64) -> Result<Job, StoreError> {
        let values = vec![
            (":token", s(lease_token)),
            (":now", n(now)),
            (":due", n(now + MAX_RETRY_DELAY.as_millis() as u64)),
        ];
        self.update(id, HELD, RELEASE, values).await
    }

    async fn record_resend(&self, id: JobId, now: u64) -> Result<Job, StoreError> {
        let values = vec![
            (":now", n(now)),
            (":due", n(now + RESEND_AFTER.as_millis() as u64)),
        ];
        self.update(id, QUEUED, RESENT, values).await
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
        let job = self.get(id).await?.ok_or(StoreError::NotFound)?;
        let now = offpath_core::Clock::now_epoch_ms(&offpath_core::SystemClock);
        let mut values = vec![
            (":dead_lettered", s(DEAD_LETTERED)),
            (":now", n(now)),
            (":due_shard", n(id.shard(DUE_SHARDS).into())),
            (
                ":owner_slice",
                s(owner_slice(&job.owner, id.shard(OWNER_SLICES))),
            ),
        ];
        let mut set = vec![REVIVE_SET.to_owned()];
        let mut remove = vec!["#error".to_owned(), "#finished_at_epoch_ms".to_owned()];
        let mut tail = String::new();
        // The job will end again: its completion event is due again (and its outbox
        // back in the index).
        let completion = job
            .webhook
            .as_ref()
            .is_some_and(|w| !w.gone && w.events.contains(&EventKind::Completed));
        if completion {
            values.push((":completed", kinds(&[EventKind::Completed].into())));
            set.push("#outbox_shard = :due_shard".to_owned());
            tail.push_str(" ADD #webhook_unsent :completed");
        }
        let Some(parts) = job.parts.filter(|_| job.status == JobStatus::Failed) else {
            values.push((":due", n(now + MAX_RETRY_DELAY.as_millis() as u64)));
            set.extend(["#status = :queued".to_owned(), REQUEUED.to_owned()]);
            let update = format!("SET {} REMOVE {}{tail}", set.join(", "), remove.join(", "));
            return self.update(id, REVIVABLE, &update, values).await;
        };
        // Back to running, its dead parts unsettled again with fresh attempts; the read
        // above must still hold.
        set.extend([
            "#status = :running".to_owned(),
            "#parts_dead = :empty".to_owned(),
            "#parts_touched_at_epoch_ms = :now".to_owned(),
            "#due_at_epoch_ms = :now".to_owned(),
        ]);
        let dead: Vec<u32> = parts.dead.keys().copied().collect();
        let names: Vec<(String, String)> = dead
            .iter()
            .enumerate()
            .map(|(i, part)| (format!("#dead{i}"), part.to_string()))
            .collect();
        remove.extend(
            names
                .iter()
                .map(|(placeholder, _)| format!("#part_attempts.{placeholder}")),
        );
        values.push((":version", n(job.version)));
        if !dead.is_empty() {
            tail.push_str(" DELETE #parts_settled :dead_set");
            let set = dead.iter().map(u32::to_string).collect();
            values.push((":dead_set", AttributeValue::Ns(set)));
        }
        let update = format!("SET {} REMOVE {}{tail}", set.join(", "), remove.join(", "));
        let condition = format!("{REVIVABLE} AND {UNCHANGED}");
        let names: Vec<(&str, String)> =
            names.iter().map(|(p, n)| (p.as_str(), n.clone())).collect();
        self.update_named(id, &condition, &update, &names, values)
            .await
    }

    async fn fan_out(
        &self,
        id: JobId,
        lease_token: &str,
        parts: u32,
        chunks: u64,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError> {
        let values = vec![
            (":token", s(lease_token)),
            (":parts", n(parts.into())),
            (":chunks", n(chunks)),
            (":now", n(now_epoch_ms)),
        ];
        self.update(id, HELD_NOT_CANCELLED, FAN_OUT, values).await
    }

    async fn claim_part(
        &self,
        id: JobId,
        part: u32,
        lease: &Lease,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError> {
        let values = vec![
            (":part", n(part.into())),
            (":lease", part_lease(lease)),
            (":now", n(now_epoch_ms)),
        ];
        let names = [("#part", part.to_string())];
        self.update_named(id, PART_CLAIMABLE, CLAIM_PART, &names, values)
            .await
    }

    async fn extend_part_lease(
        &self,
        id: JobId,
        part: u32,
        lease: &Lease,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError> {
        let values = vec![
            (":token", s(&lease.token)),
            (":until", n(lease.until_epoch_ms)),
            (":now", n(now_epoch_ms)),
        ];
        let names = [("#part", part.to_string())];
        self.update_named(id, PART_HELD, EXTEND_PART, &names, values)
            .await
    }

    async fn release_part(
        &self,
        id: JobId,
        part: u32,
        lease_token: &str,
    ) -> Result<Job, StoreError> {
        let names = [("#part", part.to_string())];
        let values = vec![(":token", s(lease_token))];
        self.update_named(id, PART_HELD, RELEASE_PART, &names, values)
            .await
    }

    async fn settle_part(
        &self,
        id: JobId,
        part: u32,
        settle: Settle<'_>,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError> {
        let mut values = vec![
            (":part", n(part.into())),
            (":parts_set", AttributeValue::Ns(vec![part.to_string()])),
            (":now", n(now_epoch_ms)),
        ];
        let (holder, update) = match settle {
            Settle::Done { token, chunks } => {
                values.extend([(":token", s(token)), (":chunks", n(chunks))]);
                (PART_HELD, PART_DONE)
            }
            Settle::Dead { token, error } => {
                values.push((":error_text", s(error)));
                match token {
                    Some(token) => {
                        values.push((":token", s(token)));
                        (PART_HELD, PART_DEAD)
                    }
                    None => (PART_UNHELD, PART_DEAD),
                }
            }
            Settle::Skipped => (PART_UNHELD, PART_SKIPPED),
        };
        let condition = format!("{PART_UNSETTLED} AND {holder}");
        let names = [("#part", part.to_string())];
        self.update_named(id, &condition, update, &names, values)
            .await
    }

    async fn finish_parts(
        &self,
        id: JobId,
        end: PartsEnd<'_>,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError> {
        let now = (":now", n(now_epoch_ms));
        match end {
            PartsEnd::Succeeded(output) => {
                let values = vec![now, (":output", s(output.to_string()))];
                self.update(id, PARTS_SETTLED_NOT_CANCELLED, COMPLETE, values)
                    .await
            }
            PartsEnd::Failed(error) => {
                let values = vec![now, (":error", error_value(error))];
                self.update(id, PARTS_SETTLED, FAIL, values).await
            }
            PartsEnd::Cancelled => self.update(id, PARTS_SETTLED, CANCELLED, vec![now]).await,
        }
    }

    async fn delete_unstarted(&self, id: JobId) -> Result<(), StoreError> {
        let (names, values) = placeholders(&[UNSTARTED], &[], vec![]);
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

    /// Queries the `due` and then the `outbox` index, shard by shard, for entries
    /// before `before`, and reads their records (strongly consistent). The cursor
    /// names the index, the shard and where in it the last query stopped.
    async fn due(&self, before: u64, cursor: Option<&str>) -> Result<DuePage, StoreError> {
        let mut at = match cursor {
            Some(cursor) => DueCursor::decode(cursor)?,
            None => DueCursor::default(),
        };
        let mut page = DuePage::default();
        while let Some(index) = SWEEP_INDEXES.get(at.index) {
            let (shard_attr, _) = index.hash;
            let (at_attr, _) = index.range.expect("the sweep's indexes have a sort key");
            let condition = format!("#{shard_attr} = :shard AND #{at_attr} < :before");
            let (names, values) = placeholders(
                &[&condition],
                &[],
                vec![(":shard", n(at.shard.into())), (":before", n(before))],
            );
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index.name)
                .key_condition_expression(condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .limit(DUE_PAGE)
                .set_exclusive_start_key(at.start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            page.read += output.items().len();
            let ids = output
                .items()
                .iter()
                .map(item_id)
                .collect::<Result<Vec<_>, _>>()?;
            let (jobs, read) = self.batch_get(&ids, true).await?;
            page.read += read;
            // In index order; a record deleted since is skipped.
            page.jobs
                .extend(ids.iter().filter_map(|id| jobs.get(id).cloned()));
            match output.last_evaluated_key().filter(|key| !key.is_empty()) {
                Some(key) => at.start = Some(key.clone()),
                None => at.next_shard(),
            }
            if !page.jobs.is_empty() {
                break;
            }
        }
        page.next = (at.index < SWEEP_INDEXES.len()).then(|| at.encode());
        Ok(page)
    }

    /// Queries the `owner_created` index newest first and reads the records
    /// (eventually consistent, as the index is).
    async fn list(&self, query: &ListQuery<'_>) -> Result<JobPage, StoreError> {
        let mut page = JobPage::default();
        let mut start = query.after.map(|after| owner_key(query.owner, after));
        let mut examined = 0;
        loop {
            let want = (LIST_EXAMINE_LIMIT - examined).min(DUE_PAGE as usize);
            let (ids, last) = self.owner_page(query.owner, start.take(), want).await?;
            let (jobs, _) = self
                .batch_get(&ids.iter().map(|(id, _)| *id).collect::<Vec<_>>(), false)
                .await?;
            let mut rest = ids.iter().peekable();
            while let Some((id, created)) = rest.next() {
                examined += 1;
                if let Some(job) = jobs.get(id).filter(|job| query.matches(job)) {
                    page.jobs.push(job.clone());
                }
                let position = ListPosition {
                    created_at_epoch_ms: *created,
                    id: *id,
                };
                if page.jobs.len() >= query.limit || examined >= LIST_EXAMINE_LIMIT {
                    // More after this one? In this page, or (the page ended here) in
                    // the index.
                    let more = rest.peek().is_some()
                        || (last.is_some()
                            && !self
                                .owner_page(query.owner, Some(owner_key(query.owner, position)), 1)
                                .await?
                                .0
                                .is_empty());
                    page.next = more.then_some(position);
                    return Ok(page);
                }
            }
            match last {
                Some(key) => start = Some(key),
                None => return Ok(page),
            }
        }
    }

    /// Counts the owner's entries in the `owner_unfinished` index: every slice for a
    /// small bound, else only `sample`'s slice (scaled up), so a count reads at most
    /// about `at_most / 16` keys.
    async fn unfinished_estimate(
        &self,
        owner: &str,
        sample: JobId,
        at_most: u64,
    ) -> Result<u64, StoreError> {
        let (slices, cap) = if at_most < EXACT_COUNT_BELOW {
            ((0..OWNER_SLICES).collect::<Vec<_>>(), at_most + 1)
        } else {
            (
                vec![sample.shard(OWNER_SLICES)],
                at_most / u64::from(OWNER_SLICES) + 1,
            )
        };
        let counts = slices
            .iter()
            .map(|&slice| self.count_slice(owner, slice, cap));
        let counted: u64 = futures::future::try_join_all(counts)
            .await?
            .into_iter()
            .sum();
        let scale = u64::from(OWNER_SLICES) / slices.len() as u64;
        Ok(counted * scale)
    }

    async fn events_sent(
        &self,
        id: JobId,
        sent: &BTreeSet<EventKind>,
        finished_at: Option<u64>,
    ) -> Result<Job, StoreError> {
        let mut values = vec![(":kinds", kinds(sent))];
        let (condition, update) = match finished_at {
            Some(at) => {
                values.push((":finished", n(at)));
                (FINISHED_AT, LAST_EVENTS_SENT)
            }
            None => (NOT_FINISHED, EVENTS_SENT),
        };
        self.update(id, condition, update, values).await
    }

    async fn progress_event(
        &self,
        id: JobId,
        now_epoch_ms: u64,
        min_gap_ms: u64,
    ) -> Result<Job, StoreError> {
        let values = vec![
            (":progress", s(EventKind::Progress.as_str())),
            (":since", n(now_epoch_ms.saturating_sub(min_gap_ms))),
            (":now", n(now_epoch_ms)),
        ];
        self.update(id, PROGRESS_DUE, PROGRESS_SENT, values).await
    }

    async fn webhook_gone(&self, id: JobId) -> Result<Job, StoreError> {
        self.update(id, HAS_WEBHOOK, WEBHOOK_GONE, vec![]).await
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

    async fn add_activity(
        &self,
        minute_epoch_ms: u64,
        activity: &Activity,
    ) -> Result<(), StoreError> {
        let expires = (minute_epoch_ms + ACTIVITY_RETENTION_MS) / 1000;
        let (names, values) = placeholders(
            &[ADD_ACTIVITY],
            &[],
            vec![
                (":succeeded", n(activity.succeeded)),
                (":failed", n(activity.failed)),
                (":dead_lettered", n(activity.dead_lettered)),
                (":claimed", n(activity.claimed)),
                (":queue_wait_ms", n(activity.queue_wait_ms)),
                (":expires", n(expires)),
            ],
        );
        let shard = rand::random::<u32>() % ACTIVITY_SHARDS;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::activity_key(minute_epoch_ms, shard)))
            .update_expression(ADD_ACTIVITY)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_error)
    }

    async fn activity(
        &self,
        last_minute_epoch_ms: u64,
        minutes: u32,
    ) -> Result<Vec<MinuteActivity>, StoreError> {
        let keys = (0..u64::from(minutes))
            .filter_map(|back| last_minute_epoch_ms.checked_sub(back * MINUTE_MS))
            .flat_map(|minute| {
                (0..ACTIVITY_SHARDS).map(move |shard| Self::activity_key(minute, shard))
            })
            .collect();
        let number = |item: &Item, name: &str| -> u64 {
            match item.get(name) {
                Some(AttributeValue::N(text)) => text.parse().unwrap_or(0),
                _ => 0,
            }
        };
        let mut minutes: BTreeMap<u64, Activity> = BTreeMap::new();
        for item in self.batch_get_items(keys, false).await? {
            let Some(AttributeValue::S(pk)) = item.get(attr::PK) else {
                continue;
            };
            let Some(minute) = pk
                .strip_prefix("activity#")
                .and_then(|rest| rest.split('#').next())
                .and_then(|minute| minute.parse().ok())
            else {
                continue;
            };
            minutes.entry(minute).or_default().add(&Activity {
                succeeded: number(&item, attr::SUCCEEDED),
                failed: number(&item, attr::FAILED),
                dead_lettered: number(&item, attr::DEAD_LETTERED),
                claimed: number(&item, attr::CLAIMED),
                queue_wait_ms: number(&item, attr::QUEUE_WAIT_MS),
            });
        }
        Ok(minutes
            .into_iter()
            .map(|(minute_epoch_ms, activity)| MinuteActivity {
                minute_epoch_ms,
                activity,
            })
            .collect())
    }
}

/// Shards of a minute's activity: every worker batch writes one of them at random, so
/// one key takes an eighth of the batches (10,000 jobs/s in batches of ten: 125 writes/s
/// a key, under DynamoDB's 1,000 per partition key).
const ACTIVITY_SHARDS: u32 = 8;

/// Adds a batch's totals to a minute's activity item (made by the first batch).
const ADD_ACTIVITY: &str = "ADD #succeeded :succeeded, #failed :failed, #dead_lettered :dead_lettered, \
     #claimed :claimed, #queue_wait_ms :queue_wait_ms SET #expires_at_epoch_s = :expires";

/// Most index entries one query of the sweep or the listing reads.
const DUE_PAGE: i32 = 100;

/// Below this bound admission counts every slice of an owner's unfinished jobs.
const EXACT_COUNT_BELOW: u64 = 1_024;

/// The indexes the sweep reads, in order.
const SWEEP_INDEXES: [Index; 2] = [DUE_INDEX, OUTBOX_INDEX];

/// Where [`JobStore::due`] goes on: an index, a shard, and where in it.
#[derive(Debug, Default)]
struct DueCursor {
    index: usize,
    shard: u32,
    start: Option<Item>,
}

impl DueCursor {
    fn next_shard(&mut self) {
        self.start = None;
        self.shard += 1;
        if self.shard == DUE_SHARDS {
            self.shard = 0;
            self.index += 1;
        }
    }

    /// `index/shard` and, mid-shard, `/` and the start key as JSON of strings (the
    /// sweep's keys are the id, a string, and numbers).
    fn encode(&self) -> String {
        let mut cursor = format!("{}/{}", self.index, self.shard);
        if let Some(start) = &self.start {
            let key: serde_json::Map<String, Value> = start
                .iter()
                .filter_map(|(name, value)| match value {
                    AttributeValue::S(v) | AttributeValue::N(v) => {
                        Some((name.clone(), Value::String(v.clone())))
                    }
                    _ => None,
                })
                .collect();
            cursor.push('/');
            cursor.push_str(&Value::Object(key).to_string());
        }
        cursor
    }

    fn decode(cursor: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::Other(format!("bad sweep cursor {cursor:?}"));
        let mut fields = cursor.splitn(3, '/');
        let index = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let shard = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let start = match fields.next() {
            None => None,
            Some(json) => {
                let key: HashMap<String, String> = serde_json::from_str(json).map_err(|_| bad())?;
                Some(
                    key.into_iter()
                        .map(|(name, v)| {
                            let value = if name == attr::PK {
                                s(v)
                            } else {
                                AttributeValue::N(v)
                            };
                            (name, value)
                        })
                        .collect(),
                )
            }
        };
        Ok(DueCursor {
            index,
            shard,
            start,
        })
    }
}

/// The job id of an index entry.
fn item_id(item: &Item) -> Result<JobId, StoreError> {
    match item.get(attr::PK) {
        Some(AttributeValue::S(id)) => id
            .parse()
            .map_err(|_| StoreError::Other(format!("index entry with a bad id {id:?}"))),
        _ => Err(StoreError::Other("index entry without an id".into())),
    }
}

/// The listing index key of the job at `position` (a query's start key).
fn owner_key(owner: &str, position: ListPosition) -> Item {
    Item::from([
        (attr::PK.to_owned(), s(position.id.to_string())),
        (attr::OWNER.to_owned(), s(owner)),
        (attr::CREATED_AT.to_owned(), n(position.created_at_epoch_ms)),
    ])
}

fn decode(item: Item) -> Result<Job, StoreError> {
    from_item(&item).map_err(|e| StoreError::Other(e.to_string()))
}

/// The `#name` and `:value` maps for expressions. Every `#token` names the attribute
/// of the same name; `:token`s take the call's values or the shared constants. Only
/// placeholders the expressions use are sent (DynamoDB rejects unused ones).
fn placeholders(
    expressions: &[&str],
    call_names: &[(&str, String)],
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
            (":empty".to_owned(), AttributeValue::M(HashMap::new())),
        ])
        .collect();
    values.extend(call_values.into_iter().map(|(k, v)| (k.to_owned(), v)));

    let mut used_names = HashMap::new();
    let mut used_values = HashMap::new();
    for expression in expressions {
        for token in tokens(expression, '#') {
            let name = call_names
                .iter()
                .find(|(placeholder, _)| placeholder.strip_prefix('#') == Some(token))
                .map_or(token, |(_, name)| name.as_str());
            used_names.insert(format!("#{token}"), name.to_owned());
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
        let values = vec![(":token", s("t")), (":now", n(1)), (":due", n(2))];
        let (names, values) = placeholders(&[HELD, RELEASE], &[], values);
        let mut names: Vec<_> = names.into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "#due_at_epoch_ms",
                "#lease_owner",
                "#lease_until_epoch_ms",
                "#requeued_at_epoch_ms",
                "#status",
                "#version"
            ]
        );
        let mut values: Vec<_> = values.into_keys().collect();
        values.sort();
        assert_eq!(
            values,
            [":due", ":now", ":one", ":queued", ":running", ":token"]
        );
        let (names, _) = placeholders(
            &[PART_HELD, RELEASE_PART],
            &[("#part", "7".to_owned())],
            vec![(":token", s("t"))],
        );
        assert_eq!(names["#part"], "7");
        assert_eq!(names["#part_leases"], "part_leases");
    }
}
