//! `offpath dlq`: inspect, redrive and purge the dead-letter queues of a deployment
//! (AWS, LocalStack, moto) through the standard AWS configuration: the jobs queue's
//! (`--queue jobs`, the default) and the webhooks queue's (`--queue webhooks`).

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use offpath_aws::config::{DEFAULT_DLQ, DEFAULT_QUEUE, DEFAULT_WEBHOOK_DLQ, DEFAULT_WEBHOOK_QUEUE};
use offpath_aws::dlq::start_move_task;
use offpath_aws::{DynamoStore, Settings, SqsQueue, load_sdk_config};
use offpath_core::{Clock, DeadLetter, DeadLetters, JobStore, Selection, SystemClock};

/// Most messages one command reads.
const MAX_MESSAGES: usize = 10_000;

/// Which dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The jobs queue's: jobs that failed on their last receive.
    Jobs,
    /// The webhooks queue's: events whose receiver failed for 24 hours.
    Webhooks,
}

/// `offpath dlq` options.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    /// Which dead-letter queue.
    #[arg(long, value_enum, default_value = "jobs", global = true)]
    pub queue: Which,
    /// What to do.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// Dead-letter queue commands. Queues come from OFFPATH_QUEUE_URL and OFFPATH_DLQ_URL
/// (OFFPATH_WEBHOOK_QUEUE_URL and OFFPATH_WEBHOOK_DLQ_URL with `--queue webhooks`),
/// else the queues named offpath-jobs and offpath-jobs-dlq (offpath-webhooks and
/// offpath-webhooks-dlq) at the configured endpoint; the table from OFFPATH_TABLE.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered messages: message id, receive count, age, job id and the
    /// job's error. Messages stay in the queue.
    List,
    /// Put dead-lettered jobs back to `queued` and move their messages to the jobs
    /// queue, one job at a time (revive, then send and delete the message: never
    /// losing a message, never moving one whose job was not revived). Name messages or
    /// jobs by id, or pass --all (messages arriving meanwhile included).
    /// With `--queue webhooks`, move the events back to the webhooks queue (their jobs
    /// stay as they are) for another day of delivery attempts.
    Redrive {
        /// Redrive every message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Message ids or job ids to redrive.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
    },
    /// Delete every message in the dead-letter queue.
    Purge {
        /// Confirm: the messages are gone for good.
        #[arg(long, required = true)]
        yes: bool,
    },
}

/// Runs a dead-letter queue command.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let sdk = load_sdk_config().await?;
    let settings = Settings::from_env()?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (dlq_url, queue) = match args.queue {
        Which::Jobs => (
            queue_url(&sqs, settings.dlq_url.as_deref(), DEFAULT_DLQ).await?,
            queue_url(&sqs, settings.queue_url.as_deref(), DEFAULT_QUEUE).await?,
        ),
        Which::Webhooks => (
            queue_url(
                &sqs,
                settings.webhook_dlq_url.as_deref(),
                DEFAULT_WEBHOOK_DLQ,
            )
            .await?,
            queue_url(
                &sqs,
                settings.webhook_queue_url.as_deref(),
                DEFAULT_WEBHOOK_QUEUE,
            )
            .await?,
        ),
    };
    let letters = offpath_core::DeadLetters::new(
        std::sync::Arc::new(SqsQueue::connect(sqs.clone(), &dlq_url).await?),
        std::sync::Arc::new(SqsQueue::connect(sqs.clone(), &queue).await?),
    );
    let dlq = Dlq {
        letters,
        sqs,
        dlq_url,
        queue_url: queue,
    };
    let store = DynamoStore::from_sdk(&sdk, &settings.table);
    match (args.command, args.queue) {
        (DlqCommand::List, queue) => list(&dlq, &store, queue).await,
        (DlqCommand::Redrive { all, ids }, Which::Jobs) => redrive(&dlq, &store, all, &ids).await,
        (DlqCommand::Redrive { all, ids }, Which::Webhooks) => {
            redrive_events(&dlq, all, &ids).await
        }
        (DlqCommand::Purge { .. }, _) => {
            dlq.letters.purge().await?;
            println!("purged the dead-letter queue");
            Ok(())
        }
    }
}

/// A dead-letter queue, its source queue, and the SQS client (for a message move task).
struct Dlq {
    letters: DeadLetters,
    sqs: aws_sdk_sqs::Client,
    dlq_url: String,
    queue_url: String,
}

