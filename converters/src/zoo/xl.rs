//! The Transformer-XL family: a character-level LM with segment recurrence and relative
//! positional attention.
//!
//! Each call processes one segment of `S` tokens. Every layer attends over `[memory; segment]`
//! where the memory is the previous segment's input to that layer (detached in training), and
//! scores keys with the XL relative form `(q + u)·k_j + (q + v)·r[i - j]`, `r` being the
//! projected sinusoid of the distance. Which memory rows are real is a validity mask: it is
//! zero in a fresh session and is shifted in with ones, so training, tract and the `.mote`
//! session see exactly the same function.
//!
//! The ONNX export is one segment step: inputs `tokens [1, S]`, `state.mem<l> [1, M, d]` and
//! `state.valid [1, M]`; outputs `logits` and the matching `state.*.next` values, which the
//! converter turns into a state region carried from one run to the next.
//!
//! ```
//! use mote_converters::zoo::xl::{Xl, XlConfig};
//! let cfg = XlConfig { n_layers: 1, seg: 4, mem: 4, ..XlConfig::new(10) };
//! let xl = Xl::new(cfg, 0)?;
//! let ids = candle_core::Tensor::new(&[[1u32, 2, 3, 4]], &candle_core::Device::Cpu)?;
//! let (mems, valid) = xl.empty_memory(1)?;
//! let step = xl.step(&ids, &mems, &valid)?;
//! assert_eq!(step.logits.dims(), &[1, 4, 10]);
//! assert!(xl.export_onnx("abcdefghij")?.len() > 1000);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod data;
pub mod train;

pub use card::write_xl_card;
pub use train::{train_xl, XlReport, XlTrainOptions};

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use super::layers::{export_tensor, tensor_data, Embedding, LayerNorm, Linear, Mlp, Params, ZooLayer};
use super::onnx_builder::{attr_int, attr_ints, DataType, Dim, GraphBuilder};

/// Value added to masked scores (future keys, invalid memory).
pub const MASK_NEG: f32 = -1e9;
/// Name of the tokens input.
pub const TOKENS: &str = "tokens";
/// Name of the memory-validity state.
pub const VALID: &str = "state.valid";

/// Name of layer `l`'s memory state.
pub fn mem_name(l: usize) -> String {
    format!("state.mem{l}")
}

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct XlConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Blocks.
    pub n_layers: usize,
    /// MLP hidden width.
    pub d_ff: usize,
    /// Segment length `S` (tokens per call).
    pub seg: usize,
    /// Memory length `M` (positions of the previous segment kept per layer; equal to `S`).
    pub mem: usize,
    /// Std of the normal weight initialisation.
    pub init_std: f64,
}

impl XlConfig {
    /// The zoo model: d 64, 4 heads, 2 layers, ffn 256, segment 32, memory 32.
    pub fn new(vocab: usize) -> Self {
        Self { vocab, d_model: 64, n_heads: 4, n_layers: 2, d_ff: 256, seg: 32, mem: 32, init_std: 0.02 }
    }

    /// Keys per query row: memory then segment.
    pub fn keys(&self) -> usize {
        self.mem + self.seg
    }
}

/// `[n, d]` sinusoidal encodings of distances `0..n` (sines in the first half, cosines in the
/// second, as in Transformer-XL).
pub fn sinusoid(n: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let mut out = vec![0f32; n * d];
    for p in 0..n {
        for i in 0..half {
            let inv = 1.0 / 10000f64.powf(2.0 * i as f64 / d as f64);
            let a = p as f64 * inv;
            out[p * d + i] = a.sin() as f32;
            out[p * d + half + i] = a.cos() as f32;
        }
    }
    out
}

/// `[S, M+S]` distance of key `j` from query `s` (at key position `s + M`); future keys,
/// which the causal mask hides, get 0.
pub fn distance_index(seg: usize, mem: usize) -> Vec<i64> {
    let keys = seg + mem;
    (0..seg * keys).map(|i| (i / keys + mem).saturating_sub(i % keys) as i64).collect()
}

/// `[S, M+S]` additive causal mask with queries aligned to the last `S` keys.
pub fn causal_data(seg: usize, mem: usize) -> Vec<f32> {
    let keys = seg + mem;
    (0..seg * keys).map(|i| if i % keys > i / keys + mem { MASK_NEG } else { 0.0 }).collect()
}

