//! Lowers pattern-only ops that no fusion consumed into runtime ops where that is exact,
//! and rejects the rest with an error naming the node and the op.
//!
//! - `Where(c, x, y)` with a constant condition: `x * C + y * (1 - C)` with `C = (c != 0)`,
//!   where a constant branch becomes a precomputed term (`Where(c, x, y_const)` is
//!   `x * C + D`, `D = c ? 0 : y`), so selected values pass through exactly.
//! - `Expand` of reals: `x + zeros(output shape)` (broadcasting does the expansion).
//! - `ReduceMean` over one axis outside a norm pattern: `ReduceSum` times `1/n`.

use crate::ir::{Elem, Graph, IrOp, Node, TId, Tensor};
use anyhow::{bail, Result};
use mote::ops::BinaryOp;
use mote::Op;

/// Rewrites every leftover `IrOp::PatternOnly` node, or fails on the first that cannot be.
pub fn lower_leftovers(g: &mut Graph) -> Result<()> {
    // Where and Expand first, so a run-time Where is named before the casts feeding it.
    for pass in 0..2 {
        let mut i = 0;
        while i < g.nodes.len() {
            let lowerable = ["Where", "Expand"].contains(&g.nodes[i].onnx_op.as_str());
            if g.nodes[i].op != IrOp::PatternOnly || (pass == 0 && !lowerable) {
                i += 1;
                continue;
            }
            let replacement = lower_one(g, i)?;
            let k = replacement.len();
            g.nodes.splice(i..=i, replacement);
            i += k;
        }
    }
    Ok(())
}

/// Rewrites each `ReduceMean` no norm fusion consumed as `ReduceSum` then `Mul` by `1/n`
/// (one axis; several are an error naming the node).
pub fn lower_reduce_means(g: &mut Graph) -> Result<()> {
    let mut i = 0;
    while i < g.nodes.len() {
        let IrOp::ReduceMean { axes } = g.nodes[i].op.clone() else {
            i += 1;
            continue;
        };
        let n = g.nodes[i].clone();
        let [axis] = axes[..] else {
            bail!("unsupported op 'ReduceMean' at node '{}': mote averages over one axis, not {axes:?}", n.name);
        };
        let count = g.tensors[n.inputs[0]].shape[axis];
        let out = g.tensors[n.output].clone();
        let sum = g.add_tensor(Tensor { name: format!("{}.sum", out.name), konst: None, ..out.clone() });
        let scale = g.add_const_f32(&format!("{}.inv_n", out.name), vec![1], vec![1.0 / count as f32]);
        let reduce = Node { op: IrOp::Rt(Op::ReduceSum { axis: axis as u8 }), output: sum, ..n.clone() };
        let mean = Node {
            name: format!("{}.mean", n.name),
            op: IrOp::Rt(Op::Binary(BinaryOp::Mul)),
            inputs: vec![sum, scale],
            ..n
        };
        g.nodes.splice(i..=i, [reduce, mean]);
        i += 2;
    }
    Ok(())
}

fn lower_one(g: &mut Graph, i: usize) -> Result<Vec<Node>> {
    let n = g.nodes[i].clone();
    Ok(match n.onnx_op.as_str() {
        "Where" => lower_where(g, &n)?,
        "Expand" if g.tensors[n.inputs[0]].elem == Elem::Float => {
            let shape = g.tensors[n.output].shape.clone();
            let zeros = vec![0.0; shape.iter().product()];
            let z = g.add_const_f32(&format!("{}.zeros", g.tensors[n.output].name), shape, zeros);
            vec![Node { op: IrOp::Rt(Op::Binary(BinaryOp::Add)), inputs: vec![n.inputs[0], z], ..n.clone() }]
        }
        op => bail!(
            "unsupported op '{op}' at node '{}': mote has no kernel for it here; it is supported only when its \
                 inputs fold to constants under the --dim bounds, or inside an attention-mask pattern that fusion \
                 turns into the Attention op's key mask",
            n.name
        ),
    })
}

