//! The worker Lambda: wires DynamoDB, SQS, the model and the tasks to the batch
//! handler.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use metrics_cloudwatch_embedded::lambda::service::run as run_lambda;
use offpath_aws::lambda::{metrics, ports_from_env, run_function};
use offpath_inference::{LineAligned, MiniLm, weights};
use offpath_worker::{Worker, WorkerConfig};

/// Large buffers on cache lines, for the model's parallel products ([`LineAligned`]).
#[global_allocator]
static ALLOCATOR: LineAligned = LineAligned;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    LineAligned::keep_freed_blocks();
    run_function("offpath-worker", run()).await
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let ports = ports_from_env().await?;
    let config = WorkerConfig {
        max_receive_count: ports.queue.max_receive_count().await?,
        ..WorkerConfig::default()
    };
    // Loaded once per execution environment: OFFPATH_MODEL_DIR (the model layer) or a
    // download into the cache on first start.
    let model = MiniLm::load(&weights::resolve(false)?)?;
    let tasks = Arc::new(offpath_tasks::registry());
    let worker = Worker::new(&ports, Arc::new(model), tasks, config);
    let worker = &worker;
    let handler = service_fn(move |event: LambdaEvent<_>| async move {
        worker
            .handle(event)
            .await
            .map_err(lambda_runtime::Error::from)
    });
    run_lambda(metrics("offpath-worker")?, handler).await
}
