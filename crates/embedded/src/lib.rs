//! offpath's single-node backend, with no AWS, no Docker and no emulator: a data
//! directory holding one SQLite database ([`Database`]) for the jobs ([`SqliteStore`],
//! which applies core's transitions as written, the specification the DynamoDB store
//! translates) and the four queues ([`SqliteQueue`], with SQS's semantics: visibility
//! timeout, receive counts, long polling, redrive to a dead-letter queue), and the
//! blobs as files beside it ([`LocalBlobs`], like the S3 bucket). A write is committed
//! before it returns, so it survives the process being killed; several processes may
//! share one data directory on one machine. The conformance suite of the test kit runs
//! against these adapters and against the AWS ones.

mod blobs;
mod database;
mod queue;
mod store;

use std::path::Path;
use std::sync::Arc;

use offpath_core::{Ports, QueueSettings};

pub use blobs::LocalBlobs;
pub use database::{DATABASE_FILE, Database, DbError, Durability, OpenError, SCHEMA_VERSION};
pub use queue::{QueueOptions, SqliteQueue};
pub use store::SqliteStore;

/// The directory below the data directory that holds the blobs.
pub const BLOBS_DIR: &str = "blobs";

/// How the embedded backend behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Queues deliver fairly across owners (see [`QueueOptions::fair`]).
    pub fair: bool,
    /// What a commit survives.
    pub durability: Durability,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fair: true,
            durability: Durability::default(),
        }
    }
}

/// The embedded backend in `data_dir`, opened (created when missing).
pub struct Embedded {
    /// The database.
    pub database: Database,
    /// The store, for the purge of expired jobs.
    pub store: SqliteStore,
    /// The blobs.
    pub blobs: LocalBlobs,
    /// Every port on them.
    pub ports: Ports,
}

/// Opens the backend in `data_dir`: a store, a jobs queue named `queue` with
/// `settings` and its dead-letter queue `queue`-dlq, a webhooks queue `queue`-webhooks
/// with `webhook_settings` and its dead-letter queue `queue`-webhooks-dlq, behaving as
/// `options` says, and the blobs in `data_dir`/[`BLOBS_DIR`].
pub fn open(
    data_dir: &Path,
    queue: &str,
    settings: &QueueSettings,
    webhook_settings: &QueueSettings,
    options: Options,
) -> Result<Embedded, OpenError> {
    let database = Database::open(data_dir, options.durability)?;
    let blobs_dir = data_dir.join(BLOBS_DIR);
    let blobs = LocalBlobs::new(&blobs_dir).map_err(OpenError::Blobs)?;
    let store = SqliteStore::new(database.clone());
    let (jobs, dlq) = queue_pair(&database, queue, settings, options);
    let (webhooks, webhooks_dlq) = queue_pair(
        &database,
        &format!("{queue}-webhooks"),
        webhook_settings,
        options,
    );
    let ports = Ports {
        store: Arc::new(store.clone()),
        queue: jobs,
        blobs: Arc::new(blobs.clone()),
        dlq: Some(dlq),
        webhooks,
        webhooks_dlq: Some(webhooks_dlq),
    };
    Ok(Embedded {
        database,
        store,
        blobs,
        ports,
    })
}

/// A queue named `name` with `settings` and its dead-letter queue `name`-dlq.
fn queue_pair(
    database: &Database,
    name: &str,
    settings: &QueueSettings,
    backend: Options,
) -> (Arc<SqliteQueue>, Arc<SqliteQueue>) {
    let options = |name: String| QueueOptions {
        name,
        visibility_timeout: settings.visibility_timeout,
        fair: backend.fair,
    };
    let dlq = Arc::new(SqliteQueue::new(
        database.clone(),
        options(format!("{name}-dlq")),
    ));
    let queue = SqliteQueue::with_dead_letter_queue(
        database.clone(),
        options(name.to_owned()),
        Arc::clone(&dlq),
        settings.max_receive_count,
    );
    (Arc::new(queue), dlq)
}
