//! Persistent tensors in the state region: `LoadState` reads one into the arena, `StoreState`
//! writes one back for the next call (Transformer-XL memory, recurrent state).

use super::{arity, dtype_ok, input, same_repr, shape_ok, Context};
use crate::error::{Error, Result};
use crate::format::STATE_HEADER;
use crate::tensor::{Desc, Out, Src};

/// The slot `offset..offset + len` must lie after the state header and inside the region.
fn slot_ok(offset: u32, len: usize, state_bytes: usize) -> Result<()> {
    let end = (offset as usize).checked_add(len).ok_or(Error::BadParams)?;
    if (offset as usize) < STATE_HEADER || end > state_bytes {
        return Err(Error::BadParams);
    }
    Ok(())
}

/// Validates `LoadState`: no inputs, the output's bytes fit the state region at `offset`.
pub(crate) fn check_load(offset: u32, inputs: &[Desc], out: &Desc, state_bytes: usize) -> Result<()> {
    arity(inputs, 0)?;
    slot_ok(offset, out.byte_len(), state_bytes)
}

/// Validates `StoreState`: one input of the output's shape and representation.
pub(crate) fn check_store(offset: u32, inputs: &[Desc], out: &Desc, state_bytes: usize) -> Result<()> {
    arity(inputs, 1)?;
    shape_ok(inputs[0].shape == out.shape)?;
    dtype_ok(same_repr(&inputs[0], out))?;
    slot_ok(offset, out.byte_len(), state_bytes)
}

/// The slot's bytes in the state handed to this run (`SizeMismatch` if it is too short).
fn slot<'s>(ctx: &'s mut Context<'_>, offset: u32, len: usize) -> Result<&'s mut [u8]> {
    let start = offset as usize;
    ctx.state.get_mut(start..start.checked_add(len).ok_or(Error::BadParams)?).ok_or(Error::SizeMismatch)
}

/// Copies the state slot into the output.
pub(crate) fn run_load(offset: u32, out: &mut Out<'_>, ctx: &mut Context<'_>) -> Result<()> {
    let len = out.desc.byte_len();
    out.bytes[..len].copy_from_slice(slot(ctx, offset, len)?);
    Ok(())
}

/// Passes the input through to the output and copies it into the state slot.
pub(crate) fn run_store(offset: u32, inputs: &[Src<'_>], out: &mut Out<'_>, ctx: &mut Context<'_>) -> Result<()> {
    let len = out.desc.byte_len();
    if let Src::View(v) = input(inputs, 0)? {
        out.bytes[..len].copy_from_slice(&v.bytes[..len]);
    }
    slot(ctx, offset, len)?.copy_from_slice(&out.bytes[..len]);
    Ok(())
}
