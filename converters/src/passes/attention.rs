//! Fuses spelled-out multi-head attention into the runtime's streaming `Attention` op.
//!
//! Matched form (what our zoo and PyTorch's exporters emit), with `x_flat` of shape `[B, S, H*Dh]`:
//! ```text
//! Q  = Transpose{0,2,1,3}(Reshape(q_flat -> [B,S,H,Dh]))
//! Kt = Transpose{0,2,3,1}(Reshape(k_flat))  |  Transpose{0,1,3,2}(Transpose{0,2,1,3}(Reshape(k_flat)))
//! V  = Transpose{0,2,1,3}(Reshape(v_flat))
//! P  = Softmax_last( masks ( [Mul|Div(scale)] ( Q @ Kt ) ) )
//! y  = Reshape(Transpose{0,2,1,3}(P @ V) -> [B,S,H*Dh])
//! ```
//! `masks` is up to one constant mask and one key-padding mask, in either order:
//! - `Add(scores, C)` with a constant `C` that is all zeros or causal (0 on and below the
//!   diagonal, <= -1e4 above), or GPT-2's `Where(causal_bool, scores, finfo.min)`;
//! - `Add(scores, ext)` where `ext` is Hugging Face's extended attention mask computed from a
//!   `[B, Skv]` 0/1 mask at run time: `(1 - mask[:, None, None, :].float()) * -10000` (or
//!   `* finfo.min`), or `(1 - expanded).masked_fill((1 - expanded).bool(), finfo.min)`. The
//!   raw mask becomes the op's key-mask input (non-zero = attend).
//!
//! A Softmax over `Q @ Kt` that does not match stays as plain ops, and the graph's metadata
//! gets a `mote.note` saying which node runs unfused and why.

use super::rt;
use crate::ir::{Graph, IrOp, TId};
use mote::ops::{Attention, BinaryOp, MaskMode, PositionBias, UnaryOp};
use mote::Op;

const HEADS_FIRST: [u8; 4] = [0, 2, 1, 3];
/// Additive mask values at or below this count as "masked out".
const MASKED: f32 = -1e4;

type Why = String;

fn perm_is(op: Option<&Op>, want: [u8; 4]) -> bool {
    matches!(op, Some(Op::Transpose { perm }) if perm[..4] == want)
}

fn tname(g: &Graph, t: TId) -> &str {
    &g.tensors[t].name
}

/// The single node producing `t`, if `t` is used only once.
fn sole_producer(g: &Graph, t: TId) -> Result<usize, Why> {
    if !g.single_use(t) {
        return Err(format!("'{}' is also used outside the attention pattern", tname(g, t)));
    }
    g.producer(t).ok_or_else(|| format!("'{}' is not computed by a node", tname(g, t)))
}

fn sole_consumer(g: &Graph, t: TId) -> Result<usize, Why> {
    match g.consumers(t)[..] {
        [c] if g.single_use(t) => Ok(c),
        _ => Err(format!("'{}' is also used outside the attention pattern", tname(g, t))),
    }
}

fn is_pattern(g: &Graph, i: usize, onnx_op: &str) -> bool {
    g.nodes[i].op == IrOp::PatternOnly && g.nodes[i].onnx_op == onnx_op
}

/// `x_flat` behind `Reshape(x_flat -> [B,S,H,Dh])`, with (H, Dh).
fn split_heads(g: &Graph, t: TId) -> Option<(TId, usize, usize)> {
    let r = sole_producer(g, t).ok()?;
    if rt(g, r) != Some(&Op::Reshape) {
        return None;
    }
    let flat = g.nodes[r].inputs[0];
    let (fs, hs) = (&g.tensors[flat].shape, &g.tensors[t].shape);
    (fs.len() == 3 && hs.len() == 4 && fs[..2] == hs[..2] && fs[2] == hs[2] * hs[3]).then(|| (flat, hs[2], hs[3]))
}

fn heads_first(g: &Graph, t: TId) -> Option<(TId, usize, usize)> {
    let tr = sole_producer(g, t).ok()?;
    perm_is(rt(g, tr), HEADS_FIRST).then(|| split_heads(g, g.nodes[tr].inputs[0])).flatten()
}

