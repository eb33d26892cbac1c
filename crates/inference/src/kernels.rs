//! The encoder's CPU kernels as candle custom ops: bias, GELU, residual + layer norm;
//! and attention's softmax (attention itself has its own module). Each is one pass
//! over rows of `f32`, in place where it can be, written as plain loops over slices
//! that the compiler vectorises; candle's stock ops would take a pass (and an
//! allocation) per step.
//!
//! A release build targets the x86-64 baseline (SSE2), which vectorises four lanes
//! without FMA; each loop is therefore compiled again for AVX-512 and for AVX2 + FMA
//! ([`multiversion`]), and runs the widest this CPU has. The versions do the same
//! operations in the same order, so every CPU gets the same bits: Rust never
//! contracts `a * b + c`, and the polynomials' multiply-adds are written as
//! `mul_add`, one rounding each, which AVX2, AVX-512 and NEON do in one instruction
//! and the x86-64 baseline (CPUs from before 2013) in libm's exact `fmaf`. On two
//! Sapphire Rapids cores GELU went from 7.6% of a batch of 64 sentences' time to
//! 3.5%, and with the reductions in sixteen lanes one 256-token window from 35 to 45
//! chunks/s; `mul_add` in GELU's erf then took bfloat16 batch 64 from 2,809-2,923 to
//! 2,979-3,036 sentences/s (GELU's two dozen separate multiplies and adds bound its
//! loop).

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Result, bail};
use multiversion::multiversion;

/// The CPUs the loops are compiled for besides the baseline, best first.
macro_rules! wide {
    ($($item:tt)*) => {
        #[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
        $($item)*
    };
}

/// Adds a bias to every row, in place.
pub(crate) struct AddBias<'a>(pub(crate) &'a [f32]);

impl InplaceOp1 for AddBias<'_> {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        add_bias(rows_mut(storage, layout, self.0.len())?, self.0);
        Ok(())
    }
}

/// The exact (erf) GELU, in place.
pub(crate) struct Gelu;

impl InplaceOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        gelu_in_place(elements_mut(storage, layout)?);
        Ok(())
    }
}

/// Adds a residual (the op's second tensor) to every row, then normalises each row
/// (BERT's post-norm layer norm), in place.
pub(crate) struct ResidualNorm {
    /// The layer norm's scale, one per column.
    pub(crate) gamma: Vec<f32>,
    /// The layer norm's shift, one per column.
    pub(crate) beta: Vec<f32>,
    /// Added to the variance.
    pub(crate) eps: f32,
}

impl InplaceOp2 for ResidualNorm {
    fn name(&self) -> &'static str {
        "residual-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &mut CpuStorage,
        layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> Result<()> {
        let width = self.gamma.len();
        let residual = elements(residual, residual_layout)?;
        let rows = rows_mut(storage, layout, width)?;
        if residual.len() != rows.len() {
            bail!("the residual's shape differs from the input's");
        }
        residual_norm(rows, residual, self);
        Ok(())
    }
}

wide! {
/// Adds `bias` to every row of `rows` (as wide as `bias`).
pub(crate) fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += b;
        }
    }
}
}

wide! {
/// Adds each row of `residual` to its row of `rows`, then normalises the row.
fn residual_norm(rows: &mut [f32], residual: &[f32], norm: &ResidualNorm) {
    let width = norm.gamma.len();
    for (row, residual) in rows.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
        for (x, r) in row.iter_mut().zip(residual) {
            *x += r;
        }
        let mean = sum(row, |x| x) / width as f32;
        let variance = sum(row, |x| (x - mean) * (x - mean)) / width as f32;
        let scale = (variance + norm.eps).sqrt().recip();
        for ((x, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
            *x = ((*x - mean) * scale).mul_add(*g, *b);
        }
    }
}
}

/// The elements of a contiguous `f32` tensor.
pub(crate) fn elements<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
        bail!("expected a contiguous f32 tensor");
    };
    Ok(&data[start..end])
}

/// The elements of a contiguous `f32` tensor, mutable.
fn elements_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
        bail!("expected a contiguous f32 tensor");
    };
    Ok(&mut data[start..end])
}

/// The elements of a contiguous `f32` tensor whose last dimension is `width`,
/// mutable: whole rows.
fn rows_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    width: usize,
) -> Result<&'a mut [f32]> {
    if layout.dims().last() != Some(&width) {
        bail!("expected rows of {width}, got shape {:?}", layout.dims());
    }
    elements_mut(storage, layout)
}

/// Lanes for the vectorised reductions: sixteen independent partial results, which
/// the compiler keeps in SIMD registers (one running result would force strict order).
const LANES: usize = 16;

