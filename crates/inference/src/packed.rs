//! Dense-layer products on packed weights, in two formats:
//!
//! - [`Bf16`], on AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake and Sapphire
//!   Rapids and later): one `vdpbf16ps` does 32 multiply-adds. Weights and inputs are
//!   rounded to bfloat16 (8 bits of mantissa); the products accumulate in `f32`. Over
//!   all-MiniLM-L6-v2 every embedding stays within cosine 0.9999 of the `f32`
//!   reference (tests/minilm.rs).
//! - [`F32`], on AVX-512F: one `vfmadd` does 16 multiply-adds, in full `f32`.
//!
//! On CPUs with AMX (Sapphire Rapids and later) a [`Bf16`] weight is multiplied by
//! tiles instead ([`Weight::tile_product`], [`crate::amx`]): its panels are already
//! what a tile of weights loads, 16 steps of 16 columns.
//!
//! Without tiles, which is faster depends on the core: Zen 4 issues one 512-bit FMA or one
//! `vdpbf16ps` a cycle, so bfloat16 does twice the work; Sapphire Rapids issues two
//! 512-bit FMAs a cycle but one `vdpbf16ps` every other, so `f32` does twice the work
//! (`offpath-bench model` measures both; [`crate::Precision::best`] compares them).
//!
//! The weight is packed once, at load, into panels of [`PANEL`] columns in which each
//! word holds one column's weights for [`Format::SPAN`] consecutive inputs: the layout
//! the kernel multiplies against a broadcast word of inputs; each panel row starts a
//! cache line. A bfloat16 product first rounds its input rows to words, in parallel
//! ([`round_rows`]; an `f32` product reads them where they lie), then shares out
//! blocks of rows times panels among rayon's threads (or the pass's team,
//! [`crate::team`]); each runs its block against its panel in tiles of at most
//! [`TILE`] rows whose sums stay in registers from the bias to the store, where a
//! GELU layer's go through GELU and, where the next product takes them, are rounded
//! to its words ([`Weight::product_words`]). On the two EPYC cores that took a batch
//! of 32 sentences in bfloat16 from 868-892 to 929-966 sentences/s (best of four
//! runs), 256-token windows from 47-50 to 53-56 chunks/s (with attention by
//! `vdpbf16ps`, [`crate::attention`]): GELU and rounding had been passes of their own,
//! each row's stretch of a panel read back from memory.

// The kernels use AVX-512 intrinsics on raw pointers; every entry point checks the CPU
// ([`Format::available`]) and the slice lengths before it calls them.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512, __m512bh, __m512i, __mmask16, _CMP_GT_OQ, _mm512_abs_ps, _mm512_add_ps,
    _mm512_cmp_ps_mask, _mm512_cvtne2ps_pbh, _mm512_div_ps, _mm512_dpbf16_ps, _mm512_fmadd_ps,
    _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mask_max_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_min_ps, _mm512_mul_ps, _mm512_set1_epi32,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_setzero_si512, _mm512_storeu_si512,
};

use crate::amx;
use crate::target::Target;

/// Registers of sixteen `f32` lanes across a panel.
const REGISTERS: usize = 2;
/// Columns per panel.
const PANEL: usize = 16 * REGISTERS;
/// Rows per tile: 14 rows of 2 registers are 28 running sums; with the panel's 2
/// registers and a broadcast input they fit AVX-512's 32 registers. Tall and narrow,
/// so that a typical sentence (10-22 tokens) is one or two tiles and its pass reads
/// each weight from memory once or twice: one sentence on one Sapphire Rapids core
/// went from 202 to 260 sentences/s against 6 rows x 4 registers (with the aligned
/// panels). In L1 both shapes run at about 94% of the FMA peak.
const TILE: usize = 14;
/// About the bytes of packed inputs one unit of parallel work reads: a block of rows
/// that stays in the core's L2 cache while each panel of the weight passes over it
/// (512 KiB: 84 rows of 1,536 inputs, so that the deep down-projection still reuses
/// each panel over six tiles).
const BLOCK_BYTES: usize = 512 * 1024;
/// Words of each input row a tile takes at a time: the slice of the panel they meet,
/// `DEPTH` x [`PANEL`] words (32 KiB), stays in the core's L1 cache while the block's
/// tiles pass over it; the sums go to the output between slices.
const DEPTH: usize = 256;
/// Units of work an AMX product is cut into at least, where it has rows enough: a
/// unit that spans many panels keeps its group's inputs in cache and calls the
/// bias and `finish` once a row, but a small pass needs several units for its
/// threads.
const AMX_UNITS: usize = 16;
/// Steps of the panel ahead of the one a tile multiplies that it asks the cache for
/// (2 KiB). Hardware prefetchers lose the stream at each new unit; fetching ahead
/// hides the latency of the L3 cache and memory, where the weights of a small pass
/// come from: one sentence on two Sapphire Rapids cores went from 388 to 443
/// sentences/s (8 to 16 steps ahead: same; 32 and more: slower).
const AHEAD: usize = 16;

/// How weights and inputs are packed and multiplied.
pub(crate) trait Format: Sync + 'static {
    /// Consecutive inputs one word holds.
    const SPAN: usize;
    /// Whether a product rounds its input rows to words first ([`round_rows`]); if
    /// not, a word is an input's own `f32` bits and the tiles read the rows where
    /// they lie.
    const ROUNDS: bool;
    /// What the steps of a packed weight round up to (zeros past the inputs).
    const STEP_MULTIPLE: usize;

    /// Whether this CPU has the kernel's instructions.
    fn available() -> bool;

    /// One word from up to [`Self::SPAN`] consecutive values (fewer at a row's end:
    /// the missing ones count as zero).
    fn word(values: &[f32]) -> u32;

    /// The GELU of a GELU layer's sums, on sixteen lanes: exact in `f32`
    /// ([`crate::kernels::gelu`]), within 1.3e-4 of it in bfloat16, whose next
    /// product rounds it to 8 bits of mantissa ([`crate::kernels::gelu_bf16`]).
    ///
    /// # Safety
    /// AVX-512F.
    unsafe fn gelu(x: __m512) -> __m512;

    /// Runs `R` rows of a tile.
    ///
    /// # Safety
    /// [`Self::available`], and the tile's pointers cover what [`Weight::product`]
    /// says.
    unsafe fn tile<const R: usize>(tile: &Tile);
}

