//! Creates the table, queue, dead-letter queue and bucket if they are missing, with
//! the settings `template.yaml` declares (a test compares the two).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use offpath_core::blob::LIFETIMES;
use offpath_core::{Ports, QueueError};

use crate::config::{
    DEFAULT_BUCKET, DEFAULT_DLQ, DEFAULT_QUEUE, DEFAULT_TABLE, DEFAULT_WEBHOOK_DLQ,
    DEFAULT_WEBHOOK_QUEUE,
};
use crate::item::{INDEXES, Index, attr};
use crate::sqs::queue_arn;
use crate::{DynamoStore, S3Blobs, SqsQueue};

pub use offpath_core::queue::{QueueSettings, WORKER_TIMEOUT};

/// Names of the resources to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    /// Table name.
    pub table: String,
    /// Jobs queue name.
    pub queue: String,
    /// Dead-letter queue name.
    pub dlq: String,
    /// Webhooks queue name.
    pub webhooks: String,
    /// Webhooks dead-letter queue name.
    pub webhooks_dlq: String,
    /// Bucket of uploads, document parts and results.
    pub bucket: String,
}

impl Default for ResourceNames {
    fn default() -> Self {
        ResourceNames {
            table: DEFAULT_TABLE.into(),
            queue: DEFAULT_QUEUE.into(),
            dlq: DEFAULT_DLQ.into(),
            webhooks: DEFAULT_WEBHOOK_QUEUE.into(),
            webhooks_dlq: DEFAULT_WEBHOOK_DLQ.into(),
            bucket: DEFAULT_BUCKET.into(),
        }
    }
}

/// What exists after provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Table name.
    pub table: String,
    /// Jobs queue URL.
    pub queue_url: String,
    /// Dead-letter queue URL.
    pub dlq_url: String,
    /// Webhooks queue URL.
    pub webhooks_url: String,
    /// Webhooks dead-letter queue URL.
    pub webhooks_dlq_url: String,
    /// Bucket name.
    pub bucket: String,
}

impl Resources {
    /// The DynamoDB store and the SQS queues of these resources, as ports.
    pub async fn ports(&self, sdk: &SdkConfig) -> Result<Ports, QueueError> {
        Ok(Ports {
            store: Arc::new(DynamoStore::from_sdk(sdk, &self.table)),
            queue: Arc::new(SqsQueue::from_sdk(sdk, &self.queue_url).await?),
            blobs: Arc::new(S3Blobs::from_sdk(sdk, &self.bucket)),
            dlq: Some(Arc::new(SqsQueue::from_sdk(sdk, &self.dlq_url).await?)),
            webhooks: Arc::new(SqsQueue::from_sdk(sdk, &self.webhooks_url).await?),
            webhooks_dlq: Some(Arc::new(
                SqsQueue::from_sdk(sdk, &self.webhooks_dlq_url).await?,
            )),
        })
    }
}

/// A resource could not be created or checked.
#[derive(Debug, thiserror::Error)]
#[error("could not {action}: {detail}")]
pub struct ProvisionError {
    action: String,
    detail: String,
}

fn failed(action: impl Into<String>, err: impl std::error::Error) -> ProvisionError {
    ProvisionError {
        action: action.into(),
        detail: DisplayErrorContext(err).to_string(),
    }
}

/// Creates whatever of the table, the queues (jobs with `settings`, webhooks with
/// `webhook_settings`), their dead-letter queues and the bucket is missing. Safe to
/// run again and from several processes at once.
pub async fn provision(
    sdk: &SdkConfig,
    names: &ResourceNames,
    settings: &QueueSettings,
    webhook_settings: &QueueSettings,
) -> Result<Resources, ProvisionError> {
    ensure_table(&aws_sdk_dynamodb::Client::new(sdk), &names.table).await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let (queue_url, dlq_url) = ensure_queues(&sqs, &names.queue, &names.dlq, settings).await?;
    let (webhooks_url, webhooks_dlq_url) =
        ensure_queues(&sqs, &names.webhooks, &names.webhooks_dlq, webhook_settings).await?;
    ensure_bucket(&crate::s3::client(sdk), &names.bucket).await?;
    Ok(Resources {
        table: names.table.clone(),
        queue_url,
        dlq_url,
        webhooks_url,
        webhooks_dlq_url,
        bucket: names.bucket.clone(),
    })
}

