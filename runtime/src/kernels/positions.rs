//! Position indices `start + position + i * step`.

use super::{arity, dtype_ok, shape_ok, Context};
use crate::error::{Error, Result};
use crate::tensor::{DType, Desc, Out};

/// Validates positions: no inputs, output i32 `[n]`.
pub(crate) fn check(inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 0)?;
    dtype_ok(out.dtype == DType::I32)?;
    shape_ok(out.shape.rank() == 1)
}

/// Writes `start + ctx.position + i * step`; a value outside i32 is `IndexOutOfRange`.
pub(crate) fn run(start: i32, step: i32, out: &mut Out<'_>, ctx: &Context<'_>) -> Result<()> {
    let first = start as i64 + ctx.position as i64;
    for i in 0..out.desc.shape.numel() {
        let v = i64::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(step as i64))
            .and_then(|d| d.checked_add(first))
            .and_then(|v| i32::try_from(v).ok())
            .ok_or(Error::IndexOutOfRange)?;
        out.bytes[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}
