//! `offpath dev`: the API over TCP plus pollers that feed the worker handler and the
//! webhook deliverer, the way API Gateway and the SQS event source mappings do in AWS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use offpath_api::{AppState, Auth, Operators, SubmitLimits, app};
use offpath_aws::config::{DEFAULT_BUCKET, DEFAULT_QUEUE};
use offpath_aws::provision::{ResourceNames, ensure_bucket, ensure_table, provision};
use offpath_aws::secrets::key_setting;
use offpath_aws::{DynamoStore, S3Blobs, Settings, SqsQueue, load_sdk_config};
use offpath_core::queue::WEBHOOK_ATTEMPT_TIMEOUT;
use offpath_core::{Clock, Ports, QueueSettings, Registry, SystemClock};
use offpath_embedded::{Durability, LocalBlobs, SqliteStore};
use offpath_inference::{MiniLm, weights};
use offpath_webhooks::{Sender, UrlPolicy, WebhookKeys};
use offpath_worker::poller::{PollSettings, Pool};
use offpath_worker::sweep::{SweepSettings, sweep};
use offpath_worker::{Backoff, Deliverer, WEBHOOK_BACKOFF, Worker, WorkerConfig};
use tokio::sync::watch;

/// Where jobs and the queue live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// On this machine: jobs, queues and dead letters in an SQLite database in the data
    /// directory, with DynamoDB's and SQS's semantics, blobs as files beside it.
    /// Nothing to install; everything survives a restart.
    Embedded,
    /// DynamoDB and SQS at the endpoint the standard AWS configuration names
    /// (AWS_ENDPOINT_URL for LocalStack or moto; nothing for AWS itself).
    Aws,
}

/// `offpath dev` options.
#[derive(Debug, Clone, Parser)]
pub struct DevArgs {
    /// Where jobs and the queue live.
    #[arg(long, env = "OFFPATH_BACKEND", value_enum, default_value = "embedded")]
    pub backend: Backend,
    /// Address the API listens on (port 0 picks a free port).
    #[arg(long, env = "OFFPATH_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Concurrent pollers (Lambda worker instances).
    #[arg(long, default_value_t = 2)]
    pub pollers: usize,
    /// Messages per batch handed to the worker (1-10).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub batch_size: u32,
    /// Job timeout: the longest a worker keeps a job before it goes back to the queue.
    #[arg(long, alias = "lease-seconds", default_value_t = 60)]
    pub job_timeout_seconds: u64,
    /// Heartbeat: a dead worker's jobs are claimable again this long after its last
    /// beat; a live worker extends its claims and messages every third of it.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..))]
    pub heartbeat_seconds: u64,
    /// Visibility timeout of a queue this command creates (default: 6 x job timeout).
    #[arg(long)]
    pub visibility_timeout_seconds: Option<u64>,
    /// Receives before a message moves to the dead-letter queue, for queues this
    /// command creates.
    #[arg(long, default_value_t = 5)]
    pub max_receive_count: u32,
    /// First retry delay for transient failures (doubles per receive).
    #[arg(long, default_value_t = 2000)]
    pub backoff_base_ms: u64,
    /// Where the embedded backend keeps its database (jobs, queues, dead letters) and
    /// its blobs (uploads, document parts, results). Default: `offpath` in the user's
    /// data directory (`$XDG_DATA_HOME`, else `~/.local/share`).
    #[arg(long, env = "OFFPATH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// What an accepted job survives with the embedded backend: `process` (a commit is
    /// in SQLite's write-ahead log: survives the process being killed; a power cut may
    /// lose the last seconds) or `power` (every commit synced to disk: survives a power
    /// cut, one fsync a write).
    #[arg(
        long,
        env = "OFFPATH_DURABILITY",
        value_enum,
        default_value = "process"
    )]
    pub durability: DurabilityArg,
    /// Accept webhooks to http(s)://127.0.0.1 and [::1], for receivers on this
    /// machine. Without it, as in AWS, only https URLs on public addresses.
    #[arg(long, env = "OFFPATH_WEBHOOK_ALLOW_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub allow_loopback_webhooks: bool,
    /// Concurrent pollers of the webhooks queue (webhook function instances).
    #[arg(long, default_value_t = 1)]
    pub webhook_pollers: usize,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_seconds: u64,
    /// Seconds a request body may stall before the request is refused.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_seconds: u64,
    /// Connections served at once (more wait to be accepted).
    #[arg(long, default_value_t = 512, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Serve on an address other machines can reach without API keys (anyone there
    /// could submit and read jobs). Without it such an address needs OFFPATH_API_KEYS.
    #[arg(long, env = "OFFPATH_ALLOW_UNAUTHENTICATED", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub allow_unauthenticated: bool,
}

