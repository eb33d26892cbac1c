//! Multi-head self-attention over unpadded sequences, as a candle custom op. Each
//! sequence and head is one unit of work on rayon's threads: its scores `Q Kᵀ` and
//! its context `softmax(scores) V` are two matrix products, written straight into the
//! head's columns of the output. In `f32` they are gemm's (the crate candle's own
//! products use, with AVX-512 or AVX2 and FMA kernels chosen at run time, NEON on
//! arm64), read straight from the fused query/key/value rows; on AVX-512 a sequence
//! of up to 64 tokens runs in registers instead ([`crate::short_attention`]). In
//! bfloat16 the operands are rounded and packed once per head and multiplied on AMX
//! tiles or, without them, by `vdpbf16ps` ([`crate::packed::panel_dots`], for
//! sequences of [`DOTS_FROM`] tokens or more): on the two EPYC cores, 256-token
//! windows in batches of 8 went from 47.8 to 52.0 chunks/s against gemm (best of three
//! runs).

// gemm takes raw pointers and strides; `Attention::cpu_fwd` checks every shape first.
#![allow(unsafe_code)]

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, bail};
use gemm::Parallelism;

#[cfg(target_arch = "x86_64")]
use crate::amx;
#[cfg(target_arch = "x86_64")]
use crate::kernels::exp_shifted;
use crate::kernels::{elements, softmax};
#[cfg(target_arch = "x86_64")]
use crate::packed::{F32, Format};
#[cfg(target_arch = "x86_64")]
use crate::short_attention;
use crate::target::Target;

thread_local! {
    /// Room for one head's `length x length` scores, kept between units.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Room for one head's `f32` operands over a short sequence, kept between units.
    static SHORT_ROOM: std::cell::RefCell<short_attention::Room> =
        std::cell::RefCell::new(short_attention::Room::default());
    /// Room for one head's bfloat16 operands, kept between units.
    static BF16_ROOM: std::cell::RefCell<Bf16Room> = std::cell::RefCell::new(Bf16Room::default());
}

/// One head's bfloat16 operands, each starting a cache line.
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
struct Bf16Room {
    /// The queries, scaled, as bfloat16 pairs: a row of 16 words each.
    queries: amx::Room,
    /// The keys, packed as the columns of panels ([`amx::pack_columns`]).
    keys: amx::Room,
    /// The values, packed as the steps of panels ([`amx::pack_rows`]).
    values: amx::Room,
    /// The scores, `f32`, a row of whole panels of keys each.
    scores: amx::Room,
    /// The weights (the scores' softmax) as bfloat16 pairs.
    weights: amx::Room,
}

/// Tokens from which a sequence's bfloat16 attention runs by `vdpbf16ps` (on AMX
/// tiles, every sequence's does); shorter ones stay in `f32`: there, rounding and
/// packing a head's operands took longer than gemm's products. On the two EPYC
/// cores, every sequence by `vdpbf16ps` ran sentences (10-30 tokens) at 548 against
/// 629 sentences/s one at a time and 836 against 868 in batches of 32 (best of four
/// runs each), 256-token windows at 50.0 against 48.9 chunks/s in batches of 8.
#[cfg(target_arch = "x86_64")]
const DOTS_FROM: usize = 64;

/// Multi-head self-attention over the fused query/key/value projection of unpadded
/// sequences: rows `[q | k | v]`, one per token, the sequences one after the other.
/// Each sequence attends only to itself, so there is no padding and no mask. Returns
/// one row of `heads * head_size` per token.
pub(crate) struct Attention<'a> {
    /// Tokens per sequence, in row order.
    pub(crate) lengths: &'a [usize],
    /// Attention heads.
    pub(crate) heads: usize,
    /// Whether the products run in bfloat16 (the bfloat16 precision, for heads of
    /// up to 32 values: on AMX tiles where the CPU and the system offer them, by
    /// `vdpbf16ps` elsewhere for sequences of [`DOTS_FROM`] tokens or more) or in
    /// `f32`.
    pub(crate) bfloat16: bool,
}