/// bfloat16 pairs, multiplied by `vdpbf16ps`.
pub(crate) struct Bf16;

/// `f32` values, multiplied by 512-bit FMA.
pub(crate) struct F32;

impl Format for Bf16 {
    const SPAN: usize = 2;
    const ROUNDS: bool = true;
    /// AMX tiles take 16 steps at a time ([`crate::amx`]).
    const STEP_MULTIPLE: usize = crate::amx::STEPS;

    fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }

    fn word(values: &[f32]) -> u32 {
        values
            .iter()
            .enumerate()
            .fold(0, |word, (i, &v)| word | bf16(v) << (16 * i))
    }

    #[inline(always)]
    unsafe fn gelu(x: __m512) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { gelu_bf16_lanes(x) }
    }

    unsafe fn tile<const R: usize>(tile: &Tile) {
        // SAFETY: the caller's contract.
        unsafe { bf16_tile::<R>(tile) }
    }
}

impl Format for F32 {
    const SPAN: usize = 1;
    const ROUNDS: bool = false;
    const STEP_MULTIPLE: usize = 1;

    fn available() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    fn word(values: &[f32]) -> u32 {
        values.first().map_or(0, |v| v.to_bits())
    }

    #[inline(always)]
    unsafe fn gelu(x: __m512) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { gelu_lanes(x) }
    }

    unsafe fn tile<const R: usize>(tile: &Tile) {
        // SAFETY: the caller's contract.
        unsafe { f32_tile::<R>(tile) }
    }
}

/// A dense layer's weight and bias, packed for products in format `F`.
pub(crate) struct Weight<F> {
    inputs: usize,
    outputs: usize,
    /// Words per input row: `inputs / F::SPAN`, rounded up to [`Format::STEP_MULTIPLE`].
    steps: usize,
    /// Panel after panel; in each, `steps` rows of [`PANEL`] words, one per column.
    /// Each row starts a cache line, so that the kernel's loads never straddle two.
    panels: Vec<Line>,
    /// The bias, padded with zeros to whole panels.
    bias: Vec<f32>,
    format: std::marker::PhantomData<F>,
}

impl<F: Format> Weight<F> {
    /// Packs a checkpoint's `outputs x inputs` weight (row-major) and its bias.
    pub(crate) fn pack(weight: &[f32], bias: &[f32], outputs: usize, inputs: usize) -> Self {
        assert_eq!(weight.len(), outputs * inputs, "weight shape");
        assert_eq!(bias.len(), outputs, "bias length");
        assert!(inputs > 0, "a weight with no inputs");
        let steps = inputs.div_ceil(F::SPAN).next_multiple_of(F::STEP_MULTIPLE);
        let columns = outputs.div_ceil(PANEL) * PANEL;
        let mut panels = vec![Line([0; LINE]); columns * steps / LINE];
        let words = Line::words_mut(&mut panels);
        for (column, row) in weight.chunks_exact(inputs).enumerate() {
            let (panel, lane) = (column / PANEL, column % PANEL);
            for (step, values) in row.chunks(F::SPAN).enumerate() {
                words[(panel * steps + step) * PANEL + lane] = F::word(values);
            }
        }
        let mut padded = bias.to_vec();
        padded.resize(columns, 0.0);
        Weight {
            inputs,
            outputs,
            steps,
            panels,
            bias: padded,
            format: std::marker::PhantomData,
        }
    }

    /// Rows of the blocks a product shares out: as many whole tiles as fit
    /// [`BLOCK_BYTES`] of inputs, at least one.
    fn block_rows(&self) -> usize {
        (BLOCK_BYTES / (self.steps * 4)).max(TILE) / TILE * TILE
    }

    /// Outputs per row.
    pub(crate) fn outputs(&self) -> usize {
        self.outputs
    }

