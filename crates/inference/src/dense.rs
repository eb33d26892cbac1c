//! Dense layers, `x W + b`, optionally followed by GELU, in either [`Precision`]. In
//! bfloat16 (CPUs with AVX-512 BF16) the product has `f32` sums ([`crate::bf16`]) and
//! applies the bias and the GELU inside it; in `f32` (every CPU: arm64, older x86-64)
//! it is candle's matrix product followed by in-place bias and GELU passes.

#[cfg(target_arch = "x86_64")]
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use candle_core::{Result, Tensor};

use crate::kernels::{AddBias, Gelu};
#[cfg(target_arch = "x86_64")]
use crate::kernels::{elements, gelu_in_place};

/// What a dense layer applies to its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Nothing: `x W + b`.
    Identity,
    /// The exact GELU: `gelu(x W + b)`.
    Gelu,
}

/// The precision of the dense layers' products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// bfloat16 products with `f32` sums ([`crate::bf16`]): CPUs with AVX-512 BF16.
    Bfloat16,
    /// candle's `f32` products: every CPU.
    Float32,
}

impl Precision {
    /// Every precision this CPU runs, fastest first.
    pub fn supported() -> Vec<Precision> {
        #[cfg(target_arch = "x86_64")]
        if crate::bf16::available() {
            return vec![Precision::Bfloat16, Precision::Float32];
        }
        vec![Precision::Float32]
    }

    /// The fastest precision this CPU runs.
    pub fn best() -> Precision {
        Precision::supported()[0]
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
    /// Packed for [`crate::bf16`].
    #[cfg(target_arch = "x86_64")]
    Bf16(crate::bf16::Weight),
    /// candle's `f32` product: `weight` is `inputs x outputs`, the layout candle's
    /// matrix product reads fastest.
    F32 { weight: Tensor, bias: Vec<f32> },
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
            Precision::Bfloat16 => Self::bf16(weight, bias, activation),
            #[cfg(not(target_arch = "x86_64"))]
            Precision::Bfloat16 => candle_core::bail!("bfloat16 products need x86-64"),
            Precision::Float32 => Self::f32(weight, bias, activation),
        }
    }

    /// A dense layer on candle's `f32` product.
    fn f32(weight: &Tensor, bias: &Tensor, activation: Activation) -> Result<Self> {
        let product = Product::F32 {
            weight: weight.t()?.contiguous()?,
            bias: bias.to_vec1()?,
        };
        Ok(Dense {
            product,
            activation,
        })
    }

    /// A dense layer on the bfloat16 kernel; the CPU must have AVX-512 BF16.
    #[cfg(target_arch = "x86_64")]
    fn bf16(weight: &Tensor, bias: &Tensor, activation: Activation) -> Result<Self> {
        let (outputs, inputs) = weight.dims2()?;
        let weight = crate::bf16::Weight::pack(
            &weight.flatten_all()?.to_vec1()?,
            &bias.to_vec1()?,
            outputs,
            inputs,
        );
        Ok(Dense {
            product: Product::Bf16(weight),
            activation,
        })
    }

    /// The layer's output for rows `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.product {
            #[cfg(target_arch = "x86_64")]
            Product::Bf16(weight) => x.apply_op1_no_bwd(&Bf16Product {
                weight,
                activation: self.activation,
            }),
            Product::F32 { weight, bias } => {
                let product = x.matmul(weight)?;
                product.inplace_op1(&AddBias(bias))?;
                if self.activation == Activation::Gelu {
                    product.inplace_op1(&Gelu)?;
                }
                Ok(product)
            }
        }
    }
}

/// A bfloat16 dense layer as a candle op over contiguous rows.
#[cfg(target_arch = "x86_64")]
struct Bf16Product<'a> {
    weight: &'a crate::bf16::Weight,
    activation: Activation,
}

#[cfg(target_arch = "x86_64")]
impl CustomOp1 for Bf16Product<'_> {
    fn name(&self) -> &'static str {
        "dense-bf16"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = elements(storage, layout)?;
        let rows = layout.dims().first().copied().unwrap_or(0);
        let finish: fn(&mut [f32]) = match self.activation {
            Activation::Identity => |_: &mut [f32]| {},
            Activation::Gelu => gelu_in_place,
        };
        let out = self.weight.product(x, finish);
        Ok((
            CpuStorage::F32(out),
            Shape::from((rows, self.weight.outputs())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A layer for each precision this CPU runs.
    fn layers(
        weight: &Tensor,
        bias: &Tensor,
        activation: Activation,
    ) -> Vec<(&'static str, Dense)> {
        Precision::supported()
            .into_iter()
            .map(|p| (p.name(), Dense::new(weight, bias, activation, p).unwrap()))
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
            // gelu(3.5) = 3.4992, gelu(-1) = -0.1587, gelu(0.5) = 0.3457.
            assert!((y[0][0] - 3.499_186).abs() < 1e-5, "{name}: {y:?}");
            assert!((y[1][1] + 0.158_655).abs() < 1e-5, "{name}: {y:?}");
            assert!((y[1][0] - 0.345_731).abs() < 1e-5, "{name}: {y:?}");
        }
    }
}
