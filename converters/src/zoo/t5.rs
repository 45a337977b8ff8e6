//! The T5 family in its UniLM prefix-LM form: one pre-norm Transformer stack in which the task
//! prompt is a fully visible prefix and the answer is generated causally.
//!
//! T5 conventions: RMSNorm without bias or mean subtraction, no `1/√Dh` attention scaling, no
//! absolute positions but one bucketed relative-position bias table `[buckets, H]` shared by
//! every layer of the stack (buckets from [`mote::ops::relative_bucket`], so training and the
//! runtime agree bit for bit), ReLU feed-forward.
//!
//! The ONNX export spells out what the converter's `relative` pass fuses into the runtime's
//! `Attention` op (`MaskMode::Prefix` + `PositionBias::Buckets`):
//! - the bias: `Gather(table, Slice(Gather(bucket_index, Range(0, S)), [:S]))` → Transpose
//!   `[H, S, S]` → Unsqueeze → `Add` to the scores;
//! - the prefix mask from the `prefix_len [B]` input: `allowed = Max(causal01[S,S],
//!   Min(Relu(prefix - j), 1))`, added as `(allowed - 1) * 1e9`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::t5::{T5Config, T5};
//! let cfg = T5Config { n_layers: 1, ..T5Config::new(20) };
//! let m = T5::new(cfg, 0)?;
//! let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
//! assert_eq!(m.logits(&ids, &[2])?.dims(), &[1, 3, 20]);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod task;
pub mod train;

pub use super::seq2seq::layers::ids_batch;
pub use card::write_t5_card;
pub use train::{train_t5, T5Report, BUDGET};

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use super::attention::ProjectedAttention;
use super::attention::{export_seq_len, MASK_NEG};
use super::layers::{export_tensor, Embedding, Linear, Params, ZooLayer};
use super::onnx_builder::{attr_int, attr_ints, DataType, Dim, GraphBuilder};
use super::seq2seq::layers::export_residual;

/// Names of the ONNX inputs, in order.
pub const INPUT_NAMES: [&str; 2] = ["tokens", "prefix_len"];

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct T5Config {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Feed-forward hidden width (ReLU).
    pub d_ff: usize,
    /// Longest sequence (prompt + answer).
    pub max_seq: usize,
    /// Relative-position buckets.
    pub buckets: u16,
    /// Distance at which the logarithmic buckets saturate.
    pub max_distance: u16,
    /// Std of the normal weight initialisation.
    pub init_std: f64,
}

impl T5Config {
    /// The zoo model: d_model 64, 4 heads, 3 layers, ReLU FFN 128, context 24, 32 bidirectional
    /// buckets saturating at distance 16.
    pub fn new(vocab: usize) -> Self {
        Self {
            vocab,
            d_model: 64,
            n_heads: 4,
            n_layers: 3,
            d_ff: 128,
            max_seq: 24,
            buckets: 32,
            max_distance: 16,
            init_std: 0.02,
        }
    }
}

/// RMSNorm with a learned scale and no bias (T5's `T5LayerNorm`).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    name: String,
    gamma: Var,
    eps: f32,
}

impl RmsNorm {
    /// `gamma = 1`.
    pub fn new(p: &mut Params, name: &str, dim: usize, eps: f32) -> Result<Self> {
        Ok(Self { name: name.to_string(), gamma: p.constant(&format!("{name}.weight"), &[dim], 1.0)?, eps })
    }
}

impl ZooLayer for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let denom = (ms + self.eps as f64)?.sqrt()?;
        x.broadcast_div(&denom)?.broadcast_mul(self.gamma.as_tensor())
    }

    /// `Pow 2 → ReduceMean → Add eps → Sqrt → Div(x, ·) → Mul γ`.
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let gamma = export_tensor(g, &format!("{}.weight", self.name), &self.gamma)?;
        g.push_scope(&self.name);
        let two = g.const_f32_scalar(2.0);
        let sq = g.op("Pow", &[input, &two], vec![]);
        let ms = g.op("ReduceMean", &[&sq], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)]);
        let eps = g.const_f32_scalar(self.eps);
        let v = g.op("Add", &[&ms, &eps], vec![]);
        let s = g.op("Sqrt", &[&v], vec![]);
        let n = g.op("Div", &[input, &s], vec![]);
        let y = g.op("Mul", &[&n, &gamma], vec![]);
        g.pop_scope();
        Ok(y)
    }
}

