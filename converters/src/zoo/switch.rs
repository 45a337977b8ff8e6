//! The Switch Transformer family: the GPT's causal character LM whose feed-forward layer in
//! every block is a top-1 mixture of experts (Fedus et al., "Switch Transformers").
//!
//! Each [`SwitchFfn`] has a router (`Linear d → E`) and `E` expert MLPs. A token goes to the
//! expert with the largest router logit and its output is that expert's MLP scaled by the
//! router's softmax probability for it. Training runs only the chosen expert per token
//! (tokens are gathered per expert and scattered back) and adds the Switch load-balancing
//! loss `α · E · Σ_e f_e · P_e` ([`train`]). The ONNX export is the dense equivalent that
//! tract runs; the converter's `moe` pass fuses it into one `Op::Moe` node:
//!
//! ```text
//! logits = MatMul(x, Wr) + br                 # router, [1, S, E]
//! probs  = Softmax(logits, axis=-1)
//! top    = ReduceMax(logits, axes=[-1], keepdims=1)
//! gate   = Mul(probs, Cast<float>(Equal(logits, top)))   # one-hot × probability
//! y_e    = Mul(MatMul(GELU(MatMul(x, W1_e) + b1_e), W2_e) + b2_e, Slice(gate, e:e+1, axis=-1))
//! y      = Add(…Add(Add(y_0, y_1), y_2)…, y_{E-1})
//! ```
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::switch::{Switch, SwitchConfig};
//! let cfg = SwitchConfig { n_layers: 1, ..SwitchConfig::new(20) };
//! let m = Switch::new(cfg, 0)?;
//! let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
//! assert_eq!(m.logits(&ids)?.dims(), &[1, 3, 20]);
//! assert!(m.export_onnx("abcdefghijklmnopqrst")?.len() > 1000);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod train;

pub use card::write_switch_card;
pub use train::{train_switch, SwitchReport, SwitchTrainOptions};

use anyhow::{ensure, Result};
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::attention::CausalSelfAttention;
use super::char_lm::{self, Embeddings, LmHead, OnnxInfo};
use super::layers::{Gelu, LayerNorm, Linear, Params, ZooLayer};
use super::onnx_builder::{attr_int, attr_ints, DataType, GraphBuilder};

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SwitchConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Transformer blocks (each with a Switch feed-forward layer).
    pub n_layers: usize,
    /// Experts per Switch layer.
    pub n_experts: usize,
    /// Hidden width of each expert MLP.
    pub d_ff: usize,
    /// Context length (position table size).
    pub max_seq: usize,
    /// Std of the normal weight initialisation.
    pub init_std: f64,
}

impl SwitchConfig {
    /// The zoo model: the GPT's trunk (d_model 64, 4 heads, 2 layers, context 64) with 4
    /// experts of hidden width 128 in every block.
    pub fn new(vocab: usize) -> Self {
        Self { vocab, d_model: 64, n_heads: 4, n_layers: 2, n_experts: 4, d_ff: 128, max_seq: 64, init_std: 0.02 }
    }

    /// MACs per generated token with a full KV cache of `max_seq`, counted the way
    /// `mote::kernels::macs` counts the converted `decode_step`: projections and the head
    /// as `M·N·K`, attention `2·Skv·d_model`, norms and element-wise ops one per output, and
    /// each Switch layer as the router plus one expert (`E·d + 2·F·d`).
    pub fn macs_per_token(&self) -> u64 {
        let (d, e, f) = (self.d_model as u64, self.n_experts as u64, self.d_ff as u64);
        let attn = 4 * d * d + 2 * self.max_seq as u64 * d;
        let block = d + attn + d + d + (e * d + 2 * f * d) + d; // ln1, attn, add, ln2, moe, add
        d + self.n_layers as u64 * block + d + d * self.vocab as u64 // pos add, blocks, ln_f, head
    }

    /// The same count with every expert run for every token (the dense formulation).
    pub fn macs_per_token_all_experts(&self) -> u64 {
        let (d, e, f) = (self.d_model as u64, self.n_experts as u64, self.d_ff as u64);
        self.macs_per_token() + self.n_layers as u64 * (e - 1) * 2 * f * d
    }
}

/// One expert: `Linear d → F`, GELU, `Linear F → d`.
#[derive(Clone, Debug)]
struct Expert {
    fc1: Linear,
    fc2: Linear,
}

/// Routing of one forward pass through a [`SwitchFfn`].
#[derive(Clone, Debug)]
pub struct Routing {
    /// The Switch auxiliary loss `E · Σ_e f_e · P_e` (1 when perfectly balanced).
    pub aux_loss: Tensor,
    /// Tokens sent to each expert.
    pub counts: Vec<usize>,
}

