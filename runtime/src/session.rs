//! Running entry points of a model in caller-provided memory.

use crate::error::{Error, Result};
use crate::format::{EntryId, Model, Storage, TensorId, TensorInfo, ENTRY_ADVANCES};
use crate::kernels::{self, Context};
use crate::ops::MAX_INPUTS;
use crate::tensor::{self, DType, Src, View};

/// An execution context: a model plus the arena and state memory the caller owns.
///
/// ```
/// # fn demo(model: &mote::Model) -> mote::Result<()> {
/// let mut arena = [0u8; 1 << 16];
/// let mut state = [0u8; 1 << 12];
/// let mut s = mote::Session::new(model, &mut arena, &mut state)?; // checks the sizes
/// # Ok(()) }
/// ```
pub struct Session<'m, 'b> {
    model: &'m Model<'b>,
    arena: &'m mut [u8],
    state: &'m mut [u8],
}

impl<'m, 'b> Session<'m, 'b> {
    /// Creates a session; fails with [`Error::ArenaTooSmall`] if either buffer is smaller than
    /// [`Model::arena_bytes`] / [`Model::state_bytes`]. The state starts at position 0.
    pub fn new(model: &'m Model<'b>, arena: &'m mut [u8], state: &'m mut [u8]) -> Result<Self> {
        for (needed, given) in [(model.arena_bytes(), arena.len()), (model.state_bytes(), state.len())] {
            if given < needed {
                return Err(Error::ArenaTooSmall { needed: needed as u32, given: given as u32 });
            }
        }
        let mut s = Session { model, arena, state };
        s.reset();
        Ok(s)
    }

    /// The model this session runs.
    pub fn model(&self) -> &'m Model<'b> {
        self.model
    }

    /// Forgets all state: the position returns to 0 and caches are cleared.
    pub fn reset(&mut self) {
        self.state.fill(0);
    }