fn lower_where(g: &mut Graph, n: &Node) -> Result<Vec<Node>> {
    let [cond, x, y] = n.inputs[..] else { bail!("node '{}' (Where): needs three inputs", n.name) };
    let Some(c) = g.konst(cond).map(|c| c.to_f32()) else {
        bail!(
            "unsupported op 'Where' at node '{}': its condition '{}' is computed at run time; mote supports that \
             only inside an attention mask that fusion turns into the Attention op's mask",
            n.name,
            g.tensors[cond].name
        );
    };
    if g.tensors[n.output].elem != Elem::Float {
        bail!("unsupported op 'Where' at node '{}': only real-valued Where is supported at run time", n.name);
    }
    let out_name = g.tensors[n.output].name.clone();
    let shape = g.tensors[cond].shape.clone();
    let numel = c.len();
    // A branch as a constant over the condition's shape (scalar or same shape only).
    let spread = |g: &Graph, t: TId| -> Option<Vec<f32>> {
        let v = g.konst(t)?.to_f32();
        match v.len() {
            1 => Some(vec![v[0]; numel]),
            l if l == numel && g.tensors[t].shape == shape => Some(v),
            _ => None,
        }
    };
    let mut nodes = Vec::new();
    let tmp = |g: &mut Graph, suffix: &str, shape: Vec<usize>| {
        g.add_tensor(Tensor { name: format!("{out_name}.{suffix}"), shape, elem: Elem::Float, konst: None })
    };
    let mul = |a: TId, b: TId, out: TId, suffix: &str| Node {
        name: format!("{}:{suffix}", n.name),
        onnx_op: "Where".into(),
        op: IrOp::Rt(Op::Binary(BinaryOp::Mul)),
        inputs: vec![a, b],
        output: out,
    };
    let keep: Vec<f32> = c.iter().map(|&v| if v != 0.0 { 1.0 } else { 0.0 }).collect();
    let (xc, yc) = (spread(g, x), spread(g, y));
    let (xs, ys) = (g.tensors[x].shape.clone(), g.tensors[y].shape.clone());
    let (term_a, term_b) = match (xc, yc) {
        (None, Some(yv)) => {
            let m = g.add_const_f32(&format!("{out_name}.keep"), shape.clone(), keep.clone());
            let a = tmp(g, "selected", broadcast(&xs, &shape));
            nodes.push(mul(x, m, a, "select"));
            let d: Vec<f32> = keep.iter().zip(&yv).map(|(&k, &v)| if k != 0.0 { 0.0 } else { v }).collect();
            (a, g.add_const_f32(&format!("{out_name}.fill"), shape.clone(), d))
        }
        (Some(xv), None) => {
            let m = g.add_const_f32(
                &format!("{out_name}.keep_else"),
                shape.clone(),
                keep.iter().map(|k| 1.0 - k).collect(),
            );
            let b = tmp(g, "selected_else", broadcast(&ys, &shape));
            nodes.push(mul(y, m, b, "select_else"));
            let d: Vec<f32> = keep.iter().zip(&xv).map(|(&k, &v)| if k != 0.0 { v } else { 0.0 }).collect();
            (g.add_const_f32(&format!("{out_name}.fill"), shape.clone(), d), b)
        }
        _ => {
            let m = g.add_const_f32(&format!("{out_name}.keep"), shape.clone(), keep.clone());
            let me = g.add_const_f32(
                &format!("{out_name}.keep_else"),
                shape.clone(),
                keep.iter().map(|k| 1.0 - k).collect(),
            );
            let a = tmp(g, "selected", broadcast(&xs, &shape));
            let b = tmp(g, "selected_else", broadcast(&ys, &shape));
            nodes.push(mul(x, m, a, "select"));
            nodes.push(mul(y, me, b, "select_else"));
            (a, b)
        }
    };
    nodes.push(Node { op: IrOp::Rt(Op::Binary(BinaryOp::Add)), inputs: vec![term_a, term_b], ..n.clone() });
    Ok(nodes)
}

/// NumPy broadcast of two shapes (the caller's shapes already broadcast, as ONNX checked).
fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            da.max(db)
        })
        .collect()
}
