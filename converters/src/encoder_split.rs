//! Splits an encoder–decoder step graph in two: an `encode` entry that runs everything that
//! depends only on the source inputs once, and a `decode_step` graph that reads those results
//! from the session's state region instead of recomputing them for every generated token.
//!
//! Every tensor of the graph falls into one of three classes:
//! - **source**: computed from a source input (the encoder, the cross-attention keys and
//!   values, the source padding mask);
//! - **target**: computed from a target input or from state (the decoder);
//! - **free**: computed from neither (constants, `Positions`); recomputed by whichever side
//!   needs it, so the decoder's positions still follow the session position.
//!
//! The *boundary* is the set of source tensors that target nodes read. `encode` ends with one
//! `StoreState` per boundary tensor; `decode_step` starts with the matching `LoadState`s, and
//! the source part of the graph drops out of it. Slots are named after the boundary tensors
//! and keep their activation's storage (int8 keys stay int8).

use crate::ir::{Graph, IrOp, Node, TId, Tensor};
use crate::state_io::STORED;
use anyhow::{bail, Result};
use mote::Op;

/// Which side of the split a tensor belongs to.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    Free,
    Source,
    Target,
}

/// The two halves of a split graph.
#[derive(Debug)]
pub struct Split {
    /// Source inputs → `StoreState` of every boundary tensor; no outputs.
    pub encode: Graph,
    /// Target inputs → the original outputs, with the boundary loaded from state.
    pub decode: Graph,
    /// Names of the boundary tensors (one state slot each).
    pub boundary: Vec<String>,
}

fn sides(g: &Graph, target_inputs: &[TId]) -> Vec<Side> {
    let mut side = vec![Side::Free; g.tensors.len()];
    for &t in &g.inputs {
        side[t] = if target_inputs.contains(&t) { Side::Target } else { Side::Source };
    }
    for n in &g.nodes {
        let stateful = matches!(n.op, IrOp::Rt(Op::LoadState { .. } | Op::StoreState { .. }));
        side[n.output] = if stateful || n.inputs.iter().any(|&i| side[i] == Side::Target) {
            Side::Target
        } else if n.inputs.iter().any(|&i| side[i] == Side::Source) {
            Side::Source
        } else {
            Side::Free
        };
    }
    side
}

