//! The inference port: texts in, embeddings out. Tasks turn embeddings into their
//! outputs (scores, orders, encodings); the model knows nothing of tasks.

use std::time::Duration;

/// The model offpath runs, as task outputs name it.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// One text's embedding: a unit vector.
pub type Embedding = Vec<f32>;

/// Why inference did not produce embeddings.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The backend is overloaded or rate limited; retry after the hint if any.
    #[error("inference throttled")]
    Throttled {
        /// How long the backend asked callers to wait.
        retry_after: Option<Duration>,
    },
    /// The backend is temporarily unavailable.
    #[error("inference unavailable: {0}")]
    Unavailable(String),
    /// The model cannot process this input; retrying will not help.
    #[error("{0}")]
    Rejected(String),
}

impl ModelError {
    /// True when the same inputs may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ModelError::Throttled { .. } | ModelError::Unavailable(_)
        )
    }
}

/// One word piece of a text: its vocabulary id and where it stands in the text
/// (UTF-8 byte offsets, end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The vocabulary id.
    pub id: u32,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Piece {
    /// The whitespace-separated words of `text` as pieces, each word's id its length
    /// in bytes: the tokenizer of the test models, which need predictable pieces
    /// rather than a vocabulary.
    pub fn words(text: &str) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut offset = 0;
        for word in text.split_inclusive(char::is_whitespace) {
            let trimmed = word.trim_end();
            if !trimmed.is_empty() {
                pieces.push(Piece {
                    id: trimmed.len() as u32,
                    start: offset,
                    end: offset + trimmed.len(),
                });
            }
            offset += word.len();
        }
        pieces
    }
}

/// A sentence-embedding model. `embed` is one batched forward pass (micro-batching:
/// the texts of many jobs go through together). It is CPU-bound and synchronous:
/// callers run it on a blocking thread.
pub trait Model: Send + Sync + 'static {
    /// Embeds `texts`, one unit vector per text, in order; each is truncated at the
    /// model's longest input.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError>;

    /// The word pieces of `text`, without the special tokens a sequence starts and
    /// ends with, and without truncation (documents are split on them).
    fn tokenize(&self, text: &str) -> Result<Vec<Piece>, ModelError>;

    /// Embeds sequences of word pieces (each at most the model's longest input less
    /// its two special tokens, which are added), one unit vector per sequence: the
    /// embedding of a text equals that of its pieces.
    fn embed_pieces(&self, sequences: &[&[u32]]) -> Result<Vec<Embedding>, ModelError>;
}
