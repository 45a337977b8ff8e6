//! Fused, streaming multi-head attention with an optional KV cache in the state region.
//!
//! Every (batch, head, query row) runs an online softmax over keys in blocks of [`BLOCK`]
//! whose boundaries sit at absolute key positions (`0, BLOCK, 2·BLOCK, ..`). Scratch is one
//! f32 accumulator of `head_dim` (at most [`MAX_HEAD_DIM`]) plus one block of scores, on the
//! stack. Because keys are visited in the same order with the same block boundaries whether
//! they come from the `k`/`v` inputs (no cache) or from the cache, a query row gives
//! bit-identical output in a full forward pass and in incremental decoding.
//!
//! Masks and positional terms are computed per (query, key) on the fly, never stored: the
//! [`MaskMode`] rule at the query's key position `qpos` (see its docs), an optional key mask
//! input (non-zero = attend; `[B, Skv]` without a cache, `[1, capacity]` indexed by absolute
//! cache position with one), and an optional [`PositionBias`] (T5 buckets or
//! Transformer-XL relative terms). A row that can attend to nothing is zero.

use super::{dtype_ok, real_in, real_out, shape_ok, view, Context};
use crate::error::{Error, Result};
use crate::ops::{relative_bucket, Attention, KvCache, MaskMode, PositionBias};
use crate::tensor::{DType, Desc, Out, Src, View};

/// Keys per online-softmax block.
pub const BLOCK: usize = 16;
/// Largest supported `head_dim` (size of the stack accumulator).
pub const MAX_HEAD_DIM: usize = 256;

/// Dtypes accepted for index-like inputs (key mask, prefix lengths).
fn index_like(d: DType) -> bool {
    real_in(d) || d == DType::I32
}