/// Splits `g` (the graph at one target position) given which of its inputs are target inputs.
/// Errors if an output depends on the source only, or if nothing crosses from source to target.
pub fn split(g: &Graph, target_inputs: &[TId]) -> Result<Split> {
    let side = sides(g, target_inputs);
    if let Some(&o) = g.outputs.iter().find(|&&o| side[o] != Side::Target) {
        bail!("output '{}' does not depend on the decoder inputs; it belongs in the encoder", g.tensors[o].name);
    }
    let mut boundary: Vec<TId> = Vec::new();
    for n in g.nodes.iter().filter(|n| side[n.output] == Side::Target) {
        for &i in &n.inputs {
            if side[i] == Side::Source && !boundary.contains(&i) {
                boundary.push(i);
            }
        }
    }
    if boundary.is_empty() {
        bail!("no tensor flows from the source inputs to the decoder: not an encoder–decoder graph");
    }
    let names: Vec<String> = boundary.iter().map(|&t| g.tensors[t].name.clone()).collect();

    let mut encode = g.clone();
    encode.nodes.retain(|n| side[n.output] != Side::Target);
    encode.inputs.retain(|t| side[*t] == Side::Source);
    encode.outputs.clear();
    for &t in &boundary {
        let stored = encode.add_tensor(Tensor {
            name: format!("{}{STORED}", g.tensors[t].name),
            konst: None,
            ..g.tensors[t].clone()
        });
        encode.nodes.push(Node {
            name: format!("{}.store", g.tensors[t].name),
            onnx_op: "EncoderState".into(),
            op: IrOp::Rt(Op::StoreState { offset: 0 }),
            inputs: vec![t],
            output: stored,
        });
    }
    encode.remove_dead_nodes();

    let mut decode = g.clone();
    decode.nodes.retain(|n| !boundary.contains(&n.output));
    let loads = boundary.iter().map(|&t| Node {
        name: format!("{}.load", g.tensors[t].name),
        onnx_op: "EncoderState".into(),
        op: IrOp::Rt(Op::LoadState { offset: 0 }),
        inputs: vec![],
        output: t,
    });
    decode.nodes.splice(0..0, loads);
    decode.inputs.retain(|t| target_inputs.contains(t));
    decode.remove_dead_nodes();
    if let Some(n) =
        decode.nodes.iter().find(|n| n.inputs.iter().any(|&i| side[i] == Side::Source && !boundary.contains(&i)))
    {
        bail!("internal error: decoder node '{}' still reads an encoder tensor", n.name);
    }
    Ok(Split { encode, decode, boundary: names })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Elem;
    use mote::ops::{BinaryOp, UnaryOp};

    fn tensor(g: &mut Graph, name: &str) -> TId {
        g.add_tensor(Tensor { name: name.into(), shape: vec![1, 4], elem: Elem::Float, konst: None })
    }

    fn node(name: &str, op: Op, inputs: Vec<TId>, output: TId) -> Node {
        Node { name: name.into(), onnx_op: name.into(), op: IrOp::Rt(op), inputs, output }
    }

    /// `memory = tanh(src)`, `pos = Positions`, `y = (tgt + pos) * memory`.
    fn graph() -> (Graph, TId) {
        let mut g = Graph::default();
        let (src, tgt) = (tensor(&mut g, "src"), tensor(&mut g, "tgt"));
        let (memory, pos, h, y) =
            (tensor(&mut g, "memory"), tensor(&mut g, "pos"), tensor(&mut g, "h"), tensor(&mut g, "y"));
        g.nodes = vec![
            node("enc", Op::Unary(UnaryOp::Tanh), vec![src], memory),
            node("pos", Op::Positions { start: 0, step: 1 }, vec![], pos),
            node("add", Op::Binary(BinaryOp::Add), vec![tgt, pos], h),
            node("mul", Op::Binary(BinaryOp::Mul), vec![h, memory], y),
        ];
        g.inputs = vec![src, tgt];
        g.outputs = vec![y];
        (g, tgt)
    }

    fn ops(g: &Graph) -> Vec<&str> {
        g.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn source_work_moves_to_encode_and_crosses_through_state() {
        let (g, tgt) = graph();
        let s = split(&g, &[tgt]).unwrap();
        assert_eq!(s.boundary, ["memory"]);
        assert_eq!(ops(&s.encode), ["enc", "memory.store"]);
        assert_eq!(s.encode.inputs.len(), 1);
        assert!(s.encode.outputs.is_empty());
        // Positions is free: the decoder recomputes it (it follows the session position).
        assert_eq!(ops(&s.decode), ["memory.load", "pos", "add", "mul"]);
        assert_eq!(s.decode.inputs, [tgt]);
        assert_eq!(s.decode.outputs, g.outputs);
        assert!(matches!(s.decode.nodes[0].op, IrOp::Rt(Op::LoadState { .. })));
        assert_eq!(s.decode.tensors[s.decode.nodes[0].output].name, "memory");
        assert_eq!(s.encode.tensors[s.encode.nodes[1].output].name, "memory.stored");
    }

    #[test]
    fn graphs_without_a_source_to_target_flow_are_refused() {
        let (mut g, tgt) = graph();
        g.nodes[3].inputs = vec![tgt, tgt];
        let e = split(&g, &[tgt]).unwrap_err().to_string();
        assert!(e.contains("not an encoder–decoder graph"), "{e}");
        let (g, _) = graph();
        let e = split(&g, &[]).unwrap_err().to_string();
        assert!(e.contains("output 'y' does not depend on the decoder inputs"), "{e}");
    }
}
