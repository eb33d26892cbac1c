//! The `offpath` command's subcommands, as library functions its `main` dispatches to.

pub mod client;
pub mod dev;
pub mod dlq;
pub mod http;
pub mod jobs;
pub mod model;
pub mod sweep;
