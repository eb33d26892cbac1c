//! What claiming a message gives a batch: a job or a part this invocation holds,
//! with its input ready to run.

use std::sync::Arc;

use offpath_core::{Job, Lease, Prepared, TaskEntry};

/// A message whose job this invocation holds, with its input ready to run.
pub(crate) struct Claimed {
    pub(crate) job: Job,
    pub(crate) lease: Lease,
    pub(crate) task: TaskEntry,
    pub(crate) input: Prepared,
    pub(crate) receive_count: u32,
}

/// What claiming a message gave this invocation.
pub(crate) enum Claim {
    /// A job to run in its task's batched pass.
    Job(Claimed),
    /// A document job to split into parts.
    Document(Claimed),
    /// A part of a document job to run in its task's batched pass over parts.
    Part(ClaimedPart),
}

/// A part this invocation holds, with its input.
pub(crate) struct ClaimedPart {
    pub(crate) job: Job,
    pub(crate) part: u32,
    pub(crate) lease: Lease,
    pub(crate) task: TaskEntry,
    pub(crate) input: Arc<Vec<u8>>,
    /// The more of the message's receives and the part's claims: its attempt number.
    pub(crate) receive_count: u32,
}