/// Switch feed-forward layer: top-1 router over `E` expert MLPs.
#[derive(Clone, Debug)]
pub struct SwitchFfn {
    name: String,
    router: Linear,
    experts: Vec<Expert>,
}

impl SwitchFfn {
    /// `E` experts `d → hidden → d`; `out_std` initialises the experts' output projections.
    pub fn new(
        p: &mut Params,
        name: &str,
        d: usize,
        hidden: usize,
        experts: usize,
        std: f64,
        out_std: f64,
    ) -> Result<Self> {
        ensure!(experts >= 1, "a Switch layer needs at least one expert");
        let router = Linear::new(p, &format!("{name}.router"), d, experts, std)?;
        let experts = (0..experts)
            .map(|e| {
                Ok(Expert {
                    fc1: Linear::new(p, &format!("{name}.expert{e}.fc1"), d, hidden, std)?,
                    fc2: Linear::new(p, &format!("{name}.expert{e}.fc2"), hidden, d, out_std)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { name: name.to_string(), router, experts })
    }

    /// Forward pass that also returns the routing (for the auxiliary loss and histograms).
    /// Only the chosen expert runs for each token.
    pub fn forward_routed(&self, x: &Tensor) -> candle_core::Result<(Tensor, Routing)> {
        let dims = x.dims().to_vec();
        let d = *dims.last().unwrap_or(&1);
        let flat = x.reshape(((), d))?;
        let t = flat.dim(0)?;
        let e = self.experts.len();
        let logits = self.router.forward(&flat)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
        // First maximum on ties, as the runtime kernel does.
        let rows = logits.to_vec2::<f32>()?;
        let choice: Vec<usize> = rows
            .iter()
            .map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0)
            .collect();
        let mut onehot = vec![0f32; t * e];
        let mut counts = vec![0usize; e];
        for (i, &c) in choice.iter().enumerate() {
            onehot[i * e + c] = 1.0;
            counts[c] += 1;
        }
        let onehot = Tensor::from_vec(onehot, (t, e), x.device())?;
        let gate = (&probs * &onehot)?.sum_keepdim(1)?;
        // Gather each expert's tokens, run it, and put the rows back in token order.
        let mut parts = Vec::new();
        let mut order: Vec<u32> = Vec::with_capacity(t);
        for (k, ex) in self.experts.iter().enumerate() {
            let idx: Vec<u32> = (0..t).filter(|&i| choice[i] == k).map(|i| i as u32).collect();
            if idx.is_empty() {
                continue;
            }
            let xi = flat.index_select(&Tensor::new(idx.as_slice(), x.device())?, 0)?;
            parts.push(ex.fc2.forward(&Gelu.forward(&ex.fc1.forward(&xi)?)?)?);
            order.extend(idx);
        }
        let mut inverse = vec![0u32; t];
        for (k, &i) in order.iter().enumerate() {
            inverse[i as usize] = k as u32;
        }
        let y = Tensor::cat(&parts, 0)?.index_select(&Tensor::new(inverse.as_slice(), x.device())?, 0)?;
        let y = y.broadcast_mul(&gate)?.reshape(dims)?;
        let frac: Vec<f32> = counts.iter().map(|&c| c as f32 / t.max(1) as f32).collect();
        let frac = Tensor::from_vec(frac, e, x.device())?;
        let aux_loss = ((probs.mean(0)? * frac)?.sum_all()? * e as f64)?;
        Ok((y, Routing { aux_loss, counts }))
    }
}

impl ZooLayer for SwitchFfn {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_routed(x)?.0)
    }

    /// The dense form in the module docs (every expert runs; the one-hot gate selects).
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let logits = self.router.export(g, input)?;
        g.push_scope(&self.name);
        let probs = g.op("Softmax", &[&logits], vec![attr_int("axis", -1)]);
        let top = g.op("ReduceMax", &[&logits], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)]);
        let hit = g.op("Equal", &[&logits, &top], vec![]);
        let onehot = g.op("Cast", &[&hit], vec![attr_int("to", DataType::Float as i64)]);
        let gate = g.op("Mul", &[&probs, &onehot], vec![]);
        g.pop_scope();
        let mut sum: Option<String> = None;
        for (e, ex) in self.experts.iter().enumerate() {
            let h = ex.fc1.export(g, input)?;
            let h = Gelu.export(g, &h)?;
            let h = ex.fc2.export(g, &h)?;
            g.push_scope(&format!("{}.expert{e}", self.name));
            let (starts, ends, axes) =
                (g.const_i64_vec(&[e as i64]), g.const_i64_vec(&[e as i64 + 1]), g.const_i64_vec(&[-1]));
            let ge = g.op("Slice", &[&gate, &starts, &ends, &axes], vec![]);
            let y = g.op("Mul", &[&h, &ge], vec![]);
            sum = Some(match sum {
                None => y,
                Some(s) => g.op("Add", &[&s, &y], vec![]),
            });
            g.pop_scope();
        }
        Ok(sum.expect("at least one expert"))
    }
}

