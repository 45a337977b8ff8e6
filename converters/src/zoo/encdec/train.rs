//! Training the zoo encoder–decoder on sequence reversal and writing its artefacts.
//!
//! ```no_run
//! use mote_converters::zoo::encdec::{train_encdec, write_encdec_card, EncDecTrainOptions};
//! let out = std::path::Path::new("models/encdec");
//! let report = train_encdec(out, &EncDecTrainOptions::default())?;
//! write_encdec_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::task::{self, Example, EOS, SRC_LEN, TGT_LEN, VOCAB};
use super::{ids_batch, EncDec, EncDecConfig};
use crate::array::Array;
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{schedule_of, Curve, Trainer};

/// Training budget and settings. `Default` is the real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncDecTrainOptions {
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
    /// Held-out examples scored (from a fixed seed).
    pub eval_examples: usize,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for EncDecTrainOptions {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 48,
            lr: 2e-3,
            warmup: 100,
            weight_decay: 0.01,
            seed: 42,
            eval_examples: 300,
            quiet: false,
        }
    }
}

/// Exact-match and token accuracy of greedy outputs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Accuracy {
    /// Fraction of answers reproduced exactly (whole sequence, `EOS` in place).
    pub exact: f64,
    /// Fraction of answer tokens right at their position.
    pub token: f64,
}

/// What training measured; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncDecReport {
    /// Always `"encdec"`.
    pub family: String,
    /// Architecture.
    pub config: EncDecConfig,
    /// Training settings.
    pub options: EncDecTrainOptions,
    /// Vocabulary in id order (`_` pad, `^` BOS, `$` EOS, then the symbols).
    pub vocab: String,
    /// Trainable scalars.
    pub params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training loss at the end (nats per target token).
    pub final_train_loss: f64,
    /// `(step, smoothed train loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Held-out examples scored.
    pub heldout_examples: usize,
    /// Greedy outputs of the candle model (f32).
    pub model: Accuracy,
    /// Trivial baseline: the source copied unreversed.
    pub copy_baseline: Accuracy,
    /// Greedy samples `(source, output)` as characters.
    pub samples: Vec<(String, String)>,
    /// Max |tract(model.onnx) − candle| over the golden logits.
    pub onnx_vs_candle_max_abs: f32,
}

