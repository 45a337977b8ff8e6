//! The BERT and ALBERT families: bidirectional, post-LN, character-level Transformer encoders
//! trained by masked-token recovery (MLM).
//!
//! Both read `input_ids`, `attention_mask` (1 = real token, 0 = padding) and
//! `token_type_ids` (segment 0 or 1), all int64 `[1, seq]`, and write MLM `logits`
//! `[1, seq, vocab]`. ALBERT differs in two ways: its embeddings are factorised (vocab → E,
//! then a Linear E → H) and one encoder layer's weights are reused at every depth, so the
//! ONNX file (and the `.mote` file) stores them once. Data, training and the card live in
//! [`data`], [`train`] and [`card`].
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::bert::{Bert, BertConfig};
//! let cfg = BertConfig { n_layers: 2, ..BertConfig::albert(20) };
//! let model = Bert::new(cfg, 0)?;
//! let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
//! let ones = Tensor::new(&[[1u32, 1, 1]], &Device::Cpu)?;
//! let segs = Tensor::new(&[[0u32, 0, 1]], &Device::Cpu)?;
//! assert_eq!(model.logits(&ids, &ones, &segs)?.dims(), &[1, 3, 20]);
//! assert!(model.export_onnx("abcdefghijklmnopqr", "pad=18,mask=19")?.len() > 1000);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod data;
pub mod train;

pub use card::write_mlm_card;
pub use train::{train_mlm, MlmReport, MlmTrainOptions};

use anyhow::{bail, ensure, Result};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::char_lm::export_add_positions;
use super::encoder::{export_extended_mask, extended_mask, EncoderDims, EncoderLayer, LN_EPS};
use super::layers::{export_tensor, Embedding, Gelu, LayerNorm, Linear, Params, ZooLayer};
use super::onnx_builder::{DataType, Dim, GraphBuilder};

/// Names of the ONNX graph inputs, in order (as Hugging Face BERT exports them).
pub const INPUT_NAMES: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// Which member of the family a configuration builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MlmFamily {
    /// One set of weights per layer, embeddings as wide as the model.
    Bert,
    /// Factorised embeddings and one layer's weights shared across depth.
    Albert,
}

impl MlmFamily {
    /// `"bert"` or `"albert"`.
    pub fn name(self) -> &'static str {
        match self {
            MlmFamily::Bert => "bert",
            MlmFamily::Albert => "albert",
        }
    }

    /// Parses a family name.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "bert" => Ok(MlmFamily::Bert),
            "albert" => Ok(MlmFamily::Albert),
            _ => bail!("'{name}' is not an MLM family (bert, albert)"),
        }
    }
}

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct BertConfig {
    /// Which family.
    pub family: MlmFamily,
    /// Vocabulary size (characters plus the special tokens).
    pub vocab: usize,
    /// Embedding width `E` (equal to `d_model` for BERT).
    pub embed_dim: usize,
    /// Model width `H`.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Encoder depth (ALBERT applies its one layer this many times).
    pub n_layers: usize,
    /// MLP hidden width.
    pub d_ff: usize,
    /// Longest sequence (position table size).
    pub max_seq: usize,
    /// Segment (token type) vocabulary.
    pub type_vocab: usize,
    /// Std of the normal weight initialisation.
    pub init_std: f64,
}

impl BertConfig {
    /// The zoo BERT: H 64, 4 heads, 4 layers, MLP 256, 48 positions, 2 segments.
    pub fn bert(vocab: usize) -> Self {
        Self {
            family: MlmFamily::Bert,
            vocab,
            embed_dim: 64,
            d_model: 64,
            n_heads: 4,
            n_layers: 4,
            d_ff: 256,
            max_seq: 48,
            type_vocab: 2,
            init_std: 0.02,
        }
    }

    /// The zoo ALBERT: like [`BertConfig::bert`] with E = 32 and one shared layer.
    pub fn albert(vocab: usize) -> Self {
        Self { family: MlmFamily::Albert, embed_dim: 32, ..Self::bert(vocab) }
    }

    /// The zoo configuration of `family`.
    pub fn of(family: MlmFamily, vocab: usize) -> Self {
        match family {
            MlmFamily::Bert => Self::bert(vocab),
            MlmFamily::Albert => Self::albert(vocab),
        }
    }

