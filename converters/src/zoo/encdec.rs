//! The vanilla Transformer encoder–decoder ("Attention Is All You Need"), pre-norm, trained on
//! a toy translation task (sequence reversal, [`task`]).
//!
//! - Shared token embedding for source and target, scaled by `√d`, plus sinusoidal positions
//!   computed in the graph: `Range(0, S) → Cast → Unsqueeze [S,1] → Mul freq [1, d/2] →
//!   Sin, Cos → Concat → [S, d]` (the converter maps `Range` to its `Positions` op, so decoder
//!   positions continue in incremental decoding).
//! - Encoder: bidirectional self-attention with the source padding mask spelled the Hugging
//!   Face way (`(1 - mask) * -10000`), GELU FFN; final LayerNorm gives the memory.
//! - Decoder: causal self-attention (the GPT spelling, [`CausalSelfAttention`]), cross-attention
//!   (queries from the decoder, keys and values from the memory, the same padding mask), GELU
//!   FFN, final LayerNorm and an output projection.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::encdec::{EncDec, EncDecConfig};
//! let m = EncDec::new(EncDecConfig { enc_layers: 1, dec_layers: 1, ..EncDecConfig::new(15) }, 0)?;
//! let src = Tensor::new(&[[3u32, 4, 5, 0]], &Device::Cpu)?;
//! let mask = Tensor::new(&[[1u32, 1, 1, 0]], &Device::Cpu)?;
//! let tgt = Tensor::new(&[[1u32, 5]], &Device::Cpu)?;
//! assert_eq!(m.logits(&src, &mask, &tgt)?.dims(), &[1, 2, 15]);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod task;
pub mod train;

pub use super::seq2seq::layers::ids_batch;
pub use card::write_encdec_card;
pub use train::{train_encdec, EncDecReport, BUDGET};

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::attention::ProjectedAttention;
use super::attention::{export_seq_len, CausalSelfAttention};
use super::encoder::{export_extended_mask, extended_mask, SelfAttention};
use super::layers::{Embedding, LayerNorm, Linear, Mlp, Params, ZooLayer};
use super::onnx_builder::{attr_int, DataType, Dim, GraphBuilder};
use super::seq2seq::layers::export_residual;

/// Names of the ONNX inputs, in order.
pub const INPUT_NAMES: [&str; 3] = ["src", "src_mask", "tgt"];
/// LayerNorm epsilon.
const LN_EPS: f32 = 1e-5;

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct EncDecConfig {
    /// Vocabulary size (shared by source and target).
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Encoder layers.
    pub enc_layers: usize,
    /// Decoder layers.
    pub dec_layers: usize,
    /// Feed-forward hidden width (GELU).
    pub d_ff: usize,
    /// Longest source (`src` bound).
    pub max_src: usize,
    /// Longest decoder input (`tgt` bound).
    pub max_tgt: usize,
    /// Std of the normal weight initialisation.
    pub init_std: f64,
}

impl EncDecConfig {
    /// The zoo model: d_model 64, 4 heads, 2 + 2 layers, GELU FFN 128, source 12, target 14.
    pub fn new(vocab: usize) -> Self {
        Self {
            vocab,
            d_model: 64,
            n_heads: 4,
            enc_layers: 2,
            dec_layers: 2,
            d_ff: 128,
            max_src: task::SRC_LEN,
            max_tgt: task::TGT_LEN,
            init_std: 0.02,
        }
    }
}

/// Frequencies of the sinusoidal positions: `1 / 10000^(2i/d)` for `i < d/2`.
pub fn sinusoid_freqs(d: usize) -> Vec<f32> {
    (0..d / 2).map(|i| (1.0 / 10000f64.powf(2.0 * i as f64 / d as f64)) as f32).collect()
}

/// `[s, d]` positions: `sin(p·f)` in the first half, `cos(p·f)` in the second.
fn sinusoid(freqs: &[f32], s: usize, device: &Device) -> candle_core::Result<Tensor> {
    let p = Tensor::from_vec((0..s).map(|i| i as f32).collect::<Vec<_>>(), (s, 1), device)?;
    let f = Tensor::from_vec(freqs.to_vec(), (1, freqs.len()), device)?;
    let a = p.broadcast_mul(&f)?;
    Tensor::cat(&[a.sin()?, a.cos()?], 1)
}

