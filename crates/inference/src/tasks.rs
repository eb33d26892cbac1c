//! The `Model` port on MiniLM: all texts of all jobs of one task go through one
//! batched embedding pass, and the results are split back per job.

use base64::Engine;
use offpath_core::task::EncodingFormat;
use offpath_core::{Model, ModelError, Task, TaskInput};
use serde_json::{Value, json};

use crate::minilm::{DIMENSIONS, MODEL_NAME, MiniLm};

impl Model for MiniLm {
    fn name(&self) -> &str {
        MODEL_NAME
    }

    fn run(&self, _task: Task, inputs: &[TaskInput]) -> Result<Vec<Value>, ModelError> {
        let texts: Vec<&str> = inputs.iter().flat_map(texts_of).collect();
        let vectors = self
            .embed(&texts)
            .map_err(|e| ModelError::Rejected(e.to_string()))?;
        let mut vectors = vectors.into_iter();
        inputs
            .iter()
            .map(|input| {
                let own: Vec<Vec<f32>> = vectors.by_ref().take(texts_of(input).count()).collect();
                output(input, own)
            })
            .collect()
    }
}

/// The texts an input needs embedded, in a fixed order.
fn texts_of(input: &TaskInput) -> Box<dyn Iterator<Item = &str> + '_> {
    match input {
        TaskInput::Embed(e) => Box::new(e.texts.iter().map(String::as_str)),
        TaskInput::Rank(r) => Box::new(
            std::iter::once(r.query.as_str()).chain(r.documents.iter().map(String::as_str)),
        ),
        TaskInput::Classify(c) => {
            Box::new(std::iter::once(c.text.as_str()).chain(c.labels.iter().map(String::as_str)))
        }
    }
}

fn output(input: &TaskInput, vectors: Vec<Vec<f32>>) -> Result<Value, ModelError> {
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return Err(ModelError::Rejected(
            "the model produced a non-finite value".into(),
        ));
    }
    Ok(match input {
        TaskInput::Embed(e) => {
            let embeddings: Vec<Value> = match e.encoding_format {
                EncodingFormat::Float => vectors.iter().map(|v| floats(v)).collect(),
                EncodingFormat::Base64 => vectors
                    .iter()
                    .map(|v| {
                        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
                    })
                    .collect(),
            };
            json!({
                "model": MODEL_NAME,
                "dimensions": DIMENSIONS,
                "encoding_format": e.encoding_format,
                "embeddings": embeddings,
            })
        }
        TaskInput::Rank(_) => {
            let (query, documents) = vectors.split_first().expect("the query comes first");
            let scores: Vec<f32> = documents.iter().map(|d| cosine(query, d)).collect();
            json!({
                "model": MODEL_NAME,
                "scores": floats(&scores),
                "order": descending(&scores),
            })
        }
        TaskInput::Classify(c) => {
            let (text, labels) = vectors.split_first().expect("the text comes first");
            let scores: Vec<f32> = labels.iter().map(|l| cosine(text, l)).collect();
            let ranked: Vec<Value> = descending(&scores)
                .into_iter()
                .map(|i| json!({"label": c.labels[i], "score": short(scores[i])}))
                .collect();
            json!({
                "model": MODEL_NAME,
                "label": ranked[0]["label"],
                "scores": ranked,
            })
        }
    })
}

/// Cosine similarity of two unit vectors: their dot product.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Indices by score, highest first.
fn descending(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

fn floats(values: &[f32]) -> Value {
    Value::Array(values.iter().copied().map(short).collect())
}

/// An f32 as the shortest decimal that reads back as the same f32 (serde_json would
/// widen it to f64 and print about twice the digits).
fn short(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map_or(Value::Null, Value::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_stay_short() {
        assert_eq!(short(0.1).to_string(), "0.1");
        assert_eq!(short(-0.033_417_4).to_string(), "-0.0334174");
        assert_eq!(descending(&[0.1, 0.9, 0.5]), [1, 2, 0]);
    }
}
