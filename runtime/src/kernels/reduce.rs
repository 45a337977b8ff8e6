//! Sum along one axis (flow log-determinants and log-densities), accumulated in f32.

use super::shape::prod;
use super::{arity, dtype_ok, real_in, real_out, shape_ok, view};
use crate::error::{Error, Result};
use crate::tensor::{Desc, Out, Src};

/// Validates a sum over `axis`: one real input, `axis < rank`, an output holding one value per
/// position of the other axes (the axis kept as 1 or dropped).
pub(crate) fn check(axis: u8, inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 1)?;
    let x = &inputs[0];
    dtype_ok(real_in(x.dtype) && real_out(out.dtype))?;
    let dims = x.shape.dims();
    let n = *dims.get(axis as usize).ok_or(Error::BadParams)? as usize;
    shape_ok(n > 0 && out.shape.numel() * n == x.shape.numel())
}

/// `out[o, j] = Σ_k x[o, k, j]` over `axis`, summing in index order.
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
            let sum = (0..n).fold(0.0f32, |s, k| s + x.get(base + k * inner));
            out.set(o * inner + j, sum);
        }
    }
    Ok(())
}
