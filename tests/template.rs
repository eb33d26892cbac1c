//! template.yaml, the provisioning code `offpath dev` uses, and the LocalStack init
//! script must create the same resources: this test provisions with both on the test
//! endpoint (moto) and compares what exists with what the template declares.

use std::process::Command;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use offpath_aws::provision::{QueueSettings, ResourceNames, WORKER_TIMEOUT, provision};
use offpath_core::queue::WEBHOOK_FUNCTION_TIMEOUT;
use serde_yaml::Value;

/// A queue and its dead-letter queue as both sides set them.
#[derive(Debug, PartialEq)]
struct Queues {
    visibility_timeout: u64,
    retention: u64,
    dlq_retention: u64,
    max_receive_count: u64,
}

impl Queues {
    /// What the code provisions with `settings`.
    fn of(settings: &QueueSettings) -> Queues {
        Queues {
            visibility_timeout: settings.visibility_timeout.as_secs(),
            retention: settings.retention.as_secs(),
            dlq_retention: settings.dlq_retention.as_secs(),
            max_receive_count: settings.max_receive_count.into(),
        }
    }
}

/// The settings both sides must agree on.
#[derive(Debug, PartialEq)]
struct Settings {
    jobs: Queues,
    webhooks: Queues,
    key: String,
    billing: String,
    ttl_attribute: String,
    /// The bucket's lifecycle: (prefix, days to expiry), sorted.
    lifecycle: Vec<(String, u64)>,
    /// Server-side encryption algorithm.
    encryption: String,
    /// All four public access blocks on.
    public_blocked: bool,
    /// The table's global secondary indexes, each as
    /// `name hash:type [range:type] projection`, sorted.
    indexes: Vec<String>,
}

/// One index as [`Settings::indexes`] writes it.
fn index_line(name: &str, keys: &[(&str, &str)], projection: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|(a, t)| format!("{a}:{t}")).collect();
    format!("{name} {} {projection}", keys.join(" "))
}

fn template() -> Value {
    serde_yaml::from_str(include_str!("../template.yaml")).expect("template.yaml parses")
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {value:?}"))
}

fn declared() -> Settings {
    let t = template();
    let resources = &t["Resources"];
    let queues = |queue: &str, dlq: &str| {
        let properties = &resources[queue]["Properties"];
        let max = &properties["RedrivePolicy"]["maxReceiveCount"];
        Queues {
            visibility_timeout: number(&properties["VisibilityTimeout"]),
            retention: number(&properties["MessageRetentionPeriod"]),
            dlq_retention: number(&resources[dlq]["Properties"]["MessageRetentionPeriod"]),
            max_receive_count: match max {
                // !Ref MaxReceiveCount: the parameter's default.
                Value::Tagged(_) => number(&t["Parameters"]["MaxReceiveCount"]["Default"]),
                _ => number(max),
            },
        }
    };
    let table = &resources["JobsTable"]["Properties"];
    let attribute_type = |name: &str| {
        table["AttributeDefinitions"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|d| d["AttributeName"].as_str() == Some(name))
            .and_then(|d| d["AttributeType"].as_str())
            .unwrap_or_else(|| panic!("{name} has no attribute definition"))
            .to_owned()
    };
    let mut indexes: Vec<String> = table["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|index| {
            let keys: Vec<(String, String)> = index["KeySchema"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|k| {
                    let name = k["AttributeName"].as_str().unwrap();
                    (name.to_owned(), attribute_type(name))
                })
                .collect();
            let keys: Vec<(&str, &str)> =
                keys.iter().map(|(a, t)| (a.as_str(), t.as_str())).collect();
            index_line(
                index["IndexName"].as_str().unwrap(),
                &keys,
                index["Projection"]["ProjectionType"].as_str().unwrap(),
            )
        })
        .collect();
    indexes.sort();
    Settings {
        indexes,
        jobs: queues("JobsQueue", "DeadLetterQueue"),
        webhooks: queues("WebhooksQueue", "WebhooksDeadLetterQueue"),
        key: format!(
            "{}:{}",
            table["KeySchema"][0]["AttributeName"].as_str().unwrap(),
            table["AttributeDefinitions"][0]["AttributeType"]
                .as_str()
                .unwrap()
        ),
        billing: table["BillingMode"].as_str().unwrap().to_owned(),
        ttl_attribute: table["TimeToLiveSpecification"]["AttributeName"]
            .as_str()
            .unwrap()
            .to_owned(),
        lifecycle: {
            let bucket = &resources["BlobsBucket"]["Properties"];
            let mut rules: Vec<(String, u64)> = bucket["LifecycleConfiguration"]["Rules"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|r| (r["Prefix"].as_str().unwrap().to_owned(), number(&r["ExpirationInDays"])))
                .collect();
            rules.sort();
            rules
        },
        encryption: resources["BlobsBucket"]["Properties"]["BucketEncryption"]
            ["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
            .as_str()
            .unwrap()
            .to_owned(),
        public_blocked: ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"]
            .iter()
            .all(|k| resources["BlobsBucket"]["Properties"]["PublicAccessBlockConfiguration"][*k] == true),
    }
}

