//! Fresh ports for one test or measurement, on the AWS endpoint or embedded.

use std::sync::Arc;
use std::time::Duration;

use offpath_aws::provision::{ResourceNames, Resources, provision};
use offpath_core::{JobQueue, Model, Ports, QueueSettings, Registry};
use offpath_worker::sweep::{SweepReport, SweepSettings, sweep};
use offpath_worker::{Backoff, Worker, WorkerConfig};

/// Where the jobs live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// DynamoDB and SQS at `AWS_ENDPOINT_URL`: moto server under `tests/run`.
    Moto,
    /// The in-process adapters `offpath dev` uses by default.
    Embedded,
}

impl Backend {
    /// Both backends, for tests that prove a promise on each.
    pub const ALL: [Backend; 2] = [Backend::Moto, Backend::Embedded];

    /// The backend's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Moto => "moto",
            Backend::Embedded => "embedded",
        }
    }
}

/// The shared AWS configuration, pointed at the test endpoint.
///
/// # Panics
/// When `AWS_ENDPOINT_URL` is not set: tests never talk to AWS itself.
pub async fn sdk() -> aws_config::SdkConfig {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the suite with tests/run, which starts moto"
    );
    offpath_aws::load_sdk_config()
        .await
        .expect("AWS configuration")
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Queue settings for tests: a short visibility timeout (2 s), 3 receives.
pub fn fast_queue() -> QueueSettings {
    QueueSettings {
        visibility_timeout: Duration::from_secs(2),
        max_receive_count: 3,
        ..QueueSettings::default()
    }
}

/// Webhooks queue settings for tests: a short visibility timeout (2 s), 3 receives.
pub(crate) fn fast_webhooks() -> QueueSettings {
    fast_queue()
}

/// A store, a jobs queue and its dead-letter queue, a webhooks queue and its
/// dead-letter queue (with [`fast_webhooks`]) and a bucket of their own.
#[derive(Clone)]
pub struct Stack {
    /// Where they live.
    pub backend: Backend,
    /// The store, the queue and the dead-letter queue.
    pub ports: Ports,
    /// The queues' settings.
    pub settings: QueueSettings,
    /// The resources' names and URLs on the AWS endpoint (`None` when embedded).
    pub resources: Option<Resources>,
    /// The embedded backend's data directory (deleted with the last clone).
    pub data_dir: Option<Arc<tempfile::TempDir>>,
}

impl Stack {
    /// Fresh, uniquely named resources on `backend` (on the test endpoint: see
    /// [`sdk`]), created by the same code `offpath dev` uses.
    pub async fn new(backend: Backend, settings: QueueSettings) -> Stack {
        if backend == Backend::Moto {
            sdk().await;
        }
        let names = ResourceNames {
            table: unique("t"),
            queue: unique("q"),
            dlq: unique("dlq"),
            webhooks: unique("wh"),
            webhooks_dlq: unique("whdlq"),
            bucket: unique("b"),
        };
        Self::named(backend, &names, settings).await
    }

    /// Fresh resources on the AWS endpoint.
    pub async fn moto(settings: QueueSettings) -> Stack {
        Self::new(Backend::Moto, settings).await
    }

    /// Resources with these names, created if missing where the standard AWS
    /// configuration points (benchmarks use it against AWS too).
    pub async fn named(backend: Backend, names: &ResourceNames, settings: QueueSettings) -> Stack {
        match backend {
            Backend::Moto => {
                let sdk = offpath_aws::load_sdk_config()
                    .await
                    .expect("AWS configuration");
                let resources = provision(&sdk, names, &settings, &fast_webhooks())
                    .await
                    .expect("provision");
                let ports = resources.ports(&sdk).await.expect("the new queues answer");
                Stack {
                    backend,
                    ports,
                    settings,
                    resources: Some(resources),
                    data_dir: None,
                }
            }
            Backend::Embedded => {
                Self::embedded(names, settings, offpath_embedded::Options::default())
            }
        }
    }

