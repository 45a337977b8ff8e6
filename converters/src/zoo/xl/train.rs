//! Training the zoo Transformer-XL with segment recurrence and writing its artefacts.
//!
//! `batch_size` streams each walk through the training text one segment per step; every
//! layer's memory is the previous segment's layer input, detached. A stream occasionally jumps
//! to a random offset with its memory marked invalid, so the model also learns the fresh
//! session that inference starts from.
//!
//! ```no_run
//! use mote_converters::zoo::xl::{train_xl, write_xl_card, XlTrainOptions};
//! let out = std::path::Path::new("models/transformer-xl");
//! let report = train_xl(out, &XlTrainOptions::default())?;
//! write_xl_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::data::{recall_stream, stories, HELDOUT_SEED, TRAIN_SEED};
use super::{TractStep, Xl, XlConfig};
use crate::array::Array;
use crate::zoo::corpus::Vocab;
use crate::zoo::layers::tensor_data;
use crate::zoo::lm_eval::{baselines, ids_tensor};
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{schedule_of, Curve, Trainer};

/// Training budget and settings. `Default` is the real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct XlTrainOptions {
    /// Optimiser steps (one segment per stream each).
    pub steps: usize,
    /// Parallel streams.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay on weight matrices.
    pub weight_decay: f64,
    /// Seed for initialisation and stream offsets.
    pub seed: u64,
    /// Characters in the training stream.
    pub train_chars: usize,
    /// Probability per step that a stream restarts at a random offset with empty memory.
    pub restart: f64,
    /// Held-out streams.
    pub eval_streams: usize,
    /// Consecutive segments per held-out stream.
    pub eval_segments: usize,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for XlTrainOptions {
    fn default() -> Self {
        Self {
            steps: 1200,
            batch_size: 16,
            lr: 3e-3,
            warmup: 80,
            weight_decay: 0.1,
            seed: 42,
            train_chars: 800_000,
            restart: 1.0 / 32.0,
            eval_streams: 16,
            eval_segments: 12,
            quiet: false,
        }
    }
}

/// Held-out figures of one memory setting (candle, f32).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryEval {
    /// Mean next-char loss (nats/char) over every held-out position.
    pub loss: f64,
    /// Greedy next-char accuracy on the recalled name and digits.
    pub recall_accuracy: f64,
    /// Loss on the recalled name and digits.
    pub recall_loss: f64,
}

/// What training measured; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct XlReport {
    /// Always `"transformer-xl"`.
    pub family: String,
    /// Architecture.
    pub config: XlConfig,
    /// Training settings.
    pub options: XlTrainOptions,
    /// Vocabulary in id order.
    pub vocab: String,
    /// Trainable scalars.
    pub params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training loss at the end (nats/char).
    pub final_train_loss: f64,
    /// `(step, smoothed train loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Held-out positions scored.
    pub heldout_positions: usize,
    /// Recall positions among them.
    pub recall_positions: usize,
    /// Memory carried from segment to segment.
    pub with_memory: MemoryEval,
    /// Memory reset before every segment.
    pub without_memory: MemoryEval,
    /// Unigram baseline on the same held-out positions.
    pub unigram_loss: f64,
    /// Bigram baseline (add-one smoothed) on the same positions.
    pub bigram_loss: f64,
    /// Max |tract(model.onnx) − candle| over the golden segments (state passed explicitly).
    pub onnx_vs_candle_max_abs: f32,
}

/// Held-out rows `[N, segments·S + 1]` and the recall mask `[N, segments·S]` of their targets.
struct Heldout {
    rows: Vec<Vec<u32>>,
    recall: Vec<Vec<bool>>,
}

fn heldout(vocab: &Vocab, opts: &XlTrainOptions, seg: usize) -> Result<Heldout> {
    let len = opts.eval_segments * seg + 1;
    let text = recall_stream(HELDOUT_SEED, opts.eval_streams * len + 64);
    let ids = vocab.encode(&text).context("held-out stream outside vocab")?;
    let mut is_recall = vec![false; ids.len()];
    for s in stories(&text) {
        is_recall[s.recall_at..s.recall_at + s.recall.len()].iter_mut().for_each(|x| *x = true);
    }
    let rows = (0..opts.eval_streams).map(|i| ids[i * len..(i + 1) * len].to_vec()).collect();
    let recall = (0..opts.eval_streams).map(|i| is_recall[i * len + 1..(i + 1) * len].to_vec()).collect();
    Ok(Heldout { rows, recall })
}

