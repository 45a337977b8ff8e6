//! Training the zoo T5 prefix-LM on the text-to-text task and writing its artefacts.
//!
//! ```no_run
//! use mote_converters::zoo::t5::{train_t5, write_t5_card, T5TrainOptions};
//! let out = std::path::Path::new("models/t5");
//! let report = train_t5(out, &T5TrainOptions::default())?;
//! write_t5_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::task::{self, Example, Task, PROMPT_LEN, VOCAB};
use super::{ids_batch, T5Config, T5};
use crate::array::Array;
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{schedule_of, Curve, Trainer};

/// Training budget and settings. `Default` is the real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct T5TrainOptions {
    /// Optimiser steps.
    pub steps: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay on weight matrices.
    pub weight_decay: f64,
    /// Seed for initialisation and the training stream.
    pub seed: u64,
    /// Held-out probes scored (from a fixed seed, tasks alternating).
    pub eval_examples: usize,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for T5TrainOptions {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 32,
            lr: 3e-3,
            warmup: 100,
            weight_decay: 0.05,
            seed: 42,
            eval_examples: 400,
            quiet: false,
        }
    }
}

/// Exact-match and token accuracy of greedy outputs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Accuracy {
    /// Fraction of answers reproduced exactly.
    pub exact: f64,
    /// Fraction of answer characters right at their position.
    pub token: f64,
}

/// What training measured; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct T5Report {
    /// Always `"t5"`.
    pub family: String,
    /// Architecture.
    pub config: T5Config,
    /// Training settings.
    pub options: T5TrainOptions,
    /// Vocabulary in id order.
    pub vocab: String,
    /// Fixed prompt (prefix) length.
    pub prompt_len: usize,
    /// Trainable scalars.
    pub params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training loss at the end (nats per answer char).
    pub final_train_loss: f64,
    /// `(step, smoothed train loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Held-out probes scored.
    pub heldout_examples: usize,
    /// Greedy outputs of the candle model (f32), all tasks.
    pub model: Accuracy,
    /// Per task: (task word, candle accuracy).
    pub per_task: Vec<(String, Accuracy)>,
    /// Trivial baseline: answer = the source string copied.
    pub copy_baseline: Accuracy,
    /// Greedy samples `(prompt, output)`.
    pub samples: Vec<(String, String)>,
    /// Max |tract(model.onnx) − candle| over the golden logits.
    pub onnx_vs_candle_max_abs: f32,
}

