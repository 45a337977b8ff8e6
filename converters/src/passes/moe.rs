//! Fuses a dense top-1 mixture-of-experts layer (Switch Transformer) into the runtime's `Moe`
//! op, which runs only the routed expert per token.
//!
//! Matched form: what the zoo's `SwitchFfn` exports, as it looks after `fuse_gelu` and
//! `fold_bias` (biases folded into MatMuls, the erf chain into one activation):
//! ```text
//! l      = MatMul+bias(x, Wr[E,D], br[E])              # router logits [.., E]
//! probs  = Softmax_last(l)
//! top    = ReduceMax(l, axes=[-1], keepdims=1)          # [.., 1]
//! onehot = Cast<float>(Equal(l, top))                   # Identity after import
//! gate   = Mul(probs, onehot)                           # either operand order
//! y_e    = Mul(MatMul+bias(act(MatMul+bias(x, W1_e[F,D], b1_e)), W2_e[D,F], b2_e),
//!              Slice(gate, [.., e:e+1]))                # for e = 0..E, any operand order
//! y      = a tree of Adds over exactly {y_0 … y_{E-1}}
//! ```
//! Every intermediate must be used only inside the pattern, every expert reads the same `x`
//! and uses the same element-wise activation. The last node of the pattern becomes
//! `Moe { activation, capacity }` reading `x`, the router, and new constants `w1 [E,F,D]`,
//! `b1 [E,F]`, `w2 [E,D,F]`, `b2 [E,D]` stacked from the experts. Ties between router logits
//! differ in one respect: `Equal` selects every tied expert, the op the first one (a tie of
//! two f32 logits has probability ~0 in a trained model).
//!
//! `capacity` (tokens per expert per call, 0 = unlimited) comes from the model metadata
//! `mote.moe_capacity` (absent: 0, which is what the ONNX graph computes). It counts per call,
//! so `forward` over `S` tokens can drop tokens while `decode_step` (one token) never does.
//!
//! A router whose pattern does not match still converts: its `ReduceMax` over the last axis
//! becomes `Slice` + `Max` ops and `Equal(a, b)` becomes `Pow(0, |a − b|)` (1 exactly where
//! `a == b`, else 0), so every expert runs densely for every token, and the graph's metadata
//! gets a `mote.note` saying which router was not fused and why.

use super::rt;
use crate::ir::{Elem, Graph, IrOp, Node, TId, Tensor};
use mote::ops::{BinaryOp, UnaryOp};
use mote::Op;

/// Model metadata key holding the per-expert capacity written into fused `Moe` ops.
pub const CAPACITY_KEY: &str = "mote.moe_capacity";

type Why = String;

/// One matched layer: the node to rewrite and its operands.
struct Matched {
    root: usize,
    activation: UnaryOp,
    x: TId,
    router: (TId, TId),
    /// Per expert: (w1 [F,D], b1 [F], w2 [D,F], b2 [D]).
    experts: Vec<[TId; 4]>,
}

fn is_pattern(g: &Graph, i: usize, onnx_op: &str) -> bool {
    g.nodes[i].op == IrOp::PatternOnly && g.nodes[i].onnx_op == onnx_op
}

fn name(g: &Graph, t: TId) -> &str {
    &g.tensors[t].name
}

/// The only node reading `t` (which must not be a graph output).
fn sole_consumer(g: &Graph, t: TId) -> Result<usize, Why> {
    match g.consumers(t)[..] {
        [c] if g.single_use(t) => Ok(c),
        _ => Err(format!("'{}' is also used outside the MoE pattern", name(g, t))),
    }
}

/// The producer of `t`, which must be read only once.
fn sole_producer(g: &Graph, t: TId) -> Result<usize, Why> {
    if !g.single_use(t) {
        return Err(format!("'{}' is also used outside the MoE pattern", name(g, t)));
    }
    g.producer(t).ok_or_else(|| format!("'{}' is not computed by a node", name(g, t)))
}