/// Trains the zoo Transformer-XL and writes `model.onnx`, `golden/`, `heldout.npy`,
/// `heldout_recall.npy` and `calib/` to `out_dir`.
pub fn train_xl(out_dir: &Path, opts: &XlTrainOptions) -> Result<XlReport> {
    let vocab = Vocab::standard();
    let train_ids = vocab.encode(&recall_stream(TRAIN_SEED, opts.train_chars)).context("train stream outside vocab")?;
    let cfg = XlConfig::new(vocab.len());
    let xl = Xl::new(cfg, opts.seed)?;
    let (train_seconds, final_train_loss, loss_curve) = train_loop(&xl, &train_ids, opts)?;

    let held = heldout(&vocab, opts, cfg.seg)?;
    let with_memory = evaluate(&xl, &held, true)?;
    let without_memory = evaluate(&xl, &held, false)?;
    let (unigram_loss, bigram_loss) = baselines(&train_ids, &held.rows, vocab.len());
    let onnx = xl.export_onnx(&vocab.as_string())?;
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &xl, &onnx, &held, &train_ids, opts)?;
    let positions: usize = held.recall.iter().map(Vec::len).sum();
    Ok(XlReport {
        family: "transformer-xl".into(),
        config: cfg,
        options: opts.clone(),
        vocab: vocab.as_string(),
        params: xl.params().count(),
        train_seconds,
        final_train_loss,
        loss_curve,
        heldout_positions: positions,
        recall_positions: held.recall.iter().flatten().filter(|&&r| r).count(),
        with_memory,
        without_memory,
        unigram_loss,
        bigram_loss,
        onnx_vs_candle_max_abs,
    })
}

