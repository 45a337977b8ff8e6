//! Training a zoo BERT or ALBERT by masked-token recovery and writing its artefacts.
//!
//! ```no_run
//! use mote_converters::zoo::bert::{train_mlm, write_mlm_card, MlmFamily, MlmTrainOptions};
//! let out = std::path::Path::new("models/albert");
//! let report = train_mlm(out, MlmFamily::Albert, &MlmTrainOptions::default())?;
//! write_mlm_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::data::{self, Baselines, Example, ExampleSource, MlmVocab};
use super::{Bert, BertConfig, MlmFamily, INPUT_NAMES};
use crate::array::Array;
use crate::zoo::corpus;
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{schedule_of, Curve, Trainer};

/// Training budget and settings. `Default` is the real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MlmTrainOptions {
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
    /// Seed for initialisation and example sampling (the corpus seeds are fixed).
    pub seed: u64,
    /// Shortest example (real positions).
    pub min_len: usize,
    /// Probability that a real position is masked.
    pub mask_prob: f64,
    /// Characters in the training stream.
    pub train_chars: usize,
    /// Characters in the held-out stream.
    pub heldout_chars: usize,
    /// Held-out examples scored (and committed in `heldout/`).
    pub eval_examples: usize,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for MlmTrainOptions {
    fn default() -> Self {
        Self {
            steps: 1400,
            batch_size: 32,
            lr: 2e-3,
            warmup: 100,
            weight_decay: 0.01,
            seed: 42,
            min_len: 12,
            mask_prob: 0.15,
            train_chars: 1_000_000,
            heldout_chars: 100_000,
            eval_examples: 512,
            quiet: false,
        }
    }
}

impl MlmTrainOptions {
    /// The zoo budget of `family`: ALBERT's one shared layer learns more slowly per step, so
    /// it trains with twice BERT's peak learning rate (same steps: about 6 minutes on 2 idle
    /// cores each).
    pub fn for_family(family: MlmFamily) -> Self {
        match family {
            MlmFamily::Bert => Self::default(),
            MlmFamily::Albert => Self { lr: 4e-3, ..Self::default() },
        }
    }
}

/// A held-out example with the model's guesses, for the card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fill {
    /// Input with `?` at masked positions.
    pub masked: String,
    /// The model's argmax at masked positions filled in.
    pub filled: String,
    /// The original text.
    pub original: String,
}

/// What training measured; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MlmReport {
    /// `"bert"` or `"albert"`.
    pub family: String,
    /// Architecture.
    pub config: BertConfig,
    /// Training settings.
    pub options: MlmTrainOptions,
    /// Character alphabet in id order (the special tokens follow).
    pub vocab: String,
    /// `mote.special_tokens`.
    pub special_tokens: String,
    /// Trainable scalars (a shared layer counts once).
    pub params: usize,
    /// Scalars in one encoder layer.
    pub layer_params: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training loss at the end (nats per masked char).
    pub final_train_loss: f64,
    /// `(step, smoothed train loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Held-out masked positions scored.
    pub heldout_positions: usize,
    /// Held-out MLM accuracy of the candle model.
    pub heldout_accuracy: f64,
    /// Held-out MLM cross-entropy (nats per masked char).
    pub heldout_loss: f64,
    /// The trivial predictors on the same positions.
    pub baselines: Baselines,
    /// Example fills on held-out text.
    pub fills: Vec<Fill>,
    /// Max |tract(model.onnx) − candle| over the golden logits.
    pub onnx_vs_candle_max_abs: f32,
    /// Max |tract(unpadded) − candle(padded)| over the real positions of the golden inputs.
    pub padding_max_abs: f32,
}

impl MlmReport {
    /// Reads `train_report.json` from a family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("train_report.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not an MLM training report", path.display()))
    }
}

fn tensor_u32(rows: &[&[u32]]) -> candle_core::Result<Tensor> {
    let s = rows.first().map_or(0, |r| r.len());
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), s), &Device::Cpu)
}