/// The lifetimes the code gives each prefix (local expiry and provisioning).
#[test]
fn the_template_expires_each_prefix_as_the_code_does() {
    let mut code: Vec<(String, u64)> = offpath_core::blob::LIFETIMES
        .iter()
        .map(|(prefix, lifetime)| {
            (
                (*prefix).to_owned(),
                offpath_aws::provision::lifetime_days(*lifetime) as u64,
            )
        })
        .collect();
    code.sort();
    assert_eq!(code, declared().lifecycle);
}

/// What exists at the endpoint for a queue and its dead-letter queue.
async fn observed_queues(queue_url: &str, dlq_url: &str) -> Queues {
    let sqs = aws_sdk_sqs::Client::new(&offpath_testkit::sdk().await);
    let attributes = |url: String| {
        let sqs = sqs.clone();
        async move {
            sqs.get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::All)
                .send()
                .await
                .unwrap()
                .attributes()
                .cloned()
                .unwrap()
        }
    };
    let queue = attributes(queue_url.to_owned()).await;
    let dlq = attributes(dlq_url.to_owned()).await;
    let redrive: serde_json::Value =
        serde_json::from_str(&queue[&QueueAttributeName::RedrivePolicy]).unwrap();
    let seconds = |value: &str| value.parse().unwrap();
    Queues {
        visibility_timeout: seconds(&queue[&QueueAttributeName::VisibilityTimeout]),
        retention: seconds(&queue[&QueueAttributeName::MessageRetentionPeriod]),
        dlq_retention: seconds(&dlq[&QueueAttributeName::MessageRetentionPeriod]),
        max_receive_count: number(&serde_yaml::to_value(&redrive["maxReceiveCount"]).unwrap()),
    }
}

/// The URLs of a jobs queue, a webhooks queue and their dead-letter queues.
struct QueueUrls<'a> {
    queue: &'a str,
    dlq: &'a str,
    webhooks: &'a str,
    webhooks_dlq: &'a str,
}

/// What exists at the endpoint for these resources.
async fn observed(table: &str, urls: QueueUrls<'_>, bucket: &str) -> Settings {
    let sdk = offpath_testkit::sdk().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let s3 = offpath_aws::s3::client(&sdk);
    let described = dynamo
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let described = described.table().unwrap();
    let ttl = dynamo
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let attribute_type = |name: &str| {
        described
            .attribute_definitions()
            .iter()
            .find(|d| d.attribute_name() == name)
            .map(|d| d.attribute_type().as_str().to_owned())
            .unwrap_or_default()
    };
    let mut indexes: Vec<String> = described
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            let keys: Vec<(String, String)> = index
                .key_schema()
                .iter()
                .map(|k| {
                    (
                        k.attribute_name().to_owned(),
                        attribute_type(k.attribute_name()),
                    )
                })
                .collect();
            let keys: Vec<(&str, &str)> =
                keys.iter().map(|(a, t)| (a.as_str(), t.as_str())).collect();
            let projection = index
                .projection()
                .and_then(|p| p.projection_type())
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            index_line(index.index_name().unwrap_or_default(), &keys, &projection)
        })
        .collect();
    indexes.sort();
    Settings {
        indexes,
        jobs: observed_queues(urls.queue, urls.dlq).await,
        webhooks: observed_queues(urls.webhooks, urls.webhooks_dlq).await,
        key: format!(
            "{}:{}",
            described.key_schema()[0].attribute_name(),
            described.attribute_definitions()[0]
                .attribute_type()
                .as_str()
        ),
        billing: described
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default(),
        ttl_attribute: ttl
            .time_to_live_description()
            .and_then(|d| d.attribute_name())
            .unwrap_or_default()
            .to_owned(),
        lifecycle: {
            let rules = s3
                .get_bucket_lifecycle_configuration()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            let mut rules: Vec<(String, u64)> = rules
                .rules()
                .iter()
                .map(|r| {
                    let prefix = r
                        .filter()
                        .and_then(|f| f.prefix())
                        .unwrap_or_default()
                        .to_owned();
                    (
                        prefix,
                        r.expiration().and_then(|e| e.days()).unwrap_or_default() as u64,
                    )
                })
                .collect();
            rules.sort();
            rules
        },
        encryption: s3
            .get_bucket_encryption()
            .bucket(bucket)
            .send()
            .await
            .unwrap()
            .server_side_encryption_configuration()
            .and_then(|c| c.rules().first())
            .and_then(|r| r.apply_server_side_encryption_by_default())
            .map(|d| d.sse_algorithm().as_str().to_owned())
            .unwrap_or_default(),
        public_blocked: s3
            .get_public_access_block()
            .bucket(bucket)
            .send()
            .await
            .unwrap()
            .public_access_block_configuration()
            .is_some_and(|c| {
                [
                    c.block_public_acls(),
                    c.block_public_policy(),
                    c.ignore_public_acls(),
                    c.restrict_public_buckets(),
                ]
                .iter()
                .all(|b| *b == Some(true))
            }),
    }
}