    /// Whether one layer's weights serve every depth.
    pub fn shares_layers(&self) -> bool {
        self.family == MlmFamily::Albert
    }
}

/// A BERT or ALBERT masked language model.
#[derive(Debug)]
pub struct Bert {
    cfg: BertConfig,
    params: Params,
    word: Embedding,
    pos: Var,
    segment: Embedding,
    emb_norm: LayerNorm,
    /// ALBERT's `E → H` mapping of the factorised embedding.
    emb_proj: Option<Linear>,
    /// One layer for ALBERT, `n_layers` for BERT.
    layers: Vec<EncoderLayer>,
    head_dense: Linear,
    head_norm: LayerNorm,
    decoder_bias: Var,
}

impl Bert {
    /// A freshly initialised model (weights drawn from `seed`).
    pub fn new(cfg: BertConfig, seed: u64) -> Result<Self> {
        ensure!(cfg.n_layers > 0 && cfg.type_vocab > 0, "an encoder needs layers and segments");
        ensure!(
            cfg.family == MlmFamily::Albert || cfg.embed_dim == cfg.d_model,
            "BERT embeddings are as wide as the model"
        );
        let mut p = Params::new(seed);
        let (std, e, h) = (cfg.init_std, cfg.embed_dim, cfg.d_model);
        let word = Embedding::new(&mut p, "embeddings.word", cfg.vocab, e, std)?;
        let pos = p.normal("embeddings.position.weight", &[cfg.max_seq, e], std, false)?;
        let segment = Embedding::new(&mut p, "embeddings.token_type", cfg.type_vocab, e, std)?;
        let emb_norm = LayerNorm::new(&mut p, "embeddings.norm", e, LN_EPS)?;
        let emb_proj = match cfg.family {
            MlmFamily::Albert => Some(Linear::new(&mut p, "encoder.embedding_mapping", e, h, std)?),
            MlmFamily::Bert => None,
        };
        let dims = EncoderDims { d_model: h, n_heads: cfg.n_heads, d_ff: cfg.d_ff };
        let distinct = if cfg.shares_layers() { 1 } else { cfg.n_layers };
        let layers = (0..distinct)
            .map(|i| {
                let name =
                    if cfg.shares_layers() { "encoder.shared_layer".to_string() } else { format!("encoder.layer.{i}") };
                EncoderLayer::new(&mut p, &name, dims, std)
            })
            .collect::<Result<Vec<_>>>()?;
        let head_dense = Linear::new(&mut p, "mlm.dense", h, e, std)?;
        let head_norm = LayerNorm::new(&mut p, "mlm.norm", e, LN_EPS)?;
        let decoder_bias = p.constant("mlm.decoder.bias", &[cfg.vocab], 0.0)?;
        Ok(Self { cfg, params: p, word, pos, segment, emb_norm, emb_proj, layers, head_dense, head_norm, decoder_bias })
    }

    /// The architecture.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// The trainable parameters (a shared layer counts once).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Mutable parameters (e.g. to randomise them in tests).
    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// Scalars in one encoder layer.
    pub fn layer_params(&self) -> usize {
        let (h, f) = (self.cfg.d_model, self.cfg.d_ff);
        4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
    }

    fn layer(&self, depth: usize) -> &EncoderLayer {
        &self.layers[if self.cfg.shares_layers() { 0 } else { depth }]
    }

    /// MLM logits `[B, S, vocab]` for ids, attention mask and segment ids, all `[B, S]`.
    pub fn logits(&self, ids: &Tensor, mask: &Tensor, segments: &Tensor) -> candle_core::Result<Tensor> {
        let (_, s) = ids.dims2()?;
        let pos = self.pos.as_tensor().narrow(0, 0, s)?;
        let x = (self.word.forward(ids)?.broadcast_add(&pos)? + self.segment.forward(segments)?)?;
        let mut x = self.emb_norm.forward(&x)?;
        if let Some(proj) = &self.emb_proj {
            x = proj.forward(&x)?;
        }
        let ext = extended_mask(mask)?;
        for depth in 0..self.cfg.n_layers {
            x = self.layer(depth).forward(&x, &ext)?;
        }
        let h = self.head_norm.forward(&Gelu.forward(&self.head_dense.forward(&x)?)?)?;
        let (b, s, e) = h.dims3()?;
        let logits = h.reshape((b * s, e))?.matmul(&self.word.weight().as_tensor().t()?)?;
        logits.broadcast_add(self.decoder_bias.as_tensor())?.reshape((b, s, self.cfg.vocab))
    }

