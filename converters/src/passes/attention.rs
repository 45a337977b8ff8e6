//! Fuses spelled-out multi-head attention into the runtime's streaming `Attention` op.
//!
//! Matched form (what our zoo and PyTorch exporters emit), with `x_flat` of shape `[B, S, H*Dh]`:
//! ```text
//! Q  = Transpose{0,2,1,3}(Reshape(q_flat -> [B,S,H,Dh]))
//! Kt = Transpose{0,2,3,1}(Reshape(k_flat))  |  Transpose{0,1,3,2}(Transpose{0,2,1,3}(Reshape(k_flat)))
//! V  = Transpose{0,2,1,3}(Reshape(v_flat))
//! P  = Softmax_last( [Add(mask)] ( [Mul|Div(scale)] ( Q @ Kt ) ) )
//! y  = Reshape(Transpose{0,2,1,3}(P @ V) -> [B,S,H*Dh])
//! ```
//! The constant mask must be all zeros (no mask) or causal (0 on and below the diagonal,
//! very negative above); anything else stays unfused and runs as plain ops.

use super::rt;
use crate::ir::{Graph, IrOp, TId};
use mote::ops::{Attention, BinaryOp, MaskMode, PositionBias};
use mote::Op;

const HEADS_FIRST: [u8; 4] = [0, 2, 1, 3];

fn perm_is(op: Option<&Op>, want: [u8; 4]) -> bool {
    matches!(op, Some(Op::Transpose { perm }) if perm[..4] == want)
}

/// The single node producing `t`, if `t` is used only once.
fn sole_producer(g: &Graph, t: TId) -> Option<usize> {
    g.single_use(t).then(|| g.producer(t)).flatten()
}

fn sole_consumer(g: &Graph, t: TId) -> Option<usize> {
    match g.consumers(t)[..] {
        [c] if g.single_use(t) => Some(c),
        _ => None,
    }
}

/// `x_flat` behind `Reshape(x_flat -> [B,S,H,Dh])`, with (H, Dh).
fn split_heads(g: &Graph, t: TId) -> Option<(TId, usize, usize)> {
    let r = sole_producer(g, t)?;
    if rt(g, r) != Some(&Op::Reshape) {
        return None;
    }
    let flat = g.nodes[r].inputs[0];
    let (fs, hs) = (&g.tensors[flat].shape, &g.tensors[t].shape);
    (fs.len() == 3 && hs.len() == 4 && fs[..2] == hs[..2] && fs[2] == hs[2] * hs[3]).then(|| (flat, hs[2], hs[3]))
}

fn heads_first(g: &Graph, t: TId) -> Option<(TId, usize, usize)> {
    let tr = sole_producer(g, t)?;
    perm_is(rt(g, tr), HEADS_FIRST).then(|| split_heads(g, g.nodes[tr].inputs[0])).flatten()
}

fn keys_transposed(g: &Graph, t: TId) -> Option<(TId, usize, usize)> {
    let tr = sole_producer(g, t)?;
    let inner = g.nodes[tr].inputs[0];
    if perm_is(rt(g, tr), [0, 2, 3, 1]) {
        split_heads(g, inner)
    } else if perm_is(rt(g, tr), [0, 1, 3, 2]) {
        heads_first(g, inner)
    } else {
        None
    }
}

fn mask_mode(g: &Graph, mask: TId) -> Option<MaskMode> {
    let c = g.konst(mask)?.to_f32();
    let shape = &g.tensors[mask].shape;
    if shape.len() < 2 || shape[..shape.len() - 2].iter().any(|&d| d != 1) {
        return None;
    }
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if c.iter().all(|&v| v == 0.0) {
        return Some(MaskMode::None);
    }
    let causal =
        (0..rows).all(|i| (0..cols).all(|j| if j <= i { c[i * cols + j] == 0.0 } else { c[i * cols + j] <= -1e4 }));
    causal.then_some(MaskMode::Causal)
}

struct Found {
    q: TId,
    k: TId,
    v: TId,
    attention: Attention,
    last: usize,
}

fn match_at(g: &Graph, softmax: usize) -> Option<Found> {
    if rt(g, softmax) != Some(&Op::Softmax { axis: 3 }) {
        return None;
    }
    let x = g.nodes[softmax].inputs[0];
    // Walk back: optional mask, optional scale, then Q @ Kt.
    let mut t = x;
    let mut mask = MaskMode::None;
    let mut scale = 1.0f32;
    let mut node = sole_producer(g, t)?;
    if rt(g, node) == Some(&Op::Binary(BinaryOp::Add)) {
        let [a, b] = g.nodes[node].inputs[..] else { return None };
        let (scores, m) = if g.konst(b).is_some() { (a, b) } else { (b, a) };
        mask = mask_mode(g, m)?;
        t = scores;
        node = sole_producer(g, t)?;
    }
    if let Some(Op::Binary(op @ (BinaryOp::Mul | BinaryOp::Div))) = rt(g, node) {
        let [a, b] = g.nodes[node].inputs[..] else { return None };
        let c = g.scalar(b)?;
        scale = if *op == BinaryOp::Mul { c } else { 1.0 / c };
        t = a;
        node = sole_producer(g, t)?;
    }
    if rt(g, node) != Some(&Op::BatchMatMul) {
        return None;
    }
    let (q, heads, head_dim) = heads_first(g, g.nodes[node].inputs[0])?;
    let (k, kh, kd) = keys_transposed(g, g.nodes[node].inputs[1])?;
    // Forward: P @ V, then merge heads.
    let pv = sole_consumer(g, g.nodes[softmax].output)?;
    if rt(g, pv) != Some(&Op::BatchMatMul) || g.nodes[pv].inputs[0] != g.nodes[softmax].output {
        return None;
    }
    let (v, vh, vd) = heads_first(g, g.nodes[pv].inputs[1])?;
    let tr = sole_consumer(g, g.nodes[pv].output)?;
    if !perm_is(rt(g, tr), HEADS_FIRST) {
        return None;
    }
    let merge = sole_consumer(g, g.nodes[tr].output)?;
    let out_shape = &g.tensors[g.nodes[merge].output].shape;
    if rt(g, merge) != Some(&Op::Reshape) || out_shape.len() != 3 || out_shape[2] != heads * head_dim {
        return None;
    }
    if (kh, kd, vh, vd) != (heads, head_dim, heads, head_dim)
        || (mask == MaskMode::Causal && g.tensors[q].shape[1] != g.tensors[k].shape[1])
    {
        return None;
    }
    let (heads, head_dim) = (heads as u16, head_dim as u16);
    let attention =
        Attention { heads, head_dim, mask, key_mask: false, bias: PositionBias::None, scale, cache: None };
    Some(Found { q, k, v, attention, last: merge })
}

/// Replaces every matched attention subgraph with one `Attention` node.
pub fn fuse_attention(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        if let Some(f) = match_at(g, i) {
            let n = &mut g.nodes[f.last];
            n.op = IrOp::Rt(Op::Attention(f.attention));
            n.inputs = vec![f.q, f.k, f.v];
            n.onnx_op = "Attention(fused)".into();
        }
    }
}
