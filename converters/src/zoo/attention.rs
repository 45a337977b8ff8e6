//! Causal multi-head self-attention and the pre-LN Transformer block.
//!
//! The ONNX export follows the conventions the converter's fuser expects: separate Q/K/V
//! projections, `Reshape [1,-1,H,Dh]`, K transposed with perm `[0,2,3,1]`, a scalar `Mul` by
//! `1/√Dh`, and an additive `causal_mask` initializer sliced to `[S,S]` from the shape
//! subgraph.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::attention::CausalSelfAttention;
//! use mote_converters::zoo::layers::{Params, ZooLayer};
//! let mut p = Params::new(3);
//! let attn = CausalSelfAttention::new(&mut p, "attn", 16, 4, 8, 0.1, 0.1)?;
//! let x = Tensor::zeros((2, 5, 16), candle_core::DType::F32, &Device::Cpu)?;
//! assert_eq!(attn.forward(&x)?.dims(), &[2, 5, 16]);
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{ensure, Result};
use candle_core::{Tensor, D};

use super::layers::{LayerNorm, Linear, Mlp, Params, ZooLayer};
use super::onnx_builder::{attr_int, attr_ints, GraphBuilder};

/// Name of the shared causal mask initializer.
pub const CAUSAL_MASK: &str = "causal_mask";
/// Builder symbol holding the scalar sequence length (int64).
pub const SYM_SEQ_LEN: &str = "seq_len";
/// Builder symbol holding the `[S, S]` ends used to slice the causal mask.
pub const SYM_MASK_ENDS: &str = "causal_mask_ends";
/// Value added above the diagonal.
pub const MASK_NEG: f32 = -1e9;

/// `[n, n]` additive mask: 0 on/below the diagonal, [`MASK_NEG`] above.
pub fn causal_mask_data(n: usize) -> Vec<f32> {
    (0..n * n).map(|i| if i % n > i / n { MASK_NEG } else { 0.0 }).collect()
}

/// Emits (or reuses) the scalar int64 sequence length `Shape(x) → Gather(1)`.
pub fn export_seq_len(g: &mut GraphBuilder, x: &str) -> String {
    if let Some(s) = g.lookup(SYM_SEQ_LEN) {
        return s;
    }
    let shape = g.op("Shape", &[x], vec![]);
    let one = g.const_i64_scalar(1);
    let s = g.op("Gather", &[&shape, &one], vec![attr_int("axis", 0)]);
    g.bind(SYM_SEQ_LEN, &s);
    s
}

/// Multi-head attention of projected queries `q [b, T, H·dh]` over keys `k` and values `v`
/// `[b, S, H·dh]` with `heads` heads: the scores `Q·Kᵀ`, times 1/√dh when `scaled`, plus each of
/// `adds` (masks, biases; broadcast to `[b, H, T, S]`), `softmax` over the keys, and the heads
/// merged back into `[b, T, H·dh]`.
pub fn attend_heads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scaled: bool,
    adds: &[&Tensor],
    softmax: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, t, d) = q.dims3()?;
    let s = k.dim(1)?;
    let dh = d / heads;
    let q = q.reshape((b, t, heads, dh))?.transpose(1, 2)?.contiguous()?;
    let kt = k.reshape((b, s, heads, dh))?.permute((0, 2, 3, 1))?.contiguous()?;
    let v = v.reshape((b, s, heads, dh))?.transpose(1, 2)?.contiguous()?;
    let mut scores = q.matmul(&kt)?;
    if scaled {
        scores = (scores * (1.0 / (dh as f64).sqrt()))?;
    }
    for a in adds {
        scores = scores.broadcast_add(a)?;
    }
    softmax(&scores)?.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, t, d))
}

/// Softmax over the last axis (candle's).
pub fn softmax_keys(scores: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(scores, D::Minus1)
}

