//! Dense layers, `x W + b`, optionally followed by GELU, in either [`Precision`]. On
//! AVX-512 the product runs on weights packed at load ([`crate::packed`]: bfloat16
//! pairs, on AMX tiles where the CPU has them, or `f32`) and applies the bias and the
//! GELU inside it; elsewhere (arm64,
//! x86-64 without AVX-512) `f32` is candle's matrix product followed by in-place bias
//! and GELU passes.

#[cfg(target_arch = "x86_64")]
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use candle_core::{Result, Tensor};

use crate::kernels::{AddBias, Gelu};
#[cfg(target_arch = "x86_64")]
use crate::kernels::{elements, gelu_bf16_in_place};

/// What a dense layer applies to its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Nothing: `x W + b`.
    Identity,
    /// GELU: `gelu(x W + b)`, exact in `f32`; in bfloat16, whose next product
    /// rounds it to 8 bits of mantissa, to within 1.3e-4 at half the cost
    /// ([`crate::kernels::gelu_bf16_in_place`]).
    Gelu,
}

/// The precision of the dense layers' products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// bfloat16 products with `f32` sums ([`crate::packed::Bf16`]): CPUs with AVX-512
    /// BF16, on AMX tiles where the CPU and the system offer them ([`crate::amx`]).
    Bfloat16,
    /// `f32` products: packed AVX-512 FMA ([`crate::packed::F32`]) where the CPU has
    /// it, candle's matrix product on every other CPU.
    Float32,
}

/// How much faster than `f32` FMA the bfloat16 dot products must run for
/// [`Precision::best`] to choose them: their kernels differ in more than the
/// arithmetic (bfloat16 reads half the bytes).
const BF16_MARGIN: f64 = 1.25;

impl Precision {
    /// Every precision this CPU runs.
    pub fn supported() -> Vec<Precision> {
        #[cfg(target_arch = "x86_64")]
        if <crate::packed::Bf16 as crate::packed::Format>::available() {
            return vec![Precision::Bfloat16, Precision::Float32];
        }
        vec![Precision::Float32]
    }

    /// The faster precision on this CPU: bfloat16 where it runs on AMX tiles (Sapphire
    /// Rapids and later: 3.6 times `f32` at batch 64 on two cores) or where its dot
    /// products outrun `f32` FMA by [`BF16_MARGIN`] (Zen 4: twice); `f32` otherwise
    /// (Sapphire Rapids without tiles, where `vdpbf16ps` issues every other cycle;
    /// every CPU without AVX-512 BF16). Without tiles, decided by a register-only race
    /// of a few milliseconds ([`crate::peak::race`]).
    pub fn best() -> Precision {
        if !Precision::supported().contains(&Precision::Bfloat16) {
            return Precision::Float32;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::amx::available() {
            return Precision::Bfloat16;
        }
        match crate::peak::race() {
            Some(ratio) if ratio >= BF16_MARGIN => Precision::Bfloat16,
            _ => Precision::Float32,
        }
    }

    /// Its name in logs and benchmark results: `"bfloat16"` or `"float32"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Bfloat16 => "bfloat16",
            Precision::Float32 => "float32",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    /// Parses a [`Precision::name`].
    fn from_str(name: &str) -> std::result::Result<Self, Self::Err> {
        match name {
            "bfloat16" => Ok(Precision::Bfloat16),
            "float32" => Ok(Precision::Float32),
            _ => Err(format!("{name:?} is not bfloat16 or float32")),
        }
    }
}

/// A dense layer.
pub(crate) struct Dense {
    product: Product,
    activation: Activation,
}

/// How a [`Dense`] multiplies.
enum Product {
    /// Packed bfloat16 pairs on AMX tiles ([`crate::amx`]), where the CPU and the
    /// system allow them.
    #[cfg(target_arch = "x86_64")]
    Tiles(crate::packed::Weight<crate::packed::Bf16>),
    /// Packed bfloat16 pairs on `vdpbf16ps`.
    #[cfg(target_arch = "x86_64")]
    Bf16(crate::packed::Weight<crate::packed::Bf16>),
    /// Packed `f32`, on AVX-512: faster than candle's product at every size (on two
    /// Sapphire Rapids cores, 905-915 against 860-886 sentences/s in batches of 64,
    /// and level on 256-token windows). Both sum in `f32`, so results agree to
    /// rounding.
    #[cfg(target_arch = "x86_64")]
    F32(crate::packed::Weight<crate::packed::F32>),
    /// candle's `f32` product, on every other CPU: `weight` is `inputs x outputs`, the
    /// layout candle's matrix product reads fastest.
    Candle { weight: Tensor, bias: Vec<f32> },
}

impl Dense {
    /// A dense layer from a checkpoint's `outputs x inputs` weight and its bias, with
    /// products in `precision`, which must be one this CPU runs
    /// ([`Precision::supported`]).
    pub(crate) fn new(
        weight: &Tensor,
        bias: &Tensor,
        activation: Activation,
        precision: Precision,
    ) -> Result<Self> {
        match precision {
            #[cfg(target_arch = "x86_64")]
            Precision::Bfloat16 => Ok(Dense {
                product: if crate::amx::available() {
                    Product::Tiles(pack(weight, bias)?)
                } else {
                    Product::Bf16(pack(weight, bias)?)
                },
                activation,
            }),
            #[cfg(not(target_arch = "x86_64"))]
            Precision::Bfloat16 => candle_core::bail!("bfloat16 products need x86-64"),
            Precision::Float32 => Self::f32(weight, bias, activation),
        }
    }