    /// `x W + b` for the rows of `x` (row-major, `inputs` wide), through
    /// [`Format::gelu`] if `gelu`. Needs [`Format::available`].
    pub(crate) fn product(&self, x: &[f32], gelu: bool) -> Vec<f32> {
        assert_eq!(x.len() % self.inputs, 0, "input rows of {}", self.inputs);
        if F::ROUNDS {
            let words = round_rows(x, self.inputs, self.steps);
            return self.rows_product(Line::words(&words.lines), words.rows, gelu);
        }
        // SAFETY: `f32` and `u32` have one size and alignment, and every bit pattern
        // is a `u32`.
        let words = unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) };
        self.rows_product(words, x.len() / self.inputs, gelu)
    }

    /// [`Weight::product`] of `rows` rows of words, `steps` a row.
    fn rows_product(&self, inputs: &[u32], rows: usize, gelu: bool) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * self.outputs);
        self.units(inputs, rows, &Sink::Rows(Target::spare(&mut out)), gelu);
        // SAFETY: the units wrote every element: each (block, panel) all the block's
        // rows in the panel's columns.
        unsafe { out.set_len(rows * self.outputs) };
        out
    }

    /// The units of a product of `rows` rows of `inputs` (`steps` words each), into
    /// `sink`: blocks of rows times panels, shared out among rayon's threads (or the
    /// pass's team); each runs its block against its panel in tiles, slice by slice
    /// of [`DEPTH`] steps, its sums from the bias.
    fn units(&self, inputs: &[u32], rows: usize, sink: &Sink, gelu: bool) {
        assert!(F::available(), "the CPU lacks the kernel's instructions");
        assert!(inputs.len() >= rows * self.steps, "input rows");
        let panel_words = self.steps * PANEL;
        let panels = self.bias.len() / PANEL;
        let block_rows = self.block_rows();
        let blocks = rows.div_ceil(block_rows);
        // Block after block, panel after panel within one: neighbouring work shares
        // a block of inputs, which stays in cache while the panels pass through.
        let words = Line::words(&self.panels);
        crate::team::for_each(blocks * panels, |unit| {
            let (block, panel) = (unit / panels, unit % panels);
            let weights = &words[panel * panel_words..(panel + 1) * panel_words];
            let bias = &self.bias[panel * PANEL..(panel + 1) * PANEL];
            let first_column = panel * PANEL;
            let width = (self.outputs - first_column).min(PANEL);
            let block = block * block_rows..rows.min((block + 1) * block_rows);
            SUMS.with_borrow_mut(|scratch| {
                // Where the block's first row's sums go between slices, and the row
                // stride: the output's rows, or for words the unit's scratch.
                let (base, stride) = match sink {
                    // SAFETY: within the output (the rows and columns are the unit's).
                    Sink::Rows(target) => (
                        unsafe { target.at(block.start * self.outputs + first_column) },
                        self.outputs,
                    ),
                    Sink::Words(..) => {
                        let lines = block.len() * PANEL / LINE;
                        if scratch.len() < lines {
                            scratch.resize(lines, Line([0; LINE]));
                        }
                        (scratch.as_mut_ptr().cast::<f32>(), PANEL)
                    }
                };
                for first_step in (0..self.steps).step_by(DEPTH) {
                    let depth = (self.steps - first_step).min(DEPTH);
                    let last = first_step + depth == self.steps;
                    for tile in tiles(block.clone()) {
                        let a = &inputs[tile.start * self.steps..tile.end * self.steps];
                        let (words, words_stride) = match sink {
                            // SAFETY: the tile's rows, the panel's words of each.
                            &Sink::Words(ref target, steps) if last => (
                                unsafe { target.at(tile.start * steps + panel * PANEL / 2) },
                                steps,
                            ),
                            _ => (std::ptr::null_mut(), 0),
                        };
                        // SAFETY: the CPU has the kernel's instructions (asserted
                        // above); `a` holds the tile's `steps` x `tile.len()` words,
                        // `weights` `steps` rows of PANEL words and `bias` PANEL values,
                        // and the tile reads steps first_step..first_step + depth of
                        // each; it writes its rows in the panel's columns of `out` (or
                        // of the unit's scratch) or of `words`, which no other unit
                        // (block, panel) writes, and both outlive the parallel loop.
                        unsafe {
                            Tile {
                                inputs: a.as_ptr().add(first_step),
                                row_stride: self.steps,
                                depth,
                                weights: weights.as_ptr().add(first_step * PANEL),
                                start: if first_step == 0 {
                                    bias.as_ptr()
                                } else {
                                    std::ptr::null()
                                },
                                out: base.add((tile.start - block.start) * stride),
                                stride,
                                width,
                                gelu: gelu && last,
                                words,
                                words_stride,
                            }
                            .run::<F>(tile.len());
                        }
                    }
                }
            });
        });
    }
}

impl Weight<Bf16> {
    /// [`Weight::product`] of rows already rounded (by [`Weight::product_words`] of
    /// the layer before).
    pub(crate) fn product_of(&self, words: &Words, gelu: bool) -> Vec<f32> {
        assert_eq!(words.steps, self.steps, "words of another width");
        self.rows_product(Line::words(&words.lines), words.rows, gelu)
    }

    /// [`Weight::product`], rounded to bfloat16 pairs for `next` (whose inputs are
    /// this product's outputs) by the tiles as they store their sums: the `f32` rows
    /// are never stored.
    pub(crate) fn product_words(&self, x: &[f32], gelu: bool, next: &Weight<Bf16>) -> Words {
        assert_eq!(next.inputs, self.outputs, "the next layer's inputs");
        assert_eq!(next.steps, self.bias.len() / 2, "a panel's words per row");
        let inputs = round_rows(x, self.inputs, self.steps);
        let mut words = Words::room(inputs.rows, next.steps);
        let target = Target::spare(&mut words.lines).cast::<u32>();
        self.units(
            Line::words(&inputs.lines),
            inputs.rows,
            &Sink::Words(target, next.steps),
            gelu,
        );
        // SAFETY: the units wrote every row's words: each panel's sixteen, and the
        // panels' words are the next layer's steps (both round the outputs up to 32).
        unsafe { words.filled() }
    }
}

/// Rows rounded to bfloat16 pairs for a bfloat16 product, on `vdpbf16ps` or AMX tiles:
/// each row `steps` words from a cache line (a tile row that straddles two lines loads
/// about six times slower: 51 cycles a tile against 9 on Sapphire Rapids), zero rows
/// to whole AMX tiles (which the `vdpbf16ps` tiles never read).
pub(crate) struct Words {
    lines: Vec<Line>,
    rows: usize,
    steps: usize,
}

/// Where the units of a tile product put each row's finished stretch.
enum Sink {
    /// `f32` rows of the product's outputs: the tiles store there.
    Rows(Target),
    /// Rows of bfloat16 pairs, `steps` words each, for a next product: AMX tiles
    /// store into a scratch block, which is then rounded; `vdpbf16ps` tiles round
    /// their sums in registers (and keep them in a scratch block between slices).
    Words(Target<u32>, usize),
}

