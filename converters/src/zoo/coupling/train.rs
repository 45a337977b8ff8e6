//! Training a coupling flow (NICE or RealNVP) on two moons by maximum likelihood and writing its
//! artefacts: `forward.onnx`, `inverse.onnx`, `data/test.npy`, `golden/` and `calib/`.
//!
//! ```no_run
//! use mote_converters::zoo::coupling::{train_flow, write_flow_card, CouplingKind, FlowTrainOptions};
//! let out = std::path::Path::new("models/realnvp");
//! let report = train_flow(out, &FlowTrainOptions::new(CouplingKind::RealNvp))?;
//! write_flow_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{CouplingFlow, CouplingKind, FlowConfig};
use crate::array::Array;
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::toy2d::{self, energy_distance, flatten, unflatten, Gaussian2, Point};
use crate::zoo::trainer::{schedule_of, Trainer};

/// Seed of the training set.
pub const TRAIN_SEED: u64 = 0x7a1;
/// Seed of the held-out test set (`data/test.npy`).
pub const TEST_SEED: u64 = 0x7e57;
/// Seed of [`mote::rng::Rng`] drawing the latents the samplers are scored on.
pub const LATENT_SEED: u64 = 0x1a7e;
/// Seed of the Gaussian baseline's samples.
pub const BASELINE_SEED: u64 = 0xba5e;
/// Seed of a second, independent draw of the data: its energy distance to the test set is the
/// noise floor of the sample-quality metric.
pub const FLOOR_SEED: u64 = 0xf100;

/// Training budget, data and settings. [`FlowTrainOptions::new`] is the real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowTrainOptions {
    /// NICE or RealNVP.
    pub kind: CouplingKind,
    /// Optimiser steps.
    pub steps: usize,
    /// Points per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay on weight matrices.
    pub weight_decay: f64,
    /// Seed of the initialisation and the batch order.
    pub seed: u64,
    /// Two-moons noise (standard deviation before standardisation).
    pub noise: f32,
    /// Training points (a fixed set).
    pub train_points: usize,
    /// Held-out test points (NLL and the energy-distance reference).
    pub test_points: usize,
    /// No progress bar.
    pub quiet: bool,
}

impl FlowTrainOptions {
    /// The zoo budget for `kind`.
    pub fn new(kind: CouplingKind) -> Self {
        Self {
            kind,
            steps: 6000,
            batch_size: 256,
            lr: 3e-3,
            warmup: 100,
            weight_decay: 1e-4,
            seed: 42,
            noise: 0.1,
            train_points: 16384,
            test_points: 2048,
            quiet: false,
        }
    }

    /// The training set.
    pub fn train_set(&self) -> Vec<Point> {
        toy2d::two_moons(self.train_points, self.noise, TRAIN_SEED)
    }

    /// The held-out test set.
    pub fn test_set(&self) -> Vec<Point> {
        toy2d::two_moons(self.test_points, self.noise, TEST_SEED)
    }
}

/// What training measured in candle; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowReport {
    /// `nice` or `realnvp`.
    pub family: String,
    /// Architecture.
    pub config: FlowConfig,
    /// Training settings.
    pub options: FlowTrainOptions,
    /// Trainable scalars.
    pub params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training NLL at the end (nats/dim).
    pub final_train_nll: f64,
    /// `(step, smoothed train NLL nats/dim)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Test NLL of the candle model (nats/dim).
    pub test_nll: f64,
    /// Test NLL of a full-covariance Gaussian fitted on the training set (nats/dim).
    pub baseline_nll: f64,
    /// Energy distance of the candle model's samples (latents from [`LATENT_SEED`]) to the test set.
    pub energy_candle: f64,
    /// Energy distance of the Gaussian baseline's samples to the test set.
    pub energy_baseline: f64,
    /// Energy distance of a fresh data draw to the test set (the metric's noise floor).
    pub energy_floor: f64,
    /// max |inverse(forward(x)) - x| in candle on the test set.
    pub invertibility_candle: f32,
    /// Max |tract − candle| over the golden outputs of both exported graphs.
    pub onnx_vs_candle_max_abs: f32,
}

