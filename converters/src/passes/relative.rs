//! Fuses T5's bucketed relative-position bias and the UniLM prefix-LM mask into the runtime's
//! `Attention` op (`PositionBias::Buckets`, `MaskMode::Prefix`), around [`fuse_attention`].
//!
//! Matched terms added to the `[B, H, Sq, Skv]` scores before the softmax (in any order):
//! - **bias**: `Unsqueeze(Transpose{2,0,1}(Gather(table [buckets, H], index)))` where `index`
//!   is either a constant `[Sq, Skv]` or `Slice(Gather(M, Range(0, S)), [:, :Skv])` of a
//!   constant `M`, and the index equals [`mote::ops::relative_bucket`]`(key - query)` for some
//!   `(max_distance, bidirectional)` (the number of buckets is the table's row count);
//! - **prefix mask**: `Mul(Sub(Max(C, Min(Relu(Sub(prefix, j)), 1)), 1), K)` with `prefix` the
//!   `[B]` integer input (through a Cast and a Reshape), `j` the key positions (`Range`), `C`
//!   the constant causal 0/1 matrix and `K >= 1e4`.
//!
//! Both terms are cut out of the scores, [`fuse_attention`] fuses what is left, and the
//! fused op gets the prefix input and the table appended (inputs `q, k, v, [key mask],
//! [prefix], [table]`). An attention whose terms matched but whose remainder does not fuse is
//! an error (its bias would otherwise be lost).

use super::{fuse_attention, rt, NOTE_KEY};
use crate::ir::{Elem, Graph, IrOp, TId};
use anyhow::{bail, Result};
use mote::ops::{relative_bucket, BinaryOp, MaskMode, PositionBias, UnaryOp};
use mote::Op;

/// Masked-out additive values are at or below this.
const MASKED: f32 = -1e4;

/// What was cut out of one attention's scores.
#[derive(Debug, Default)]
struct Terms {
    /// The relative-bias table and its parameters.
    bias: Option<(TId, PositionBias)>,
    /// The `[B]` prefix-length input.
    prefix: Option<TId>,
}

/// The input of the single-input node producing `t`, if it is a Reshape or an Identity (cast).
fn through_layout(g: &Graph, mut t: TId) -> TId {
    while let Some(p) = g.producer(t) {
        match rt(g, p) {
            Some(Op::Reshape | Op::Unary(UnaryOp::Identity)) => t = g.nodes[p].inputs[0],
            _ => break,
        }
    }
    t
}

fn binary(g: &Graph, t: TId, op: BinaryOp) -> Option<[TId; 2]> {
    let p = g.producer(t)?;
    if rt(g, p) != Some(&Op::Binary(op)) {
        return None;
    }
    g.nodes[p].inputs[..].try_into().ok()
}

/// `(max_distance, bidirectional)` such that `index(i, j) == relative_bucket(j - i - offset)`
/// for every cell of a `rows x cols` index, or `None`.
fn bucket_params(index: &[i64], rows: usize, cols: usize, offset: i64, buckets: u16) -> Option<(u16, bool)> {
    if index.len() != rows * cols || buckets < 2 {
        return None;
    }
    let fits = |md: u16, bidi: bool| {
        (0..rows).all(|i| {
            (0..cols).all(|j| {
                let rel = j as i64 - i as i64 - offset;
                i32::try_from(rel).is_ok_and(|r| index[i * cols + j] == relative_bucket(r, buckets, md, bidi) as i64)
            })
        })
    };
    for bidi in [true, false] {
        // The logarithmic buckets start at `exact`; a smaller saturation distance is degenerate.
        let exact = ((buckets / (1 + u16::from(bidi))) / 2).max(1);
        if let Some(md) = std::iter::once(128).chain(exact + 1..=1024).find(|&md| md > exact && fits(md, bidi)) {
            return Some((md, bidi));
        }
    }
    None
}