/// Multi-head attention over `[memory; segment]` with XL relative positions.
#[derive(Clone, Debug)]
pub struct XlAttention {
    name: String,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    r: Linear,
    u_bias: Var,
    v_bias: Var,
    n_heads: usize,
    d_model: usize,
    seg: usize,
    mem: usize,
    sin: Tensor,
    index: Tensor,
    causal: Tensor,
}

impl XlAttention {
    /// Projections with normal(0, std) weights; the output projection uses `out_std`.
    pub fn new(p: &mut Params, name: &str, cfg: &XlConfig, std: f64, out_std: f64) -> Result<Self> {
        let d = cfg.d_model;
        ensure!(cfg.n_heads > 0 && d.is_multiple_of(cfg.n_heads), "d_model must divide into heads");
        let keys = cfg.keys();
        let dev = p.device().clone();
        let index: Vec<u32> = distance_index(cfg.seg, cfg.mem).iter().map(|&x| x as u32).collect();
        Ok(Self {
            name: name.to_string(),
            q: Linear::new(p, &format!("{name}.q"), d, d, std)?,
            k: Linear::new(p, &format!("{name}.k"), d, d, std)?,
            v: Linear::new(p, &format!("{name}.v"), d, d, std)?,
            o: Linear::new(p, &format!("{name}.o"), d, d, out_std)?,
            r: Linear::new(p, &format!("{name}.r"), d, d, std)?,
            u_bias: p.constant(&format!("{name}.u"), &[d], 0.0)?,
            v_bias: p.constant(&format!("{name}.v_bias"), &[d], 0.0)?,
            n_heads: cfg.n_heads,
            d_model: d,
            seg: cfg.seg,
            mem: cfg.mem,
            sin: Tensor::from_vec(sinusoid(keys, d), (keys, d), &dev)?,
            index: Tensor::from_vec(index, cfg.seg * keys, &dev)?,
            causal: Tensor::from_vec(causal_data(cfg.seg, cfg.mem), (cfg.seg, keys), &dev)?,
        })
    }

    /// The projected relative encodings `r [M+S, d]`, row `i` for distance `i`.
    pub fn r_table(&self) -> candle_core::Result<Tensor> {
        self.r.forward(&self.sin)
    }