impl FlowReport {
    /// Reads `train_report.json` from a family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// `n` standard-normal latents drawn with the runtime's [`mote::rng::Rng::gaussian`] from `seed`
/// (what a device would draw to sample).
pub fn latents(n: usize, seed: u64) -> Vec<Point> {
    let mut r = mote::rng::Rng::new(seed);
    (0..n).map(|_| [r.gaussian(), r.gaussian()]).collect()
}

fn tensor(points: &[Point]) -> Result<Tensor> {
    Ok(Tensor::from_vec(flatten(points), (points.len(), 2), &Device::Cpu)?)
}

/// Candle `(z, log_prob)` of `points`.
pub fn candle_forward(flow: &CouplingFlow, points: &[Point]) -> Result<(Vec<Point>, Vec<f32>)> {
    let (z, lp) = flow.forward(&tensor(points)?)?;
    Ok((unflatten(&tensor_data(&z)?), tensor_data(&lp)?))
}

/// Candle inverse of `latents`.
pub fn candle_inverse(flow: &CouplingFlow, latents: &[Point]) -> Result<Vec<Point>> {
    Ok(unflatten(&tensor_data(&flow.inverse(&tensor(latents)?)?)?))
}

/// Mean NLL in nats/dim of log-probabilities of 2-D points.
pub fn nll_per_dim(log_probs: &[f32]) -> f64 {
    -log_probs.iter().map(|&v| v as f64).sum::<f64>() / (2.0 * log_probs.len().max(1) as f64)
}

/// Trains a flow and writes its artefacts to `out_dir`.
pub fn train_flow(out_dir: &Path, o: &FlowTrainOptions) -> Result<FlowReport> {
    let cfg = FlowConfig::new(o.kind);
    let flow = CouplingFlow::new(cfg, o.seed)?;
    let train = o.train_set();
    let test = o.test_set();

    let mut t = Trainer::new(flow.params(), o.kind.name(), schedule_of!(o))?.with_smoothing(0.97, 0.03);
    let mut rng = SplitMix64::new(o.seed ^ 0xba7c);
    for step in 0..o.steps {
        let lr = t.set_lr(step);
        let batch: Vec<Point> = (0..o.batch_size).map(|_| train[rng.below(train.len())]).collect();
        let (_, lp) = flow.forward(&tensor(&batch)?)?;
        let loss = (lp.mean_all()? * -0.5)?;
        t.apply(&loss)?;
        t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    let (train_seconds, final_train_nll, loss_curve) = t.finish("");

    let (z, lp) = candle_forward(&flow, &test)?;
    let back = candle_inverse(&flow, &z)?;
    let invertibility_candle = max_abs_points(&back, &test);
    let samples = candle_inverse(&flow, &latents(o.test_points, LATENT_SEED))?;
    let gauss = Gaussian2::fit(&train);
    let onnx_vs_candle_max_abs = write_artefacts(out_dir, &flow, o, &train, &test)?;
    Ok(FlowReport {
        family: o.kind.name().into(),
        config: cfg,
        options: o.clone(),
        params: flow.params().count(),
        train_seconds,
        final_train_nll,
        loss_curve,
        test_nll: nll_per_dim(&lp),
        baseline_nll: gauss.nll_per_dim(&test),
        energy_candle: energy_distance(&samples, &test),
        energy_baseline: energy_distance(&gauss.sample(o.test_points, BASELINE_SEED), &test),
        energy_floor: energy_distance(&toy2d::two_moons(o.test_points, o.noise, FLOOR_SEED), &test),
        invertibility_candle,
        onnx_vs_candle_max_abs,
    })
}

/// Max |a - b| over the coordinates of two point sets.
pub fn max_abs_points(a: &[Point], b: &[Point]) -> f32 {
    a.iter().zip(b).flat_map(|(p, q)| [(p[0] - q[0]).abs(), (p[1] - q[1]).abs()]).fold(0f32, f32::max)
}

pub(crate) fn points_array(points: &[Point]) -> Array {
    Array::f32(vec![points.len(), 2], flatten(points))
}

/// Writes both ONNX graphs, the test set, golden candle outputs on one batch and calibration
/// batches; returns tract vs candle max-abs over the golden outputs.
fn write_artefacts(
    out: &Path,
    flow: &CouplingFlow,
    o: &FlowTrainOptions,
    train: &[Point],
    test: &[Point],
) -> Result<f32> {
    let flow_dirs = FlowDirections {
        forward_onnx: flow.export_forward()?,
        inverse_onnx: flow.export_inverse()?,
        forward: &|x| candle_forward(flow, x),
        inverse: &|z| candle_inverse(flow, z),
    };
    write_flow_artefacts(out, &flow_dirs, flow.config().max_batch, o.seed, train, test)
}

/// Candle's data → (latents, log-probabilities) of a 2-D flow.
pub(crate) type DensityFn<'a> = &'a dyn Fn(&[Point]) -> Result<(Vec<Point>, Vec<f32>)>;

/// A trained 2-D flow as the artefact writer sees it: both exported graphs, and candle's
/// `forward` (points → latents, log-probabilities) and `inverse` (latents → points).
pub(crate) struct FlowDirections<'a> {
    /// `forward.onnx` bytes.
    pub forward_onnx: Vec<u8>,
    /// `inverse.onnx` bytes.
    pub inverse_onnx: Vec<u8>,
    /// Candle's data → (latent, log-probability).
    pub forward: DensityFn<'a>,
    /// Candle's latent → data.
    pub inverse: &'a dyn Fn(&[Point]) -> Result<Vec<Point>>,
}

/// Writes a 2-D flow folder: `forward.onnx`, `inverse.onnx`, `data/test.npy`, golden candle
/// outputs on the first batch of `n` points and latents (`golden/`), and 8 calibration batches
/// drawn from `train` with `seed` (`calib/`); returns tract vs candle max-abs on the golden
/// batch.
pub(crate) fn write_flow_artefacts(
    out: &Path,
    flow: &FlowDirections<'_>,
    n: usize,
    seed: u64,
    train: &[Point],
    test: &[Point],
) -> Result<f32> {
    for d in ["golden", "calib", "data"] {
        let _ = std::fs::remove_dir_all(out.join(d));
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    let (fwd, inv) = (out.join("forward.onnx"), out.join("inverse.onnx"));
    std::fs::write(&fwd, &flow.forward_onnx)?;
    std::fs::write(&inv, &flow.inverse_onnx)?;
    points_array(test).write_npy(&out.join("data/test.npy"))?;

    // Golden: the first test batch through forward, the first latent batch through inverse.
    let x = &test[..n];
    let (z, lp) = (flow.forward)(x)?;
    let lat = latents(n, LATENT_SEED);
    let sample = (flow.inverse)(&lat)?;
    points_array(x).write_npy(&out.join("golden/x.npy"))?;
    points_array(&z).write_npy(&out.join("golden/z.npy"))?;
    Array::f32(vec![n, 1], lp.clone()).write_npy(&out.join("golden/log_prob.npy"))?;
    points_array(&lat).write_npy(&out.join("golden/latent.npy"))?;
    points_array(&sample).write_npy(&out.join("golden/sample.npy"))?;
    let tf = crate::verify::tract_reference(&fwd, &[points_array(x)])?;
    let ti = crate::verify::tract_reference(&inv, &[points_array(&lat)])?;
    let mut worst = crate::family::max_abs(&tf[0].to_f32(), &flatten(&z));
    worst = worst.max(crate::family::max_abs(&tf[1].to_f32(), &lp));
    worst = worst.max(crate::family::max_abs(&ti[0].to_f32(), &flatten(&sample)));

    let mut r = SplitMix64::new(seed ^ 0xca11b);
    for i in 0..8 {
        let batch: Vec<Point> = (0..n).map(|_| train[r.below(train.len())]).collect();
        points_array(&batch).write_npy(&out.join(format!("calib/s{i}.npy")))?;
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_learns_and_writes_artefacts() -> Result<()> {
        for kind in [CouplingKind::Nice, CouplingKind::RealNvp] {
            let dir = std::env::temp_dir().join(format!("mote_zoo_{}_{}", kind.name(), std::process::id()));
            let o = FlowTrainOptions {
                steps: 150,
                batch_size: 128,
                warmup: 10,
                train_points: 2048,
                test_points: 256,
                quiet: true,
                ..FlowTrainOptions::new(kind)
            };
            let r = train_flow(&dir, &o)?;
            assert!(r.test_nll.is_finite() && r.test_nll < r.baseline_nll + 0.2, "{kind:?}: {}", r.test_nll);
            let first = r.loss_curve[0].1;
            assert!(r.final_train_nll < first - 0.05, "{kind:?} does not learn: {first} → {}", r.final_train_nll);
            assert!(r.invertibility_candle < 1e-4, "{kind:?}: {}", r.invertibility_candle);
            assert!(r.onnx_vs_candle_max_abs < 1e-4, "{kind:?}: {}", r.onnx_vs_candle_max_abs);
            for f in ["forward.onnx", "inverse.onnx", "data/test.npy", "golden/log_prob.npy", "calib/s7.npy"] {
                assert!(dir.join(f).exists(), "{f} missing");
            }
            super::super::write_flow_card(&dir, &r, "## extra\n")?;
            assert!(std::fs::read_to_string(dir.join("card.md"))?.contains("## extra"));
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }
}