    /// A dense layer with `f32` products: packed on AVX-512, candle's elsewhere.
    fn f32(weight: &Tensor, bias: &Tensor, activation: Activation) -> Result<Self> {
        #[cfg(target_arch = "x86_64")]
        if <crate::packed::F32 as crate::packed::Format>::available() {
            return Ok(Dense {
                product: Product::F32(pack(weight, bias)?),
                activation,
            });
        }
        Self::candle(weight, bias, activation)
    }

    /// A dense layer on candle's `f32` product.
    fn candle(weight: &Tensor, bias: &Tensor, activation: Activation) -> Result<Self> {
        Ok(Dense {
            product: Product::Candle {
                weight: weight.t()?.contiguous()?,
                bias: bias.to_vec1()?,
            },
            activation,
        })
    }

    /// The layer's output for rows `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.product {
            #[cfg(target_arch = "x86_64")]
            Product::Tiles(weight) => x.apply_op1_no_bwd(&PackedProduct {
                product: |x: &[f32]| weight.tile_product(x, self.activation.finish()),
                outputs: weight.outputs(),
            }),
            #[cfg(target_arch = "x86_64")]
            Product::Bf16(weight) => x.apply_op1_no_bwd(&PackedProduct {
                product: |x: &[f32]| weight.product(x, self.gelu()),
                outputs: weight.outputs(),
            }),
            #[cfg(target_arch = "x86_64")]
            Product::F32(weight) => x.apply_op1_no_bwd(&PackedProduct {
                product: |x: &[f32]| weight.product(x, self.gelu()),
                outputs: weight.outputs(),
            }),
            Product::Candle { weight, bias } => {
                let product = x.matmul(weight)?;
                product.inplace_op1(&AddBias(bias))?;
                if self.activation == Activation::Gelu {
                    product.inplace_op1(&Gelu)?;
                }
                Ok(product)
            }
        }
    }

    /// `self`'s output for `first`'s output for rows `x`. In bfloat16 the
    /// intermediate rows go from `first` to `self` as bfloat16 pairs, never as `f32`
    /// ([`crate::packed::Weight::tile_product_words`] on AMX tiles,
    /// [`crate::packed::Weight::product_words`] on `vdpbf16ps`): the feed-forward's
    /// 1,536-wide rows are neither stored in `f32` nor rounded in a pass of their own.
    pub(crate) fn forward_after(&self, first: &Dense, x: &Tensor) -> Result<Tensor> {
        #[cfg(target_arch = "x86_64")]
        match (&first.product, &self.product) {
            (Product::Tiles(a), Product::Tiles(b)) => {
                let (finish_a, finish_b) = (first.activation.finish(), self.activation.finish());
                return x.apply_op1_no_bwd(&PackedProduct {
                    product: |x: &[f32]| {
                        b.tile_product_of(&a.tile_product_words(x, finish_a, b), finish_b)
                    },
                    outputs: b.outputs(),
                });
            }
            (Product::Bf16(a), Product::Bf16(b)) => {
                return x.apply_op1_no_bwd(&PackedProduct {
                    product: |x: &[f32]| {
                        b.product_of(&a.product_words(x, first.gelu(), b), self.gelu())
                    },
                    outputs: b.outputs(),
                });
            }
            _ => {}
        }
        self.forward(&first.forward(x)?)
    }

    /// Whether the layer applies GELU: a packed product's `gelu`.
    #[cfg(target_arch = "x86_64")]
    fn gelu(&self) -> bool {
        self.activation == Activation::Gelu
    }
}