#[test]
fn the_template_keeps_aws_guidance() {
    let t = template();
    let worker_timeout = number(&t["Resources"]["WorkerFunction"]["Properties"]["Timeout"]);
    assert_eq!(worker_timeout, WORKER_TIMEOUT.as_secs());
    assert!(
        declared().jobs.visibility_timeout >= 6 * worker_timeout,
        "visibility >= 6 x worker timeout"
    );
    let webhook = &t["Resources"]["WebhookFunction"];
    let webhook_timeout = number(&webhook["Properties"]["Timeout"]);
    assert_eq!(webhook_timeout, WEBHOOK_FUNCTION_TIMEOUT.as_secs());
    assert!(declared().webhooks.visibility_timeout >= 6 * webhook_timeout);
    assert_eq!(declared().webhooks, Queues::of(&QueueSettings::webhooks()));
    assert_eq!(
        webhook["Metadata"]["BuildProperties"]["Binary"],
        "offpath-webhooks"
    );
    assert_eq!(
        t["Resources"]["WebhookEventSource"]["Properties"]["FunctionResponseTypes"][0],
        "ReportBatchItemFailures"
    );
    // Long-poll waits up to 20 s inside the API function, under API Gateway's 30 s.
    let api_timeout = number(&t["Resources"]["ApiFunction"]["Properties"]["Timeout"]);
    assert!((21..30).contains(&api_timeout), "{api_timeout}");
    let mapping = &t["Resources"]["WorkerEventSource"]["Properties"];
    assert_eq!(
        mapping["FunctionResponseTypes"][0],
        "ReportBatchItemFailures"
    );
    assert_eq!(
        t["Resources"]["JobsTable"]["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(
        t["Resources"]["JobsTable"]["Properties"]["SSESpecification"]["SSEEnabled"],
        true
    );
    let sweep = &t["Resources"]["SweepFunction"];
    assert_eq!(
        sweep["Metadata"]["BuildProperties"]["Binary"],
        "offpath-sweep"
    );
    // An API flood is throttled at the stage and cannot take the workers' concurrency.
    let stage = &t["Resources"]["HttpApiStage"]["Properties"];
    assert!(!stage["DefaultRouteSettings"]["ThrottlingRateLimit"].is_null());
    assert!(!stage["DefaultRouteSettings"]["ThrottlingBurstLimit"].is_null());
    assert!(number(&stage["RouteSettings"]["GET /health"]["ThrottlingRateLimit"]) <= 10);
    let reserved = &t["Resources"]["ApiFunction"]["Properties"]["ReservedConcurrentExecutions"];
    assert!(
        !reserved.is_null(),
        "the api function's concurrency is reserved"
    );
    assert!(number(&t["Parameters"]["ApiReservedConcurrency"]["Default"]) > 0);
    assert_eq!(
        sweep["Properties"]["Events"]["EveryFiveMinutes"]["Type"],
        "Schedule"
    );
}

/// Every operation of the API's OpenAPI document has its API Gateway route, behind
/// the authorizer exactly when the operation can answer 401; the console's page and
/// assets are public. (`PUT /uploads/{id}` exists only locally: in AWS uploads go to
/// S3 by presigned URL.)
#[test]
fn the_template_routes_every_operation() {
    let t = template();
    let document: serde_json::Value =
        serde_json::from_str(include_str!("../functions/api/openapi.json")).unwrap();
    let routes: std::collections::BTreeMap<String, bool> = t["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::ApiGatewayV2::Route")
        .map(|r| {
            let p = &r["Properties"];
            (
                p["RouteKey"].as_str().unwrap().to_owned(),
                !p["AuthorizationType"].is_null(),
            )
        })
        .collect();
    let mut expected = std::collections::BTreeMap::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let key = format!("{} {path}", method.to_uppercase());
            if key == "PUT /uploads/{id}" {
                continue;
            }
            let authenticated = operation["responses"].get("401").is_some();
            expected.insert(key, authenticated);
        }
    }
    expected.insert("GET /console".into(), false);
    expected.insert("GET /console/{asset}".into(), false);
    assert_eq!(routes, expected);
}

