//! all-MiniLM-L6-v2: tokenize, BERT forward, attention-mask mean pooling, L2 norm.

use std::ops::Range;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::LoadError;
use crate::dense::Precision;
use crate::encoder::{Config, Encoder};
use crate::weights::ModelFiles;

pub use offpath_core::MODEL_NAME;
/// Embedding dimensions.
pub const DIMENSIONS: usize = 384;
/// Longest input in tokens, special tokens included (sentence-transformers'
/// `max_seq_length`); longer inputs are truncated.
pub const MAX_TOKENS: usize = 256;
/// About the most tokens in one forward pass, which bounds its memory (about 11 MB
/// of activations, much of it in L2 and L3 while the pass runs: 32 windows of 256
/// tokens went from 48 to 55 chunks/s on two Sapphire Rapids cores against passes of
/// 4,096). A batch is split into contiguous passes of about equal token counts, at
/// least one per core, run in parallel (candle runs its elementwise kernels, and ours,
/// on the calling thread; its matrix products use idle cores too).
const PASS_TOKENS: usize = 1024;

/// The loaded model. Load once per process; [`MiniLm::embed`] is safe to call from
/// several threads.
pub struct MiniLm {
    encoder: Encoder,
    /// Truncates at [`MAX_TOKENS`] and adds the special tokens: texts.
    tokenizer: Tokenizer,
    /// Neither: documents, split into windows of pieces by the caller.
    pieces: Tokenizer,
    /// The ids of `[CLS]` and `[SEP]`, around every sequence.
    specials: (u32, u32),
    precision: Precision,
}

impl MiniLm {
    /// Loads the model from `files`, memory-mapping the weights, with products in the
    /// fastest precision this CPU runs ([`Precision::best`]).
    pub fn load(files: &ModelFiles) -> Result<Self, LoadError> {
        Self::load_in(files, Precision::best())
    }

    /// Loads the model from `files` with products in `precision`, which must be one
    /// this CPU runs ([`Precision::supported`]). The tokenizer and the weights load on
    /// two threads.
    pub fn load_in(files: &ModelFiles, precision: Precision) -> Result<Self, LoadError> {
        if !Precision::supported().contains(&precision) {
            return Err(LoadError::Unsupported(precision));
        }
        let (tokenizers, encoder) = rayon::join(|| tokenizers(files), || encoder(files, precision));
        let (tokenizer, pieces, specials) = tokenizers?;
        let model = MiniLm {
            encoder: encoder?,
            tokenizer,
            pieces,
            specials,
            precision,
        };
        tracing::info!(precision = precision.name(), "model loaded");
        Ok(model)
    }