    /// `xn [B, S, d]` normalised segment, `kvn [B, M+S, d]` normalised memory and segment,
    /// `ext [B, 1, 1, M+S]` additive key mask.
    pub fn forward(&self, xn: &Tensor, kvn: &Tensor, ext: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, d) = xn.dims3()?;
        let keys = kvn.dim(1)?;
        let (h, dh) = (self.n_heads, self.d_model / self.n_heads);
        let q = self.q.forward(xn)?;
        let k = self.k.forward(kvn)?;
        let v = self.v.forward(kvn)?;
        let qh = q.broadcast_add(self.u_bias.as_tensor())?.reshape((b, s, h, dh))?.transpose(1, 2)?.contiguous()?;
        let kt = k.reshape((b, keys, h, dh))?.permute((0, 2, 3, 1))?.contiguous()?;
        let vh = v.reshape((b, keys, h, dh))?.transpose(1, 2)?.contiguous()?;
        let ac = qh.matmul(&kt)?;
        // Relative term: r gathered by distance into [S, H, Dh, Skv], batched over (S, H).
        let rel = self.r_table()?.index_select(&self.index, 0)?.reshape((s, keys, h, dh))?;
        let rel = rel.permute((0, 2, 3, 1))?.contiguous()?;
        let qr = q.broadcast_add(self.v_bias.as_tensor())?.reshape((b, s, h, dh))?.permute((1, 2, 0, 3))?;
        let bd = qr.contiguous()?.matmul(&rel)?.permute((2, 1, 0, 3))?;
        let scale = 1.0 / (dh as f64).sqrt();
        let scores = ((ac + bd)? * scale)?.broadcast_add(&self.causal)?.broadcast_add(ext)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let y = probs.matmul(&vh)?.transpose(1, 2)?.contiguous()?.reshape((b, s, d))?;
        self.o.forward(&y)
    }

    /// Appends the attention reading `xn`, `kvn` and the additive key mask `ext`.
    pub fn export(&self, g: &mut GraphBuilder, xn: &str, kvn: &str, ext: &str) -> Result<String> {
        let (h, dh, d) = (self.n_heads as i64, (self.d_model / self.n_heads) as i64, self.d_model as i64);
        let (s, keys) = (self.seg as i64, (self.seg + self.mem) as i64);
        let q = self.q.export(g, xn)?;
        let k = self.k.export(g, kvn)?;
        let v = self.v.export(g, kvn)?;
        let u = export_tensor(g, &format!("{}.u", self.name), &self.u_bias)?;
        let vb = export_tensor(g, &format!("{}.v_bias", self.name), &self.v_bias)?;
        // W_r · sinusoid does not depend on the input: stored as the projected table.
        let table = g.initializer_f32(&format!("{}.r_table", self.name), &[keys, d], &tensor_data(&self.r_table()?)?);
        let index = shared(g, "xl_distance", |g| {
            g.initializer_i64("xl_distance", &[s, keys], &distance_index(self.seg, self.mem))
        });
        let causal = shared(g, "xl_causal_mask", |g| {
            g.initializer_f32("xl_causal_mask", &[s, keys], &causal_data(self.seg, self.mem))
        });
        g.push_scope(&self.name);
        let heads = g.const_i64_vec(&[1, -1, h, dh]);
        let perm = |p: &[i64]| vec![attr_ints("perm", p)];
        let qu = g.op("Add", &[&q, &u], vec![]);
        let qh = g.op("Reshape", &[&qu, &heads], vec![]);
        let qh = g.op("Transpose", &[&qh], perm(&[0, 2, 1, 3]));
        let kt = g.op("Reshape", &[&k, &heads], vec![]);
        let kt = g.op("Transpose", &[&kt], perm(&[0, 2, 3, 1]));
        let vh = g.op("Reshape", &[&v, &heads], vec![]);
        let vh = g.op("Transpose", &[&vh], perm(&[0, 2, 1, 3]));
        let ac = g.op("MatMul", &[&qh, &kt], vec![]);
        let qv = g.op("Add", &[&q, &vb], vec![]);
        let rows = g.const_i64_vec(&[-1, h, 1, dh]);
        let qr = g.op("Reshape", &[&qv, &rows], vec![]);
        let rel = g.op("Gather", &[&table, &index], vec![attr_int("axis", 0)]);
        let split = g.const_i64_vec(&[s, keys, h, dh]);
        let rel = g.op("Reshape", &[&rel, &split], vec![]);
        let rel = g.op("Transpose", &[&rel], perm(&[0, 2, 3, 1]));
        let bd = g.op("MatMul", &[&qr, &rel], vec![]);
        let bd = g.op("Transpose", &[&bd], perm(&[2, 1, 0, 3]));
        let scores = g.op("Add", &[&ac, &bd], vec![]);
        let scale = g.const_f32_scalar(1.0 / (dh as f32).sqrt());
        let scores = g.op("Mul", &[&scores, &scale], vec![]);
        let scores = g.op("Add", &[&scores, &causal], vec![]);
        let scores = g.op("Add", &[&scores, ext], vec![]);
        let probs = g.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let y = g.op("MatMul", &[&probs, &vh], vec![]);
        let y = g.op("Transpose", &[&y], perm(&[0, 2, 1, 3]));
        let merged = g.const_i64_vec(&[1, -1, d]);
        let y = g.op("Reshape", &[&y, &merged], vec![]);
        g.pop_scope();
        self.o.export(g, &y)
    }
}

/// A graph-wide value created once under `key`.
fn shared(g: &mut GraphBuilder, key: &str, make: impl FnOnce(&mut GraphBuilder) -> String) -> String {
    if let Some(v) = g.lookup(key) {
        return v;
    }
    let v = make(g);
    g.bind(key, &v);
    v
}

/// Pre-LN block: `h = x + Attn(LN1(x), LN1([mem; x])); out = h + MLP(LN2(h))`.
#[derive(Clone, Debug)]
pub struct XlBlock {
    name: String,
    ln1: LayerNorm,
    attn: XlAttention,
    ln2: LayerNorm,
    mlp: Mlp,
}

