//! Training and evaluation pieces shared by the zoo's causal character LMs.
//!
//! [`CausalLm`] is what the probes need from a model: logits for a window of ids and the
//! context length. [`Gpt`] and [`Switch`] implement it; the agreement and sum probes,
//! greedy generation and the GPT-style artefacts (`model.onnx`, `golden/`, `heldout.npy`,
//! `calib/`) are written once here for both. The n-gram baselines and `ids_tensor` are
//! also used by the Transformer-XL.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, D};

use super::corpus::{self, Vocab, SEPARATOR};
use super::gpt::{Gpt, Sample};
use super::layers::tensor_data;
use super::rng::SplitMix64;
use super::switch::Switch;
use super::tract_run::run_tract_i64;
use crate::array::Array;

/// A decoder-only LM over a character vocabulary.
pub trait CausalLm {
    /// Logits `[B, S, vocab]` for token ids `[B, S]` (`S <= max_seq`).
    fn logits(&self, ids: &Tensor) -> candle_core::Result<Tensor>;
    /// Context length.
    fn max_seq(&self) -> usize;
    /// Vocabulary size.
    fn vocab(&self) -> usize;
}

impl CausalLm for Gpt {
    fn logits(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        Gpt::logits(self, ids)
    }
    fn max_seq(&self) -> usize {
        self.config().max_seq
    }
    fn vocab(&self) -> usize {
        self.config().vocab
    }
}

impl CausalLm for Switch {
    fn logits(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        Switch::logits(self, ids)
    }
    fn max_seq(&self) -> usize {
        self.config().max_seq
    }
    fn vocab(&self) -> usize {
        self.config().vocab
    }
}

/// The training and held-out id streams of the procedural corpus (fixed seeds).
pub(crate) fn corpus_ids(vocab: &Vocab, train_chars: usize, heldout_chars: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let train_ids =
        vocab.encode(&corpus::generate(corpus::TRAIN_SEED, train_chars)).context("train corpus outside vocab")?;
    let held_ids = vocab
        .encode(&corpus::generate(corpus::HELDOUT_SEED, heldout_chars))
        .context("held-out corpus outside vocab")?;
    Ok((train_ids, held_ids))
}

/// `n` windows of `win` ids of `held` at evenly spaced offsets.
pub(crate) fn eval_windows(held: &[u32], win: usize, n: usize) -> Vec<&[u32]> {
    let stride = (held.len() - win) / n.max(1);
    (0..n).map(|i| &held[i * stride..i * stride + win]).collect()
}

/// Prompts of the greedy samples in the training reports.
const SAMPLE_PROMPTS: [&str; 3] = ["the cat ", "two dogs that ", "23+19="];

/// Greedy generations (up to 48 chars) from [`SAMPLE_PROMPTS`], each fed after a line
/// separator.
pub(crate) fn samples(m: &impl CausalLm, vocab: &Vocab) -> Result<Vec<Sample>> {
    SAMPLE_PROMPTS
        .iter()
        .map(|p| {
            let completion = greedy(m, vocab, &format!("{SEPARATOR}{p}"), 48)?;
            Ok(Sample { prompt: p.to_string(), completion })
        })
        .collect()
}

/// Token-id tensor `[rows, S]` from equal-length rows.
pub(crate) fn ids_tensor(rows: &[&[u32]]) -> candle_core::Result<Tensor> {
    let s = rows.first().map_or(0, |r| r.len());
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), s), &Device::Cpu)
}

/// (unigram, bigram) cross-entropy of add-one smoothed train statistics on the rows' targets.
pub(crate) fn baselines<W: AsRef<[u32]>>(train: &[u32], rows: &[W], v: usize) -> (f64, f64) {
    let mut uni = vec![1.0f64; v];
    let mut bi = vec![1.0f64; v * v];
    for w in train.windows(2) {
        uni[w[1] as usize] += 1.0;
        bi[w[0] as usize * v + w[1] as usize] += 1.0;
    }
    let uni_total: f64 = uni.iter().sum();
    let row_totals: Vec<f64> = bi.chunks(v).map(|r| r.iter().sum()).collect();
    let (mut u, mut b, mut n) = (0.0, 0.0, 0.0);
    for row in rows {
        for pair in row.as_ref().windows(2) {
            let (p, c) = (pair[0] as usize, pair[1] as usize);
            u -= (uni[c] / uni_total).ln();
            b -= (bi[p * v + c] / row_totals[p]).ln();
            n += 1.0;
        }
    }
    (u / n, b / n)
}

