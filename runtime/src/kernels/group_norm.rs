//! GroupNorm over `x [N, C, *spatial]`, accumulated in f32: the channels split into `groups`
//! equal groups and each (sample, group) is normalised over its `C / groups` channels and all
//! positions, then scaled and shifted per channel. InstanceNorm is the case `groups = C`.

use super::shape::prod;
use super::{arity, dtype_ok, real_in, real_out, shape_ok, view};
use crate::error::{Error, Result};
use crate::tensor::{Desc, Out, Src};

/// Validates the op: inputs `x [N, C, ..]` (rank >= 2), `gamma [C]`, `beta [C]`; output shaped
/// like `x`; `groups` non-zero and dividing `C`; `eps` finite and not negative.
pub(crate) fn check(eps: f32, groups: u16, inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 3)?;
    if !eps.is_finite() || eps < 0.0 || groups == 0 {
        return Err(Error::BadParams);
    }
    dtype_ok(inputs.iter().all(|d| real_in(d.dtype)) && real_out(out.dtype))?;
    let x = &inputs[0];
    shape_ok(x.shape.rank() >= 2 && x.shape == out.shape)?;
    let c = x.shape.dims()[1];
    shape_ok(c.is_multiple_of(groups as u32))?;
    shape_ok(inputs[1..].iter().all(|p| p.shape.dims() == [c]))
}

/// `y = (x - mean_g) / sqrt(var_g + eps) * gamma_c + beta_c`, with the mean and then the
/// (biased) variance of each group in two passes, both taken about the group's first value.
pub(crate) fn run(eps: f32, groups: u16, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = view(inputs, 0)?;
    let (gamma, beta) = (view(inputs, 1)?, view(inputs, 2)?);
    let dims = x.desc.shape.dims();
    let (n, c) = (dims[0] as usize, dims[1] as usize);
    let plane = prod(&dims[2..]);
    let per_group = c / groups as usize;
    let len = per_group * plane;
    if len == 0 {
        return Ok(());
    }
    let count = len as f32;
    for s in 0..n {
        for g in 0..groups as usize {
            let base = (s * c + g * per_group) * plane;
            // Sums run relative to the group's first value, so inputs far from zero keep
            // their digits (x - pivot is exact for nearby values).
            let pivot = x.get(base);
            let mut sum = 0.0f32;
            for i in 0..len {
                sum += x.get(base + i) - pivot;
            }
            let shift_mean = sum / count;
            let mut var = 0.0f32;
            for i in 0..len {
                let d = x.get(base + i) - pivot - shift_mean;
                var += d * d;
            }
            let inv = 1.0 / libm::sqrtf(var / count + eps);
            for k in 0..per_group {
                let ch = g * per_group + k;
                let (scale, shift) = (inv * gamma.get(ch), beta.get(ch));
                let start = base + k * plane;
                for i in start..start + plane {
                    out.set(i, (x.get(i) - pivot - shift_mean) * scale + shift);
                }
            }
        }
    }
    Ok(())
}
