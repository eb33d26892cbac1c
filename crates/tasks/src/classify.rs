//! `classify`: zero-shot label scores for a text, by the cosine similarity of the
//! text's embedding and each label's.

use offpath_core::{InputError, MODEL_NAME, Model, ModelError, Task};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::text::{Text, check_count, cosine, descending, embed_groups};

/// The `classify` task.
#[derive(Debug, Clone, Copy, Default)]
pub struct Classify;

/// `classify` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyInput {
    /// The text to classify.
    pub text: Text,
    /// Candidate labels, distinct.
    #[schema(min_items = 2, max_items = 32)]
    pub labels: Vec<Text>,
}

/// A label and its score.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LabelScore {
    /// The label, as given.
    pub label: String,
    /// Its cosine similarity to the text.
    pub score: f32,
}

/// `classify` output.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ClassifyOutput {
    /// The model that embedded text and labels.
    pub model: &'static str,
    /// The best label.
    pub label: String,
    /// Every label with its score, best first.
    pub scores: Vec<LabelScore>,
}

impl Task for Classify {
    const NAME: &'static str = "classify";
    const SUMMARY: &'static str = "Zero-shot label scores for a text.";
    type Input = ClassifyInput;
    type Output = ClassifyOutput;

    fn validate(&self, input: &ClassifyInput) -> Result<(), InputError> {
        check_count("labels", input.labels.len(), 2)?;
        let labels = &input.labels;
        match (1..labels.len()).find(|&i| labels[..i].contains(&labels[i])) {
            Some(repeat) => Err(InputError::new(
                format!("input.labels[{repeat}]"),
                "repeats an earlier label; labels must be distinct",
            )),
            None => Ok(()),
        }
    }

    fn run(
        &self,
        model: &dyn Model,
        inputs: &[&ClassifyInput],
    ) -> Result<Vec<ClassifyOutput>, ModelError> {
        let groups = inputs.iter().map(|input| {
            std::iter::once(&input.text)
                .chain(&input.labels)
                .map(Text::as_str)
                .collect()
        });
        Ok(inputs
            .iter()
            .zip(embed_groups(model, groups)?)
            .map(|(input, vectors)| {
                let (text, labels) = vectors.split_first().expect("the text comes first");
                let scores: Vec<f32> = labels.iter().map(|l| cosine(text, l)).collect();
                let ranked: Vec<LabelScore> = descending(&scores)
                    .into_iter()
                    .map(|i| LabelScore {
                        label: input.labels[i].to_string(),
                        score: scores[i],
                    })
                    .collect();
                ClassifyOutput {
                    model: MODEL_NAME,
                    label: ranked[0].label.clone(),
                    scores: ranked,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use offpath_core::Registry;
    use serde_json::json;

    use super::*;

    #[test]
    fn labels_are_checked() {
        let registry = Registry::new().with(Classify);
        let entry = registry.get("classify").unwrap();
        let err = |input: serde_json::Value| entry.prepare(&input.into()).unwrap_err().to_string();
        assert_eq!(
            err(json!({"text": "t", "labels": ["a", "b", "a"]})),
            "input.labels[2]: repeats an earlier label; labels must be distinct"
        );
        assert!(err(json!({"text": "t", "labels": ["one"]})).contains("must hold 2 to 32"));
        assert_eq!(
            err(json!({"labels": ["a", "b"]})),
            "input: missing field `text`"
        );
        assert!(
            entry
                .prepare(&json!({"text": "t", "labels": ["x", "y"]}).into())
                .is_ok()
        );
    }
}