#[cfg(target_arch = "x86_64")]
impl Activation {
    /// The activation as an AMX tile product's `finish` (bfloat16's GELU).
    fn finish(self) -> fn(&mut [f32]) {
        match self {
            Activation::Identity => |_: &mut [f32]| {},
            Activation::Gelu => gelu_bf16_in_place,
        }
    }
}

/// A checkpoint's `outputs x inputs` weight and its bias, packed for format `F`.
#[cfg(target_arch = "x86_64")]
fn pack<F: crate::packed::Format>(
    weight: &Tensor,
    bias: &Tensor,
) -> Result<crate::packed::Weight<F>> {
    let (outputs, inputs) = weight.dims2()?;
    Ok(crate::packed::Weight::pack(
        &weight.flatten_all()?.to_vec1()?,
        &bias.to_vec1()?,
        outputs,
        inputs,
    ))
}

/// A packed dense layer's product as a candle op over contiguous rows.
#[cfg(target_arch = "x86_64")]
struct PackedProduct<P> {
    /// The rows' product, its activation included.
    product: P,
    /// Outputs per row.
    outputs: usize,
}

#[cfg(target_arch = "x86_64")]
impl<P> CustomOp1 for PackedProduct<P>
where
    P: Fn(&[f32]) -> Vec<f32> + Send + Sync,
{
    fn name(&self) -> &'static str {
        "dense-packed"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = elements(storage, layout)?;
        let rows = layout.dims().first().copied().unwrap_or(0);
        let out = (self.product)(x);
        Ok((CpuStorage::F32(out), Shape::from((rows, self.outputs))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A layer for each precision this CPU runs, and one on candle's product (what
    /// `float32` is on CPUs without AVX-512).
    fn layers(
        weight: &Tensor,
        bias: &Tensor,
        activation: Activation,
    ) -> Vec<(&'static str, Dense)> {
        Precision::supported()
            .into_iter()
            .map(|p| (p.name(), Dense::new(weight, bias, activation, p).unwrap()))
            .chain([("candle", Dense::candle(weight, bias, activation).unwrap())])
            .collect()
    }

    #[test]
    fn dense_adds_the_bias_to_the_product_then_the_activation() {
        // A checkpoint's weight is outputs x inputs: here 3 x 2. Every value is exact in
        // bfloat16, so both products are exact.
        let weight = Tensor::new(&[[1f32, 2.0], [0.0, 1.0], [-1.0, 0.5]], &Device::Cpu).unwrap();
        let bias = Tensor::new(&[0.5f32, 0.0, 1.0], &Device::Cpu).unwrap();
        let x = Tensor::new(&[[1f32, 1.0], [2.0, -1.0]], &Device::Cpu).unwrap();
        for (name, dense) in layers(&weight, &bias, Activation::Identity) {
            let y = dense.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(y, [[3.5, 1.0, 0.5], [0.5, -1.0, -1.5]], "{name}");
        }
        for (name, dense) in layers(&weight, &bias, Activation::Gelu) {
            let y = dense.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            // gelu(3.5) = 3.4992, gelu(-1) = -0.1587, gelu(0.5) = 0.3457; bfloat16's
            // GELU is within 1.3e-4.
            let tolerance = if name == "bfloat16" { 1.3e-4 } else { 1e-5 };
            assert!((y[0][0] - 3.499_186).abs() < tolerance, "{name}: {y:?}");
            assert!((y[1][1] + 0.158_655).abs() < tolerance, "{name}: {y:?}");
            assert!((y[1][0] - 0.345_731).abs() < tolerance, "{name}: {y:?}");
        }
    }
}
