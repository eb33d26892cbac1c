//! `offpath model`: fetch and check the weights.

use clap::Subcommand;
use offpath_inference::{MiniLm, weights};

/// Model commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ModelCommand {
    /// Download the weights into the cache (unless OFFPATH_MODEL_DIR is set), verify
    /// their SHA-256, load them once, and print the model directory.
    Fetch,
    /// Hash model.safetensors in the model directory and compare it with the pinned
    /// SHA-256.
    Verify,
}

/// Runs a model command.
pub async fn run(command: ModelCommand) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let files = weights::resolve(true)?;
        match command {
            ModelCommand::Fetch => {
                MiniLm::load(&files)?;
            }
            ModelCommand::Verify => {
                let actual = weights::sha256_file(&files.weights())?;
                anyhow::ensure!(
                    actual == weights::MODEL_SHA256,
                    "{} has SHA-256 {actual}, expected {}; delete it and run `offpath model fetch`",
                    files.weights().display(),
                    weights::MODEL_SHA256
                );
            }
        }
        println!("{}", files.dir.display());
        Ok(())
    })
    .await?
}
