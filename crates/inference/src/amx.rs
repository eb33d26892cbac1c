//! bfloat16 products on AMX tiles (Intel Sapphire Rapids and later): one `tdpbf16ps`
//! multiplies a 16 x 32 tile of bfloat16 inputs by a 32 x 16 tile of bfloat16 weights
//! into 16 x 16 `f32` sums, 8,192 multiply-adds, where `vdpbf16ps` does 32. On a
//! Sapphire Rapids core it runs at about 3.3 TFLOP/s on operands in tile registers
//! (28 times `vdpbf16ps`, 14 times `f32` FMA), about 2.7 TFLOP/s with its operand
//! tiles loaded from L1 (`offpath-bench model` measures both, [`crate::peak`]).
//!
//! A kernel here runs one panel of a [`crate::packed::Weight`] in bfloat16 pairs (the
//! pair layout is the one AMX calls VNNI: a weight tile is 16 steps of a panel's rows,
//! 16 columns of it) against up to 32 rows of inputs, row-major bfloat16 pairs. Four
//! tiles hold the sums of 32 rows x 32 columns; two take the rows' inputs and two the
//! panel's weights, 16 steps at a time. Every operand row starts a cache line: a tile
//! load whose rows straddle two lines took 51 cycles here, against 9.
//!
//! Linux hands a process the tile registers' 8 KiB of state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, Linux 5.16 and later); [`available`] asks once,
//! and says no wherever the CPU or the kernel says no, so products fall back to
//! `vdpbf16ps`.

// Tile instructions have no intrinsics on stable Rust: inline assembly, on raw
// pointers whose extents each caller proves.
#![allow(unsafe_code)]

use std::arch::asm;
use std::arch::x86_64::{
    __m256bh, __m256i, __m512, __m512bh, __m512i, _mm512_cvtepu16_epi32, _mm512_cvtne2ps_pbh,
    _mm512_cvtneps_pbh, _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_or_si512, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_slli_epi32, _mm512_storeu_si512,
};
use std::cell::Cell;
use std::sync::OnceLock;

/// Rows of a tile, and `f32` columns of a sums tile.
pub(crate) const ROWS: usize = 16;
/// Steps (bfloat16 pairs) one weight tile holds: 64 bytes a row.
pub(crate) const STEPS: usize = 16;
/// Rows of inputs one kernel call takes: two input tiles.
pub(crate) const GROUP: usize = 2 * ROWS;

/// Whether this CPU has AMX-BF16 and the operating system lets this process use the
/// tiles; asks the system on the first call.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu_has_amx() && tiles_granted())
}

/// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (bit 24).
fn cpu_has_amx() -> bool {
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    let bits = (1 << 22) | (1 << 24);
    leaf.edx & bits == bits
}

/// Asks Linux for the tile data state for this process (every thread, present and
/// future).
#[cfg(target_os = "linux")]
fn tiles_granted() -> bool {
    /// `arch_prctl` code that requests permission for an extended state component.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    /// The tile data state component.
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: the request changes what the process may use, and nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// Other systems: not asked, not used.
#[cfg(not(target_os = "linux"))]
fn tiles_granted() -> bool {
    false
}

/// The tile configuration (`ldtilecfg`'s 64 bytes): palette 1, all eight tiles 16
/// rows of 64 bytes.
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

static CONFIG: Config = Config {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Loads [`CONFIG`] on this thread, once: the configuration lasts until a thread
/// releases its tiles, and `ldtilecfg` costs as much as a small panel's products
/// (8.6% of a batch of 64 sentences when every call loaded it).
///
/// # Safety
/// [`available`].
unsafe fn configure() {
    thread_local! {
        static CONFIGURED: Cell<bool> = const { Cell::new(false) };
    }
    CONFIGURED.with(|configured| {
        if !configured.get() {
            // SAFETY: the caller's contract.
            unsafe {
                asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly, preserves_flags))
            };
            configured.set(true);
        }
    });
}

/// Configures this thread's tiles ([`configure`]) and zeroes sums tiles 0-3.
///
/// # Safety
/// [`available`].
unsafe fn zero_sums() {
    // SAFETY: the caller's contract.
    unsafe {
        configure();
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem, preserves_flags),
        );
    }
}