/// Pre-LN block with a Switch feed-forward layer: `h = x + Attn(LN1(x)); out = h + MoE(LN2(h))`.
#[derive(Clone, Debug)]
pub struct SwitchBlock {
    name: String,
    ln1: LayerNorm,
    attn: CausalSelfAttention,
    ln2: LayerNorm,
    moe: SwitchFfn,
}

impl SwitchBlock {
    fn new(p: &mut Params, name: &str, cfg: &SwitchConfig, std: f64, out_std: f64) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            name: name.to_string(),
            ln1: LayerNorm::new(p, &format!("{name}.ln1"), d, 1e-5)?,
            attn: CausalSelfAttention::new(p, &format!("{name}.attn"), d, cfg.n_heads, cfg.max_seq, std, out_std)?,
            ln2: LayerNorm::new(p, &format!("{name}.ln2"), d, 1e-5)?,
            moe: SwitchFfn::new(p, &format!("{name}.moe"), d, cfg.d_ff, cfg.n_experts, std, out_std)?,
        })
    }

    fn forward_routed(&self, x: &Tensor) -> candle_core::Result<(Tensor, Routing)> {
        let h = (x + self.attn.forward(&self.ln1.forward(x)?)?)?;
        let (m, r) = self.moe.forward_routed(&self.ln2.forward(&h)?)?;
        Ok(((&h + m)?, r))
    }

    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        super::attention::export_pre_norm_block(g, &self.name, input, [&self.ln1, &self.attn], [&self.ln2, &self.moe])
    }
}

/// A GPT-style decoder-only LM with Switch feed-forward layers.
#[derive(Debug)]
pub struct Switch {
    cfg: SwitchConfig,
    params: Params,
    emb: Embeddings,
    blocks: Vec<SwitchBlock>,
    head: LmHead,
}

impl Switch {
    /// A freshly initialised model (weights drawn from `seed`).
    pub fn new(cfg: SwitchConfig, seed: u64) -> Result<Self> {
        let mut p = Params::new(seed);
        let std = cfg.init_std;
        let out_std = std / (2.0 * cfg.n_layers as f64).sqrt();
        let emb = Embeddings::new(&mut p, cfg.vocab, cfg.d_model, cfg.max_seq, std)?;
        let blocks = (0..cfg.n_layers)
            .map(|i| SwitchBlock::new(&mut p, &format!("h.{i}"), &cfg, std, out_std))
            .collect::<Result<Vec<_>>>()?;
        let head = LmHead::new(&mut p, cfg.d_model, cfg.vocab, std)?;
        Ok(Self { cfg, params: p, emb, blocks, head })
    }

    /// The architecture.
    pub fn config(&self) -> &SwitchConfig {
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

    /// Logits `[B, S, vocab]` for token ids `[B, S]`.
    pub fn logits(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.logits_routed(ids)?.0)
    }

    /// Logits and the routing of every Switch layer (in block order).
    pub fn logits_routed(&self, ids: &Tensor) -> candle_core::Result<(Tensor, Vec<Routing>)> {
        let mut x = self.emb.forward(ids)?;
        let mut routing = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let (y, r) = b.forward_routed(&x)?;
            x = y;
            routing.push(r);
        }
        Ok((self.head.forward(&x)?, routing))
    }

    /// Encodes the model as ONNX; `vocab` is the tokenizer string (id i = i-th char).
    pub fn export_onnx(&self, vocab: &str) -> Result<Vec<u8>> {
        let c = &self.cfg;
        let info = OnnxInfo {
            graph: "mote_switch",
            family: "switch",
            vocab: c.vocab,
            max_seq: c.max_seq,
            extra: &[("mote.moe_capacity", "0")],
        };
        char_lm::export_onnx(self, &info, vocab)
    }
}

