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

use anyhow::Result;
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::{Gpt, GptConfig};
use crate::zoo::corpus::Vocab;
use crate::zoo::lm_eval::{agreement, baselines, corpus_ids, eval_windows, ids_tensor, samples, sums, write_artefacts};
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{random_windows, schedule_of, Curve, Trainer};

pub use crate::zoo::lm_eval::greedy;

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

/// Trains the zoo GPT and writes `model.onnx`, `golden/`, `heldout.npy` and `calib/` to
/// `out_dir`.
pub fn train_gpt(out_dir: &Path, opts: &GptTrainOptions) -> Result<GptReport> {
    let vocab = Vocab::standard();
    let (train_ids, held_ids) = corpus_ids(&vocab, opts.train_chars, opts.heldout_chars)?;
    let cfg = GptConfig::new(vocab.len());
    let win = cfg.max_seq + 1;
    let gpt = Gpt::new(cfg, opts.seed)?;

    let (train_seconds, final_train_loss, loss_curve) = train_loop(&gpt, &train_ids, opts)?;

    let eval = eval_windows(&held_ids, win, opts.eval_windows);
    let heldout_loss = mean_nll(&gpt, &eval)?;
    let (unigram_loss, bigram_loss) = baselines(&train_ids, &eval, vocab.len());
    let (agreement_accuracy, agreement_probes) = agreement(&gpt, &vocab)?;
    let (sum_accuracy, sum_probes) = sums(&gpt, &vocab)?;
    let samples = samples(&gpt, &vocab)?;

    let onnx = gpt.export_onnx(&vocab.as_string())?;
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &gpt, &onnx, &eval, &train_ids, opts.seed)?;

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

/// Cross-entropy of next-char prediction over `(inputs, targets)` windows.
fn batch_loss(gpt: &Gpt, windows: &[&[u32]]) -> candle_core::Result<Tensor> {
    let s = windows[0].len() - 1;
    let inputs: Vec<&[u32]> = windows.iter().map(|w| &w[..s]).collect();
    let targets: Vec<&[u32]> = windows.iter().map(|w| &w[1..]).collect();
    let logits = gpt.logits(&ids_tensor(&inputs)?)?;
    let v = logits.dim(D::Minus1)?;
    candle_nn::loss::cross_entropy(&logits.reshape((windows.len() * s, v))?, &ids_tensor(&targets)?.flatten_all()?)
}

fn train_loop(gpt: &Gpt, train: &[u32], opts: &GptTrainOptions) -> Result<(f64, f64, Curve)> {
    let win = gpt.config().max_seq + 1;
    let mut t = Trainer::new(gpt.params(), "gpt", schedule_of!(opts))?;
    let mut rng = SplitMix64::new(opts.seed ^ 0xba7c_0000);
    for step in 0..opts.steps {
        let lr = t.set_lr(step);
        let batch = random_windows(&mut rng, train, win, opts.batch_size);
        let loss = batch_loss(gpt, &batch)?;
        t.apply(&loss)?;
        t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    Ok(t.finish(""))
}

/// Mean next-char NLL (nats) over windows of `max_seq + 1` ids.
fn mean_nll(gpt: &Gpt, windows: &[&[u32]]) -> Result<f64> {
    let mut total = 0.0;
    for chunk in windows.chunks(32) {
        total += batch_loss(gpt, chunk)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
    }
    Ok(total / windows.len() as f64)
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
