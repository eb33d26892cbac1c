//! offpath's model: sentence-transformers all-MiniLM-L6-v2 (BERT, 384 dimensions,
//! mean pooling, L2 normalised, inputs truncated at 256 tokens) run with candle and
//! the tokenizers crate, plus the fetcher for its weights.
//!
//! [`MiniLm`] implements the `Model` port: one batched pass over the texts of many
//! jobs.

mod alloc;
#[cfg(target_arch = "x86_64")]
mod amx;
mod attention;
mod dense;
mod encoder;
mod error;
mod kernels;
mod minilm;
#[cfg(target_arch = "x86_64")]
mod packed;
pub mod peak;
mod port;
#[cfg(target_arch = "x86_64")]
mod short_attention;
mod target;
mod team;
pub mod weights;

pub use alloc::LineAligned;
pub use dense::Precision;
pub use error::LoadError;
pub use minilm::{DIMENSIONS, MAX_TOKENS, MODEL_NAME, MiniLm};
