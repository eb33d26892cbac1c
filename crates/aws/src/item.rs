//! The DynamoDB item of a job. `input` and `output` are stored as JSON text (exact
//! floats, compact); `error` as a map `{code, message}`; times as numbers whose names
//! say their unit.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use offpath_core::index::{DUE_SHARDS, OWNER_SLICES};
use offpath_core::{ErrorInfo, EventKind, Job, JobStatus, JsonText, Lease, Parts, Webhook};

/// Attribute names.
pub(crate) mod attr {
    pub(crate) const PK: &str = "pk";
    pub(crate) const OWNER: &str = "owner";
    pub(crate) const TASK: &str = "task";
    pub(crate) const INPUT: &str = "input";
    pub(crate) const STATUS: &str = "status";
    pub(crate) const OUTPUT: &str = "output";
    pub(crate) const ERROR: &str = "error";
    pub(crate) const ATTEMPTS: &str = "attempts";
    pub(crate) const CREATED_AT: &str = "created_at_epoch_ms";
    pub(crate) const STARTED_AT: &str = "started_at_epoch_ms";
    pub(crate) const REQUEUED_AT: &str = "requeued_at_epoch_ms";
    pub(crate) const RESENT_AT: &str = "resent_at_epoch_ms";
    pub(crate) const FINISHED_AT: &str = "finished_at_epoch_ms";
    pub(crate) const LEASE_OWNER: &str = "lease_owner";
    pub(crate) const LEASE_UNTIL: &str = "lease_until_epoch_ms";
    pub(crate) const CANCEL_REQUESTED: &str = "cancel_requested";
    pub(crate) const REQUEST_HASH: &str = "request_hash";
    pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency_key";
    /// The table's TTL attribute, epoch seconds.
    pub(crate) const EXPIRES_AT: &str = "expires_at_epoch_s";
    pub(crate) const VERSION: &str = "version";
    /// Jobs that run in parts: how many parts, chunks in all and done, the parts
    /// settled (a number set), dead parts (part -> error), part leases (part ->
    /// {token, until}), part attempts (part -> count), when a part was last touched.
    pub(crate) const PARTS_TOTAL: &str = "parts_total";
    pub(crate) const CHUNKS_TOTAL: &str = "chunks_total";
    pub(crate) const CHUNKS_DONE: &str = "chunks_done";
    pub(crate) const PARTS_SETTLED: &str = "parts_settled";
    pub(crate) const PARTS_DEAD: &str = "parts_dead";
    pub(crate) const PART_LEASES: &str = "part_leases";
    pub(crate) const PART_ATTEMPTS: &str = "part_attempts";
    pub(crate) const PARTS_TOUCHED_AT: &str = "parts_touched_at_epoch_ms";
    /// The webhook: its URL, subscribed kinds (a string set), the outbox of kinds not
    /// yet sent (a string set, absent when empty: the sweep finds jobs by it), whether
    /// the receiver is gone, when the last progress event went.
    pub(crate) const WEBHOOK_URL: &str = "webhook_url";
    pub(crate) const WEBHOOK_EVENTS: &str = "webhook_events";
    pub(crate) const WEBHOOK_UNSENT: &str = "webhook_unsent";
    pub(crate) const WEBHOOK_GONE: &str = "webhook_gone";
    pub(crate) const WEBHOOK_PROGRESS_AT: &str = "webhook_progress_at_epoch_ms";
    /// A part lease's fields.
    pub(crate) const TOKEN: &str = "token";
    pub(crate) const UNTIL: &str = "until";
    /// The sweep's index of unfinished jobs (`due`): the job id's shard among
    /// [`DUE_SHARDS`](offpath_core::index::DUE_SHARDS) and
    /// [`Job::unfinished_due_at`]; both removed by the write that finishes the job.
    pub(crate) const DUE_SHARD: &str = "due_shard";
    pub(crate) const DUE_AT: &str = "due_at_epoch_ms";
    /// The sweep's index of webhook outboxes (`outbox`): the shard, on jobs whose
    /// outbox holds events, and when an event became due (set by every claim and finish;
    /// only jobs with the shard are in the index).
    pub(crate) const OUTBOX_SHARD: &str = "outbox_shard";
    pub(crate) const OUTBOX_AT: &str = "outbox_at_epoch_ms";
    /// The admission index (`owner_unfinished`): `owner#slice` while the job is
    /// unfinished.
    pub(crate) const OWNER_SLICE: &str = "owner_slice";
    /// A shard of a minute's activity (`pk` = `activity#<minute>#<shard>`): the totals of
    /// [`offpath_core::Activity`].
    pub(crate) const SUCCEEDED: &str = "succeeded";
    pub(crate) const FAILED: &str = "failed";
    pub(crate) const DEAD_LETTERED: &str = "dead_lettered";
    pub(crate) const CLAIMED: &str = "claimed";
    pub(crate) const QUEUE_WAIT_MS: &str = "queue_wait_ms";
}