/// Pre-norm encoder layer: `h = x + Attn(LN1(x), mask); out = h + FFN(LN2(h))`.
#[derive(Clone, Debug)]
pub struct EncoderBlock {
    name: String,
    ln1: LayerNorm,
    attn: SelfAttention,
    ln2: LayerNorm,
    mlp: Mlp,
}

impl EncoderBlock {
    fn new(p: &mut Params, name: &str, cfg: &EncDecConfig, std: f64, out_std: f64) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            name: name.to_string(),
            ln1: LayerNorm::new(p, &format!("{name}.ln1"), d, LN_EPS)?,
            attn: SelfAttention::new(p, &format!("{name}.attn"), d, cfg.n_heads, std)?,
            ln2: LayerNorm::new(p, &format!("{name}.ln2"), d, LN_EPS)?,
            mlp: Mlp::new(p, &format!("{name}.mlp"), d, cfg.d_ff, std, out_std)?,
        })
    }

    fn forward(&self, x: &Tensor, ext: &Tensor) -> candle_core::Result<Tensor> {
        let h = (x + self.attn.forward(&self.ln1.forward(x)?, ext)?)?;
        &h + self.mlp.forward(&self.ln2.forward(&h)?)?
    }

    fn export(&self, g: &mut GraphBuilder, x: &str, ext: &str) -> Result<String> {
        let a = self.ln1.export(g, x)?;
        let a = self.attn.export(g, &a, ext)?;
        let h = export_residual(g, &self.name, x, &a);
        let m = self.ln2.export(g, &h)?;
        let m = self.mlp.export(g, &m)?;
        Ok(export_residual(g, &self.name, &h, &m))
    }
}

/// Pre-norm decoder layer: causal self-attention, cross-attention over the memory, FFN, each
/// behind its own LayerNorm and residual.
#[derive(Clone, Debug)]
pub struct DecoderBlock {
    name: String,
    ln1: LayerNorm,
    self_attn: CausalSelfAttention,
    ln2: LayerNorm,
    /// Cross-attention: queries from the decoder, keys and values from the memory, scaled
    /// scores plus the source padding mask.
    cross: ProjectedAttention,
    ln3: LayerNorm,
    mlp: Mlp,
}

impl DecoderBlock {
    fn new(p: &mut Params, name: &str, cfg: &EncDecConfig, std: f64, out_std: f64) -> Result<Self> {
        let (d, h) = (cfg.d_model, cfg.n_heads);
        Ok(Self {
            name: name.to_string(),
            ln1: LayerNorm::new(p, &format!("{name}.ln1"), d, LN_EPS)?,
            self_attn: CausalSelfAttention::new(p, &format!("{name}.self_attn"), d, h, cfg.max_tgt, std, out_std)?,
            ln2: LayerNorm::new(p, &format!("{name}.ln2"), d, LN_EPS)?,
            cross: ProjectedAttention::new(p, &format!("{name}.cross_attn"), d, h, std, out_std, true)?,
            ln3: LayerNorm::new(p, &format!("{name}.ln3"), d, LN_EPS)?,
            mlp: Mlp::new(p, &format!("{name}.mlp"), d, cfg.d_ff, std, out_std)?,
        })
    }

    fn forward(&self, x: &Tensor, mem: &Tensor, ext: &Tensor) -> candle_core::Result<Tensor> {
        let h = (x + self.self_attn.forward(&self.ln1.forward(x)?)?)?;
        let h = (&h + self.cross.forward(&self.ln2.forward(&h)?, mem, &[ext])?)?;
        &h + self.mlp.forward(&self.ln3.forward(&h)?)?
    }