/// Refuses an open API on an address other machines can reach, unless allowed (then
/// says so loudly).
fn check_exposure(args: &DevArgs, auth: &Auth) -> anyhow::Result<()> {
    if *auth != Auth::SingleTenant || args.addr.ip().is_loopback() {
        return Ok(());
    }
    anyhow::ensure!(
        args.allow_unauthenticated,
        "offpath dev would listen on {} without API keys: anyone who can reach it could submit and read jobs. \
         Set OFFPATH_API_KEYS=key=owner,..., listen on 127.0.0.1 (OFFPATH_ADDR / --addr), or pass --allow-unauthenticated",
        args.addr
    );
    eprintln!(
        "WARNING: offpath dev serves {} WITHOUT authentication (--allow-unauthenticated): anyone who can reach it can submit and read jobs",
        args.addr
    );
    tracing::warn!(addr = %args.addr, "serving without authentication on a non-loopback address");
    Ok(())
}

/// Runs the local stack until Ctrl-C, then drains in-flight batches.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let access = Access {
        auth: Auth::from_api_keys(std::env::var("OFFPATH_API_KEYS").ok().as_deref())?,
        operators: Operators::from_env()?,
        limits: SubmitLimits::from_env()?,
    };
    check_exposure(&args, &access.auth)?;
    let queue_settings = QueueSettings {
        visibility_timeout: Duration::from_secs(
            args.visibility_timeout_seconds
                .unwrap_or(args.job_timeout_seconds * 6),
        ),
        max_receive_count: args.max_receive_count,
        ..QueueSettings::default()
    };
    let (ports, local) = match args.backend {
        Backend::Embedded => {
            let dir = match &args.data_dir {
                Some(dir) => dir.clone(),
                None => default_data_dir()?,
            };
            let embedded = offpath_embedded::open(
                &dir,
                DEFAULT_QUEUE,
                &queue_settings,
                &QueueSettings::webhooks(),
                offpath_embedded::Options {
                    durability: args.durability.into(),
                    ..offpath_embedded::Options::default()
                },
            )
            .with_context(|| format!("OFFPATH_DATA_DIR / --data-dir {}", dir.display()))?;
            tracing::info!(data_dir = %dir.display(), database = %embedded.database.path().display(), "embedded backend ready");
            let local = Local {
                blobs: embedded.blobs,
                store: embedded.store,
            };
            (embedded.ports, Some(local))
        }
        Backend::Aws => (aws(&queue_settings).await?, None),
    };
    // After the settings and resources are checked, so a wrong setting fails before a
    // model download.
    let model = tokio::task::spawn_blocking(|| -> anyhow::Result<MiniLm> {
        Ok(MiniLm::load(&weights::resolve(true)?)?)
    })
    .await??;
    let config = WorkerConfig {
        job_timeout: Duration::from_secs(args.job_timeout_seconds),
        heartbeat: Duration::from_secs(args.heartbeat_seconds),
        max_receive_count: ports.queue.max_receive_count().await?,
        backoff: Backoff {
            base: Duration::from_millis(args.backoff_base_ms),
            ..Backoff::default()
        },
    };
    let tasks = Arc::new(offpath_tasks::registry());
    let worker = Worker::new(&ports, Arc::new(model), Arc::clone(&tasks), config);
    let keys = webhook_keys()?;
    let policy = UrlPolicy {
        allow_loopback: args.allow_loopback_webhooks,
    };
    let sender = Sender::new(policy, keys.clone(), WEBHOOK_ATTEMPT_TIMEOUT);
    let deliverer = Deliverer::new(&ports, sender, WEBHOOK_BACKOFF);
    let webhooks = Webhooks {
        keys,
        policy,
        deliverer,
    };
    let sweep = SweepSettings {
        grace: queue_settings.visibility_timeout,
        max_receive_count: config.max_receive_count,
        // Sweeps run every minute here: half of that each at most.
        budget: Duration::from_secs(30),
    };
    let sweeper = Sweeper {
        ports: ports.clone(),
        settings: sweep,
        local,
    };
    serve(args, ports, tasks, worker, webhooks, access, sweeper).await
}

/// Who may call the API, who operates it, and how much each caller may queue.
struct Access {
    auth: Auth,
    operators: Operators,
    limits: SubmitLimits,
}

/// The webhook side of the local stack.
struct Webhooks {
    keys: WebhookKeys,
    policy: UrlPolicy,
    deliverer: Deliverer,
}

