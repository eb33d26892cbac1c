//! What the text tasks share: the [`Text`] type and its limits, the batched pass over
//! every text of a group, and the scoring of unit vectors.
//!
//! Limits keep a job's input and output inside DynamoDB's 400 KiB item: at most
//! [`MAX_TEXTS`] texts of at most [`MAX_TEXT_CHARS`] characters each (a float
//! embedding output of 32 texts is about 150 KB of JSON).

use std::fmt;

use offpath_core::{Embedding, InputError, Model, ModelError};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

/// Most texts (embed), documents (rank) or labels (classify) in one job.
pub const MAX_TEXTS: usize = 32;
/// Most characters in one text, document, query or label. The model reads at most
/// 256 tokens; longer text is truncated, as sentence-transformers does.
pub const MAX_TEXT_CHARS: usize = 8192;

/// A text the model reads: 1 to [`MAX_TEXT_CHARS`] characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text(String);

impl Text {
    /// A text as given, checked later by deserialisation (`offpath submit --text`).
    pub(crate) fn unchecked(text: String) -> Self {
        Text(text)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a [`Text`].
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// Empty or only whitespace.
    #[error("must not be empty")]
    Blank,
    /// Longer than [`MAX_TEXT_CHARS`].
    #[error("is {0} characters long; the limit is {MAX_TEXT_CHARS}")]
    TooLong(usize),
}

impl TryFrom<String> for Text {
    type Error = TextError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.trim().is_empty() {
            return Err(TextError::Blank);
        }
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(TextError::TooLong(chars));
        }
        Ok(Text(text))
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        text.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialSchema for Text {
    fn schema() -> RefOr<Schema> {
        Object::builder()
            .schema_type(SchemaType::Type(Type::String))
            .min_length(Some(1))
            .max_length(Some(MAX_TEXT_CHARS))
            .pattern(Some(r"\S"))
            .description(Some("1 to 8,192 characters, not blank."))
            .into()
    }
}

impl ToSchema for Text {}

/// Checks that the list at `field` holds `min` to [`MAX_TEXTS`] items.
pub fn check_count(field: &str, len: usize, min: usize) -> Result<(), InputError> {
    if (min..=MAX_TEXTS).contains(&len) {
        Ok(())
    } else {
        Err(InputError::new(
            format!("input.{field}"),
            format!("must hold {min} to {MAX_TEXTS} strings (it holds {len})"),
        ))
    }
}

/// Embeds the texts of a whole group in one pass and splits the vectors back: one
/// list per input, holding as many vectors as that input gave texts.
pub fn embed_groups<'a>(
    model: &dyn Model,
    groups: impl IntoIterator<Item = Vec<&'a str>>,
) -> Result<Vec<Vec<Embedding>>, ModelError> {
    let groups: Vec<Vec<&str>> = groups.into_iter().collect();
    let texts: Vec<&str> = groups.iter().flatten().copied().collect();
    let vectors = model.embed(&texts)?;
    if vectors.len() != texts.len() {
        return Err(ModelError::Rejected(format!(
            "the model returned {} embeddings for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return Err(ModelError::Rejected(
            "the model produced a non-finite value".into(),
        ));
    }
    let mut vectors = vectors.into_iter();
    Ok(groups
        .iter()
        .map(|group| vectors.by_ref().take(group.len()).collect())
        .collect())
}

/// Cosine similarity of two unit vectors: their dot product.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Indices by score, highest first.
pub fn descending(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_checked() {
        assert_eq!(Text::try_from("hi".to_owned()).unwrap().as_str(), "hi");
        assert_eq!(
            Text::try_from("  ".to_owned()).unwrap_err().to_string(),
            "must not be empty"
        );
        assert_eq!(
            Text::try_from("é".repeat(MAX_TEXT_CHARS + 1))
                .unwrap_err()
                .to_string(),
            "is 8193 characters long; the limit is 8192"
        );
        assert!(Text::try_from("é".repeat(MAX_TEXT_CHARS)).is_ok());
    }

    #[test]
    fn scores_order_highest_first() {
        assert_eq!(descending(&[0.1, 0.9, 0.5]), [1, 2, 0]);
        assert_eq!(cosine(&[0.6, 0.8], &[0.6, 0.8]), 1.0);
    }
}
