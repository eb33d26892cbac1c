//! `count`: a task of the test kit's own, registered exactly as the built-in tasks
//! are (`Registry::with`), so tests prove that a task added from outside the tasks
//! crate runs through the API, the worker and the OpenAPI document. It is the example
//! `docs/adding-a-task.md` walks through.

use offpath_core::{Model, ModelError, Task};
use offpath_tasks::text::{Text, embed_groups};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The `count` task: how long a text is, in characters and in words, and how many
/// dimensions the model gives it (so each job passes through the model).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountTask;

/// `count` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountInput {
    /// The text to count.
    pub text: Text,
}

/// `count` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CountOutput {
    /// Characters in the text.
    pub chars: usize,
    /// Whitespace-separated words in the text.
    pub words: usize,
    /// Dimensions of the text's embedding.
    pub dimensions: usize,
}

impl Task for CountTask {
    const NAME: &'static str = "count";
    const SUMMARY: &'static str = "Characters and words of a text (the test kit's task).";
    type Input = CountInput;
    type Output = CountOutput;

    fn run(
        &self,
        model: &dyn Model,
        inputs: &[&CountInput],
    ) -> Result<Vec<CountOutput>, ModelError> {
        let groups = inputs.iter().map(|input| vec![input.text.as_str()]);
        Ok(inputs
            .iter()
            .zip(embed_groups(model, groups)?)
            .map(|(input, vectors)| CountOutput {
                chars: input.text.as_str().chars().count(),
                words: input.text.as_str().split_whitespace().count(),
                dimensions: vectors[0].len(),
            })
            .collect())
    }
}