/// The bias term: `(table, Buckets{..})` if `term` is the T5 bias over `sq x skv` scores.
fn match_bias(g: &Graph, term: TId, sq: usize, skv: usize) -> Option<(TId, PositionBias)> {
    let tr = g.producer(through_layout(g, term))?;
    if !matches!(rt(g, tr), Some(Op::Transpose { perm }) if perm[..3] == [2, 0, 1]) {
        return None;
    }
    let gather = g.producer(g.nodes[tr].inputs[0])?;
    if rt(g, gather) != Some(&Op::Gather { axis: 0 }) {
        return None;
    }
    let [table, index] = g.nodes[gather].inputs[..] else { return None };
    let tshape = &g.tensors[table].shape;
    if g.konst(table).is_none() || tshape.len() != 2 || g.tensors[index].shape != [sq, skv] {
        return None;
    }
    let buckets = u16::try_from(tshape[0]).ok()?;
    let (md, bidi) = match g.konst(index) {
        // A constant [Sq, Skv] index: queries are aligned with the last Sq keys.
        Some(c) => bucket_params(&c.to_i64(), sq, skv, (skv - sq) as i64, buckets)?,
        // Slice(Gather(M, positions)) with M[i][j] = bucket(j - i).
        None => {
            let slice = g.producer(index)?;
            let Some(Op::Slice { starts, steps }) = rt(g, slice) else { return None };
            if starts.iter().any(|&s| s != 0) || steps.iter().any(|&s| s != 1) {
                return None;
            }
            let rows = g.producer(g.nodes[slice].inputs[0])?;
            if rt(g, rows) != Some(&Op::Gather { axis: 0 }) {
                return None;
            }
            let [m, pos] = g.nodes[rows].inputs[..] else { return None };
            let p = g.producer(pos)?;
            if rt(g, p) != Some(&Op::Positions { start: 0, step: 1 }) {
                return None;
            }
            let ms = &g.tensors[m].shape;
            if ms.len() != 2 || ms[1] < skv {
                return None;
            }
            bucket_params(&g.konst(m)?.to_i64(), ms[0], ms[1], 0, buckets)?
        }
    };
    Some((table, PositionBias::Buckets { buckets, max_distance: md, bidirectional: bidi }))
}

/// Whether `c` is the constant causal 0/1 matrix over its last two axes.
fn is_causal_ones(g: &Graph, c: TId) -> bool {
    let (Some(k), s) = (g.konst(c), &g.tensors[c].shape) else { return false };
    if s.len() < 2 || s[..s.len() - 2].iter().any(|&d| d != 1) {
        return false;
    }
    let (rows, cols) = (s[s.len() - 2], s[s.len() - 1]);
    let v = k.to_f32();
    (0..rows).all(|i| (0..cols).all(|j| v[i * cols + j] == if j <= i { 1.0 } else { 0.0 }))
}

/// The prefix-length input if `term` is the prefix-LM mask.
fn match_prefix(g: &Graph, term: TId) -> Option<TId> {
    let [shifted, k] = binary(g, term, BinaryOp::Mul)?;
    if -g.scalar(k)? > MASKED {
        return None;
    }
    let [allowed, one] = binary(g, shifted, BinaryOp::Sub)?;
    if g.scalar(one)? != 1.0 {
        return None;
    }
    let [a, b] = binary(g, allowed, BinaryOp::Max)?;
    let vis = match (is_causal_ones(g, a), is_causal_ones(g, b)) {
        (true, false) => b,
        (false, true) => a,
        _ => return None,
    };
    let [relu, one] = binary(g, vis, BinaryOp::Min)?;
    if g.scalar(one)? != 1.0 {
        return None;
    }
    let r = g.producer(relu)?;
    if rt(g, r) != Some(&Op::Unary(UnaryOp::Relu)) {
        return None;
    }
    let [pf, jf] = binary(g, g.nodes[r].inputs[0], BinaryOp::Sub)?;
    let j = g.producer(through_layout(g, jf))?;
    if rt(g, j) != Some(&Op::Positions { start: 0, step: 1 }) {
        return None;
    }
    let prefix = through_layout(g, pf);
    (g.inputs.contains(&prefix) && g.tensors[prefix].elem == Elem::Int && g.tensors[prefix].shape.len() == 1)
        .then_some(prefix)
}

/// The flat queries `[B, S, H*Dh]` behind `scores = (Q @ Kt) [* scale]`, as the attention
/// fuser will name them.
fn flat_queries(g: &Graph, scores: TId) -> Option<TId> {
    let mut p = g.producer(scores)?;
    if matches!(rt(g, p), Some(Op::Binary(BinaryOp::Mul | BinaryOp::Div))) {
        p = g.producer(g.nodes[p].inputs[0])?;
    }
    if rt(g, p) != Some(&Op::BatchMatMul) {
        return None;
    }
    let tr = g.producer(g.nodes[p].inputs[0])?;
    let r = g.producer(g.nodes[tr].inputs[0])?;
    (rt(g, r) == Some(&Op::Reshape)).then(|| g.nodes[r].inputs[0])
}