/// Logits `[B, S, V]` of a batch of examples.
fn batch_logits(m: &Bert, batch: &[&Example]) -> candle_core::Result<Tensor> {
    let ids: Vec<&[u32]> = batch.iter().map(|e| &e.ids[..]).collect();
    let att: Vec<&[u32]> = batch.iter().map(|e| &e.attention[..]).collect();
    let seg: Vec<&[u32]> = batch.iter().map(|e| &e.segments[..]).collect();
    m.logits(&tensor_u32(&ids)?, &tensor_u32(&att)?, &tensor_u32(&seg)?)
}

/// Mean cross-entropy over the masked positions of a batch.
fn batch_loss(m: &Bert, batch: &[&Example]) -> candle_core::Result<Tensor> {
    let logits = batch_logits(m, batch)?;
    let (b, s, v) = logits.dims3()?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, ex) in batch.iter().enumerate() {
        for (p, &l) in ex.labels.iter().enumerate() {
            if l != data::IGNORE {
                rows.push((i * s + p) as u32);
                targets.push(l as u32);
            }
        }
    }
    let rows = Tensor::new(rows, &Device::Cpu)?;
    let picked = logits.reshape((b * s, v))?.index_select(&rows, 0)?;
    candle_nn::loss::cross_entropy(&picked, &Tensor::new(targets, &Device::Cpu)?)
}

fn train_loop(m: &Bert, src: &ExampleSource, opts: &MlmTrainOptions) -> Result<(f64, f64, Curve)> {
    let max_seq = m.config().max_seq;
    let mut t = Trainer::new(m.params(), m.config().family.name(), schedule_of!(opts))?;
    let mut rng = SplitMix64::new(opts.seed ^ 0xbe27_0000);
    for step in 0..opts.steps {
        let lr = t.set_lr(step);
        let batch: Vec<Example> =
            (0..opts.batch_size).map(|_| src.example(&mut rng, max_seq, opts.min_len, opts.mask_prob)).collect();
        let refs: Vec<&Example> = batch.iter().collect();
        let loss = batch_loss(m, &refs)?;
        t.apply(&loss)?;
        t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    Ok(t.finish(""))
}

/// (accuracy, mean cross-entropy, positions) over the masked positions of `examples`, with
/// the argmax at every masked position in order.
fn evaluate(m: &Bert, examples: &[Example]) -> Result<(f64, f64, usize, Vec<u32>)> {
    let (mut hits, mut loss, mut n) = (0usize, 0f64, 0usize);
    let mut guesses = Vec::new();
    for chunk in examples.chunks(64) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let logp = candle_nn::ops::log_softmax(&batch_logits(m, &refs)?, D::Minus1)?;
        let guess = logp.argmax(D::Minus1)?.to_vec2::<u32>()?;
        let logp = logp.to_vec3::<f32>()?;
        for (i, ex) in chunk.iter().enumerate() {
            for (p, &l) in ex.labels.iter().enumerate() {
                if l != data::IGNORE {
                    hits += usize::from(guess[i][p] as i64 == l);
                    loss -= logp[i][p][l as usize] as f64;
                    n += 1;
                    guesses.push(guess[i][p]);
                }
            }
        }
    }
    Ok((hits as f64 / n.max(1) as f64, loss / n.max(1) as f64, n, guesses))
}

