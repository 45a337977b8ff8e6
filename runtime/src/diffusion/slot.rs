//! The sampler's working values in the model's state region: [`SAMPLER_STATE_VALUES`] f32
//! buffers of `x`'s size, stored little-endian in the [`SAMPLER_SLOT`] state slot.

use super::{SAMPLER_SLOT, SAMPLER_STATE_VALUES};
use crate::error::{Error, Result};
use crate::format::EntryId;
use crate::Model;

/// One buffer of the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Buf {
    /// The sample being denoised.
    X = 0,
    /// The (guided) prediction at `X`.
    Pred = 1,
    /// Heun's Euler point.
    Heun = 2,
    /// The prediction at the Euler point.
    HeunPred = 3,
    /// The unconditional prediction of a guided call.
    Unconditional = 4,
}

/// Where the buffers lie in the state region.
pub(super) struct Slot {
    base: usize,
    /// Values per buffer (the size of the denoiser's `x`).
    pub n: usize,
}

impl Slot {
    /// The sampler slot of `model`, sized for the `x` input of `entry`
    /// ([`Error::NotADiffusionModel`] when the file has no such slot or it is too small).
    pub fn of_model(model: &Model<'_>, entry: EntryId) -> Result<Self> {
        let n = model.tensor(model.entry_input(entry, 0)?)?.desc.shape.numel();
        for i in 0..model.state_slot_count() {
            let s = model.state_slot(i)?;
            if model.string(s.name)? == SAMPLER_SLOT {
                if (s.len as usize) < SAMPLER_STATE_VALUES * 4 * n || (s.offset + s.len) as usize > model.state_bytes()
                {
                    return Err(Error::NotADiffusionModel);
                }
                return Ok(Slot { base: s.offset as usize, n });
            }
        }
        Err(Error::NotADiffusionModel)
    }

    /// Byte offset of `buf` in the state region.
    pub fn offset(&self, buf: Buf) -> usize {
        self.base + 4 * self.n * buf as usize
    }

    /// Element `i` of `buf`.
    pub fn get(&self, state: &[u8], buf: Buf, i: usize) -> f32 {
        let at = self.offset(buf) + 4 * i;
        let b = &state[at..at + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Sets element `i` of `buf`.
    pub fn set(&self, state: &mut [u8], buf: Buf, i: usize, v: f32) {
        let at = self.offset(buf) + 4 * i;
        state[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// `X[i] ← f(X[i], Pred[i])` for every element, in order.
    pub fn update(&self, state: &mut [u8], mut f: impl FnMut(f32, f32) -> f32) {
        for i in 0..self.n {
            let v = f(self.get(state, Buf::X, i), self.get(state, Buf::Pred, i));
            self.set(state, Buf::X, i, v);
        }
    }

    /// Copies buffer `from` into `to`.
    pub fn copy(&self, state: &mut [u8], from: Buf, to: Buf) {
        let (a, b) = (self.offset(from), self.offset(to));
        state.copy_within(a..a + 4 * self.n, b);
    }
}