    /// Encodes the model as ONNX; `chars` is the character alphabet (id i = i-th char) and
    /// `special` names the special token ids (e.g. `"pad=41,mask=42"`).
    pub fn export_onnx(&self, chars: &str, special: &str) -> Result<Vec<u8>> {
        let n_special = special.split(',').filter(|s| !s.is_empty()).count();
        ensure!(
            chars.chars().count() + n_special == self.cfg.vocab,
            "{} chars and {n_special} special tokens, model vocab {}",
            chars.chars().count(),
            self.cfg.vocab
        );
        let family = self.cfg.family.name();
        let mut g = GraphBuilder::new(&format!("mote_{family}"));
        let seq = Dim::Param("seq".into());
        for name in INPUT_NAMES {
            g.input(name, DataType::Int64, &[Dim::Fixed(1), seq.clone()]);
        }
        let logits = self.export_graph(&mut g)?;
        g.output(&logits, DataType::Float, &[Dim::Fixed(1), seq, Dim::Fixed(self.cfg.vocab as i64)]);
        g.metadata("mote.family", family);
        g.metadata("mote.task", "masked-lm");
        g.metadata("mote.tokenizer", &format!("chars:{chars}"));
        g.metadata("mote.special_tokens", special);
        g.metadata("mote.max_seq", &self.cfg.max_seq.to_string());
        Ok(g.finish())
    }