/// Trains the zoo `family` and writes `model.onnx`, `golden/`, `heldout/` and `calib/` to
/// `out_dir`.
pub fn train_mlm(out_dir: &Path, family: MlmFamily, opts: &MlmTrainOptions) -> Result<MlmReport> {
    let vocab = MlmVocab::standard();
    let train = ExampleSource::new(&vocab, &corpus::generate(corpus::TRAIN_SEED, opts.train_chars))?;
    let held = ExampleSource::new(&vocab, &corpus::generate(corpus::HELDOUT_SEED, opts.heldout_chars))?;
    let cfg = BertConfig::of(family, vocab.len());
    let model = Bert::new(cfg, opts.seed)?;
    let eval = held.examples(opts.seed ^ 0xe7a1, opts.eval_examples, cfg.max_seq, opts.min_len, opts.mask_prob);
    let stats = train.examples(opts.seed ^ 0x57a7, 20_000, cfg.max_seq, opts.min_len, opts.mask_prob);
    let baselines = data::baselines(&stats, &eval, vocab.len());

    let (train_seconds, final_train_loss, loss_curve) = train_loop(&model, &train, opts)?;
    let (heldout_accuracy, heldout_loss, heldout_positions, guesses) = evaluate(&model, &eval)?;
    let fills = fills(&vocab, &eval, &guesses, 4);

    let onnx = model.export_onnx(&vocab.chars().as_string(), &vocab.special())?;
    let calib = train.examples(opts.seed ^ 0xca11b, 8, cfg.max_seq, opts.min_len, opts.mask_prob);
    let (onnx_vs_candle_max_abs, padding_max_abs) = write_artefacts(out_dir, &model, &onnx, &eval, &calib)?;

    Ok(MlmReport {
        family: family.name().into(),
        config: cfg,
        options: opts.clone(),
        vocab: vocab.chars().as_string(),
        special_tokens: vocab.special(),
        params: model.params().count(),
        layer_params: model.layer_params(),
        steps: opts.steps,
        train_seconds,
        final_train_loss,
        loss_curve,
        heldout_positions,
        heldout_accuracy,
        heldout_loss,
        baselines,
        fills,
        onnx_vs_candle_max_abs,
        padding_max_abs,
    })
}

/// The first `n` held-out examples with the model's guesses filled in.
fn fills(vocab: &MlmVocab, eval: &[Example], guesses: &[u32], n: usize) -> Vec<Fill> {
    let mut k = 0;
    let mut out = Vec::new();
    for ex in eval {
        let len = ex.len();
        let mut filled = ex.ids[..len].to_vec();
        let mut original = ex.ids[..len].to_vec();
        for p in 0..len {
            if ex.labels[p] != data::IGNORE {
                filled[p] = guesses.get(k).copied().unwrap_or(vocab.mask());
                original[p] = ex.labels[p] as u32;
                k += 1;
            }
        }
        if out.len() < n {
            out.push(Fill {
                masked: vocab.show(&ex.ids[..len]),
                filled: vocab.show(&filled),
                original: vocab.show(&original),
            });
        }
    }
    out
}

/// The three model inputs of examples as `[N, S]` int64 arrays, in [`INPUT_NAMES`] order.
pub fn input_arrays(examples: &[Example]) -> [Array; 3] {
    let s = examples.first().map_or(0, |e| e.ids.len());
    let col = |f: &dyn Fn(&Example) -> &[u32]| {
        Array::i64(vec![examples.len(), s], examples.iter().flat_map(|e| f(e).iter().map(|&x| x as i64)).collect())
    };
    [col(&|e| &e.ids), col(&|e| &e.attention), col(&|e| &e.segments)]
}

