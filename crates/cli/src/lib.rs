//! The `offpath` command's subcommands, as library functions its `main` dispatches to.

pub mod dev;
pub mod model;
