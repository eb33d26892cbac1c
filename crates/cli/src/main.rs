//! `offpath`: run the local stack and operate a deployment.

use clap::{Parser, Subcommand};

/// offpath: model inference off the request path, on SQS, DynamoDB and Lambda.
///
/// Without a command, `offpath` runs `offpath dev`: the API and the workers in one
/// process.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    api: offpath::client::Api,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API over HTTP and run workers that poll the queue, in one process.
    Dev(offpath::dev::DevArgs),
    /// Submit a job, e.g. `offpath submit embed --text "hello" --wait`.
    Submit(offpath::client::Submit),
    /// List your jobs, newest first, e.g. `offpath jobs --status failed`.
    Jobs(offpath::jobs::JobsArgs),
    /// Print a job.
    Status {
        /// The job id.
        id: String,
    },
    /// Wait for a job to finish, showing its status; exits non-zero unless it succeeded.
    Wait {
        /// The job id.
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_seconds: u64,
    },
    /// Inspect, redrive and purge a dead-letter queue, the jobs' or (--queue webhooks)
    /// the webhook events' (SQS, via the AWS configuration).
    Dlq(offpath::dlq::DlqArgs),
    /// Repair stuck jobs once: fail those whose worker died on the last attempt,
    /// re-enqueue those whose message was lost (AWS configuration; `dev` sweeps itself).
    Sweep(offpath::sweep::SweepArgs),
    /// Manage the model weights (all-MiniLM-L6-v2).
    #[command(subcommand)]
    Model(offpath::model::ModelCommand),
}

/// Large buffers on cache lines, for the model's parallel products
/// ([`offpath_inference::LineAligned`]).
#[global_allocator]
static ALLOCATOR: offpath_inference::LineAligned = offpath_inference::LineAligned;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    offpath_inference::LineAligned::keep_freed_blocks();
    let cli = Cli::parse();
    let default_filter = "info,aws_config=warn,aws_smithy_runtime=warn";
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    let api = cli.api;
    let result = match cli.command {
        Some(Command::Submit(options)) => offpath::client::submit(&api, options).await,
        Some(Command::Jobs(args)) => offpath::jobs::run(&api, args).await,
        Some(Command::Status { id }) => offpath::client::status(&api, &id).await,
        Some(Command::Wait {
            id,
            timeout_seconds,
        }) => {
            offpath::client::wait(&api, &id, std::time::Duration::from_secs(timeout_seconds)).await
        }
        Some(Command::Dlq(command)) => offpath::dlq::run(command).await,
        Some(Command::Sweep(args)) => offpath::sweep::run(args).await,
        Some(Command::Dev(args)) => offpath::dev::run(args).await,
        Some(Command::Model(command)) => offpath::model::run(command).await,
        None => offpath::dev::run(offpath::dev::DevArgs::parse_from(["dev"])).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