impl CustomOp1 for Attention<'_> {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = elements(storage, layout)?;
        let tokens: usize = self.lengths.iter().sum();
        let width = layout.dims().last().copied().unwrap_or(0);
        let hidden = width / 3;
        if width % 3 != 0 || hidden % self.heads != 0 || qkv.len() != tokens * width {
            bail!(
                "attention: {tokens} tokens do not fit the shape {:?}",
                layout.dims()
            );
        }
        let head = Head {
            size: hidden / self.heads,
            width,
            hidden,
        };
        let firsts: Vec<usize> = self
            .lengths
            .iter()
            .scan(0, |next, &length| {
                let first = *next;
                *next += length;
                Some(first)
            })
            .collect();
        let mut out = Vec::with_capacity(tokens * hidden);
        let target = Target::spare(&mut out);
        #[cfg(target_arch = "x86_64")]
        let (bfloat16, tiles, short) = (
            self.bfloat16 && head.size <= 2 * amx::STEPS,
            amx::available(),
            head.size == short_attention::HEAD && F32::available(),
        );
        #[cfg(not(target_arch = "x86_64"))]
        debug_assert!(!self.bfloat16, "bfloat16 products exist only on x86-64");
        crate::team::for_each(self.lengths.len() * self.heads, |unit| {
            let (sequence, index) = (unit / self.heads, unit % self.heads);
            let (first, length) = (firsts[sequence], self.lengths[sequence]);
            let rows = &qkv[first * width..(first + length) * width];
            #[cfg(target_arch = "x86_64")]
            if bfloat16 && (tiles || length >= DOTS_FROM) {
                BF16_ROOM.with_borrow_mut(|room| {
                    // SAFETY: as below; the CPU has AVX-512 BF16 (the bfloat16
                    // precision needs it), `tiles` says whether AMX too, and the head
                    // is no wider than one step of a tile.
                    unsafe {
                        let out = target.at(first * hidden + index * head.size);
                        head.attend_bf16(rows, index, room, tiles, out);
                    }
                });
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if short && (1..=short_attention::MAX_TOKENS).contains(&length) {
                SHORT_ROOM.with_borrow_mut(|room| {
                    // SAFETY: as below; the CPU has AVX-512F and the head and the
                    // sequence fit the kernel (checked above).
                    unsafe {
                        let out = target.at(first * hidden + index * head.size);
                        short_attention::attend(
                            rows,
                            width,
                            head.parts(index),
                            head.scale(),
                            room,
                            out,
                            hidden,
                        );
                    }
                });
                return;
            }
            SCORES.with_borrow_mut(|scores| {
                scores.resize(length * length, 0.0);
                // SAFETY: `rows` holds `length` rows of `width` (checked above: the
                // sequences tile the `tokens` rows); the unit writes rows first..first +
                // length, columns index * size.. (index + 1) * size of `out`, which no
                // other unit writes, and `out` outlives the parallel loop.
                unsafe {
                    let out = target.at(first * hidden + index * head.size);
                    head.attend(rows, index, scores, out);
                }
            });
        });
        // SAFETY: the units wrote every element: the sequences tile the rows, the
        // heads the columns, and the context product overwrites what it covers.
        unsafe { out.set_len(tokens * hidden) };
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }
}

/// The shape of one head's work.
struct Head {
    /// Values per head.
    size: usize,
    /// Width of a `[q | k | v]` row.
    width: usize,
    /// Width of an output row.
    hidden: usize,
}

impl Head {
    /// Where head `index`'s query, key and value start in a `[q | k | v]` row.
    fn parts(&self, index: usize) -> [usize; 3] {
        [0, 1, 2].map(|part| part * self.hidden + index * self.size)
    }

    /// What the scores are scaled by: `1 / √size`.
    fn scale(&self) -> f32 {
        (self.size as f32).sqrt().recip()
    }

