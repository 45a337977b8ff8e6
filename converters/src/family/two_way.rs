//! A flow folder's two-entry `.mote`: `forward.onnx` converted with `inverse.onnx` as the second
//! entry `inverse`, so both directions share one file and their weights are stored once. The
//! coupling flows, the planar flow and Glow measure this file the same way: its size against
//! two separate files, its memory and MACs, its parity with tract and candle on the golden
//! files, and whether the committed files are current.

use super::{max_abs, stored_params, FamilyFigures, TaskMetric};
use crate::array::Array;
use crate::convert::{self, Calibration, Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::import::Bounds;
use crate::verify;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::path::Path;

/// The figures of a flow folder's two-entry `.mote` (f32 and int8), whatever the family.
#[derive(Debug, Clone, Serialize)]
pub struct TwoWayFile {
    /// Real-valued weights stored in the f32 file (weights shared by both entries count once).
    pub params: usize,
    /// Entry points of the f32 file.
    pub entries: Vec<String>,
    /// f32 file bytes (both entries).
    pub flash_f32: usize,
    /// Sum of the f32 file bytes of `forward.onnx` and `inverse.onnx` converted separately.
    pub flash_f32_separate: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// f32 arena bytes (peak over entries).
    pub arena_f32: usize,
    /// Largest per-entry lower bound of the f32 plan.
    pub lower_bound_f32: usize,
    /// int8 arena bytes (peak over entries).
    pub arena_int8: usize,
    /// Largest per-entry lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// State bytes (0: flows keep no state).
    pub state_int8: usize,
    /// Batch bound `n` the files were converted for.
    pub batch: usize,
    /// MACs of one `forward` call on a full batch.
    pub macs_forward: u64,
    /// MACs of one `inverse` call on a full batch.
    pub macs_inverse: u64,
    /// f32 `.mote` against tract on the golden inputs (both entries, all outputs), max-abs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 runtime `log_prob` against candle's golden values, max-abs (nats per sample).
    pub log_prob_vs_candle_max_abs: f32,
    /// f32 runtime `z` and `inverse` samples against candle's golden values, max-abs.
    pub latent_vs_candle_max_abs: f32,
    /// Whether the committed `model.mote` equals a fresh f32 conversion byte for byte.
    pub committed_f32_up_to_date: bool,
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
}

/// The two-entry file of a flow folder converted in f32 and int8, with its figures.
pub struct TwoWayConversion {
    /// The figures of the file.
    pub file: TwoWayFile,
    /// The f32 conversion, for the family's own runtime measurements.
    pub f32: Converted,
    /// The int8 conversion.
    pub int8: Converted,
}

impl TwoWayFile {
    /// Converts the flow folder `dir` (`forward.onnx`, `inverse.onnx`, `calib/`, `golden/`) in f32
    /// and int8 with [`flow_options`], measures the files and compares the f32 file with tract
    /// and candle's golden values, and both with the committed `model.mote` / `model.int8.mote`.
    pub fn measure(dir: &Path) -> Result<TwoWayConversion> {
        let (fwd_onnx, inv_onnx) = (dir.join("forward.onnx"), dir.join("inverse.onnx"));
        let f32m = convert::convert(&fwd_onnx, &flow_options(dir, QuantMode::F32)?)?;
        let i8m = convert::convert(&fwd_onnx, &flow_options(dir, QuantMode::Int8)?)?;
        let single = |p: &Path| -> Result<usize> {
            let o = Options { extra_entries: Vec::new(), ..flow_options(dir, QuantMode::F32)? };
            Ok(convert::convert(p, &o)?.bytes.len())
        };
        let (f32_vs_tract_max_abs, log_prob_vs_candle_max_abs, latent_vs_candle_max_abs) =
            golden_parity(dir, &f32m.bytes)?;
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_default();
        let ((arena_f32, lower_bound_f32), (arena_int8, lower_bound_int8)) =
            (f32m.arena_and_lower_bound(), i8m.arena_and_lower_bound());
        let file = TwoWayFile {
            params: stored_params(&f32m.bytes)?,
            entries: f32m.inspection.entries.iter().map(|e| e.entry.clone()).collect(),
            flash_f32: f32m.bytes.len(),
            flash_f32_separate: single(&fwd_onnx)? + single(&inv_onnx)?,
            flash_int8: i8m.bytes.len(),
            arena_f32,
            lower_bound_f32,
            arena_int8,
            lower_bound_int8,
            state_int8: i8m.inspection.state_bytes,
            batch: super::max_batch_of(&fwd_onnx)?,
            macs_forward: i8m.entry_macs("forward"),
            macs_inverse: i8m.entry_macs("inverse"),
            f32_vs_tract_max_abs,
            log_prob_vs_candle_max_abs,
            latent_vs_candle_max_abs,
            committed_f32_up_to_date: read("model.mote") == f32m.bytes,
            committed_int8_up_to_date: read("model.int8.mote") == i8m.bytes,
        };
        Ok(TwoWayConversion { file, f32: f32m, int8: i8m })
    }

    /// The report row of a flow, given the test NLL in nats/dim the family measured with the f32
    /// and the int8 file (the task metric; lower is better). MACs are per sample of `forward`.
    pub fn summary(&self, nll_f32: f64, nll_int8: f64) -> FamilyFigures {
        let metric = TaskMetric { name: "NLL nats/dim".into(), f32: nll_f32, int8: nll_int8 };
        family_row!(self, self.macs_forward / self.batch.max(1) as u64, metric)
    }
}

/// Options converting `forward.onnx` of a flow folder with `inverse.onnx` as the second entry
/// `inverse`: `n` bounded by the exported batch, int8 calibration of `forward` from `calib/`
/// (training batches) and of `inverse` from N(0, 1) latents (the converter's default for
/// extra entries).
pub fn flow_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    let bounds: Bounds = [("n".to_string(), super::max_batch_of(&dir.join("forward.onnx"))?)].into_iter().collect();
    Ok(Options {
        quant,
        bounds,
        calibration: Some(Calibration::Dir(dir.join("calib"))),
        decode: false,
        extra_entries: vec![("inverse".into(), dir.join("inverse.onnx"))],
    })
}