fn keys_transposed(g: &Graph, t: TId) -> Option<(TId, usize, usize)> {
    let tr = sole_producer(g, t).ok()?;
    let inner = g.nodes[tr].inputs[0];
    if perm_is(rt(g, tr), [0, 2, 3, 1]) {
        split_heads(g, inner)
    } else if perm_is(rt(g, tr), [0, 1, 3, 2]) {
        heads_first(g, inner)
    } else {
        None
    }
}

/// The mode of a constant additive mask `c` of `shape` over `[.., rows, cols]` scores.
fn mask_mode(c: &[f32], shape: &[usize]) -> Option<MaskMode> {
    if shape.len() < 2 || shape[..shape.len() - 2].iter().any(|&d| d != 1) {
        return None;
    }
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if c.iter().all(|&v| v == 0.0) {
        return Some(MaskMode::None);
    }
    let causal =
        (0..rows).all(|i| (0..cols).all(|j| if j <= i { c[i * cols + j] == 0.0 } else { c[i * cols + j] <= MASKED }));
    causal.then_some(MaskMode::Causal)
}

/// The raw `[B, Skv]` mask behind Hugging Face's extended attention mask `ext`.
fn key_mask(g: &Graph, ext: TId) -> Option<TId> {
    let n = g.producer(ext)?;
    let inverted = if rt(g, n) == Some(&Op::Binary(BinaryOp::Mul)) {
        let [a, b] = g.nodes[n].inputs[..] else { return None };
        match (g.scalar(a), g.scalar(b)) {
            (None, Some(c)) if c <= MASKED => a,
            (Some(c), None) if c <= MASKED => b,
            _ => return None,
        }
    } else if is_pattern(g, n, "Where") {
        // masked_fill(inverted.bool(), finfo.min) = Where(Cast<bool>(inverted), min, inverted)
        let [cond, fill, inverted] = g.nodes[n].inputs[..] else { return None };
        let cast = g.producer(cond)?;
        if !(is_pattern(g, cast, "Cast") && g.nodes[cast].inputs[0] == inverted && g.scalar(fill)? <= MASKED) {
            return None;
        }
        inverted
    } else {
        return None;
    };
    let sub = g.producer(inverted)?;
    let [one, mut t] = g.nodes[sub].inputs[..] else { return None };
    if rt(g, sub) != Some(&Op::Binary(BinaryOp::Sub)) || g.scalar(one) != Some(1.0) {
        return None;
    }
    // Casts, unit-dim reshapes and the broadcast over queries, back to the [B, Skv] input.
    let (batch, skv) = {
        let s = &g.tensors[ext].shape;
        (*s.first()?, *s.last()?)
    };
    let non_unit = |t: TId| -> Vec<usize> { g.tensors[t].shape.iter().copied().filter(|&d| d != 1).collect() };
    loop {
        if g.tensors[t].shape.len() == 2 {
            return (g.tensors[t].shape == [batch, skv]).then_some(t);
        }
        let p = g.producer(t)?;
        let x = g.nodes[p].inputs[0];
        let ok = match rt(g, p) {
            Some(Op::Unary(UnaryOp::Identity)) => true,
            Some(Op::Reshape) => non_unit(x) == non_unit(t),
            _ => is_pattern(g, p, "Expand"),
        };
        if !ok {
            return None;
        }
        t = x;
    }
}

/// Masks found between the softmax and the scaled scores.
#[derive(Default)]
struct Masks {
    mode: Option<MaskMode>,
    keys: Option<TId>,
}

impl Masks {
    fn set_mode(&mut self, m: MaskMode, at: &str) -> Result<(), Why> {
        if self.mode.replace(m).is_some() {
            return Err(format!("two constant masks are applied to the scores (at '{at}')"));
        }
        Ok(())
    }
}

