//! Element-wise binary ops (NumPy broadcasting up to rank 6) and unary ops.
//!
//! Both may run in place: element `i` of every input is read before element `i` of the
//! output is written, and an in-place input has the output's shape (so its index is `i`).

use super::activation::{binary_f32, unary_f32};
use super::shape::{broadcast, broadcast_strides, Walk};
use super::{arity, dtype_ok, input, real_in, real_out, same_repr, shape_ok};
use crate::error::Result;
use crate::ops::{BinaryOp, UnaryOp};
use crate::tensor::{Desc, Out, Src};

/// Validates a binary op: two real inputs, output shape = their broadcast shape.
pub(crate) fn check_binary(inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 2)?;
    let (a, b) = (&inputs[0], &inputs[1]);
    dtype_ok(real_in(a.dtype) && real_in(b.dtype) && real_out(out.dtype))?;
    let s = broadcast(a.shape.dims(), b.shape.dims())?;
    shape_ok(s == out.shape)
}

/// Runs a binary op with broadcasting.
pub(crate) fn run_binary(op: BinaryOp, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let a = *input(inputs, 0)?;
    let b = *input(inputs, 1)?;
    let shape = out.desc.shape;
    let rank = shape.rank();
    let sa = broadcast_strides(a.desc().shape.dims(), rank, 1);
    let sb = broadcast_strides(b.desc().shape.dims(), rank, 1);
    let mut walk = Walk::new(shape.dims(), [sa, sb], [0, 0]);
    for i in 0..shape.numel() {
        let x = a.get(out, walk.at(0));
        let y = b.get(out, walk.at(1));
        out.set(i, binary_f32(op, x, y));
        walk.advance();
    }
    Ok(())
}

/// Validates a unary op: same shape; `Identity` converts between any dtypes.
pub(crate) fn check_unary(op: UnaryOp, inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 1)?;
    let x = &inputs[0];
    if op != UnaryOp::Identity {
        dtype_ok(real_in(x.dtype) && real_out(out.dtype))?;
    }
    shape_ok(x.shape == out.shape)
}

/// Runs a unary op (a byte copy, or nothing in place, for a representation-preserving
/// `Identity`).
pub(crate) fn run_unary(op: UnaryOp, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = *input(inputs, 0)?;
    if op == UnaryOp::Identity && same_repr(x.desc(), &out.desc) {
        if let Src::View(v) = x {
            let n = out.desc.byte_len();
            out.bytes[..n].copy_from_slice(&v.bytes[..n]);
        }
        return Ok(());
    }
    for i in 0..out.desc.shape.numel() {
        let v = x.get(out, i);
        out.set(i, unary_f32(op, v));
    }
    Ok(())
}
