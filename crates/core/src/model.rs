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

/// A sentence-embedding model. `embed` is one batched forward pass (micro-batching:
/// the texts of many jobs go through together). It is CPU-bound and synchronous:
/// callers run it on a blocking thread.
pub trait Model: Send + Sync + 'static {
    /// Embeds `texts`, one unit vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError>;
}
