//! One head's `f32` attention over a short sequence (up to [`MAX_TOKENS`] tokens, heads
//! of [`HEAD`] values) in AVX-512 registers. The keys are transposed once; then a
//! group of queries at a time takes its rows of scores against every key (one to four
//! registers a row, the lanes past the sequence masked off), their softmax in the
//! same registers ([`exp_lanes`]), and its weighted sums of the values, read where
//! they lie. Sentences are 10-30 tokens, where gemm's two products a head spend more
//! on choosing and packing than on the 16 x 16 x 32 multiply-adds, and where the
//! vectorised softmax ([`crate::kernels::softmax`]) leaves a row shorter than its
//! sixteen lanes to its one-lane remainder loop: on the two EPYC cores they took 9% of
//! a bfloat16 batch of 32 sentences' time, this kernel takes 6.5%, about half of it in
//! first reads of the head's rows, which the query/key/value product left in the L3
//! cache (prefetching the next head's rows did not help). Interleaved runs (median of
//! eight): bfloat16 batches of 1 / 32 / 64 sentences from 658 / 939 / 904 to 698 / 972
//! / 929 sentences/s; `f32` batches of 1 / 32 from 240 / 475 to 263 / 506.

// AVX-512 intrinsics on raw pointers; `attend` checks what it reads and writes.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512, __mmask16, _CMP_LT_OQ, _mm512_add_epi32, _mm512_add_ps, _mm512_castps_si512,
    _mm512_castsi512_ps, _mm512_cmp_ps_mask, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_mov_ps,
    _mm512_maskz_mul_ps, _mm512_max_ps, _mm512_min_ps, _mm512_mul_ps, _mm512_reduce_add_ps,
    _mm512_reduce_max_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps, _mm512_slli_epi32,
    _mm512_storeu_ps, _mm512_sub_epi32, _mm512_sub_ps,
};

/// The longest sequence the kernel takes: a row of scores in four registers.
pub(crate) const MAX_TOKENS: usize = 64;
/// Values per head the kernel takes: two registers.
pub(crate) const HEAD: usize = 32;

/// One head's scratch, kept between units: the keys transposed ([`HEAD`] rows of
/// `16 * REGS` lanes, room for [`MAX_TOKENS`]), a group's queries side by side (so that one register addresses
/// them all) and its weights (its softmaxed scores).
#[derive(Default)]
pub(crate) struct Room {
    keys: Vec<f32>,
    queries: Vec<f32>,
    weights: Vec<f32>,
}

/// `softmax(scale · Q Kᵀ) V` of one head: `rows` are the sequence's `[q | k | v]`
/// rows, `width` apart, the head's queries, keys and values at offsets `parts` in
/// each; row `i` of the result goes to `out + i * out_stride`, [`HEAD`] values.
///
/// # Safety
/// AVX-512F ([`crate::packed::F32`]'s `available`); `out` covers the sequence's
/// rows.
pub(crate) unsafe fn attend(
    rows: &[f32],
    width: usize,
    parts: [usize; 3],
    scale: f32,
    room: &mut Room,
    out: *mut f32,
    out_stride: usize,
) {
    let length = rows.len() / width;
    assert!((1..=MAX_TOKENS).contains(&length), "a short sequence");
    assert!(
        parts.iter().all(|&part| part + HEAD <= width),
        "a head within a row"
    );
    // Groups of queries: as many as keep the sums of the scores and of the values in
    // registers, with the keys' or values' and a broadcast query's or weight's.
    // SAFETY: the caller's contract, and the asserts above.
    unsafe {
        match length.div_ceil(16) {
            1 => attend_in::<1, 8>(rows, width, parts, scale, room, out, out_stride),
            2 => attend_in::<2, 8>(rows, width, parts, scale, room, out, out_stride),
            3 => attend_in::<3, 4>(rows, width, parts, scale, room, out, out_stride),
            _ => attend_in::<4, 4>(rows, width, parts, scale, room, out, out_stride),
        }
    }
}