/// The configured queue URL, else the URL of the queue named `name` at the endpoint.
pub(crate) async fn queue_url(
    sqs: &aws_sdk_sqs::Client,
    configured: Option<&str>,
    name: &str,
) -> anyhow::Result<String> {
    if let Some(url) = configured {
        return Ok(url.to_owned());
    }
    let found = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot find queue {name} ({e}); set its URL (OFFPATH_QUEUE_URL, OFFPATH_DLQ_URL, OFFPATH_WEBHOOK_QUEUE_URL, OFFPATH_WEBHOOK_DLQ_URL)"
            )
        })?;
    Ok(found.queue_url().unwrap_or_default().to_owned())
}

async fn list(dlq: &Dlq, store: &DynamoStore, queue: Which) -> anyhow::Result<()> {
    let letters = dlq.letters.take(MAX_MESSAGES).await?;
    dlq.letters.release(&letters).await?;
    let last = match queue {
        Which::Jobs => "ERROR",
        Which::Webhooks => "EVENT  WEBHOOK",
    };
    println!(
        "{:<36}  {:>8}  {:>8}  {:<36}  {last}",
        "MESSAGE ID", "RECEIVES", "AGE", "JOB ID"
    );
    for letter in &letters {
        let event = letter.message.and_then(|m| m.event);
        let (job, error) = match letter.job_id() {
            None => ("-".to_owned(), "not a job message".to_owned()),
            Some(id) => match (store.get(id).await?, queue) {
                (None, _) => (id.to_string(), "no such job".to_owned()),
                (Some(job), Which::Webhooks) => (
                    id.to_string(),
                    format!(
                        "{}  {}",
                        event.map_or("-", |e| e.kind.as_str()),
                        job.webhook.map_or("-".into(), |w| w.url)
                    ),
                ),
                (Some(job), Which::Jobs) => (
                    id.to_string(),
                    job.error
                        .map(|e| format!("{}: {}", e.code, e.message))
                        .unwrap_or_else(|| format!("(job is {})", job.status)),
                ),
            },
        };
        println!(
            "{:<36}  {:>8}  {:>8}  {:<36}  {error}",
            letter.message_id,
            letter.receive_count,
            age(letter.sent_at_epoch_ms),
            job
        );
    }
    println!("{} message(s)", letters.len());
    Ok(())
}

async fn redrive(dlq: &Dlq, store: &DynamoStore, all: bool, ids: &[String]) -> anyhow::Result<()> {
    let selection = if all {
        Selection::All
    } else {
        Selection::Ids(ids)
    };
    let done = dlq
        .letters
        .redrive_jobs(store, selection, MAX_MESSAGES)
        .await?;
    for (letter, reason) in &done.skipped {
        println!("skipped {}: {reason}", letter.message_id);
    }
    for letter in &done.moved {
        println!(
            "redrove {} (job {})",
            letter.message_id,
            letter.job_id().map_or("-".into(), |id| id.to_string())
        );
    }
    println!("{} message(s) moved back", done.moved.len());
    Ok(())
}

/// Moves webhook events back to the webhooks queue: every one with `all` (a message
/// move task where the endpoint has one), else those named by message or job id.
async fn redrive_events(dlq: &Dlq, all: bool, ids: &[String]) -> anyhow::Result<()> {
    if all {
        match start_move_task(&dlq.sqs, &dlq.dlq_url, &dlq.queue_url).await {
            Ok(task) => {
                println!("started a message move task: {task}");
                return Ok(());
            }
            Err(err) => {
                println!("the endpoint has no StartMessageMoveTask ({err}); moving one by one")
            }
        }
    }
    let selection = if all {
        Selection::All
    } else {
        Selection::Ids(ids)
    };
    let (selected, others): (Vec<_>, Vec<_>) = dlq
        .letters
        .take(MAX_MESSAGES)
        .await?
        .into_iter()
        .partition(|l| selection.takes(l));
    dlq.letters.release(&others).await?;
    move_each(&dlq.letters, selected).await
}

async fn move_each(dlq: &DeadLetters, letters: Vec<DeadLetter>) -> anyhow::Result<()> {
    let mut moved = 0;
    for letter in &letters {
        if !dlq.move_back(letter).await? {
            println!("skipped {}: not a webhook event message", letter.message_id);
            continue;
        }
        moved += 1;
        println!(
            "redrove {} (job {})",
            letter.message_id,
            letter.job_id().map_or("-".into(), |id| id.to_string())
        );
    }
    println!("{moved} message(s) moved back");
    Ok(())
}

fn age(sent_at_epoch_ms: u64) -> String {
    let now = SystemClock.now_epoch_ms();
    let seconds = Duration::from_millis(now.saturating_sub(sent_at_epoch_ms)).as_secs();
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