/// `(x, W, b)` of a biased MatMul node with constant `W [rows, cols]` and `b [rows]`.
fn linear(g: &Graph, i: usize, rows: Option<usize>) -> Result<(TId, TId, TId), Why> {
    if rt(g, i) != Some(&Op::MatMul { has_bias: true }) {
        return Err(format!("node '{}' is not a MatMul with bias", g.nodes[i].name));
    }
    let [x, w, b] = g.nodes[i].inputs[..] else { return Err(format!("node '{}': bad arity", g.nodes[i].name)) };
    let ws = &g.tensors[w].shape;
    let ok = g.konst(w).is_some()
        && g.konst(b).is_some()
        && ws.len() == 2
        && g.tensors[b].shape == [ws[0]]
        && rows.is_none_or(|r| r == ws[0]);
    if !ok {
        return Err(format!("node '{}': weights are not constant [N, K] with bias [N]", g.nodes[i].name));
    }
    Ok((x, w, b))
}

/// Matches the layer whose router max is the `ReduceMax` node `rm`.
fn match_layer(g: &Graph, rm: usize) -> Result<Matched, Why> {
    let l = g.nodes[rm].inputs[0];
    let top = g.nodes[rm].output;
    let ls = g.tensors[l].shape.clone();
    let e = *ls.last().ok_or("router logits are a scalar")?;
    let mut want_top = ls.clone();
    *want_top.last_mut().unwrap_or(&mut 0) = 1;
    if g.tensors[top].shape != want_top {
        return Err("ReduceMax is not over the last axis with keepdims=1".into());
    }
    let router = g.producer(l).ok_or("router logits are not computed")?;
    let (x, wr, br) = linear(g, router, Some(e))?;
    let d = g.tensors[wr].shape[1];
    if g.tensors[x].shape.last() != Some(&d) {
        return Err("router input width differs from its weight".into());
    }
    // Consumers of the logits: this ReduceMax, one Softmax over the last axis, one Equal.
    let users = g.consumers(l);
    if users.len() != 3 || g.outputs.contains(&l) {
        return Err(format!("router logits '{}' have {} readers, want 3", name(g, l), users.len()));
    }
    let last = ls.len() - 1;
    let sm = *users
        .iter()
        .find(|&&u| rt(g, u) == Some(&Op::Softmax { axis: last as u8 }))
        .ok_or("no Softmax over the router logits")?;
    let eq = sole_consumer(g, top)?;
    if !is_pattern(g, eq, "Equal") || !users.contains(&eq) {
        return Err("ReduceMax is not compared with the logits by Equal".into());
    }
    let cast = sole_consumer(g, g.nodes[eq].output)?;
    if rt(g, cast) != Some(&Op::Unary(UnaryOp::Identity)) {
        return Err("the Equal mask is not cast to float".into());
    }
    let (probs, onehot) = (g.nodes[sm].output, g.nodes[cast].output);
    let mul = sole_consumer(g, probs)?;
    let mut operands = g.nodes[mul].inputs.clone();
    operands.sort_unstable();
    let mut want = vec![probs, onehot];
    want.sort_unstable();
    if rt(g, mul) != Some(&Op::Binary(BinaryOp::Mul)) || operands != want || !g.single_use(onehot) {
        return Err("the gate is not Mul(probs, one-hot)".into());
    }
    let gate = g.nodes[mul].output;
    let slices = g.consumers(gate);
    if slices.len() != e || g.outputs.contains(&gate) {
        return Err(format!("the gate has {} readers, want one Slice per expert ({e})", slices.len()));
    }
    let mut experts: Vec<Option<[TId; 4]>> = vec![None; e];
    let mut outs: Vec<TId> = Vec::with_capacity(e);
    let mut activation = None;
    for s in slices {
        let Some(Op::Slice { starts, steps }) = rt(g, s) else { return Err("a gate reader is not a Slice".into()) };
        let out = g.nodes[s].output;
        let k = starts[last] as usize;
        let plain = (0..ls.len()).all(|a| steps[a] == 1 && (a == last || starts[a] == 0));
        if !plain || g.tensors[out].shape != want_top || k >= e || experts[k].is_some() {
            return Err(format!("Slice '{}' does not pick one expert's gate", g.nodes[s].name));
        }
        let ym = sole_consumer(g, out)?;
        if rt(g, ym) != Some(&Op::Binary(BinaryOp::Mul)) {
            return Err(format!("expert {k}'s gate is not multiplied with its output"));
        }
        let h = *g.nodes[ym].inputs.iter().find(|&&t| t != out).ok_or("gate multiplied by itself")?;
        let (u, w2, b2) = linear(g, sole_producer(g, h)?, Some(d))?;
        let act = sole_producer(g, u)?;
        let a = match rt(g, act) {
            Some(&Op::Unary(a)) if a != UnaryOp::Identity => a,
            _ => return Err(format!("expert {k} has no element-wise activation")),
        };
        if activation.is_some_and(|b| b != a) {
            return Err("experts use different activations".into());
        }
        activation = Some(a);
        let (xe, w1, b1) = linear(g, sole_producer(g, g.nodes[act].inputs[0])?, None)?;
        let f = g.tensors[w1].shape[0];
        if xe != x || g.tensors[w1].shape != [f, d] || g.tensors[w2].shape != [d, f] {
            return Err(format!("expert {k} does not map the router's input {d} → F → {d}"));
        }
        if experts.iter().flatten().any(|p| g.tensors[p[0]].shape != g.tensors[w1].shape) {
            return Err("experts have different hidden widths".into());
        }
        experts[k] = Some([w1, b1, w2, b2]);
        outs.push(g.nodes[ym].output);
    }
    let root = sum_tree(g, outs)?;
    Ok(Matched {
        root,
        activation: activation.ok_or("no experts")?,
        x,
        router: (wr, br),
        experts: experts.into_iter().collect::<Option<Vec<_>>>().ok_or("an expert is missing")?,
    })
}