/// One mask step at node `n`: returns the scores below it.
fn peel_mask(g: &Graph, n: usize, masks: &mut Masks) -> Result<Option<TId>, Why> {
    let name = &g.nodes[n].name;
    if rt(g, n) == Some(&Op::Binary(BinaryOp::Add)) {
        let [a, b] = g.nodes[n].inputs[..] else { return Ok(None) };
        for (scores, m) in [(a, b), (b, a)] {
            if let Some(c) = g.konst(m) {
                let mode = mask_mode(&c.to_f32(), &g.tensors[m].shape).ok_or_else(|| {
                    format!(
                        "the constant added to the scores ('{}') is neither zero nor a causal mask \
                         (e.g. a precomputed relative-position bias), which the Attention op cannot take",
                        tname(g, m)
                    )
                })?;
                masks.set_mode(mode, name)?;
                return Ok(Some(scores));
            }
        }
        for (scores, m) in [(b, a), (a, b)] {
            if let Some(raw) = key_mask(g, m) {
                if masks.keys.replace(raw).is_some() {
                    return Err(format!("two key-padding masks are added to the scores (at '{name}')"));
                }
                return Ok(Some(scores));
            }
        }
        let m = if g.producer(a).is_some_and(|p| rt(g, p) == Some(&Op::BatchMatMul)) { b } else { a };
        return Err(format!(
            "'{}' added to the scores at '{name}' is computed at run time and is not a key-padding mask \
             mote recognises ((1 - mask[:, None, None, :]) * -10000 or masked_fill with finfo.min)",
            tname(g, m)
        ));
    }
    if is_pattern(g, n, "Where") {
        let [cond, x, fill] = g.nodes[n].inputs[..] else { return Ok(None) };
        let (Some(c), Some(f)) = (g.konst(cond), g.scalar(fill)) else {
            return Err(format!("the Where at '{name}' over the scores has a run-time condition or fill value"));
        };
        let additive: Vec<f32> = c.to_f32().iter().map(|&v| if v != 0.0 { 0.0 } else { f }).collect();
        let mode = mask_mode(&additive, &g.tensors[cond].shape)
            .ok_or_else(|| format!("the Where at '{name}' masks the scores with a pattern that is not causal"))?;
        masks.set_mode(mode, name)?;
        return Ok(Some(x));
    }
    Ok(None)
}

struct Found {
    inputs: Vec<TId>,
    attention: Attention,
    last: usize,
}

/// Whether `softmax` normalises something computed from a `BatchMatMul` (through at most a
/// few element-wise steps) and feeds another: attention in any spelling.
fn looks_like_attention(g: &Graph, softmax: usize) -> bool {
    if !matches!(rt(g, softmax), Some(Op::Softmax { .. })) {
        return false;
    }
    fn reaches_bmm(g: &Graph, t: TId, depth: usize) -> bool {
        let Some(p) = g.producer(t) else { return false };
        match &g.nodes[p].op {
            IrOp::Rt(Op::BatchMatMul) => true,
            IrOp::Rt(Op::Binary(_) | Op::Unary(_)) | IrOp::PatternOnly if depth > 0 => {
                g.nodes[p].inputs.iter().any(|&i| reaches_bmm(g, i, depth - 1))
            }
            _ => false,
        }
    }
    let out = g.nodes[softmax].output;
    reaches_bmm(g, g.nodes[softmax].inputs[0], 4)
        && g.consumers(out).iter().any(|&c| rt(g, c) == Some(&Op::BatchMatMul))
}

