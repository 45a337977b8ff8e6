//! Fuses GELU as PyTorch exports it: the erf form `x * 0.5 * (1 + erf(x / sqrt 2))` and the
//! tanh form `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))` (GPT-2's `NewGELU`,
//! `nn.GELU(approximate="tanh")` below opset 20).

use super::rt;
use crate::ir::{Graph, IrOp, TId};
use mote::ops::{BinaryOp, UnaryOp};
use mote::Op;

/// The non-constant operand of binary node `i` whose other operand is the constant `value`.
pub(super) fn with_const(g: &Graph, i: usize, op: BinaryOp, value: f32, tol: f32) -> Option<TId> {
    if rt(g, i) != Some(&Op::Binary(op)) {
        return None;
    }
    let (a, b) = (g.nodes[i].inputs[0], g.nodes[i].inputs[1]);
    match (g.scalar(a), g.scalar(b)) {
        (None, Some(c)) if (c - value).abs() <= tol => Some(a),
        (Some(c), None) if (c - value).abs() <= tol && ![BinaryOp::Div, BinaryOp::Sub, BinaryOp::Pow].contains(&op) => {
            Some(b)
        }
        _ => None,
    }
}

/// Replaces every matched GELU chain with one `Unary(Gelu)` or `Unary(GeluTanh)` node.
pub fn fuse_gelu(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let (found, op, label) = match rt(g, i) {
            Some(Op::Unary(UnaryOp::Erf)) => (match_gelu(g, i), UnaryOp::Gelu, "Gelu(fused)"),
            Some(Op::Unary(UnaryOp::Tanh)) => (match_gelu_tanh(g, i), UnaryOp::GeluTanh, "GeluTanh(fused)"),
            _ => continue,
        };
        if let Some((x, last)) = found {
            g.nodes[last].op = IrOp::Rt(Op::Unary(op));
            g.nodes[last].inputs = vec![x];
            g.nodes[last].onnx_op = label.into();
        }
    }
}

/// `x` when `t` is `x^3` (`Pow(x, 3)`, `Mul(x, Mul(x, x))` or `Mul(Mul(x, x), x)`).
fn cube_of(g: &Graph, t: TId) -> Option<TId> {
    let p = g.producer(t)?;
    if let Some(x) = with_const(g, p, BinaryOp::Pow, 3.0, 0.0) {
        return Some(x);
    }
    if rt(g, p) != Some(&Op::Binary(BinaryOp::Mul)) {
        return None;
    }
    let [a, b] = g.nodes[p].inputs[..] else { return None };
    for (x, sq) in [(a, b), (b, a)] {
        let s = g.producer(sq)?;
        if rt(g, s) == Some(&Op::Binary(BinaryOp::Mul)) && g.nodes[s].inputs[..] == [x, x] {
            return Some(x);
        }
    }
    None
}

/// Matches from the Tanh node `tanh`; returns (x, index of the chain's last node).
fn match_gelu_tanh(g: &Graph, tanh: usize) -> Option<(TId, usize)> {
    let k = std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2; // sqrt(2/pi)
    let scaled = g.producer(g.nodes[tanh].inputs[0])?;
    let inner = with_const(g, scaled, BinaryOp::Mul, k, 1e-4)?;
    let add = g.producer(inner)?;
    if rt(g, add) != Some(&Op::Binary(BinaryOp::Add)) || !g.single_use(inner) {
        return None;
    }
    let [a, b] = g.nodes[add].inputs[..] else { return None };
    let x = [(a, b), (b, a)].into_iter().find_map(|(x, c)| {
        let m = g.producer(c)?;
        (with_const(g, m, BinaryOp::Mul, 0.044715, 1e-6)
            .and_then(|cube| (cube_of(g, cube)? == x && g.single_use(cube)).then_some(()))
            .is_some()
            && g.single_use(c))
        .then_some(x)
    })?;
    half_x_times_one_plus(g, tanh, x)
}

/// Matches `0.5 · x · (1 + f)` after node `f` (tanh or erf), as either `(x · (1 + f)) · 0.5`
/// or `(x · 0.5) · (1 + f)`; returns (x, index of the chain's last node).
fn half_x_times_one_plus(g: &Graph, f: usize, x: TId) -> Option<(TId, usize)> {
    let f_out = g.nodes[f].output;
    let add = single_consumer(g, f_out)?;
    if with_const(g, add, BinaryOp::Add, 1.0, 0.0)? != f_out {
        return None;
    }
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

/// Matches from the Erf node `erf`; returns (x, index of the chain's last node).
fn match_gelu(g: &Graph, erf: usize) -> Option<(TId, usize)> {
    if rt(g, erf) != Some(&Op::Unary(UnaryOp::Erf)) {
        return None;
    }
    let div = g.producer(g.nodes[erf].inputs[0])?;
    let x = with_const(g, div, BinaryOp::Div, std::f32::consts::SQRT_2, 1e-4)
        .or_else(|| with_const(g, div, BinaryOp::Mul, std::f32::consts::FRAC_1_SQRT_2, 1e-4))?;
    half_x_times_one_plus(g, erf, x)
}

fn single_consumer(g: &Graph, t: TId) -> Option<usize> {
    let c = g.consumers(t);
    (c.len() == 1 && g.single_use(t)).then(|| c[0])
}
