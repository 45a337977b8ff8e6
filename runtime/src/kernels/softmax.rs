//! Softmax along one axis: max-subtracted, accumulated in f32.

use super::shape::prod;
use super::{arity, dtype_ok, real_in, real_out, shape_ok, view};
use crate::error::{Error, Result};
use crate::tensor::{Desc, Out, Src};

/// Validates softmax: one real input, `axis < rank`, output of the same shape.
pub(crate) fn check(axis: u8, inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 1)?;
    let x = &inputs[0];
    dtype_ok(real_in(x.dtype) && real_out(out.dtype))?;
    if axis as usize >= x.shape.rank() {
        return Err(Error::BadParams);
    }
    shape_ok(x.shape == out.shape)
}

/// `out = exp(x - max) / Σ exp(x - max)` along `axis`, summing in index order.
pub(crate) fn run(axis: u8, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = view(inputs, 0)?;
    let dims = x.desc.shape.dims();
    let axis = axis as usize;
    let n = dims.get(axis).copied().ok_or(Error::BadParams)? as usize;
    let outer = prod(&dims[..axis]);
    let inner = prod(&dims[axis + 1..]);
    for o in 0..outer {
        for j in 0..inner {
            let base = o * n * inner + j;
            let at = |k: usize| base + k * inner;
            let mut max = f32::NEG_INFINITY;
            for k in 0..n {
                max = libm::fmaxf(max, x.get(at(k)));
            }
            let mut sum = 0.0f32;
            for k in 0..n {
                sum += libm::expf(x.get(at(k)) - max);
            }
            for k in 0..n {
                out.set(at(k), libm::expf(x.get(at(k)) - max) / sum);
            }
        }
    }
    Ok(())
}