/// The signing key: OFFPATH_WEBHOOK_KEY (and OFFPATH_WEBHOOK_PREVIOUS_KEY while
/// rotating), else one generated on first use and kept in `webhook.key` in the cache
/// directory, so receivers' secrets survive a restart.
fn webhook_keys() -> anyhow::Result<WebhookKeys> {
    if let Some(key) = key_setting(|name| std::env::var(name).ok()) {
        return WebhookKeys::new(&key.current, key.previous.as_deref())
            .context("OFFPATH_WEBHOOK_KEY");
    }
    let path = weights::cache_root().join("webhook.key");
    let key = match std::fs::read_to_string(&path) {
        Ok(key) => key.trim().to_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            keep_secret(&path, &WebhookKeys::generate())
                .with_context(|| format!("cannot keep the webhook key in {}", path.display()))?
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    WebhookKeys::new(&key, None).with_context(|| format!("the webhook key in {}", path.display()))
}

/// Makes `path` a file only its owner can read, holding `secret`, unless another
/// process made it first; returns the secret the file holds. The secret is written to
/// a file of this process's own, then linked to `path`: the link either appears whole
/// or fails because `path` exists, so two processes starting at once (a fresh cache)
/// agree on one key, and neither reads a half-written one.
fn keep_secret(path: &std::path::Path, secret: &str) -> std::io::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let own = path.with_extension(format!("{}-{write}.new", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&own)?
        .write_all(secret.as_bytes())?;
    let linked = std::fs::hard_link(&own, path);
    std::fs::remove_file(&own)?;
    match linked {
        Ok(()) => Ok(secret.to_owned()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(path)?.trim().to_owned())
        }
        Err(err) => Err(err),
    }
}

/// Creates missing resources at the configured endpoint, or uses OFFPATH_QUEUE_URL.
async fn aws(settings: &QueueSettings) -> anyhow::Result<Ports> {
    let sdk = load_sdk_config().await?;
    let config = Settings::from_env()?;
    let bucket = config
        .bucket
        .clone()
        .unwrap_or_else(|| DEFAULT_BUCKET.to_owned());
    let (queue_url, webhooks_url, dlq_url, webhooks_dlq_url) = match &config.queue_url {
        Some(url) => {
            ensure_table(&aws_sdk_dynamodb::Client::new(&sdk), &config.table).await?;
            ensure_bucket(&offpath_aws::s3::client(&sdk), &bucket).await?;
            (
                url.clone(),
                config.require_webhook_queue_url()?.to_owned(),
                config.dlq_url.clone(),
                config.webhook_dlq_url.clone(),
            )
        }
        None => {
            let names = ResourceNames {
                table: config.table.clone(),
                bucket: bucket.clone(),
                ..ResourceNames::default()
            };
            let resources = provision(&sdk, &names, settings, &QueueSettings::webhooks()).await?;
            tracing::info!(table = %resources.table, queue = %resources.queue_url, dlq = %resources.dlq_url, webhooks = %resources.webhooks_url, bucket = %resources.bucket, "resources ready");
            (
                resources.queue_url,
                resources.webhooks_url,
                Some(resources.dlq_url),
                Some(resources.webhooks_dlq_url),
            )
        }
    };
    let queue = SqsQueue::from_sdk(&sdk, &queue_url)
        .await
        .with_context(|| format!("cannot use the queue at {queue_url}"))?;
    let webhooks = SqsQueue::from_sdk(&sdk, &webhooks_url)
        .await
        .with_context(|| format!("cannot use the webhooks queue at {webhooks_url}"))?;
    let dead_letters = async |url: Option<String>, setting: &str| -> anyhow::Result<_> {
        let Some(url) = url else { return Ok(None) };
        let queue = SqsQueue::from_sdk(&sdk, &url)
            .await
            .with_context(|| format!("cannot use the dead-letter queue at {url} ({setting})"))?;
        Ok(Some(Arc::new(queue) as Arc<dyn offpath_core::JobQueue>))
    };
    Ok(Ports {
        store: Arc::new(DynamoStore::from_sdk(&sdk, &config.table)),
        queue: Arc::new(queue),
        blobs: Arc::new(S3Blobs::from_sdk(&sdk, &bucket)),
        dlq: dead_letters(dlq_url, "OFFPATH_DLQ_URL").await?,
        webhooks: Arc::new(webhooks),
        webhooks_dlq: dead_letters(webhooks_dlq_url, "OFFPATH_WEBHOOK_DLQ_URL").await?,
    })
}