/// [`attend`] with a row of scores in `REGS` registers, `QUERIES` queries at a time.
///
/// # Safety
/// As [`attend`], and the asserts there hold; `length` fits `REGS` registers.
#[target_feature(enable = "avx512f")]
unsafe fn attend_in<const REGS: usize, const QUERIES: usize>(
    rows: &[f32],
    width: usize,
    [q, k, v]: [usize; 3],
    scale: f32,
    room: &mut Room,
    out: *mut f32,
    out_stride: usize,
) {
    let length = rows.len() / width;
    let lanes = 16 * REGS;
    // The keys' lanes past the sequence hold whatever an earlier head left: their
    // scores are masked off before softmax.
    room.keys.resize(HEAD * MAX_TOKENS, 0.0);
    room.queries.resize(QUERIES * HEAD, 0.0);
    room.weights.resize(QUERIES * MAX_TOKENS, 0.0);
    for (j, row) in rows.chunks_exact(width).enumerate() {
        for (d, &key) in row[k..k + HEAD].iter().enumerate() {
            room.keys[d * lanes + j] = key;
        }
    }
    let masks: [__mmask16; REGS] =
        std::array::from_fn(|r| ((1u32 << (length - 16 * r).min(16)) - 1) as u16);
    let (keys, weights) = (room.keys.as_ptr(), room.weights.as_mut_ptr());
    for first in (0..length).step_by(QUERIES) {
        let count = (length - first).min(QUERIES);
        // A group of fewer queries repeats its last (never stored).
        for (i, query) in room.queries.chunks_exact_mut(HEAD).enumerate() {
            let row = (first + i.min(count - 1)) * width + q;
            query.copy_from_slice(&rows[row..row + HEAD]);
        }
        let queries = room.queries.as_ptr();
        // SAFETY: every row read is the sequence's and every part lies within a row
        // (the caller's asserts); the keys hold HEAD rows of `lanes`, the queries and
        // the weights QUERIES rows; `out` covers the sequence's rows.
        unsafe {
            let mut sums = [[_mm512_setzero_ps(); REGS]; QUERIES];
            for d in 0..HEAD {
                let column: [__m512; REGS] =
                    std::array::from_fn(|r| _mm512_loadu_ps(keys.add(d * lanes + 16 * r)));
                for (i, sums) in sums.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*queries.add(i * HEAD + d));
                    for (sum, &key) in sums.iter_mut().zip(&column) {
                        *sum = _mm512_fmadd_ps(x, key, *sum);
                    }
                }
            }
            for (i, sums) in sums.iter().enumerate() {
                store_softmax(sums, scale, &masks, weights.add(i * lanes));
            }
            let mut context = [[_mm512_setzero_ps(); 2]; QUERIES];
            let values = rows.as_ptr().add(v);
            for j in 0..length {
                let value: [__m512; 2] =
                    [0, 16].map(|d| _mm512_loadu_ps(values.add(j * width + d)));
                for (i, sums) in context.iter_mut().enumerate() {
                    let weight = _mm512_set1_ps(*weights.add(i * lanes + j));
                    for (sum, &value) in sums.iter_mut().zip(&value) {
                        *sum = _mm512_fmadd_ps(weight, value, *sum);
                    }
                }
            }
            for (i, sums) in context.iter().enumerate().take(count) {
                for (r, &sum) in sums.iter().enumerate() {
                    _mm512_storeu_ps(out.add((first + i) * out_stride + 16 * r), sum);
                }
            }
        }
    }
}

/// Softmax of one row of scores (`scale` times `sums`; the lanes `masks` leaves off
/// weigh nothing), stored at `to`: the operations of [`crate::kernels::softmax`], the
/// maximum and the total summed in another order.
///
/// # Safety
/// AVX-512F; `to` holds `16 * REGS` values.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_softmax<const REGS: usize>(
    sums: &[__m512; REGS],
    scale: f32,
    masks: &[__mmask16; REGS],
    to: *mut f32,
) {
    let scores: [__m512; REGS] = std::array::from_fn(|r| {
        let score = _mm512_mul_ps(sums[r], _mm512_set1_ps(scale));
        _mm512_mask_mov_ps(_mm512_set1_ps(f32::NEG_INFINITY), masks[r], score)
    });
    let max = _mm512_reduce_max_ps(
        scores
            .into_iter()
            .reduce(|a, b| _mm512_max_ps(a, b))
            .unwrap(),
    );
    let exps = scores.map(|score| exp_lanes(_mm512_sub_ps(score, _mm512_set1_ps(max))));
    let total = _mm512_reduce_add_ps(exps.into_iter().reduce(|a, b| _mm512_add_ps(a, b)).unwrap());
    let total = _mm512_set1_ps(total.recip());
    for (r, exp) in exps.into_iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { _mm512_storeu_ps(to.add(16 * r), _mm512_mul_ps(exp, total)) };
    }
}

/// [`crate::kernels::exp`] on sixteen lanes: the same operations in the same order,
/// so the same bits.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp_lanes(x: __m512) -> __m512 {
    use crate::kernels::{EXP_P, EXP_ROUND, LN2};
    let underflow = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.0));
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let round = _mm512_set1_ps(EXP_ROUND);
    let shifted = _mm512_add_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        round,
    );
    let n = _mm512_sub_ps(shifted, round);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2[0]), x);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2[1]), r);
    let p = EXP_P.iter().fold(_mm512_setzero_ps(), |acc, &c| {
        _mm512_fmadd_ps(acc, r, _mm512_set1_ps(c))
    });
    let y = _mm512_add_ps(
        _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
        _mm512_set1_ps(1.0),
    );
    let n = _mm512_sub_epi32(
        _mm512_castps_si512(shifted),
        _mm512_set1_epi32(EXP_ROUND.to_bits() as i32),
    );
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        n,
        _mm512_set1_epi32(127),
    )));
    _mm512_maskz_mul_ps(!underflow, y, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`exp_lanes`] gives the bits of [`crate::kernels::exp`], over softmax's range
    /// and past its ends.
    #[test]
    fn exp_on_lanes_matches_one_value_at_a_time() {
        if !<crate::packed::F32 as crate::packed::Format>::available() {
            eprintln!("skipped: this CPU lacks AVX-512F");
            return;
        }
        let xs: Vec<f32> = (-96_000..90_000).map(|i| i as f32 / 1000.0).collect();
        for chunk in xs.chunks_exact(16) {
            // SAFETY: AVX-512F (checked above); sixteen values either way.
            let lanes: [f32; 16] =
                unsafe { std::mem::transmute(exp_lanes(_mm512_loadu_ps(chunk.as_ptr()))) };
            for (&x, got) in chunk.iter().zip(lanes) {
                assert_eq!(got.to_bits(), crate::kernels::exp(x).to_bits(), "{x}");
            }
        }
    }
}
