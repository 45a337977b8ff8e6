//! Training the zoo GPT on the procedural corpus and writing its artefacts.
//!
//! ```no_run
//! use mote_converters::zoo::gpt::{train_gpt, write_gpt_card, GptTrainOptions};
//! let out = std::path::Path::new("models/gpt");
//! let report = train_gpt(out, &GptTrainOptions::default())?;
//! write_gpt_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::{Gpt, GptConfig};
use crate::array::Array;
use crate::zoo::corpus::{self, Vocab, SEPARATOR};
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::tract_run::run_tract_i64;

/// Training budget and settings. `Default` is the real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GptTrainOptions {
    /// Optimiser steps.
    pub steps: usize,
    /// Windows per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay on weight matrices (not on biases, norms or embeddings).
    pub weight_decay: f64,
    /// Seed for initialisation and batch sampling (the corpus seeds are fixed).
    pub seed: u64,
    /// Characters in the training stream.
    pub train_chars: usize,
    /// Characters in the held-out stream.
    pub heldout_chars: usize,
    /// Held-out windows used for the reported loss.
    pub eval_windows: usize,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for GptTrainOptions {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch_size: 16,
            lr: 3e-3,
            warmup: 100,
            weight_decay: 0.1,
            seed: 42,
            train_chars: 1_000_000,
            heldout_chars: 100_000,
            eval_windows: 512,
            quiet: false,
        }
    }
}

/// A generation from a fixed prompt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// The prompt (fed after a line separator).
    pub prompt: String,
    /// The generated continuation (up to the next separator).
    pub completion: String,
}

/// What training measured; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GptReport {
    /// Always `"gpt"`.
    pub family: String,
    /// Architecture.
    pub config: GptConfig,
    /// Training settings.
    pub options: GptTrainOptions,
    /// Vocabulary in id order.
    pub vocab: String,
    /// Trainable scalars.
    pub params: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training loss at the end (nats/char).
    pub final_train_loss: f64,
    /// `(step, smoothed train loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Held-out characters scored.
    pub heldout_tokens: usize,
    /// Held-out cross-entropy of the model (nats/char).
    pub heldout_loss: f64,
    /// Unigram baseline: train char distribution scored on the same held-out chars.
    pub unigram_loss: f64,
    /// Bigram baseline (add-one smoothed train counts) on the same held-out chars.
    pub bigram_loss: f64,
    /// Fraction of agreement probes where the correct verb form is more likely.
    pub agreement_accuracy: f64,
    /// Agreement probes scored.
    pub agreement_probes: usize,
    /// Fraction of `a+b=` prompts completed exactly (greedy).
    pub sum_accuracy: f64,
    /// Sum prompts scored.
    pub sum_probes: usize,
    /// How samples were drawn.
    pub sampling: String,
    /// Generations from fixed prompts.
    pub samples: Vec<Sample>,
    /// Max |tract(model.onnx) − candle| over the golden logits.
    pub onnx_vs_candle_max_abs: f32,
}

const SAMPLE_PROMPTS: [&str; 3] = ["the cat ", "two dogs that ", "23+19="];

/// Trains the zoo GPT and writes `model.onnx`, `golden/`, `heldout.npy` and `calib/` to
/// `out_dir`.
pub fn train_gpt(out_dir: &Path, opts: &GptTrainOptions) -> Result<GptReport> {
    let vocab = Vocab::standard();
    let train_ids =
        vocab.encode(&corpus::generate(corpus::TRAIN_SEED, opts.train_chars)).context("train corpus outside vocab")?;
    let held_ids = vocab
        .encode(&corpus::generate(corpus::HELDOUT_SEED, opts.heldout_chars))
        .context("held-out corpus outside vocab")?;
    let cfg = GptConfig::new(vocab.len());
    let win = cfg.max_seq + 1;
    let gpt = Gpt::new(cfg, opts.seed)?;

    let (train_seconds, final_train_loss, loss_curve) = train_loop(&gpt, &train_ids, opts)?;

    // Held-out windows at evenly spaced offsets.
    let stride = (held_ids.len() - win) / opts.eval_windows.max(1);
    let eval: Vec<&[u32]> = (0..opts.eval_windows).map(|i| &held_ids[i * stride..i * stride + win]).collect();
    let heldout_loss = mean_nll(&gpt, &eval)?;
    let (unigram_loss, bigram_loss) = baselines(&train_ids, &eval, vocab.len());
    let (agreement_accuracy, agreement_probes) = agreement(&gpt, &vocab)?;
    let (sum_accuracy, sum_probes) = sums(&gpt, &vocab)?;
    let samples = SAMPLE_PROMPTS
        .iter()
        .map(|p| {
            let completion = greedy(&gpt, &vocab, &format!("{SEPARATOR}{p}"), 48)?;
            Ok(Sample { prompt: p.to_string(), completion })
        })
        .collect::<Result<Vec<_>>>()?;

    let onnx = gpt.export_onnx(&vocab.as_string())?;
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &gpt, &onnx, &eval, &train_ids, opts)?;

    Ok(GptReport {
        family: "gpt".into(),
        config: cfg,
        options: opts.clone(),
        vocab: vocab.as_string(),
        params: gpt.params().count(),
        steps: opts.steps,
        train_seconds,
        final_train_loss,
        loss_curve,
        heldout_tokens: eval.len() * cfg.max_seq,
        heldout_loss,
        unigram_loss,
        bigram_loss,
        agreement_accuracy,
        agreement_probes,
        sum_accuracy,
        sum_probes,
        sampling: "greedy (argmax), prompt preceded by the line separator, stops at the next \
                   separator or after 48 chars"
            .into(),
        samples,
        onnx_vs_candle_max_abs,
    })
}