/// ONNX of [`attend_heads`] in the current scope, the pattern the converter fuses into its
/// `Attention` op: Q, K and V split into heads by `Reshape` to `heads_shape` (`[n, S, H, dh]`,
/// one of n and S as -1) and `Transpose` (K to `[n, H, dh, S]` with perm `[0, 2, 3, 1]`), the
/// scores' `MatMul`, a `Mul` by 1/√dh when `scaled`, an `Add` of each of `adds`, `Softmax`,
/// `MatMul` with V, and the heads moved back and `Reshape`d to `merged`.
pub fn export_heads(
    g: &mut GraphBuilder,
    (q, k, v): (&str, &str, &str),
    heads_shape: [i64; 4],
    merged: [i64; 3],
    scaled: bool,
    adds: &[&str],
) -> String {
    let shape = g.const_i64_vec(&heads_shape);
    let mut split = |x: &str, perm: &[i64]| {
        let r = g.op("Reshape", &[x, &shape], vec![]);
        g.op("Transpose", &[&r], vec![attr_ints("perm", perm)])
    };
    let q = split(q, &[0, 2, 1, 3]);
    let kt = split(k, &[0, 2, 3, 1]);
    let v = split(v, &[0, 2, 1, 3]);
    let mut scores = g.op("MatMul", &[&q, &kt], vec![]);
    if scaled {
        let scale = g.const_f32_scalar(1.0 / (heads_shape[3] as f32).sqrt());
        scores = g.op("Mul", &[&scores, &scale], vec![]);
    }
    for a in adds {
        scores = g.op("Add", &[&scores, a], vec![]);
    }
    let probs = g.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
    let y = g.op("MatMul", &[&probs, &v], vec![]);
    let y = g.op("Transpose", &[&y], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let merged = g.const_i64_vec(&merged);
    g.op("Reshape", &[&y, &merged], vec![])
}

/// Multi-head attention with `q`, `k`, `v` and `o` projections of width `d_model`: queries from
/// one input, keys and values from another (the same one for self-attention), and whatever the
/// family adds to the scores (padding masks, a prefix mask, a position bias) added before the
/// softmax. The causal self-attention and the encoder–decoder's cross-attention scale the scores by
/// `1/√Dh`; T5 does not.
#[derive(Clone, Debug)]
pub struct ProjectedAttention {
    name: String,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    n_heads: usize,
    d_model: usize,
    scaled: bool,
}

impl ProjectedAttention {
    /// Projections named `{name}.q|k|v|o` drawn in that order (`o` with `out_std`); `d` must be
    /// divisible by `h`. `scaled`: whether the scores are scaled by `1/√Dh`.
    pub fn new(p: &mut Params, name: &str, d: usize, h: usize, std: f64, out_std: f64, scaled: bool) -> Result<Self> {
        ensure!(h > 0 && d.is_multiple_of(h), "d_model must divide into heads");
        Ok(Self {
            name: name.to_string(),
            q: Linear::new(p, &format!("{name}.q"), d, d, std)?,
            k: Linear::new(p, &format!("{name}.k"), d, d, std)?,
            v: Linear::new(p, &format!("{name}.v"), d, d, std)?,
            o: Linear::new(p, &format!("{name}.o"), d, d, out_std)?,
            n_heads: h,
            d_model: d,
            scaled,
        })
    }

    /// The candle forward pass: queries from `x [B, T, D]`, keys and values from `kv [B, S, D]`,
    /// each of `adds` (broadcast to `[B, H, T, S]`) added to the scores.
    pub fn forward(&self, x: &Tensor, kv: &Tensor, adds: &[&Tensor]) -> candle_core::Result<Tensor> {
        let (q, k, v) = (self.q.forward(x)?, self.k.forward(kv)?, self.v.forward(kv)?);
        self.o.forward(&attend_heads(&q, &k, &v, self.n_heads, self.scaled, adds, softmax_keys)?)
    }

    /// Appends the attention reading `x` (queries), `kv` (keys and values) and the score terms
    /// `adds`; returns its output.
    pub fn export(&self, g: &mut GraphBuilder, x: &str, kv: &str, adds: &[&str]) -> Result<String> {
        let (h, dh, d) = (self.n_heads as i64, (self.d_model / self.n_heads) as i64, self.d_model as i64);
        let q = self.q.export(g, x)?;
        let k = self.k.export(g, kv)?;
        let v = self.v.export(g, kv)?;
        g.push_scope(&self.name);
        let y = export_heads(g, (&q, &k, &v), [1, -1, h, dh], [1, -1, d], self.scaled, adds);
        g.pop_scope();
        self.o.export(g, &y)
    }
}

/// Causal multi-head self-attention with separate Q, K, V and output projections: a
/// [`ProjectedAttention`] over its own input with the causal mask added to the scores.
#[derive(Clone, Debug)]
pub struct CausalSelfAttention {
    attn: ProjectedAttention,
    max_seq: usize,
    mask: Tensor,
}

impl CausalSelfAttention {
    /// `d_model` must be divisible by `n_heads`; sequences up to `max_seq` are supported.
    pub fn new(
        p: &mut Params,
        name: &str,
        d_model: usize,
        n_heads: usize,
        max_seq: usize,
        std: f64,
        out_std: f64,
    ) -> Result<Self> {
        let mask = Tensor::from_vec(causal_mask_data(max_seq), (max_seq, max_seq), p.device())?;
        let attn = ProjectedAttention::new(p, name, d_model, n_heads, std, out_std, true)?;
        Ok(Self { attn, max_seq, mask })
    }

    /// The `[S, S]` causal mask of the sequence `input` (the shared initializer sliced to its
    /// length, under the attention's scope).
    fn export_mask(&self, g: &mut GraphBuilder, input: &str) -> String {
        let seq = export_seq_len(g, input);
        if !g.has_value(CAUSAL_MASK) {
            let n = self.max_seq as i64;
            g.initializer_f32(CAUSAL_MASK, &[n, n], &causal_mask_data(self.max_seq));
        }
        let ends = match g.lookup(SYM_MASK_ENDS) {
            Some(e) => e,
            None => {
                let axes0 = g.const_i64_vec(&[0]);
                let s1 = g.op("Unsqueeze", &[&seq, &axes0], vec![]);
                let e = g.op("Concat", &[&s1, &s1], vec![attr_int("axis", 0)]);
                g.bind(SYM_MASK_ENDS, &e);
                e
            }
        };
        g.push_scope(&self.attn.name);
        let starts = g.const_i64_vec(&[0, 0]);
        let axes = g.const_i64_vec(&[0, 1]);
        let mask = g.op("Slice", &[CAUSAL_MASK, &starts, &ends, &axes], vec![]);
        g.pop_scope();
        mask
    }
}

impl ZooLayer for CausalSelfAttention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let s = x.dim(1)?;
        let mask = self.mask.narrow(0, 0, s)?.narrow(1, 0, s)?;
        self.attn.forward(x, x, &[&mask])
    }

    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let mask = self.export_mask(g, input);
        self.attn.export(g, input, input, &[&mask])
    }
}

