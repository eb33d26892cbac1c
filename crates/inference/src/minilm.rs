//! all-MiniLM-L6-v2: tokenize, BERT forward, attention-mask mean pooling, L2 norm.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

use crate::LoadError;
use crate::weights::ModelFiles;

/// The model's name, reported in outputs.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Embedding dimensions.
pub const DIMENSIONS: usize = 384;
/// Longest input in tokens, special tokens included (sentence-transformers'
/// `max_seq_length`); longer inputs are truncated.
pub const MAX_TOKENS: usize = 256;
/// Most sequences in one forward pass. Sequences are sorted by length first, so each
/// pass pads only to its own longest member (length bucketing), and a batch is split
/// into at least one pass per core, run in parallel (data parallelism: candle runs
/// its elementwise kernels on one thread per pass).
const PASS_SIZE: usize = 32;

/// The loaded model. Load once per process; [`MiniLm::embed`] is safe to call from
/// several threads.
pub struct MiniLm {
    bert: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl MiniLm {
    /// Loads the model from `files`, memory-mapping the weights.
    pub fn load(files: &ModelFiles) -> Result<Self, LoadError> {
        let config_path = files.config();
        let bytes = std::fs::read(&config_path).map_err(|e| LoadError::corrupt(&config_path, e))?;
        let config: Config =
            serde_json::from_slice(&bytes).map_err(|e| LoadError::corrupt(&config_path, e))?;
        let tokenizer_path = files.tokenizer();
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| LoadError::corrupt(&tokenizer_path, e))?;
        // The shipped tokenizer pins padding and truncation at 128; the model reads 256.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| LoadError::corrupt(&tokenizer_path, e))?;
        tokenizer.with_padding(None);

        let device = Device::Cpu;
        let weights = files.weights();
        // SAFETY: the weights file is mapped read-only; offpath never writes it while
        // the process runs, and the fetcher replaces files by rename, not in place.
        #[allow(unsafe_code)]
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(std::slice::from_ref(&weights), DType::F32, &device)
        }
        .map_err(|e| LoadError::corrupt(&weights, e))?;
        let bert = BertModel::load(vb, &config).map_err(|e| LoadError::corrupt(&weights, e))?;
        Ok(MiniLm {
            bert,
            tokenizer,
            device,
        })
    }

    /// Embeds texts: one unit vector of [`DIMENSIONS`] per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError(e.to_string()))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let per_pass = texts
            .len()
            .div_ceil(rayon::current_num_threads())
            .clamp(1, PASS_SIZE);
        let passes: Vec<&[usize]> = order.chunks(per_pass).collect();
        let results: Vec<Result<Vec<Vec<f32>>, EmbedError>> = passes
            .par_iter()
            .map(|pass| self.pass(&encodings, pass))
            .collect();
        let mut vectors = vec![Vec::new(); texts.len()];
        for (pass, rows) in passes.iter().zip(results) {
            for (&i, row) in pass.iter().zip(rows?) {
                vectors[i] = row;
            }
        }
        Ok(vectors)
    }

    /// One forward pass over the texts at `pass`, padded to the longest of them.
    fn pass(
        &self,
        encodings: &[tokenizers::Encoding],
        pass: &[usize],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let longest = pass
            .iter()
            .map(|&i| encodings[i].get_ids().len())
            .max()
            .unwrap_or(0);
        let mut ids = Vec::with_capacity(pass.len() * longest);
        let mut mask = Vec::with_capacity(pass.len() * longest);
        for &i in pass {
            let own = encodings[i].get_ids();
            ids.extend_from_slice(own);
            ids.extend(std::iter::repeat_n(0, longest - own.len()));
            mask.extend(std::iter::repeat_n(1u32, own.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - own.len()));
        }
        self.forward(ids, mask, pass.len(), longest)
    }

    fn forward(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        batch: usize,
        length: usize,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let shape = (batch, length);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &token_types, Some(&mask))?;
        // Mean over real tokens, then L2 normalisation.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2()?)
    }
}

/// Inference failed inside the model (a bug or exhausted memory, not bad input).
#[derive(Debug, thiserror::Error)]
#[error("inference failed: {0}")]
pub struct EmbedError(String);

impl From<candle_core::Error> for EmbedError {
    fn from(err: candle_core::Error) -> Self {
        EmbedError(err.to_string())
    }
}
