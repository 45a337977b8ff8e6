//! Parse-time validation: after this passes, running any entry point stays in bounds.

use super::*;
use crate::error::{Error, Result};
use crate::kernels;
use crate::ops::MAX_INPUTS;
use crate::tensor::{DType, Desc};

pub(super) fn validate(m: &Model<'_>) -> Result<()> {
    sections(m)?;
    for i in 0..m.tensor_count() {
        tensor(m, TensorId(i as u32))?;
    }
    for i in 0..m.op_count() {
        op(m, i)?;
    }
    for e in 0..m.entry_count() {
        entry(m, EntryId(e as u32))?;
    }
    let state = m.state_bytes();
    if state != 0 && state < STATE_HEADER {
        return Err(Error::OutOfBounds);
    }
    for i in 0..m.state_slot_count() {
        let s = m.state_slot(i)?;
        m.string(s.name)?;
        let end = (s.offset as usize).checked_add(s.len as usize).ok_or(Error::OutOfBounds)?;
        if (s.offset as usize) < STATE_HEADER || end > state {
            return Err(Error::OutOfBounds);
        }
    }
    for i in 0..m.metadata_count() {
        m.metadata_entry(i)?;
    }
    Ok(())
}

fn sections(m: &Model<'_>) -> Result<()> {
    let file_len = m.bytes().len();
    let in_file = |off: usize, len: usize| -> Result<()> {
        if !off.is_multiple_of(ALIGN) {
            return Err(Error::Misaligned);
        }
        let end = off.checked_add(len).ok_or(Error::OutOfBounds)?;
        if off < HEADER_LEN || end > file_len {
            return Err(Error::OutOfBounds);
        }
        Ok(())
    };
    for s in [
        Section::Tensors,
        Section::Ops,
        Section::Entries,
        Section::Operands,
        Section::Params,
        Section::Metadata,
        Section::States,
        Section::Strings,
    ] {
        let (count, off) = m.section(s);
        in_file(off, count.checked_mul(record_size(s)).ok_or(Error::OutOfBounds)?)?;
    }
    let (woff, wlen) = m.weights_range();
    in_file(woff, wlen)
}

fn tensor(m: &Model<'_>, id: TensorId) -> Result<()> {
    let t = m.tensor(id)?;
    let r = m.record_bytes(Section::Tensors, id.0 as usize)?;
    if r[52..56] != [0; 4] {
        return Err(Error::BadEnum);
    }
    if let Some(name) = t.name {
        m.string(name)?;
    }
    let numel = t.desc.shape.dims().iter().try_fold(1usize, |a, &d| a.checked_mul(d as usize));
    let len = numel.and_then(|n| n.checked_mul(t.desc.dtype.size())).ok_or(Error::BadShape)?;
    if len != t.byte_len as usize {
        return Err(Error::BadShape);
    }
    let end = (t.offset as usize).checked_add(len).ok_or(Error::OutOfBounds)?;
    let limit = match t.storage {
        Storage::Arena => m.arena_bytes(),
        Storage::Weights => m.weights_range().1,
    };
    if end > limit {
        return Err(Error::OutOfBounds);
    }
    if !(t.offset as usize).is_multiple_of(ALIGN) {
        return Err(Error::Misaligned);
    }
    let q = t.desc.quant;
    if t.desc.dtype == DType::I8 && !(q.scale.is_finite() && q.scale > 0.0 && (-128..=127).contains(&q.zero_point)) {
        return Err(Error::BadParams);
    }
    match (t.channel_axis, t.channel_scales) {
        (None, None) => {}
        (Some(axis), Some(off)) => {
            if t.storage != Storage::Weights || axis as usize >= t.desc.shape.rank() {
                return Err(Error::BadParams);
            }
            if !(off as usize).is_multiple_of(4) {
                return Err(Error::Misaligned);
            }
            // weight_view checks the scale range lies inside the weights.
            let v = m.weight_view(&t)?;
            let scales = v.channel_scales.ok_or(Error::BadParams)?;
            for c in scales.chunks_exact(4) {
                let s = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if !(s.is_finite() && s > 0.0) {
                    return Err(Error::BadParams);
                }
            }
        }
        _ => return Err(Error::BadParams),
    }
    Ok(())
}

fn op(m: &Model<'_>, i: usize) -> Result<()> {
    let info = m.op(i)?;
    if info.n_inputs > MAX_INPUTS {
        return Err(Error::BadArity);
    }
    let out_id = m.op_output(&info)?;
    let out = m.tensor(out_id)?;
    if out.storage != Storage::Arena {
        return Err(Error::BadParams);
    }
    let mut descs =
        [Desc { dtype: DType::F32, shape: Default::default(), quant: crate::tensor::Quant::NONE }; MAX_INPUTS];
    for (k, desc) in descs.iter_mut().enumerate().take(info.n_inputs) {
        let t = m.tensor(m.op_input(&info, k)?)?;
        *desc = t.desc;
        if t.storage == Storage::Arena {
            let (a, b) = (t.range(), out.range());
            let overlaps = a.start < b.end && b.start < a.end;
            if overlaps && !(info.op.allows_in_place() && a == b) {
                return Err(Error::BadParams);
            }
        }
    }
    kernels::check(&info.op, &descs[..info.n_inputs], &out.desc, m.state_bytes())
}

fn entry(m: &Model<'_>, e: EntryId) -> Result<()> {
    let info = m.entry(e)?;
    m.string(info.name)?;
    let r = m.record_bytes(Section::Entries, e.0 as usize)?;
    if r[28..32] != [0; 4] || info.flags & !ENTRY_ADVANCES != 0 {
        return Err(Error::BadEnum);
    }
    if info.flags & ENTRY_ADVANCES != 0 && m.state_bytes() < STATE_HEADER {
        return Err(Error::BadParams);
    }
    let end = info.first_op.checked_add(info.n_ops).ok_or(Error::OutOfBounds)?;
    if end as usize > m.op_count() {
        return Err(Error::OutOfBounds);
    }
    for k in 0..info.n_inputs as usize {
        arena_tensor(m, m.entry_input(e, k)?)?;
    }
    for k in 0..info.n_outputs as usize {
        arena_tensor(m, m.entry_output(e, k)?)?;
    }
    Ok(())
}

fn arena_tensor(m: &Model<'_>, id: TensorId) -> Result<()> {
    match m.tensor(id)?.storage {
        Storage::Arena => Ok(()),
        Storage::Weights => Err(Error::BadParams),
    }
}