    /// Appends the whole model reading the [`INPUT_NAMES`] inputs; the output is `logits`.
    fn export_graph(&self, g: &mut GraphBuilder) -> Result<String> {
        let [ids, mask, segments] = INPUT_NAMES;
        let x = self.word.export(g, ids)?;
        let x = export_add_positions(g, &x, ids, "embeddings.position", &self.pos)?;
        let seg = self.segment.export(g, segments)?;
        g.push_scope("embeddings");
        let x = g.op("Add", &[&x, &seg], vec![]);
        g.pop_scope();
        let mut x = self.emb_norm.export(g, &x)?;
        if let Some(proj) = &self.emb_proj {
            x = proj.export(g, &x)?;
        }
        let ext = export_extended_mask(g, mask);
        for depth in 0..self.cfg.n_layers {
            x = self.layer(depth).export(g, &x, &ext)?;
        }
        let h = self.head_dense.export(g, &x)?;
        let h = Gelu.export(g, &h)?;
        let h = self.head_norm.export(g, &h)?;
        // The decoder is tied to the word embeddings: its weight is the table transposed.
        let wt = self.word.weight().as_tensor().t()?.contiguous()?;
        let w = export_tensor(g, "mlm.decoder.weight", &wt)?;
        let b = export_tensor(g, "mlm.decoder.bias", &self.decoder_bias)?;
        g.push_scope("mlm.decoder");
        let y = g.op("MatMul", &[&h, &w], vec![]);
        let y = g.op_named("Add", &[&y, &b], vec![], "logits");
        g.pop_scope();
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::layers::tensor_data;
    use crate::zoo::rng::SplitMix64;
    use candle_core::Device;
    use tract_onnx::prelude::*;

    fn run_tract(model: &[u8], ids: &[i64], mask: &[i64], segs: &[i64]) -> anyhow::Result<Vec<f32>> {
        let plan = tract_onnx::onnx().model_for_read(&mut &model[..])?.into_optimized()?.into_runnable()?;
        let t = |v: &[i64]| tract_onnx::prelude::Tensor::from_shape(&[1, v.len()], v).map(|t| t.into_tvalue());
        let out = plan.run(tvec!(t(ids)?, t(mask)?, t(segs)?))?;
        Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
    }

    fn tensor(v: &[i64]) -> candle_core::Result<candle_core::Tensor> {
        candle_core::Tensor::from_vec(v.to_vec(), (1, v.len()), &Device::Cpu)
    }

    #[test]
    fn exported_bert_and_albert_match_candle_in_tract() -> anyhow::Result<()> {
        for family in [MlmFamily::Bert, MlmFamily::Albert] {
            let cfg = BertConfig { max_seq: 12, n_layers: 3, ..BertConfig::of(family, 12) };
            let mut m = Bert::new(cfg, 9)?;
            m.params_mut().randomize(0.3)?;
            let onnx = m.export_onnx("abcdefghij", "pad=10,mask=11")?;
            let mut r = SplitMix64::new(4);
            for s in [1usize, 7, 12] {
                let ids: Vec<i64> = (0..s).map(|_| r.below(12) as i64).collect();
                let mask: Vec<i64> = (0..s).map(|i| i64::from(i + 2 < s || i == 0)).collect();
                let segs: Vec<i64> = (0..s).map(|i| i64::from(i >= s / 2)).collect();
                let want = tensor_data(&m.logits(&tensor(&ids)?, &tensor(&mask)?, &tensor(&segs)?)?)?;
                let got = run_tract(&onnx, &ids, &mask, &segs)?;
                assert_eq!(want.len(), got.len());
                let max = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(max < 1e-4, "{family:?} seq {s}: max abs diff {max}");
                assert!(want.iter().map(|v| v.abs()).fold(0f32, f32::max) > 0.1);
            }
        }
        Ok(())
    }

    #[test]
    fn albert_stores_its_shared_layer_once() -> anyhow::Result<()> {
        use prost::Message;
        let count = |family| -> anyhow::Result<(usize, usize, usize)> {
            let m = Bert::new(BertConfig::of(family, 12), 1)?;
            let bytes = m.export_onnx("abcdefghij", "pad=10,mask=11")?;
            let g = tract_onnx::pb::ModelProto::decode(&bytes[..])?.graph.unwrap();
            let stored: usize = g
                .initializer
                .iter()
                .filter(|t| t.data_type == DataType::Float as i32)
                .map(|t| t.dims.iter().product::<i64>() as usize)
                .sum();
            let softmaxes = g.node.iter().filter(|n| n.op_type == "Softmax").count();
            Ok((stored, softmaxes, m.params().count()))
        };
        let (bert_stored, bert_softmax, bert_params) = count(MlmFamily::Bert)?;
        let (albert_stored, albert_softmax, albert_params) = count(MlmFamily::Albert)?;
        assert_eq!((bert_softmax, albert_softmax), (4, 4), "both run four layers");
        let albert = Bert::new(BertConfig::albert(12), 1)?;
        // Every trainable scalar once, plus the tied decoder's transposed copy and a few scalars.
        let tied = 12 * albert.config().embed_dim;
        assert!(albert_stored >= albert_params + tied && albert_stored < albert_params + tied + 64);
        assert!(albert_params < albert.layer_params() + 10_000, "one layer, not four: {albert_params}");
        assert!(bert_params > 4 * albert.layer_params() && bert_stored > bert_params);
        Ok(())
    }

    #[test]
    fn onnx_conventions() -> anyhow::Result<()> {
        use prost::Message;
        let m = Bert::new(BertConfig::bert(7), 1)?;
        let bytes = m.export_onnx("ab\ncd", "pad=5,mask=6")?;
        let model = tract_onnx::pb::ModelProto::decode(&bytes[..])?;
        let meta: Vec<(&str, &str)> = model.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert!(meta.contains(&("mote.family", "bert")) && meta.contains(&("mote.special_tokens", "pad=5,mask=6")));
        let g = model.graph.unwrap();
        let inputs: Vec<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(inputs, INPUT_NAMES);
        assert_eq!(g.output[0].name, "logits");
        // The HF padding-mask chain, once: Unsqueeze → Cast → Sub(1, ·) → Mul(·, -10000).
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        let chain = ops.windows(4).filter(|w| *w == ["Unsqueeze", "Cast", "Sub", "Mul"]).count();
        assert_eq!(chain, 1);
        assert_eq!(ops.iter().filter(|o| **o == "Softmax").count(), 4);
        Ok(())
    }
}