    /// Queues with these names in a new data directory (deleted with the stack's last
    /// clone), the embedded backend opened with `options`.
    pub fn embedded(
        names: &ResourceNames,
        settings: QueueSettings,
        options: offpath_embedded::Options,
    ) -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("offpath-test-data-")
            .tempdir()
            .expect("a data directory");
        let embedded = offpath_embedded::open(
            dir.path(),
            &names.queue,
            &settings,
            &fast_webhooks(),
            options,
        )
        .expect("the embedded backend opens");
        Stack {
            backend: Backend::Embedded,
            ports: embedded.ports,
            settings,
            resources: None,
            data_dir: Some(Arc::new(dir)),
        }
    }

    /// The dead-letter queue.
    pub fn dlq(&self) -> &Arc<dyn JobQueue> {
        self.ports
            .dlq
            .as_ref()
            .expect("a stack has a dead-letter queue")
    }

    /// The webhooks dead-letter queue.
    pub fn webhooks_dlq(&self) -> &Arc<dyn JobQueue> {
        self.ports
            .webhooks_dlq
            .as_ref()
            .expect("a stack has a webhooks dead-letter queue")
    }

    /// The resources on the AWS endpoint.
    ///
    /// # Panics
    /// On an embedded stack.
    pub fn resources(&self) -> &Resources {
        self.resources
            .as_ref()
            .expect("an embedded stack has no AWS resources")
    }

    /// The environment that points `offpath` and the Lambda functions at this stack's
    /// resources.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let resources = self.resources();
        vec![
            ("OFFPATH_TABLE", resources.table.clone()),
            ("OFFPATH_QUEUE_URL", resources.queue_url.clone()),
            ("OFFPATH_DLQ_URL", resources.dlq_url.clone()),
            ("OFFPATH_WEBHOOK_QUEUE_URL", resources.webhooks_url.clone()),
            (
                "OFFPATH_WEBHOOK_DLQ_URL",
                resources.webhooks_dlq_url.clone(),
            ),
            ("OFFPATH_BUCKET", resources.bucket.clone()),
        ]
    }

    /// One sweep of this stack now, with `settings`.
    ///
    /// # Panics
    /// When the sweep fails.
    pub async fn sweep(&self, settings: &SweepSettings) -> SweepReport {
        let now = offpath_core::Clock::now_epoch_ms(&offpath_core::SystemClock);
        let ports = &self.ports;
        sweep(
            ports.store.as_ref(),
            ports.queue.as_ref(),
            ports.webhooks.as_ref(),
            settings,
            now,
        )
        .await
        .expect("sweep")
    }

    /// Runs the `offpath` binary with `args` against this stack's resources; returns
    /// what it printed.
    ///
    /// # Panics
    /// When it fails (the panic shows its output).
    pub fn offpath(&self, args: &[&str]) -> String {
        let output = std::process::Command::new(crate::binary("offpath"))
            .args(args)
            .envs(self.env())
            .output()
            .expect("offpath runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "offpath {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// The built-in tasks, for workers and routers of this stack.
    pub fn tasks() -> Arc<Registry> {
        Arc::new(offpath_tasks::registry())
    }

    /// A worker on this stack running the built-in tasks on `model`: a heartbeat of
    /// the queue's visibility timeout, the queue's maxReceiveCount, backoff from
    /// `backoff_base` up to twice that.
    pub fn worker(&self, model: Arc<dyn Model>, backoff_base: Duration) -> Worker {
        let config = WorkerConfig {
            heartbeat: self.settings.visibility_timeout,
            job_timeout: Duration::from_secs(60),
            max_receive_count: Some(self.settings.max_receive_count),
            backoff: Backoff {
                base: backoff_base,
                max: backoff_base * 2,
            },
        };
        Worker::new(&self.ports, model, Self::tasks(), config)
    }
}

/// True when nothing can be received from `queue` within a second.
pub async fn drained(queue: &dyn JobQueue) -> bool {
    queue
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive")
        .is_empty()
}

/// Number of job items in a table (a full scan; the workers' per-minute activity
/// items, `activity#…`, are not jobs and are left out).
pub async fn item_count(table: &str) -> usize {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let mut count = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .filter_expression("NOT begins_with(pk, :activity)")
            .expression_attribute_values(
                ":activity",
                aws_sdk_dynamodb::types::AttributeValue::S("activity#".into()),
            )
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        count += page.count() as usize;
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return count,
        }
    }
}
