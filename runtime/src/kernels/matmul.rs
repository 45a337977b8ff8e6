//! `MatMul` (activations times constant "nt" weights) and `BatchMatMul` (two run-time
//! operands with broadcast batch dims). Float paths accumulate in f32 in `k` order.

use super::shape::{broadcast, broadcast_strides, prod, Walk};
use super::{arity, dtype_ok, matmul_s8, real_in, real_out, shape_ok, view};
use crate::error::{Error, Result};
use crate::tensor::{DType, Desc, Out, Src};

/// Whether `MatMul` operands take the integer path (`a` and `w` both int8).
fn is_int(a: &Desc, w: &Desc) -> bool {
    a.dtype == DType::I8 && w.dtype == DType::I8
}

/// Validates `MatMul`: `a [.., M, K]`, `w [N, K]`, optional bias `[N]`, on the int8 path with
/// an i8 output also a requantisation table i32 `[N, 2]`; output `[.., M, N]`.
pub(crate) fn check(has_bias: bool, inputs: &[Desc], out: &Desc) -> Result<()> {
    let a = inputs.first().ok_or(Error::BadArity)?;
    let w = inputs.get(1).ok_or(Error::BadArity)?;
    let int = is_int(a, w);
    let table = int && out.dtype == DType::I8;
    arity(inputs, 2 + has_bias as usize + table as usize)?;
    let bias = if has_bias { Some(&inputs[2]) } else { None };
    if int {
        dtype_ok(real_out(out.dtype))?;
        dtype_ok(bias.is_none_or(|b| b.dtype == DType::I32))?;
        dtype_ok(!table || inputs[inputs.len() - 1].dtype == DType::I32)?;
    } else {
        let float_w = matches!(w.dtype, DType::F32 | DType::F16);
        dtype_ok(real_in(a.dtype) && float_w && real_out(out.dtype))?;
        dtype_ok(bias.is_none_or(|b| matches!(b.dtype, DType::F32 | DType::F16)))?;
    }
    shape_ok(w.shape.rank() == 2)?;
    let (n, k) = (w.shape.dims()[0], w.shape.dims()[1]);
    let r = a.shape.rank();
    shape_ok(r >= 1 && a.shape.dims()[r - 1] == k && out.shape.rank() == r)?;
    shape_ok(out.shape.dims()[..r - 1] == a.shape.dims()[..r - 1] && out.shape.dims()[r - 1] == n)?;
    shape_ok(bias.is_none_or(|b| b.shape.dims() == [n]))?;
    shape_ok(!table || inputs[inputs.len() - 1].shape.dims() == [n, 2])
}

/// Runs `MatMul` on the float or the int8 path.
pub(crate) fn run(has_bias: bool, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let a = view(inputs, 0)?;
    let w = view(inputs, 1)?;
    if is_int(&a.desc, &w.desc) {
        return matmul_s8::run(has_bias, inputs, out);
    }
    let bias = if has_bias { Some(view(inputs, 2)?) } else { None };
    let dims = a.desc.shape.dims();
    let rows = prod(&dims[..dims.len().saturating_sub(1)]);
    let k = a.desc.shape.last();
    let n = w.desc.shape.dim(0);
    let f32_operands = a.desc.dtype == DType::F32 && w.desc.dtype == DType::F32;
    for r in 0..rows {
        for c in 0..n {
            let mut acc = if f32_operands {
                dot_f32_le(&a.bytes[4 * r * k..4 * (r + 1) * k], &w.bytes[4 * c * k..4 * (c + 1) * k])
            } else {
                let mut acc = 0.0f32;
                for i in 0..k {
                    acc += a.get(r * k + i) * w.get(c * k + i);
                }
                acc
            };
            if let Some(b) = bias {
                acc += b.get(c);
            }
            out.set(r * n + c, acc);
        }
    }
    Ok(())
}

/// Dot product of two little-endian f32 byte rows, accumulated in index order (the same
/// order as the generic path, so results are identical).
fn dot_f32_le(a: &[u8], b: &[u8]) -> f32 {
    let f = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    a.chunks_exact(4).zip(b.chunks_exact(4)).fold(0.0f32, |acc, (x, y)| acc + f(x) * f(y))
}

/// `rows · N · K` for `MatMul`.
pub(crate) fn macs(inputs: &[Desc], _out: &Desc) -> u64 {
    let (Some(a), Some(w)) = (inputs.first(), inputs.get(1)) else {
        return 0;
    };
    let dims = a.shape.dims();
    let rows = dims[..dims.len().saturating_sub(1)].iter();
    let rows = rows.fold(1u64, |acc, &d| acc.saturating_mul(d as u64));
    rows.saturating_mul(w.shape.dim(0) as u64).saturating_mul(a.shape.last() as u64)
}

/// Validates `BatchMatMul`: `a [.., M, K] x b [.., K, N] -> [bcast(..), M, N]`.
pub(crate) fn check_batch(inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 2)?;
    let (a, b) = (&inputs[0], &inputs[1]);
    dtype_ok(real_in(a.dtype) && real_in(b.dtype) && real_out(out.dtype))?;
    let (ra, rb) = (a.shape.rank(), b.shape.rank());
    shape_ok(ra >= 2 && rb >= 2)?;
    let (ad, bd) = (a.shape.dims(), b.shape.dims());
    shape_ok(ad[ra - 1] == bd[rb - 2])?;
    let batch = broadcast(&ad[..ra - 2], &bd[..rb - 2])?;
    let rank = batch.rank() + 2;
    let od = out.shape.dims();
    shape_ok(od.len() == rank && od[..rank - 2] == *batch.dims())?;
    shape_ok(od[rank - 2] == ad[ra - 2] && od[rank - 1] == bd[rb - 1])
}

/// Runs `BatchMatMul`, one `M x N` block per output batch index.
pub(crate) fn run_batch(inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let a = view(inputs, 0)?;
    let b = view(inputs, 1)?;
    let (ad, bd) = (a.desc.shape.dims(), b.desc.shape.dims());
    let od = out.desc.shape.dims();
    if ad.len() < 2 || bd.len() < 2 || od.len() < 2 {
        return Err(Error::BadShape);
    }
    let (m, k, n) = (ad[ad.len() - 2] as usize, ad[ad.len() - 1] as usize, bd[bd.len() - 1] as usize);
    let batch = &od[..od.len() - 2];
    let sa = broadcast_strides(&ad[..ad.len() - 2], batch.len(), m * k);
    let sb = broadcast_strides(&bd[..bd.len() - 2], batch.len(), k * n);
    let mut walk = Walk::new(batch, [sa, sb], [0, 0]);
    for bi in 0..prod(batch) {
        let (oa, ob, oo) = (walk.at(0), walk.at(1), bi * m * n);
        for r in 0..m {
            for c in 0..n {
                let mut acc = 0.0f32;
                for i in 0..k {
                    acc += a.get(oa + r * k + i) * b.get(ob + i * n + c);
                }
                out.set(oo + r * n + c, acc);
            }
        }
        walk.advance();
    }
    Ok(())
}

/// `batch · M · N · K` for `BatchMatMul`.
pub(crate) fn macs_batch(inputs: &[Desc], out: &Desc) -> u64 {
    let Some(a) = inputs.first() else { return 0 };
    let k = a.shape.last() as u64;
    let od = out.shape.dims().iter();
    od.fold(k, |acc, &d| acc.saturating_mul(d as u64))
}
