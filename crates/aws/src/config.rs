//! Settings from the environment, checked at start-up.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Default DynamoDB table name.
pub const DEFAULT_TABLE: &str = "offpath-jobs";
/// Default jobs queue name.
pub const DEFAULT_QUEUE: &str = "offpath-jobs";
/// Default dead-letter queue name.
pub const DEFAULT_DLQ: &str = "offpath-jobs-dlq";
/// Default webhooks queue name.
pub const DEFAULT_WEBHOOK_QUEUE: &str = "offpath-webhooks";
/// Default webhooks dead-letter queue name.
pub const DEFAULT_WEBHOOK_DLQ: &str = "offpath-webhooks-dlq";
/// Default bucket name (for `offpath dev --backend aws`; a deployment names its own,
/// since bucket names are global).
pub const DEFAULT_BUCKET: &str = "offpath-blobs";

/// A setting that is missing or wrong. The message names it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{name} is not set: {hint}")]
    Missing {
        /// The variable.
        name: &'static str,
        /// What to set it to.
        hint: &'static str,
    },
    /// A variable holds a value that cannot work.
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot work.
        reason: String,
    },
}

/// Where offpath's resources live, from `OFFPATH_TABLE`, `OFFPATH_QUEUE_URL`,
/// `OFFPATH_DLQ_URL`, `OFFPATH_WEBHOOK_QUEUE_URL`, `OFFPATH_WEBHOOK_DLQ_URL` and
/// `OFFPATH_BUCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The jobs table.
    pub table: String,
    /// The jobs queue URL, if set.
    pub queue_url: Option<String>,
    /// The dead-letter queue URL, if set.
    pub dlq_url: Option<String>,
    /// The webhooks queue URL, if set.
    pub webhook_queue_url: Option<String>,
    /// The webhooks dead-letter queue URL, if set.
    pub webhook_dlq_url: Option<String>,
    /// The bucket, if set.
    pub bucket: Option<String>,
}

impl Settings {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let table = lookup("OFFPATH_TABLE").unwrap_or_else(|| DEFAULT_TABLE.to_owned());
        if !valid_table_name(&table) {
            return Err(ConfigError::Invalid {
                name: "OFFPATH_TABLE",
                value: table,
                reason: "a table name is 3-255 characters of a-z, A-Z, 0-9, '_', '-' and '.'"
                    .into(),
            });
        }
        let url = |name: &'static str| -> Result<Option<String>, ConfigError> {
            match lookup(name) {
                Some(value) if !value.starts_with("http://") && !value.starts_with("https://") => {
                    Err(ConfigError::Invalid {
                        name,
                        value,
                        reason: "expected a queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/offpath-jobs".into(),
                    })
                }
                other => Ok(other.filter(|v| !v.is_empty())),
            }
        };
        let bucket = lookup("OFFPATH_BUCKET").filter(|b| !b.is_empty());
        if let Some(bucket) = &bucket
            && !valid_bucket_name(bucket)
        {
            return Err(ConfigError::Invalid {
                name: "OFFPATH_BUCKET",
                value: bucket.clone(),
                reason: "a bucket name is 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit".into(),
            });
        }
        Ok(Settings {
            table,
            queue_url: url("OFFPATH_QUEUE_URL")?,
            dlq_url: url("OFFPATH_DLQ_URL")?,
            webhook_queue_url: url("OFFPATH_WEBHOOK_QUEUE_URL")?,
            webhook_dlq_url: url("OFFPATH_WEBHOOK_DLQ_URL")?,
            bucket,
        })
    }

    /// The bucket, required where resources are not created (the Lambda functions).
    pub fn require_bucket(&self) -> Result<&str, ConfigError> {
        self.bucket.as_deref().ok_or(ConfigError::Missing {
            name: "OFFPATH_BUCKET",
            hint: "set it to the blob bucket's name (the BucketName output of the stack)",
        })
    }

    /// The queue URL, required where resources are not created (the Lambda functions).
    pub fn require_queue_url(&self) -> Result<&str, ConfigError> {
        self.queue_url.as_deref().ok_or(ConfigError::Missing {
            name: "OFFPATH_QUEUE_URL",
            hint: "set it to the jobs queue URL (the QueueUrl output of the stack)",
        })
    }
}

impl Settings {
    /// The webhooks queue URL, required where resources are not created (the Lambda
    /// functions).
    pub fn require_webhook_queue_url(&self) -> Result<&str, ConfigError> {
        self.webhook_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing {
                name: "OFFPATH_WEBHOOK_QUEUE_URL",
                hint: "set it to the webhooks queue URL (the WebhooksQueueUrl output of the stack)",
            })
    }
}

fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Loads the standard AWS configuration and checks that a region is set. Calls time
/// out instead of hanging when an endpoint stops answering; the SDK's standard retry
/// mode retries throttling and transient errors.
pub async fn load_sdk_config() -> Result<SdkConfig, ConfigError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(30))
        .build();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await;
    if config.region().is_none() {
        return Err(ConfigError::Missing {
            name: "AWS_REGION",
            hint: "set it to the region of your resources, e.g. AWS_REGION=us-east-1",
        });
    }
    Ok(config)
}

/// The longest one DynamoDB or SQS call of the API function may take, retries
/// included. A submit makes at most four in a row (admission, PutItem, SendMessage, and
/// DeleteItem when the send failed): 20 s, inside the function's 28 s, so a hung
/// endpoint gets the client a 503 with `Retry-After` instead of a killed function.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `sdk` with the API function's call timeouts: [`API_CALL_TIMEOUT`] per call, 3 s per
/// attempt, 2 s to connect.
pub fn within_api_deadline(sdk: &SdkConfig) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(API_CALL_TIMEOUT)
        .build();
    sdk.to_builder().timeout_config(timeouts).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.table, "offpath-jobs");
        assert!(s.queue_url.is_none());
        assert!(
            s.require_queue_url()
                .unwrap_err()
                .to_string()
                .starts_with("OFFPATH_QUEUE_URL is not set")
        );
        let s = settings(&[
            ("OFFPATH_TABLE", "t1"),
            ("OFFPATH_QUEUE_URL", "http://localhost:4566/000000000000/q"),
        ]);
        assert!(
            s.unwrap_err()
                .to_string()
                .starts_with("OFFPATH_TABLE=\"t1\" is invalid")
        );
        assert!(
            settings(&[("OFFPATH_BUCKET", "Bad_Bucket")])
                .unwrap_err()
                .to_string()
                .starts_with("OFFPATH_BUCKET=\"Bad_Bucket\" is invalid")
        );
        assert!(
            settings(&[])
                .unwrap()
                .require_bucket()
                .unwrap_err()
                .to_string()
                .starts_with("OFFPATH_BUCKET is not set")
        );
        let s = settings(&[("OFFPATH_QUEUE_URL", "offpath-jobs")]).unwrap_err();
        assert!(
            s.to_string()
                .starts_with("OFFPATH_QUEUE_URL=\"offpath-jobs\" is invalid")
        );
    }
}
