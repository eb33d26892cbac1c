//! The offpath domain: jobs and their states, idempotency rules, task inputs and the
//! ports the adapters implement. Nothing here knows about AWS.

pub mod clock;
pub mod error;
pub mod idempotency;
pub mod job;
pub mod message;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod status;
pub mod store;
pub mod task;

pub use clock::{Clock, SystemClock};
pub use error::{DEAD_LETTERED, ErrorInfo, QueueError, StoreError};
pub use job::{Job, JobId, JobView, NewJob};
pub use message::JobMessage;
pub use model::{Model, ModelError};
pub use queue::{JobQueue, QueueDepth, QueueMessage};
pub use status::JobStatus;
pub use store::{JobStore, Lease};
pub use task::{Task, TaskInput};