/// One step of a 2 x 2 block: input tiles 4 and 5 (`{a}`, `{a2}`, rows `{sa}` bytes
/// apart) and weight tiles 6 and 7 (`{w}` and 64 bytes on, rows `{sw}` apart) loaded,
/// then their four products added to sums tiles 0-3.
macro_rules! two_by_two {
    () => {
        concat!(
            "tileloadd tmm4, [{a} + {sa}*1]\n",
            "tileloadd tmm6, [{w} + {sw}*1]\n",
            "tileloadd tmm7, [{w} + {sw}*1 + 64]\n",
            "tdpbf16ps tmm0, tmm4, tmm6\n",
            "tdpbf16ps tmm1, tmm4, tmm7\n",
            "tileloadd tmm5, [{a2} + {sa}*1]\n",
            "tdpbf16ps tmm2, tmm5, tmm6\n",
            "tdpbf16ps tmm3, tmm5, tmm7",
        )
    };
}

/// One kernel call's operands: up to [`GROUP`] rows of inputs against one panel of
/// 32 columns, over all its steps.
pub(crate) struct Panel {
    /// The first row's first word; rows follow `input_stride` bytes apart, each from
    /// a cache line, and the buffer holds whole tiles of [`ROWS`] rows (zeros past
    /// the last row).
    pub(crate) inputs: *const u32,
    /// Bytes from one input row to the next.
    pub(crate) input_stride: usize,
    /// Steps of each row and of the panel: a multiple of [`STEPS`].
    pub(crate) steps: usize,
    /// The panel: `steps` rows of 32 words.
    pub(crate) weights: *const u32,
    /// Where the first row's first column goes.
    pub(crate) out: *mut f32,
    /// Values from one output row to the next.
    pub(crate) out_stride: usize,
    /// Rows to store, 1 to [`GROUP`].
    pub(crate) rows: usize,
    /// Columns to store, 1 to 32 (the last panel may be partly padding).
    pub(crate) width: usize,
}

impl Panel {
    /// Runs the panel: sums from zero (the caller adds the bias: a tile would load
    /// it as slowly as any other, where zeroing costs nothing), every step, stored.
    ///
    /// # Safety
    /// [`available`], and the pointers cover what the fields say.
    pub(crate) unsafe fn run(&self) {
        debug_assert!(self.steps.is_multiple_of(STEPS) && (1..=GROUP).contains(&self.rows));
        let weight_stride = 32 * 4usize;
        // SAFETY: the caller's contract: the CPU has the tiles, every load is inside
        // the inputs (whole tiles), the panel or the bias.
        unsafe {
            zero_sums();
            let mut inputs = self.inputs.cast::<u8>();
            let mut weights = self.weights.cast::<u8>();
            let end = weights.add(self.steps * weight_stride);
            if self.rows > ROWS {
                let mut second = inputs.add(ROWS * self.input_stride);
                while weights < end {
                    asm!(
                        two_by_two!(),
                        a = in(reg) inputs,
                        a2 = in(reg) second,
                        sa = in(reg) self.input_stride,
                        w = in(reg) weights,
                        sw = in(reg) weight_stride,
                        options(nostack, readonly, preserves_flags),
                    );
                    inputs = inputs.add(STEPS * 4);
                    second = second.add(STEPS * 4);
                    weights = weights.add(STEPS * weight_stride);
                }
            } else {
                while weights < end {
                    asm!(
                        "tileloadd tmm4, [{a} + {sa}*1]",
                        "tileloadd tmm6, [{w} + {sw}*1]",
                        "tileloadd tmm7, [{w} + {sw}*1 + 64]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        a = in(reg) inputs,
                        sa = in(reg) self.input_stride,
                        w = in(reg) weights,
                        sw = in(reg) weight_stride,
                        options(nostack, readonly, preserves_flags),
                    );
                    inputs = inputs.add(STEPS * 4);
                    weights = weights.add(STEPS * weight_stride);
                }
            }
            self.store();
        }
    }

    /// Stores the sums tiles that hold rows and columns to store: whole tiles
    /// straight to the output, partial ones through a scratch tile.
    ///
    /// # Safety
    /// As [`Panel::run`], after the sums were computed.
    unsafe fn store(&self) {
        macro_rules! store {
            ($tile:literal, $row:expr, $column:expr) => {{
                let (rows, columns) = (
                    self.rows.saturating_sub($row).min(ROWS),
                    self.width.saturating_sub($column).min(ROWS),
                );
                let at = self.out.wrapping_add($row * self.out_stride + $column);
                if rows == ROWS && columns == ROWS {
                    // SAFETY: the caller's contract: the output holds these 16 x 16.
                    unsafe { store_tile!($tile, at, self.out_stride * 4) };
                } else if rows > 0 && columns > 0 {
                    let mut scratch = Scratch([0.0; ROWS * ROWS]);
                    // SAFETY: the scratch tile holds 16 x 16; the output these rows
                    // and columns.
                    unsafe {
                        store_tile!($tile, scratch.0.as_mut_ptr(), ROWS * 4);
                        for row in 0..rows {
                            std::ptr::copy_nonoverlapping(
                                scratch.0.as_ptr().add(row * ROWS),
                                at.add(row * self.out_stride),
                                columns,
                            );
                        }
                    }
                }
            }};
        }
        macro_rules! store_tile {
            ($tile:literal, $at:expr, $stride:expr) => {
                asm!(
                    concat!("tilestored [{o} + {s}*1], tmm", $tile),
                    o = in(reg) $at,
                    s = in(reg) $stride,
                    options(nostack, preserves_flags),
                )
            };
        }
        store!("0", 0, 0);
        store!("1", 0, ROWS);
        store!("2", ROWS, 0);
        store!("3", ROWS, ROWS);
    }
}