impl ZooLayer for Switch {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.logits(ids)
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

/// Returns `onnx` with its `mote.moe_capacity` metadata (tokens per expert per call that the
/// converter writes into fused `Moe` ops; 0 = unlimited) set to `capacity`.
pub fn with_moe_capacity(onnx: &[u8], capacity: u32) -> Result<Vec<u8>> {
    use prost::Message;
    let mut m = tract_onnx::pb::ModelProto::decode(onnx)?;
    m.metadata_props.retain(|e| e.key != "mote.moe_capacity");
    m.metadata_props
        .push(tract_onnx::pb::StringStringEntryProto { key: "mote.moe_capacity".into(), value: capacity.to_string() });
    Ok(m.encode_to_vec())
}

/// The router of Switch layer `layer` read from the ONNX initializers: weights `[E, D]`
/// row-major (one row per expert) and bias `[E]`.
pub fn router_from_onnx(onnx: &[u8], layer: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    use prost::Message;
    let m = tract_onnx::pb::ModelProto::decode(onnx)?;
    let graph = m.graph.ok_or_else(|| anyhow::anyhow!("ONNX model has no graph"))?;
    let read = |name: &str| -> Result<(Vec<i64>, Vec<f32>)> {
        let t = graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| anyhow::anyhow!("no initializer '{name}'"))?;
        let v = t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok((t.dims.clone(), v))
    };
    let (dims, w) = read(&format!("h.{layer}.moe.router.weight"))?;
    let (_, b) = read(&format!("h.{layer}.moe.router.bias"))?;
    ensure!(dims.len() == 2, "router weight must be 2-D");
    // Exported as `[D, E]` for `MatMul(x, W)`.
    let (d, e) = (dims[0] as usize, dims[1] as usize);
    let rows = (0..e).flat_map(|j| (0..d).map(move |i| (i, j))).map(|(i, j)| w[i * e + j]).collect();
    Ok((rows, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::layers::tensor_data;
    use crate::zoo::rng::SplitMix64;
    use crate::zoo::tract_run::run_tract_i64;
    use candle_core::Device;

    fn random_model() -> Result<Switch> {
        let cfg = SwitchConfig { max_seq: 16, d_ff: 24, ..SwitchConfig::new(12) };
        let mut m = Switch::new(cfg, 9)?;
        m.params_mut().randomize(0.3)?;
        Ok(m)
    }

    #[test]
    fn exported_switch_matches_candle_in_tract() -> Result<()> {
        let m = random_model()?;
        let onnx = m.export_onnx("abcdefghijkl")?;
        let mut r = SplitMix64::new(4);
        for s in [1usize, 7, 16] {
            let ids: Vec<i64> = (0..s).map(|_| r.below(12) as i64).collect();
            let t = Tensor::from_vec(ids.clone(), (1, s), &Device::Cpu)?;
            let (logits, routing) = m.logits_routed(&t)?;
            let want = tensor_data(&logits)?;
            let (shape, got) = run_tract_i64(&onnx, &ids, &[1, s])?;
            assert_eq!(shape, vec![1, s, 12]);
            let max = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(max < 1e-4, "seq {s}: max abs diff {max}");
            assert!(want.iter().map(|v| v.abs()).fold(0f32, f32::max) > 0.1);
            if s == 16 {
                assert!(routing[0].counts.iter().filter(|&&c| c > 0).count() > 1, "{:?}", routing[0].counts);
            }
        }
        Ok(())
    }

    #[test]
    fn sparse_training_path_equals_the_dense_formulation() -> Result<()> {
        // Dense: every expert on every token, weighted by the one-hot gate × probability.
        let m = random_model()?;
        let moe = &m.blocks[0].moe;
        let mut r = SplitMix64::new(8);
        let x = Tensor::from_vec(r.normal_vec(9 * 64, 1.0), (9, 64), &Device::Cpu)?;
        let (y, routing) = moe.forward_routed(&x)?;
        assert_eq!(routing.counts.iter().sum::<usize>(), 9);
        let aux = routing.aux_loss.to_scalar::<f32>()?;
        assert!(aux > 0.0 && aux <= 4.0 + 1e-4, "aux {aux}");
        let logits = moe.router.forward(&x)?.to_vec2::<f32>()?;
        let mut want = vec![0f32; 9 * 64];
        for (e, ex) in moe.experts.iter().enumerate() {
            let h = tensor_data(&ex.fc2.forward(&Gelu.forward(&ex.fc1.forward(&x)?)?)?)?;
            for (t, row) in logits.iter().enumerate() {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                if row.iter().position(|&v| v == max) != Some(e) {
                    continue;
                }
                let p = 1.0 / row.iter().map(|&v| (v - max).exp()).sum::<f32>();
                for j in 0..64 {
                    want[t * 64 + j] = p * h[t * 64 + j];
                }
            }
        }
        let got = tensor_data(&y)?;
        let max = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max < 1e-5, "sparse vs dense {max}");
        assert!(got.iter().any(|v| v.abs() > 1e-2));
        Ok(())
    }

    #[test]
    fn macs_per_token_counts_one_expert() {
        let c = SwitchConfig::new(40);
        let one = c.macs_per_token();
        let all = c.macs_per_token_all_experts();
        assert_eq!(all - one, 2 * 3 * 2 * 128 * 64);
        assert!(one < all);
    }
}