/// Creates a queue named `queue` with `settings` and its dead-letter queue `dlq`
/// unless they exist; returns their URLs.
async fn ensure_queues(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    dlq: &str,
    settings: &QueueSettings,
) -> Result<(String, String), ProvisionError> {
    let dlq_attributes = HashMap::from([(
        QueueAttributeName::MessageRetentionPeriod,
        settings.dlq_retention.as_secs().to_string(),
    )]);
    let dlq_url = ensure_queue(sqs, dlq, dlq_attributes).await?;
    let dlq_arn = queue_arn(sqs, &dlq_url)
        .await
        .map_err(|e| failed(format!("read the ARN of queue {dlq_url}"), e))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": settings.max_receive_count,
    });
    let queue_attributes = HashMap::from([
        (
            QueueAttributeName::VisibilityTimeout,
            settings.visibility_timeout.as_secs().to_string(),
        ),
        (
            QueueAttributeName::MessageRetentionPeriod,
            settings.retention.as_secs().to_string(),
        ),
        (QueueAttributeName::RedrivePolicy, redrive.to_string()),
    ]);
    let queue_url = ensure_queue(sqs, queue, queue_attributes).await?;
    Ok((queue_url, dlq_url))
}

/// Creates the bucket unless it exists: private, encrypted (SSE-S3), and with the
/// lifecycle rules of [`LIFETIMES`] (each prefix's objects expire, unfinished
/// multipart uploads are aborted after a day).
pub async fn ensure_bucket(
    client: &aws_sdk_s3::Client,
    bucket: &str,
) -> Result<(), ProvisionError> {
    use aws_sdk_s3::types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
        LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, PublicAccessBlockConfiguration,
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    let created = client.create_bucket().bucket(bucket).send().await;
    if let Err(err) = created {
        let exists = err
            .code()
            .is_some_and(|c| c == "BucketAlreadyOwnedByYou" || c == "BucketAlreadyExists");
        if !exists {
            return Err(failed(format!("create bucket {bucket}"), err));
        }
    }
    let block = PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .block_public_policy(true)
        .ignore_public_acls(true)
        .restrict_public_buckets(true)
        .build();
    client
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(block)
        .send()
        .await
        .map_err(|e| failed(format!("block public access to bucket {bucket}"), e))?;
    let encryption = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::Aes256)
                        .build()
                        .expect("complete encryption default"),
                )
                .build(),
        )
        .build()
        .expect("complete encryption configuration");
    client
        .put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(encryption)
        .send()
        .await
        .map_err(|e| failed(format!("encrypt bucket {bucket}"), e))?;
    let rules = LIFETIMES
        .iter()
        .map(|(prefix, lifetime)| {
            LifecycleRule::builder()
                .id(format!("expire-{}", prefix.trim_end_matches('/')))
                .filter(LifecycleRuleFilter::builder().prefix(*prefix).build())
                .status(ExpirationStatus::Enabled)
                .expiration(
                    LifecycleExpiration::builder()
                        .days(lifetime_days(*lifetime))
                        .build(),
                )
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(1)
                        .build(),
                )
                .build()
                .expect("complete lifecycle rule")
        })
        .collect();
    let lifecycle = BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .expect("complete lifecycle configuration");
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(lifecycle)
        .send()
        .await
        .map_err(|e| failed(format!("set the lifecycle of bucket {bucket}"), e))?;
    Ok(())
}

/// A lifetime in whole days (S3 lifecycle rules count days), at least one.
pub fn lifetime_days(lifetime: Duration) -> i32 {
    (lifetime.as_secs().div_ceil(86_400) as i32).max(1)
}

/// The definition of a key attribute of type `S` or `N`.
fn definition(name: &str, kind: &str) -> AttributeDefinition {
    let kind = if kind == "N" {
        ScalarAttributeType::N
    } else {
        ScalarAttributeType::S
    };
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .expect("complete attribute definition")
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .expect("complete key schema")
}

/// The global secondary index `index`, projecting keys only.
fn global_index(index: &Index) -> GlobalSecondaryIndex {
    let mut schema = vec![key(index.hash.0, KeyType::Hash)];
    schema.extend(index.range.map(|(name, _)| key(name, KeyType::Range)));
    GlobalSecondaryIndex::builder()
        .index_name(index.name)
        .set_key_schema(Some(schema))
        .projection(keys_only())
        .build()
        .expect("complete index")
}

