//! `offpath dlq`: inspect, redrive and purge the dead-letter queue of a deployment
//! (AWS, LocalStack, moto) through the standard AWS configuration.

use std::time::Duration;

use clap::Subcommand;
use offpath_aws::config::{DEFAULT_DLQ, DEFAULT_QUEUE};
use offpath_aws::dlq::{DeadLetter, DeadLetterQueue};
use offpath_aws::{DynamoStore, Settings, load_sdk_config};
use offpath_core::{Clock, JobStore, StoreError, SystemClock};

/// Most messages one command reads.
const MAX_MESSAGES: usize = 10_000;

/// Dead-letter queue commands. Queues come from OFFPATH_QUEUE_URL and OFFPATH_DLQ_URL,
/// else the queues named offpath-jobs and offpath-jobs-dlq at the configured endpoint;
/// the table from OFFPATH_TABLE.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered messages: message id, receive count, age, job id and the
    /// job's error. Messages stay in the queue.
    List,
    /// Put dead-lettered jobs back to `queued` and move their messages to the jobs
    /// queue (StartMessageMoveTask where the endpoint supports it, else receive, send,
    /// delete: never losing a message). Name messages or jobs by id, or pass --all.
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
pub async fn run(command: DlqCommand) -> anyhow::Result<()> {
    let sdk = load_sdk_config().await?;
    let settings = Settings::from_env()?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = DeadLetterQueue::new(
        sqs.clone(),
        queue_url(&sqs, settings.dlq_url.as_deref(), DEFAULT_DLQ).await?,
        queue_url(&sqs, settings.queue_url.as_deref(), DEFAULT_QUEUE).await?,
    );
    let store = DynamoStore::from_sdk(&sdk, &settings.table);
    match command {
        DlqCommand::List => list(&dlq, &store).await,
        DlqCommand::Redrive { all, ids } => redrive(&dlq, &store, all, &ids).await,
        DlqCommand::Purge { .. } => {
            dlq.purge().await?;
            println!("purged the dead-letter queue");
            Ok(())
        }
    }
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
                "cannot find queue {name} ({e}); set OFFPATH_QUEUE_URL and OFFPATH_DLQ_URL"
            )
        })?;
    Ok(found.queue_url().unwrap_or_default().to_owned())
}

async fn list(dlq: &DeadLetterQueue, store: &DynamoStore) -> anyhow::Result<()> {
    let letters = dlq.take(MAX_MESSAGES).await?;
    dlq.release(&letters).await?;
    println!(
        "{:<36}  {:>8}  {:>8}  {:<36}  ERROR",
        "MESSAGE ID", "RECEIVES", "AGE", "JOB ID"
    );
    for letter in &letters {
        let (job, error) = match letter.job_id {
            None => ("-".to_owned(), "not a job message".to_owned()),
            Some(id) => match store.get(id).await? {
                None => (id.to_string(), "no such job".to_owned()),
                Some(job) => (
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

async fn redrive(
    dlq: &DeadLetterQueue,
    store: &DynamoStore,
    all: bool,
    ids: &[String],
) -> anyhow::Result<()> {
    let letters = dlq.take(MAX_MESSAGES).await?;
    let chosen = |l: &DeadLetter| {
        all || ids.contains(&l.message_id)
            || l.job_id.is_some_and(|id| ids.contains(&id.to_string()))
    };
    let (selected, others): (Vec<_>, Vec<_>) = letters.into_iter().partition(|l| chosen(l));
    let mut movable = Vec::new();
    let mut skipped = others;
    for letter in selected {
        let Some(job_id) = letter.job_id else {
            println!("skipped {}: not a job message", letter.message_id);
            skipped.push(letter);
            continue;
        };
        match store.revive(job_id).await {
            Ok(_) | Err(StoreError::Conflict(_)) => movable.push(letter),
            Err(StoreError::NotFound) => {
                println!("skipped {}: job {job_id} does not exist", letter.message_id);
                skipped.push(letter);
            }
            Err(err) => return Err(err.into()),
        }
    }
    dlq.release(&skipped).await?;
    if all && skipped.is_empty() {
        dlq.release(&movable).await?;
        match dlq.start_move_task().await {
            Ok(task) => {
                println!(
                    "started a message move task for {} message(s): {task}",
                    movable.len()
                );
                return Ok(());
            }
            Err(err) => {
                println!("the endpoint has no StartMessageMoveTask ({err}); moving one by one");
                // Only the messages whose jobs were revived; newcomers stay.
                let ids: Vec<String> = movable.into_iter().map(|l| l.message_id).collect();
                let (again, newcomers): (Vec<_>, Vec<_>) = dlq
                    .take(MAX_MESSAGES)
                    .await?
                    .into_iter()
                    .partition(|l| ids.contains(&l.message_id));
                dlq.release(&newcomers).await?;
                return move_each(dlq, again).await;
            }
        }
    }
    move_each(dlq, movable).await
}

async fn move_each(dlq: &DeadLetterQueue, letters: Vec<DeadLetter>) -> anyhow::Result<()> {
    for letter in &letters {
        dlq.move_back(letter).await?;
        println!(
            "redrove {} (job {})",
            letter.message_id,
            letter.job_id.map_or("-".into(), |id| id.to_string())
        );
    }
    println!("{} message(s) moved to the jobs queue", letters.len());
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