fn match_at(g: &Graph, softmax: usize) -> Result<Found, Why> {
    if rt(g, softmax) != Some(&Op::Softmax { axis: 3 }) || g.tensors[g.nodes[softmax].output].shape.len() != 4 {
        return Err("the softmax is not over the last axis of [B, H, Sq, Skv] scores".into());
    }
    // Walk back: masks, optional scale, then Q @ Kt.
    let mut t = g.nodes[softmax].inputs[0];
    let mut node = sole_producer(g, t)?;
    let mut masks = Masks::default();
    for _ in 0..2 {
        match peel_mask(g, node, &mut masks)? {
            Some(scores) => {
                t = scores;
                node = sole_producer(g, t)?;
            }
            None => break,
        }
    }
    let mut scale = 1.0f32;
    if let Some(Op::Binary(op @ (BinaryOp::Mul | BinaryOp::Div))) = rt(g, node) {
        let [a, b] = g.nodes[node].inputs[..] else { return Err("malformed scale".into()) };
        let c = g.scalar(b).ok_or_else(|| format!("the scores are scaled by '{}', not a constant", tname(g, b)))?;
        scale = if *op == BinaryOp::Mul { c } else { 1.0 / c };
        t = a;
        node = sole_producer(g, t)?;
    }
    if rt(g, node) != Some(&Op::BatchMatMul) {
        return Err(format!(
            "the scores '{}' come from '{}' ({}), not straight from Q @ K^T",
            tname(g, t),
            g.nodes[node].name,
            g.nodes[node].onnx_op
        ));
    }
    let (q, heads, head_dim) = heads_first(g, g.nodes[node].inputs[0])
        .ok_or("the queries are not split into heads by Reshape [B,S,H,Dh] + Transpose(0,2,1,3)")?;
    let (k, kh, kd) = keys_transposed(g, g.nodes[node].inputs[1])
        .ok_or("the keys are not split into heads and transposed to [B,H,Dh,S]")?;
    // Forward: P @ V, then merge heads.
    let pv = sole_consumer(g, g.nodes[softmax].output)?;
    if rt(g, pv) != Some(&Op::BatchMatMul) || g.nodes[pv].inputs[0] != g.nodes[softmax].output {
        return Err("the probabilities do not multiply the values (P @ V)".into());
    }
    let (v, vh, vd) = heads_first(g, g.nodes[pv].inputs[1])
        .ok_or("the values are not split into heads by Reshape + Transpose(0,2,1,3)")?;
    let tr = sole_consumer(g, g.nodes[pv].output)?;
    if !perm_is(rt(g, tr), HEADS_FIRST) {
        return Err("P @ V is not transposed back to [B,S,H,Dh]".into());
    }
    let merge = sole_consumer(g, g.nodes[tr].output)?;
    let out_shape = &g.tensors[g.nodes[merge].output].shape;
    if rt(g, merge) != Some(&Op::Reshape) || out_shape.len() != 3 || out_shape[2] != heads * head_dim {
        return Err("the heads are not merged back to [B,S,H*Dh]".into());
    }
    if (kh, kd, vh, vd) != (heads, head_dim, heads, head_dim) {
        return Err(format!("queries, keys and values disagree on heads x head size ({heads}x{head_dim})"));
    }
    let mask = masks.mode.unwrap_or(MaskMode::None);
    let (batch, sq, skv) = (g.tensors[q].shape[0], g.tensors[q].shape[1], g.tensors[k].shape[1]);
    if mask == MaskMode::Causal && sq != skv {
        return Err("a causal mask over queries and keys of different lengths".into());
    }
    if let Some(m) = masks.keys {
        if g.tensors[m].shape != [batch, skv] {
            return Err(format!("the key mask '{}' is not [B, Skv] = [{batch}, {skv}]", tname(g, m)));
        }
    }
    let (heads, head_dim) = (heads as u16, head_dim as u16);
    let key_mask = masks.keys.is_some();
    let attention = Attention { heads, head_dim, mask, key_mask, bias: PositionBias::None, scale, cache: None };
    let mut inputs = vec![q, k, v];
    inputs.extend(masks.keys);
    Ok(Found { inputs, attention, last: merge })
}

/// Replaces every matched attention subgraph with one `Attention` node; for each Softmax
/// that looks like attention but does not match, adds a `mote.note` to the graph metadata.
pub fn fuse_attention(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        if !looks_like_attention(g, i) {
            continue;
        }
        match match_at(g, i) {
            Ok(f) => {
                let n = &mut g.nodes[f.last];
                n.op = IrOp::Rt(Op::Attention(f.attention));
                n.inputs = f.inputs;
                n.onnx_op = "Attention(fused)".into();
            }
            Err(why) => {
                let note = format!("attention at node '{}' runs unfused: {why}", g.nodes[i].name);
                g.metadata.push((super::NOTE_KEY.into(), note));
            }
        }
    }
}
