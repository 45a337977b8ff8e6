//! Gather along one axis by i32 indices (negative indices count from the end).

use super::shape::prod;
use super::{arity, convertible, copy_elems, dtype_ok, shape_ok, view};
use crate::error::{Error, Result};
use crate::tensor::{load_i32, DType, Desc, Out, Src, MAX_RANK};

/// Validates gather: `out = data[..axis] ++ indices.shape ++ data[axis+1..]`.
pub(crate) fn check(axis: u8, inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 2)?;
    let (data, idx) = (&inputs[0], &inputs[1]);
    dtype_ok(idx.dtype == DType::I32 && convertible(data, out))?;
    let axis = axis as usize;
    let dd = data.shape.dims();
    if axis >= dd.len() {
        return Err(Error::BadParams);
    }
    let mut want = [0u32; 2 * MAX_RANK];
    let mut n = 0;
    for &d in dd[..axis].iter().chain(idx.shape.dims()).chain(&dd[axis + 1..]) {
        want[n] = d;
        n += 1;
    }
    shape_ok(out.shape.dims() == &want[..n])
}

/// Copies `data[.., idx[i], ..]` slabs; an index outside `-len..len` is `IndexOutOfRange`.
pub(crate) fn run(axis: u8, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let data = view(inputs, 0)?;
    let idx = view(inputs, 1)?;
    let dims = data.desc.shape.dims();
    let axis = axis as usize;
    let len = dims.get(axis).copied().ok_or(Error::BadParams)? as i64;
    let outer = prod(&dims[..axis]);
    let inner = prod(&dims[axis + 1..]);
    let count = idx.desc.shape.numel();
    for i in 0..count {
        let raw = load_i32(idx.bytes, i) as i64;
        let k = if raw < 0 { raw + len } else { raw };
        if !(0..len).contains(&k) {
            return Err(Error::IndexOutOfRange);
        }
        let k = k as usize;
        for o in 0..outer {
            let src = (o * len as usize + k) * inner;
            let dst = (o * count + i) * inner;
            copy_elems(data, src, out, dst, inner);
        }
    }
    Ok(())
}