/// Pre-norm block: `h = x + Attn(N1(x)); out = h + FFN(N2(h))`, FFN = Linear → ReLU → Linear.
#[derive(Clone, Debug)]
pub struct T5Block {
    name: String,
    n1: RmsNorm,
    /// Self-attention without `1/√Dh` scaling; the stack supplies the shared bias and mask.
    attn: ProjectedAttention,
    n2: RmsNorm,
    fc1: Linear,
    fc2: Linear,
}

impl T5Block {
    fn new(p: &mut Params, name: &str, cfg: &T5Config, std: f64, out_std: f64) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            name: name.to_string(),
            n1: RmsNorm::new(p, &format!("{name}.ln1"), d, 1e-6)?,
            attn: ProjectedAttention::new(p, &format!("{name}.attn"), d, cfg.n_heads, std, out_std, false)?,
            n2: RmsNorm::new(p, &format!("{name}.ln2"), d, 1e-6)?,
            fc1: Linear::new(p, &format!("{name}.ffn.fc1"), d, cfg.d_ff, std)?,
            fc2: Linear::new(p, &format!("{name}.ffn.fc2"), cfg.d_ff, d, out_std)?,
        })
    }

    /// `bias [1, H, S, S]` and `mask [B, 1, S, S]` are added to the unscaled scores.
    fn forward(&self, x: &Tensor, bias: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.n1.forward(x)?;
        let h = (x + self.attn.forward(&a, &a, &[bias, mask])?)?;
        let m = self.fc2.forward(&self.fc1.forward(&self.n2.forward(&h)?)?.relu()?)?;
        &h + m
    }

    fn export(&self, g: &mut GraphBuilder, input: &str, bias: &str, mask: &str) -> Result<String> {
        let a = self.n1.export(g, input)?;
        let a = self.attn.export(g, &a, &a, &[bias, mask])?;
        let h = export_residual(g, &self.name, input, &a);
        let m = self.n2.export(g, &h)?;
        let m = self.fc1.export(g, &m)?;
        g.push_scope(&format!("{}.ffn", self.name));
        let m = g.op("Relu", &[&m], vec![]);
        g.pop_scope();
        let m = self.fc2.export(g, &m)?;
        Ok(export_residual(g, &self.name, &h, &m))
    }
}

/// `[n, n]` bucket index of `key - query` (row = query, column = key).
pub fn bucket_index(n: usize, buckets: u16, max_distance: u16) -> Vec<i64> {
    (0..n * n)
        .map(|i| mote::ops::relative_bucket((i % n) as i32 - (i / n) as i32, buckets, max_distance, true) as i64)
        .collect()
}

/// Additive prefix-LM mask `[B, 1, s, s]`: key `j` is visible to query `i` if `j <= i` or
/// `j < prefix[b]`, else [`MASK_NEG`].
pub fn prefix_mask(prefix: &[usize], s: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut m = Vec::with_capacity(prefix.len() * s * s);
    for &p in prefix {
        for i in 0..s {
            m.extend((0..s).map(|j| if j <= i || j < p { 0.0f32 } else { MASK_NEG }));
        }
    }
    Tensor::from_vec(m, (prefix.len(), 1, s, s), device)
}

/// A T5-style prefix-LM.
#[derive(Debug)]
pub struct T5 {
    cfg: T5Config,
    params: Params,
    tok: Embedding,
    rel: Var,
    blocks: Vec<T5Block>,
    norm: RmsNorm,
    head: Linear,
    index: Tensor,
}

impl T5 {
    /// A freshly initialised model (weights drawn from `seed`).
    pub fn new(cfg: T5Config, seed: u64) -> Result<Self> {
        let mut p = Params::new(seed);
        let std = cfg.init_std;
        let out_std = std / (2.0 * cfg.n_layers as f64).sqrt();
        let tok = Embedding::new(&mut p, "tok_emb", cfg.vocab, cfg.d_model, std)?;
        let rel = p.normal("rel_bias.weight", &[cfg.buckets as usize, cfg.n_heads], std, false)?;
        let blocks = (0..cfg.n_layers)
            .map(|i| T5Block::new(&mut p, &format!("h.{i}"), &cfg, std, out_std))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(&mut p, "ln_f", cfg.d_model, 1e-6)?;
        let head = Linear::new(&mut p, "lm_head", cfg.d_model, cfg.vocab, std)?;
        let idx: Vec<u32> =
            bucket_index(cfg.max_seq, cfg.buckets, cfg.max_distance).iter().map(|&v| v as u32).collect();
        let index = Tensor::from_vec(idx, (cfg.max_seq, cfg.max_seq), p.device())?;
        Ok(Self { cfg, params: p, tok, rel, blocks, norm, head, index })
    }

