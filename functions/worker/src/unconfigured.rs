//! The model port's answer while no model is configured: every job fails with a
//! clear `inference_failed` error instead of a fake result.

use offpath_core::{Model, ModelError, Task, TaskInput};
use serde_json::Value;

/// A model port with no model behind it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unconfigured;

impl Model for Unconfigured {
    fn name(&self) -> &str {
        "none"
    }

    fn run(&self, task: Task, _inputs: &[TaskInput]) -> Result<Vec<Value>, ModelError> {
        Err(ModelError::Rejected(format!(
            "no model is configured in this worker, so the {task} task cannot run"
        )))
    }
}