/// `term` of each of `values`, combined with `combine` (associative and commutative,
/// `identity` its identity) in [`LANES`] partial results, then across them.
#[inline(always)]
fn reduce(
    values: &[f32],
    identity: f32,
    term: impl Fn(f32) -> f32,
    combine: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut lanes = [identity; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks
        .remainder()
        .iter()
        .fold(identity, |acc, &x| combine(acc, term(x)));
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = combine(*lane, term(x));
        }
    }
    lanes.into_iter().fold(rest, combine)
}

/// The sum of `term` over `values`, in [`LANES`] partial sums.
#[inline(always)]
fn sum(values: &[f32], term: impl Fn(f32) -> f32) -> f32 {
    reduce(values, 0.0, term, |a, b| a + b)
}

/// The largest of `values` (negative infinity for none), in [`LANES`] partial maxima.
#[inline(always)]
fn max(values: &[f32]) -> f32 {
    reduce(
        values,
        f32::NEG_INFINITY,
        |x| x,
        |a, b| if b > a { b } else { a },
    )
}

wide! {
/// [`gelu`] over `values`, in place.
pub(crate) fn gelu_in_place(values: &mut [f32]) {
    for x in values {
        *x = gelu(*x);
    }
}
}

#[cfg(target_arch = "x86_64")]
wide! {
/// [`gelu_bf16`] over `values`, in place.
pub(crate) fn gelu_bf16_in_place(values: &mut [f32]) {
    for x in values {
        *x = gelu_bf16(*x);
    }
}
}

/// GELU to within 1.3e-4 of [`gelu`], for outputs that are rounded to bfloat16 next
/// (a relative error of up to 2^-9): `x/2 + x erf(x/√2)/2`, its second half an even
/// polynomial fit on [-4, 4] (`x²` times a degree-7 polynomial in `x²`); beyond,
/// `max(x, 0)`. Half the exact GELU's operations and no division: on the two EPYC
/// cores, as a pass of its own, 3.1% of a batch of 32 sentences' time in bfloat16
/// against the exact GELU's 4.0% (the `vdpbf16ps` products now apply it in their
/// tiles' stores, [`crate::packed`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn gelu_bf16(x: f32) -> f32 {
    let t = (x * x).min(16.0);
    let p = GELU_BF16[1..]
        .iter()
        .fold(GELU_BF16[0], |acc, &c| acc.mul_add(t, c));
    let y = 0.5f32.mul_add(x, p * t);
    if x.abs() > 4.0 { x.max(0.0) } else { y }
}

/// [`gelu_bf16`]'s polynomial in `x²`, highest power first: half of `x erf(x/√2) / x²`
/// fit on [0, 16] in `x²` (least squares on 4,000 Chebyshev points, reweighted towards
/// the largest errors until they level, then rounded to `f32`).
#[cfg(target_arch = "x86_64")]
pub(crate) const GELU_BF16: [f32; 8] = [
    -1.301_279_6e-9,
    1.041_951_1e-7,
    -3.657_109e-6,
    7.485_473e-5,
    -1.006_488_1e-3,
    9.505_389e-3,
    -6.588_782e-2,
    0.398_673_4,
];

/// The exact GELU, `x * Φ(x)`, as BERT and sentence-transformers compute it.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The error function to within a few ulps of `f32`: a rational approximation on
/// [-4, 4] (Eigen's and XLA's `erf` for `f32`), beyond which `erf` is ±1 in `f32`.
/// Branch-free, so that a loop of it vectorises, unlike libm's `erff`.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ERF_ALPHA
        .iter()
        .fold(0.0, |acc: f32, &c| acc.mul_add(x2, c));
    let q = ERF_BETA.iter().fold(0.0, |acc: f32, &c| acc.mul_add(x2, c));
    x * p / q
}

/// [`erf`]'s numerator, a polynomial in `x²` times `x`, highest power first.
pub(crate) const ERF_ALPHA: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];

/// [`erf`]'s denominator, a polynomial in `x²`, highest power first.
pub(crate) const ERF_BETA: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329_3e-3,
    -1.426_474e-2,
];

wide! {
/// Softmax in place: shifted by the maximum so that `exp` cannot overflow, with
/// [`exp`] so that the loops vectorise (libm's `expf` took 12% of a 256-token
/// window's time).
pub(crate) fn softmax(weights: &mut [f32]) {
    let total = exp_shifted(weights).recip();
    for w in weights.iter_mut() {
        *w *= total;
    }
}
}

wide! {
/// Softmax's first half, in place: each score becomes `e^(score - max)`; returns
/// their sum, by which softmax divides (attention on tiles folds the division into
/// its rounding to bfloat16).
pub(crate) fn exp_shifted(weights: &mut [f32]) -> f32 {
    let max = max(weights);
    for w in weights.iter_mut() {
        *w = exp(*w - max);
    }
    sum(weights, |w| w)
}
}

