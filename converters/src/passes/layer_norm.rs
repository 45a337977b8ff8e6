//! Fuses the decomposed LayerNorm that older PyTorch exporters emit:
//! `(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * gamma + beta`.

use super::rt;
use crate::ir::{Graph, IrOp, TId};
use mote::ops::{BinaryOp, UnaryOp};
use mote::Op;

fn binary(g: &Graph, i: usize, op: BinaryOp) -> Option<(TId, TId)> {
    (rt(g, i) == Some(&Op::Binary(op))).then(|| (g.nodes[i].inputs[0], g.nodes[i].inputs[1]))
}

fn reduce_last(g: &Graph, t: TId) -> Option<TId> {
    let i = g.producer(t)?;
    let x = g.nodes[i].inputs[0];
    match &g.nodes[i].op {
        IrOp::ReduceMean { axes } if axes.as_slice() == [g.tensors[x].shape.len() - 1] => Some(x),
        _ => None,
    }
}

/// Replaces every matched LayerNorm chain with one `LayerNorm` node.
pub fn fuse_layer_norm(g: &mut Graph) {
    for div in 0..g.nodes.len() {
        let Some(m) = match_ln(g, div) else { continue };
        let width = *g.tensors[m.x].shape.last().unwrap_or(&1);
        let gamma = match m.gamma {
            Some(t) => t,
            None => g.add_const_f32("ln.gamma.ones", vec![width], vec![1.0; width]),
        };
        let mut inputs = vec![m.x, gamma];
        inputs.extend(m.beta);
        let node = &mut g.nodes[m.last];
        node.op = IrOp::Rt(Op::LayerNorm { eps: m.eps, has_beta: m.beta.is_some() });
        node.inputs = inputs;
        node.onnx_op = "LayerNorm(fused)".into();
    }
}

struct LnMatch {
    x: TId,
    eps: f32,
    gamma: Option<TId>,
    beta: Option<TId>,
    last: usize,
}

/// A constant of shape `[width]` (or broadcastable to it from the right) expanded to `[width]`.
fn per_channel(g: &mut Graph, t: TId, width: usize) -> Option<TId> {
    let c = g.konst(t)?.to_f32();
    match c.len() {
        n if n == width => Some(t),
        1 => Some(g.add_const_f32(&format!("{}.expanded", g.tensors[t].name), vec![width], vec![c[0]; width])),
        _ => None,
    }
}

/// If node `from`'s output feeds only `op(output, per-channel constant)`, returns the
/// constant (expanded to `[width]`) and that node.
fn absorb(g: &mut Graph, from: usize, op: BinaryOp, width: usize) -> Option<(TId, usize)> {
    let out = g.nodes[from].output;
    let [c] = g.consumers(out)[..] else { return None };
    let (a, b) = binary(g, c, op)?;
    let w = if a == out { b } else { a };
    if !g.single_use(out) {
        return None;
    }
    Some((per_channel(g, w, width)?, c))
}

fn match_ln(g: &mut Graph, div: usize) -> Option<LnMatch> {
    let (centered, denom) = binary(g, div, BinaryOp::Div)?;
    let sub = g.producer(centered)?;
    let (x, mean) = binary(g, sub, BinaryOp::Sub)?;
    if reduce_last(g, mean)? != x {
        return None;
    }
    let sqrt = g.producer(denom)?;
    if rt(g, sqrt) != Some(&Op::Unary(UnaryOp::Sqrt)) {
        return None;
    }
    let add_eps = g.producer(g.nodes[sqrt].inputs[0])?;
    let (var, eps_t) = binary(g, add_eps, BinaryOp::Add)?;
    let eps = g.scalar(eps_t)?;
    let sq = g.producer(reduce_last(g, var)?)?;
    let squared_ok = match binary(g, sq, BinaryOp::Pow) {
        Some((b, e)) => b == centered && g.scalar(e) == Some(2.0),
        None => binary(g, sq, BinaryOp::Mul) == Some((centered, centered)),
    };
    if !squared_ok {
        return None;
    }
    let width = *g.tensors[x].shape.last()?;
    let gamma = absorb(g, div, BinaryOp::Mul, width);
    let beta = gamma.and_then(|(_, mul)| absorb(g, mul, BinaryOp::Add, width));
    let last = beta.or(gamma).map_or(div, |(_, node)| node);
    let (gamma, beta) = (gamma.map(|(t, _)| t), beta.map(|(t, _)| t));
    Some(LnMatch { x, eps, gamma, beta, last })
}
