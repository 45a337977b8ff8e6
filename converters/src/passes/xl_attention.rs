//! Fuses spelled-out Transformer-XL relative attention into one runtime `Attention` op with
//! [`PositionBias::XlRelative`] (and the memory-validity key mask).
//!
//! Matched form (what the zoo's `transformer-xl` exports), with `q_flat [1, Sq, H*Dh]` and
//! `k_flat`, `v_flat [1, Skv, H*Dh]` (keys = [memory; segment]):
//! ```text
//! AC = Transpose{0,2,1,3}(Reshape(q_flat + u -> [1,Sq,H,Dh])) @ Transpose{0,2,3,1}(Reshape(k_flat))
//! BD = Transpose{2,1,0,3}( Reshape(q_flat + v -> [Sq,H,1,Dh]) @ G )      G constant [Sq,H,Dh,Skv]
//! P  = Softmax_last( masks( (AC + BD) * scale ) )
//! y  = Reshape(Transpose{0,2,1,3}(P @ Transpose{0,2,1,3}(Reshape(v_flat))) -> [1,Sq,H*Dh])
//! ```
//! `G` is the relative table gathered by distance (`G[s,h,d,j] = r[s + Skv - Sq - j, h*Dh + d]`
//! wherever key `j` is visible); the pass checks that structure and recovers `r [Skv, H*Dh]`.
//! `masks` is a constant causal mask aligned with the last `Sq` keys (required) and optionally
//! a key-padding mask `(1 - mask[:, None, None, :]) * c` with `c <= -1e4`, whose `[B, Skv]`
//! input becomes the op's key mask.
//!
//! A pattern that starts like XL attention (scores = `AC + BD` with a constant `G`) but does
//! not match adds a `mote.note` saying why; anything else is left to the other passes.

use super::rt;
use crate::ir::{Graph, IrOp, TId};
use mote::ops::{Attention, BinaryOp, MaskMode, PositionBias, UnaryOp};
use mote::Op;

/// Additive mask values at or below this count as "masked out".
const MASKED: f32 = -1e4;

type Why = String;

fn perm_is(g: &Graph, n: usize, want: [u8; 4]) -> bool {
    matches!(rt(g, n), Some(Op::Transpose { perm }) if perm[..4] == want)
}

/// The node producing `t` if nothing else reads `t`.
fn only_producer(g: &Graph, t: TId) -> Option<usize> {
    g.single_use(t).then(|| g.producer(t)).flatten()
}

fn only_consumer(g: &Graph, t: TId) -> Option<usize> {
    match g.consumers(t)[..] {
        [c] if g.single_use(t) => Some(c),
        _ => None,
    }
}

/// `(x, c)` for `Add(x, c)` (either order) with a constant `c` of `n` elements.
fn add_const(g: &Graph, t: TId, n: usize) -> Option<(TId, Vec<f32>)> {
    let a = only_producer(g, t)?;
    if rt(g, a) != Some(&Op::Binary(BinaryOp::Add)) {
        return None;
    }
    let [x, y] = g.nodes[a].inputs[..] else { return None };
    for (x, c) in [(x, y), (y, x)] {
        if let Some(k) = g.konst(c).filter(|k| k.len() == n && g.konst(x).is_none()) {
            return Some((x, k.to_f32()));
        }
    }
    None
}

/// `x` behind `Reshape(x)` where nothing else reads the reshaped value.
fn reshaped(g: &Graph, t: TId) -> Option<TId> {
    let r = only_producer(g, t)?;
    (rt(g, r) == Some(&Op::Reshape)).then(|| g.nodes[r].inputs[0])
}

/// `x` behind `Transpose{perm}(t)`.
fn transposed(g: &Graph, t: TId, perm: [u8; 4]) -> Option<TId> {
    let n = only_producer(g, t)?;
    perm_is(g, n, perm).then(|| g.nodes[n].inputs[0])
}

/// Whether a constant `[.., Sq, Skv]` mask is causal with queries aligned to the last keys.
fn aligned_causal(c: &[f32], shape: &[usize]) -> bool {
    if shape.len() < 2 || shape[..shape.len() - 2].iter().any(|&d| d != 1) {
        return false;
    }
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let Some(offset) = cols.checked_sub(rows) else { return false };
    (0..rows)
        .all(|i| (0..cols).all(|j| if j <= i + offset { c[i * cols + j] == 0.0 } else { c[i * cols + j] <= MASKED }))
}