/// An index projection of the keys only.
fn keys_only() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::KeysOnly)
        .build()
}

/// The key attributes of `indexes`, each once.
fn definitions<'a>(indexes: impl IntoIterator<Item = &'a Index>) -> Vec<AttributeDefinition> {
    let mut seen = Vec::new();
    for index in indexes {
        for (name, kind) in std::iter::once(index.hash).chain(index.range) {
            if !seen.iter().any(|(n, _)| *n == name) {
                seen.push((name, kind));
            }
        }
    }
    seen.into_iter()
        .map(|(name, kind)| definition(name, kind))
        .collect()
}

/// Creates the jobs table with its indexes and TTL unless it exists (adding any index
/// an older table lacks), and waits until it is active.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), ProvisionError> {
    let mut attributes = vec![definition(attr::PK, "S")];
    attributes.extend(definitions(&INDEXES));
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(attributes))
        .key_schema(key(attr::PK, KeyType::Hash))
        .set_global_secondary_indexes(Some(INDEXES.iter().map(global_index).collect()))
        .send()
        .await;
    if let Err(err) = created
        && err.code() != Some("ResourceInUseException")
    {
        return Err(failed(format!("create table {table}"), err));
    }
    wait_until_active(client, table).await?;
    add_missing_indexes(client, table).await?;

    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| failed(format!("read the TTL of table {table}"), e))?;
    let enabled = ttl
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status())
        .is_some_and(|s| matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
    if !enabled {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(attr::EXPIRES_AT)
            .enabled(true)
            .build()
            .expect("complete TTL specification");
        let updated = client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await;
        // Another process may have enabled it a moment ago.
        if let Err(err) = updated
            && !err
                .message()
                .unwrap_or_default()
                .contains("already enabled")
        {
            return Err(failed(format!("enable TTL on table {table}"), err));
        }
    }
    Ok(())
}

/// Adds the indexes a table made by an older offpath lacks, one at a time (DynamoDB
/// builds one index per update).
async fn add_missing_indexes(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), ProvisionError> {
    let described = describe(client, table).await?;
    let existing: Vec<String> = described
        .as_ref()
        .map(|t| t.global_secondary_indexes())
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i.index_name().map(str::to_owned))
        .collect();
    for index in INDEXES
        .iter()
        .filter(|i| !existing.iter().any(|e| e == i.name))
    {
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(index.name)
            .set_key_schema(Some(global_index(index).key_schema))
            .projection(keys_only())
            .build()
            .expect("complete index action");
        client
            .update_table()
            .table_name(table)
            .set_attribute_definitions(Some(definitions([index])))
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await
            .map_err(|e| failed(format!("add index {} to table {table}", index.name), e))?;
        wait_until_active(client, table).await?;
    }
    Ok(())
}

/// The table's description.
async fn describe(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Option<TableDescription>, ProvisionError> {
    let output = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| failed(format!("describe table {table}"), e))?;
    Ok(output.table)
}

async fn wait_until_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), ProvisionError> {
    for _ in 0..120 {
        let described = describe(client, table).await?;
        let table_active =
            described.as_ref().and_then(|t| t.table_status()) == Some(&TableStatus::Active);
        let indexes_active = described
            .as_ref()
            .map(|t| t.global_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .all(|i| i.index_status().is_none_or(|s| *s == IndexStatus::Active));
        if table_active && indexes_active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(ProvisionError {
        action: format!("use table {table}"),
        detail: "it did not become ACTIVE within 60 seconds".into(),
    })
}

async fn ensure_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, ProvisionError> {
    let created = client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.clone()))
        .send()
        .await;
    match created {
        Ok(output) => Ok(output.queue_url().unwrap_or_default().to_owned()),
        // It exists with other attributes: converge them.
        Err(err)
            if err.code().is_some_and(|c| {
                c.contains("QueueAlreadyExists") || c.contains("QueueNameExists")
            }) =>
        {
            let url = client
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| failed(format!("find queue {name}"), e))?
                .queue_url()
                .unwrap_or_default()
                .to_owned();
            client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(|e| failed(format!("update queue {name}"), e))?;
            Ok(url)
        }
        Err(err) => Err(failed(format!("create queue {name}"), err)),
    }
}
