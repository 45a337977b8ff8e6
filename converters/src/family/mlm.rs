//! Figures of the masked-LM families (BERT, ALBERT) measured through the converter and the
//! runtime: parity with tract, MLM accuracy f32 vs int8, padding invariance, weight sharing.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_mlm(std::path::Path::new("models/albert"))?;
//! assert!(f.accuracy_int8 > f.baseline_majority);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{max_abs, memory_figures, stored_params, zoo_options, FamilyFigures, TaskMetric};
use crate::array::{Array, Data};
use crate::convert::{self, Options};
use crate::emit::dtypes::QuantMode;
use crate::eval;
use crate::zoo::bert::{MlmReport, INPUT_NAMES};
use crate::{host, verify};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::path::Path;

/// Everything measured about a BERT or ALBERT folder.
#[derive(Debug, Clone, Serialize)]
pub struct MlmFigures {
    /// Real-valued weights stored in the f32 file (a shared layer counts once).
    pub params: usize,
    /// Weight section bytes of the f32 file.
    pub weight_bytes_f32: usize,
    /// Weight section bytes of the int8 file.
    pub weight_bytes_int8: usize,
    /// f32 file bytes.
    pub flash_f32: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// int8 arena bytes.
    pub arena_int8: usize,
    /// Lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// State bytes (none for an encoder).
    pub state_int8: usize,
    /// Sequence length the file is planned for (`--dim seq`).
    pub seq: usize,
    /// MACs of one `forward` over `seq` positions.
    pub macs_forward: u64,
    /// Fused `Attention` ops in the int8 `forward` (0 while the padding-mask pattern runs as
    /// plain ops).
    pub fused_attention_ops: usize,
    /// f32 `.mote` against tract on the golden (padded) inputs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 `.mote` against the training framework's golden outputs.
    pub f32_vs_candle_max_abs: f32,
    /// f32 `.mote` on padded golden inputs vs tract on the same inputs unpadded, real positions.
    pub padded_vs_unpadded_max_abs: f32,
    /// int8 `.mote`: real positions with other padding content (tokens, segments) vs the
    /// golden padding, max-abs (0 means the padding is fully masked out).
    pub padding_content_int8_max_abs: f32,
    /// Held-out masked positions scored.
    pub heldout_positions: usize,
    /// MLM accuracy of the f32 file.
    pub accuracy_f32: f64,
    /// MLM accuracy of the int8 file.
    pub accuracy_int8: f64,
    /// Masked-position loss of the f32 file (nats).
    pub loss_f32: f64,
    /// Masked-position loss of the int8 file (nats).
    pub loss_int8: f64,
    /// Argmax agreement of int8 with f32 at masked positions.
    pub top1_agreement: f64,
    /// Majority-char baseline accuracy on the same positions (from `train_report.json`).
    pub baseline_majority: f64,
    /// Neighbours baseline accuracy on the same positions (from `train_report.json`).
    pub baseline_neighbours: f64,
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
}

impl MlmFigures {
    /// The report row: task metric = MLM accuracy on held-out masked positions (%).
    pub fn summary(&self) -> FamilyFigures {
        family_row!(
            self,
            self.macs_forward / self.seq.max(1) as u64,
            TaskMetric { name: "MLM acc %".into(), f32: 100.0 * self.accuracy_f32, int8: 100.0 * self.accuracy_int8 }
        )
    }
}

/// Options for converting a zoo BERT / ALBERT (`seq` bounded by its `mote.max_seq`,
/// calibration from `calib/<k>.<input>.npy`).
pub fn mlm_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    zoo_options(dir, quant, false)
}

