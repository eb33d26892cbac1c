//! The `Model` port on MiniLM: the texts of every job of a group go through one
//! batched pass; tasks turn the vectors into their outputs.

use offpath_core::{Embedding, Model, ModelError};

use crate::minilm::MiniLm;

impl Model for MiniLm {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError> {
        MiniLm::embed(self, texts).map_err(|e| ModelError::Rejected(e.to_string()))
    }
}