/// The raw `[B, Skv]` mask behind `(1 - mask[:, None, None, :]) * c` (c <= -1e4).
fn key_mask(g: &Graph, ext: TId) -> Option<TId> {
    let n = g.producer(ext)?;
    if rt(g, n) != Some(&Op::Binary(BinaryOp::Mul)) {
        return None;
    }
    let [a, b] = g.nodes[n].inputs[..] else { return None };
    let inverted = match (g.scalar(a), g.scalar(b)) {
        (None, Some(c)) if c <= MASKED => a,
        (Some(c), None) if c <= MASKED => b,
        _ => return None,
    };
    let sub = g.producer(inverted)?;
    let [one, mut t] = g.nodes[sub].inputs[..] else { return None };
    if rt(g, sub) != Some(&Op::Binary(BinaryOp::Sub)) || g.scalar(one) != Some(1.0) {
        return None;
    }
    let s = &g.tensors[ext].shape;
    let want = [*s.first()?, *s.last()?];
    loop {
        if g.tensors[t].shape.len() == 2 {
            return (g.tensors[t].shape == want).then_some(t);
        }
        let p = g.producer(t)?;
        if !matches!(rt(g, p), Some(Op::Reshape | Op::Unary(UnaryOp::Identity))) {
            return None;
        }
        t = g.nodes[p].inputs[0];
    }
}

/// Recovers `r [Skv, H*Dh]` from `G [Sq, H, Dh, Skv]`, checking that every visible entry is
/// `r[distance]`.
fn relative_table(gv: &[f32], sq: usize, h: usize, dh: usize, skv: usize) -> Option<Vec<f32>> {
    let offset = skv.checked_sub(sq)?;
    let at = |s: usize, hh: usize, d: usize, j: usize| gv[((s * h + hh) * dh + d) * skv + j];
    let mut r = vec![0f32; skv * h * dh];
    for dist in 0..skv {
        for hh in 0..h {
            for d in 0..dh {
                r[dist * h * dh + hh * dh + d] = at(sq - 1, hh, d, sq - 1 + offset - dist);
            }
        }
    }
    for s in 0..sq {
        for j in 0..=s + offset {
            for hh in 0..h {
                for d in 0..dh {
                    if at(s, hh, d, j).to_bits() != r[(s + offset - j) * h * dh + hh * dh + d].to_bits() {
                        return None;
                    }
                }
            }
        }
    }
    Some(r)
}

struct Found {
    q: TId,
    k: TId,
    v: TId,
    key_mask: Option<TId>,
    u: Vec<f32>,
    vb: Vec<f32>,
    r: Vec<f32>,
    attention: Attention,
    last: usize,
}

/// The scores below the masks: `(scores, key mask)`, or why the masks do not fit.
fn peel_masks(g: &Graph, mut t: TId) -> Result<(TId, Option<TId>), Why> {
    let (mut causal, mut keys) = (false, None);
    for _ in 0..2 {
        let Some(n) = only_producer(g, t) else { break };
        if rt(g, n) != Some(&Op::Binary(BinaryOp::Add)) {
            break;
        }
        let [a, b] = g.nodes[n].inputs[..] else { break };
        let mut next = None;
        for (s, m) in [(a, b), (b, a)] {
            if let Some(c) = g.konst(m) {
                if causal || !aligned_causal(&c.to_f32(), &g.tensors[m].shape) {
                    return Err(format!(
                        "the constant '{}' added to the scores is not one causal mask",
                        g.tensors[m].name
                    ));
                }
                causal = true;
                next = Some(s);
                break;
            }
            if let Some(raw) = key_mask(g, m) {
                if keys.replace(raw).is_some() {
                    return Err("two key-padding masks are added to the scores".into());
                }
                next = Some(s);
                break;
            }
        }
        match next {
            Some(s) => t = s,
            None => break,
        }
    }
    if !causal {
        return Err("the scores have no causal mask (the XL relative term needs causal attention)".into());
    }
    Ok((t, keys))
}