/// Golden parity of a flow folder's f32 file `f32_bytes`: `forward` on `golden/x.npy` and
/// `inverse` on `golden/latent.npy`, on the runtime. Returns the max-abs differences
/// (against tract on both ONNX graphs, all outputs; of `log_prob` against candle's
/// `log_prob.npy`; of `z` and the samples against candle's `z.npy` and `sample.npy`).
pub(crate) fn golden_parity(dir: &Path, f32_bytes: &[u8]) -> Result<(f32, f32, f32)> {
    let golden = |name: &str| Array::read_npy(&dir.join("golden").join(name));
    let (x, latent) = (golden("x.npy")?, golden("latent.npy")?);
    let fwd = host::run(f32_bytes, "forward", std::slice::from_ref(&x))?;
    let inv = host::run(f32_bytes, "inverse", std::slice::from_ref(&latent))?;
    let tf = verify::tract_reference(&dir.join("forward.onnx"), std::slice::from_ref(&x))?;
    let ti = verify::tract_reference(&dir.join("inverse.onnx"), std::slice::from_ref(&latent))?;
    if fwd.len() != 2 || tf.len() != 2 || inv.is_empty() || ti.is_empty() {
        bail!("{}: forward must give (z, log_prob) and inverse x", dir.display());
    }
    let (z, log_prob, sample) = (fwd[0].to_f32(), fwd[1].to_f32(), inv[0].to_f32());
    let vs_tract =
        max_abs(&z, &tf[0].to_f32()).max(max_abs(&log_prob, &tf[1].to_f32())).max(max_abs(&sample, &ti[0].to_f32()));
    let log_prob_vs_candle = max_abs(&log_prob, &golden("log_prob.npy")?.to_f32());
    let latent_vs_candle =
        max_abs(&z, &golden("z.npy")?.to_f32()).max(max_abs(&sample, &golden("sample.npy")?.to_f32()));
    Ok((vs_tract, log_prob_vs_candle, latent_vs_candle))
}

/// Runs `entry` over the rows of `data` in batches shaped `shape` (its first dim the batch `n`,
/// the last batch padded with zeros), returning every output with the padding rows dropped,
/// each flattened.
pub fn run_rows(bytes: &[u8], entry: &str, data: &[f32], shape: &[usize]) -> Result<Vec<Vec<f32>>> {
    let n = shape.first().copied().ok_or_else(|| anyhow!("empty input shape"))?;
    let row: usize = shape[1..].iter().product();
    let mut outs: Vec<Vec<f32>> = Vec::new();
    for chunk in data.chunks(n * row.max(1)) {
        let mut batch = chunk.to_vec();
        batch.resize(n * row, 0.0);
        let got = host::run(bytes, entry, &[Array::f32(shape.to_vec(), batch)])?;
        outs.resize(got.len(), Vec::new());
        for (o, a) in outs.iter_mut().zip(got) {
            let v = a.to_f32();
            let per_row = v.len() / n.max(1);
            o.extend_from_slice(&v[..chunk.len() / row.max(1) * per_row]);
        }
    }
    Ok(outs)
}
