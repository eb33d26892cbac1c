//! The DynamoDB item of a job. `input` and `output` are stored as JSON text (exact
//! floats, compact); `error` as a map `{code, message}`; times as numbers whose names
//! say their unit.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use offpath_core::{ErrorInfo, Job, JobStatus};

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
    pub(crate) const FINISHED_AT: &str = "finished_at_epoch_ms";
    pub(crate) const LEASE_OWNER: &str = "lease_owner";
    pub(crate) const LEASE_UNTIL: &str = "lease_until_epoch_ms";
    pub(crate) const CANCEL_REQUESTED: &str = "cancel_requested";
    pub(crate) const REQUEST_HASH: &str = "request_hash";
    pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency_key";
    /// The table's TTL attribute, epoch seconds.
    pub(crate) const EXPIRES_AT: &str = "expires_at_epoch_s";
    pub(crate) const VERSION: &str = "version";
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
        (attr::INPUT.to_owned(), s(job.input.to_string())),
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
        (attr::OUTPUT, job.output.as_ref().map(|o| s(o.to_string()))),
        (attr::ERROR, job.error.as_ref().map(error_value)),
        (attr::STARTED_AT, job.started_at_epoch_ms.map(n)),
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
    item
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
        input: r.json(attr::INPUT)?.unwrap_or_default(),
        status: r.parsed::<JobStatus>(attr::STATUS)?,
        output: r.json(attr::OUTPUT)?,
        error: r.error()?,
        attempts: r.number(attr::ATTEMPTS)?.unwrap_or(0) as u32,
        created_at_epoch_ms: r.number(attr::CREATED_AT)?.unwrap_or(0),
        started_at_epoch_ms: r.number(attr::STARTED_AT)?,
        finished_at_epoch_ms: r.number(attr::FINISHED_AT)?,
        lease_owner: r.optional_string(attr::LEASE_OWNER)?,
        lease_until_epoch_ms: r.number(attr::LEASE_UNTIL)?,
        cancel_requested: matches!(
            item.get(attr::CANCEL_REQUESTED),
            Some(AttributeValue::Bool(true))
        ),
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

    fn json(&self, name: &'static str) -> Result<Option<serde_json::Value>, CorruptItem> {
        self.optional_string(name)?
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| Self::corrupt(name, e.to_string()))
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
            input: json!({"texts": ["a"]}),
            request_hash: "abc".into(),
            idempotency_key: Some("k".into()),
            created_at_epoch_ms: 10,
            expires_at_epoch_s: 20,
        });
        assert_eq!(from_item(&to_item(&job)).unwrap(), job);
        job.status = JobStatus::Failed;
        job.error = Some(ErrorInfo::new("invalid_input", "bad"));
        job.output = Some(json!([0.25, -1.5e-8]));
        job.lease_owner = Some("w".into());
        job.lease_until_epoch_ms = Some(99);
        job.started_at_epoch_ms = Some(11);
        job.finished_at_epoch_ms = Some(12);
        job.cancel_requested = true;
        assert_eq!(from_item(&to_item(&job)).unwrap(), job);
    }

    #[test]
    fn corrupt_items_name_the_attribute() {
        let mut item = to_item(&Job::from_new(NewJob {
            id: JobId::random(),
            owner: "o".into(),
            task: TaskName::new("embed"),
            input: json!({}),
            request_hash: String::new(),
            idempotency_key: None,
            created_at_epoch_ms: 0,
            expires_at_epoch_s: 0,
        }));
        item.insert(attr::STATUS.into(), s("exploded"));
        let err = from_item(&item).unwrap_err().to_string();
        assert!(err.contains("attribute status"), "{err}");
    }
}