/// `(ac, bd)` if `t = Add(AC, BD)` with BD = Transpose{2,1,0,3}(BatchMatMul(_, constant)).
fn split_terms(g: &Graph, t: TId) -> Option<(TId, TId, usize)> {
    let add = only_producer(g, t)?;
    if rt(g, add) != Some(&Op::Binary(BinaryOp::Add)) {
        return None;
    }
    let [a, b] = g.nodes[add].inputs[..] else { return None };
    for (ac, bd) in [(a, b), (b, a)] {
        let Some(inner) = transposed(g, bd, [2, 1, 0, 3]) else { continue };
        let Some(mm) = only_producer(g, inner) else { continue };
        if rt(g, mm) == Some(&Op::BatchMatMul) && g.konst(g.nodes[mm].inputs[1]).is_some() {
            return Some((ac, bd, mm));
        }
    }
    None
}

fn match_at(g: &Graph, softmax: usize) -> Option<Result<Found, Why>> {
    if rt(g, softmax) != Some(&Op::Softmax { axis: 3 }) || g.tensors[g.nodes[softmax].output].shape.len() != 4 {
        return None;
    }
    let t = g.nodes[softmax].inputs[0];
    // Find the XL signature first (below the masks and the scale) before judging anything.
    let mut probe = t;
    let mut sig = None;
    for _ in 0..4 {
        if let Some(s) = split_terms(g, probe) {
            sig = Some(s);
            break;
        }
        let n = only_producer(g, probe)?;
        probe = *g.nodes[n].inputs.iter().find(|&&i| g.konst(i).is_none())?;
    }
    let (ac, bd, bd_mm) = sig?;
    Some(match_xl(g, softmax, t, ac, bd, bd_mm))
}