    /// The architecture.
    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    /// The trainable parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Mutable parameters (e.g. to randomise them in tests).
    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// The shared relative bias `[1, H, s, s]`.
    fn bias(&self, s: usize) -> candle_core::Result<Tensor> {
        let idx = self.index.narrow(0, 0, s)?.narrow(1, 0, s)?.contiguous()?.flatten_all()?;
        let b = self.rel.as_tensor().index_select(&idx, 0)?.reshape((s, s, self.cfg.n_heads))?;
        b.permute((2, 0, 1))?.unsqueeze(0)
    }

    /// Logits `[B, S, vocab]` for token ids `[B, S]` whose first `prefix[b]` positions are the
    /// fully visible prompt.
    pub fn logits(&self, ids: &Tensor, prefix: &[usize]) -> candle_core::Result<Tensor> {
        let (b, s) = ids.dims2()?;
        if prefix.len() != b {
            candle_core::bail!("{} prefix lengths for a batch of {b}", prefix.len());
        }
        let bias = self.bias(s)?;
        let mask = prefix_mask(prefix, s, ids.device())?;
        let mut x = self.tok.forward(ids)?;
        for blk in &self.blocks {
            x = blk.forward(&x, &bias, &mask)?;
        }
        self.head.forward(&self.norm.forward(&x)?)
    }

    /// Encodes the model as ONNX: inputs `tokens` int64 `[1, seq]` and `prefix_len` int64 `[1]`,
    /// output `logits`. `vocab` is the tokenizer string; `prefill` is the fixed prompt length
    /// the `prefill` entry is built for (metadata `mote.prefill`).
    pub fn export_onnx(&self, vocab: &str, prefill: usize) -> Result<Vec<u8>> {
        ensure!(vocab.chars().count() == self.cfg.vocab, "vocab string does not match the model");
        let mut g = GraphBuilder::new("mote_t5");
        let seq = Dim::Param("seq".into());
        let [tokens, prefix] = INPUT_NAMES;
        g.input(tokens, DataType::Int64, &[Dim::Fixed(1), seq.clone()]);
        g.input(prefix, DataType::Int64, &[Dim::Fixed(1)]);
        let logits = self.export_graph(&mut g, tokens, prefix)?;
        g.output(&logits, DataType::Float, &[Dim::Fixed(1), seq, Dim::Fixed(self.cfg.vocab as i64)]);
        g.metadata("mote.family", "t5");
        g.metadata("mote.tokenizer", &format!("chars:{vocab}"));
        g.metadata("mote.max_seq", &self.cfg.max_seq.to_string());
        g.metadata("mote.prefill", &prefill.to_string());
        Ok(g.finish())
    }

