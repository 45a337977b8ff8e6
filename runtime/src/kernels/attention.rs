//! Fused, streaming multi-head attention with an optional KV cache in the state region.
//!
//! Every (batch, head, query row) runs an online softmax over keys in blocks of [`BLOCK`]
//! whose boundaries sit at absolute key positions (`0, BLOCK, 2·BLOCK, ..`). Scratch is one
//! f32 accumulator of `head_dim` (at most [`MAX_HEAD_DIM`]) plus one block of scores, on the
//! stack. Because keys are visited in the same order with the same block boundaries whether
//! they come from the `k`/`v` inputs (no cache) or from the cache, a query row gives
//! bit-identical output in a full forward pass and in incremental decoding.
//!
//! Masks: `Causal` lets the query at absolute position `p` see keys `<= p`; an optional 4th
//! input masks keys (non-zero = attend) and is `[B, Skv]` without a cache and `[1, capacity]`
//! (indexed by absolute cache position) with one. A row that can attend to nothing is zero.

use super::{dtype_ok, real_in, real_out, shape_ok, view, Context};
use crate::error::{Error, Result};
use crate::ops::{Attention, KvCache, MaskMode};
use crate::tensor::{Desc, Out, Src, View};

/// Keys per online-softmax block.
pub const BLOCK: usize = 16;
/// Largest supported `head_dim` (size of the stack accumulator).
pub const MAX_HEAD_DIM: usize = 256;

/// Validates attention operands, parameters and cache placement.
pub(crate) fn check(a: &Attention, inputs: &[Desc], out: &Desc, state_bytes: usize) -> Result<()> {
    if inputs.len() != 3 && inputs.len() != 4 {
        return Err(Error::BadArity);
    }
    let (q, k, v, mask) = (&inputs[0], &inputs[1], &inputs[2], inputs.get(3));
    if a.heads == 0 || a.head_dim == 0 || a.head_dim as usize > MAX_HEAD_DIM {
        return Err(Error::BadParams);
    }
    dtype_ok(real_in(q.dtype) && real_in(k.dtype) && real_in(v.dtype) && real_out(out.dtype))?;
    let hd = a.heads as u32 * a.head_dim as u32;
    let (qd, kd) = (q.shape.dims(), k.shape.dims());
    shape_ok(qd.len() == 3 && kd.len() == 3 && qd[2] == hd && kd[2] == hd && kd[0] == qd[0])?;
    shape_ok(v.shape == k.shape && out.shape == q.shape)?;
    let (batch, sq, skv) = (qd[0], qd[1], kd[1]);
    match a.cache {
        None => {
            shape_ok(a.mask != MaskMode::Causal || sq == skv)?;
            shape_ok(mask.is_none_or(|m| m.shape.dims() == [batch, skv]))
        }
        Some(c) => {
            shape_ok(batch == 1 && skv == sq)?;
            dtype_ok(k.dtype == v.dtype)?;
            if c.capacity == 0 || sq > c.capacity {
                return Err(Error::BadParams);
            }
            shape_ok(mask.is_none_or(|m| m.shape.dims() == [1, c.capacity]))?;
            let (k_end, v_end) = regions(&c, hd as usize * k.dtype.size())?;
            let disjoint = k_end <= c.v_offset as usize || v_end <= c.k_offset as usize;
            if k_end > state_bytes || v_end > state_bytes || !disjoint {
                return Err(Error::BadParams);
            }
            Ok(())
        }
    }
}

/// End offsets of the key and value cache regions for rows of `row_bytes` bytes.
fn regions(c: &KvCache, row_bytes: usize) -> Result<(usize, usize)> {
    let len = (c.capacity as usize).checked_mul(row_bytes).ok_or(Error::BadParams)?;
    let k_end = (c.k_offset as usize).checked_add(len).ok_or(Error::BadParams)?;
    let v_end = (c.v_offset as usize).checked_add(len).ok_or(Error::BadParams)?;
    Ok((k_end, v_end))
}

/// `2 · B · H · Sq · Skv · Dh`, with `Skv` = capacity when cached.
pub(crate) fn macs(a: &Attention, inputs: &[Desc]) -> u64 {
    let (Some(q), Some(k)) = (inputs.first(), inputs.get(1)) else {
        return 0;
    };
    let skv = match a.cache {
        Some(c) => c.capacity as u64,
        None => k.shape.dim(1) as u64,
    };
    [q.shape.dim(0) as u64, a.heads as u64, q.shape.dim(1) as u64, skv, a.head_dim as u64]
        .iter()
        .fold(2u64, |acc, &x| acc.saturating_mul(x))
}