fn match_xl(g: &Graph, softmax: usize, t: TId, ac: TId, bd: TId, bd_mm: usize) -> Result<Found, Why> {
    let (t, key_mask) = peel_masks(g, t)?;
    let scale_node = only_producer(g, t).ok_or("the masked scores are used elsewhere")?;
    let [x, c] = g.nodes[scale_node].inputs[..] else { return Err("malformed scale".into()) };
    let scale = match (rt(g, scale_node), g.scalar(c)) {
        (Some(Op::Binary(BinaryOp::Mul)), Some(c)) => c,
        (Some(Op::Binary(BinaryOp::Div)), Some(c)) => 1.0 / c,
        _ => return Err("the scores are not scaled by a constant right below the masks".into()),
    };
    if split_terms(g, x).map(|s| (s.0, s.1)) != Some((ac, bd)) {
        return Err("the scale does not apply to AC + BD".into());
    }
    // AC = Qu @ Kt.
    let ac_mm = only_producer(g, ac).filter(|&n| rt(g, n) == Some(&Op::BatchMatMul)).ok_or("AC is not Q @ K^T")?;
    let [qh, kt] = g.nodes[ac_mm].inputs[..] else { return Err("malformed AC".into()) };
    let qu = transposed(g, qh, [0, 2, 1, 3]).and_then(|x| reshaped(g, x)).ok_or("queries are not split into heads")?;
    let k = transposed(g, kt, [0, 2, 3, 1]).and_then(|x| reshaped(g, x)).ok_or("keys are not split into heads")?;
    let qh_shape = g.tensors[qh].shape.clone();
    let [batch, heads, sq, dh] = qh_shape[..] else { return Err("queries are not [B,H,Sq,Dh]".into()) };
    let hd = heads * dh;
    let (q, u) = add_const(g, qu, hd).ok_or("the content bias u is not a constant [H*Dh] added to the queries")?;
    // BD = Qv @ G.
    let [qr, gt] = g.nodes[bd_mm].inputs[..] else { return Err("malformed BD".into()) };
    let qv = reshaped(g, qr).ok_or("the position queries are not reshaped to [Sq,H,1,Dh]")?;
    let (q2, vb) = add_const(g, qv, hd).ok_or("the position bias v is not a constant [H*Dh] added to the queries")?;
    if q2 != q {
        return Err("AC and BD read different queries".into());
    }
    let skv = g.tensors[k].shape.get(1).copied().ok_or("keys are not [B,Skv,H*Dh]")?;
    if batch != 1 || g.tensors[qr].shape != [sq, heads, 1, dh] || g.tensors[gt].shape != [sq, heads, dh, skv] {
        return Err(format!(
            "the relative term is not [Sq,H,1,Dh] @ [Sq,H,Dh,Skv] at batch 1 (got {:?} @ {:?})",
            g.tensors[qr].shape, g.tensors[gt].shape
        ));
    }
    let gv = g.konst(gt).map(|c| c.to_f32()).ok_or("the relative table is not constant")?;
    let r = relative_table(&gv, sq, heads, dh, skv)
        .ok_or("the constant relative table is not indexed by the distance between query and key")?;
    // P @ V, merged heads.
    let pv = only_consumer(g, g.nodes[softmax].output).ok_or("the probabilities are used elsewhere")?;
    if rt(g, pv) != Some(&Op::BatchMatMul) || g.nodes[pv].inputs[0] != g.nodes[softmax].output {
        return Err("the probabilities do not multiply the values (P @ V)".into());
    }
    let v = transposed(g, g.nodes[pv].inputs[1], [0, 2, 1, 3])
        .and_then(|x| reshaped(g, x))
        .ok_or("values are not split into heads")?;
    let tr = only_consumer(g, g.nodes[pv].output).ok_or("P @ V is used elsewhere")?;
    if !perm_is(g, tr, [0, 2, 1, 3]) {
        return Err("P @ V is not transposed back to [B,S,H,Dh]".into());
    }
    let merge = only_consumer(g, g.nodes[tr].output).ok_or("the heads are used elsewhere")?;
    if rt(g, merge) != Some(&Op::Reshape) || g.tensors[g.nodes[merge].output].shape != [1, sq, hd] {
        return Err("the heads are not merged back to [B,S,H*Dh]".into());
    }
    if g.tensors[q].shape != [1, sq, hd] || g.tensors[k].shape != [1, skv, hd] || g.tensors[v].shape != [1, skv, hd] {
        return Err("queries, keys and values disagree on heads x head size".into());
    }
    if key_mask.is_some_and(|m| g.tensors[m].shape != [1, skv]) {
        return Err("the key mask is not [B, Skv]".into());
    }
    let attention = Attention {
        heads: heads as u16,
        head_dim: dh as u16,
        mask: MaskMode::Causal,
        key_mask: key_mask.is_some(),
        bias: PositionBias::XlRelative,
        scale,
        cache: None,
    };
    Ok(Found { q, k, v, key_mask, u, vb, r, attention, last: merge })
}

