//! What the Lambda functions share at start-up: JSON logs, the table and queue the
//! environment names, and one sentence when start-up fails.

use std::fmt::Display;
use std::process::ExitCode;

use crate::{DynamoStore, Settings, SqsQueue, load_sdk_config};

/// Any start-up error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The jobs table (`OFFPATH_TABLE`) and queue (`OFFPATH_QUEUE_URL`) of a deployment.
pub struct Deployment {
    /// The jobs table.
    pub store: DynamoStore,
    /// The jobs queue; connecting reads its ARN, which proves the URL.
    pub queue: SqsQueue,
}

impl Deployment {
    /// Connects with the standard AWS configuration; a missing or wrong setting is an
    /// error that names it.
    pub async fn from_env() -> Result<Self, BoxError> {
        let sdk = load_sdk_config().await?;
        let settings = Settings::from_env()?;
        let store = DynamoStore::from_sdk(&sdk, &settings.table);
        let url = settings.require_queue_url()?;
        let queue = SqsQueue::from_sdk(&sdk, url)
            .await
            .map_err(|e| format!("OFFPATH_QUEUE_URL={url:?} cannot be used: {e}"))?;
        Ok(Deployment { store, queue })
    }
}

/// A function's `main`: sets up JSON logs, then runs `run`. If it fails, the error is
/// logged as one sentence and the process exits non-zero.
pub async fn run_function<E: Display>(
    name: &str,
    run: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "{name} stopped");
            ExitCode::FAILURE
        }
    }
}
