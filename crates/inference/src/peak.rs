//! The cores' arithmetic peak, measured rather than computed from a data sheet: each
//! thread runs independent chains of multiply-adds on values held in registers (no
//! loads, no stores), long enough for the clock to settle, and the figure is the
//! multiply-adds done, twice (a multiply and an add), per second. bfloat16 tile
//! products (AMX `tdpbf16ps`; also fed from L1, since tiles take their operands only
//! from memory), bfloat16 dot products (`vdpbf16ps`, AVX-512 BF16) and `f32` FMA at
//! the widest vectors the CPU has (AVX-512, AVX2, NEON). `offpath-bench model`
//! divides its throughput by it.

// The loops use SIMD intrinsics; each is called only after its CPU feature was detected.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

/// What [`measure`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// Threads that ran at once.
    pub threads: usize,
    /// bfloat16 dot products, GFLOP/s; `None` where the CPU has no AVX-512 BF16.
    pub bf16_gflops: Option<f64>,
    /// bfloat16 tile products (AMX `tdpbf16ps`), GFLOP/s; `None` where the CPU or
    /// the system offers no AMX tiles.
    pub tile_gflops: Option<f64>,
    /// The tile products of `tile_gflops`, each round loading its four operand tiles
    /// from the L1 cache first: what a tile kernel fed from memory can reach.
    pub fed_tile_gflops: Option<f64>,
    /// `f32` FMA, GFLOP/s.
    pub f32_gflops: f64,
    /// The instructions the `f32` figure used (`avx512`, `avx2`, `neon`, `scalar`).
    pub f32_kind: &'static str,
}

/// Independent accumulators per thread: more than the FMA latency times the issue rate,
/// so the units never wait on a result.
const CHAINS: usize = 16;

/// Measures both peaks on `threads` threads at once, each run lasting about `time`.
pub fn measure(threads: usize, time: Duration) -> Peak {
    let threads = threads.max(1);
    let (kind, f32_step) = f32_kernel();
    let [tile, fed_tile] = tile_kernels().map_or([None, None], |steps| {
        steps.map(|step| Some(gflops(threads, time, step)))
    });
    Peak {
        threads,
        bf16_gflops: bf16_kernel().map(|step| gflops(threads, time, step)),
        tile_gflops: tile,
        fed_tile_gflops: fed_tile,
        f32_gflops: gflops(threads, time, f32_step),
        f32_kind: kind,
    }
}

impl Peak {
    /// The peak of the fastest bfloat16 instructions the CPU has: tiles, dot
    /// products, or `f32` FMA where it has neither.
    pub fn bf16_limit(&self) -> f64 {
        self.tile_gflops
            .or(self.bf16_gflops)
            .unwrap_or(self.f32_gflops)
    }
}

/// How fast bfloat16 dot products run against `f32` FMA on this core: the ratio of
/// their rates, each the best of five runs of about a tenth of a millisecond (the
/// first AVX-512 instructions of a process run slower while the core powers up);
/// `None` without AVX-512 BF16. Takes about two milliseconds.
pub fn race() -> Option<f64> {
    const ROUNDS: u64 = 1 << 14;
    let bf16 = bf16_kernel()?;
    let (_, f32) = f32_kernel();
    let rate = |step: Step| {
        (0..5)
            .map(|_| {
                let started = Instant::now();
                let flops = step(ROUNDS);
                flops / started.elapsed().as_secs_f64()
            })
            .fold(0.0, f64::max)
    };
    let (f32_rate, bf16_rate) = (rate(f32), rate(bf16));
    Some(bf16_rate / f32_rate)
}

/// A kernel: runs `rounds` rounds of [`CHAINS`] multiply-add instructions and returns
/// the floating-point operations it did.
type Step = fn(u64) -> f64;