/// A global secondary index of the jobs table (all project keys only: an entry changes
/// only when its keys do, and readers fetch the records they need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Index {
    /// The index name.
    pub name: &'static str,
    /// Partition key attribute and its type (`S` or `N`).
    pub hash: (&'static str, &'static str),
    /// Sort key attribute and its type, if any.
    pub range: Option<(&'static str, &'static str)>,
}

/// The sweep's index of unfinished jobs.
pub(crate) const DUE_INDEX: Index = Index {
    name: "due",
    hash: (attr::DUE_SHARD, "N"),
    range: Some((attr::DUE_AT, "N")),
};
/// The sweep's index of webhook outboxes with due events.
pub(crate) const OUTBOX_INDEX: Index = Index {
    name: "outbox",
    hash: (attr::OUTBOX_SHARD, "N"),
    range: Some((attr::OUTBOX_AT, "N")),
};
/// Listing: every job by owner and creation time.
pub(crate) const OWNER_INDEX: Index = Index {
    name: "owner_created",
    hash: (attr::OWNER, "S"),
    range: Some((attr::CREATED_AT, "N")),
};
/// Admission: an owner's unfinished jobs, in slices.
pub(crate) const OWNER_UNFINISHED_INDEX: Index = Index {
    name: "owner_unfinished",
    hash: (attr::OWNER_SLICE, "S"),
    range: None,
};
/// Every index of the jobs table: `template.yaml` and the LocalStack init script
/// declare the same (tests/template.rs compares them).
pub const INDEXES: [Index; 4] = [DUE_INDEX, OUTBOX_INDEX, OWNER_INDEX, OWNER_UNFINISHED_INDEX];

/// The `owner_unfinished` key of `owner`'s jobs in `slice`.
pub(crate) fn owner_slice(owner: &str, slice: u32) -> String {
    format!("{owner}#{slice}")
}

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn error_value(error: &ErrorInfo) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("code".to_owned(), s(&error.code)),
        ("message".to_owned(), s(&error.message)),
    ]))
}

/// The item for a job.
pub(crate) fn to_item(job: &Job) -> Item {
    let mut item = Item::from([
        (attr::PK.to_owned(), s(job.id.to_string())),
        (attr::OWNER.to_owned(), s(&job.owner)),
        (attr::TASK.to_owned(), s(job.task.as_str())),
        (attr::INPUT.to_owned(), s(job.input.get())),
        (attr::STATUS.to_owned(), s(job.status.as_str())),
        (attr::ATTEMPTS.to_owned(), n(job.attempts.into())),
        (attr::CREATED_AT.to_owned(), n(job.created_at_epoch_ms)),
        (
            attr::CANCEL_REQUESTED.to_owned(),
            AttributeValue::Bool(job.cancel_requested),
        ),
        (attr::REQUEST_HASH.to_owned(), s(&job.request_hash)),
        (attr::EXPIRES_AT.to_owned(), n(job.expires_at_epoch_s)),
        (attr::VERSION.to_owned(), n(job.version)),
    ]);
    let optional = [
        (attr::OUTPUT, job.output.as_ref().map(|o| s(o.get()))),
        (attr::ERROR, job.error.as_ref().map(error_value)),
        (attr::STARTED_AT, job.started_at_epoch_ms.map(n)),
        (attr::REQUEUED_AT, job.requeued_at_epoch_ms.map(n)),
        (attr::RESENT_AT, job.resent_at_epoch_ms.map(n)),
        (attr::FINISHED_AT, job.finished_at_epoch_ms.map(n)),
        (attr::LEASE_OWNER, job.lease_owner.as_ref().map(s)),
        (attr::LEASE_UNTIL, job.lease_until_epoch_ms.map(n)),
        (attr::IDEMPOTENCY_KEY, job.idempotency_key.as_ref().map(s)),
    ];
    item.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v))),
    );
    if let Some(parts) = &job.parts {
        item.extend(parts_attributes(parts));
    }
    if let Some(webhook) = &job.webhook {
        item.extend(webhook_attributes(webhook));
    }
    item.extend(index_attributes(job));
    item
}