    /// The position of the next token for entries that advance (e.g. `decode_step`).
    pub fn position(&self) -> u32 {
        self.state.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0)
    }

    fn set_position(&mut self, p: u32) {
        if let Some(b) = self.state.get_mut(..4) {
            b.copy_from_slice(&p.to_le_bytes());
        }
    }

    /// The raw state region (KV caches etc.): persist it to resume later.
    pub fn state(&self) -> &[u8] {
        &self.state[..self.model.state_bytes()]
    }

    /// Restores a state region saved with [`Session::state`].
    pub fn restore_state(&mut self, saved: &[u8]) -> Result<()> {
        let n = self.model.state_bytes();
        if saved.len() != n {
            return Err(Error::SizeMismatch);
        }
        self.state[..n].copy_from_slice(saved);
        Ok(())
    }

    fn arena_tensor(&self, id: TensorId) -> Result<TensorInfo> {
        let t = self.model.tensor(id)?;
        match t.storage {
            Storage::Arena => Ok(t),
            Storage::Weights => Err(Error::BadParams),
        }
    }

    /// Writes real values into input `k` of `entry`, quantising if it is int8. A NaN or an
    /// infinity is [`Error::NonFinite`] (nothing is written): it would otherwise flow silently
    /// into every output, or saturate when quantised.
    pub fn set_input_f32(&mut self, entry: EntryId, k: usize, values: &[f32]) -> Result<()> {
        let t = self.arena_tensor(self.model.entry_input(entry, k)?)?;
        if values.len() != t.desc.shape.numel() {
            return Err(Error::SizeMismatch);
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index: i as u32 });
        }
        let bytes = &mut self.arena[t.range()];
        for (i, &v) in values.iter().enumerate() {
            tensor::store(bytes, &t.desc, i, v);
        }
        Ok(())
    }

    /// Copies `len` f32 values stored little-endian in the state region at byte `offset` into
    /// input `k` of `entry` (quantising if it is int8), checking them like
    /// [`Session::set_input_f32`]: samplers keep their working values in the state region.
    pub(crate) fn input_from_state(&mut self, entry: EntryId, k: usize, offset: usize) -> Result<()> {
        let t = self.arena_tensor(self.model.entry_input(entry, k)?)?;
        let n = t.desc.shape.numel();
        let src = self.state.get(offset..offset + 4 * n).ok_or(Error::OutOfBounds)?;
        let values = || src.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if let Some(i) = values().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index: i as u32 });
        }
        let bytes = &mut self.arena[t.range()];
        for (i, v) in values().enumerate() {
            tensor::store(bytes, &t.desc, i, v);
        }
        Ok(())
    }

    /// Writes output `k` of `entry` as f32 values (dequantising int8) into the state region at
    /// byte `offset`.
    pub(crate) fn output_to_state(&mut self, entry: EntryId, k: usize, offset: usize) -> Result<()> {
        let t = self.arena_tensor(self.model.entry_output(entry, k)?)?;
        let n = t.desc.shape.numel();
        let dst = self.state.get_mut(offset..offset + 4 * n).ok_or(Error::OutOfBounds)?;
        let src = &self.arena[t.range()];
        for (i, d) in dst.chunks_exact_mut(4).enumerate() {
            d.copy_from_slice(&tensor::load(src, &t.desc, i).to_le_bytes());
        }
        Ok(())
    }

    /// The state region, mutably (for samplers working in their own slot).
    pub(crate) fn state_mut(&mut self) -> &mut [u8] {
        &mut self.state[..self.model.state_bytes()]
    }

    /// Writes integer values (token ids) into input `k` of `entry`.
    pub fn set_input_i32(&mut self, entry: EntryId, k: usize, values: &[i32]) -> Result<()> {
        let t = self.arena_tensor(self.model.entry_input(entry, k)?)?;
        if values.len() != t.desc.shape.numel() {
            return Err(Error::SizeMismatch);
        }
        if t.desc.dtype != DType::I32 {
            return Err(Error::BadDType);
        }
        for (c, v) in self.arena[t.range()].chunks_exact_mut(4).zip(values) {
            c.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    /// Reads output `k` of `entry` as real values (dequantising int8).
    pub fn output_f32(&self, entry: EntryId, k: usize, out: &mut [f32]) -> Result<()> {
        let v = self.output(entry, k)?;
        if out.len() != v.desc.shape.numel() {
            return Err(Error::SizeMismatch);
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = v.get(i);
        }
        Ok(())
    }

    /// Zero-copy view of output `k` of `entry` (valid until the next run).
    pub fn output(&self, entry: EntryId, k: usize) -> Result<View<'_>> {
        let t = self.arena_tensor(self.model.entry_output(entry, k)?)?;
        Ok(View { desc: t.desc, bytes: &self.arena[t.range()], channel_scales: None })
    }

    /// Runs every op of `entry`.
    pub fn run(&mut self, entry: EntryId) -> Result<()> {
        self.run_observed(entry, |_, _, _| {})
    }

    /// Runs `entry`, calling `observe(op index, output tensor, output view)` after each op
    /// (the converter's calibration uses this to record activation ranges).
    pub fn run_observed<F>(&mut self, entry: EntryId, mut observe: F) -> Result<()>
    where
        F: FnMut(usize, TensorId, &View<'_>),
    {
        let info = self.model.entry(entry)?;
        let advances = info.flags & ENTRY_ADVANCES != 0;
        let position = if advances { self.position() } else { 0 };
        let model = self.model;
        for i in info.first_op..info.first_op + info.n_ops {
            let op = model.op(i as usize)?;
            let out_id = model.op_output(&op)?;
            let out_t = model.tensor(out_id)?;
            let out_range = out_t.range();
            let (lo, rest) = self.arena.split_at_mut(out_range.start);
            let (out_bytes, hi) = rest.split_at_mut(out_t.byte_len as usize);
            let hi_base = out_range.end;
            let mut srcs = [Src::InPlace(out_t.desc); MAX_INPUTS];
            for (k, src) in srcs.iter_mut().enumerate().take(op.n_inputs) {
                let t = model.tensor(model.op_input(&op, k)?)?;
                *src = match t.storage {
                    Storage::Weights => Src::View(model.weight_view(&t)?),
                    Storage::Arena if t.range() == out_range => Src::InPlace(t.desc),
                    Storage::Arena => {
                        let r = t.range();
                        let bytes = if r.end <= out_range.start {
                            lo.get(r).ok_or(Error::OutOfBounds)?
                        } else {
                            hi.get(r.start - hi_base..r.end - hi_base).ok_or(Error::OutOfBounds)?
                        };
                        Src::View(View { desc: t.desc, bytes, channel_scales: None })
                    }
                };
            }
            let mut out = tensor::Out { desc: out_t.desc, bytes: out_bytes };
            // State-slot offsets are relative to the whole state region (its header included).
            let mut ctx = Context { position, state: &mut *self.state };
            kernels::execute(&op.op, &srcs[..op.n_inputs], &mut out, &mut ctx)?;
            let view = View { desc: out.desc, bytes: out.bytes, channel_scales: None };
            observe(i as usize, out_id, &view);
        }
        if advances {
            self.set_position(position.checked_add(info.advance).ok_or(Error::StateFull)?);
        }
        Ok(())
    }
}