/// Log-probability of `cont` after `prefix` (context truncated on the left to fit).
fn logprob(m: &impl CausalLm, vocab: &Vocab, prefix: &str, cont: &str) -> Result<f64> {
    let p = vocab.encode(prefix).context("prefix outside vocab")?;
    let c = vocab.encode(cont).context("continuation outside vocab")?;
    let mut ids: Vec<u32> = p.iter().chain(&c).copied().collect();
    ids.pop();
    let skip = ids.len().saturating_sub(m.max_seq());
    let ids = &ids[skip..];
    let logits = m.logits(&ids_tensor(&[ids])?)?.squeeze(0)?;
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
    let first = ids.len() - c.len();
    Ok(c.iter().enumerate().map(|(i, &t)| lp[first + i][t as usize] as f64).sum())
}

/// `(accuracy, probes)`: how often the correct verb form of an agreement probe is the more
/// likely continuation.
pub(crate) fn agreement(m: &impl CausalLm, vocab: &Vocab) -> Result<(f64, usize)> {
    let probes = corpus::agreement_probes(corpus::PROBE_SEED, 200);
    let mut ok = 0;
    for p in &probes {
        if logprob(m, vocab, &p.prefix, &p.good)? > logprob(m, vocab, &p.prefix, &p.bad)? {
            ok += 1;
        }
    }
    Ok((ok as f64 / probes.len() as f64, probes.len()))
}

/// `(accuracy, probes)`: how often a greedy `a+b=` completion is exactly the sum.
pub(crate) fn sums(m: &impl CausalLm, vocab: &Vocab) -> Result<(f64, usize)> {
    let probes = corpus::sum_probes(corpus::PROBE_SEED, 100);
    let mut ok = 0;
    for (prompt, answer) in &probes {
        let mut out = greedy(m, vocab, prompt, 4)?;
        if let Some(i) = out.find(';') {
            out.truncate(i + 1);
        }
        ok += usize::from(&out == answer);
    }
    Ok((ok as f64 / probes.len() as f64, probes.len()))
}

/// Greedy continuation of `prompt`, stopping at the separator or after `max_new` chars.
pub fn greedy(m: &impl CausalLm, vocab: &Vocab, prompt: &str, max_new: usize) -> Result<String> {
    let mut ids = vocab.encode(prompt).context("prompt outside vocab")?;
    let mut out = Vec::new();
    for _ in 0..max_new {
        let skip = ids.len().saturating_sub(m.max_seq());
        let logits = m.logits(&ids_tensor(&[&ids[skip..]])?)?.squeeze(0)?;
        let last = logits.get(logits.dim(0)? - 1)?;
        let next = last.argmax(0)?.to_scalar::<u32>()?;
        if vocab.chars()[next as usize] == SEPARATOR {
            break;
        }
        ids.push(next);
        out.push(next);
    }
    Ok(vocab.decode(&out))
}

/// Writes `model.onnx`, `golden/` (4 windows), `heldout.npy` (20 windows) and `calib/`
/// (8 training windows drawn from `seed`); returns the tract-vs-candle golden difference.
pub(crate) fn write_artefacts(
    out: &Path,
    m: &impl CausalLm,
    onnx: &[u8],
    eval: &[&[u32]],
    train: &[u32],
    seed: u64,
) -> Result<f32> {
    let s = m.max_seq();
    let v = m.vocab();
    for d in ["golden", "calib"] {
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    std::fs::write(out.join("model.onnx"), onnx)?;
    let to_i64 = |w: &[u32]| w.iter().map(|&x| x as i64).collect::<Vec<i64>>();
    let mut max_diff = 0f32;
    for (i, w) in eval.iter().take(4).enumerate() {
        let input = to_i64(&w[..s]);
        let t = Tensor::from_vec(input.clone(), (1, s), &Device::Cpu)?;
        let logits = tensor_data(&m.logits(&t)?)?;
        Array::i64(vec![1, s], input.clone()).write_npy(&out.join(format!("golden/input_{i}.npy")))?;
        Array::f32(vec![1, s, v], logits.clone()).write_npy(&out.join(format!("golden/output_{i}.npy")))?;
        let (_, got) = run_tract_i64(onnx, &input, &[1, s])?;
        for (a, b) in logits.iter().zip(&got) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    let rows: Vec<i64> = eval.iter().take(20).flat_map(|w| to_i64(w)).collect();
    let n_rows = rows.len() / (s + 1);
    Array::i64(vec![n_rows, s + 1], rows).write_npy(&out.join("heldout.npy"))?;
    let mut rng = SplitMix64::new(seed ^ 0xca11b);
    for i in 0..8 {
        let o = rng.below(train.len() - s);
        let calib = to_i64(&train[o..o + s]);
        Array::i64(vec![1, s], calib).write_npy(&out.join(format!("calib/input_{i}.npy")))?;
    }
    Ok(max_diff)
}
