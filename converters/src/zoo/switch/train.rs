//! Training the zoo Switch Transformer on the GPT's procedural corpus and writing its
//! artefacts.
//!
//! The loss is next-character cross-entropy plus `aux_weight` times the mean over layers of
//! the Switch load-balancing loss `E · Σ_e f_e · P_e` (`f_e` the fraction of tokens routed to
//! expert `e`, `P_e` the mean router probability of `e`; 1 when balanced).
//!
//! ```no_run
//! use mote_converters::zoo::switch::{train_switch, write_switch_card, SwitchTrainOptions};
//! let out = std::path::Path::new("models/switch");
//! let report = train_switch(out, &SwitchTrainOptions::default())?;
//! write_switch_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::Result;
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::{Switch, SwitchConfig};
use crate::zoo::corpus::Vocab;
use crate::zoo::gpt::Sample;
use crate::zoo::lm_eval::{agreement, baselines, corpus_ids, eval_windows, ids_tensor, samples, write_artefacts};
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{random_windows, schedule_of, Curve, Trainer};

pub use crate::zoo::lm_eval::greedy;

/// Training budget and settings. `Default` is the real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchTrainOptions {
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
    /// Weight of the load-balancing loss (Switch uses 0.01).
    pub aux_weight: f64,
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

impl Default for SwitchTrainOptions {
    fn default() -> Self {
        Self {
            steps: 600,
            batch_size: 16,
            lr: 3e-3,
            warmup: 100,
            weight_decay: 0.1,
            aux_weight: 0.01,
            seed: 42,
            train_chars: 1_000_000,
            heldout_chars: 100_000,
            eval_windows: 512,
            quiet: false,
        }
    }
}

/// What training measured; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchReport {
    /// Always `"switch"`.
    pub family: String,
    /// Architecture.
    pub config: SwitchConfig,
    /// Training settings.
    pub options: SwitchTrainOptions,
    /// Vocabulary in id order.
    pub vocab: String,
    /// Trainable scalars.
    pub params: usize,
    /// Trainable scalars one token touches (everything but the unused experts).
    pub active_params: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training cross-entropy at the end (nats/char).
    pub final_train_loss: f64,
    /// Smoothed load-balancing loss at the end (1 = balanced, `E` = one expert takes all).
    pub final_aux_loss: f64,
    /// `(step, smoothed train cross-entropy)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Held-out characters scored.
    pub heldout_tokens: usize,
    /// Held-out cross-entropy of the model (nats/char).
    pub heldout_loss: f64,
    /// Unigram baseline: train char distribution scored on the same held-out chars.
    pub unigram_loss: f64,
    /// Bigram baseline (add-one smoothed train counts) on the same held-out chars.
    pub bigram_loss: f64,
    /// Tokens routed to each expert on the held-out windows, per Switch layer.
    pub expert_usage: Vec<Vec<usize>>,
    /// Fraction of agreement probes where the correct verb form is more likely.
    pub agreement_accuracy: f64,
    /// Agreement probes scored.
    pub agreement_probes: usize,
    /// MACs per generated token: dense parts + router + one expert per Switch layer.
    pub macs_per_token: u64,
    /// MACs per token if every expert ran (a dense model with all experts).
    pub macs_per_token_all_experts: u64,
    /// Greedy generations from fixed prompts.
    pub samples: Vec<Sample>,
    /// Max |tract(model.onnx) − candle| over the golden logits.
    pub onnx_vs_candle_max_abs: f32,
}

/// Trains the zoo Switch model and writes `model.onnx`, `golden/`, `heldout.npy` and
/// `calib/` to `out_dir`.
pub fn train_switch(out_dir: &Path, opts: &SwitchTrainOptions) -> Result<SwitchReport> {
    let vocab = Vocab::standard();
    let (train_ids, held_ids) = corpus_ids(&vocab, opts.train_chars, opts.heldout_chars)?;
    let cfg = SwitchConfig::new(vocab.len());
    let win = cfg.max_seq + 1;
    let model = Switch::new(cfg, opts.seed)?;

    let (train_seconds, final_train_loss, final_aux_loss, loss_curve) = train_loop(&model, &train_ids, opts)?;

    let eval = eval_windows(&held_ids, win, opts.eval_windows);
    let (heldout_loss, expert_usage) = heldout(&model, &eval)?;
    let (unigram_loss, bigram_loss) = baselines(&train_ids, &eval, vocab.len());
    let (agreement_accuracy, agreement_probes) = agreement(&model, &vocab)?;
    let samples = samples(&model, &vocab)?;

    let onnx = model.export_onnx(&vocab.as_string())?;
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &model, &onnx, &eval, &train_ids, opts.seed)?;
    let expert_params = 2 * cfg.d_model * cfg.d_ff + cfg.d_ff + cfg.d_model;
    let params = model.params().count();
    Ok(SwitchReport {
        family: "switch".into(),
        config: cfg,
        options: opts.clone(),
        vocab: vocab.as_string(),
        params,
        active_params: params - cfg.n_layers * (cfg.n_experts - 1) * expert_params,
        steps: opts.steps,
        train_seconds,
        final_train_loss,
        final_aux_loss,
        loss_curve,
        heldout_tokens: eval.len() * cfg.max_seq,
        heldout_loss,
        unigram_loss,
        bigram_loss,
        expert_usage,
        agreement_accuracy,
        agreement_probes,
        macs_per_token: cfg.macs_per_token(),
        macs_per_token_all_experts: cfg.macs_per_token_all_experts(),
        samples,
        onnx_vs_candle_max_abs,
    })
}

