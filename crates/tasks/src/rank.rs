//! `rank`: documents ordered by cosine similarity to a query.

use offpath_core::{InputError, MODEL_NAME, Model, ModelError, Task};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::text::{Text, check_count, cosine, descending, embed_groups};

/// The `rank` task.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rank;

/// `rank` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RankInput {
    /// The query.
    pub query: Text,
    /// Documents to order by similarity to the query.
    #[schema(min_items = 1, max_items = 32)]
    pub documents: Vec<Text>,
}

/// `rank` output.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RankOutput {
    /// The model that embedded query and documents.
    pub model: &'static str,
    /// Each document's cosine similarity to the query, in input order.
    pub scores: Vec<f32>,
    /// Document indices, most similar first.
    pub order: Vec<usize>,
}

impl Task for Rank {
    const NAME: &'static str = "rank";
    const SUMMARY: &'static str = "Documents ordered by similarity to a query.";
    type Input = RankInput;
    type Output = RankOutput;

    fn validate(&self, input: &RankInput) -> Result<(), InputError> {
        check_count("documents", input.documents.len(), 1)
    }

    fn run(&self, model: &dyn Model, inputs: &[&RankInput]) -> Result<Vec<RankOutput>, ModelError> {
        let groups = inputs.iter().map(|input| {
            std::iter::once(&input.query)
                .chain(&input.documents)
                .map(Text::as_str)
                .collect()
        });
        Ok(embed_groups(model, groups)?
            .into_iter()
            .map(|vectors| {
                let (query, documents) = vectors.split_first().expect("the query comes first");
                let scores: Vec<f32> = documents.iter().map(|d| cosine(query, d)).collect();
                RankOutput {
                    model: MODEL_NAME,
                    order: descending(&scores),
                    scores,
                }
            })
            .collect())
    }
}