async fn serve(
    args: DevArgs,
    ports: Ports,
    tasks: Arc<Registry>,
    worker: Worker,
    webhooks: Webhooks,
    access: Access,
    sweeper: Sweeper,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {} (OFFPATH_ADDR / --addr)", args.addr))?;
    let addr = listener.local_addr()?;
    let poll = PollSettings {
        batch_size: args.batch_size,
        ..PollSettings::default()
    };
    let pollers = Pool::start(
        Arc::new(worker),
        Arc::clone(&ports.queue),
        poll,
        args.pollers,
    );
    let deliverers = Pool::start(
        Arc::new(webhooks.deliverer),
        Arc::clone(&ports.webhooks),
        PollSettings::default(),
        args.webhook_pollers,
    );
    let (stop, stopped) = watch::channel(false);
    let sweeper = tokio::spawn(sweeper.every_minute(stopped));
    println!("offpath listening on http://{addr}");
    println!("try (bash; the second request shows the finished job):");
    println!("{}", curl_example(addr));
    println!("console: http://{addr}/console");
    let mut state = AppState::new(&ports, tasks, access.auth)
        .with_webhooks(webhooks.keys, webhooks.policy)
        .with_operators(access.operators);
    state.limits = access.limits;
    // Locally the console is the front page.
    let router = app(state).route(
        "/",
        axum::routing::get(|| async { axum::response::Redirect::temporary("/console") }),
    );
    let limits = crate::http::Limits {
        header_read: Duration::from_secs(args.header_timeout_seconds),
        body_read: Duration::from_secs(args.body_timeout_seconds),
        connections: args.max_connections,
    };
    crate::http::serve(listener, router, limits, async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down: finishing in-flight jobs");
    })
    .await?;
    stop.send(true)?;
    pollers.stop().await;
    deliverers.stop().await;
    sweeper.await?;
    Ok(())
}

/// What `offpath dev` repairs and expires once a minute.
struct Sweeper {
    ports: Ports,
    settings: SweepSettings,
    /// The embedded backend's, which no TTL or lifecycle rule expires.
    local: Option<Local>,
}

/// The embedded backend's blobs and jobs, expired by the sweeper.
struct Local {
    blobs: LocalBlobs,
    store: SqliteStore,
}

impl Sweeper {
    /// Sweeps once a minute until `stop` turns true.
    async fn every_minute(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let now = SystemClock.now_epoch_ms();
            let ports = &self.ports;
            let (store, queue) = (ports.store.as_ref(), ports.queue.as_ref());
            let swept = sweep(store, queue, ports.webhooks.as_ref(), &self.settings, now).await;
            if let Err(err) = swept {
                tracing::warn!(error = %err, "sweep failed; trying again in a minute");
            }
            if let Some(local) = &self.local {
                local.expire(now).await;
            }
        }
    }
}

impl Local {
    /// Deletes the blobs and the jobs that outlived their lifetimes.
    async fn expire(&self, now_epoch_ms: u64) {
        if let Err(err) = self.blobs.expire(std::time::SystemTime::now()).await {
            tracing::warn!(error = %err, "could not expire old blobs; trying again in a minute");
        }
        match self.store.purge_expired(now_epoch_ms / 1000).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired jobs deleted"),
            Err(err) => {
                tracing::warn!(error = %err, "could not delete expired jobs; trying again in a minute");
            }
        }
    }
}

/// `offpath` in the user's data directory: `$XDG_DATA_HOME`, else `~/.local/share`.
fn default_data_dir() -> anyhow::Result<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute());
    let root = match xdg {
        Some(dir) => dir,
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".local/share"))
            .context(
                "no data directory: set OFFPATH_DATA_DIR (or --data-dir), XDG_DATA_HOME or HOME",
            )?,
    };
    Ok(root.join("offpath"))
}

/// [`Durability`] as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Survives the process being killed; a power cut may lose the last commits.
    Process,
    /// Survives a power cut; one fsync a write.
    Power,
}

impl From<DurabilityArg> for Durability {
    fn from(arg: DurabilityArg) -> Self {
        match arg {
            DurabilityArg::Process => Durability::Process,
            DurabilityArg::Power => Durability::Power,
        }
    }
}

/// A bash line that submits an embed job, waits a moment and reads the finished job.
fn curl_example(addr: SocketAddr) -> String {
    format!(
        "id=$(curl -s -X POST http://{addr}/jobs -H 'content-type: application/json' \\\n  \
         -d '{{\"task\":\"embed\",\"input\":{{\"texts\":[\"hello world\"]}}}}' | sed -E 's/.*\"id\":\"([^\"]+)\".*/\\1/') \\\n  \
         && sleep 1 && curl -s http://{addr}/jobs/$id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes starting at once on a fresh cache agree on one key, readable by the
    /// owner alone.
    #[test]
    fn racing_starts_keep_one_secret() {
        use std::os::unix::fs::PermissionsExt as _;
        let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
        let dir =
            std::env::temp_dir().join(format!("offpath-secret-{}-{nanos}", std::process::id()));
        let path = dir.join("webhook.key");
        let kept: Vec<String> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|i| {
                    let path = &path;
                    scope.spawn(move || keep_secret(path, &format!("secret-{i}")).unwrap())
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(kept.iter().all(|k| *k == kept[0]), "{kept:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), kept[0]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no leftovers");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