/// GFLOP/s of `step` on `threads` threads for about `time`: a short calibration run
/// sizes the rounds, then all threads start together and the slowest one's end counts.
fn gflops(threads: usize, time: Duration, step: Step) -> f64 {
    let mut rounds = 1u64 << 16;
    loop {
        let started = Instant::now();
        step(rounds);
        let took = started.elapsed();
        if took > Duration::from_millis(20) {
            let per_round = took.as_secs_f64() / rounds as f64;
            rounds = ((time.as_secs_f64() / per_round) as u64).max(1);
            break;
        }
        rounds *= 2;
    }
    let started = Instant::now();
    let flops: f64 = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..threads)
            .map(|_| scope.spawn(move || step(rounds)))
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("a peak thread"))
            .sum()
    });
    flops / started.elapsed().as_secs_f64() / 1e9
}

#[cfg(target_arch = "x86_64")]
fn bf16_kernel() -> Option<Step> {
    (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16"))
        .then_some(x86::bf16_rounds as Step)
}

#[cfg(not(target_arch = "x86_64"))]
fn bf16_kernel() -> Option<Step> {
    None
}

/// The tile kernels: register-only, then fed from L1 ([`crate::amx`]).
#[cfg(target_arch = "x86_64")]
fn tile_kernels() -> Option<[Step; 2]> {
    crate::amx::available().then_some([x86::tile_rounds as Step, x86::fed_tile_rounds])
}

#[cfg(not(target_arch = "x86_64"))]
fn tile_kernels() -> Option<[Step; 2]> {
    None
}

#[cfg(target_arch = "x86_64")]
fn f32_kernel() -> (&'static str, Step) {
    if is_x86_feature_detected!("avx512f") {
        ("avx512", x86::fma512_rounds)
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        ("avx2", x86::fma256_rounds)
    } else {
        ("scalar", scalar_rounds)
    }
}

#[cfg(target_arch = "aarch64")]
fn f32_kernel() -> (&'static str, Step) {
    ("neon", arm::fma_rounds)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn f32_kernel() -> (&'static str, Step) {
    ("scalar", scalar_rounds)
}

/// Plain `mul_add` chains: what the peak is without vector instructions.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
fn scalar_rounds(rounds: u64) -> f64 {
    let mut sums = [0f32; CHAINS];
    let (a, b) = (black_box(1.000_001_f32), black_box(0.999_999_f32));
    for _ in 0..rounds {
        for sum in &mut sums {
            *sum = a.mul_add(*sum, b);
        }
    }
    black_box(sums);
    rounds as f64 * CHAINS as f64 * 2.0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m512, __m512bh, __m512i, _mm256_fmadd_ps, _mm256_set1_ps, _mm512_dpbf16_ps,
        _mm512_fmadd_ps, _mm512_set1_epi32, _mm512_set1_ps,
    };
    use std::hint::black_box;

    use super::CHAINS;

    /// `tdpbf16ps` on tile registers.
    pub(super) fn tile_rounds(rounds: u64) -> f64 {
        // SAFETY: chosen only when the tiles are available.
        unsafe { crate::amx::register_rounds(rounds) }
    }

    /// `tdpbf16ps` on tiles loaded from L1 first.
    pub(super) fn fed_tile_rounds(rounds: u64) -> f64 {
        // SAFETY: chosen only when the tiles are available.
        unsafe { crate::amx::fed_rounds(rounds) }
    }

    /// `vdpbf16ps` chains: each instruction is 16 lanes x 2 products, added to the lane.
    pub(super) fn bf16_rounds(rounds: u64) -> f64 {
        // SAFETY: chosen only when AVX-512F and AVX-512 BF16 were detected.
        unsafe { bf16(rounds) };
        rounds as f64 * CHAINS as f64 * 16.0 * 2.0 * 2.0
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    fn bf16(rounds: u64) {
        // Two bfloat16 values in each 32-bit word (1.0, and 6e-8): sums grow slowly,
        // never overflow or turn denormal over any run.
        // SAFETY: both are 512-bit vectors; every bit pattern is a valid bfloat16 pair.
        let bh = |words| unsafe { std::mem::transmute::<__m512i, __m512bh>(words) };
        let a = bh(_mm512_set1_epi32(black_box(0x3f80_3f80)));
        let b = bh(_mm512_set1_epi32(black_box(0x3380_3380)));
        let mut sums: [__m512; CHAINS] = [_mm512_set1_ps(0.0); CHAINS];
        for _ in 0..rounds {
            for sum in &mut sums {
                *sum = _mm512_dpbf16_ps(*sum, a, b);
            }
        }
        black_box(sums);
    }

    /// An FMA kernel at one vector width: `$rounds` counts, `$chains` runs the chains
    /// (`$lanes` lanes, a multiply and an add each) under `$features`.
    macro_rules! fma_kernel {
        ($rounds:ident, $chains:ident, $features:literal, $vector:ty, $set1:ident, $fmadd:ident, $lanes:literal) => {
            pub(super) fn $rounds(rounds: u64) -> f64 {
                // SAFETY: chosen only when the CPU has `$features`.
                unsafe { $chains(rounds) };
                rounds as f64 * CHAINS as f64 * $lanes * 2.0
            }

            #[target_feature(enable = $features)]
            fn $chains(rounds: u64) {
                let a = $set1(black_box(1.000_001));
                let b = $set1(black_box(0.999_999));
                let mut sums: [$vector; CHAINS] = [$set1(0.0); CHAINS];
                for _ in 0..rounds {
                    for sum in &mut sums {
                        *sum = $fmadd(*sum, a, b);
                    }
                }
                black_box(sums);
            }
        };
    }

    fma_kernel!(
        fma512_rounds,
        fma512,
        "avx512f",
        __m512,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        16.0
    );
    fma_kernel!(
        fma256_rounds,
        fma256,
        "avx2,fma",
        __m256,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        8.0
    );
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::{float32x4_t, vdupq_n_f32, vfmaq_f32};
    use std::hint::black_box;

    use super::CHAINS;

    /// NEON FMA chains: 4 lanes (every aarch64 CPU has NEON).
    pub(super) fn fma_rounds(rounds: u64) -> f64 {
        // SAFETY: NEON is part of the aarch64 base architecture.
        unsafe {
            let a = vdupq_n_f32(black_box(1.000_001));
            let b = vdupq_n_f32(black_box(0.999_999));
            let mut sums: [float32x4_t; CHAINS] = [vdupq_n_f32(0.0); CHAINS];
            for _ in 0..rounds {
                for sum in &mut sums {
                    *sum = vfmaq_f32(*sum, a, b);
                }
            }
            black_box(sums);
        }
        rounds as f64 * CHAINS as f64 * 4.0 * 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kernel counts the operations of its instructions: chains x lanes x 2
    /// (x 2 again for `vdpbf16ps`, two products a lane); a measurement is a finite rate.
    #[test]
    fn kernels_count_their_operations() {
        let (kind, step) = f32_kernel();
        let lanes = match kind {
            "avx512" => 16.0,
            "avx2" => 8.0,
            "neon" => 4.0,
            _ => 1.0,
        };
        assert_eq!(step(3), 3.0 * CHAINS as f64 * lanes * 2.0);
        if let Some(step) = bf16_kernel() {
            assert_eq!(step(3), 3.0 * CHAINS as f64 * 16.0 * 4.0);
        }
        // Four tile products a round, each 16 x 16 sums of 32 products.
        for step in tile_kernels().into_iter().flatten() {
            assert_eq!(step(3), 3.0 * 4.0 * 16.0 * 16.0 * 32.0 * 2.0);
        }
        let peak = measure(1, Duration::from_millis(30));
        assert!(
            peak.f32_gflops.is_finite() && peak.f32_gflops > 0.0,
            "{peak:?}"
        );
        assert_eq!(peak.bf16_gflops.is_some(), bf16_kernel().is_some());
        assert_eq!(peak.tile_gflops.is_some(), tile_kernels().is_some());
        assert!(peak.bf16_limit() > 0.0);
    }
}