/// The node producing the sum of exactly `terms` through a tree of single-use Adds.
fn sum_tree(g: &Graph, mut terms: Vec<TId>) -> Result<usize, Why> {
    while terms.len() > 1 {
        let add = terms.iter().find_map(|&t| {
            let c = sole_consumer(g, t).ok()?;
            let ins = &g.nodes[c].inputs;
            let ok = rt(g, c) == Some(&Op::Binary(BinaryOp::Add))
                && ins.len() == 2
                && ins[0] != ins[1]
                && ins.iter().all(|i| terms.contains(i));
            ok.then_some(c)
        });
        let Some(add) = add else { return Err("the expert outputs are not summed by Adds alone".into()) };
        terms.retain(|t| !g.nodes[add].inputs.contains(t));
        terms.push(g.nodes[add].output);
    }
    g.producer(terms[0]).ok_or_else(|| "no expert output".into())
}

/// Stacks constant tensors of equal shape into one `[n, ..]` constant.
fn stack(g: &mut Graph, name: &str, parts: &[TId]) -> TId {
    let mut shape = vec![parts.len()];
    shape.extend(&g.tensors[parts[0]].shape);
    let data: Vec<f32> = parts.iter().flat_map(|&t| g.konst(t).map(|c| c.to_f32()).unwrap_or_default()).collect();
    g.add_const_f32(name, shape, data)
}

fn rewrite(g: &mut Graph, m: Matched, capacity: u32) {
    let base = g.tensors[g.nodes[m.root].output].name.clone();
    let col = |k: usize| m.experts.iter().map(|p| p[k]).collect::<Vec<_>>();
    let w1 = stack(g, &format!("{base}.moe_w1"), &col(0));
    let b1 = stack(g, &format!("{base}.moe_b1"), &col(1));
    let w2 = stack(g, &format!("{base}.moe_w2"), &col(2));
    let b2 = stack(g, &format!("{base}.moe_b2"), &col(3));
    let node = &mut g.nodes[m.root];
    node.op = IrOp::Rt(Op::Moe { activation: m.activation, capacity });
    node.inputs = vec![m.x, m.router.0, m.router.1, w1, b1, w2, b2];
    node.onnx_op = "MoE(fused)".into();
}

/// The capacity the metadata asks for (0 when absent or unreadable).
fn capacity_of(g: &Graph) -> u32 {
    g.metadata.iter().find(|(k, _)| k == CAPACITY_KEY).and_then(|(_, v)| v.trim().parse().ok()).unwrap_or(0)
}