    fn export(&self, g: &mut GraphBuilder, x: &str, mem: &str, ext: &str) -> Result<String> {
        let a = self.ln1.export(g, x)?;
        let a = self.self_attn.export(g, &a)?;
        let h = export_residual(g, &self.name, x, &a);
        let c = self.ln2.export(g, &h)?;
        let c = self.cross.export(g, &c, mem, &[ext])?;
        let h = export_residual(g, &self.name, &h, &c);
        let m = self.ln3.export(g, &h)?;
        let m = self.mlp.export(g, &m)?;
        Ok(export_residual(g, &self.name, &h, &m))
    }
}

/// The encoder–decoder model.
#[derive(Debug)]
pub struct EncDec {
    cfg: EncDecConfig,
    params: Params,
    emb: Embedding,
    enc: Vec<EncoderBlock>,
    enc_norm: LayerNorm,
    dec: Vec<DecoderBlock>,
    dec_norm: LayerNorm,
    head: Linear,
    freqs: Vec<f32>,
}

impl EncDec {
    /// A freshly initialised model (weights drawn from `seed`).
    pub fn new(cfg: EncDecConfig, seed: u64) -> Result<Self> {
        ensure!(cfg.d_model.is_multiple_of(2), "d_model must be even for sinusoidal positions");
        let mut p = Params::new(seed);
        let std = cfg.init_std;
        let out_std = std / (2.0 * (cfg.enc_layers + cfg.dec_layers) as f64).sqrt();
        // Scaled by √d in the forward pass, so the embeddings start at unit scale.
        let emb = Embedding::new(&mut p, "tok_emb", cfg.vocab, cfg.d_model, 1.0 / (cfg.d_model as f64).sqrt())?;
        let enc = (0..cfg.enc_layers)
            .map(|i| EncoderBlock::new(&mut p, &format!("enc.{i}"), &cfg, std, out_std))
            .collect::<Result<Vec<_>>>()?;
        let enc_norm = LayerNorm::new(&mut p, "enc.ln_f", cfg.d_model, LN_EPS)?;
        let dec = (0..cfg.dec_layers)
            .map(|i| DecoderBlock::new(&mut p, &format!("dec.{i}"), &cfg, std, out_std))
            .collect::<Result<Vec<_>>>()?;
        let dec_norm = LayerNorm::new(&mut p, "dec.ln_f", cfg.d_model, LN_EPS)?;
        let head = Linear::new(&mut p, "lm_head", cfg.d_model, cfg.vocab, std)?;
        let freqs = sinusoid_freqs(cfg.d_model);
        Ok(Self { cfg, params: p, emb, enc, enc_norm, dec, dec_norm, head, freqs })
    }

