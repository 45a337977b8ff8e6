//! Fuses RMSNorm as T5's `T5LayerNorm` (and LLaMA-style norms) export it:
//! `w * (x * rsqrt(mean(x^2) + eps))`, with `x^2` as `Pow(x, 2)` or `Mul(x, x)` and the inverse
//! square root as `Div(1, Sqrt(..))`, `Reciprocal(Sqrt(..))` or a direct `Div(x, Sqrt(..))`.

use super::gelu::with_const;
use super::rt;
use crate::ir::{Graph, IrOp, TId};
use mote::ops::{BinaryOp, UnaryOp};
use mote::Op;

struct RmsMatch {
    x: TId,
    eps: f32,
    gamma: Option<TId>,
    last: usize,
}

fn sole_consumer(g: &Graph, t: TId) -> Option<usize> {
    match g.consumers(t)[..] {
        [c] if g.single_use(t) => Some(c),
        _ => None,
    }
}

/// The other operand of binary node `i`, given one of them.
fn other(g: &Graph, i: usize, one: TId) -> Option<TId> {
    match g.nodes[i].inputs[..] {
        [a, b] if a == one => Some(b),
        [a, b] if b == one => Some(a),
        _ => None,
    }
}

fn match_rms(g: &Graph, reduce: usize) -> Option<RmsMatch> {
    let IrOp::ReduceMean { axes } = &g.nodes[reduce].op else { return None };
    let sq = g.nodes[reduce].inputs[0];
    if axes.as_slice() != [g.tensors[sq].shape.len().checked_sub(1)?] || !g.single_use(sq) {
        return None;
    }
    let p = g.producer(sq)?;
    let x = match with_const(g, p, BinaryOp::Pow, 2.0, 0.0) {
        Some(x) => x,
        None if rt(g, p) == Some(&Op::Binary(BinaryOp::Mul)) && g.nodes[p].inputs[0] == g.nodes[p].inputs[1] => {
            g.nodes[p].inputs[0]
        }
        None => return None,
    };
    let add = sole_consumer(g, g.nodes[reduce].output)?;
    if rt(g, add) != Some(&Op::Binary(BinaryOp::Add)) {
        return None;
    }
    let eps = g.scalar(other(g, add, g.nodes[reduce].output)?)?;
    let sqrt = sole_consumer(g, g.nodes[add].output)?;
    if rt(g, sqrt) != Some(&Op::Unary(UnaryOp::Sqrt)) {
        return None;
    }
    let s = g.nodes[sqrt].output;
    let after = sole_consumer(g, s)?;
    let normed = match rt(g, after) {
        Some(Op::Binary(BinaryOp::Div)) if g.nodes[after].inputs[..] == [x, s] => after,
        Some(Op::Binary(BinaryOp::Div)) if g.scalar(g.nodes[after].inputs[0]) == Some(1.0) => {
            let mul = sole_consumer(g, g.nodes[after].output)?;
            (rt(g, mul) == Some(&Op::Binary(BinaryOp::Mul)) && other(g, mul, g.nodes[after].output)? == x)
                .then_some(mul)?
        }
        Some(Op::Unary(UnaryOp::Reciprocal)) => {
            let mul = sole_consumer(g, g.nodes[after].output)?;
            (rt(g, mul) == Some(&Op::Binary(BinaryOp::Mul)) && other(g, mul, g.nodes[after].output)? == x)
                .then_some(mul)?
        }
        _ => return None,
    };
    let width = *g.tensors[x].shape.last()?;
    let out = g.nodes[normed].output;
    let scaled = sole_consumer(g, out).filter(|&m| rt(g, m) == Some(&Op::Binary(BinaryOp::Mul))).and_then(|m| {
        let w = other(g, m, out)?;
        let c = g.konst(w)?;
        (c.len() == width && g.tensors[w].shape.iter().rev().skip(1).all(|&d| d == 1)).then_some((w, m))
    });
    Some(RmsMatch { x, eps, gamma: scaled.map(|s| s.0), last: scaled.map_or(normed, |s| s.1) })
}

/// Replaces every matched RMSNorm chain with one `RmsNorm` node.
pub fn fuse_rms_norm(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let Some(m) = match_rms(g, i) else { continue };
        let width = *g.tensors[m.x].shape.last().unwrap_or(&1);
        let gamma = match m.gamma {
            Some(t) => {
                let values = g.konst(t).map(|c| c.to_f32()).unwrap_or_default();
                let name = format!("{}.gamma", g.tensors[t].name);
                g.add_const_f32(&name, vec![width], values)
            }
            None => g.add_const_f32("rms.gamma.ones", vec![width], vec![1.0; width]),
        };
        let node = &mut g.nodes[m.last];
        node.op = IrOp::Rt(Op::RmsNorm { eps: m.eps });
        node.inputs = vec![m.x, gamma];
        node.onnx_op = "RmsNorm(fused)".into();
    }
}
