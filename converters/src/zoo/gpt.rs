//! The GPT family: a decoder-only, pre-LN, character-level Transformer LM.
//!
//! [`Gpt`] trains in candle and exports itself to ONNX with the conventions the converter's
//! importer expects (see `shared/DESIGN.md`). Training, artefacts and the model card live in
//! [`train`] and [`card`].
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::gpt::{Gpt, GptConfig};
//! let cfg = GptConfig { n_layers: 1, ..GptConfig::new(20) };
//! let gpt = Gpt::new(cfg, 0)?;
//! let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
//! assert_eq!(gpt.logits(&ids)?.dims(), &[1, 3, 20]);
//! let onnx = gpt.export_onnx("abcdefghijklmnopqrst")?;
//! assert!(onnx.len() > 1000);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod train;

pub use card::write_gpt_card;
pub use train::{train_gpt, GptReport, GptTrainOptions, Sample};

use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::attention::{Block, BlockDims};
use super::char_lm::{self, Embeddings, LmHead, OnnxInfo};
use super::layers::{Params, ZooLayer};
use super::onnx_builder::GraphBuilder;

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct GptConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// MLP hidden width.
    pub d_ff: usize,
    /// Context length (position table size).
    pub max_seq: usize,
    /// Std of the normal weight initialisation.
    pub init_std: f64,
}

impl GptConfig {
    /// The zoo model: d_model 64, 4 heads, 2 layers, ffn 256, context 64.
    pub fn new(vocab: usize) -> Self {
        Self { vocab, d_model: 64, n_heads: 4, n_layers: 2, d_ff: 256, max_seq: 64, init_std: 0.02 }
    }
}

/// A GPT-style decoder-only LM.
#[derive(Debug)]
pub struct Gpt {
    cfg: GptConfig,
    params: Params,
    emb: Embeddings,
    blocks: Vec<Block>,
    head: LmHead,
}

impl Gpt {
    /// A freshly initialised model (weights drawn from `seed`).
    pub fn new(cfg: GptConfig, seed: u64) -> Result<Self> {
        let mut p = Params::new(seed);
        let std = cfg.init_std;
        let out_std = std / (2.0 * cfg.n_layers as f64).sqrt();
        let emb = Embeddings::new(&mut p, cfg.vocab, cfg.d_model, cfg.max_seq, std)?;
        let dims = BlockDims { d_model: cfg.d_model, n_heads: cfg.n_heads, d_ff: cfg.d_ff, max_seq: cfg.max_seq };
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::new(&mut p, &format!("h.{i}"), dims, std, out_std))
            .collect::<Result<Vec<_>>>()?;
        let head = LmHead::new(&mut p, cfg.d_model, cfg.vocab, std)?;
        Ok(Self { cfg, params: p, emb, blocks, head })
    }

    /// The architecture.
    pub fn config(&self) -> &GptConfig {
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

    /// Logits `[B, S, vocab]` for token ids `[B, S]` (u32 or i64, `S <= max_seq`).
    pub fn logits(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.forward(ids)
    }

    /// Encodes the model as ONNX; `vocab` is the tokenizer string (id i = i-th char).
    pub fn export_onnx(&self, vocab: &str) -> Result<Vec<u8>> {
        let c = &self.cfg;
        let info = OnnxInfo { graph: "mote_gpt", family: "gpt", vocab: c.vocab, max_seq: c.max_seq, extra: &[] };
        char_lm::export_onnx(self, &info, vocab)
    }
}

impl ZooLayer for Gpt {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.emb.forward(ids)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        self.head.forward(&x)
    }

    /// Reads int64 `tokens [1, S]`; the output value is named `logits`.
    fn export(&self, g: &mut GraphBuilder, tokens: &str) -> Result<String> {
        let mut x = self.emb.export(g, tokens)?;
        for b in &self.blocks {
            x = b.export(g, &x)?;
        }
        self.head.export(g, &x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::layers::tensor_data;
    use crate::zoo::rng::SplitMix64;
    use crate::zoo::tract_run::run_tract_i64;
    use candle_core::Device;

    #[test]
    fn exported_gpt_matches_candle_in_tract() -> Result<()> {
        let cfg = GptConfig { max_seq: 16, ..GptConfig::new(12) };
        let mut gpt = Gpt::new(cfg, 9)?;
        // Untrained but non-trivial: every weight, bias and norm parameter random.
        gpt.params_mut().randomize(0.3)?;
        let onnx = gpt.export_onnx("abcdefghijkl")?;
        let mut r = SplitMix64::new(4);
        for s in [1usize, 7, 16] {
            let ids: Vec<i64> = (0..s).map(|_| r.below(12) as i64).collect();
            let t = Tensor::from_vec(ids.clone(), (1, s), &Device::Cpu)?;
            let want = tensor_data(&gpt.logits(&t)?)?;
            let (shape, got) = run_tract_i64(&onnx, &ids, &[1, s])?;
            assert_eq!(shape, vec![1, s, 12]);
            let max = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(max < 1e-4, "seq {s}: max abs diff {max}");
            assert!(want.iter().map(|v| v.abs()).fold(0f32, f32::max) > 0.1);
        }
        Ok(())
    }

    #[test]
    fn onnx_conventions() -> Result<()> {
        use prost::Message;
        let gpt = Gpt::new(GptConfig::new(5), 1)?;
        let bytes = gpt.export_onnx("ab\ncd")?;
        let m = tract_onnx::pb::ModelProto::decode(&bytes[..])?;
        assert_eq!(m.opset_import[0].version, 17);
        assert_eq!(m.ir_version, 8);
        let meta: Vec<(&str, &str)> = m.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert!(meta.contains(&("mote.family", "gpt")));
        assert!(meta.contains(&("mote.tokenizer", "chars:ab\ncd")));
        assert!(meta.contains(&("mote.max_seq", "64")));
        let g = m.graph.unwrap();
        assert_eq!(g.input[0].name, "tokens");
        assert_eq!(g.output[0].name, "logits");
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops.iter().filter(|o| **o == "Softmax").count(), 2);
        assert_eq!(ops.iter().filter(|o| **o == "Erf").count(), 2);
        assert_eq!(ops.iter().filter(|o| **o == "Slice").count(), 2);
        assert_eq!(ops.iter().filter(|o| **o == "Range").count(), 1);
        assert!(g.initializer.iter().any(|t| t.name == "causal_mask"));
        Ok(())
    }
}
