//! Fuses SiLU as PyTorch's exporter writes `F.silu` / `nn.SiLU` below opset 22:
//! `Mul(x, Sigmoid(x))` (either operand order) into one `Unary(Silu)`, which saves the
//! sigmoid's buffer and a pass over it.

use super::rt;
use crate::ir::{Graph, IrOp};
use mote::ops::{BinaryOp, UnaryOp};
use mote::Op;

/// Replaces every `x * sigmoid(x)` whose sigmoid feeds only that product.
pub fn fuse_silu(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        if rt(g, i) != Some(&Op::Binary(BinaryOp::Mul)) {
            continue;
        }
        let [a, b] = g.nodes[i].inputs[..] else { continue };
        let sigmoid_of = |t| {
            let p = g.producer(t)?;
            (rt(g, p) == Some(&Op::Unary(UnaryOp::Sigmoid)) && g.single_use(t)).then(|| g.nodes[p].inputs[0])
        };
        let x = match (sigmoid_of(b), sigmoid_of(a)) {
            (Some(x), _) if x == a => x,
            (_, Some(x)) if x == b => x,
            _ => continue,
        };
        let node = &mut g.nodes[i];
        node.op = IrOp::Rt(Op::Unary(UnaryOp::Silu));
        node.inputs = vec![x];
        node.onnx_op = "Silu(fused)".into();
    }
}
