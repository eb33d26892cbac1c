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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API over HTTP and run workers that poll the queue, in one process.
    Dev(offpath::dev::DevArgs),
    /// Manage the model weights (all-MiniLM-L6-v2).
    #[command(subcommand)]
    Model(offpath::model::ModelCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .init();
    let result = match Cli::parse().command {
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