impl XlBlock {
    /// A block named `name` (e.g. `h.0`).
    pub fn new(p: &mut Params, name: &str, cfg: &XlConfig, std: f64, out_std: f64) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            name: name.to_string(),
            ln1: LayerNorm::new(p, &format!("{name}.ln1"), d, 1e-5)?,
            attn: XlAttention::new(p, &format!("{name}.attn"), cfg, std, out_std)?,
            ln2: LayerNorm::new(p, &format!("{name}.ln2"), d, 1e-5)?,
            mlp: Mlp::new(p, &format!("{name}.mlp"), d, cfg.d_ff, std, out_std)?,
        })
    }

    /// `x [B, S, d]`, `mem [B, M, d]`, `ext [B, 1, 1, M+S]`.
    pub fn forward(&self, x: &Tensor, mem: &Tensor, ext: &Tensor) -> candle_core::Result<Tensor> {
        let xn = self.ln1.forward(x)?;
        let kvn = Tensor::cat(&[&self.ln1.forward(mem)?, &xn], 1)?;
        let h = (x + self.attn.forward(&xn, &kvn, ext)?)?;
        &h + self.mlp.forward(&self.ln2.forward(&h)?)?
    }

    /// Appends the block; its output value is called `output` when given.
    pub fn export(&self, g: &mut GraphBuilder, x: &str, mem: &str, ext: &str, output: Option<&str>) -> Result<String> {
        let xn = self.ln1.export(g, x)?;
        let mn = self.ln1.export(g, mem)?;
        g.push_scope(&self.name);
        let kvn = g.op("Concat", &[&mn, &xn], vec![attr_int("axis", 1)]);
        g.pop_scope();
        let a = self.attn.export(g, &xn, &kvn, ext)?;
        g.push_scope(&self.name);
        let h = g.op("Add", &[x, &a], vec![]);
        g.pop_scope();
        let m = self.ln2.export(g, &h)?;
        let m = self.mlp.export(g, &m)?;
        g.push_scope(&self.name);
        let out = match output {
            Some(name) => g.op_named("Add", &[&h, &m], vec![], name),
            None => g.op("Add", &[&h, &m], vec![]),
        };
        g.pop_scope();
        Ok(out)
    }
}

/// One segment step's results.
#[derive(Debug)]
pub struct XlStep {
    /// `[B, S, vocab]`.
    pub logits: Tensor,
    /// Next memory per layer `[B, M, d]` (the layer inputs of this segment; not detached).
    pub mems: Vec<Tensor>,
    /// Next validity `[B, M]`.
    pub valid: Tensor,
}

/// The Transformer-XL LM.
#[derive(Debug)]
pub struct Xl {
    cfg: XlConfig,
    params: Params,
    tok: Embedding,
    blocks: Vec<XlBlock>,
    ln_f: LayerNorm,
    head: Linear,
}

impl Xl {
    /// A freshly initialised model (weights drawn from `seed`). The memory equals the segment.
    pub fn new(cfg: XlConfig, seed: u64) -> Result<Self> {
        ensure!(cfg.mem == cfg.seg, "this zoo model keeps exactly one segment of memory (mem == seg)");
        let mut p = Params::new(seed);
        let std = cfg.init_std;
        let out_std = std / (2.0 * cfg.n_layers as f64).sqrt();
        let tok = Embedding::new(&mut p, "tok_emb", cfg.vocab, cfg.d_model, std)?;
        let blocks = (0..cfg.n_layers)
            .map(|i| XlBlock::new(&mut p, &format!("h.{i}"), &cfg, std, out_std))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::new(&mut p, "ln_f", cfg.d_model, 1e-5)?;
        let head = Linear::new(&mut p, "lm_head", cfg.d_model, cfg.vocab, std)?;
        Ok(Self { cfg, params: p, tok, blocks, ln_f, head })
    }

