//! The parts the GPT-style character LMs ([`Gpt`](super::gpt::Gpt) and
//! [`Switch`](super::switch::Switch)) share around their blocks: token + learned position
//! embeddings in front, final LayerNorm + untied LM head behind, and the ONNX wrapper
//! (int64 `tokens [1, S]` in, `logits [1, S, vocab]` out, tokenizer metadata). BERT reuses
//! the position-embedding export, [`export_add_positions`].

use anyhow::{ensure, Result};
use candle_core::{Tensor, Var};

use super::attention::export_seq_len;
use super::layers::{export_tensor, Embedding, LayerNorm, Linear, Params, ZooLayer};
use super::onnx_builder::{attr_int, DataType, Dim, GraphBuilder};

/// Token embedding `tok_emb` plus the learned position table `pos_emb.weight`.
#[derive(Clone, Debug)]
pub(crate) struct Embeddings {
    tok: Embedding,
    pos: Var,
}

impl Embeddings {
    /// Draws `tok_emb` then `pos_emb.weight` (`max_seq` rows) from `p`.
    pub fn new(p: &mut Params, vocab: usize, d_model: usize, max_seq: usize, std: f64) -> Result<Self> {
        let tok = Embedding::new(p, "tok_emb", vocab, d_model, std)?;
        let pos = p.normal("pos_emb.weight", &[max_seq, d_model], std, false)?;
        Ok(Self { tok, pos })
    }

    /// `[B, S, d_model]` embeddings of ids `[B, S]`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (_, s) = ids.dims2()?;
        let pos = self.pos.as_tensor().narrow(0, 0, s)?;
        self.tok.forward(ids)?.broadcast_add(&pos)
    }

    /// Exports the embeddings of the int64 graph input `tokens`.
    pub fn export(&self, g: &mut GraphBuilder, tokens: &str) -> Result<String> {
        let x = self.tok.export(g, tokens)?;
        export_add_positions(g, &x, tokens, "pos_emb", &self.pos)
    }
}

/// Exports `x + pos[0..S]`, `S` being the length of the int64 graph input `tokens`: the
/// learned position table `pos` becomes the initializer `{scope}.weight` and the ops go in
/// `scope`.
pub(crate) fn export_add_positions(
    g: &mut GraphBuilder,
    x: &str,
    tokens: &str,
    scope: &str,
    pos: &Tensor,
) -> Result<String> {
    let seq = export_seq_len(g, tokens);
    let pos_w = export_tensor(g, &format!("{scope}.weight"), pos)?;
    g.push_scope(scope);
    let zero = g.const_i64_scalar(0);
    let one = g.const_i64_scalar(1);
    let range = g.op("Range", &[&zero, &seq, &one], vec![]);
    let pos = g.op("Gather", &[&pos_w, &range], vec![attr_int("axis", 0)]);
    let x = g.op("Add", &[x, &pos], vec![]);
    g.pop_scope();
    Ok(x)
}

/// Final LayerNorm `ln_f` and the untied linear head `lm_head`.
#[derive(Clone, Debug)]
pub(crate) struct LmHead {
    ln_f: LayerNorm,
    head: Linear,
}

impl LmHead {
    /// Draws `ln_f` then `lm_head` from `p`.
    pub fn new(p: &mut Params, d_model: usize, vocab: usize, std: f64) -> Result<Self> {
        let ln_f = LayerNorm::new(p, "ln_f", d_model, 1e-5)?;
        let head = Linear::new(p, "lm_head", d_model, vocab, std)?;
        Ok(Self { ln_f, head })
    }

    /// Logits `[B, S, vocab]` of the last block's output.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.head.forward(&self.ln_f.forward(x)?)
    }

    /// Exports the head; its output value is named `logits`.
    pub fn export(&self, g: &mut GraphBuilder, x: &str) -> Result<String> {
        let x = self.ln_f.export(g, x)?;
        self.head.export_as(g, &x, Some("logits"))
    }
}

/// Shape and metadata of a character LM's ONNX file.
pub(crate) struct OnnxInfo<'a> {
    /// Graph name.
    pub graph: &'a str,
    /// `mote.family`.
    pub family: &'a str,
    /// Vocabulary size of the model.
    pub vocab: usize,
    /// `mote.max_seq`.
    pub max_seq: usize,
    /// Further metadata, written after the standard entries.
    pub extra: &'a [(&'a str, &'a str)],
}

/// Encodes `model` (reading int64 `tokens [1, S]`, see [`ZooLayer::export`]) as ONNX;
/// `vocab` is the tokenizer string (id i = i-th char).
pub(crate) fn export_onnx(model: &impl ZooLayer, info: &OnnxInfo, vocab: &str) -> Result<Vec<u8>> {
    ensure!(
        vocab.chars().count() == info.vocab,
        "vocab string has {} symbols, model has {}",
        vocab.chars().count(),
        info.vocab
    );
    let mut g = GraphBuilder::new(info.graph);
    let seq = Dim::Param("seq".into());
    g.input("tokens", DataType::Int64, &[Dim::Fixed(1), seq.clone()]);
    let logits = model.export(&mut g, "tokens")?;
    g.output(&logits, DataType::Float, &[Dim::Fixed(1), seq, Dim::Fixed(info.vocab as i64)]);
    g.metadata("mote.family", info.family);
    g.metadata("mote.tokenizer", &format!("chars:{vocab}"));
    g.metadata("mote.max_seq", &info.max_seq.to_string());
    for (k, v) in info.extra {
        g.metadata(k, v);
    }
    Ok(g.finish())
}
