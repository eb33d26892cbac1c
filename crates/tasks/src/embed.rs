//! `embed`: texts to embedding vectors, as JSON floats or base64 (as the OpenAI
//! embeddings API offers).

use base64::Engine;
use offpath_core::{InputError, MODEL_NAME, Model, ModelError, Task};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::text::{Text, check_count, embed_groups};

/// The `embed` task.
#[derive(Debug, Clone, Copy, Default)]
pub struct Embed;

/// How `embed` returns vectors: JSON floats, or base64 of little-endian f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian f32 bytes.
    Base64,
}

/// `embed` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedInput {
    /// Texts to embed.
    #[schema(min_items = 1, max_items = 32)]
    pub texts: Vec<Text>,
    /// Output encoding (default `float`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
}

/// One embedding as the output carries it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Vector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// `embed` output.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EmbedOutput {
    /// The model that embedded the texts.
    pub model: &'static str,
    /// Length of each vector.
    pub dimensions: usize,
    /// How the vectors are encoded.
    pub encoding_format: EncodingFormat,
    /// One vector per text, in order.
    pub embeddings: Vec<Vector>,
}

impl Task for Embed {
    const NAME: &'static str = "embed";
    const SUMMARY: &'static str = "Texts to embedding vectors (384 dimensions, unit length).";
    type Input = EmbedInput;
    type Output = EmbedOutput;

    fn validate(&self, input: &EmbedInput) -> Result<(), InputError> {
        check_count("texts", input.texts.len(), 1)
    }

    fn run(
        &self,
        model: &dyn Model,
        inputs: &[&EmbedInput],
    ) -> Result<Vec<EmbedOutput>, ModelError> {
        let groups = inputs
            .iter()
            .map(|input| input.texts.iter().map(Text::as_str).collect());
        let vectors = embed_groups(model, groups)?;
        Ok(inputs
            .iter()
            .zip(vectors)
            .map(|(input, vectors)| {
                let format = input.encoding_format.unwrap_or_default();
                EmbedOutput {
                    model: MODEL_NAME,
                    dimensions: vectors.first().map_or(0, Vec::len),
                    encoding_format: format,
                    embeddings: vectors.into_iter().map(|v| encode(v, format)).collect(),
                }
            })
            .collect())
    }

    fn input_from_texts(&self, texts: Vec<String>) -> Option<EmbedInput> {
        Some(EmbedInput {
            texts: texts.into_iter().map(Text::unchecked).collect(),
            encoding_format: None,
        })
    }
}

fn encode(vector: Vec<f32>, format: EncodingFormat) -> Vector {
    match format {
        EncodingFormat::Float => Vector::Float(vector),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use offpath_core::{Embedding, Piece, Registry};
    use serde_json::{Value, json};

    use super::*;
    use crate::test_model::Words as Lengths;

    fn prepare(input: Value) -> Result<offpath_core::Prepared, String> {
        Registry::new()
            .with(Embed)
            .get("embed")
            .unwrap()
            .prepare(&input.into())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            prepare(json!({})).unwrap_err(),
            "input: missing field `texts`"
        );
        assert_eq!(
            prepare(json!({"texts": ["a", 3]})).unwrap_err(),
            "input.texts[1]: invalid type: integer `3`, expected a string"
        );
        assert_eq!(
            prepare(json!({"texts": ["a"], "encoding_format": "int8"})).unwrap_err(),
            "input.encoding_format: unknown variant `int8`, expected `float` or `base64`"
        );
        assert_eq!(
            prepare(json!({"texts": []})).unwrap_err(),
            "input.texts: must hold 1 to 32 strings (it holds 0)"
        );
        assert!(
            prepare(json!({"texts": vec!["a"; 33]}))
                .unwrap_err()
                .contains("it holds 33")
        );
        assert_eq!(
            prepare(json!({"texts": ["x".repeat(8193)]})).unwrap_err(),
            "input.texts[0]: is 8193 characters long; the limit is 8192"
        );
        assert_eq!(
            prepare(json!({"texts": ["  "]})).unwrap_err(),
            "input.texts[0]: must not be empty"
        );
        assert_eq!(
            prepare(json!({"texts": ["a"], "extra": 1})).unwrap_err(),
            "input.extra: unknown field `extra`, expected `texts` or `encoding_format`"
        );
        assert!(prepare(json!({"texts": ["a"], "encoding_format": null})).is_ok());
    }

    #[test]
    fn one_pass_serves_every_job_in_its_format() {
        let registry = Registry::new().with(Embed);
        let entry = registry.get("embed").unwrap();
        let inputs = [
            json!({"texts": ["one", "three"]}),
            json!({"texts": ["fives"], "encoding_format": "base64"}),
        ]
        .map(|i| entry.prepare(&i.into()).unwrap());
        let outputs = entry.run(&Lengths, &inputs).unwrap();
        assert_eq!(
            outputs[0].to_value(),
            json!({"model": MODEL_NAME, "dimensions": 2, "encoding_format": "float",
                   "embeddings": [[3.0, 1.0], [5.0, 1.0]]})
        );
        let bytes: Vec<u8> = [5.0f32, 1.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            outputs[1].to_value()["embeddings"][0],
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
    }

    #[test]
    fn floats_stay_short() {
        struct Tenth;
        impl Model for Tenth {
            fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError> {
                Ok(texts.iter().map(|_| vec![0.1, -0.033_417_4]).collect())
            }
            fn tokenize(&self, _text: &str) -> Result<Vec<Piece>, ModelError> {
                Ok(Vec::new())
            }
            fn embed_pieces(&self, _sequences: &[&[u32]]) -> Result<Vec<Embedding>, ModelError> {
                Ok(Vec::new())
            }
        }
        let registry = Registry::new().with(Embed);
        let entry = registry.get("embed").unwrap();
        let input = entry.prepare(&json!({"texts": ["a"]}).into()).unwrap();
        let output = entry.run(&Tenth, &[input]).unwrap().remove(0);
        assert!(
            output
                .get()
                .ends_with(r#""embeddings":[[0.1,-0.0334174]]}"#),
            "{output}"
        );
    }
}