    /// The architecture.
    pub fn config(&self) -> &XlConfig {
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

    /// Zero memories and an all-invalid mask for `batch` streams (a fresh session).
    pub fn empty_memory(&self, batch: usize) -> candle_core::Result<(Vec<Tensor>, Tensor)> {
        let dev = Device::Cpu;
        let mems = (0..self.cfg.n_layers)
            .map(|_| Tensor::zeros((batch, self.cfg.mem, self.cfg.d_model), DType::F32, &dev))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((mems, Tensor::zeros((batch, self.cfg.mem), DType::F32, &dev)?))
    }

    /// Runs one segment `ids [B, S]` after `mems` (per layer `[B, M, d]`) with validity
    /// `valid [B, M]` (1 = real memory).
    pub fn step(&self, ids: &Tensor, mems: &[Tensor], valid: &Tensor) -> candle_core::Result<XlStep> {
        let (b, s) = ids.dims2()?;
        let m = self.cfg.mem;
        let kmask = Tensor::cat(&[valid, &Tensor::ones((b, s), DType::F32, ids.device())?], 1)?;
        let ext = (kmask.affine(-1.0, 1.0)? * MASK_NEG as f64)?.reshape((b, 1, 1, m + s))?;
        let mut x = self.tok.forward(ids)?;
        let mut next = Vec::with_capacity(self.blocks.len());
        for (blk, mem) in self.blocks.iter().zip(mems) {
            next.push(x.clone());
            x = blk.forward(&x, mem, &ext)?;
        }
        let logits = self.head.forward(&self.ln_f.forward(&x)?)?;
        Ok(XlStep { logits, mems: next, valid: kmask.narrow(1, s, m)? })
    }

    /// Encodes one segment step as ONNX; `vocab` is the tokenizer string (id i = i-th char).
    pub fn export_onnx(&self, vocab: &str) -> Result<Vec<u8>> {
        let c = self.cfg;
        ensure!(
            vocab.chars().count() == c.vocab,
            "vocab string has {} symbols, model has {}",
            vocab.chars().count(),
            c.vocab
        );
        let (s, m, d) = (c.seg as i64, c.mem as i64, c.d_model as i64);
        let mut g = GraphBuilder::new("mote_transformer_xl");
        let fixed = |v: &[i64]| v.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
        g.input(TOKENS, DataType::Int64, &fixed(&[1, s]));
        for l in 0..c.n_layers {
            g.input(&mem_name(l), DataType::Float, &fixed(&[1, m, d]));
        }
        g.input(VALID, DataType::Float, &fixed(&[1, m]));
        // Key mask [1, M+S]: the memory's validity, then the segment (always valid).
        g.push_scope("memory_mask");
        let ones = g.initializer_f32("segment_valid", &[1, s], &vec![1.0; c.seg]);
        let kmask = g.op("Concat", &[VALID, &ones], vec![attr_int("axis", 1)]);
        let axes = g.const_i64_vec(&[1, 2]);
        let km4 = g.op("Unsqueeze", &[&kmask, &axes], vec![]);
        let one = g.const_f32_scalar(1.0);
        let inv = g.op("Sub", &[&one, &km4], vec![]);
        let neg = g.const_f32_scalar(MASK_NEG);
        let ext = g.op("Mul", &[&inv, &neg], vec![]);
        let (starts, ends, ax) = (g.const_i64_vec(&[s]), g.const_i64_vec(&[s + m]), g.const_i64_vec(&[1]));
        let valid_next = format!("{VALID}.next");
        g.node_with_outputs("Slice", &[&kmask, &starts, &ends, &ax], &[&valid_next], vec![]);
        g.pop_scope();
        // The layer-0 memory is the embedding output: named as its state update.
        let w = export_tensor(&mut g, "tok_emb.weight", self.tok.weight())?;
        g.push_scope("tok_emb");
        let mut x = g.op_named("Gather", &[&w, TOKENS], vec![attr_int("axis", 0)], &format!("{}.next", mem_name(0)));
        g.pop_scope();
        for (l, blk) in self.blocks.iter().enumerate() {
            let out = (l + 1 < c.n_layers).then(|| format!("{}.next", mem_name(l + 1)));
            x = blk.export(&mut g, &x, &mem_name(l), &ext, out.as_deref())?;
        }
        let x = self.ln_f.export(&mut g, &x)?;
        let logits = self.head.export_as(&mut g, &x, Some("logits"))?;
        g.output(&logits, DataType::Float, &fixed(&[1, s, c.vocab as i64]));
        for l in 0..c.n_layers {
            g.output(&format!("{}.next", mem_name(l)), DataType::Float, &fixed(&[1, m, d]));
        }
        g.output(&valid_next, DataType::Float, &fixed(&[1, m]));
        g.metadata("mote.family", "transformer-xl");
        g.metadata("mote.tokenizer", &format!("chars:{vocab}"));
        g.metadata("mote.segment", &c.seg.to_string());
        g.metadata("mote.memory", &c.mem.to_string());
        Ok(g.finish())
    }
}

/// Runs the exported step in tract with the state passed explicitly.
pub struct TractStep {
    plan: std::sync::Arc<tract_onnx::prelude::TypedSimplePlan>,
}

impl TractStep {
    /// Loads and optimises the ONNX step.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        use tract_onnx::prelude::*;
        let plan = tract_onnx::onnx().model_for_read(&mut &bytes[..])?.into_optimized()?.into_runnable()?;
        Ok(Self { plan })
    }