thread_local! {
    /// A unit's sums on their way to bfloat16 ([`Sink::Words`]), kept between units.
    static SUMS: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Weight<Bf16> {
    /// The product of [`Weight::product`] on AMX tiles ([`crate::amx`]): the rows of
    /// `x` rounded to bfloat16 pairs, then groups of up to [`amx::GROUP`] rows times
    /// runs of panels shared out among the threads. Needs [`amx::available`].
    pub(crate) fn tile_product(&self, x: &[f32], finish: fn(&mut [f32])) -> Vec<f32> {
        self.tile_product_of(&round_rows(x, self.inputs, self.steps), finish)
    }

    /// [`Weight::tile_product`] of rows already rounded (by
    /// [`Weight::tile_product_words`] of the layer before).
    pub(crate) fn tile_product_of(&self, words: &Words, finish: fn(&mut [f32])) -> Vec<f32> {
        assert_eq!(words.steps, self.steps, "words of another width");
        let mut out = Vec::with_capacity(words.rows * self.outputs);
        self.tile_units(words, &Sink::Rows(Target::spare(&mut out)), finish);
        // SAFETY: the units wrote every element: each (group, run) all the group's
        // rows in the run's panels' columns.
        unsafe { out.set_len(words.rows * self.outputs) };
        out
    }

    /// [`Weight::tile_product`] with `finish`, rounded to bfloat16 pairs for `next`
    /// (whose inputs are this product's outputs) as each unit finishes: the `f32`
    /// rows never leave the unit's cache.
    pub(crate) fn tile_product_words(
        &self,
        x: &[f32],
        finish: fn(&mut [f32]),
        next: &Weight<Bf16>,
    ) -> Words {
        assert_eq!(next.inputs, self.outputs, "the next layer's inputs");
        let rows = x.len() / self.inputs;
        let mut words = Words::room(rows, next.steps);
        let target = Target::spare(&mut words.lines).cast::<u32>();
        self.tile_units(
            &round_rows(x, self.inputs, self.steps),
            &Sink::Words(target, next.steps),
            finish,
        );
        // SAFETY: the units wrote every row's words.
        unsafe { words.filled() }
    }

    /// The units of a tile product of `words`: each multiplies a group of rows by a
    /// run of panels, then adds the bias and applies `finish` to each row's stretch
    /// of the run (one call a row where there are groups enough to share, not one a
    /// row and panel) and puts it in `sink`.
    fn tile_units(&self, words: &Words, sink: &Sink, finish: fn(&mut [f32])) {
        assert!(amx::available(), "the CPU lacks AMX tiles");
        let rows = words.rows;
        let inputs = Line::words(&words.lines);
        let panel_words = self.steps * PANEL;
        let panels = self.bias.len() / PANEL;
        let groups = rows.div_ceil(amx::GROUP);
        // A unit is a group times a run of panels: all of them where there are groups
        // enough to share out, fewer where there are not.
        let runs = panels.min(AMX_UNITS.div_ceil(groups.max(1)));
        let weights = Line::words(&self.panels);
        crate::team::for_each(groups * runs, |unit| {
            let (group, run) = (unit / runs, unit % runs);
            let first_row = group * amx::GROUP;
            let group_rows = (rows - first_row).min(amx::GROUP);
            let run = panels * run / runs..panels * (run + 1) / runs;
            let columns = run.start * PANEL..self.outputs.min(run.end * PANEL);
            SUMS.with_borrow_mut(|scratch| {
                // Where the unit's first row's first column goes, and the row stride.
                let (base, stride) = match sink {
                    // SAFETY: within the output (the rows and columns are the unit's).
                    Sink::Rows(target) => (
                        unsafe { target.at(first_row * self.outputs + columns.start) },
                        self.outputs,
                    ),
                    Sink::Words(..) => {
                        let stride = (run.end - run.start) * PANEL;
                        let lines = amx::GROUP * stride / LINE;
                        if scratch.len() < lines {
                            scratch.resize(lines, Line([0; LINE]));
                        }
                        (scratch.as_mut_ptr().cast::<f32>(), stride)
                    }
                };
                for panel in run.clone() {
                    let first_column = panel * PANEL;
                    // SAFETY: the CPU has the tiles (asserted above); `inputs` holds
                    // whole tiles of rows (zeros past `rows`: a group of more than one
                    // tile's rows ends on a tile), `steps` a row, a multiple of
                    // amx::STEPS; the panel holds `steps` rows of PANEL words; the unit
                    // writes its rows and columns of the output, which no other unit
                    // writes and which outlives the parallel loop, or of its scratch.
                    unsafe {
                        amx::Panel {
                            inputs: inputs.as_ptr().add(first_row * self.steps),
                            input_stride: self.steps * 4,
                            steps: self.steps,
                            weights: weights.as_ptr().add(panel * panel_words),
                            out: base.add(first_column - columns.start),
                            out_stride: stride,
                            rows: group_rows,
                            width: (self.outputs - first_column).min(PANEL),
                        }
                        .run();
                    }
                }
                for row in 0..group_rows {
                    // SAFETY: the unit wrote these rows and columns.
                    let stretch = unsafe {
                        std::slice::from_raw_parts_mut(base.add(row * stride), columns.len())
                    };
                    crate::kernels::add_bias(stretch, &self.bias[columns.clone()]);
                    finish(stretch);
                    if let &Sink::Words(ref target, steps) = sink {
                        // The run's words: from its first column's (a multiple of 32),
                        // to the row's end if the run is the last.
                        let first = columns.start / 2;
                        let last = if run.end == panels {
                            steps
                        } else {
                            columns.end / 2
                        };
                        // SAFETY: the CPU has AVX-512 BF16 (every AMX CPU does); the
                        // words are the unit's own, within the row of `steps`.
                        unsafe {
                            let to = target.at((first_row + row) * steps + first);
                            amx::round_row(stretch, 1.0, last - first, to);
                        }
                    }
                }
            });
        });
    }
}

/// The rows of `x` (`inputs` wide) as bfloat16 pairs ([`Words`], `steps` a row),
/// rounded in parallel, a group of rows a unit. Needs AVX-512 BF16.
fn round_rows(x: &[f32], inputs: usize, steps: usize) -> Words {
    assert!(Bf16::available(), "the CPU lacks AVX-512 BF16");
    assert_eq!(x.len() % inputs, 0, "input rows of {inputs}");
    let rows = x.len() / inputs;
    let mut words = Words::room(rows, steps);
    let target = Target::spare(&mut words.lines).cast::<u32>();
    crate::team::for_each(rows.div_ceil(amx::GROUP), |group| {
        let first = group * amx::GROUP;
        let last = rows.min(first + amx::GROUP);
        // SAFETY: the CPU has AVX-512 BF16 (asserted above); the unit writes rows
        // first..last of `words`, which no other unit writes.
        unsafe {
            amx::round_rows(
                &x[first * inputs..last * inputs],
                inputs,
                steps,
                target.at(first * steps),
            )
        }
    });
    // SAFETY: the units wrote every row.
    unsafe { words.filled() }
}

impl Words {
    /// Room for `rows` rows of `steps` words, a multiple of a cache line of them, in
    /// its spare capacity, the zero rows after them to whole tiles already written:
    /// the caller's units write the rows, then [`Words::filled`].
    fn room(rows: usize, steps: usize) -> Words {
        let padded = rows.next_multiple_of(amx::ROWS);
        let mut lines = Vec::with_capacity(padded * steps / LINE);
        for line in &mut lines.spare_capacity_mut()[rows * steps / LINE..] {
            line.write(Line([0; LINE]));
        }
        Words { lines, rows, steps }
    }

    /// The words, once every row is written.
    ///
    /// # Safety
    /// The units wrote every one of the `rows` rows.
    unsafe fn filled(mut self) -> Words {
        let padded = self.rows.next_multiple_of(amx::ROWS);
        // SAFETY: the rows by the caller's contract, the padding by `room`.
        unsafe { self.lines.set_len(padded * self.steps / LINE) };
        self
    }
}

/// Runs the operands of an AMX kernel call ([`amx::Panel`]: rows of bfloat16 pairs
/// against a panel of 32 columns, the layout of a [`Weight`]'s panels) on `vdpbf16ps`
/// instead, in tiles of at most [`TILE`] rows, the sums from zero: attention's
/// products where the CPU has AVX-512 BF16 but no AMX tiles.
///
/// # Safety
/// [`Bf16::available`], and the pointers cover what the fields say.
pub(crate) unsafe fn panel_dots(panel: &amx::Panel) {
    static ZEROS: [f32; PANEL] = [0.0; PANEL];
    let row_stride = panel.input_stride / 4;
    for rows in tiles(0..panel.rows) {
        // SAFETY: the caller's contract: each tile's rows are the panel's, its sums
        // start from PANEL zeros.
        unsafe {
            Tile {
                inputs: panel.inputs.add(rows.start * row_stride),
                row_stride,
                depth: panel.steps,
                weights: panel.weights,
                start: ZEROS.as_ptr(),
                out: panel.out.add(rows.start * panel.out_stride),
                stride: panel.out_stride,
                width: panel.width,
                gelu: false,
                words: std::ptr::null_mut(),
                words_stride: 0,
            }
            .run::<Bf16>(rows.len())
        };
    }
}

/// The tiles of a block of rows: as few as hold [`TILE`] rows each, of sizes that
/// differ by at most one (a 15-token sentence is tiles of 7 and 8 rows, not 14 and 1:
/// a tile of few rows has too few running sums to keep the FMA units busy).
fn tiles(rows: std::ops::Range<usize>) -> impl Iterator<Item = std::ops::Range<usize>> {
    let count = rows.len().div_ceil(TILE);
    (0..count).map(move |i| {
        let at = |i: usize| rows.start + rows.len() * i / count;
        at(i)..at(i + 1)
    })
}

/// Words in a cache line.
const LINE: usize = 16;

/// A cache line of words, aligned as one: what packed weights are allocated in.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; LINE]);

impl Line {
    /// The words of `lines`, in order.
    fn words(lines: &[Line]) -> &[u32] {
        // SAFETY: a `Line` is `LINE` words with no padding (its size is its alignment).
        unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * LINE) }
    }

    /// The words of `lines`, in order, mutable.
    fn words_mut(lines: &mut [Line]) -> &mut [u32] {
        // SAFETY: as in `words`.
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * LINE) }
    }
}