/// Replaces every matched XL attention subgraph with one `Attention` node; a pattern that
/// starts like XL attention but does not match adds a `mote.note`.
pub fn fuse_xl_attention(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        match match_at(g, i) {
            None => {}
            Some(Ok(f)) => {
                let name = g.nodes[f.last].name.clone();
                let hd = f.u.len();
                let u = g.add_const_f32(&format!("{name}.xl_u"), vec![hd], f.u);
                let vb = g.add_const_f32(&format!("{name}.xl_v"), vec![hd], f.vb);
                let r = g.add_const_f32(&format!("{name}.xl_r"), vec![f.r.len() / hd, hd], f.r);
                let mut inputs = vec![f.q, f.k, f.v];
                inputs.extend(f.key_mask);
                inputs.extend([u, vb, r]);
                let n = &mut g.nodes[f.last];
                n.op = IrOp::Rt(Op::Attention(f.attention));
                n.inputs = inputs;
                n.onnx_op = "Attention(fused, XL)".into();
            }
            Some(Err(why)) => {
                let note = format!("XL attention at node '{}' runs unfused: {why}", g.nodes[i].name);
                g.metadata.push((super::NOTE_KEY.into(), note));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::{Bounds, OnnxModel};
    use crate::zoo::xl::{Xl, XlConfig};

    fn tiny_graph(dir: &std::path::Path) -> anyhow::Result<Graph> {
        let cfg = XlConfig { d_model: 8, n_heads: 2, d_ff: 16, seg: 3, mem: 3, ..XlConfig::new(6) };
        let mut xl = Xl::new(cfg, 5)?;
        xl.params_mut().randomize(0.4)?;
        std::fs::create_dir_all(dir)?;
        let path = dir.join("xl.onnx");
        std::fs::write(&path, xl.export_onnx("abcdef")?)?;
        OnnxModel::load(&path)?.instantiate(&Bounds::new())
    }

    #[test]
    fn relative_table_round_trips() {
        // Sq 2, H 1, Dh 1, Skv 3: G[s, j] = r[s + 1 - j] where visible.
        let r = [10.0, 11.0, 12.0];
        let g = [r[1], r[0], 99.0, r[2], r[1], r[0]];
        assert_eq!(relative_table(&g, 2, 1, 1, 3).unwrap(), r);
        let mut bad = g;
        bad[0] = 5.0; // query 0, key 0: distance 1, which query 1 reads as 11
        assert!(relative_table(&bad, 2, 1, 1, 3).is_none());
        assert!(aligned_causal(&[0.0, 0.0, -1e9, 0.0, 0.0, 0.0], &[2, 3]));
        assert!(!aligned_causal(&[0.0, -1e9, -1e9, 0.0, 0.0, -1e9], &[2, 3]));
    }

    #[test]
    fn exported_xl_attention_fuses_into_one_op_per_layer() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_xl_pass_{}", std::process::id()));
        let mut g = tiny_graph(&dir)?;
        let softmaxes = g.nodes.iter().filter(|n| matches!(rt_op(n), Some(Op::Softmax { .. }))).count();
        assert_eq!(softmaxes, 2);
        super::super::fuse_layer_norm(&mut g);
        super::super::fuse_gelu(&mut g);
        super::super::fold_bias(&mut g);
        g.remove_dead_nodes();
        fuse_xl_attention(&mut g);
        g.remove_dead_nodes();
        assert!(g.metadata.iter().all(|(k, _)| k != super::super::NOTE_KEY), "{:?}", g.metadata);
        let fused: Vec<&crate::ir::Node> =
            g.nodes.iter().filter(|n| matches!(rt_op(n), Some(Op::Attention(_)))).collect();
        assert_eq!(fused.len(), 2);
        for n in fused {
            let Some(Op::Attention(a)) = rt_op(n) else { unreachable!() };
            assert_eq!(
                (a.heads, a.head_dim, a.mask, a.key_mask, a.bias),
                (2, 4, MaskMode::Causal, true, PositionBias::XlRelative)
            );
            assert!((a.scale - 0.5).abs() < 1e-7);
            assert_eq!(n.inputs.len(), a.n_inputs());
            // The key mask is the run-time [validity; ones] concatenation, [1, M + S].
            let mask = n.inputs[3];
            assert_eq!(g.tensors[mask].shape, [1, 6]);
            assert!(g.producer(mask).is_some_and(|p| matches!(rt_op(&g.nodes[p]), Some(Op::Concat { .. }))));
            assert_eq!(g.tensors[n.inputs[6]].shape, [6, 8], "r holds one row per distance");
        }
        assert!(!g.nodes.iter().any(|n| matches!(rt_op(n), Some(Op::Softmax { .. } | Op::BatchMatMul))));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    fn rt_op(n: &crate::ir::Node) -> Option<&Op> {
        match &n.op {
            IrOp::Rt(op) => Some(op),
            _ => None,
        }
    }

    #[test]
    fn a_non_causal_xl_pattern_is_noted_not_fused() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_xl_pass_nc_{}", std::process::id()));
        let mut g = tiny_graph(&dir)?;
        // Break the causal mask: make it all zeros.
        for t in &mut g.tensors {
            if t.name == "xl_causal_mask" {
                t.konst = Some(crate::ir::Const::F32(vec![0.0; t.numel()]));
            }
        }
        fuse_xl_attention(&mut g);
        let notes: Vec<&String> =
            g.metadata.iter().filter(|(k, _)| k == super::super::NOTE_KEY).map(|(_, v)| v).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("causal"), "{}", notes[0]);
        assert!(!g.nodes.iter().any(|n| matches!(rt_op(n), Some(Op::Attention(_)))));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
