//! Switch-Transformer mixture-of-experts feed-forward block with top-1 routing.
//!
//! The router runs for every token; then only the chosen expert's two layers run, so the
//! cost per token is the router plus one expert, whatever the number of experts. Scratch is
//! the router logits, the per-expert token counts and one hidden row, all on the stack.

use super::{activation::unary_f32, arity, dtype_ok, real_in, real_out, shape_ok, view};
use crate::error::{Error, Result};
use crate::ops::UnaryOp;
use crate::tensor::{DType, Desc, Out, Src, View};

/// Most experts one op may have.
pub const MAX_EXPERTS: usize = 64;
/// Largest expert hidden size `F` (its f32 row lives on the stack: 2 KiB).
pub const MAX_HIDDEN: usize = 512;

/// Dtypes of the constant weights and biases (float, so the expert math is f32).
fn float_weight(d: &Desc) -> bool {
    matches!(d.dtype, DType::F32 | DType::F16)
}

/// Validates `x [.., D]`, router `[E, D]` + `[E]`, `w1 [E, F, D]`, `b1 [E, F]`,
/// `w2 [E, D, F]`, `b2 [E, D]`, output shaped like `x`.
pub(crate) fn check(inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 7)?;
    let x = &inputs[0];
    dtype_ok(real_in(x.dtype) && real_out(out.dtype) && inputs[1..].iter().all(float_weight))?;
    let r = x.shape.rank();
    shape_ok(r >= 1 && out.shape == x.shape)?;
    let d = x.shape.dims()[r - 1];
    let router = inputs[1].shape.dims();
    shape_ok(router.len() == 2 && router[1] == d)?;
    let e = router[0];
    let w1 = inputs[3].shape.dims();
    shape_ok(w1.len() == 3 && w1[0] == e && w1[2] == d)?;
    let f = w1[1];
    if e == 0 || e as usize > MAX_EXPERTS || f == 0 || f as usize > MAX_HIDDEN {
        return Err(Error::BadShape);
    }
    shape_ok(inputs[2].shape.dims() == [e] && inputs[4].shape.dims() == [e, f])?;
    shape_ok(inputs[5].shape.dims() == [e, d, f] && inputs[6].shape.dims() == [e, d])
}

/// Router plus one expert per token: `T · (E·D + 2·F·D)`.
pub(crate) fn macs(inputs: &[Desc], out: &Desc) -> u64 {
    let (Some(router), Some(w1)) = (inputs.get(1), inputs.get(3)) else { return 0 };
    let d = out.shape.last() as u64;
    let tokens = (out.shape.numel() as u64).checked_div(d).unwrap_or(0);
    let (e, f) = (router.shape.dim(0) as u64, w1.shape.dim(1) as u64);
    tokens.saturating_mul(e.saturating_mul(d).saturating_add(2u64.saturating_mul(f).saturating_mul(d)))
}

/// `Σ_i row[i] · x[i]` for row `r` of a `[.., n]` weight view, in index order.
fn dot(w: &View<'_>, r: usize, x: &View<'_>, x0: usize, n: usize) -> f32 {
    let mut acc = 0.0f32;
    for i in 0..n {
        acc += w.get(r * n + i) * x.get(x0 + i);
    }
    acc
}

/// The routed expert of token `t` and its router probability (first maximum on ties).
fn route(router: &View<'_>, bias: &View<'_>, x: &View<'_>, t: usize, d: usize) -> (usize, f32) {
    let e = router.desc.shape.dim(0);
    let mut logits = [0f32; MAX_EXPERTS];
    for (i, l) in logits[..e].iter_mut().enumerate() {
        *l = dot(router, i, x, t * d, d) + bias.get(i);
    }
    let (mut best, mut max) = (0, f32::NEG_INFINITY);
    for (i, &l) in logits[..e].iter().enumerate() {
        if l > max {
            (best, max) = (i, l);
        }
    }
    let sum: f32 = logits[..e].iter().map(|&l| libm::expf(l - max)).sum();
    (best, if sum > 0.0 && sum.is_finite() { 1.0 / sum } else { 0.0 })
}

/// Runs the block: tokens past an expert's `capacity` (0 = unlimited) output zeros.
pub(crate) fn run(activation: UnaryOp, capacity: u32, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = view(inputs, 0)?;
    let [router, rbias, w1, b1, w2, b2] = [1, 2, 3, 4, 5, 6].map(|i| view(inputs, i));
    let (router, rbias, w1, b1, w2, b2) = (router?, rbias?, w1?, b1?, w2?, b2?);
    let d = x.desc.shape.last();
    let f = w1.desc.shape.dim(1);
    if f > MAX_HIDDEN || router.desc.shape.dim(0) > MAX_EXPERTS {
        return Err(Error::BadShape);
    }
    let tokens = x.desc.shape.numel().checked_div(d).unwrap_or(0);
    let mut taken = [0u32; MAX_EXPERTS];
    let mut hidden = [0f32; MAX_HIDDEN];
    for t in 0..tokens {
        let (e, p) = route(router, rbias, x, t, d);
        taken[e] = taken[e].saturating_add(1);
        if capacity != 0 && taken[e] > capacity {
            for i in 0..d {
                out.set(t * d + i, 0.0);
            }
            continue;
        }
        for (j, h) in hidden[..f].iter_mut().enumerate() {
            *h = unary_f32(activation, dot(w1, e * f + j, x, t * d, d) + b1.get(e * f + j));
        }
        for i in 0..d {
            let mut acc = 0.0f32;
            for (j, &h) in hidden[..f].iter().enumerate() {
                acc += w2.get((e * d + i) * f + j) * h;
            }
            out.set(t * d + i, p * (acc + b2.get(e * d + i)));
        }
    }
    Ok(())
}
