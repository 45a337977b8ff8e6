//! Layers both sequence-to-sequence stacks build from: multi-head attention with its own
//! query, key, value and output projections ([`ProjectedAttention`]), the residual add scoped
//! under its block ([`export_residual`]) and batches of token ids ([`ids_batch`]).

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

use crate::zoo::attention::{attend_heads, export_heads, softmax_keys};
use crate::zoo::layers::{Linear, Params, ZooLayer};
use crate::zoo::onnx_builder::GraphBuilder;

/// Multi-head attention with `q`, `k`, `v` and `o` projections of width `d_model`: queries from
/// one input, keys and values from another (the same one for self-attention), and whatever the
/// family adds to the scores (padding masks, a prefix mask, a position bias) added before the
/// softmax. The encoder–decoder's cross-attention scales the scores by `1/√Dh`; T5 does not.
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

/// Residual add `a + b` scoped under `name`.
pub fn export_residual(g: &mut GraphBuilder, name: &str, a: &str, b: &str) -> String {
    g.push_scope(name);
    let y = g.op("Add", &[a, b], vec![]);
    g.pop_scope();
    y
}

/// Token ids `[B, S]` from equal-length rows.
pub fn ids_batch(rows: &[Vec<u32>]) -> candle_core::Result<Tensor> {
    let s = rows.first().map_or(0, |r| r.len());
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), s), &Device::Cpu)
}

/// Test support: runs the ONNX model `model` in tract on int64 inputs `(shape, values)` and
/// returns the max-abs difference of its first output from `want` (which must be as long).
#[cfg(test)]
pub(crate) fn tract_max_abs(model: &[u8], inputs: &[(&[usize], Vec<i64>)], want: &[f32]) -> Result<f32> {
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx().model_for_read(&mut &model[..])?.into_optimized()?.into_runnable()?;
    let values = inputs
        .iter()
        .map(|(shape, v)| Ok(tract_onnx::prelude::Tensor::from_shape(shape, v)?.into_tvalue()))
        .collect::<Result<TVec<TValue>>>()?;
    let out = plan.run(values)?;
    let got: Vec<f32> = out[0].to_plain_array_view::<f32>()?.iter().copied().collect();
    ensure!(want.len() == got.len(), "tract gives {} values, candle {}", got.len(), want.len());
    Ok(crate::family::max_abs(want, &got))
}