/// Multiply-adds of one `tdpbf16ps`: 16 x 16 sums of 32 products.
const TILE_MACS: f64 = (ROWS * ROWS * 2 * STEPS) as f64;

/// Peak kernel: `rounds` rounds of four `tdpbf16ps` on operands held in the tile
/// registers (no loads, no stores); returns the floating-point operations done.
///
/// # Safety
/// [`available`].
pub(crate) unsafe fn register_rounds(rounds: u64) -> f64 {
    let operands = Scratch([PEAK_OPERAND; ROWS * ROWS]);
    // SAFETY: the caller's contract; the operand tiles load from the scratch tile.
    unsafe {
        zero_sums();
        asm!(
            "tileloadd tmm4, [{p} + {s}*1]", "tileloadd tmm5, [{p} + {s}*1]",
            "tileloadd tmm6, [{p} + {s}*1]", "tileloadd tmm7, [{p} + {s}*1]",
            p = in(reg) operands.0.as_ptr(), s = in(reg) 64usize,
            options(nostack, readonly, preserves_flags),
        );
        for _ in 0..rounds {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem, preserves_flags),
            );
        }
    }
    rounds as f64 * 4.0 * TILE_MACS * 2.0
}

/// Peak kernel: the rounds of [`register_rounds`], each loading its four operand
/// tiles first, as [`Panel::run`] does, from a buffer in the L1 cache: the most a
/// kernel fed from memory can do.
///
/// # Safety
/// [`available`].
pub(crate) unsafe fn fed_rounds(rounds: u64) -> f64 {
    // Inputs in the first, weights in the second (the second weight tile 64 bytes on,
    // into the third).
    let operands = [0, 1, 2].map(|_| Scratch([PEAK_OPERAND; ROWS * ROWS]));
    let (a, w) = (operands[0].0.as_ptr(), operands[1].0.as_ptr());
    // SAFETY: the caller's contract; the operand tiles load from the scratch tiles.
    unsafe {
        zero_sums();
        for _ in 0..rounds {
            asm!(
                two_by_two!(),
                a = in(reg) a,
                a2 = in(reg) a,
                sa = in(reg) 64usize,
                w = in(reg) w,
                sw = in(reg) 64usize,
                options(nostack, readonly, preserves_flags),
            );
        }
    }
    rounds as f64 * 4.0 * TILE_MACS * 2.0
}

/// The peak kernels' operands: a word of two bfloat16 values, 1.0 and 6e-8, as `f32`
/// bits (sums grow slowly and never overflow over any run).
const PEAK_OPERAND: f32 = f32::from_bits(0x3380_3f80);

/// A sums tile's worth of `f32`, aligned to a cache line.
#[repr(C, align(64))]
struct Scratch([f32; ROWS * ROWS]);

/// Rounds the rows of `x` (`inputs` wide) to bfloat16 pairs (ties to even), row
/// after row, `steps` words a row (zeros past the inputs), into `words`. Needs no
/// tiles: the `vdpbf16ps` products round their inputs with it too
/// ([`crate::packed`]).
///
/// # Safety
/// AVX-512F and AVX-512 BF16; `words` holds a row of `steps` words for each row of
/// `x`, `steps` is a multiple of 16 and `steps * 2 >= inputs`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn round_rows(x: &[f32], inputs: usize, steps: usize, words: *mut u32) {
    for (r, row) in x.chunks_exact(inputs).enumerate() {
        // SAFETY: the caller's contract.
        unsafe { round_row(row, 1.0, steps, words.add(r * steps)) };
    }
}

/// `row` times `scale`, rounded to bfloat16 pairs, into `steps` words (zeros past the
/// row).
///
/// # Safety
/// AVX-512F and AVX-512 BF16; `words` holds `steps` words, a multiple of 16, and
/// `steps * 2 >= row.len()`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn round_row(row: &[f32], scale: f32, steps: usize, words: *mut u32) {
    let scale = _mm512_set1_ps(scale);
    for step in (0..steps).step_by(16) {
        let pairs = _mm512_cvtne2ps_pbh(
            _mm512_mul_ps(load(row, 2 * step + 16), scale),
            _mm512_mul_ps(load(row, 2 * step), scale),
        );
        // SAFETY: the caller's contract: `words` holds these sixteen.
        unsafe {
            _mm512_storeu_si512(
                words.add(step).cast(),
                std::mem::transmute::<__m512bh, __m512i>(pairs),
            )
        };
    }
}