/// The job's index keys, as its state implies ([`offpath_core::index`]).
fn index_attributes(job: &Job) -> Vec<(String, AttributeValue)> {
    let shard = n(job.id.shard(DUE_SHARDS).into());
    let mut attributes = Vec::new();
    if let Some(at) = job.unfinished_due_at() {
        attributes.extend([
            (attr::DUE_SHARD.to_owned(), shard.clone()),
            (attr::DUE_AT.to_owned(), n(at)),
            (
                attr::OWNER_SLICE.to_owned(),
                s(owner_slice(&job.owner, job.id.shard(OWNER_SLICES))),
            ),
        ]);
    }
    if job.has_unsent_events() {
        attributes.push((attr::OUTBOX_SHARD.to_owned(), shard));
    }
    if let Some(at) = job.outbox_due_at() {
        attributes.push((attr::OUTBOX_AT.to_owned(), n(at)));
    }
    attributes
}

/// A set of event kinds as a string set.
pub(crate) fn kinds(kinds: &std::collections::BTreeSet<EventKind>) -> AttributeValue {
    AttributeValue::Ss(kinds.iter().map(|k| k.as_str().to_owned()).collect())
}

/// The attributes of a job's webhook (sets cannot be empty: an empty one is absent).
fn webhook_attributes(webhook: &Webhook) -> Vec<(String, AttributeValue)> {
    let mut attributes = vec![
        (attr::WEBHOOK_URL.to_owned(), s(&webhook.url)),
        (
            attr::WEBHOOK_GONE.to_owned(),
            AttributeValue::Bool(webhook.gone),
        ),
    ];
    if !webhook.events.is_empty() {
        attributes.push((attr::WEBHOOK_EVENTS.to_owned(), kinds(&webhook.events)));
    }
    if !webhook.unsent.is_empty() {
        attributes.push((attr::WEBHOOK_UNSENT.to_owned(), kinds(&webhook.unsent)));
    }
    if let Some(at) = webhook.progress_at_epoch_ms {
        attributes.push((attr::WEBHOOK_PROGRESS_AT.to_owned(), n(at)));
    }
    attributes
}

/// The attributes of a job's parts.
fn parts_attributes(parts: &Parts) -> Vec<(String, AttributeValue)> {
    let map =
        |entries: Vec<(String, AttributeValue)>| AttributeValue::M(entries.into_iter().collect());
    let mut attributes = vec![
        (attr::PARTS_TOTAL.to_owned(), n(parts.total.into())),
        (attr::CHUNKS_TOTAL.to_owned(), n(parts.chunks_total)),
        (attr::CHUNKS_DONE.to_owned(), n(parts.chunks_done)),
        (
            attr::PARTS_DEAD.to_owned(),
            map(parts
                .dead
                .iter()
                .map(|(p, e)| (p.to_string(), s(e)))
                .collect()),
        ),
        (
            attr::PART_LEASES.to_owned(),
            map(parts
                .leases
                .iter()
                .map(|(p, l)| (p.to_string(), part_lease(l)))
                .collect()),
        ),
        (
            attr::PART_ATTEMPTS.to_owned(),
            map(parts
                .attempts
                .iter()
                .map(|(p, a)| (p.to_string(), n((*a).into())))
                .collect()),
        ),
        (
            attr::PARTS_TOUCHED_AT.to_owned(),
            n(parts.touched_at_epoch_ms),
        ),
    ];
    // A set cannot be empty: no attribute is no part settled.
    if !parts.settled.is_empty() {
        let settled = parts.settled.iter().map(u32::to_string).collect();
        attributes.push((attr::PARTS_SETTLED.to_owned(), AttributeValue::Ns(settled)));
    }
    attributes
}