    /// The architecture.
    pub fn config(&self) -> &EncDecConfig {
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

    /// `Emb(ids) · √d + positions` for ids `[B, S]`.
    fn embed(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let s = ids.dim(1)?;
        let x = (self.emb.forward(ids)? * (self.cfg.d_model as f64).sqrt())?;
        x.broadcast_add(&sinusoid(&self.freqs, s, ids.device())?.unsqueeze(0)?)
    }

    /// The memory `[B, S, D]` of sources `[B, S]` with padding mask `[B, S]` (1 = token).
    pub fn encode(&self, src: &Tensor, src_mask: &Tensor) -> candle_core::Result<Tensor> {
        let ext = extended_mask(src_mask)?;
        let mut x = self.embed(src)?;
        for blk in &self.enc {
            x = blk.forward(&x, &ext)?;
        }
        self.enc_norm.forward(&x)
    }

    /// Logits `[B, T, vocab]` of decoder inputs `tgt [B, T]` over a memory from [`EncDec::encode`].
    pub fn decode(&self, tgt: &Tensor, mem: &Tensor, src_mask: &Tensor) -> candle_core::Result<Tensor> {
        let ext = extended_mask(src_mask)?;
        let mut x = self.embed(tgt)?;
        for blk in &self.dec {
            x = blk.forward(&x, mem, &ext)?;
        }
        self.head.forward(&self.dec_norm.forward(&x)?)
    }

    /// Logits `[B, T, vocab]` for sources, their masks and decoder inputs.
    pub fn logits(&self, src: &Tensor, src_mask: &Tensor, tgt: &Tensor) -> candle_core::Result<Tensor> {
        self.decode(tgt, &self.encode(src, src_mask)?, src_mask)
    }

    /// Encodes the model as ONNX: inputs `src` int64 `[1, src]`, `src_mask` int64 `[1, src]`,
    /// `tgt` int64 `[1, tgt]`; output `logits` f32 `[1, tgt, vocab]`. `vocab` is the tokenizer
    /// string. Metadata `mote.decode = tgt` names the decoded dim.
    pub fn export_onnx(&self, vocab: &str) -> Result<Vec<u8>> {
        ensure!(vocab.chars().count() == self.cfg.vocab, "vocab string does not match the model");
        let mut g = GraphBuilder::new("mote_encdec");
        let (s, t) = (Dim::Param("src".into()), Dim::Param("tgt".into()));
        let [src, mask, tgt] = INPUT_NAMES;
        g.input(src, DataType::Int64, &[Dim::Fixed(1), s.clone()]);
        g.input(mask, DataType::Int64, &[Dim::Fixed(1), s]);
        g.input(tgt, DataType::Int64, &[Dim::Fixed(1), t.clone()]);
        let logits = self.export_graph(&mut g)?;
        g.output(&logits, DataType::Float, &[Dim::Fixed(1), t, Dim::Fixed(self.cfg.vocab as i64)]);
        g.metadata("mote.family", "encdec");
        g.metadata("mote.tokenizer", &format!("chars:{vocab}"));
        g.metadata("mote.special_tokens", "pad=0,bos=1,eos=2");
        g.metadata("mote.max_seq", &self.cfg.max_tgt.max(self.cfg.max_src).to_string());
        g.metadata("mote.max_src", &self.cfg.max_src.to_string());
        g.metadata("mote.max_tgt", &self.cfg.max_tgt.to_string());
        g.metadata("mote.decode", "tgt");
        Ok(g.finish())
    }

    /// `Emb(ids) · √d + sinusoid(Range(0, S))`, with `seq` the scalar length of `ids`.
    fn export_embed(&self, g: &mut GraphBuilder, ids: &str, seq: &str, scope: &str) -> Result<String> {
        let x = self.emb.export(g, ids)?;
        g.push_scope(scope);
        let root = g.const_f32_scalar((self.cfg.d_model as f32).sqrt());
        let x = g.op("Mul", &[&x, &root], vec![]);
        let zero = g.const_i64_scalar(0);
        let one = g.const_i64_scalar(1);
        let pos = g.op("Range", &[&zero, seq, &one], vec![]);
        let pos = g.op("Cast", &[&pos], vec![attr_int("to", DataType::Float as i64)]);
        let axes1 = g.const_i64_vec(&[1]);
        let pos = g.op("Unsqueeze", &[&pos, &axes1], vec![]);
        let half = (self.cfg.d_model / 2) as i64;
        let freqs = match g.lookup("sinusoid_freqs") {
            Some(f) => f,
            None => {
                let f = g.initializer_f32("sinusoid_freqs", &[1, half], &self.freqs);
                g.bind("sinusoid_freqs", &f);
                f
            }
        };
        let angle = g.op("Mul", &[&pos, &freqs], vec![]);
        let sin = g.op("Sin", &[&angle], vec![]);
        let cos = g.op("Cos", &[&angle], vec![]);
        let pe = g.op("Concat", &[&sin, &cos], vec![attr_int("axis", -1)]);
        let y = g.op("Add", &[&x, &pe], vec![]);
        g.pop_scope();
        Ok(y)
    }

    /// Appends the whole model reading the three inputs; returns the `logits` value.
    fn export_graph(&self, g: &mut GraphBuilder) -> Result<String> {
        let [src, mask, tgt] = INPUT_NAMES;
        let ext = export_extended_mask(g, mask);
        g.push_scope("src_len");
        let shape = g.op("Shape", &[src], vec![]);
        let one = g.const_i64_scalar(1);
        let src_len = g.op("Gather", &[&shape, &one], vec![attr_int("axis", 0)]);
        g.pop_scope();
        let mut x = self.export_embed(g, src, &src_len, "enc.embed")?;
        for blk in &self.enc {
            x = blk.export(g, &x, &ext)?;
        }
        let mem = self.enc_norm.export(g, &x)?;
        // The decoder's causal self-attention reuses this length for its mask slice.
        let tgt_len = export_seq_len(g, tgt);
        let mut y = self.export_embed(g, tgt, &tgt_len, "dec.embed")?;
        for blk in &self.dec {
            y = blk.export(g, &y, &mem, &ext)?;
        }
        let y = self.dec_norm.export(g, &y)?;
        self.head.export_as(g, &y, Some("logits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::layers::tensor_data;
    use crate::zoo::rng::SplitMix64;
    use crate::zoo::seq2seq::layers::tract_max_abs;
    use crate::zoo::seq2seq::train::to_i64;

    #[test]
    fn exported_encdec_matches_candle_in_tract() -> anyhow::Result<()> {
        let cfg = EncDecConfig { enc_layers: 1, dec_layers: 2, ..EncDecConfig::new(10) };
        let mut m = EncDec::new(cfg, 3)?;
        m.params_mut().randomize(0.3)?;
        let onnx = m.export_onnx("abcdefghij")?;
        let mut r = SplitMix64::new(8);
        for (s, real, t) in [(4usize, 4usize, 1usize), (12, 5, 7), (12, 12, 14), (6, 3, 3)] {
            let src: Vec<u32> = (0..s).map(|_| r.below(10) as u32).collect();
            let mask: Vec<u32> = (0..s).map(|i| u32::from(i < real)).collect();
            let tgt: Vec<u32> = (0..t).map(|_| r.below(10) as u32).collect();
            let want = tensor_data(&m.logits(
                &ids_batch(std::slice::from_ref(&src))?,
                &ids_batch(std::slice::from_ref(&mask))?,
                &ids_batch(std::slice::from_ref(&tgt))?,
            )?)?;
            let inputs = [(&[1, s][..], to_i64(&src)), (&[1, s], to_i64(&mask)), (&[1, t], to_i64(&tgt))];
            let max = tract_max_abs(&onnx, &inputs, &want)?;
            assert!(max < 1e-4, "src {s} ({real} real) tgt {t}: max abs diff {max}");
        }
        Ok(())
    }

    #[test]
    fn padding_is_invisible_and_the_decoder_causal() -> anyhow::Result<()> {
        let cfg = EncDecConfig { enc_layers: 1, dec_layers: 1, ..EncDecConfig::new(8) };
        let mut m = EncDec::new(cfg, 1)?;
        m.params_mut().randomize(0.5)?;
        let mask = ids_batch(&[vec![1, 1, 1, 0, 0]])?;
        let tgt = ids_batch(&[vec![1, 4, 5, 6]])?;
        let a = tensor_data(&m.logits(&ids_batch(&[vec![3, 4, 5, 0, 0]])?, &mask, &tgt)?)?;
        // A different token under the padding changes nothing.
        let b = tensor_data(&m.logits(&ids_batch(&[vec![3, 4, 5, 7, 2]])?, &mask, &tgt)?)?;
        let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(max < 1e-5, "padding leaked: {max}");
        // A real source token reaches every target position.
        let c = tensor_data(&m.logits(&ids_batch(&[vec![3, 7, 5, 0, 0]])?, &mask, &tgt)?)?;
        assert!((a[0] - c[0]).abs() > 1e-6);
        // A later decoder input does not reach earlier positions.
        let d =
            tensor_data(&m.logits(&ids_batch(&[vec![3, 4, 5, 0, 0]])?, &mask, &ids_batch(&[vec![1, 4, 5, 2]])?)?)?;
        assert_eq!(a[..3 * 8], d[..3 * 8]);
        assert!(a[3 * 8..].iter().zip(&d[3 * 8..]).any(|(x, y)| (x - y).abs() > 1e-6));
        Ok(())
    }
}