    /// The precision of the dense layers' products. Either way embeddings match the
    /// `f32` reference to cosine >= 0.9999 (tests/minilm.rs).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Embeds texts: one unit vector of [`DIMENSIONS`] per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Each pass tokenises its own texts on its own thread. Tokenising first, for
        // the token counts, ran at one core's speed for small batches (rayon's other
        // thread woke too late to share ten texts): 7% of a batch of 10.
        let estimates: Vec<usize> = texts.iter().map(|text| estimated_tokens(text)).collect();
        in_passes(&estimates, |pass| {
            let encodings = texts[pass]
                .iter()
                .map(|text| self.tokenizer.encode_fast(*text, true))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EmbedError(e.to_string()))?;
            let sequences: Vec<&[u32]> = encodings.iter().map(Encoding::get_ids).collect();
            let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
            self.pass(&sequences, &lengths)
        })
    }

    /// The token count of each text as [`Self::embed`] runs it (special tokens included,
    /// truncated at [`MAX_TOKENS`]).
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError(e.to_string()))?;
        Ok(encodings.iter().map(Encoding::len).collect())
    }

    /// Floating-point operations of embedding sequences of these token counts (special
    /// tokens included): the dense products and attention, a multiply-add counting two.
    pub fn flops(&self, token_counts: &[usize]) -> f64 {
        self.encoder.flops(token_counts)
    }

    /// The word pieces of `text` with their byte offsets: no special tokens, no
    /// truncation.
    pub fn tokenize(&self, text: &str) -> Result<Vec<(u32, Range<usize>)>, EmbedError> {
        let encoding = self
            .pieces
            .encode(text, false)
            .map_err(|e| EmbedError(e.to_string()))?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_offsets())
            .map(|(&id, &(start, end))| (id, start..end))
            .collect())
    }

    /// Embeds sequences of word pieces, each at most [`MAX_TOKENS`] - 2 long, with the
    /// special tokens added around each: one unit vector per sequence, in order. The
    /// pieces of a text embed as the text does.
    pub fn embed_pieces(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (cls, sep) = self.specials;
        let framed: Vec<Vec<u32>> = sequences
            .iter()
            .map(|pieces| {
                let pieces = &pieces[..pieces.len().min(MAX_TOKENS - 2)];
                let mut ids = Vec::with_capacity(pieces.len() + 2);
                ids.push(cls);
                ids.extend_from_slice(pieces);
                ids.push(sep);
                ids
            })
            .collect();
        let sequences: Vec<&[u32]> = framed.iter().map(Vec::as_slice).collect();
        self.embed_sequences(&sequences)
    }

    /// Embeds sequences of ids (special tokens included), in passes of about equal
    /// token counts run in parallel.
    fn embed_sequences(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        in_passes(&lengths, |pass| {
            self.pass(&sequences[pass.clone()], &lengths[pass])
        })
    }

    /// One forward pass over some sequences, then attention-mask mean pooling (the mean
    /// of each sequence's own tokens: there is no padding) and L2 normalisation.
    fn pass(&self, sequences: &[&[u32]], lengths: &[usize]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids: Vec<u32> = sequences.iter().flat_map(|s| s.iter()).copied().collect();
        let hidden = self.encoder.forward(&ids, lengths)?;
        let hidden = hidden.flatten_all()?.to_vec1::<f32>()?;
        let mut rows = hidden.chunks_exact(DIMENSIONS);
        let vectors = lengths
            .iter()
            .map(|&length| {
                let mut mean = vec![0f32; DIMENSIONS];
                for row in rows.by_ref().take(length) {
                    for (m, x) in mean.iter_mut().zip(row) {
                        *m += x;
                    }
                }
                let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                // The mean's 1/length cancels in the normalisation.
                mean.iter_mut().for_each(|m| *m /= norm);
                mean
            })
            .collect();
        Ok(vectors)
    }
}

/// Reads the tokenizer twice: for texts, set to truncate at [`MAX_TOKENS`] and not to
/// pad; for documents, set to do neither; and the ids of `[CLS]` and `[SEP]`.
fn tokenizers(files: &ModelFiles) -> Result<(Tokenizer, Tokenizer, (u32, u32)), LoadError> {
    let path = files.tokenizer();
    let mut pieces = Tokenizer::from_file(&path).map_err(|e| LoadError::corrupt(&path, e))?;
    pieces.with_padding(None);
    pieces
        .with_truncation(None)
        .map_err(|e| LoadError::corrupt(&path, e))?;
    let mut tokenizer = pieces.clone();
    // The shipped tokenizer pins padding and truncation at 128; the model reads 256.
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS,
            ..TruncationParams::default()
        }))
        .map_err(|e| LoadError::corrupt(&path, e))?;
    let id = |token: &str| {
        pieces
            .token_to_id(token)
            .ok_or_else(|| LoadError::corrupt(&path, format!("the vocabulary has no {token}")))
    };
    let specials = (id("[CLS]")?, id("[SEP]")?);
    Ok((tokenizer, pieces, specials))
}

