//! `offpath-bench`: the model's and the pipeline's figures (BENCHMARKS.md).

use clap::Parser;

/// offpath's benchmarks: figures printed, and written as JSON with PNG plots.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: offpath_bench::BenchCommand,
}

/// Large buffers on cache lines, for the model's parallel products, as in `offpath`
/// and the worker ([`offpath_inference::LineAligned`]).
#[global_allocator]
static ALLOCATOR: offpath_inference::LineAligned = offpath_inference::LineAligned;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    offpath_inference::LineAligned::keep_freed_blocks();
    let cli = Cli::parse();
    // Warnings only: a line per job would cost time and bury the figures.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match offpath_bench::run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