/// Pre-LN Transformer block: `h = x + Attn(LN1(x)); out = h + MLP(LN2(h))`.
#[derive(Clone, Debug)]
pub struct Block {
    name: String,
    ln1: LayerNorm,
    attn: CausalSelfAttention,
    ln2: LayerNorm,
    mlp: Mlp,
}

/// Shape hyper-parameters of a [`Block`].
#[derive(Clone, Copy, Debug)]
pub struct BlockDims {
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// MLP hidden width.
    pub d_ff: usize,
    /// Longest supported sequence.
    pub max_seq: usize,
}

impl Block {
    /// A block with normal(0, std) projections; residual outputs use `out_std`.
    pub fn new(p: &mut Params, name: &str, dims: BlockDims, std: f64, out_std: f64) -> Result<Self> {
        let d = dims.d_model;
        Ok(Self {
            name: name.to_string(),
            ln1: LayerNorm::new(p, &format!("{name}.ln1"), d, 1e-5)?,
            attn: CausalSelfAttention::new(p, &format!("{name}.attn"), d, dims.n_heads, dims.max_seq, std, out_std)?,
            ln2: LayerNorm::new(p, &format!("{name}.ln2"), d, 1e-5)?,
            mlp: Mlp::new(p, &format!("{name}.mlp"), d, dims.d_ff, std, out_std)?,
        })
    }
}

impl ZooLayer for Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = (x + self.attn.forward(&self.ln1.forward(x)?)?)?;
        &h + self.mlp.forward(&self.ln2.forward(&h)?)?
    }

    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        export_pre_norm_block(g, &self.name, input, [&self.ln1, &self.attn], [&self.ln2, &self.mlp])
    }
}

/// ONNX of a pre-norm residual block: `h = x + attn(norm1(x))`, `out = h + ffn(norm2(h))`, the
/// two residual adds scoped under `name` (shared by the dense and the Switch blocks).
pub(crate) fn export_pre_norm_block(
    g: &mut GraphBuilder,
    name: &str,
    input: &str,
    [norm1, attn]: [&dyn ZooLayer; 2],
    [norm2, ffn]: [&dyn ZooLayer; 2],
) -> Result<String> {
    let a = norm1.export(g, input)?;
    let a = attn.export(g, &a)?;
    g.push_scope(name);
    let h = g.op("Add", &[input, &a], vec![]);
    g.pop_scope();
    let m = norm2.export(g, &h)?;
    let m = ffn.export(g, &m)?;
    g.push_scope(name);
    let out = g.op("Add", &[&h, &m], vec![]);
    g.pop_scope();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_layout() {
        let m = causal_mask_data(3);
        assert_eq!(m[0..3], [0.0, MASK_NEG, MASK_NEG]);
        assert_eq!(m[3..6], [0.0, 0.0, MASK_NEG]);
        assert_eq!(m[6..9], [0.0, 0.0, 0.0]);
    }
}
