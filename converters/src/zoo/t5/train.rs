//! Training the zoo T5 prefix-LM on the text-to-text task and writing its artefacts.
//!
//! ```no_run
//! use mote_converters::zoo::t5::{train_t5, write_t5_card, BUDGET};
//! let out = std::path::Path::new("models/t5");
//! let report = train_t5(out, &BUDGET)?;
//! write_t5_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::task::{self, Example, Task, END, PROMPT_LEN, VOCAB};
use super::{ids_batch, T5Config, INPUT_NAMES, T5};
use crate::array::Array;
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::seq2seq::artefacts;
use crate::zoo::seq2seq::train::{
    answer_loss, greedy_rows, read_report, to_i64, train_and_score, Accuracy, TrainOptions,
};
use crate::zoo::seq2seq::TaskExample;

/// The real zoo budget.
pub const BUDGET: TrainOptions = TrainOptions {
    steps: 2000,
    batch_size: 32,
    lr: 3e-3,
    warmup: 100,
    weight_decay: 0.05,
    seed: 42,
    eval_examples: 400,
    quiet: false,
};

/// What training measured; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct T5Report {
    /// Always `"t5"`.
    pub family: String,
    /// Architecture.
    pub config: T5Config,
    /// Training settings.
    pub options: TrainOptions,
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
        read_report(dir)
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
    answer_loss(&m.logits(&ids_batch(&inputs)?, &vec![PROMPT_LEN; batch.len()])?, targets, rows)
}

/// Greedy answers (without the end marker) for a batch of examples, decoded in candle.
pub fn greedy(m: &T5, examples: &[Example]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for chunk in examples.chunks(64) {
        let prompts: Vec<Vec<u32>> =
            chunk.iter().map(|e| task::encode(&e.prompt()).context("prompt outside vocab")).collect::<Result<_>>()?;
        let answers = greedy_rows(prompts, task::MAX_LEN + 1, END, |rows| {
            m.logits(&ids_batch(rows)?, &vec![PROMPT_LEN; rows.len()])
        })?;
        out.extend(answers.iter().map(|a| task::decode(a)));
    }
    Ok(out)
}

/// Trains the zoo T5 and writes `model.onnx`, `golden/` and `calib/` to `out_dir`.
pub fn train_t5(out_dir: &Path, opts: &TrainOptions) -> Result<T5Report> {
    let cfg = T5Config::new(VOCAB.chars().count());
    let m = T5::new(cfg, opts.seed)?;
    let t = train_and_score(m.params(), "t5", opts, |b| batch_loss(&m, b), |h| greedy(&m, h))?;
    let per_task = Task::ALL
        .iter()
        .map(|&kind| {
            let (ex, outs): (Vec<Example>, Vec<String>) = (t.held.iter().zip(&t.answers))
                .filter(|(e, _)| e.task == kind)
                .map(|(e, o)| (e.clone(), o.clone()))
                .unzip();
            (kind.word().to_string(), task::score(&ex, &outs).into())
        })
        .collect();

    let onnx = m.export_onnx(VOCAB, PROMPT_LEN)?;
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &m, &onnx, opts)?;
    Ok(T5Report {
        family: "t5".into(),
        config: cfg,
        options: opts.clone(),
        vocab: VOCAB.into(),
        prompt_len: PROMPT_LEN,
        params: m.params().count(),
        train_seconds: t.train_seconds,
        final_train_loss: t.final_train_loss,
        loss_curve: t.loss_curve,
        heldout_examples: t.held.len(),
        model: t.model,
        per_task,
        copy_baseline: t.copy_baseline,
        samples: t.samples,
        onnx_vs_candle_max_abs,
    })
}

/// Writes the ONNX model, golden logits and calibration inputs; returns tract vs candle.
fn write_artefacts(out: &Path, m: &T5, onnx: &[u8], opts: &TrainOptions) -> Result<f32> {
    let s = m.config().max_seq;
    let v = m.config().vocab;
    let path = artefacts::start(out, onnx)?;
    let prefix = Array::i64(vec![1], vec![PROMPT_LEN as i64]);
    let mut max_diff = 0f32;
    for (i, e) in Example::goldens().iter().enumerate() {
        let ids = sequence(e, s)?;
        let logits = Array::f32(vec![1, s, v], tensor_data(&m.logits(&super::ids_row(&ids)?, &[PROMPT_LEN])?)?);
        let inputs = [Array::i64(vec![1, s], to_i64(&ids)), prefix.clone()];
        max_diff = max_diff.max(artefacts::write_golden(out, &path, i, &INPUT_NAMES, &inputs, &logits)?);
    }
    let mut r = SplitMix64::new(opts.seed ^ 0xca11b);
    for (i, e) in Example::calibration().iter().enumerate() {
        // Calibration sees prompts with full answers and with partial ones (as when decoding).
        let mut ids = sequence(e, s)?;
        let keep = PROMPT_LEN + r.below(e.answer().chars().count() + 1);
        if i % 2 == 1 {
            ids[keep..].iter_mut().for_each(|x| *x = 0);
        }
        artefacts::write_calib(out, i, &INPUT_NAMES, &[Array::i64(vec![1, s], to_i64(&ids)), prefix.clone()])?;
    }
    Ok(max_diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_writes_artefacts() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_t5_{}", std::process::id()));
        let opts = TrainOptions { steps: 3, batch_size: 4, warmup: 1, eval_examples: 8, quiet: true, ..BUDGET };
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
