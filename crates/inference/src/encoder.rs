//! The BERT encoder of all-MiniLM-L6-v2 over unpadded sequences: the tokens of every
//! sequence in a pass are rows of one matrix, so each dense layer is one matrix product
//! over all of them and no token is padding; only attention looks at sequence
//! boundaries ([`Attention`]). Query, key and value are one fused projection; bias,
//! GELU and residual + layer norm are in-place kernels.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::Deserialize;

use crate::attention::Attention;
use crate::dense::{Activation, Dense, Precision};
use crate::kernels::ResidualNorm;

/// The parts of the model's `config.json` the encoder reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Config {
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    vocab_size: usize,
    layer_norm_eps: f64,
    hidden_act: String,
}

/// The encoder's weights, loaded once.
pub(crate) struct Encoder {
    words: Tensor,
    /// Position embeddings plus token type 0's (the only type a single text has).
    positions: Tensor,
    embedding_norm: ResidualNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    intermediate: usize,
}

struct Layer {
    /// `[query | key | value]`, fused.
    qkv: Dense,
    output: Dense,
    attention_norm: ResidualNorm,
    up: Dense,
    down: Dense,
    output_norm: ResidualNorm,
    /// Whether attention's products run in bfloat16: in the bfloat16 precision.
    bfloat16: bool,
}

impl Encoder {
    /// Loads the encoder from a BERT checkpoint (Hugging Face names), with dense
    /// products in `precision`.
    pub(crate) fn load(
        vb: VarBuilder,
        config: &Config,
        precision: Precision,
    ) -> candle_core::Result<Self> {
        if config.hidden_act != "gelu" {
            candle_core::bail!("hidden_act {:?} is not gelu", config.hidden_act);
        }
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps as f32;
        let embeddings = vb.pp("embeddings");
        let token_types = embeddings.get(
            (config.type_vocab_size, hidden),
            "token_type_embeddings.weight",
        )?;
        let positions = embeddings
            .get(
                (config.max_position_embeddings, hidden),
                "position_embeddings.weight",
            )?
            .broadcast_add(&token_types.get(0)?)?;
        // The layers convert and pack their weights on all cores.
        let layers = (0..config.num_hidden_layers)
            .into_par_iter()
            .map(|i| Layer::load(&vb.pp(format!("encoder.layer.{i}")), config, eps, precision))
            .collect::<candle_core::Result<_>>()?;
        Ok(Encoder {
            words: embeddings.get((config.vocab_size, hidden), "word_embeddings.weight")?,
            positions,
            embedding_norm: norm(&embeddings.pp("LayerNorm"), hidden, eps)?,
            layers,
            heads: config.num_attention_heads,
            hidden,
            intermediate: config.intermediate_size,
        })
    }

    /// Floating-point operations (a multiply-add is two) of one forward pass over
    /// sequences of these token counts: per token and layer the fused query-key-value,
    /// output, up and down products; per sequence and layer attention's scores and
    /// weighted sum, `n x n x hidden` multiply-adds each. Norms, GELU, softmax and the
    /// embedding lookups (a few percent) are left out.
    pub(crate) fn flops(&self, lengths: &[usize]) -> f64 {
        let (h, i) = (self.hidden as f64, self.intermediate as f64);
        let per_token = 3.0 * h * h + h * h + 2.0 * h * i;
        let layer: f64 = lengths
            .iter()
            .map(|&n| {
                let n = n as f64;
                n * per_token + 2.0 * n * n * h
            })
            .sum();
        2.0 * layer * self.layers.len() as f64
    }

    /// The last hidden state of each token: `ids` holds the sequences one after the
    /// other, `lengths` their token counts. Returns one row per token.
    pub(crate) fn forward(&self, ids: &[u32], lengths: &[usize]) -> candle_core::Result<Tensor> {
        let device = self.words.device();
        let positions: Vec<u32> = lengths.iter().flat_map(|&n| 0..n as u32).collect();
        let mut x = self.words.embedding(&Tensor::new(ids, device)?)?;
        let positions = self.positions.embedding(&Tensor::new(positions, device)?)?;
        x.inplace_op2(&positions, &self.embedding_norm)?;
        for layer in &self.layers {
            x = layer.forward(&x, lengths, self.heads)?;
        }
        Ok(x)
    }
}

impl Layer {
    fn load(
        vb: &VarBuilder,
        config: &Config,
        eps: f32,
        precision: Precision,
    ) -> candle_core::Result<Self> {
        let (hidden, intermediate) = (config.hidden_size, config.intermediate_size);
        let dense = |name: &str, outputs: usize, inputs: usize, activation| {
            let vb = vb.pp(name);
            Dense::new(
                &vb.get((outputs, inputs), "weight")?,
                &vb.get(outputs, "bias")?,
                activation,
                precision,
            )
        };
        let attention = vb.pp("attention.self");
        let projections = ["query", "key", "value"].map(|name| attention.pp(name));
        let weights = projections
            .iter()
            .map(|p| p.get((hidden, hidden), "weight"))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let biases = projections
            .iter()
            .map(|p| p.get(hidden, "bias"))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Layer {
            qkv: Dense::new(
                &Tensor::cat(&weights, 0)?,
                &Tensor::cat(&biases, 0)?,
                Activation::Identity,
                precision,
            )?,
            output: dense(
                "attention.output.dense",
                hidden,
                hidden,
                Activation::Identity,
            )?,
            attention_norm: norm(&vb.pp("attention.output.LayerNorm"), hidden, eps)?,
            up: dense("intermediate.dense", intermediate, hidden, Activation::Gelu)?,
            down: dense("output.dense", hidden, intermediate, Activation::Identity)?,
            output_norm: norm(&vb.pp("output.LayerNorm"), hidden, eps)?,
            bfloat16: precision == Precision::Bfloat16,
        })
    }

    fn forward(&self, x: &Tensor, lengths: &[usize], heads: usize) -> candle_core::Result<Tensor> {
        let context = self.qkv.forward(x)?.apply_op1_no_bwd(&Attention {
            lengths,
            heads,
            bfloat16: self.bfloat16,
        })?;
        let attended = self.output.forward(&context)?;
        attended.inplace_op2(x, &self.attention_norm)?;
        let out = self.down.forward_after(&self.up, &attended)?;
        out.inplace_op2(&attended, &self.output_norm)?;
        Ok(out)
    }
}

/// A layer norm's scale and shift.
fn norm(vb: &VarBuilder, hidden: usize, eps: f32) -> candle_core::Result<ResidualNorm> {
    Ok(ResidualNorm {
        gamma: vb.get(hidden, "weight")?.to_vec1()?,
        beta: vb.get(hidden, "bias")?.to_vec1()?,
        eps,
    })
}