/// Reads the configuration and the weights, for products in `precision`.
fn encoder(files: &ModelFiles, precision: Precision) -> Result<Encoder, LoadError> {
    let config_path = files.config();
    let bytes = std::fs::read(&config_path).map_err(|e| LoadError::corrupt(&config_path, e))?;
    let config: Config =
        serde_json::from_slice(&bytes).map_err(|e| LoadError::corrupt(&config_path, e))?;
    let weights = files.weights();
    // SAFETY: the weights file is mapped read-only; offpath never writes it while the
    // process runs, and the fetcher replaces files by rename, not in place.
    #[allow(unsafe_code)]
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            std::slice::from_ref(&weights),
            DType::F32,
            &Device::Cpu,
        )
    }
    .map_err(|e| LoadError::corrupt(&weights, e))?;
    Encoder::load(vb, &config, precision).map_err(|e| LoadError::corrupt(&weights, e))
}

/// Runs `pass` over contiguous ranges of items of about equal token counts
/// (`lengths`, counted or estimated), in parallel, and joins their vectors in order.
fn in_passes(
    lengths: &[usize],
    pass: impl Fn(Range<usize>) -> Result<Vec<Vec<f32>>, EmbedError> + Sync,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let threads = rayon::current_num_threads();
    let passes = passes(lengths, threads);
    // Inside rayon's pool: a single pass would otherwise run on the caller's
    // thread, which hands each of its ~30 parallel loops (products, attention) to
    // the pool and sleeps until it ends. Fewer passes than threads (one sentence,
    // one window) run with the idle threads as their team (`crate::team`), which
    // spin between loops rather than park.
    let results: Vec<Result<Vec<Vec<f32>>, EmbedError>> = rayon::scope(|_| {
        let team_size = threads.div_ceil(passes.len().max(1));
        passes
            .into_par_iter()
            .map(|range| {
                let run = || pass(range);
                if team_size > 1 {
                    crate::team::lead(team_size, run)
                } else {
                    run()
                }
            })
            .collect()
    });
    let mut vectors = Vec::with_capacity(lengths.len());
    for pass in results {
        vectors.extend(pass?);
    }
    Ok(vectors)
}

/// About the tokens of `text` once tokenised, special tokens included, for sharing
/// texts out among passes: English runs about four bytes a word piece.
fn estimated_tokens(text: &str) -> usize {
    (text.len() / 4 + 2).min(MAX_TOKENS)
}

/// Splits sequences of `lengths` tokens into contiguous passes of about equal token
/// counts: `threads` of them, or more of about [`PASS_TOKENS`] each for long batches.
fn passes(lengths: &[usize], threads: usize) -> Vec<Range<usize>> {
    let total: usize = lengths.iter().sum();
    let target = total.div_ceil(threads.max(1)).clamp(1, PASS_TOKENS);
    let mut passes = Vec::new();
    let (mut first, mut tokens) = (0, 0);
    for (i, &length) in lengths.iter().enumerate() {
        // Close the pass before this sequence if that lands nearer the target.
        if tokens > 0 && tokens + length > target && tokens + length - target > target - tokens {
            passes.push(first..i);
            (first, tokens) = (i, 0);
        }
        tokens += length;
        if tokens >= target {
            passes.push(first..i + 1);
            (first, tokens) = (i + 1, 0);
        }
    }
    if first < lengths.len() {
        passes.push(first..lengths.len());
    }
    passes
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_split_tokens_evenly_and_keep_order() {
        assert_eq!(passes(&[10; 32], 2), [0..16, 16..32]);
        assert_eq!(passes(&[20], 2), [Range { start: 0, end: 1 }]);
        assert_eq!(passes(&[], 2), Vec::<Range<usize>>::new());
        assert_eq!(passes(&[5, 30, 5, 5, 5], 2), [0..2, 2..5]);
        assert_eq!(passes(&[10, 10, 4, 8], 2), [0..2, 2..4]);
        assert_eq!(passes(&[10, 4, 10, 8], 2), [0..2, 2..4]);
        // A long batch: passes of about PASS_TOKENS, more than one per core.
        let long = passes(&[256; 64], 2);
        assert_eq!(long.len(), 16);
        assert!(long.iter().all(|p| p.len() == 4));
    }
}