/// One tile's operands: up to [`TILE`] rows of packed inputs against a slice of one
/// panel, `depth` words deep.
pub(crate) struct Tile {
    /// The tile's first row's word at the slice's first step.
    inputs: *const u32,
    /// Words from one row's word to the next row's at the same step (a row's steps
    /// are consecutive words).
    row_stride: usize,
    /// Words of each row in the slice.
    depth: usize,
    /// The slice's first row of the panel.
    weights: *const u32,
    /// The bias of the panel's columns, for the first slice; null for the others,
    /// whose sums start from what the slice before stored.
    start: *const f32,
    out: *mut f32,
    /// Distance between output rows.
    stride: usize,
    /// Columns of the panel to store (the last panel may be partly padding).
    width: usize,
    /// Whether the sums go through [`Format::gelu`] before they are stored: the last
    /// slice of a GELU layer's product.
    gelu: bool,
    /// Where the last slice of a product into [`Words`] stores each row's sums,
    /// rounded to bfloat16 pairs, in place of `out`: the panel's sixteen words of the
    /// first row, the others `words_stride` words apart (padding columns are zeros:
    /// their weights and bias are). Null elsewhere.
    words: *mut u32,
    words_stride: usize,
}

impl Tile {
    /// Runs the tile's first `rows` rows (at most [`TILE`]).
    ///
    /// # Safety
    /// As [`Format::tile`].
    unsafe fn run<F: Format>(&self, rows: usize) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match rows {
                    $($r => F::tile::<$r>(self),)*
                    _ => unreachable!("a tile has 1 to {TILE} rows"),
                }
            };
        }
        // SAFETY: the caller's contract.
        unsafe { rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14) }
    }

    /// Where row `R`'s sums start: the bias, or the previous slice's sums.
    ///
    /// # Safety
    /// AVX-512F, and `start` holds [`PANEL`] values or `out` covers `R` rows of
    /// `width` columns `stride` apart.
    #[target_feature(enable = "avx512f")]
    unsafe fn start<const R: usize>(&self) -> [[__m512; REGISTERS]; R] {
        let mut sums = [[_mm512_setzero_ps(); REGISTERS]; R];
        for (row, sums) in sums.iter_mut().enumerate() {
            for (j, register) in sums.iter_mut().enumerate() {
                let lanes = self.width.saturating_sub(16 * j).min(16);
                let mask: __mmask16 = ((1u32 << lanes) - 1) as u16;
                // SAFETY: the caller's contract.
                *register = unsafe {
                    if self.start.is_null() {
                        _mm512_maskz_loadu_ps(mask, self.out.add(row * self.stride + 16 * j))
                    } else {
                        _mm512_loadu_ps(self.start.add(16 * j))
                    }
                };
            }
        }
        sums
    }

    /// Stores `R` rows of sums, through [`Format::gelu`] if `GELU`, the panel's
    /// last columns masked off past `width`.
    ///
    /// # Safety
    /// AVX-512F, and `out` covers `R` rows of `width` columns `stride` apart.
    #[target_feature(enable = "avx512f")]
    unsafe fn store<F: Format, const R: usize, const GELU: bool>(
        &self,
        sums: &[[__m512; REGISTERS]; R],
    ) {
        for (row, sums) in sums.iter().enumerate() {
            for (j, &sum) in sums.iter().enumerate() {
                // SAFETY: AVX-512F.
                let sum = if GELU { unsafe { F::gelu(sum) } } else { sum };
                let lanes = self.width.saturating_sub(16 * j).min(16);
                let mask: __mmask16 = ((1u32 << lanes) - 1) as u16;
                // SAFETY: the caller's contract.
                unsafe {
                    _mm512_mask_storeu_ps(self.out.add(row * self.stride + 16 * j), mask, sum)
                };
            }
        }
    }

    /// [`Tile::store`] through [`Format::gelu`], out of the tile's code: inlined,
    /// GELU's constants crowd the sums out of the registers in the tile's loop (a
    /// batch of 32 sentences in bfloat16 ran at 402 against 851 sentences/s). The
    /// sums come by value: by reference they would live in memory through the loop
    /// (350 sentences/s).
    ///
    /// # Safety
    /// As [`Tile::store`].
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_gelu<F: Format, const R: usize>(&self, sums: [[__m512; REGISTERS]; R]) {
        // SAFETY: the caller's contract.
        unsafe { self.store::<F, R, true>(&sums) }
    }

    /// Stores `R` rows of sums through [`Format::gelu`] if [`Tile::gelu`], rounded
    /// to bfloat16 pairs, into [`Tile::words`]; out of the tile's code, as
    /// [`Tile::store_gelu`].
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16, and `words` covers `R` rows of sixteen words
    /// `words_stride` apart.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn store_words<const R: usize>(&self, sums: [[__m512; REGISTERS]; R]) {
        // By reference: `into_iter` would copy the array (a call to memmove, 1.5% of a
        // batch of 32 sentences' time).
        for (row, &[low, high]) in sums.iter().enumerate() {
            // SAFETY: AVX-512F.
            let [low, high] = [low, high].map(|sum| {
                if self.gelu {
                    unsafe { Bf16::gelu(sum) }
                } else {
                    sum
                }
            });
            let pairs = _mm512_cvtne2ps_pbh(high, low);
            // SAFETY: the caller's contract.
            unsafe {
                _mm512_storeu_si512(
                    self.words.add(row * self.words_stride).cast(),
                    std::mem::transmute::<__m512bh, __m512i>(pairs),
                )
            };
        }
    }
}