/// The sixteen values of `row` from `at`, zeros past its end.
#[inline]
#[target_feature(enable = "avx512f")]
fn load(row: &[f32], at: usize) -> __m512 {
    let lanes = row.len().saturating_sub(at).min(16);
    if lanes == 0 {
        return _mm512_setzero_ps();
    }
    // SAFETY: the mask covers `lanes` values from `at`, all within the row.
    unsafe { _mm512_maskz_loadu_ps(((1u32 << lanes) - 1) as u16, row.as_ptr().add(at)) }
}

/// Packs the first `width` values of `count` rows of `x` (`stride` apart) as the
/// columns of panels of 32, the layout [`Panel::run`] multiplies: in panel `c / 32`,
/// step row `p` holds at lane `c % 32` row `c`'s values `2p` and `2p + 1` as a
/// bfloat16 pair. Each panel has [`STEPS`] step rows; columns past `count` and steps
/// past the values are zeros. Attention packs its keys so, to multiply by `Kᵀ`.
///
/// # Safety
/// AVX-512F and AVX-512 BF16; `x` holds the rows, `panels` `count.div_ceil(32)`
/// panels of [`STEPS`] x 32 words, and `width <= 2 * STEPS`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn pack_columns(
    x: &[f32],
    count: usize,
    stride: usize,
    width: usize,
    panels: *mut u32,
) {
    let mut words = [0u32; STEPS];
    // SAFETY: the caller's contract.
    unsafe {
        panels.write_bytes(0, count.div_ceil(32) * STEPS * 32);
        for c in 0..count {
            round_row(
                &x[c * stride..c * stride + width],
                1.0,
                STEPS,
                words.as_mut_ptr(),
            );
            let column = panels.add(c / 32 * STEPS * 32 + c % 32);
            for (p, &word) in words.iter().enumerate() {
                *column.add(p * 32) = word;
            }
        }
    }
}

/// Packs the first `width` values of `count` rows of `x` (`stride` apart) as the
/// steps of panels of 32 columns: in panel `d / 32`, step row `p` holds at lane
/// `d % 32` the values `d` of rows `2p` and `2p + 1` as a bfloat16 pair. Each panel
/// has `steps` step rows; rows past `count` and columns past `width` are zeros.
/// Attention packs its values so, to multiply by `V`.
///
/// # Safety
/// AVX-512F and AVX-512 BF16; `x` holds the rows, `panels` `width.div_ceil(32)`
/// panels of `steps` x 32 words, `steps * 2 >= count`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn pack_rows(
    x: &[f32],
    count: usize,
    stride: usize,
    width: usize,
    steps: usize,
    panels: *mut u32,
) {
    let row = |r: usize| -> &[f32] {
        if r < count {
            &x[r * stride..r * stride + width]
        } else {
            &[]
        }
    };
    let half = |values: &[f32], d: usize| {
        let bits = _mm512_cvtneps_pbh(load(values, d));
        // SAFETY: sixteen bfloat16 values are sixteen 16-bit integers.
        _mm512_cvtepu16_epi32(unsafe { std::mem::transmute::<__m256bh, __m256i>(bits) })
    };
    for p in 0..steps {
        let (even, odd) = (row(2 * p), row(2 * p + 1));
        for d in (0..width.next_multiple_of(32)).step_by(16) {
            let pairs = _mm512_or_si512(half(even, d), _mm512_slli_epi32::<16>(half(odd, d)));
            // SAFETY: the caller's contract: panel d / 32 holds step row p.
            unsafe {
                let at = panels.add(d / 32 * steps * 32 + p * 32 + d % 32);
                _mm512_storeu_si512(at.cast(), pairs);
            }
        }
    }
}

/// A buffer of cache lines that grows to what it is asked for and keeps it: room for
/// tile operands, which must start a line.
#[derive(Default)]
pub(crate) struct Room(Vec<Block>);

/// One cache line of words.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([u32; 16]);

impl Room {
    /// Room for `words` words, starting a cache line; what it holds is left over
    /// from earlier use (zeros when it first grows).
    pub(crate) fn words(&mut self, words: usize) -> *mut u32 {
        let lines = words.div_ceil(16);
        if self.0.len() < lines {
            self.0.resize(lines, Block([0; 16]));
        }
        self.0.as_mut_ptr().cast()
    }
}
