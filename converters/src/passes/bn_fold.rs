//! Folds a per-channel affine map that follows a convolution into its weights and bias:
//! `Conv(x, w, b) · s + t` becomes `Conv(x, w·s, b·s + t)` (s, t constants with one value per
//! output channel). Inference batch-norm is imported as exactly that `Mul` + `Add`, so a
//! convolution followed by batch-norm runs as one op with nothing left of the norm.

use crate::ir::{Const, Graph, IrOp, TId};
use mote::ops::BinaryOp;
use mote::Op;

/// The per-channel values of constant `t` if it broadcasts as `[M, 1, 1]` or `[1, M, 1, 1]`
/// against an `[N, M, H, W]` output.
fn per_channel(g: &Graph, t: TId, m: usize) -> Option<Vec<f32>> {
    let shape = &g.tensors[t].shape;
    let dims: Vec<usize> = shape.iter().copied().skip_while(|&d| d == 1).collect();
    let ok = shape.len() <= 4 && shape.len() >= 3 && dims.first() == Some(&m) && dims[1..].iter().all(|&d| d == 1);
    ok.then(|| g.konst(t).map(Const::to_f32)).flatten().filter(|v| v.len() == m)
}

/// The node consuming `t` alone as `t ∘ c` (`op` Mul or Add) with `c` per-channel, and `c`.
fn affine_after(g: &Graph, t: TId, op: BinaryOp, m: usize) -> Option<(usize, Vec<f32>)> {
    if !g.single_use(t) {
        return None;
    }
    let j = g.consumers(t)[0];
    let n = &g.nodes[j];
    if n.op != IrOp::Rt(Op::Binary(op)) {
        return None;
    }
    let other = if n.inputs[0] == t { n.inputs[1] } else { n.inputs[0] };
    per_channel(g, other, m).map(|c| (j, c))
}

/// Folds every `Mul`/`Add` by per-channel constants after a convolution; returns how many
/// convolutions absorbed one.
pub fn fold_conv_affine(g: &mut Graph) -> usize {
    let mut absorbed = Vec::new();
    let mut folded = 0;
    for i in 0..g.nodes.len() {
        let IrOp::Rt(Op::Conv(mut conv)) = g.nodes[i].op else { continue };
        let w = g.nodes[i].inputs[1];
        let Some(mut weights) = g.konst(w).map(Const::to_f32) else { continue };
        // Grouped transposed convolutions interleave output channels across groups: left alone.
        if conv.transposed && conv.groups != 1 {
            continue;
        }
        let ws = g.tensors[w].shape.clone();
        let m = g.tensors[g.nodes[i].output].shape[1];
        let mut bias = match g.nodes[i].inputs.get(2) {
            Some(&b) => g.konst(b).map(Const::to_f32).unwrap_or_default(),
            None => vec![0.0; m],
        };
        let mut out = g.nodes[i].output;
        let before = absorbed.len();
        if let Some((j, s)) = affine_after(g, out, BinaryOp::Mul, m) {
            // Output channel of weight k: its row (Conv `[M, ..]`) or its column (ConvTranspose `[C, M, ..]`).
            let taps: usize = ws[2..].iter().product();
            for (k, v) in weights.iter_mut().enumerate() {
                let o = if conv.transposed { (k / taps) % ws[1] } else { k / (ws[1] * taps) };
                *v *= s[o];
            }
            bias.iter_mut().zip(&s).for_each(|(b, s)| *b *= s);
            out = g.nodes[j].output;
            absorbed.push(j);
        }
        if let Some((j, t)) = affine_after(g, out, BinaryOp::Add, m) {
            bias.iter_mut().zip(&t).for_each(|(b, t)| *b += t);
            out = g.nodes[j].output;
            absorbed.push(j);
        }
        if absorbed.len() == before {
            continue;
        }
        let name = g.tensors[out].name.clone();
        let w2 = g.add_const_f32(&format!("{name}.folded_w"), ws, weights);
        let b2 = g.add_const_f32(&format!("{name}.folded_b"), vec![m], bias);
        conv.has_bias = true;
        let n = &mut g.nodes[i];
        n.inputs = vec![n.inputs[0], w2, b2];
        n.op = IrOp::Rt(Op::Conv(conv));
        n.output = out;
        folded += 1;
    }
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        !absorbed.contains(&(k - 1))
    });
    folded
}
