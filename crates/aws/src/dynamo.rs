//! `JobStore` on DynamoDB: one table, `pk` = job id. Every write is one conditional
//! request: a create is a `PutItem` on an absent id, a transition an `UpdateItem` (or
//! `DeleteItem`) whose condition and update `expression.rs` translates from core's
//! transition.

use std::collections::{BTreeMap, HashMap};
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
use offpath_core::index::{DUE_SHARDS, DueMove, OWNER_SLICES, Reindex};
use offpath_core::transition::Effect;
use offpath_core::{
    Activity, DuePage, Job, JobId, JobPage, JobStore, LIST_EXAMINE_LIMIT, ListPosition, ListQuery,
    MinuteActivity, NewJob, StoreError, Transition,
};
use serde_json::Value;

use crate::expression::{Expression, Update};
use crate::item::{
    DUE_INDEX, Index, Item, OUTBOX_INDEX, OWNER_INDEX, OWNER_UNFINISHED_INDEX, attr, from_item, n,
    owner_slice, s, to_item,
};

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

    /// One conditional `UpdateItem` making `transition`'s changes.
    async fn update(
        &self,
        id: JobId,
        transition: &Transition,
        changes: &[offpath_core::transition::Change],
    ) -> Result<Job, StoreError> {
        let moves = Reindex::of(changes);
        // A job that joins the admission index again needs its owner's key.
        let owner = match moves.due {
            DueMove::Rejoin(_) => Some(self.get(id).await?.ok_or(StoreError::NotFound)?.owner),
            _ => None,
        };
        let mut expression = Expression::default();
        let condition = expression.condition(&transition.condition());
        let update = Update::of(&mut expression, id, changes, moves, owner.as_deref()).text();
        let (names, values) = expression.into_parts();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .condition_expression(condition)
            .update_expression(update)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(values)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => decode(output.attributes().cloned().unwrap_or_default()),
            Err(SdkError::ServiceError(err)) => match err.err() {
                UpdateItemError::ConditionalCheckFailedException(e) => {
                    self.conflict(id, e.item().cloned()).await
                }
                _ => Err(sdk_error(SdkError::ServiceError(err))),
            },
            Err(err) => Err(sdk_error(err)),
        }
    }

    /// One conditional `DeleteItem`: the job as it was.
    async fn delete(&self, id: JobId, transition: &Transition) -> Result<Job, StoreError> {
        let mut expression = Expression::default();
        let condition = expression.condition(&transition.condition());
        let (names, values) = expression.into_parts();
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(values)
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => decode(output.attributes().cloned().unwrap_or_default()),
            Err(SdkError::ServiceError(err)) => match err.err() {
                DeleteItemError::ConditionalCheckFailedException(e) => {
                    self.conflict(id, e.item().cloned()).await
                }
                _ => Err(sdk_error(SdkError::ServiceError(err))),
            },
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
        let mut expression = Expression::default();
        let condition = expression.equals(attr::OWNER, s(owner));
        let (names, values) = expression.into_parts();
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OWNER_INDEX.name)
            .key_condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(values)
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
        let mut expression = Expression::default();
        let condition = expression.equals(attr::OWNER_SLICE, s(owner_slice(owner, slice)));
        let (names, values) = expression.into_parts();
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
                .set_expression_attribute_values(values.clone())
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
        let mut expression = Expression::default();
        let absent = expression.absent();
        let (names, _) = expression.into_parts();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&job)))
            .condition_expression(absent)
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

    async fn apply(&self, id: JobId, transition: &Transition) -> Result<Job, StoreError> {
        match transition.effect() {
            Effect::Update(changes) => self.update(id, transition, &changes).await,
            Effect::Delete => self.delete(id, transition).await,
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
            let mut expression = Expression::default();
            let condition = expression.before(shard_attr, n(at.shard.into()), at_attr, n(before));
            let (names, values) = expression.into_parts();
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index.name)
                .key_condition_expression(condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(values)
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
        // Adds a batch's totals to a minute's activity item (made by the first batch).
        let mut expression = Expression::default();
        let totals = [
            (attr::SUCCEEDED, activity.succeeded),
            (attr::FAILED, activity.failed),
            (attr::DEAD_LETTERED, activity.dead_lettered),
            (attr::CLAIMED, activity.claimed),
            (attr::QUEUE_WAIT_MS, activity.queue_wait_ms),
        ]
        .map(|(name, total)| expression.plus(name, n(total)));
        let expires = expression.equals(attr::EXPIRES_AT, n(expires));
        let update = format!("ADD {} SET {expires}", totals.join(", "));
        let (names, values) = expression.into_parts();
        let shard = rand::random::<u32>() % ACTIVITY_SHARDS;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::activity_key(minute_epoch_ms, shard)))
            .update_expression(update)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(values)
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
