//! LayerNorm and RMSNorm over the last axis, accumulated in f32.

use super::shape::prod;
use super::{arity, dtype_ok, real_in, real_out, shape_ok, view};
use crate::error::Result;
use crate::tensor::{Desc, Out, Src};

/// Validates a norm with `n` inputs: `x [.., D]`, then `[D]` parameters (gamma, beta).
pub(crate) fn check(n: usize, inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, n)?;
    let x = &inputs[0];
    dtype_ok(inputs.iter().all(|d| real_in(d.dtype)) && real_out(out.dtype))?;
    shape_ok(x.shape.rank() >= 1 && x.shape == out.shape)?;
    let d = x.shape.last() as u32;
    shape_ok(inputs[1..].iter().all(|p| p.shape.dims() == [d]))
}

/// `y = (x - mean) / sqrt(var + eps) * gamma (+ beta)`, mean then variance in two passes.
pub(crate) fn run_layer_norm(eps: f32, has_beta: bool, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = view(inputs, 0)?;
    let gamma = view(inputs, 1)?;
    let beta = if has_beta { Some(view(inputs, 2)?) } else { None };
    let dims = x.desc.shape.dims();
    let d = x.desc.shape.last();
    let rows = prod(&dims[..dims.len().saturating_sub(1)]);
    let df = d as f32;
    for r in 0..rows {
        let base = r * d;
        let mut sum = 0.0f32;
        for i in 0..d {
            sum += x.get(base + i);
        }
        let mean = sum / df;
        let mut var = 0.0f32;
        for i in 0..d {
            let c = x.get(base + i) - mean;
            var += c * c;
        }
        let inv = 1.0 / libm::sqrtf(var / df + eps);
        for i in 0..d {
            let mut y = (x.get(base + i) - mean) * inv * gamma.get(i);
            if let Some(b) = beta {
                y += b.get(i);
            }
            out.set(base + i, y);
        }
    }
    Ok(())
}

/// `y = x / sqrt(mean(x²) + eps) * gamma`.
pub(crate) fn run_rms_norm(eps: f32, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = view(inputs, 0)?;
    let gamma = view(inputs, 1)?;
    let dims = x.desc.shape.dims();
    let d = x.desc.shape.last();
    let rows = prod(&dims[..dims.len().saturating_sub(1)]);
    for r in 0..rows {
        let base = r * d;
        let mut sum = 0.0f32;
        for i in 0..d {
            let v = x.get(base + i);
            sum += v * v;
        }
        let inv = 1.0 / libm::sqrtf(sum / d as f32 + eps);
        for i in 0..d {
            out.set(base + i, x.get(base + i) * inv * gamma.get(i));
        }
    }
    Ok(())
}
