//! Figures of the Transformer-XL family measured through the converter and the runtime: parity
//! with tract over consecutive segments (tract given the state explicitly, the `.mote` session
//! carrying it in its state region), held-out loss with memory carried vs reset every segment,
//! int8 vs f32.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_xl(std::path::Path::new("models/transformer-xl"))?;
//! assert!(f.loss_f32 < f.loss_f32_no_memory);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{max_abs, memory_figures, stored_params, FamilyFigures, TaskMetric};
use crate::array::{Array, Data};
use crate::convert::{self, Calibration, Options};
use crate::emit::dtypes::QuantMode;
use crate::import::{Bounds, OnnxModel};
use crate::{host, verify};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::path::Path;

/// Everything measured about a Transformer-XL folder.
#[derive(Debug, Clone, Serialize)]
pub struct XlFigures {
    /// Real-valued weights stored in the f32 file.
    pub params: usize,
    /// f32 file bytes.
    pub flash_f32: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// int8 arena bytes.
    pub arena_int8: usize,
    /// Lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// State bytes (per-layer memory and its validity).
    pub state_int8: usize,
    /// Segment length (tokens per call).
    pub seg: usize,
    /// MACs of one `forward` (one segment) of the int8 file.
    pub macs_per_segment: u64,
    /// Fused `Attention` ops with the XL relative term in the int8 file.
    pub fused_xl_attention_ops: usize,
    /// Consecutive golden segments compared.
    pub golden_segments: usize,
    /// f32 `.mote` (state carried in its session) vs tract (state passed explicitly), max-abs
    /// over the golden segments.
    pub f32_vs_tract_max_abs: f32,
    /// f32 `.mote` vs the training framework's golden logits (memory carried).
    pub f32_vs_candle_max_abs: f32,
    /// Held-out positions scored.
    pub heldout_positions: usize,
    /// Held-out loss, memory carried, f32 file (nats/char).
    pub loss_f32: f64,
    /// Held-out loss, memory carried, int8 file.
    pub loss_int8: f64,
    /// Held-out loss, memory reset before every segment, f32 file.
    pub loss_f32_no_memory: f64,
    /// Held-out loss, memory reset before every segment, int8 file.
    pub loss_int8_no_memory: f64,
    /// Greedy accuracy on recalled characters, memory carried, f32 / int8.
    pub recall_accuracy: (f64, f64),
    /// Greedy accuracy on recalled characters, memory reset, f32 / int8.
    pub recall_accuracy_no_memory: (f64, f64),
    /// Next-char argmax agreement of int8 with f32 (memory carried).
    pub top1_agreement: f64,
    /// Unigram / bigram baselines from `train_report.json`.
    pub baselines: (f64, f64),
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
}

impl XlFigures {
    /// The report row: task metric = held-out next-char loss with memory carried.
    pub fn summary(&self) -> FamilyFigures {
        family_row!(
            self,
            self.macs_per_segment / self.seg.max(1) as u64,
            TaskMetric { name: "loss nats/char".into(), f32: self.loss_f32, int8: self.loss_int8 }
        )
    }
}

/// Options for converting the zoo Transformer-XL: fixed shapes, calibration from
/// consecutive segments in `calib/` (run in one session), no decode entry.
pub fn xl_options(dir: &Path, quant: QuantMode) -> Options {
    Options {
        quant,
        bounds: Bounds::new(),
        calibration: Some(Calibration::Dir(dir.join("calib"))),
        decode: false,
        extra_entries: Vec::new(),
    }
}

/// Held-out evaluation of a segment-step `.mote` LM.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEval {
    /// Mean next-char loss (nats).
    pub loss: f64,
    /// Positions scored.
    pub positions: usize,
    /// Greedy accuracy at the positions `recall` marks.
    pub recall_accuracy: f64,
    /// Argmax at every position, row-major.
    pub predictions: Vec<usize>,
}

fn ints(a: &Array) -> Result<&[i64]> {
    match &a.data {
        Data::I64(v) => Ok(v),
        Data::F32(_) => bail!("expected an integer array"),
    }
}

/// Scores `forward` of a segment-step LM on streams `[N, K·S + 1]`: each row runs as `K`
/// consecutive calls of `S` tokens in one session (`memory`) or in a fresh session each.
/// `recall [N, K·S]` marks the targets counted in the recall accuracy.
pub fn stream_eval(bytes: &[u8], rows: &Array, recall: &Array, seg: usize, memory: bool) -> Result<StreamEval> {
    let (tokens, marks) = (ints(rows)?, ints(recall)?);
    let [n, w] = rows.shape[..] else { bail!("held-out streams must be [N, K*S+1], got {:?}", rows.shape) };
    if (w - 1) % seg != 0 || recall.shape != [n, w - 1] {
        bail!("held-out streams {:?} / recall mask {:?} do not fit segments of {seg}", rows.shape, recall.shape);
    }
    let (mut total, mut hits, mut marked) = (0f64, 0usize, 0usize);
    let mut predictions = Vec::with_capacity(n * (w - 1));
    for (i, row) in tokens.chunks(w).enumerate() {
        let calls: Vec<Vec<Array>> =
            row[..w - 1].chunks(seg).map(|c| vec![Array::i64(vec![1, seg], c.to_vec())]).collect();
        let outs = if memory {
            host::run_sequence_observed(bytes, "forward", &calls, |_, _| {})?
        } else {
            calls.iter().map(|c| host::run(bytes, "forward", c)).collect::<Result<Vec<_>>>()?
        };
        let logits: Vec<f32> = outs.into_iter().flat_map(|mut o| o.remove(0).to_f32()).collect();
        let vocab = logits.len() / (w - 1);
        for (p, l) in logits.chunks(vocab).enumerate() {
            let target = row[p + 1] as usize;
            let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = max as f64 + l.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln();
            total += lse - l[target] as f64;
            let argmax = l.iter().enumerate().fold(0, |b, (j, &x)| if x > l[b] { j } else { b });
            if marks[i * (w - 1) + p] != 0 {
                marked += 1;
                hits += usize::from(argmax == target);
            }
            predictions.push(argmax);
        }
    }
    let positions = n * (w - 1);
    Ok(StreamEval {
        loss: total / positions as f64,
        positions,
        recall_accuracy: hits as f64 / marked.max(1) as f64,
        predictions,
    })
}

