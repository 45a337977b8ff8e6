//! Fuses the GroupNorm that PyTorch's TorchScript exporter writes for `nn.GroupNorm(G, C)`:
//! `Reshape x [N, C, ..] → [N, G, L]` → InstanceNormalization (imported as a `GroupNorm` with
//! one group per row, usually with ones and zeros) → `Reshape` back to x's shape → `Mul γ` →
//! `Add β` (the affine steps optional), into one `GroupNorm { groups: G }` over `x` with
//! per-channel parameters `γ' = γ_g · γ`, `β' = β_g · γ + β`.

use super::rt;
use crate::ir::{Graph, IrOp, TId};
use mote::ops::BinaryOp;
use mote::Op;

/// Replaces every matched chain with one `GroupNorm` node on the original input.
pub fn fuse_group_norm(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let Some(m) = match_chain(g, i) else { continue };
        let gamma = g.add_const_f32(&format!("{}.gamma", m.name), vec![m.gamma.len()], m.gamma);
        let beta = g.add_const_f32(&format!("{}.beta", m.name), vec![m.beta.len()], m.beta);
        let node = &mut g.nodes[m.last];
        node.op = IrOp::Rt(Op::GroupNorm { eps: m.eps, groups: m.groups });
        node.inputs = vec![m.x, gamma, beta];
        node.onnx_op = "GroupNorm(fused)".into();
    }
}

struct Chain {
    x: TId,
    eps: f32,
    groups: u16,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    last: usize,
    name: String,
}

/// The single consumer of node `i`'s output, if the output is used once.
fn only_consumer(g: &Graph, i: usize) -> Option<usize> {
    let out = g.nodes[i].output;
    match g.consumers(out)[..] {
        [c] if g.single_use(out) => Some(c),
        _ => None,
    }
}

/// `t` as `C` per-channel values when it is a constant that broadcasts against `shape`
/// (`[N, C, ..]`) along the channel axis only (or is a single value).
fn per_channel(g: &Graph, t: TId, shape: &[usize]) -> Option<Vec<f32>> {
    let v = g.konst(t)?.to_f32();
    let c = shape[1];
    let dims = &g.tensors[t].shape;
    if v.len() == 1 {
        return Some(vec![v[0]; c]);
    }
    if dims.len() > shape.len() || dims.len() < shape.len() - 1 {
        return None;
    }
    // Right-align against [N, C, ..]: only the channel axis may be larger than 1.
    let lead = shape.len() - dims.len();
    let ok = dims.iter().enumerate().all(|(k, &d)| d == 1 || (k + lead == 1 && d == c));
    (ok && v.len() == c).then_some(v)
}

/// If node `from`'s output (shaped `shape`) feeds only `op(output, per-channel constant)`
/// with the same output shape, returns the constant and that node.
fn affine_step(g: &Graph, from: usize, op: BinaryOp, shape: &[usize]) -> Option<(Vec<f32>, usize)> {
    let c = only_consumer(g, from)?;
    if rt(g, c) != Some(&Op::Binary(op)) || g.tensors[g.nodes[c].output].shape != shape {
        return None;
    }
    let out = g.nodes[from].output;
    let (a, b) = (g.nodes[c].inputs[0], g.nodes[c].inputs[1]);
    let other = if a == out { b } else { a };
    Some((per_channel(g, other, shape)?, c))
}

fn match_chain(g: &Graph, i: usize) -> Option<Chain> {
    let Some(&Op::GroupNorm { eps, groups }) = rt(g, i) else { return None };
    let node = &g.nodes[i];
    let (grouped, gamma_t, beta_t) = (node.inputs[0], node.inputs[1], node.inputs[2]);
    // The instance-norm form: [N, G, L] with one group per row.
    let gs = &g.tensors[grouped].shape;
    if gs.len() != 3 || gs[1] != groups as usize || !g.single_use(grouped) {
        return None;
    }
    let split = g.producer(grouped)?;
    if rt(g, split) != Some(&Op::Reshape) {
        return None;
    }
    let x = g.nodes[split].inputs[0];
    let shape = g.tensors[x].shape.clone();
    if shape.len() < 3 || shape[0] != gs[0] || !shape[1].is_multiple_of(gs[1]) {
        return None;
    }
    let merge = only_consumer(g, i)?;
    if rt(g, merge) != Some(&Op::Reshape) || g.tensors[g.nodes[merge].output].shape != shape {
        return None;
    }
    // The instance norm's per-group parameters, repeated over each group's channels.
    let (gg, gb) = (g.konst(gamma_t)?.to_f32(), g.konst(beta_t)?.to_f32());
    let per_group = shape[1] / gs[1];
    let mut gamma: Vec<f32> = (0..shape[1]).map(|c| gg[c / per_group]).collect();
    let mut beta: Vec<f32> = (0..shape[1]).map(|c| gb[c / per_group]).collect();
    let mut last = merge;
    if let Some((m, mul)) = affine_step(g, last, BinaryOp::Mul, &shape) {
        for c in 0..shape[1] {
            gamma[c] *= m[c];
            beta[c] *= m[c];
        }
        last = mul;
    }
    if let Some((a, add)) = affine_step(g, last, BinaryOp::Add, &shape) {
        beta.iter_mut().zip(&a).for_each(|(b, a)| *b += a);
        last = add;
    }
    Some(Chain { x, eps, groups, gamma, beta, last, name: g.nodes[i].name.clone() })
}
