//! Bidirectional (encoder) self-attention with a padding mask, and the post-LN encoder layer
//! of BERT and ALBERT.
//!
//! The padding mask is exported the way Hugging Face BERT's PyTorch export writes it:
//! `ext = (1.0 - Cast(Unsqueeze(mask, [1, 2]))) * -10000.0`, computed once per model and added
//! to the scaled scores (`Div` by `√Dh`) of every layer before `Softmax`. Keys are split with
//! `Transpose{0,2,1,3}` then transposed with `Transpose{0,1,3,2}` (`key.transpose(-1, -2)`).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use mote_converters::zoo::encoder::{extended_mask, EncoderLayer, EncoderDims};
//! use mote_converters::zoo::layers::Params;
//! let mut p = Params::new(3);
//! let dims = EncoderDims { d_model: 16, n_heads: 4, d_ff: 32 };
//! let layer = EncoderLayer::new(&mut p, "layer.0", dims, 0.1)?;
//! let x = Tensor::zeros((2, 5, 16), DType::F32, &Device::Cpu)?;
//! let mask = Tensor::new(&[[1u32, 1, 1, 0, 0], [1, 1, 1, 1, 1]], &Device::Cpu)?;
//! let y = layer.forward(&x, &extended_mask(&mask)?)?;
//! assert_eq!(y.dims(), &[2, 5, 16]);
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor, D};

use super::layers::{LayerNorm, Linear, Mlp, Params, ZooLayer};
use super::onnx_builder::{attr_int, attr_ints, DataType, GraphBuilder};

/// Value the extended mask adds at padded keys (Hugging Face BERT's constant).
pub const PAD_NEG: f32 = -10000.0;
/// LayerNorm epsilon of BERT and ALBERT.
pub const LN_EPS: f32 = 1e-12;

/// `(1 - mask[:, None, None, :]) * -10000` as f32 `[B, 1, 1, S]` for a `[B, S]` mask
/// (non-zero = attend).
pub fn extended_mask(mask: &Tensor) -> candle_core::Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let m = mask.to_dtype(DType::F32)?.reshape((b, 1, 1, s))?;
    (m.affine(-1.0, 1.0)? * PAD_NEG as f64)?.contiguous()
}

/// Appends the extended-mask chain for the graph input `mask` (`[1, S]`, int64); returns
/// the `[1, 1, 1, S]` f32 value that every layer adds to its scores.
pub fn export_extended_mask(g: &mut GraphBuilder, mask: &str) -> String {
    g.push_scope("extended_mask");
    let axes = g.const_i64_vec(&[1, 2]);
    let m = g.op("Unsqueeze", &[mask, &axes], vec![]);
    let m = g.op("Cast", &[&m], vec![attr_int("to", DataType::Float as i64)]);
    let one = g.const_f32_scalar(1.0);
    let inv = g.op("Sub", &[&one, &m], vec![]);
    let neg = g.const_f32_scalar(PAD_NEG);
    let ext = g.op("Mul", &[&inv, &neg], vec![]);
    g.pop_scope();
    ext
}

/// Multi-head self-attention in which every query sees every non-padded key.
#[derive(Clone, Debug)]
pub struct SelfAttention {
    name: String,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    n_heads: usize,
    d_model: usize,
}

impl SelfAttention {
    /// `d_model` must be divisible by `n_heads`.
    pub fn new(p: &mut Params, name: &str, d_model: usize, n_heads: usize, std: f64) -> Result<Self> {
        ensure!(n_heads > 0 && d_model.is_multiple_of(n_heads), "d_model must divide into heads");
        Ok(Self {
            name: name.to_string(),
            q: Linear::new(p, &format!("{name}.query"), d_model, d_model, std)?,
            k: Linear::new(p, &format!("{name}.key"), d_model, d_model, std)?,
            v: Linear::new(p, &format!("{name}.value"), d_model, d_model, std)?,
            o: Linear::new(p, &format!("{name}.output"), d_model, d_model, std)?,
            n_heads,
            d_model,
        })
    }

    fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// `x [B, S, D]`, `ext [B, 1, 1, S]` from [`extended_mask`].
    pub fn forward(&self, x: &Tensor, ext: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let (h, dh) = (self.n_heads, self.head_dim());
        let heads = |t: Tensor| t.reshape((b, s, h, dh))?.transpose(1, 2)?.contiguous();
        let q = heads(self.q.forward(x)?)?;
        let kt = heads(self.k.forward(x)?)?.transpose(2, 3)?.contiguous()?;
        let v = heads(self.v.forward(x)?)?;
        let scores = (q.matmul(&kt)? / (dh as f64).sqrt())?.broadcast_add(ext)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let y = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, s, d))?;
        self.o.forward(&y)
    }

    /// Appends the attention reading `x` and the extended mask `ext`; returns its output.
    pub fn export(&self, g: &mut GraphBuilder, x: &str, ext: &str) -> Result<String> {
        let (h, dh, d) = (self.n_heads as i64, self.head_dim() as i64, self.d_model as i64);
        let q = self.q.export(g, x)?;
        let k = self.k.export(g, x)?;
        let v = self.v.export(g, x)?;
        g.push_scope(&self.name);
        let heads_shape = g.const_i64_vec(&[1, -1, h, dh]);
        let mut heads = |t: &str| {
            let r = g.op("Reshape", &[t, &heads_shape], vec![]);
            g.op("Transpose", &[&r], vec![attr_ints("perm", &[0, 2, 1, 3])])
        };
        let q = heads(&q);
        let k = heads(&k);
        let v = heads(&v);
        let kt = g.op("Transpose", &[&k], vec![attr_ints("perm", &[0, 1, 3, 2])]);
        let scores = g.op("MatMul", &[&q, &kt], vec![]);
        let root = g.const_f32_scalar((dh as f32).sqrt());
        let scores = g.op("Div", &[&scores, &root], vec![]);
        let scores = g.op("Add", &[&scores, ext], vec![]);
        let probs = g.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let y = g.op("MatMul", &[&probs, &v], vec![]);
        let y = g.op("Transpose", &[&y], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let merged = g.const_i64_vec(&[1, -1, d]);
        let y = g.op("Reshape", &[&y, &merged], vec![]);
        g.pop_scope();
        self.o.export(g, &y)
    }
}

/// Shape hyper-parameters of an [`EncoderLayer`].
#[derive(Clone, Copy, Debug)]
pub struct EncoderDims {
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// MLP hidden width.
    pub d_ff: usize,
}

/// BERT's post-LN layer: `h = LN1(x + Attn(x)); out = LN2(h + MLP(h))`.
#[derive(Clone, Debug)]
pub struct EncoderLayer {
    name: String,
    attn: SelfAttention,
    ln1: LayerNorm,
    mlp: Mlp,
    ln2: LayerNorm,
}

impl EncoderLayer {
    /// A layer with normal(0, std) projections.
    pub fn new(p: &mut Params, name: &str, dims: EncoderDims, std: f64) -> Result<Self> {
        let d = dims.d_model;
        Ok(Self {
            name: name.to_string(),
            attn: SelfAttention::new(p, &format!("{name}.attention"), d, dims.n_heads, std)?,
            ln1: LayerNorm::new(p, &format!("{name}.attention_norm"), d, LN_EPS)?,
            mlp: Mlp::new(p, &format!("{name}.ffn"), d, dims.d_ff, std, std)?,
            ln2: LayerNorm::new(p, &format!("{name}.output_norm"), d, LN_EPS)?,
        })
    }

    /// `x [B, S, D]`, `ext [B, 1, 1, S]` from [`extended_mask`].
    pub fn forward(&self, x: &Tensor, ext: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.ln1.forward(&(x + self.attn.forward(x, ext)?)?)?;
        self.ln2.forward(&(&h + self.mlp.forward(&h)?)?)
    }

    /// Appends the layer; exporting the same layer twice reuses its initializers.
    pub fn export(&self, g: &mut GraphBuilder, x: &str, ext: &str) -> Result<String> {
        let a = self.attn.export(g, x, ext)?;
        g.push_scope(&self.name);
        let h = g.op("Add", &[x, &a], vec![]);
        g.pop_scope();
        let h = self.ln1.export(g, &h)?;
        let m = self.mlp.export(g, &h)?;
        g.push_scope(&self.name);
        let out = g.op("Add", &[&h, &m], vec![]);
        g.pop_scope();
        self.ln2.export(g, &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::layers::tensor_data;
    use candle_core::Device;

    #[test]
    fn padded_keys_do_not_change_real_positions() -> Result<()> {
        let mut p = Params::new(5);
        let layer = EncoderLayer::new(&mut p, "l", EncoderDims { d_model: 8, n_heads: 2, d_ff: 16 }, 0.5)?;
        p.randomize(0.5)?;
        let mut r = crate::zoo::rng::SplitMix64::new(2);
        let x = Tensor::from_vec(r.normal_vec(6 * 8, 1.0), (1, 6, 8), &Device::Cpu)?;
        let short = x.narrow(1, 0, 4)?;
        let full_mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1]], &Device::Cpu)?;
        let pad_mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0]], &Device::Cpu)?;
        let short_mask = Tensor::new(&[[1u32, 1, 1, 1]], &Device::Cpu)?;
        let padded = tensor_data(&layer.forward(&x, &extended_mask(&pad_mask)?)?.narrow(1, 0, 4)?)?;
        let unpadded = tensor_data(&layer.forward(&short, &extended_mask(&short_mask)?)?)?;
        let attend_all = tensor_data(&layer.forward(&x, &extended_mask(&full_mask)?)?.narrow(1, 0, 4)?)?;
        let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff(&padded, &unpadded) < 1e-5, "{}", diff(&padded, &unpadded));
        assert!(diff(&padded, &attend_all) > 1e-3, "the mask changes what real positions see");
        Ok(())
    }
}
