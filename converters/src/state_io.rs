//! Persistent tensors carried from one call to the next (Transformer-XL memory, recurrent
//! state), declared in ONNX by naming: an input `state.<name>` and an output
//! `state.<name>.next` of the same shape.
//!
//! [`lift`] turns each pair into a state slot: the input becomes a `LoadState` op at the start
//! of the entry and the output feeds a `StoreState` op at its end, so a `.mote` session keeps
//! the tensor in its state region between runs (zero after `reset`). The ONNX model stays a
//! plain function that tract can run with the state passed in and out explicitly.

use crate::ir::{Elem, Graph, IrOp, Node, TId};
use anyhow::{bail, Result};
use mote::Op;

/// Name prefix of a state input.
pub const PREFIX: &str = "state.";
/// Suffix of the output that holds a state's next value.
pub const NEXT: &str = ".next";
/// Suffix of the tensor a `StoreState` writes (it names the slot it serves).
pub const STORED: &str = ".stored";

/// Whether a graph input named `name` is a state input.
pub fn is_state_input(name: &str) -> bool {
    name.starts_with(PREFIX) && !name.ends_with(NEXT)
}

/// Replaces each `state.<name>` input / `state.<name>.next` output pair with a
/// `LoadState`/`StoreState` pair (offsets are assigned when the file is written). Returns the
/// number of slots. A state input without its output, or with another shape, is an error.
pub fn lift(g: &mut Graph) -> Result<usize> {
    let states: Vec<TId> = g.inputs.iter().copied().filter(|&t| is_state_input(&g.tensors[t].name)).collect();
    let mut stray: Vec<&str> = g
        .outputs
        .iter()
        .map(|&t| g.tensors[t].name.as_str())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(NEXT))
        .filter(|n| !states.iter().any(|&s| format!("{}{NEXT}", g.tensors[s].name) == *n))
        .collect();
    if let Some(n) = stray.pop() {
        bail!("output '{n}' looks like a state update but there is no input '{}'", n.trim_end_matches(NEXT));
    }
    for &s in &states {
        let name = g.tensors[s].name.clone();
        let next_name = format!("{name}{NEXT}");
        let Some(pos) = g.outputs.iter().position(|&t| g.tensors[t].name == next_name) else {
            bail!("state input '{name}' needs an output '{next_name}' holding its next value");
        };
        let next = g.outputs[pos];
        if g.tensors[next].shape != g.tensors[s].shape || g.tensors[s].elem != Elem::Float {
            bail!(
                "state '{name}' is {:?} but '{next_name}' is {:?} (both must be the same float shape)",
                g.tensors[s].shape,
                g.tensors[next].shape
            );
        }
        g.outputs.remove(pos);
        g.inputs.retain(|&t| t != s);
        let load = Node {
            name: format!("{name}.load"),
            onnx_op: "StateInput".into(),
            op: IrOp::Rt(Op::LoadState { offset: 0 }),
            inputs: vec![],
            output: s,
        };
        g.nodes.insert(0, load);
        let stored =
            g.add_tensor(crate::ir::Tensor { name: format!("{name}{STORED}"), konst: None, ..g.tensors[next].clone() });
        g.nodes.push(Node {
            name: format!("{name}.store"),
            onnx_op: "StateOutput".into(),
            op: IrOp::Rt(Op::StoreState { offset: 0 }),
            inputs: vec![next],
            output: stored,
        });
    }
    Ok(states.len())
}

/// The slot a `LoadState`/`StoreState` node serves (its `state.<name>` tensor name).
pub fn slot_name(g: &Graph, n: &Node) -> Option<String> {
    match n.op {
        IrOp::Rt(Op::LoadState { .. }) => Some(g.tensors[n.output].name.clone()),
        IrOp::Rt(Op::StoreState { .. }) => g.tensors[n.output].name.strip_suffix(STORED).map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Tensor;
    use mote::ops::BinaryOp;

    fn tensor(name: &str, shape: &[usize]) -> Tensor {
        Tensor { name: name.into(), shape: shape.to_vec(), elem: Elem::Float, konst: None }
    }

    /// `y = x + state.mem`, `state.mem.next = y`.
    fn graph(next_name: &str, next_shape: &[usize]) -> Graph {
        let mut g = Graph::default();
        let x = g.add_tensor(tensor("x", &[2, 3]));
        let mem = g.add_tensor(tensor("state.mem", &[2, 3]));
        let y = g.add_tensor(tensor("y", &[2, 3]));
        let next = g.add_tensor(tensor(next_name, next_shape));
        let add = |name: &str, inputs, output| Node {
            name: name.into(),
            onnx_op: "Add".into(),
            op: IrOp::Rt(Op::Binary(BinaryOp::Add)),
            inputs,
            output,
        };
        g.nodes = vec![add("add", vec![x, mem], y), add("copy", vec![y, x], next)];
        g.inputs = vec![x, mem];
        g.outputs = vec![y, next];
        g
    }

    #[test]
    fn pairs_become_load_and_store_ops() {
        let mut g = graph("state.mem.next", &[2, 3]);
        assert_eq!(lift(&mut g).unwrap(), 1);
        assert_eq!(g.inputs.len(), 1);
        assert_eq!(g.outputs.len(), 1);
        assert!(matches!(g.nodes[0].op, IrOp::Rt(Op::LoadState { .. })));
        assert!(matches!(g.nodes.last().unwrap().op, IrOp::Rt(Op::StoreState { .. })));
        let names: Vec<_> = g.nodes.iter().filter_map(|n| slot_name(&g, n)).collect();
        assert_eq!(names, ["state.mem", "state.mem"]);
        g.remove_dead_nodes();
        assert!(matches!(g.nodes.last().unwrap().op, IrOp::Rt(Op::StoreState { .. })), "stores are side effects");
    }

    #[test]
    fn unpaired_or_mismatched_states_are_errors() {
        let e = lift(&mut graph("other", &[2, 3])).unwrap_err().to_string();
        assert!(e.contains("needs an output 'state.mem.next'"), "{e}");
        let e = lift(&mut graph("state.mem.next", &[3, 2])).unwrap_err().to_string();
        assert!(e.contains("same float shape"), "{e}");
        let mut g = graph("state.other.next", &[2, 3]);
        let e = lift(&mut g).unwrap_err().to_string();
        assert!(e.contains("no input 'state.other'"), "{e}");
    }
}