/// Max-abs of the f32 `.mote` (state carried by its session) against tract (state passed in
/// and taken out explicitly) and against the golden logits, over the consecutive golden
/// segments from a fresh state. Returns (vs tract, vs golden, segments).
pub fn golden_parity(onnx: &Path, f32_bytes: &[u8], dir: &Path) -> Result<(f32, f32, usize)> {
    let mut inputs = Vec::new();
    let mut golden = Vec::new();
    while dir.join(format!("golden/input_{}.npy", inputs.len())).exists() {
        let k = inputs.len();
        inputs.push(vec![Array::read_npy(&dir.join(format!("golden/input_{k}.npy")))?]);
        golden.push(Array::read_npy(&dir.join(format!("golden/output_{k}.npy")))?.to_f32());
    }
    if inputs.is_empty() {
        bail!("{}: no golden inputs", dir.display());
    }
    let mote_out = host::run_sequence_observed(f32_bytes, "forward", &inputs, |_, _| {})?;
    let g = OnnxModel::load(onnx)?.instantiate(&Bounds::new())?;
    // tract: every input after the tokens is a state, zero in a fresh session.
    let mut states: Vec<Array> = g.inputs[1..]
        .iter()
        .map(|&t| Array::f32(g.tensors[t].shape.clone(), vec![0.0; g.tensors[t].numel()]))
        .collect();
    let (mut vs_tract, mut vs_golden) = (0f32, 0f32);
    for (k, call) in inputs.iter().enumerate() {
        let mut feed = call.clone();
        feed.extend(states.iter().cloned());
        let mut out = verify::tract_reference(onnx, &feed)?;
        if out.len() != 1 + states.len() {
            bail!("tract returned {} outputs for {} states", out.len(), states.len());
        }
        let got = mote_out[k][0].to_f32();
        vs_tract = vs_tract.max(max_abs(&got, &out[0].to_f32()));
        vs_golden = vs_golden.max(max_abs(&got, &golden[k]));
        states = out.split_off(1);
    }
    Ok((vs_tract, vs_golden, inputs.len()))
}

/// Measures the Transformer-XL family in `dir` (`models/transformer-xl`).
pub fn evaluate_xl(dir: &Path) -> Result<XlFigures> {
    let onnx = dir.join("model.onnx");
    let f32m = convert::convert(&onnx, &xl_options(dir, QuantMode::F32))?;
    let i8m = convert::convert(&onnx, &xl_options(dir, QuantMode::Int8))?;
    let (vs_tract, vs_candle, golden_segments) = golden_parity(&onnx, &f32m.bytes, dir)?;

    let rows = Array::read_npy(&dir.join("heldout.npy")).context("held-out streams")?;
    let recall = Array::read_npy(&dir.join("heldout_recall.npy")).context("held-out recall mask")?;
    let seg = Array::read_npy(&dir.join("golden/input_0.npy"))?
        .shape
        .get(1)
        .copied()
        .ok_or_else(|| anyhow!("bad golden input"))?;
    let e32 = stream_eval(&f32m.bytes, &rows, &recall, seg, true)?;
    let e8 = stream_eval(&i8m.bytes, &rows, &recall, seg, true)?;
    let n32 = stream_eval(&f32m.bytes, &rows, &recall, seg, false)?;
    let n8 = stream_eval(&i8m.bytes, &rows, &recall, seg, false)?;
    let same = e32.predictions.iter().zip(&e8.predictions).filter(|(a, b)| a == b).count();

    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("train_report.json")).context("reading train_report.json")?,
    )?;
    let committed = std::fs::read(dir.join("model.int8.mote")).unwrap_or_default();
    let (flash_f32, flash_int8, arena_int8, lower_bound_int8, state_int8) = memory_figures(&f32m, &i8m);
    let forward = i8m.entry_macs("forward");
    Ok(XlFigures {
        params: stored_params(&f32m.bytes)?,
        flash_f32,
        flash_int8,
        arena_int8,
        lower_bound_int8,
        state_int8,
        seg,
        macs_per_segment: forward,
        fused_xl_attention_ops: i8m.inspection.ops.iter().filter(|o| o.op.starts_with("Attention")).count(),
        golden_segments,
        f32_vs_tract_max_abs: vs_tract,
        f32_vs_candle_max_abs: vs_candle,
        heldout_positions: e32.positions,
        loss_f32: e32.loss,
        loss_int8: e8.loss,
        loss_f32_no_memory: n32.loss,
        loss_int8_no_memory: n8.loss,
        recall_accuracy: (e32.recall_accuracy, e8.recall_accuracy),
        recall_accuracy_no_memory: (n32.recall_accuracy, n8.recall_accuracy),
        top1_agreement: same as f64 / e32.predictions.len().max(1) as f64,
        baselines: (report["unigram_loss"].as_f64().unwrap_or(0.0), report["bigram_loss"].as_f64().unwrap_or(0.0)),
        committed_int8_up_to_date: committed == i8m.bytes,
    })
}