fn ids_tensor(rows: &[&[u32]]) -> candle_core::Result<Tensor> {
    let s = rows.first().map_or(0, |r| r.len());
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), s), &Device::Cpu)
}

/// Cross-entropy of next-char prediction over `(inputs, targets)` windows.
fn batch_loss(gpt: &Gpt, windows: &[&[u32]]) -> candle_core::Result<Tensor> {
    let s = windows[0].len() - 1;
    let inputs: Vec<&[u32]> = windows.iter().map(|w| &w[..s]).collect();
    let targets: Vec<&[u32]> = windows.iter().map(|w| &w[1..]).collect();
    let logits = gpt.logits(&ids_tensor(&inputs)?)?;
    let v = logits.dim(D::Minus1)?;
    candle_nn::loss::cross_entropy(&logits.reshape((windows.len() * s, v))?, &ids_tensor(&targets)?.flatten_all()?)
}

fn lr_at(step: usize, opts: &GptTrainOptions) -> f64 {
    if step < opts.warmup {
        return opts.lr * (step + 1) as f64 / opts.warmup as f64;
    }
    let t = (step - opts.warmup) as f64 / (opts.steps - opts.warmup).max(1) as f64;
    opts.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

type Curve = Vec<(usize, f64)>;

fn train_loop(gpt: &Gpt, train: &[u32], opts: &GptTrainOptions) -> Result<(f64, f64, Curve)> {
    let win = gpt.config().max_seq + 1;
    let adam =
        |vars, wd| AdamW::new(vars, ParamsAdamW { lr: opts.lr, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: wd });
    let mut opt_decay = adam(gpt.params().vars(true), opts.weight_decay)?;
    let mut opt_plain = adam(gpt.params().vars(false), 0.0)?;
    let pb = if opts.quiet { ProgressBar::hidden() } else { ProgressBar::new(opts.steps as u64) };
    pb.set_style(ProgressStyle::with_template("gpt {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")?);
    let mut rng = SplitMix64::new(opts.seed ^ 0xba7c_0000);
    let mut ema = f64::NAN;
    let mut curve = Vec::new();
    let every = (opts.steps / 20).max(1);
    let start = Instant::now();
    for step in 0..opts.steps {
        let lr = lr_at(step, opts);
        opt_decay.set_learning_rate(lr);
        opt_plain.set_learning_rate(lr);
        let batch: Vec<&[u32]> = (0..opts.batch_size)
            .map(|_| {
                let o = rng.below(train.len() - win);
                &train[o..o + win]
            })
            .collect();
        let loss = batch_loss(gpt, &batch)?;
        let grads = loss.backward()?;
        opt_decay.step(&grads)?;
        opt_plain.step(&grads)?;
        let l = loss.to_scalar::<f32>()? as f64;
        ema = if ema.is_nan() { l } else { 0.98 * ema + 0.02 * l };
        if (step + 1) % every == 0 || step + 1 == opts.steps {
            curve.push((step + 1, ema));
        }
        pb.set_message(format!("loss {ema:.3} lr {lr:.2e}"));
        pb.inc(1);
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_with_message(format!("loss {ema:.3} in {secs:.0}s"));
    Ok((secs, ema, curve))
}

/// Mean next-char NLL (nats) over windows of `max_seq + 1` ids.
fn mean_nll(gpt: &Gpt, windows: &[&[u32]]) -> Result<f64> {
    let mut total = 0.0;
    for chunk in windows.chunks(32) {
        total += batch_loss(gpt, chunk)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
    }
    Ok(total / windows.len() as f64)
}

/// (unigram, bigram) cross-entropy of train statistics on the windows' targets.
fn baselines(train: &[u32], windows: &[&[u32]], v: usize) -> (f64, f64) {
    let mut uni = vec![1.0f64; v];
    let mut bi = vec![1.0f64; v * v];
    for w in train.windows(2) {
        uni[w[1] as usize] += 1.0;
        bi[w[0] as usize * v + w[1] as usize] += 1.0;
    }
    let uni_total: f64 = uni.iter().sum();
    let row_totals: Vec<f64> = bi.chunks(v).map(|r| r.iter().sum()).collect();
    let (mut u, mut b, mut n) = (0.0, 0.0, 0.0);
    for w in windows {
        for pair in w.windows(2) {
            let (p, c) = (pair[0] as usize, pair[1] as usize);
            u -= (uni[c] / uni_total).ln();
            b -= (bi[p * v + c] / row_totals[p]).ln();
            n += 1.0;
        }
    }
    (u / n, b / n)
}

/// Log-probability of `cont` after `prefix` (context truncated on the left to fit).
fn logprob(gpt: &Gpt, vocab: &Vocab, prefix: &str, cont: &str) -> Result<f64> {
    let p = vocab.encode(prefix).context("prefix outside vocab")?;
    let c = vocab.encode(cont).context("continuation outside vocab")?;
    let mut ids: Vec<u32> = p.iter().chain(&c).copied().collect();
    ids.pop();
    let skip = ids.len().saturating_sub(gpt.config().max_seq);
    let ids = &ids[skip..];
    let logits = gpt.logits(&ids_tensor(&[ids])?)?.squeeze(0)?;
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
    let first = ids.len() - c.len();
    Ok(c.iter().enumerate().map(|(i, &t)| lp[first + i][t as usize] as f64).sum())
}

fn agreement(gpt: &Gpt, vocab: &Vocab) -> Result<(f64, usize)> {
    let probes = corpus::agreement_probes(corpus::PROBE_SEED, 200);
    let mut ok = 0;
    for p in &probes {
        if logprob(gpt, vocab, &p.prefix, &p.good)? > logprob(gpt, vocab, &p.prefix, &p.bad)? {
            ok += 1;
        }
    }
    Ok((ok as f64 / probes.len() as f64, probes.len()))
}

fn sums(gpt: &Gpt, vocab: &Vocab) -> Result<(f64, usize)> {
    let probes = corpus::sum_probes(corpus::PROBE_SEED, 100);
    let mut ok = 0;
    for (prompt, answer) in &probes {
        let mut out = greedy(gpt, vocab, prompt, 4)?;
        if let Some(i) = out.find(';') {
            out.truncate(i + 1);
        }
        ok += usize::from(&out == answer);
    }
    Ok((ok as f64 / probes.len() as f64, probes.len()))
}

/// Greedy continuation of `prompt`, stopping at the separator or after `max_new` chars.
pub fn greedy(gpt: &Gpt, vocab: &Vocab, prompt: &str, max_new: usize) -> Result<String> {
    let mut ids = vocab.encode(prompt).context("prompt outside vocab")?;
    let mut out = Vec::new();
    for _ in 0..max_new {
        let skip = ids.len().saturating_sub(gpt.config().max_seq);
        let logits = gpt.logits(&ids_tensor(&[&ids[skip..]])?)?.squeeze(0)?;
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

/// Writes the ONNX model and the `.npy` sets; returns the tract-vs-candle golden difference.
fn write_artefacts(
    out: &Path,
    gpt: &Gpt,
    onnx: &[u8],
    eval: &[&[u32]],
    train: &[u32],
    opts: &GptTrainOptions,
) -> Result<f32> {
    let s = gpt.config().max_seq;
    let v = gpt.config().vocab;
    for d in ["golden", "calib"] {
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    std::fs::write(out.join("model.onnx"), onnx)?;
    let to_i64 = |w: &[u32]| w.iter().map(|&x| x as i64).collect::<Vec<i64>>();
    let mut max_diff = 0f32;
    for (i, w) in eval.iter().take(4).enumerate() {
        let input = to_i64(&w[..s]);
        let t = Tensor::from_vec(input.clone(), (1, s), &Device::Cpu)?;
        let logits = tensor_data(&gpt.logits(&t)?)?;
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
    let mut rng = SplitMix64::new(opts.seed ^ 0xca11b);
    for i in 0..8 {
        let o = rng.below(train.len() - s);
        let calib = to_i64(&train[o..o + s]);
        Array::i64(vec![1, s], calib).write_npy(&out.join(format!("calib/input_{i}.npy")))?;
    }
    Ok(max_diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_writes_artefacts_and_card() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_gpt_{}", std::process::id()));
        let opts = GptTrainOptions {
            steps: 3,
            batch_size: 4,
            warmup: 1,
            train_chars: 20_000,
            heldout_chars: 5_000,
            eval_windows: 24,
            quiet: true,
            ..Default::default()
        };
        let r = train_gpt(&dir, &opts)?;
        assert!(r.heldout_loss.is_finite() && r.unigram_loss > r.bigram_loss);
        assert!(r.onnx_vs_candle_max_abs < 1e-4, "{}", r.onnx_vs_candle_max_abs);
        for f in ["model.onnx", "golden/input_3.npy", "golden/output_3.npy", "heldout.npy", "calib/input_7.npy"] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        let file = std::fs::File::open(dir.join("heldout.npy"))?;
        let npy = npyz::NpyFile::new(std::io::BufReader::new(file))?;
        assert_eq!(npy.shape(), &[20, 65]);
        super::super::write_gpt_card(&dir, &r, "## extra\n")?;
        let card = std::fs::read_to_string(dir.join("card.md"))?;
        assert!(card.contains("## extra") && card.contains("unigram"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
