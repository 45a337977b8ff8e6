//! The int8 `MatMul` path (TFLite int8 spec): asymmetric int8 activations, symmetric
//! per-channel int8 weights, i32 bias, and either fixed-point requantisation to int8 or a
//! float epilogue.

use super::{view, Error, Result};
use crate::quant::multiply_by_quantized_multiplier;
use crate::tensor::{load_i32, DType, Out, Src};

/// Integer inner loop of the int8 `MatMul`: `lhs [rows, k]` (int8, zero point `lhs_zp`)
/// times `rhs [cols, k]` (int8, symmetric, stored transposed: "nt"), plus an optional i32
/// `bias [cols]` (little-endian bytes).
///
/// For every `r < rows` and `c < cols` (row-major order) it calls `emit(r, c, acc)` with
/// `acc = bias[c] + Σ_i (lhs[r·k + i] - lhs_zp) · rhs[c·k + i]` in wrapping i32 arithmetic,
/// so every summation order gives the same result. Vectorised variants must match it
/// exactly. Slices shorter than the sizes imply are [`Error::SizeMismatch`].
///
/// ```
/// let lhs = [1i8, 2, 3, 4].map(|v| v as u8); // 2 x 2
/// let rhs = [1i8, -1, 2, 0].map(|v| v as u8); // 2 x 2, transposed
/// let mut acc = [0i32; 4];
/// mote::kernels::mat_mult_nt_t_s8(&lhs, &rhs, None, 1, 2, 2, 2, |r, c, v| acc[r * 2 + c] = v)
///     .unwrap();
/// assert_eq!(acc, [-1, 0, -1, 4]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn mat_mult_nt_t_s8(
    lhs: &[u8],
    rhs: &[u8],
    bias: Option<&[u8]>,
    lhs_zp: i32,
    rows: usize,
    cols: usize,
    k: usize,
    mut emit: impl FnMut(usize, usize, i32),
) -> Result<()> {
    let lhs_len = rows.checked_mul(k).ok_or(Error::SizeMismatch)?;
    let rhs_len = cols.checked_mul(k).ok_or(Error::SizeMismatch)?;
    let bias_len = cols.checked_mul(4).ok_or(Error::SizeMismatch)?;
    if lhs.len() < lhs_len || rhs.len() < rhs_len || bias.is_some_and(|b| b.len() < bias_len) {
        return Err(Error::SizeMismatch);
    }
    for r in 0..rows {
        let a = &lhs[r * k..(r + 1) * k];
        for c in 0..cols {
            let w = &rhs[c * k..(c + 1) * k];
            let mut acc = match bias {
                Some(b) => load_i32(b, c),
                None => 0,
            };
            for (&x, &y) in a.iter().zip(w) {
                let x = (x as i8 as i32).wrapping_sub(lhs_zp);
                acc = acc.wrapping_add(x.wrapping_mul(y as i8 as i32));
            }
            emit(r, c, acc);
        }
    }
    Ok(())
}

/// Runs the int8 path: requantises per channel with the `(multiplier, shift)` table for an
/// i8 output, or writes `acc · s_a · s_w[c]` for an f32 output.
pub(crate) fn run(has_bias: bool, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let a = view(inputs, 0)?;
    let w = view(inputs, 1)?;
    let bias = if has_bias { Some(view(inputs, 2)?.bytes) } else { None };
    let dims = a.desc.shape.dims();
    let rows = super::shape::prod(&dims[..dims.len().saturating_sub(1)]);
    let k = a.desc.shape.last();
    let n = w.desc.shape.dim(0);
    if w.channel_scales.is_some_and(|s| s.len() < 4 * n) {
        return Err(Error::SizeMismatch);
    }
    let a_zp = a.desc.quant.zero_point;
    if out.desc.dtype == DType::I8 {
        let table = view(inputs, 2 + has_bias as usize)?.bytes;
        let out_zp = out.desc.quant.zero_point;
        let bytes = &mut *out.bytes;
        mat_mult_nt_t_s8(a.bytes, w.bytes, bias, a_zp, rows, n, k, |r, c, acc| {
            let (m, shift) = (load_i32(table, 2 * c), load_i32(table, 2 * c + 1));
            let q = out_zp.saturating_add(multiply_by_quantized_multiplier(acc, m, shift));
            bytes[r * n + c] = q.clamp(-128, 127) as i8 as u8;
        })
    } else {
        let s_a = a.desc.quant.scale;
        mat_mult_nt_t_s8(a.bytes, w.bytes, bias, a_zp, rows, n, k, |r, c, acc| {
            out.set(r * n + c, acc as f32 * (s_a * w.channel_scale(c)));
        })
    }
}
