//! The gated GELU of Gemma's MLP, `gelu_tanh(gate) * up`, fused into one pass over memory and
//! spread over all cores. candle's own `gelu` calls libm's scalar `tanhf` per element on one
//! thread, which costs more than the MLP's matmuls at batch sizes used for caching.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// tanh as a rational function (odd degree-13 numerator over even degree-6 denominator, the
/// approximation Eigen uses for float), clamped where tanh is ±1 to float precision.
/// Maximum absolute error against libm is a few 1e-7 (see the test below).
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn fast_tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = -2.760_768_5e-16f32;
    let p = p * x2 + 2.000_187_9e-13;
    let p = p * x2 - 8.604_671_5e-11;
    let p = p * x2 + 5.122_297e-8;
    let p = p * x2 + 1.485_722_4e-5;
    let p = p * x2 + 6.372_619_3e-4;
    let p = p * x2 + 4.893_524_6e-3;
    let q = 1.198_258_4e-6f32;
    let q = q * x2 + 1.185_347e-4;
    let q = q * x2 + 2.268_434_6e-3;
    let q = q * x2 + 4.893_525e-3;
    x * p / q
}

/// `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`, transformers' `gelu_pytorch_tanh`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + fast_tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
}

struct GeluTanhMul;

impl CustomOp2 for GeluTanhMul {
    fn name(&self) -> &'static str {
        "gelu-tanh-mul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(gate), CpuStorage::F32(up)) = (s1, s2) else {
            candle_core::bail!("gelu-tanh-mul: float32 inputs expected")
        };
        let (Some((g0, g1)), Some((u0, u1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("gelu-tanh-mul: contiguous inputs expected")
        };
        if l1.shape() != l2.shape() {
            candle_core::bail!("gelu-tanh-mul: shapes differ {:?} {:?}", l1.shape(), l2.shape())
        }
        let (gate, up) = (&gate[g0..g1], &up[u0..u1]);
        let mut out = vec![0f32; gate.len()];
        const CHUNK: usize = 1 << 14;
        out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))).for_each(|(o, (g, u))| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = gelu_tanh(g) * u;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `gelu_tanh(gate) * up`: fused on CPU, candle's ops elsewhere.
pub fn gelu_tanh_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.device().is_cpu() && gate.dtype() == candle_core::DType::F32 {
        gate.contiguous()?.apply_op2_no_bwd(&up.contiguous()?, &GeluTanhMul)
    } else {
        gate.gelu()? * up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_tanh_matches_libm() {
        let mut worst = 0f32;
        let mut x = -12.0f32;
        while x <= 12.0 {
            worst = worst.max((fast_tanh(x) - x.tanh()).abs());
            x += 1e-3;
        }
        assert!(worst < 1e-6, "max |fast_tanh - tanh| = {worst}");
    }

    #[test]
    fn fused_op_matches_candle_gelu() {
        let dev = candle_core::Device::Cpu;
        let g = Tensor::randn(0f32, 3.0, (7, 300), &dev).unwrap();
        let u = Tensor::randn(0f32, 1.0, (7, 300), &dev).unwrap();
        let fused = gelu_tanh_mul(&g, &u).unwrap();
        let reference = (g.gelu().unwrap() * &u).unwrap();
        let d = (fused - reference).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