/// `R` rows of a bfloat16 tile: the sums start at the bias, take one `vdpbf16ps` per
/// register and pair of inputs, and are stored once (as words if [`Tile::words`]).
///
/// # Safety
/// As [`Format::tile`], for [`Bf16`].
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn bf16_tile<const R: usize>(tile: &Tile) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut sums = tile.start::<R>();
        for step in 0..tile.depth {
            let w = tile.weights.add(step * PANEL);
            prefetch(w.cast());
            let mut panel = [bh(_mm512_setzero_si512()); REGISTERS];
            for (j, register) in panel.iter_mut().enumerate() {
                *register = bh(_mm512_loadu_si512(w.add(16 * j).cast()));
            }
            for (row, sums) in sums.iter_mut().enumerate() {
                let x = *tile.inputs.add(row * tile.row_stride + step);
                let x = bh(_mm512_set1_epi32(x as i32));
                for (sum, &w) in sums.iter_mut().zip(&panel) {
                    *sum = _mm512_dpbf16_ps(*sum, x, w);
                }
            }
        }
        if !tile.words.is_null() {
            tile.store_words(sums);
        } else if tile.gelu {
            tile.store_gelu::<Bf16, R>(sums);
        } else {
            tile.store::<Bf16, R, false>(&sums);
        }
    }
}