/// Fuses every matched MoE layer; lowers the routers of unmatched ones densely (with a note).
/// Returns the number of fused layers.
pub fn fuse_moe(g: &mut Graph) -> usize {
    let capacity = capacity_of(g);
    let mut fused = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        if is_pattern(g, i, "ReduceMax") {
            match match_layer(g, i) {
                Ok(m) => {
                    rewrite(g, m, capacity);
                    fused += 1;
                    g.remove_dead_nodes();
                    i = 0;
                    continue;
                }
                Err(why) => {
                    let note = format!(
                        "MoE router max '{}' not fused ({why}): every expert runs for every token",
                        g.nodes[i].name
                    );
                    g.metadata.push((super::NOTE_KEY.into(), note));
                    i += lower_reduce_max(g, i);
                    continue;
                }
            }
        }
        i += 1;
    }
    let mut i = 0;
    while i < g.nodes.len() {
        i += if is_pattern(g, i, "Equal") { lower_equal(g, i) } else { 1 };
    }
    fused
}

fn temp(g: &mut Graph, name: String, shape: Vec<usize>) -> TId {
    g.add_tensor(Tensor { name, shape, elem: Elem::Float, konst: None })
}

/// `ReduceMax` over the last axis with kept dims as `Slice` + `Max`; returns the nodes now
/// in its place (1 when left for `lower_leftovers` to reject).
fn lower_reduce_max(g: &mut Graph, i: usize) -> usize {
    let n = g.nodes[i].clone();
    let x = n.inputs[0];
    let shape = g.tensors[x].shape.clone();
    let Some(&e) = shape.last() else { return 1 };
    let mut out_shape = shape.clone();
    *out_shape.last_mut().unwrap_or(&mut 0) = 1;
    if g.tensors[n.output].shape != out_shape || g.tensors[x].elem != Elem::Float || e == 0 {
        return 1;
    }
    let mut nodes = Vec::new();
    let mut acc = None;
    for k in 0..e {
        let mut starts = [0u32; mote::tensor::MAX_RANK];
        starts[shape.len() - 1] = k as u32;
        let col = if e == 1 { n.output } else { temp(g, format!("{}.col{k}", n.name), out_shape.clone()) };
        let op = Op::Slice { starts, steps: [1; mote::tensor::MAX_RANK] };
        nodes.push(Node {
            name: format!("{}:slice{k}", n.name),
            op: IrOp::Rt(op),
            inputs: vec![x],
            output: col,
            ..n.clone()
        });
        acc = Some(match acc {
            None => col,
            Some(a) => {
                let out = if k + 1 == e { n.output } else { temp(g, format!("{}.max{k}", n.name), out_shape.clone()) };
                let op = IrOp::Rt(Op::Binary(BinaryOp::Max));
                nodes.push(Node {
                    name: format!("{}:max{k}", n.name),
                    op,
                    inputs: vec![a, col],
                    output: out,
                    ..n.clone()
                });
                out
            }
        });
    }
    let k = nodes.len();
    g.nodes.splice(i..=i, nodes);
    k
}

/// Real-valued `Equal(a, b)` as `Pow(0, |a − b|)`; returns the nodes now in its place.
fn lower_equal(g: &mut Graph, i: usize) -> usize {
    let n = g.nodes[i].clone();
    let [a, b] = n.inputs[..] else { return 1 };
    if g.tensors[a].elem != Elem::Float || g.tensors[b].elem != Elem::Float {
        return 1;
    }
    let shape = g.tensors[n.output].shape.clone();
    let diff = temp(g, format!("{}.diff", n.name), shape.clone());
    let dist = temp(g, format!("{}.dist", n.name), shape);
    let zero = g.add_const_f32(&format!("{}.zero", n.name), vec![], vec![0.0]);
    g.tensors[n.output].elem = Elem::Float;
    let mk = |op: Op, inputs: Vec<TId>, output: TId, s: &str| Node {
        name: format!("{}:{s}", n.name),
        op: IrOp::Rt(op),
        inputs,
        output,
        ..n.clone()
    };
    let nodes = vec![
        mk(Op::Binary(BinaryOp::Sub), vec![a, b], diff, "sub"),
        mk(Op::Unary(UnaryOp::Abs), vec![diff], dist, "abs"),
        mk(Op::Binary(BinaryOp::Pow), vec![zero, dist], n.output, "pow"),
    ];
    g.nodes.splice(i..=i, nodes);
    3
}