/// Golden sample `k`: its three inputs and candle's logits, if present.
fn golden(dir: &Path, k: usize) -> Result<Option<(Vec<Array>, Array)>> {
    let logits = dir.join(format!("golden/{k}.logits.npy"));
    if !logits.exists() {
        return Ok(None);
    }
    let inputs = INPUT_NAMES
        .iter()
        .map(|n| Array::read_npy(&dir.join(format!("golden/{k}.{n}.npy"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((inputs, Array::read_npy(&logits)?)))
}

fn ints(a: &Array) -> Result<&[i64]> {
    match &a.data {
        Data::I64(v) => Ok(v),
        Data::F32(_) => bail!("expected an integer array"),
    }
}

/// Real positions (attention mask non-zero) of a golden sample.
fn real_len(inputs: &[Array]) -> Result<usize> {
    Ok(ints(&inputs[1])?.iter().filter(|&&m| m != 0).count())
}

/// The same sample with different content at its padded positions (tokens and segments).
fn repadded(inputs: &[Array]) -> Result<Vec<Array>> {
    let n = real_len(inputs)?;
    let mut out = inputs.to_vec();
    // input_ids: assorted characters; attention_mask: still 0; token_type_ids: segment 1.
    let fills: [fn(usize) -> i64; 3] = [|p| 3 + (p % 5) as i64, |_| 0, |_| 1];
    for (a, fill) in out.iter_mut().zip(fills) {
        if let Data::I64(v) = &mut a.data {
            for (p, x) in v.iter_mut().enumerate().skip(n) {
                *x = fill(p);
            }
        }
    }
    Ok(out)
}

/// Measures the BERT / ALBERT family in `dir` (`models/bert`, `models/albert`).
pub fn evaluate_mlm(dir: &Path) -> Result<MlmFigures> {
    let onnx = dir.join("model.onnx");
    let f32m = convert::convert(&onnx, &mlm_options(dir, QuantMode::F32)?)?;
    let i8m = convert::convert(&onnx, &mlm_options(dir, QuantMode::Int8)?)?;
    let seq = *mlm_options(dir, QuantMode::F32)?.bounds.values().next().ok_or_else(|| anyhow!("no seq bound"))?;

    let (mut vs_tract, mut vs_candle, mut vs_unpadded, mut repad) = (0f32, 0f32, 0f32, 0f32);
    let mut count = 0;
    while let Some((inputs, want)) = golden(dir, count)? {
        let got = host::run(&f32m.bytes, "forward", &inputs)?.remove(0).to_f32();
        let tract = verify::tract_reference(&onnx, &inputs)?.remove(0).to_f32();
        vs_tract = vs_tract.max(max_abs(&got, &tract));
        vs_candle = vs_candle.max(max_abs(&got, &want.to_f32()));
        let n = real_len(&inputs)?;
        let short: Vec<Array> =
            inputs.iter().map(|a| Ok(Array::i64(vec![1, n], ints(a)?[..n].to_vec()))).collect::<Result<_>>()?;
        let tract_short = verify::tract_reference(&onnx, &short)?.remove(0).to_f32();
        let vocab = got.len() / seq;
        vs_unpadded = vs_unpadded.max(max_abs(&got[..n * vocab], &tract_short));
        let a = host::run(&i8m.bytes, "forward", &inputs)?.remove(0).to_f32();
        let b = host::run(&i8m.bytes, "forward", &repadded(&inputs)?)?.remove(0).to_f32();
        repad = repad.max(max_abs(&a[..n * vocab], &b[..n * vocab]));
        count += 1;
    }
    if count == 0 {
        bail!("{}: no golden inputs", dir.display());
    }

    let held = |n: &str| Array::read_npy(&dir.join(format!("heldout/{n}.npy"))).context("held-out examples");
    let inputs = INPUT_NAMES.iter().map(|n| held(n)).collect::<Result<Vec<_>>>()?;
    let labels = held("labels")?;
    let e32 = eval::mlm_eval(&f32m.bytes, &inputs, &labels)?;
    let e8 = eval::mlm_eval(&i8m.bytes, &inputs, &labels)?;
    let same = e32.predictions.iter().zip(&e8.predictions).filter(|(a, b)| a == b).count();

    let baselines = MlmReport::read(dir)?.baselines;
    let committed = std::fs::read(dir.join("model.int8.mote")).unwrap_or_default();
    let (flash_f32, flash_int8, arena_int8, lower_bound_int8, state_int8) = memory_figures(&f32m, &i8m);
    Ok(MlmFigures {
        params: stored_params(&f32m.bytes)?,
        weight_bytes_f32: f32m.inspection.weight_bytes,
        weight_bytes_int8: i8m.inspection.weight_bytes,
        flash_f32,
        flash_int8,
        arena_int8,
        lower_bound_int8,
        state_int8,
        seq,
        macs_forward: i8m.entry_macs("forward"),
        fused_attention_ops: i8m.inspection.ops.iter().filter(|o| o.op.starts_with("Attention")).count(),
        f32_vs_tract_max_abs: vs_tract,
        f32_vs_candle_max_abs: vs_candle,
        padded_vs_unpadded_max_abs: vs_unpadded,
        padding_content_int8_max_abs: repad,
        heldout_positions: e32.positions,
        accuracy_f32: e32.accuracy,
        accuracy_int8: e8.accuracy,
        loss_f32: e32.loss,
        loss_int8: e8.loss,
        top1_agreement: same as f64 / e32.predictions.len().max(1) as f64,
        baseline_majority: baselines.majority_accuracy,
        baseline_neighbours: baselines.neighbours_accuracy,
        committed_int8_up_to_date: committed == i8m.bytes,
    })
}