    /// Head `index` of one sequence: `rows` are its `[q | k | v]` rows, `scores` room
    /// for `rows x rows` weights, `out` its first output row's first column of the
    /// head.
    ///
    /// # Safety
    /// `rows` holds whole rows of `width`, `scores` one weight per pair of them, and
    /// `out` covers as many rows of `hidden` as `rows` has, `size` columns each.
    unsafe fn attend(&self, rows: &[f32], index: usize, scores: &mut [f32], out: *mut f32) {
        let length = rows.len() / self.width;
        let (size, width) = (self.size, self.width as isize);
        let [q, k, v] = self.parts(index);
        let scale = self.scale();
        // SAFETY: the caller's contract: every matrix lies within `rows`, `scores` or
        // the caller's stretch of `out`.
        unsafe {
            // scores = scale · Q Kᵀ: the keys, read down their rows, are Kᵀ's columns.
            gemm::gemm(
                length,
                length,
                size,
                scores.as_mut_ptr(),
                1,
                length as isize,
                false,
                rows.as_ptr().add(q),
                1,
                width,
                rows.as_ptr().add(k),
                width,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
        for row in scores.chunks_exact_mut(length) {
            softmax(row);
        }
        // SAFETY: as above.
        unsafe {
            // context = weights · V, into the head's columns of the output rows.
            gemm::gemm(
                length,
                size,
                length,
                out,
                1,
                self.hidden as isize,
                false,
                scores.as_ptr(),
                1,
                length as isize,
                rows.as_ptr().add(v),
                1,
                width,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Head {
    /// [`Head::attend`] in bfloat16: queries (scaled), keys and values rounded to
    /// bfloat16 and packed, the scores summed in `f32` on AMX tiles if `tiles`, by
    /// `vdpbf16ps` if not, softmax in `f32`, the weights rounded to bfloat16 and
    /// multiplied by the values the same way; padding (queries to whole tiles, keys
    /// to whole panels) is zeros, so padded keys weigh nothing.
    ///
    /// # Safety
    /// As [`Head::attend`], and AVX-512 BF16, [`amx::available`] if `tiles`,
    /// `size <= 32`.
    unsafe fn attend_bf16(
        &self,
        rows: &[f32],
        index: usize,
        room: &mut Bf16Room,
        tiles: bool,
        out: *mut f32,
    ) {
        let length = rows.len() / self.width;
        let (size, width, hidden) = (self.size, self.width, self.hidden);
        let [q, k, v] = self.parts(index);
        let scale = self.scale();
        let query_rows = length.next_multiple_of(amx::ROWS);
        let keys = length.next_multiple_of(32);
        let key_steps = keys / 2;
        let groups = length.div_ceil(amx::GROUP);
        let group_rows = |group: usize| (length - group * amx::GROUP).min(amx::GROUP);
        // SAFETY: the caller's contract; every buffer is sized here for what is
        // written to it and read from it: queries and weights in whole tiles of rows,
        // keys and values in whole panels.
        unsafe {
            let queries = room.queries.words(query_rows * amx::STEPS);
            for r in 0..length {
                let query = &rows[r * width + q..r * width + q + size];
                amx::round_row(query, scale, amx::STEPS, queries.add(r * amx::STEPS));
            }
            queries
                .add(length * amx::STEPS)
                .write_bytes(0, (query_rows - length) * amx::STEPS);
            let key_panels = room.keys.words(keys * amx::STEPS);
            amx::pack_columns(&rows[k..], length, width, size, key_panels);
            let value_panels = room.values.words(size.div_ceil(32) * key_steps * 32);
            amx::pack_rows(&rows[v..], length, width, size, key_steps, value_panels);
            // scores = (scale · Q) Kᵀ
            let scores = room.scores.words(length * keys).cast::<f32>();
            for group in 0..groups {
                for panel in 0..keys / 32 {
                    run_panel(
                        &amx::Panel {
                            inputs: queries.add(group * amx::GROUP * amx::STEPS),
                            input_stride: amx::STEPS * 4,
                            steps: amx::STEPS,
                            weights: key_panels.add(panel * amx::STEPS * 32),
                            out: scores.add(group * amx::GROUP * keys + panel * 32),
                            out_stride: keys,
                            rows: group_rows(group),
                            width: (length - panel * 32).min(32),
                        },
                        tiles,
                    );
                }
            }
            let weights = room.weights.words(query_rows * key_steps);
            for r in 0..length {
                let row = std::slice::from_raw_parts_mut(scores.add(r * keys), length);
                // softmax, its division done in the rounding: the same operations.
                let total = exp_shifted(row).recip();
                amx::round_row(row, total, key_steps, weights.add(r * key_steps));
            }
            weights
                .add(length * key_steps)
                .write_bytes(0, (query_rows - length) * key_steps);
            // context = weights · V, into the head's columns of the output rows.
            for group in 0..groups {
                for panel in 0..size.div_ceil(32) {
                    run_panel(
                        &amx::Panel {
                            inputs: weights.add(group * amx::GROUP * key_steps),
                            input_stride: key_steps * 4,
                            steps: key_steps,
                            weights: value_panels.add(panel * key_steps * 32),
                            out: out.add(group * amx::GROUP * hidden + panel * 32),
                            out_stride: hidden,
                            rows: group_rows(group),
                            width: (size - panel * 32).min(32),
                        },
                        tiles,
                    );
                }
            }
        }
    }
}

/// Runs `panel` on AMX tiles if `tiles`, by `vdpbf16ps` if not.
///
/// # Safety
/// As [`amx::Panel::run`], with AVX-512 BF16 in place of the tiles if not `tiles`.
#[cfg(target_arch = "x86_64")]
unsafe fn run_panel(panel: &amx::Panel, tiles: bool) {
    // SAFETY: the caller's contract.
    unsafe {
        if tiles {
            panel.run()
        } else {
            crate::packed::panel_dots(panel)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn attention_stays_within_each_sequence() {
        // Two heads of size 1; with zero queries every key weighs the same, so each
        // token's context is the mean of its own sequence's values.
        let qkv: Vec<f32> = [0.0f32, 10.0, 20.0]
            .iter()
            .flat_map(|&value| [0.0, 0.0, 1.0, 2.0, value, -value])
            .collect();
        let op = Attention {
            lengths: &[2, 1],
            heads: 2,
            bfloat16: false,
        };
        let qkv = Tensor::from_vec(qkv, (3, 6), &Device::Cpu).unwrap();
        let out = qkv.apply_op1_no_bwd(&op).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(out, [[5.0, -5.0], [5.0, -5.0], [20.0, -20.0]]);
    }

    #[test]
    fn attention_matches_the_textbook_formula() {
        // Two sequences (3 and 5 tokens), two heads of four: softmax(q·k / 2) · v.
        matches_the_textbook_formula(2, 4, &[3, 5]);
    }

    /// Heads of 32 values, as all-MiniLM-L6-v2's: on AVX-512, sequences of up to 64
    /// tokens in registers (groups of queries that end inside a group, rows of
    /// scores in one to four registers), longer ones on gemm.
    #[test]
    fn attention_of_heads_of_32_matches_the_textbook_formula() {
        matches_the_textbook_formula(3, 32, &[1, 6, 17, 40, 64, 65]);
    }

    /// [`Attention`] in `f32` against the formula, within 1e-5: `heads` heads of
    /// `size` values over sequences of `lengths` tokens.
    fn matches_the_textbook_formula(heads: usize, size: usize, lengths: &[usize]) {
        let hidden = heads * size;
        let tokens: usize = lengths.iter().sum();
        let qkv: Vec<f32> = (0..tokens * 3 * hidden)
            .map(|i| ((i * 7919 % 997) as f32 / 498.5) - 1.0)
            .collect();
        let op = Attention {
            lengths,
            heads,
            bfloat16: false,
        };
        let tensor = Tensor::from_vec(qkv.clone(), (tokens, 3 * hidden), &Device::Cpu).unwrap();
        let got = tensor
            .apply_op1_no_bwd(&op)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let at = |row: usize, part: usize, head: usize, d: usize| {
            qkv[row * 3 * hidden + part * hidden + head * size + d] as f64
        };
        let mut first = 0;
        for &length in lengths {
            for head in 0..heads {
                for i in first..first + length {
                    let scores: Vec<f64> = (first..first + length)
                        .map(|j| {
                            (0..size)
                                .map(|d| at(i, 0, head, d) * at(j, 1, head, d))
                                .sum::<f64>()
                                / (size as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for d in 0..size {
                        let want: f64 = (first..first + length)
                            .zip(&scores)
                            .map(|(j, s)| (s - max).exp() / total * at(j, 2, head, d))
                            .sum();
                        let got = got[i][head * size + d] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "token {i} head {head}: {got} vs {want}"
                        );
                    }
                }
            }
            first += length;
        }
    }

    /// In bfloat16 (on AMX tiles where the CPU and the system offer them, by
    /// `vdpbf16ps` elsewhere): within bfloat16's precision of the `f32` products,
    /// over sequences that span several tiles of queries and panels of keys (and end
    /// inside both), heads of 32 values.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn attention_in_bfloat16_matches_f32() {
        use crate::packed::{Bf16, Format};
        if !Bf16::available() {
            eprintln!("skipped: this CPU lacks AVX-512 BF16");
            return;
        }
        let (heads, size, lengths) = (3, 32, [70usize, 1, 33]);
        let hidden = heads * size;
        let tokens: usize = lengths.iter().sum();
        let qkv: Vec<f32> = (0..tokens * 3 * hidden)
            .map(|i| ((i * 7919 % 997) as f32 / 249.0) - 2.0)
            .collect();
        let tensor = Tensor::from_vec(qkv, (tokens, 3 * hidden), &Device::Cpu).unwrap();
        let run = |bfloat16| {
            let op = Attention {
                lengths: &lengths,
                heads,
                bfloat16,
            };
            let out = tensor.apply_op1_no_bwd(&op).unwrap();
            out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (want, got) = (run(false), run(true));
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        // Values lie in [-2, 2]; a context is a weighted mean of them.
        assert!(worst < 0.05, "largest difference {worst}");
        assert!(worst > 0.0, "the bfloat16 products ran in f32?");
    }
}
