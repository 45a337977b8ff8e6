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

use super::two_way::{run_rows, TwoWayConversion, TwoWayFile};
use super::FamilyFigures;
use crate::array::Array;
use crate::zoo::coupling::train::{self as ft, max_abs_points, nll_per_dim, FlowReport, BASELINE_SEED, LATENT_SEED};
use crate::zoo::coupling::CouplingKind;
use crate::zoo::toy2d::{energy_distance, flatten, unflatten, Gaussian2, Point};
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;

/// Everything measured about a coupling-flow folder (`models/nice`, `models/realnvp`).
#[derive(Debug, Clone, Serialize)]
pub struct FlowFigures {
    /// The two-entry file: size, memory, MACs, golden parity, freshness.
    #[serde(flatten)]
    pub file: TwoWayFile,
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
        self.file.summary(self.nll_f32, self.nll_int8)
    }
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
    let run = |entry: &str, points: &[Point]| run_rows(bytes, entry, &flatten(points), &[n, 2]);
    let fwd = run("forward", test)?;
    let [z, lp] = &fwd[..] else { bail!("forward must have two outputs (z, log_prob), has {}", fwd.len()) };
    let z = unflatten(z);
    let back = unflatten(&run("inverse", &z)?.remove(0));
    let samples = unflatten(&run("inverse", latents)?.remove(0));
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
    let TwoWayConversion { file, f32: f32m, int8: i8m } = TwoWayFile::measure(dir)?;
    let test = unflatten(&Array::read_npy(&dir.join("data/test.npy"))?.to_f32());
    let latents = ft::latents(test.len(), LATENT_SEED);
    let r32 = run_file(&f32m.bytes, &test, &latents, file.batch)?;
    let r8 = run_file(&i8m.bytes, &test, &latents, file.batch)?;
    let gauss = Gaussian2::fit(train);
    let samples_baseline = gauss.sample(test.len(), BASELINE_SEED);
    let floor = crate::zoo::toy2d::two_moons(test.len(), noise, ft::FLOOR_SEED);
    Ok(FlowFigures {
        file,
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
        samples_f32: r32.samples,
        samples_int8: r8.samples,
        samples_baseline,
        latents_f32: r32.z,
        test,
    })
}
