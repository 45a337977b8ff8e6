//! Folds `Add(MatMul(x, W), b)` with a constant per-output bias into the MatMul, so the
//! int8 path adds the bias in int32 before requantising (the TFLite layout).

use super::rt;
use crate::ir::{Graph, IrOp};
use mote::ops::BinaryOp;
use mote::Op;

/// Rewrites every foldable MatMul + bias Add.
pub fn fold_bias(g: &mut Graph) {
    for add in 0..g.nodes.len() {
        if rt(g, add) != Some(&Op::Binary(BinaryOp::Add)) {
            continue;
        }
        for (mm_side, b_side) in [(0, 1), (1, 0)] {
            let (x, b) = (g.nodes[add].inputs[mm_side], g.nodes[add].inputs[b_side]);
            let Some(mm) = g.producer(x) else { continue };
            if rt(g, mm) != Some(&Op::MatMul { has_bias: false }) || !g.single_use(x) {
                continue;
            }
            let n = g.tensors[x].shape.last().copied().unwrap_or(0);
            let bias_shape = &g.tensors[b].shape;
            let per_channel = bias_shape.last() == Some(&n) && bias_shape.iter().rev().skip(1).all(|&d| d == 1);
            let Some(values) = g.konst(b).map(|c| c.to_f32()) else { continue };
            if !per_channel || values.len() != n {
                continue;
            }
            let name = format!("{}.bias", g.tensors[b].name);
            let bias = g.add_const_f32(&name, vec![n], values);
            let inputs = vec![g.nodes[mm].inputs[0], g.nodes[mm].inputs[1], bias];
            let node = &mut g.nodes[add];
            node.op = IrOp::Rt(Op::MatMul { has_bias: true });
            node.inputs = inputs;
            node.onnx_op = "MatMul+Add(fused)".into();
            break;
        }
    }
}
