//! Fuses the erf form of GELU, `x * 0.5 * (1 + erf(x / sqrt 2))`, as PyTorch exports it.

use super::rt;
use crate::ir::{Graph, IrOp, TId};
use mote::ops::{BinaryOp, UnaryOp};
use mote::Op;

/// The non-constant operand of binary node `i` whose other operand is the constant `value`.
fn with_const(g: &Graph, i: usize, op: BinaryOp, value: f32, tol: f32) -> Option<TId> {
    if rt(g, i) != Some(&Op::Binary(op)) {
        return None;
    }
    let (a, b) = (g.nodes[i].inputs[0], g.nodes[i].inputs[1]);
    match (g.scalar(a), g.scalar(b)) {
        (None, Some(c)) if (c - value).abs() <= tol => Some(a),
        (Some(c), None) if (c - value).abs() <= tol && op != BinaryOp::Div && op != BinaryOp::Sub => Some(b),
        _ => None,
    }
}

/// Replaces every matched GELU chain with one `Unary(Gelu)` node.
pub fn fuse_gelu(g: &mut Graph) {
    let mut i = 0;
    while i < g.nodes.len() {
        if let Some((x, last)) = match_gelu(g, i) {
            g.nodes[last].op = IrOp::Rt(Op::Unary(UnaryOp::Gelu));
            g.nodes[last].inputs = vec![x];
            g.nodes[last].onnx_op = "Gelu(fused)".into();
        }
        i += 1;
    }
}

/// Matches from the Erf node `erf`; returns (x, index of the chain's last node).
fn match_gelu(g: &Graph, erf: usize) -> Option<(TId, usize)> {
    if rt(g, erf) != Some(&Op::Unary(UnaryOp::Erf)) {
        return None;
    }
    let div = g.producer(g.nodes[erf].inputs[0])?;
    let x = with_const(g, div, BinaryOp::Div, std::f32::consts::SQRT_2, 1e-4)
        .or_else(|| with_const(g, div, BinaryOp::Mul, std::f32::consts::FRAC_1_SQRT_2, 1e-4))?;
    let erf_out = g.nodes[erf].output;
    let add = single_consumer(g, erf_out)?;
    if with_const(g, add, BinaryOp::Add, 1.0, 0.0)? != erf_out {
        return None;
    }
    // Either (x * (1 + erf)) * 0.5 or (x * 0.5) * (1 + erf).
    let add_out = g.nodes[add].output;
    let mul1 = single_consumer(g, add_out)?;
    if rt(g, mul1) != Some(&Op::Binary(BinaryOp::Mul)) {
        return None;
    }
    let other = *g.nodes[mul1].inputs.iter().find(|&&t| t != add_out)?;
    if other == x {
        let mul1_out = g.nodes[mul1].output;
        let mul2 = single_consumer(g, mul1_out)?;
        (with_const(g, mul2, BinaryOp::Mul, 0.5, 0.0)? == mul1_out).then_some((x, mul2))
    } else {
        let half = g.producer(other)?;
        (with_const(g, half, BinaryOp::Mul, 0.5, 0.0)? == x && g.single_use(other)).then_some((x, mul1))
    }
}

fn single_consumer(g: &Graph, t: TId) -> Option<usize> {
    let c = g.consumers(t);
    (c.len() == 1 && g.single_use(t)).then(|| c[0])
}
