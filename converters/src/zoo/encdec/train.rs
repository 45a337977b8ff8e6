//! Training the zoo encoder–decoder on sequence reversal and writing its artefacts.
//!
//! ```no_run
//! use mote_converters::zoo::encdec::{train_encdec, write_encdec_card, BUDGET};
//! let out = std::path::Path::new("models/encdec");
//! let report = train_encdec(out, &BUDGET)?;
//! write_encdec_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::task::{self, Example, EOS, SRC_LEN, TGT_LEN, VOCAB};
use super::{ids_batch, EncDec, EncDecConfig};
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
    steps: 1000,
    batch_size: 48,
    lr: 2e-3,
    warmup: 100,
    weight_decay: 0.01,
    seed: 42,
    eval_examples: 300,
    quiet: false,
};

/// What training measured; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncDecReport {
    /// Always `"encdec"`.
    pub family: String,
    /// Architecture.
    pub config: EncDecConfig,
    /// Training settings.
    pub options: TrainOptions,
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
        read_report(dir)
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
    answer_loss(&m.logits(&src, &mask, &ids_batch(&inputs)?)?, labels, rows)
}

/// Greedy outputs (ids before `EOS`, at most `TGT_LEN - 1` tokens) decoded in candle.
pub fn greedy(m: &EncDec, examples: &[Example]) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::new();
    for chunk in examples.chunks(100) {
        let (src, mask) = sources(chunk)?;
        let mem = m.encode(&src, &mask)?;
        let starts = vec![vec![task::BOS]; chunk.len()];
        out.extend(greedy_rows(starts, TGT_LEN - 1, EOS, |rows| m.decode(&ids_batch(rows)?, &mem, &mask))?);
    }
    Ok(out)
}

/// Trains the zoo encoder–decoder and writes `model.onnx`, `golden/`, `calib/` and the
/// held-out set (`heldout.{src,src_mask,tgt}.npy`) to `out_dir`.
pub fn train_encdec(out_dir: &Path, opts: &TrainOptions) -> Result<EncDecReport> {
    let cfg = EncDecConfig::new(VOCAB.chars().count());
    let m = EncDec::new(cfg, opts.seed)?;
    let t = train_and_score(m.params(), "encdec", opts, |b| batch_loss(&m, b), |h| greedy(&m, h))?;
    let onnx = m.export_onnx(VOCAB)?;
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &m, &onnx, &t.held)?;
    Ok(EncDecReport {
        family: "encdec".into(),
        config: cfg,
        options: opts.clone(),
        vocab: VOCAB.into(),
        params: m.params().count(),
        train_seconds: t.train_seconds,
        final_train_loss: t.final_train_loss,
        loss_curve: t.loss_curve,
        heldout_examples: t.held.len(),
        model: t.model,
        copy_baseline: t.copy_baseline,
        samples: t.samples,
        onnx_vs_candle_max_abs,
    })
}

/// The three ONNX inputs of one example at the bounds: source, mask, `tgt` (the decoder
/// input, padded), each `[1, len]`.
pub fn example_inputs(e: &Example) -> [Array; 3] {
    let (src, mask) = e.src_row();
    [
        Array::i64(vec![1, SRC_LEN], to_i64(&src)),
        Array::i64(vec![1, SRC_LEN], to_i64(&mask)),
        Array::i64(vec![1, TGT_LEN], to_i64(&e.decoder_input(TGT_LEN))),
    ]
}

/// Writes the ONNX model, golden logits, calibration inputs and the held-out set; returns
/// tract vs candle.
fn write_artefacts(out: &Path, m: &EncDec, onnx: &[u8], held: &[Example]) -> Result<f32> {
    let v = m.config().vocab;
    let path = artefacts::start(out, onnx)?;
    let names = super::INPUT_NAMES;
    let mut max_diff = 0f32;
    for (i, e) in Example::goldens().iter().enumerate() {
        let (src, mask) = sources(std::slice::from_ref(e))?;
        let tgt = ids_batch(&[e.decoder_input(TGT_LEN)])?;
        let logits = Array::f32(vec![1, TGT_LEN, v], tensor_data(&m.logits(&src, &mask, &tgt)?)?);
        max_diff = max_diff.max(artefacts::write_golden(out, &path, i, &names, &example_inputs(e), &logits)?);
    }
    let mut r = SplitMix64::new(0xca11b);
    for (i, e) in Example::calibration().iter().enumerate() {
        // Calibration sees full decoder inputs and partial ones (as when decoding greedily).
        let mut inputs = example_inputs(e);
        if i % 2 == 1 {
            let keep = 1 + r.below(e.src.len() + 1);
            if let crate::array::Data::I64(t) = &mut inputs[2].data {
                t[keep..].iter_mut().for_each(|x| *x = task::PAD as i64);
            }
        }
        artefacts::write_calib(out, i, &names, &inputs)?;
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
    Array::i64(vec![n, SRC_LEN], to_i64(&src.concat())).write_npy(&out.join("heldout.src.npy"))?;
    Array::i64(vec![n, SRC_LEN], to_i64(&mask.concat())).write_npy(&out.join("heldout.src_mask.npy"))?;
    Array::i64(vec![n, TGT_LEN], to_i64(&tgt)).write_npy(&out.join("heldout.tgt.npy"))?;
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
        let opts = TrainOptions { steps: 3, batch_size: 4, warmup: 1, eval_examples: 8, quiet: true, ..BUDGET };
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
