//! Training a sequence-to-sequence family: its budget ([`TrainOptions`]), the loop over fresh
//! procedural batches followed by the held-out evaluation in candle ([`train_and_score`]), the
//! cross-entropy on the answer positions ([`answer_loss`]), greedy decoding in candle
//! ([`greedy_rows`]), the accuracy the training report records ([`Accuracy`]) and the report
//! file itself.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, D};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::TaskExample;
use crate::zoo::layers::Params;
use crate::zoo::trainer::{schedule_of, Curve, Trainer};

/// Training budget and settings. Each family's `BUDGET` is its real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
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

impl TrainOptions {
    /// These options with the step count and the seed replaced where given.
    pub fn with_overrides(self, steps: Option<usize>, seed: Option<u64>) -> Self {
        Self { steps: steps.unwrap_or(self.steps), seed: seed.unwrap_or(self.seed), ..self }
    }
}

/// Exact-match and token accuracy of greedy answers.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Accuracy {
    /// Fraction of answers reproduced exactly (the whole answer, the end marker in place).
    pub exact: f64,
    /// Fraction of answer tokens right at their position.
    pub token: f64,
}

impl From<(f64, f64)> for Accuracy {
    /// `(exact, token)` as a task's `score` returns them.
    fn from((exact, token): (f64, f64)) -> Self {
        Self { exact, token }
    }
}

/// What training and the held-out evaluation in candle measured.
pub struct Trained<E: TaskExample> {
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training loss at the end.
    pub final_train_loss: f64,
    /// `(step, smoothed train loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// The held-out examples.
    pub held: Vec<E>,
    /// The model's greedy answers to them.
    pub answers: Vec<E::Answer>,
    /// Accuracy of those answers.
    pub model: Accuracy,
    /// Accuracy of the copy baseline.
    pub copy_baseline: Accuracy,
    /// The first held-out examples with the model's answers, as the card shows them.
    pub samples: Vec<(String, String)>,
}

/// Trains `params` for `o.steps` steps (the progress bar labelled `label`), step `k` minimising
/// `loss` on a fresh batch of `o.batch_size` examples drawn from the seed
/// `TRAIN_SEED ^ o.seed · 0x9e3779b9 ^ k`; then answers `o.eval_examples` held-out examples with
/// `greedy` and scores them and the copy baseline.
pub fn train_and_score<E: TaskExample>(
    params: &Params,
    label: &str,
    o: &TrainOptions,
    loss: impl Fn(&[E]) -> Result<Tensor>,
    greedy: impl Fn(&[E]) -> Result<Vec<E::Answer>>,
) -> Result<Trained<E>> {
    let (train_seconds, final_train_loss, loss_curve) = train_loop(params, label, o, loss)?;
    let held = E::examples(E::HELDOUT_SEED, o.eval_examples);
    let answers = greedy(&held)?;
    let (model, copy_baseline) = heldout_accuracy(&held, &answers);
    let samples = super::samples(&held, &answers);
    Ok(Trained { train_seconds, final_train_loss, loss_curve, held, answers, model, copy_baseline, samples })
}

/// The training loop of [`train_and_score`]; returns the wall seconds, the final smoothed loss
/// and the loss curve.
fn train_loop<E: TaskExample>(
    params: &Params,
    label: &str,
    o: &TrainOptions,
    loss: impl Fn(&[E]) -> Result<Tensor>,
) -> Result<(f64, f64, Curve)> {
    let mut t = Trainer::new(params, label, schedule_of!(o))?.with_smoothing(0.97, 0.03);
    for step in 0..o.steps {
        let lr = t.set_lr(step);
        let batch = E::examples(E::TRAIN_SEED ^ o.seed.wrapping_mul(0x9e37_79b9) ^ step as u64, o.batch_size);
        let loss = loss(&batch)?;
        t.apply(&loss)?;
        t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    Ok(t.finish(""))
}

/// The held-out accuracy of the candle model's greedy `answers` and of the copy baseline.
fn heldout_accuracy<E: TaskExample>(held: &[E], answers: &[E::Answer]) -> (Accuracy, Accuracy) {
    (E::score(held, answers).into(), E::score(held, &super::copies(held)).into())
}

/// Mean cross-entropy of `logits [B, T, V]` against `labels` (`B·T` ids, row-major) over the
/// flat positions `rows` only (the answer positions).
pub fn answer_loss(logits: &Tensor, labels: Vec<u32>, rows: Vec<u32>) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let n = rows.len();
    let rows = Tensor::from_vec(rows, n, &Device::Cpu)?;
    let flat = logits.reshape((b * t, v))?.index_select(&rows, 0)?;
    let labels = Tensor::from_vec(labels, b * t, &Device::Cpu)?.index_select(&rows, 0)?;
    Ok(candle_nn::loss::cross_entropy(&flat, &labels)?)
}

/// Greedy decoding in candle of a batch of rows of equal length: at most `max_new` times,
/// `logits(rows)` (`[B, len, V]`) gives the next id of every row (the argmax of its last
/// position), which is appended; a row's answer ends at its first `stop`, and decoding ends
/// when every row has stopped. Returns each row's generated ids before `stop`.
pub fn greedy_rows(
    mut rows: Vec<Vec<u32>>,
    max_new: usize,
    stop: u32,
    logits: impl Fn(&[Vec<u32>]) -> candle_core::Result<Tensor>,
) -> Result<Vec<Vec<u32>>> {
    let mut done = vec![false; rows.len()];
    let mut answers = vec![Vec::new(); rows.len()];
    for _ in 0..max_new {
        let logits = logits(&rows)?;
        let last = logits.narrow(1, rows[0].len() - 1, 1)?.squeeze(1)?;
        let next: Vec<u32> = last.argmax(D::Minus1)?.to_vec1()?;
        for (i, &t) in next.iter().enumerate() {
            done[i] |= t == stop;
            if !done[i] {
                answers[i].push(t);
            }
            rows[i].push(t);
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    Ok(answers)
}

/// The line `mote zoo train` prints after training: the wall time, the held-out exact match of
/// the `model` against the copy baseline, and its token accuracy.
pub fn trained_line(train_seconds: f64, model: Accuracy, copy_baseline: Accuracy) -> String {
    format!(
        "trained in {:.0} s: held-out exact match {:.1}% (copy baseline {:.1}%), token accuracy {:.1}%",
        train_seconds,
        100.0 * model.exact,
        100.0 * copy_baseline.exact,
        100.0 * model.token
    )
}

/// Reads `train_report.json` from a family folder.
pub fn read_report<R: DeserializeOwned>(dir: &Path) -> Result<R> {
    let p = dir.join("train_report.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Writes `report` as `train_report.json` into a family folder.
pub fn write_report<R: Serialize>(dir: &Path, report: &R) -> Result<()> {
    std::fs::write(dir.join("train_report.json"), serde_json::to_string_pretty(report)?)?;
    Ok(())
}

/// Token ids as the int64 values of an ONNX input.
pub fn to_i64(ids: &[u32]) -> Vec<i64> {
    ids.iter().map(|&x| x as i64).collect()
}