/// (cross-entropy, mean load-balancing loss over layers, routing counts per layer).
fn batch_loss(m: &Switch, windows: &[&[u32]]) -> candle_core::Result<(Tensor, Tensor, Vec<Vec<usize>>)> {
    let s = windows[0].len() - 1;
    let inputs: Vec<&[u32]> = windows.iter().map(|w| &w[..s]).collect();
    let targets: Vec<&[u32]> = windows.iter().map(|w| &w[1..]).collect();
    let (logits, routing) = m.logits_routed(&ids_tensor(&inputs)?)?;
    let v = logits.dim(D::Minus1)?;
    let ce = candle_nn::loss::cross_entropy(
        &logits.reshape((windows.len() * s, v))?,
        &ids_tensor(&targets)?.flatten_all()?,
    )?;
    let aux = routing.iter().map(|r| r.aux_loss.clone()).collect::<Vec<_>>();
    let aux = (Tensor::stack(&aux, 0)?.sum_all()? / routing.len().max(1) as f64)?;
    Ok((ce, aux, routing.into_iter().map(|r| r.counts).collect()))
}

fn train_loop(m: &Switch, train: &[u32], opts: &SwitchTrainOptions) -> Result<(f64, f64, f64, Curve)> {
    let win = m.config().max_seq + 1;
    let mut t = Trainer::new(m.params(), "switch", schedule_of!(opts))?;
    let mut rng = SplitMix64::new(opts.seed ^ 0x5717_0000);
    let mut ema_aux = f64::NAN;
    for step in 0..opts.steps {
        let lr = t.set_lr(step);
        let batch = random_windows(&mut rng, train, win, opts.batch_size);
        let (ce, aux, _) = batch_loss(m, &batch)?;
        t.apply(&(&ce + (&aux * opts.aux_weight)?)?)?;
        let (l, a) = (ce.to_scalar::<f32>()? as f64, aux.to_scalar::<f32>()? as f64);
        ema_aux = if ema_aux.is_nan() { a } else { 0.98 * ema_aux + 0.02 * a };
        t.record(step, l, lr, &format!(" aux {ema_aux:.3}"));
    }
    let (secs, ema, curve) = t.finish(&format!(" aux {ema_aux:.3}"));
    Ok((secs, ema, ema_aux, curve))
}

/// Mean next-char NLL (nats) over windows of `max_seq + 1` ids and the routing histogram.
fn heldout(m: &Switch, windows: &[&[u32]]) -> Result<(f64, Vec<Vec<usize>>)> {
    let mut total = 0.0;
    let mut usage = vec![vec![0usize; m.config().n_experts]; m.config().n_layers];
    for chunk in windows.chunks(32) {
        let (ce, _, counts) = batch_loss(m, chunk)?;
        total += ce.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        for (u, c) in usage.iter_mut().zip(counts) {
            for (a, b) in u.iter_mut().zip(c) {
                *a += b;
            }
        }
    }
    Ok((total / windows.len() as f64, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_writes_artefacts_and_card() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_switch_{}", std::process::id()));
        let opts = SwitchTrainOptions {
            steps: 3,
            batch_size: 4,
            warmup: 1,
            train_chars: 20_000,
            heldout_chars: 5_000,
            eval_windows: 24,
            quiet: true,
            ..Default::default()
        };
        let r = train_switch(&dir, &opts)?;
        assert!(r.heldout_loss.is_finite() && r.unigram_loss > r.bigram_loss);
        assert!(r.onnx_vs_candle_max_abs < 1e-4, "{}", r.onnx_vs_candle_max_abs);
        assert_eq!(r.expert_usage.len(), 2);
        for u in &r.expert_usage {
            assert_eq!(u.iter().sum::<usize>(), 24 * 64);
        }
        assert!(r.macs_per_token < r.macs_per_token_all_experts);
        for f in ["model.onnx", "golden/input_3.npy", "golden/output_3.npy", "heldout.npy", "calib/input_7.npy"] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        super::super::write_switch_card(&dir, &r, "## extra\n")?;
        let card = std::fs::read_to_string(dir.join("card.md"))?;
        assert!(card.contains("## extra") && card.contains("unigram") && card.contains("expert 3"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