fn train_loop(xl: &Xl, train: &[u32], opts: &XlTrainOptions) -> Result<(f64, f64, Curve)> {
    let (seg, b) = (xl.config().seg, opts.batch_size);
    let mut t = Trainer::new(xl.params(), "transformer-xl", schedule_of!(opts))?;
    let mut rng = SplitMix64::new(opts.seed ^ 0x71_0000);
    let span = train.len() - seg - 1;
    let mut cursors: Vec<usize> = (0..b).map(|i| i * span / b).collect();
    let (mut mems, mut valid) = xl.empty_memory(b)?;
    for step in 0..opts.steps {
        let lr = t.set_lr(step);
        // Streams that restart keep their (masked) memory values but lose its validity.
        let mut keep = vec![1f32; b];
        for (c, k) in cursors.iter_mut().zip(&mut keep) {
            if *c + seg + 1 > train.len() || rng.chance(opts.restart) {
                *c = rng.below(span);
                *k = 0.0;
            }
        }
        let windows: Vec<&[u32]> = cursors.iter().map(|&c| &train[c..c + seg + 1]).collect();
        let keep = Tensor::from_vec(keep, (b, 1), &Device::Cpu)?;
        let valid_now = valid.broadcast_mul(&keep)?;
        let inputs: Vec<&[u32]> = windows.iter().map(|w| &w[..seg]).collect();
        let targets: Vec<&[u32]> = windows.iter().map(|w| &w[1..]).collect();
        let out = xl.step(&ids_tensor(&inputs)?, &mems, &valid_now)?;
        let v = out.logits.dim(D::Minus1)?;
        let loss =
            candle_nn::loss::cross_entropy(&out.logits.reshape((b * seg, v))?, &ids_tensor(&targets)?.flatten_all()?)?;
        t.apply(&loss)?;
        mems = out.mems.iter().map(|m| m.detach()).collect();
        valid = out.valid.detach();
        for c in &mut cursors {
            *c += seg;
        }
        t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    Ok(t.finish(""))
}

/// Candle evaluation over the held-out streams, all streams as one batch, memory carried
/// (`memory`) or reset before every segment.
fn evaluate(xl: &Xl, held: &Heldout, memory: bool) -> Result<MemoryEval> {
    let seg = xl.config().seg;
    let n = held.rows.len();
    let segments = (held.rows[0].len() - 1) / seg;
    let (mut mems, mut valid) = xl.empty_memory(n)?;
    let (mut total, mut count, mut r_loss, mut r_hits, mut r_count) = (0f64, 0usize, 0f64, 0usize, 0usize);
    for k in 0..segments {
        if !memory {
            (mems, valid) = xl.empty_memory(n)?;
        }
        let inputs: Vec<&[u32]> = held.rows.iter().map(|r| &r[k * seg..(k + 1) * seg]).collect();
        let out = xl.step(&ids_tensor(&inputs)?, &mems, &valid)?;
        let lp = candle_nn::ops::log_softmax(&out.logits, D::Minus1)?.to_vec3::<f32>()?;
        for (i, row) in held.rows.iter().enumerate() {
            for p in 0..seg {
                let target = row[k * seg + p + 1] as usize;
                let l = &lp[i][p];
                let nll = -l[target] as f64;
                total += nll;
                count += 1;
                if held.recall[i][k * seg + p] {
                    let argmax = l.iter().enumerate().fold(0, |b, (j, &x)| if x > l[b] { j } else { b });
                    r_hits += usize::from(argmax == target);
                    r_loss += nll;
                    r_count += 1;
                }
            }
        }
        mems = out.mems;
        valid = out.valid;
    }
    Ok(MemoryEval {
        loss: total / count as f64,
        recall_accuracy: r_hits as f64 / r_count.max(1) as f64,
        recall_loss: r_loss / r_count.max(1) as f64,
    })
}

/// Golden segments written to `golden/`.
pub const GOLDEN_SEGMENTS: usize = 4;
/// Consecutive calibration segments written to `calib/`.
pub const CALIB_SEGMENTS: usize = 8;

/// Writes the ONNX model and the `.npy` sets; returns the tract-vs-candle golden difference
/// (tract is given the state explicitly, segment after segment).
fn write_artefacts(
    out: &Path,
    xl: &Xl,
    onnx: &[u8],
    held: &Heldout,
    train: &[u32],
    opts: &XlTrainOptions,
) -> Result<f32> {
    let (seg, v) = (xl.config().seg, xl.config().vocab);
    for d in ["golden", "calib"] {
        let dir = out.join(d);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out.join("model.onnx"), onnx)?;
    let to_i64 = |w: &[u32]| w.iter().map(|&x| x as i64).collect::<Vec<i64>>();
    let tract = TractStep::new(onnx)?;
    let (mut mems, mut valid) = xl.empty_memory(1)?;
    let mut max_diff = 0f32;
    for k in 0..GOLDEN_SEGMENTS {
        let ids = &held.rows[0][k * seg..(k + 1) * seg];
        let states: Vec<(Vec<usize>, Vec<f32>)> =
            mems.iter().chain([&valid]).map(|t| Ok((t.dims().to_vec(), tensor_data(t)?))).collect::<Result<_>>()?;
        let step = xl.step(&ids_tensor(&[ids])?, &mems, &valid)?;
        let logits = tensor_data(&step.logits)?;
        let got = tract.run(&to_i64(ids), &states)?;
        max_diff = logits.iter().zip(&got[0]).fold(max_diff, |m, (a, b)| m.max((a - b).abs()));
        Array::i64(vec![1, seg], to_i64(ids)).write_npy(&out.join(format!("golden/input_{k}.npy")))?;
        Array::f32(vec![1, seg, v], logits).write_npy(&out.join(format!("golden/output_{k}.npy")))?;
        mems = step.mems;
        valid = step.valid;
    }
    let width = held.rows[0].len();
    let rows: Vec<i64> = held.rows.iter().flat_map(|r| to_i64(r)).collect();
    Array::i64(vec![held.rows.len(), width], rows).write_npy(&out.join("heldout.npy"))?;
    let recall: Vec<i64> = held.recall.iter().flatten().map(|&r| r as i64).collect();
    Array::i64(vec![held.rows.len(), width - 1], recall).write_npy(&out.join("heldout_recall.npy"))?;
    // Consecutive segments of one training stretch: calibration runs them in one session.
    let mut rng = SplitMix64::new(opts.seed ^ 0xca11b);
    let o = rng.below(train.len() - CALIB_SEGMENTS * seg);
    for i in 0..CALIB_SEGMENTS {
        let ids = to_i64(&train[o + i * seg..o + (i + 1) * seg]);
        Array::i64(vec![1, seg], ids).write_npy(&out.join(format!("calib/input_{i}.npy")))?;
    }
    Ok(max_diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_writes_artefacts() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_xl_{}", std::process::id()));
        let opts = XlTrainOptions {
            steps: 3,
            batch_size: 4,
            warmup: 1,
            train_chars: 20_000,
            eval_streams: 2,
            eval_segments: 4,
            quiet: true,
            ..Default::default()
        };
        let r = train_xl(&dir, &opts)?;
        assert!(r.with_memory.loss.is_finite() && r.unigram_loss > r.bigram_loss);
        assert!(r.recall_positions > 0);
        assert!(r.onnx_vs_candle_max_abs < 1e-4, "{}", r.onnx_vs_candle_max_abs);
        for f in ["model.onnx", "golden/input_3.npy", "golden/output_3.npy", "heldout.npy", "calib/input_7.npy"] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        super::super::write_xl_card(&dir, &r, "## extra\n")?;
        let card = std::fs::read_to_string(dir.join("card.md"))?;
        assert!(card.contains("## extra") && card.contains("unigram"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