fn run_tract(model: &[u8], inputs: &[Vec<i64>]) -> Result<Vec<f32>> {
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx().model_for_read(&mut &model[..])?.into_optimized()?.into_runnable()?;
    let t = |v: &[i64]| tract_onnx::prelude::Tensor::from_shape(&[1, v.len()], v).map(|t| t.into_tvalue());
    let out = plan.run(inputs.iter().map(|v| t(v)).collect::<TractResult<TVec<_>>>()?)?;
    Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// Writes the ONNX model and the `.npy` sets; returns (tract vs candle on the golden inputs,
/// tract on the unpadded golden inputs vs candle on the padded ones).
fn write_artefacts(out: &Path, m: &Bert, onnx: &[u8], eval: &[Example], calib: &[Example]) -> Result<(f32, f32)> {
    let (s, v) = (m.config().max_seq, m.config().vocab);
    for d in ["golden", "calib", "heldout"] {
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    std::fs::write(out.join("model.onnx"), onnx)?;
    let (mut vs_tract, mut padding) = (0f32, 0f32);
    // Golden inputs: the shortest held-out examples first (they are the most padded).
    let mut golden: Vec<&Example> = eval.iter().take(64).collect();
    golden.sort_by_key(|e| e.len());
    for (k, ex) in golden.iter().take(4).enumerate() {
        let logits = tensor_data(&batch_logits(m, &[ex])?)?;
        let arrays = input_arrays(std::slice::from_ref(*ex));
        for (name, a) in INPUT_NAMES.iter().zip(&arrays) {
            a.write_npy(&out.join(format!("golden/{k}.{name}.npy")))?;
        }
        Array::f32(vec![1, s, v], logits.clone()).write_npy(&out.join(format!("golden/{k}.logits.npy")))?;
        let full: Vec<Vec<i64>> = arrays.iter().map(|a| a.to_f32().iter().map(|&x| x as i64).collect()).collect();
        let got = run_tract(onnx, &full)?;
        vs_tract = logits.iter().zip(&got).fold(vs_tract, |d, (a, b)| d.max((a - b).abs()));
        let n = ex.len();
        let short: Vec<Vec<i64>> = full.iter().map(|x| x[..n].to_vec()).collect();
        let got = run_tract(onnx, &short)?;
        padding = logits[..n * v].iter().zip(&got).fold(padding, |d, (a, b)| d.max((a - b).abs()));
    }
    let arrays = input_arrays(eval);
    for (name, a) in INPUT_NAMES.iter().zip(&arrays) {
        a.write_npy(&out.join(format!("heldout/{name}.npy")))?;
    }
    let labels: Vec<i64> = eval.iter().flat_map(|e| e.labels.iter().copied()).collect();
    Array::i64(vec![eval.len(), s], labels).write_npy(&out.join("heldout/labels.npy"))?;
    for (k, ex) in calib.iter().enumerate() {
        for (name, a) in INPUT_NAMES.iter().zip(input_arrays(std::slice::from_ref(ex))) {
            a.write_npy(&out.join(format!("calib/{k}.{name}.npy")))?;
        }
    }
    Ok((vs_tract, padding))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_runs_write_artefacts_and_cards() -> Result<()> {
        for family in [MlmFamily::Bert, MlmFamily::Albert] {
            let dir = std::env::temp_dir().join(format!("mote_zoo_{}_{}", family.name(), std::process::id()));
            let opts = MlmTrainOptions {
                steps: 3,
                batch_size: 4,
                warmup: 1,
                train_chars: 20_000,
                heldout_chars: 5_000,
                eval_examples: 24,
                quiet: true,
                ..Default::default()
            };
            let r = train_mlm(&dir, family, &opts)?;
            assert!(r.heldout_loss.is_finite() && r.heldout_positions > 24);
            assert!(r.onnx_vs_candle_max_abs < 1e-4, "{}", r.onnx_vs_candle_max_abs);
            assert!(r.padding_max_abs < 1e-4, "{}", r.padding_max_abs);
            for f in [
                "model.onnx",
                "golden/3.input_ids.npy",
                "golden/3.attention_mask.npy",
                "golden/3.token_type_ids.npy",
                "golden/3.logits.npy",
                "heldout/labels.npy",
                "heldout/input_ids.npy",
                "calib/7.token_type_ids.npy",
            ] {
                assert!(dir.join(f).exists(), "{f} missing");
            }
            let labels = Array::read_npy(&dir.join("heldout/labels.npy"))?;
            assert_eq!(labels.shape, vec![24, 48]);
            super::super::write_mlm_card(&dir, &r, "## extra\n")?;
            let card = std::fs::read_to_string(dir.join("card.md"))?;
            assert!(card.contains("## extra") && card.contains("majority"));
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }
}
