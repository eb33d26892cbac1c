//! The offpath domain: jobs and their states, the transitions that are the only way a
//! stored job changes, idempotency rules, tasks and their registry, and the ports the
//! adapters implement. Nothing here knows about AWS.

pub mod activity;
pub mod blob;
pub mod clock;
pub mod dead_letters;
pub mod id;
pub mod idempotency;
pub mod index;
pub mod job;
pub mod json;
pub mod message;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod ports;
pub mod queue;
pub mod status;
pub mod store;
pub mod task;
pub mod task_name;
pub mod transition;
pub mod webhook;

pub use activity::{Activity, MinuteActivity};
pub use blob::{BlobError, BlobStore, SignedUrl};
pub use clock::{Clock, SystemClock};
pub use dead_letters::{DeadLetter, DeadLetters, RedriveError, Redriven, Selection};
pub use id::JobId;
pub use job::{
    DEAD_LETTERED, ErrorInfo, Job, JobView, Lease, NewJob, Parts, Progress, WebhookView,
};
pub use json::JsonText;
pub use message::JobMessage;
pub use model::{Embedding, MODEL_NAME, Model, ModelError, Piece};
pub use ports::Ports;
pub use queue::{BatchReport, JobQueue, QueueDepth, QueueError, QueueMessage, QueueSettings};
pub use status::JobStatus;
pub use store::{
    DuePage, JobPage, JobStore, LIST_EXAMINE_LIMIT, ListPosition, ListQuery, StoreError,
};
pub use task::{
    Assembled, DocumentTask, InputError, PartOutput, Prepared, Registry, Source, Split, Task,
    TaskEntry, UnknownTask,
};
pub use task_name::TaskName;
pub use transition::{End, Settle, Step, Transition};
pub use webhook::{Event, EventKind, EventType, Webhook};