/// Cuts the bias and prefix terms out of every softmax's scores; returns them per flat-query
/// tensor, with the softmax's name.
fn strip(g: &mut Graph) -> Vec<(TId, Terms, String)> {
    let mut found = Vec::new();
    for i in 0..g.nodes.len() {
        let IrOp::Rt(Op::Softmax { axis: 3 }) = g.nodes[i].op else { continue };
        let mut t = g.nodes[i].inputs[0];
        let shape = g.tensors[t].shape.clone();
        if shape.len() != 4 {
            continue;
        }
        let (sq, skv) = (shape[2], shape[3]);
        let mut terms = Terms::default();
        for _ in 0..2 {
            let Some([a, b]) = binary(g, t, BinaryOp::Add) else { break };
            let mut next = None;
            for (scores, term) in [(a, b), (b, a)] {
                if terms.bias.is_none() {
                    if let Some(bias) = match_bias(g, term, sq, skv) {
                        terms.bias = Some(bias);
                        next = Some(scores);
                        break;
                    }
                }
                if terms.prefix.is_none() {
                    if let Some(p) = match_prefix(g, term) {
                        terms.prefix = Some(p);
                        next = Some(scores);
                        break;
                    }
                }
            }
            match next {
                Some(s) => t = s,
                None => break,
            }
        }
        if terms.bias.is_none() && terms.prefix.is_none() {
            continue;
        }
        let Some(q) = flat_queries(g, t) else { continue };
        g.nodes[i].inputs[0] = t;
        found.push((q, terms, g.nodes[i].name.clone()));
    }
    found
}

