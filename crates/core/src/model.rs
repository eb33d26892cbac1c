//! The inference port.

use std::time::Duration;

use serde_json::Value;

use crate::task::{Task, TaskInput};

/// Why inference did not produce outputs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The backend is overloaded or rate limited; retry after the hint if any.
    #[error("inference throttled")]
    Throttled {
        /// How long the backend asked callers to wait.
        retry_after: Option<Duration>,
    },
    /// The backend is temporarily unavailable.
    #[error("inference unavailable: {0}")]
    Unavailable(String),
    /// The model cannot process this input; retrying will not help.
    #[error("{0}")]
    Rejected(String),
}

impl ModelError {
    /// True when the same inputs may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ModelError::Throttled { .. } | ModelError::Unavailable(_)
        )
    }
}

/// A model that runs tasks. `run` receives inputs of one task and returns one output
/// per input, in order, from one batched pass (micro-batching). It is CPU-bound and
/// synchronous: callers run it on a blocking thread.
pub trait Model: Send + Sync + 'static {
    /// The model's name, reported in outputs.
    fn name(&self) -> &str;

    /// Runs `task` over `inputs`, all of which are for `task`.
    fn run(&self, task: Task, inputs: &[TaskInput]) -> Result<Vec<Value>, ModelError>;
}