#[tokio::test]
async fn provisioning_code_creates_what_the_template_declares() {
    let names = ResourceNames {
        table: offpath_testkit::unique("tpl"),
        queue: offpath_testkit::unique("tpl-q"),
        dlq: offpath_testkit::unique("tpl-dlq"),
        webhooks: offpath_testkit::unique("tpl-wh"),
        webhooks_dlq: offpath_testkit::unique("tpl-whdlq"),
        bucket: offpath_testkit::unique("tpl-b"),
    };
    let created = provision(
        &offpath_testkit::sdk().await,
        &names,
        &QueueSettings::default(),
        &QueueSettings::webhooks(),
    )
    .await
    .unwrap();
    let urls = QueueUrls {
        queue: &created.queue_url,
        dlq: &created.dlq_url,
        webhooks: &created.webhooks_url,
        webhooks_dlq: &created.webhooks_dlq_url,
    };
    let observed = observed(&created.table, urls, &created.bucket).await;
    assert_eq!(observed, declared());
}

#[tokio::test]
async fn the_localstack_init_script_creates_what_the_template_declares() {
    let (table, queue, dlq, bucket) = (
        offpath_testkit::unique("ls"),
        offpath_testkit::unique("ls-q"),
        offpath_testkit::unique("ls-dlq"),
        offpath_testkit::unique("ls-b"),
    );
    let (webhooks, webhooks_dlq, secret) = (
        offpath_testkit::unique("ls-wh"),
        offpath_testkit::unique("ls-whdlq"),
        offpath_testkit::unique("ls-key"),
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = Command::new(format!("{root}/infra/localstack/init/ready.d/offpath.sh"))
        .env("AWS_CLI", format!("{root}/.venv/bin/aws"))
        .env("OFFPATH_TABLE", &table)
        .env("OFFPATH_QUEUE_NAME", &queue)
        .env("OFFPATH_DLQ_NAME", &dlq)
        .env("OFFPATH_BUCKET", &bucket)
        .env("OFFPATH_WEBHOOK_QUEUE_NAME", &webhooks)
        .env("OFFPATH_WEBHOOK_DLQ_NAME", &webhooks_dlq)
        .env("OFFPATH_WEBHOOK_SECRET_NAME", &secret)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let url = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let urls = QueueUrls {
        queue: &url("OFFPATH_QUEUE_URL"),
        dlq: &url("OFFPATH_DLQ_URL"),
        webhooks: &url("OFFPATH_WEBHOOK_QUEUE_URL"),
        webhooks_dlq: &url("OFFPATH_WEBHOOK_DLQ_URL"),
    };
    let observed = observed(&table, urls, &url("OFFPATH_BUCKET")).await;
    assert_eq!(observed, declared());
    // The key secret it made is one offpath reads (64 characters, like the template's).
    let lookup = |name: &str| {
        (name == "OFFPATH_WEBHOOK_KEY_SECRET").then(|| url("OFFPATH_WEBHOOK_KEY_SECRET"))
    };
    let key = offpath_aws::secrets::webhook_key(&offpath_testkit::sdk().await, lookup)
        .await
        .unwrap();
    assert_eq!(key.current.len(), 64);
}
