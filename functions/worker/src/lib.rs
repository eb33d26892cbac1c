//! The offpath worker: a handler of the jobs queue's message batches that claims
//! jobs, runs each task group in one batched pass (micro-batching) and records the
//! outcome, plus a [`poller`] that drives the same handler from a queue locally. It
//! speaks offpath's messages ([`offpath_core::QueueMessage`]); the Lambda `main`
//! converts the SQS event at the edge (`offpath_aws::lambda::serve_batches`).
//! Document jobs run in parts: fan-out to one message per part, fan-in by whoever
//! settles the last part (see `parts.rs`).
//!
//! Rules (DESIGN §6): claim with a conditional update; finish conditional on the lease
//! owner; permanent errors fail the job and acknowledge; transient errors release the
//! lease, report an item failure and back off with ChangeMessageVisibility; on the
//! last receive a failing job is written `failed`/`dead_lettered` before SQS moves the
//! message to the dead-letter queue; malformed messages go to the dead-letter queue.
//! While a batch runs, a heartbeat keeps its claims and messages short-lived and
//! extends them (see `heartbeat.rs`), so a dead worker's jobs come back in about 30 s.

mod backoff;
mod claim;
mod deliver;
mod handler;
mod heartbeat;
mod inference;
mod outcome;
mod panic;
mod parts;
pub mod poller;
pub mod sweep;
mod tally;
mod worker;

pub use backoff::Backoff;
pub use deliver::{Deliverer, WEBHOOK_BACKOFF};
pub use worker::{Worker, WorkerConfig, WorkerError};