/// `R` rows of an `f32` tile: the sums start at the bias, take one FMA per register
/// and input, and are stored once.
///
/// # Safety
/// As [`Format::tile`], for [`F32`].
#[target_feature(enable = "avx512f")]
unsafe fn f32_tile<const R: usize>(tile: &Tile) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut sums = tile.start::<R>();
        let weights = tile.weights.cast::<f32>();
        let inputs = tile.inputs.cast::<f32>();
        for step in 0..tile.depth {
            let w = weights.add(step * PANEL);
            prefetch(w.cast());
            let mut panel = [_mm512_setzero_ps(); REGISTERS];
            for (j, register) in panel.iter_mut().enumerate() {
                *register = _mm512_loadu_ps(w.add(16 * j));
            }
            for (row, sums) in sums.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*inputs.add(row * tile.row_stride + step));
                for (sum, &w) in sums.iter_mut().zip(&panel) {
                    *sum = _mm512_fmadd_ps(x, w, *sum);
                }
            }
        }
        if tile.gelu {
            tile.store_gelu::<F32, R>(sums);
        } else {
            tile.store::<F32, R, false>(&sums);
        }
    }
}

/// [`crate::kernels::gelu`] on sixteen lanes: the same operations in the same order,
/// so the same bits.
#[inline]
#[target_feature(enable = "avx512f")]
fn gelu_lanes(x: __m512) -> __m512 {
    use crate::kernels::{ERF_ALPHA, ERF_BETA};
    let e = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let e = _mm512_min_ps(_mm512_max_ps(e, _mm512_set1_ps(-4.0)), _mm512_set1_ps(4.0));
    let e2 = _mm512_mul_ps(e, e);
    let horner = |coefficients: &[f32]| {
        coefficients.iter().fold(_mm512_setzero_ps(), |acc, &c| {
            _mm512_fmadd_ps(acc, e2, _mm512_set1_ps(c))
        })
    };
    let erf = _mm512_div_ps(_mm512_mul_ps(e, horner(&ERF_ALPHA)), horner(&ERF_BETA));
    let half = _mm512_mul_ps(_mm512_set1_ps(0.5), x);
    _mm512_mul_ps(half, _mm512_add_ps(_mm512_set1_ps(1.0), erf))
}

/// [`crate::kernels::gelu_bf16`] on sixteen lanes: the same operations in the same
/// order, so the same bits.
#[inline]
#[target_feature(enable = "avx512f")]
fn gelu_bf16_lanes(x: __m512) -> __m512 {
    use crate::kernels::GELU_BF16;
    let t = _mm512_min_ps(_mm512_mul_ps(x, x), _mm512_set1_ps(16.0));
    let p = GELU_BF16[1..]
        .iter()
        .fold(_mm512_set1_ps(GELU_BF16[0]), |acc, &c| {
            _mm512_fmadd_ps(acc, t, _mm512_set1_ps(c))
        });
    let y = _mm512_fmadd_ps(_mm512_set1_ps(0.5), x, _mm512_mul_ps(p, t));
    let beyond = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(x), _mm512_set1_ps(4.0));
    _mm512_mask_max_ps(y, beyond, x, _mm512_setzero_ps())
}

/// Asks for the panel row [`AHEAD`] steps past `row` to be brought into the L1 cache.
/// A prefetch never faults: past the panel's end it fetches a neighbour's words or
/// nothing.
#[inline(always)]
fn prefetch(row: *const u32) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let ahead = row.wrapping_add(AHEAD * PANEL).cast::<i8>();
    for line in 0..PANEL / LINE {
        // SAFETY: a prefetch reads nothing into the program and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line * 64)) };
    }
}

/// Reads sixteen 32-bit words as thirty-two bfloat16 values.
#[inline(always)]
fn bh(words: __m512i) -> __m512bh {
    // SAFETY: both are 64 bytes of plain bits.
    unsafe { std::mem::transmute(words) }
}