/// A part's lease as a map.
pub(crate) fn part_lease(lease: &Lease) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        (attr::TOKEN.to_owned(), s(&lease.token)),
        (attr::UNTIL.to_owned(), n(lease.until_epoch_ms)),
    ]))
}

/// An item that is not a job record.
#[derive(Debug, thiserror::Error)]
#[error("stored job item is corrupt: attribute {attribute}: {problem}")]
pub(crate) struct CorruptItem {
    attribute: &'static str,
    problem: String,
}

/// The job an item holds.
pub(crate) fn from_item(item: &Item) -> Result<Job, CorruptItem> {
    let r = Reader(item);
    Ok(Job {
        id: r.parsed(attr::PK)?,
        owner: r.string(attr::OWNER)?,
        task: r.parsed(attr::TASK)?,
        input: r
            .json(attr::INPUT)?
            .ok_or_else(|| Reader::corrupt(attr::INPUT, "missing"))?,
        status: r.parsed::<JobStatus>(attr::STATUS)?,
        output: r.json(attr::OUTPUT)?,
        error: r.error()?,
        attempts: r.number(attr::ATTEMPTS)?.unwrap_or(0) as u32,
        created_at_epoch_ms: r.number(attr::CREATED_AT)?.unwrap_or(0),
        started_at_epoch_ms: r.number(attr::STARTED_AT)?,
        requeued_at_epoch_ms: r.number(attr::REQUEUED_AT)?,
        resent_at_epoch_ms: r.number(attr::RESENT_AT)?,
        finished_at_epoch_ms: r.number(attr::FINISHED_AT)?,
        lease_owner: r.optional_string(attr::LEASE_OWNER)?,
        lease_until_epoch_ms: r.number(attr::LEASE_UNTIL)?,
        cancel_requested: matches!(
            item.get(attr::CANCEL_REQUESTED),
            Some(AttributeValue::Bool(true))
        ),
        parts: r.parts()?,
        webhook: r.webhook()?,
        request_hash: r.optional_string(attr::REQUEST_HASH)?.unwrap_or_default(),
        idempotency_key: r.optional_string(attr::IDEMPOTENCY_KEY)?,
        expires_at_epoch_s: r.number(attr::EXPIRES_AT)?.unwrap_or(0),
        version: r.number(attr::VERSION)?.unwrap_or(0),
    })
}

struct Reader<'a>(&'a Item);