impl EncDecReport {
    /// Reads `train_report.json` from a family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// `(src, src_mask)` tensors `[B, SRC_LEN]` of a batch.
fn sources(batch: &[Example]) -> Result<(Tensor, Tensor)> {
    let (ids, masks): (Vec<Vec<u32>>, Vec<Vec<u32>>) = batch.iter().map(|e| e.src_row()).unzip();
    Ok((ids_batch(&ids)?, ids_batch(&masks)?))
}

/// Mean cross-entropy over the target tokens up to and including `EOS`.
fn batch_loss(m: &EncDec, batch: &[Example]) -> Result<Tensor> {
    let t = TGT_LEN - 1;
    let (src, mask) = sources(batch)?;
    let mut inputs = Vec::new();
    let mut labels = Vec::new();
    let mut rows = Vec::new();
    for (b, e) in batch.iter().enumerate() {
        inputs.push(e.decoder_input(t));
        let mut l = e.target()[1..].to_vec();
        rows.extend((0..l.len()).map(|k| (b * t + k) as u32));
        l.resize(t, task::PAD);
        labels.extend(l);
    }
    let logits = m.logits(&src, &mask, &ids_batch(&inputs)?)?;
    let v = logits.dim(D::Minus1)?;
    let n = rows.len();
    let rows = Tensor::from_vec(rows, n, &Device::Cpu)?;
    let flat = logits.reshape((batch.len() * t, v))?.index_select(&rows, 0)?;
    let labels = Tensor::from_vec(labels, batch.len() * t, &Device::Cpu)?.index_select(&rows, 0)?;
    Ok(candle_nn::loss::cross_entropy(&flat, &labels)?)
}

fn train_loop(m: &EncDec, o: &EncDecTrainOptions) -> Result<(f64, f64, Curve)> {
    let mut t = Trainer::new(m.params(), "encdec", schedule_of!(o))?.with_smoothing(0.97, 0.03);
    for step in 0..o.steps {
        let lr = t.set_lr(step);
        let batch = task::examples(task::TRAIN_SEED ^ o.seed.wrapping_mul(0x9e37_79b9) ^ step as u64, o.batch_size);
        let loss = batch_loss(m, &batch)?;
        t.apply(&loss)?;
        t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    Ok(t.finish(""))
}

/// Greedy outputs (ids before `EOS`, at most `TGT_LEN - 1` tokens) decoded in candle.
pub fn greedy(m: &EncDec, examples: &[Example]) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::new();
    for chunk in examples.chunks(100) {
        let (src, mask) = sources(chunk)?;
        let mem = m.encode(&src, &mask)?;
        let mut rows = vec![vec![task::BOS]; chunk.len()];
        let mut done = vec![false; chunk.len()];
        let mut answers = vec![Vec::new(); chunk.len()];
        for _ in 0..TGT_LEN - 1 {
            let logits = m.decode(&ids_batch(&rows)?, &mem, &mask)?;
            let last = logits.narrow(1, rows[0].len() - 1, 1)?.squeeze(1)?;
            let next: Vec<u32> = last.argmax(D::Minus1)?.to_vec1()?;
            for (i, &t) in next.iter().enumerate() {
                done[i] |= t == EOS;
                if !done[i] {
                    answers[i].push(t);
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

fn accuracy(examples: &[Example], outputs: &[Vec<u32>]) -> Accuracy {
    let (exact, token) = task::score(examples, outputs);
    Accuracy { exact, token }
}

/// Trains the zoo encoder–decoder and writes `model.onnx`, `golden/`, `calib/` and the
/// held-out set (`heldout.{src,src_mask,tgt}.npy`) to `out_dir`.
pub fn train_encdec(out_dir: &Path, opts: &EncDecTrainOptions) -> Result<EncDecReport> {
    let cfg = EncDecConfig::new(VOCAB.chars().count());
    let m = EncDec::new(cfg, opts.seed)?;
    let (train_seconds, final_train_loss, loss_curve) = train_loop(&m, opts)?;

    let held = task::examples(task::HELDOUT_SEED, opts.eval_examples);
    let outputs = greedy(&m, &held)?;
    let copies: Vec<Vec<u32>> = held.iter().map(|e| e.src.clone()).collect();
    let samples = held.iter().zip(&outputs).take(6).map(|(e, o)| (task::decode(&e.src), task::decode(o))).collect();

    let onnx = m.export_onnx(VOCAB)?;
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &m, &onnx, &held)?;
    Ok(EncDecReport {
        family: "encdec".into(),
        config: cfg,
        options: opts.clone(),
        vocab: VOCAB.into(),
        params: m.params().count(),
        train_seconds,
        final_train_loss,
        loss_curve,
        heldout_examples: held.len(),
        model: accuracy(&held, &outputs),
        copy_baseline: accuracy(&held, &copies),
        samples,
        onnx_vs_candle_max_abs,
    })
}

fn i64s(w: &[u32]) -> Vec<i64> {
    w.iter().map(|&x| x as i64).collect()
}

/// The three ONNX inputs of one example at the bounds: source, mask, `tgt` (the decoder
/// input, padded), each `[1, len]`.
pub fn example_inputs(e: &Example) -> [Array; 3] {
    let (src, mask) = e.src_row();
    [
        Array::i64(vec![1, SRC_LEN], i64s(&src)),
        Array::i64(vec![1, SRC_LEN], i64s(&mask)),
        Array::i64(vec![1, TGT_LEN], i64s(&e.decoder_input(TGT_LEN))),
    ]
}

/// Writes the ONNX model, golden logits, calibration inputs and the held-out set; returns
/// tract vs candle.
fn write_artefacts(out: &Path, m: &EncDec, onnx: &[u8], held: &[Example]) -> Result<f32> {
    let v = m.config().vocab;
    for d in ["golden", "calib"] {
        let _ = std::fs::remove_dir_all(out.join(d));
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    let path = out.join("model.onnx");
    std::fs::write(&path, onnx)?;
    let names = super::INPUT_NAMES;
    let mut max_diff = 0f32;
    for (i, e) in task::examples(task::HELDOUT_SEED ^ 0x601d, 4).iter().enumerate() {
        let inputs = example_inputs(e);
        let (src, mask) = sources(std::slice::from_ref(e))?;
        let tgt = ids_batch(&[e.decoder_input(TGT_LEN)])?;
        let logits = tensor_data(&m.logits(&src, &mask, &tgt)?)?;
        for (a, n) in inputs.iter().zip(names) {
            a.write_npy(&out.join(format!("golden/g{i}.{n}.npy")))?;
        }
        Array::f32(vec![1, TGT_LEN, v], logits.clone()).write_npy(&out.join(format!("golden/g{i}.logits.npy")))?;
        let got = crate::verify::tract_reference(&path, &inputs)?.remove(0).to_f32();
        max_diff = max_diff.max(crate::family::max_abs(&logits, &got));
    }
    let mut r = SplitMix64::new(0xca11b);
    for (i, e) in task::examples(task::TRAIN_SEED ^ 0xca11b, 8).iter().enumerate() {
        // Calibration sees full decoder inputs and partial ones (as when decoding greedily).
        let mut inputs = example_inputs(e);
        if i % 2 == 1 {
            let keep = 1 + r.below(e.src.len() + 1);
            if let crate::array::Data::I64(t) = &mut inputs[2].data {
                t[keep..].iter_mut().for_each(|x| *x = task::PAD as i64);
            }
        }
        for (a, n) in inputs.iter().zip(names) {
            a.write_npy(&out.join(format!("calib/s{i}.{n}.npy")))?;
        }
    }
    let n = held.len();
    let (src, mask): (Vec<Vec<u32>>, Vec<Vec<u32>>) = held.iter().map(|e| e.src_row()).unzip();
    let tgt: Vec<u32> = held
        .iter()
        .flat_map(|e| {
            let mut t = e.target();
            t.resize(TGT_LEN, task::PAD);
            t
        })
        .collect();
    Array::i64(vec![n, SRC_LEN], i64s(&src.concat())).write_npy(&out.join("heldout.src.npy"))?;
    Array::i64(vec![n, SRC_LEN], i64s(&mask.concat())).write_npy(&out.join("heldout.src_mask.npy"))?;
    Array::i64(vec![n, TGT_LEN], i64s(&tgt)).write_npy(&out.join("heldout.tgt.npy"))?;
    Ok(max_diff)
}

/// Reads the held-out set written by training (`heldout.src.npy` + `heldout.src_mask.npy`).
pub fn read_heldout(dir: &Path) -> Result<Vec<Example>> {
    let src = Array::read_npy(&dir.join("heldout.src.npy"))?;
    let mask = Array::read_npy(&dir.join("heldout.src_mask.npy"))?;
    let (crate::array::Data::I64(s), crate::array::Data::I64(k)) = (&src.data, &mask.data) else {
        anyhow::bail!("held-out arrays must be integers");
    };
    let w = *src.shape.last().context("held-out shape")?;
    Ok(s.chunks(w)
        .zip(k.chunks(w))
        .map(|(s, k)| Example { src: s.iter().zip(k).filter(|(_, &k)| k != 0).map(|(&s, _)| s as u32).collect() })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_writes_artefacts() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_encdec_{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let opts = EncDecTrainOptions {
            steps: 3,
            batch_size: 4,
            warmup: 1,
            eval_examples: 8,
            quiet: true,
            ..Default::default()
        };
        let r = train_encdec(&dir, &opts)?;
        assert!(r.final_train_loss.is_finite());
        assert!(r.onnx_vs_candle_max_abs < 1e-4, "{}", r.onnx_vs_candle_max_abs);
        assert!(r.copy_baseline.token > 0.0 && r.copy_baseline.exact < 0.5, "{:?}", r.copy_baseline);
        for f in ["model.onnx", "golden/g3.tgt.npy", "golden/g3.logits.npy", "calib/s7.src_mask.npy", "heldout.tgt.npy"]
        {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        assert_eq!(read_heldout(&dir)?, task::examples(task::HELDOUT_SEED, 8));
        super::super::write_encdec_card(&dir, &r, "## extra\n")?;
        assert!(std::fs::read_to_string(dir.join("card.md"))?.contains("## extra"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