/// `x` rounded to the nearest bfloat16 (ties to even), in the low 16 bits.
fn bf16(x: f32) -> u32 {
    let bits = x.to_bits();
    bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16(-2.5), 0xc020);
    }

    /// The product of format `F` (`product`, which needs what `available` says this
    /// CPU has) against a plain `f32` one, within `tolerance` of the sum of the terms'
    /// magnitudes.
    fn product_matches<F: Format>(
        available: bool,
        tolerance: f32,
        product: fn(&Weight<F>, &[f32]) -> Vec<f32>,
    ) {
        if !available {
            eprintln!("skipped: this CPU or system lacks the kernel's instructions");
            return;
        }
        // An odd number of inputs, outputs that end inside a panel, and rows in several
        // blocks whose last ends inside a tile (and in groups of AMX tiles whose last
        // is one row).
        let (rows, inputs, outputs): (usize, usize, usize) = (353, 1537, 70);
        let value = |i: usize| ((i * 7919 % 1000) as f32 / 500.0) - 1.0;
        let x: Vec<f32> = (0..rows * inputs).map(value).collect();
        let weight: Vec<f32> = (0..outputs * inputs).map(|i| value(i + 17)).collect();
        let bias: Vec<f32> = (0..outputs).map(|i| i as f32 / 10.0).collect();
        let packed = Weight::<F>::pack(&weight, &bias, outputs, inputs);
        let block_rows = packed.block_rows();
        assert!(rows.div_ceil(block_rows) >= 3 && !(rows % block_rows).is_multiple_of(TILE));
        assert_eq!(rows % amx::GROUP, 1);
        let got = product(&packed, &x);
        assert_eq!(got.len(), rows * outputs);
        for r in 0..rows {
            for c in 0..outputs {
                let row = &x[r * inputs..(r + 1) * inputs];
                let column = &weight[c * inputs..(c + 1) * inputs];
                let want: f32 = bias[c] + row.iter().zip(column).map(|(a, b)| a * b).sum::<f32>();
                let scale: f32 = row.iter().zip(column).map(|(a, b)| (a * b).abs()).sum();
                let error = (got[r * outputs + c] - want).abs();
                assert!(
                    error <= scale * tolerance,
                    "row {r} column {c}: {error} of {scale}"
                );
            }
        }
    }

    /// Two roundings to 8 bits of mantissa: relative error under 2^-7.
    #[test]
    fn bf16_product_matches_f32_to_bfloat16_precision() {
        product_matches::<Bf16>(Bf16::available(), 1.0 / 128.0, |w, x| w.product(x, false));
    }

    /// The same roundings and products on AMX tiles.
    #[test]
    fn tile_product_matches_f32_to_bfloat16_precision() {
        product_matches::<Bf16>(amx::available(), 1.0 / 128.0, |w, x| {
            w.tile_product(x, |_| {})
        });
    }

    /// Two tile products in a row, the rows between them rounded as each unit
    /// finishes: the same bits as the second product of the first's `f32` rows, whether
    /// a unit spans every panel (many rows) or a run of them (few rows).
    #[test]
    fn chained_tile_products_match_two_products() {
        if !amx::available() {
            eprintln!("skipped: this CPU or system lacks AMX tiles");
            return;
        }
        let (first, second) = (weight(70, 77, 3), weight(40, 70, 5));
        let halve = |row: &mut [f32]| row.iter_mut().for_each(|x| *x *= 0.5);
        for rows in [0, 5, 353] {
            let x: Vec<f32> = (0..rows * 77).map(|i| value(i + 11)).collect();
            let want = second.tile_product(&first.tile_product(&x, halve), |_| {});
            let got = second.tile_product_of(&first.tile_product_words(&x, halve, &second), |_| {});
            assert_eq!(got, want, "{rows} rows");
        }
    }

    /// Two `vdpbf16ps` products in a row, the first's sums (through its GELU) rounded
    /// to words by its tiles: the same bits as the second product of the first's `f32`
    /// rows, over several slices of the first's inputs and blocks of its rows.
    #[test]
    fn chained_products_match_two_products() {
        if !Bf16::available() {
            eprintln!("skipped: this CPU lacks AVX-512 BF16");
            return;
        }
        let (inputs, middle) = (1100, 70);
        let (first, second) = (weight(middle, inputs, 3), weight(40, middle, 5));
        assert!(first.steps > 2 * DEPTH && 353 > first.block_rows());
        for rows in [0, 5, 353] {
            let x: Vec<f32> = (0..rows * inputs).map(|i| value(i + 11)).collect();
            let want = second.product(&first.product(&x, true), false);
            let got = second.product_of(&first.product_words(&x, true, &second), false);
            assert_eq!(got, want, "{rows} rows");
        }
    }

    /// Test values in [-1, 1).
    fn value(i: usize) -> f32 {
        ((i * 7919 % 1000) as f32 / 500.0) - 1.0
    }

    /// A packed bfloat16 weight of test values, `seed` telling it from others.
    fn weight(outputs: usize, inputs: usize, seed: usize) -> Weight<Bf16> {
        Weight::pack(
            &(0..outputs * inputs)
                .map(|i| value(i + seed))
                .collect::<Vec<_>>(),
            &(0..outputs)
                .map(|i| value(i + seed + 2))
                .collect::<Vec<_>>(),
            outputs,
            inputs,
        )
    }

    /// The same sums in another order: `f32` rounding only.
    #[test]
    fn f32_product_matches_f32() {
        product_matches::<F32>(F32::available(), 1e-5, |w, x| w.product(x, false));
    }

    /// The GELUs on sixteen lanes give the bits of their one-value versions.
    #[test]
    fn gelus_on_lanes_match_one_value_at_a_time() {
        if !F32::available() {
            eprintln!("skipped: this CPU lacks AVX-512F");
            return;
        }
        let xs: Vec<f32> = (-9000..9000).map(|i| i as f32 / 1000.0).collect();
        for chunk in xs.chunks_exact(16) {
            let lanes = |gelu: unsafe fn(__m512) -> __m512| -> [f32; 16] {
                // SAFETY: AVX-512F (checked above); sixteen values either way.
                unsafe { std::mem::transmute(gelu(_mm512_loadu_ps(chunk.as_ptr()))) }
            };
            let (exact, bf16) = (lanes(F32::gelu), lanes(Bf16::gelu));
            for (i, &x) in chunk.iter().enumerate() {
                assert_eq!(exact[i].to_bits(), crate::kernels::gelu(x).to_bits(), "{x}");
                assert_eq!(
                    bf16[i].to_bits(),
                    crate::kernels::gelu_bf16(x).to_bits(),
                    "{x}"
                );
            }
        }
    }

    #[test]
    fn tiles_split_a_block_evenly() {
        let sizes = |rows: std::ops::Range<usize>| tiles(rows).map(|t| t.len()).collect::<Vec<_>>();
        assert_eq!(sizes(0..14), [14]);
        assert_eq!(sizes(0..15), [7, 8]);
        assert_eq!(sizes(84..113), [9, 10, 10]);
        assert_eq!(sizes(5..5), [0usize; 0]);
        let covered: Vec<usize> = tiles(3..50).flatten().collect();
        assert_eq!(covered, (3..50).collect::<Vec<_>>());
    }

    #[test]
    fn words_pack_consecutive_inputs() {
        assert_eq!(Bf16::word(&[1.0, -2.5]), 0xc020_3f80);
        assert_eq!(
            Bf16::word(&[1.0]),
            0x3f80,
            "a row's odd last input pairs with zero"
        );
        assert_eq!(F32::word(&[1.5]), 1.5f32.to_bits());
    }
}
