//! Data movement: reshape, transpose, concat and strided slice.
//!
//! Elements are copied byte for byte when input and output share a representation and are
//! converted through real values otherwise.

use super::shape::{prod, strides, Walk};
use super::{arity, convertible, copy_elems, dtype_ok, input, same_repr, shape_ok, view};
use crate::error::{Error, Result};
use crate::ops::MAX_INPUTS;
use crate::tensor::{Desc, Out, Src, MAX_RANK};

/// Validates reshape: same element count.
pub(crate) fn check_reshape(inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 1)?;
    dtype_ok(convertible(&inputs[0], out))?;
    shape_ok(inputs[0].shape.numel() == out.shape.numel())
}

/// Copies (or converts) all elements; nothing to do in place with the same representation.
pub(crate) fn run_reshape(inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = *input(inputs, 0)?;
    let n = out.desc.shape.numel();
    match x {
        Src::View(v) => copy_elems(&v, 0, out, 0, n),
        Src::InPlace(d) if !same_repr(&d, &out.desc) => {
            for i in 0..n {
                let v = x.get(out, i);
                out.set(i, v);
            }
        }
        Src::InPlace(_) => {}
    }
    Ok(())
}

/// Validates transpose: `perm[..rank]` is a permutation, `out[i] = in[perm[i]]`.
pub(crate) fn check_transpose(perm: &[u8; MAX_RANK], inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 1)?;
    let x = &inputs[0];
    dtype_ok(convertible(x, out))?;
    let rank = x.shape.rank();
    let mut seen = [false; MAX_RANK];
    for &p in &perm[..rank] {
        let p = p as usize;
        if p >= rank || seen[p] {
            return Err(Error::BadParams);
        }
        seen[p] = true;
    }
    shape_ok(out.shape.rank() == rank && (0..rank).all(|i| out.shape.dim(i) == x.shape.dim(perm[i] as usize)))
}

/// Walks the output in order, reading the input through permuted strides.
pub(crate) fn run_transpose(perm: &[u8; MAX_RANK], inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = view(inputs, 0)?;
    let rank = x.desc.shape.rank();
    let s = strides(&x.desc.shape);
    let mut step = [0isize; MAX_RANK];
    for i in 0..rank {
        step[i] = s[perm[i] as usize % MAX_RANK];
    }
    let mut walk = Walk::new(out.desc.shape.dims(), [step], [0]);
    for i in 0..out.desc.shape.numel() {
        copy_elems(x, walk.at(0), out, i, 1);
        walk.advance();
    }
    Ok(())
}

/// Validates concat: 1..=16 inputs of the output's rank, equal except along `axis`, whose
/// sizes sum to the output's.
pub(crate) fn check_concat(axis: u8, inputs: &[Desc], out: &Desc) -> Result<()> {
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(Error::BadArity);
    }
    dtype_ok(inputs.iter().all(|x| convertible(x, out)))?;
    let axis = axis as usize;
    let rank = out.shape.rank();
    if axis >= rank {
        return Err(Error::BadParams);
    }
    let mut total = 0usize;
    for x in inputs {
        shape_ok(x.shape.rank() == rank)?;
        shape_ok((0..rank).all(|i| i == axis || x.shape.dim(i) == out.shape.dim(i)))?;
        total = total.checked_add(x.shape.dim(axis)).ok_or(Error::BadShape)?;
    }
    shape_ok(total == out.shape.dim(axis))
}

/// Copies each input's slab for every outer index.
pub(crate) fn run_concat(axis: u8, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let dims = out.desc.shape.dims();
    let axis = axis as usize;
    let total = dims.get(axis).copied().ok_or(Error::BadParams)? as usize;
    let outer = prod(&dims[..axis]);
    let inner = prod(&dims[axis + 1..]);
    let mut offset = 0;
    for t in 0..inputs.len() {
        let x = view(inputs, t)?;
        let len = x.desc.shape.dim(axis);
        for o in 0..outer {
            let src = o * len * inner;
            let dst = (o * total + offset) * inner;
            copy_elems(x, src, out, dst, len * inner);
        }
        offset += len;
    }
    Ok(())
}

/// Validates slice: same rank; along every axis with output extent `n > 0`, the indices
/// `start + j * step` for `j < n` lie inside the input, and `step != 0`.
pub(crate) fn check_slice(
    starts: &[u32; MAX_RANK],
    steps: &[i32; MAX_RANK],
    inputs: &[Desc],
    out: &Desc,
) -> Result<()> {
    arity(inputs, 1)?;
    let x = &inputs[0];
    dtype_ok(convertible(x, out))?;
    let rank = x.shape.rank();
    shape_ok(out.shape.rank() == rank)?;
    for ax in 0..rank {
        if steps[ax] == 0 {
            return Err(Error::BadParams);
        }
        let n = out.shape.dim(ax) as i128;
        if n == 0 {
            continue;
        }
        let len = x.shape.dim(ax) as i128;
        let first = starts[ax] as i128;
        let last = first + (n - 1) * steps[ax] as i128;
        if first >= len || !(0..len).contains(&last) {
            return Err(Error::BadParams);
        }
    }
    Ok(())
}

/// Walks the output in order, reading `start + idx * step` per axis.
pub(crate) fn run_slice(
    starts: &[u32; MAX_RANK],
    steps: &[i32; MAX_RANK],
    inputs: &[Src<'_>],
    out: &mut Out<'_>,
) -> Result<()> {
    let x = view(inputs, 0)?;
    let shape = out.desc.shape;
    if shape.numel() == 0 {
        return Ok(());
    }
    let s = strides(&x.desc.shape);
    let mut step = [0isize; MAX_RANK];
    let mut base = 0isize;
    for ax in 0..shape.rank() {
        base += starts[ax] as isize * s[ax];
        if shape.dim(ax) > 1 {
            step[ax] = steps[ax] as isize * s[ax];
        }
    }
    let mut walk = Walk::new(shape.dims(), [step], [base]);
    for i in 0..shape.numel() {
        copy_elems(x, walk.at(0), out, i, 1);
        walk.advance();
    }
    Ok(())
}
