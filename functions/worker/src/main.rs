//! The worker Lambda: wires DynamoDB, SQS, the model and the tasks to the batch
//! handler; the SQS event becomes offpath's messages at the edge.

use std::sync::Arc;

use offpath_aws::lambda::{ports_from_env, run_function, serve_batches};
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
    serve_batches("offpath-worker", async |batch| worker.handle(&batch).await).await
}
