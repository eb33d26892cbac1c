//! The offpath domain: jobs and their states, idempotency rules, tasks and their
//! registry, and the ports the adapters implement. Nothing here knows about AWS.

pub mod activity;
pub mod blob;
pub mod clock;
pub mod dead_letters;
pub mod idempotency;
pub mod index;
pub mod job;
pub mod message;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod queue;
pub mod status;
pub mod store;
pub mod task;
pub mod webhook;

pub use activity::{Activity, MinuteActivity};
pub use blob::{BlobError, BlobStore, SignedUrl};
pub use clock::{Clock, SystemClock};
pub use dead_letters::{DeadLetter, DeadLetters, RedriveError, Redriven, Selection};
pub use job::{
    DEAD_LETTERED, ErrorInfo, Job, JobId, JobView, Lease, NewJob, Parts, Progress, WebhookView,
};
pub use message::JobMessage;
pub use model::{Embedding, MODEL_NAME, Model, ModelError, Piece};
pub use ports::Ports;
pub use queue::{JobQueue, QueueDepth, QueueError, QueueMessage, QueueSettings};
pub use status::JobStatus;
pub use store::{
    DuePage, JobPage, JobStore, LIST_EXAMINE_LIMIT, ListPosition, ListQuery, PartsEnd, Settle,
    StoreError,
};
pub use task::{
    Assembled, DocumentTask, InputError, PartOutput, Prepared, Registry, Source, Split, Task,
    TaskEntry, TaskName, UnknownTask,
};
pub use webhook::{Event, EventKind, EventType, Webhook};
