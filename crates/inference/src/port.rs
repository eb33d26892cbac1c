//! The `Model` port on MiniLM: the texts (or word pieces) of every job of a group go
//! through one batched pass; tasks turn the vectors into their outputs.

use offpath_core::{Embedding, Model, ModelError, Piece};

use crate::minilm::MiniLm;

impl Model for MiniLm {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError> {
        MiniLm::embed(self, texts).map_err(|e| ModelError::Rejected(e.to_string()))
    }

    fn tokenize(&self, text: &str) -> Result<Vec<Piece>, ModelError> {
        let pieces =
            MiniLm::tokenize(self, text).map_err(|e| ModelError::Rejected(e.to_string()))?;
        Ok(pieces
            .into_iter()
            .map(|(id, range)| Piece {
                id,
                start: range.start,
                end: range.end,
            })
            .collect())
    }

    fn embed_pieces(&self, sequences: &[&[u32]]) -> Result<Vec<Embedding>, ModelError> {
        MiniLm::embed_pieces(self, sequences).map_err(|e| ModelError::Rejected(e.to_string()))
    }
}