    /// One call: `tokens [S]`, then the states in input order (`mem0.., valid`) as flat f32
    /// with their shapes. Returns every output flattened (logits, then the next states).
    pub fn run(&self, tokens: &[i64], states: &[(Vec<usize>, Vec<f32>)]) -> Result<Vec<Vec<f32>>> {
        use tract_onnx::prelude::*;
        let mut inputs: TVec<TValue> = tvec!(Tensor::from_shape(&[1, tokens.len()], tokens)?.into_tvalue());
        for (shape, data) in states {
            inputs.push(Tensor::from_shape(shape, data)?.into_tvalue());
        }
        let out = self.plan.run(inputs)?;
        out.iter().map(|t| Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::rng::SplitMix64;

    #[test]
    fn masks_and_distances() {
        // S = 2, M = 3: query 0 sits at key 3, query 1 at key 4.
        assert_eq!(distance_index(2, 3), [3, 2, 1, 0, 0, 4, 3, 2, 1, 0]);
        let c = causal_data(2, 3);
        assert_eq!(&c[..5], &[0.0, 0.0, 0.0, 0.0, MASK_NEG]);
        assert!(c[5..].iter().all(|&v| v == 0.0));
        let s = sinusoid(3, 4);
        assert_eq!(&s[..4], &[0.0, 0.0, 1.0, 1.0]);
        assert!((s[4] - 1f32.sin()).abs() < 1e-6 && (s[6] - 1f32.cos()).abs() < 1e-6);
    }

    /// Three consecutive segments: candle with carried memory vs tract with the state passed
    /// explicitly, random weights (including u, v and the relative projection).
    #[test]
    fn exported_step_matches_candle_across_segments() -> Result<()> {
        let cfg = XlConfig { d_model: 16, n_heads: 2, d_ff: 32, seg: 5, mem: 5, ..XlConfig::new(9) };
        let mut xl = Xl::new(cfg, 3)?;
        xl.params_mut().randomize(0.3)?;
        let onnx = xl.export_onnx("abcdefghi")?;
        let tract = TractStep::new(&onnx)?;
        let (mut mems, mut valid) = xl.empty_memory(1)?;
        let mut states: Vec<(Vec<usize>, Vec<f32>)> =
            mems.iter().chain([&valid]).map(|t| Ok((t.dims().to_vec(), tensor_data(t)?))).collect::<Result<_>>()?;
        let mut r = SplitMix64::new(8);
        let mut without_memory_differs = false;
        for seg in 0..3 {
            let ids: Vec<u32> = (0..5).map(|_| r.below(9) as u32).collect();
            let t = Tensor::from_vec(ids.clone(), (1, 5), &Device::Cpu)?;
            let step = xl.step(&t, &mems, &valid)?;
            let want = tensor_data(&step.logits)?;
            let tokens: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
            let got = tract.run(&tokens, &states)?;
            let diff = want.iter().zip(&got[0]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff < 1e-4, "segment {seg}: logits differ by {diff}");
            assert!(want.iter().map(|v| v.abs()).fold(0f32, f32::max) > 0.1);
            if seg > 0 {
                let (zm, zv) = xl.empty_memory(1)?;
                let fresh = tensor_data(&xl.step(&t, &zm, &zv)?.logits)?;
                without_memory_differs |= fresh.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-3);
            }
            mems = step.mems;
            valid = step.valid;
            for (k, next) in mems.iter().chain([&valid]).enumerate() {
                let data = tensor_data(next)?;
                let diff = data.iter().zip(&got[k + 1]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(diff < 1e-4, "segment {seg}: state {k} differs by {diff}");
                states[k].1 = got[k + 1].clone();
            }
        }
        assert!(without_memory_differs, "the memory must change the logits");
        Ok(())
    }
}