/// Runs attention, appending to the cache first when there is one.
pub(crate) fn run(a: &Attention, inputs: &[Src<'_>], out: &mut Out<'_>, ctx: &mut Context<'_>) -> Result<()> {
    let (q, k, v) = (view(inputs, 0)?, view(inputs, 1)?, view(inputs, 2)?);
    let mask = if inputs.len() > 3 { Some(view(inputs, 3)?) } else { None };
    let (heads, dh) = (a.heads as usize, a.head_dim as usize);
    if dh > MAX_HEAD_DIM {
        return Err(Error::BadParams);
    }
    let hd = heads * dh;
    let (batch, sq) = (q.desc.shape.dim(0), q.desc.shape.dim(1));
    let visible = |b: usize, j: usize, n: usize| mask.is_none_or(|m| m.get(b * n + j) != 0.0);
    let Some(cache) = a.cache else {
        let skv = k.desc.shape.dim(1);
        for b in 0..batch {
            for s in 0..sq {
                let n_keys = if a.mask == MaskMode::Causal { skv.min(s + 1) } else { skv };
                let keys = Keys { k, v, base: b * skv * hd, hd };
                let row = Row { a, q, b, s, hd, n_keys };
                row.run(&keys, |j| visible(b, j, skv), out);
            }
        }
        return Ok(());
    };
    let pos = ctx.position as usize;
    let total = pos.checked_add(sq).ok_or(Error::StateFull)?;
    if total > cache.capacity as usize {
        return Err(Error::StateFull);
    }
    let row_bytes = hd * k.desc.dtype.size();
    let (k_end, v_end) = regions(&cache, row_bytes)?;
    let given = ctx.state.len();
    if k.desc.dtype != v.desc.dtype {
        return Err(Error::BadDType);
    }
    if k_end > given || v_end > given {
        let needed = u32::try_from(k_end.max(v_end)).unwrap_or(u32::MAX);
        return Err(Error::ArenaTooSmall { needed, given: u32::try_from(given).unwrap_or(u32::MAX) });
    }
    let (k0, v0) = (cache.k_offset as usize, cache.v_offset as usize);
    let new = sq * row_bytes;
    let at = pos * row_bytes;
    ctx.state[k0 + at..k0 + at + new].copy_from_slice(&k.bytes[..new]);
    ctx.state[v0 + at..v0 + at + new].copy_from_slice(&v.bytes[..new]);
    let state: &[u8] = ctx.state;
    let kc = View { desc: k.desc, bytes: &state[k0..k_end], channel_scales: None };
    let vc = View { desc: v.desc, bytes: &state[v0..v_end], channel_scales: None };
    let keys = Keys { k: &kc, v: &vc, base: 0, hd };
    let cap = cache.capacity as usize;
    for s in 0..sq {
        let n_keys = if a.mask == MaskMode::Causal { pos + s + 1 } else { total };
        let row = Row { a, q, b: 0, s, hd, n_keys };
        row.run(&keys, |j| visible(0, j, cap), out);
    }
    Ok(())
}

/// Where one (batch) slice of keys and values lives: element `(j, d)` of head `h` is at
/// `base + j·hd + h·Dh + d`.
struct Keys<'r, 'a> {
    k: &'r View<'a>,
    v: &'r View<'a>,
    base: usize,
    hd: usize,
}

/// One query row (all heads) and the number of keys it may see.
struct Row<'r, 'a> {
    a: &'r Attention,
    q: &'r View<'a>,
    b: usize,
    s: usize,
    hd: usize,
    n_keys: usize,
}

impl Row<'_, '_> {
    /// Computes every head of this row and writes it to `out`.
    fn run(&self, keys: &Keys<'_, '_>, visible: impl Fn(usize) -> bool, out: &mut Out<'_>) {
        let dh = self.a.head_dim as usize;
        let sq = self.q.desc.shape.dim(1);
        let row = (self.b * sq + self.s) * self.hd;
        for h in 0..self.a.heads as usize {
            let mut qv = [0f32; MAX_HEAD_DIM];
            let mut acc = [0f32; MAX_HEAD_DIM];
            let (qv, acc) = (&mut qv[..dh], &mut acc[..dh]);
            for (d, x) in qv.iter_mut().enumerate() {
                *x = self.q.get(row + h * dh + d);
            }
            let off = keys.base + h * dh;
            let key = |j: usize, d: usize| keys.k.get(off + j * keys.hd + d);
            let value = |j: usize, d: usize| keys.v.get(off + j * keys.hd + d);
            attend(qv, self.n_keys, self.a.scale, key, value, &visible, acc);
            for (d, &y) in acc.iter().enumerate() {
                out.set(row + h * dh + d, y);
            }
        }
    }
}

/// Online softmax of `q · key(j)ᵀ · scale` over visible keys `0..n_keys` in blocks of
/// [`BLOCK`], accumulating `value(j)` into `acc` (normalised on return; zero if no key was
/// visible).
fn attend(
    q: &[f32],
    n_keys: usize,
    scale: f32,
    key: impl Fn(usize, usize) -> f32,
    value: impl Fn(usize, usize) -> f32,
    visible: &impl Fn(usize) -> bool,
    acc: &mut [f32],
) {
    let mut max = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    let mut start = 0;
    while start < n_keys {
        let end = n_keys.min(start + BLOCK);
        let mut scores = [0f32; BLOCK];
        let mut live = [false; BLOCK];
        let mut block_max = f32::NEG_INFINITY;
        for j in start..end {
            if visible(j) {
                let mut dot = 0.0f32;
                for (d, &x) in q.iter().enumerate() {
                    dot += x * key(j, d);
                }
                let sc = dot * scale;
                scores[j - start] = sc;
                live[j - start] = true;
                block_max = libm::fmaxf(block_max, sc);
            }
        }
        let new_max = libm::fmaxf(max, block_max);
        if block_max == f32::NEG_INFINITY || new_max == f32::NEG_INFINITY {
            start = end;
            continue; // nothing visible in this block (or only -inf scores)
        }
        let alpha = libm::expf(max - new_max);
        sum *= alpha;
        for x in acc.iter_mut() {
            *x *= alpha;
        }
        for j in start..end {
            if live[j - start] {
                let p = libm::expf(scores[j - start] - new_max);
                sum += p;
                for (d, x) in acc.iter_mut().enumerate() {
                    *x += p * value(j, d);
                }
            }
        }
        max = new_max;
        start = end;
    }
    for x in acc.iter_mut() {
        *x = if sum == 0.0 { 0.0 } else { *x / sum };
    }
}