/// Fuses attention (with [`fuse_attention`]) including T5's relative bias and the prefix-LM
/// mask; see the module docs.
pub fn fuse_relative_attention(g: &mut Graph) -> Result<()> {
    let found = strip(g);
    if !found.is_empty() {
        g.remove_dead_nodes();
    }
    fuse_attention(g);
    for (q, terms, softmax) in found {
        let node =
            g.nodes.iter_mut().find(|n| matches!(n.op, IrOp::Rt(Op::Attention(_))) && n.inputs.first() == Some(&q));
        let Some(node) = node else {
            let notes: Vec<&str> = g.metadata.iter().filter(|(k, _)| k == NOTE_KEY).map(|(_, v)| v.as_str()).collect();
            bail!(
                "the attention at softmax '{softmax}' has a relative-position bias or prefix mask but does not \
                 fuse into an Attention op, which is the only op that can apply them\n{}",
                notes.join("\n")
            );
        };
        let IrOp::Rt(Op::Attention(a)) = &mut node.op else { unreachable!("matched above") };
        if let Some(p) = terms.prefix {
            if a.mask != MaskMode::None {
                bail!("the attention at softmax '{softmax}' has a prefix-LM mask and another mask");
            }
            a.mask = MaskMode::Prefix;
            node.inputs.push(p);
        }
        if let Some((table, bias)) = terms.bias {
            a.bias = bias;
            node.inputs.push(table);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::Array;
    use crate::import::OnnxModel;
    use crate::zoo::t5::{T5Config, T5};
    use prost::Message;

    fn tiny(dir: &std::path::Path, corrupt_index: bool) -> anyhow::Result<(std::path::PathBuf, Vec<f32>)> {
        let cfg = T5Config { vocab: 7, d_model: 8, n_heads: 2, n_layers: 1, d_ff: 16, max_seq: 10, ..T5Config::new(7) };
        let mut m = T5::new(cfg, 5)?;
        m.params_mut().randomize(0.5)?;
        let table = m.params().all().iter().find(|p| p.name == "rel_bias.weight").map(|p| p.var.clone());
        let table = crate::zoo::layers::tensor_data(table.as_ref().expect("table").as_tensor())?;
        let mut proto = tract_onnx::pb::ModelProto::decode(&m.export_onnx("abcdefg", 4)?[..])?;
        if corrupt_index {
            let graph = proto.graph.as_mut().expect("graph");
            let t = graph.initializer.iter_mut().find(|t| t.name == "rel_bias.bucket_index").expect("index");
            t.raw_data[8..16].copy_from_slice(&31i64.to_le_bytes()); // cell (0, 1)
        }
        std::fs::create_dir_all(dir)?;
        let path = dir.join(if corrupt_index { "bad.onnx" } else { "t5.onnx" });
        std::fs::write(&path, proto.encode_to_vec())?;
        Ok((path, table))
    }

    #[test]
    fn fuses_bias_and_prefix_mask_and_matches_tract() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_relative_{}", std::process::id()));
        let (path, table) = tiny(&dir, false)?;
        let model = OnnxModel::load(&path)?;
        for seq in [10usize, 1] {
            let bounds = [("seq".to_string(), seq)].into_iter().collect();
            let mut g = model.instantiate(&bounds)?;
            crate::passes::run_all(&mut g)?;
            let att: Vec<_> = g
                .nodes
                .iter()
                .filter_map(|n| match n.op {
                    IrOp::Rt(Op::Attention(a)) => Some((a, n.inputs.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(att.len(), 1, "seq {seq}");
            let (a, inputs) = &att[0];
            assert_eq!(a.mask, MaskMode::Prefix);
            assert_eq!(a.scale, 1.0);
            let PositionBias::Buckets { buckets, bidirectional, .. } = a.bias else { panic!("no bias: {a:?}") };
            assert_eq!((buckets, bidirectional), (32, true));
            assert_eq!(inputs.len(), 5);
            assert_eq!(g.tensors[inputs[3]].name, "prefix_len");
            assert_eq!(g.konst(inputs[4]).map(|c| c.to_f32()), Some(table.clone()));
            assert!(!g.nodes.iter().any(|n| matches!(n.op, IrOp::Rt(Op::Positions { .. }))), "mask subgraph left over");
        }
        // The fused file computes what tract computes on the ONNX graph.
        let bounds = [("seq".to_string(), 10usize)].into_iter().collect();
        let opts = crate::convert::Options {
            quant: crate::emit::dtypes::QuantMode::F32,
            bounds,
            calibration: None,
            decode: false,
            extra_entries: Vec::new(),
        };
        let conv = crate::convert::convert(&path, &opts)?;
        for prefix in [0i64, 3, 10] {
            let inputs =
                [Array::i64(vec![1, 10], vec![1, 2, 3, 4, 5, 6, 0, 1, 2, 3]), Array::i64(vec![1], vec![prefix])];
            let got = crate::host::run(&conv.bytes, "forward", &inputs)?.remove(0).to_f32();
            let want = crate::verify::tract_reference(&path, &inputs)?.remove(0).to_f32();
            let diff = crate::family::max_abs(&got, &want);
            assert!(diff < 1e-4, "prefix {prefix}: {diff}");
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn an_index_that_is_not_relative_buckets_is_refused() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_relative_bad_{}", std::process::id()));
        let (path, _) = tiny(&dir, true)?;
        let bounds = [("seq".to_string(), 10usize)].into_iter().collect();
        let mut g = OnnxModel::load(&path)?.instantiate(&bounds)?;
        // Either refused outright or left as plain ops with a note; never fused with a wrong bias.
        if crate::passes::run_all(&mut g).is_ok() {
            assert!(!g.nodes.iter().any(|n| matches!(n.op, IrOp::Rt(Op::Attention(_)))));
            assert!(g.metadata.iter().any(|(k, v)| k == NOTE_KEY && v.contains("unfused")), "{:?}", g.metadata);
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn bucket_params_are_recovered() {
        for (md, bidi) in [(16u16, true), (128, true), (20, false)] {
            let idx: Vec<i64> =
                (0..40 * 40i32).map(|i| relative_bucket(i % 40 - i / 40, 32, md, bidi) as i64).collect();
            let (got_md, got_bidi) = bucket_params(&idx, 40, 40, 0, 32).expect("params");
            assert_eq!(got_bidi, bidi);
            // Any recovered distance gives the same buckets on this index.
            assert!((0..40 * 40)
                .all(|i| { relative_bucket((i % 40) as i32 - (i / 40) as i32, 32, got_md, bidi) as i64 == idx[i] }));
        }
        assert_eq!(bucket_params(&[0, 5, 0, 0], 2, 2, 0, 32), None);
    }
}
