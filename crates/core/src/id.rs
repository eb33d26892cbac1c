//! The job id.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's id: a UUID, random (v7) or derived from the owner and idempotency key (v8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(Uuid);

impl JobId {
    /// The smallest id (all zeros), a bound for ranges.
    pub const MIN: JobId = JobId(Uuid::nil());
    /// The largest id (all ones), a bound for ranges.
    pub const MAX: JobId = JobId(Uuid::max());

    /// A fresh time-ordered id (UUIDv7) whose other 74 bits are all random, so it
    /// cannot be guessed from an id made just before it.
    pub fn random() -> Self {
        let random: [u8; 10] = rand::random();
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        JobId(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }

    /// The id derived from a 16-byte digest (see [`crate::idempotency::job_id_for_key`]).
    pub fn from_digest(bytes: [u8; 16]) -> Self {
        JobId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    /// Which of `shards` index partitions the job's entries go to: its id's low bits,
    /// which are random (v7) or a digest (v8), so jobs spread evenly.
    pub fn shard(&self, shards: u32) -> u32 {
        (self.0.as_u128() % u128::from(shards.max(1))) as u32
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A string that is not a job id.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a job id")]
pub struct InvalidJobId(pub String);

impl TryFrom<String> for JobId {
    type Error = InvalidJobId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.to_string()
    }
}

impl FromStr for JobId {
    type Err = InvalidJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical hyphenated form names a job; other spellings do not alias it.
        match Uuid::try_parse(s) {
            Ok(uuid) if uuid.hyphenated().to_string() == s => Ok(JobId(uuid)),
            _ => Err(InvalidJobId(s.chars().take(64).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_in_canonical_form() {
        let id = JobId::random();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!(id.to_string().to_uppercase().parse::<JobId>().is_err());
        assert!("../etc/passwd".parse::<JobId>().is_err());
        assert!(id.to_string().replace('-', "").parse::<JobId>().is_err());
    }
}