/// `e^x` to within about 2 ulps of `f32` on [-87, 88] (Cephes' `expf`: `x = n ln 2 +
/// r`, a degree-7 polynomial for `e^r`, `2^n` from the exponent bits); 0 below -87,
/// as in softmax a weight under `e^-87` is nothing. Branch-free, so that a loop of it
/// vectorises.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + EXP_ROUND;
    let n = shifted - EXP_ROUND;
    let r = n.mul_add(-LN2[1], n.mul_add(-LN2[0], x));
    let p = EXP_P.iter().fold(0.0, |acc: f32, &c| acc.mul_add(r, c));
    let y = (p * r).mul_add(r, r) + 1.0;
    let n = shifted.to_bits() as i32 - EXP_ROUND.to_bits() as i32;
    let scale = f32::from_bits(((n + 127) << 23) as u32);
    if underflow { 0.0 } else { y * scale }
}

/// 1.5 x 2^23: adding it to [`exp`]'s `x / ln 2` rounds that to an integer held in the
/// low mantissa bits.
pub(crate) const EXP_ROUND: f32 = 12_582_912.0;

/// `ln 2` in two parts, the first with few enough bits that `n` times it is exact:
/// [`exp`]'s `x - n ln 2` loses nothing.
pub(crate) const LN2: [f32; 2] = [0.693_359_4, -2.121_944_4e-4];

/// [`exp`]'s polynomial for `(e^r - 1 - r) / r²`, highest power first.
pub(crate) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn erf_is_within_a_few_ulps_of_libm() {
        let worst = (-6000..=6000)
            .map(|i| i as f64 / 1000.0)
            .map(|x| (erf(x as f32) as f64 - libm::erf(x)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "worst error {worst}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn bf16_gelu_is_within_its_bound_of_the_exact_gelu() {
        let exact = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        let worst = (-8000..=8000)
            .map(|i| i as f64 / 1000.0)
            .map(|x| (gelu_bf16(x as f32) as f64 - exact(x)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1.3e-4, "worst error {worst}");
        assert_eq!(gelu_bf16(0.0), 0.0);
        assert_eq!(gelu_bf16(10.0), 10.0);
        assert_eq!(gelu_bf16(-10.0), 0.0);
    }

    #[test]
    fn exp_is_within_a_few_ulps_of_libm() {
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                (got - want).abs() <= want * 3e-7,
                "exp({x}) = {got}, not {want}"
            );
        }
        assert_eq!(exp(-90.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn softmax_sums_to_one_in_the_ratios_of_the_exponentials() {
        // More than one chunk of lanes, the largest inside a chunk, a remainder.
        let mut weights: Vec<f32> = (0..37).map(|i| (i * 7 % 37) as f32 * 0.3 - 5.0).collect();
        let expected: Vec<f64> = weights.iter().map(|&w| (w as f64).exp()).collect();
        let total: f64 = expected.iter().sum();
        softmax(&mut weights);
        for (got, want) in weights.iter().zip(&expected) {
            assert!((*got as f64 - want / total).abs() < 1e-6, "{weights:?}");
        }
    }

    #[test]
    fn residual_norm_matches_the_textbook_layer_norm() {
        // Rows wider than one chunk of lanes, with a remainder.
        const WIDTH: usize = 19;
        let input: Vec<f32> = (0..2 * WIDTH).map(|i| (i * 5 % 11) as f32 - 4.0).collect();
        let residual: Vec<f32> = (0..2 * WIDTH).map(|i| (i % 3) as f32 * 0.5).collect();
        let op = ResidualNorm {
            gamma: (0..WIDTH).map(|c| 0.5 + c as f32 / 10.0).collect(),
            beta: (0..WIDTH).map(|c| c as f32 - 9.0).collect(),
            eps: 1e-12,
        };
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .reshape((2, WIDTH))
            .unwrap();
        let r = Tensor::new(residual.as_slice(), &Device::Cpu)
            .unwrap()
            .reshape((2, WIDTH))
            .unwrap();
        x.inplace_op2(&r, &op).unwrap();
        let got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for row in 0..2 {
            let v: Vec<f32> = (0..WIDTH)
                .map(|c| input[row * WIDTH + c] + residual[row * WIDTH + c])
                .collect();
            let mean = v.iter().sum::<f32>() / WIDTH as f32;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / WIDTH as f32;
            for c in 0..WIDTH {
                let want = (v[c] - mean) / var.sqrt() * op.gamma[c] + op.beta[c];
                assert!((got[row * WIDTH + c] - want).abs() < 1e-5, "{got:?}");
            }
        }
    }
}
