//! A model for the tasks' unit tests: no inference, predictable vectors.

use offpath_core::{Embedding, Model, ModelError, Piece};

/// Texts embed as `[length in bytes, 1]`; word pieces are whitespace-separated words
/// (id: the word's length); a sequence of pieces embeds as `[pieces, 1]`.
pub(crate) struct Words;

impl Model for Words {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError> {
        Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
    }

    fn tokenize(&self, text: &str) -> Result<Vec<Piece>, ModelError> {
        Ok(Piece::words(text))
    }

    fn embed_pieces(&self, sequences: &[&[u32]]) -> Result<Vec<Embedding>, ModelError> {
        Ok(sequences
            .iter()
            .map(|s| vec![s.len() as f32, 1.0])
            .collect())
    }
}