    /// Appends the whole model reading `tokens` and `prefix`; returns the `logits` value.
    fn export_graph(&self, g: &mut GraphBuilder, tokens: &str, prefix: &str) -> Result<String> {
        let n = self.cfg.max_seq as i64;
        let mut x = self.tok.export(g, tokens)?;
        let seq = export_seq_len(g, tokens);
        g.push_scope("rel_bias");
        let zero = g.const_i64_scalar(0);
        let one = g.const_i64_scalar(1);
        let pos = g.op("Range", &[&zero, &seq, &one], vec![]);
        let index = g.initializer_i64(
            "rel_bias.bucket_index",
            &[n, n],
            &bucket_index(self.cfg.max_seq, self.cfg.buckets, self.cfg.max_distance),
        );
        let rows = g.op("Gather", &[&index, &pos], vec![attr_int("axis", 0)]);
        let axes0 = g.const_i64_vec(&[0]);
        let end = g.op("Unsqueeze", &[&seq, &axes0], vec![]);
        let start = g.const_i64_vec(&[0]);
        let axes1 = g.const_i64_vec(&[1]);
        let idx = g.op("Slice", &[&rows, &start, &end, &axes1], vec![]);
        g.pop_scope();
        let table = export_tensor(g, "rel_bias.weight", &self.rel)?;
        g.push_scope("rel_bias");
        let b = g.op("Gather", &[&table, &idx], vec![attr_int("axis", 0)]);
        let b = g.op("Transpose", &[&b], vec![attr_ints("perm", &[2, 0, 1])]);
        let bias = g.op("Unsqueeze", &[&b, &axes0], vec![]);
        g.pop_scope();

        g.push_scope("prefix_mask");
        let ones: Vec<f32> = (0..n * n).map(|i| if i % n <= i / n { 1.0 } else { 0.0 }).collect();
        let causal = g.initializer_f32("causal_ones", &[n, n], &ones);
        let ends = g.op("Concat", &[&end, &end], vec![attr_int("axis", 0)]);
        let starts = g.const_i64_vec(&[0, 0]);
        let axes01 = g.const_i64_vec(&[0, 1]);
        let causal = g.op("Slice", &[&causal, &starts, &ends, &axes01], vec![]);
        let float = tract_onnx::pb::tensor_proto::DataType::Float as i64;
        let jf = g.op("Cast", &[&pos], vec![attr_int("to", float)]);
        let pf = g.op("Cast", &[prefix], vec![attr_int("to", float)]);
        let col = g.const_i64_vec(&[-1, 1, 1, 1]);
        let pf = g.op("Reshape", &[&pf, &col], vec![]);
        let d = g.op("Sub", &[&pf, &jf], vec![]);
        let d = g.op("Relu", &[&d], vec![]);
        let onef = g.const_f32_scalar(1.0);
        let vis = g.op("Min", &[&d, &onef], vec![]);
        let allowed = g.op("Max", &[&vis, &causal], vec![]);
        let shifted = g.op("Sub", &[&allowed, &onef], vec![]);
        let big = g.const_f32_scalar(-MASK_NEG);
        let mask = g.op("Mul", &[&shifted, &big], vec![]);
        g.pop_scope();

        for blk in &self.blocks {
            x = blk.export(g, &x, &bias, &mask)?;
        }
        let x = self.norm.export(g, &x)?;
        self.head.export_as(g, &x, Some("logits"))
    }
}

/// Row-major token ids of one sequence as a `[1, S]` u32 tensor.
pub fn ids_row(ids: &[u32]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::layers::tensor_data;
    use crate::zoo::rng::SplitMix64;
    use crate::zoo::seq2seq::layers::tract_max_abs;
    use crate::zoo::seq2seq::train::to_i64;

    #[test]
    fn exported_t5_matches_candle_in_tract() -> anyhow::Result<()> {
        let cfg = T5Config { n_layers: 2, max_seq: 12, ..T5Config::new(10) };
        let mut m = T5::new(cfg, 3)?;
        m.params_mut().randomize(0.3)?;
        let onnx = m.export_onnx("abcdefghij", 4)?;
        let mut r = SplitMix64::new(8);
        for (s, p) in [(1usize, 1usize), (7, 3), (12, 5), (12, 0)] {
            let ids: Vec<u32> = (0..s).map(|_| r.below(10) as u32).collect();
            let want = tensor_data(&m.logits(&ids_row(&ids)?, &[p])?)?;
            let max = tract_max_abs(&onnx, &[(&[1, s], to_i64(&ids)), (&[1], vec![p as i64])], &want)?;
            assert!(max < 1e-4, "seq {s} prefix {p}: max abs diff {max}");
        }
        Ok(())
    }

    #[test]
    fn prefix_is_fully_visible_and_the_rest_causal() -> anyhow::Result<()> {
        let cfg = T5Config { n_layers: 1, max_seq: 8, ..T5Config::new(6) };
        let mut m = T5::new(cfg, 1)?;
        m.params_mut().randomize(0.5)?;
        let a = [1u32, 2, 3, 4, 5, 0];
        let mut b = a;
        b[2] = 0; // a change inside the prefix of 3 reaches position 0
        let la = tensor_data(&m.logits(&ids_row(&a)?, &[3])?)?;
        let lb = tensor_data(&m.logits(&ids_row(&b)?, &[3])?)?;
        assert!((la[0] - lb[0]).abs() > 1e-6);
        let mut c = a;
        c[4] = 0; // a change after the prefix does not reach earlier positions
        let lc = tensor_data(&m.logits(&ids_row(&c)?, &[3])?)?;
        assert_eq!(la[..4 * 6], lc[..4 * 6]);
        assert!(la[4 * 6..].iter().zip(&lc[4 * 6..]).any(|(x, y)| (x - y).abs() > 1e-6));
        Ok(())
    }
}