/// Validates attention operands, parameters and cache placement.
pub(crate) fn check(a: &Attention, inputs: &[Desc], out: &Desc, state_bytes: usize) -> Result<()> {
    if inputs.len() != a.n_inputs() {
        return Err(Error::BadArity);
    }
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    if a.heads == 0 || a.head_dim == 0 || a.head_dim as usize > MAX_HEAD_DIM {
        return Err(Error::BadParams);
    }
    dtype_ok(real_in(q.dtype) && real_in(k.dtype) && real_in(v.dtype) && real_out(out.dtype))?;
    let hd = a.heads as u32 * a.head_dim as u32;
    let (qd, kd) = (q.shape.dims(), k.shape.dims());
    shape_ok(qd.len() == 3 && kd.len() == 3 && qd[2] == hd && kd[2] == hd && kd[0] == qd[0])?;
    shape_ok(v.shape == k.shape && out.shape == q.shape)?;
    let (batch, sq, skv) = (qd[0], qd[1], kd[1]);
    // Key positions the op can see: the cache capacity, or the keys given.
    let positions = a.cache.map_or(skv, |c| c.capacity);
    let mut extra = inputs[3..].iter();
    if a.key_mask {
        let m = extra.next().ok_or(Error::BadArity)?;
        dtype_ok(index_like(m.dtype))?;
        shape_ok(m.shape.dims() == [batch, positions])?;
    }
    if a.mask == MaskMode::Prefix {
        let p = extra.next().ok_or(Error::BadArity)?;
        dtype_ok(index_like(p.dtype))?;
        shape_ok(p.shape.dims() == [batch])?;
    }
    match a.bias {
        PositionBias::None => {}
        PositionBias::Buckets { buckets, .. } => {
            let t = extra.next().ok_or(Error::BadArity)?;
            dtype_ok(real_in(t.dtype))?;
            shape_ok(buckets >= 2 && t.shape.dims() == [buckets as u32, a.heads as u32])?;
        }
        PositionBias::XlRelative => {
            if a.mask != MaskMode::Causal {
                return Err(Error::BadParams);
            }
            let (u, vb, r) = (extra.next(), extra.next(), extra.next());
            let (Some(u), Some(vb), Some(r)) = (u, vb, r) else { return Err(Error::BadArity) };
            dtype_ok(real_in(u.dtype) && real_in(vb.dtype) && real_in(r.dtype))?;
            shape_ok(u.shape.dims() == [hd] && vb.shape.dims() == [hd])?;
            // Distances run from 0 to positions - 1.
            shape_ok(r.shape.rank() == 2 && r.shape.dim(1) as u32 == hd && r.shape.dim(0) as u32 >= positions)?;
        }
    }
    match a.cache {
        // Masked queries are aligned with the last `Sq` keys.
        None => shape_ok(a.mask == MaskMode::None || sq <= skv),
        Some(c) => {
            shape_ok(batch == 1 && skv == sq)?;
            dtype_ok(k.dtype == v.dtype)?;
            if c.capacity == 0 || sq > c.capacity {
                return Err(Error::BadParams);
            }
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

/// `2 · B · H · Sq · Skv · Dh` (doubled again for Transformer-XL's positional term), with
/// `Skv` = capacity when cached.
pub(crate) fn macs(a: &Attention, inputs: &[Desc]) -> u64 {
    let (Some(q), Some(k)) = (inputs.first(), inputs.get(1)) else {
        return 0;
    };
    let skv = match a.cache {
        Some(c) => c.capacity as u64,
        None => k.shape.dim(1) as u64,
    };
    let terms = if a.bias == PositionBias::XlRelative { 4u64 } else { 2 };
    [q.shape.dim(0) as u64, a.heads as u64, q.shape.dim(1) as u64, skv, a.head_dim as u64]
        .iter()
        .fold(terms, |acc, &x| acc.saturating_mul(x))
}

/// The optional inputs after `q`, `k`, `v`, in their fixed order.
struct Extras<'r, 'a> {
    key_mask: Option<&'r View<'a>>,
    prefix: Option<&'r View<'a>>,
    table: Option<&'r View<'a>>,
    /// Transformer-XL `u`, `v` and `r`.
    xl: Option<(&'r View<'a>, &'r View<'a>, &'r View<'a>)>,
}

impl<'r, 'a> Extras<'r, 'a> {
    fn new(a: &Attention, inputs: &'r [Src<'a>]) -> Result<Self> {
        let mut i = 3;
        let mut next = || {
            i += 1;
            view(inputs, i - 1)
        };
        let key_mask = if a.key_mask { Some(next()?) } else { None };
        let prefix = if a.mask == MaskMode::Prefix { Some(next()?) } else { None };
        let (table, xl) = match a.bias {
            PositionBias::None => (None, None),
            PositionBias::Buckets { .. } => (Some(next()?), None),
            PositionBias::XlRelative => (None, Some((next()?, next()?, next()?))),
        };
        Ok(Extras { key_mask, prefix, table, xl })
    }
}

/// Runs attention, appending to the cache first when there is one.
pub(crate) fn run(a: &Attention, inputs: &[Src<'_>], out: &mut Out<'_>, ctx: &mut Context<'_>) -> Result<()> {
    let (q, k, v) = (view(inputs, 0)?, view(inputs, 1)?, view(inputs, 2)?);
    let extras = Extras::new(a, inputs)?;
    let (heads, dh) = (a.heads as usize, a.head_dim as usize);
    if dh > MAX_HEAD_DIM {
        return Err(Error::BadParams);
    }
    let hd = heads * dh;
    let (batch, sq) = (q.desc.shape.dim(0), q.desc.shape.dim(1));
    let Some(cache) = a.cache else {
        let skv = k.desc.shape.dim(1);
        let offset = skv.saturating_sub(sq);
        for b in 0..batch {
            let keys = Keys { k, v, base: b * skv * hd, hd };
            for s in 0..sq {
                let row = Row { a, q, extras: &extras, b, s, qpos: s + offset, total: skv, hd };
                row.run(&keys, out);
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
    for s in 0..sq {
        let row = Row { a, q, extras: &extras, b: 0, s, qpos: pos + s, total, hd };
        row.run(&keys, out);
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

/// One query row (all heads): where it sits and which keys exist.
struct Row<'r, 'a> {
    a: &'r Attention,
    q: &'r View<'a>,
    extras: &'r Extras<'r, 'a>,
    b: usize,
    s: usize,
    /// The query's key position.
    qpos: usize,
    /// Keys present (given, or cached so far).
    total: usize,
    hd: usize,
}

impl Row<'_, '_> {
    /// Keys the mask mode could let this row see: `0..n`.
    fn key_range(&self) -> usize {
        let causal_end = (self.qpos + 1).min(self.total);
        match self.a.mask {
            MaskMode::None => self.total,
            MaskMode::Causal => causal_end,
            MaskMode::Prefix => causal_end.max(self.prefix().min(self.total)),
        }
    }

    fn prefix(&self) -> usize {
        // Negative or NaN lengths read as 0 (`as` saturates).
        self.extras.prefix.map_or(0, |p| p.get(self.b) as usize)
    }

    /// Whether key `j` (below [`Row::key_range`]) is visible.
    fn visible(&self, j: usize) -> bool {
        let by_mode = match self.a.mask {
            MaskMode::None => true,
            MaskMode::Causal => j <= self.qpos,
            MaskMode::Prefix => j <= self.qpos || j < self.prefix(),
        };
        let n = self.extras.key_mask.map_or(0, |m| m.desc.shape.dim(1));
        by_mode && self.extras.key_mask.is_none_or(|m| m.get(self.b * n + j) != 0.0)
    }

    /// Computes every head of this row and writes it to `out`.
    fn run(&self, keys: &Keys<'_, '_>, out: &mut Out<'_>) {
        let dh = self.a.head_dim as usize;
        let sq = self.q.desc.shape.dim(1);
        let row = (self.b * sq + self.s) * self.hd;
        let n_keys = self.key_range();
        let visible = |j: usize| self.visible(j);
        for h in 0..self.a.heads as usize {
            let mut qv = [0f32; MAX_HEAD_DIM];
            let mut qr = [0f32; MAX_HEAD_DIM];
            let mut acc = [0f32; MAX_HEAD_DIM];
            let (qv, qr, acc) = (&mut qv[..dh], &mut qr[..dh], &mut acc[..dh]);
            for (d, x) in qv.iter_mut().enumerate() {
                *x = self.q.get(row + h * dh + d);
            }
            if let Some((u, vb, _)) = self.extras.xl {
                for d in 0..dh {
                    qr[d] = qv[d] + vb.get(h * dh + d);
                    qv[d] += u.get(h * dh + d);
                }
            }
            let off = keys.base + h * dh;
            let key = |j: usize, d: usize| keys.k.get(off + j * keys.hd + d);
            let value = |j: usize, d: usize| keys.v.get(off + j * keys.hd + d);
            let bias = |j: usize| self.bias(h, j, qr);
            let scores = Scores { q: qv, scale: self.a.scale, key, bias };
            attend(&scores, n_keys, value, &visible, acc);
            for (d, &y) in acc.iter().enumerate() {
                out.set(row + h * dh + d, y);
            }
        }
    }

    /// The positional term of head `h` for key `j` (`qr` = `q + v` for Transformer-XL).
    fn bias(&self, h: usize, j: usize, qr: &[f32]) -> f32 {
        match self.a.bias {
            PositionBias::None => 0.0,
            PositionBias::Buckets { buckets, max_distance, bidirectional } => {
                let rel = j as i64 - self.qpos as i64;
                let rel = rel.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                let bucket = relative_bucket(rel, buckets, max_distance, bidirectional) as usize;
                self.extras.table.map_or(0.0, |t| t.get(bucket * self.a.heads as usize + h))
            }
            PositionBias::XlRelative => {
                // Causal rows only see j <= qpos, so the distance is never negative.
                let (Some((_, _, r)), Some(distance)) = (self.extras.xl, self.qpos.checked_sub(j)) else {
                    return 0.0;
                };
                let base = distance * self.hd + h * qr.len();
                let dot: f32 = qr.iter().enumerate().map(|(d, &x)| x * r.get(base + d)).sum();
                dot * self.a.scale
            }
        }
    }
}

/// How a row scores key `j`: `scale · (q · key(j)) + bias(j)`.
struct Scores<'q, K, B> {
    q: &'q [f32],
    scale: f32,
    key: K,
    bias: B,
}

impl<K: Fn(usize, usize) -> f32, B: Fn(usize) -> f32> Scores<'_, K, B> {
    fn score(&self, j: usize) -> f32 {
        let mut dot = 0.0f32;
        for (d, &x) in self.q.iter().enumerate() {
            dot += x * (self.key)(j, d);
        }
        dot * self.scale + (self.bias)(j)
    }
}

/// Online softmax of the scores over visible keys `0..n_keys` in blocks of [`BLOCK`],
/// accumulating `value(j)` into `acc` (normalised on return; zero if no key was visible).
fn attend<K: Fn(usize, usize) -> f32, B: Fn(usize) -> f32>(
    scores_of: &Scores<'_, K, B>,
    n_keys: usize,
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
                let sc = scores_of.score(j);
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