impl T5Report {
    /// Reads `train_report.json` from a family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Ids of prompt + answer, padded with `_` (id 0) to `len`.
fn sequence(e: &Example, len: usize) -> Result<Vec<u32>> {
    let mut ids = task::encode(&format!("{}{}", e.prompt(), e.answer())).context("example outside vocab")?;
    ids.resize(len, 0);
    Ok(ids)
}

/// Mean cross-entropy over the answer characters (including the end marker).
fn batch_loss(m: &T5, batch: &[Example]) -> Result<Tensor> {
    let s = PROMPT_LEN + task::MAX_LEN; // inputs; targets are shifted by one
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    let mut rows = Vec::new();
    for (b, e) in batch.iter().enumerate() {
        let ids = sequence(e, s + 1)?;
        inputs.push(ids[..s].to_vec());
        targets.extend_from_slice(&ids[1..]);
        let n = e.answer().chars().count();
        rows.extend((PROMPT_LEN - 1..PROMPT_LEN - 1 + n).map(|t| (b * s + t) as u32));
    }
    let logits = m.logits(&ids_batch(&inputs)?, &vec![PROMPT_LEN; batch.len()])?;
    let v = logits.dim(D::Minus1)?;
    let n = rows.len();
    let rows = Tensor::from_vec(rows, n, &Device::Cpu)?;
    let flat = logits.reshape((batch.len() * s, v))?.index_select(&rows, 0)?;
    let t = Tensor::from_vec(targets, batch.len() * s, &Device::Cpu)?.index_select(&rows, 0)?;
    Ok(candle_nn::loss::cross_entropy(&flat, &t)?)
}

fn train_loop(m: &T5, o: &T5TrainOptions) -> Result<(f64, f64, Curve)> {
    let mut t = Trainer::new(m.params(), "t5", schedule_of!(o))?.with_smoothing(0.97, 0.03);
    for step in 0..o.steps {
        let lr = t.set_lr(step);
        let batch = task::examples(task::TRAIN_SEED ^ o.seed.wrapping_mul(0x9e37_79b9) ^ step as u64, o.batch_size);
        let loss = batch_loss(m, &batch)?;
        t.apply(&loss)?;
        t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    Ok(t.finish(""))
}

/// Greedy answers (without the end marker) for a batch of examples, decoded in candle.
pub fn greedy(m: &T5, examples: &[Example]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for chunk in examples.chunks(64) {
        let mut rows: Vec<Vec<u32>> =
            chunk.iter().map(|e| task::encode(&e.prompt()).context("prompt outside vocab")).collect::<Result<_>>()?;
        let mut done = vec![false; chunk.len()];
        let mut answers = vec![String::new(); chunk.len()];
        for _ in 0..=task::MAX_LEN {
            let logits = m.logits(&ids_batch(&rows)?, &vec![PROMPT_LEN; rows.len()])?;
            let last = logits.narrow(1, rows[0].len() - 1, 1)?.squeeze(1)?;
            let next: Vec<u32> = last.argmax(D::Minus1)?.to_vec1()?;
            for (i, &t) in next.iter().enumerate() {
                let c = task::decode(&[t]);
                if c == "." {
                    done[i] = true;
                }
                if !done[i] {
                    answers[i].push_str(&c);
                }
                rows[i].push(t);
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        out.extend(answers);
    }
    Ok(out)
}

fn accuracy(examples: &[Example], outputs: &[String]) -> Accuracy {
    let (exact, token) = task::score(examples, outputs);
    Accuracy { exact, token }
}

/// Trains the zoo T5 and writes `model.onnx`, `golden/` and `calib/` to `out_dir`.
pub fn train_t5(out_dir: &Path, opts: &T5TrainOptions) -> Result<T5Report> {
    let cfg = T5Config::new(VOCAB.chars().count());
    let m = T5::new(cfg, opts.seed)?;
    let (train_seconds, final_train_loss, loss_curve) = train_loop(&m, opts)?;

    let held = task::examples(task::HELDOUT_SEED, opts.eval_examples);
    let outputs = greedy(&m, &held)?;
    let copies: Vec<String> = held.iter().map(|e| e.src.clone()).collect();
    let per_task = Task::ALL
        .iter()
        .map(|&t| {
            let (ex, outs): (Vec<Example>, Vec<String>) =
                held.iter().zip(&outputs).filter(|(e, _)| e.task == t).map(|(e, o)| (e.clone(), o.clone())).unzip();
            (t.word().to_string(), accuracy(&ex, &outs))
        })
        .collect();
    let samples = held.iter().zip(&outputs).take(6).map(|(e, o)| (e.prompt(), o.clone())).collect();

    let onnx = m.export_onnx(VOCAB, PROMPT_LEN)?;
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &m, &onnx, opts)?;
    Ok(T5Report {
        family: "t5".into(),
        config: cfg,
        options: opts.clone(),
        vocab: VOCAB.into(),
        prompt_len: PROMPT_LEN,
        params: m.params().count(),
        train_seconds,
        final_train_loss,
        loss_curve,
        heldout_examples: held.len(),
        model: accuracy(&held, &outputs),
        per_task,
        copy_baseline: accuracy(&held, &copies),
        samples,
        onnx_vs_candle_max_abs,
    })
}

/// Writes the ONNX model, golden logits and calibration inputs; returns tract vs candle.
fn write_artefacts(out: &Path, m: &T5, onnx: &[u8], opts: &T5TrainOptions) -> Result<f32> {
    let s = m.config().max_seq;
    let v = m.config().vocab;
    for d in ["golden", "calib"] {
        let _ = std::fs::remove_dir_all(out.join(d));
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    std::fs::write(out.join("model.onnx"), onnx)?;
    let to_i64 = |w: &[u32]| w.iter().map(|&x| x as i64).collect::<Vec<i64>>();
    let prefix = Array::i64(vec![1], vec![PROMPT_LEN as i64]);
    let mut max_diff = 0f32;
    let path = out.join("model.onnx");
    for (i, e) in task::examples(task::HELDOUT_SEED ^ 0x601d, 4).iter().enumerate() {
        let ids = sequence(e, s)?;
        let logits = tensor_data(&m.logits(&super::ids_row(&ids)?, &[PROMPT_LEN])?)?;
        let tokens = Array::i64(vec![1, s], to_i64(&ids));
        tokens.write_npy(&out.join(format!("golden/g{i}.tokens.npy")))?;
        prefix.write_npy(&out.join(format!("golden/g{i}.prefix_len.npy")))?;
        Array::f32(vec![1, s, v], logits.clone()).write_npy(&out.join(format!("golden/g{i}.logits.npy")))?;
        let got = crate::verify::tract_reference(&path, &[tokens, prefix.clone()])?.remove(0).to_f32();
        max_diff = max_diff.max(crate::family::max_abs(&logits, &got));
    }
    let mut r = SplitMix64::new(opts.seed ^ 0xca11b);
    for (i, e) in task::examples(task::TRAIN_SEED ^ 0xca11b, 8).iter().enumerate() {
        // Calibration sees prompts with full answers and with partial ones (as when decoding).
        let mut ids = sequence(e, s)?;
        let keep = PROMPT_LEN + r.below(e.answer().chars().count() + 1);
        if i % 2 == 1 {
            ids[keep..].iter_mut().for_each(|x| *x = 0);
        }
        Array::i64(vec![1, s], to_i64(&ids)).write_npy(&out.join(format!("calib/s{i}.tokens.npy")))?;
        prefix.write_npy(&out.join(format!("calib/s{i}.prefix_len.npy")))?;
    }
    Ok(max_diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_writes_artefacts() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_t5_{}", std::process::id()));
        let opts =
            T5TrainOptions { steps: 3, batch_size: 4, warmup: 1, eval_examples: 8, quiet: true, ..Default::default() };
        let r = train_t5(&dir, &opts)?;
        assert!(r.final_train_loss.is_finite());
        assert!(r.onnx_vs_candle_max_abs < 1e-4, "{}", r.onnx_vs_candle_max_abs);
        assert!(r.copy_baseline.token > 0.0 && r.copy_baseline.exact < 0.5, "{:?}", r.copy_baseline);
        for f in ["model.onnx", "golden/g3.tokens.npy", "golden/g3.logits.npy", "calib/s7.prefix_len.npy"] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        super::super::write_t5_card(&dir, &r, "## extra\n")?;
        assert!(std::fs::read_to_string(dir.join("card.md"))?.contains("## extra"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
