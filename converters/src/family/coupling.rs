//! Figures of the coupling-flow families (NICE, RealNVP) measured through the converter and
//! the runtime: both directions as two entries of one `.mote` (weights stored once), exact
//! log-likelihood on held-out data (f32 and int8) against a fitted Gaussian, sample quality
//! (energy distance of runtime samples to held-out data), invertibility and parity with tract
//! and candle.
//!
//! ```no_run
//! use mote_converters::zoo::coupling::CouplingKind;
//! let f = mote_converters::family::evaluate_flow(std::path::Path::new("models/realnvp"), CouplingKind::RealNvp)?;
//! assert!(f.nll_f32 < f.baseline_nll);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{max_abs, stored_params, FamilyFigures, TaskMetric};
use crate::array::Array;
use crate::convert::{self, Calibration, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::import::Bounds;
use crate::verify;
use crate::zoo::coupling::train::{self as ft, max_abs_points, nll_per_dim, FlowReport, BASELINE_SEED, LATENT_SEED};
use crate::zoo::coupling::CouplingKind;
use crate::zoo::toy2d::{energy_distance, flatten, unflatten, Gaussian2, Point};
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;

/// Everything measured about a coupling-flow folder (`models/nice`, `models/realnvp`).
#[derive(Debug, Clone, Serialize)]
pub struct FlowFigures {
    /// Real-valued weights stored in the f32 file (shared by both entries, counted once).
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
    /// f32 runtime `log_prob` against candle's golden values, max-abs (nats).
    pub log_prob_vs_candle_max_abs: f32,
    /// f32 runtime `z` and `inverse` samples against candle's golden values, max-abs.
    pub latent_vs_candle_max_abs: f32,
    /// max |inverse(forward(x)) − x| over the test set on the runtime, f32 file.
    pub invertibility_f32: f32,
    /// The same with the int8 file.
    pub invertibility_int8: f32,
    /// Mean |inverse(forward(x)) − x| per coordinate with the int8 file.
    pub invertibility_int8_mean: f64,
    /// Test points scored.
    pub test_points: usize,
    /// Test NLL (nats/dim) in candle, from the training report.
    pub nll_candle: f64,
    /// Test NLL (nats/dim) of the f32 file on the runtime.
    pub nll_f32: f64,
    /// Test NLL (nats/dim) of the int8 file on the runtime.
    pub nll_int8: f64,
    /// Test NLL (nats/dim) of a full-covariance Gaussian fitted on the training set.
    pub baseline_nll: f64,
    /// Energy distance to the test set of runtime samples (inverse of seeded latents), f32 file.
    pub energy_f32: f64,
    /// The same, int8 file.
    pub energy_int8: f64,
    /// The same for the Gaussian baseline's samples.
    pub energy_baseline: f64,
    /// Energy distance of a fresh data draw to the test set (noise floor of the metric).
    pub energy_floor: f64,
    /// Whether the committed `model.mote` equals a fresh f32 conversion byte for byte.
    pub committed_f32_up_to_date: bool,
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
    /// Runtime samples of the f32 file (for plots; not serialised).
    #[serde(skip)]
    pub samples_f32: Vec<Point>,
    /// Runtime samples of the int8 file.
    #[serde(skip)]
    pub samples_int8: Vec<Point>,
    /// The Gaussian baseline's samples.
    #[serde(skip)]
    pub samples_baseline: Vec<Point>,
    /// The test set.
    #[serde(skip)]
    pub test: Vec<Point>,
    /// The test set mapped to latents by the f32 file.
    #[serde(skip)]
    pub latents_f32: Vec<Point>,
}

impl FlowFigures {
    /// The report row: task metric = test NLL in nats/dim (lower is better); MACs per point.
    pub fn summary(&self) -> FamilyFigures {
        let metric = TaskMetric { name: "NLL nats/dim".into(), f32: self.nll_f32, int8: self.nll_int8 };
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

/// Runs `entry` over `points` in batches of `n` (the last one padded), returning every output
/// (rows past `points.len()` dropped), each flattened.
pub fn run_batched(bytes: &[u8], entry: &str, points: &[Point], n: usize) -> Result<Vec<Vec<f32>>> {
    let mut outs: Vec<Vec<f32>> = Vec::new();
    for chunk in points.chunks(n) {
        let mut batch = chunk.to_vec();
        batch.resize(n, [0.0, 0.0]);
        let got = host::run(bytes, entry, &[Array::f32(vec![n, 2], flatten(&batch))])?;
        outs.resize(got.len(), Vec::new());
        for (o, a) in outs.iter_mut().zip(got) {
            let v = a.to_f32();
            let per_row = v.len() / n;
            o.extend_from_slice(&v[..chunk.len() * per_row]);
        }
    }
    Ok(outs)
}

/// The runtime measurements of one file.
struct Run {
    nll: f64,
    z: Vec<Point>,
    invertibility: f32,
    invertibility_mean: f64,
    samples: Vec<Point>,
}

fn run_file(bytes: &[u8], test: &[Point], latents: &[Point], n: usize) -> Result<Run> {
    let fwd = run_batched(bytes, "forward", test, n)?;
    let [z, lp] = &fwd[..] else { bail!("forward must have two outputs (z, log_prob), has {}", fwd.len()) };
    let z = unflatten(z);
    let back = unflatten(&run_batched(bytes, "inverse", &z, n)?.remove(0));
    let samples = unflatten(&run_batched(bytes, "inverse", latents, n)?.remove(0));
    let total: f64 = back.iter().zip(test).map(|(p, q)| ((p[0] - q[0]).abs() + (p[1] - q[1]).abs()) as f64).sum();
    Ok(Run {
        nll: nll_per_dim(lp),
        invertibility: max_abs_points(&back, test),
        invertibility_mean: total / (2 * test.len().max(1)) as f64,
        z,
        samples,
    })
}

/// Measures the flow family `kind` in `dir`.
pub fn evaluate_flow(dir: &Path, kind: CouplingKind) -> Result<FlowFigures> {
    let report = FlowReport::read(dir)?;
    if report.options.kind != kind {
        bail!("{} holds a {:?} flow, not {kind:?}", dir.display(), report.options.kind);
    }
    let o = &report.options;
    measure_2d_flow(dir, report.test_nll, &o.train_set(), o.noise)
}

/// Measures a 2-D two-moons flow folder (`forward.onnx` + `inverse.onnx`, `golden/`,
/// `data/test.npy`) through the converter and the runtime, given candle's test NLL, the
/// training set (for the fitted-Gaussian baseline) and the data noise (for the floor sample).
pub(crate) fn measure_2d_flow(dir: &Path, nll_candle: f64, train: &[Point], noise: f32) -> Result<FlowFigures> {
    let n = super::max_batch_of(&dir.join("forward.onnx"))?;
    let (fwd_onnx, inv_onnx) = (dir.join("forward.onnx"), dir.join("inverse.onnx"));
    let f32m = convert::convert(&fwd_onnx, &flow_options(dir, QuantMode::F32)?)?;
    let i8m = convert::convert(&fwd_onnx, &flow_options(dir, QuantMode::Int8)?)?;
    let single = |p: &Path| -> Result<usize> {
        let o = Options { extra_entries: Vec::new(), ..flow_options(dir, QuantMode::F32)? };
        Ok(convert::convert(p, &o)?.bytes.len())
    };
    let flash_f32_separate = single(&fwd_onnx)? + single(&inv_onnx)?;
    let entries = f32m.inspection.entries.iter().map(|e| e.entry.clone()).collect();

    // Golden parity: forward on golden/x.npy, inverse on golden/latent.npy.
    let gx = Array::read_npy(&dir.join("golden/x.npy"))?;
    let glat = Array::read_npy(&dir.join("golden/latent.npy"))?;
    let fwd = host::run(&f32m.bytes, "forward", std::slice::from_ref(&gx))?;
    let inv = host::run(&f32m.bytes, "inverse", std::slice::from_ref(&glat))?;
    let tf = verify::tract_reference(&fwd_onnx, std::slice::from_ref(&gx))?;
    let ti = verify::tract_reference(&inv_onnx, std::slice::from_ref(&glat))?;
    let mut vs_tract = max_abs(&fwd[0].to_f32(), &tf[0].to_f32()).max(max_abs(&fwd[1].to_f32(), &tf[1].to_f32()));
    vs_tract = vs_tract.max(max_abs(&inv[0].to_f32(), &ti[0].to_f32()));
    let golden = |name: &str| -> Result<Vec<f32>> { Ok(Array::read_npy(&dir.join("golden").join(name))?.to_f32()) };
    let log_prob_vs_candle = max_abs(&fwd[1].to_f32(), &golden("log_prob.npy")?);
    let latent_vs_candle =
        max_abs(&fwd[0].to_f32(), &golden("z.npy")?).max(max_abs(&inv[0].to_f32(), &golden("sample.npy")?));

    let test = unflatten(&Array::read_npy(&dir.join("data/test.npy"))?.to_f32());
    let latents = ft::latents(test.len(), LATENT_SEED);
    let r32 = run_file(&f32m.bytes, &test, &latents, n)?;
    let r8 = run_file(&i8m.bytes, &test, &latents, n)?;
    let gauss = Gaussian2::fit(train);
    let samples_baseline = gauss.sample(test.len(), BASELINE_SEED);
    let floor = crate::zoo::toy2d::two_moons(test.len(), noise, ft::FLOOR_SEED);

    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_default();
    let ((arena_f32, lower_bound_f32), (arena_int8, lower_bound_int8)) =
        (f32m.arena_and_lower_bound(), i8m.arena_and_lower_bound());
    Ok(FlowFigures {
        params: stored_params(&f32m.bytes)?,
        entries,
        flash_f32: f32m.bytes.len(),
        flash_f32_separate,
        flash_int8: i8m.bytes.len(),
        arena_f32,
        lower_bound_f32,
        arena_int8,
        lower_bound_int8,
        state_int8: i8m.inspection.state_bytes,
        batch: n,
        macs_forward: i8m.entry_macs("forward"),
        macs_inverse: i8m.entry_macs("inverse"),
        f32_vs_tract_max_abs: vs_tract,
        log_prob_vs_candle_max_abs: log_prob_vs_candle,
        latent_vs_candle_max_abs: latent_vs_candle,
        invertibility_f32: r32.invertibility,
        invertibility_int8: r8.invertibility,
        invertibility_int8_mean: r8.invertibility_mean,
        test_points: test.len(),
        nll_candle,
        nll_f32: r32.nll,
        nll_int8: r8.nll,
        baseline_nll: gauss.nll_per_dim(&test),
        energy_f32: energy_distance(&r32.samples, &test),
        energy_int8: energy_distance(&r8.samples, &test),
        energy_baseline: energy_distance(&samples_baseline, &test),
        energy_floor: energy_distance(&floor, &test),
        committed_f32_up_to_date: read("model.mote") == f32m.bytes,
        committed_int8_up_to_date: read("model.int8.mote") == i8m.bytes,
        samples_f32: r32.samples,
        samples_int8: r8.samples,
        samples_baseline,
        latents_f32: r32.z,
        test,
    })
}