#[cfg(test)]
mod tests {
    use crate::array::Array;
    use crate::convert::{convert, Options};
    use crate::emit::dtypes::QuantMode;
    use crate::zoo::layers::{Params, ZooLayer};
    use crate::zoo::onnx_builder::{DataType, Dim, GraphBuilder};
    use crate::zoo::rng::SplitMix64;
    use crate::zoo::switch::SwitchFfn;
    use anyhow::Result;

    /// A one-layer Switch FFN (D 8, F 6, E 3) as ONNX with input `x [1, 5, 8]`; `extra_gate`
    /// also makes the one-hot gate a graph output, which must block the fusion.
    fn tiny_onnx(extra_gate: bool) -> Result<Vec<u8>> {
        let mut p = Params::new(3);
        let moe = SwitchFfn::new(&mut p, "moe", 8, 6, 3, 0.5, 0.5)?;
        p.randomize(0.8)?;
        let mut g = GraphBuilder::new("tiny_moe");
        let dims = [Dim::Fixed(1), Dim::Fixed(5), Dim::Fixed(8)];
        g.input("x", DataType::Float, &dims);
        let y = moe.export(&mut g, "x")?;
        g.output(&y, DataType::Float, &dims);
        if extra_gate {
            g.output("/moe/Mul_output_0", DataType::Float, &[Dim::Fixed(1), Dim::Fixed(5), Dim::Fixed(3)]);
        }
        Ok(g.finish())
    }

    fn convert_and_compare(extra_gate: bool) -> Result<crate::convert::Converted> {
        let path = std::env::temp_dir().join(format!("mote_moe_pass_{extra_gate}_{}.onnx", std::process::id()));
        std::fs::write(&path, tiny_onnx(extra_gate)?)?;
        let opts = Options {
            quant: QuantMode::F32,
            bounds: Default::default(),
            calibration: None,
            decode: false,
            extra_entries: vec![],
        };
        let c = convert(&path, &opts)?;
        let mut r = SplitMix64::new(11);
        for _ in 0..3 {
            let x = Array::f32(vec![1, 5, 8], r.normal_vec(40, 1.5));
            let got = crate::host::run(&c.bytes, "forward", std::slice::from_ref(&x))?;
            let want = crate::verify::tract_reference(&path, std::slice::from_ref(&x))?;
            for (a, b) in got.iter().zip(&want) {
                let (a, b) = (a.to_f32(), b.to_f32());
                let max = a.iter().zip(&b).fold(0f32, |m, (u, v)| m.max((u - v).abs()));
                assert!(max < 1e-5, "mote vs tract {max}");
                assert!(b.iter().any(|v| v.abs() > 1e-3));
            }
        }
        std::fs::remove_file(&path)?;
        Ok(c)
    }

    #[test]
    fn fuses_the_dense_switch_layer_into_one_moe_op() -> Result<()> {
        let c = convert_and_compare(false)?;
        let ops: Vec<&str> = c.inspection.ops.iter().map(|o| o.op.as_str()).collect();
        assert_eq!(ops.iter().filter(|o| **o == "Moe").count(), 1, "{ops:?}");
        assert!(!ops.contains(&"MatMul") && !ops.contains(&"Slice"), "{ops:?}");
        // Router 3·8 plus one expert 2·6·8, for each of the 5 tokens.
        assert_eq!(c.inspection.ops.iter().map(|o| o.macs).sum::<u64>(), 5 * (3 * 8 + 2 * 6 * 8));
        Ok(())
    }

    #[test]
    fn an_unmatched_layer_runs_densely_with_a_note() -> Result<()> {
        let c = convert_and_compare(true)?;
        let ops: Vec<&str> = c.inspection.ops.iter().map(|o| o.op.as_str()).collect();
        assert!(!ops.contains(&"Moe"), "{ops:?}");
        assert_eq!(ops.iter().filter(|o| **o == "MatMul").count(), 1 + 3 * 2, "{ops:?}");
        let notes = &c.inspection.notes;
        assert!(notes.iter().any(|n| n.contains("not fused")), "{notes:?}");
        Ok(())
    }
}