impl Reader<'_> {
    fn corrupt(attribute: &'static str, problem: impl Into<String>) -> CorruptItem {
        CorruptItem {
            attribute,
            problem: problem.into(),
        }
    }

    fn optional_string(&self, name: &'static str) -> Result<Option<String>, CorruptItem> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(Self::corrupt(name, "expected a string")),
        }
    }

    fn string(&self, name: &'static str) -> Result<String, CorruptItem> {
        self.optional_string(name)?
            .ok_or_else(|| Self::corrupt(name, "missing"))
    }

    fn parsed<T: std::str::FromStr>(&self, name: &'static str) -> Result<T, CorruptItem>
    where
        T::Err: std::fmt::Display,
    {
        self.string(name)?
            .parse()
            .map_err(|e: T::Err| Self::corrupt(name, e.to_string()))
    }

    fn number(&self, name: &'static str) -> Result<Option<u64>, CorruptItem> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse()
                .map(Some)
                .map_err(|_| Self::corrupt(name, format!("{v:?} is not a whole number"))),
            Some(_) => Err(Self::corrupt(name, "expected a number")),
        }
    }

    /// JSON text, checked but not parsed into a tree.
    fn json(&self, name: &'static str) -> Result<Option<JsonText>, CorruptItem> {
        self.optional_string(name)?
            .map(JsonText::from_text)
            .transpose()
            .map_err(|e| Self::corrupt(name, e.to_string()))
    }

    /// The map at `name` (empty when absent).
    fn map(&self, name: &'static str) -> Result<Item, CorruptItem> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(Item::new()),
            Some(AttributeValue::M(map)) => Ok(map.clone()),
            Some(_) => Err(Self::corrupt(name, "expected a map")),
        }
    }

    /// The entries of the map at `name`, keyed by part number.
    fn part_map<T>(
        &self,
        name: &'static str,
        value: impl Fn(&AttributeValue) -> Option<T>,
    ) -> Result<std::collections::BTreeMap<u32, T>, CorruptItem> {
        self.map(name)?
            .iter()
            .map(|(part, v)| match (part.parse(), value(v)) {
                (Ok(part), Some(v)) => Ok((part, v)),
                _ => Err(Self::corrupt(name, format!("bad entry for part {part:?}"))),
            })
            .collect()
    }

    fn parts(&self) -> Result<Option<Parts>, CorruptItem> {
        let Some(total) = self.number(attr::PARTS_TOTAL)? else {
            return Ok(None);
        };
        let number = |v: &AttributeValue| match v {
            AttributeValue::N(x) => x.parse::<u64>().ok(),
            _ => None,
        };
        let settled = match self.0.get(attr::PARTS_SETTLED) {
            None | Some(AttributeValue::Null(_)) => Default::default(),
            Some(AttributeValue::Ns(set)) => set
                .iter()
                .map(|x| x.parse())
                .collect::<Result<_, _>>()
                .map_err(|_| Self::corrupt(attr::PARTS_SETTLED, "not whole numbers"))?,
            Some(_) => return Err(Self::corrupt(attr::PARTS_SETTLED, "expected a number set")),
        };
        Ok(Some(Parts {
            total: total as u32,
            chunks_total: self.number(attr::CHUNKS_TOTAL)?.unwrap_or(0),
            chunks_done: self.number(attr::CHUNKS_DONE)?.unwrap_or(0),
            settled,
            dead: self.part_map(attr::PARTS_DEAD, |v| v.as_s().ok().cloned())?,
            leases: self.part_map(attr::PART_LEASES, |v| {
                let lease = v.as_m().ok()?;
                Some(Lease {
                    token: lease.get(attr::TOKEN)?.as_s().ok()?.clone(),
                    until_epoch_ms: number(lease.get(attr::UNTIL)?)?,
                })
            })?,
            attempts: self.part_map(attr::PART_ATTEMPTS, |v| number(v).map(|a| a as u32))?,
            touched_at_epoch_ms: self.number(attr::PARTS_TOUCHED_AT)?.unwrap_or(0),
        }))
    }

    /// The string set at `name` as event kinds (empty when absent).
    fn kinds(
        &self,
        name: &'static str,
    ) -> Result<std::collections::BTreeSet<EventKind>, CorruptItem> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(Default::default()),
            Some(AttributeValue::Ss(set)) => set
                .iter()
                .map(|kind| kind.parse())
                .collect::<Result<_, _>>()
                .map_err(|e: offpath_core::webhook::UnknownEventKind| {
                    Self::corrupt(name, e.to_string())
                }),
            Some(_) => Err(Self::corrupt(name, "expected a string set")),
        }
    }

    fn webhook(&self) -> Result<Option<Webhook>, CorruptItem> {
        let Some(url) = self.optional_string(attr::WEBHOOK_URL)? else {
            return Ok(None);
        };
        Ok(Some(Webhook {
            url,
            events: self.kinds(attr::WEBHOOK_EVENTS)?,
            unsent: self.kinds(attr::WEBHOOK_UNSENT)?,
            gone: matches!(
                self.0.get(attr::WEBHOOK_GONE),
                Some(AttributeValue::Bool(true))
            ),
            progress_at_epoch_ms: self.number(attr::WEBHOOK_PROGRESS_AT)?,
        }))
    }

    fn error(&self) -> Result<Option<ErrorInfo>, CorruptItem> {
        let map = match self.0.get(attr::ERROR) {
            None | Some(AttributeValue::Null(_)) => return Ok(None),
            Some(AttributeValue::M(map)) => map,
            Some(_) => return Err(Self::corrupt(attr::ERROR, "expected a map")),
        };
        let field = |key: &str| match map.get(key) {
            Some(AttributeValue::S(v)) => Ok(v.clone()),
            _ => Err(Self::corrupt(
                attr::ERROR,
                format!("{key} must be a string"),
            )),
        };
        Ok(Some(ErrorInfo::new(field("code")?, field("message")?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use offpath_core::{JobId, NewJob, TaskName};
    use serde_json::json;

    #[test]
    fn jobs_round_trip() {
        let mut job = Job::from_new(NewJob {
            id: JobId::random(),
            owner: "alice".into(),
            task: TaskName::new("embed"),
            input: JsonText::of(&json!({"texts": ["a"]})).unwrap(),
            request_hash: "abc".into(),
            idempotency_key: Some("k".into()),
            created_at_epoch_ms: 10,
            expires_at_epoch_s: 20,
            webhook: None,
        });
        assert_eq!(from_item(&to_item(&job)).unwrap(), job);
        job.webhook = Some(Webhook::new(
            "https://example.com/h",
            [EventKind::Started, EventKind::Progress].into(),
        ));
        assert_eq!(from_item(&to_item(&job)).unwrap(), job);
        job.webhook.as_mut().unwrap().unsent.clear();
        job.webhook.as_mut().unwrap().progress_at_epoch_ms = Some(9);
        assert!(!to_item(&job).contains_key(attr::WEBHOOK_UNSENT));
        assert_eq!(from_item(&to_item(&job)).unwrap(), job);
        job.status = JobStatus::Failed;
        job.error = Some(ErrorInfo::new("invalid_input", "bad"));
        job.output = Some(JsonText::of(&json!([0.25, -1.5e-8])).unwrap());
        job.lease_owner = Some("w".into());
        job.lease_until_epoch_ms = Some(99);
        job.started_at_epoch_ms = Some(11);
        job.finished_at_epoch_ms = Some(12);
        job.requeued_at_epoch_ms = Some(13);
        job.resent_at_epoch_ms = Some(14);
        job.cancel_requested = true;
        assert_eq!(from_item(&to_item(&job)).unwrap(), job);
        job.parts = Some(Parts {
            total: 3,
            chunks_total: 70,
            chunks_done: 32,
            settled: [0, 2].into(),
            dead: [(2, "part 2 of 3: gave up".to_owned())].into(),
            leases: [(
                1,
                Lease {
                    token: "w".into(),
                    until_epoch_ms: 5,
                },
            )]
            .into(),
            attempts: [(0, 1), (1, 2), (2, 5)].into(),
            touched_at_epoch_ms: 4,
        });
        assert_eq!(from_item(&to_item(&job)).unwrap(), job);
    }

    #[test]
    fn corrupt_items_name_the_attribute() {
        let mut item = to_item(&Job::from_new(NewJob {
            id: JobId::random(),
            owner: "o".into(),
            task: TaskName::new("embed"),
            input: JsonText::of(&json!({})).unwrap(),
            request_hash: String::new(),
            idempotency_key: None,
            created_at_epoch_ms: 0,
            expires_at_epoch_s: 0,
            webhook: None,
        }));
        item.insert(attr::STATUS.into(), s("exploded"));
        let err = from_item(&item).unwrap_err().to_string();
        assert!(err.contains("attribute status"), "{err}");
    }
}
